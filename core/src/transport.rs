//! Which of a host's addresses a node dials: the one copy of the transport-choice rules the
//! native shell (`btfs-host`) and the browser shell (`btfs-client`) both follow.
//!
//! Goals: the rules on multiaddr *text* (what network files, host ads and Hub answers carry), so
//! core needs no multiaddr or libp2p-transport dependency; deterministic, order-preserving
//! choices.
//! Non-goals: checking that an address is well formed (each shell parses the ones it keeps with
//! its own multiaddr library and reports those errors), dialing.
//!
//! The rules:
//! - **Native** ([`native_preferred`]): TCP addresses that are not WebSocket if the host has any
//!   (fastest natively), else QUIC (`/quic-v1`), else every address.
//! - **Browser** ([`browser_preferred`]): WebSocket (`/ws`) addresses first, then WebRTC-direct,
//!   narrowed by the tenant's [`TransportChoice`]; nothing else (a browser cannot dial raw TCP
//!   or QUIC).
//!
//! An address is read as `/name[/value]/name[/value]...`; [`Transports::of`] knows how many
//! values each multiaddr protocol takes, so a value such as a DNS name `ws` is never mistaken
//! for a protocol. Text with a protocol name it does not know counts as "other" (dialed natively
//! only when no TCP or QUIC address exists, never by a browser).

use thiserror::Error;

/// The transports one multiaddr uses, read from its text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Transports {
    /// `/tcp/<port>`.
    pub tcp: bool,
    /// `/udp/<port>`.
    pub udp: bool,
    /// `/quic-v1` (IETF QUIC).
    pub quic_v1: bool,
    /// `/ws` (or `/x-parity-ws/<path>`).
    pub ws: bool,
    /// `/wss` (or `/x-parity-wss/<path>`).
    pub wss: bool,
    /// `/webrtc-direct`.
    pub webrtc_direct: bool,
    /// Every protocol name was known (else the flags above may be incomplete).
    pub understood: bool,
}

/// How many values a multiaddr protocol takes in text form, `None` if the name is unknown.
fn arity(name: &str) -> Option<usize> {
    Some(match name {
        "ip4" | "ip6" | "ip6zone" | "ipcidr" | "dns" | "dns4" | "dns6" | "dnsaddr" | "tcp"
        | "udp" | "dccp" | "sctp" | "p2p" | "ipfs" | "certhash" | "onion" | "onion3"
        | "garlic64" | "garlic32" | "memory" | "sni" | "http-path" | "x-parity-ws"
        | "x-parity-wss" | "unix" => 1,
        "quic" | "quic-v1" | "ws" | "wss" | "webrtc-direct" | "webrtc" | "webtransport"
        | "p2p-circuit" | "tls" | "noise" | "http" | "https" | "udt" | "utp"
        | "p2p-webrtc-star" | "p2p-webrtc-direct" | "p2p-websocket-star" | "plaintextv2" => 0,
        _ => return None,
    })
}

impl Transports {
    /// Reads the transports of one multiaddr text (`/ip4/1.2.3.4/tcp/4001/ws/p2p/12D3...`).
    pub fn of(addr: &str) -> Self {
        let mut t = Transports {
            understood: true,
            ..Default::default()
        };
        let Some(rest) = addr.strip_prefix('/') else {
            t.understood = false;
            return t;
        };
        let mut parts = rest.split('/');
        while let Some(name) = parts.next() {
            let Some(values) = arity(name) else {
                t.understood = false;
                return t;
            };
            match name {
                "tcp" => t.tcp = true,
                "udp" => t.udp = true,
                "quic-v1" => t.quic_v1 = true,
                "ws" | "x-parity-ws" => t.ws = true,
                "wss" | "x-parity-wss" => t.wss = true,
                "webrtc-direct" => t.webrtc_direct = true,
                _ => {}
            }
            for _ in 0..values {
                if parts.next().is_none() {
                    t.understood = false;
                    return t;
                }
            }
        }
        t
    }

    /// Plain TCP: `/tcp` and not WebSocket (the native first choice).
    pub fn is_plain_tcp(&self) -> bool {
        self.tcp && !self.ws && !self.wss
    }

    /// Dialed by native nodes, as opposed to being there for browsers: neither `/ws` nor
    /// `/webrtc-direct`.
    pub fn is_native(&self) -> bool {
        !self.ws && !self.webrtc_direct
    }
}

/// Whether a native node dials this address (TCP or QUIC) rather than it being there for
/// browsers (WebSocket, WebRTC-direct). See [`Transports::is_native`].
pub fn is_native(addr: &str) -> bool {
    Transports::of(addr).is_native()
}

/// The indices of the addresses a native node dials, in their order: the plain TCP ones if
/// any, else the QUIC ones, else all.
pub fn native_preferred<A: AsRef<str>>(addrs: &[A]) -> Vec<usize> {
    let kinds: Vec<Transports> = addrs.iter().map(|a| Transports::of(a.as_ref())).collect();
    let pick = |want: fn(&Transports) -> bool| -> Vec<usize> {
        (0..kinds.len()).filter(|&i| want(&kinds[i])).collect()
    };
    let tcp = pick(|t| t.is_plain_tcp());
    if !tcp.is_empty() {
        return tcp;
    }
    let quic = pick(|t| t.quic_v1);
    if !quic.is_empty() {
        return quic;
    }
    (0..addrs.len()).collect()
}

/// Which browser transport a tenant asked for (`BtfsClient.connect({ transport })`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportChoice {
    /// WebSocket where the host offers it, else WebRTC-direct.
    Auto,
    /// Only WebSocket.
    WebSocket,
    /// Only WebRTC-direct.
    WebRtc,
}

/// An unknown `transport` option.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("unknown transport {0:?}: use 'websocket', 'webrtc' or leave it out")]
pub struct UnknownTransport(pub String);

impl TransportChoice {
    /// Parses the `transport` option: absent or `auto`, `websocket` (`ws`), `webrtc`
    /// (`webrtc-direct`).
    pub fn parse(s: Option<&str>) -> Result<Self, UnknownTransport> {
        match s {
            None | Some("auto") => Ok(Self::Auto),
            Some("websocket") | Some("ws") => Ok(Self::WebSocket),
            Some("webrtc") | Some("webrtc-direct") => Ok(Self::WebRtc),
            Some(other) => Err(UnknownTransport(other.into())),
        }
    }

    /// The transports this choice allows, for messages ("no host offers a ... address").
    pub fn describe(self) -> &'static str {
        match self {
            Self::Auto => "WebSocket or WebRTC-direct",
            Self::WebSocket => "WebSocket",
            Self::WebRtc => "WebRTC-direct",
        }
    }
}

/// The addresses of `addrs` a browser dials with `choice`, preferred first: WebSocket (`/ws`)
/// ones, then WebRTC-direct ones, each group in its original order.
pub fn browser_preferred(addrs: &[String], choice: TransportChoice) -> Vec<String> {
    let kinds: Vec<Transports> = addrs.iter().map(|a| Transports::of(a)).collect();
    let group = |want: fn(&Transports) -> bool| {
        addrs
            .iter()
            .zip(&kinds)
            .filter(move |(_, k)| k.understood && want(k))
            .map(|(a, _)| a.clone())
    };
    let ws = group(|k| k.ws);
    let rtc = group(|k| k.webrtc_direct && !k.ws);
    match choice {
        TransportChoice::Auto => ws.chain(rtc).collect(),
        TransportChoice::WebSocket => ws.collect(),
        TransportChoice::WebRtc => rtc.collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const P: &str = "12D3KooWHEhPvLr1GWp28i4W6xrHQo6ZMSkKNx2yxoo2TDVX6Tzb";

    fn addrs() -> Vec<String> {
        [
            "/ip4/127.0.0.1/tcp/3/ws",
            "/ip4/127.0.0.1/udp/2/webrtc-direct/certhash/uEiAx",
            "/ip4/127.0.0.1/udp/4/quic-v1",
            "/ip4/127.0.0.1/tcp/1",
            "/ip6/::1/tcp/5",
        ]
        .iter()
        .map(|a| format!("{a}/p2p/{P}"))
        .collect()
    }

    #[test]
    fn reads_transports_from_text() {
        let t = Transports::of(&format!("/ip4/1.2.3.4/tcp/4001/ws/p2p/{P}"));
        assert!(t.understood && t.tcp && t.ws && !t.is_plain_tcp() && !t.is_native());
        let t = Transports::of("/ip4/1.2.3.4/udp/9/quic-v1");
        assert!(t.udp && t.quic_v1 && t.is_native());
        let t = Transports::of("/ip4/1.2.3.4/udp/9/webrtc-direct/certhash/uEiAx");
        assert!(t.webrtc_direct && !t.is_native());
        let t = Transports::of("/dns4/example.com/tcp/443/wss");
        assert!(t.wss && !t.is_plain_tcp() && t.is_native());
        // A value is never read as a protocol: the host named "ws" is plain TCP.
        let t = Transports::of("/dns4/ws/tcp/1");
        assert!(t.understood && t.is_plain_tcp() && !t.ws);
        // Unknown protocols, a missing value, or text that is not a multiaddr.
        assert!(!Transports::of("/ip4/1.2.3.4/carrier-pigeon/ws").understood);
        assert!(!Transports::of("/ip4/1.2.3.4/tcp").understood);
        assert!(!Transports::of("ip4/1.2.3.4/tcp/1").understood);
        assert!(!Transports::of("").understood);
    }

    #[test]
    fn native_prefers_plain_tcp_then_quic_then_all() {
        let a = addrs();
        assert_eq!(native_preferred(&a), vec![3, 4]);
        let no_tcp = vec![a[0].clone(), a[1].clone(), a[2].clone()];
        assert_eq!(native_preferred(&no_tcp), vec![2]);
        let browser_only = vec![a[0].clone(), a[1].clone()];
        assert_eq!(native_preferred(&browser_only), vec![0, 1]);
        assert!(native_preferred::<String>(&[]).is_empty());
        assert!(is_native(&a[3]) && is_native(&a[2]) && !is_native(&a[0]) && !is_native(&a[1]));
    }

    #[test]
    fn browser_keeps_websocket_then_webrtc_direct() {
        let a = addrs();
        assert_eq!(
            browser_preferred(&a, TransportChoice::Auto),
            vec![a[0].clone(), a[1].clone()]
        );
        assert_eq!(
            browser_preferred(&a, TransportChoice::WebSocket),
            vec![a[0].clone()]
        );
        assert_eq!(
            browser_preferred(&a, TransportChoice::WebRtc),
            vec![a[1].clone()]
        );
        // Order within a group is kept, and WebSocket wins whatever the input order.
        let rev: Vec<String> = a.iter().rev().cloned().collect();
        assert_eq!(
            browser_preferred(&rev, TransportChoice::Auto),
            vec![a[0].clone(), a[1].clone()]
        );
        let tcp_only = vec![a[3].clone()];
        assert!(browser_preferred(&tcp_only, TransportChoice::Auto).is_empty());
    }

    #[test]
    fn parses_the_transport_option() {
        assert_eq!(TransportChoice::parse(None), Ok(TransportChoice::Auto));
        assert_eq!(
            TransportChoice::parse(Some("ws")),
            Ok(TransportChoice::WebSocket)
        );
        assert_eq!(
            TransportChoice::parse(Some("webrtc-direct")),
            Ok(TransportChoice::WebRtc)
        );
        let err = TransportChoice::parse(Some("carrier-pigeon")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown transport \"carrier-pigeon\": use 'websocket', 'webrtc' or leave it out"
        );
    }
}

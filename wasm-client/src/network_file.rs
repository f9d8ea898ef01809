//! What `BtfsClient.connect({ network })` accepts, parsed into dialable hosts.
//!
//! `network` is either the devnet's `network.json` object (`{ hosts: [{ peer_id, addrs }] }`)
//! or an array of multiaddr strings ending in `/p2p/<peer id>`. Each host keeps only the
//! addresses a browser can dial: WebSocket (`/ws`) and WebRTC-direct (`/webrtc-direct/certhash`).
//! A network.json with `services.hub` (`{ peer_id, addrs }`) also names the Hub, which the
//! client asks for hosts to upload to and for hosts not in the file.

use serde::Deserialize;
use thiserror::Error;

/// Which browser transport to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportChoice {
    /// WebSocket where the host offers it, else WebRTC-direct.
    Auto,
    /// Only WebSocket.
    WebSocket,
    /// Only WebRTC-direct.
    WebRtc,
}

impl TransportChoice {
    /// Parses the `transport` option.
    pub fn parse(s: Option<&str>) -> Result<Self, NetworkError> {
        match s {
            None | Some("auto") => Ok(Self::Auto),
            Some("websocket") | Some("ws") => Ok(Self::WebSocket),
            Some("webrtc") | Some("webrtc-direct") => Ok(Self::WebRtc),
            Some(other) => Err(NetworkError::Transport(other.into())),
        }
    }
}

/// The network option is unusable.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum NetworkError {
    /// Neither a network.json object nor a list of multiaddrs.
    #[error("`network` must be the network.json object, its URL, or an array of multiaddrs ending in /p2p/<peer id>: {0}")]
    Shape(String),
    /// No host offers a browser transport.
    #[error("no host in the network offers a {0} address a browser can dial; hosts must listen on WebSocket or WebRTC-direct")]
    NoBrowserAddrs(&'static str),
    /// Unknown transport name.
    #[error("unknown transport {0:?}: use 'websocket', 'webrtc' or leave it out")]
    Transport(String),
}

/// A host with the browser-dialable addresses it offers, preferred first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrowserHost {
    /// Peer id (base58).
    pub peer_id: String,
    /// Multiaddrs (with `/p2p/...`), preferred first.
    pub addrs: Vec<String>,
}

#[derive(Deserialize)]
struct FileShape {
    hosts: Vec<HostShape>,
    #[serde(default)]
    services: Services,
}

#[derive(Deserialize, Default)]
struct Services {
    hub: Option<HostShape>,
}

#[derive(Deserialize)]
struct HostShape {
    peer_id: String,
    addrs: Vec<String>,
}

fn is_ws(a: &str) -> bool {
    a.contains("/ws/") || a.ends_with("/ws")
}

fn is_webrtc(a: &str) -> bool {
    a.contains("/webrtc-direct/")
}

/// Keeps the addresses of `addrs` a browser can dial with `choice`, preferred first.
pub fn browser_addrs(addrs: &[String], choice: TransportChoice) -> Vec<String> {
    let ws = addrs.iter().filter(|a| is_ws(a)).cloned();
    let rtc = addrs.iter().filter(|a| is_webrtc(a)).cloned();
    match choice {
        TransportChoice::Auto => ws.chain(rtc).collect(),
        TransportChoice::WebSocket => ws.collect(),
        TransportChoice::WebRtc => rtc.collect(),
    }
}

/// The Hub named in a network.json (`services.hub`), if any, with its browser addresses.
pub fn parse_hub(json: &str, choice: TransportChoice) -> Result<Option<BrowserHost>, NetworkError> {
    if json.trim_start().starts_with('[') {
        return Ok(None);
    }
    let file: FileShape =
        serde_json::from_str(json).map_err(|e| NetworkError::Shape(e.to_string()))?;
    let Some(hub) = file.services.hub else {
        return Ok(None);
    };
    let addrs = browser_addrs(&hub.addrs, choice);
    if addrs.is_empty() {
        return Err(NetworkError::Shape(format!(
            "services.hub ({}) has no address a browser can dial",
            hub.peer_id
        )));
    }
    Ok(Some(BrowserHost {
        peer_id: hub.peer_id,
        addrs,
    }))
}

/// Parses the JSON text of the `network` option.
pub fn parse(json: &str, choice: TransportChoice) -> Result<Vec<BrowserHost>, NetworkError> {
    let raw: Vec<HostShape> = if json.trim_start().starts_with('[') {
        let addrs: Vec<String> =
            serde_json::from_str(json).map_err(|e| NetworkError::Shape(e.to_string()))?;
        let mut hosts: Vec<HostShape> = Vec::new();
        for a in addrs {
            let peer = a
                .rsplit_once("/p2p/")
                .map(|(_, p)| p.to_string())
                .ok_or_else(|| NetworkError::Shape(format!("{a} has no /p2p/<peer id>")))?;
            match hosts.iter_mut().find(|h| h.peer_id == peer) {
                Some(h) => h.addrs.push(a),
                None => hosts.push(HostShape {
                    peer_id: peer,
                    addrs: vec![a],
                }),
            }
        }
        hosts
    } else {
        serde_json::from_str::<FileShape>(json)
            .map_err(|e| NetworkError::Shape(e.to_string()))?
            .hosts
    };
    let hosts: Vec<BrowserHost> = raw
        .into_iter()
        .filter_map(|h| {
            let addrs = browser_addrs(&h.addrs, choice);
            (!addrs.is_empty()).then_some(BrowserHost {
                peer_id: h.peer_id,
                addrs,
            })
        })
        .collect();
    if hosts.is_empty() {
        return Err(NetworkError::NoBrowserAddrs(match choice {
            TransportChoice::Auto => "WebSocket or WebRTC-direct",
            TransportChoice::WebSocket => "WebSocket",
            TransportChoice::WebRtc => "WebRTC-direct",
        }));
    }
    Ok(hosts)
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "12D3KooWHEhPvLr1GWp28i4W6xrHQo6ZMSkKNx2yxoo2TDVX6Tzb";

    fn file() -> String {
        format!(
            r#"{{"bootstrap":[],"hosts":[{{"peer_id":"{P}","pid":1,"data_dir":"/x","addrs":[
            "/ip4/127.0.0.1/tcp/1/p2p/{P}",
            "/ip4/127.0.0.1/udp/2/webrtc-direct/certhash/uEiAx/p2p/{P}",
            "/ip4/127.0.0.1/tcp/3/ws/p2p/{P}"]}}]}}"#
        )
    }

    #[test]
    fn keeps_browser_addresses_in_preference_order() {
        let h = parse(&file(), TransportChoice::Auto).unwrap();
        assert_eq!(h[0].addrs.len(), 2);
        assert!(h[0].addrs[0].contains("/ws/"));
        let rtc = parse(&file(), TransportChoice::WebRtc).unwrap();
        assert_eq!(rtc[0].addrs.len(), 1);
        assert!(rtc[0].addrs[0].contains("webrtc-direct"));
    }

    #[test]
    fn accepts_a_list_of_multiaddrs_and_explains_bad_input() {
        let list = format!(r#"["/ip4/127.0.0.1/tcp/3/ws/p2p/{P}"]"#);
        assert_eq!(parse(&list, TransportChoice::Auto).unwrap()[0].peer_id, P);
        assert!(matches!(
            parse("42", TransportChoice::Auto),
            Err(NetworkError::Shape(_))
        ));
        let tcp_only = format!(r#"["/ip4/127.0.0.1/tcp/1/p2p/{P}"]"#);
        let err = parse(&tcp_only, TransportChoice::Auto).unwrap_err();
        assert!(err.to_string().contains("WebSocket or WebRTC-direct"));
        assert!(TransportChoice::parse(Some("carrier-pigeon")).is_err());
    }
}

//! What `BtfsClient.connect({ network })` accepts, parsed into hosts a browser can dial.
//!
//! `network` is either the devnet's `network.json` object (`{ hosts: [{ peer_id, addrs }] }`)
//! or an array of multiaddr strings ending in `/p2p/<peer id>`; both are read by
//! [`btfs_core::network_file`], the format shared with the CLI. Each host keeps only the
//! addresses a browser can dial, WebSocket (`/ws`) then WebRTC-direct, as
//! [`btfs_core::transport::browser_preferred`] rules. A network.json with `services.hub`
//! (`{ peer_id, addrs }`) also names the Hub, which the client asks for hosts to upload to and
//! for hosts not in the file; one with `services.guard` also names the Guard, which watches
//! uploads, answers `client.health` and tells downloads where repaired shards live; one with
//! `services.escrow` also names the Escrow, where uploads fund storage contracts (with
//! `"devnet": true`, from its faucet when the wallet is short) and which answers
//! `client.balance` and `client.contracts`. This module
//! only maps the core's answers and errors to the browser's.

use btfs_core::network_file::{FormatError, NetworkFile};
pub use btfs_core::transport::TransportChoice;
use btfs_core::transport::UnknownTransport;
use thiserror::Error;

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
    #[error("{0}")]
    Transport(#[from] UnknownTransport),
}

impl From<FormatError> for NetworkError {
    fn from(e: FormatError) -> Self {
        match e {
            // The bare serde message, as the browser has always shown it.
            FormatError::Json(e) => Self::Shape(e.to_string()),
            other => Self::Shape(other.to_string()),
        }
    }
}

/// A host with the browser-dialable addresses it offers, preferred first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrowserHost {
    /// Peer id (base58).
    pub peer_id: String,
    /// Multiaddrs (with `/p2p/...`), preferred first.
    pub addrs: Vec<String>,
}

/// Keeps the addresses of `addrs` a browser can dial with `choice`, preferred first.
pub fn browser_addrs(addrs: &[String], choice: TransportChoice) -> Vec<String> {
    btfs_core::transport::browser_preferred(addrs, choice)
}

/// The parsed `network` option: its hosts and, from a network.json, its Hub.
#[derive(Debug)]
pub struct Network {
    /// Hosts with at least one address `choice` allows.
    pub hosts: Vec<BrowserHost>,
    /// `services.hub`, with its browser addresses.
    pub hub: Option<BrowserHost>,
    /// `services.guard`, with its browser addresses.
    pub guard: Option<BrowserHost>,
    /// `services.escrow`, with its browser addresses.
    pub escrow: Option<BrowserHost>,
    /// `services.escrow.devnet`: the Escrow's faucet may top up a wallet that cannot pay.
    pub escrow_is_devnet: bool,
    /// `services.guard.epoch_ms`: contracts are paid per epoch of the Guard.
    pub guard_epoch_ms: u64,
    /// `services.status.http`: the Status server's base URL.
    pub status_http: Option<String>,
}

/// A service entry with the addresses `choice` allows; an error names the service if it has none.
fn service(
    name: &str,
    host: Option<btfs_core::network_file::ServiceHost>,
    choice: TransportChoice,
) -> Result<Option<BrowserHost>, NetworkError> {
    let Some(host) = host else {
        return Ok(None);
    };
    let peer_id = host.peer.to_base58();
    let addrs = browser_addrs(&host.addrs, choice);
    if addrs.is_empty() {
        return Err(NetworkError::Shape(format!(
            "services.{name} ({peer_id}) has no address a browser can dial"
        )));
    }
    Ok(Some(BrowserHost { peer_id, addrs }))
}

/// Parses the JSON text of the `network` option.
pub fn parse_network(json: &str, choice: TransportChoice) -> Result<Network, NetworkError> {
    let file = NetworkFile::parse_or_addrs(json)?;
    let (hub, guard, escrow) = (file.hub(), file.guard(), file.escrow());
    let (escrow_is_devnet, guard_epoch_ms) = (file.escrow_is_devnet(), file.guard_epoch_ms());
    let status_http = file.status_http()?.map(str::to_string);
    let hosts: Vec<BrowserHost> = file
        .hosts
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
        return Err(NetworkError::NoBrowserAddrs(choice.describe()));
    }
    let hub = service("hub", hub?, choice)?;
    let guard = service("guard", guard?, choice)?;
    let escrow = service("escrow", escrow?, choice)?;
    Ok(Network {
        hosts,
        hub,
        guard,
        escrow,
        escrow_is_devnet,
        guard_epoch_ms,
        status_http,
    })
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
            "/ip4/127.0.0.1/tcp/3/ws/p2p/{P}"]}}],
            "services":{{"hub":{{"peer_id":"{P}","addrs":["/ip4/127.0.0.1/tcp/4/ws/p2p/{P}"]}},
            "guard":{{"peer_id":"{P}","pid":7,"epoch_ms":5000,"addrs":["/ip4/127.0.0.1/tcp/4/ws/p2p/{P}"]}},
            "escrow":{{"peer_id":"{P}","pid":8,"devnet":true,"addrs":["/ip4/127.0.0.1/tcp/4/ws/p2p/{P}"]}}}}}}"#
        )
    }

    #[test]
    fn keeps_browser_addresses_in_preference_order() {
        let n = parse_network(&file(), TransportChoice::Auto).unwrap();
        assert_eq!(n.hosts[0].addrs.len(), 2);
        assert!(n.hosts[0].addrs[0].contains("/ws/"));
        assert_eq!(n.hub.unwrap().peer_id, P);
        assert_eq!(n.guard.unwrap().addrs.len(), 1);
        assert_eq!(n.escrow.unwrap().peer_id, P);
        assert!(n.escrow_is_devnet);
        assert_eq!(n.guard_epoch_ms, 5000);
        let rtc = parse_network(&file(), TransportChoice::WebRtc);
        // The Hub has no WebRTC-direct address.
        assert!(rtc.unwrap_err().to_string().contains("services.hub"));
    }

    #[test]
    fn accepts_a_list_of_multiaddrs_and_explains_bad_input() {
        let list = format!(r#"["/ip4/127.0.0.1/tcp/3/ws/p2p/{P}"]"#);
        let n = parse_network(&list, TransportChoice::Auto).unwrap();
        assert_eq!(n.hosts[0].peer_id, P);
        assert!(n.hub.is_none() && n.guard.is_none() && n.escrow.is_none());
        assert!(!n.escrow_is_devnet);
        assert!(matches!(
            parse_network("42", TransportChoice::Auto),
            Err(NetworkError::Shape(_))
        ));
        let e = parse_network(r#"["/ip4/1.2.3.4/tcp/3/ws"]"#, TransportChoice::Auto).unwrap_err();
        assert_eq!(
            e.to_string(),
            "`network` must be the network.json object, its URL, or an array of multiaddrs ending in /p2p/<peer id>: /ip4/1.2.3.4/tcp/3/ws has no /p2p/<peer id>"
        );
        let tcp_only = format!(r#"["/ip4/127.0.0.1/tcp/1/p2p/{P}"]"#);
        let err = parse_network(&tcp_only, TransportChoice::Auto).unwrap_err();
        assert!(err.to_string().contains("WebSocket or WebRTC-direct"));
        let err = NetworkError::from(TransportChoice::parse(Some("carrier-pigeon")).unwrap_err());
        assert_eq!(
            err.to_string(),
            "unknown transport \"carrier-pigeon\": use 'websocket', 'webrtc' or leave it out"
        );
    }
}

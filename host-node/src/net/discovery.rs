//! Joining a network from bootstrap addresses alone: what `--bootstrap` (tenants) and
//! `bootstrap = [...]` (hosts, service nodes) do instead of reading a network file.
//!
//! Goals: a node or a tenant given one or more `/…/p2p/<peer id>` addresses learns the
//! network's services (Hub, Status, Guard, Escrow) and joins its DHT; the result is the same
//! [`NetworkFile`] a devnet writes (without `hosts`: the Hub lists them), so everything after
//! this point is the same whichever way the network was named.
//!
//! How: [`Net::join`] puts the bootstrap peers into the Kademlia routing table; every
//! bootstrap peer is asked the Hub protocol's `Network` request at once (each within
//! [`ASK_TIMEOUT`]); the answers are merged by [`btfs_core::network_file::merge_directories`]
//! through [`btfs_core::network_file::directory_from`] (bootstrap order; at least one must
//! answer, and a conflict between two answers is an error).
//!
//! Trust: the network is what your bootstrap nodes say it is. Their peer ids are in the
//! addresses you give, and Noise checks them, so nobody else can answer for them; addresses
//! from the DHT are only hints (a dial checks the peer id).
//! Non-goals: choosing between two networks, discovering hosts (the Hub does).

use std::time::Duration;

use btfs_core::hub::{HubRequest, HubResponse};
use btfs_core::network_file::{merge_directories, NetworkFile};
use futures::future::join_all;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use thiserror::Error;

use super::Net;

/// How long one bootstrap node may take to answer `Network`.
pub const ASK_TIMEOUT: Duration = Duration::from_secs(10);
/// Most bootstrap addresses one node or command takes.
pub const MAX_BOOTSTRAP: usize = 32;

/// Joining through the bootstrap nodes failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum DiscoveryError {
    /// A bootstrap address cannot be used.
    #[error("bootstrap address {addr:?} is invalid: {why} (give a multiaddr ending in /p2p/<peer id>, e.g. /ip4/198.18.0.2/tcp/4001/p2p/12D3KooW…)")]
    Address {
        /// The address as given.
        addr: String,
        /// What is wrong.
        why: String,
    },
    /// No bootstrap address at all.
    #[error("no bootstrap address: pass --bootstrap MULTIADDR (repeatable) or --network FILE")]
    None,
    /// More addresses than [`MAX_BOOTSTRAP`].
    #[error("{0} bootstrap addresses is too many (at most {MAX_BOOTSTRAP})")]
    TooMany(usize),
    /// The bootstrap nodes did not say (none answered, or they disagree).
    #[error(transparent)]
    Directory(#[from] btfs_core::network_file::DirectoryError),
    /// The local network task stopped.
    #[error(transparent)]
    Net(#[from] super::NetError),
}

/// Parses bootstrap addresses: each a multiaddr ending in `/p2p/<peer id>`; addresses of one
/// peer are grouped (in order of first appearance).
pub fn parse_bootstrap(addrs: &[String]) -> Result<Vec<(PeerId, Vec<Multiaddr>)>, DiscoveryError> {
    if addrs.len() > MAX_BOOTSTRAP {
        return Err(DiscoveryError::TooMany(addrs.len()));
    }
    let mut peers: Vec<(PeerId, Vec<Multiaddr>)> = Vec::new();
    for a in addrs {
        let bad = |why: String| DiscoveryError::Address {
            addr: a.clone(),
            why,
        };
        let m: Multiaddr = a.trim().parse().map_err(|e| bad(format!("{e}")))?;
        let Some(Protocol::P2p(peer)) = m.iter().last() else {
            return Err(bad("it has no /p2p/<peer id> at the end".into()));
        };
        match peers.iter_mut().find(|(p, _)| *p == peer) {
            Some((_, list)) => list.push(m),
            None => peers.push((peer, vec![m])),
        }
    }
    Ok(peers)
}

/// Joins the DHT through `bootstrap` and asks every bootstrap node for the network's services
/// (see the module docs). The answer's `bootstrap` lists the addresses given.
pub async fn directory(net: &Net, bootstrap: &[String]) -> Result<NetworkFile, DiscoveryError> {
    let peers = parse_bootstrap(bootstrap)?;
    if peers.is_empty() {
        return Err(DiscoveryError::None);
    }
    net.join(peers.clone()).await?;
    let asks = peers.iter().map(|(peer, addrs)| async move {
        let ask = net.hub_request(*peer, addrs.clone(), HubRequest::Network);
        let r = match tokio::time::timeout(ASK_TIMEOUT, ask).await {
            Err(_) => Err(format!("no answer within {} s", ASK_TIMEOUT.as_secs())),
            Ok(Err(e)) => Err(e.to_string()),
            Ok(Ok(HubResponse::Network(d))) => Ok(d),
            Ok(Ok(HubResponse::Error { message })) => Err(message),
            Ok(Ok(_)) => Err("answered something else than its network".into()),
        };
        (peer.to_base58(), r)
    });
    let answers = join_all(asks).await;
    for (who, r) in &answers {
        if let Err(e) = r {
            tracing::warn!(bootstrap = %who, %e, "a bootstrap node did not answer");
        }
    }
    Ok(btfs_core::network_file::directory_from(answers, bootstrap)?)
}

/// [`directory`], retried every 2 s for up to `patience` (a node starting while its bootstrap
/// nodes restart).
pub async fn directory_patiently(
    net: &Net,
    bootstrap: &[String],
    patience: Duration,
) -> Result<NetworkFile, DiscoveryError> {
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        match directory(net, bootstrap).await {
            Err(DiscoveryError::Directory(btfs_core::network_file::DirectoryError::NoAnswer(
                e,
            ))) if tokio::time::Instant::now() < deadline => {
                tracing::info!(%e, "bootstrap nodes not answering yet; retrying");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            other => return other,
        }
    }
}

/// What a node was configured with, as `services` entries (`hub` and `escrow` multiaddrs
/// ending in `/p2p/<peer id>`, the Status base URL); malformed entries are left out (the
/// config was validated before).
pub fn configured(hub: Option<&str>, escrow: Option<&str>, status: Option<&str>) -> NetworkFile {
    let mut f = NetworkFile::default();
    for (name, addr) in [("hub", hub), ("escrow", escrow)] {
        let Some((addr, peer)) = addr.and_then(|a| Some((a, a.rsplit_once("/p2p/")?.1))) else {
            continue;
        };
        f.services.insert(
            name.into(),
            serde_json::json!({ "peer_id": peer, "addrs": [addr] }),
        );
    }
    if let Some(url) = status {
        f.services
            .insert("status".into(), serde_json::json!({ "http": url }));
    }
    f
}

/// The address a native node dials a service at (`…/p2p/<peer id>`): its first TCP address,
/// else its first QUIC one.
pub fn native_addr(service: &btfs_core::network_file::ServiceHost) -> Option<String> {
    let native = |want: &str| {
        service
            .addrs
            .iter()
            .find(|a| btfs_core::transport::is_native(a) && a.contains(want))
    };
    native("/tcp/")
        .or_else(|| native("/quic"))
        .map(|a| match a.contains("/p2p/") {
            true => a.clone(),
            false => format!("{a}/p2p/{}", service.peer),
        })
}

/// Keeps `net`'s answer to `Network` requests current: `own` (the services this node runs) and
/// `configured` first, then what `sources` (bootstrap nodes and the configured Hub) say, asked
/// again every `every` (every 5 s until one answers). A source that disagrees with the node's
/// own configuration is logged and left out: the node serves what it was told by its operator.
pub async fn serve_directory(
    net: Net,
    own: NetworkFile,
    configured: NetworkFile,
    sources: Vec<String>,
    every: Duration,
    cancel: tokio_util::sync::CancellationToken,
) {
    let local = vec![
        ("this node".to_string(), own),
        ("its config".into(), configured),
    ];
    let base = merge_directories(&local).unwrap_or_else(|e| {
        tracing::warn!(%e, "this node's own services and config disagree");
        local[0].1.clone()
    });
    let _ = net.set_directory(base.clone()).await;
    if sources.is_empty() {
        return;
    }
    loop {
        let wait = match directory(&net, &sources).await {
            Ok(learned) => {
                let mut all = local.clone();
                all.push(("bootstrap".into(), learned));
                match merge_directories(&all) {
                    Ok(d) => {
                        let _ = net.set_directory(d).await;
                    }
                    Err(e) => tracing::warn!(%e, "bootstrap nodes disagree with this node"),
                }
                every
            }
            Err(e) => {
                tracing::debug!(%e, "cannot refresh the network's services");
                Duration::from_secs(5)
            }
        };
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "12D3KooWHEhPvLr1GWp28i4W6xrHQo6ZMSkKNx2yxoo2TDVX6Tzb";

    #[test]
    fn configured_services_read_back() {
        let hub = format!("/ip4/198.18.0.2/tcp/1/p2p/{P}");
        let f = configured(Some(&hub), None, Some("http://198.18.0.2:9"));
        let h = f.hub().unwrap().unwrap();
        assert_eq!(h.peer.to_base58(), P);
        assert_eq!(native_addr(&h).as_deref(), Some(hub.as_str()));
        assert!(f.escrow().unwrap().is_none());
        assert_eq!(f.status_http().unwrap(), Some("http://198.18.0.2:9"));
        let browser_only = btfs_core::network_file::ServiceHost {
            peer: h.peer,
            addrs: vec!["/ip4/198.18.0.2/tcp/2/ws".into()],
        };
        assert_eq!(native_addr(&browser_only), None);
        let bare = btfs_core::network_file::ServiceHost {
            peer: h.peer,
            addrs: vec!["/ip4/198.18.0.2/udp/3/quic-v1".into()],
        };
        assert_eq!(
            native_addr(&bare),
            Some(format!("/ip4/198.18.0.2/udp/3/quic-v1/p2p/{P}"))
        );
    }

    #[test]
    fn bootstrap_addresses_need_a_peer_id_and_are_grouped() {
        let a = format!("/ip4/198.18.0.2/tcp/1/p2p/{P}");
        let b = format!("/ip4/198.18.0.2/udp/1/quic-v1/p2p/{P}");
        let peers = parse_bootstrap(&[a, b]).unwrap();
        assert_eq!(peers.len(), 1);
        assert_eq!(peers[0].1.len(), 2);
        let e = parse_bootstrap(&["/ip4/198.18.0.2/tcp/1".into()]).unwrap_err();
        assert!(e.to_string().contains("no /p2p/<peer id>"), "{e}");
        let e = parse_bootstrap(&["nonsense".into()]).unwrap_err();
        assert!(e.to_string().contains("\"nonsense\" is invalid"), "{e}");
        let many = vec![format!("/ip4/198.18.0.2/tcp/1/p2p/{P}"); MAX_BOOTSTRAP + 1];
        assert!(matches!(
            parse_bootstrap(&many),
            Err(DiscoveryError::TooMany(_))
        ));
    }
}

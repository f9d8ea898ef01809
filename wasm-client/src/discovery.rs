//! `connect({ bootstrap: [...] })`: joining a network from bootstrap addresses alone, as the
//! CLI's `--bootstrap` does (`host-node/src/net/discovery.rs`).
//!
//! Every bootstrap node is asked the Hub protocol's `Network` request; the answers go through
//! [`btfs_core::network_file::directory_from`], as the CLI's do (one must answer, a conflict
//! between two is an error); the
//! hosts then come from the network's Hub (`Hosts`). The result is the same network file a
//! devnet writes, so the rest of `connect` is the same either way. The browser does not join
//! the DHT (it is a client that dials WebSocket or WebRTC-direct addresses only).
//! Trust: the network is what your bootstrap nodes say (their peer ids are in the addresses).

use btfs_core::hub::{HubRequest, HubResponse, MAX_COUNT};
use btfs_core::network_file::{directory_from, HostEntry, NetworkFile};
use libp2p::{Multiaddr, PeerId};

use crate::error::ClientError;
use crate::network_file::{browser_addrs, TransportChoice};
use crate::swarm::Node;

/// Most bootstrap addresses `connect` takes.
pub const MAX_BOOTSTRAP: usize = 32;

fn parse(addrs: &[String]) -> Result<(PeerId, Vec<Multiaddr>), String> {
    let peer = addrs[0]
        .rsplit_once("/p2p/")
        .map(|(_, p)| p)
        .unwrap_or_default()
        .parse::<PeerId>()
        .map_err(|e| format!("{}: peer id: {e}", addrs[0]))?;
    let addrs = addrs
        .iter()
        .map(|a| a.parse::<Multiaddr>().map_err(|e| format!("{a}: {e}")))
        .collect::<Result<_, _>>()?;
    Ok((peer, addrs))
}

/// The network the nodes at `bootstrap` (multiaddrs ending in `/p2p/<peer id>`) say this is,
/// with the hosts its Hub lists, as network-file JSON.
pub async fn network(
    node: &Node,
    bootstrap: &[String],
    choice: TransportChoice,
) -> Result<String, ClientError> {
    let bad = |why: String| ClientError::Js(format!("bootstrap: {why}"));
    if bootstrap.is_empty() {
        return Err(bad(
            "give at least one multiaddr ending in /p2p/<peer id>".into()
        ));
    }
    if bootstrap.len() > MAX_BOOTSTRAP {
        return Err(bad(format!(
            "{} addresses is too many (at most {MAX_BOOTSTRAP})",
            bootstrap.len()
        )));
    }
    let grouped = NetworkFile::from_addrs(bootstrap.to_vec()).map_err(|e| bad(e.to_string()))?;
    let mut answers = Vec::new();
    for h in &grouped.hosts {
        let addrs = browser_addrs(&h.addrs, choice);
        let answer = match addrs.is_empty() {
            true => Err(format!(
                "no address a browser can dial over {} (give its /ws or /webrtc-direct address)",
                choice.describe()
            )),
            false => {
                let (peer, addrs) = parse(&addrs).map_err(bad)?;
                match node.hub_request(peer, addrs, HubRequest::Network).await {
                    Ok(HubResponse::Network(d)) => Ok(d),
                    Ok(HubResponse::Error { message }) => Err(message),
                    Ok(_) => Err("answered something else than its network".into()),
                    Err(e) => Err(e.to_string()),
                }
            }
        };
        answers.push((h.peer_id.clone(), answer));
    }
    let mut file = directory_from(answers, bootstrap).map_err(|e| bad(e.to_string()))?;
    let hub = file.hub().map_err(|e| bad(e.to_string()))?.ok_or_else(|| {
        bad("the bootstrap nodes know no Hub, so there is no way to find hosts".into())
    })?;
    let hub_addrs = browser_addrs(&hub.addrs, choice);
    let (_, addrs) = parse(&hub_addrs)
        .map_err(|e| bad(format!("the Hub has no address a browser can dial: {e}")))?;
    match node
        .hub_request(hub.peer, addrs, HubRequest::Hosts { limit: MAX_COUNT })
        .await?
    {
        HubResponse::Hosts(list) => {
            file.hosts = list
                .into_iter()
                .map(|h| HostEntry {
                    peer_id: h.peer_id,
                    pid: 0,
                    addrs: h.addrs,
                    data_dir: Default::default(),
                })
                .collect();
        }
        HubResponse::Error { message } => return Err(ClientError::Hub(message)),
        _ => {
            return Err(ClientError::Hub(
                "the Hub answered something other than its hosts".into(),
            ))
        }
    }
    serde_json::to_string(&file).map_err(|e| ClientError::Js(e.to_string()))
}

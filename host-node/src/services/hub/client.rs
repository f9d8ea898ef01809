//! A tenant's side of the Hub: ask for recommendations or the host list, and turn the answer
//! into hosts the tenant can dial. Every recommended host's ad signature and score are checked
//! here (with core's scoring, against the facts the Hub sent), so a Hub that lies about a score
//! or forges an ad is caught rather than trusted.

use btfs_core::hub::{
    check_recommendation, HubRequest, HubResponse, RankedHost, RecommendRequest, Recommendation,
};
use btfs_core::signed::HostAd;
use libp2p::Multiaddr;
use thiserror::Error;

use super::registry::own_version;
use super::HubAddr;
use crate::net::{Net, NetError};
use crate::tenant::network_file::KnownHost;

/// Talking to the Hub failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum HubClientError {
    /// The Hub could not be reached.
    #[error("cannot reach the Hub {hub}: {reason}. Is the network's service node running?")]
    Unreachable {
        /// Hub peer id.
        hub: String,
        /// Cause.
        reason: String,
    },
    /// The Hub answered with an error.
    #[error("the Hub refused the request: {0}")]
    Refused(String),
    /// The Hub sent something that does not check out.
    #[error("the Hub's answer is invalid: {0}")]
    Invalid(String),
    /// Not enough hosts qualified.
    #[error("{0}")]
    TooFewHosts(String),
}

async fn ask(net: &Net, hub: &HubAddr, req: HubRequest) -> Result<HubResponse, HubClientError> {
    // One transport, as for hosts: dialing every address at once would also run a QUIC and a
    // WebRTC handshake (their TLS stack alone costs a CLI ~50 ms of CPU) for a connection
    // that TCP gives.
    let r = net
        .hub_request(hub.peer, crate::tenant::preferred_addrs(&hub.addrs), req)
        .await
        .map_err(|e: NetError| HubClientError::Unreachable {
            hub: hub.peer.to_base58(),
            reason: e.to_string(),
        })?;
    match r {
        HubResponse::Error { message } => Err(HubClientError::Refused(message)),
        HubResponse::Refused { reason } => Err(HubClientError::Refused(reason)),
        other => Ok(other),
    }
}

/// A listed host as a dialable host, if its ad verifies and matches.
fn check(h: &RankedHost) -> Option<KnownHost> {
    let ad = h.ad.verify::<HostAd>().ok()?;
    if ad.peer.to_base58() != h.peer_id || ad.body.addrs != h.addrs {
        return None;
    }
    let addrs = h.addrs.iter().filter_map(|a| a.parse().ok()).collect();
    Some(KnownHost {
        peer: ad.peer,
        addrs,
    })
}

/// Asks for `req.count` hosts; fails with the Hub's reasons when fewer than `need` qualify.
/// Returns the dialable hosts (best first) and the full answer.
pub async fn recommend(
    net: &Net,
    hub: &HubAddr,
    req: RecommendRequest,
    need: usize,
) -> Result<(Vec<KnownHost>, Recommendation), HubClientError> {
    let req_copy = req.clone();
    let rec = match ask(net, hub, HubRequest::Recommend(req)).await? {
        HubResponse::Recommendation(r) => r,
        other => {
            return Err(HubClientError::Invalid(format!(
                "unexpected answer {other:?}"
            )))
        }
    };
    if let Some(why) = rec.shortfall(need) {
        return Err(HubClientError::TooFewHosts(why));
    }
    let checked = check_recommendation(&rec, &req_copy, own_version(), need)
        .map_err(HubClientError::Invalid)?;
    let hosts = checked
        .into_iter()
        .map(|h| {
            let peer = h
                .peer_id
                .parse()
                .map_err(|e| HubClientError::Invalid(format!("peer id {}: {e}", h.peer_id)))?;
            let addrs = h
                .addrs
                .iter()
                .map(|a| {
                    a.parse::<Multiaddr>()
                        .map_err(|e| HubClientError::Invalid(format!("address {a}: {e}")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(KnownHost { peer, addrs })
        })
        .collect::<Result<Vec<_>, HubClientError>>()?;
    Ok((hosts, rec))
}

/// Every registered host (best first, at most `limit`), with scores for a default request.
pub async fn hosts(
    net: &Net,
    hub: &HubAddr,
    limit: u32,
) -> Result<Vec<RankedHost>, HubClientError> {
    match ask(net, hub, HubRequest::Hosts { limit }).await? {
        HubResponse::Hosts(h) => Ok(h),
        other => Err(HubClientError::Invalid(format!(
            "unexpected answer {other:?}"
        ))),
    }
}

/// The dialable hosts of a listing, skipping entries that do not verify.
pub fn known_hosts(list: &[RankedHost]) -> Vec<KnownHost> {
    list.iter().filter_map(check).collect()
}

//! Asking a Guard (`/btfs/guard/1`, wire format in `btfs_core::guard_wire`).

use std::time::Duration;

use btfs_core::engine::Moves;
use btfs_core::guard_wire::{self, AuditVerdict, GuardRequest, GuardResponse, MAX_RESPONSE_LEN};
use btfs_core::protocol::Status;
use btfs_core::signed::Signed;
use btfs_core::Root;
use libp2p::{Multiaddr, PeerId};
use thiserror::Error;

use crate::net::Net;

/// Deadline for one Guard request.
pub const GUARD_TIMEOUT: Duration = Duration::from_secs(30);

/// A Guard request failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum GuardClientError {
    /// No connection or stream.
    #[error("cannot reach the Guard {peer}: {reason}")]
    Unreachable {
        /// The Guard.
        peer: PeerId,
        /// Why.
        reason: String,
    },
    /// The Guard said no.
    #[error("the Guard refused: {0}")]
    Refused(String),
    /// The answer was not what the protocol says.
    #[error("the Guard sent a malformed answer: {0}")]
    Malformed(String),
}

/// Sends `req` to the Guard `peer` at `addrs` and returns its answer.
pub async fn request(
    net: &Net,
    peer: PeerId,
    addrs: Vec<Multiaddr>,
    req: &GuardRequest,
) -> Result<GuardResponse, GuardClientError> {
    let (_, body) = guard_wire::encode_request(req);
    let (status, out) = crate::net::exchange(
        net,
        peer,
        addrs,
        guard_wire::PROTOCOL,
        &body,
        MAX_RESPONSE_LEN,
        GUARD_TIMEOUT,
    )
    .await
    .map_err(|reason| GuardClientError::Unreachable { peer, reason })?;
    if status != Status::Ok {
        return Err(GuardClientError::Refused(
            String::from_utf8_lossy(&out).into_owned(),
        ));
    }
    serde_json::from_slice(&out).map_err(|e| GuardClientError::Malformed(e.to_string()))
}

/// The moves of every valid placement update signed by `guard` for `manifest`
/// ([`guard_wire::moves_from`], shared with the browser); each skipped update is logged as a
/// warning (a download never fails because of one).
pub fn moves_from(guard: PeerId, manifest_id: Root, updates: &[Signed]) -> Moves {
    let (moves, skipped) = guard_wire::moves_from(&guard, manifest_id, updates);
    for why in skipped {
        tracing::warn!(%why, "skipping a placement update");
    }
    moves
}

/// Registers `manifest_id` with the Guard; returns whether it was new.
pub async fn watch(
    net: &Net,
    peer: PeerId,
    addrs: Vec<Multiaddr>,
    manifest_id: Root,
) -> Result<bool, GuardClientError> {
    let req = GuardRequest::Watch {
        manifest_id: manifest_id.to_hex(),
    };
    match request(net, peer, addrs, &req).await? {
        GuardResponse::Watching { new, .. } => Ok(new),
        other => Err(GuardClientError::Malformed(format!(
            "expected watching, got {other:?}"
        ))),
    }
}

/// The object's placement moves, checked (see [`moves_from`]).
pub async fn moves(
    net: &Net,
    peer: PeerId,
    addrs: Vec<Multiaddr>,
    manifest_id: Root,
) -> Result<Moves, GuardClientError> {
    let req = GuardRequest::Placement {
        manifest_id: manifest_id.to_hex(),
    };
    match request(net, peer, addrs, &req).await? {
        GuardResponse::Placement { updates } => Ok(moves_from(peer, manifest_id, &updates)),
        other => Err(GuardClientError::Malformed(format!(
            "expected placement, got {other:?}"
        ))),
    }
}

/// A host's verdicts, each verified to be signed by the Guard `peer`.
pub async fn audits(
    net: &Net,
    peer: PeerId,
    addrs: Vec<Multiaddr>,
    host: PeerId,
    limit: u32,
) -> Result<Vec<(AuditVerdict, Signed)>, GuardClientError> {
    let req = GuardRequest::Audits {
        host: host.to_base58(),
        limit,
    };
    match request(net, peer, addrs, &req).await? {
        GuardResponse::Audits { verdicts } => verdicts
            .into_iter()
            .map(|s| match s.verify::<AuditVerdict>() {
                Ok(v) if v.peer == peer => Ok((v.body, s)),
                Ok(v) => Err(GuardClientError::Malformed(format!(
                    "a verdict signed by {} instead of the Guard",
                    v.peer
                ))),
                Err(e) => Err(GuardClientError::Malformed(format!(
                    "a verdict does not verify: {e}"
                ))),
            })
            .collect(),
        other => Err(GuardClientError::Malformed(format!(
            "expected audits, got {other:?}"
        ))),
    }
}

//! Asking an Escrow (`/btfs/escrow/1`, wire format in `btfs_core::escrow`).

use std::time::Duration;

use btfs_core::escrow::{self, EscrowRequest, EscrowResponse, MAX_RESPONSE_LEN};
use btfs_core::protocol::Status;
use libp2p::{Multiaddr, PeerId};
use thiserror::Error;

use crate::net::Net;

/// Deadline for one Escrow request.
pub const ESCROW_TIMEOUT: Duration = Duration::from_secs(30);

/// An Escrow request failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum EscrowClientError {
    /// No connection or stream.
    #[error("cannot reach the Escrow {peer}: {reason}")]
    Unreachable {
        /// The Escrow.
        peer: PeerId,
        /// Why.
        reason: String,
    },
    /// The Escrow said no.
    #[error("the Escrow refused: {0}")]
    Refused(String),
    /// The answer was not what the protocol says.
    #[error("the Escrow sent a malformed answer: {0}")]
    Malformed(String),
}

/// Sends `req` to the Escrow `peer` at `addrs` and returns its answer.
pub async fn request(
    net: &Net,
    peer: PeerId,
    addrs: Vec<Multiaddr>,
    req: &EscrowRequest,
) -> Result<EscrowResponse, EscrowClientError> {
    let (_, body) = escrow::encode_request(req);
    let (status, out) = crate::net::exchange(
        net,
        peer,
        addrs,
        escrow::PROTOCOL,
        &body,
        MAX_RESPONSE_LEN,
        ESCROW_TIMEOUT,
    )
    .await
    .map_err(|reason| EscrowClientError::Unreachable { peer, reason })?;
    if status != Status::Ok {
        return Err(EscrowClientError::Refused(
            String::from_utf8_lossy(&out).into_owned(),
        ));
    }
    serde_json::from_slice(&out).map_err(|e| EscrowClientError::Malformed(e.to_string()))
}

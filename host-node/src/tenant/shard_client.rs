//! The requester side of `/btfs/shard/1` (wire format: `btfs_core::protocol`).
//!
//! One request per stream; every answer is bounded before it is buffered (a GET's body may not
//! exceed the size the manifest promises), and every request has a deadline. A refusal sent
//! before the body was read arrives at once (`btfs_core::protocol::exchange` reads while it
//! writes), so a full or busy host costs a round trip, not the deadline.

use std::time::Duration;

use btfs_core::protocol::{
    self, ExchangeError, FrameError, Op, RequestHead, Status, MAX_BLOB_LEN, MAX_CLAIM_ROOTS,
    PROTOCOL,
};
use btfs_core::Root;
use libp2p::{PeerId, StreamProtocol};
use thiserror::Error;

/// Deadline for one request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// A shard request failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ShardError {
    /// No stream could be opened (peer unreachable or does not speak the protocol).
    #[error("cannot open a shard stream to {peer}: {reason}")]
    Open {
        /// Peer.
        peer: PeerId,
        /// Cause.
        reason: String,
    },
    /// The stream broke.
    #[error("shard stream to {peer} failed")]
    Io {
        /// Peer.
        peer: PeerId,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The host answered with an error status.
    #[error("host {peer} refused ({status:?}): {message}")]
    Refused {
        /// Peer.
        peer: PeerId,
        /// Status.
        status: Status,
        /// The host's message.
        message: String,
    },
    /// The host sent a malformed or oversized answer.
    #[error("host {peer} sent a bad answer")]
    Frame {
        /// Peer.
        peer: PeerId,
        /// Cause.
        #[source]
        source: FrameError,
    },
    /// No answer in time.
    #[error("host {peer} did not answer within {secs} s")]
    Timeout {
        /// Peer.
        peer: PeerId,
        /// Deadline.
        secs: u64,
    },
}

impl ShardError {
    /// The host's status, if it answered.
    pub fn status(&self) -> Option<Status> {
        match self {
            Self::Refused { status, .. } => Some(*status),
            _ => None,
        }
    }
}

fn protocol() -> StreamProtocol {
    StreamProtocol::new(PROTOCOL)
}

async fn request(
    control: &mut libp2p_stream::Control,
    peer: PeerId,
    head: RequestHead,
    body: &[u8],
    max_ok_len: u32,
) -> Result<Vec<u8>, ShardError> {
    exchange(
        control,
        peer,
        protocol(),
        &head.encode(),
        body,
        max_ok_len,
        REQUEST_TIMEOUT,
    )
    .await
}

/// Deadline for one storage challenge (a host answers from one read of the shard); core's,
/// shared with the browser.
pub const AUDIT_TIMEOUT: Duration = btfs_core::proof::AUDIT_TIMEOUT;

/// Sends a storage challenge (`/btfs/audit/1`) and returns the host's proof, unverified (the
/// caller checks it with `btfs_core::proof::verify`).
pub async fn challenge(
    control: &mut libp2p_stream::Control,
    peer: PeerId,
    c: &btfs_core::proof::Challenge,
    timeout: Duration,
) -> Result<Vec<u8>, ShardError> {
    let max = u32::try_from(btfs_core::proof::max_proof_len(c.size)).unwrap_or(u32::MAX);
    exchange(
        control,
        peer,
        StreamProtocol::new(btfs_core::proof::PROTOCOL),
        &c.encode(),
        &[],
        max,
        timeout,
    )
    .await
}

async fn exchange(
    control: &mut libp2p_stream::Control,
    peer: PeerId,
    protocol: StreamProtocol,
    head: &[u8],
    body: &[u8],
    max_ok_len: u32,
    timeout: Duration,
) -> Result<Vec<u8>, ShardError> {
    let work = async {
        let mut stream =
            control
                .open_stream(peer, protocol)
                .await
                .map_err(|e| ShardError::Open {
                    peer,
                    reason: e.to_string(),
                })?;
        let (status, out) = protocol::exchange_bytes(&mut stream, head, body, max_ok_len)
            .await
            .map_err(|e| match e {
                ExchangeError::Io(source) => ShardError::Io { peer, source },
                ExchangeError::Frame(source) => ShardError::Frame { peer, source },
                other => ShardError::Io {
                    peer,
                    source: std::io::Error::other(other.to_string()),
                },
            })?;
        if status == Status::Ok {
            Ok(out)
        } else {
            Err(ShardError::Refused {
                peer,
                status,
                message: String::from_utf8_lossy(&out).into_owned(),
            })
        }
    };
    tokio::time::timeout(timeout, work)
        .await
        .unwrap_or(Err(ShardError::Timeout {
            peer,
            secs: timeout.as_secs(),
        }))
}

/// Stores `blob` under `root` on `peer`.
pub async fn put(
    control: &mut libp2p_stream::Control,
    peer: PeerId,
    root: Root,
    blob: &[u8],
) -> Result<(), ShardError> {
    let head = RequestHead {
        op: Op::Put,
        root,
        // Over 4 GiB saturates: the host refuses anything over 4 MiB as too large.
        len: u32::try_from(blob.len()).unwrap_or(u32::MAX),
    };
    request(control, peer, head, blob, 0).await.map(|_| ())
}

/// Drops this tenant's hold on `root` at `peer` (the host deletes the blob when no hold is
/// left). Only a blob this peer put can be released.
pub async fn release(
    control: &mut libp2p_stream::Control,
    peer: PeerId,
    root: Root,
) -> Result<(), ShardError> {
    let head = RequestHead {
        op: Op::Release,
        root,
        len: 0,
    };
    request(control, peer, head, &[], 0).await.map(|_| ())
}

/// Claims this tenant's holds on `roots` at `peer` for a completed upload (one CLAIM per
/// [`MAX_CLAIM_ROOTS`] roots).
pub async fn claim(
    control: &mut libp2p_stream::Control,
    peer: PeerId,
    roots: &[Root],
) -> Result<(), ShardError> {
    for chunk in roots.chunks(MAX_CLAIM_ROOTS as usize) {
        let body = protocol::claim_body(chunk);
        let head = RequestHead {
            op: Op::Claim,
            root: Root::from_bytes([0; 32]),
            len: body.len() as u32,
        };
        request(control, peer, head, &body, 0).await?;
    }
    Ok(())
}

/// Fetches a blob of at most `max_len` bytes. The caller verifies it against `root`.
pub async fn get(
    control: &mut libp2p_stream::Control,
    peer: PeerId,
    root: Root,
    max_len: u32,
) -> Result<Vec<u8>, ShardError> {
    let head = RequestHead {
        op: Op::Get,
        root,
        len: 0,
    };
    request(control, peer, head, &[], max_len.min(MAX_BLOB_LEN)).await
}

/// Asks for a blob's size.
pub async fn stat(
    control: &mut libp2p_stream::Control,
    peer: PeerId,
    root: Root,
) -> Result<u64, ShardError> {
    let head = RequestHead {
        op: Op::Stat,
        root,
        len: 0,
    };
    let body = request(control, peer, head, &[], 8).await?;
    let arr: [u8; 8] = body.try_into().map_err(|_| ShardError::Frame {
        peer,
        source: FrameError::TooLong {
            what: "stat body",
            len: 0,
            max: 8,
        },
    })?;
    Ok(u64::from_le_bytes(arr))
}

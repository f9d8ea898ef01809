//! The shard protocol, `/btfs/shard/1`: put, get and stat content-addressed blobs on a host.
//!
//! Goals: move multi-MiB shards over one libp2p stream each with a tiny fixed framing that the
//! browser and native code share; a host can check a put against its root before anything
//! becomes visible; every length is bounded before a byte is buffered. Non-goals: ranges and
//! proofs of storage (the Guard's challenge protocol), payment (contracts come with Escrow).
//!
//! ## Wire format (integers little-endian), one request per stream
//!
//! ```text
//! request  = op: u8 ‖ root: [u8; 32] ‖ len: u32 ‖ body: [u8; len]
//!            op 1 PUT  body = the blob (len ≤ 4 MiB); the host stores it iff BLAKE3(body) = root
//!            op 2 GET  len = 0
//!            op 3 STAT len = 0
//! response = status: u8 ‖ len: u32 ‖ body: [u8; len]
//!            status 0 OK      PUT: empty; GET: the blob; STAT: size as u64
//!            status 1..=7     body = UTF-8 message (≤ 1 KiB) saying what went wrong
//! ```
//!
//! The requester closes its write side after the request; the host closes after the response.

use thiserror::Error;

use crate::layout::MAX_SHARD_SIZE;
use crate::root::Root;

/// libp2p protocol name.
pub const PROTOCOL: &str = "/btfs/shard/1";
/// Largest blob (shard or manifest) a host accepts.
pub const MAX_BLOB_LEN: u32 = MAX_SHARD_SIZE;
/// Largest error message body.
pub const MAX_MESSAGE_LEN: u32 = 1024;
/// Request header length.
pub const REQUEST_HEAD_LEN: usize = 37;
/// Response header length.
pub const RESPONSE_HEAD_LEN: usize = 5;

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Store the body under the root.
    Put = 1,
    /// Return the blob.
    Get = 2,
    /// Return the blob's size.
    Stat = 3,
}

/// A request header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestHead {
    /// The operation.
    pub op: Op,
    /// The blob's root.
    pub root: Root,
    /// Body length (PUT only).
    pub len: u32,
}

/// Response status codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Status {
    /// Success.
    Ok = 0,
    /// The host does not hold the blob.
    NotFound = 1,
    /// The body does not hash to the root; nothing was stored.
    RootMismatch = 2,
    /// The body is larger than [`MAX_BLOB_LEN`].
    TooLarge = 3,
    /// The host's quota would be exceeded.
    QuotaExceeded = 4,
    /// Too many requests in flight; retry later or elsewhere.
    Busy = 5,
    /// Malformed request.
    BadRequest = 6,
    /// The host failed internally (disk error).
    Internal = 7,
}

/// A frame could not be parsed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameError {
    /// Unknown op code.
    #[error("unknown request op {0}")]
    Op(u8),
    /// Unknown status code.
    #[error("unknown response status {0}")]
    Status(u8),
    /// A length over its limit.
    #[error("{what} length {len} exceeds the limit of {max}")]
    TooLong {
        /// Which length.
        what: &'static str,
        /// Its value.
        len: u32,
        /// The limit.
        max: u32,
    },
    /// GET/STAT with a body.
    #[error("{0:?} requests carry no body")]
    UnexpectedBody(Op),
}

impl RequestHead {
    /// Wire bytes.
    pub fn encode(&self) -> [u8; REQUEST_HEAD_LEN] {
        let mut b = [0u8; REQUEST_HEAD_LEN];
        b[0] = self.op as u8;
        b[1..33].copy_from_slice(self.root.as_bytes());
        b[33..].copy_from_slice(&self.len.to_le_bytes());
        b
    }

    /// Parses and bounds-checks a request header.
    pub fn decode(b: &[u8; REQUEST_HEAD_LEN]) -> Result<Self, FrameError> {
        let op = match b[0] {
            1 => Op::Put,
            2 => Op::Get,
            3 => Op::Stat,
            other => return Err(FrameError::Op(other)),
        };
        let mut root = [0u8; 32];
        root.copy_from_slice(&b[1..33]);
        let len = u32::from_le_bytes([b[33], b[34], b[35], b[36]]);
        if op != Op::Put && len != 0 {
            return Err(FrameError::UnexpectedBody(op));
        }
        if len > MAX_BLOB_LEN {
            return Err(FrameError::TooLong {
                what: "blob",
                len,
                max: MAX_BLOB_LEN,
            });
        }
        Ok(Self {
            op,
            root: Root::from_bytes(root),
            len,
        })
    }
}

/// A response header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseHead {
    /// Outcome.
    pub status: Status,
    /// Body length.
    pub len: u32,
}

impl ResponseHead {
    /// Wire bytes.
    pub fn encode(&self) -> [u8; RESPONSE_HEAD_LEN] {
        let mut b = [0u8; RESPONSE_HEAD_LEN];
        b[0] = self.status as u8;
        b[1..].copy_from_slice(&self.len.to_le_bytes());
        b
    }

    /// Parses a response header; `max_ok_len` bounds the body of a successful response.
    pub fn decode(b: &[u8; RESPONSE_HEAD_LEN], max_ok_len: u32) -> Result<Self, FrameError> {
        let status = match b[0] {
            0 => Status::Ok,
            1 => Status::NotFound,
            2 => Status::RootMismatch,
            3 => Status::TooLarge,
            4 => Status::QuotaExceeded,
            5 => Status::Busy,
            6 => Status::BadRequest,
            7 => Status::Internal,
            other => return Err(FrameError::Status(other)),
        };
        let len = u32::from_le_bytes([b[1], b[2], b[3], b[4]]);
        let (what, max) = if status == Status::Ok {
            ("response body", max_ok_len)
        } else {
            ("error message", MAX_MESSAGE_LEN)
        };
        if len > max {
            return Err(FrameError::TooLong { what, len, max });
        }
        Ok(Self { status, len })
    }
}

/// A request/response exchange over a stream failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ExchangeError {
    /// The stream broke.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The answer was malformed or too large.
    #[error(transparent)]
    Frame(#[from] FrameError),
}

/// Sends one request on a fresh stream and reads the answer (status and body, bounded by
/// `max_ok_len` for OK answers and [`MAX_MESSAGE_LEN`] for errors).
///
/// Runtime-agnostic (any `futures-io` stream), so the native tenant and the browser share it;
/// deadlines are the caller's, since they need a clock.
pub async fn exchange<S>(
    stream: &mut S,
    head: &RequestHead,
    body: &[u8],
    max_ok_len: u32,
) -> Result<(Status, Vec<u8>), ExchangeError>
where
    S: futures_util::AsyncRead + futures_util::AsyncWrite + Unpin,
{
    use futures_util::{AsyncReadExt, AsyncWriteExt};
    stream.write_all(&head.encode()).await?;
    stream.write_all(body).await?;
    stream.flush().await?;
    let mut rh = [0u8; RESPONSE_HEAD_LEN];
    stream.read_exact(&mut rh).await?;
    let resp = ResponseHead::decode(&rh, max_ok_len)?;
    let mut out = vec![0u8; resp.len as usize];
    stream.read_exact(&mut out).await?;
    let _ = stream.close().await;
    Ok((resp.status, out))
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn golden_request_and_response_bytes() {
        let head = RequestHead {
            op: Op::Put,
            root: Root::from_bytes([0x11; 32]),
            len: 0x0004_0000,
        };
        let b = head.encode();
        // op=1 | root 0x11 × 32 | len 0x00040000 LE
        assert_eq!(b[0], 0x01);
        assert!(b[1..33].iter().all(|&x| x == 0x11));
        assert_eq!(&b[33..], &[0x00, 0x00, 0x04, 0x00]);
        assert_eq!(RequestHead::decode(&b).unwrap(), head);

        let resp = ResponseHead {
            status: Status::RootMismatch,
            len: 5,
        };
        assert_eq!(resp.encode(), [0x02, 0x05, 0x00, 0x00, 0x00]);
        assert_eq!(ResponseHead::decode(&resp.encode(), 0).unwrap(), resp);
    }

    #[test]
    fn oversized_and_malformed_frames_are_refused() {
        let mut b = RequestHead {
            op: Op::Put,
            root: Root::from_bytes([0; 32]),
            len: MAX_BLOB_LEN + 1,
        }
        .encode();
        assert!(matches!(
            RequestHead::decode(&b),
            Err(FrameError::TooLong { .. })
        ));
        b[0] = 9;
        assert_eq!(RequestHead::decode(&b), Err(FrameError::Op(9)));
        b[0] = 2;
        assert_eq!(
            RequestHead::decode(&b),
            Err(FrameError::UnexpectedBody(Op::Get))
        );
        let r = ResponseHead {
            status: Status::Ok,
            len: 100,
        };
        assert!(ResponseHead::decode(&r.encode(), 99).is_err());
        assert!(ResponseHead::decode(&[8, 0, 0, 0, 0], 0).is_err());
        assert!(ResponseHead::decode(&[1, 1, 4, 0, 0], 0).is_err());
    }
}

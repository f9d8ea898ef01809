//! The shard protocol, `/btfs/shard/1`: put, get, stat, release and claim content-addressed
//! blobs on a host.
//!
//! Goals: move multi-MiB shards over one libp2p stream each with a tiny fixed framing that the
//! browser and native code share; a host can check a put against its root before anything
//! becomes visible; every length is bounded before a byte is buffered; a refusal reaches the
//! requester at once, whatever the body size ([`exchange`] reads the answer while it writes);
//! a failed or abandoned upload leaves nothing behind (release, claim and the grace period,
//! below). Non-goals: ranges and proofs of storage (the Guard's challenge protocol), payment
//! (contracts come with Escrow).
//!
//! ## Wire format (integers little-endian), one request per stream
//!
//! ```text
//! request  = op: u8 ‖ root: [u8; 32] ‖ len: u32 ‖ body: [u8; len]
//!            op 1 PUT     body = the blob (len ≤ 4 MiB); the host stores it iff BLAKE3(body) = root
//!            op 2 GET     len = 0
//!            op 3 STAT    len = 0
//!            op 4 RELEASE len = 0; drop the requester's hold on `root`
//!            op 5 CLAIM   root = 32 zero bytes (ignored); body = n × 32-byte roots,
//!                         1 ≤ n ≤ 8192 (len a multiple of 32); the requester's holds on them
//!                         are kept by a completed upload
//! response = status: u8 ‖ len: u32 ‖ body: [u8; len]
//!            status 0 OK      PUT, RELEASE, CLAIM: empty; GET: the blob; STAT: size as u64
//!            status 1..=9     body = UTF-8 message (≤ 1 KiB) saying what went wrong
//!                             (9 = no funded offer covers this PUT: `crate::escrow::funding`)
//! ```
//!
//! The requester closes its write side after reading the answer; the host closes after the
//! requester did (or after a short linger), so a WebRTC data channel never drops answer bytes.
//! A host may answer before it has read the body (too large, quota exceeded, busy, malformed):
//! the requester reads the answer concurrently with writing the body, returns the refusal at
//! once and drops the stream; the host stops reading and resets.
//!
//! ## Holds, release, claim and the grace period
//!
//! Until storage contracts exist, a host keeps a blob for as long as somebody *holds* it:
//!
//! - A PUT gives the requesting peer a hold on the blob (also when the host already held the
//!   bytes). A host records at most [`MAX_HOLDERS`] holds per blob; a put beyond that is
//!   answered `Forbidden`. Holds are persisted with the store and survive restarts.
//! - A hold starts *unclaimed*. A host drops unclaimed holds older than its grace period
//!   (default one hour, configurable) in a periodic sweep; a blob with no hold left is deleted.
//! - CLAIM marks the requester's holds on the listed roots as *claimed*: a completed upload
//!   claims, on every host it used, every root that host holds for the object (shards and
//!   manifest). Claimed holds are never swept. A CLAIM is all or nothing: if the requester
//!   holds none of a listed root, the host answers `NotFound` (no such blob) or `Forbidden`
//!   (somebody else's blob) and claims nothing.
//! - RELEASE drops the requester's hold (claimed or not); a blob with no hold left is deleted
//!   at once. A failed upload releases everything it placed. Releasing a blob the requester
//!   does not hold is answered `Forbidden` and changes nothing: nobody can delete another
//!   peer's blob.
//!
//! Who "the requester" is needs no signature in the message: every stream runs over a libp2p
//! connection whose Noise handshake proved possession of the peer's ed25519 identity key, and
//! the host takes the peer id from that authenticated connection. A release is therefore
//! signed by the peer that put the blob, and only that peer can send one.

use thiserror::Error;

use crate::layout::MAX_SHARD_SIZE;
use crate::root::Root;

/// libp2p protocol name.
pub const PROTOCOL: &str = "/btfs/shard/1";
/// Largest blob (shard or manifest) a host accepts.
pub const MAX_BLOB_LEN: u32 = MAX_SHARD_SIZE;
/// Largest error message body.
pub const MAX_MESSAGE_LEN: u32 = 1024;
/// Most roots one CLAIM may list.
pub const MAX_CLAIM_ROOTS: u32 = 8192;
/// Largest CLAIM body.
pub const MAX_CLAIM_LEN: u32 = MAX_CLAIM_ROOTS * 32;
/// Most holds a host records per blob.
pub const MAX_HOLDERS: usize = 8;
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
    /// Drop the requester's hold on the blob.
    Release = 4,
    /// Mark the requester's holds on the listed roots as kept by a completed upload.
    Claim = 5,
}

/// A request header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestHead {
    /// The operation.
    pub op: Op,
    /// The blob's root.
    pub root: Root,
    /// Body length (PUT and CLAIM only).
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
    /// The requester may not do this to the blob: it holds no hold on it (RELEASE, CLAIM), or
    /// the blob has [`MAX_HOLDERS`] holds already (PUT).
    Forbidden = 8,
    /// The host works with an Escrow and no funded offer of the requester covers this PUT
    /// (`crate::escrow::funding`); nothing was read or stored.
    Unfunded = 9,
}

impl Status {
    /// Parses a status byte.
    pub fn from_u8(b: u8) -> Result<Self, FrameError> {
        Ok(match b {
            0 => Self::Ok,
            1 => Self::NotFound,
            2 => Self::RootMismatch,
            3 => Self::TooLarge,
            4 => Self::QuotaExceeded,
            5 => Self::Busy,
            6 => Self::BadRequest,
            7 => Self::Internal,
            8 => Self::Forbidden,
            9 => Self::Unfunded,
            other => return Err(FrameError::Status(other)),
        })
    }
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
    /// GET/STAT/RELEASE with a body.
    #[error("{0:?} requests carry no body")]
    UnexpectedBody(Op),
    /// A CLAIM body that is empty or not a whole number of 32-byte roots.
    #[error("a CLAIM body must list 1 to {MAX_CLAIM_ROOTS} 32-byte roots, got {0} bytes")]
    ClaimLength(u32),
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
            4 => Op::Release,
            5 => Op::Claim,
            other => return Err(FrameError::Op(other)),
        };
        let mut root = [0u8; 32];
        root.copy_from_slice(&b[1..33]);
        let len = u32::from_le_bytes([b[33], b[34], b[35], b[36]]);
        match op {
            Op::Put if len > MAX_BLOB_LEN => {
                return Err(FrameError::TooLong {
                    what: "blob",
                    len,
                    max: MAX_BLOB_LEN,
                })
            }
            Op::Put => {}
            Op::Claim if len > MAX_CLAIM_LEN => {
                return Err(FrameError::TooLong {
                    what: "claim",
                    len,
                    max: MAX_CLAIM_LEN,
                })
            }
            Op::Claim if len == 0 || !len.is_multiple_of(32) => {
                return Err(FrameError::ClaimLength(len))
            }
            Op::Claim => {}
            Op::Get | Op::Stat | Op::Release if len != 0 => {
                return Err(FrameError::UnexpectedBody(op))
            }
            Op::Get | Op::Stat | Op::Release => {}
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
        let status = Status::from_u8(b[0])?;
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

/// The CLAIM body listing `roots`.
pub fn claim_body(roots: &[Root]) -> Vec<u8> {
    roots.iter().flat_map(|r| *r.as_bytes()).collect()
}

/// The roots a CLAIM body lists (the header's length checks already ran).
pub fn parse_claim(body: &[u8]) -> Result<Vec<Root>, FrameError> {
    let len = u32::try_from(body.len()).unwrap_or(u32::MAX);
    if body.is_empty() || !body.len().is_multiple_of(32) || len > MAX_CLAIM_LEN {
        return Err(FrameError::ClaimLength(len));
    }
    Ok(body
        .chunks_exact(32)
        .map(|c| {
            let mut b = [0u8; 32];
            b.copy_from_slice(c);
            Root::from_bytes(b)
        })
        .collect())
}

/// Sends one request on a fresh stream and reads the answer (status and body, bounded by
/// `max_ok_len` for OK answers and [`MAX_MESSAGE_LEN`] for errors).
///
/// The answer is read *while* the body is written: a host that refuses a put before reading
/// its body (too large, full, busy, malformed) answers at once, and the refusal is returned as
/// soon as it arrives, even though the stream's flow-control window would never let the rest
/// of the body through. A broken write side is reported only if no answer arrives.
///
/// Runtime-agnostic (any `futures-io` stream, no spawning), so the native tenant and the
/// browser share it; deadlines are the caller's, since they need a clock.
pub async fn exchange<S>(
    stream: &mut S,
    head: &RequestHead,
    body: &[u8],
    max_ok_len: u32,
) -> Result<(Status, Vec<u8>), ExchangeError>
where
    S: futures_util::AsyncRead + futures_util::AsyncWrite + Unpin,
{
    exchange_bytes(stream, &head.encode(), body, max_ok_len).await
}

/// [`exchange`] for any protocol answered with [`ResponseHead`] framing: sends `head` then
/// `body` (already encoded) and reads the answer the same way. The Guard's challenge protocol
/// (`crate::proof`) uses it too.
pub async fn exchange_bytes<S>(
    stream: &mut S,
    head: &[u8],
    body: &[u8],
    max_ok_len: u32,
) -> Result<(Status, Vec<u8>), ExchangeError>
where
    S: futures_util::AsyncRead + futures_util::AsyncWrite + Unpin,
{
    let mut ex = Exchange {
        request: [head, body],
        sent: 0,
        write: WriteState::Writing,
        head: [0u8; RESPONSE_HEAD_LEN],
        head_got: 0,
        answer: None,
        got: 0,
        max_ok_len,
    };
    let (status, out) = std::future::poll_fn(|cx| ex.poll(stream, cx)).await?;
    if matches!(ex.write, WriteState::Done) {
        // Our close is the host's signal that the whole answer arrived (see the module docs).
        let _ = futures_util::AsyncWriteExt::close(stream).await;
    }
    Ok((status, out))
}

enum WriteState {
    Writing,
    Flushing,
    Done,
    Failed(std::io::Error),
}

/// The state of one [`exchange`]: how much of the request went out, how much answer came in.
struct Exchange<'a> {
    request: [&'a [u8]; 2],
    sent: usize,
    write: WriteState,
    head: [u8; RESPONSE_HEAD_LEN],
    head_got: usize,
    answer: Option<(Status, Vec<u8>)>,
    got: usize,
    max_ok_len: u32,
}

impl Exchange<'_> {
    fn poll<S>(
        &mut self,
        stream: &mut S,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(Status, Vec<u8>), ExchangeError>>
    where
        S: futures_util::AsyncRead + futures_util::AsyncWrite + Unpin,
    {
        use std::pin::Pin;
        use std::task::Poll;
        // Write side: as much as the stream takes now.
        loop {
            match self.write {
                WriteState::Writing => {
                    let (h, b) = (self.request[0], self.request[1]);
                    let chunk = if self.sent < h.len() {
                        &h[self.sent..]
                    } else {
                        &b[self.sent - h.len()..]
                    };
                    if chunk.is_empty() {
                        self.write = WriteState::Flushing;
                        continue;
                    }
                    match Pin::new(&mut *stream).poll_write(cx, chunk) {
                        Poll::Ready(Ok(0)) => {
                            self.write = WriteState::Failed(std::io::ErrorKind::WriteZero.into())
                        }
                        Poll::Ready(Ok(n)) => self.sent += n,
                        Poll::Ready(Err(e)) => self.write = WriteState::Failed(e),
                        Poll::Pending => break,
                    }
                }
                WriteState::Flushing => match Pin::new(&mut *stream).poll_flush(cx) {
                    Poll::Ready(Ok(())) => self.write = WriteState::Done,
                    Poll::Ready(Err(e)) => self.write = WriteState::Failed(e),
                    Poll::Pending => break,
                },
                WriteState::Done | WriteState::Failed(_) => break,
            }
        }
        // Read side: the answer, whenever it comes.
        loop {
            let buf = match &mut self.answer {
                None => &mut self.head[self.head_got..],
                Some((_, out)) if self.got < out.len() => &mut out[self.got..],
                Some((status, out)) => {
                    return Poll::Ready(Ok((*status, std::mem::take(out))));
                }
            };
            let n = match Pin::new(&mut *stream).poll_read(cx, buf) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(self.broken(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the host closed the stream before answering in full",
                    ))))
                }
                Poll::Ready(Ok(n)) => n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(self.broken(e))),
            };
            if self.answer.is_some() {
                self.got += n;
            } else {
                self.head_got += n;
                if self.head_got == RESPONSE_HEAD_LEN {
                    let resp = ResponseHead::decode(&self.head, self.max_ok_len)?;
                    self.answer = Some((resp.status, vec![0u8; resp.len as usize]));
                }
            }
        }
    }

    /// The error to report when the read side broke: the write side's error if it broke first.
    fn broken(&mut self, read: std::io::Error) -> ExchangeError {
        match std::mem::replace(&mut self.write, WriteState::Done) {
            WriteState::Failed(e) => ExchangeError::Io(e),
            _ => ExchangeError::Io(read),
        }
    }
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
        assert!(ResponseHead::decode(&[10, 0, 0, 0, 0], 0).is_err());
        assert!(ResponseHead::decode(&[1, 1, 4, 0, 0], 0).is_err());
    }

    #[test]
    fn golden_release_claim_and_forbidden_bytes() {
        let release = RequestHead {
            op: Op::Release,
            root: Root::from_bytes([0xAB; 32]),
            len: 0,
        };
        let b = release.encode();
        // op=4 | root 0xAB × 32 | len 0
        assert_eq!(b[0], 0x04);
        assert!(b[1..33].iter().all(|&x| x == 0xAB));
        assert_eq!(&b[33..], &[0, 0, 0, 0]);
        assert_eq!(RequestHead::decode(&b).unwrap(), release);

        let claim = RequestHead {
            op: Op::Claim,
            root: Root::from_bytes([0; 32]),
            len: 64,
        };
        let b = claim.encode();
        // op=5 | 32 zero bytes | len 64 LE
        assert_eq!(b[0], 0x05);
        assert!(b[1..33].iter().all(|&x| x == 0));
        assert_eq!(&b[33..], &[0x40, 0, 0, 0]);
        assert_eq!(RequestHead::decode(&b).unwrap(), claim);
        let roots = [Root::from_bytes([1; 32]), Root::from_bytes([2; 32])];
        let body = claim_body(&roots);
        assert_eq!(body.len(), 64);
        assert_eq!((body[0], body[31], body[32], body[63]), (1, 1, 2, 2));
        assert_eq!(parse_claim(&body).unwrap(), roots);

        let forbidden = ResponseHead {
            status: Status::Forbidden,
            len: 3,
        };
        assert_eq!(forbidden.encode(), [0x08, 0x03, 0x00, 0x00, 0x00]);
        assert_eq!(
            ResponseHead::decode(&forbidden.encode(), 0).unwrap(),
            forbidden
        );
        let unfunded = ResponseHead {
            status: Status::Unfunded,
            len: 4,
        };
        assert_eq!(unfunded.encode(), [0x09, 0x04, 0x00, 0x00, 0x00]);
        assert_eq!(
            ResponseHead::decode(&[10, 0, 0, 0, 0], 0),
            Err(FrameError::Status(10))
        );
    }

    #[test]
    fn release_and_claim_lengths_are_checked() {
        let head = |op, len| {
            RequestHead {
                op,
                root: Root::from_bytes([0; 32]),
                len,
            }
            .encode()
        };
        assert_eq!(
            RequestHead::decode(&head(Op::Release, 1)),
            Err(FrameError::UnexpectedBody(Op::Release))
        );
        for bad in [0, 1, 31, 33, 65] {
            assert_eq!(
                RequestHead::decode(&head(Op::Claim, bad)),
                Err(FrameError::ClaimLength(bad)),
                "{bad}"
            );
        }
        assert!(RequestHead::decode(&head(Op::Claim, 32)).is_ok());
        assert!(RequestHead::decode(&head(Op::Claim, MAX_CLAIM_LEN)).is_ok());
        assert!(matches!(
            RequestHead::decode(&head(Op::Claim, MAX_CLAIM_LEN + 32)),
            Err(FrameError::TooLong { what: "claim", .. })
        ));
        assert!(parse_claim(&[]).is_err());
        assert!(parse_claim(&[0; 33]).is_err());
        // PUT takes exactly 4 MiB, not one byte more.
        assert!(RequestHead::decode(&head(Op::Put, MAX_BLOB_LEN)).is_ok());
        assert!(RequestHead::decode(&head(Op::Put, MAX_BLOB_LEN + 1)).is_err());
    }

    /// An in-memory stream pair with a bounded buffer per direction, like a stream's
    /// flow-control window: a writer that fills it waits until the reader reads.
    mod duplex {
        use std::cell::RefCell;
        use std::collections::VecDeque;
        use std::io;
        use std::pin::Pin;
        use std::rc::Rc;
        use std::task::{Context, Poll};

        #[derive(Default)]
        struct Pipe {
            buf: VecDeque<u8>,
            /// The writer closed (EOF after the buffer).
            closed: bool,
            /// An end was dropped (reset).
            reset: bool,
        }

        pub struct End {
            rx: Rc<RefCell<Pipe>>,
            tx: Rc<RefCell<Pipe>>,
            window: usize,
        }

        pub fn pair(window: usize) -> (End, End) {
            let (a, b) = (
                Rc::<RefCell<Pipe>>::default(),
                Rc::<RefCell<Pipe>>::default(),
            );
            (
                End {
                    rx: a.clone(),
                    tx: b.clone(),
                    window,
                },
                End {
                    rx: b,
                    tx: a,
                    window,
                },
            )
        }

        impl End {
            /// Whether the other end was dropped (without reading anything).
            pub fn peer_gone(&self) -> bool {
                self.rx.borrow().reset
            }
        }

        impl Drop for End {
            fn drop(&mut self) {
                self.rx.borrow_mut().reset = true;
                self.tx.borrow_mut().reset = true;
            }
        }

        impl futures_util::AsyncRead for End {
            fn poll_read(
                self: Pin<&mut Self>,
                _: &mut Context<'_>,
                out: &mut [u8],
            ) -> Poll<io::Result<usize>> {
                let mut p = self.rx.borrow_mut();
                if p.buf.is_empty() {
                    return match (p.reset, p.closed) {
                        (true, _) => Poll::Ready(Err(io::ErrorKind::ConnectionReset.into())),
                        (_, true) => Poll::Ready(Ok(0)),
                        _ => Poll::Pending,
                    };
                }
                let n = out.len().min(p.buf.len());
                for (o, b) in out.iter_mut().zip(p.buf.drain(..n)) {
                    *o = b;
                }
                Poll::Ready(Ok(n))
            }
        }

        impl futures_util::AsyncWrite for End {
            fn poll_write(
                self: Pin<&mut Self>,
                _: &mut Context<'_>,
                data: &[u8],
            ) -> Poll<io::Result<usize>> {
                let mut p = self.tx.borrow_mut();
                if p.reset {
                    return Poll::Ready(Err(io::ErrorKind::ConnectionReset.into()));
                }
                let room = self.window - p.buf.len();
                if room == 0 {
                    return Poll::Pending;
                }
                let n = room.min(data.len());
                p.buf.extend(&data[..n]);
                Poll::Ready(Ok(n))
            }
            fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
                Poll::Ready(Ok(()))
            }
            fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
                self.tx.borrow_mut().closed = true;
                Poll::Ready(Ok(()))
            }
        }
    }

    /// Polls both futures with a no-op waker (the duplex needs no wakeups) until the first
    /// finishes; `None` if it is still stuck after many rounds, i.e. deadlocked.
    fn run_pair<A: std::future::Future, B: std::future::Future>(a: A, b: B) -> Option<A::Output> {
        use std::task::{Context, Poll, Waker};
        let (mut a, mut b) = (std::pin::pin!(a), std::pin::pin!(b));
        let mut cx = Context::from_waker(Waker::noop());
        let mut b_done = false;
        for _ in 0..100_000 {
            if let Poll::Ready(out) = a.as_mut().poll(&mut cx) {
                return Some(out);
            }
            if !b_done {
                b_done = b.as_mut().poll(&mut cx).is_ready();
            }
        }
        None
    }

    /// A host that reads the header and refuses without reading the body.
    async fn refusing_host(mut s: duplex::End, status: Status) {
        use futures_util::{AsyncReadExt, AsyncWriteExt};
        let mut head = [0u8; REQUEST_HEAD_LEN];
        s.read_exact(&mut head).await.unwrap();
        let msg = b"no";
        let resp = ResponseHead { status, len: 2 };
        s.write_all(&resp.encode()).await.unwrap();
        s.write_all(msg).await.unwrap();
        // Never reads the body; waits until the requester goes away.
        std::future::poll_fn(|_| {
            if s.peer_gone() {
                std::task::Poll::Ready(())
            } else {
                std::task::Poll::Pending
            }
        })
        .await;
    }

    #[test]
    fn exchange_returns_an_early_refusal_whatever_the_body_size() {
        const WINDOW: usize = 64 << 10;
        for len in [1usize << 10, 300 << 10, 4 << 20, (4 << 20) + 1] {
            for status in [Status::TooLarge, Status::QuotaExceeded, Status::Busy] {
                let (mut client, host) = duplex::pair(WINDOW);
                let body = vec![7u8; len];
                let head = RequestHead {
                    op: Op::Put,
                    root: Root::of(&body),
                    len: len as u32,
                };
                let out = run_pair(
                    async { exchange(&mut client, &head, &body, 0).await },
                    refusing_host(host, status),
                );
                let (got, msg) = out
                    .unwrap_or_else(|| panic!("exchange of {len} bytes deadlocked"))
                    .unwrap();
                assert_eq!((got, msg.as_slice()), (status, &b"no"[..]), "{len}");
            }
        }
    }

    #[test]
    fn exchange_sends_the_whole_body_and_reads_a_full_answer() {
        use futures_util::{AsyncReadExt, AsyncWriteExt};
        let (mut client, mut host) = duplex::pair(16 << 10);
        let body: Vec<u8> = (0..300_000u32).map(|i| i as u8).collect();
        let head = RequestHead {
            op: Op::Put,
            root: Root::of(&body),
            len: body.len() as u32,
        };
        let expected = body.clone();
        let host_side = async move {
            let mut h = [0u8; REQUEST_HEAD_LEN];
            host.read_exact(&mut h).await.unwrap();
            let req = RequestHead::decode(&h).unwrap();
            let mut got = vec![0u8; req.len as usize];
            host.read_exact(&mut got).await.unwrap();
            assert_eq!(got, expected);
            // Answer with a body larger than the window, as a GET would.
            let answer = vec![5u8; 100_000];
            let resp = ResponseHead {
                status: Status::Ok,
                len: answer.len() as u32,
            };
            host.write_all(&resp.encode()).await.unwrap();
            host.write_all(&answer).await.unwrap();
            // The requester's close is the acknowledgement.
            let mut rest = Vec::new();
            host.read_to_end(&mut rest).await.unwrap();
            assert!(rest.is_empty());
        };
        let out = run_pair(
            async { exchange(&mut client, &head, &body, 100_000).await },
            host_side,
        );
        let (status, answer) = out.expect("deadlocked").unwrap();
        assert_eq!((status, answer.len()), (Status::Ok, 100_000));
        // A host that hangs up without answering is an I/O error, not a hang.
        let (mut client, host) = duplex::pair(1024);
        drop(host);
        let out = run_pair(
            async { exchange(&mut client, &head, &body, 0).await },
            async {},
        );
        assert!(matches!(out, Some(Err(ExchangeError::Io(_)))), "{out:?}");
    }
}

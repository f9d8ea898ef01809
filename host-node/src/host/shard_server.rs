//! The host side of `/btfs/shard/1` (wire format: `btfs_core::protocol`).
//!
//! Goals: serve put/get/stat/release/claim with every resource a peer controls bounded — at most
//! `max_inbound_streams` requests at once and `max_streams_per_peer` per peer, shared fairly
//! between peers (a newcomer evicts idle streams and over-share peers' streams, see
//! [`FairSlots`]; otherwise extra streams get a `Busy` answer without being read), bodies ≤ 4 MiB
//! checked before buffering, a deadline on
//! every request, quota checked before the body is read. A put's bytes are hashed and compared
//! with the declared root before the store sees them; a mismatch stores nothing.
//!
//! A refusal that comes before the body (too large, quota exceeded, busy, malformed) is sent at
//! once; the host then reads nothing more than a short, bounded linger (so a WebRTC requester
//! gets the whole answer) and closes — it never waits for a body it will not use.
//!
//! Holds: the peer id of every request is the one libp2p's Noise handshake authenticated for
//! the connection, so a put records who put the blob, and release/claim act only on that
//! peer's own holds ([`sweep`] runs the grace-period collection; rules in
//! `btfs_core::protocol`). Non-goals: payment and contracts (Escrow work), proofs of storage
//! (Guard work).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use btfs_core::protocol::{
    self as wire, FrameError, Op, RequestHead, ResponseHead, Status, MAX_MESSAGE_LEN,
    REQUEST_HEAD_LEN,
};
use btfs_core::Root;
use futures::{AsyncReadExt, AsyncWriteExt};
use libp2p::{PeerId, Stream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::host::fair_slots::{FairSlots, Slot};
use crate::host::funding::Funding;
use crate::host::store::{BlobStore, Body, StoreError};

/// Time allowed for one whole request (header, body, answer).
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(120);
/// How long an answered stream waits for the requester to close its side.
pub const LINGER: Duration = Duration::from_secs(10);
/// How long a stream refused before its body was read waits for the requester to go away
/// (a current requester drops the stream as soon as it has the answer).
pub const LINGER_REFUSED: Duration = Duration::from_secs(2);
/// Time allowed for the 37-byte request header, so idle streams free their slot quickly.
pub const HEADER_DEADLINE: Duration = Duration::from_secs(10);

/// Request counters (exported to Status later).
#[derive(Debug, Default)]
pub struct ServiceStats {
    /// Requests answered with OK.
    pub served: AtomicU64,
    /// Requests answered with an error status.
    pub failed: AtomicU64,
    /// Streams refused as Busy.
    pub refused: AtomicU64,
    /// Streams dropped because the inbound queue was full.
    pub dropped: Arc<AtomicU64>,
    /// Streams given up to make room for another peer (see [`FairSlots`]).
    pub evicted: AtomicU64,
    /// Streams held right now (being served or answered `Busy`).
    pub open: AtomicU64,
}

/// Limits on inbound work.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Requests served at once.
    pub max_inbound: usize,
    /// Requests one peer may have in flight.
    pub max_per_peer: usize,
}

/// Refused or evicted streams being answered `Busy` at once; beyond this they are dropped
/// unanswered (the peer sees a reset). With the slots, this bounds the streams a host holds.
pub const MAX_BUSY_ANSWERS: usize = 256;

/// Serves shard streams until cancelled.
///
/// Every stream takes a slot in one [`FairSlots`] pool (`max_inbound` slots, `max_per_peer` per
/// peer) for its whole life. When the pool is full a newcomer evicts a stream that has not sent
/// its header yet, or else the oldest stream of a peer holding more than its share, so floods of
/// idle or trickling streams from many identities cannot turn honest requests away.
pub async fn serve(
    mut incoming: tokio::sync::mpsc::Receiver<crate::host::inbound::Inbound>,
    store: Arc<dyn BlobStore>,
    limits: Limits,
    stats: Arc<ServiceStats>,
    funding: Option<Arc<Funding>>,
    cancel: CancellationToken,
) {
    let slots = FairSlots::new(limits.max_inbound, limits.max_per_peer);
    let busy_answers = Arc::new(Semaphore::new(MAX_BUSY_ANSWERS));
    let in_flight = Arc::new(InFlightPuts::default());
    loop {
        let (peer, mut stream) = tokio::select! {
            () = cancel.cancelled() => break,
            next = incoming.recv() => match next { Some(s) => s, None => break },
        };
        let Some(slot) = slots.acquire(peer, std::time::Instant::now()) else {
            stats.refused.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%peer, "shard stream refused: busy");
            let Ok(permit) = busy_answers.clone().try_acquire_owned() else {
                continue; // dropping the stream resets it: the peer sees a reset
            };
            let open = OpenStream::count(&stats);
            tokio::spawn(async move {
                let msg = "host busy: too many requests in flight; retry later or use another host";
                let _ = tokio::time::timeout(
                    Duration::from_secs(5),
                    respond(&mut stream, Status::Busy, msg.as_bytes(), true),
                )
                .await;
                drop((permit, open));
            });
            continue;
        };
        let store = store.clone();
        let stats = stats.clone();
        let busy_answers = busy_answers.clone();
        let in_flight = in_flight.clone();
        let funding = funding.clone();
        tokio::spawn(async move {
            let open = OpenStream::count(&stats);
            let work = tokio::time::timeout(
                REQUEST_DEADLINE,
                handle(
                    &mut stream,
                    store,
                    peer,
                    &slot,
                    &in_flight,
                    funding.as_deref(),
                ),
            );
            let outcome = tokio::select! {
                outcome = work => outcome,
                () = slot.evicted() => {
                    stats.evicted.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%peer, "shard stream evicted for a newcomer");
                    drop(slot);
                    if let Ok(_permit) = busy_answers.try_acquire() {
                        let msg = "host busy: this stream made room for another peer's request; retry later";
                        let _ = tokio::time::timeout(
                            Duration::from_secs(1),
                            respond(&mut stream, Status::Busy, msg.as_bytes(), true),
                        )
                        .await;
                    }
                    return;
                }
            };
            match outcome {
                Ok(Ok(Status::Ok)) => stats.served.fetch_add(1, Ordering::Relaxed),
                Ok(Ok(_)) => stats.failed.fetch_add(1, Ordering::Relaxed),
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = ?e, "shard stream failed");
                    stats.failed.fetch_add(1, Ordering::Relaxed)
                }
                Err(_) => {
                    tracing::debug!(%peer, "shard request deadline passed");
                    stats.failed.fetch_add(1, Ordering::Relaxed)
                }
            };
            drop((slot, open));
        });
    }
}

/// One stream held by the service, counted in [`ServiceStats::open`] until dropped.
struct OpenStream(Arc<ServiceStats>);

impl OpenStream {
    fn count(stats: &Arc<ServiceStats>) -> Self {
        stats.open.fetch_add(1, Ordering::Relaxed);
        Self(stats.clone())
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Sends the answer, lingers, closes. `unread` says the request's body was not read (an early
/// refusal): the linger is then short.
pub(crate) async fn respond(
    stream: &mut Stream,
    status: Status,
    body: &[u8],
    unread: bool,
) -> std::io::Result<()> {
    let body = if status == Status::Ok {
        body
    } else {
        &body[..body.len().min(MAX_MESSAGE_LEN as usize)]
    };
    let head = ResponseHead {
        status,
        len: body.len() as u32,
    };
    stream.write_all(&head.encode()).await?;
    stream.write_all(body).await?;
    stream.flush().await?;
    linger(stream, if unread { LINGER_REFUSED } else { LINGER }).await;
    stream.close().await
}

/// Waits (briefly, reading at most a few KiB) for the requester to close or drop its side
/// before we close ours. On WebRTC-direct, closing shuts the data channel down, and a browser
/// then drops answer bytes it has received but not yet read; the requester closes only after
/// reading the whole (length-prefixed) answer, so its close is the acknowledgement. A requester
/// still sending an unread body gets no more than `max` and 4 KiB of patience.
async fn linger(stream: &mut Stream, max: Duration) {
    let mut sink = [0u8; 1024];
    let _ = tokio::time::timeout(max, async {
        let mut total = 0;
        while let Ok(n @ 1..) = stream.read(&mut sink).await {
            total += n;
            if total > 4096 {
                break; // a peer that keeps talking gets no more patience
            }
        }
    })
    .await;
}

/// Unix time in milliseconds (hold timestamps must survive restarts, so wall-clock time).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Handles one request; returns the status sent.
async fn handle(
    stream: &mut Stream,
    store: Arc<dyn BlobStore>,
    peer: PeerId,
    slot: &Slot,
    in_flight: &Arc<InFlightPuts>,
    funding: Option<&Funding>,
) -> std::io::Result<Status> {
    let mut head = [0u8; REQUEST_HEAD_LEN];
    tokio::time::timeout(HEADER_DEADLINE, stream.read_exact(&mut head))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no request header"))??;
    slot.set_working();
    let req = match RequestHead::decode(&head) {
        Ok(r) => r,
        Err(e) => {
            let status = match e {
                FrameError::TooLong { .. } => Status::TooLarge,
                _ => Status::BadRequest,
            };
            respond(stream, status, e.to_string().as_bytes(), true).await?;
            return Ok(status);
        }
    };
    let (status, body, unread) = match req.op {
        Op::Put => {
            let pending = in_flight.start(peer, req.root);
            let r = put(stream, &store, req, peer, funding).await?;
            if pending.finish() {
                // The requester released this root while the put was still in flight (it gave
                // the put up): honour the release now that the hold exists.
                let _ = blocking(&store, req.root, move |s, r| s.release(r, peer)).await;
                tracing::debug!(%peer, root = %req.root, "put released while in flight");
            }
            r
        }
        Op::Claim => {
            let mut body = vec![0u8; req.len as usize];
            stream.read_exact(&mut body).await?;
            let (status, msg) = match wire::parse_claim(&body) {
                Ok(roots) => blocking(&store, req.root, move |s, _| s.claim(&roots, peer))
                    .await
                    .map_or_else(refusal, |()| (Status::Ok, Vec::new())),
                Err(e) => (Status::BadRequest, e.to_string().into_bytes()),
            };
            (status, msg, false)
        }
        Op::Release => {
            let released = blocking(&store, req.root, move |s, r| s.release(r, peer)).await;
            let (status, msg) = match released {
                // No hold yet, but this peer's put of the root is in flight: it is released
                // when it lands (a tenant gives up a slow put and releases it at once).
                Err(_) if in_flight.release_pending(peer, req.root) => (Status::Ok, Vec::new()),
                r => r.map_or_else(refusal, |deleted| {
                    if deleted {
                        tracing::debug!(%peer, root = %req.root, "blob released and deleted");
                    }
                    (Status::Ok, Vec::new())
                }),
            };
            (status, msg, false)
        }
        Op::Get => {
            let (status, body) = blocking(&store, req.root, |s, r| s.get(r))
                .await
                .map_or_else(refusal, |found| match found {
                    Some(bytes) => (Status::Ok, bytes),
                    None => not_found(&req.root),
                });
            (status, body, false)
        }
        Op::Stat => {
            let (status, body) = blocking(&store, req.root, |s, r| s.size(r))
                .await
                .map_or_else(refusal, |found| match found {
                    Some(size) => (Status::Ok, size.to_le_bytes().to_vec()),
                    None => not_found(&req.root),
                });
            (status, body, false)
        }
    };
    respond(stream, status, &body, unread).await?;
    Ok(status)
}

fn not_found(root: &Root) -> (Status, Vec<u8>) {
    (
        Status::NotFound,
        format!("this host does not hold {root}").into_bytes(),
    )
}

/// The answer for a store error: the peer's own mistakes get their reason, disk trouble only
/// a generic message (details go to the host's log).
fn refusal(e: StoreError) -> (Status, Vec<u8>) {
    let msg = e.to_string().into_bytes();
    match e {
        StoreError::Quota { .. } => (Status::QuotaExceeded, msg),
        StoreError::NotHeld(_) => (Status::NotFound, msg),
        StoreError::NotHolder(_) | StoreError::TooManyHolders(_) => (Status::Forbidden, msg),
        _ => {
            tracing::error!(error = ?e, "storage error");
            (
                Status::Internal,
                b"host storage error; try another host".to_vec(),
            )
        }
    }
}

async fn blocking<T: Send + 'static>(
    store: &Arc<dyn BlobStore>,
    root: Root,
    f: impl FnOnce(&dyn BlobStore, &Root) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || f(store.as_ref(), &root))
        .await
        .unwrap_or_else(|e| {
            Err(StoreError::Io {
                path: "<blocking task>".into(),
                source: std::io::Error::other(e.to_string()),
            })
        })
}

/// Returns the answer and whether the body was left unread.
async fn put(
    stream: &mut Stream,
    store: &Arc<dyn BlobStore>,
    req: RequestHead,
    peer: PeerId,
    funding: Option<&Funding>,
) -> std::io::Result<(Status, Vec<u8>, bool)> {
    // Paid for? Decided on the header alone, before a byte of the body is read.
    let paid = match funding.map(|f| f.spend(peer, u64::from(req.len), now_ms())) {
        None => None,
        Some(Ok(p)) => Some(p),
        Some(Err(why)) => {
            return Ok((Status::Unfunded, why.to_string().into_bytes(), true));
        }
    };
    let r = put_paid(stream, store, req, peer).await;
    if let (Some(f), Some(p)) = (funding, paid) {
        if !matches!(r, Ok((Status::Ok, _, _))) {
            f.refund(p);
        }
    }
    r
}

async fn put_paid(
    stream: &mut Stream,
    store: &Arc<dyn BlobStore>,
    req: RequestHead,
    peer: PeerId,
) -> std::io::Result<(Status, Vec<u8>, bool)> {
    if !store.fits(u64::from(req.len)) {
        let msg = format!(
            "host is full: {} of {} bytes used; put this shard on another host",
            store.used(),
            store.quota()
        );
        return Ok((Status::QuotaExceeded, msg.into_bytes(), true));
    }
    // A reused, aligned buffer: the store writes it to disk as it is (no copy, no zeroing).
    let mut body = Body::with_len(req.len as usize);
    stream.read_exact(body.bytes_mut()).await?;
    let root = req.root;
    let now = now_ms();
    let store = store.clone();
    // Hash check and durable write in one blocking task (one thread hand-off per put).
    let stored = tokio::task::spawn_blocking(move || {
        root.verify_in(body)
            .map(|v| store.put(&root, &v, peer, now))
    })
    .await;
    let (status, msg) = match stored {
        Ok(Ok(put)) => put.map_or_else(refusal, |_| (Status::Ok, Vec::new())),
        Ok(Err(_)) => {
            let msg = format!(
                "refused: the bytes do not hash to the declared root {root}; nothing was stored"
            );
            (Status::RootMismatch, msg.into_bytes())
        }
        Err(e) => refusal(StoreError::Io {
            path: "<put task>".into(),
            source: std::io::Error::other(e.to_string()),
        }),
    };
    Ok((status, msg, false))
}

/// Puts in flight per (peer, root), and whether the peer released the root meanwhile. Bounded
/// by the stream slots (one entry per admitted put).
#[derive(Default)]
pub struct InFlightPuts {
    table: std::sync::Mutex<std::collections::HashMap<(PeerId, Root), (u32, bool)>>,
}

/// Removes a put from [`InFlightPuts`] if its handler ends early (error, deadline, eviction).
struct PutGuard<'a> {
    table: &'a InFlightPuts,
    key: (PeerId, Root),
    done: std::cell::Cell<bool>,
}

impl PutGuard<'_> {
    /// Ends the put; says whether the peer released the root while it was in flight.
    fn finish(self) -> bool {
        self.done.set(true);
        self.table.end(self.key)
    }
}

impl Drop for PutGuard<'_> {
    fn drop(&mut self) {
        if !self.done.get() {
            self.table.end(self.key);
        }
    }
}

impl InFlightPuts {
    fn start(&self, peer: PeerId, root: Root) -> PutGuard<'_> {
        if let Ok(mut t) = self.table.lock() {
            t.entry((peer, root)).or_insert((0, false)).0 += 1;
        }
        PutGuard {
            table: self,
            key: (peer, root),
            done: std::cell::Cell::new(false),
        }
    }

    fn end(&self, key: (PeerId, Root)) -> bool {
        let Ok(mut t) = self.table.lock() else {
            return false;
        };
        let Some(e) = t.get_mut(&key) else {
            return false;
        };
        e.0 -= 1;
        let released = e.1;
        if e.0 == 0 {
            t.remove(&key);
        }
        released
    }

    /// Marks an in-flight put of `root` by `peer` as released; false if there is none.
    fn release_pending(&self, peer: PeerId, root: Root) -> bool {
        let Ok(mut t) = self.table.lock() else {
            return false;
        };
        match t.get_mut(&(peer, root)) {
            Some(e) => {
                e.1 = true;
                true
            }
            None => false,
        }
    }
}

/// Drops unclaimed holds older than `grace` (and blobs left without a hold) every `interval`,
/// until cancelled.
pub async fn sweep(
    store: Arc<dyn BlobStore>,
    grace: Duration,
    interval: Duration,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            _ = tick.tick() => {}
        }
        let store = store.clone();
        let grace_ms = grace.as_millis() as u64;
        let swept = tokio::task::spawn_blocking(move || store.sweep(now_ms(), grace_ms)).await;
        match swept {
            Ok(Ok(r)) if r.holds_dropped > 0 => tracing::info!(
                holds = r.holds_dropped,
                blobs = r.blobs_deleted,
                bytes = r.bytes_freed,
                "swept unclaimed holds older than the grace period"
            ),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(error = ?e, "sweep of unclaimed blobs failed"),
            Err(e) => tracing::error!(error = ?e, "sweep task failed"),
        }
    }
}

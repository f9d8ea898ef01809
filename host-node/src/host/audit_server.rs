//! The host side of `/btfs/audit/1`: answering storage challenges (wire format and proof rules:
//! `btfs_core::proof`).
//!
//! Goals: any peer (the Guard, a tenant, a browser page) may challenge any blob this host holds;
//! the answer is built from the bytes on disk alone (the host re-reads and re-hashes the shard
//! for every challenge, so a damaged copy is caught at once, never answered from a cache); every
//! resource a challenger controls is bounded: at most [`MAX_AUDITS`] challenges in flight and
//! [`MAX_AUDITS_PER_PEER`] per peer (shared fairly, [`FairSlots`]), a token bucket of
//! [`AUDIT_RATE`] challenges per second per peer (burst [`AUDIT_BURST`]), a 68-byte request
//! read under [`HEADER_DEADLINE`], and a whole exchange under [`AUDIT_DEADLINE`].
//! Non-goals: deciding anything about the verdict (the challenger does), payment.

use std::sync::Arc;
use std::time::{Duration, Instant};

use btfs_core::proof::{self, Challenge, ProofError, CHALLENGE_LEN};
use btfs_core::protocol::Status;
use futures::AsyncReadExt;
use libp2p::Stream;
use tokio_util::sync::CancellationToken;

use crate::host::fair_slots::{refuse_busy, Gate};
use crate::host::shard_server::{respond, HEADER_DEADLINE};
use crate::host::store::BlobStore;

/// Challenges answered at once.
pub const MAX_AUDITS: usize = 16;
/// Challenges one peer may have in flight.
pub const MAX_AUDITS_PER_PEER: usize = 8;
/// Sustained challenges per second per peer.
pub const AUDIT_RATE: f64 = 200.0;
/// Burst of challenges per peer.
pub const AUDIT_BURST: f64 = 400.0;
/// Peers whose buckets are remembered; beyond this, full buckets are forgotten first.
pub const MAX_TRACKED_PEERS: usize = 4096;
/// Time for one whole exchange (read, prove, answer).
pub const AUDIT_DEADLINE: Duration = Duration::from_secs(30);

/// Audit counters.
#[derive(Debug, Default)]
pub struct AuditStats {
    /// Proofs sent.
    pub proved: std::sync::atomic::AtomicU64,
    /// Challenges answered with an error (not held, damaged, malformed).
    pub refused: std::sync::atomic::AtomicU64,
    /// Challenges answered `Busy` (slots or rate).
    pub busy: std::sync::atomic::AtomicU64,
}

/// Answers challenges until cancelled.
pub async fn serve(
    mut incoming: tokio::sync::mpsc::Receiver<crate::host::inbound::Inbound>,
    store: Arc<dyn BlobStore>,
    stats: Arc<AuditStats>,
    cancel: CancellationToken,
) {
    use std::sync::atomic::Ordering::Relaxed;
    let gate = Gate::new(
        MAX_AUDITS,
        MAX_AUDITS_PER_PEER,
        AUDIT_RATE,
        AUDIT_BURST,
        MAX_TRACKED_PEERS,
    );
    loop {
        let (peer, mut stream) = tokio::select! {
            () = cancel.cancelled() => break,
            next = incoming.recv() => match next { Some(s) => s, None => break },
        };
        let slot = gate.admit(peer, Instant::now());
        let store = store.clone();
        let stats = stats.clone();
        tokio::spawn(async move {
            let Some(slot) = slot else {
                stats.busy.fetch_add(1, Relaxed);
                refuse_busy(
                    &mut stream,
                    "host busy: too many challenges from you; retry later",
                )
                .await;
                return;
            };
            let r = tokio::time::timeout(AUDIT_DEADLINE, answer(&mut stream, store, &slot)).await;
            match r {
                Ok(Ok(Status::Ok)) => stats.proved.fetch_add(1, Relaxed),
                Ok(Ok(_)) => stats.refused.fetch_add(1, Relaxed),
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "audit stream failed");
                    stats.refused.fetch_add(1, Relaxed)
                }
                Err(_) => stats.refused.fetch_add(1, Relaxed),
            };
            drop(slot);
        });
    }
}

async fn answer(
    stream: &mut Stream,
    store: Arc<dyn BlobStore>,
    slot: &crate::host::fair_slots::Slot,
) -> std::io::Result<Status> {
    let mut buf = [0u8; CHALLENGE_LEN];
    tokio::time::timeout(HEADER_DEADLINE, stream.read_exact(&mut buf))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no challenge"))??;
    slot.set_working();
    let (status, body) = match Challenge::decode(&buf) {
        Err(e) => (Status::BadRequest, e.to_string().into_bytes()),
        Ok(c) => tokio::task::spawn_blocking(move || prove_from_store(&*store, &c))
            .await
            .unwrap_or_else(|e| (Status::Internal, format!("audit task failed: {e}").into())),
    };
    respond(stream, status, &body, false).await?;
    Ok(status)
}

/// The answer to `c` from what `store` holds: a proof, or a status and message.
pub fn prove_from_store(store: &dyn BlobStore, c: &Challenge) -> (Status, Vec<u8>) {
    match store.get(&c.root) {
        Ok(None) => (
            Status::NotFound,
            format!("this host does not hold blob {}", c.root).into_bytes(),
        ),
        Err(e) => (
            Status::Internal,
            format!("reading the blob: {e}").into_bytes(),
        ),
        Ok(Some(bytes)) => match proof::prove(c, &bytes) {
            Ok(p) => (Status::Ok, p),
            Err(e @ ProofError::Damaged) => {
                tracing::warn!(root = %c.root, "a stored blob no longer matches its root");
                (Status::RootMismatch, e.to_string().into_bytes())
            }
            Err(e) => (Status::BadRequest, e.to_string().into_bytes()),
        },
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::host::fair_slots::RateBuckets;
    use crate::host::store::{Body, MemStore};
    use btfs_core::Root;
    use libp2p::PeerId;

    #[test]
    fn the_store_answers_with_a_proof_or_says_why_not() {
        let store = MemStore::new(1 << 30);
        let data: Vec<u8> = (0..50_000u32).map(|i| (i % 253) as u8).collect();
        let root = Root::of(&data);
        let shard = root.verify_in(Body::copy_of(&data)).unwrap();
        store.put(&root, &shard, PeerId::random(), 0).unwrap();
        let c = Challenge {
            root,
            nonce: [1; 32],
            size: 50_000,
        };
        let (status, p) = prove_from_store(&store, &c);
        assert_eq!(status, Status::Ok);
        proof::verify(&c, &p).unwrap();
        let other = Challenge {
            root: Root::of(b"nope"),
            ..c
        };
        assert_eq!(prove_from_store(&store, &other).0, Status::NotFound);
        let wrong_size = Challenge { size: 49_999, ..c };
        assert_eq!(prove_from_store(&store, &wrong_size).0, Status::BadRequest);
    }

    #[test]
    fn buckets_refill_and_stay_bounded() {
        let mut b = RateBuckets::new(AUDIT_RATE, AUDIT_BURST, MAX_TRACKED_PEERS);
        let p = PeerId::random();
        let t0 = Instant::now();
        let granted = (0..1000).filter(|_| b.take(p, t0)).count();
        assert_eq!(granted, AUDIT_BURST as usize);
        assert!(!b.take(p, t0));
        assert!(b.take(p, t0 + Duration::from_millis(10)));
        for _ in 0..MAX_TRACKED_PEERS + 10 {
            b.take(PeerId::random(), t0);
        }
        assert!(b.tracked() <= MAX_TRACKED_PEERS);
    }
}

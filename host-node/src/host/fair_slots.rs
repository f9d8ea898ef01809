//! A bounded pool of work slots shared fairly between peers.
//!
//! Goals: a host serves at most `capacity` requests at once and at most `per_peer` for any one
//! peer, *and* a peer that shows up while the pool is full still gets a slot as long as some
//! other peer holds more than its fair share. A fresh libp2p identity costs nothing, so a per-peer
//! limit alone lets an attacker with `capacity / per_peer` identities fill the pool with idle or
//! trickling streams and turn every honest tenant away as `Busy`. Here the newcomer instead
//! *evicts* the oldest slot of the peer that holds the most slots, provided that peer holds at
//! least two more than the newcomer would; the evicted request learns it through its
//! [`Slot::evicted`] future and answers `Busy`. An attacker therefore keeps at most an equal share
//! per identity, and honest requests, which finish in milliseconds, get through.
//!
//! A slot starts *idle* (a stream that has not yet sent its request header) and becomes
//! *working* with [`Slot::set_working`]. When the pool is full, the oldest idle slot of any peer
//! that has been idle for at least [`IDLE_GRACE`] is evicted first: an honest requester sends
//! its header with the stream, so only a peer that opens streams and says nothing loses them.
//!
//! Non-goals: weighting by reputation or payment (later, with contracts), per-address limits
//! (the libp2p connection limits cover connections; slots are per authenticated peer).
//!
//! Pure bookkeeping behind one mutex: no I/O and no clock of its own (`now` is an argument;
//! "oldest" is the order of admission).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use libp2p::PeerId;
use tokio_util::sync::CancellationToken;

/// How long a slot may stay idle before any newcomer may take it.
pub const IDLE_GRACE: Duration = Duration::from_millis(500);

/// A pool of slots; share it as `Arc<FairSlots>`.
#[derive(Debug)]
pub struct FairSlots {
    capacity: usize,
    per_peer: usize,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Slots in admission order: id → holder.
    held: BTreeMap<u64, Held>,
    /// Slots held per peer.
    counts: HashMap<PeerId, usize>,
    next_id: u64,
    evictions: u64,
}

#[derive(Debug)]
struct Held {
    peer: PeerId,
    evict: CancellationToken,
    working: bool,
    since: Instant,
}

/// One admitted request's slot; released on drop.
#[derive(Debug)]
pub struct Slot {
    pool: Arc<FairSlots>,
    id: u64,
    evict: CancellationToken,
}

impl FairSlots {
    /// A pool of `capacity` slots with at most `per_peer` per peer (both at least 1).
    pub fn new(capacity: usize, per_peer: usize) -> Arc<Self> {
        Arc::new(Self {
            capacity: capacity.max(1),
            per_peer: per_peer.max(1),
            state: Mutex::default(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A slot for `peer`, evicting an over-share holder if the pool is full; `None` when `peer`
    /// is at its own limit or every holder has no more than a fair share.
    pub fn acquire(self: &Arc<Self>, peer: PeerId, now: Instant) -> Option<Slot> {
        let mut s = self.lock();
        let mine = s.counts.get(&peer).copied().unwrap_or(0);
        if mine >= self.per_peer {
            return None;
        }
        if s.held.len() >= self.capacity {
            let stale_idle = s
                .held
                .iter()
                .find(|(_, h)| !h.working && now.saturating_duration_since(h.since) >= IDLE_GRACE);
            let oldest = match stale_idle {
                Some((id, _)) => *id,
                None => {
                    let (victim, most) = s
                        .counts
                        .iter()
                        .max_by_key(|(_, n)| **n)
                        .map(|(p, n)| (*p, *n))?;
                    if most < mine + 2 {
                        return None;
                    }
                    s.held
                        .iter()
                        .find(|(_, h)| h.peer == victim)
                        .map(|(id, _)| *id)?
                }
            };
            if let Some(h) = s.held.remove(&oldest) {
                h.evict.cancel();
                s.release_count(&h.peer);
                s.evictions += 1;
            }
        }
        let id = s.next_id;
        s.next_id += 1;
        let evict = CancellationToken::new();
        s.held.insert(
            id,
            Held {
                peer,
                evict: evict.clone(),
                working: false,
                since: now,
            },
        );
        *s.counts.entry(peer).or_insert(0) += 1;
        Some(Slot {
            pool: self.clone(),
            id,
            evict,
        })
    }

    /// Slots in use.
    pub fn in_use(&self) -> usize {
        self.lock().held.len()
    }

    /// Slots taken away from over-share peers so far.
    pub fn evictions(&self) -> u64 {
        self.lock().evictions
    }
}

impl State {
    fn release_count(&mut self, peer: &PeerId) {
        if let Some(n) = self.counts.get_mut(peer) {
            *n -= 1;
            if *n == 0 {
                self.counts.remove(peer);
            }
        }
    }
}

impl Slot {
    /// Marks the request as under way (its header arrived); idle slots are evicted first.
    pub fn set_working(&self) {
        if let Some(h) = self.pool.lock().held.get_mut(&self.id) {
            h.working = true;
        }
    }

    /// Resolves when the pool gave this slot to another peer; the request should stop.
    pub async fn evicted(&self) {
        self.evict.cancelled().await;
    }

    /// Whether the slot was taken away.
    pub fn is_evicted(&self) -> bool {
        self.evict.is_cancelled()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut s = self.pool.lock();
        if let Some(h) = s.held.remove(&self.id) {
            s.release_count(&h.peer);
        }
    }
}

/// Per-peer token buckets: `rate` requests per second sustained, bursts of `burst`, at most
/// `max_peers` peers remembered (full buckets are forgotten first; they lose nothing by it).
pub struct RateBuckets {
    rate: f64,
    burst: f64,
    max_peers: usize,
    peers: HashMap<PeerId, (f64, Instant)>,
}

impl RateBuckets {
    /// Buckets with these limits.
    pub fn new(rate: f64, burst: f64, max_peers: usize) -> Self {
        Self {
            rate,
            burst,
            max_peers,
            peers: HashMap::new(),
        }
    }

    /// Takes one token of `peer`'s bucket; false: over its rate (or too many peers at once).
    pub fn take(&mut self, peer: PeerId, now: Instant) -> bool {
        let (rate, burst) = (self.rate, self.burst);
        if self.peers.len() >= self.max_peers && !self.peers.contains_key(&peer) {
            self.peers.retain(|_, (tokens, at)| {
                *tokens + now.duration_since(*at).as_secs_f64() * rate < burst
            });
            if self.peers.len() >= self.max_peers {
                return false;
            }
        }
        let (tokens, at) = self.peers.entry(peer).or_insert((burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * rate).min(burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Peers remembered.
    pub fn tracked(&self) -> usize {
        self.peers.len()
    }
}

/// Admission for one inbound protocol: first the peer's token bucket, then a fair slot.
pub struct Gate {
    slots: Arc<FairSlots>,
    buckets: Mutex<RateBuckets>,
}

impl Gate {
    /// `capacity` streams at once, `per_peer` of them per peer, `rate` per second per peer
    /// (bursts of `burst`), at most `max_peers` buckets remembered.
    pub fn new(capacity: usize, per_peer: usize, rate: f64, burst: f64, max_peers: usize) -> Self {
        Self {
            slots: FairSlots::new(capacity, per_peer),
            buckets: Mutex::new(RateBuckets::new(rate, burst, max_peers)),
        }
    }

    /// A slot for `peer`'s new stream, or `None`: over its rate or no room (answer `Busy`).
    pub fn admit(&self, peer: PeerId, now: Instant) -> Option<Slot> {
        let allowed = self
            .buckets
            .lock()
            .map(|mut b| b.take(peer, now))
            .unwrap_or(false);
        if allowed {
            self.slots.acquire(peer, now)
        } else {
            None
        }
    }
}

/// Answers a stream that [`Gate::admit`] refused with `Busy` and `msg` (within 2 s).
pub async fn refuse_busy(stream: &mut libp2p::Stream, msg: &str) {
    let _ = tokio::time::timeout(
        Duration::from_secs(2),
        crate::host::shard_server::respond(
            stream,
            btfs_core::protocol::Status::Busy,
            msg.as_bytes(),
            true,
        ),
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peers(n: usize) -> Vec<PeerId> {
        (0..n).map(|_| PeerId::random()).collect()
    }

    fn working(pool: &Arc<FairSlots>, peer: PeerId) -> Option<Slot> {
        let s = pool.acquire(peer, Instant::now())?;
        s.set_working();
        Some(s)
    }

    #[test]
    fn respects_capacity_and_per_peer_limits() {
        let pool = FairSlots::new(4, 2);
        let p = peers(3);
        let a: Vec<_> = (0..3).filter_map(|_| working(&pool, p[0])).collect();
        assert_eq!(a.len(), 2, "per-peer limit");
        let b: Vec<_> = (0..2).filter_map(|_| working(&pool, p[1])).collect();
        assert_eq!(b.len(), 2);
        assert_eq!(pool.in_use(), 4);
        // Full of working slots; both holders have 2 ≥ the newcomer's 0 + 2: one is evicted.
        let c = pool
            .acquire(p[2], Instant::now())
            .expect("a newcomer evicts an over-share holder");
        assert_eq!(pool.in_use(), 4);
        assert!(a[0].is_evicted() || b[0].is_evicted());
        drop(c);
        assert_eq!(pool.in_use(), 3);
    }

    #[test]
    fn no_eviction_when_shares_are_fair() {
        let pool = FairSlots::new(3, 3);
        let p = peers(4);
        let held: Vec<_> = p[..3].iter().filter_map(|q| working(&pool, *q)).collect();
        assert_eq!(held.len(), 3);
        assert!(
            pool.acquire(p[3], Instant::now()).is_none(),
            "every holder has one working slot"
        );
        assert!(held.iter().all(|s| !s.is_evicted()));
        assert_eq!(pool.evictions(), 0);
    }

    #[test]
    fn the_biggest_holders_oldest_slot_goes_first() {
        let pool = FairSlots::new(6, 6);
        let p = peers(3);
        let hog: Vec<_> = (0..5).filter_map(|_| working(&pool, p[0])).collect();
        let other = working(&pool, p[1]).expect("room");
        let newcomer = working(&pool, p[2]).expect("evicts the hog");
        assert!(hog[0].is_evicted(), "oldest of the biggest holder");
        assert!(hog[1..].iter().all(|s| !s.is_evicted()));
        assert!(!other.is_evicted() && !newcomer.is_evicted());
        // The evicted slot's drop must not free someone else's slot.
        drop(hog);
        assert_eq!(pool.in_use(), 2);
    }

    #[test]
    fn many_identities_each_keep_at_most_a_fair_share() {
        let pool = FairSlots::new(64, 16);
        let attackers = peers(12);
        let mut held = Vec::new();
        for round in 0..16 {
            for a in &attackers {
                if let Some(s) = working(&pool, *a) {
                    held.push(s);
                }
                let _ = round;
            }
        }
        held.retain(|s| !s.is_evicted());
        assert_eq!(pool.in_use(), 64);
        // An honest newcomer always gets a slot while attackers hold several each.
        let honest = peers(1)[0];
        let got = pool.acquire(honest, Instant::now());
        assert!(got.is_some(), "honest newcomer refused");
    }

    #[test]
    fn idle_slots_of_anyone_go_before_working_ones() {
        let pool = FairSlots::new(3, 3);
        let p = peers(3);
        let busy = working(&pool, p[0]).expect("room");
        let idle = pool
            .acquire(p[1], Instant::now() - IDLE_GRACE)
            .expect("room");
        let busy2 = working(&pool, p[1]).expect("room");
        // Every peer holds ≤ 2, so only the idle-first rule can make room.
        let newcomer = working(&pool, p[2]).expect("evicts the idle slot");
        assert!(idle.is_evicted());
        assert!(!busy.is_evicted() && !busy2.is_evicted() && !newcomer.is_evicted());
        // A young idle slot is safe: its header may be on the way.
        drop(newcomer);
        let young = pool.acquire(p[2], Instant::now()).expect("room");
        assert!(pool.acquire(PeerId::random(), Instant::now()).is_none());
        assert!(!young.is_evicted());
        drop(young);
        let _newcomer = working(&pool, p[2]).expect("room");
        // With only working slots held fairly, a newcomer waits.
        assert!(pool.acquire(PeerId::random(), Instant::now()).is_none());
    }

    #[tokio::test]
    async fn evicted_future_resolves() {
        let pool = FairSlots::new(2, 2);
        let p = peers(2);
        let long_ago = Instant::now() - IDLE_GRACE;
        let a = pool.acquire(p[0], long_ago).expect("room");
        let _a2 = pool.acquire(p[0], long_ago).expect("room");
        let _b = pool.acquire(p[1], Instant::now()).expect("evicts");
        tokio::time::timeout(std::time::Duration::from_secs(1), a.evicted())
            .await
            .expect("the evicted slot learns it");
    }
}

//! Placing a set of blobs on distinct hosts: one slab's 30 shards, the manifest's copies, or a
//! repair's rebuilt shards. Shared by [`super::upload`] and [`super::repair`].
//!
//! Rules, per blob:
//! - hosts come from the set's order (a rotation of the transfer's usable hosts), healthy hosts
//!   first, never one already used by this set, never an excluded one (a repair excludes every
//!   host that holds a shard of the slab);
//! - a broken or silent put is retried once on the same host; a refusal (full, busy, mismatch,
//!   forbidden) or a second failure moves the blob to another host, and the host is ranked
//!   last for the rest of the transfer;
//! - a put still running after the hedge deadline, once another blob of the set was placed
//!   (so it is a straggler, not a slow uplink), is hedged: the same blob starts on another host and the
//!   first success wins; the loser is cancelled;
//! - every put that may have stored bytes is written into `attempts` before it starts and
//!   removed only when the host refused (it stored nothing), so the caller can claim exactly
//!   what the object keeps and release everything else.

use std::collections::BTreeSet;
use std::time::Duration;

use super::health::Health;
use super::ops::Ops;
use super::{HostId, OpId, Outcome, Payload, Request, Why};
use crate::root::Root;

/// Same-host attempts before a blob moves after transient failures.
const ATTEMPTS_PER_HOST: u8 = 2;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    Waiting,
    Running,
    Placed(HostId),
}

struct Blob {
    root: Root,
    payload: Payload,
    state: State,
    /// Puts of this blob in flight.
    ops: Vec<(OpId, HostId)>,
    /// Hosts this blob failed on.
    failed_on: BTreeSet<HostId>,
    /// Transient failures on the host it is being retried on.
    retry_host: Option<(HostId, u8)>,
}

/// Everything a put changed that the owner must know.
pub(crate) struct PutEnd {
    /// The blob was placed by this op (first success).
    pub placed: bool,
    /// Bytes of the blob.
    pub bytes: u64,
}

/// A set of blobs each needing its own host.
pub(crate) struct PlaceSet {
    blobs: Vec<Blob>,
    order: Vec<HostId>,
    exclude: BTreeSet<HostId>,
    pub failed_puts: usize,
    pub hedged_puts: usize,
}

impl PlaceSet {
    pub fn new(blobs: Vec<(Root, Payload)>, order: Vec<HostId>, exclude: BTreeSet<HostId>) -> Self {
        Self {
            blobs: blobs
                .into_iter()
                .map(|(root, payload)| Blob {
                    root,
                    payload,
                    state: State::Waiting,
                    ops: Vec::new(),
                    failed_on: BTreeSet::new(),
                    retry_host: None,
                })
                .collect(),
            order,
            exclude,
            failed_puts: 0,
            hedged_puts: 0,
        }
    }

    /// A set some of whose blobs are placed already (`placed[i]`: blob `i`'s host), as a
    /// resumed upload's shards that its hosts still have.
    pub fn with_placed(
        blobs: Vec<(Root, Payload)>,
        order: Vec<HostId>,
        exclude: BTreeSet<HostId>,
        placed: &[Option<HostId>],
    ) -> Self {
        let mut set = Self::new(blobs, order, exclude);
        for (b, h) in set.blobs.iter_mut().zip(placed) {
            if let Some(h) = h {
                b.state = State::Placed(*h);
            }
        }
        set
    }

    fn used(&self) -> BTreeSet<HostId> {
        let mut used = self.exclude.clone();
        for b in &self.blobs {
            if let State::Placed(h) = b.state {
                used.insert(h);
            }
            used.extend(b.ops.iter().map(|&(_, h)| h));
        }
        used
    }

    /// The best host for blob `i` among those `room` accepts.
    fn pick(&self, i: usize, health: &Health, room: impl Fn(HostId) -> bool) -> Option<HostId> {
        let used = self.used();
        let blob = &self.blobs[i];
        self.order
            .iter()
            .copied()
            .filter(|&h| !used.contains(&h) && !blob.failed_on.contains(&h) && room(h))
            .enumerate()
            .min_by_key(|&(pos, h)| (health.rank(h), pos))
            .map(|(_, h)| h)
    }

    #[allow(clippy::too_many_arguments)]
    fn start<T>(
        &mut self,
        i: usize,
        host: HostId,
        why: Why,
        ops: &mut Ops<T>,
        now: Duration,
        tag: T,
        attempts: &mut BTreeSet<(Root, HostId)>,
    ) {
        let blob = &mut self.blobs[i];
        let request = Request::Put {
            root: blob.root,
            payload: blob.payload.clone(),
        };
        attempts.insert((blob.root, host));
        let op = ops.start(host, request, why, tag, now, true);
        blob.ops.push((op, host));
        if blob.state == State::Waiting {
            blob.state = State::Running;
        }
        if why == Why::Hedge {
            self.hedged_puts += 1;
        }
    }

    /// Starts a put for every waiting blob that has a host, while `ops` has fewer than `budget`.
    pub fn top_up<T>(
        &mut self,
        ops: &mut Ops<T>,
        health: &Health,
        now: Duration,
        budget: usize,
        tag: impl Fn(usize) -> T,
        attempts: &mut BTreeSet<(Root, HostId)>,
    ) {
        for i in 0..self.blobs.len() {
            if ops.len() >= budget {
                return;
            }
            if self.blobs[i].state != State::Waiting {
                continue;
            }
            let retry = self.blobs[i].retry_host.take();
            let (host, why) = match retry {
                // The retry host is busy with our other ops: wait for a slot there.
                Some((h, _)) if !ops.room(h) => {
                    self.blobs[i].retry_host = retry;
                    continue;
                }
                Some((h, _)) if !self.used().contains(&h) => (h, Why::Retry),
                _ => match self.pick(i, health, |h| ops.room(h)) {
                    Some(h) if self.blobs[i].failed_on.is_empty() => (h, Why::First),
                    Some(h) => (h, Why::Move),
                    None => continue,
                },
            };
            if why == Why::Retry {
                self.blobs[i].retry_host = retry;
            }
            self.start(i, host, why, ops, now, tag(i), attempts);
        }
    }

    /// The put `op` of blob `i` ended. Returns what changed, and the ops to cancel (a hedge's
    /// loser).
    pub fn complete(
        &mut self,
        i: usize,
        op: OpId,
        outcome: &Outcome,
        health: &mut Health,
        attempts: &mut BTreeSet<(Root, HostId)>,
    ) -> (PutEnd, Vec<OpId>) {
        let mut end = PutEnd {
            placed: false,
            bytes: 0,
        };
        let Some(blob) = self.blobs.get_mut(i) else {
            return (end, Vec::new());
        };
        let Some(pos) = blob.ops.iter().position(|&(o, _)| o == op) else {
            return (end, Vec::new());
        };
        let (_, host) = blob.ops.remove(pos);
        end.bytes = blob.payload.bytes().len() as u64;
        match outcome {
            Outcome::Failed(f) => {
                self.failed_puts += 1;
                if f.is_answer() {
                    // A refusal: the host stored nothing for us.
                    attempts.remove(&(blob.root, host));
                }
                if matches!(blob.state, State::Placed(_)) {
                    return (end, Vec::new());
                }
                let tries = match blob.retry_host {
                    Some((h, n)) if h == host => n + 1,
                    _ => 1,
                };
                if !f.is_answer() && tries < ATTEMPTS_PER_HOST && blob.ops.is_empty() {
                    blob.retry_host = Some((host, tries));
                } else {
                    blob.retry_host = None;
                    blob.failed_on.insert(host);
                    health.failed(host);
                }
                if blob.ops.is_empty() {
                    blob.state = State::Waiting;
                }
                (end, Vec::new())
            }
            Outcome::Done | Outcome::Bytes(_) | Outcome::Size(_) => {
                if matches!(blob.state, State::Placed(_)) {
                    // A hedge's loser landed too: not part of the object, released later.
                    return (end, Vec::new());
                }
                blob.state = State::Placed(host);
                blob.retry_host = None;
                end.placed = true;
                let losers = blob.ops.iter().map(|&(o, _)| o).collect();
                (end, losers)
            }
        }
    }

    /// The put `op` of blob `i` passed its hedge point: start the blob elsewhere if this is a
    /// straggler. Returns whether it hedged; `false` asks the caller to re-arm.
    #[allow(clippy::too_many_arguments)]
    pub fn hedge<T>(
        &mut self,
        i: usize,
        op: OpId,
        ops: &mut Ops<T>,
        health: &mut Health,
        now: Duration,
        tag: T,
        attempts: &mut BTreeSet<(Root, HostId)>,
    ) -> bool {
        let placed = self.placed_count();
        let Some(blob) = self.blobs.get(i) else {
            return true;
        };
        let Some(&(_, host)) = blob.ops.iter().find(|&&(o, _)| o == op) else {
            return true;
        };
        if matches!(blob.state, State::Placed(_)) {
            return true;
        }
        if placed == 0 {
            return false;
        }
        match self.pick(i, health, |h| ops.room(h)) {
            Some(h) => {
                health.slow(host);
                self.start(i, h, Why::Hedge, ops, now, tag, attempts);
                true
            }
            // Spare hosts exist but are out of slots for now: try again at the next hedge point.
            None if self.pick(i, health, |_| true).is_some() => false,
            None => {
                health.slow(host);
                true
            }
        }
    }

    pub fn placed_count(&self) -> usize {
        self.blobs
            .iter()
            .filter(|b| matches!(b.state, State::Placed(_)))
            .count()
    }

    /// Whether every blob is placed.
    pub fn done(&self) -> bool {
        self.placed_count() == self.blobs.len()
    }

    /// Whether some blob waits with no host left to try and nothing in flight (a host that
    /// is only out of slots for now still counts as one to try).
    pub fn stuck(&self, health: &Health) -> bool {
        (0..self.blobs.len()).any(|i| {
            let b = &self.blobs[i];
            b.state == State::Waiting
                && b.retry_host.is_none()
                && self.pick(i, health, |_| true).is_none()
        })
    }

    /// (root, host) of each blob, once [`PlaceSet::done`].
    pub fn placement(&self) -> Vec<(Root, HostId)> {
        self.blobs
            .iter()
            .filter_map(|b| match b.state {
                State::Placed(h) => Some((b.root, h)),
                _ => None,
            })
            .collect()
    }
}

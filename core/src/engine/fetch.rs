//! Fetching 10 verified shards of one slab: shared by [`super::download`] and
//! [`super::repair`].
//!
//! Each shard lives on one host, so a retry or a hedge fetches *another* shard of the slab.
//! Order: shards on healthy hosts first, data shards before parity (decoding is then a copy),
//! hosts that failed or were slow in this transfer last, hosts without an address at the end.

use std::collections::BTreeMap;
use std::time::Duration;

use super::health::Health;
use super::ops::Ops;
use super::{CorruptShard, Failure, FetchFailures, HostId, OpId, Outcome, Request, Why};
use crate::layout::{DATA_SHARDS, TOTAL_SHARDS};
use crate::manifest::SlabRecord;
use crate::root::{Root, VerifiedShard};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    Untried,
    InFlight {
        slow: bool,
    },
    Have,
    Failed,
    /// Not to be fetched (a repair's lost shards).
    Skip,
}

/// One slab being fetched.
pub(crate) struct SlabFetch {
    pub index: u64,
    pub shard_size: u32,
    roots: [Root; TOTAL_SHARDS],
    hosts: [Option<HostId>; TOTAL_SHARDS],
    state: [State; TOTAL_SHARDS],
    ops: BTreeMap<usize, OpId>,
    pub got: Vec<Option<VerifiedShard>>,
    pub have: usize,
    started: usize,
    pub failures: FetchFailures,
    pub corrupt: Vec<CorruptShard>,
    pub failed: usize,
}

impl SlabFetch {
    /// `table` maps the manifest's host indices to hosts (`None`: unparseable peer id).
    pub fn new(
        index: u64,
        shard_size: u32,
        record: &SlabRecord,
        table: &[Option<HostId>],
        skip: &[usize],
    ) -> Self {
        let mut state = [State::Untried; TOTAL_SHARDS];
        for &k in skip {
            if k < TOTAL_SHARDS {
                state[k] = State::Skip;
            }
        }
        Self {
            index,
            shard_size,
            roots: std::array::from_fn(|k| record[k].root),
            hosts: std::array::from_fn(|k| {
                table.get(usize::from(record[k].host)).copied().flatten()
            }),
            state,
            ops: BTreeMap::new(),
            got: vec![None; TOTAL_SHARDS],
            have: 0,
            started: 0,
            failures: FetchFailures::default(),
            corrupt: Vec::new(),
            failed: 0,
        }
    }

    fn count(&self, f: impl Fn(State) -> bool) -> usize {
        self.state.iter().filter(|&&s| f(s)).count()
    }

    /// Whether 10 verified shards are here.
    pub fn done(&self) -> bool {
        self.have >= DATA_SHARDS
    }

    /// Whether 10 can no longer be had.
    pub fn lost(&self) -> bool {
        let open = self.count(|s| matches!(s, State::Untried | State::InFlight { .. }));
        self.have + open < DATA_SHARDS
    }

    /// Fetches to start now: enough that, with the fetches not yet past their hedge point,
    /// 10 shards can arrive — and one spare once a fetch of this slab was slow (the host of an
    /// untried shard may be hung too).
    fn needed(&self) -> usize {
        let fresh = self.count(|s| s == State::InFlight { slow: false });
        let slow = self.count(|s| s == State::InFlight { slow: true });
        let spare = usize::from(slow > 0 && self.have < DATA_SHARDS);
        (DATA_SHARDS + spare).saturating_sub(self.have + fresh)
    }

    /// The best untried shard whose host `room` accepts (or that has no host).
    fn pick(&self, health: &Health, room: impl Fn(HostId) -> bool) -> Option<usize> {
        (0..TOTAL_SHARDS)
            .filter(|&k| self.state[k] == State::Untried && self.hosts[k].is_none_or(&room))
            .min_by_key(|&k| (self.hosts[k].map_or(u8::MAX, |h| health.rank(h)), k))
    }

    /// Starts fetches until enough are in flight, while `ops` has fewer than `budget`.
    pub fn top_up<T>(
        &mut self,
        ops: &mut Ops<T>,
        health: &Health,
        now: Duration,
        budget: usize,
        tag: impl Fn(usize) -> T,
    ) {
        while self.needed() > 0 && ops.len() < budget {
            // Shards on hosts out of slots wait: a slot frees when any op there ends.
            let Some(k) = self.pick(health, |h| ops.room(h)) else {
                break;
            };
            let Some(host) = self.hosts[k] else {
                // The manifest names a host nobody can address.
                self.state[k] = State::Failed;
                self.failures.record(Failure::Unreachable, None);
                self.failed += 1;
                continue;
            };
            let in_flight = self.count(|s| matches!(s, State::InFlight { .. }));
            let why = if self.have + in_flight >= DATA_SHARDS {
                Why::Hedge
            } else if self.started < DATA_SHARDS {
                Why::First
            } else {
                Why::Move
            };
            let request = Request::Get {
                root: self.roots[k],
                max_len: self.shard_size,
            };
            let op = ops.start(host, request, why, tag(k), now, true);
            self.state[k] = State::InFlight { slow: false };
            self.ops.insert(k, op);
            self.started += 1;
        }
    }

    /// The fetch of shard `k` passed its hedge point.
    pub fn mark_slow(&mut self, k: usize) {
        if let Some(State::InFlight { .. }) = self.state.get(k) {
            self.state[k] = State::InFlight { slow: true };
        }
    }

    /// The fetch of shard `k` ended; returns the failure, if it failed.
    pub fn complete(&mut self, k: usize, outcome: Outcome) -> Option<Failure> {
        if !matches!(self.state.get(k), Some(State::InFlight { .. })) {
            return None;
        }
        self.ops.remove(&k);
        let failure = match outcome {
            Outcome::Bytes(bytes) => match self.roots[k].verify(bytes) {
                Ok(v) => {
                    self.state[k] = State::Have;
                    if self.have < DATA_SHARDS {
                        self.got[k] = Some(v);
                        self.have += 1;
                    }
                    return None;
                }
                Err(_) => Failure::Corrupt,
            },
            Outcome::Done | Outcome::Size(_) => Failure::Corrupt,
            Outcome::Failed(f) => f,
        };
        self.state[k] = State::Failed;
        self.failed += 1;
        let host = self.hosts[k];
        self.failures.record(failure, host);
        if let (Failure::Corrupt, Some(host)) = (failure, host) {
            self.corrupt.push(CorruptShard {
                slab: self.index,
                shard: k,
                host,
            });
        }
        Some(failure)
    }

    /// Every host the slab's record names.
    /// Points shards that a repair moved at their new holders: each move of this slab whose
    /// root is the manifest's root for that shard replaces the manifest's host (a move naming
    /// another root is ignored, so a wrong update can only cost a failed fetch).
    pub fn apply_moves(&mut self, moves: &super::Moves) {
        for (&(slab, k), &(root, host)) in moves.range((self.index, 0)..=(self.index, TOTAL_SHARDS))
        {
            if slab == self.index && k < TOTAL_SHARDS && self.roots[k] == root {
                self.hosts[k] = Some(host);
            }
        }
    }

    pub fn hosts(&self) -> impl Iterator<Item = HostId> + '_ {
        self.hosts.iter().flatten().copied()
    }

    /// The root of shard `k`.
    pub fn root(&self, k: usize) -> Root {
        self.roots[k]
    }

    /// Takes the ops still in flight (to cancel them once the slab is done or lost).
    pub fn take_ops(&mut self) -> Vec<OpId> {
        for s in self.state.iter_mut() {
            if matches!(s, State::InFlight { .. }) {
                *s = State::Untried;
            }
        }
        std::mem::take(&mut self.ops).into_values().collect()
    }
}

//! Repair: rebuild an object's lost shards, byte for byte, on new hosts.
//!
//! Input: the object's manifest (public: roots and hosts, never the key), which shards of which
//! slabs are lost, and candidate hosts. Per slab, `slabs_at_once` at a time:
//!
//! ```text
//! fetch:   any 10 verified shards of the slab, never a lost one (same rules as a download:
//!          data shards first, failures and stragglers replaced by other shards)
//! rebuild: Reed-Solomon over the ciphertext shards (no key needed): the data shards, and the
//!          parity only if a parity shard is lost; each rebuilt shard must hash to the root the
//!          manifest names, or the repair stops ([`RepairError::Rebuild`])
//! place:   each rebuilt shard on a candidate host that holds nothing of this slab (every host
//!          the slab's record names is excluded), same retry, move and hedge rules as an upload
//! ```
//!
//! Then one CLAIM per new host of what it now keeps, and a release of every other put that may
//! have stored bytes. The report lists each repaired (slab, shard, root, new host); the caller
//! (the Guard) keeps that placement, since the manifest itself is content-addressed and does
//! not change.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use super::cleanup::Cleanup;
use super::fetch::SlabFetch;
use super::health::Health;
use super::ops::Ops;
use super::place::PlaceSet;
use super::{
    Action, CorruptShard, Failure, FetchFailures, HostId, Machine, Moves, OpId, Outcome, Payload,
    Timing,
};
use crate::erasure::{self, ErasureError};
use crate::layout::{DATA_SHARDS, TOTAL_SHARDS};
use crate::manifest::Manifest;
use crate::root::Root;

/// Repair tuning.
#[derive(Clone, Copy, Debug)]
pub struct RepairConfig {
    /// Deadlines.
    pub timing: Timing,
    /// Slabs repaired at once.
    pub slabs_at_once: usize,
    /// Ops in flight at most.
    pub max_in_flight: usize,
    /// Claims and releases in flight at once.
    pub cleanup_parallel: usize,
    /// Tries per host of a CLAIM.
    pub claim_attempts: u8,
}

impl Default for RepairConfig {
    fn default() -> Self {
        Self {
            timing: Timing::default(),
            slabs_at_once: 2,
            max_in_flight: 2 * (DATA_SHARDS + 6),
            cleanup_parallel: 16,
            claim_attempts: 2,
        }
    }
}

/// Why a repair failed. What it placed was released (best effort).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RepairError {
    /// The request names a slab or shard the manifest does not have.
    #[error("no shard {shard} of slab {slab} in this object (it has {slabs} slabs of 30 shards)")]
    NoSuchShard {
        /// Slab.
        slab: u64,
        /// Shard.
        shard: usize,
        /// Slabs in the object.
        slabs: u64,
    },
    /// More than 20 shards of a slab are lost: nothing can rebuild it.
    #[error("slab {slab} cannot be repaired: {lost} of its 30 shards are lost, at most 20 may be")]
    TooManyLost {
        /// Slab.
        slab: u64,
        /// Lost shards.
        lost: usize,
    },
    /// Too few verified shards of a slab could be fetched.
    #[error("cannot rebuild slab {slab}: only {have} of the 10 needed shards could be fetched and verified: {failures}. {}", .failures.shard_advice())]
    SlabLost {
        /// Slab.
        slab: u64,
        /// Verified shards.
        have: usize,
        /// Why the other fetches failed.
        failures: FetchFailures,
    },
    /// A rebuilt shard does not hash to the manifest's root (the surviving shards disagree).
    #[error("rebuilt shard {shard} of slab {slab} does not match its root: the slab's verified shards are inconsistent, so it was not placed")]
    Rebuild {
        /// Slab.
        slab: u64,
        /// Shard.
        shard: usize,
    },
    /// No host outside the slab's hosts could take a shard.
    #[error("too few hosts to repair slab {slab}: every candidate already holds a shard of it, failed, or refused")]
    TooFewHosts {
        /// Slab.
        slab: u64,
    },
    /// A new host did not confirm keeping its shards.
    #[error("host {host} did not confirm keeping {roots} repaired shards ({failure}); the repair was undone")]
    Claim {
        /// The host.
        host: HostId,
        /// Roots.
        roots: usize,
        /// Why.
        failure: Failure,
    },
    /// Erasure decoding failed.
    #[error(transparent)]
    Erasure(#[from] ErasureError),
}

/// One shard put back.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RepairedShard {
    /// Slab.
    pub slab: u64,
    /// Shard index.
    pub shard: usize,
    /// Its root (the same as before).
    #[serde(serialize_with = "root_hex")]
    pub root: Root,
    /// Its new host.
    pub host: HostId,
}

fn root_hex<S: serde::Serializer>(r: &Root, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&r.to_hex())
}

/// What a repair did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RepairReport {
    /// Shards rebuilt and placed.
    pub repaired: Vec<RepairedShard>,
    /// Fetches that failed.
    pub failed_fetches: usize,
    /// Shards fetched whose bytes did not match their root.
    pub corrupt_shards: Vec<CorruptShard>,
    /// Puts that failed (then moved).
    pub failed_puts: usize,
    /// Bytes received from hosts (every answered fetch, hedges included).
    pub bytes_fetched: u64,
    /// Bytes stored on new hosts (every successful put).
    pub bytes_placed: u64,
}

#[derive(Clone, Copy, Debug)]
enum Tag {
    Get { slab: u64, k: usize },
    Put { slab: u64, i: usize },
    Claim { i: usize },
    Release,
}

enum Step {
    Fetch(Box<SlabFetch>),
    Place(PlaceSet),
}

struct Job {
    lost: Vec<usize>,
    step: Step,
}

#[derive(PartialEq, Eq)]
enum Phase {
    Working,
    Claiming,
    Releasing,
    Finished,
}

/// The repair machine (order of calls: [`super`]).
pub struct Repair {
    cfg: RepairConfig,
    manifest: Manifest,
    table: Vec<Option<HostId>>,
    moves: Moves,
    candidates: Vec<HostId>,
    ops: Ops<Tag>,
    health: Health,
    now: Duration,
    phase: Phase,
    queue: VecDeque<(u64, Vec<usize>)>,
    jobs: BTreeMap<u64, Job>,
    attempts: BTreeSet<(Root, HostId)>,
    kept: BTreeSet<(Root, HostId)>,
    cleanup: Cleanup,
    report: RepairReport,
    outcome: Option<Result<RepairReport, RepairError>>,
    result: Option<Result<RepairReport, RepairError>>,
}

impl Repair {
    /// Repairs `lost` (slab → lost shard indices) of the object `manifest` describes, onto
    /// `candidates`.
    pub fn new(
        manifest: Manifest,
        lost: BTreeMap<u64, BTreeSet<usize>>,
        candidates: Vec<HostId>,
        cfg: RepairConfig,
        now: Duration,
    ) -> Result<Self, RepairError> {
        Self::with_moves(manifest, Moves::new(), lost, candidates, cfg, now)
    }

    /// [`Repair::new`] for an object some of whose shards were moved by earlier repairs:
    /// fetches go to the current holders, and new shards avoid every host that holds or held a
    /// shard of the slab.
    pub fn with_moves(
        manifest: Manifest,
        moves: Moves,
        lost: BTreeMap<u64, BTreeSet<usize>>,
        candidates: Vec<HostId>,
        cfg: RepairConfig,
        now: Duration,
    ) -> Result<Self, RepairError> {
        let slabs = manifest.layout().slab_count();
        for (&slab, shards) in &lost {
            for &shard in shards {
                if slab >= slabs || shard >= TOTAL_SHARDS {
                    return Err(RepairError::NoSuchShard { slab, shard, slabs });
                }
            }
            if shards.len() > TOTAL_SHARDS - DATA_SHARDS {
                return Err(RepairError::TooManyLost {
                    slab,
                    lost: shards.len(),
                });
            }
        }
        let table = manifest
            .hosts()
            .iter()
            .map(|b| HostId::from_bytes(b))
            .collect();
        let mut seen = BTreeSet::new();
        let candidates = candidates.into_iter().filter(|h| seen.insert(*h)).collect();
        let mut r = Self {
            cfg,
            manifest,
            table,
            moves,
            candidates,
            ops: Ops::new(cfg.timing),
            health: Health::default(),
            now,
            phase: Phase::Working,
            queue: lost
                .into_iter()
                .filter(|(_, s)| !s.is_empty())
                .map(|(slab, s)| (slab, s.into_iter().collect()))
                .collect(),
            jobs: BTreeMap::new(),
            attempts: BTreeSet::new(),
            kept: BTreeSet::new(),
            cleanup: Cleanup::default(),
            report: RepairReport::default(),
            outcome: None,
            result: None,
        };
        r.schedule();
        Ok(r)
    }

    /// The result, once [`Machine::is_finished`] (taken once).
    pub fn take_result(&mut self) -> Option<Result<RepairReport, RepairError>> {
        self.result.take()
    }

    /// Most ops ever in flight at once.
    pub fn ops_high_water(&self) -> usize {
        self.ops.high_water()
    }

    fn fail(&mut self, e: RepairError) {
        if matches!(self.phase, Phase::Releasing | Phase::Finished) {
            return;
        }
        self.ops.cancel_all();
        self.jobs.clear();
        self.queue.clear();
        self.kept.clear();
        self.outcome = Some(Err(e));
        self.start_releasing();
    }

    fn start_releasing(&mut self) {
        self.phase = Phase::Releasing;
        self.cleanup.release_unkept(
            &self.attempts,
            &self.kept,
            self.now + self.cfg.timing.release_budget,
        );
        self.schedule();
    }

    fn schedule(&mut self) {
        match self.phase {
            Phase::Working => self.schedule_work(),
            Phase::Claiming => {
                self.cleanup.schedule_claims(
                    &mut self.ops,
                    self.now,
                    self.cfg.cleanup_parallel,
                    |i| Tag::Claim { i },
                );
                if self.cleanup.claimed() {
                    self.outcome = Some(Ok(self.report.clone()));
                    self.start_releasing();
                }
            }
            Phase::Releasing => {
                let over = self.cleanup.schedule_releases(
                    &mut self.ops,
                    self.now,
                    self.cfg.cleanup_parallel,
                    || Tag::Release,
                );
                if over {
                    self.phase = Phase::Finished;
                    self.result = self.outcome.take();
                }
            }
            Phase::Finished => {}
        }
    }

    fn rebuild(
        &self,
        slab: u64,
        f: &SlabFetch,
        lost: &[usize],
    ) -> Result<Vec<(Root, Payload)>, RepairError> {
        let size = f.shard_size as usize;
        let view: Vec<Option<&[u8]>> = f
            .got
            .iter()
            .map(|s| s.as_ref().map(|v| v.bytes()))
            .collect();
        let data = erasure::decode(&view, size)?;
        let parity = if lost.iter().any(|&k| k >= DATA_SHARDS) {
            erasure::encode(&data, size)?
        } else {
            Vec::new()
        };
        let mut out = Vec::with_capacity(lost.len());
        for &k in lost {
            let bytes = if k < DATA_SHARDS {
                &data[k * size..(k + 1) * size]
            } else {
                &parity[(k - DATA_SHARDS) * size..(k - DATA_SHARDS + 1) * size]
            };
            let root = f.root(k);
            if Root::of(bytes) != root {
                return Err(RepairError::Rebuild { slab, shard: k });
            }
            out.push((root, Payload::Bytes(Arc::new(bytes.to_vec()))));
        }
        Ok(out)
    }

    fn schedule_work(&mut self) {
        // Start jobs.
        while self.jobs.len() < self.cfg.slabs_at_once.max(1) {
            let Some((slab, lost)) = self.queue.pop_front() else {
                break;
            };
            let size = self
                .manifest
                .layout()
                .slab(slab)
                .map_or(0, |l| l.shard_size);
            let record = &self.manifest.slabs()[slab as usize];
            let mut fetch = SlabFetch::new(slab, size, record, &self.table, &lost);
            fetch.apply_moves(&self.moves);
            self.jobs.insert(
                slab,
                Job {
                    lost,
                    step: Step::Fetch(Box::new(fetch)),
                },
            );
        }
        if self.jobs.is_empty() {
            self.cleanup = Cleanup::claims(&self.kept);
            self.phase = Phase::Claiming;
            return self.schedule();
        }
        let slabs: Vec<u64> = self.jobs.keys().copied().collect();
        let n = self.candidates.len().max(1);
        for slab in slabs {
            let Some(mut job) = self.jobs.remove(&slab) else {
                continue;
            };
            // Fetch → rebuild → place.
            if let Step::Fetch(f) = &mut job.step {
                if f.done() {
                    for op in f.take_ops() {
                        self.ops.cancel(op);
                    }
                    let blobs = match self.rebuild(slab, f, &job.lost) {
                        Ok(b) => b,
                        Err(e) => return self.fail(e),
                    };
                    self.report.failed_fetches += f.failed;
                    self.report.corrupt_shards.extend(f.corrupt.iter().cloned());
                    let record = &self.manifest.slabs()[slab as usize];
                    let original = record
                        .iter()
                        .filter_map(|r| self.table.get(usize::from(r.host)).copied().flatten());
                    let exclude: BTreeSet<HostId> = f.hosts().chain(original).collect();
                    let start = (slab as usize * TOTAL_SHARDS) % n;
                    let order = (0..self.candidates.len())
                        .map(|i| self.candidates[(start + i) % n])
                        .collect();
                    job.step = Step::Place(PlaceSet::new(blobs, order, exclude));
                }
            }
            match &mut job.step {
                Step::Fetch(f) => {
                    f.top_up(
                        &mut self.ops,
                        &self.health,
                        self.now,
                        self.cfg.max_in_flight,
                        |k| Tag::Get { slab, k },
                    );
                    if f.lost() {
                        let (have, failures) = (f.have, f.failures.clone());
                        return self.fail(RepairError::SlabLost {
                            slab,
                            have,
                            failures,
                        });
                    }
                }
                Step::Place(p) => {
                    if p.done() {
                        self.report.failed_puts += p.failed_puts;
                        for (i, (root, host)) in p.placement().into_iter().enumerate() {
                            self.kept.insert((root, host));
                            self.report.repaired.push(RepairedShard {
                                slab,
                                shard: job.lost[i],
                                root,
                                host,
                            });
                        }
                        // The job is done: not put back; start the next one.
                        return self.schedule_work();
                    }
                    p.top_up(
                        &mut self.ops,
                        &self.health,
                        self.now,
                        self.cfg.max_in_flight,
                        |i| Tag::Put { slab, i },
                        &mut self.attempts,
                    );
                    if p.stuck(&self.health) {
                        return self.fail(RepairError::TooFewHosts { slab });
                    }
                }
            }
            self.jobs.insert(slab, job);
        }
    }

    fn on_fetch_failure(&mut self, host: HostId) {
        self.health.failed(host);
    }
}

impl Machine for Repair {
    fn poll_action(&mut self) -> Option<Action> {
        self.ops.poll()
    }

    fn poll_timeout(&self) -> Option<Duration> {
        let t = self.ops.next_timeout();
        if self.phase == Phase::Releasing {
            let d = self.cleanup.deadline();
            return Some(t.map_or(d, |t| t.min(d)));
        }
        t
    }

    fn handle_event(&mut self, op: OpId, outcome: Outcome, now: Duration) {
        self.now = self.now.max(now);
        let ok = !matches!(outcome, Outcome::Failed(_));
        let Some(live) = self.ops.finish(op, self.now, ok) else {
            return;
        };
        if ok {
            self.health.answered(live.host);
        }
        match (&live.tag, &outcome) {
            (Tag::Get { .. }, Outcome::Bytes(b)) => self.report.bytes_fetched += b.len() as u64,
            (Tag::Put { slab, .. }, Outcome::Done) => {
                let size = self
                    .manifest
                    .layout()
                    .slab(*slab)
                    .map_or(0, |l| l.shard_size);
                self.report.bytes_placed += u64::from(size);
            }
            _ => {}
        }
        match live.tag {
            Tag::Get { slab, k } => {
                if let Some(Job {
                    step: Step::Fetch(f),
                    ..
                }) = self.jobs.get_mut(&slab)
                {
                    if f.complete(k, outcome).is_some() {
                        self.on_fetch_failure(live.host);
                    }
                }
            }
            Tag::Put { slab, i } => {
                if let Some(Job {
                    step: Step::Place(p),
                    ..
                }) = self.jobs.get_mut(&slab)
                {
                    let (_, losers) =
                        p.complete(i, op, &outcome, &mut self.health, &mut self.attempts);
                    for l in losers {
                        self.ops.cancel(l);
                    }
                }
            }
            Tag::Claim { i } => {
                let failure = match outcome {
                    Outcome::Failed(f) => Some(f),
                    _ => None,
                };
                self.claim_ended(i, failure);
            }
            Tag::Release => self.cleanup.released += usize::from(ok),
        }
        self.schedule();
    }

    fn handle_timeout(&mut self, now: Duration) {
        self.now = self.now.max(now);
        for (op, live) in self.ops.take_expired(self.now) {
            let timeout = Outcome::Failed(Failure::Timeout);
            match live.tag {
                Tag::Get { slab, k } => {
                    if let Some(Job {
                        step: Step::Fetch(f),
                        ..
                    }) = self.jobs.get_mut(&slab)
                    {
                        f.complete(k, timeout);
                    }
                    self.on_fetch_failure(live.host);
                }
                Tag::Put { slab, i } => {
                    if let Some(Job {
                        step: Step::Place(p),
                        ..
                    }) = self.jobs.get_mut(&slab)
                    {
                        let (_, losers) =
                            p.complete(i, op, &timeout, &mut self.health, &mut self.attempts);
                        for l in losers {
                            self.ops.cancel(l);
                        }
                    }
                }
                Tag::Claim { i } => self.claim_ended(i, Some(Failure::Timeout)),
                Tag::Release => {}
            }
        }
        for op in self.ops.take_due_hedges(self.now) {
            let Some(live) = self.ops.get(op) else {
                continue;
            };
            let (tag, host) = (live.tag, live.host);
            let hedged = match (tag, self.jobs.get_mut(&slab_of(tag))) {
                (
                    Tag::Get { k, .. },
                    Some(Job {
                        step: Step::Fetch(f),
                        ..
                    }),
                ) => {
                    if f.have == 0 {
                        false
                    } else {
                        f.mark_slow(k);
                        self.health.slow(host);
                        true
                    }
                }
                (
                    Tag::Put { slab, i },
                    Some(Job {
                        step: Step::Place(p),
                        ..
                    }),
                ) => p.hedge(
                    i,
                    op,
                    &mut self.ops,
                    &mut self.health,
                    self.now,
                    Tag::Put { slab, i },
                    &mut self.attempts,
                ),
                _ => true,
            };
            if !hedged {
                let at = self.now + self.ops.hedge_after_op(op);
                self.ops.rearm(op, at);
            }
        }
        self.schedule();
    }

    fn is_finished(&self) -> bool {
        self.phase == Phase::Finished
    }
}

impl Repair {
    fn claim_ended(&mut self, i: usize, failure: Option<Failure>) {
        let ended = self.cleanup.claim_ended(
            i,
            failure,
            self.cfg.claim_attempts,
            &mut self.ops,
            self.now,
            Tag::Claim { i },
        );
        if let Err(c) = ended {
            self.fail(RepairError::Claim {
                host: c.host,
                roots: c.roots,
                failure: c.failure,
            });
        }
    }
}

fn slab_of(tag: Tag) -> u64 {
    match tag {
        Tag::Get { slab, .. } | Tag::Put { slab, .. } => slab,
        Tag::Claim { .. } | Tag::Release => u64::MAX,
    }
}

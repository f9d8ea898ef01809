//! Upload: encoded slabs in, a link out, every shard on its own host.
//!
//! ```text
//! connect:  dial the candidates (`connect_parallel` at a time); placing starts once 30 answered
//!           and either every dial ended or `connect_grace` passed since the 30th (a hung host
//!           does not hold the upload up; its dial is cancelled)
//! probe:    (a resumed upload only, [`Upload::resume`]) STAT every shard the journal says is
//!           placed, on its host if that host is among the connected ones; a shard whose host
//!           answers with its size counts as placed and is not sent again; any other answer, or
//!           none by the hedge deadline, and the shard is placed anew like any other
//! slabs:    [`Upload::push_slab`] takes an encoded slab while fewer than `slabs_in_flight`
//!           are being placed ([`Upload::wants_slab`]: the backpressure); slab i's shards go to
//!           a rotation of the connected hosts starting at (10·i) mod n, 30 distinct hosts;
//!           retry, move and hedge rules: see `place.rs` (module docs of [`super`]). A resumed
//!           slab must encode to the journal's roots (the same file: encoding is deterministic
//!           under the key), else the upload fails with [`UploadError::Changed`]. Each placed
//!           slab is offered to the driver's journal ([`Upload::poll_placed`])
//! manifest: after the last slab, the manifest is built (host table, shard roots, sealed
//!           header) and put on 30 distinct hosts
//! claim:    one CLAIM per host (≤ 8192 roots each) of every root it keeps for the object;
//!           a refusal, or two failures, fails the upload
//! release:  what the object does not keep (a hedge's loser, a put that timed out then moved),
//!           and after a failure everything that may have been stored, is RELEASEd, best
//!           effort within `release_budget`; then the result is ready
//! ```
//!
//! Memory: the machine holds at most `slabs_in_flight` slabs (`Arc`s shared with the puts in
//! flight) plus the manifest.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use super::cleanup::Cleanup;
use super::health::Health;
use super::journal::Journal;
use super::ops::Ops;
use super::place::PlaceSet;
use super::{Action, Failure, HostId, Machine, OpId, Outcome, Payload, Request, Timing, Why};
use crate::crypto::ObjectKey;
use crate::encoder::EncodedSlab;
use crate::layout::{Layout, DATA_SHARDS, TOTAL_SHARDS};
use crate::link::Link;
use crate::manifest::{Manifest, ManifestError, ObjectHeader};
use crate::root::Root;

/// Upload tuning; the defaults are what every tenant uses.
#[derive(Clone, Copy, Debug)]
pub struct UploadConfig {
    /// Deadlines.
    pub timing: Timing,
    /// Slabs being placed at once.
    pub slabs_in_flight: usize,
    /// Dials in flight at once.
    pub connect_parallel: usize,
    /// How long to wait for more dials once 30 hosts answered.
    pub connect_grace: Duration,
    /// Claims and releases in flight at once.
    pub cleanup_parallel: usize,
    /// Tries per host of a CLAIM.
    pub claim_attempts: u8,
}

impl Default for UploadConfig {
    fn default() -> Self {
        Self {
            timing: Timing::default(),
            slabs_in_flight: 2,
            connect_parallel: 32,
            connect_grace: Duration::from_millis(300),
            cleanup_parallel: 16,
            claim_attempts: 2,
        }
    }
}

impl UploadConfig {
    /// The bound on ops in flight: every shard of every slab in flight with one hedge, or the
    /// dials, or the cleanup.
    pub fn max_in_flight(&self) -> usize {
        (2 * TOTAL_SHARDS * self.slabs_in_flight.max(1))
            .max(self.connect_parallel)
            .max(self.cleanup_parallel)
    }
}

/// Why an upload failed. Whatever it may have stored was released (best effort).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UploadError {
    /// No candidate host answered.
    #[error("network unreachable: none of the {total} known hosts answered")]
    Unreachable {
        /// Hosts tried.
        total: usize,
    },
    /// Fewer than 30 distinct hosts could take shards.
    #[error("too few hosts: {reachable} of {total} known hosts are reachable, but every slab needs 30 distinct hosts")]
    TooFewHosts {
        /// Hosts that answered and did not fail.
        reachable: usize,
        /// Known hosts.
        total: usize,
    },
    /// A host did not confirm keeping its shards.
    #[error("host {host} did not confirm keeping its {roots} shards of this upload ({failure}), so the upload was undone; retry")]
    Claim {
        /// The host.
        host: HostId,
        /// Roots it should have kept.
        roots: usize,
        /// Why.
        failure: Failure,
    },
    /// The input ended early or slabs came out of order.
    #[error("the input stopped at slab {got} of {expected}: the file changed or could not be read to the end")]
    Input {
        /// Slabs received.
        got: u64,
        /// Slabs in the layout.
        expected: u64,
    },
    /// A resumed upload's input is not the file the journal was written for.
    #[error("the file is not the one this upload started with: slab {slab} encodes to other shards than the ones placed; resume with the same file, or start a new upload")]
    Changed {
        /// The first slab that differs.
        slab: u64,
    },
    /// The manifest could not be built.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// The driver stopped the upload ([`Upload::abort`]).
    #[error("the upload was stopped")]
    Aborted,
}

impl UploadError {
    /// Whether a later [`Upload::resume`] of the same journal may reuse what this upload
    /// placed: after a failure that may pass (no hosts reachable, the input could not be read,
    /// the driver stopped) yes; after a refused claim or a changed file, no: drop the journal.
    pub fn resumable(&self) -> bool {
        matches!(
            self,
            Self::Unreachable { .. }
                | Self::TooFewHosts { .. }
                | Self::Input { .. }
                | Self::Aborted
        )
    }
}

/// What an upload did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct UploadReport {
    /// The capability link.
    #[serde(serialize_with = "link_text")]
    pub link: Link,
    /// Plaintext bytes.
    pub bytes: u64,
    /// Slabs.
    pub slabs: u64,
    /// Distinct hosts holding shards.
    pub hosts_used: usize,
    /// Put attempts that failed (then retried or moved).
    pub failed_puts: usize,
    /// Puts started because another passed its hedge deadline.
    pub hedged_puts: usize,
    /// Per slab, the host of each shard.
    pub placement: Vec<Vec<HostId>>,
    /// Per slab, the root of each shard (the same order as `placement`).
    #[serde(serialize_with = "roots_hex")]
    pub roots: Vec<Vec<Root>>,
    /// Hosts holding a copy of the manifest.
    pub manifest_hosts: Vec<HostId>,
    /// Stored blobs the object does not keep that were released.
    pub released: usize,
    /// Shards a resumed upload found on their hosts and did not send again.
    pub resumed_shards: usize,
}

fn link_text<S: serde::Serializer>(l: &Link, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(l)
}

fn roots_hex<S: serde::Serializer>(r: &[Vec<Root>], s: S) -> Result<S::Ok, S::Error> {
    use serde::Serialize;
    r.iter()
        .map(|slab| slab.iter().map(Root::to_hex).collect::<Vec<_>>())
        .collect::<Vec<_>>()
        .serialize(s)
}

/// The link, the manifest's host table, and where its copies went.
type Built = (Link, Vec<HostId>, Vec<(Root, HostId)>);

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Set {
    Slab(u64),
    Manifest,
}

#[derive(Clone, Copy, Debug)]
enum Tag {
    Connect,
    Put { set: Set, i: usize },
    Claim { i: usize },
    Release,
    Stat { slab: u64, k: usize },
}

#[derive(PartialEq, Eq, Debug)]
enum Phase {
    Connecting,
    Probing,
    Placing,
    Claiming,
    Releasing,
    Finished,
}

/// The upload machine (order of calls: [`super`]).
pub struct Upload {
    cfg: UploadConfig,
    layout: Layout,
    key: ObjectKey,
    header: ObjectHeader,
    candidates: Vec<HostId>,
    ops: Ops<Tag>,
    health: Health,
    now: Duration,
    phase: Phase,
    // connecting
    next_dial: usize,
    dialed: usize,
    connected: BTreeSet<usize>,
    enough_at: Option<Duration>,
    usable: Vec<HostId>,
    // placing
    waiting: VecDeque<Arc<EncodedSlab>>,
    sets: BTreeMap<Set, PlaceSet>,
    placed: Vec<Option<Vec<(Root, HostId)>>>,
    next_slab: u64,
    input_done: bool,
    attempts: BTreeSet<(Root, HostId)>,
    manifest: Option<Built>,
    failed_puts: usize,
    hedged_puts: usize,
    progress: u64,
    newly_placed: VecDeque<u64>,
    // resuming: the journal's placement, the STATs still to send per host, what they confirmed
    prior: Vec<Option<Vec<(Root, HostId)>>>,
    probes: BTreeMap<HostId, VecDeque<(u64, usize)>>,
    confirmed: BTreeMap<u64, Vec<Option<HostId>>>,
    resumed_shards: usize,
    // claiming and releasing
    kept: BTreeSet<(Root, HostId)>,
    cleanup: Cleanup,
    outcome: Option<Result<UploadReport, UploadError>>,
    result: Option<Result<UploadReport, UploadError>>,
}

impl Upload {
    /// Starts an upload of an object with `layout` under `key`, onto `candidates` (best first;
    /// duplicates are dropped).
    pub fn new(
        layout: Layout,
        key: ObjectKey,
        header: ObjectHeader,
        candidates: Vec<HostId>,
        cfg: UploadConfig,
        now: Duration,
    ) -> Self {
        let slabs = layout.slab_count() as usize;
        Self::start(layout, key, header, candidates, cfg, now, vec![None; slabs])
    }

    /// Resumes the upload `journal` records: the same object (layout, key, header), with the
    /// slabs it lists checked on their hosts instead of sent again. The driver pushes every
    /// slab of the same file from the first, as for a new upload.
    pub fn resume(
        journal: &Journal,
        candidates: Vec<HostId>,
        cfg: UploadConfig,
        now: Duration,
    ) -> Self {
        let layout = journal.layout;
        let mut prior = vec![None; layout.slab_count() as usize];
        for (&i, placed) in &journal.slabs {
            if let Some(p) = prior.get_mut(i as usize) {
                *p = Some(placed.clone());
            }
        }
        Self::start(
            layout,
            journal.key.clone(),
            journal.header.clone(),
            candidates,
            cfg,
            now,
            prior,
        )
    }

    fn start(
        layout: Layout,
        key: ObjectKey,
        header: ObjectHeader,
        candidates: Vec<HostId>,
        cfg: UploadConfig,
        now: Duration,
        prior: Vec<Option<Vec<(Root, HostId)>>>,
    ) -> Self {
        let mut seen = BTreeSet::new();
        let candidates: Vec<HostId> = candidates.into_iter().filter(|h| seen.insert(*h)).collect();
        let mut u = Self {
            cfg,
            layout,
            key,
            header,
            candidates,
            ops: Ops::new(cfg.timing),
            health: Health::default(),
            now,
            phase: Phase::Connecting,
            next_dial: 0,
            dialed: 0,
            connected: BTreeSet::new(),
            enough_at: None,
            usable: Vec::new(),
            waiting: VecDeque::new(),
            sets: BTreeMap::new(),
            placed: vec![None; layout.slab_count() as usize],
            next_slab: 0,
            input_done: false,
            attempts: BTreeSet::new(),
            manifest: None,
            failed_puts: 0,
            hedged_puts: 0,
            progress: 0,
            newly_placed: VecDeque::new(),
            prior,
            probes: BTreeMap::new(),
            confirmed: BTreeMap::new(),
            resumed_shards: 0,
            kept: BTreeSet::new(),
            cleanup: Cleanup::default(),
            outcome: None,
            result: None,
        };
        u.schedule();
        u
    }

    /// Whether [`Upload::push_slab`] would take a slab now.
    pub fn wants_slab(&self) -> bool {
        matches!(
            self.phase,
            Phase::Connecting | Phase::Probing | Phase::Placing
        ) && self.next_slab < self.layout.slab_count()
            && self.waiting.len() + self.slab_sets() < self.cfg.slabs_in_flight.max(1)
    }

    fn slab_sets(&self) -> usize {
        self.sets
            .keys()
            .filter(|s| matches!(s, Set::Slab(_)))
            .count()
    }

    /// Hands over the next encoded slab. Refused (given back) when [`Upload::wants_slab`] is
    /// false: that is the backpressure.
    pub fn push_slab(&mut self, slab: EncodedSlab) -> Result<(), Box<EncodedSlab>> {
        if !self.wants_slab() {
            return Err(Box::new(slab));
        }
        if slab.layout.index != self.next_slab
            || Some(slab.layout) != self.layout.slab(self.next_slab)
        {
            let got = self.next_slab;
            self.fail(UploadError::Input {
                got,
                expected: self.layout.slab_count(),
            });
            return Ok(());
        }
        let idx = slab.layout.index;
        if let Some(Some(prior)) = self.prior.get(idx as usize) {
            if prior.iter().map(|&(r, _)| r).ne(slab.roots.iter().copied()) {
                self.fail(UploadError::Changed { slab: idx });
                return Ok(());
            }
        }
        self.next_slab += 1;
        self.waiting.push_back(Arc::new(slab));
        self.schedule();
        Ok(())
    }

    /// The input is complete (every slab pushed).
    pub fn finish_input(&mut self) {
        self.input_done = true;
        if self.next_slab < self.layout.slab_count() {
            let got = self.next_slab;
            self.fail(UploadError::Input {
                got,
                expected: self.layout.slab_count(),
            });
        }
        self.schedule();
    }

    /// Stops the upload (the driver's input failed, or the user gave up): what may have been
    /// stored is released, then the result is [`UploadError::Aborted`].
    pub fn abort(&mut self) {
        self.fail(UploadError::Aborted);
    }

    /// Shard bytes placed and the total to place.
    pub fn progress(&self) -> (u64, u64) {
        let total = self
            .layout
            .slabs()
            .map(|s| u64::from(s.shard_size) * TOTAL_SHARDS as u64)
            .sum();
        (self.progress, total)
    }

    /// Shards of slab `slab` stored so far (0 to 30; 30 once the slab is placed), for per-slab
    /// progress. A slab not yet pushed, or out of range, has 0.
    pub fn placed_shards(&self, slab: u64) -> usize {
        match self.placed.get(slab as usize) {
            Some(Some(_)) => TOTAL_SHARDS,
            Some(None) => self
                .sets
                .get(&Set::Slab(slab))
                .map_or(0, PlaceSet::placed_count),
            None => 0,
        }
    }

    /// The next slab placed since the last call: its index and the (root, host) of each shard,
    /// for the driver's [`Journal`] (a resumed slab placed exactly as journaled is not offered
    /// again).
    pub fn poll_placed(&mut self) -> Option<(u64, Vec<(Root, HostId)>)> {
        let i = self.newly_placed.pop_front()?;
        Some((i, self.placed.get(i as usize)?.clone()?))
    }

    /// Shards found on their hosts (resumed) rather than sent.
    pub fn resumed_shards(&self) -> usize {
        self.resumed_shards
    }

    /// The result, once [`Machine::is_finished`] (taken once).
    pub fn take_result(&mut self) -> Option<Result<UploadReport, UploadError>> {
        self.result.take()
    }

    /// Most ops ever in flight at once.
    pub fn ops_high_water(&self) -> usize {
        self.ops.high_water()
    }

    /// Slabs the machine holds (waiting or being placed): with the driver's read-ahead, this
    /// bounds the memory of an upload.
    pub fn slabs_held(&self) -> usize {
        self.waiting.len() + self.slab_sets()
    }

    fn fail(&mut self, e: UploadError) {
        if matches!(self.phase, Phase::Releasing | Phase::Finished) {
            return;
        }
        self.ops.cancel_all();
        self.sets.clear();
        self.waiting.clear();
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

    fn total_hosts(&self) -> usize {
        self.candidates.len()
    }

    fn schedule(&mut self) {
        match self.phase {
            Phase::Connecting => self.schedule_connect(),
            Phase::Probing => self.schedule_probes(),
            Phase::Placing => self.schedule_place(),
            Phase::Claiming => self.schedule_claims(),
            Phase::Releasing => self.schedule_releases(),
            Phase::Finished => {}
        }
    }

    fn schedule_connect(&mut self) {
        while self.ops.len() < self.cfg.connect_parallel.max(1)
            && self.next_dial < self.candidates.len()
        {
            let host = self.candidates[self.next_dial];
            self.next_dial += 1;
            self.ops.start(
                host,
                Request::Connect,
                Why::First,
                Tag::Connect,
                self.now,
                false,
            );
        }
        let all_ended = self.dialed == self.candidates.len();
        let enough = self.connected.len() >= TOTAL_SHARDS;
        if enough && self.enough_at.is_none() {
            self.enough_at = Some(self.now);
        }
        let grace_over = self
            .enough_at
            .is_some_and(|t| self.now >= t + self.cfg.connect_grace);
        if enough && (all_ended || grace_over) {
            self.ops.cancel_all();
            self.usable = self.connected.iter().map(|&i| self.candidates[i]).collect();
            self.queue_probes();
            self.phase = Phase::Probing;
            return self.schedule_probes();
        }
        if all_ended {
            let (reachable, total) = (self.connected.len(), self.total_hosts());
            self.fail(if reachable == 0 {
                UploadError::Unreachable { total }
            } else {
                UploadError::TooFewHosts { reachable, total }
            });
        }
    }

    /// One STAT per journaled shard whose host is connected, queued per host.
    fn queue_probes(&mut self) {
        let usable: BTreeSet<HostId> = self.usable.iter().copied().collect();
        for (slab, placed) in self.prior.iter().enumerate() {
            for (k, &(_, host)) in placed.iter().flatten().enumerate() {
                if usable.contains(&host) {
                    self.probes
                        .entry(host)
                        .or_default()
                        .push_back((slab as u64, k));
                }
            }
        }
    }

    fn schedule_probes(&mut self) {
        let budget = self.cfg.max_in_flight();
        let hosts: Vec<HostId> = self.probes.keys().copied().collect();
        for host in hosts {
            while self.ops.len() < budget && self.ops.room(host) {
                let Some((slab, k)) = self.probes.get_mut(&host).and_then(VecDeque::pop_front)
                else {
                    break;
                };
                let Some(&(root, _)) = self.prior[slab as usize].as_ref().and_then(|p| p.get(k))
                else {
                    continue;
                };
                self.ops.start(
                    host,
                    Request::Stat { root },
                    Why::First,
                    Tag::Stat { slab, k },
                    self.now,
                    true,
                );
            }
        }
        self.probes.retain(|_, q| !q.is_empty());
        if self.probes.is_empty() && self.ops.is_empty() {
            self.phase = Phase::Placing;
            self.schedule_place();
        }
    }

    fn on_stat(&mut self, slab: u64, k: usize, host: HostId, outcome: &Outcome) {
        let size = self.layout.slab(slab).map(|s| u64::from(s.shard_size));
        match outcome {
            Outcome::Size(n) if Some(*n) == size => {
                self.confirmed
                    .entry(slab)
                    .or_insert_with(|| vec![None; TOTAL_SHARDS])[k] = Some(host);
            }
            Outcome::Failed(f) if !f.is_answer() => self.health.failed(host),
            _ => {}
        }
    }

    fn rotation(&self, start: usize) -> Vec<HostId> {
        let n = self.usable.len();
        (0..n).map(|i| self.usable[(start + i) % n]).collect()
    }

    fn schedule_place(&mut self) {
        let n = self.usable.len().max(1);
        while let Some(slab) = self.waiting.pop_front() {
            let idx = slab.layout.index;
            let blobs = (0..TOTAL_SHARDS)
                .map(|k| (slab.roots[k], Payload::Shard(slab.clone(), k)))
                .collect();
            // Each slab starts DATA_SHARDS further along: consecutive slabs keep their data
            // shards (the ones downloads fetch first) on different hosts, so a download with
            // slabs in flight reads from 10 hosts per slab instead of the same 10 for all.
            let order = self.rotation((idx as usize * DATA_SHARDS) % n);
            let found = self.confirmed.remove(&idx).unwrap_or_default();
            for (k, host) in found.iter().enumerate() {
                if let Some(h) = *host {
                    self.attempts.insert((slab.roots[k], h));
                    self.progress += u64::from(slab.layout.shard_size);
                    self.resumed_shards += 1;
                }
            }
            let set = PlaceSet::with_placed(blobs, order, BTreeSet::new(), &found);
            self.sets.insert(Set::Slab(idx), set);
        }
        // Slabs done → their placement; all done → the manifest.
        let done: Vec<Set> = self
            .sets
            .iter()
            .filter(|(_, s)| s.done())
            .map(|(&k, _)| k)
            .collect();
        for key in done {
            let Some(set) = self.sets.remove(&key) else {
                continue;
            };
            self.failed_puts += set.failed_puts;
            self.hedged_puts += set.hedged_puts;
            match key {
                Set::Slab(i) => {
                    let placement = set.placement();
                    if self.prior[i as usize].as_ref() != Some(&placement) {
                        self.newly_placed.push_back(i);
                    }
                    self.placed[i as usize] = Some(placement);
                }
                Set::Manifest => {
                    if let Some(m) = self.manifest.as_mut() {
                        m.2 = set.placement();
                    }
                    return self.start_claiming();
                }
            }
        }
        let all_placed = self.placed.iter().all(Option::is_some);
        if self.input_done && all_placed && self.manifest.is_none() {
            if let Err(e) = self.build_manifest() {
                return self.fail(e);
            }
        }
        let budget = self.cfg.max_in_flight();
        let keys: Vec<Set> = self.sets.keys().copied().collect();
        for key in keys {
            let Some(set) = self.sets.get_mut(&key) else {
                continue;
            };
            set.top_up(
                &mut self.ops,
                &self.health,
                self.now,
                budget,
                |i| Tag::Put { set: key, i },
                &mut self.attempts,
            );
            if set.stuck(&self.health) {
                let failed = self
                    .usable
                    .iter()
                    .filter(|&&h| self.health.has_failed(h))
                    .count();
                let (reachable, total) = (self.usable.len() - failed, self.total_hosts());
                return self.fail(UploadError::TooFewHosts { reachable, total });
            }
        }
    }

    fn build_manifest(&mut self) -> Result<(), UploadError> {
        let placed: Vec<Vec<(Root, HostId)>> = self.placed.iter().flatten().cloned().collect();
        let (table, records) = crate::placement::records(&placed)?;
        let hosts = table.iter().map(HostId::to_bytes).collect();
        let manifest = Manifest::new(self.layout, &self.key, &self.header, hosts, records)?;
        let bytes = manifest.encode();
        let id = Root::of(&bytes);
        let payload = Payload::Bytes(Arc::new(bytes));
        let blobs = (0..TOTAL_SHARDS).map(|_| (id, payload.clone())).collect();
        self.sets.insert(
            Set::Manifest,
            PlaceSet::new(blobs, self.rotation(0), BTreeSet::new()),
        );
        let link = Link {
            manifest_id: id,
            key: self.key.clone(),
        };
        self.manifest = Some((link, table, Vec::new()));
        Ok(())
    }

    fn start_claiming(&mut self) {
        for slab in self.placed.iter().flatten() {
            self.kept.extend(slab.iter().copied());
        }
        if let Some((_, _, copies)) = &self.manifest {
            self.kept.extend(copies.iter().copied());
        }
        self.cleanup = Cleanup::claims(&self.kept);
        self.phase = Phase::Claiming;
        self.schedule_claims();
    }

    fn schedule_claims(&mut self) {
        self.cleanup
            .schedule_claims(&mut self.ops, self.now, self.cfg.cleanup_parallel, |i| {
                Tag::Claim { i }
            });
        if self.cleanup.claimed() {
            let Some((link, table, copies)) = self.manifest.clone() else {
                return self.fail(UploadError::Aborted);
            };
            let placement = self
                .placed
                .iter()
                .flatten()
                .map(|s| s.iter().map(|&(_, h)| h).collect())
                .collect();
            let roots = self
                .placed
                .iter()
                .flatten()
                .map(|s| s.iter().map(|&(r, _)| r).collect())
                .collect();
            self.outcome = Some(Ok(UploadReport {
                link,
                bytes: self.layout.plain_len(),
                slabs: self.layout.slab_count(),
                hosts_used: table.len(),
                failed_puts: self.failed_puts,
                hedged_puts: self.hedged_puts,
                placement,
                roots,
                manifest_hosts: copies.iter().map(|&(_, h)| h).collect(),
                released: 0,
                resumed_shards: self.resumed_shards,
            }));
            self.start_releasing();
        }
    }

    fn schedule_releases(&mut self) {
        let over = self.cleanup.schedule_releases(
            &mut self.ops,
            self.now,
            self.cfg.cleanup_parallel,
            || Tag::Release,
        );
        if over {
            self.phase = Phase::Finished;
            let mut outcome = self.outcome.take().unwrap_or(Err(UploadError::Aborted));
            if let Ok(r) = outcome.as_mut() {
                r.released = self.cleanup.released;
            }
            self.result = Some(outcome);
        }
    }

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
            self.fail(UploadError::Claim {
                host: c.host,
                roots: c.roots,
                failure: c.failure,
            });
        }
    }

    fn on_put_end(&mut self, set: Set, i: usize, op: OpId, outcome: &Outcome) {
        let Some(s) = self.sets.get_mut(&set) else {
            return;
        };
        let (end, losers) = s.complete(i, op, outcome, &mut self.health, &mut self.attempts);
        if end.placed && matches!(set, Set::Slab(_)) {
            self.progress += end.bytes;
        }
        for op in losers {
            self.ops.cancel(op);
        }
    }
}

impl Machine for Upload {
    fn poll_action(&mut self) -> Option<Action> {
        self.ops.poll()
    }

    fn poll_timeout(&self) -> Option<Duration> {
        let mut t = self.ops.next_timeout();
        if self.phase == Phase::Connecting {
            if let Some(at) = self.enough_at {
                let g = at + self.cfg.connect_grace;
                t = Some(t.map_or(g, |t| t.min(g)));
            }
        }
        if self.phase == Phase::Releasing {
            let d = self.cleanup.deadline();
            t = Some(t.map_or(d, |t| t.min(d)));
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
        match live.tag {
            Tag::Connect => {
                self.dialed += 1;
                if ok {
                    if let Some(i) = self.candidates.iter().position(|&h| h == live.host) {
                        self.connected.insert(i);
                    }
                } else {
                    self.health.failed(live.host);
                }
            }
            Tag::Put { set, i } => self.on_put_end(set, i, op, &outcome),
            Tag::Claim { i } => {
                let failure = match outcome {
                    Outcome::Failed(f) => Some(f),
                    _ => None,
                };
                self.claim_ended(i, failure);
            }
            Tag::Release => self.cleanup.released += usize::from(ok),
            Tag::Stat { slab, k } => self.on_stat(slab, k, live.host, &outcome),
        }
        self.schedule();
    }

    fn handle_timeout(&mut self, now: Duration) {
        self.now = self.now.max(now);
        for (op, live) in self.ops.take_expired(self.now) {
            let outcome = Outcome::Failed(Failure::Timeout);
            match live.tag {
                Tag::Connect => {
                    self.dialed += 1;
                    self.health.failed(live.host);
                }
                Tag::Put { set, i } => {
                    // `take_expired` already removed the op: end it in its set directly.
                    if let Some(s) = self.sets.get_mut(&set) {
                        let (_, losers) =
                            s.complete(i, op, &outcome, &mut self.health, &mut self.attempts);
                        for l in losers {
                            self.ops.cancel(l);
                        }
                    }
                }
                Tag::Claim { i } => self.claim_ended(i, Some(Failure::Timeout)),
                Tag::Release | Tag::Stat { .. } => {}
            }
        }
        for op in self.ops.take_due_hedges(self.now) {
            let tag = self.ops.get(op).map(|l| l.tag);
            if let Some(Tag::Stat { .. }) = tag {
                // A probe not answered by the hedge deadline: the shard is placed anew.
                if let Some(live) = self.ops.cancel(op) {
                    self.health.slow(live.host);
                }
                continue;
            }
            let Some(Tag::Put { set, i }) = tag else {
                continue;
            };
            let Some(s) = self.sets.get_mut(&set) else {
                continue;
            };
            let hedged = s.hedge(
                i,
                op,
                &mut self.ops,
                &mut self.health,
                self.now,
                Tag::Put { set, i },
                &mut self.attempts,
            );
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

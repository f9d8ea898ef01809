//! Download: a link in, the object's plaintext out, in order.
//!
//! ```text
//! manifest: GET the manifest id from the candidate hosts, `manifest_fanout` at a time (one
//!           more for every ask past its hedge deadline); the first copy whose BLAKE3 root is
//!           the id wins, the others are cancelled; the key then opens its header (a wrong key
//!           stops here, before any shard is fetched)
//! slabs:    `slabs_ahead` slabs fetching at once; per slab 10 GETs start, data shards first;
//!           a failure, a corrupt shard, or a fetch past its hedge deadline starts a fetch of
//!           another shard; hosts that failed or were slow are asked last for later slabs
//! output:   a slab is decoded when it has 10 verified shards and the previous plaintext was
//!           taken ([`Download::poll_output`]); nothing unverified reaches the decoder
//! ```
//!
//! Memory: at most `slabs_ahead` slabs of shards plus one slab of plaintext.
//! Errors name what stopped the download: the manifest ([`DownloadError::ManifestLost`] with
//! failure counts), a slab ([`DownloadError::SlabLost`] with the verified count and failure
//! counts), the key ([`DownloadError::Decode`]).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use super::fetch::SlabFetch;
use super::health::Health;
use super::ops::Ops;
use super::{
    Action, CorruptShard, Failure, FetchFailures, HostId, Machine, Moves, OpId, Outcome, Request,
    Timing, Why,
};
use crate::decoder::{DecodeError, Decoder};
use crate::layout::DATA_SHARDS;
use crate::link::Link;
use crate::manifest::{Manifest, ManifestError, ObjectHeader, MAX_MANIFEST_LEN};
use crate::root::Root;

/// Download tuning; the defaults are what every tenant uses.
#[derive(Clone, Copy, Debug)]
pub struct DownloadConfig {
    /// Deadlines.
    pub timing: Timing,
    /// Slabs fetched at once (the one being decoded next included).
    pub slabs_ahead: usize,
    /// Manifest asks in flight at once.
    pub manifest_fanout: usize,
    /// Ops in flight at most, hedges included.
    pub max_in_flight: usize,
}

impl Default for DownloadConfig {
    fn default() -> Self {
        Self {
            timing: Timing::default(),
            slabs_ahead: 2,
            manifest_fanout: 8,
            max_in_flight: 2 * (DATA_SHARDS + 6),
        }
    }
}

/// Why a download failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DownloadError {
    /// No candidate host answered at all.
    #[error("network unreachable: none of the {total} known hosts answered")]
    Unreachable {
        /// Hosts asked.
        total: usize,
    },
    /// No host returned a copy of the manifest that hashes to its id.
    #[error("{}", .failures.manifest_lost_message(&.id.to_hex(), "Check the link and the network it was uploaded to"))]
    ManifestLost {
        /// Manifest id.
        id: Root,
        /// Why each host's copy was not usable.
        failures: FetchFailures,
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
    /// The manifest hashes to its id but is malformed.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// Decoding failed (wrong key, tampering).
    #[error(transparent)]
    Decode(#[from] DecodeError),
}

/// What a download did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct DownloadReport {
    /// Object name from the sealed header.
    pub name: String,
    /// Media type from the sealed header.
    pub mime: String,
    /// Plaintext bytes produced.
    pub bytes: u64,
    /// Slabs.
    pub slabs: u64,
    /// Shards used by the decoder.
    pub shards_fetched: usize,
    /// Fetches that failed (then replaced by another).
    pub failed_fetches: usize,
    /// Fetches started because another passed its hedge deadline.
    pub hedged_fetches: usize,
    /// Shards whose bytes did not match their root.
    pub corrupt_shards: Vec<CorruptShard>,
}

#[derive(Clone, Copy, Debug)]
enum Tag {
    Manifest,
    Shard { slab: u64, k: usize },
}

enum Phase {
    Manifest,
    Slabs,
    Finished,
}

/// The download machine (order of calls: [`super`]).
pub struct Download {
    cfg: DownloadConfig,
    link: Link,
    ops: Ops<Tag>,
    health: Health,
    now: Duration,
    phase: Phase,
    candidates: Vec<HostId>,
    next_candidate: usize,
    manifest_failures: FetchFailures,
    slow_manifest: BTreeSet<OpId>,
    manifest: Option<Manifest>,
    decoder: Option<Decoder>,
    table: Vec<Option<HostId>>,
    moves: Moves,
    fetches: BTreeMap<u64, SlabFetch>,
    next_emit: u64,
    output: VecDeque<Vec<u8>>,
    report: DownloadReport,
    result: Option<Result<DownloadReport, DownloadError>>,
}

impl Download {
    /// Starts downloading `link`, looking for its manifest on `candidates` (in that order).
    pub fn new(link: Link, candidates: Vec<HostId>, cfg: DownloadConfig, now: Duration) -> Self {
        Self::with_moves(link, candidates, Moves::new(), cfg, now)
    }

    /// [`Download::new`] for an object a Guard repaired: `moves` (from its signed placement
    /// updates) point shards at their new holders; the link does not change.
    pub fn with_moves(
        link: Link,
        candidates: Vec<HostId>,
        moves: Moves,
        cfg: DownloadConfig,
        now: Duration,
    ) -> Self {
        let mut seen = BTreeSet::new();
        let candidates = candidates.into_iter().filter(|h| seen.insert(*h)).collect();
        let mut d = Self {
            cfg,
            link,
            ops: Ops::new(cfg.timing),
            health: Health::default(),
            now,
            phase: Phase::Manifest,
            candidates,
            next_candidate: 0,
            manifest_failures: FetchFailures::default(),
            slow_manifest: BTreeSet::new(),
            manifest: None,
            decoder: None,
            table: Vec::new(),
            moves,
            fetches: BTreeMap::new(),
            next_emit: 0,
            output: VecDeque::new(),
            report: DownloadReport::default(),
            result: None,
        };
        d.schedule();
        d
    }

    /// The verified manifest, once found.
    pub fn manifest(&self) -> Option<&Manifest> {
        self.manifest.as_ref()
    }

    /// The object's sealed header, once the manifest is open.
    pub fn header(&self) -> Option<&ObjectHeader> {
        self.decoder.as_ref().map(Decoder::header)
    }

    /// The next piece of plaintext, in order. Taking it lets the next slab decode.
    pub fn poll_output(&mut self) -> Option<Vec<u8>> {
        let out = self.output.pop_front();
        if out.is_some() {
            self.schedule();
        }
        out
    }

    /// The result, once [`Machine::is_finished`] (taken once). Plaintext still queued in
    /// [`Download::poll_output`] belongs to a successful download.
    pub fn take_result(&mut self) -> Option<Result<DownloadReport, DownloadError>> {
        self.result.take()
    }

    /// Most ops that were ever in flight at once.
    pub fn ops_high_water(&self) -> usize {
        self.ops.high_water()
    }

    /// The configured bound on ops in flight.
    pub fn max_in_flight(&self) -> usize {
        self.cfg.max_in_flight.max(self.cfg.manifest_fanout)
    }

    fn fail(&mut self, e: DownloadError) {
        self.ops.cancel_all();
        self.fetches.clear();
        self.output.clear();
        self.phase = Phase::Finished;
        self.result = Some(Err(e));
    }

    fn schedule(&mut self) {
        match self.phase {
            Phase::Manifest => self.schedule_manifest(),
            Phase::Slabs => self.schedule_slabs(),
            Phase::Finished => {}
        }
    }

    fn schedule_manifest(&mut self) {
        let want = (self.cfg.manifest_fanout + self.slow_manifest.len()).min(self.max_in_flight());
        while self.ops.len() < want && self.next_candidate < self.candidates.len() {
            let host = self.candidates[self.next_candidate];
            let why = if self.next_candidate < self.cfg.manifest_fanout {
                Why::First
            } else if self.ops.len() >= self.cfg.manifest_fanout {
                Why::Hedge
            } else {
                Why::Move
            };
            self.next_candidate += 1;
            let request = Request::Get {
                root: self.link.manifest_id,
                max_len: MAX_MANIFEST_LEN as u32,
            };
            self.ops
                .start(host, request, why, Tag::Manifest, self.now, true);
        }
        if self.ops.is_empty() && self.next_candidate >= self.candidates.len() {
            let total = self.candidates.len();
            let f = std::mem::take(&mut self.manifest_failures);
            if f.unreachable == total {
                self.fail(DownloadError::Unreachable { total });
            } else {
                self.fail(DownloadError::ManifestLost {
                    id: self.link.manifest_id,
                    failures: f,
                });
            }
        }
    }

    fn open_manifest(&mut self, bytes: &[u8]) {
        let manifest = match Manifest::decode(bytes) {
            Ok(m) => m,
            // Every copy that hashes to the id is these bytes: a parse failure is final.
            Err(e) => return self.fail(e.into()),
        };
        let decoder = match Decoder::new(&manifest, &self.link.key) {
            Ok(d) => d,
            Err(e) => return self.fail(e.into()),
        };
        self.ops.cancel_all();
        self.slow_manifest.clear();
        self.table = manifest
            .hosts()
            .iter()
            .map(|b| HostId::from_bytes(b))
            .collect();
        let header = decoder.header();
        self.report.name = header.name.clone();
        self.report.mime = header.mime.clone();
        self.report.slabs = manifest.layout().slab_count();
        self.manifest = Some(manifest);
        self.decoder = Some(decoder);
        self.phase = Phase::Slabs;
    }

    fn schedule_slabs(&mut self) {
        let (Some(manifest), Some(_)) = (&self.manifest, &self.decoder) else {
            return;
        };
        let layout = *manifest.layout();
        let count = layout.slab_count();
        // Decode in order, one slab of plaintext waiting at most.
        while self.output.is_empty() && self.next_emit < count {
            let ready = self
                .fetches
                .get(&self.next_emit)
                .is_some_and(SlabFetch::done);
            if !ready {
                break;
            }
            let Some(mut f) = self.fetches.remove(&self.next_emit) else {
                break;
            };
            for op in f.take_ops() {
                self.ops.cancel(op);
            }
            let Some(decoder) = self.decoder.as_mut() else {
                return;
            };
            match decoder.decode_slab(f.index, &f.got) {
                Ok(plain) => {
                    self.report.bytes += plain.len() as u64;
                    self.report.shards_fetched += DATA_SHARDS;
                    self.report.corrupt_shards.extend(f.corrupt);
                    self.output.push_back(plain);
                }
                Err(e) => return self.fail(e.into()),
            }
            self.next_emit += 1;
        }
        if self.next_emit == count {
            if let Some(decoder) = self.decoder.take() {
                if let Err(e) = decoder.finish() {
                    return self.fail(e.into());
                }
            }
            self.ops.cancel_all();
            self.phase = Phase::Finished;
            self.result = Some(Ok(self.report.clone()));
            return;
        }
        let end = count.min(self.next_emit + self.cfg.slabs_ahead.max(1) as u64);
        let records = manifest.slabs();
        for s in self.next_emit..end {
            let f = self.fetches.entry(s).or_insert_with(|| {
                let size = layout.slab(s).map_or(0, |l| l.shard_size);
                let mut f = SlabFetch::new(s, size, &records[s as usize], &self.table, &[]);
                f.apply_moves(&self.moves);
                f
            });
            f.top_up(
                &mut self.ops,
                &self.health,
                self.now,
                self.cfg.max_in_flight,
                |k| Tag::Shard { slab: s, k },
            );
            if f.lost() {
                let (have, failures) = (f.have, f.failures.clone());
                return self.fail(DownloadError::SlabLost {
                    slab: s,
                    have,
                    failures,
                });
            }
        }
    }

    fn on_failure(&mut self, tag: Tag, host: HostId, failure: Failure) {
        self.health.failed(host);
        self.report.failed_fetches += 1;
        if let Tag::Manifest = tag {
            self.manifest_failures.record(failure, Some(host));
        }
    }
}

impl Machine for Download {
    fn poll_action(&mut self) -> Option<Action> {
        let a = self.ops.poll();
        if let Some(Action::Start {
            why: Why::Hedge, ..
        }) = a
        {
            self.report.hedged_fetches += 1;
        }
        a
    }

    fn poll_timeout(&self) -> Option<Duration> {
        self.ops.next_timeout()
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
            Tag::Manifest => {
                self.slow_manifest.remove(&op);
                let failure = match outcome {
                    Outcome::Bytes(b) => match self.link.manifest_id.verify(b) {
                        Ok(v) => {
                            self.open_manifest(v.bytes());
                            return self.schedule();
                        }
                        Err(_) => Failure::Corrupt,
                    },
                    Outcome::Done | Outcome::Size(_) => Failure::Corrupt,
                    Outcome::Failed(f) => f,
                };
                self.on_failure(live.tag, live.host, failure);
            }
            Tag::Shard { slab, k } => {
                let failed = self
                    .fetches
                    .get_mut(&slab)
                    .and_then(|f| f.complete(k, outcome));
                if let Some(failure) = failed {
                    self.on_failure(live.tag, live.host, failure);
                }
            }
        }
        self.schedule();
    }

    fn handle_timeout(&mut self, now: Duration) {
        self.now = self.now.max(now);
        for (_, live) in self.ops.take_expired(self.now) {
            match live.tag {
                Tag::Manifest => {}
                Tag::Shard { slab, k } => {
                    if let Some(f) = self.fetches.get_mut(&slab) {
                        f.complete(k, Outcome::Failed(Failure::Timeout));
                    }
                }
            }
            self.on_failure(live.tag, live.host, Failure::Timeout);
        }
        self.slow_manifest.retain(|op| self.ops.get(*op).is_some());
        for op in self.ops.take_due_hedges(self.now) {
            let Some(live) = self.ops.get(op) else {
                continue;
            };
            let (tag, host) = (live.tag, live.host);
            match tag {
                Tag::Manifest => {
                    self.slow_manifest.insert(op);
                }
                Tag::Shard { slab, k } => {
                    let Some(f) = self.fetches.get_mut(&slab) else {
                        continue;
                    };
                    // Only a straggler is hedged: while no shard of the slab arrived, every fetch
                    // is slow (likely the tenant's own link) and a hedge would only add load.
                    if f.have == 0 {
                        let at = self.now + self.ops.hedge_after_op(op);
                        self.ops.rearm(op, at);
                        continue;
                    }
                    f.mark_slow(k);
                }
            }
            self.health.slow(host);
        }
        self.schedule();
    }

    fn is_finished(&self) -> bool {
        matches!(self.phase, Phase::Finished)
    }
}

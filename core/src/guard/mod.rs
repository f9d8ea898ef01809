//! # The Guard's policy: audits, verdicts, slab health and the repair trigger, sans-io
//!
//! The Guard watches objects (by their public manifest: roots and hosts, never the key). Every
//! epoch it challenges every watched shard once ([`crate::proof`]: a fresh nonce, the host
//! answers with a Bao slice of 8 random chunks), checks each proof itself against the shard's
//! root, emits a [`Verdict`] per challenge for the driver to sign, persist and report to the
//! Hub, keeps each slab's health (healthy shards of 30) and asks for a repair when a slab falls
//! to the threshold. The repair itself is the engine's [`crate::engine::repair::Repair`]
//! machine, run by the driver; its report comes back through [`Guard::repair_done`].
//!
//! Goals: every policy decision in one place (which shard to challenge, when, how many at
//! once, when a late answer fails, when to repair, when to retry a failed repair), so the
//! tokio driver in `btfs-host` only moves bytes; deterministic (a simulation replays from its
//! seed); bounded (objects, shards, ops in flight in total and per host). Non-goals: I/O,
//! signatures, storage of verdicts, choosing repair hosts (the driver asks the Hub and passes
//! candidates to `Repair`), and the clock.
//!
//! ## The order of calls
//!
//! ```text
//! let mut g = Guard::new(cfg, secret, now)?.with_first_epoch(last_persisted_epoch + 1);
//! g.watch(manifest, now)?; g.set_holder(..)?;     // restored from the database
//! loop {
//!     while let Some(a) = g.poll_action() { perform it }      // Challenge / Cancel / Repair
//!     while let Some(v) = g.poll_verdict() { sign, persist, report to the Hub }
//!     wait for the first of:
//!         a challenge answered or failed → g.handle_event(op, AuditOutcome, now)
//!         a repair finished              → g.repair_done(object, result, now)
//!         g.poll_timeout()               → g.handle_timeout(now)
//!         a tenant registers an object   → g.watch(manifest, now)
//! }
//! ```
//!
//! `now` is any monotonic clock, the same for every call. An outcome for an op the machine
//! does not know (cancelled after its deadline, or of an unwatched object) is ignored.
//!
//! ## Rules
//!
//! - **Epochs**: epoch `e` starts at `new`'s `now` (numbered from `with_first_epoch`, default
//!   0), each lasts [`GuardConfig::epoch`]. At its start every watched shard that is not under
//!   repair is queued for one challenge; a shard watched mid-epoch is queued at once. What is
//!   still queued when the next epoch starts is dropped ([`GuardStats::skipped`]: the epoch is
//!   too short for the bounds).
//! - **Nonces**: `keyed_blake3(secret, CONTEXT ‖ epoch ‖ object ‖ slab ‖ shard)`: hosts cannot
//!   predict them, a simulation stays deterministic. A restarted Guard must not reuse an epoch
//!   number with the same secret (pass the last persisted epoch + 1), or a host that kept an
//!   old answer could replay it.
//! - **Bounds**: at most [`GuardConfig::max_in_flight`] challenges in flight, at most
//!   [`GuardConfig::max_per_host`] per host; queued challenges are issued round-robin over
//!   hosts, so one slow host delays only its own shards.
//! - **Deadline**: no answer within [`GuardConfig::deadline`] fails (the op is cancelled); an
//!   answer handed in after the deadline fails too. The deadline is what makes outsourcing
//!   (fetching 10 shards from other hosts to rebuild the challenged one) not pay.
//! - **Health**: a shard is healthy unless its latest answered verdict failed (an invalid
//!   proof, "not found", a refusal), or it went unanswered (unreachable, timed out, busy, late)
//!   in [`GuardConfig::offline_grace`] epochs in a row: a host cut off by a partition or
//!   restarting is not repaired around at its first silence. A shard not audited yet
//!   (just watched, just repaired, holder just set) counts healthy; a shard under repair
//!   counts unhealthy. A verdict for a host that no longer holds the shard (the holder changed
//!   while the challenge was in flight) is emitted but does not change health.
//! - **Repair**: after any change of health, [`slab_decision`] per slab; every slab at
//!   [`SlabDecision::Repair`] of an object without a running repair goes into one
//!   [`GuardAction::Repair`] with all its unhealthy shards (≤ 20, since ≥ 10 are healthy).
//!   Those shards are not challenged until [`Guard::repair_done`]; repaired shards take their
//!   new holders and count healthy until audited. A failed repair (or one that repaired
//!   nothing) waits `repair_backoff × 2^(failures − 1)`, at most `max_repair_backoff`, then
//!   the decision is taken again. An *unfunded* one ([`RepairFailure::Unfunded`]: no repair
//!   allowance, found before any host was asked) always waits just `repair_backoff`: trying
//!   again costs one Escrow lookup and no host traffic, and a tenant who funds an allowance
//!   sees the repair within one backoff instead of hours later (with the audits of the meantime: a host that came back is
//!   healthy again and is not repaired). At most one repair per object at a time.
//! - A slab with fewer than 10 healthy shards is [`SlabDecision::AtRisk`]: it cannot be
//!   rebuilt now; it is reported in [`Guard::health`] and repaired as soon as audits find 10.

pub mod durability;
mod policy;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use serde::Serialize;

use crate::engine::repair::RepairReport;
use crate::engine::{Failure, HostId, OpId};
use crate::layout::TOTAL_SHARDS;
use crate::manifest::Manifest;
use crate::proof::{self, Challenge};
use crate::root::Root;

pub use policy::{slab_decision, SlabDecision};

/// Key-derivation context of the challenge nonces.
pub const NONCE_CONTEXT: &[u8] = b"btfs-rs 2026-12 guard nonce v1";

/// The Guard's tuning. Defaults: production (hour-long epochs); see [`GuardConfig::for_devnet`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuardConfig {
    /// Length of an epoch: every watched shard is challenged once per epoch. Default 1 h.
    pub epoch: Duration,
    /// An answer later than this after the challenge was issued fails. Default 10 s: a 1 MiB
    /// shard is read and hashed in ~1 ms; rebuilding it from 10 other hosts takes seconds.
    pub deadline: Duration,
    /// Repair a slab when its healthy shards are at most this many (10..=29). Default 24,
    /// chosen from the durability simulation (`docs/guard.md`).
    pub repair_threshold: usize,
    /// Challenges in flight at most. Default 64.
    pub max_in_flight: usize,
    /// Challenges in flight per host at most. Default 4.
    pub max_per_host: usize,
    /// Objects watched at most. Default 100 000.
    pub max_objects: usize,
    /// Shards watched at most, over all objects. Default 3 000 000.
    pub max_shards: usize,
    /// Wait after the first failed repair of an object; doubles per failure. Default 1 epoch.
    pub repair_backoff: Duration,
    /// Longest wait between repair attempts. Default 24 h.
    pub max_repair_backoff: Duration,
    /// Unanswered audits in a row (unreachable, timed out, busy, late) before a shard counts
    /// lost; an answered failure counts at once. Default 2 (two hours of silence at the
    /// default epoch); at least 1.
    pub offline_grace: u32,
}

/// The default repair threshold (see [`GuardConfig::repair_threshold`]).
pub const DEFAULT_REPAIR_THRESHOLD: usize = 24;

impl Default for GuardConfig {
    fn default() -> Self {
        Self {
            epoch: Duration::from_secs(3600),
            deadline: Duration::from_secs(10),
            repair_threshold: DEFAULT_REPAIR_THRESHOLD,
            max_in_flight: 64,
            max_per_host: 4,
            max_objects: 100_000,
            max_shards: 3_000_000,
            repair_backoff: Duration::from_secs(3600),
            max_repair_backoff: Duration::from_secs(24 * 3600),
            offline_grace: 2,
        }
    }
}

impl GuardConfig {
    /// The default, with epochs of `epoch`: a failed repair is retried after one epoch, then
    /// less and less often, at most every 12 epochs (what `btfs service` runs).
    pub fn with_epoch(epoch: Duration) -> Self {
        Self {
            epoch,
            repair_backoff: epoch,
            max_repair_backoff: epoch.saturating_mul(12),
            ..Self::default()
        }
    }

    /// A devnet: 5 s epochs, 2 s deadline, repair retried after 5 s (at most 60 s).
    pub fn for_devnet() -> Self {
        Self {
            epoch: Duration::from_secs(5),
            deadline: Duration::from_secs(2),
            repair_backoff: Duration::from_secs(5),
            max_repair_backoff: Duration::from_secs(60),
            // 15 s of silence: longer than a host's restart, short enough for tests.
            offline_grace: 3,
            ..Self::default()
        }
    }

    fn check(&self) -> Result<(), GuardError> {
        let bad = |why: &'static str| Err(GuardError::Config(why));
        if !(crate::layout::DATA_SHARDS..TOTAL_SHARDS).contains(&self.repair_threshold) {
            return bad("repair_threshold must be between 10 and 29 healthy shards of 30");
        }
        if self.offline_grace == 0 {
            return bad("offline_grace must be at least 1 epoch");
        }
        if self.epoch.is_zero() || self.deadline.is_zero() {
            return bad("epoch and deadline must be longer than zero");
        }
        if self.deadline > self.epoch {
            return bad("the deadline must not be longer than an epoch");
        }
        if self.max_in_flight == 0 || self.max_per_host == 0 {
            return bad("max_in_flight and max_per_host must be at least 1");
        }
        if self.max_objects == 0 || self.max_shards == 0 {
            return bad("max_objects and max_shards must be at least 1");
        }
        if self.repair_backoff.is_zero() || self.max_repair_backoff < self.repair_backoff {
            return bad("repair_backoff must be > 0 and at most max_repair_backoff");
        }
        Ok(())
    }
}

/// Why the Guard refused a call.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum GuardError {
    /// A configuration value is out of range.
    #[error("invalid Guard configuration: {0}")]
    Config(&'static str),
    /// Watching this object would pass `max_objects` or `max_shards`.
    #[error("the Guard watches {watched} {what} already (limit {max}): unwatch objects or raise the limit")]
    Full {
        /// "objects" or "shards".
        what: &'static str,
        /// Watched now.
        watched: usize,
        /// The limit.
        max: usize,
    },
    /// The object is watched already.
    #[error("object {0} is watched already")]
    AlreadyWatched(Root),
    /// The object is not watched.
    #[error("object {0} is not watched: register it first")]
    NotWatched(Root),
    /// A manifest host entry is not a libp2p peer id.
    #[error(
        "host {index} of the manifest is not a libp2p peer id: the manifest cannot be audited"
    )]
    BadHost {
        /// Index in the manifest's host table.
        index: usize,
    },
    /// No such slab or shard in the object.
    #[error(
        "no shard {shard} of slab {slab} in object {object} (it has {slabs} slabs of 30 shards)"
    )]
    NoSuchShard {
        /// Object.
        object: Root,
        /// Slab.
        slab: u64,
        /// Shard.
        shard: usize,
        /// Slabs the object has.
        slabs: u64,
    },
    /// The host holds another shard of the slab already (a slab's 30 shards are on 30 hosts).
    #[error("host {host} already holds shard {shard} of slab {slab}: each shard of a slab needs its own host")]
    HostHoldsSlab {
        /// Slab.
        slab: u64,
        /// The shard it holds.
        shard: usize,
        /// The host.
        host: HostId,
    },
    /// `repair_done` for an object without a running repair.
    #[error("object {0} has no repair running")]
    NoRepairRunning(Root),
    /// A repair report names a root the object does not have at that place.
    #[error(
        "the repair report puts root {root} at slab {slab} shard {shard}, which has another root"
    )]
    WrongRoot {
        /// Slab.
        slab: u64,
        /// Shard.
        shard: usize,
        /// The reported root.
        root: Root,
    },
    /// The manifest with the current holders could not be built.
    #[error("cannot describe the current placement as a manifest: {0}")]
    Placement(String),
}

/// What the Guard asks its driver to do.
#[derive(Clone, Debug)]
pub enum GuardAction {
    /// Send `challenge` to `host` over `/btfs/audit/1`; report with [`Guard::handle_event`].
    Challenge {
        /// The op.
        op: OpId,
        /// The host.
        host: HostId,
        /// The challenge.
        challenge: Challenge,
    },
    /// Stop waiting for `op` (its deadline passed; the verdict is out already).
    Cancel {
        /// The op.
        op: OpId,
    },
    /// Run `engine::repair::Repair::new(manifest, lost, candidates, ..)` with candidates from
    /// the Hub; report with [`Guard::repair_done`].
    Repair {
        /// The object (manifest id of the watched manifest).
        object: Root,
        /// The object's manifest with the *current* holders in its host table (after earlier
        /// repairs), so `Repair` fetches from and excludes the right hosts. Same layout, header
        /// and roots as the watched manifest; only its id differs once holders changed.
        manifest: Manifest,
        /// Slab → unhealthy shard indices to rebuild (≤ 20 per slab).
        lost: BTreeMap<u64, BTreeSet<usize>>,
        /// Current holder of every shard, per slab (30 each).
        holders: Vec<Vec<HostId>>,
    },
}

/// Why a repair failed, from the driver ([`Guard::repair_done`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RepairFailure {
    /// Nothing could pay the new holders (no repair allowance left), found before any host was
    /// asked: retried every `repair_backoff`, without growing the wait.
    #[error("{0}")]
    Unfunded(String),
    /// Anything else (no candidate took a shard, fetches failed, …): retried with a growing
    /// backoff.
    #[error("{0}")]
    Failed(String),
}

impl From<String> for RepairFailure {
    fn from(reason: String) -> Self {
        Self::Failed(reason)
    }
}

impl From<&str> for RepairFailure {
    fn from(reason: &str) -> Self {
        Self::Failed(reason.to_string())
    }
}

/// How a challenge ended, from the driver.
#[derive(Debug)]
pub enum AuditOutcome {
    /// The host answered with this proof (unverified: the Guard checks it).
    Proof(Vec<u8>),
    /// The host refused (status 1..=8 mapped to a [`Failure`]) or could not be reached.
    Failed(Failure),
}

/// One audit result, for the driver to sign, persist and report to the Hub.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// The challenge's op.
    #[serde(serialize_with = "op_num")]
    pub op: OpId,
    /// Epoch of the challenge.
    pub epoch: u64,
    /// Object (manifest id).
    #[serde(serialize_with = "root_hex")]
    pub object: Root,
    /// Slab.
    pub slab: u64,
    /// Shard index (0..30).
    pub shard: usize,
    /// The shard's root.
    #[serde(serialize_with = "root_hex")]
    pub root: Root,
    /// The challenged host.
    pub host: HostId,
    /// Whether a valid proof arrived in time.
    pub passed: bool,
    /// Why it failed.
    pub reason: Option<String>,
    /// When the verdict was reached (the driver's clock).
    pub at: Duration,
}

fn op_num<S: serde::Serializer>(op: &OpId, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(op.0)
}

fn root_hex<S: serde::Serializer>(r: &Root, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&r.to_hex())
}

/// A shard's audit state as the Guard knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ShardHealth {
    /// Shard index.
    pub shard: usize,
    /// Root.
    #[serde(serialize_with = "root_hex")]
    pub root: Root,
    /// Current holder (after a repair: the new one).
    pub host: HostId,
    /// Epoch of the latest verdict for this holder.
    pub last_epoch: Option<u64>,
    /// Whether it passed (`None`: not audited since watched, repaired or moved).
    pub passed: Option<bool>,
    /// Failed verdicts in a row.
    pub consecutive_failures: u32,
    /// Under repair now.
    pub repairing: bool,
}

/// A slab's health.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SlabHealth {
    /// Slab.
    pub slab: u64,
    /// Healthy shards of 30.
    pub healthy: usize,
    /// What the policy says about it now.
    pub decision: SlabDecision,
    /// Per shard.
    pub shards: Vec<ShardHealth>,
}

/// Where an object's repair stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RepairState {
    /// No repair running.
    Idle,
    /// A repair was asked and has not finished.
    Running,
    /// The last repair failed; the next decision is at `until`.
    Backoff {
        /// When.
        until: Duration,
    },
}

/// An object's health ([`Guard::health`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ObjectHealth {
    /// Object.
    #[serde(serialize_with = "root_hex")]
    pub object: Root,
    /// Per slab.
    pub slabs: Vec<SlabHealth>,
    /// Repairs finished successfully.
    pub repairs_done: u64,
    /// Repair state.
    pub repair: RepairState,
    /// Failed repair attempts in a row.
    pub repair_failures: u32,
    /// The last failed repair's error.
    pub last_repair_error: Option<String>,
}

/// Counters (they only grow).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct GuardStats {
    /// Challenges issued.
    pub challenges: u64,
    /// Verdicts passed.
    pub passed: u64,
    /// Verdicts failed (timeouts included).
    pub failed: u64,
    /// Verdicts failed for no answer in time.
    pub timeouts: u64,
    /// Challenges queued but not issued before their epoch ended.
    pub skipped: u64,
    /// Repairs asked.
    pub repairs_asked: u64,
    /// Repairs that failed or repaired nothing.
    pub repairs_failed: u64,
    /// Most challenges in flight at once.
    pub max_in_flight: usize,
    /// Most challenges in flight on one host at once.
    pub max_per_host: usize,
}

type Key = (Root, u64, usize);

struct Shard {
    root: Root,
    host: HostId,
    size: u32,
    last_epoch: Option<u64>,
    passed: Option<bool>,
    consecutive_failures: u32,
    /// Unanswered audits in a row.
    misses: u32,
    /// The latest answered verdict failed.
    bad: bool,
    repairing: bool,
}

impl Shard {
    fn healthy(&self, offline_grace: u32) -> bool {
        !self.repairing && !self.bad && self.misses < offline_grace
    }

    /// A new holder (or a fresh watch): nothing known against it yet.
    fn reset(&mut self) {
        self.passed = None;
        self.consecutive_failures = 0;
        self.misses = 0;
        self.bad = false;
    }
}

struct Object {
    manifest: Manifest,
    slabs: Vec<Vec<Shard>>,
    repair: RepairState,
    repairs_done: u64,
    repair_failures: u32,
    last_repair_error: Option<String>,
}

struct InFlight {
    key: Key,
    host: HostId,
    challenge: Challenge,
    epoch: u64,
    deadline: Duration,
}

/// The Guard machine (order of calls: module docs).
pub struct Guard {
    cfg: GuardConfig,
    secret: [u8; 32],
    epoch: u64,
    next_epoch: Duration,
    objects: BTreeMap<Root, Object>,
    shards: usize,
    waiting: BTreeMap<HostId, VecDeque<Key>>,
    rotation: VecDeque<HostId>,
    in_flight: BTreeMap<OpId, InFlight>,
    deadlines: BTreeSet<(Duration, OpId)>,
    per_host: BTreeMap<HostId, usize>,
    backoffs: BTreeSet<(Duration, Root)>,
    next_op: u64,
    actions: VecDeque<GuardAction>,
    verdicts: VecDeque<Verdict>,
    stats: GuardStats,
}

impl Guard {
    /// A Guard with nothing watched; epoch 0 starts at `now`.
    pub fn new(cfg: GuardConfig, secret: [u8; 32], now: Duration) -> Result<Self, GuardError> {
        cfg.check()?;
        Ok(Self {
            cfg,
            secret,
            epoch: 0,
            next_epoch: now + cfg.epoch,
            objects: BTreeMap::new(),
            shards: 0,
            waiting: BTreeMap::new(),
            rotation: VecDeque::new(),
            in_flight: BTreeMap::new(),
            deadlines: BTreeSet::new(),
            per_host: BTreeMap::new(),
            backoffs: BTreeSet::new(),
            next_op: 0,
            actions: VecDeque::new(),
            verdicts: VecDeque::new(),
            stats: GuardStats::default(),
        })
    }

    /// Numbers the current epoch `epoch` (a restarted Guard: the last persisted epoch + 1).
    pub fn with_first_epoch(mut self, epoch: u64) -> Self {
        self.epoch = epoch;
        self
    }

    /// The configuration.
    pub fn config(&self) -> &GuardConfig {
        &self.cfg
    }

    /// The current epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Counters.
    pub fn stats(&self) -> GuardStats {
        self.stats
    }

    /// Challenges in flight now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Watched objects.
    pub fn objects(&self) -> impl Iterator<Item = Root> + '_ {
        self.objects.keys().copied()
    }

    /// Starts watching the object `manifest` describes; returns its id (the manifest id).
    /// Its shards are challenged in the current epoch.
    pub fn watch(&mut self, manifest: Manifest, now: Duration) -> Result<Root, GuardError> {
        let object = manifest.id();
        if self.objects.contains_key(&object) {
            return Err(GuardError::AlreadyWatched(object));
        }
        if self.objects.len() >= self.cfg.max_objects {
            return Err(GuardError::Full {
                what: "objects",
                watched: self.objects.len(),
                max: self.cfg.max_objects,
            });
        }
        let count = manifest.slabs().len() * TOTAL_SHARDS;
        if self.shards + count > self.cfg.max_shards {
            return Err(GuardError::Full {
                what: "shards",
                watched: self.shards,
                max: self.cfg.max_shards,
            });
        }
        let table = manifest
            .hosts()
            .iter()
            .enumerate()
            .map(|(index, b)| HostId::from_bytes(b).ok_or(GuardError::BadHost { index }))
            .collect::<Result<Vec<_>, _>>()?;
        let layout = *manifest.layout();
        let mut slabs = Vec::with_capacity(manifest.slabs().len());
        for (s, record) in manifest.slabs().iter().enumerate() {
            let size = layout.slab(s as u64).map_or(0, |l| l.shard_size);
            let mut shards = Vec::with_capacity(TOTAL_SHARDS);
            for r in record {
                let host = *table.get(usize::from(r.host)).ok_or(GuardError::BadHost {
                    index: usize::from(r.host),
                })?;
                shards.push(Shard {
                    root: r.root,
                    host,
                    size,
                    last_epoch: None,
                    passed: None,
                    consecutive_failures: 0,
                    misses: 0,
                    bad: false,
                    repairing: false,
                });
            }
            slabs.push(shards);
        }
        self.shards += count;
        for (s, shards) in slabs.iter().enumerate() {
            for (k, sh) in shards.iter().enumerate() {
                Self::enqueue(
                    &mut self.waiting,
                    &mut self.rotation,
                    sh.host,
                    (object, s as u64, k),
                );
            }
        }
        self.objects.insert(
            object,
            Object {
                manifest,
                slabs,
                repair: RepairState::Idle,
                repairs_done: 0,
                repair_failures: 0,
                last_repair_error: None,
            },
        );
        self.pump(now);
        Ok(object)
    }

    /// Stops watching `object`; its challenges in flight are cancelled (no verdicts).
    pub fn unwatch(&mut self, object: Root) -> Result<(), GuardError> {
        let o = self
            .objects
            .remove(&object)
            .ok_or(GuardError::NotWatched(object))?;
        self.shards -= o.slabs.len() * TOTAL_SHARDS;
        if let RepairState::Backoff { until } = o.repair {
            self.backoffs.remove(&(until, object));
        }
        let ops: Vec<OpId> = self
            .in_flight
            .iter()
            .filter(|(_, f)| f.key.0 == object)
            .map(|(&op, _)| op)
            .collect();
        for op in ops {
            self.drop_op(op);
            self.actions.push_back(GuardAction::Cancel { op });
        }
        Ok(())
    }

    /// Records that `host` holds shard `shard` of slab `slab` (restored from a database, or a
    /// placement applied outside [`Guard::repair_done`]). The shard counts healthy until its
    /// next audit.
    pub fn set_holder(
        &mut self,
        object: Root,
        slab: u64,
        shard: usize,
        host: HostId,
    ) -> Result<(), GuardError> {
        self.shard_mut(object, slab, shard)?;
        let shards = &self.objects[&object].slabs[slab as usize];
        if let Some(other) = shards
            .iter()
            .position(|x| x.host == host)
            .filter(|&k| k != shard)
        {
            return Err(GuardError::HostHoldsSlab {
                slab,
                shard: other,
                host,
            });
        }
        let sh = self.shard_mut(object, slab, shard)?;
        sh.host = host;
        sh.reset();
        Ok(())
    }

    /// The object's health, or `None` if it is not watched.
    pub fn health(&self, object: Root) -> Option<ObjectHealth> {
        let o = self.objects.get(&object)?;
        let grace = self.cfg.offline_grace;
        let slabs = o
            .slabs
            .iter()
            .enumerate()
            .map(|(s, shards)| {
                let healthy = shards.iter().filter(|x| x.healthy(grace)).count();
                SlabHealth {
                    slab: s as u64,
                    healthy,
                    decision: slab_decision(healthy, self.cfg.repair_threshold),
                    shards: shards
                        .iter()
                        .enumerate()
                        .map(|(k, x)| ShardHealth {
                            shard: k,
                            root: x.root,
                            host: x.host,
                            last_epoch: x.last_epoch,
                            passed: x.passed,
                            consecutive_failures: x.consecutive_failures,
                            repairing: x.repairing,
                        })
                        .collect(),
                }
            })
            .collect();
        Some(ObjectHealth {
            object,
            slabs,
            repairs_done: o.repairs_done,
            repair: o.repair,
            repair_failures: o.repair_failures,
            last_repair_error: o.last_repair_error.clone(),
        })
    }

    /// The next thing to do.
    pub fn poll_action(&mut self) -> Option<GuardAction> {
        self.actions.pop_front()
    }

    /// The next verdict to sign, persist and report.
    pub fn poll_verdict(&mut self) -> Option<Verdict> {
        self.verdicts.pop_front()
    }

    /// When [`Guard::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Duration> {
        let mut t = self.next_epoch;
        if let Some(&(d, _)) = self.deadlines.first() {
            t = t.min(d);
        }
        if let Some(&(b, _)) = self.backoffs.first() {
            t = t.min(b);
        }
        Some(t)
    }

    /// Deadlines, epoch starts and repair backoffs due at `now` (early calls are harmless).
    pub fn handle_timeout(&mut self, now: Duration) {
        while let Some(&(d, op)) = self.deadlines.first() {
            if d > now {
                break;
            }
            if let Some(f) = self.drop_op(op) {
                self.actions.push_back(GuardAction::Cancel { op });
                self.stats.timeouts += 1;
                self.verdict(
                    op,
                    f,
                    false,
                    true,
                    Some("no answer before the deadline".into()),
                    now,
                );
            }
        }
        if now >= self.next_epoch {
            self.start_epoch(now);
        }
        while let Some(&(until, object)) = self.backoffs.first() {
            if until > now {
                break;
            }
            self.backoffs.pop_first();
            if let Some(o) = self.objects.get_mut(&object) {
                o.repair = RepairState::Idle;
            }
            self.check_repair(object);
        }
        self.pump(now);
    }

    /// A challenge ended. The proof is verified here; an answer after the deadline fails.
    pub fn handle_event(&mut self, op: OpId, outcome: AuditOutcome, now: Duration) {
        let Some(f) = self.drop_op(op) else {
            return;
        };
        let late = now > f.deadline;
        let silent = late
            || matches!(
                outcome,
                AuditOutcome::Failed(Failure::Unreachable | Failure::Timeout | Failure::Busy)
            );
        let (passed, reason) = match outcome {
            _ if late => (false, Some("answered after the deadline".to_string())),
            AuditOutcome::Proof(p) => match proof::verify(&f.challenge, &p) {
                Ok(()) => (true, None),
                Err(e) => (false, Some(format!("invalid proof: {e}"))),
            },
            AuditOutcome::Failed(Failure::Timeout) => {
                (false, Some("no answer before the deadline".into()))
            }
            AuditOutcome::Failed(failure) => (false, Some(format!("the host failed: {failure}"))),
        };
        if late {
            self.stats.timeouts += 1;
        }
        self.verdict(op, f, passed, silent, reason, now);
        self.pump(now);
    }

    /// A repair asked by [`GuardAction::Repair`] ended. On success every repaired shard takes
    /// its new holder and counts healthy until audited; a failure (or a report that repaired
    /// nothing) is retried after the backoff.
    pub fn repair_done(
        &mut self,
        object: Root,
        result: Result<RepairReport, RepairFailure>,
        now: Duration,
    ) -> Result<(), GuardError> {
        let o = self
            .objects
            .get_mut(&object)
            .ok_or(GuardError::NotWatched(object))?;
        if o.repair != RepairState::Running {
            return Err(GuardError::NoRepairRunning(object));
        }
        let mut top_up = BTreeSet::new();
        let error = match result {
            Ok(report) if !report.repaired.is_empty() => {
                top_up.extend(report.repaired.iter().map(|r| r.slab));
                // Check the whole report before applying any of it.
                for r in &report.repaired {
                    let slabs = o.slabs.len() as u64;
                    let sh = o
                        .slabs
                        .get(r.slab as usize)
                        .and_then(|s| s.get(r.shard))
                        .ok_or(GuardError::NoSuchShard {
                            object,
                            slab: r.slab,
                            shard: r.shard,
                            slabs,
                        })?;
                    if sh.root != r.root {
                        return Err(GuardError::WrongRoot {
                            slab: r.slab,
                            shard: r.shard,
                            root: r.root,
                        });
                    }
                }
                for r in &report.repaired {
                    let sh = &mut o.slabs[r.slab as usize][r.shard];
                    sh.host = r.host;
                    sh.reset();
                    sh.repairing = false;
                }
                None
            }
            Ok(_) => Some(RepairFailure::Failed("the repair rebuilt no shard".into())),
            Err(e) => Some(e),
        };
        // Shards not in the report stay as audited (unhealthy) and are challenged again.
        for sh in o.slabs.iter_mut().flatten() {
            sh.repairing = false;
        }
        match error {
            None => {
                o.repairs_done += 1;
                o.repair_failures = 0;
                o.last_repair_error = None;
                o.repair = RepairState::Idle;
                self.check_repair_with(object, &top_up);
            }
            Some(e) => {
                self.stats.repairs_failed += 1;
                o.repair_failures = o.repair_failures.saturating_add(1);
                // An unfunded try asked no host: retry at the base interval.
                let shift = match &e {
                    RepairFailure::Unfunded(_) => 0,
                    RepairFailure::Failed(_) => (o.repair_failures - 1).min(16),
                };
                o.last_repair_error = Some(e.to_string());
                let wait = self
                    .cfg
                    .repair_backoff
                    .saturating_mul(1 << shift)
                    .min(self.cfg.max_repair_backoff);
                let until = now + wait;
                o.repair = RepairState::Backoff { until };
                self.backoffs.insert((until, object));
            }
        }
        self.pump(now);
        Ok(())
    }

    fn shard_mut(
        &mut self,
        object: Root,
        slab: u64,
        shard: usize,
    ) -> Result<&mut Shard, GuardError> {
        let o = self
            .objects
            .get_mut(&object)
            .ok_or(GuardError::NotWatched(object))?;
        let slabs = o.slabs.len() as u64;
        o.slabs
            .get_mut(slab as usize)
            .and_then(|s| s.get_mut(shard))
            .ok_or(GuardError::NoSuchShard {
                object,
                slab,
                shard,
                slabs,
            })
    }

    fn enqueue(
        waiting: &mut BTreeMap<HostId, VecDeque<Key>>,
        rotation: &mut VecDeque<HostId>,
        host: HostId,
        key: Key,
    ) {
        let q = waiting.entry(host).or_default();
        if q.is_empty() {
            rotation.push_back(host);
        }
        q.push_back(key);
    }

    fn start_epoch(&mut self, now: Duration) {
        let skipped: usize = self.waiting.values().map(VecDeque::len).sum();
        self.stats.skipped += skipped as u64;
        self.waiting.clear();
        self.rotation.clear();
        self.epoch += 1;
        self.next_epoch = if self.next_epoch + self.cfg.epoch > now {
            self.next_epoch + self.cfg.epoch
        } else {
            now + self.cfg.epoch
        };
        for (&object, o) in &self.objects {
            for (s, shards) in o.slabs.iter().enumerate() {
                for (k, sh) in shards.iter().enumerate() {
                    if !sh.repairing {
                        Self::enqueue(
                            &mut self.waiting,
                            &mut self.rotation,
                            sh.host,
                            (object, s as u64, k),
                        );
                    }
                }
            }
        }
    }

    fn nonce(&self, (object, slab, shard): Key) -> [u8; 32] {
        let mut h = blake3::Hasher::new_keyed(&self.secret);
        h.update(NONCE_CONTEXT);
        h.update(&self.epoch.to_le_bytes());
        h.update(object.as_bytes());
        h.update(&slab.to_le_bytes());
        h.update(&(shard as u64).to_le_bytes());
        *h.finalize().as_bytes()
    }

    /// Issues queued challenges round-robin over hosts within the bounds.
    fn pump(&mut self, now: Duration) {
        let mut blocked = 0;
        while self.in_flight.len() < self.cfg.max_in_flight && blocked < self.rotation.len() {
            let Some(host) = self.rotation.pop_front() else {
                break;
            };
            if self.per_host.get(&host).copied().unwrap_or(0) >= self.cfg.max_per_host {
                self.rotation.push_back(host);
                blocked += 1;
                continue;
            }
            let Some(q) = self.waiting.get_mut(&host) else {
                continue;
            };
            let key = q.pop_front();
            if q.is_empty() {
                self.waiting.remove(&host);
            } else {
                self.rotation.push_back(host);
            }
            let Some(key) = key else { continue };
            // The shard may have been unwatched, moved or put under repair since it was queued.
            let Some(sh) = self
                .objects
                .get(&key.0)
                .and_then(|o| o.slabs.get(key.1 as usize))
                .and_then(|s| s.get(key.2))
            else {
                continue;
            };
            if sh.repairing || sh.host != host {
                continue;
            }
            blocked = 0;
            let challenge = Challenge {
                root: sh.root,
                nonce: self.nonce(key),
                size: sh.size,
            };
            let op = OpId(self.next_op);
            self.next_op += 1;
            let deadline = now + self.cfg.deadline;
            self.in_flight.insert(
                op,
                InFlight {
                    key,
                    host,
                    challenge,
                    epoch: self.epoch,
                    deadline,
                },
            );
            self.deadlines.insert((deadline, op));
            let n = self.per_host.entry(host).or_insert(0);
            *n += 1;
            self.stats.max_per_host = self.stats.max_per_host.max(*n);
            self.stats.max_in_flight = self.stats.max_in_flight.max(self.in_flight.len());
            self.stats.challenges += 1;
            self.actions.push_back(GuardAction::Challenge {
                op,
                host,
                challenge,
            });
        }
    }

    fn drop_op(&mut self, op: OpId) -> Option<InFlight> {
        let f = self.in_flight.remove(&op)?;
        self.deadlines.remove(&(f.deadline, op));
        if let Some(n) = self.per_host.get_mut(&f.host) {
            *n -= 1;
            if *n == 0 {
                self.per_host.remove(&f.host);
            }
        }
        Some(f)
    }

    fn verdict(
        &mut self,
        op: OpId,
        f: InFlight,
        passed: bool,
        silent: bool,
        reason: Option<String>,
        now: Duration,
    ) {
        let (object, slab, shard) = f.key;
        if passed {
            self.stats.passed += 1;
        } else {
            self.stats.failed += 1;
        }
        self.verdicts.push_back(Verdict {
            op,
            epoch: f.epoch,
            object,
            slab,
            shard,
            root: f.challenge.root,
            host: f.host,
            passed,
            reason,
            at: now,
        });
        let Ok(sh) = self.shard_mut(object, slab, shard) else {
            return;
        };
        if sh.host != f.host || sh.repairing {
            return;
        }
        sh.last_epoch = Some(f.epoch);
        sh.passed = Some(passed);
        sh.consecutive_failures = if passed {
            0
        } else {
            sh.consecutive_failures.saturating_add(1)
        };
        match (passed, silent) {
            (true, _) => (sh.misses, sh.bad) = (0, false),
            (false, true) => sh.misses = sh.misses.saturating_add(1),
            (false, false) => (sh.misses, sh.bad) = (0, true),
        }
        if !passed {
            self.check_repair(object);
        }
    }

    /// Asks for a repair of every slab of `object` at [`SlabDecision::Repair`], unless one is
    /// running or waiting out its backoff.
    fn check_repair(&mut self, object: Root) {
        self.check_repair_with(object, &BTreeSet::new());
    }

    /// [`Guard::check_repair`], also topping up the slabs in `top_up` (just repaired) that have
    /// shards known lost: failures that arrived while their repair ran (a slab's challenges
    /// answer one by one, so a repair asked at the threshold may miss some) are rebuilt at once
    /// instead of waiting for the slab to fall to the threshold again.
    fn check_repair_with(&mut self, object: Root, top_up: &BTreeSet<u64>) {
        let (threshold, grace) = (self.cfg.repair_threshold, self.cfg.offline_grace);
        let Some(o) = self.objects.get_mut(&object) else {
            return;
        };
        if o.repair != RepairState::Idle {
            return;
        }
        let mut lost: BTreeMap<u64, BTreeSet<usize>> = BTreeMap::new();
        for (s, shards) in o.slabs.iter().enumerate() {
            let healthy = shards.iter().filter(|x| x.healthy(grace)).count();
            let topped = top_up.contains(&(s as u64))
                && healthy < shards.len()
                && slab_decision(healthy, threshold) != SlabDecision::AtRisk;
            if topped || slab_decision(healthy, threshold) == SlabDecision::Repair {
                lost.insert(
                    s as u64,
                    shards
                        .iter()
                        .enumerate()
                        .filter(|(_, x)| !x.healthy(grace))
                        .map(|(k, _)| k)
                        .collect(),
                );
            }
        }
        if lost.is_empty() {
            return;
        }
        let holders: Vec<Vec<HostId>> = o
            .slabs
            .iter()
            .map(|s| s.iter().map(|x| x.host).collect())
            .collect();
        let manifest = match placement_manifest(&o.manifest, &holders) {
            Ok(m) => m,
            Err(e) => {
                // Cannot happen for a manifest that decoded (same sizes, distinct holders per
                // slab); recorded rather than panicking.
                o.last_repair_error = Some(e.to_string());
                return;
            }
        };
        for (&s, ks) in &lost {
            for &k in ks {
                o.slabs[s as usize][k].repairing = true;
            }
        }
        o.repair = RepairState::Running;
        self.stats.repairs_asked += 1;
        self.actions.push_back(GuardAction::Repair {
            object,
            manifest,
            lost,
            holders,
        });
    }
}

/// `manifest` with `holders` (per slab, 30 each) as its host table and shard records: same
/// layout, sealed header and roots. The engine's `Repair` reads holders from the manifest.
pub fn placement_manifest(
    manifest: &Manifest,
    holders: &[Vec<HostId>],
) -> Result<Manifest, GuardError> {
    let bad = |why: String| GuardError::Placement(why);
    if holders.len() != manifest.slabs().len() || holders.iter().any(|s| s.len() != TOTAL_SHARDS) {
        return Err(bad(format!(
            "{} slabs of holders for {} slabs",
            holders.len(),
            manifest.slabs().len()
        )));
    }
    let bytes = manifest.encode();
    // Magic, version, coding, block, max shard, cipher length: 26 bytes; then the header.
    let header_len = bytes
        .get(26..28)
        .map(|b| usize::from(u16::from_le_bytes([b[0], b[1]])))
        .ok_or_else(|| bad("manifest shorter than its fixed fields".into()))?;
    let prefix = bytes
        .get(..28 + header_len)
        .ok_or_else(|| bad("manifest shorter than its header".into()))?;
    let mut table: Vec<HostId> = Vec::new();
    let mut index: BTreeMap<HostId, u16> = BTreeMap::new();
    for h in holders.iter().flatten() {
        if !index.contains_key(h) {
            let i = u16::try_from(table.len())
                .map_err(|_| bad("more than 65535 distinct holders".into()))?;
            index.insert(*h, i);
            table.push(*h);
        }
    }
    let mut out = prefix.to_vec();
    out.extend_from_slice(&(table.len() as u16).to_le_bytes());
    for h in &table {
        let b = h.to_bytes();
        out.push(b.len() as u8);
        out.extend_from_slice(&b);
    }
    for (record, hs) in manifest.slabs().iter().zip(holders) {
        for (r, h) in record.iter().zip(hs) {
            out.extend_from_slice(r.root.as_bytes());
            out.extend_from_slice(&index[h].to_le_bytes());
        }
    }
    Manifest::decode(&out).map_err(|e| bad(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::repair::RepairedShard;
    use crate::engine::sim::host_ids;
    use crate::manifest::{ObjectHeader, ShardRecord};
    use crate::{Encoder, Layout, ObjectKey};
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    /// A one-slab object on hosts 0..30, with its shard bytes.
    fn object() -> (Manifest, Vec<Vec<u8>>) {
        let key = ObjectKey::from_bytes([3; 32]);
        let layout = Layout::new(20_000, 4096).unwrap();
        let mut enc = Encoder::new(&key, layout);
        enc.feed(&[9u8; 20_000]).unwrap();
        let slab = enc.next_slab().unwrap().unwrap();
        let hosts: Vec<Vec<u8>> = host_ids(30).iter().map(|h| h.to_bytes()).collect();
        let mut rec = [ShardRecord {
            root: Root::from_bytes([0; 32]),
            host: 0,
        }; TOTAL_SHARDS];
        for (k, r) in rec.iter_mut().enumerate() {
            *r = ShardRecord {
                root: slab.roots[k],
                host: k as u16,
            };
        }
        let shards = (0..TOTAL_SHARDS).map(|k| slab.shard(k).to_vec()).collect();
        let m = Manifest::new(layout, &key, &ObjectHeader::default(), hosts, vec![rec]).unwrap();
        (m, shards)
    }

    fn cfg() -> GuardConfig {
        GuardConfig {
            max_in_flight: 1000,
            max_per_host: 1,
            ..GuardConfig::for_devnet()
        }
    }

    fn challenges(g: &mut Guard) -> Vec<(OpId, HostId, Challenge)> {
        let mut out = Vec::new();
        while let Some(a) = g.poll_action() {
            if let GuardAction::Challenge {
                op,
                host,
                challenge,
            } = a
            {
                out.push((op, host, challenge));
            }
        }
        out
    }

    /// Answers every challenge: honestly, except `fail` (shard indices, by host order).
    fn answer(g: &mut Guard, shards: &[Vec<u8>], fail: &[usize], now: Duration) {
        let ids = host_ids(40);
        for (op, host, c) in challenges(g) {
            let k = ids.iter().position(|h| *h == host).unwrap();
            let bytes = shards.iter().find(|s| Root::of(s) == c.root).unwrap();
            let outcome = if fail.contains(&k) {
                AuditOutcome::Failed(Failure::NotFound)
            } else {
                AuditOutcome::Proof(proof::prove(&c, bytes).unwrap())
            };
            g.handle_event(op, outcome, now);
        }
    }

    #[test]
    fn bad_configs_are_refused() {
        for c in [
            GuardConfig {
                repair_threshold: 9,
                ..cfg()
            },
            GuardConfig {
                repair_threshold: 30,
                ..cfg()
            },
            GuardConfig {
                max_per_host: 0,
                ..cfg()
            },
            GuardConfig {
                deadline: Duration::from_secs(10),
                ..cfg()
            },
        ] {
            assert!(matches!(
                Guard::new(c, [0; 32], Duration::ZERO),
                Err(GuardError::Config(_))
            ));
        }
    }

    #[test]
    fn one_challenge_per_shard_per_epoch_with_fresh_deterministic_nonces() {
        let (m, shards) = object();
        let mut g = Guard::new(cfg(), [1; 32], Duration::ZERO).unwrap();
        let id = g.watch(m.clone(), Duration::ZERO).unwrap();
        assert_eq!(
            g.watch(m.clone(), Duration::ZERO),
            Err(GuardError::AlreadyWatched(id))
        );
        let first = challenges(&mut g);
        assert_eq!(first.len(), 30);
        let mut again = Guard::new(cfg(), [1; 32], Duration::ZERO).unwrap();
        again.watch(m.clone(), Duration::ZERO).unwrap();
        let same: Vec<_> = challenges(&mut again).iter().map(|c| c.2).collect();
        assert_eq!(first.iter().map(|c| c.2).collect::<Vec<_>>(), same);
        for (op, _, c) in &first {
            let bytes = shards.iter().find(|s| Root::of(s) == c.root).unwrap();
            g.handle_event(
                *op,
                AuditOutcome::Proof(proof::prove(c, bytes).unwrap()),
                Duration::from_millis(5),
            );
        }
        let verdicts: Vec<Verdict> = std::iter::from_fn(|| g.poll_verdict()).collect();
        assert_eq!(verdicts.len(), 30);
        assert!(verdicts.iter().all(|v| v.passed && v.epoch == 0));
        // Nothing more this epoch; the next one challenges again with other nonces.
        g.handle_timeout(Duration::from_secs(1));
        assert!(challenges(&mut g).is_empty());
        let next = g.poll_timeout().unwrap();
        assert_eq!(next, cfg().epoch);
        g.handle_timeout(next);
        let second = challenges(&mut g);
        assert_eq!((second.len(), g.epoch()), (30, 1));
        assert!(second
            .iter()
            .all(|(_, _, c)| first.iter().all(|f| f.2.nonce != c.nonce)));
        let health = g.health(id).unwrap();
        assert_eq!(health.slabs[0].healthy, 30);
        let json = serde_json::to_value(&health).unwrap();
        assert_eq!(json["slabs"][0]["healthy"], 30);
        assert_eq!(
            json["slabs"][0]["shards"][0]["root"],
            m.slabs()[0][0].root.to_hex()
        );
    }

    #[test]
    fn in_flight_bounds_hold_and_the_rest_waits() {
        let (m, _) = object();
        let c = GuardConfig {
            max_in_flight: 7,
            ..cfg()
        };
        let mut g = Guard::new(c, [1; 32], Duration::ZERO).unwrap();
        g.watch(m, Duration::ZERO).unwrap();
        let first = challenges(&mut g);
        assert_eq!(first.len(), 7);
        g.handle_event(
            first[0].0,
            AuditOutcome::Failed(Failure::Busy),
            Duration::from_millis(1),
        );
        assert_eq!(challenges(&mut g).len(), 1);
        assert_eq!(g.in_flight(), 7);
    }

    #[test]
    fn silence_and_late_answers_fail_at_the_deadline() {
        let (m, shards) = object();
        let mut g = Guard::new(cfg(), [1; 32], Duration::ZERO).unwrap();
        g.watch(m, Duration::ZERO).unwrap();
        let all = challenges(&mut g);
        let (op, _, c) = all[0];
        let late = cfg().deadline + Duration::from_millis(1);
        let bytes = shards.iter().find(|s| Root::of(s) == c.root).unwrap();
        g.handle_event(
            op,
            AuditOutcome::Proof(proof::prove(&c, bytes).unwrap()),
            late,
        );
        let v = g.poll_verdict().unwrap();
        assert!(!v.passed && v.reason.as_deref() == Some("answered after the deadline"));
        assert_eq!(g.poll_timeout(), Some(cfg().deadline));
        g.handle_timeout(cfg().deadline);
        let verdicts: Vec<Verdict> = std::iter::from_fn(|| g.poll_verdict()).collect();
        assert_eq!(verdicts.len(), 29);
        assert!(verdicts.iter().all(|v| !v.passed));
        let mut cancels = 0;
        while let Some(a) = g.poll_action() {
            cancels += usize::from(matches!(a, GuardAction::Cancel { .. }));
        }
        assert_eq!(cancels, 29);
        assert_eq!(g.stats().timeouts, 30);
    }

    /// Answers every challenge honestly except `silent` (host indices), which go unanswered
    /// (unreachable); returns whether a repair was asked.
    fn answer_silently(g: &mut Guard, shards: &[Vec<u8>], silent: &[usize], now: Duration) -> bool {
        let ids = host_ids(40);
        for (op, host, c) in challenges(g) {
            let k = ids.iter().position(|h| *h == host).unwrap();
            let bytes = shards.iter().find(|s| Root::of(s) == c.root).unwrap();
            let outcome = match silent.contains(&k) {
                true => AuditOutcome::Failed(Failure::Unreachable),
                false => AuditOutcome::Proof(proof::prove(&c, bytes).unwrap()),
            };
            g.handle_event(op, outcome, now);
        }
        std::iter::from_fn(|| g.poll_action()).any(|a| matches!(a, GuardAction::Repair { .. }))
    }

    #[test]
    fn silent_hosts_get_a_grace_before_their_shards_count_lost() {
        let (m, shards) = object();
        let grace = cfg().offline_grace;
        assert!(grace >= 2);
        let mut g = Guard::new(cfg(), [1; 32], Duration::ZERO).unwrap();
        let id = g.watch(m, Duration::ZERO).unwrap();
        let epoch = cfg().epoch;
        let cut: Vec<usize> = (0..20).collect();
        // A partition of 20 hosts for grace − 1 epochs: nothing is lost, nothing repaired.
        let mut now = Duration::from_millis(10);
        for e in 0..grace - 1 {
            assert!(!answer_silently(&mut g, &shards, &cut, now), "epoch {e}");
            assert_eq!(g.health(id).unwrap().slabs[0].healthy, 30);
            now += epoch;
            g.handle_timeout(now);
        }
        // Healed: every host answers, and the count of misses starts over.
        assert!(!answer_silently(&mut g, &shards, &[], now));
        for _ in 0..grace - 1 {
            now += epoch;
            g.handle_timeout(now);
            assert!(!answer_silently(&mut g, &shards, &cut, now));
        }
        assert_eq!(g.health(id).unwrap().slabs[0].healthy, 30);
        // Silent for the whole grace: lost, and repaired.
        now += epoch;
        g.handle_timeout(now);
        assert!(answer_silently(&mut g, &shards, &cut, now));
        assert_eq!(g.health(id).unwrap().slabs[0].healthy, 10);
        // An answered failure needs no grace.
        let (m2, shards2) = object();
        let mut g = Guard::new(cfg(), [1; 32], Duration::ZERO).unwrap();
        let id = g.watch(m2, Duration::ZERO).unwrap();
        answer(
            &mut g,
            &shards2,
            &[0, 1, 2, 3, 4, 5],
            Duration::from_millis(10),
        );
        assert_eq!(g.health(id).unwrap().slabs[0].healthy, 24);
        assert!(matches!(
            Guard::new(
                GuardConfig {
                    offline_grace: 0,
                    ..cfg()
                },
                [1; 32],
                Duration::ZERO
            ),
            Err(GuardError::Config(_))
        ));
    }

    #[test]
    fn repair_at_the_threshold_then_backoff_then_new_holders() {
        let (m, shards) = object();
        let mut g = Guard::new(cfg(), [1; 32], Duration::ZERO).unwrap();
        let id = g.watch(m.clone(), Duration::ZERO).unwrap();
        let t = Duration::from_millis(10);
        // 6 failures: 24 healthy = the threshold.
        answer(&mut g, &shards, &[0, 1, 2, 3, 4, 5], t);
        let repair = std::iter::from_fn(|| g.poll_action()).find_map(|a| match a {
            GuardAction::Repair {
                object,
                manifest,
                lost,
                holders,
            } => Some((object, manifest, lost, holders)),
            _ => None,
        });
        let (object, manifest, lost, holders) = repair.expect("a repair at 24 healthy");
        assert_eq!(object, id);
        assert_eq!(lost[&0], (0..6).collect());
        assert_eq!(manifest.slabs()[0][7].root, m.slabs()[0][7].root);
        assert_eq!(holders[0][7], host_ids(30)[7]);
        let h = g.health(id).unwrap();
        assert_eq!((h.repair, h.slabs[0].healthy), (RepairState::Running, 24));
        // A failed repair waits its backoff, then is asked again.
        g.repair_done(id, Err("no hosts".into()), t).unwrap();
        assert!(matches!(
            g.health(id).unwrap().repair,
            RepairState::Backoff { .. }
        ));
        assert_eq!(
            g.repair_done(id, Err("x".into()), t),
            Err(GuardError::NoRepairRunning(id))
        );
        let until = t + cfg().repair_backoff;
        assert_eq!(g.poll_timeout(), Some(cfg().epoch.min(until)));
        g.handle_timeout(until);
        let again =
            std::iter::from_fn(|| g.poll_action()).any(|a| matches!(a, GuardAction::Repair { .. }));
        assert!(again);
        // Success: new holders (hosts 30..36), counted healthy.
        let new = host_ids(36);
        let report = RepairReport {
            repaired: (0..6)
                .map(|k| RepairedShard {
                    slab: 0,
                    shard: k,
                    root: m.slabs()[0][k].root,
                    host: new[30 + k],
                })
                .collect(),
            ..Default::default()
        };
        g.repair_done(id, Ok(report), until).unwrap();
        let h = g.health(id).unwrap();
        assert_eq!(
            (h.repair, h.repairs_done, h.slabs[0].healthy),
            (RepairState::Idle, 1, 30)
        );
        assert_eq!(h.slabs[0].shards[2].host, new[32]);
        // The placement view names the new holders.
        let holders: Vec<Vec<HostId>> = vec![h.slabs[0].shards.iter().map(|s| s.host).collect()];
        let view = placement_manifest(&m, &holders).unwrap();
        assert_eq!(
            view.hosts()[usize::from(view.slabs()[0][2].host)],
            new[32].to_bytes()
        );
        assert_eq!(view.layout(), m.layout());
    }

    /// Runs `g` to its next `Repair` action, answering every challenge on the way (honestly
    /// except shards 0..6, which fail) and handling timeouts up to `until`; returns the time of
    /// that action, or `None`.
    fn next_repair(
        g: &mut Guard,
        shards: &[Vec<u8>],
        mut now: Duration,
        until: Duration,
    ) -> Option<Duration> {
        let ids = host_ids(40);
        loop {
            while let Some(a) = g.poll_action() {
                match a {
                    GuardAction::Repair { .. } => return Some(now),
                    GuardAction::Challenge {
                        op,
                        host,
                        challenge: c,
                    } => {
                        let k = ids.iter().position(|h| *h == host).unwrap();
                        let outcome = if k < 6 {
                            AuditOutcome::Failed(Failure::NotFound)
                        } else {
                            let bytes = shards.iter().find(|s| Root::of(s) == c.root).unwrap();
                            AuditOutcome::Proof(proof::prove(&c, bytes).unwrap())
                        };
                        g.handle_event(op, outcome, now);
                    }
                    GuardAction::Cancel { .. } => {}
                }
            }
            now = g.poll_timeout()?.max(now);
            if now > until {
                return None;
            }
            g.handle_timeout(now);
        }
    }

    #[test]
    fn an_unfunded_repair_is_retried_at_the_base_backoff_a_failed_one_backs_off_more() {
        for unfunded in [true, false] {
            let cfg = GuardConfig {
                repair_backoff: Duration::from_secs(5),
                max_repair_backoff: Duration::from_secs(600),
                ..cfg()
            };
            let (m, shards) = object();
            let mut g = Guard::new(cfg, [1; 32], Duration::ZERO).unwrap();
            let id = g.watch(m, Duration::ZERO).unwrap();
            let mut asked = next_repair(&mut g, &shards, Duration::ZERO, Duration::from_secs(1))
                .expect("a first try");
            let mut waits = Vec::new();
            for _ in 0..4 {
                let why = if unfunded {
                    RepairFailure::Unfunded("no repair allowance".into())
                } else {
                    RepairFailure::Failed("no hosts".into())
                };
                g.repair_done(id, Err(why), asked).unwrap();
                assert_eq!(
                    g.health(id).unwrap().last_repair_error.as_deref(),
                    Some(if unfunded {
                        "no repair allowance"
                    } else {
                        "no hosts"
                    })
                );
                let next =
                    next_repair(&mut g, &shards, asked, asked + Duration::from_secs(1000)).unwrap();
                waits.push((next - asked).as_secs());
                asked = next;
            }
            let want: Vec<u64> = if unfunded {
                vec![5; 4]
            } else {
                vec![5, 10, 20, 40]
            };
            assert_eq!(waits, want, "unfunded={unfunded}");
        }
    }

    #[test]
    fn limits_and_unknown_objects_are_errors() {
        let (m, _) = object();
        let c = GuardConfig {
            max_objects: 1,
            ..cfg()
        };
        let mut g = Guard::new(c, [1; 32], Duration::ZERO).unwrap();
        let id = g.watch(m, Duration::ZERO).unwrap();
        let (other, _) = {
            let key = ObjectKey::from_bytes([4; 32]);
            let layout = Layout::new(1, 4096).unwrap();
            let mut enc = Encoder::new(&key, layout);
            enc.feed(&[1]).unwrap();
            let slab = enc.next_slab().unwrap().unwrap();
            let hosts: Vec<Vec<u8>> = host_ids(30).iter().map(|h| h.to_bytes()).collect();
            let rec = std::array::from_fn(|k| ShardRecord {
                root: slab.roots[k],
                host: k as u16,
            });
            (
                Manifest::new(layout, &key, &ObjectHeader::default(), hosts, vec![rec]).unwrap(),
                (),
            )
        };
        assert!(matches!(
            g.watch(other, Duration::ZERO),
            Err(GuardError::Full { .. })
        ));
        assert!(matches!(
            g.set_holder(id, 1, 0, host_ids(1)[0]),
            Err(GuardError::NoSuchShard { .. })
        ));
        assert!(matches!(
            g.set_holder(id, 0, 0, host_ids(2)[1]),
            Err(GuardError::HostHoldsSlab { shard: 1, .. })
        ));
        g.set_holder(id, 0, 0, host_ids(31)[30]).unwrap();
        g.set_holder(id, 0, 0, host_ids(31)[30]).unwrap();
        assert_eq!(
            g.health(id).unwrap().slabs[0].shards[0].host,
            host_ids(31)[30]
        );
        g.unwatch(id).unwrap();
        assert_eq!(g.unwatch(id), Err(GuardError::NotWatched(id)));
        assert!(g.health(id).is_none());
    }
}

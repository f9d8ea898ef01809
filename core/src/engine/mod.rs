//! # The transfer engine: upload, download and repair as sans-io state machines
//!
//! Every decision of a transfer — which host gets which shard, how many requests are in flight,
//! what is retried, when a slow request is hedged, how far downloads read ahead, how the
//! manifest is spread and found, what is claimed and released — is made here, once, for every
//! tenant: the native CLI, the browser and (next) the Guard's repairs. The machines do no I/O,
//! own no timers and read no clock: a *driver* (one per shell: tokio in `btfs-host`, wasm
//! futures in `btfs-client`, the simulated network in [`sim`]) performs the [`Action`]s they
//! ask for and feeds back what happened. The model is quinn-proto's `Connection`.
//!
//! - [`upload::Upload`]: encoded slabs in (with backpressure), 30 distinct hosts per slab,
//!   retry, move to a spare host, hedge a slow put, spread the manifest, claim, release.
//! - [`download::Download`]: a link in; manifest fan-out, 10 verified shards per slab (data
//!   shards first), hedging after a deadline, bounded read-ahead, plaintext out in order.
//! - [`repair::Repair`]: a manifest and the lost shards in; any 10 shards of a slab fetched,
//!   only the lost shards rebuilt (same roots), placed on hosts that hold nothing of the slab.
//! - [`journal::Journal`]: what an upload placed, slab by slab, so that
//!   [`upload::Upload::resume`] finishes a stopped upload without sending placed slabs again.
//!
//! Non-goals: transports, addresses and connection management (a driver maps a [`HostId`] to
//! whatever it dials), reading files, and the clock.
//!
//! ## The order of calls (every machine implements [`Machine`])
//!
//! ```text
//! loop {
//!     while let Some(action) = m.poll_action() { perform it (start or cancel an op) }
//!     if m.is_finished() { break }          // then take the machine's result
//!     wait for the first of:
//!         an op finishing    → m.handle_event(op, outcome, now)
//!         m.poll_timeout()   → m.handle_timeout(now)
//!         (upload) room for input: m.wants_slab() → m.push_slab(slab)
//!     (download) drain m.poll_output() after every call
//! }
//! ```
//!
//! `now` is any monotonic clock the driver keeps (time since the transfer started is fine),
//! the same one for every call. An op's outcome that arrives after the machine cancelled it,
//! or for an op it does not know, is ignored. A driver never decides anything: it may fail an
//! op at once (e.g. no address for a host: [`Failure::Unreachable`]) but never retries.
//!
//! ## Bounds
//!
//! Each machine has a bound on ops in flight in all (`max_in_flight` of its config) and
//! [`MAX_OPS_PER_HOST`] on any one host; the simulated network checks both on every run.
//!
//! ## Timing (defaults in [`Timing`])
//!
//! Every op has a hard deadline (a connect 10 s, a request 60 s); at it the machine cancels the
//! op and counts a [`Failure::Timeout`]. Long before that, an op still running after the
//! *hedge deadline* (at least [`Timing::hedge_min`], more when this transfer's own requests are
//! slower: [`Timing::hedge_factor`] × their median) is *hedged*: the machine starts the same
//! work elsewhere (another shard of the slab for a download, the same shard on a spare host for
//! an upload) and ranks the slow host last for the rest of the transfer. So a hung host costs a
//! transfer at most one hedge deadline, not a timeout per slab.

/// The most ops one machine keeps in flight on one host. Hosts serve 16 streams per peer by
/// default (`max_streams_per_peer`), so one tenant running two transfers at once is never
/// turned away as busy by its own concurrency. Slabs place one shard per host, so the bound
/// binds only when many slabs are in flight on a small network, or when cleanup has many roots
/// on one host; the machine then picks another host or shard, or waits for a slot.
pub const MAX_OPS_PER_HOST: usize = 8;

mod cleanup;
pub mod download;
mod failures;
mod fetch;
mod health;
pub mod journal;
mod ops;
mod place;
pub mod repair;
pub mod sim;
pub mod upload;

use std::sync::Arc;
use std::time::Duration;

use libp2p_identity::PeerId;

use crate::encoder::EncodedSlab;
use crate::protocol::Status;
use crate::root::Root;

pub use failures::{CorruptShard, FailureClass, FetchFailures};

/// A host, named by its libp2p peer id (the id the manifest's host table stores).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostId(PeerId);

impl HostId {
    /// The host with this peer id.
    pub fn new(peer: PeerId) -> Self {
        Self(peer)
    }

    /// Its peer id.
    pub fn peer(&self) -> PeerId {
        self.0
    }

    /// Parses the peer id bytes a manifest stores; `None` if they are not a peer id.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        PeerId::from_bytes(bytes).ok().map(Self)
    }

    /// The peer id bytes (as stored in a manifest).
    pub fn to_bytes(&self) -> Vec<u8> {
        self.0.to_bytes()
    }
}

impl std::fmt::Display for HostId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::fmt::Debug for HostId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HostId({})", self.0)
    }
}

impl From<PeerId> for HostId {
    fn from(p: PeerId) -> Self {
        Self(p)
    }
}

/// One request a machine asked for, unique within that machine.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct OpId(pub u64);

impl std::fmt::Display for OpId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "op{}", self.0)
    }
}

/// Shards that live elsewhere than the manifest says (after a Guard's repair): (slab, shard) →
/// (the shard's root, its holder now). Machines apply a move only where the root matches the
/// manifest's, so the manifest stays the authority on *what* a shard is.
pub type Moves = std::collections::BTreeMap<(u64, usize), (Root, HostId)>;

/// The bytes of a PUT, shared with the machine (cloning is cheap).
#[derive(Clone)]
pub enum Payload {
    /// Shard `k` of an encoded slab.
    Shard(Arc<EncodedSlab>, usize),
    /// A whole blob (the manifest, a rebuilt shard).
    Bytes(Arc<Vec<u8>>),
}

impl Payload {
    /// The bytes to send.
    pub fn bytes(&self) -> &[u8] {
        match self {
            Self::Shard(slab, k) => slab.shard(*k),
            Self::Bytes(b) => b,
        }
    }
}

impl std::fmt::Debug for Payload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Payload({} bytes)", self.bytes().len())
    }
}

/// What a machine wants done on one host (the shard protocol's ops, plus a dial).
#[derive(Clone, Debug)]
pub enum Request {
    /// Open (or check) a connection.
    Connect,
    /// Store `payload` under `root` (the host checks the hash).
    Put {
        /// Root of the payload.
        root: Root,
        /// The bytes.
        payload: Payload,
    },
    /// Fetch the blob `root`; answers longer than `max_len` are a protocol failure.
    Get {
        /// Root.
        root: Root,
        /// Longest acceptable answer.
        max_len: u32,
    },
    /// Keep these holds (at most `protocol::MAX_CLAIM_ROOTS`).
    Claim {
        /// Roots.
        roots: Vec<Root>,
    },
    /// Drop this hold.
    Release {
        /// Root.
        root: Root,
    },
    /// Whether the host still has blob `root`, and its size (a resumed upload checks the
    /// shards its journal says are placed).
    Stat {
        /// Root.
        root: Root,
    },
}

/// Why an op was started (for logs and for the property tests).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Why {
    /// The first attempt.
    First,
    /// The same work on the same host after a transient failure.
    Retry,
    /// The work moved to another host after a failure.
    Move,
    /// The same work started elsewhere because an op passed its hedge deadline.
    Hedge,
    /// Claims and releases after the data moved.
    Cleanup,
}

/// What a machine asks its driver to do.
#[derive(Clone, Debug)]
pub enum Action {
    /// Start `request` on `host`; report its end with `handle_event(op, ..)`.
    Start {
        /// The op.
        op: OpId,
        /// The host.
        host: HostId,
        /// What to do.
        request: Request,
        /// Why.
        why: Why,
    },
    /// Stop `op` (its result is no longer wanted) and drop what it holds.
    Cancel {
        /// The op.
        op: OpId,
    },
}

/// How an op ended.
#[derive(Debug)]
pub enum Outcome {
    /// Done (connect, put, claim, release).
    Done,
    /// The blob a GET returned (unverified: the machine checks it).
    Bytes(Vec<u8>),
    /// The size a STAT returned.
    Size(u64),
    /// Failed.
    Failed(Failure),
}

/// Why one op failed: the driver's classification of what the transport or the host said.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Failure {
    /// No connection or stream; the connection broke.
    Unreachable,
    /// No answer before the machine's deadline (set by the machine, or by a driver's own
    /// transport timeout).
    Timeout,
    /// The host's quota is full.
    Full,
    /// The host has too many requests in flight.
    Busy,
    /// The host says the bytes do not hash to the root (nothing stored).
    RootMismatch,
    /// The answer's bytes do not hash to the root, or the answer was malformed or oversized.
    Corrupt,
    /// The host does not hold the blob.
    NotFound,
    /// The host refuses this requester (no hold, too many holders, no funded offer).
    Forbidden,
    /// Any other refusal (bad request, internal error).
    Refused,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Unreachable => "unreachable",
            Self::Timeout => "no answer in time",
            Self::Full => "its quota is full",
            Self::Busy => "busy",
            Self::RootMismatch => "the bytes did not match their root",
            Self::Corrupt => "a corrupt answer",
            Self::NotFound => "it does not hold the blob",
            Self::Forbidden => "forbidden",
            Self::Refused => "refused",
        })
    }
}

impl Failure {
    /// The failure a refusing status means (`None` for `Ok`).
    pub fn from_status(status: Status) -> Option<Self> {
        Some(match status {
            Status::Ok => return None,
            Status::NotFound => Self::NotFound,
            Status::RootMismatch => Self::RootMismatch,
            Status::TooLarge | Status::BadRequest | Status::Internal => Self::Refused,
            Status::QuotaExceeded => Self::Full,
            Status::Busy => Self::Busy,
            Status::Forbidden | Status::Unfunded => Self::Forbidden,
        })
    }

    /// Whether the host answered (and so stored nothing for this request), as opposed to a
    /// broken or silent connection after which a put may or may not have landed.
    pub fn is_answer(&self) -> bool {
        !matches!(self, Self::Unreachable | Self::Timeout | Self::Corrupt)
    }

    /// The coarse class reported to users.
    pub fn class(&self) -> FailureClass {
        match self {
            Self::Corrupt => FailureClass::Corrupt,
            Self::Unreachable | Self::Timeout => FailureClass::Unreachable,
            Self::NotFound => FailureClass::Missing,
            _ => FailureClass::Refused,
        }
    }
}

/// Deadlines every machine uses; the same defaults for every tenant.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// Longest a [`Request::Connect`] may take.
    pub connect: Duration,
    /// Longest any other op may take, its dial included.
    pub request: Duration,
    /// The least time an op runs before it is hedged.
    pub hedge_min: Duration,
    /// The hedge deadline is at least this many times the median duration of this transfer's
    /// finished ops of the same kind.
    pub hedge_factor: u32,
    /// Longest time spent releasing what an unfinished upload placed.
    pub release_budget: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(10),
            request: Duration::from_secs(60),
            hedge_min: Duration::from_millis(1500),
            hedge_factor: 4,
            release_budget: Duration::from_secs(15),
        }
    }
}

/// The calls every machine answers, in the order described in the module docs.
pub trait Machine {
    /// The next thing to do, if any.
    fn poll_action(&mut self) -> Option<Action>;
    /// When [`Machine::handle_timeout`] must be called next, if ever.
    fn poll_timeout(&self) -> Option<Duration>;
    /// An op ended.
    fn handle_event(&mut self, op: OpId, outcome: Outcome, now: Duration);
    /// The time of [`Machine::poll_timeout`] was reached (calling it early is harmless).
    fn handle_timeout(&mut self, now: Duration);
    /// Whether the machine is done (successfully or not); no action follows.
    fn is_finished(&self) -> bool;
}

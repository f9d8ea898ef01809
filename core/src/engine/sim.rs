//! A simulated network for the transfer machines: seeded, virtual-clock, no threads, no I/O.
//!
//! Model: quinn's test `Pair`. [`SimNet`] holds N simulated hosts, each with a store, a base
//! latency and bandwidth drawn from the seed, and a [`Fault`]; [`SimNet::run`] drives any
//! [`Machine`] to its end, jumping the clock to the next op completion or machine timeout. A
//! run is a pure function of its seed and faults, so a failing seed replays exactly.
//!
//! It also checks what a driver cannot: ops in flight never exceed the machine's bound
//! ([`SimStats::max_in_flight`]) nor [`super::MAX_OPS_PER_HOST`] on one host
//! ([`SimStats::max_per_host`]), and every hedge started while some op had run at least the
//! hedge deadline ([`SimStats::early_hedges`] counts violations).
//!
//! Non-goals: congestion between hosts (each host has its own link), connection state.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use super::{Action, Failure, HostId, Machine, OpId, Outcome, Request, Why};
use crate::root::Root;

/// `n` distinct, deterministic host ids (ed25519 keys from fixed seeds).
pub fn host_ids(n: usize) -> Vec<HostId> {
    static CACHE: OnceLock<Mutex<Vec<HostId>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Mutex::default);
    let mut ids = cache.lock().unwrap_or_else(|p| p.into_inner());
    while ids.len() < n {
        let mut seed = [0u8; 32];
        seed[..8].copy_from_slice(&(ids.len() as u64 + 1).to_le_bytes());
        // 32 bytes are always a valid ed25519 secret.
        let Ok(key) = libp2p_identity::Keypair::ed25519_from_bytes(seed) else {
            break;
        };
        ids.push(HostId::new(key.public().to_peer_id()));
    }
    ids[..n.min(ids.len())].to_vec()
}

/// A small deterministic generator (SplitMix64).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// Seeded.
    pub fn new(seed: u64) -> Self {
        Self(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// How a simulated host misbehaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Answers everything correctly.
    Honest,
    /// Refuses connections: every op fails `Unreachable` after its latency.
    Dead,
    /// Accepts and never answers (a frozen machine).
    Hung,
    /// Honest until then; ops running at that time never answer, later ones are unreachable.
    DiesAt(Duration),
    /// Honest but this many times slower (latency and bandwidth).
    Slow(u32),
    /// Stores correctly, returns bytes with one bit flipped.
    Corrupt,
    /// Refuses every put: quota exceeded.
    Full,
    /// Refuses this percentage of requests: busy.
    Busy(u8),
    /// Down (unreachable) every other period.
    Flapping(Duration),
    /// Answers puts OK without storing anything.
    Lying,
}

/// One simulated host.
#[derive(Debug)]
pub struct SimHost {
    /// Id.
    pub id: HostId,
    /// Fault.
    pub fault: Fault,
    /// Stored blobs.
    pub blobs: BTreeMap<Root, Vec<u8>>,
    /// Roots claimed.
    pub claimed: BTreeSet<Root>,
    latency: Duration,
    /// Bytes per millisecond.
    bandwidth: u64,
    phase: Duration,
}

/// What a run observed.
#[derive(Debug, Default, Clone)]
pub struct SimStats {
    /// Ops started.
    pub started: usize,
    /// Ops started as hedges.
    pub hedges: usize,
    /// Hedges started while no op had run for the hedge deadline (must stay 0).
    pub early_hedges: usize,
    /// Most ops in flight at once (cancelled ops excluded).
    pub max_in_flight: usize,
    /// Most ops in flight at once on any one host (must stay ≤ `MAX_OPS_PER_HOST`).
    pub max_per_host: usize,
    /// Cancels.
    pub cancels: usize,
    /// Requests sent, by (host, root) for GETs: lets tests check a corrupt shard was not used.
    pub gets: usize,
    /// PUTs sent.
    pub puts: usize,
    /// STATs sent.
    pub stats: usize,
    /// Virtual time at the end.
    pub elapsed: Duration,
}

/// Why a run did not end normally.
#[derive(Debug, PartialEq, Eq)]
pub enum SimError {
    /// Nothing in flight, no timeout, yet the machine is not finished.
    Stalled {
        /// Virtual time.
        at: Duration,
    },
    /// The virtual time limit passed.
    TimeLimit,
}

struct Running {
    host: usize,
    started: Duration,
    request: Request,
    why: Why,
}

/// The simulated network.
pub struct SimNet {
    /// The hosts.
    pub hosts: Vec<SimHost>,
    index: BTreeMap<HostId, usize>,
    rng: Rng,
    /// Virtual now.
    pub now: Duration,
    queue: BTreeMap<(Duration, u64), OpId>,
    running: BTreeMap<OpId, Running>,
    seq: u64,
    /// The hedge deadline the machine under test uses (for [`SimStats::early_hedges`]).
    pub hedge_min: Duration,
    /// Longest virtual time a run may take.
    pub time_limit: Duration,
    /// What the last runs observed (accumulates).
    pub stats: SimStats,
    /// Print every start, cancel and completion to stderr (for replaying a failing seed).
    pub trace: bool,
}

impl SimNet {
    /// Hosts with `faults[i]` each, latencies 1–20 ms and 20–200 MB/s drawn from `seed`.
    pub fn new(seed: u64, faults: &[Fault]) -> Self {
        let mut rng = Rng::new(seed);
        let ids = host_ids(faults.len());
        let hosts: Vec<SimHost> = ids
            .iter()
            .zip(faults)
            .map(|(&id, &fault)| SimHost {
                id,
                fault,
                blobs: BTreeMap::new(),
                claimed: BTreeSet::new(),
                latency: Duration::from_micros(1000 + rng.below(19_000)),
                bandwidth: 20_000 + rng.below(180_000),
                phase: Duration::from_millis(rng.below(5000)),
            })
            .collect();
        let index = hosts.iter().enumerate().map(|(i, h)| (h.id, i)).collect();
        Self {
            hosts,
            index,
            rng,
            now: Duration::ZERO,
            queue: BTreeMap::new(),
            running: BTreeMap::new(),
            seq: 0,
            hedge_min: super::Timing::default().hedge_min,
            time_limit: Duration::from_secs(3600),
            stats: SimStats::default(),
            trace: false,
        }
    }

    /// Every host id, in order.
    pub fn ids(&self) -> Vec<HostId> {
        self.hosts.iter().map(|h| h.id).collect()
    }

    /// The host with this id.
    pub fn host(&self, id: HostId) -> Option<&SimHost> {
        self.index.get(&id).map(|&i| &self.hosts[i])
    }

    /// Mutable host access (to change a fault between runs).
    pub fn host_mut(&mut self, id: HostId) -> Option<&mut SimHost> {
        let i = *self.index.get(&id)?;
        Some(&mut self.hosts[i])
    }

    fn up(&self, h: &SimHost, at: Duration) -> bool {
        match h.fault {
            Fault::Dead => false,
            Fault::DiesAt(t) => at < t,
            Fault::Flapping(p) => {
                ((at + h.phase).as_millis() / p.as_millis().max(1)).is_multiple_of(2)
            }
            _ => true,
        }
    }

    fn start(&mut self, op: OpId, host: HostId, request: Request, why: Why) {
        self.stats.started += 1;
        if why == Why::Hedge {
            self.stats.hedges += 1;
            // Some running op must have passed its hedge deadline: the floor, or a quarter of
            // it for an op that was itself a hedge or a move.
            let due = self.running.values().any(|r| {
                let floor = match r.why {
                    Why::Hedge | Why::Move => self.hedge_min / 4,
                    _ => self.hedge_min,
                };
                self.now.saturating_sub(r.started) >= floor
            });
            if !due {
                self.stats.early_hedges += 1;
            }
        }
        let Some(&i) = self.index.get(&host) else {
            // A host the network does not have: fails at once.
            self.schedule(op, Duration::ZERO);
            self.running.insert(
                op,
                Running {
                    host: usize::MAX,
                    started: self.now,
                    request,
                    why,
                },
            );
            return;
        };
        let h = &self.hosts[i];
        let bytes = match &request {
            Request::Put { payload, .. } => payload.bytes().len() as u64,
            Request::Get { root, .. } => h.blobs.get(root).map_or(0, |b| b.len() as u64),
            _ => 64,
        };
        match request {
            Request::Get { .. } => self.stats.gets += 1,
            Request::Put { .. } => self.stats.puts += 1,
            Request::Stat { .. } => self.stats.stats += 1,
            _ => {}
        }
        let slow = match h.fault {
            Fault::Slow(f) => u64::from(f.max(1)),
            _ => 1,
        };
        let jitter = self.rng.below(h.latency.as_micros() as u64 / 2 + 1);
        let took = Duration::from_micros(
            (h.latency.as_micros() as u64 + jitter) * slow
                + bytes * 1000 * slow / h.bandwidth.max(1),
        );
        let answers = match h.fault {
            Fault::Hung => false,
            Fault::DiesAt(t) => self.now >= t || self.now + took < t,
            _ => true,
        };
        self.running.insert(
            op,
            Running {
                host: i,
                started: self.now,
                request,
                why,
            },
        );
        if answers {
            self.schedule(op, took);
        }
        let live = self.running.len();
        self.stats.max_in_flight = self.stats.max_in_flight.max(live);
        let here = self.running.values().filter(|r| r.host == i).count();
        self.stats.max_per_host = self.stats.max_per_host.max(here);
    }

    fn schedule(&mut self, op: OpId, after: Duration) {
        self.seq += 1;
        self.queue.insert((self.now + after, self.seq), op);
    }

    /// The outcome of `r` completing now, applying its effect to the host.
    fn complete(&mut self, r: Running) -> Outcome {
        if r.host == usize::MAX {
            return Outcome::Failed(Failure::Unreachable);
        }
        let now = self.now;
        let up = self.up(&self.hosts[r.host], now) && self.up(&self.hosts[r.host], r.started);
        let busy = match self.hosts[r.host].fault {
            Fault::Busy(p) => self.rng.chance(u64::from(p)),
            _ => false,
        };
        let h = &mut self.hosts[r.host];
        if !up {
            return Outcome::Failed(Failure::Unreachable);
        }
        if busy && !matches!(r.request, Request::Connect) {
            return Outcome::Failed(Failure::Busy);
        }
        match r.request {
            Request::Connect => Outcome::Done,
            Request::Put { root, payload } => {
                if h.fault == Fault::Full {
                    return Outcome::Failed(Failure::Full);
                }
                if Root::of(payload.bytes()) != root {
                    return Outcome::Failed(Failure::RootMismatch);
                }
                if h.fault != Fault::Lying {
                    h.blobs.insert(root, payload.bytes().to_vec());
                }
                Outcome::Done
            }
            Request::Get { root, max_len } => match h.blobs.get(&root) {
                None => Outcome::Failed(Failure::NotFound),
                Some(b) if b.len() > max_len as usize => Outcome::Failed(Failure::Corrupt),
                Some(b) => {
                    let mut b = b.clone();
                    if h.fault == Fault::Corrupt {
                        if let Some(x) = b.first_mut() {
                            *x ^= 1;
                        } else {
                            b.push(0);
                        }
                    }
                    Outcome::Bytes(b)
                }
            },
            Request::Claim { roots } => {
                if roots.iter().all(|r| h.blobs.contains_key(r)) {
                    h.claimed.extend(roots);
                    Outcome::Done
                } else {
                    Outcome::Failed(Failure::NotFound)
                }
            }
            Request::Stat { root } => match h.blobs.get(&root) {
                Some(b) => Outcome::Size(b.len() as u64),
                None => Outcome::Failed(Failure::NotFound),
            },
            Request::Release { root } => {
                h.claimed.remove(&root);
                match h.blobs.remove(&root) {
                    Some(_) => Outcome::Done,
                    None => Outcome::Failed(Failure::NotFound),
                }
            }
        }
    }

    fn apply(&mut self, a: Action) {
        if self.trace {
            match &a {
                Action::Start {
                    op,
                    host,
                    request,
                    why,
                } => {
                    let kind = match request {
                        Request::Connect => "connect".to_string(),
                        Request::Put { root, .. } => format!("put {}", &root.to_hex()[..8]),
                        Request::Get { root, .. } => format!("get {}", &root.to_hex()[..8]),
                        Request::Claim { roots } => format!("claim {}", roots.len()),
                        Request::Release { root } => format!("release {}", &root.to_hex()[..8]),
                        Request::Stat { root } => format!("stat {}", &root.to_hex()[..8]),
                    };
                    let fault = self.host(*host).map(|h| h.fault);
                    eprintln!("{:>10.3?} start {op} {why:?} {kind} on {fault:?}", self.now);
                }
                Action::Cancel { op } => eprintln!("{:>10.3?} cancel {op}", self.now),
            }
        }
        match a {
            Action::Start {
                op,
                host,
                request,
                why,
            } => self.start(op, host, request, why),
            Action::Cancel { op } => {
                self.stats.cancels += 1;
                self.running.remove(&op);
            }
        }
    }

    /// Runs `m` to its end. `io` is called between steps (feed input, take output) and
    /// returns whether it did something.
    pub fn run<M: Machine>(
        &mut self,
        m: &mut M,
        io: impl FnMut(&mut M, Duration) -> bool,
    ) -> Result<(), SimError> {
        self.run_until(m, io, |_| false).map(|_| ())
    }

    /// Like [`SimNet::run`], but stops as soon as `stop` says so (checked between steps), as a
    /// killed process stops: ops in flight never complete. Returns whether it stopped early.
    pub fn run_until<M: Machine>(
        &mut self,
        m: &mut M,
        mut io: impl FnMut(&mut M, Duration) -> bool,
        mut stop: impl FnMut(&M) -> bool,
    ) -> Result<bool, SimError> {
        // Ops of an earlier run on this network never complete into this machine.
        self.queue.clear();
        self.running.clear();
        let start = self.now;
        loop {
            loop {
                while let Some(a) = m.poll_action() {
                    self.apply(a);
                }
                if !io(m, self.now) {
                    break;
                }
            }
            while let Some(a) = m.poll_action() {
                self.apply(a);
            }
            if m.is_finished() {
                self.stats.elapsed = self.now - start;
                return Ok(false);
            }
            if stop(m) {
                self.stats.elapsed = self.now - start;
                self.queue.clear();
                self.running.clear();
                return Ok(true);
            }
            let event = self.queue.first_key_value().map(|(&(t, _), _)| t);
            let timeout = m.poll_timeout();
            let next = match (event, timeout) {
                (Some(e), Some(t)) => e.min(t),
                (Some(e), None) => e,
                (None, Some(t)) => t,
                (None, None) => return Err(SimError::Stalled { at: self.now }),
            };
            self.now = self.now.max(next);
            if self.now - start > self.time_limit {
                return Err(SimError::TimeLimit);
            }
            if event == Some(next) {
                let Some(((_, _), op)) = self.queue.pop_first() else {
                    continue;
                };
                let Some(r) = self.running.remove(&op) else {
                    continue; // cancelled
                };
                let outcome = self.complete(r);
                if self.trace {
                    let o = match &outcome {
                        Outcome::Done => "done".to_string(),
                        Outcome::Bytes(b) => format!("{} bytes", b.len()),
                        Outcome::Size(n) => format!("size {n}"),
                        Outcome::Failed(f) => format!("{f:?}"),
                    };
                    eprintln!("{:>10.3?} end {op} {o}", self.now);
                }
                m.handle_event(op, outcome, self.now);
            } else {
                if self.trace {
                    eprintln!("{:>10.3?} timeout", self.now);
                }
                m.handle_timeout(self.now);
            }
        }
    }
}

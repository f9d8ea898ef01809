//! The ops a machine has in flight: ids, deadlines, hedge points, and the action queue.
//!
//! Deterministic by construction (ordered maps only), so a simulated run replays exactly from
//! its seed.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use super::{Action, HostId, OpId, Request, Timing, Why, MAX_OPS_PER_HOST};

/// Kinds of op, each with its own latency history for the adaptive hedge deadline.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Kind {
    Connect = 0,
    Put = 1,
    Get = 2,
    Cleanup = 3,
}

impl Kind {
    fn of(r: &Request) -> Self {
        match r {
            Request::Connect => Self::Connect,
            Request::Put { .. } => Self::Put,
            Request::Get { .. } => Self::Get,
            Request::Claim { .. } | Request::Release { .. } | Request::Stat { .. } => Self::Cleanup,
        }
    }
}

/// Durations kept per kind for the median.
const SAMPLES: usize = 64;

/// One op in flight.
pub(crate) struct Live<T> {
    pub host: HostId,
    pub started: Duration,
    pub deadline: Duration,
    pub hedge_at: Option<Duration>,
    pub tag: T,
}

/// The op table of one machine.
pub(crate) struct Ops<T> {
    next: u64,
    live: BTreeMap<OpId, Live<T>>,
    kinds: BTreeMap<OpId, Kind>,
    actions: VecDeque<Action>,
    timing: Timing,
    samples: [VecDeque<Duration>; 4],
    high_water: usize,
    /// Ops in flight per host (hosts with none are removed).
    per_host: BTreeMap<HostId, usize>,
}

impl<T> Ops<T> {
    pub fn new(timing: Timing) -> Self {
        Self {
            next: 0,
            live: BTreeMap::new(),
            kinds: BTreeMap::new(),
            actions: VecDeque::new(),
            timing,
            samples: Default::default(),
            high_water: 0,
            per_host: BTreeMap::new(),
        }
    }

    /// The hedge deadline of `kind` now: at least `hedge_min`, at least `hedge_factor` × the
    /// median of recent successes.
    pub fn hedge_after(&self, kind: Kind) -> Duration {
        self.timing.hedge_min.max(self.median_scaled(kind))
    }

    /// `hedge_factor` × the median duration of recent successes of `kind`.
    fn median_scaled(&self, kind: Kind) -> Duration {
        self.median_times(kind, self.timing.hedge_factor)
    }

    /// `factor` × the median duration of recent successes of `kind`.
    fn median_times(&self, kind: Kind, factor: u32) -> Duration {
        let s = &self.samples[kind as usize];
        if s.is_empty() {
            return Duration::ZERO;
        }
        let mut v: Vec<Duration> = s.iter().copied().collect();
        v.sort_unstable();
        v[v.len() / 2].saturating_mul(factor)
    }

    /// Starts `request` on `host`. `hedge`: whether the op gets a hedge point.
    pub fn start(
        &mut self,
        host: HostId,
        request: Request,
        why: Why,
        tag: T,
        now: Duration,
        hedge: bool,
    ) -> OpId {
        let op = OpId(self.next);
        self.next += 1;
        let kind = Kind::of(&request);
        let limit = if kind == Kind::Connect {
            self.timing.connect
        } else {
            self.timing.request
        };
        // A hedge or move already follows a slow or failed op: its own hedge comes sooner, after
        // a quarter of the floor or twice the median, whichever is longer (the median itself
        // may be slow: every host of a loaded network answers late).
        let hedge_at = hedge.then(|| {
            let after = match why {
                Why::Hedge | Why::Move => {
                    (self.timing.hedge_min / 4).max(self.median_times(kind, 2))
                }
                _ => self.hedge_after(kind),
            };
            now + after
        });
        self.live.insert(
            op,
            Live {
                host,
                started: now,
                deadline: now + limit,
                hedge_at,
                tag,
            },
        );
        self.kinds.insert(op, kind);
        self.high_water = self.high_water.max(self.live.len());
        *self.per_host.entry(host).or_default() += 1;
        self.actions.push_back(Action::Start {
            op,
            host,
            request,
            why,
        });
        op
    }

    /// Removes a finished op; a success adds its duration to the history.
    pub fn finish(&mut self, op: OpId, now: Duration, ok: bool) -> Option<Live<T>> {
        let live = self.live.remove(&op)?;
        self.unload(live.host);
        let kind = self.kinds.remove(&op).unwrap_or(Kind::Cleanup);
        if ok {
            let s = &mut self.samples[kind as usize];
            if s.len() == SAMPLES {
                s.pop_front();
            }
            s.push_back(now.saturating_sub(live.started));
        }
        Some(live)
    }

    /// Cancels an op (the driver drops it).
    pub fn cancel(&mut self, op: OpId) -> Option<Live<T>> {
        let live = self.live.remove(&op)?;
        self.unload(live.host);
        self.kinds.remove(&op);
        self.actions.push_back(Action::Cancel { op });
        Some(live)
    }

    fn unload(&mut self, host: HostId) {
        if let Some(n) = self.per_host.get_mut(&host) {
            *n -= 1;
            if *n == 0 {
                self.per_host.remove(&host);
            }
        }
    }

    /// Whether `host` can take another op ([`MAX_OPS_PER_HOST`]). Every machine asks before it
    /// picks a host, and picks another (or waits for a slot) when the answer is no.
    pub fn room(&self, host: HostId) -> bool {
        self.per_host.get(&host).copied().unwrap_or(0) < MAX_OPS_PER_HOST
    }

    /// Cancels every op.
    pub fn cancel_all(&mut self) {
        let ops: Vec<OpId> = self.live.keys().copied().collect();
        for op in ops {
            self.cancel(op);
        }
    }

    /// The earliest deadline or hedge point.
    pub fn next_timeout(&self) -> Option<Duration> {
        self.live
            .values()
            .map(|l| l.hedge_at.map_or(l.deadline, |h| h.min(l.deadline)))
            .min()
    }

    /// Cancels and returns the ops whose hard deadline passed.
    pub fn take_expired(&mut self, now: Duration) -> Vec<(OpId, Live<T>)> {
        let due: Vec<OpId> = self
            .live
            .iter()
            .filter(|(_, l)| l.deadline <= now)
            .map(|(&op, _)| op)
            .collect();
        due.into_iter()
            .filter_map(|op| self.cancel(op).map(|l| (op, l)))
            .collect()
    }

    /// The ops whose hedge point passed (each is returned once).
    pub fn take_due_hedges(&mut self, now: Duration) -> Vec<OpId> {
        let mut due = Vec::new();
        for (&op, l) in self.live.iter_mut() {
            if l.hedge_at.is_some_and(|h| h <= now) {
                l.hedge_at = None;
                due.push(op);
            }
        }
        due
    }

    /// Moves the hedge point of `op` to `at` (a hedge that was not yet wanted).
    pub fn rearm(&mut self, op: OpId, at: Duration) {
        if let Some(l) = self.live.get_mut(&op) {
            l.hedge_at = Some(at);
        }
    }

    /// The hedge deadline of `op`'s kind now.
    pub fn hedge_after_op(&self, op: OpId) -> Duration {
        self.hedge_after(self.kinds.get(&op).copied().unwrap_or(Kind::Cleanup))
    }

    pub fn get(&self, op: OpId) -> Option<&Live<T>> {
        self.live.get(&op)
    }

    pub fn poll(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    pub fn len(&self) -> usize {
        self.live.len()
    }

    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    /// Most ops ever in flight at once.
    pub fn high_water(&self) -> usize {
        self.high_water
    }
}

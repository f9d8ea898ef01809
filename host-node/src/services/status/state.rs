//! The Status service as a pure state machine: every decision the service makes, with no I/O,
//! no clock and no tokio, so it is tested with virtual time ([`super::server`] is the actor that
//! drives it, [`super::store`] the database it writes to).
//!
//! Goals: one place decides what to answer a report (the per-peer rules of [`Ingest`]: replay,
//! freshness, rate limit, peer cap, new-peer budget, plausibility; then whether the write queue
//! has room), what to persist (an [`Op::Put`] per accepted report, an [`Op::Forget`] per peer
//! silent for `forget_after`), when to commit (group commit: a batch is ready when
//! `batch_max` ops wait, when the oldest waiting op has waited `commit_linger`, when a flush
//! waits, or when the service closes; one commit at a time), when to sweep for silent peers
//! (every `sweep_interval`) and when a flush is answered (once every op queued before it is
//! committed). Everything it holds is bounded: `write_queue` accepted reports wait at most (a
//! report beyond is refused, [`Rejection::Overloaded`], 503 with `Retry-After: 1`), forgets at
//! most one per known peer, flushes at most one per waiting caller.
//!
//! Non-goals: verification of signatures (expensive and stateless: [`super::ingest::verify`]
//! runs on the connection's task, outside the actor, so it uses every core); reading history
//! (redb readers run concurrently with the writer, [`super::store::StatusDb::history`]).
//!
//! Order of calls (the actor, [`super::server`]):
//! 1. feed inputs as they come: [`StatusState::handle_report`] (answers the report at once),
//!    [`StatusState::handle_flush`], [`StatusState::handle_committed`] when a commit ends;
//! 2. then drain outputs: [`StatusState::poll_flushed`] (answer those flushes),
//!    [`StatusState::poll_batch`] (commit it; at most one is out at a time);
//! 3. sleep until [`StatusState::poll_timeout`] (or the next input), then call
//!    [`StatusState::handle_timeout`];
//! 4. to stop: [`StatusState::close`] (reports are refused from then on), keep committing the
//!    batches it hands out, stop at [`StatusState::is_finished`].
//!
//! Time is unix ms of the service's clock (`now_ms`), the same clock reports are checked
//! against.

use std::collections::VecDeque;
use std::net::IpAddr;

use super::ingest::{Checked, Ingest, Rejection};
use super::store::{Op, Write};

/// When the state commits and sweeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    /// Accepted reports waiting for the database at most; more are refused.
    pub write_queue: usize,
    /// Ops in one commit at most.
    pub batch_max: usize,
    /// How long the oldest waiting op may wait for others before a commit (group commit).
    pub linger_ms: u64,
    /// How often silent peers are looked for.
    pub sweep_interval_ms: u64,
}

/// A report the state accepted: what the `202` answer says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admitted {
    /// The reporting peer (base58).
    pub peer_id: String,
    /// Reports accepted from it so far.
    pub reports: u64,
}

/// Someone waiting for a flush (chosen by the caller; the actor maps it to a reply channel).
pub type FlushId = u64;

/// Ops to commit in one transaction, in order.
#[derive(Debug)]
pub struct Batch {
    /// The ops.
    pub ops: Vec<Op>,
}

/// The Status service's state (see the module docs).
pub struct StatusState {
    ingest: Ingest,
    schedule: Schedule,
    /// Ops not handed out yet, with the time each was queued (oldest first).
    outbox: VecDeque<(Op, u64)>,
    /// `Op::Put`s in `outbox`.
    queued_puts: usize,
    /// Sequence number of the next op queued (ops are numbered from 0).
    next_seq: u64,
    /// Ops numbered below this are committed (or their commit failed and was logged).
    committed_seq: u64,
    /// The end (exclusive sequence number) of the batch being committed.
    in_flight: Option<u64>,
    /// Flushes waiting, with the sequence number they wait for.
    flushes: Vec<(FlushId, u64)>,
    /// Flushes answered, not yet polled.
    flushed: VecDeque<FlushId>,
    next_sweep_ms: u64,
    closing: bool,
}

impl StatusState {
    /// The state around `ingest` (fresh, or loaded from the database) at `now_ms`.
    pub fn new(ingest: Ingest, schedule: Schedule, now_ms: u64) -> Self {
        let schedule = Schedule {
            write_queue: schedule.write_queue.max(1),
            batch_max: schedule.batch_max.max(1),
            sweep_interval_ms: schedule.sweep_interval_ms.max(1),
            ..schedule
        };
        Self {
            ingest,
            outbox: VecDeque::new(),
            queued_puts: 0,
            next_seq: 0,
            committed_seq: 0,
            in_flight: None,
            flushes: Vec::new(),
            flushed: VecDeque::new(),
            next_sweep_ms: now_ms.saturating_add(schedule.sweep_interval_ms),
            closing: false,
            schedule,
        }
    }

    /// The per-peer state, for reads (totals, hosts, one host).
    pub fn ingest(&self) -> &Ingest {
        &self.ingest
    }

    /// Accepted reports waiting for the database (not yet handed out in a batch).
    pub fn queued_reports(&self) -> usize {
        self.queued_puts
    }

    /// Ops waiting for the database, reports and forgets.
    pub fn queued(&self) -> usize {
        self.outbox.len()
    }

    /// Whether a batch is out being committed.
    pub fn committing(&self) -> bool {
        self.in_flight.is_some()
    }

    /// Admits a verified report from `source` at `now_ms` ([`Ingest::admit`]'s rules) and
    /// queues it for the database; the answer is final (`202` if `Ok`).
    pub fn handle_report(
        &mut self,
        report: Checked,
        source: IpAddr,
        now_ms: u64,
    ) -> Result<Admitted, Rejection> {
        if self.closing {
            return Err(Rejection::ShuttingDown);
        }
        if self.queued_puts >= self.schedule.write_queue {
            return Err(Rejection::Overloaded {
                queued: self.queued_puts,
            });
        }
        let peer_id = report.body.peer_id.clone();
        let a = self.ingest.admit(report, source, now_ms)?;
        let admitted = Admitted {
            peer_id: peer_id.clone(),
            reports: a.record.reports,
        };
        self.queue(
            Op::Put(Write {
                peer_id,
                record: a.record,
                sample: a.sample,
            }),
            now_ms,
        );
        Ok(admitted)
    }

    fn queue(&mut self, op: Op, now_ms: u64) {
        if matches!(op, Op::Put(_)) {
            self.queued_puts += 1;
        }
        self.outbox.push_back((op, now_ms));
        self.next_seq += 1;
    }

    /// Asks to be told (by [`StatusState::poll_flushed`]) once every op queued so far is
    /// committed; the waiting ops are committed without lingering.
    pub fn handle_flush(&mut self, id: FlushId) {
        if self.committed_seq >= self.next_seq {
            self.flushed.push_back(id);
        } else {
            self.flushes.push((id, self.next_seq));
        }
    }

    /// The batch handed out by [`StatusState::poll_batch`] was committed (or failed: the
    /// actor logs it; the ops are not retried, the next reports replace them).
    pub fn handle_committed(&mut self) {
        let Some(end) = self.in_flight.take() else {
            return;
        };
        self.committed_seq = end;
        let done = self.committed_seq;
        let flushed = &mut self.flushed;
        self.flushes.retain(|&(id, upto)| {
            let ready = upto <= done;
            if ready {
                flushed.push_back(id);
            }
            !ready
        });
    }

    /// A flush whose ops are all committed.
    pub fn poll_flushed(&mut self) -> Option<FlushId> {
        self.flushed.pop_front()
    }

    /// The next batch to commit at `now_ms`, if one is due and none is out.
    pub fn poll_batch(&mut self, now_ms: u64) -> Option<Batch> {
        if self.in_flight.is_some() || self.outbox.is_empty() {
            return None;
        }
        let oldest = self.outbox.front().map_or(now_ms, |(_, t)| *t);
        let due = self.closing
            || !self.flushes.is_empty()
            || self.outbox.len() >= self.schedule.batch_max
            || now_ms >= oldest.saturating_add(self.schedule.linger_ms)
            // The clock went back: do not wait for it to catch up.
            || now_ms < oldest;
        if !due {
            return None;
        }
        let n = self.outbox.len().min(self.schedule.batch_max);
        let ops: Vec<Op> = self.outbox.drain(..n).map(|(op, _)| op).collect();
        self.queued_puts -= ops.iter().filter(|op| matches!(op, Op::Put(_))).count();
        let start = self.next_seq - (self.outbox.len() + n) as u64;
        self.in_flight = Some(start + n as u64);
        Some(Batch { ops })
    }

    /// When [`StatusState::handle_timeout`] (or [`StatusState::poll_batch`]) has something to
    /// do, if nothing else happens first.
    pub fn poll_timeout(&self) -> Option<u64> {
        let commit = match (&self.in_flight, self.outbox.front()) {
            (None, Some((_, t))) => Some(t.saturating_add(self.schedule.linger_ms)),
            _ => None,
        };
        let sweep = (!self.closing).then_some(self.next_sweep_ms);
        match (commit, sweep) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Time passed: forgets peers silent for `forget_after` when a sweep is due (queuing their
    /// deletion); returns how many were forgotten.
    pub fn handle_timeout(&mut self, now_ms: u64) -> usize {
        if self.closing || now_ms < self.next_sweep_ms {
            return 0;
        }
        self.next_sweep_ms = now_ms.saturating_add(self.schedule.sweep_interval_ms);
        let gone = self.ingest.expire(now_ms);
        let n = gone.len();
        for (peer_id, last_seen_ms) in gone {
            self.queue(
                Op::Forget {
                    peer_id,
                    last_seen_ms,
                },
                now_ms,
            );
        }
        n
    }

    /// Stops taking reports and sweeping; what waits is handed out at once.
    pub fn close(&mut self) {
        self.closing = true;
    }

    /// Closed, and everything queued is committed.
    pub fn is_finished(&self) -> bool {
        self.closing && self.outbox.is_empty() && self.in_flight.is_none()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use btfs_core::signed::{Signed, StatusReport};
    use libp2p::identity::{ed25519, PublicKey};

    use super::*;
    use crate::services::status::admission::Admission;
    use crate::services::status::ingest::{verify, KeyCache, Limits};

    const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
    const T0: u64 = 1_000_000;

    fn key(seed: u8) -> ed25519::Keypair {
        ed25519::Keypair::from(ed25519::SecretKey::try_from_bytes([seed; 32]).unwrap())
    }

    fn everyone() -> Admission {
        Admission::AllowList(Arc::new(
            (0..=40u8)
                .map(|s| PublicKey::from(key(s).public()).to_peer_id())
                .collect(),
        ))
    }

    fn peer(seed: u8) -> String {
        PublicKey::from(key(seed).public()).to_peer_id().to_base58()
    }

    /// A verified report of peer `seed` issued at `issued_at_ms`.
    fn report(seed: u8, issued_at_ms: u64) -> Checked {
        let k = key(seed);
        let r = StatusReport {
            peer_id: peer(seed),
            issued_at_ms,
            uptime_secs: issued_at_ms.saturating_sub(T0) / 1000 + 10,
            capacity_bytes: 100,
            used_bytes: 40,
            shards_held: 3,
            requests_served: 7,
            requests_failed: 1,
            version: "0.1.0".into(),
        };
        let wire = serde_json::to_vec(&Signed::sign(&r, &k).unwrap()).unwrap();
        verify(&wire, &KeyCache::new(4), &everyone()).unwrap()
    }

    fn schedule() -> Schedule {
        Schedule {
            write_queue: 4,
            batch_max: 3,
            linger_ms: 50,
            sweep_interval_ms: 1_000,
        }
    }

    fn state(limits: Limits, schedule: Schedule) -> StatusState {
        StatusState::new(Ingest::new(limits), schedule, T0)
    }

    fn puts(b: &Batch) -> Vec<String> {
        b.ops
            .iter()
            .map(|op| match op {
                Op::Put(w) => format!("put {}", w.record.reports),
                Op::Forget { last_seen_ms, .. } => format!("forget {last_seen_ms}"),
            })
            .collect()
    }

    #[test]
    fn rate_limit_refills_after_min_interval_of_virtual_time() {
        let limits = Limits {
            min_interval_ms: 10_000,
            ..Limits::for_tests()
        };
        let mut s = state(limits, schedule());
        let a = s.handle_report(report(1, T0), LOCAL, T0).unwrap();
        assert_eq!(
            a,
            Admitted {
                peer_id: peer(1),
                reports: 1
            }
        );
        // 9.999 virtual seconds later: still limited, told how long to wait.
        let e = s
            .handle_report(report(1, T0 + 9_999), LOCAL, T0 + 9_999)
            .unwrap_err();
        assert_eq!(e, Rejection::RateLimited { retry_after_ms: 1 });
        assert_eq!(e.retry_after_ms(), Some(1));
        // A refused report changed nothing: at 10 s the next one is accepted as the second.
        let a = s
            .handle_report(report(1, T0 + 10_000), LOCAL, T0 + 10_000)
            .unwrap();
        assert_eq!(a.reports, 2);
        // Only the accepted reports are queued for the database.
        assert_eq!(s.queued_reports(), 2);
    }

    #[test]
    fn replays_are_refused_and_queue_nothing() {
        let mut s = state(Limits::for_tests(), schedule());
        s.handle_report(report(1, T0), LOCAL, T0).unwrap();
        let e = s
            .handle_report(report(1, T0), LOCAL, T0 + 5_000)
            .unwrap_err();
        assert_eq!(e.reason(), "stale");
        assert_eq!(s.queued_reports(), 1);
    }

    #[test]
    fn a_batch_is_due_after_linger_or_when_full() {
        let mut s = state(Limits::for_tests(), schedule());
        assert_eq!(
            s.poll_timeout(),
            Some(T0 + 1_000),
            "only the sweep is scheduled"
        );
        s.handle_report(report(1, T0), LOCAL, T0).unwrap();
        // One report waits for company until the linger ends.
        assert!(s.poll_batch(T0 + 49).is_none());
        assert_eq!(s.poll_timeout(), Some(T0 + 50));
        let b = s.poll_batch(T0 + 50).expect("due after the linger");
        assert_eq!(puts(&b), ["put 1"]);
        // One commit at a time: while it is out, nothing else is handed out or scheduled.
        s.handle_report(report(2, T0 + 60), LOCAL, T0 + 60).unwrap();
        s.handle_report(report(3, T0 + 60), LOCAL, T0 + 60).unwrap();
        s.handle_report(report(4, T0 + 60), LOCAL, T0 + 60).unwrap();
        assert!(s.committing());
        assert!(s.poll_batch(T0 + 1_000_000).is_none());
        assert_eq!(s.poll_timeout(), Some(T0 + 1_000), "the sweep only");
        s.handle_committed();
        // Three waiting = batch_max: due at once, without lingering.
        let b = s.poll_batch(T0 + 61).expect("a full batch is due at once");
        assert_eq!(b.ops.len(), 3);
        s.handle_committed();
        assert!(s.poll_batch(T0 + 10_000).is_none(), "nothing left");
        // A clock that jumped back does not hold a waiting report until it catches up.
        s.handle_report(report(5, T0 + 100), LOCAL, T0 + 100)
            .unwrap();
        assert!(s.poll_batch(T0 + 120).is_none());
        assert!(s.poll_batch(T0 + 99).is_some());
    }

    #[test]
    fn the_write_queue_is_bounded_and_refuses_with_a_clear_error() {
        let mut s = state(Limits::for_tests(), schedule());
        for seed in 1..=4 {
            s.handle_report(report(seed, T0), LOCAL, T0).unwrap();
        }
        // The database never answered: the fifth report is refused, nothing is queued for it,
        // and the peer is not remembered (so its retry is admitted as its first report).
        let e = s.handle_report(report(5, T0), LOCAL, T0).unwrap_err();
        assert_eq!(e, Rejection::Overloaded { queued: 4 });
        assert_eq!((e.status().as_u16(), e.reason()), (503, "overloaded"));
        assert_eq!(e.retry_after_ms(), Some(1_000));
        assert!(e.to_string().contains("again in 1 s"), "{e}");
        assert!(s.ingest().get(&peer(5), T0).is_none());
        // Handing a batch to the database makes room for as many reports as it took.
        let b = s.poll_batch(T0).expect("the queue is over batch_max");
        assert_eq!(b.ops.len(), 3);
        assert_eq!(s.queued_reports(), 1);
        assert_eq!(
            s.handle_report(report(5, T0 + 1), LOCAL, T0 + 1)
                .unwrap()
                .reports,
            1
        );
    }

    #[test]
    fn a_flush_is_answered_once_everything_before_it_is_committed() {
        let mut s = state(Limits::for_tests(), schedule());
        // Nothing waits: answered at once.
        s.handle_flush(7);
        assert_eq!(s.poll_flushed(), Some(7));
        s.handle_report(report(1, T0), LOCAL, T0).unwrap();
        s.handle_flush(8);
        assert_eq!(s.poll_flushed(), None);
        // A waiting flush skips the linger.
        let b = s.poll_batch(T0).expect("a flush makes the batch due");
        assert_eq!(b.ops.len(), 1);
        // A report after the flush is not waited for.
        s.handle_report(report(2, T0 + 1), LOCAL, T0 + 1).unwrap();
        s.handle_flush(9);
        assert_eq!(s.poll_flushed(), None);
        s.handle_committed();
        assert_eq!(s.poll_flushed(), Some(8));
        assert_eq!(s.poll_flushed(), None, "9 waits for report 2");
        let b = s.poll_batch(T0 + 1).expect("flush 9 makes it due");
        assert_eq!(b.ops.len(), 1);
        s.handle_committed();
        assert_eq!(s.poll_flushed(), Some(9));
    }

    #[test]
    fn silent_peers_expire_on_the_sweep_and_are_deleted() {
        let limits = Limits {
            forget_after_ms: 5_000,
            ..Limits::for_tests()
        };
        let mut s = state(limits, schedule());
        s.handle_report(report(1, T0), LOCAL, T0).unwrap();
        s.handle_report(report(2, T0 + 3_000), LOCAL, T0 + 3_000)
            .unwrap();
        while s.poll_batch(u64::MAX).is_some() {
            s.handle_committed();
        }
        // Sweeps run every second of virtual time; peer 1 is silent for 5 s at T0 + 5,001.
        assert_eq!(s.handle_timeout(T0 + 999), 0, "no sweep due yet");
        assert_eq!(
            s.handle_timeout(T0 + 5_000),
            0,
            "5 s silent is not yet too long"
        );
        assert_eq!(
            s.handle_timeout(T0 + 5_500),
            0,
            "the next sweep is at T0 + 6 s"
        );
        assert_eq!(s.poll_timeout(), Some(T0 + 6_000));
        assert_eq!(s.handle_timeout(T0 + 6_000), 1);
        assert!(s.ingest().get(&peer(1), T0 + 6_000).is_none());
        assert!(s.ingest().get(&peer(2), T0 + 6_000).is_some());
        // Its deletion is queued like a report (names the last-seen time the database checks).
        let b = s.poll_batch(T0 + 6_050).expect("the forget is committed");
        assert_eq!(puts(&b), [format!("forget {T0}")]);
        s.handle_committed();
        // Peer 2 goes at T0 + 9,000 (the sweep at T0 + 8 s is too early).
        assert_eq!(s.handle_timeout(T0 + 7_000), 0);
        assert_eq!(s.handle_timeout(T0 + 8_000), 0);
        assert_eq!(s.handle_timeout(T0 + 9_000), 1);
        assert!(s.ingest().is_empty());
    }

    #[test]
    fn closing_refuses_reports_and_hands_out_everything_at_once() {
        let mut s = state(Limits::for_tests(), schedule());
        for seed in 1..=4 {
            s.handle_report(report(seed, T0), LOCAL, T0).unwrap();
        }
        let first = s.poll_batch(T0).unwrap();
        s.close();
        assert!(!s.is_finished(), "a commit is out");
        let e = s.handle_report(report(5, T0), LOCAL, T0).unwrap_err();
        assert_eq!(e, Rejection::ShuttingDown);
        assert_eq!(s.handle_timeout(u64::MAX), 0, "no sweeps while closing");
        assert!(s.poll_batch(T0).is_none(), "one commit at a time");
        s.handle_committed();
        // The last report goes without lingering.
        let rest = s.poll_batch(T0).unwrap();
        assert_eq!((first.ops.len(), rest.ops.len()), (3, 1));
        assert!(!s.is_finished());
        s.handle_committed();
        assert!(s.is_finished());
        assert_eq!(s.poll_timeout(), None);
    }
}

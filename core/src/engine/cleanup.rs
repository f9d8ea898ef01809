//! Claims and releases after the data moved: shared by [`super::upload`] and
//! [`super::repair`].
//!
//! Claims: one CLAIM per host (at most `MAX_CLAIM_ROOTS` roots each) of every root the object
//! keeps there; a refusal, or `attempts` failures, is final (a busy answer is retried, up to
//! 4 × `attempts` tries: the host is loaded, not refusing). Releases: best effort, every
//! failure ignored, whatever is not done by the deadline is cancelled (hosts sweep unclaimed
//! blobs after their grace period).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use super::ops::Ops;
use super::{Failure, HostId, Request, Why};
use crate::protocol::MAX_CLAIM_ROOTS;
use crate::root::Root;

/// A claim that could not be made.
pub(crate) struct ClaimFailed {
    pub host: HostId,
    pub roots: usize,
    pub failure: Failure,
}

#[derive(Default)]
pub(crate) struct Cleanup {
    claims: Vec<(HostId, Vec<Root>, u8)>,
    next_claim: usize,
    claims_done: usize,
    releases: VecDeque<(Root, HostId)>,
    deadline: Duration,
    pub released: usize,
}

impl Cleanup {
    /// Claims for every (root, host) in `kept`.
    pub fn claims(kept: &BTreeSet<(Root, HostId)>) -> Self {
        let mut by_host: BTreeMap<HostId, Vec<Root>> = BTreeMap::new();
        for &(root, host) in kept {
            by_host.entry(host).or_default().push(root);
        }
        let mut claims = Vec::new();
        for (host, roots) in by_host {
            for chunk in roots.chunks(MAX_CLAIM_ROOTS as usize) {
                claims.push((host, chunk.to_vec(), 0));
            }
        }
        Self {
            claims,
            ..Self::default()
        }
    }

    fn start_claim<T>(&mut self, i: usize, why: Why, ops: &mut Ops<T>, now: Duration, tag: T) {
        let (host, roots, tries) = &mut self.claims[i];
        *tries += 1;
        let request = Request::Claim {
            roots: roots.clone(),
        };
        ops.start(*host, request, why, tag, now, false);
    }

    /// Starts claims while fewer than `parallel` ops are in flight, in order, skipping (for
    /// now) claims whose host has no free slot.
    pub fn schedule_claims<T>(
        &mut self,
        ops: &mut Ops<T>,
        now: Duration,
        parallel: usize,
        tag: impl Fn(usize) -> T,
    ) {
        for i in self.next_claim..self.claims.len() {
            if ops.len() >= parallel.max(1) {
                break;
            }
            let (host, _, tries) = &self.claims[i];
            if *tries == 0 && ops.room(*host) {
                self.start_claim(i, Why::Cleanup, ops, now, tag(i));
            }
        }
        while self.claims.get(self.next_claim).is_some_and(|c| c.2 > 0) {
            self.next_claim += 1;
        }
    }

    /// Whether every claim succeeded.
    pub fn claimed(&self) -> bool {
        self.claims_done == self.claims.len()
    }

    /// Claim `i` ended (`None`: success). A transient failure is retried while tries remain.
    pub fn claim_ended<T>(
        &mut self,
        i: usize,
        failure: Option<Failure>,
        attempts: u8,
        ops: &mut Ops<T>,
        now: Duration,
        tag: T,
    ) -> Result<(), ClaimFailed> {
        let Some(f) = failure else {
            self.claims_done += 1;
            return Ok(());
        };
        let Some((host, roots, tries)) = self.claims.get(i) else {
            return Ok(());
        };
        // A busy host is loaded right now, not refusing the claim: it gets more tries.
        let (retryable, limit) = match f {
            Failure::Busy => (true, attempts.saturating_mul(4)),
            f => (!f.is_answer(), attempts),
        };
        if !retryable || *tries >= limit {
            return Err(ClaimFailed {
                host: *host,
                roots: roots.len(),
                failure: f,
            });
        }
        self.start_claim(i, Why::Retry, ops, now, tag);
        Ok(())
    }

    /// Starts releasing, until `deadline`, every put attempt that may have stored bytes and is
    /// not kept by the object.
    pub fn release_unkept(
        &mut self,
        attempts: &BTreeSet<(Root, HostId)>,
        kept: &BTreeSet<(Root, HostId)>,
        deadline: Duration,
    ) {
        self.releases = attempts.difference(kept).copied().collect();
        self.deadline = deadline;
    }

    /// The release deadline.
    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    /// Starts releases; returns whether releasing is over (all ended, or the deadline passed,
    /// in which case every op was cancelled).
    pub fn schedule_releases<T>(
        &mut self,
        ops: &mut Ops<T>,
        now: Duration,
        parallel: usize,
        tag: impl Fn() -> T,
    ) -> bool {
        if now >= self.deadline {
            ops.cancel_all();
            self.releases.clear();
        }
        while ops.len() < parallel.max(1) {
            // The first release whose host has a free slot (the others wait their turn).
            let Some((root, host)) = self
                .releases
                .iter()
                .position(|&(_, h)| ops.room(h))
                .and_then(|at| self.releases.remove(at))
            else {
                break;
            };
            ops.start(
                host,
                Request::Release { root },
                Why::Cleanup,
                tag(),
                now,
                false,
            );
        }
        ops.is_empty() && self.releases.is_empty()
    }
}

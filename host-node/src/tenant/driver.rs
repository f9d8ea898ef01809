//! The tokio driver of core's transfer machines (`btfs_core::engine`): it performs the
//! machine's [`Action`]s on this process's libp2p node and feeds back what happened. It decides
//! nothing — which hosts, how many requests, retries, hedges and deadlines are the machine's.
//!
//! ```text
//! Action::Start{Connect}      → Net::connect(peer, preferred addresses)
//! Action::Start{Put/Get/...}  → one /btfs/shard/1 stream (shard_client), dialing if needed
//! Action::Cancel{op}          → the op's future is aborted (its stream dropped)
//! ```
//!
//! Transport errors map to [`Failure`]s: no stream or a broken one → `Unreachable`, the
//! transport's own deadline → `Timeout`, a malformed or oversized answer → `Corrupt`, a refusal
//! → its status ([`Failure::from_status`]). A host without a known address fails at once.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use btfs_core::engine::{Action, Failure, Machine, OpId, Outcome, Request};
use futures::future::{AbortHandle, Abortable, BoxFuture};
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use libp2p::{Multiaddr, PeerId};

use crate::net::Net;
use crate::tenant::shard_client::{self, ShardError};

/// What one op's future returns.
type Done = (OpId, Outcome);

/// Runs the ops a machine started.
pub struct Runner {
    net: Net,
    addrs: HashMap<PeerId, Vec<Multiaddr>>,
    epoch: Instant,
    ops: FuturesUnordered<BoxFuture<'static, Option<Done>>>,
    aborts: HashMap<OpId, AbortHandle>,
}

impl Runner {
    /// A runner on `net` that dials hosts at `addrs` (already in preference order).
    pub fn new(net: Net, addrs: HashMap<PeerId, Vec<Multiaddr>>) -> Self {
        Self {
            net,
            addrs,
            epoch: Instant::now(),
            ops: FuturesUnordered::new(),
            aborts: HashMap::new(),
        }
    }

    /// The machine's clock: time since this runner started.
    pub fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    /// The instant of a machine time.
    pub fn instant(&self, at: Duration) -> tokio::time::Instant {
        tokio::time::Instant::from_std(self.epoch + at)
    }

    /// Performs every action the machine has queued.
    pub fn apply_all<M: Machine>(&mut self, m: &mut M) {
        while let Some(a) = m.poll_action() {
            self.apply(a);
        }
    }

    /// Performs one action.
    pub fn apply(&mut self, action: Action) {
        match action {
            Action::Cancel { op } => {
                if let Some(h) = self.aborts.remove(&op) {
                    h.abort();
                }
            }
            Action::Start {
                op, host, request, ..
            } => {
                let peer = host.peer();
                let addrs = self.addrs.get(&peer).cloned();
                let net = self.net.clone();
                let work = async move {
                    let Some(addrs) = addrs else {
                        // The machine named a host this tenant has no address for.
                        return (op, Outcome::Failed(Failure::Unreachable));
                    };
                    (op, perform(net, peer, addrs, request).await)
                };
                let (handle, reg) = AbortHandle::new_pair();
                self.aborts.insert(op, handle);
                self.ops
                    .push(Abortable::new(work, reg).map(Result::ok).boxed());
            }
        }
    }

    /// Whether no op is running.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// The next op to end (aborted ops are skipped); pending forever when none runs, so it
    /// can sit in a `select!` beside other work.
    pub async fn next(&mut self) -> Done {
        loop {
            match self.ops.next().await {
                Some(Some((op, outcome))) => {
                    self.aborts.remove(&op);
                    return (op, outcome);
                }
                Some(None) => continue,
                None => std::future::pending::<()>().await,
            }
        }
    }

    /// Feeds the machine its next event or timeout, whichever comes first.
    pub async fn step<M: Machine>(&mut self, m: &mut M) {
        let timeout = m.poll_timeout().map(|t| self.instant(t));
        tokio::select! {
            (op, outcome) = self.next() => {
                let now = self.now();
                // Handling a shard may decode a slab: CPU work off the async threads' hot path.
                tokio::task::block_in_place(|| m.handle_event(op, outcome, now));
            }
            () = sleep_until(timeout) => {
                let now = self.now();
                m.handle_timeout(now);
            }
        }
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        for (_, h) in self.aborts.drain() {
            h.abort();
        }
    }
}

/// Sleeps until `at`; forever if `None`.
pub async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn perform(net: Net, peer: PeerId, addrs: Vec<Multiaddr>, request: Request) -> Outcome {
    if let Err(e) = net.connect(peer, addrs).await {
        tracing::debug!(%peer, error = %e, "dial failed");
        return Outcome::Failed(Failure::Unreachable);
    }
    let mut control = net.control();
    let is_put = matches!(request, Request::Put { .. });
    let result = match request {
        Request::Connect => Ok(Outcome::Done),
        Request::Put { root, payload } => {
            shard_client::put(&mut control, peer, root, payload.bytes())
                .await
                .map(|()| Outcome::Done)
        }
        Request::Get { root, max_len } => shard_client::get(&mut control, peer, root, max_len)
            .await
            .map(Outcome::Bytes),
        Request::Claim { roots } => shard_client::claim(&mut control, peer, &roots)
            .await
            .map(|()| Outcome::Done),
        Request::Release { root } => shard_client::release(&mut control, peer, root)
            .await
            .map(|()| Outcome::Done),
        Request::Stat { root } => shard_client::stat(&mut control, peer, root)
            .await
            .map(Outcome::Size),
    };
    result.unwrap_or_else(|e| {
        if is_put {
            // What a host said is worth showing: the engine moves the shard, and if no host
            // is left the user sees why (e.g. "host is full").
            tracing::warn!(%peer, error = %e, "put failed");
        } else {
            tracing::debug!(%peer, error = %e, "shard request failed");
        }
        Outcome::Failed(failure_of(&e))
    })
}

/// The engine's name for a failed shard request.
pub fn failure_of(e: &ShardError) -> Failure {
    match e {
        ShardError::Open { .. } | ShardError::Io { .. } => Failure::Unreachable,
        ShardError::Timeout { .. } => Failure::Timeout,
        ShardError::Frame { .. } => Failure::Corrupt,
        ShardError::Refused { status, .. } => {
            Failure::from_status(*status).unwrap_or(Failure::Refused)
        }
    }
}

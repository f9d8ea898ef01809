//! The browser's driver of core's transfer machines (`btfs_core::engine`): it turns their
//! [`Action`]s into libp2p dials and shard requests on the page's event loop and feeds what
//! happened back, with the time. It decides nothing: which host, how many in flight, retries,
//! hedges and deadlines are the machine's (module docs of `btfs_core::engine`, whose order of
//! calls [`Driver::step`] follows).
//!
//! - `Start`: an op future (dial the host: its WebSocket addresses first, WebRTC-direct only if
//!   those fail; then the shard request) runs in a [`FuturesUnordered`], wrapped in
//!   [`Abortable`].
//! - `Cancel`: the op's [`AbortHandle`] drops its future (and with it its stream).
//! - Timeouts: one [`Delay`] until [`Machine::poll_timeout`], then [`Machine::handle_timeout`].
//! - Time: milliseconds since the driver started ([`js_sys::Date::now`]), as a [`Duration`];
//!   the machines ignore a clock that steps back.
//!
//! Errors are classified once, here: a refusal by its status ([`Failure::from_status`]), a dial
//! or a broken stream as [`Failure::Unreachable`], a malformed or oversized answer as
//! [`Failure::Corrupt`] (`swarm::RequestError::failure`).

use std::collections::HashMap;
use std::future::Future;
use std::rc::Rc;
use std::task::Poll;
use std::time::Duration;

use btfs_core::engine::{Action, Failure, HostId, Machine, OpId, Outcome, Request};
use futures::future::{AbortHandle, Abortable, LocalBoxFuture};
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use futures_timer::Delay;

use crate::error::ClientError;
use crate::transfer::Client;

/// How an op ended, and the dial error if the host could not be reached.
type Ended = (OpId, Outcome, Option<String>);

/// Runs the ops one machine asks for.
pub struct Driver {
    client: Rc<Client>,
    running: FuturesUnordered<Abortable<LocalBoxFuture<'static, Ended>>>,
    aborts: HashMap<OpId, AbortHandle>,
    epoch_ms: f64,
    first_dial_error: Option<String>,
}

enum Woke<T> {
    Op(Ended),
    Timeout,
    Input(T),
}

impl Driver {
    /// A driver whose clock starts now.
    pub fn new(client: Rc<Client>) -> Self {
        Self {
            client,
            running: FuturesUnordered::new(),
            aborts: HashMap::new(),
            epoch_ms: js_sys::Date::now(),
            first_dial_error: None,
        }
    }

    /// Time since the driver started.
    pub fn now(&self) -> Duration {
        Duration::from_secs_f64((js_sys::Date::now() - self.epoch_ms).max(0.0) / 1000.0)
    }

    /// The first dial failure seen, for error messages ("none of the hosts answered: …").
    pub fn first_dial_error(&self) -> String {
        self.first_dial_error
            .clone()
            .unwrap_or_else(|| "no host answered in time".into())
    }

    /// Performs every action `m` has queued.
    pub fn perform(&mut self, m: &mut impl Machine) {
        while let Some(action) = m.poll_action() {
            match action {
                Action::Start {
                    op, host, request, ..
                } => {
                    let (handle, registration) = AbortHandle::new_pair();
                    let work = run_op(self.client.clone(), host, request);
                    let work = async move {
                        let (outcome, dial_error) = work.await;
                        (op, outcome, dial_error)
                    }
                    .boxed_local();
                    self.running.push(Abortable::new(work, registration));
                    self.aborts.insert(op, handle);
                }
                Action::Cancel { op } => {
                    if let Some(handle) = self.aborts.remove(&op) {
                        handle.abort();
                    }
                }
            }
        }
    }

    /// One turn of the engine's loop: performs `m`'s actions, then (unless `m` finished) waits
    /// for the first of an op ending, `m`'s timeout, or `input`, and feeds an op's end or the
    /// timeout to `m`. Returns `input`'s output if it came first; the caller hands it to `m`.
    pub async fn step<M: Machine, F: Future + Unpin>(
        &mut self,
        m: &mut M,
        mut input: Option<&mut F>,
    ) -> Result<Option<F::Output>, ClientError> {
        self.perform(m);
        if m.is_finished() {
            return Ok(None);
        }
        let deadline = m.poll_timeout();
        if self.running.is_empty() && deadline.is_none() && input.is_none() {
            return Err(ClientError::Stalled);
        }
        let mut delay = deadline.map(|at| Delay::new(at.saturating_sub(self.now())));
        let running = &mut self.running;
        let woke = futures::future::poll_fn(|cx| {
            // Aborted ops end as `Err(Aborted)`: skip them.
            while let Poll::Ready(Some(ended)) = running.poll_next_unpin(cx) {
                if let Ok(ended) = ended {
                    return Poll::Ready(Woke::Op(ended));
                }
            }
            if let Some(d) = delay.as_mut() {
                if d.poll_unpin(cx).is_ready() {
                    return Poll::Ready(Woke::Timeout);
                }
            }
            if let Some(f) = input.as_mut() {
                if let Poll::Ready(v) = f.poll_unpin(cx) {
                    return Poll::Ready(Woke::Input(v));
                }
            }
            Poll::Pending
        })
        .await;
        let now = self.now();
        match woke {
            Woke::Op((op, outcome, dial_error)) => {
                self.aborts.remove(&op);
                if self.first_dial_error.is_none() {
                    self.first_dial_error = dial_error;
                }
                m.handle_event(op, outcome, now);
                Ok(None)
            }
            Woke::Timeout => {
                m.handle_timeout(now);
                Ok(None)
            }
            Woke::Input(v) => Ok(Some(v)),
        }
    }
}

/// One op: connect to `host`, then the request.
async fn run_op(client: Rc<Client>, host: HostId, request: Request) -> (Outcome, Option<String>) {
    let peer = host.peer();
    if let Err(e) = client.connect(peer).await {
        return (Outcome::Failed(Failure::Unreachable), Some(e.to_string()));
    }
    let node = &client.node;
    let done = |r: Result<(), crate::swarm::RequestError>| match r {
        Ok(()) => Outcome::Done,
        Err(e) => Outcome::Failed(e.failure()),
    };
    let outcome = match request {
        Request::Connect => Outcome::Done,
        Request::Put { root, payload } => done(node.put(peer, root, payload.bytes()).await),
        Request::Get { root, max_len } => match node.get(peer, root, max_len).await {
            Ok(bytes) => Outcome::Bytes(bytes),
            Err(e) => Outcome::Failed(e.failure()),
        },
        Request::Claim { roots } => done(node.claim(peer, &roots).await),
        Request::Release { root } => done(node.release(peer, root).await),
        Request::Stat { root } => match node.stat(peer, root).await {
            Ok(size) => Outcome::Size(size),
            Err(e) => Outcome::Failed(e.failure()),
        },
    };
    (outcome, None)
}

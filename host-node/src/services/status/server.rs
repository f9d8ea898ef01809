//! The running Status service: the actor that drives [`StatusState`] (the pure state machine of
//! [`super::state`]), and the HTTP routes of [`super`] over [`crate::net::http`].
//!
//! One tokio task owns the state; everything reaches it through one bounded channel of
//! [`Command`]s (a report to admit, a flush to wait for, a read of the peer table), and it does
//! what the state asks: commits the batches [`StatusState::poll_batch`] hands out to
//! [`StatusDb`] on a blocking thread (one at a time, while it keeps admitting reports), sleeps
//! until [`StatusState::poll_timeout`] and answers flushes. It decides nothing itself. A report
//! is verified on the connection's task before it is sent to the actor (signature checks are
//! the expensive part and need no state), so verification uses every core.
//!
//! On stop the HTTP server drains first, then the actor takes what is left in its channel,
//! closes the state and commits everything queued, so `shutdown().await` loses nothing.
//! Opening skips (and deletes) stored records that are expired or whose peer admission no
//! longer knows, then compacts the file if it deleted any.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hyper::{Method, StatusCode};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::ingest::{self, Checked, Ingest, Loaded, Rejection};
use super::metrics::{self, IngestCounters};
use super::state::{Admitted, FlushId, StatusState};
use super::store::{DbError, Op, StatusDb};
use super::{
    now_ms, page, HostDetail, HostStatus, NetworkStatus, ReportAccepted, Sample, StatusError,
    StatusOptions, Totals, HOSTS_PATH, REPORTS_PATH, STATUS_PATH,
};
use crate::net::http::{self, Request, Response};

/// Commands waiting for the actor at most (senders wait beyond: the HTTP server's connection
/// limit bounds how many do).
const INBOX: usize = 1_024;

type ReadFn = Box<dyn FnOnce(&Ingest, u64) + Send>;

/// What the actor is asked to do.
enum Command {
    /// Admit a verified report (answered at once).
    Report {
        checked: Box<Checked>,
        source: IpAddr,
        reply: oneshot::Sender<Result<Admitted, Rejection>>,
    },
    /// Answer once everything accepted so far is committed.
    Flush(oneshot::Sender<()>),
    /// Run a read on the peer table at the actor's `now`.
    Read(ReadFn),
}

struct Shared {
    commands: mpsc::Sender<Command>,
    db: Arc<StatusDb>,
    opts: StatusOptions,
    counters: IngestCounters,
    keys: ingest::KeyCache,
}

impl Shared {
    async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Runs `f` on the peer table; `None` if the service stopped.
    async fn read<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Ingest, u64) -> R + Send + 'static,
    ) -> Option<R> {
        let (tx, rx) = oneshot::channel();
        let read: ReadFn = Box::new(move |ingest, now| {
            let _ = tx.send(f(ingest, now));
        });
        self.commands.send(Command::Read(read)).await.ok()?;
        rx.await.ok()
    }

    async fn network(&self, offset: usize, limit: usize) -> Option<NetworkStatus> {
        self.read(move |ingest, now| {
            let totals = ingest.totals(now);
            NetworkStatus {
                generated_at_ms: now,
                hosts: ingest.hosts(offset, limit, now),
                offset: offset as u64,
                hosts_total: totals.hosts,
                totals,
            }
        })
        .await
    }
}

/// Read access to the service's state, cheap to clone (for in-process readers of the service
/// node). Reads are answered by the service's actor; once it stopped they find nothing.
#[derive(Clone)]
pub struct StatusReader {
    shared: Arc<Shared>,
}

impl StatusReader {
    /// One host's latest status (uptime, online, capacity...), if it ever reported.
    pub async fn get(&self, peer_id: &str) -> Option<HostStatus> {
        let peer_id = peer_id.to_string();
        self.shared
            .read(move |ingest, now| ingest.get(&peer_id, now))
            .await
            .flatten()
    }

    /// Every host's latest status, sorted by peer id.
    pub async fn latest(&self) -> Vec<HostStatus> {
        self.shared
            .read(|ingest, now| ingest.hosts(0, usize::MAX, now))
            .await
            .unwrap_or_default()
    }

    /// Network totals.
    pub async fn totals(&self) -> Totals {
        self.shared
            .read(|ingest, now| ingest.totals(now))
            .await
            .unwrap_or_default()
    }

    /// A page of hosts with the totals, as `GET /api/v1/status` answers (`None` once the
    /// service stopped).
    pub async fn network(&self, offset: usize, limit: usize) -> Option<NetworkStatus> {
        self.shared.network(offset, limit).await
    }

    /// Waits until every report accepted so far is committed to the database (history reads
    /// see committed reports only). Returns at once if the service is stopping.
    pub async fn flush(&self) {
        self.shared.flush().await;
    }

    /// A host's stored history, oldest first (reads the database; blocking but short).
    pub fn history(&self, peer_id: &str) -> Result<Vec<Sample>, StatusError> {
        Ok(self.shared.db.history(peer_id)?)
    }
}

/// A running Status service.
pub struct StatusHandle {
    /// Where the HTTP API listens.
    pub http_addr: SocketAddr,
    reader: StatusReader,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl StatusHandle {
    /// Base URL, e.g. `http://127.0.0.1:8090` (what reporters and `btfs status` are given).
    pub fn url(&self) -> String {
        format!("http://{}", self.http_addr)
    }

    /// A cloneable read handle.
    pub fn reader(&self) -> StatusReader {
        self.reader.clone()
    }

    /// One host's latest status.
    pub async fn get(&self, peer_id: &str) -> Option<HostStatus> {
        self.reader.get(peer_id).await
    }

    /// Every host's latest status, sorted by peer id.
    pub async fn latest(&self) -> Vec<HostStatus> {
        self.reader.latest().await
    }

    /// Waits until every report accepted so far is committed to the database.
    pub async fn flush(&self) {
        self.reader.flush().await;
    }

    /// Stops serving, commits every accepted report and waits.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        let _ = self.task.await;
    }

    /// Waits until the service stopped (after the token given to [`start`] fired).
    pub async fn join(self) {
        let _ = self.task.await;
    }
}

struct Ctx {
    shared: Arc<Shared>,
}

/// The actor before it runs: the state, the database it writes and its inbox.
struct Actor {
    state: StatusState,
    db: Arc<StatusDb>,
    inbox: mpsc::Receiver<Command>,
}

/// Opens `dir/status.redb` (creating it) and loads the stored reports: the shared handles
/// [`start`] serves with, and the actor that owns the state.
async fn open(dir: &Path, opts: &StatusOptions) -> Result<(Arc<Shared>, Actor), StatusError> {
    let limits = opts.limits();
    let (dir, history_len) = (dir.to_path_buf(), opts.history_len);
    let admission = opts.admission.clone();
    // Opening re-verifies every stored report: seconds for 100,000 peers, so off the runtime.
    let loaded = tokio::task::spawn_blocking(move || -> Result<_, StatusError> {
        let mut db = StatusDb::open(&dir, history_len)?;
        let records = db.load()?;
        let stored = records.len();
        let mut ingest = Ingest::new(limits);
        let (mut skipped, mut first_error) = (0usize, None);
        let mut forget = Vec::new();
        let now = now_ms();
        for (peer_id, r) in records {
            let last_seen_ms = r.last_seen_ms;
            match ingest.load(r, &admission, now) {
                Ok(Loaded::Kept) => {}
                Ok(Loaded::Expired | Loaded::Unknown) => forget.push(Op::Forget {
                    peer_id,
                    last_seen_ms,
                }),
                Err(e) => {
                    skipped += 1;
                    first_error.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_error {
            tracing::warn!(skipped, first = %e, "skipped stored status reports");
        }
        if !forget.is_empty() {
            let before = db.file_len();
            db.write(&forget)?;
            db.compact()?;
            tracing::info!(
                forgotten = forget.len(),
                before,
                after = db.file_len(),
                "forgot stored peers that are expired or unknown to the network"
            );
        }
        tracing::info!(peers = ingest.len(), stored, "status database loaded");
        Ok((db, ingest))
    })
    .await;
    let (db, ingest) = match loaded {
        Ok(r) => r?,
        Err(e) => return Err(StatusError::Task(e.to_string())),
    };
    let db = Arc::new(db);
    let (commands, inbox) = mpsc::channel(INBOX);
    let shared = Arc::new(Shared {
        commands,
        db: db.clone(),
        opts: opts.clone(),
        counters: IngestCounters::default(),
        keys: ingest::KeyCache::new(opts.max_peers),
    });
    let state = StatusState::new(ingest, opts.schedule(), now_ms());
    Ok((shared, Actor { state, db, inbox }))
}

/// Opens `dir/status.redb` (creating it), loads the stored reports and serves the HTTP API on
/// `listen` (port 0 picks a free port: read [`StatusHandle::http_addr`]) until `cancel` fires
/// or [`StatusHandle::shutdown`].
pub async fn start(
    dir: &Path,
    listen: SocketAddr,
    opts: StatusOptions,
    cancel: CancellationToken,
) -> Result<StatusHandle, StatusError> {
    let (shared, actor) = open(dir, &opts).await?;
    let cancel = cancel.child_token();
    let ctx = Arc::new(Ctx {
        shared: shared.clone(),
    });
    let server = http::serve(
        listen,
        opts.http.clone(),
        move |req| route(ctx.clone(), req),
        cancel.clone(),
    )
    .await?;
    let http_addr = server.addr;
    let actor_stop = CancellationToken::new();
    let actor = tokio::spawn(run(actor, actor_stop.clone()));
    let task = tokio::spawn(async move {
        server.join().await;
        actor_stop.cancel();
        let _ = actor.await;
        tracing::debug!("status service stopped");
    });
    tracing::info!(%http_addr, "status service listening");
    Ok(StatusHandle {
        http_addr,
        reader: StatusReader { shared },
        cancel,
        task,
    })
}

/// The commit out, if any: its size and the blocking task writing it.
type Commit = Option<(usize, JoinHandle<Result<(), DbError>>)>;

async fn commit_done(commit: &mut Commit) -> (usize, Result<Result<(), DbError>, String>) {
    match commit {
        Some((n, task)) => (*n, task.await.map_err(|e| e.to_string())),
        None => std::future::pending().await,
    }
}

/// The actor: feeds commands, commit results and timeouts to the state and carries out what
/// it asks (module docs). Ends when `stop` fired (or every sender is gone) and everything
/// queued is committed.
async fn run(actor: Actor, stop: CancellationToken) {
    let Actor {
        mut state,
        db,
        mut inbox,
    } = actor;
    let mut waiting: HashMap<FlushId, oneshot::Sender<()>> = HashMap::new();
    let mut next_flush: FlushId = 0;
    let mut commit: Commit = None;
    let (mut stopping, mut inbox_open) = (false, true);
    loop {
        let now = now_ms();
        if commit.is_none() {
            if let Some(batch) = state.poll_batch(now) {
                let db = db.clone();
                let n = batch.ops.len();
                commit = Some((n, tokio::task::spawn_blocking(move || db.write(&batch.ops))));
            }
        }
        while let Some(id) = state.poll_flushed() {
            if let Some(ack) = waiting.remove(&id) {
                let _ = ack.send(());
            }
        }
        if state.is_finished() {
            break;
        }
        let sleep = state
            .poll_timeout()
            .map(|at| Duration::from_millis(at.saturating_sub(now)));
        tokio::select! {
            cmd = inbox.recv(), if inbox_open => match cmd {
                Some(Command::Report { checked, source, reply }) => {
                    let _ = reply.send(state.handle_report(*checked, source, now_ms()));
                }
                Some(Command::Flush(ack)) => {
                    let id = next_flush;
                    next_flush += 1;
                    waiting.insert(id, ack);
                    state.handle_flush(id);
                }
                Some(Command::Read(read)) => read(state.ingest(), now_ms()),
                None => {
                    // Stopped and drained (or every handle is gone): commit what is left.
                    inbox_open = false;
                    state.close();
                }
            },
            () = stop.cancelled(), if !stopping => {
                // No new commands; the ones already sent are still taken.
                stopping = true;
                inbox.close();
            }
            (n, done) = commit_done(&mut commit) => {
                commit = None;
                match done {
                    Ok(Ok(())) => tracing::trace!(n, "status database committed"),
                    Ok(Err(e)) => tracing::error!(%e, n, "cannot save status reports"),
                    Err(e) => tracing::error!(%e, n, "status writer task failed"),
                }
                state.handle_committed();
            }
            () = tokio::time::sleep(sleep.unwrap_or_default()), if sleep.is_some() => {
                let gone = state.handle_timeout(now_ms());
                if gone > 0 {
                    tracing::debug!(n = gone, "forgetting silent peers");
                }
            }
        }
    }
    tracing::debug!("status actor stopped");
}

fn method_not_allowed(allow: &'static str) -> Response {
    Response::error(
        StatusCode::METHOD_NOT_ALLOWED,
        &format!("use {allow} on this path"),
    )
    .with_header("allow", allow.into())
}

async fn route(ctx: Arc<Ctx>, req: Request) -> Response {
    let get = req.method == Method::GET;
    let resp = dispatch(&ctx, &req).await;
    if get {
        // Read-only data: web pages on other origins (the devnet's dApp) may read it.
        resp.with_header("access-control-allow-origin", "*".into())
    } else {
        resp
    }
}

async fn dispatch(ctx: &Ctx, req: &Request) -> Response {
    let path = req.path.as_str();
    let get = req.method == Method::GET;
    match path {
        REPORTS_PATH if req.method == Method::POST => {
            post_report(ctx, &req.body, req.remote.ip()).await
        }
        REPORTS_PATH => method_not_allowed("POST"),
        STATUS_PATH | "/metrics" | "/" if !get => method_not_allowed("GET"),
        STATUS_PATH => {
            let max = ctx.shared.opts.list_limit;
            let offset = param(req, "offset").unwrap_or(0);
            let limit = param(req, "limit").unwrap_or(max).min(max);
            match ctx.shared.network(offset, limit).await {
                Some(status) => Response::json(StatusCode::OK, &status),
                None => stopping(),
            }
        }
        "/metrics" => {
            let s = &ctx.shared;
            let Some(status) = s.network(0, s.opts.metrics_host_limit).await else {
                return stopping();
            };
            let text = metrics::render_network(&status, &s.counters);
            Response::raw(StatusCode::OK, metrics::CONTENT_TYPE, text)
        }
        "/" => {
            let Some(status) = ctx.shared.network(0, page::MAX_ROWS).await else {
                return stopping();
            };
            Response::raw(
                StatusCode::OK,
                "text/html; charset=utf-8",
                page::render(&status),
            )
        }
        _ => match path.strip_prefix(HOSTS_PATH) {
            Some(_) if !get => method_not_allowed("GET"),
            Some(peer) => host_detail(ctx, peer).await,
            None => Response::error(
                StatusCode::NOT_FOUND,
                &format!(
                    "no such path {:?}; see {STATUS_PATH}, {REPORTS_PATH}, /metrics or /",
                    path.chars().take(100).collect::<String>()
                ),
            ),
        },
    }
}

/// The answer to a read that came after the actor stopped.
fn stopping() -> Response {
    Response::error(
        StatusCode::SERVICE_UNAVAILABLE,
        &Rejection::ShuttingDown.to_string(),
    )
    .with_header("retry-after", "1".into())
}

fn param(req: &Request, name: &str) -> Option<usize> {
    req.query_param(name)?.parse().ok()
}

async fn host_detail(ctx: &Ctx, peer: &str) -> Response {
    let not_found = || {
        Response::error(
            StatusCode::NOT_FOUND,
            "no report from this peer id; check it, or wait for the host's first report",
        )
    };
    let wanted = peer.to_string();
    let Some(found) = ctx
        .shared
        .read(move |ingest, now| ingest.get(&wanted, now))
        .await
    else {
        return stopping();
    };
    let Some(host) = found else {
        return not_found();
    };
    // So the history includes the latest report.
    ctx.shared.flush().await;
    let (db, peer) = (ctx.shared.db.clone(), peer.to_string());
    match tokio::task::spawn_blocking(move || db.history(&peer)).await {
        Ok(Ok(history)) => Response::json(StatusCode::OK, &HostDetail { host, history }),
        Ok(Err(e)) => Response::error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        Err(e) => Response::error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

fn reject(ctx: &Ctx, r: Rejection) -> Response {
    ctx.shared.counters.rejected(r.reason());
    tracing::debug!(reason = r.reason(), "status report refused: {r}");
    let resp = Response::error(r.status(), &r.to_string());
    match r.retry_after_ms() {
        Some(ms) => resp.with_header("retry-after", ms.div_ceil(1000).to_string()),
        None => resp,
    }
}

async fn post_report(ctx: &Ctx, body: &[u8], source: IpAddr) -> Response {
    let mut checked = match ingest::verify(body, &ctx.shared.keys, &ctx.shared.opts.admission) {
        Ok(c) => c,
        Err(r) => return reject(ctx, r),
    };
    let new_signer = checked.new_signer.take();
    let (reply, answer) = oneshot::channel();
    let cmd = Command::Report {
        checked: Box::new(checked),
        source,
        reply,
    };
    if ctx.shared.commands.send(cmd).await.is_err() {
        return reject(ctx, Rejection::ShuttingDown);
    }
    let admitted = match answer.await {
        Ok(Ok(a)) => a,
        Ok(Err(r)) => return reject(ctx, r),
        Err(_) => return reject(ctx, Rejection::ShuttingDown),
    };
    if let Some(s) = new_signer {
        ctx.shared.keys.put(s);
    }
    ctx.shared.counters.accepted.inc();
    Response::json(
        StatusCode::ACCEPTED,
        &ReportAccepted {
            peer_id: admitted.peer_id,
            reports: admitted.reports,
            next_report_secs: ctx.shared.opts.report_interval.as_secs().max(1),
        },
    )
}

/// The HTTP API without a listener: the state and routes [`start`] serves, one request at a
/// time, for driving the service in-process (the `status_api` fuzz target does). Needs a tokio
/// runtime (its actor admits and commits reports as in [`start`]).
pub struct Api {
    ctx: Arc<Ctx>,
    stop: CancellationToken,
    actor: JoinHandle<()>,
}

impl Api {
    /// Opens `dir/status.redb` (creating it) and starts the actor.
    pub async fn open(dir: &Path, opts: StatusOptions) -> Result<Self, StatusError> {
        let (shared, actor) = open(dir, &opts).await?;
        let stop = CancellationToken::new();
        let actor = tokio::spawn(run(actor, stop.clone()));
        Ok(Self {
            ctx: Arc::new(Ctx { shared }),
            stop,
            actor,
        })
    }

    /// Answers one request exactly as the HTTP server would.
    pub async fn handle(&self, req: Request) -> Response {
        route(self.ctx.clone(), req).await
    }

    /// Commits every accepted report and stops the actor.
    pub async fn shutdown(self) {
        self.stop.cancel();
        let _ = self.actor.await;
    }
}

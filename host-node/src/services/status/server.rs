//! The running Status service: the HTTP routes of [`super`] over [`crate::net::http`], the shared
//! in-memory [`Ingest`] state, and a writer task that commits accepted reports in batches.
//!
//! A report is verified on the connection's task without any lock (the expensive part), then
//! admitted under a short mutex, then queued to the writer (a bounded channel: when the database
//! falls behind, ingest waits). The writer takes whatever is queued (up to `batch_max`) and
//! commits it in one transaction on a blocking thread. On stop, the HTTP server drains first,
//! then the writer commits what is left, so `shutdown().await` loses nothing.
//!
//! A sweeper task forgets peers silent for `forget_after` every
//! [`StatusOptions::sweep_interval`]: it removes them from [`Ingest`] and queues an
//! [`Op::Forget`] for the writer. Opening skips (and deletes) stored records that are expired
//! or whose peer admission no longer knows, then compacts the file if it deleted any.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use hyper::{Method, StatusCode};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::ingest::{self, Ingest, Loaded, Rejection};
use super::metrics::{self, IngestCounters};
use super::store::{Op, StatusDb, Write};
use super::{
    now_ms, page, HostDetail, HostStatus, NetworkStatus, ReportAccepted, Sample, StatusError,
    StatusOptions, Totals, HOSTS_PATH, REPORTS_PATH, STATUS_PATH,
};
use crate::net::http::{self, Request, Response};

enum ToWriter {
    Write(Op),
    Flush(oneshot::Sender<()>),
}

struct Shared {
    ingest: Mutex<Ingest>,
    writes: mpsc::Sender<ToWriter>,
    db: Arc<StatusDb>,
    opts: StatusOptions,
    counters: IngestCounters,
    keys: ingest::KeyCache,
}

impl Shared {
    async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.writes.send(ToWriter::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    fn ingest(&self) -> MutexGuard<'_, Ingest> {
        self.ingest.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn network(&self, offset: usize, limit: usize) -> NetworkStatus {
        let now = now_ms();
        let ingest = self.ingest();
        let totals = ingest.totals(now);
        NetworkStatus {
            generated_at_ms: now,
            hosts: ingest.hosts(offset, limit, now),
            offset: offset as u64,
            hosts_total: totals.hosts,
            totals,
        }
    }
}

/// Read access to the service's state, cheap to clone (for in-process readers of the service node).
#[derive(Clone)]
pub struct StatusReader {
    shared: Arc<Shared>,
}

impl StatusReader {
    /// One host's latest status (uptime, online, capacity...), if it ever reported.
    pub fn get(&self, peer_id: &str) -> Option<HostStatus> {
        self.shared.ingest().get(peer_id, now_ms())
    }

    /// Every host's latest status, sorted by peer id.
    pub fn latest(&self) -> Vec<HostStatus> {
        self.shared.ingest().hosts(0, usize::MAX, now_ms())
    }

    /// Network totals.
    pub fn totals(&self) -> Totals {
        self.shared.ingest().totals(now_ms())
    }

    /// A page of hosts with the totals, as `GET /api/v1/status` answers.
    pub fn network(&self, offset: usize, limit: usize) -> NetworkStatus {
        self.shared.network(offset, limit)
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
    pub fn get(&self, peer_id: &str) -> Option<HostStatus> {
        self.reader.get(peer_id)
    }

    /// Every host's latest status, sorted by peer id.
    pub fn latest(&self) -> Vec<HostStatus> {
        self.reader.latest()
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

/// Opens `dir/status.redb` (creating it) and loads the stored reports: the state [`start`]
/// serves, and the queue its writer task commits from.
async fn open(
    dir: &Path,
    opts: &StatusOptions,
) -> Result<(Arc<Shared>, mpsc::Receiver<ToWriter>), StatusError> {
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
    let (writes, rx) = mpsc::channel(opts.write_queue.max(1));
    let shared = Arc::new(Shared {
        ingest: Mutex::new(ingest),
        writes,
        db: Arc::new(db),
        opts: opts.clone(),
        counters: IngestCounters::default(),
        keys: ingest::KeyCache::new(opts.max_peers),
    });
    Ok((shared, rx))
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
    let (shared, rx) = open(dir, &opts).await?;
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
    let writer_stop = CancellationToken::new();
    let writer = tokio::spawn(write_loop(
        shared.db.clone(),
        rx,
        opts.batch_max.max(1),
        opts.commit_linger,
        writer_stop.clone(),
    ));
    let sweeper = tokio::spawn(sweep_loop(shared.clone(), cancel.clone()));
    let task = tokio::spawn(async move {
        server.join().await;
        let _ = sweeper.await;
        writer_stop.cancel();
        let _ = writer.await;
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

async fn sweep_loop(shared: Arc<Shared>, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(shared.opts.sweep_interval());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let gone = shared.ingest().expire(now_ms());
        if gone.is_empty() {
            continue;
        }
        tracing::debug!(n = gone.len(), "forgetting silent peers");
        for (peer_id, last_seen_ms) in gone {
            let op = Op::Forget {
                peer_id,
                last_seen_ms,
            };
            if shared.writes.send(ToWriter::Write(op)).await.is_err() {
                return;
            }
        }
    }
}

async fn write_loop(
    db: Arc<StatusDb>,
    mut rx: mpsc::Receiver<ToWriter>,
    batch_max: usize,
    linger: std::time::Duration,
    stop: CancellationToken,
) {
    let mut closing = false;
    loop {
        let first = if closing {
            rx.recv().await
        } else {
            tokio::select! {
                w = rx.recv() => w,
                () = stop.cancelled() => {
                    // No new reports; commit the queued ones, then end.
                    rx.close();
                    closing = true;
                    continue;
                }
            }
        };
        let Some(mut next) = first else { break };
        let mut batch = Vec::with_capacity(batch_max.min(1024));
        let mut flushed = Vec::new();
        // Group commit: gather for up to `linger` after the first report (each commit rewrites
        // the touched pages and syncs, so fewer, larger commits cost far less per report).
        let until = tokio::time::Instant::now() + linger;
        loop {
            match next {
                ToWriter::Write(w) => batch.push(w),
                ToWriter::Flush(ack) => flushed.push(ack),
            }
            if batch.len() >= batch_max || !flushed.is_empty() {
                break;
            }
            next = match rx.try_recv() {
                Ok(m) => m,
                Err(_) if closing => break,
                Err(_) => match tokio::time::timeout_at(until, rx.recv()).await {
                    Ok(Some(m)) => m,
                    Ok(None) | Err(_) => break,
                },
            };
        }
        let (db, n) = (db.clone(), batch.len());
        if n > 0 {
            match tokio::task::spawn_blocking(move || db.write(&batch)).await {
                Ok(Ok(())) => tracing::trace!(n, "status reports committed"),
                Ok(Err(e)) => tracing::error!(%e, n, "cannot save status reports"),
                Err(e) => tracing::error!(%e, n, "status writer task failed"),
            }
        }
        for ack in flushed {
            let _ = ack.send(());
        }
    }
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
            Response::json(StatusCode::OK, &ctx.shared.network(offset, limit))
        }
        "/metrics" => {
            let s = &ctx.shared;
            let n = s.opts.metrics_host_limit;
            let status = s.network(0, n);
            let text = metrics::render_network(&status, &s.counters);
            Response::raw(StatusCode::OK, metrics::CONTENT_TYPE, text)
        }
        "/" => {
            let status = ctx.shared.network(0, page::MAX_ROWS);
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
    let Some(host) = ctx.shared.ingest().get(peer, now_ms()) else {
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
    let peer_id = checked.body.peer_id.clone();
    let admitted = ctx.shared.ingest().admit(checked, source, now_ms());
    let accepted = match admitted {
        Ok(a) => a,
        Err(r) => return reject(ctx, r),
    };
    if let Some(s) = new_signer {
        ctx.shared.keys.put(s);
    }
    let reports = accepted.record.reports;
    let write = Write {
        peer_id: peer_id.clone(),
        record: accepted.record,
        sample: accepted.sample,
    };
    if ctx
        .shared
        .writes
        .send(ToWriter::Write(Op::Put(write)))
        .await
        .is_err()
    {
        return reject(ctx, Rejection::ShuttingDown);
    }
    ctx.shared.counters.accepted.inc();
    Response::json(
        StatusCode::ACCEPTED,
        &ReportAccepted {
            peer_id,
            reports,
            next_report_secs: ctx.shared.opts.report_interval.as_secs().max(1),
        },
    )
}

/// The HTTP API without a listener: the state and routes [`start`] serves, one request at a
/// time, for driving the service in-process (the `status_api` fuzz target does). Needs a tokio
/// runtime (its writer task commits accepted reports as in [`start`]).
pub struct Api {
    ctx: Arc<Ctx>,
    stop: CancellationToken,
    writer: tokio::task::JoinHandle<()>,
}

impl Api {
    /// Opens `dir/status.redb` (creating it) and starts the writer task.
    pub async fn open(dir: &Path, opts: StatusOptions) -> Result<Self, StatusError> {
        let (shared, rx) = open(dir, &opts).await?;
        let stop = CancellationToken::new();
        let writer = tokio::spawn(write_loop(
            shared.db.clone(),
            rx,
            opts.batch_max.max(1),
            opts.commit_linger,
            stop.clone(),
        ));
        Ok(Self {
            ctx: Arc::new(Ctx { shared }),
            stop,
            writer,
        })
    }

    /// Answers one request exactly as the HTTP server would.
    pub async fn handle(&self, req: Request) -> Response {
        route(self.ctx.clone(), req).await
    }

    /// Commits every accepted report and stops the writer.
    pub async fn shutdown(self) {
        self.stop.cancel();
        let _ = self.writer.await;
    }
}

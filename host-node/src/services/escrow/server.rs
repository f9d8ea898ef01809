//! The Escrow service's process side: one thread owns the ledger and its database; stream
//! handlers hand it requests through a bounded queue.
//!
//! Order inside one turn of the ledger thread: take every queued request (at most
//! [`MAX_GROUP`]) → apply each to the in-memory ledger (calls and verdict batches) or answer it
//! from the ledger (queries) → if an epoch boundary passed, apply a `Tick` → append every command
//! that changed the ledger to `escrow.redb` in **one** durable transaction (group commit) →
//! hand withdrawals to the [`Settlement`] → only then send the answers. If the write fails, the
//! ledger is rebuilt from the database and every request of the group is answered with an error
//! that says to retry with the same id (nothing was acknowledged, so nothing is lost).

use std::path::{Path, PathBuf};
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use btfs_core::escrow::{
    self, Command, ContractView, EscrowInfo, EscrowRequest, EscrowResponse, Ledger, LedgerConfig,
    Op, Receipt, MAX_ALLOWANCES_ANSWER, MAX_CONTRACTS_ANSWER, MAX_HISTORY_ANSWER, MAX_REQUEST_LEN,
};
use btfs_core::protocol::Status;
use futures::AsyncReadExt;
use libp2p::{PeerId, Stream};
use thiserror::Error;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::db::{DbError, Entry, EscrowDb};
use crate::host::fair_slots::{refuse_busy, Gate};
use crate::host::inbound::Inbound;
use crate::host::shard_server::{respond, HEADER_DEADLINE};

/// Requests queued for the ledger thread before new ones are answered `Busy`.
pub const QUEUE: usize = 8192;
/// Most requests applied in one group commit.
pub const MAX_GROUP: usize = 8192;
/// Streams served at once, and per peer.
pub const MAX_STREAMS: usize = 64;
/// Streams one peer may have open at once.
pub const MAX_STREAMS_PER_PEER: usize = 16;
/// Requests per second per peer (sustained) and burst.
pub const RATE: f64 = 100.0;
/// Burst of requests per peer.
pub const BURST: f64 = 400.0;
/// Time to read a whole request.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(30);

/// Escrow settings.
#[derive(Debug, Clone)]
pub struct EscrowOptions {
    /// The ledger's rules (on a devnet: a faucet).
    pub ledger: LedgerConfig,
    /// How often expiries are checked.
    pub tick: Duration,
}

impl Default for EscrowOptions {
    fn default() -> Self {
        Self {
            ledger: LedgerConfig::default(),
            tick: Duration::from_secs(1),
        }
    }
}

impl EscrowOptions {
    /// A devnet: a faucet that gives up to 1,000 BTT per deposit.
    pub fn for_devnet() -> Self {
        Self {
            ledger: LedgerConfig {
                faucet_max: Some(1000 * escrow::MICRO_PER_BTT),
                ..LedgerConfig::default()
            },
            tick: Duration::from_millis(500),
        }
    }
}

/// The Escrow could not start.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum EscrowServiceError {
    /// The database.
    #[error(transparent)]
    Db(#[from] DbError),
    /// Setup.
    #[error("{0}")]
    Setup(String),
}

/// Where money leaves for (and comes from) the world outside this ledger: a chain would
/// confirm deposit transactions and send withdrawals. The local one on this machine is the
/// ledger's faucet for deposits (when it is on), and a file for withdrawals.
pub trait Settlement: Send + 'static {
    /// May `account` be credited `amount` (a chain checks the deposit transaction)?
    fn check_deposit(&mut self, account: &str, amount: u64) -> Result<(), String>;
    /// `amount` left the ledger for `account` under call `id` (durable by now). Called at least
    /// once per withdrawal; `id` makes repeats recognisable.
    fn paid_out(&mut self, account: &str, amount: u64, id: &str);
}

/// The settlement of a standalone network: deposits only from the ledger's faucet, withdrawals
/// appended to `DATA_DIR/withdrawals.jsonl` (what a chain bridge would send).
pub struct LocalSettlement {
    path: PathBuf,
}

impl LocalSettlement {
    /// Records withdrawals in `dir/withdrawals.jsonl`.
    pub fn new(dir: &Path) -> Self {
        Self {
            path: dir.join("withdrawals.jsonl"),
        }
    }
}

impl Settlement for LocalSettlement {
    fn check_deposit(&mut self, _account: &str, _amount: u64) -> Result<(), String> {
        Ok(()) // the ledger's faucet rule decides (off outside a devnet)
    }

    fn paid_out(&mut self, account: &str, amount: u64, id: &str) {
        use std::io::Write;
        let line = serde_json::json!({"account": account, "amount": amount, "id": id});
        let r = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .and_then(|mut f| writeln!(f, "{line}"));
        if let Err(e) = r {
            tracing::error!(path = %self.path.display(), %e, "cannot record a withdrawal");
        }
    }
}

type Answer = Result<EscrowResponse, (Status, String)>;

struct Job {
    request: EscrowRequest,
    reply: oneshot::Sender<Answer>,
}

/// A clonable way to ask the Escrow of this process (the Guard on the same node).
#[derive(Clone)]
pub struct EscrowLocal {
    jobs: std_mpsc::SyncSender<Job>,
}

impl EscrowLocal {
    /// Asks the Escrow: the same path a stream takes.
    pub async fn request(&self, request: EscrowRequest) -> Answer {
        let (reply, rx) = oneshot::channel();
        self.jobs.try_send(Job { request, reply }).map_err(|_| {
            (
                Status::Busy,
                "the Escrow is busy; retry in a moment".to_string(),
            )
        })?;
        rx.await.map_err(|_| {
            (
                Status::Internal,
                "the Escrow stopped before answering".to_string(),
            )
        })?
    }
}

/// A running Escrow.
pub struct EscrowHandle {
    jobs: std_mpsc::SyncSender<Job>,
    thread: Option<std::thread::JoinHandle<()>>,
    accept: Option<tokio::task::JoinHandle<()>>,
}

impl EscrowHandle {
    /// Asks the Escrow in-process (tests, benches): the same path a stream takes.
    pub async fn request(&self, request: EscrowRequest) -> Answer {
        self.local().request(request).await
    }

    /// A clonable in-process client.
    pub fn local(&self) -> EscrowLocal {
        EscrowLocal {
            jobs: self.jobs.clone(),
        }
    }

    /// Waits for the Escrow to stop (after its cancellation token fired).
    pub async fn join(mut self) {
        if let Some(a) = self.accept.take() {
            let _ = a.await;
        }
        drop(self.jobs);
        if let Some(t) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
    }
}

/// Starts the Escrow: opens (or creates) `dir/escrow.redb`, rebuilds the ledger, serves
/// `/btfs/escrow/1` streams from `incoming`.
pub async fn start(
    dir: &Path,
    incoming: Option<mpsc::Receiver<Inbound>>,
    key: libp2p::identity::ed25519::Keypair,
    opts: EscrowOptions,
    settlement: Box<dyn Settlement>,
    cancel: CancellationToken,
) -> Result<EscrowHandle, EscrowServiceError> {
    let dir = dir.to_path_buf();
    let cfg = opts.ledger.clone();
    let (db, ledger) =
        tokio::task::spawn_blocking(move || EscrowDb::open(&dir, &cfg).map(|(db, l)| (db, l, dir)))
            .await
            .map_err(|e| EscrowServiceError::Setup(e.to_string()))?
            .map(|(db, l, _)| (db, l))?;
    let t = ledger.totals();
    tracing::info!(
        commands = db.seq(),
        accounts = t.accounts,
        contracts = t.contracts,
        conserved = t.conserved,
        "escrow started"
    );
    let (jobs, rx) = std_mpsc::sync_channel(QUEUE);
    let thread_cancel = cancel.clone();
    let tick = opts.tick;
    let thread = std::thread::Builder::new()
        .name("escrow-ledger".into())
        .spawn(move || ledger_thread(db, ledger, key, rx, settlement, tick, thread_cancel))
        .map_err(|e| EscrowServiceError::Setup(e.to_string()))?;
    let accept = incoming.map(|incoming| tokio::spawn(accept(incoming, jobs.clone(), cancel)));
    Ok(EscrowHandle {
        jobs,
        thread: Some(thread),
        accept,
    })
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn ledger_thread(
    mut db: EscrowDb,
    mut ledger: Ledger,
    key: libp2p::identity::ed25519::Keypair,
    jobs: std_mpsc::Receiver<Job>,
    mut settlement: Box<dyn Settlement>,
    tick: Duration,
    cancel: CancellationToken,
) {
    let mut next_tick = Instant::now();
    loop {
        if cancel.is_cancelled() {
            break;
        }
        let wait = next_tick.saturating_duration_since(Instant::now());
        let mut group = Vec::new();
        match jobs.recv_timeout(wait.min(Duration::from_millis(200))) {
            Ok(j) => group.push(j),
            Err(std_mpsc::RecvTimeoutError::Timeout) => {}
            Err(std_mpsc::RecvTimeoutError::Disconnected) => break,
        }
        while group.len() < MAX_GROUP {
            match jobs.try_recv() {
                Ok(j) => group.push(j),
                Err(_) => break,
            }
        }
        let now = now_ms();
        let mut entries = Vec::new();
        let mut answers: Vec<(oneshot::Sender<Answer>, Answer, bool)> = Vec::new();
        let mut withdrawals = Vec::new();
        for Job { request, reply } in group {
            let (answer, mutating) = handle(
                &mut ledger,
                &key,
                request,
                now,
                &mut entries,
                &mut withdrawals,
                settlement.as_mut(),
            );
            answers.push((reply, answer, mutating));
        }
        if Instant::now() >= next_tick {
            next_tick = Instant::now() + tick;
            if let Ok(Receipt::Tick(r)) = ledger.apply(&Command::Tick, now) {
                // A tick that changed nothing need not be logged: replaying it is a no-op.
                if r != escrow::TickReceipt::default() {
                    entries.push(Entry {
                        now_ms: now,
                        cmd: Command::Tick,
                    });
                }
            }
        }
        ledger.take_transfers();
        if let Err(e) = db.append(&entries, &ledger) {
            tracing::error!(%e, "escrow: cannot save; rebuilding the ledger from disk");
            for (reply, _, mutating) in answers {
                let a = if mutating {
                    Err((
                        Status::Internal,
                        format!("the Escrow could not save ({e}); nothing was done — retry with the same id"),
                    ))
                } else {
                    Err((Status::Internal, format!("the Escrow could not save ({e})")))
                };
                let _ = reply.send(a);
            }
            let path = db_dir(&db);
            drop(db);
            match EscrowDb::open(&path, ledger.config()) {
                Ok((d, l)) => {
                    db = d;
                    ledger = l;
                }
                Err(e) => {
                    tracing::error!(%e, "escrow: cannot reopen its database; stopping");
                    return;
                }
            }
            continue;
        }
        for (account, amount, id) in withdrawals {
            settlement.paid_out(&account, amount, &id);
        }
        for (reply, answer, _) in answers {
            let _ = reply.send(answer);
        }
    }
}

fn db_dir(db: &EscrowDb) -> PathBuf {
    db.path()
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// The hosts' proof that a reservation's offers are locked: the Escrow signs the ids of those
/// still open now (a replayed reservation gets a fresh proof, without offers voided since).
fn funding_proof(
    ledger: &Ledger,
    key: &libp2p::identity::ed25519::Keypair,
    r: &escrow::CallReceipt,
    now: u64,
) -> Option<btfs_core::signed::Signed> {
    let offers: Vec<String> = r
        .contracts
        .iter()
        .filter(|id| {
            ledger
                .contract(id)
                .is_some_and(|c| c.stage == escrow::Stage::Offered)
        })
        .cloned()
        .collect();
    if offers.is_empty() {
        return None;
    }
    let body = escrow::Funded {
        peer_id: libp2p::PeerId::from_public_key(&key.public().into()).to_base58(),
        tenant: r.account.clone(),
        offers,
        issued_at_ms: now,
    };
    btfs_core::signed::Signed::sign(&body, key)
        .map_err(|e| tracing::error!(%e, "cannot sign a funding proof"))
        .ok()
}

/// One request; returns its answer and whether it may have changed the ledger.
fn handle(
    ledger: &mut Ledger,
    key: &libp2p::identity::ed25519::Keypair,
    request: EscrowRequest,
    now: u64,
    entries: &mut Vec<Entry>,
    withdrawals: &mut Vec<(String, u64, String)>,
    settlement: &mut dyn Settlement,
) -> (Answer, bool) {
    let bad = |e: String| Err((Status::BadRequest, e));
    match request {
        EscrowRequest::Call { call } => {
            // The settlement layer confirms deposits before the ledger sees them.
            if let Ok(v) = call.verify::<escrow::Call>() {
                if let Op::Deposit { amount } = v.body.op {
                    if ledger.receipt(&v.body.peer_id, &v.body.id).is_none() {
                        if let Err(e) = settlement.check_deposit(&v.body.peer_id, amount) {
                            return (bad(format!("deposit refused: {e}")), false);
                        }
                    }
                }
            }
            let cmd = Command::Call { call };
            match ledger.apply(&cmd, now) {
                Ok(Receipt::Call(mut r)) => {
                    let op = match &cmd {
                        Command::Call { call } if r.ok => {
                            call.verify::<escrow::Call>().ok().map(|v| v.body.op)
                        }
                        _ => None,
                    };
                    match op {
                        Some(Op::Withdraw { amount }) if !r.replayed => {
                            withdrawals.push((r.account.clone(), amount, r.id.clone()));
                        }
                        Some(Op::Reserve { .. }) => r.funded = funding_proof(ledger, key, &r, now),
                        _ => {}
                    }
                    if !r.replayed {
                        entries.push(Entry { now_ms: now, cmd });
                    }
                    (Ok(EscrowResponse::Call(r)), true)
                }
                Ok(_) => (bad("unexpected receipt".into()), false),
                Err(e) => (bad(e.to_string()), false),
            }
        }
        EscrowRequest::Settle { batch } => {
            let cmd = Command::Settle { batch };
            match ledger.apply(&cmd, now) {
                Ok(Receipt::Settle(r)) => {
                    if r.paid + r.refunded > 0 {
                        entries.push(Entry { now_ms: now, cmd });
                    }
                    (Ok(EscrowResponse::Settle(r)), true)
                }
                Ok(_) => (bad("unexpected receipt".into()), false),
                Err(e) => (bad(e.to_string()), false),
            }
        }
        EscrowRequest::Account { peer } => {
            let account = ledger.account(&peer);
            (Ok(EscrowResponse::Account { peer, account }), false)
        }
        EscrowRequest::Contracts { peer } => {
            let all = ledger.contracts_of(&peer);
            let skip = all.len().saturating_sub(MAX_CONTRACTS_ANSWER);
            let contracts = all.into_iter().skip(skip).map(ContractView::from).collect();
            (Ok(EscrowResponse::Contracts { contracts }), false)
        }
        EscrowRequest::History { peer, limit } => {
            let transfers = ledger.history(&peer, limit.min(MAX_HISTORY_ANSWER) as usize);
            (Ok(EscrowResponse::History { transfers }), false)
        }
        EscrowRequest::Ledger => (Ok(EscrowResponse::Ledger(ledger.totals())), false),
        EscrowRequest::Allowances { manifest_id } => (
            Ok(EscrowResponse::Allowances {
                allowances: ledger
                    .allowances_of(&manifest_id)
                    .into_iter()
                    .take(MAX_ALLOWANCES_ANSWER)
                    .cloned()
                    .collect(),
            }),
            false,
        ),
        EscrowRequest::Info => (
            Ok(EscrowResponse::Info(EscrowInfo {
                config: ledger.config().clone(),
                now_ms: now,
            })),
            false,
        ),
    }
}

/// Reads requests from inbound Escrow streams and hands them to the ledger thread.
async fn accept(
    mut incoming: mpsc::Receiver<Inbound>,
    jobs: std_mpsc::SyncSender<Job>,
    cancel: CancellationToken,
) {
    let gate = Gate::new(MAX_STREAMS, MAX_STREAMS_PER_PEER, RATE, BURST, 4096);
    loop {
        let (peer, mut stream) = tokio::select! {
            () = cancel.cancelled() => break,
            next = incoming.recv() => match next { Some(s) => s, None => break },
        };
        let slot = gate.admit(peer, Instant::now());
        let jobs = jobs.clone();
        tokio::spawn(async move {
            let Some(slot) = slot else {
                let msg = "the Escrow is busy: too many requests from you; retry in a second";
                refuse_busy(&mut stream, msg).await;
                return;
            };
            slot.set_working();
            serve_stream(peer, stream, jobs).await;
            drop(slot);
        });
    }
}

async fn serve_stream(peer: PeerId, mut stream: Stream, jobs: std_mpsc::SyncSender<Job>) {
    let read = async {
        let mut len = [0u8; 4];
        tokio::time::timeout(HEADER_DEADLINE, stream.read_exact(&mut len))
            .await
            .map_err(|_| std::io::Error::other("no request in time"))??;
        let len = u32::from_le_bytes(len);
        if len > MAX_REQUEST_LEN {
            return Ok(Err(format!(
                "request of {len} bytes exceeds the limit of {MAX_REQUEST_LEN}"
            )));
        }
        let mut body = vec![0u8; len as usize];
        stream.read_exact(&mut body).await?;
        Ok::<_, std::io::Error>(escrow::decode_request(&body))
    };
    let request = match tokio::time::timeout(REQUEST_DEADLINE, read).await {
        Ok(Ok(Ok(r))) => r,
        Ok(Ok(Err(msg))) => {
            let _ = respond(&mut stream, Status::BadRequest, msg.as_bytes(), true).await;
            return;
        }
        _ => {
            tracing::debug!(%peer, "escrow stream: no complete request in time");
            return;
        }
    };
    let (reply, rx) = oneshot::channel();
    let (status, body) = match jobs.try_send(Job { request, reply }) {
        Err(_) => (
            Status::Busy,
            b"the Escrow is busy; retry in a moment".to_vec(),
        ),
        Ok(()) => match tokio::time::timeout(Duration::from_secs(60), rx).await {
            Ok(Ok(Ok(response))) => match serde_json::to_vec(&response) {
                Ok(json) => (Status::Ok, json),
                Err(e) => (Status::Internal, e.to_string().into_bytes()),
            },
            Ok(Ok(Err((status, msg)))) => (status, msg.into_bytes()),
            _ => (
                Status::Internal,
                b"the Escrow did not answer in time".to_vec(),
            ),
        },
    };
    let _ = respond(&mut stream, status, &body, false).await;
}

//! The running Guard: one task owns core's `Guard` machine and the database; it performs the
//! machine's challenges and repairs on the node's swarm, signs and stores every verdict before
//! reporting it to the Hub, and answers `/btfs/guard/1` requests handed over by the accept task.
//!
//! Order inside one loop turn: perform every action the machine asks for → sign the verdicts it
//! emitted, write them (and the epoch reached) in one transaction, then tell the Hub → wait for
//! the first of: a challenge ended, a repair ended (its new holders and signed placement
//! updates are committed *before* the machine hears of it), a request, a manifest fetched for a
//! `watch`, the machine's timeout, shutdown.
//!
//! Bounds: challenges and repairs in flight are the machine's (`GuardConfig`); requests wait in
//! a queue of [`CALL_QUEUE`] (then `Busy`), at most [`MAX_STREAMS`] request streams are read at
//! once, a request body is at most `MAX_REQUEST_LEN` bytes and is read under
//! [`REQUEST_DEADLINE`]; at most [`MAX_WATCH_FETCHES`] manifests are fetched at once.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use btfs_core::engine::repair::{Repair, RepairConfig, RepairReport};
use btfs_core::engine::{HostId, Machine, OpId};
use btfs_core::escrow::{EscrowRequest, Settle, VerdictLine};
use btfs_core::guard::{AuditOutcome, Guard, GuardAction, GuardConfig, RepairFailure, Verdict};
use btfs_core::guard_wire::{
    self, AuditVerdict, GuardRequest, GuardResponse, ObjectHealth, PlacementUpdate, ShardMove,
    MAX_AUDITS_ANSWER, MAX_MOVES, MAX_REQUEST_LEN,
};
use btfs_core::manifest::MAX_MANIFEST_LEN;
use btfs_core::protocol::Status;
use btfs_core::signed::Signed;
use btfs_core::{Manifest, Root};
use futures::future::{AbortHandle, Abortable, BoxFuture};
use futures::stream::FuturesUnordered;
use futures::{AsyncReadExt, FutureExt, StreamExt};
use libp2p::identity::{ed25519, Keypair};
use libp2p::{Multiaddr, PeerId, Stream};
use rand::RngCore;
use thiserror::Error;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio_util::sync::CancellationToken;

use super::db::{Batch, DbError, GuardDb, HolderRow};
use super::pay::RepairPay;
use crate::host::inbound::Inbound;
use crate::host::shard_server::respond;
use crate::net::Net;
use crate::services::escrow::EscrowLocal;
use crate::tenant::driver::{failure_of, sleep_until, Runner};
use crate::tenant::shard_client;

/// Requests waiting for the Guard task.
pub const CALL_QUEUE: usize = 256;
/// Request streams read at once.
pub const MAX_STREAMS: usize = 64;
/// Time to read one request.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(10);
/// Manifests fetched at once for `watch` requests.
pub const MAX_WATCH_FETCHES: usize = 8;
/// Hosts asked at once for a manifest.
pub const MANIFEST_FANOUT: usize = 8;
/// Hosts offered to a repair as candidates (the Hub's best first).
pub const REPAIR_CANDIDATES: usize = 90;

/// Guard settings.
#[derive(Debug, Clone, Default)]
pub struct GuardOptions {
    /// The policy's tuning.
    pub config: GuardConfig,
}

/// The Guard could not start.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum GuardServiceError {
    /// The database.
    #[error(transparent)]
    Db(#[from] DbError),
    /// The machine refused its configuration or a stored object.
    #[error("guard policy: {0}")]
    Policy(String),
    /// The node cannot run a Guard.
    #[error("{0}")]
    Setup(String),
}

/// What the Guard needs from the Hub on the same node.
pub trait HostBook: Send + Sync + 'static {
    /// Every registered host's addresses.
    fn addrs(&self) -> HashMap<PeerId, Vec<Multiaddr>>;
    /// Up to `limit` hosts with their asking price per GiB-month, best score first (repair
    /// candidates).
    fn ranked(&self, limit: usize) -> Vec<(PeerId, u64)>;
    /// Counts audit results into the hosts' scores.
    fn record_audits(&self, results: &[(PeerId, bool)]);
}

/// A running Guard.
pub struct GuardHandle {
    task: tokio::task::JoinHandle<()>,
    accept: tokio::task::JoinHandle<()>,
}

impl GuardHandle {
    /// Waits for the Guard to stop (after its cancellation token fired).
    pub async fn join(self) {
        let _ = self.accept.await;
        let _ = self.task.await;
    }
}

type Reply = oneshot::Sender<Result<GuardResponse, (Status, String)>>;

struct Call {
    request: GuardRequest,
    reply: Reply,
}

/// Starts the Guard on `net`, keeping its state in `dir/guard.redb`; with `escrow`, its verdicts
/// also settle storage contracts there.
#[allow(clippy::too_many_arguments)]
pub async fn start(
    net: Net,
    dir: &Path,
    key: Keypair,
    book: Arc<dyn HostBook>,
    incoming: mpsc::Receiver<Inbound>,
    opts: GuardOptions,
    escrow: Option<EscrowLocal>,
    cancel: CancellationToken,
) -> Result<GuardHandle, GuardServiceError> {
    let key = key
        .try_into_ed25519()
        .map_err(|e| GuardServiceError::Setup(format!("the Guard needs an ed25519 key: {e}")))?;
    let db = GuardDb::open(dir)?;
    let mut fresh = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut fresh);
    let secret = db.secret(fresh)?;
    // Never reuse an epoch number with the same secret (a host could replay an old answer), and
    // number epochs by the clock (unix ms / epoch length), as storage contracts do: a contract
    // paid for epochs first..first+n is settled by the verdicts of those epochs.
    let wall = btfs_core::escrow::epoch_at(now_ms(), opts.config.epoch.as_millis() as u64);
    let first_epoch = db.epoch()?.map_or(wall, |e| (e + 1).max(wall));
    let mut guard = Guard::new(opts.config, secret, Duration::ZERO)
        .map_err(|e| GuardServiceError::Policy(e.to_string()))?
        .with_first_epoch(first_epoch);
    let mut repaired: HashMap<Root, u64> = HashMap::new();
    for (id, bytes) in db.objects()? {
        match Manifest::decode(&bytes) {
            Ok(m) => {
                if let Err(e) = guard.watch(m, Duration::ZERO) {
                    tracing::warn!(object = id, %e, "cannot watch a stored object");
                }
            }
            Err(e) => tracing::warn!(object = id, %e, "skipping an unreadable stored manifest"),
        }
    }
    for h in db.holders()? {
        let (Ok(object), Ok(peer)) = (Root::from_hex(&h.object), h.host.parse::<PeerId>()) else {
            continue;
        };
        *repaired.entry(object).or_default() += 1;
        if let Err(e) = guard.set_holder(object, h.slab, h.shard, HostId::new(peer)) {
            tracing::warn!(object = h.object, %e, "cannot restore a holder");
        }
    }
    let objects = guard.objects().count();
    tracing::info!(objects, first_epoch, "guard started");
    let pay = escrow.clone().map(|escrow| RepairPay {
        escrow,
        key: key.clone(),
        epoch_ms: guard.config().epoch.as_millis() as u64,
    });
    let (calls_tx, calls) = mpsc::channel(CALL_QUEUE);
    let accept = tokio::spawn(accept(incoming, calls_tx, cancel.clone()));
    let actor = Actor {
        net,
        key,
        book,
        db,
        guard,
        clock: Instant::now(),
        repaired,
        last_repair: HashMap::new(),
        last_epoch: None,
        escrow,
        pay,
        settle_retry: Instant::now(),
    };
    let task = tokio::spawn(actor.run(calls, cancel));
    Ok(GuardHandle { task, accept })
}

struct Actor {
    net: Net,
    key: ed25519::Keypair,
    book: Arc<dyn HostBook>,
    db: GuardDb,
    guard: Guard,
    clock: Instant,
    repaired: HashMap<Root, u64>,
    last_repair: HashMap<Root, guard_wire::RepairStats>,
    last_epoch: Option<u64>,
    /// The Escrow on this node, which verdicts are forwarded to (from the outbox).
    escrow: Option<EscrowLocal>,
    /// How repairs are paid (with an Escrow).
    pay: Option<RepairPay>,
    /// No outbox send before this (after a failed one).
    settle_retry: Instant,
}

type Settled = (u64, Result<(), String>);

type Fetched = (Reply, Root, Result<(Manifest, Vec<u8>), String>);
type RepairEnded = (Root, Result<RepairReport, RepairFailure>, Duration);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Actor {
    fn now(&self) -> Duration {
        self.clock.elapsed()
    }

    async fn run(mut self, mut calls: mpsc::Receiver<Call>, cancel: CancellationToken) {
        let mut challenges: FuturesUnordered<BoxFuture<'static, Option<(OpId, AuditOutcome)>>> =
            FuturesUnordered::new();
        let mut aborts: HashMap<OpId, AbortHandle> = HashMap::new();
        let mut nonces: HashMap<OpId, [u8; 32]> = HashMap::new();
        let mut repairs: FuturesUnordered<BoxFuture<'static, RepairEnded>> =
            FuturesUnordered::new();
        let mut fetches: FuturesUnordered<BoxFuture<'static, Fetched>> = FuturesUnordered::new();
        let mut settles: FuturesUnordered<BoxFuture<'static, Settled>> = FuturesUnordered::new();
        loop {
            while let Some(action) = self.guard.poll_action() {
                match action {
                    GuardAction::Challenge {
                        op,
                        host,
                        challenge,
                    } => {
                        let peer = host.peer();
                        let addrs = self.book.addrs().remove(&peer).unwrap_or_default();
                        let net = self.net.clone();
                        let deadline = self.guard.config().deadline;
                        nonces.insert(op, challenge.nonce);
                        let work = async move {
                            (
                                op,
                                challenge_one(net, peer, addrs, challenge, deadline).await,
                            )
                        };
                        let (handle, reg) = AbortHandle::new_pair();
                        aborts.insert(op, handle);
                        challenges.push(Abortable::new(work, reg).map(Result::ok).boxed());
                    }
                    GuardAction::Cancel { op } => {
                        if let Some(h) = aborts.remove(&op) {
                            h.abort();
                        }
                    }
                    GuardAction::Repair {
                        object,
                        manifest,
                        lost,
                        holders,
                    } => {
                        let shards: usize = lost.values().map(|s| s.len()).sum();
                        tracing::info!(%object, shards, "repair starting");
                        let net = self.net.clone();
                        let book = self.book.clone();
                        let pay = self.pay.clone();
                        let started = Instant::now();
                        repairs.push(
                            async move {
                                let job = RepairJob {
                                    object,
                                    manifest,
                                    lost,
                                    holders,
                                };
                                let r = run_repair(net, book, pay, job).await;
                                (object, r, started.elapsed())
                            }
                            .boxed(),
                        );
                    }
                }
            }
            self.flush_verdicts(&mut nonces);
            self.forward_settlements(&mut settles);
            let timeout = self
                .guard
                .poll_timeout()
                .map(|t| tokio::time::Instant::from_std(self.clock + t));
            tokio::select! {
                () = cancel.cancelled() => break,
                Some(done) = challenges.next() => {
                    if let Some((op, outcome)) = done {
                        aborts.remove(&op);
                        let now = self.now();
                        self.guard.handle_event(op, outcome, now);
                    }
                }
                Some((object, result, took)) = repairs.next() => {
                    self.repair_ended(object, result, took)
                }
                Some((reply, id, result)) = fetches.next() => self.fetched(reply, id, result),
                Some((seq, result)) = settles.next() => match result {
                    Ok(()) => {
                        if let Err(e) = self.db.outbox_done(seq) {
                            tracing::warn!(%e, seq, "cannot drop a settled outbox row");
                        }
                    }
                    Err(e) => {
                        tracing::warn!(seq, error = %e, "the Escrow did not take verdicts; retrying");
                        self.settle_retry = Instant::now() + Duration::from_secs(2);
                    }
                },
                Some(call) = calls.recv() => {
                    if let Some(f) = self.answer(call, fetches.len()) {
                        fetches.push(f);
                    }
                }
                () = sleep_until(timeout) => {
                    let now = self.now();
                    self.guard.handle_timeout(now);
                }
            }
        }
        for (_, h) in aborts {
            h.abort();
        }
        self.flush_verdicts(&mut nonces);
    }

    /// Signs and stores the verdicts the machine emitted, then reports them to the Hub.
    fn flush_verdicts(&mut self, nonces: &mut HashMap<OpId, [u8; 32]>) {
        let mut batch = Batch::default();
        let mut results = Vec::new();
        let mut lines = Vec::new();
        let guard_peer = libp2p::identity::PublicKey::from(self.key.public()).to_peer_id();
        while let Some(v) = self.guard.poll_verdict() {
            let nonce = nonces.remove(&v.op).unwrap_or_default();
            let body = verdict_body(&v, guard_peer, &nonce);
            lines.push(VerdictLine {
                host: body.host.clone(),
                root: body.root.clone(),
                epoch: body.epoch,
                passed: body.passed,
            });
            match Signed::sign(&body, &self.key).and_then(|s| {
                serde_json::to_vec(&s).map_err(|e| btfs_core::signed::SignedError::Field {
                    field: "verdict",
                    why: e.to_string(),
                })
            }) {
                Ok(json) => batch.verdicts.push((body.host.clone(), json)),
                Err(e) => tracing::warn!(%e, "cannot sign a verdict"),
            }
            if !v.passed {
                tracing::info!(host = %v.host, object = %v.object, slab = v.slab, shard = v.shard,
                    reason = v.reason.as_deref().unwrap_or(""), "audit failed");
            }
            results.push((v.host.peer(), v.passed));
        }
        if self.escrow.is_some() {
            for chunk in lines.chunks(btfs_core::escrow::terms::MAX_VERDICTS_PER_BATCH) {
                if let Ok(json) = serde_json::to_vec(chunk) {
                    batch.settle.push(json);
                }
            }
        }
        let epoch = self.guard.epoch();
        if self.last_epoch != Some(epoch) {
            batch.epoch = Some(epoch);
        }
        if batch.is_empty() {
            return;
        }
        match self.db.write(&batch) {
            Ok(()) => {
                self.last_epoch = Some(epoch);
                self.book.record_audits(&results);
            }
            Err(e) => tracing::error!(%e, "cannot store verdicts; they are not reported"),
        }
    }

    /// Sends the oldest outbox rows to the Escrow as signed batches (one send at a time; a row
    /// leaves the outbox only when the Escrow acknowledged it, so a crash resends it, which the
    /// Escrow counts as a duplicate).
    fn forward_settlements(&mut self, settles: &mut FuturesUnordered<BoxFuture<'static, Settled>>) {
        let Some(escrow) = &self.escrow else {
            return;
        };
        if !settles.is_empty() || Instant::now() < self.settle_retry {
            return;
        }
        let rows = match self.db.outbox(8) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(%e, "cannot read the Escrow outbox");
                return;
            }
        };
        let peer = libp2p::identity::PublicKey::from(self.key.public())
            .to_peer_id()
            .to_base58();
        for (seq, json) in rows {
            let verdicts: Vec<VerdictLine> = match serde_json::from_slice(&json) {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!(%e, seq, "dropping an unreadable outbox row");
                    let _ = self.db.outbox_done(seq);
                    continue;
                }
            };
            let body = Settle {
                peer_id: peer.clone(),
                seq,
                issued_at_ms: now_ms(),
                verdicts,
            };
            let batch = match Signed::sign(&body, &self.key) {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(%e, seq, "cannot sign verdicts for the Escrow; dropping them");
                    let _ = self.db.outbox_done(seq);
                    continue;
                }
            };
            let escrow = escrow.clone();
            settles.push(
                async move {
                    let r = match escrow.request(EscrowRequest::Settle { batch }).await {
                        Ok(_) => Ok(()),
                        Err((_, msg)) => Err(msg),
                    };
                    (seq, r)
                }
                .boxed(),
            );
        }
    }

    fn repair_ended(
        &mut self,
        object: Root,
        result: Result<RepairReport, RepairFailure>,
        took: Duration,
    ) {
        let now = self.now();
        let result = match result {
            Ok(report) => match self.commit_repair(object, &report) {
                Ok(()) => Ok(report),
                Err(e) => Err(format!("cannot record the repair: {e}").into()),
            },
            Err(e) => Err(e),
        };
        match &result {
            Ok(r) => {
                let stats = guard_wire::RepairStats {
                    ms: took.as_millis() as u64,
                    shards: r.repaired.len(),
                    bytes_fetched: r.bytes_fetched,
                    bytes_placed: r.bytes_placed,
                };
                tracing::info!(%object, shards = stats.shards, ms = stats.ms,
                    fetched = stats.bytes_fetched, placed = stats.bytes_placed, "repair done");
                self.last_repair.insert(object, stats);
            }
            Err(e) => tracing::warn!(%object, error = %e, "repair failed"),
        }
        if let Err(e) = self.guard.repair_done(object, result, now) {
            tracing::warn!(%object, %e, "repair result not accepted");
        }
    }

    /// Writes the new holders and their signed placement updates in one transaction.
    fn commit_repair(&mut self, object: Root, report: &RepairReport) -> Result<(), String> {
        if report.repaired.is_empty() {
            return Ok(());
        }
        let id = object.to_hex();
        let guard_peer = libp2p::identity::PublicKey::from(self.key.public()).to_peer_id();
        let mut batch = Batch::default();
        let mut per_slab: BTreeMap<u64, Vec<ShardMove>> = BTreeMap::new();
        for r in &report.repaired {
            batch.holders.push(HolderRow {
                object: id.clone(),
                slab: r.slab,
                shard: r.shard,
                host: r.host.peer().to_base58(),
            });
            per_slab.entry(r.slab).or_default().push(ShardMove {
                slab: r.slab,
                shard: r.shard,
                root: r.root.to_hex(),
                host: r.host.peer().to_base58(),
            });
        }
        let mut seq = self.db.placements(&id).map_err(|e| e.to_string())?.len() as u64;
        for moves in per_slab.into_values() {
            for chunk in moves.chunks(MAX_MOVES) {
                seq += 1;
                let update = PlacementUpdate {
                    peer_id: guard_peer.to_base58(),
                    manifest_id: id.clone(),
                    seq,
                    moves: chunk.to_vec(),
                    issued_at_ms: now_ms(),
                };
                let signed = Signed::sign(&update, &self.key).map_err(|e| e.to_string())?;
                let json = serde_json::to_vec(&signed).map_err(|e| e.to_string())?;
                batch.placements.push((id.clone(), json));
            }
        }
        self.db.write(&batch).map_err(|e| e.to_string())?;
        *self.repaired.entry(object).or_default() += report.repaired.len() as u64;
        Ok(())
    }

    /// Answers a request now, or returns the manifest fetch a `watch` needs.
    fn answer(&mut self, call: Call, fetching: usize) -> Option<BoxFuture<'static, Fetched>> {
        let parse = |id: &str| {
            Root::from_hex(id).map_err(|e| (Status::BadRequest, format!("manifest_id: {e}")))
        };
        let result = match call.request {
            GuardRequest::Watch { manifest_id } => match parse(&manifest_id) {
                Err(e) => Err(e),
                Ok(id) if self.guard.objects().any(|o| o == id) => Ok(GuardResponse::Watching {
                    manifest_id,
                    slabs: self.guard.health(id).map_or(0, |h| h.slabs.len() as u64),
                    new: false,
                }),
                Ok(_) if fetching >= MAX_WATCH_FETCHES => Err((
                    Status::Busy,
                    "the Guard is busy fetching other manifests; retry in a few seconds".into(),
                )),
                Ok(id) => {
                    let net = self.net.clone();
                    let addrs = self.book.addrs();
                    let reply = call.reply;
                    return Some(
                        async move { (reply, id, fetch_manifest(net, addrs, id).await) }.boxed(),
                    );
                }
            },
            GuardRequest::Health { manifest_id } => parse(&manifest_id).and_then(|id| {
                self.health(id)
                    .map(GuardResponse::Health)
                    .ok_or((Status::NotFound, not_watched(&manifest_id)))
            }),
            GuardRequest::Placement { manifest_id } => parse(&manifest_id).and_then(|id| {
                if !self.guard.objects().any(|o| o == id) {
                    return Err((Status::NotFound, not_watched(&manifest_id)));
                }
                let rows = self
                    .db
                    .placements(&manifest_id)
                    .map_err(|e| (Status::Internal, e.to_string()))?;
                Ok(GuardResponse::Placement {
                    updates: rows
                        .iter()
                        .filter_map(|r| serde_json::from_slice(r).ok())
                        .collect(),
                })
            }),
            GuardRequest::Audits { host, limit } => match host.parse::<PeerId>() {
                Err(e) => Err((Status::BadRequest, format!("host: {e}"))),
                Ok(peer) => self
                    .db
                    .verdicts(&peer.to_base58(), limit.min(MAX_AUDITS_ANSWER) as usize)
                    .map_err(|e| (Status::Internal, e.to_string()))
                    .map(|rows| GuardResponse::Audits {
                        verdicts: rows
                            .iter()
                            .filter_map(|r| serde_json::from_slice(r).ok())
                            .collect(),
                    }),
            },
        };
        let _ = call.reply.send(result);
        None
    }

    fn fetched(&mut self, reply: Reply, id: Root, result: Result<(Manifest, Vec<u8>), String>) {
        let answer = match result {
            Err(e) => Err((Status::NotFound, e)),
            Ok((manifest, bytes)) => {
                let slabs = manifest.slabs().len() as u64;
                let already = self.guard.objects().any(|o| o == id);
                if already {
                    Ok(GuardResponse::Watching {
                        manifest_id: id.to_hex(),
                        slabs,
                        new: false,
                    })
                } else {
                    // Durable first: a watched object must survive a restart.
                    let batch = Batch {
                        objects: vec![(id.to_hex(), bytes)],
                        ..Batch::default()
                    };
                    match self.db.write(&batch) {
                        Err(e) => Err((Status::Internal, e.to_string())),
                        Ok(()) => {
                            let now = self.now();
                            match self.guard.watch(manifest, now) {
                                Ok(_) => {
                                    tracing::info!(object = %id, slabs, "watching");
                                    Ok(GuardResponse::Watching {
                                        manifest_id: id.to_hex(),
                                        slabs,
                                        new: true,
                                    })
                                }
                                Err(e) => Err((Status::QuotaExceeded, e.to_string())),
                            }
                        }
                    }
                }
            }
        };
        let _ = reply.send(answer);
    }

    fn health(&self, id: Root) -> Option<ObjectHealth> {
        let h = self.guard.health(id)?;
        Some(ObjectHealth {
            manifest_id: id.to_hex(),
            epoch: self.guard.epoch(),
            repair_threshold: self.guard.config().repair_threshold,
            repaired_shards: self.repaired.get(&id).copied().unwrap_or(0),
            last_repair: self.last_repair.get(&id).cloned(),
            last_repair_error: h.last_repair_error.clone(),
            slabs: h
                .slabs
                .iter()
                .map(|s| guard_wire::SlabHealth {
                    slab: s.slab,
                    healthy: s.healthy,
                    shards: s
                        .shards
                        .iter()
                        .map(|x| guard_wire::ShardHealth {
                            shard: x.shard,
                            root: x.root.to_hex(),
                            host: x.host.peer().to_base58(),
                            last_epoch: x.last_epoch,
                            passed: x.passed,
                            fails: x.consecutive_failures,
                        })
                        .collect(),
                })
                .collect(),
        })
    }
}

fn not_watched(id: &str) -> String {
    format!("the Guard does not watch {id}: register it first (uploads do this automatically)")
}

fn verdict_body(v: &Verdict, guard: PeerId, nonce: &[u8; 32]) -> AuditVerdict {
    AuditVerdict {
        peer_id: guard.to_base58(),
        host: v.host.peer().to_base58(),
        root: v.root.to_hex(),
        manifest_id: v.object.to_hex(),
        slab: v.slab,
        shard: v.shard,
        epoch: v.epoch,
        nonce: Root::from_bytes(*nonce).to_hex(),
        passed: v.passed,
        reason: v.reason.as_ref().map(|r| r.chars().take(200).collect()),
        issued_at_ms: now_ms(),
    }
}

async fn challenge_one(
    net: Net,
    peer: PeerId,
    addrs: Vec<Multiaddr>,
    challenge: btfs_core::proof::Challenge,
    deadline: Duration,
) -> AuditOutcome {
    if addrs.is_empty() {
        return AuditOutcome::Failed(btfs_core::engine::Failure::Unreachable);
    }
    if net.connect(peer, addrs).await.is_err() {
        return AuditOutcome::Failed(btfs_core::engine::Failure::Unreachable);
    }
    match shard_client::challenge(&mut net.control(), peer, &challenge, deadline).await {
        Ok(proof) => AuditOutcome::Proof(proof),
        Err(e) => AuditOutcome::Failed(failure_of(&e)),
    }
}

/// One repair the machine asked for.
struct RepairJob {
    object: Root,
    manifest: Manifest,
    lost: BTreeMap<u64, std::collections::BTreeSet<usize>>,
    holders: Vec<Vec<HostId>>,
}

/// Runs one repair; with `pay`, only on hosts that took a funded repair offer, and commits
/// their contracts afterwards ([`super::pay`]).
async fn run_repair(
    net: Net,
    book: Arc<dyn HostBook>,
    pay: Option<RepairPay>,
    job: RepairJob,
) -> Result<RepairReport, RepairFailure> {
    let addrs: HashMap<PeerId, Vec<Multiaddr>> = book
        .addrs()
        .into_iter()
        .map(|(p, a)| (p, crate::tenant::preferred_addrs(&a)))
        .collect();
    let ranked = book.ranked(REPAIR_CANDIDATES);
    let layout = *job.manifest.layout();
    let funded = match &pay {
        Some(p) => Some(
            p.fund(
                &net,
                &addrs,
                job.object,
                &layout,
                &job.lost,
                &job.holders,
                &ranked,
            )
            .await?,
        ),
        None => None,
    };
    let candidates: Vec<HostId> = match &funded {
        Some(f) => f.hosts(),
        None => ranked.iter().map(|(p, _)| HostId::new(*p)).collect(),
    };
    let mut runner = Runner::new(net.clone(), addrs.clone());
    let result = match Repair::new(
        job.manifest,
        job.lost,
        candidates,
        RepairConfig::default(),
        runner.now(),
    ) {
        Err(e) => Err(e.to_string().into()),
        Ok(mut m) => {
            loop {
                runner.apply_all(&mut m);
                if m.is_finished() {
                    break;
                }
                runner.step(&mut m).await;
            }
            match m.take_result() {
                Some(r) => r.map_err(|e| e.to_string().into()),
                None => Err("the repair stopped without a result".into()),
            }
        }
    };
    if let (Some(p), Some(f)) = (&pay, &funded) {
        match &result {
            Ok(report) => match p.commit(&net, &addrs, job.object, &layout, f, report).await {
                Ok(c) => tracing::info!(object = %job.object, contracts = c.contracts,
                    locked = c.locked, reserved = f.amount, unsigned = c.unsigned.len(),
                    "repair contracts committed from the repair allowance"),
                // The shards are placed; their offers expire back into the allowance.
                Err(e) => tracing::warn!(object = %job.object, error = %e,
                    "cannot commit the repair's contracts"),
            },
            Err(_) => p.void(f).await,
        }
    }
    result
}

/// Fetches and verifies the manifest `id` from the known hosts, [`MANIFEST_FANOUT`] at a time.
async fn fetch_manifest(
    net: Net,
    addrs: HashMap<PeerId, Vec<Multiaddr>>,
    id: Root,
) -> Result<(Manifest, Vec<u8>), String> {
    let hosts: Vec<(PeerId, Vec<Multiaddr>)> = addrs.into_iter().collect();
    let mut errors = 0usize;
    for batch in hosts.chunks(MANIFEST_FANOUT) {
        let mut tries: FuturesUnordered<_> = batch
            .iter()
            .cloned()
            .map(|(peer, a)| {
                let net = net.clone();
                async move {
                    net.connect(peer, crate::tenant::preferred_addrs(&a))
                        .await
                        .map_err(|e| e.to_string())?;
                    shard_client::get(&mut net.control(), peer, id, MAX_MANIFEST_LEN as u32)
                        .await
                        .map_err(|e| e.to_string())
                }
            })
            .collect();
        while let Some(r) = tries.next().await {
            match r {
                Ok(bytes) if Root::of(&bytes) == id => match Manifest::decode(&bytes) {
                    Ok(m) => return Ok((m, bytes)),
                    Err(e) => return Err(format!("blob {id} is not a manifest: {e}")),
                },
                _ => errors += 1,
            }
        }
    }
    Err(format!(
        "no host of the network holds manifest {id} ({errors} asked): upload it first, or check the id"
    ))
}

/// Reads requests from inbound Guard streams and hands them to the Guard task.
async fn accept(
    mut incoming: mpsc::Receiver<Inbound>,
    calls: mpsc::Sender<Call>,
    cancel: CancellationToken,
) {
    let streams = Arc::new(Semaphore::new(MAX_STREAMS));
    loop {
        let (peer, stream) = tokio::select! {
            () = cancel.cancelled() => break,
            next = incoming.recv() => match next { Some(s) => s, None => break },
        };
        let Ok(permit) = streams.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "guard stream dropped: too many at once");
            continue;
        };
        let calls = calls.clone();
        tokio::spawn(async move {
            serve_stream(stream, calls).await;
            drop(permit);
        });
    }
}

async fn serve_stream(mut stream: Stream, calls: mpsc::Sender<Call>) {
    let read = async {
        let mut len = [0u8; 4];
        stream.read_exact(&mut len).await?;
        let len = u32::from_le_bytes(len);
        if len > MAX_REQUEST_LEN {
            return Ok(Err(format!(
                "request of {len} bytes exceeds the limit of {MAX_REQUEST_LEN}"
            )));
        }
        let mut body = vec![0u8; len as usize];
        stream.read_exact(&mut body).await?;
        Ok::<_, std::io::Error>(guard_wire::decode_request(&body))
    };
    let request = match tokio::time::timeout(REQUEST_DEADLINE, read).await {
        Ok(Ok(Ok(r))) => r,
        Ok(Ok(Err(msg))) => {
            let _ = respond(&mut stream, Status::BadRequest, msg.as_bytes(), true).await;
            return;
        }
        _ => return,
    };
    let (reply, rx) = oneshot::channel();
    let (status, body) = match calls.try_send(Call { request, reply }) {
        Err(_) => (
            Status::Busy,
            b"the Guard is busy; retry in a few seconds".to_vec(),
        ),
        Ok(()) => match tokio::time::timeout(Duration::from_secs(60), rx).await {
            Ok(Ok(Ok(response))) => match serde_json::to_vec(&response) {
                Ok(json) => (Status::Ok, json),
                Err(e) => (Status::Internal, e.to_string().into_bytes()),
            },
            Ok(Ok(Err((status, msg)))) => (status, msg.into_bytes()),
            _ => (
                Status::Internal,
                b"the Guard did not answer in time".to_vec(),
            ),
        },
    };
    let _ = respond(&mut stream, status, &body, false).await;
}

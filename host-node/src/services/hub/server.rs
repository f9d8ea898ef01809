//! The running Hub: answers Hub-protocol requests from [`Net::serve_hub`]'s queue, probes every
//! registered host on an interval, and persists changes.
//!
//! One task owns the [`Registry`]; it handles one request at a time (scoring is in-memory and
//! takes milliseconds even for 100,000 hosts), while probe rounds run in a side task and report
//! back over a bounded channel. An accepted ad is committed to the database before the host is
//! told `Accepted`; each probe round's changes are committed together when the round ends.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use btfs_core::hub::{HubRequest, HubResponse, MAX_COUNT, MAX_EXCLUDE};
use btfs_core::signed::HostAd;
use futures::StreamExt;
use libp2p::{Multiaddr, PeerId};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::db::{DbError, HubDb};
use super::registry::Registry;
use crate::net::{is_native, HubCall, Net, NetError};
use crate::services::status::admission::NewPeerBudget;

/// Hub settings.
#[derive(Debug, Clone)]
pub struct HubOptions {
    /// How often every host is probed (a dead host leaves recommendations within two).
    pub probe_interval: Duration,
    /// How often hosts are asked to re-announce.
    pub announce_interval: Duration,
    /// Registry capacity.
    pub max_hosts: usize,
    /// Accepted clock skew of ads.
    pub max_skew: Duration,
    /// Probes in flight at once.
    pub probe_concurrency: usize,
    /// New hosts one IP address (IPv6: /64) may register per `new_host_window` (the same
    /// budget Status applies, [`crate::services::status::admission::NewPeerBudget`]), so fresh keys from
    /// one machine cannot fill the registry — and with it Status, which admits what the Hub
    /// knows.
    pub new_hosts_per_ip: u32,
    /// The window of `new_hosts_per_ip`.
    pub new_host_window: Duration,
    /// A host that has not announced for this long is forgotten, in memory and in `hub.redb`
    /// (checked once per probe interval and on open).
    pub forget_after: Duration,
}

impl Default for HubOptions {
    fn default() -> Self {
        Self {
            probe_interval: Duration::from_secs(30),
            announce_interval: Duration::from_secs(300),
            max_hosts: 1_000_000,
            max_skew: Duration::from_secs(300),
            probe_concurrency: 64,
            new_hosts_per_ip: 64,
            new_host_window: Duration::from_secs(600),
            forget_after: Duration::from_millis(super::registry::DEFAULT_FORGET_AFTER_MS),
        }
    }
}

/// Unix time in ms.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A Hub could not start.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// Database.
    #[error(transparent)]
    Db(#[from] DbError),
    /// Network.
    #[error(transparent)]
    Net(#[from] NetError),
}

/// A running Hub.
pub struct HubHandle {
    registry: Arc<Mutex<Registry>>,
    task: tokio::task::JoinHandle<()>,
}

impl HubHandle {
    /// Hosts registered.
    pub fn len(&self) -> usize {
        self.registry.lock().map(|r| r.len()).unwrap_or(0)
    }

    /// Whether no host is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The registry as the Guard's address book, ranking and audit sink.
    pub fn book(&self) -> Arc<dyn crate::services::guard::HostBook> {
        Arc::new(RegistryBook(self.registry.clone()))
    }

    /// "Does the Hub hold a valid ad for this peer?", for Status admission.
    pub fn known_hosts(&self) -> Arc<dyn crate::services::status::KnownHosts> {
        self.registry.clone()
    }

    /// Waits for the Hub task (after its cancellation token fired).
    pub async fn join(self) {
        let _ = self.task.await;
    }
}

enum ProbeEvent {
    Result(PeerId, bool),
    RoundDone,
}

/// Opens `dir/hub.redb`, loads the registry and starts serving on `net`.
pub async fn start(
    net: Net,
    dir: &Path,
    opts: HubOptions,
    cancel: CancellationToken,
) -> Result<HubHandle, HubError> {
    let db = Arc::new(HubDb::open(dir)?);
    let mut registry = Registry::new(opts.max_hosts).with_forget_after(ms(opts.forget_after));
    let now = now_ms();
    let records = db.load()?;
    let stored = records.len();
    let mut expired = Vec::new();
    for r in records {
        if registry.is_expired(&r, now) {
            if let Ok(v) = r.ad.verify::<HostAd>() {
                expired.push(v.peer);
            }
            continue;
        }
        if let Err(e) = registry.load(r, now) {
            tracing::warn!(%e, "skipping a stored host that no longer verifies");
        }
    }
    if !expired.is_empty() {
        db.remove(&expired)?;
        tracing::info!(
            forgotten = expired.len(),
            "forgot stored hosts that stopped announcing"
        );
    }
    tracing::info!(hosts = registry.len(), stored, "hub registry loaded");
    let registry = Arc::new(Mutex::new(registry));
    let calls = net.serve_hub().await?;
    let task = tokio::spawn(run(net, db, registry.clone(), calls, opts, cancel));
    Ok(HubHandle { registry, task })
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn lock(r: &Mutex<Registry>) -> std::sync::MutexGuard<'_, Registry> {
    r.lock().unwrap_or_else(|p| p.into_inner())
}

async fn save(db: &Arc<HubDb>, registry: &Arc<Mutex<Registry>>) {
    let dirty = lock(registry).take_dirty();
    if dirty.is_empty() {
        return;
    }
    let db = db.clone();
    let n = dirty.len();
    match tokio::task::spawn_blocking(move || db.save(&dirty)).await {
        Ok(Ok(())) => tracing::trace!(n, "hub records saved"),
        Ok(Err(e)) => tracing::error!(%e, "cannot save hub records"),
        Err(e) => tracing::error!(%e, "hub save task failed"),
    }
}

/// Forgets hosts that stopped announcing, in memory and in the database.
async fn forget(db: &Arc<HubDb>, registry: &Arc<Mutex<Registry>>) {
    let gone = lock(registry).expire(now_ms());
    if gone.is_empty() {
        return;
    }
    let (db, n) = (db.clone(), gone.len());
    match tokio::task::spawn_blocking(move || db.remove(&gone)).await {
        Ok(Ok(())) => tracing::info!(n, "forgot hosts that stopped announcing"),
        Ok(Err(e)) => tracing::error!(%e, "cannot delete forgotten hub records"),
        Err(e) => tracing::error!(%e, "hub delete task failed"),
    }
}

async fn run(
    net: Net,
    db: Arc<HubDb>,
    registry: Arc<Mutex<Registry>>,
    mut calls: mpsc::Receiver<HubCall>,
    opts: HubOptions,
    cancel: CancellationToken,
) {
    let (probe_tx, mut probe_rx) = mpsc::channel::<ProbeEvent>(1024);
    let mut tick = tokio::time::interval(opts.probe_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut round_running = false;
    let mut budget = NewPeerBudget::new(
        opts.new_hosts_per_ip,
        u64::try_from(opts.new_host_window.as_millis()).unwrap_or(u64::MAX),
        65_536,
    );
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            call = calls.recv() => {
                let Some(call) = call else { break };
                let probe_new = handle(call, &db, &registry, &opts, &mut budget).await;
                if let Some((peer, addrs)) = probe_new {
                    let (net, tx, timeout) = (net.clone(), probe_tx.clone(), opts.probe_interval);
                    tokio::spawn(async move {
                        let ok = probe(&net, peer, addrs, timeout).await;
                        let _ = tx.send(ProbeEvent::Result(peer, ok)).await;
                    });
                }
            }
            _ = tick.tick(), if !round_running => {
                forget(&db, &registry).await;
                let targets = lock(&registry).probe_targets();
                if targets.is_empty() {
                    continue;
                }
                round_running = true;
                let (net, tx) = (net.clone(), probe_tx.clone());
                let (timeout, conc) = (opts.probe_interval, opts.probe_concurrency.max(1));
                tokio::spawn(async move {
                    let mut results = futures::stream::iter(targets)
                        .map(|(peer, addrs)| {
                            let net = net.clone();
                            async move { (peer, probe(&net, peer, addrs, timeout).await) }
                        })
                        .buffer_unordered(conc);
                    while let Some((peer, ok)) = results.next().await {
                        if tx.send(ProbeEvent::Result(peer, ok)).await.is_err() {
                            return;
                        }
                    }
                    let _ = tx.send(ProbeEvent::RoundDone).await;
                });
            }
            Some(event) = probe_rx.recv() => match event {
                ProbeEvent::Result(peer, ok) => {
                    if !ok {
                        tracing::debug!(%peer, "probe failed");
                    }
                    lock(&registry).record_probe(&peer, ok, now_ms());
                }
                ProbeEvent::RoundDone => {
                    round_running = false;
                    lock(&registry).refresh_all(now_ms());
                    save(&db, &registry).await;
                }
            },
        }
    }
    save(&db, &registry).await;
    tracing::debug!("hub stopped");
}

/// One liveness probe: a `Probe` request answered with `Pong` within `timeout`. Dials the
/// host's TCP and QUIC addresses (what native tenants use; dialing every transport at once would
/// set up and tear down WebRTC sessions for nothing), or all of them if it has neither.
async fn probe(net: &Net, peer: PeerId, addrs: Vec<Multiaddr>, timeout: Duration) -> bool {
    let native: Vec<Multiaddr> = addrs.iter().filter(|a| is_native(a)).cloned().collect();
    let addrs = if native.is_empty() { addrs } else { native };
    let req = net.hub_request(peer, addrs, HubRequest::Probe);
    matches!(
        tokio::time::timeout(timeout, req).await,
        Ok(Ok(HubResponse::Pong))
    )
}

/// Answers one call; returns a host to probe right away (a host that just announced).
async fn handle(
    call: HubCall,
    db: &Arc<HubDb>,
    registry: &Arc<Mutex<Registry>>,
    opts: &HubOptions,
    budget: &mut NewPeerBudget,
) -> Option<(PeerId, Vec<Multiaddr>)> {
    let HubCall {
        peer,
        source,
        request,
        reply,
    } = call;
    let mut probe_now = None;
    let (response, accepted) = answer(
        &mut lock(registry),
        budget,
        peer,
        source,
        request,
        now_ms(),
        opts,
    );
    if accepted {
        save(db, registry).await;
        probe_now = lock(registry)
            .probe_targets_of(&peer)
            .map(|addrs| (peer, addrs));
    }
    let _ = reply.send(response);
    probe_now
}

/// The Hub's answer to `request` from `peer` at `now_ms`, and whether it accepted an ad (then
/// the caller saves the registry before replying and probes the host). No I/O, so the fuzz
/// target `hub_serve` drives exactly what a Hub does with a request.
pub fn answer(
    registry: &mut Registry,
    budget: &mut NewPeerBudget,
    peer: PeerId,
    source: Option<std::net::IpAddr>,
    request: HubRequest,
    now_ms: u64,
    opts: &HubOptions,
) -> (HubResponse, bool) {
    let mut accepted = false;
    let response = match request {
        HubRequest::Announce(signed) => match signed.verify::<HostAd>() {
            Err(e) => HubResponse::Refused {
                reason: e.to_string(),
            },
            Ok(ad) => {
                let known = registry.advertised_capacity(&ad.peer).is_some();
                let over_budget = match source {
                    Some(ip) if !known && ad.peer == peer => budget.check(ip, now_ms).err(),
                    _ => None,
                };
                let result = match over_budget {
                    Some(wait_ms) => Err(format!(
                        "this address already registered {} new hosts recently; a new host \
                         from it is accepted again in {} s",
                        opts.new_hosts_per_ip,
                        wait_ms.div_ceil(1000)
                    )),
                    None => registry
                        .announce(ad, signed, peer, now_ms, opts.max_skew.as_millis() as u64)
                        .map_err(|e| e.to_string()),
                };
                match result {
                    Err(reason) => HubResponse::Refused { reason },
                    Ok(new) => {
                        if let (true, Some(ip)) = (new, source) {
                            budget.spend(ip, now_ms);
                        }
                        accepted = true;
                        tracing::debug!(%peer, new, "host announced");
                        HubResponse::Accepted {
                            next_announce_secs: opts.announce_interval.as_secs(),
                        }
                    }
                }
            }
        },
        HubRequest::Recommend(req) => {
            if req.count == 0 || req.count > MAX_COUNT {
                HubResponse::Error {
                    message: format!("count must be between 1 and {MAX_COUNT}"),
                }
            } else if req.prefs.exclude.len() > MAX_EXCLUDE {
                HubResponse::Error {
                    message: format!("at most {MAX_EXCLUDE} excluded hosts per request"),
                }
            } else {
                HubResponse::Recommendation(registry.recommend(&req))
            }
        }
        HubRequest::Hosts { limit } => {
            HubResponse::Hosts(registry.hosts(limit.min(MAX_COUNT) as usize))
        }
        HubRequest::Probe => HubResponse::Pong,
        // The node answers `Network` itself (`crate::net`); it never reaches the Hub.
        HubRequest::Network => HubResponse::Error {
            message: "ask the node, not its Hub, for the network".into(),
        },
    };
    (response, accepted)
}

/// The Hub registry seen by a Guard on the same node.
struct RegistryBook(Arc<Mutex<Registry>>);

impl crate::services::guard::HostBook for RegistryBook {
    fn addrs(&self) -> std::collections::HashMap<PeerId, Vec<Multiaddr>> {
        self.0
            .lock()
            .map(|r| r.probe_targets().into_iter().collect())
            .unwrap_or_default()
    }

    fn ranked(&self, limit: usize) -> Vec<(PeerId, u64)> {
        self.0
            .lock()
            .map(|r| {
                r.hosts(limit)
                    .into_iter()
                    .filter(|h| h.excluded.is_none())
                    .filter_map(|h| Some((h.peer_id.parse().ok()?, h.facts.price)))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn record_audits(&self, results: &[(PeerId, bool)]) {
        if let Ok(mut r) = self.0.lock() {
            let now = now_ms();
            for (peer, passed) in results {
                r.record_audit(peer, *passed, now);
            }
        }
    }
}

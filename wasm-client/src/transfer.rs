//! Upload and download in the browser: core's transfer machines (`btfs_core::engine::upload`
//! and `::download`, the very machines the native CLI runs) driven by [`crate::driver`] on the
//! page's event loop. This module only does what a page must do itself: know the hosts and
//! their browser addresses (from the network file and the Hub), dial them, read a `File` with
//! `Blob.slice`, and turn core's errors into [`ClientError`]s. Every placement, retry, hedge,
//! read-ahead, claim and release decision is the machine's.
//!
//! Memory: an upload holds the slabs the machine is placing (at most `slabs_in_flight`, 30 MiB
//! each at the default 1 MiB shards) plus one 1 MiB read; a `File` is read with `Blob.slice`,
//! never whole. A download holds what the machine prefetches (`slabs_ahead` slabs of shards)
//! plus one slab of plaintext, and is driven only while the caller asks for the next chunk.
//!
//! What a closed tab leaves behind (holds it neither claimed nor released), hosts sweep after
//! their grace period (rules in `btfs_core::protocol`).
//!
//! The Guard (`services.guard` of the network file, `btfs_core::guard_wire`): a finished upload
//! asks it to watch the object (its answer, or why not, is the report's `guard`); a download
//! first asks for its signed placement updates, checks them (`guard_wire::moves_from`: this
//! Guard's signature, this object, later `seq` wins) and hands the moves to the download
//! machine (`Download::with_moves`), so shards a repair moved are fetched from their new
//! holders. Neither ever fails because of the Guard. [`Client::audit`] challenges every shard's
//! holder itself and verifies each proof in wasm (`btfs_core::proof`): the page does not have to
//! trust the Guard's word.
//!
//! The Escrow (`services.escrow`): an upload's storage contracts are reserved before the
//! upload machine starts (it gets only the hosts that signed an offer) and committed after it
//! finished; a failed upload cancels its offers. The steps are `crate::contracts`'.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use btfs_core::engine::download::{
    Download as DownloadMachine, DownloadConfig, DownloadError, DownloadReport,
};
use btfs_core::engine::upload::{Upload, UploadConfig, UploadError};
use btfs_core::engine::{HostId, Machine, Moves};
use btfs_core::guard_wire::{self, GuardRequest, GuardResponse, ObjectHealth};
use btfs_core::hub::{check_recommendation, HubRequest, HubResponse};
use btfs_core::layout::{Layout, DEFAULT_SHARD_SIZE};
use btfs_core::proof::{
    self, AuditReport, ShardChallenge, ShardVerdict, AUDIT_PARALLEL, AUDIT_TIMEOUT,
};
use btfs_core::{EncodedSlab, Link, ObjectHeader, ObjectKey, Root, TOTAL_SHARDS};
use futures::future::{Either, LocalBoxFuture};
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use futures_timer::Delay;
use libp2p::{Multiaddr, PeerId};

use crate::contracts::{self, ContractsReport, PayPlan, Status, Wallet};
use crate::driver::Driver;
use crate::error::ClientError;
use crate::network_file::{self as network, BrowserHost, TransportChoice};
use crate::slab_source::SlabSource;
use crate::swarm::Node;

/// A host ready to dial.
pub struct Host {
    pub peer: PeerId,
    pub addrs: Vec<Multiaddr>,
}

/// Known hosts: in the order they were learnt (the network file first), and by peer id.
#[derive(Default)]
struct Hosts {
    list: Vec<Host>,
    index: HashMap<PeerId, usize>,
}

/// The client state shared by every call.
pub struct Client {
    pub node: Node,
    /// Borrowed only briefly, never across an await.
    hosts: RefCell<Hosts>,
    /// The network's Hub, if it has one.
    hub: Option<Host>,
    /// The network's Guard, if it has one.
    guard: Option<Host>,
    choice: TransportChoice,
    /// The wallet (the node's identity key).
    pub(crate) wallet: Wallet,
    /// How uploads pay: with an Escrow and a Guard in the network file.
    pub(crate) pay: Option<PayPlan>,
    /// The Status server's base URL, if the network has one.
    pub(crate) status_http: Option<String>,
}

/// Reports progress as (done, total) bytes.
pub type Progress = Rc<dyn Fn(f64, f64)>;

/// Reports one slab's progress as (slab, shards stored of 30, slabs in the object).
pub type SlabProgress = Rc<dyn Fn(u64, usize, u64)>;

/// What an upload tells its page as it goes (each optional).
#[derive(Clone, Default)]
pub struct UploadHooks {
    /// Bytes stored of the total.
    pub progress: Option<Progress>,
    /// A line the page may show (e.g. a devnet faucet top-up).
    pub status: Option<Status>,
    /// A slab's stored shard count, each time it grows.
    pub slab: Option<SlabProgress>,
}

/// A new upload, or the resumption of one whose journal is in IndexedDB.
pub enum UploadStart {
    /// A new object with this name and media type.
    New {
        /// File name (sealed in the manifest).
        name: String,
        /// Media type.
        mime: String,
    },
    /// Finish the journaled upload (`crate::upload_journal`) with the same file.
    Resume(Box<btfs_core::engine::journal::Journal>),
}

fn to_host(h: &BrowserHost) -> Result<Host, ClientError> {
    let peer: PeerId = h
        .peer_id
        .parse()
        .map_err(|e| ClientError::Js(format!("bad peer id {}: {e}", h.peer_id)))?;
    let addrs = h
        .addrs
        .iter()
        .filter_map(|a| a.parse::<Multiaddr>().ok())
        .map(|mut a| {
            if matches!(a.iter().last(), Some(libp2p::multiaddr::Protocol::P2p(_))) {
                a.pop();
            }
            a
        })
        .collect();
    Ok(Host { peer, addrs })
}

fn own_version() -> btfs_core::score::Version {
    btfs_core::signed::parse_version(env!("CARGO_PKG_VERSION")).unwrap_or((0, 0, 0))
}

impl Client {
    pub fn new(
        node: Node,
        network: &network::Network,
        choice: TransportChoice,
        wallet: Wallet,
    ) -> Result<Self, ClientError> {
        let guard = network.guard.as_ref().map(to_host).transpose()?;
        let pay = match (&network.escrow, &guard) {
            (Some(escrow), Some(guard)) => Some(PayPlan {
                escrow: to_host(escrow)?,
                guard: guard.peer,
                epoch_ms: network.guard_epoch_ms,
                epochs: PayPlan::epochs_for_days(
                    btfs_core::hub::UPLOAD_DAYS,
                    network.guard_epoch_ms,
                ),
                devnet: network.escrow_is_devnet,
            }),
            _ => None,
        };
        let client = Self {
            node,
            hosts: RefCell::default(),
            hub: network.hub.as_ref().map(to_host).transpose()?,
            guard,
            choice,
            wallet,
            pay,
            status_http: network.status_http.clone(),
        };
        let hosts = &network.hosts;
        for h in hosts {
            client.learn(to_host(h)?);
        }
        Ok(client)
    }

    /// Number of known hosts.
    pub fn host_count(&self) -> usize {
        self.hosts.borrow().list.len()
    }

    /// Every known host, in the order learnt.
    fn host_ids(&self) -> Vec<HostId> {
        self.hosts
            .borrow()
            .list
            .iter()
            .map(|h| HostId::new(h.peer))
            .collect()
    }

    fn knows(&self, peer: &PeerId) -> bool {
        self.hosts.borrow().index.contains_key(peer)
    }

    /// Adds a host unless known or without addresses; returns whether it is known now.
    fn learn(&self, host: Host) -> bool {
        let mut hosts = self.hosts.borrow_mut();
        if hosts.index.contains_key(&host.peer) {
            return true;
        }
        if host.addrs.is_empty() {
            return false;
        }
        let i = hosts.list.len();
        hosts.index.insert(host.peer, i);
        hosts.list.push(host);
        true
    }

    /// Adds (or finds) a host by peer id with its browser-dialable addresses.
    fn add_host(&self, peer_id: &str, addrs: &[String]) -> Option<PeerId> {
        let addrs = network::browser_addrs(addrs, self.choice);
        let host = to_host(&BrowserHost {
            peer_id: peer_id.into(),
            addrs,
        })
        .ok()?;
        let peer = host.peer;
        self.learn(host).then_some(peer)
    }

    async fn ask_hub(&self, request: HubRequest) -> Result<HubResponse, ClientError> {
        let Some(hub) = &self.hub else {
            return Err(ClientError::Hub("this network has no Hub".into()));
        };
        match self
            .node
            .hub_request(hub.peer, hub.addrs.clone(), request)
            .await?
        {
            HubResponse::Error { message } => Err(ClientError::Hub(message)),
            other => Ok(other),
        }
    }

    /// The Hub's listing of hosts (best first, at most [`btfs_core::hub::MAX_COUNT`]), each
    /// with the score this page recomputed from the listed facts and any reason not to trust
    /// the Hub's word for it (`btfs_core::hub::check_listing`).
    pub async fn hosts_listing(&self) -> Result<Vec<btfs_core::hub::ListedHost>, ClientError> {
        let limit = btfs_core::hub::MAX_COUNT;
        let HubResponse::Hosts(list) = self.ask_hub(HubRequest::Hosts { limit }).await? else {
            return Err(ClientError::Hub("unexpected answer to Hosts".into()));
        };
        Ok(btfs_core::hub::check_listing(list, own_version()))
    }

    /// Learns every host the Hub lists whose signed ad verifies.
    pub async fn refresh_from_hub(&self) -> Result<(), ClientError> {
        let limit = btfs_core::hub::MAX_COUNT;
        let HubResponse::Hosts(list) = self.ask_hub(HubRequest::Hosts { limit }).await? else {
            return Err(ClientError::Hub("unexpected answer to Hosts".into()));
        };
        for h in list {
            let ok =
                h.ad.verify::<btfs_core::signed::HostAd>()
                    .is_ok_and(|v| v.peer.to_base58() == h.peer_id && v.body.addrs == h.addrs);
            if ok {
                self.add_host(&h.peer_id, &h.addrs);
            }
        }
        Ok(())
    }

    /// Asks the Hub for upload hosts and checks its answer; returns them best first, each with
    /// its advertised price per GiB-month (checked against its signed ad).
    async fn recommend(&self, layout: &Layout) -> Result<Vec<(PeerId, u64)>, ClientError> {
        let req = btfs_core::hub::upload_request(layout);
        let HubResponse::Recommendation(rec) =
            self.ask_hub(HubRequest::Recommend(req.clone())).await?
        else {
            return Err(ClientError::Hub("unexpected answer to Recommend".into()));
        };
        let checked = check_recommendation(&rec, &req, own_version(), TOTAL_SHARDS)
            .map_err(ClientError::Hub)?;
        let prices: HashMap<&str, u64> = rec
            .hosts
            .iter()
            .map(|h| (h.peer_id.as_str(), h.facts.price))
            .collect();
        let picked: Vec<(PeerId, u64)> = checked
            .iter()
            .filter_map(|h| {
                let peer = self.add_host(&h.peer_id, &h.addrs)?;
                Some((peer, prices.get(h.peer_id.as_str()).copied().unwrap_or(0)))
            })
            .collect();
        if picked.len() < TOTAL_SHARDS {
            return Err(ClientError::Hub(format!(
                "only {} of the {} recommended hosts offer an address this browser can dial; hosts must listen on WebSocket or WebRTC-direct",
                picked.len(),
                checked.len()
            )));
        }
        Ok(picked)
    }

    async fn ask_guard(&self, request: GuardRequest) -> Result<GuardResponse, ClientError> {
        let Some(guard) = &self.guard else {
            return Err(ClientError::Guard(
                "this network has no Guard (its network file has no services.guard)".into(),
            ));
        };
        self.node
            .guard_request(guard.peer, guard.addrs.clone(), &request)
            .await
    }

    /// Asks the Guard to watch (audit and repair) the object `manifest_id`.
    async fn watch(&self, manifest_id: Root) -> Result<(), ClientError> {
        let req = GuardRequest::Watch {
            manifest_id: manifest_id.to_hex(),
        };
        match self.ask_guard(req).await? {
            GuardResponse::Watching { .. } => Ok(()),
            other => Err(ClientError::Guard(format!(
                "expected an answer to watch, got {other:?}"
            ))),
        }
    }

    /// The object's health as the Guard knows it.
    pub async fn health(&self, link: &Link) -> Result<ObjectHealth, ClientError> {
        let req = GuardRequest::Health {
            manifest_id: link.manifest_id.to_hex(),
        };
        match self.ask_guard(req).await? {
            GuardResponse::Health(h) if h.manifest_id == link.manifest_id.to_hex() => Ok(h),
            GuardResponse::Health(h) => Err(ClientError::Guard(format!(
                "asked for the health of {}, got {}",
                link.manifest_id.to_hex(),
                h.manifest_id
            ))),
            other => Err(ClientError::Guard(format!(
                "expected an answer to health, got {other:?}"
            ))),
        }
    }

    /// Where the Guard's checked placement updates say shards of `link` live now; none without
    /// a Guard or when it cannot be asked (a download never fails because of the Guard).
    async fn guard_moves(&self, link: &Link) -> Moves {
        let Some(guard) = &self.guard else {
            return Moves::new();
        };
        let req = GuardRequest::Placement {
            manifest_id: link.manifest_id.to_hex(),
        };
        let updates = match self.ask_guard(req).await {
            Ok(GuardResponse::Placement { updates }) => updates,
            Ok(other) => {
                warn(&format!(
                    "btfs: the Guard answered a placement request with {other:?}; using the manifest's hosts"
                ));
                return Moves::new();
            }
            Err(e) => {
                // Refused: the Guard does not watch this object (an upload without a Guard).
                warn(&format!(
                    "btfs: cannot ask the Guard where repaired shards are ({e}); using the manifest's hosts"
                ));
                return Moves::new();
            }
        };
        let (moves, skipped) = guard_wire::moves_from(&guard.peer, link.manifest_id, &updates);
        for why in skipped {
            warn(&format!("btfs: skipping {why}"));
        }
        moves
    }

    /// Connects to `peer`: its WebSocket addresses first, WebRTC-direct only if those fail
    /// (dialing both at once would let the slower transport win the race).
    pub async fn connect(&self, peer: PeerId) -> Result<(), ClientError> {
        let addrs = {
            let hosts = self.hosts.borrow();
            hosts
                .index
                .get(&peer)
                .map(|&i| hosts.list[i].addrs.clone())
                .unwrap_or_default()
        };
        let is_rtc = |a: &Multiaddr| {
            a.iter()
                .any(|p| matches!(p, libp2p::multiaddr::Protocol::WebRTCDirect))
        };
        let (rtc, ws): (Vec<Multiaddr>, Vec<Multiaddr>) = addrs.into_iter().partition(is_rtc);
        let mut last = ClientError::Dial {
            peer: peer.to_string(),
            reason: "no dialable address".into(),
        };
        for group in [ws, rtc] {
            if group.is_empty() {
                continue;
            }
            match self.node.connect(peer, group).await {
                Ok(()) => return Ok(()),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Encrypts, encodes and stores `blob`, then asks the Guard to watch it; returns its link
    /// and what the Guard said. With an Escrow, storage contracts are signed and funded before
    /// any byte moves and committed after (`crate::contracts`). A failed upload releases what it
    /// placed and cancels its offers (best effort) before it returns; the Guard's answer never
    /// fails an upload.
    ///
    /// With an IndexedDB wallet the upload keeps a journal (`crate::upload_journal`) as it
    /// goes; [`UploadStart::Resume`] finishes a journaled upload, checking the journaled shards
    /// on their hosts (core's `Upload::resume`) and sending only the rest.
    pub async fn upload(
        self: &Rc<Self>,
        blob: &web_sys::Blob,
        start: UploadStart,
        hooks: UploadHooks,
    ) -> Result<UploadResult, ClientError> {
        let UploadHooks {
            progress,
            status: on_status,
            slab: on_slab,
        } = hooks;
        let size = blob.size();
        let (layout, key, header, prior) = match start {
            UploadStart::New { name, mime } => {
                let mut key = [0u8; 32];
                getrandom::getrandom(&mut key).map_err(|e| ClientError::Js(e.to_string()))?;
                let layout = Layout::new(size as u64, DEFAULT_SHARD_SIZE)?;
                (
                    layout,
                    ObjectKey::from_bytes(key),
                    ObjectHeader { name, mime },
                    None,
                )
            }
            UploadStart::Resume(j) => {
                if j.holder != self.wallet.peer() {
                    return Err(ClientError::Js(format!(
                        "upload {} was started by wallet {}, this client's is {}: connect with that wallet to resume it",
                        j.id,
                        j.holder,
                        self.wallet.peer()
                    )));
                }
                if j.layout.plain_len() != size as u64 {
                    return Err(ClientError::Js(format!(
                        "this file is {size} bytes, but upload {} was of {} bytes ({}): pick the same file, or upload this one anew",
                        j.id,
                        j.layout.plain_len(),
                        j.source
                    )));
                }
                (j.layout, j.key.clone(), j.header.clone(), Some(j))
            }
        };
        // The journal: the resumed one, or a new one (only with a wallet that outlives the page).
        let journal_id = match &prior {
            Some(j) => Some(j.id.clone()),
            None if self.wallet.journaled() => {
                let mut id = [0u8; 8];
                getrandom::getrandom(&mut id).map_err(|e| ClientError::Js(e.to_string()))?;
                let j = btfs_core::engine::journal::Journal::new(
                    id.iter().map(|b| format!("{b:02x}")).collect(),
                    self.wallet.peer(),
                    layout,
                    key.clone(),
                    header.clone(),
                    js_sys::Date::now() as u64,
                    format!("{} ({} bytes)", header.name, layout.plain_len()),
                );
                match crate::upload_journal::start(&j).await {
                    Ok(()) => Some(j.id),
                    Err(e) => {
                        warn(&format!("btfs: this upload will not be resumable: {e}"));
                        None
                    }
                }
            }
            None => None,
        };
        let mut journal_ok = journal_id.is_some();
        let recommended = match self.hub {
            Some(_) => Some(self.recommend(&layout).await?),
            None => None,
        };
        // Contracts first: no byte moves before every host's offer is signed and funded.
        let reserved = match (&self.pay, &recommended) {
            (Some(_), Some(rec)) => Some(
                contracts::reserve(self, &layout, rec, TOTAL_SHARDS, on_status.as_ref()).await?,
            ),
            _ => None,
        };
        let candidates: Vec<HostId> = match (&reserved, recommended) {
            (Some(r), _) => r.hosts().map(HostId::new).collect(),
            (None, Some(rec)) => rec.into_iter().map(|(p, _)| HostId::new(p)).collect(),
            (None, None) => self.host_ids(),
        };
        let mut driver = Driver::new(self.clone());
        let cfg = UploadConfig::default();
        let mut m = match &prior {
            Some(j) => Upload::resume(j, candidates, cfg, driver.now()),
            None => Upload::new(layout, key.clone(), header, candidates, cfg, driver.now()),
        };
        let source = SlabSource::open(blob, &key, layout).await;
        let encoder = source.kind();
        let mut reader = Some(source);
        let mut reading: Option<Reading> = None;
        let mut pending: Option<EncodedSlab> = None;
        let mut input_error = None;
        let (mut pushed, slabs) = (0, layout.slab_count());
        let mut shown = 0.0;
        let mut slab_shown = vec![0usize; slabs as usize];
        let mut slab_low = 0u64;
        while !m.is_finished() {
            if let Some(slab) = pending.take() {
                match m.push_slab(slab) {
                    Ok(()) => pushed += 1,
                    Err(slab) => pending = Some(*slab),
                }
            }
            // Read while the machine takes slabs; after the last one, once more to reach the
            // end of the input (the encoder's checks, then `finish_input`).
            if pending.is_none() && reading.is_none() && (m.wants_slab() || pushed == slabs) {
                reading = reader.take().map(|r| r.next_slab().boxed_local());
            }
            let read = driver.step(&mut m, reading.as_mut()).await?;
            while let Some((slab, placed)) = m.poll_placed() {
                if let (Some(id), true) = (&journal_id, journal_ok) {
                    if let Err(e) = crate::upload_journal::placed(id, slab, &placed).await {
                        warn(&format!("btfs: this upload will not be resumable: {e}"));
                        journal_ok = false;
                    }
                }
            }
            if let Some((r, got)) = read {
                reading = None;
                match got {
                    Ok(Some(slab)) => {
                        reader = Some(r);
                        pending = Some(slab);
                    }
                    Ok(None) => m.finish_input(),
                    Err(e) => {
                        input_error = Some(e);
                        m.abort();
                    }
                }
            }
            if let Some(f) = &on_slab {
                // Slabs before `slab_low` are all stored; look from there to the newest pushed.
                while slab_low < slabs && m.placed_shards(slab_low) == TOTAL_SHARDS {
                    if slab_shown[slab_low as usize] < TOTAL_SHARDS {
                        slab_shown[slab_low as usize] = TOTAL_SHARDS;
                        f(slab_low, TOTAL_SHARDS, slabs);
                    }
                    slab_low += 1;
                }
                for s in slab_low..pushed.min(slabs) {
                    let n = m.placed_shards(s);
                    if n > slab_shown[s as usize] {
                        slab_shown[s as usize] = n;
                        f(s, n, slabs);
                    }
                }
            }
            if let Some(p) = &progress {
                let (done, total) = m.progress();
                let done = if total == 0 {
                    0.0
                } else {
                    size * done as f64 / total as f64
                };
                if done > shown {
                    shown = done;
                    p(done, size);
                }
            }
        }
        driver.perform(&mut m);
        let result = m.take_result();
        // A finished upload has claimed or released its shards: its journal is done, except
        // after a failure that may pass (no hosts, a lost network): then a resume can reuse
        // whatever the hosts still have.
        let keep = matches!(&result, Some(Err(e)) if e.resumable());
        if let (Some(id), false) = (&journal_id, keep) {
            if let Err(e) = crate::upload_journal::remove(id).await {
                warn(&format!(
                    "btfs: cannot remove a finished upload's journal: {e}"
                ));
            }
        }
        if let (Some(r), false) = (&reserved, matches!(result, Some(Ok(_)))) {
            contracts::cancel_all(self, r).await;
        }
        match result {
            Some(Ok(report)) => {
                if let Some(p) = &progress {
                    p(size, size);
                }
                let contracts = match &reserved {
                    Some(r) => Some(contracts::commit(self, r, &layout, &report).await?),
                    None => None,
                };
                let guard = match &self.guard {
                    None => None,
                    Some(_) => Some(match self.watch(report.link.manifest_id).await {
                        Ok(()) => "watching".to_string(),
                        Err(e) => {
                            warn(&format!(
                                "btfs: the upload succeeded but the Guard will not watch it: {e}"
                            ));
                            e.to_string()
                        }
                    }),
                };
                Ok(UploadResult {
                    link: report.link.to_string(),
                    bytes: report.bytes,
                    slabs: report.slabs,
                    hosts_used: report.hosts_used,
                    guard,
                    contracts,
                    resumed_shards: report.resumed_shards,
                    encoder,
                })
            }
            Some(Err(UploadError::Aborted)) if input_error.is_some() => {
                Err(input_error.unwrap_or(ClientError::Stalled))
            }
            Some(Err(e)) => Err(upload_error(e, &driver)),
            None => Err(ClientError::Stalled),
        }
    }

    /// Opens a download: finds and opens the manifest (a wrong key fails here, before any
    /// shard moves); the shards are fetched as [`Download::next_chunk`] asks for plaintext.
    pub async fn open(self: &Rc<Self>, link: Link) -> Result<Download, ClientError> {
        let (m, driver, _) = self.open_manifest(link).await?;
        let size = m.manifest().map_or(0, |m| m.layout().plain_len());
        let header = m.header().cloned().unwrap_or(ObjectHeader {
            name: String::new(),
            mime: String::new(),
        });
        Ok(Download {
            machine: m,
            driver,
            size,
            header,
            report: None,
        })
    }

    /// Runs the download machine for `link` (with the Guard's moves) until its manifest is
    /// open; learns unknown holders from the Hub. The machine's first shard requests are
    /// queued, not yet performed.
    async fn open_manifest(
        self: &Rc<Self>,
        link: Link,
    ) -> Result<(DownloadMachine, Driver, Moves), ClientError> {
        let moves = self.guard_moves(&link).await;
        let mut driver = Driver::new(self.clone());
        let candidates = self.host_ids();
        let cfg = DownloadConfig::default();
        let mut m = DownloadMachine::with_moves(link, candidates, moves.clone(), cfg, driver.now());
        while m.manifest().is_none() {
            if m.is_finished() {
                return Err(match m.take_result() {
                    Some(Err(e)) => download_error(e, &driver),
                    _ => ClientError::Stalled,
                });
            }
            driver.step(&mut m, None::<&mut Reading>).await?;
        }
        let unknown = m.manifest().is_some_and(|manifest| {
            let named = manifest
                .hosts()
                .iter()
                .filter_map(|id| HostId::from_bytes(id));
            let moved = moves.values().map(|(_, h)| *h);
            named.chain(moved).any(|h| !self.knows(&h.peer()))
        });
        if self.hub.is_some() && unknown {
            // Some holders are not known yet: the Hub knows every registered host. The
            // machine's first shard requests wait until then (they are performed later).
            self.refresh_from_hub().await?;
        }
        Ok((m, driver, moves))
    }

    /// Challenges every shard of `link` on its holder (the manifest's, or the Guard's checked
    /// placement update after a repair) and verifies each proof here; a fresh seed from the
    /// browser's crypto RNG, at most [`AUDIT_PARALLEL`] challenges at once, each within
    /// [`AUDIT_TIMEOUT`]. A shard passes only with a valid proof.
    pub async fn audit(self: &Rc<Self>, link: Link) -> Result<AuditReport, ClientError> {
        let started = js_sys::Date::now();
        let manifest_id = link.manifest_id;
        let (m, driver, moves) = self.open_manifest(link).await?;
        let manifest = m.manifest().cloned().ok_or(ClientError::Stalled)?;
        drop((m, driver)); // no shard is fetched
        let mut seed = [0u8; 32];
        getrandom::getrandom(&mut seed)
            .map_err(|e| ClientError::Js(format!("the browser's crypto RNG failed: {e}")))?;
        let mut challenges = proof::object_challenges(&manifest, &seed);
        proof::apply_moves(&mut challenges, &moves);
        let mut pending = challenges.into_iter();
        let mut running = FuturesUnordered::new();
        let mut verdicts = Vec::new();
        loop {
            while running.len() < AUDIT_PARALLEL {
                let Some(c) = pending.next() else { break };
                running.push(self.challenge_one(c));
            }
            match running.next().await {
                Some(v) => verdicts.push(v),
                None => break,
            }
        }
        let elapsed = (js_sys::Date::now() - started).max(0.0) as u64;
        Ok(AuditReport::from_verdicts(manifest_id, verdicts, elapsed))
    }

    async fn challenge_one(&self, c: ShardChallenge) -> (u64, ShardVerdict) {
        let started = js_sys::Date::now();
        let verdict = |passed: bool, reason: Option<String>, host: String| ShardVerdict {
            shard: c.shard,
            root: c.challenge.root.to_hex(),
            host,
            passed,
            reason,
            ms: (js_sys::Date::now() - started).max(0.0) as u64,
        };
        let Some(host) = c.host else {
            let why = "the manifest names no valid holder".to_string();
            return (c.slab, verdict(false, Some(why), String::new()));
        };
        let peer = host.peer();
        let name = peer.to_base58();
        if !self.knows(&peer) {
            let why = "the holder is not among the network's known hosts".to_string();
            return (c.slab, verdict(false, Some(why), name));
        }
        let answer = async {
            self.connect(peer).await.map_err(|e| e.to_string())?;
            self.node
                .challenge(peer, &c.challenge)
                .await
                .map_err(|e| e.to_string())
        };
        let timeout = Delay::new(AUDIT_TIMEOUT);
        futures::pin_mut!(answer);
        let v = match futures::future::select(answer, timeout).await {
            Either::Right(_) => {
                let why = format!("no answer within {} s", AUDIT_TIMEOUT.as_secs());
                verdict(false, Some(why), name)
            }
            Either::Left((Err(e), _)) => verdict(false, Some(e), name),
            Either::Left((Ok(p), _)) => match proof::verify(&c.challenge, &p) {
                Ok(()) => verdict(true, None, name),
                Err(e) => verdict(false, Some(format!("invalid proof: {e}")), name),
            },
        };
        (c.slab, v)
    }
}

/// A finished upload, as `uploadWithReport` gives it to JavaScript.
#[derive(Debug, Clone, serde::Serialize)]
pub struct UploadResult {
    /// The capability link.
    pub link: String,
    /// Plaintext bytes.
    pub bytes: u64,
    /// Slabs.
    pub slabs: u64,
    /// Distinct hosts holding shards.
    #[serde(rename = "hostsUsed")]
    pub hosts_used: usize,
    /// `"watching"` once the Guard watches the object, else why not; absent without a Guard.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guard: Option<String>,
    /// The storage contracts; absent without an Escrow.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contracts: Option<ContractsReport>,
    /// Shards a resumed upload found on their hosts and did not send again.
    #[serde(rename = "resumedShards")]
    pub resumed_shards: usize,
    /// Where the slabs were encoded: `"worker"` (a dedicated Web Worker) or `"page"`.
    pub encoder: &'static str,
}

/// One entry of `resumeUploads()`.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Unfinished {
    /// Journal id.
    pub id: String,
    /// File name.
    pub name: String,
    /// Bytes.
    pub size: u64,
    /// Slabs in the object.
    pub slabs: u64,
    /// Slabs placed.
    pub slabs_placed: usize,
    /// Start (unix ms).
    pub started_at: u64,
}

impl Unfinished {
    /// The entry of journal `j`.
    pub fn of(j: &btfs_core::engine::journal::Journal) -> Self {
        Self {
            id: j.id.clone(),
            name: j.header.name.clone(),
            size: j.layout.plain_len(),
            slabs: j.layout.slab_count(),
            slabs_placed: j.placed_slabs(),
            started_at: j.started_ms,
        }
    }
}

pub(crate) fn warn(message: &str) {
    web_sys::console::warn_1(&message.into());
}

fn upload_error(e: UploadError, driver: &Driver) -> ClientError {
    match e {
        UploadError::Unreachable { total } => ClientError::Unreachable {
            total,
            first_error: driver.first_dial_error(),
        },
        UploadError::TooFewHosts { reachable, total } => ClientError::TooFewHosts {
            reachable,
            total,
            first_error: driver.first_dial_error(),
        },
        e => ClientError::Upload(e),
    }
}

fn download_error(e: DownloadError, driver: &Driver) -> ClientError {
    match e {
        DownloadError::Unreachable { total } => ClientError::Unreachable {
            total,
            first_error: driver.first_dial_error(),
        },
        e => ClientError::Download(e),
    }
}

/// The slab source, busy producing its next slab (it comes back with the slab).
type Reading = LocalBoxFuture<'static, (SlabSource, Result<Option<EncodedSlab>, ClientError>)>;

/// A download in progress: yields plaintext slab by slab, driving the machine only while the
/// caller waits for the next chunk (so a slow reader holds the transfer back, bounded).
pub struct Download {
    machine: DownloadMachine,
    driver: Driver,
    size: u64,
    header: ObjectHeader,
    report: Option<DownloadReport>,
}

impl Download {
    /// Plaintext size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Name and type from the encrypted header.
    pub fn header(&self) -> &ObjectHeader {
        &self.header
    }

    /// What the download did, once [`Download::next_chunk`] returned `None`.
    pub fn report(&self) -> Option<&DownloadReport> {
        self.report.as_ref()
    }

    /// The next chunk of plaintext, or `None` at the end.
    pub async fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, ClientError> {
        loop {
            if let Some(plain) = self.machine.poll_output() {
                return Ok(Some(plain));
            }
            if self.machine.is_finished() {
                self.driver.perform(&mut self.machine);
                return match self.machine.take_result() {
                    Some(Ok(report)) => {
                        for c in &report.corrupt_shards {
                            web_sys::console::warn_1(
                                &format!(
                                    "btfs: host {} returned a corrupt copy of shard {} of slab {} (another shard was used)",
                                    c.host, c.shard, c.slab
                                )
                                .into(),
                            );
                        }
                        self.report = Some(report);
                        Ok(None)
                    }
                    Some(Err(e)) => Err(download_error(e, &self.driver)),
                    None => Ok(None),
                };
            }
            self.driver
                .step(&mut self.machine, None::<&mut Reading>)
                .await?;
        }
    }
}

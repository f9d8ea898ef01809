//! Upload and download in the browser: the same core encoder, decoder, manifest and placement
//! rules as the native CLI, driven by futures on the page's event loop.
//!
//! Memory: one slab in flight (30 MiB at the default 1 MiB shards) plus one 1 MiB read; a `File`
//! is read with `Blob.slice`, never whole.
//!
//! Holds (rules in `btfs_core::protocol`), as in the native upload: every put attempt that may
//! have stored bytes is written down before it starts; a completed upload sends one CLAIM per
//! host listing every root that host keeps for the object (shards and manifest) and returns
//! the link only when every host confirmed; a failed one RELEASEs everything it wrote down,
//! best effort within [`RELEASE_BUDGET`]. What a closed tab leaves behind, hosts sweep after
//! their grace period.

use std::cell::RefCell;
use std::collections::HashSet;
use std::rc::Rc;

use btfs_core::layout::{Layout, DEFAULT_SHARD_SIZE};
use btfs_core::manifest::MAX_MANIFEST_LEN;
use btfs_core::{
    Decoder, EncodedSlab, Encoder, Link, Manifest, ObjectHeader, ObjectKey, Root, VerifiedShard,
    DATA_SHARDS, TOTAL_SHARDS,
};
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use libp2p::{Multiaddr, PeerId};
use wasm_bindgen_futures::JsFuture;

use crate::error::{from_js, ClientError};
use crate::network_file::{self as network, BrowserHost, TransportChoice};
use crate::swarm::Node;
use btfs_core::hub::{check_recommendation, HubRequest, HubResponse, RecommendRequest};

const READ_CHUNK: f64 = (1 << 20) as f64;
const PARALLEL_DIALS: usize = 16;
const MANIFEST_FANOUT: usize = 8;
/// Releases and claims in flight at once (≤ 8 streams per WebRTC connection).
const CLEANUP_PARALLEL: usize = 8;
/// Longest time spent releasing what a failed upload placed.
const RELEASE_BUDGET: std::time::Duration = std::time::Duration::from_secs(15);

/// Every (root, host index) whose put may have stored bytes.
type Placements = RefCell<HashSet<(Root, usize)>>;

/// A host ready to dial.
pub struct Host {
    pub peer: PeerId,
    pub addrs: Vec<Multiaddr>,
}

/// The client state shared by every call.
pub struct Client {
    pub node: Node,
    /// Known hosts; append-only, so indices stay valid (borrowed only briefly, never across
    /// an await).
    hosts: RefCell<Vec<Host>>,
    /// The network's Hub, if it has one.
    hub: Option<Host>,
    choice: TransportChoice,
    bad: RefCell<HashSet<usize>>,
}

/// Where one slab's shards went: (root, host index) per shard.
type Placed = Vec<(Root, usize)>;
/// A slab upload in flight.
type SlabUpload<'a> = futures::future::LocalBoxFuture<'a, Result<Placed, ClientError>>;

/// Reports progress as (done, total) bytes.
pub type Progress = Rc<dyn Fn(f64, f64)>;

/// Hosts asked of the Hub per upload: 30 per slab plus spares for hosts that fail.
const UPLOAD_HOSTS: u32 = 45;

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
        hosts: &[BrowserHost],
        hub: Option<&BrowserHost>,
        choice: TransportChoice,
    ) -> Result<Self, ClientError> {
        let hosts = hosts.iter().map(to_host).collect::<Result<_, _>>()?;
        Ok(Self {
            node,
            hosts: RefCell::new(hosts),
            hub: hub.map(to_host).transpose()?,
            choice,
            bad: Default::default(),
        })
    }

    /// Number of known hosts.
    pub fn host_count(&self) -> usize {
        self.hosts.borrow().len()
    }

    fn host(&self, i: usize) -> (PeerId, Vec<Multiaddr>) {
        let h = &self.hosts.borrow()[i];
        (h.peer, h.addrs.clone())
    }

    /// Adds (or finds) a host by peer id with its browser-dialable addresses.
    fn add_host(&self, peer_id: &str, addrs: &[String]) -> Option<usize> {
        let addrs = network::browser_addrs(addrs, self.choice);
        let host = to_host(&BrowserHost {
            peer_id: peer_id.into(),
            addrs,
        })
        .ok()?;
        let mut hosts = self.hosts.borrow_mut();
        if let Some(i) = hosts.iter().position(|h| h.peer == host.peer) {
            return Some(i);
        }
        if host.addrs.is_empty() {
            return None;
        }
        hosts.push(host);
        Some(hosts.len() - 1)
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

    /// Asks the Hub for upload hosts, checks its answer, returns their indices (best first).
    async fn recommend(&self, layout: &Layout) -> Result<Vec<usize>, ClientError> {
        let shard = layout
            .slabs()
            .map(|s| u64::from(s.shard_size))
            .max()
            .unwrap_or(64);
        let shards = (layout.slab_count() + 1) * TOTAL_SHARDS as u64;
        let req = RecommendRequest {
            count: UPLOAD_HOSTS,
            shard_size: shard,
            shards_per_host: shards.div_ceil(u64::from(UPLOAD_HOSTS)),
            duration_days: 30,
            prefs: Default::default(),
        };
        let HubResponse::Recommendation(rec) =
            self.ask_hub(HubRequest::Recommend(req.clone())).await?
        else {
            return Err(ClientError::Hub("unexpected answer to Recommend".into()));
        };
        let checked = check_recommendation(&rec, &req, own_version(), TOTAL_SHARDS)
            .map_err(ClientError::Hub)?;
        let picked: Vec<usize> = checked
            .iter()
            .filter_map(|h| self.add_host(&h.peer_id, &h.addrs))
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

    /// Connects to host `i`: its WebSocket addresses first, WebRTC-direct only if those fail
    /// (dialing both at once would let the slower transport win the race).
    async fn connect(&self, i: usize) -> Result<PeerId, ClientError> {
        let (peer, addrs) = self.host(i);
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
                Ok(()) => return Ok(peer),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Indices among `candidates` of the hosts that answered, and the first dial error seen.
    async fn reachable(&self, candidates: Vec<usize>) -> (Vec<usize>, String) {
        let results: Vec<Result<usize, ClientError>> = futures::stream::iter(candidates)
            .map(|i| async move { self.connect(i).await.map(|_| i) })
            .buffer_unordered(PARALLEL_DIALS)
            .collect()
            .await;
        let first_error = results
            .iter()
            .find_map(|r| r.as_ref().err().map(ToString::to_string))
            .unwrap_or_default();
        let ok: Vec<usize> = results.into_iter().filter_map(Result::ok).collect();
        (ok, first_error)
    }

    fn mark_bad(&self, i: usize) {
        self.bad.borrow_mut().insert(i);
    }

    fn is_bad(&self, i: usize) -> bool {
        self.bad.borrow().contains(&i)
    }

    /// Puts `blobs[k]` on a distinct host each, rotating from `start`; returns their hosts.
    async fn put_spread(
        &self,
        reachable: &[usize],
        blobs: &[(Root, &[u8])],
        start: usize,
        placements: &Placements,
    ) -> Result<Vec<usize>, ClientError> {
        let n = reachable.len();
        let mut order: Vec<usize> = (0..n).map(|i| reachable[(start + i) % n]).collect();
        order.sort_by_key(|&h| self.is_bad(h)); // stable: rotation order, failed hosts last
        order.reverse();
        let queue = std::cell::RefCell::new(order);
        let puts = blobs.iter().map(|&(root, bytes)| {
            let queue = &queue;
            async move {
                loop {
                    let h = queue.borrow_mut().pop()?;
                    for attempt in 0..2 {
                        placements.borrow_mut().insert((root, h));
                        let result = async {
                            let peer = self.connect(h).await?;
                            self.node.put(peer, root, bytes).await
                        }
                        .await;
                        if matches!(result, Err(ClientError::Shard { refused: true, .. })) {
                            // Refused: the host stored nothing for us.
                            placements.borrow_mut().remove(&(root, h));
                        }
                        match result {
                            Ok(()) => return Some(h),
                            Err(ClientError::Shard { refused: false, .. }) if attempt == 0 => {
                                continue
                            }
                            Err(_) => break,
                        }
                    }
                    self.mark_bad(h);
                }
            }
        });
        let placed: Vec<Option<usize>> = futures::future::join_all(puts).await;
        if placed.iter().any(Option::is_none) {
            return Err(ClientError::TooFewHosts {
                reachable: n - self.bad.borrow().len().min(n),
                total: self.host_count(),
                first_error: "puts failed on every remaining host".into(),
            });
        }
        Ok(placed.into_iter().flatten().collect())
    }

    /// Encrypts, encodes and stores `blob`; returns its link. On failure, releases what it
    /// placed.
    pub async fn upload(
        &self,
        blob: &web_sys::Blob,
        name: String,
        mime: String,
        progress: Option<Progress>,
    ) -> Result<String, ClientError> {
        let placements = Placements::default();
        let outcome = match self.place(blob, name, mime, progress, &placements).await {
            Ok((link, kept)) => match self.claim_all(&kept).await {
                Ok(()) => {
                    // Attempts that are not part of the object are let go.
                    placements.borrow_mut().retain(|p| !kept.contains(p));
                    Ok(link)
                }
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        let leftovers: Vec<(Root, usize)> = placements.borrow().iter().copied().collect();
        self.release_all(&leftovers).await;
        outcome
    }

    /// One CLAIM per host, listing every root it keeps for the object.
    async fn claim_all(&self, kept: &HashSet<(Root, usize)>) -> Result<(), ClientError> {
        let mut by_host: std::collections::BTreeMap<usize, Vec<Root>> = Default::default();
        for &(root, h) in kept {
            by_host.entry(h).or_default().push(root);
        }
        let results: Vec<Result<(), ClientError>> = futures::stream::iter(by_host)
            .map(|(h, roots)| async move {
                let mut last = None;
                for _ in 0..2 {
                    let result = async {
                        let peer = self.connect(h).await?;
                        self.node.claim(peer, &roots).await
                    }
                    .await;
                    match result {
                        Ok(()) => return Ok(()),
                        Err(e) => {
                            let refused = matches!(e, ClientError::Shard { refused: true, .. });
                            last = Some(e);
                            if refused {
                                break;
                            }
                        }
                    }
                }
                let why = last.map(|e| e.to_string()).unwrap_or_default();
                Err(ClientError::Shard {
                    peer: self.host(h).0.to_string(),
                    reason: format!(
                        "the host did not confirm keeping its {} shards of this upload, so the upload was undone; retry ({why})",
                        roots.len()
                    ),
                    refused: true,
                })
            })
            .buffer_unordered(CLEANUP_PARALLEL)
            .collect()
            .await;
        results.into_iter().collect()
    }

    /// Releases `what`, best effort, within [`RELEASE_BUDGET`].
    async fn release_all(&self, what: &[(Root, usize)]) {
        if what.is_empty() {
            return;
        }
        let work = futures::stream::iter(what).for_each_concurrent(
            CLEANUP_PARALLEL,
            |&(root, h)| async move {
                if let Ok(peer) = self.connect(h).await {
                    // A failure here is swept by the host after its grace period.
                    let _ = self.node.release(peer, root).await;
                }
            },
        );
        let timeout = futures_timer::Delay::new(RELEASE_BUDGET);
        futures::select! {
            () = futures::FutureExt::fuse(work) => {},
            () = futures::FutureExt::fuse(timeout) => {},
        }
    }

    /// Reads, encodes and places the object; returns its link and every (root, host) it keeps.
    async fn place(
        &self,
        blob: &web_sys::Blob,
        name: String,
        mime: String,
        progress: Option<Progress>,
        placements: &Placements,
    ) -> Result<(String, HashSet<(Root, usize)>), ClientError> {
        let size = blob.size();
        let layout = Layout::new(size as u64, DEFAULT_SHARD_SIZE)?;
        let candidates = match self.hub {
            Some(_) => self.recommend(&layout).await?,
            None => (0..self.host_count()).collect(),
        };
        let total = candidates.len();
        let (mut reachable, first_error) = self.reachable(candidates).await;
        reachable.sort_unstable();
        if reachable.is_empty() {
            return Err(ClientError::Unreachable { total, first_error });
        }
        if reachable.len() < TOTAL_SHARDS {
            return Err(ClientError::TooFewHosts {
                reachable: reachable.len(),
                total,
                first_error,
            });
        }
        let mut key = [0u8; 32];
        getrandom::getrandom(&mut key).map_err(|e| ClientError::Js(e.to_string()))?;
        let key = ObjectKey::from_bytes(key);
        let mut enc = Encoder::new(&key, layout);
        let mut placed: Vec<Vec<(Root, usize)>> = Vec::new();
        let mut offset = 0f64;
        let mut ready: std::collections::VecDeque<EncodedSlab> = std::collections::VecDeque::new();
        // One slab uploads while the next is read and encoded: the browser's network stack sends
        // the buffered shards while wasm computes, so the two overlap even on one thread.
        let mut uploading: Option<SlabUpload<'_>> = None;
        loop {
            // Read and encode until a slab is ready or the input ends.
            let produce = async {
                while ready.is_empty() && offset < size {
                    let end = (offset + READ_CHUNK).min(size);
                    let chunk = read_blob(blob, offset, end).await?;
                    offset = end;
                    let mut rest = &chunk[..];
                    while !rest.is_empty() {
                        rest = &rest[enc.feed(rest)?..];
                        while let Some(slab) = enc.next_slab()? {
                            ready.push_back(slab);
                        }
                    }
                }
                while let Some(slab) = enc.next_slab()? {
                    ready.push_back(slab);
                }
                Ok::<_, ClientError>(ready.pop_front())
            };
            let next = match uploading.take() {
                Some(up) => {
                    let (next, done) = futures::join!(produce, up);
                    placed.push(done?);
                    if let Some(p) = &progress {
                        p(offset.min(size), size);
                    }
                    next?
                }
                None => produce.await?,
            };
            let Some(slab) = next else { break };
            let reachable = &reachable;
            uploading = Some(Box::pin(async move {
                let blobs: Vec<(Root, &[u8])> = (0..TOTAL_SHARDS)
                    .map(|k| (slab.roots[k], slab.shard(k)))
                    .collect();
                let start = slab.layout.index as usize * TOTAL_SHARDS;
                let hosts = self
                    .put_spread(reachable, &blobs, start, placements)
                    .await?;
                Ok(slab.roots.iter().copied().zip(hosts).collect())
            }));
        }
        enc.finish()?;

        let (table, records) = btfs_core::placement::records(&placed)?;
        let host_ids = table.iter().map(|&i| self.host(i).0.to_bytes()).collect();
        let manifest = Manifest::new(
            layout,
            &key,
            &ObjectHeader { name, mime },
            host_ids,
            records,
        )?;
        let bytes = manifest.encode();
        let id = Root::of(&bytes);
        let copies: Vec<(Root, &[u8])> =
            (0..TOTAL_SHARDS).map(|_| (id, bytes.as_slice())).collect();
        let manifest_hosts = self.put_spread(&reachable, &copies, 0, placements).await?;
        if let Some(p) = &progress {
            p(size, size);
        }
        let kept = placed
            .iter()
            .flatten()
            .copied()
            .chain(manifest_hosts.into_iter().map(|h| (id, h)))
            .collect();
        let link = Link {
            manifest_id: id,
            key,
        }
        .to_string();
        Ok((link, kept))
    }

    /// Finds and verifies a manifest by asking hosts.
    pub async fn fetch_manifest(&self, id: Root) -> Result<Manifest, ClientError> {
        let n = self.host_count();
        let mut unreachable = 0;
        let mut asks = futures::stream::iter(0..n)
            .map(|i| async move {
                let peer = self.connect(i).await.map_err(|_| true)?;
                let bytes = self
                    .node
                    .get(peer, id, MAX_MANIFEST_LEN as u32)
                    .await
                    .map_err(|_| false)?;
                let v = id.verify(bytes).map_err(|_| false)?;
                Manifest::decode(v.bytes()).map_err(|_| false)
            })
            .buffer_unordered(MANIFEST_FANOUT);
        while let Some(r) = asks.next().await {
            match r {
                Ok(m) => return Ok(m),
                Err(true) => unreachable += 1,
                Err(false) => {}
            }
        }
        if unreachable == n {
            return Err(ClientError::Unreachable {
                total: n,
                first_error: "no host could be dialed".into(),
            });
        }
        Err(ClientError::ManifestNotFound {
            id: id.to_hex(),
            asked: n,
            unreachable,
        })
    }

    /// Fetches 10 verified shards of slab `index` (data shards first, another host on failure).
    pub async fn fetch_slab(
        &self,
        manifest: &Manifest,
        host_map: &[Option<usize>],
        index: u64,
    ) -> Result<Vec<Option<VerifiedShard>>, ClientError> {
        let record = &manifest.slabs()[index as usize];
        let shard_size = manifest
            .layout()
            .slab(index)
            .map(|s| s.shard_size)
            .unwrap_or_default();
        let mut order: Vec<usize> = (0..TOTAL_SHARDS).collect();
        order.sort_by_key(|&k| {
            (
                host_map[usize::from(record[k].host)].is_none_or(|h| self.is_bad(h)),
                k,
            )
        });
        let mut order = order.into_iter();
        let fetch = |k: usize| async move {
            let root = record[k].root;
            let Some(h) = host_map[usize::from(record[k].host)] else {
                return (k, None, None);
            };
            let got = async {
                let peer = self.connect(h).await?;
                let bytes = self.node.get(peer, root, shard_size).await?;
                root.verify(bytes).map_err(|_| {
                    ClientError::Js(format!("shard {k} of slab {index} failed verification"))
                })
            }
            .await
            .map_err(|e| web_sys::console::warn_1(&format!("btfs: fetch failed: {e}").into()))
            .ok();
            (k, Some(h), got)
        };
        let mut shards: Vec<Option<VerifiedShard>> = vec![None; TOTAL_SHARDS];
        let mut have = 0;
        let mut running: FuturesUnordered<_> =
            order.by_ref().take(DATA_SHARDS).map(fetch).collect();
        while have < DATA_SHARDS {
            let Some((k, host, got)) = running.next().await else {
                break;
            };
            match got {
                Some(v) => {
                    shards[k] = Some(v);
                    have += 1;
                }
                None => {
                    if let Some(h) = host {
                        self.mark_bad(h);
                    }
                    if let Some(next) = order.next() {
                        running.push(fetch(next));
                    }
                }
            }
        }
        if have < DATA_SHARDS {
            return Err(ClientError::SlabLost { slab: index, have });
        }
        Ok(shards)
    }

    /// Opens a download: fetches the manifest and checks the key before any shard moves.
    pub async fn open(self: &Rc<Self>, link: &Link) -> Result<Download, ClientError> {
        let manifest = self.fetch_manifest(link.manifest_id).await?;
        let decoder = Decoder::new(&manifest, &link.key)?;
        let map = |hosts: &[Host]| -> Vec<Option<usize>> {
            manifest
                .hosts()
                .iter()
                .map(|id| hosts.iter().position(|h| h.peer.to_bytes() == *id))
                .collect()
        };
        let mut host_map = map(&self.hosts.borrow());
        if self.hub.is_some() && host_map.iter().any(Option::is_none) {
            // Some holders are not known yet: the Hub knows every registered host.
            self.refresh_from_hub().await?;
            host_map = map(&self.hosts.borrow());
        }
        Ok(Download {
            client: self.clone(),
            manifest,
            decoder,
            host_map,
            next: 0,
        })
    }
}

/// A download in progress: yields plaintext slab by slab.
pub struct Download {
    client: Rc<Client>,
    manifest: Manifest,
    decoder: Decoder,
    host_map: Vec<Option<usize>>,
    next: u64,
}

impl Download {
    /// Plaintext size.
    pub fn size(&self) -> u64 {
        self.manifest.layout().plain_len()
    }

    /// Name and type from the encrypted header.
    pub fn header(&self) -> &ObjectHeader {
        self.decoder.header()
    }

    /// The next chunk of plaintext, or `None` at the end.
    pub async fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, ClientError> {
        if self.next >= self.manifest.layout().slab_count() {
            return Ok(None);
        }
        let shards = self
            .client
            .fetch_slab(&self.manifest, &self.host_map, self.next)
            .await?;
        let plain = self.decoder.decode_slab(self.next, &shards)?;
        self.next += 1;
        Ok(Some(plain))
    }
}

async fn read_blob(blob: &web_sys::Blob, start: f64, end: f64) -> Result<Vec<u8>, ClientError> {
    let part = blob.slice_with_f64_and_f64(start, end).map_err(from_js)?;
    let buf = JsFuture::from(part.array_buffer()).await.map_err(from_js)?;
    Ok(js_sys::Uint8Array::new(&buf).to_vec())
}

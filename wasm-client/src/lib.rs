//! # btfs-client
//!
//! The browser tenant of BTFS-rs, built into the `btfs-client` npm package with wasm-pack. A page
//! encrypts, erasure-codes and verifies files itself (the same `btfs-core` as the native CLI) and
//! talks straight to host nodes over libp2p WebSocket or WebRTC-direct: no daemon, no gateway.
//!
//! ```js
//! import init, { BtfsClient } from 'btfs-client';
//! await init();
//! const client = await BtfsClient.connect({ network: 'http://127.0.0.1:8080/network.json' });
//! const link = await client.upload(file, { onProgress: (done, total) => console.log(done / total) });
//! const blob = await client.download(link);               // a Blob
//! const stream = client.downloadStream(link);             // a ReadableStream of Uint8Array
//! const health = await client.health(link);               // the Guard's view: healthy shards per slab
//! const audit = await client.audit(link);                 // challenge every holder, verify here
//! const wallet = await client.balance();                  // { peer, balance, locked, ... } in µBTT
//! const contracts = await client.contracts();             // [{ id, host, state, ... }]
//! ```
//!
//! With a Guard in the network file (`services.guard`), uploads ask it to watch the object
//! (`uploadWithReport` says `guard: "watching"` or why not) and downloads follow its signed
//! placement updates after a repair; neither fails because of the Guard.
//!
//! With an Escrow too (`services.escrow`), every upload makes storage contracts like the CLI:
//! the wallet key (kept in IndexedDB, also the page's libp2p identity) signs one offer per
//! recommended host, reserves them all in one call before any byte moves (on a devnet the
//! faucet tops up a wallet that is short, and `onStatus` says so; elsewhere an unfunded upload
//! stops with the amount needed), and commits one contract per host that keeps shards
//! (`uploadWithReport`'s `contracts`). `client.balance()` and `client.contracts()` ask the
//! Escrow.
//!
//! Goals: a JavaScript-native API (promises, `Blob`, `ReadableStream`, real `Error`s with a
//! `cause` chain), bounded memory, the same wire formats and the same transfer engine
//! (`btfs_core::engine`: placement, retries, hedging, read-ahead) as native tenants.
//! Non-goals (yet): deposits and withdrawals from the page (the settlement layer's), a wasm SIMD
//! Reed-Solomon engine.

#[cfg(target_arch = "wasm32")]
mod contracts;
#[cfg(target_arch = "wasm32")]
mod discovery;
#[cfg(target_arch = "wasm32")]
mod driver;
pub mod error;
pub mod network_file;
#[cfg(target_arch = "wasm32")]
mod slab_source;
#[cfg(target_arch = "wasm32")]
mod swarm;
#[cfg(target_arch = "wasm32")]
mod transfer;
#[cfg(target_arch = "wasm32")]
mod upload_journal;
#[cfg(target_arch = "wasm32")]
mod wallet;

#[cfg(target_arch = "wasm32")]
pub use api::BtfsClient;
#[cfg(target_arch = "wasm32")]
pub use contracts::{Balance, ContractsReport};
#[cfg(target_arch = "wasm32")]
pub use transfer::UploadResult;

/// Whether `link` is a well-formed `btfs://<manifest-id>#<key>` capability link.
#[cfg_attr(target_arch = "wasm32", wasm_bindgen::prelude::wasm_bindgen(js_name = isValidLink))]
pub fn is_valid_link(link: &str) -> bool {
    btfs_core::Link::parse(link).is_ok()
}

/// The client version.
#[cfg_attr(target_arch = "wasm32", wasm_bindgen::prelude::wasm_bindgen)]
pub fn version() -> String {
    env!("CARGO_PKG_VERSION").into()
}

#[cfg(target_arch = "wasm32")]
mod api {
    use std::rc::Rc;

    use btfs_core::Link;
    use wasm_bindgen::prelude::*;
    use wasm_bindgen::JsCast;
    use wasm_bindgen_futures::JsFuture;

    use crate::contracts::{Status, Wallet};
    use crate::error::{from_js, ClientError};
    use crate::network_file::{self, TransportChoice};
    use crate::swarm::Node;
    use crate::transfer::UploadResult;
    use crate::transfer::{Client, Progress, SlabProgress, UploadHooks, UploadStart};

    #[wasm_bindgen(typescript_custom_section)]
    const TS_TYPES: &str = r#"
/** Options of `BtfsClient.connect`. */
export interface ConnectOptions {
  /** The devnet's network.json object, its URL, or multiaddrs ending in /p2p/<peer id>. */
  network?: { hosts: { peer_id: string; addrs: string[] }[] } | string | string[];
  /** Instead of `network`: WebSocket or WebRTC-direct multiaddrs (ending in /p2p/<peer id>) of
   * any nodes of the network; they say which services it has, and its Hub lists the hosts. */
  bootstrap?: string[];
  /** Force one browser transport; by default WebSocket where offered, else WebRTC-direct. */
  transport?: 'websocket' | 'webrtc';
  /** 'indexeddb' (default): the wallet key persists in IndexedDB; 'ephemeral': a new key. */
  wallet?: 'indexeddb' | 'ephemeral';
}
/** What `uploadWithReport` resolves to. */
export interface UploadReport {
  /** The capability link (it holds the key). */
  link: string;
  /** Plaintext bytes. */
  bytes: number;
  /** Slabs (10 MiB of plaintext each at the default shard size). */
  slabs: number;
  /** Distinct hosts holding shards. */
  hostsUsed: number;
  /** 'watching' once the network's Guard watches the object, else why not; absent without a Guard. */
  guard?: string;
  /** The upload's storage contracts; absent when the network has no Escrow. */
  contracts?: ContractsReport;
  /** A resumed upload: shards found on their hosts and not sent again (0 for a new upload). */
  resumedShards: number;
  /** Where the file was encrypted and encoded: 'worker' (a Web Worker, off the page's main
   * thread) or 'page' (no worker could start; the console says why). */
  encoder: 'worker' | 'page';
}
/** An upload that stopped before it finished (`resumeUploads`). */
export interface UnfinishedUpload {
  /** Pass it to `resume` or `discardUpload`. */
  id: string;
  /** The file's name. */
  name: string;
  /** Its size in bytes: `resume` needs a file of this size. */
  size: number;
  /** Slabs in the object. */
  slabs: number;
  /** Slabs placed before it stopped (not sent again). */
  slabsPlaced: number;
  /** When it started (ms since 1970). */
  startedAt: number;
}
/** What an upload's storage contracts came to (amounts in µBTT, 10⁻⁶ BTT). */
export interface ContractsReport {
  /** Contracts committed: one per host keeping shards. */
  committed: number;
  /** Locked for them: what they cost if every epoch is proven. */
  locked: number;
  /** Given back from the reservation (unused offers, rounding room). */
  released: number;
  /** Taken from the devnet faucet first (0 when the wallet could pay). */
  topped_up: number;
  /** Contract ids. */
  ids: string[];
  /** Hosts that did not sign their contract (their offer expires and is refunded). */
  unsigned: string[];
}
/** What `balance` resolves to: the wallet's account at the Escrow, in µBTT (`btfs wallet balance --json`). */
export interface Balance {
  /** The wallet's peer id. */
  peer: string;
  /** Spendable. */
  balance: number;
  /** Locked in this wallet's storage contracts. */
  locked: number;
  /** Promised to this peer as a host, not yet earned. */
  incoming: number;
  deposited: number;
  withdrawn: number;
  /** Earned as a host. */
  earned: number;
  /** Paid to hosts for proven storage. */
  spent: number;
  /** Returned from contracts. */
  refunded: number;
  unit: 'µBTT';
}
/** One shard of a contract. */
export interface ContractShard {
  root: string;
  size: number;
  /** µBTT per epoch. */
  per_epoch: number;
  paid_epochs: number;
  refunded_epochs: number;
}
/** One storage contract as the Escrow shows it (`btfs contracts --json`). */
export interface ContractView {
  id: string;
  tenant: string;
  /** The host's peer id. */
  host: string;
  /** The Guard whose verdicts pay. */
  guard: string;
  state: 'offered' | 'active' | 'cancelled' | 'ended' | 'voided';
  manifest_id?: string;
  price_per_gib_epoch: number;
  epoch_ms: number;
  first_epoch: number;
  /** One past the last payable epoch. */
  end_epoch: number;
  /** µBTT still locked. */
  pending: number;
  /** µBTT paid to the host. */
  paid: number;
  /** µBTT returned to the tenant. */
  refunded: number;
  shards: ContractShard[];
}
/** One shard as the Guard knows it. */
export interface ShardHealth {
  shard: number;
  /** The shard's BLAKE3 root (hex). */
  root: string;
  /** Its holder's peer id now (after a repair, the new holder). */
  host: string;
  /** Epoch of the last audit, null before the first. */
  last_epoch: number | null;
  /** The last verdict, null before the first audit. */
  passed: boolean | null;
  /** Failed audits in a row. */
  fails: number;
}
/** One slab as the Guard knows it. */
export interface SlabHealth {
  slab: number;
  /** Shards whose last audit passed or that are not audited yet, of 30. */
  healthy: number;
  shards: ShardHealth[];
}
/** What `health` resolves to: the Guard's view of an object. */
export interface ObjectHealth {
  manifest_id: string;
  /** The Guard's current epoch. */
  epoch: number;
  /** A slab at or below this many healthy shards is repaired. */
  repair_threshold: number;
  /** Shards rebuilt on new hosts so far. */
  repaired_shards: number;
  /** Why the last repair failed (retried later), e.g. no repair allowance left. */
  last_repair_error?: string;
  slabs: SlabHealth[];
}
/** One shard's verdict in this page's own audit. */
export interface ShardVerdict {
  shard: number;
  /** The shard's BLAKE3 root (hex): the proof was checked against it alone. */
  root: string;
  /** The holder challenged (peer id), '' if the manifest names none. */
  host: string;
  /** Whether its proof verified. */
  passed: boolean;
  /** Why it failed. */
  reason?: string;
  /** Time to the answer, ms. */
  ms: number;
}
/** One slab of an audit. */
export interface SlabAudit {
  slab: number;
  /** Shards that proved they are held, of 30. */
  healthy: number;
  shards: ShardVerdict[];
}
/** What `audit` resolves to. */
export interface AuditReport {
  manifest_id: string;
  slabs: SlabAudit[];
  /** Shards that passed. */
  passed: number;
  /** Shards that failed. */
  failed: number;
  elapsed_ms: number;
}
/** One host of the Hub's listing, checked by this page. */
export interface ListedHost {
  peer_id: string;
  addrs: string[];
  /** The Hub's score (total and each factor, 0..1). */
  score: Score;
  /** The same computed in this page from `facts` with core's scoring. */
  recomputed: Score;
  /** Why the Hub's word cannot be trusted for this host (null: the ad verifies and the scores agree). */
  problem: string | null;
  /** Why the host scores zero, if it does. */
  excluded: string | null;
  facts: { online: boolean; free_bytes: number; uptime: number; age_days: number;
    rtt_ms: number | null; region: string | null; price: number; version: [number, number, number];
    audits_passed: number; audits_failed: number };
  /** µBTT for one default shard for 30 days. */
  estimated_cost: number;
  /** The subnet the Hub groups the host in. */
  subnet: string;
}
/** A score and its factors. */
export interface Score {
  total: number; online: number; space: number; uptime: number; age: number;
  proximity: number; price: number; audits: number; version: number;
}
/** What `networkStatus` resolves to (as `btfs status --json`). */
export interface NetworkStatus {
  totals: { hosts: number; online: number; capacity_bytes: number; used_bytes: number;
    shards_held: number; requests_served: number; requests_failed: number };
  hosts: { peer_id: string; online: boolean; [field: string]: unknown }[];
  [field: string]: unknown;
}
/** Options of uploads and downloads. */
export interface TransferOptions {
  /** Called with (bytes done, bytes total). */
  onProgress?: (done: number, total: number) => void;
  /** Uploads: called with a line the page may show (e.g. a devnet faucet top-up). */
  onStatus?: (message: string) => void;
  /** Uploads: called with (slab index, shards stored of 30, slabs in the file) each time a
   * slab's count grows; a slab is safe once it reaches 30. */
  onSlab?: (slab: number, stored: number, slabs: number) => void;
}
"#;

    /// A connection to a BTFS network from a web page.
    #[wasm_bindgen]
    pub struct BtfsClient {
        inner: Rc<Client>,
        wallet: libp2p::identity::Keypair,
    }

    fn get(obj: &JsValue, key: &str) -> JsValue {
        js_sys::Reflect::get(obj, &key.into()).unwrap_or(JsValue::UNDEFINED)
    }

    fn hooks_of(opts: &JsValue) -> UploadHooks {
        UploadHooks {
            progress: progress_of(opts),
            status: status_of(opts),
            slab: slab_of(opts),
        }
    }

    fn progress_of(opts: &JsValue) -> Option<Progress> {
        let f = get(opts, "onProgress")
            .dyn_into::<js_sys::Function>()
            .ok()?;
        Some(Rc::new(move |done: f64, total: f64| {
            let _ = f.call2(&JsValue::NULL, &done.into(), &total.into());
        }))
    }

    fn slab_of(opts: &JsValue) -> Option<SlabProgress> {
        let f = get(opts, "onSlab").dyn_into::<js_sys::Function>().ok()?;
        Some(Rc::new(move |slab: u64, stored: usize, slabs: u64| {
            let args = js_sys::Array::of3(
                &(slab as f64).into(),
                &(stored as f64).into(),
                &(slabs as f64).into(),
            );
            let _ = f.apply(&JsValue::NULL, &args);
        }))
    }

    fn status_of(opts: &JsValue) -> Option<Status> {
        let f = get(opts, "onStatus").dyn_into::<js_sys::Function>().ok()?;
        Some(Rc::new(move |line: &str| {
            let _ = f.call1(&JsValue::NULL, &line.into());
        }))
    }

    /// GETs `url` with the page's `fetch` and returns the body as text; errors say `what` was
    /// fetched.
    pub(crate) async fn fetch_text(url: &str, what: &str) -> Result<String, ClientError> {
        let global = js_sys::global();
        let fetch = get(&global, "fetch")
            .dyn_into::<js_sys::Function>()
            .map_err(|_| ClientError::Js("fetch is not available".into()))?;
        let resp = JsFuture::from(js_sys::Promise::from(
            fetch.call1(&global, &url.into()).map_err(from_js)?,
        ))
        .await
        .map_err(|e| ClientError::Js(format!("cannot fetch {what} {url}: {}", from_js(e))))?;
        let resp: web_sys::Response = resp.dyn_into().map_err(from_js)?;
        if !resp.ok() {
            return Err(ClientError::Js(format!(
                "cannot fetch {what} {url}: HTTP {}",
                resp.status()
            )));
        }
        let text = JsFuture::from(resp.text().map_err(from_js)?)
            .await
            .map_err(from_js)?;
        text.as_string()
            .ok_or_else(|| ClientError::Js(format!("{what} is not text")))
    }

    async fn network_json(network: JsValue) -> Result<String, ClientError> {
        if let Some(url) = network.as_string() {
            return fetch_text(&url, "the network file").await;
        }
        js_sys::JSON::stringify(&network)
            .map_err(from_js)?
            .as_string()
            .ok_or_else(|| ClientError::Js("`network` cannot be serialized".into()))
    }

    #[wasm_bindgen]
    impl BtfsClient {
        /// `await BtfsClient.connect({ network, transport })`: `network` is the network.json
        /// object, its URL, or an array of multiaddrs; `transport` is `'websocket'`, `'webrtc'`
        /// or absent (WebSocket where offered, else WebRTC-direct).
        pub async fn connect(
            #[wasm_bindgen(unchecked_param_type = "ConnectOptions")] options: JsValue,
        ) -> Result<BtfsClient, JsValue> {
            let network = get(&options, "network");
            let bootstrap = get(&options, "bootstrap");
            let bootstrap: Option<Vec<String>> =
                match bootstrap.is_undefined() || bootstrap.is_null() {
                    true => None,
                    false => Some(
                        js_sys::Array::is_array(&bootstrap)
                            .then(|| js_sys::Array::from(&bootstrap))
                            .and_then(|a| a.iter().map(|v| v.as_string()).collect())
                            .ok_or_else(|| {
                                ClientError::Js(
                                    "`bootstrap` must be an array of multiaddr strings".into(),
                                )
                            })?,
                    ),
                };
            if bootstrap.is_none() && (network.is_undefined() || network.is_null()) {
                return Err(ClientError::Js("connect needs { network } (the network.json object, its URL, or an array of multiaddrs) or { bootstrap } (multiaddrs of nodes of the network)".into()).into());
            }
            let choice = TransportChoice::parse(get(&options, "transport").as_string().as_deref())
                .map_err(|e| ClientError::from(network_file::NetworkError::from(e)))?;
            let (wallet, journal) = match get(&options, "wallet").as_string().as_deref() {
                None | Some("indexeddb") => (crate::wallet::load_or_create().await?, true),
                Some("ephemeral") => (libp2p::identity::Keypair::generate_ed25519(), false),
                Some(other) => {
                    return Err(ClientError::Js(format!(
                        "unknown wallet {other:?}: use 'indexeddb' or 'ephemeral'"
                    ))
                    .into())
                }
            };
            let node = Node::start(wallet.clone())?;
            let json = match &bootstrap {
                Some(addrs) => crate::discovery::network(&node, addrs, choice).await?,
                None => network_json(network).await?,
            };
            let network = network_file::parse_network(&json, choice).map_err(ClientError::from)?;
            let client = Client::new(node, &network, choice, Wallet::new(wallet.clone(), journal))?;
            Ok(BtfsClient {
                inner: Rc::new(client),
                wallet,
            })
        }

        /// This client's peer id (the public half of its wallet key).
        #[wasm_bindgen(getter, js_name = peerId)]
        pub fn peer_id(&self) -> String {
            self.wallet.public().to_peer_id().to_string()
        }

        /// The wallet key as bytes, to back it up or move it to another browser. Keep it secret.
        #[wasm_bindgen(js_name = exportWallet)]
        pub fn export_wallet(&self) -> Result<js_sys::Uint8Array, JsValue> {
            Ok(js_sys::Uint8Array::from(
                &crate::wallet::encode(&self.wallet)?[..],
            ))
        }

        /// Stores exported wallet bytes in IndexedDB (replacing the current wallet); returns the
        /// wallet's peer id. Clients connected afterwards use it.
        #[wasm_bindgen(js_name = importWallet)]
        pub async fn import_wallet(bytes: js_sys::Uint8Array) -> Result<String, JsValue> {
            let key = crate::wallet::import(&bytes.to_vec()).await?;
            Ok(key.public().to_peer_id().to_string())
        }

        /// Number of hosts known from the network description.
        #[wasm_bindgen(getter, js_name = hostCount)]
        pub fn host_count(&self) -> usize {
            self.inner.host_count()
        }

        /// `await client.upload(fileOrBlobOrBytes, { onProgress })` → the capability link. With
        /// a Guard in the network, the object is registered with it (see `uploadWithReport`).
        pub async fn upload(
            &self,
            #[wasm_bindgen(unchecked_param_type = "File | Blob | Uint8Array | ArrayBuffer")]
            data: JsValue,
            #[wasm_bindgen(unchecked_param_type = "TransferOptions | undefined")] options: JsValue,
        ) -> Result<String, JsValue> {
            Ok(self.upload_report(data, options).await?.link)
        }

        /// `await client.uploadWithReport(data, { onProgress })` → `{ link, bytes, slabs,
        /// hostsUsed, guard, contracts }`; `guard` is `'watching'` once the network's Guard
        /// watches the object, else the reason it does not (the upload itself succeeded either
        /// way); `contracts` (with an Escrow) says what the storage contracts came to.
        #[wasm_bindgen(js_name = uploadWithReport, unchecked_return_type = "UploadReport")]
        pub async fn upload_with_report(
            &self,
            #[wasm_bindgen(unchecked_param_type = "File | Blob | Uint8Array | ArrayBuffer")]
            data: JsValue,
            #[wasm_bindgen(unchecked_param_type = "TransferOptions | undefined")] options: JsValue,
        ) -> Result<JsValue, JsValue> {
            let report = self.upload_report(data, options).await?;
            Ok(to_js_value(&report)?)
        }

        /// `await client.resumeUploads()` → the uploads of this browser that stopped before they
        /// finished (a reload, a closed tab, a lost network), oldest first: `[{ id, name, size,
        /// slabs, slabsPlaced, startedAt }]`. Each can be finished with `resume(id, file)` or
        /// dropped with `discardUpload(id)`; hosts keep the placed shards for about an hour.
        #[wasm_bindgen(js_name = resumeUploads, unchecked_return_type = "UnfinishedUpload[]")]
        pub async fn resume_uploads(&self) -> Result<JsValue, JsValue> {
            let me = self.wallet.public().to_peer_id();
            let list: Vec<crate::transfer::Unfinished> = crate::upload_journal::list()
                .await?
                .into_iter()
                .filter(|j| j.holder == me)
                .map(|j| crate::transfer::Unfinished::of(&j))
                .collect();
            Ok(to_js_value(&list)?)
        }

        /// `await client.resume(id, file, { onProgress, onSlab })` → the link: finishes the
        /// unfinished upload `id` with the same file (picked again after a reload). Placed slabs
        /// are checked on their hosts and not sent again; the file is encoded again and every
        /// placed slab must come out the same, else the upload fails saying the file changed.
        pub async fn resume(
            &self,
            id: String,
            #[wasm_bindgen(unchecked_param_type = "File | Blob")] file: JsValue,
            #[wasm_bindgen(unchecked_param_type = "TransferOptions | undefined")] options: JsValue,
        ) -> Result<String, JsValue> {
            Ok(self.resume_report(&id, file, options).await?.link)
        }

        /// `await client.resumeWithReport(id, file, options)` → the report of `uploadWithReport`
        /// (`resumedShards`: shards found on their hosts).
        #[wasm_bindgen(js_name = resumeWithReport, unchecked_return_type = "UploadReport")]
        pub async fn resume_with_report(
            &self,
            id: String,
            #[wasm_bindgen(unchecked_param_type = "File | Blob")] file: JsValue,
            #[wasm_bindgen(unchecked_param_type = "TransferOptions | undefined")] options: JsValue,
        ) -> Result<JsValue, JsValue> {
            let report = self.resume_report(&id, file, options).await?;
            Ok(to_js_value(&report)?)
        }

        /// `await client.discardUpload(id)`: forgets an unfinished upload (its shards are
        /// dropped by the hosts after their grace period).
        #[wasm_bindgen(js_name = discardUpload)]
        pub async fn discard_upload(&self, id: String) -> Result<(), JsValue> {
            Ok(crate::upload_journal::remove(&id).await?)
        }

        /// `await client.balance()` → the wallet's account at the network's Escrow, in µBTT:
        /// `{ peer, balance, locked, incoming, deposited, withdrawn, earned, spent, refunded,
        /// unit }` (the names of `btfs wallet balance --json`). Fails without an Escrow.
        #[wasm_bindgen(unchecked_return_type = "Balance")]
        pub async fn balance(&self) -> Result<JsValue, JsValue> {
            Ok(to_js_value(&self.inner.balance().await?)?)
        }

        /// `await client.contracts()` → the wallet's storage contracts at the Escrow, oldest
        /// first: `ContractView`s with `id`, `host`, `state` (`'active'` once committed), the
        /// amounts locked, paid and refunded and each shard's paid epochs. Fails without an
        /// Escrow.
        #[wasm_bindgen(unchecked_return_type = "ContractView[]")]
        pub async fn contracts(&self) -> Result<JsValue, JsValue> {
            Ok(to_js_value(&self.inner.contracts().await?)?)
        }

        /// `await client.hosts()` → the Hub's hosts, best first (`ListedHost[]`): each with the
        /// Hub's `score` and `facts` and the `recomputed` breakdown this page computed from those
        /// facts with core's scoring, and `problem` when the host's signed ad does not verify
        /// or the Hub's score is not what its facts give. Fails without a Hub.
        #[wasm_bindgen(unchecked_return_type = "ListedHost[]")]
        pub async fn hosts(&self) -> Result<JsValue, JsValue> {
            Ok(to_js_value(&self.inner.hosts_listing().await?)?)
        }

        /// `await client.networkStatus()` → the Status server's view of the network (the JSON
        /// of `btfs status --json`: `totals` and one row per host). Fails without a Status
        /// server in the network file.
        #[wasm_bindgen(js_name = networkStatus, unchecked_return_type = "NetworkStatus")]
        pub async fn network_status(&self) -> Result<JsValue, JsValue> {
            let text = self.network_status_text().await?;
            js_sys::JSON::parse(&text).map_err(|e| {
                ClientError::Js(format!(
                    "the Status server's answer is not JSON: {}",
                    from_js(e)
                ))
                .into()
            })
        }

        /// Devnet only: `await client.faucet(amount)` takes `amount` µBTT of test money from the
        /// Escrow's faucet into this page's wallet and resolves to the new `Balance`.
        #[wasm_bindgen(unchecked_return_type = "Balance")]
        pub async fn faucet(&self, amount: f64) -> Result<JsValue, JsValue> {
            if !((1.0..=9.0e15).contains(&amount) && amount.fract() == 0.0) {
                return Err(ClientError::Js(format!(
                    "faucet amount must be a whole number of µBTT between 1 and 9e15, not {amount}"
                ))
                .into());
            }
            Ok(to_js_value(&self.inner.faucet(amount as u64).await?)?)
        }

        /// `await client.health(link)` → the Guard's `ObjectHealth`: per slab the healthy shards
        /// of 30 and each shard's holder and last verdict, and the shards repaired so far. Fails
        /// if the network has no Guard or the Guard does not watch the object.
        #[wasm_bindgen(unchecked_return_type = "ObjectHealth")]
        pub async fn health(&self, link: String) -> Result<JsValue, JsValue> {
            let link = Link::parse(&link).map_err(ClientError::from)?;
            let health = self.inner.health(&link).await?;
            Ok(to_js_value(&health)?)
        }

        /// `await client.audit(link)` → an `AuditReport`: this page challenges every shard's
        /// holder over `/btfs/audit/1` with a fresh random seed and verifies each proof in wasm
        /// against the shard's root, trusting no one's word. Fails only if the manifest cannot
        /// be found; a holder that does not prove its shard fails that shard, with the reason.
        #[wasm_bindgen(unchecked_return_type = "AuditReport")]
        pub async fn audit(&self, link: String) -> Result<JsValue, JsValue> {
            let link = Link::parse(&link).map_err(ClientError::from)?;
            let report = self.inner.audit(link).await?;
            Ok(to_js_value(&report)?)
        }

        /// `await client.download(link, { onProgress })` → a `File` (a `Blob`) named and typed
        /// from the object's sealed header: `file.name` is safe to save under (no directory
        /// part; `btfs-download` if the uploader gave none), `file.type` its media type.
        pub async fn download(
            &self,
            link: String,
            options: JsValue,
        ) -> Result<web_sys::File, JsValue> {
            let link = Link::parse(&link).map_err(ClientError::from)?;
            let mut dl = self.inner.open(link).await?;
            let progress = progress_of(&options);
            let (size, mime, name) = (
                dl.size() as f64,
                dl.header().mime.clone(),
                dl.header().file_name(),
            );
            let parts = js_sys::Array::new();
            let mut done = 0f64;
            while let Some(chunk) = dl.next_chunk().await? {
                done += chunk.len() as f64;
                parts.push(&js_sys::Uint8Array::from(&chunk[..]));
                if let Some(p) = &progress {
                    p(done, size);
                }
            }
            let bag = web_sys::FilePropertyBag::new();
            bag.set_type(&mime);
            Ok(
                web_sys::File::new_with_u8_array_sequence_and_options(&parts, &name, &bag)
                    .map_err(from_js)?,
            )
        }

        /// `client.downloadStream(link)` → a `ReadableStream` of `Uint8Array` chunks (one slab at
        /// a time), so a large file never sits whole in memory.
        #[wasm_bindgen(js_name = downloadStream)]
        pub fn download_stream(&self, link: String) -> web_sys::ReadableStream {
            let client = self.inner.clone();
            let state: Option<crate::transfer::Download> = None;
            let stream = futures::stream::unfold(
                (client, link, state, false),
                |(client, link, dl, done)| async move {
                    if done {
                        return None;
                    }
                    let mut dl = match dl {
                        Some(d) => d,
                        None => {
                            let opened = match Link::parse(&link) {
                                Ok(l) => client.open(l).await,
                                Err(e) => Err(e.into()),
                            };
                            match opened {
                                Ok(d) => d,
                                Err(e) => {
                                    return Some((
                                        Err(JsValue::from(e)),
                                        (client, link, None, true),
                                    ))
                                }
                            }
                        }
                    };
                    match dl.next_chunk().await {
                        Ok(Some(chunk)) => {
                            let v: JsValue = js_sys::Uint8Array::from(&chunk[..]).into();
                            Some((Ok(v), (client, link, Some(dl), false)))
                        }
                        Ok(None) => None,
                        Err(e) => Some((Err(JsValue::from(e)), (client, link, None, true))),
                    }
                },
            );
            wasm_streams::ReadableStream::from_stream(stream).into_raw()
        }
    }

    /// A serde value as a plain JavaScript object (through JSON).
    fn to_js_value<T: serde::Serialize>(v: &T) -> Result<JsValue, ClientError> {
        let text = serde_json::to_string(v)
            .map_err(|e| ClientError::Js(format!("cannot serialize the answer: {e}")))?;
        js_sys::JSON::parse(&text).map_err(from_js)
    }

    /// Rust-only API (not exported to JavaScript).
    impl BtfsClient {
        /// The Status server's JSON answer (`networkStatus` without parsing it in JavaScript).
        pub async fn network_status_text(&self) -> Result<String, ClientError> {
            let Some(base) = &self.inner.status_http else {
                return Err(ClientError::Js(
                    "this network has no Status server (its network file has no services.status)"
                        .into(),
                ));
            };
            let url = format!(
                "{}{}",
                base.trim_end_matches('/'),
                btfs_core::network_file::STATUS_PATH
            );
            fetch_text(&url, "the network status").await
        }

        /// The Hub's listing checked in wasm (`hosts` without the JavaScript object).
        pub async fn hosts_report(&self) -> Result<Vec<btfs_core::hub::ListedHost>, ClientError> {
            self.inner.hosts_listing().await
        }

        /// Uploads and returns the report (`uploadWithReport` without the JavaScript object).
        pub async fn upload_report(
            &self,
            data: JsValue,
            options: JsValue,
        ) -> Result<UploadResult, ClientError> {
            let (blob, name, mime) = if let Some(file) = data.dyn_ref::<web_sys::File>() {
                (
                    file.clone().unchecked_into::<web_sys::Blob>(),
                    file.name(),
                    file.type_(),
                )
            } else if let Some(blob) = data.dyn_ref::<web_sys::Blob>() {
                (blob.clone(), String::new(), blob.type_())
            } else if data.is_instance_of::<js_sys::Uint8Array>()
                || data.is_instance_of::<js_sys::ArrayBuffer>()
            {
                let parts = js_sys::Array::of1(&data);
                (
                    web_sys::Blob::new_with_u8_array_sequence(&parts).map_err(from_js)?,
                    String::new(),
                    String::new(),
                )
            } else {
                return Err(ClientError::Js(
                    "upload takes a File, a Blob, a Uint8Array or an ArrayBuffer".into(),
                ));
            };
            self.inner
                .upload(&blob, UploadStart::New { name, mime }, hooks_of(&options))
                .await
        }

        /// Finishes the journaled upload `id` with `file` (`resumeWithReport` without the
        /// JavaScript object).
        pub async fn resume_report(
            &self,
            id: &str,
            file: JsValue,
            options: JsValue,
        ) -> Result<UploadResult, ClientError> {
            let blob = file.dyn_into::<web_sys::Blob>().map_err(|_| {
                ClientError::Js(
                    "resume takes the File (or Blob) of the upload being resumed".into(),
                )
            })?;
            let journal = crate::upload_journal::load(id).await?.ok_or_else(|| {
                ClientError::Js(format!(
                    "no unfinished upload {id:?} in this browser: resumeUploads() lists them"
                ))
            })?;
            self.inner
                .upload(
                    &blob,
                    UploadStart::Resume(Box::new(journal)),
                    hooks_of(&options),
                )
                .await
        }

        /// The Guard's view of `link` (`health` without the JavaScript object).
        pub async fn health_report(
            &self,
            link: &str,
        ) -> Result<btfs_core::guard_wire::ObjectHealth, ClientError> {
            self.inner.health(&Link::parse(link)?).await
        }

        /// This page's own audit of `link` (`audit` without the JavaScript object).
        pub async fn audit_report(
            &self,
            link: &str,
        ) -> Result<btfs_core::proof::AuditReport, ClientError> {
            self.inner.audit(Link::parse(link)?).await
        }

        /// The wallet's account (`balance` without the JavaScript object).
        pub async fn balance_report(&self) -> Result<crate::Balance, ClientError> {
            self.inner.balance().await
        }

        /// The wallet's contracts (`contracts` without the JavaScript object).
        pub async fn contracts_report(
            &self,
        ) -> Result<Vec<btfs_core::escrow::ContractView>, ClientError> {
            self.inner.contracts().await
        }

        /// Downloads `link` whole and returns the plaintext with the engine's report (hedged and
        /// failed fetches, corrupt shards): for Rust callers and the browser tests.
        pub async fn download_with_report(
            &self,
            link: &str,
        ) -> Result<(Vec<u8>, btfs_core::engine::download::DownloadReport), ClientError> {
            let mut dl = self.inner.open(Link::parse(link)?).await?;
            let mut plain = Vec::new();
            while let Some(chunk) = dl.next_chunk().await? {
                plain.extend_from_slice(&chunk);
            }
            let report = dl.report().cloned().ok_or(ClientError::Stalled)?;
            Ok((plain, report))
        }
    }
}

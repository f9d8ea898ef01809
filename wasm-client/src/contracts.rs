//! An upload's storage contracts and the wallet's calls to the Escrow, from the page's side —
//! the same steps as the CLI's (`btfs-host`'s `tenant::contracts`), on the rules and documents
//! of `btfs_core::escrow` (offers and contracts from `escrow::plan`, amounts from `Terms`).
//!
//! Before any byte moves ([`reserve`]): one offer per Hub-recommended host, at that host's
//! advertised price (the recommendation's checked `facts.price`), sent to the host to sign over
//! `/btfs/contract/1`, countersigned with the wallet key, and reserved at the Escrow in **one**
//! [`Op::Reserve`] call. A wallet that cannot pay is topped up from the Escrow's faucet first
//! (`Op::Deposit`, at most the faucet's `faucet_max` per call) when the network file says
//! `services.escrow.devnet`, and the page is told so; on any other network the upload stops
//! here with [`ClientError::Unfunded`] (how much is needed, what the wallet has). The Escrow's
//! answer carries its signed funding proof; each host is shown its offer with that proof
//! (`escrow::plan::funding_notices`), and hosts store the tenant's shards only after it. The
//! upload then uses only the hosts that signed and took the proof.
//!
//! After the upload ([`commit`]): for every host that keeps shards, its offer plus the manifest
//! id and its shard roots (`escrow::plan::shards_by_host` + `escrow::plan::contract`), signed by
//! the host (which checks it holds them for this tenant) and the tenant, all in **one**
//! [`Op::Commit`] call; offers of hosts that got nothing are voided in the same call.
//!
//! Every call gets a fresh random id and is saved in IndexedDB before it is sent
//! (`crate::wallet`'s call journal); retries resend the very same signed call, and calls an
//! earlier page left unanswered are resent before the next upload's first call.
//!
//! Non-goals: choosing prices or hosts (the Hub and the hosts' ads), repair contracts.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use btfs_core::engine::upload::UploadReport as MachineReport;
use btfs_core::escrow::plan::OfferParams;
use btfs_core::escrow::{
    self, Account, Call, CallReceipt, ContractView, Cosigned, EscrowRequest, EscrowResponse,
    HostRequest, HostResponse, Op, Terms, MAX_DOCS_PER_CALL,
};
use btfs_core::signed::Signed;
use btfs_core::Layout;
use futures::stream::{self, StreamExt};
use futures_timer::Delay;
use libp2p::identity::{ed25519, Keypair};
use libp2p::PeerId;
use serde::Serialize;

use crate::error::ClientError;
use crate::swarm::ServiceError;
use crate::transfer::{Client, Host};

/// Deadline for one Escrow request (dial included).
const ESCROW_TIMEOUT: Duration = Duration::from_secs(30);
/// Deadline for a host to sign an offer or a contract (dial included).
const HOST_SIGN_TIMEOUT: Duration = Duration::from_secs(20);
/// Hosts asked to sign at once.
const SIGN_PARALLEL: usize = 16;
/// Sends of one call before giving up (the same signed call each time).
const CALL_ATTEMPTS: u32 = 4;
/// Most unanswered calls resent before an upload.
const RESUME_MAX: u32 = 64;

/// The page's wallet: the node's identity key, which signs contracts and Escrow calls.
pub struct Wallet {
    key: Keypair,
    /// Whether calls are journaled in IndexedDB (not for an ephemeral wallet).
    journal: bool,
}

impl Wallet {
    /// A wallet on `key`; `journal`: keep the call journal in IndexedDB.
    pub fn new(key: Keypair, journal: bool) -> Self {
        Self { key, journal }
    }

    /// The account (peer id).
    pub fn peer(&self) -> PeerId {
        self.key.public().to_peer_id()
    }

    /// Whether this wallet outlives the page (IndexedDB), so its journals are worth keeping.
    pub fn journaled(&self) -> bool {
        self.journal
    }

    fn ed25519(&self) -> Result<ed25519::Keypair, ClientError> {
        self.key
            .clone()
            .try_into_ed25519()
            .map_err(|_| ClientError::Escrow("the wallet key is not an ed25519 key".into()))
    }
}

/// How the network pays for storage, from its network file.
pub struct PayPlan {
    /// The Escrow.
    pub escrow: Host,
    /// The Guard whose verdicts count.
    pub guard: PeerId,
    /// The Guard's epoch length.
    pub epoch_ms: u64,
    /// Epochs to pay for.
    pub epochs: u64,
    /// The Escrow's faucet may top the wallet up (devnet).
    pub devnet: bool,
}

impl PayPlan {
    /// Epochs of `epoch_ms` covering `days`.
    pub fn epochs_for_days(days: u32, epoch_ms: u64) -> u64 {
        (u64::from(days) * 86_400_000)
            .div_ceil(epoch_ms.max(1))
            .clamp(1, escrow::terms::MAX_EPOCHS)
    }
}

/// What the contracts of an upload came to (`uploadWithReport`'s `contracts`, the same names
/// as the CLI's upload report).
#[derive(Debug, Clone, Default, Serialize)]
pub struct ContractsReport {
    /// Contracts committed (one per host keeping shards).
    pub committed: usize,
    /// µBTT locked for them (what they cost if every epoch is proven).
    pub locked: u64,
    /// µBTT the wallet got back from the reservation (unused offers and rounding room).
    pub released: u64,
    /// µBTT taken from the devnet faucet first.
    pub topped_up: u64,
    /// Contract ids.
    pub ids: Vec<String>,
    /// Hosts whose contract could not be signed (their offer expires and is refunded).
    pub unsigned: Vec<String>,
    /// µBTT set aside for the Guard's repairs of this object (0: none).
    pub repair_allowance: u64,
    /// Why no repair allowance could be set aside, if so.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repair_allowance_error: Option<String>,
}

/// `client.balance()`: the wallet's account, named as `btfs wallet balance --json` names it.
#[derive(Debug, Clone, Serialize)]
pub struct Balance {
    /// The wallet's peer id.
    pub peer: String,
    /// Spendable µBTT.
    pub balance: u64,
    /// Locked in this wallet's contracts.
    pub locked: u64,
    /// Promised to this peer as a host, not yet earned.
    pub incoming: u64,
    /// Total deposited.
    pub deposited: u64,
    /// Total withdrawn.
    pub withdrawn: u64,
    /// Total earned as a host.
    pub earned: u64,
    /// Total paid to hosts.
    pub spent: u64,
    /// Total returned from contracts.
    pub refunded: u64,
    /// Set aside for repairs of this wallet's files.
    pub allowance: u64,
    /// Always `"µBTT"`.
    pub unit: &'static str,
}

impl Balance {
    fn new(peer: String, a: &Account) -> Self {
        Self {
            peer,
            balance: a.available,
            locked: a.locked,
            incoming: a.incoming,
            deposited: a.deposited,
            withdrawn: a.withdrawn,
            earned: a.earned,
            spent: a.spent,
            refunded: a.refunded,
            allowance: a.allowance,
            unit: "µBTT",
        }
    }
}

/// Offers reserved for an upload.
pub struct Reserved {
    /// Host and offer, in the order of the Hub's recommendation.
    offers: Vec<(PeerId, Terms)>,
    /// Hosts that took the funding proof.
    granted: BTreeSet<PeerId>,
    /// µBTT from the faucet.
    topped_up: u64,
}

impl Reserved {
    /// The hosts that signed offers and took their funding proof (the only ones the upload may
    /// use), best first.
    pub fn hosts(&self) -> impl Iterator<Item = PeerId> + '_ {
        self.offers
            .iter()
            .map(|(h, _)| *h)
            .filter(|h| self.granted.contains(h))
    }
}

fn random_id() -> Result<String, ClientError> {
    let mut b = [0u8; 16];
    getrandom::getrandom(&mut b)
        .map_err(|e| ClientError::Js(format!("the browser's crypto RNG failed: {e}")))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

fn now_ms() -> u64 {
    js_sys::Date::now().max(0.0) as u64
}

/// µBTT as BTT text (`1.5 BTT`).
pub fn btt(micro: u64) -> String {
    let m = escrow::MICRO_PER_BTT;
    let (w, f) = (micro / m, micro % m);
    if f == 0 {
        format!("{w} BTT")
    } else {
        format!("{w}.{} BTT", format!("{f:06}").trim_end_matches('0'))
    }
}

fn info(message: &str) {
    web_sys::console::info_1(&message.into());
}

impl Client {
    fn plan(&self) -> Result<&PayPlan, ClientError> {
        self.pay.as_ref().ok_or_else(|| {
            ClientError::Escrow(
                "this network has no Escrow (its network file has no services.escrow, or no services.guard whose verdicts pay)".into(),
            )
        })
    }

    /// Sends `req` to the network's Escrow.
    async fn ask_escrow(&self, req: &EscrowRequest) -> Result<EscrowResponse, ServiceError> {
        let plan = self
            .plan()
            .map_err(|e| ServiceError::Refused(e.to_string()))?;
        // `framed_request` writes the length prefix itself.
        let (_, body) = escrow::encode_request(req);
        let out = self
            .node
            .framed_request(
                plan.escrow.peer,
                plan.escrow.addrs.clone(),
                escrow::PROTOCOL,
                &body,
                escrow::MAX_RESPONSE_LEN,
                ESCROW_TIMEOUT,
            )
            .await?;
        serde_json::from_slice(&out)
            .map_err(|e| ServiceError::Failed(format!("malformed answer from the Escrow: {e}")))
    }

    /// A public query to the Escrow.
    async fn query(&self, req: &EscrowRequest) -> Result<EscrowResponse, ClientError> {
        let peer = self.plan()?.escrow.peer;
        self.ask_escrow(req)
            .await
            .map_err(|e| ClientError::Escrow(format!("the Escrow {peer}: {e}")))
    }

    /// The wallet's account at the Escrow.
    pub async fn balance(&self) -> Result<Balance, ClientError> {
        let me = self.wallet.peer().to_base58();
        match self
            .query(&EscrowRequest::Account { peer: me.clone() })
            .await?
        {
            EscrowResponse::Account { account, .. } => Ok(Balance::new(me, &account)),
            other => Err(ClientError::Escrow(format!(
                "the Escrow answered {other:?} to an account query"
            ))),
        }
    }

    /// Devnet only: `amount` µBTT of test money from the Escrow's faucet (in calls of at most
    /// its `faucet_max`); returns the new balance. Fails on a network whose file does not say
    /// its Escrow is a devnet's, or whose Escrow runs no faucet.
    pub async fn faucet(&self, amount: u64) -> Result<Balance, ClientError> {
        let plan = self.plan()?;
        if !plan.devnet {
            return Err(ClientError::Escrow(
                "this network's Escrow is not a devnet's: it has no faucet; pay into the wallet through the network's settlement".into(),
            ));
        }
        let limit = match self.query(&EscrowRequest::Info).await? {
            EscrowResponse::Info(i) => i.config.faucet_max.unwrap_or(0),
            other => {
                return Err(ClientError::Escrow(format!(
                    "the Escrow answered {other:?} to an info query"
                )))
            }
        };
        if limit == 0 {
            return Err(ClientError::Escrow(
                "the network file says the Escrow is a devnet's, but it runs no faucet".into(),
            ));
        }
        let mut left = amount;
        while left > 0 {
            let step = left.min(limit);
            self.call(Op::Deposit { amount: step }).await?;
            left -= step;
        }
        self.balance().await
    }

    /// The contracts the wallet is tenant (or host) of, oldest first.
    pub async fn contracts(&self) -> Result<Vec<ContractView>, ClientError> {
        let me = self.wallet.peer().to_base58();
        match self.query(&EscrowRequest::Contracts { peer: me }).await? {
            EscrowResponse::Contracts { contracts } => Ok(contracts),
            other => Err(ClientError::Escrow(format!(
                "the Escrow answered {other:?} to a contracts query"
            ))),
        }
    }

    /// Signs `op` under a fresh id, saves it, sends it (retrying the same call) and returns the
    /// Escrow's receipt; a receipt with `ok: false` is an error.
    pub async fn call(&self, op: Op) -> Result<CallReceipt, ClientError> {
        let id = random_id()?;
        let call = Call {
            peer_id: self.wallet.peer().to_base58(),
            id: id.clone(),
            issued_at_ms: now_ms(),
            op,
        };
        let env = Signed::sign(&call, &self.wallet.ed25519()?)
            .map_err(|e| ClientError::Escrow(format!("cannot sign the call: {e}")))?;
        if self.wallet.journal {
            let json = serde_json::to_string(&env)
                .map_err(|e| ClientError::Escrow(format!("cannot save the call: {e}")))?;
            crate::wallet::save_call(&id, &json).await?;
        }
        let receipt = self.send_call(&id, env).await?;
        if !receipt.ok {
            return Err(ClientError::Escrow(
                receipt
                    .error
                    .unwrap_or_else(|| "the Escrow refused the call".into()),
            ));
        }
        Ok(receipt)
    }

    /// Sends a saved call until the Escrow answers it (at most [`CALL_ATTEMPTS`] times); an
    /// answered call leaves the journal.
    async fn send_call(&self, id: &str, env: Signed) -> Result<CallReceipt, ClientError> {
        let escrow = self.plan()?.escrow.peer;
        let req = EscrowRequest::Call { call: env };
        let mut last = String::new();
        for attempt in 0..CALL_ATTEMPTS {
            if attempt > 0 {
                Delay::new(Duration::from_millis(300 << attempt)).await;
            }
            match self.ask_escrow(&req).await {
                Ok(EscrowResponse::Call(r)) => {
                    self.forget(id).await;
                    return Ok(r);
                }
                Ok(other) => {
                    return Err(ClientError::Escrow(format!(
                        "the Escrow answered {other:?} to a call"
                    )))
                }
                // Refused before the ledger (bad signature, stale): retrying cannot help, and
                // nothing was done.
                Err(ServiceError::Refused(msg))
                    if !msg.contains("busy") && !msg.contains("could not save") =>
                {
                    self.forget(id).await;
                    return Err(ClientError::Escrow(format!("the Escrow {escrow}: {msg}")));
                }
                Err(e) => last = e.to_string(),
            }
        }
        Err(ClientError::Escrow(format!(
            "the Escrow {escrow} did not answer after {CALL_ATTEMPTS} tries ({last}); the call is saved and will be resent by the next upload"
        )))
    }

    async fn forget(&self, id: &str) {
        if self.wallet.journal {
            if let Err(e) = crate::wallet::forget_call(id).await {
                warn(&format!(
                    "btfs: cannot clear an answered call from IndexedDB: {e}"
                ));
            }
        }
    }

    /// Resends the calls an earlier page saved but got no answer for; returns how many.
    async fn resume(&self) -> Result<usize, ClientError> {
        if !self.wallet.journal {
            return Ok(0);
        }
        let pending = crate::wallet::pending_calls(RESUME_MAX).await?;
        let n = pending.len();
        for json in pending {
            let Ok(env) = serde_json::from_str::<Signed>(&json) else {
                continue;
            };
            let Ok(call) = serde_json::from_str::<Call>(&env.payload) else {
                continue;
            };
            match self.send_call(&call.id, env).await {
                Ok(_) | Err(ClientError::Escrow(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(n)
    }

    /// Asks `host` to sign `req`'s document.
    async fn host_sign(&self, host: PeerId, req: HostRequest) -> Result<Cosigned, String> {
        match self.host_request(host, req).await? {
            HostResponse::Signed { doc } => Ok(doc),
            other => Err(format!(
                "host {host} answered {other:?}, not a signed document"
            )),
        }
    }

    /// One `/btfs/contract/1` request.
    async fn host_request(&self, host: PeerId, req: HostRequest) -> Result<HostResponse, String> {
        self.connect(host).await.map_err(|e| e.to_string())?;
        let body = serde_json::to_vec(&req).map_err(|e| e.to_string())?;
        // Connected: no addresses needed.
        let out = self
            .node
            .framed_request(
                host,
                Vec::new(),
                escrow::HOST_PROTOCOL,
                &body,
                escrow::MAX_HOST_REQUEST_LEN,
                HOST_SIGN_TIMEOUT,
            )
            .await
            .map_err(|e| e.to_string())?;
        serde_json::from_slice::<HostResponse>(&out).map_err(|e| e.to_string())
    }

    /// Has `host` sign `terms`, checks it signed exactly them, countersigns.
    async fn cosign(&self, host: PeerId, terms: &Terms, offer: bool) -> Result<Cosigned, String> {
        let doc = Cosigned::propose(terms).map_err(|e| e.to_string())?;
        let req = if offer {
            HostRequest::Offer { doc }
        } else {
            HostRequest::Contract { doc }
        };
        let doc = self.host_sign(host, req).await?;
        if doc.verify_host().map_err(|e| e.to_string())? != *terms {
            return Err("the host signed other terms".into());
        }
        let key = self.wallet.ed25519().map_err(|e| e.to_string())?;
        doc.sign(&key).map_err(|e| e.to_string())
    }

    /// Tells the page (the upload's `onStatus`) and the console.
    fn status(&self, on_status: Option<&Status>, message: &str) {
        info(&format!("btfs: {message}"));
        if let Some(f) = on_status {
            f(message);
        }
    }
}

/// Reports a status line to the page.
pub type Status = std::rc::Rc<dyn Fn(&str)>;

fn warn(message: &str) {
    web_sys::console::warn_1(&message.into());
}

/// Makes, signs and reserves one offer per candidate (peer, advertised price per GiB-month);
/// at least `needed` hosts must sign.
pub async fn reserve(
    client: &Client,
    layout: &Layout,
    candidates: &[(PeerId, u64)],
    needed: usize,
    on_status: Option<&Status>,
) -> Result<Reserved, ClientError> {
    let plan = client.plan()?;
    match client.resume().await {
        Ok(0) => {}
        Ok(n) => client.status(
            on_status,
            &format!("resent {n} Escrow call(s) an earlier page left unanswered"),
        ),
        Err(e) => warn(&format!("btfs: cannot resend earlier Escrow calls: {e}")),
    }
    let now = now_ms();
    let me = client.wallet.peer().to_base58();
    let guard = plan.guard.to_base58();
    let mut offers = Vec::with_capacity(candidates.len());
    for (host, price) in candidates {
        let h58 = host.to_base58();
        let terms = escrow::plan::offer(
            &OfferParams {
                id: random_id()?,
                tenant: &me,
                host: &h58,
                guard: &guard,
                price_per_gib_month: *price,
                epoch_ms: plan.epoch_ms,
                epochs: plan.epochs,
                now_ms: now,
            },
            layout,
        );
        offers.push((*host, terms));
    }
    let signed: Vec<(usize, Result<Cosigned, String>)> = stream::iter(offers.iter().enumerate())
        .map(|(i, (host, terms))| async move {
            let r = client
                .cosign(*host, terms, true)
                .await
                .map_err(|e| format!("host {host}: {e}"));
            (i, r)
        })
        .buffer_unordered(SIGN_PARALLEL)
        .collect()
        .await;
    let mut docs: BTreeMap<usize, Cosigned> = BTreeMap::new();
    let mut why = Vec::new();
    for (i, r) in signed {
        match r {
            Ok(d) => {
                docs.insert(i, d);
            }
            Err(e) => {
                warn(&format!("btfs: a host made no storage offer: {e}"));
                why.push(e);
            }
        }
    }
    if docs.len() < needed {
        return Err(ClientError::TooFewOffers {
            signed: docs.len(),
            needed,
            why: why.into_iter().take(3).collect::<Vec<_>>().join("; "),
        });
    }
    // In the recommendation's order (best first), as the upload machine wants its candidates.
    let chosen: Vec<(PeerId, Terms, Cosigned)> = docs
        .into_iter()
        .map(|(i, d)| (offers[i].0, offers[i].1.clone(), d))
        .collect();
    let reserve: u64 = chosen
        .iter()
        .filter_map(|(_, t, _)| t.reserve_amount())
        .sum();
    // The repair allowance comes out of the same wallet at commit: count it now (the most it
    // can be, since the contracts lock at most what was reserved).
    let need = reserve.saturating_add(escrow::plan::allowance_for(reserve));
    let available = client.balance().await?.balance;
    let mut topped_up = 0;
    if available < need {
        let short = need - available;
        if !plan.devnet {
            return Err(ClientError::Unfunded {
                need: btt(need),
                have: btt(available),
                peer: me,
            });
        }
        client.faucet(short).await.map_err(|e| match e {
            ClientError::Escrow(why) => ClientError::Escrow(format!(
                "{why}; this upload needs {} and the wallet {me} has {}",
                btt(need),
                btt(available)
            )),
            other => other,
        })?;
        topped_up = short;
        client.status(
            on_status,
            &format!(
                "devnet: topped up the wallet {me} with {} from the faucet",
                btt(short)
            ),
        );
    }
    let mut reserved = Vec::with_capacity(chosen.len());
    let mut granted = BTreeSet::new();
    for chunk in chosen.chunks(MAX_DOCS_PER_CALL) {
        let docs = chunk.iter().map(|(_, _, d)| d.clone()).collect();
        let r = client.call(Op::Reserve { offers: docs }).await?;
        reserved.extend(chunk.iter().map(|(h, t, _)| (*h, t.clone())));
        let Some(proof) = r.funded else {
            let out = Reserved {
                offers: reserved,
                granted,
                topped_up,
            };
            cancel_all(client, &out).await;
            return Err(ClientError::Escrow(
                "the Escrow sent no funding proof for the reserved offers; hosts store nothing without one".into(),
            ));
        };
        let docs: Vec<(PeerId, Cosigned)> = chunk.iter().map(|(h, _, d)| (*h, d.clone())).collect();
        let answers: Vec<(PeerId, Result<HostResponse, String>)> =
            stream::iter(escrow::plan::funding_notices(&docs, &proof))
                .map(|(host, req)| async move { (host, client.host_request(host, req).await) })
                .buffer_unordered(SIGN_PARALLEL)
                .collect()
                .await;
        for e in escrow::plan::tally_grants(answers, &mut granted) {
            warn(&format!("btfs: {e}"));
            why.push(e);
        }
    }
    let out = Reserved {
        offers: reserved,
        granted,
        topped_up,
    };
    if out.granted.len() < needed {
        cancel_all(client, &out).await;
        return Err(ClientError::TooFewOffers {
            signed: out.granted.len(),
            needed,
            why: why.into_iter().rev().take(3).collect::<Vec<_>>().join("; "),
        });
    }
    client.status(
        on_status,
        &format!(
            "reserved {} for {} storage offers",
            btt(reserve),
            out.granted.len()
        ),
    );
    Ok(out)
}

/// Binds each host's shards into its contract and commits them all; cancels unused offers.
pub async fn commit(
    client: &Client,
    reserved: &Reserved,
    layout: &Layout,
    report: &MachineReport,
) -> Result<ContractsReport, ClientError> {
    let (jobs, void) = escrow::plan::commitments(&reserved.offers, layout, report);
    let signed: Vec<(PeerId, Result<Cosigned, String>)> = stream::iter(jobs.iter())
        .map(|(host, terms)| async move { (*host, client.cosign(*host, terms, false).await) })
        .buffer_unordered(SIGN_PARALLEL)
        .collect()
        .await;
    let mut out = ContractsReport {
        topped_up: reserved.topped_up,
        ..ContractsReport::default()
    };
    let mut docs = Vec::new();
    let (mut locked, mut committed_reserve) = (0u64, 0u64);
    for (host, r) in signed {
        match r {
            Ok(d) => {
                if let Ok(t) = d.terms() {
                    locked += t.contract_amount();
                    committed_reserve += t.reserve_amount().unwrap_or(0);
                }
                docs.push(d);
            }
            Err(e) => {
                warn(&format!(
                    "btfs: host {host} did not sign its contract ({e}); its offer will expire and be refunded"
                ));
                out.unsigned.push(host.to_base58());
            }
        }
    }
    for op in escrow::plan::commit_ops(docs, void) {
        let r = client.call(op).await?;
        out.released += r.amount;
        out.ids.extend(r.contracts);
    }
    out.committed = out.ids.len();
    out.locked = locked;
    let amount = escrow::plan::allowance_for(committed_reserve);
    if amount > 0 && out.committed > 0 {
        let plan = client.plan()?;
        let until_ms = reserved
            .offers
            .first()
            .map_or(0, |(_, t)| escrow::plan::allowance_until(t));
        let op = Op::Allow {
            manifest_id: report.link.manifest_id.to_hex(),
            guard: plan.guard.to_base58(),
            amount,
            until_ms,
        };
        match client.call(op).await {
            Ok(r) => out.repair_allowance = r.amount,
            Err(e) => {
                // The upload is stored and paid; only its repairs are not.
                warn(&format!("btfs: no repair allowance was set aside ({e}): lost shards of this file will not be re-placed"));
                out.repair_allowance_error = Some(e.to_string());
            }
        }
    }
    Ok(out)
}

/// Cancels every offer of an upload that failed (best effort: an offer not cancelled expires
/// and is refunded).
pub async fn cancel_all(client: &Client, reserved: &Reserved) {
    let ids: Vec<String> = reserved.offers.iter().map(|(_, t)| t.id.clone()).collect();
    for void in ids.chunks(4 * MAX_DOCS_PER_CALL) {
        if let Err(e) = client
            .call(Op::Commit {
                contracts: Vec::new(),
                void: void.to_vec(),
            })
            .await
        {
            warn(&format!(
                "btfs: cannot void the offers of a failed upload ({e}); they expire and are refunded"
            ));
        }
    }
}

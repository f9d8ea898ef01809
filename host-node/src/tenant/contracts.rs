//! An upload's storage contracts, from the tenant's side (rules: `btfs_core::escrow`).
//!
//! Before any byte moves: one offer per candidate host — at most one shard per slab, at the
//! host's advertised price, for `epochs` epochs of the network's Guard from the next one — sent
//! to each host to sign (`/btfs/contract/1`), countersigned, and reserved at the Escrow in **one**
//! call. A wallet that cannot pay is topped up from the faucet on a devnet (said on stderr);
//! anywhere else the upload stops here with the amount needed and how to fund the wallet.
//! The Escrow answers the reservation with its signed funding proof, which each host is shown
//! beside its offer; hosts store the tenant's shards only after that, and the upload uses only
//! the hosts that took it.
//! After the upload: for every host that keeps shards, the contract (the offer's terms plus the
//! manifest id and that host's shard roots and sizes) is signed by the host (which checks it
//! holds them for this tenant) and by the tenant, and all are committed in **one** call, which
//! also voids the offers of hosts that got nothing. Then the repair allowance: by default a
//! third of what the committed contracts' offers reserved (`escrow::plan::allowance_for`),
//! set aside for the Guard
//! to pay new hosts with when shards are lost, until the contracts' term ends. The funds check
//! before the upload counts it, so a wallet that can pay the upload can pay both.

use std::collections::HashMap;
use std::time::Duration;

use btfs_core::engine::upload::UploadReport as MachineReport;
use btfs_core::escrow::plan::OfferParams;
use btfs_core::escrow::{
    self, Cosigned, EscrowRequest, EscrowResponse, HostRequest, HostResponse, Op, Terms,
    MAX_DOCS_PER_CALL,
};
use btfs_core::protocol::Status;
use btfs_core::Layout;
use futures::stream::{self, StreamExt};
use libp2p::PeerId;
use serde::Serialize;

use crate::services::hub::HubAddr;
use crate::tenant::wallet::{btt, Wallet, WalletError};
use crate::tenant::Tenant;

/// How the network pays for storage, from its network file.
#[derive(Debug, Clone)]
pub struct PayPlan {
    /// The Escrow.
    pub escrow: HubAddr,
    /// The Guard whose verdicts count.
    pub guard: PeerId,
    /// The Guard's epoch length.
    pub epoch_ms: u64,
    /// Epochs to pay for.
    pub epochs: u64,
    /// The Escrow's faucet may top the wallet up (devnet).
    pub devnet: bool,
    /// µBTT to set aside for repairs; `None`: `escrow::plan::allowance_for` the reservation.
    pub repair_allowance: Option<u64>,
}

impl PayPlan {
    /// The repair allowance of an upload whose committed offers reserved `reserved`.
    pub fn allowance(&self, reserved: u64) -> u64 {
        self.repair_allowance
            .unwrap_or_else(|| escrow::plan::allowance_for(reserved))
    }
}

/// What the contracts of an upload came to (part of the upload's JSON report).
#[derive(Debug, Clone, Default, Serialize)]
pub struct ContractsReport {
    /// Contracts committed (one per host keeping shards).
    pub committed: usize,
    /// µBTT locked for them (what they cost if every epoch is proven).
    pub locked: u64,
    /// µBTT the tenant got back from the reservation (unused offers and rounding room).
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
    /// Time spent on each contract phase.
    pub timings: Timings,
}

/// The least a devnet top-up takes from the faucet (100 BTT).
pub const DEVNET_TOP_UP: u64 = 100 * escrow::MICRO_PER_BTT;

/// Offers reserved for an upload.
pub struct Reserved {
    offers: Vec<(PeerId, Terms)>,
    granted: std::collections::BTreeSet<PeerId>,
    /// µBTT reserved.
    pub amount: u64,
    /// µBTT from the faucet.
    pub topped_up: u64,
    timings: Timings,
}

/// Where a paid upload's extra time went, in ms (part of [`ContractsReport`]).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Timings {
    /// Offers signed by the hosts (and the wallet's balance read, at the same time).
    pub offers_ms: u64,
    /// Faucet top-up if any, the reservation and the hosts' answers to the funding proof.
    pub reserve_ms: u64,
    /// Contracts signed by the hosts, the commit and the repair allowance.
    pub commit_ms: u64,
}

/// An upload's contracts could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ContractError {
    /// The wallet cannot pay.
    #[error("this upload needs {need} reserved and the wallet {peer} has {have} available; fund it with `btfs wallet deposit AMOUNT` (or pay into {peer} through the network's settlement), then upload again")]
    Unfunded {
        /// Needed.
        need: String,
        /// Available.
        have: String,
        /// The wallet.
        peer: String,
    },
    /// Too few hosts signed offers.
    #[error(
        "too few hosts: only {signed} of the {needed} hosts needed signed a storage offer: {why}"
    )]
    TooFewHosts {
        /// Signed.
        signed: usize,
        /// Needed.
        needed: usize,
        /// Some hosts' answers.
        why: String,
    },
    /// The Escrow.
    #[error(transparent)]
    Wallet(#[from] WalletError),
}

/// A fresh random id (32 hex digits) for a contract or call.
pub(crate) fn id() -> String {
    let mut b = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Asks `host` to sign `doc`.
async fn host_sign(tenant: &Tenant, host: PeerId, req: HostRequest) -> Result<Cosigned, String> {
    match host_request(tenant, host, req).await? {
        HostResponse::Signed { doc } => Ok(doc),
        other => Err(format!(
            "host {host} answered {other:?}, not a signed document"
        )),
    }
}

/// One `/btfs/contract/1` request.
async fn host_request(
    tenant: &Tenant,
    host: PeerId,
    req: HostRequest,
) -> Result<HostResponse, String> {
    let addrs = tenant.dial_addrs().remove(&host).unwrap_or_default();
    ask_host(tenant.net(), host, addrs, &req).await
}

/// One `/btfs/contract/1` request to `host` at `addrs` (the tenant's and the Guard's).
pub(crate) async fn ask_host(
    net: &crate::net::Net,
    host: PeerId,
    addrs: Vec<libp2p::Multiaddr>,
    req: &HostRequest,
) -> Result<HostResponse, String> {
    let body = serde_json::to_vec(req).map_err(|e| e.to_string())?;
    let (status, out) = crate::net::exchange(
        net,
        host,
        addrs,
        escrow::HOST_PROTOCOL,
        &body,
        escrow::MAX_HOST_REQUEST_LEN,
        Duration::from_secs(20),
    )
    .await?;
    if status != Status::Ok {
        return Err(String::from_utf8_lossy(&out).into_owned());
    }
    serde_json::from_slice::<HostResponse>(&out).map_err(|e| e.to_string())
}

/// Makes, signs and reserves one offer of `room` per candidate host (at least `needed` must
/// sign and take the funding proof).
pub async fn reserve(
    tenant: &Tenant,
    wallet: &Wallet,
    plan: &PayPlan,
    room: escrow::plan::Room,
    prices: &HashMap<PeerId, u64>,
    needed: usize,
) -> Result<Reserved, ContractError> {
    let started = std::time::Instant::now();
    let now = now_ms();
    let me = wallet.peer().to_base58();
    let guard = plan.guard.to_base58();
    let hosts: Vec<PeerId> = tenant.hosts().iter().map(|h| h.peer).collect();
    // The wallet's balance is asked while the hosts sign: neither waits for the other.
    let account = async {
        match crate::tenant::wallet::query(
            tenant.net(),
            &plan.escrow,
            &EscrowRequest::Account { peer: me.clone() },
        )
        .await?
        {
            EscrowResponse::Account { account, .. } => Ok(account),
            other => Err(WalletError::Refused(format!("unexpected answer {other:?}"))),
        }
    };
    let signing = stream::iter(hosts)
        .map(|host| {
            let h58 = host.to_base58();
            let terms = escrow::plan::offer_for(
                &OfferParams {
                    id: id(),
                    tenant: &me,
                    host: &h58,
                    guard: &guard,
                    price_per_gib_month: prices.get(&host).copied().unwrap_or(0),
                    epoch_ms: plan.epoch_ms,
                    epochs: plan.epochs,
                    now_ms: now,
                },
                room,
            );
            async move {
                let doc = Cosigned::propose(&terms).map_err(|e| e.to_string())?;
                let doc = host_sign(tenant, host, HostRequest::Offer { doc })
                    .await
                    .map_err(|e| format!("host {host}: {e}"))?;
                let got = doc.verify_host().map_err(|e| e.to_string())?;
                if got != terms {
                    return Err(format!("host {host} signed other terms"));
                }
                let doc = doc.sign(&wallet.ed25519()).map_err(|e| e.to_string())?;
                Ok((host, terms, doc))
            }
        })
        .buffer_unordered(64)
        .collect::<Vec<Result<(PeerId, Terms, Cosigned), String>>>();
    let (signed, account) = futures::join!(signing, account);
    let offers_ms = started.elapsed().as_millis() as u64;
    let mut offers = Vec::new();
    let mut why = Vec::new();
    for r in signed {
        match r {
            Ok(o) => offers.push(o),
            Err(e) => {
                tracing::warn!("a host made no storage offer: {e}");
                why.push(e);
            }
        }
    }
    if offers.len() < needed {
        return Err(ContractError::TooFewHosts {
            signed: offers.len(),
            needed,
            why: why.into_iter().take(3).collect::<Vec<_>>().join("; "),
        });
    }
    let reserve: u64 = offers
        .iter()
        .filter_map(|(_, t, _)| t.reserve_amount())
        .sum();
    // The repair allowance comes out of the same wallet at commit: count it now (the most it
    // can be, since the contracts lock at most what was reserved).
    let need = reserve.saturating_add(plan.allowance(reserve));
    let account = account?;
    let mut topped_up = 0;
    if account.available < need {
        let short = need - account.available;
        if !plan.devnet {
            return Err(ContractError::Unfunded {
                need: btt(need),
                have: btt(account.available),
                peer: me,
            });
        }
        // Devnet only: test money from the faucet, at most its limit per call.
        // Take some headroom too, so the next uploads need no top-up of their own.
        let limit = crate::tools::devnet::DEVNET_FAUCET_MAX;
        let short = short.max(DEVNET_TOP_UP.min(limit));
        let mut left = short;
        while left > 0 {
            let amount = left.min(limit);
            wallet
                .call(tenant.net(), &plan.escrow, Op::Deposit { amount })
                .await?;
            left -= amount;
        }
        topped_up = short;
        eprintln!(
            "devnet: topped up the wallet {me} with {} from the faucet",
            btt(short)
        );
    }
    let mut reserved = Vec::new();
    let mut granted = std::collections::BTreeSet::new();
    for chunk in offers.chunks(MAX_DOCS_PER_CALL) {
        let docs = chunk.iter().map(|(_, _, d)| d.clone()).collect();
        let r = wallet
            .call(tenant.net(), &plan.escrow, Op::Reserve { offers: docs })
            .await?;
        reserved.extend(chunk.iter().map(|(h, t, _)| (*h, t.clone())));
        let Some(proof) = r.funded else {
            return Err(WalletError::Refused(
                "the Escrow sent no funding proof for the reserved offers; hosts store nothing without one".into(),
            )
            .into());
        };
        let docs: Vec<(PeerId, Cosigned)> = chunk.iter().map(|(h, _, d)| (*h, d.clone())).collect();
        let answers: Vec<(PeerId, Result<HostResponse, String>)> =
            stream::iter(escrow::plan::funding_notices(&docs, &proof))
                .map(|(host, req)| async move { (host, host_request(tenant, host, req).await) })
                .buffer_unordered(64)
                .collect()
                .await;
        for e in escrow::plan::tally_grants(answers, &mut granted) {
            tracing::warn!("{e}");
            why.push(e);
        }
    }
    let out = Reserved {
        offers: reserved,
        granted,
        amount: reserve,
        topped_up,
        timings: Timings {
            offers_ms,
            reserve_ms: started.elapsed().as_millis() as u64 - offers_ms,
            commit_ms: 0,
        },
    };
    if out.granted.len() < needed {
        let err = ContractError::TooFewHosts {
            signed: out.granted.len(),
            needed,
            why: why.into_iter().rev().take(3).collect::<Vec<_>>().join("; "),
        };
        cancel_all(tenant, wallet, plan, &out).await;
        return Err(err);
    }
    Ok(out)
}

impl Reserved {
    /// The hosts that signed offers and took their funding proof (the only ones the upload may
    /// use).
    pub fn hosts(&self) -> impl Iterator<Item = PeerId> + '_ {
        self.offers
            .iter()
            .map(|(h, _)| *h)
            .filter(|h| self.granted.contains(h))
    }
}

/// Voids every offer of an upload that stopped (best effort: an offer not voided expires and
/// is refunded).
pub async fn cancel_all(tenant: &Tenant, wallet: &Wallet, plan: &PayPlan, reserved: &Reserved) {
    let ids: Vec<String> = reserved.offers.iter().map(|(_, t)| t.id.clone()).collect();
    for void in ids.chunks(4 * MAX_DOCS_PER_CALL) {
        let op = Op::Commit {
            contracts: Vec::new(),
            void: void.to_vec(),
        };
        if let Err(e) = wallet.call(tenant.net(), &plan.escrow, op).await {
            tracing::warn!(error = %e, "cannot void the offers of a stopped upload; they expire and are refunded");
        }
    }
}

/// Binds each host's shards into its contract and commits them all; voids unused offers.
pub async fn commit(
    tenant: &Tenant,
    wallet: &Wallet,
    plan: &PayPlan,
    reserved: &Reserved,
    layout: &Layout,
    report: &MachineReport,
) -> Result<ContractsReport, ContractError> {
    let started = std::time::Instant::now();
    let (jobs, void) = escrow::plan::commitments(&reserved.offers, layout, report);
    let signed: Vec<(PeerId, Result<Cosigned, String>)> = stream::iter(jobs)
        .map(|(host, terms)| async move {
            let r = async {
                let doc = Cosigned::propose(&terms).map_err(|e| e.to_string())?;
                let doc = host_sign(tenant, host, HostRequest::Contract { doc }).await?;
                if doc.verify_host().map_err(|e| e.to_string())? != terms {
                    return Err(format!("host {host} signed other terms"));
                }
                doc.sign(&wallet.ed25519()).map_err(|e| e.to_string())
            }
            .await;
            (host, r)
        })
        .buffer_unordered(64)
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
                tracing::warn!(%host, error = %e, "a host did not sign its contract; its offer will expire");
                out.unsigned.push(host.to_base58());
            }
        }
    }
    // The commit and the repair allowance are independent calls (the funds check before the
    // upload counted both), so they travel together: one round trip, not two.
    let amount = plan.allowance(committed_reserve);
    let allow = (amount > 0 && !docs.is_empty()).then(|| Op::Allow {
        manifest_id: report.link.manifest_id.to_hex(),
        guard: plan.guard.to_base58(),
        amount,
        until_ms: reserved
            .offers
            .first()
            .map_or(0, |(_, t)| escrow::plan::allowance_until(t)),
    });
    let commits = async {
        let mut receipts = Vec::new();
        for op in escrow::plan::commit_ops(docs, void) {
            receipts.push(wallet.call(tenant.net(), &plan.escrow, op).await?);
        }
        Ok::<_, WalletError>(receipts)
    };
    let allowed = async {
        match allow {
            Some(op) => Some(wallet.call(tenant.net(), &plan.escrow, op).await),
            None => None,
        }
    };
    let (receipts, allowed) = futures::join!(commits, allowed);
    for r in receipts? {
        out.released += r.amount;
        out.ids.extend(r.contracts);
    }
    out.committed = out.ids.len();
    out.locked = locked;
    out.timings = Timings {
        commit_ms: started.elapsed().as_millis() as u64,
        ..reserved.timings
    };
    match allowed {
        None => {}
        Some(Ok(r)) => out.repair_allowance = r.amount,
        Some(Err(e)) => {
            // The upload is stored and paid; only its repairs are not.
            eprintln!("warning: no repair allowance was set aside ({e}): lost shards of this file will not be re-placed; set one with `btfs wallet allow {} AMOUNT`", report.link.manifest_id.to_hex());
            out.repair_allowance_error = Some(e.to_string());
        }
    }
    Ok(out)
}

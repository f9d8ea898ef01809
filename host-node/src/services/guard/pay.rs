//! Paying for repairs: the Guard's side of repair contracts (rules: `btfs_core::escrow`).
//!
//! Goals: a repaired shard lands on a new host under a contract like any other, funded from
//! the repair allowance the object's tenant set aside with the upload's commit — hosts store
//! nothing unfunded, the Guard included, and the tenant's money moves only within what it
//! allowed. Order, on a network with an Escrow (which runs on this node):
//!
//! ```text
//! 1. allowance: the object's allowance naming this Guard, with money left and time to run;
//! 2. offers:    room for one shard of each slab being repaired, from the next epoch to the
//!               allowance's end, at each candidate's advertised price, to the Hub's best
//!               hosts that hold nothing of those slabs — the most shards one slab lost, plus
//!               up to SPARE_OFFERS spares, as many as the allowance can lock;
//!               each host signs, the Guard countersigns in the tenant's place;
//! 3. reserve:   one call; the locks come out of the allowance; the Escrow's funding proof is
//!               shown to each host, which grants the Guard that room;
//! 4. repair:    core's `Repair` places shards only on the hosts that granted;
//! 5. commit:    each host that got shards signs the contract listing them, the Guard
//!               countersigns, one call commits them all and voids the other offers (a failed
//!               repair voids every offer): the unused room goes back into the allowance.
//! ```
//!
//! A Guard that crashes between 3 and 5 leaves open offers. The object's next repair (the
//! Guard repairs one object at a time, so any open repair offer of the object is a leftover)
//! voids them first, and their locks go back into the allowance; offers nobody voids expire
//! after an hour the same way.
//! Non-goals: topping an allowance up (only its tenant does, `btfs wallet allow`), and paying
//! hosts that did not sign their contract (their shards stay unpaid and their offer expires).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use btfs_core::engine::repair::RepairReport;
use btfs_core::engine::HostId;
use btfs_core::escrow::plan::{self, OfferParams, Room};
use btfs_core::escrow::{
    Allowance, Call, CallReceipt, Cosigned, EscrowRequest, EscrowResponse, HostRequest,
    HostResponse, Op, Stage, Terms, MAX_DOCS_PER_CALL,
};
use btfs_core::guard::RepairFailure;
use btfs_core::signed::Signed;
use btfs_core::{Layout, Root};
use futures::stream::{self, StreamExt};
use libp2p::identity::ed25519;
use libp2p::{Multiaddr, PeerId};

use crate::net::Net;
use crate::services::escrow::EscrowLocal;
use crate::tenant::contracts::ask_host;

/// Hosts offered room beyond the most shards one slab lost (for puts that fail and move).
pub const SPARE_OFFERS: usize = 4;
/// Hosts asked at once.
const PARALLEL: usize = 32;

/// How the Guard pays for repairs: the Escrow on its node, its key, its epoch.
#[derive(Clone)]
pub struct RepairPay {
    /// The Escrow.
    pub escrow: EscrowLocal,
    /// The Guard's key (it signs repair offers, contracts and calls).
    pub key: ed25519::Keypair,
    /// The Guard's epoch length.
    pub epoch_ms: u64,
}

/// Offers reserved for one repair.
pub struct Funded {
    /// (host, terms), best ranked first.
    offers: Vec<(PeerId, Terms)>,
    granted: BTreeSet<PeerId>,
    /// µBTT locked from the allowance.
    pub amount: u64,
}

impl Funded {
    /// The hosts that took the funding proof, best ranked first: the repair's candidates.
    pub fn hosts(&self) -> Vec<HostId> {
        self.offers
            .iter()
            .map(|(h, _)| *h)
            .filter(|h| self.granted.contains(h))
            .map(HostId::new)
            .collect()
    }
}

/// What committing a repair's contracts came to.
#[derive(Debug, Default)]
pub struct Committed {
    /// Contracts committed.
    pub contracts: usize,
    /// µBTT they lock.
    pub locked: u64,
    /// Hosts that would not sign their contract.
    pub unsigned: Vec<String>,
}

use crate::tenant::contracts::id as random_id;
use crate::tenant::wallet::now_ms;

impl RepairPay {
    fn me(&self) -> PeerId {
        libp2p::identity::PublicKey::from(self.key.public()).to_peer_id()
    }

    async fn call(&self, op: Op) -> Result<CallReceipt, String> {
        let call = Call {
            peer_id: self.me().to_base58(),
            id: random_id(),
            issued_at_ms: now_ms(),
            op,
        };
        let env = Signed::sign(&call, &self.key).map_err(|e| e.to_string())?;
        match self.escrow.request(EscrowRequest::Call { call: env }).await {
            Ok(EscrowResponse::Call(r)) if r.ok => Ok(r),
            Ok(EscrowResponse::Call(r)) => {
                Err(r.error.unwrap_or_else(|| "the Escrow refused".into()))
            }
            Ok(other) => Err(format!("the Escrow answered {other:?} to a call")),
            Err((_, msg)) => Err(msg),
        }
    }

    /// The allowance of `object` this Guard may spend now (the fullest, if several tenants
    /// set one aside).
    /// No allowance is [`RepairFailure::Unfunded`]; an Escrow that cannot answer is not.
    pub async fn allowance(&self, object: &Root) -> Result<Allowance, RepairFailure> {
        let me = self.me().to_base58();
        let now = now_ms();
        let req = EscrowRequest::Allowances {
            manifest_id: object.to_hex(),
        };
        let all = match self.escrow.request(req).await {
            Ok(EscrowResponse::Allowances { allowances }) => allowances,
            Ok(other) => return Err(format!("the Escrow answered {other:?}").into()),
            Err((_, msg)) => return Err(msg.into()),
        };
        all.into_iter()
            .filter(|a| a.guard == me && a.available > 0 && a.until_ms > now)
            .max_by_key(|a| a.available)
            .ok_or_else(|| {
                RepairFailure::Unfunded(format!(
                    "object {object} has no repair allowance left for this Guard (its tenant set none aside, or it is spent or ended), so its lost shards cannot be placed on paid hosts; its tenant can add one with `btfs wallet allow {object} AMOUNT`"
                ))
            })
    }

    /// Steps 1–3: offers, reservation and funding proof for a repair of `lost` shards of
    /// `object` whose current holders are `holders`, among `ranked` (host, price per
    /// GiB-month) candidates, best first.
    #[allow(clippy::too_many_arguments)]
    pub async fn fund(
        &self,
        net: &Net,
        addrs: &HashMap<PeerId, Vec<Multiaddr>>,
        object: Root,
        layout: &Layout,
        lost: &BTreeMap<u64, BTreeSet<usize>>,
        holders: &[Vec<HostId>],
        ranked: &[(PeerId, u64)],
    ) -> Result<Funded, RepairFailure> {
        self.void_leftovers(&object).await;
        let allowance = self.allowance(&object).await?;
        let needed = lost.values().map(BTreeSet::len).max().unwrap_or(0);
        let busy: BTreeSet<PeerId> = lost
            .keys()
            .filter_map(|s| holders.get(*s as usize))
            .flatten()
            .map(|h| h.peer())
            .collect();
        let room = Room::repair(layout, lost.keys().copied());
        let (me, now) = (self.me(), now_ms());
        let me58 = me.to_base58();
        let terms: Vec<(PeerId, Terms)> = ranked
            .iter()
            .map(|(peer, price)| {
                let h58 = peer.to_base58();
                let t = plan::repair_offer(
                    &OfferParams {
                        id: random_id(),
                        tenant: &allowance.tenant,
                        host: &h58,
                        guard: &me58,
                        price_per_gib_month: *price,
                        epoch_ms: self.epoch_ms,
                        epochs: 1,
                        now_ms: now,
                    },
                    room,
                    &object,
                    allowance.until_ms,
                );
                (*peer, t)
            })
            .collect();
        let chosen = plan::pick_repair_hosts(
            terms
                .iter()
                .enumerate()
                .map(|(i, (_, t))| (i, t.reserve_amount())),
            |i| busy.contains(&terms[*i].0) || terms[*i].0 == me,
            allowance.available,
            needed + SPARE_OFFERS,
        );
        let picked: Vec<(PeerId, Terms)> = chosen.into_iter().map(|i| terms[i].clone()).collect();
        if picked.len() < needed {
            return Err(RepairFailure::Unfunded(format!(
                "the repair allowance of {object} has {} µBTT left: it pays for {} new hosts, and re-placing the {needed} shards one slab lost needs {needed}; its tenant can add to it with `btfs wallet allow {object} AMOUNT`",
                allowance.available,
                picked.len()
            )));
        }
        let key = &self.key;
        let signed: Vec<Result<(PeerId, Terms, Cosigned), String>> = stream::iter(picked)
            .map(|(host, terms)| async move {
                let doc = Cosigned::propose(&terms).map_err(|e| e.to_string())?;
                let a = addrs.get(&host).cloned().unwrap_or_default();
                match ask_host(net, host, a, &HostRequest::Offer { doc }).await {
                    Ok(HostResponse::Signed { doc }) => {
                        if doc.verify_host().map_err(|e| e.to_string())? != terms {
                            return Err(format!("host {host} signed other terms"));
                        }
                        let doc = doc.sign(key).map_err(|e| e.to_string())?;
                        Ok((host, terms, doc))
                    }
                    Ok(other) => Err(format!("host {host} answered {other:?}")),
                    Err(e) => Err(format!("host {host}: {e}")),
                }
            })
            .buffered(PARALLEL)
            .collect()
            .await;
        let mut offers = Vec::new();
        let mut why = Vec::new();
        for r in signed {
            match r {
                Ok(o) => offers.push(o),
                Err(e) => why.push(e),
            }
        }
        if offers.len() < needed {
            return Err(format!(
                "only {} of the {needed} hosts a repair of {object} needs signed a repair offer: {}",
                offers.len(),
                why.into_iter().take(3).collect::<Vec<_>>().join("; ")
            )
            .into());
        }
        offers.truncate(MAX_DOCS_PER_CALL);
        let docs = offers.iter().map(|(_, _, d)| d.clone()).collect();
        let r = self.call(Op::Reserve { offers: docs }).await?;
        let mut funded = Funded {
            offers: offers.iter().map(|(h, t, _)| (*h, t.clone())).collect(),
            granted: BTreeSet::new(),
            amount: r.amount,
        };
        let Some(proof) = r.funded else {
            self.void(&funded).await;
            return Err("the Escrow sent no funding proof for the repair offers".into());
        };
        let shown: Vec<(PeerId, Cosigned)> = offers.into_iter().map(|(h, _, d)| (h, d)).collect();
        let answers: Vec<(PeerId, Result<HostResponse, String>)> =
            stream::iter(plan::funding_notices(&shown, &proof))
                .map(|(host, req)| async move {
                    let a = addrs.get(&host).cloned().unwrap_or_default();
                    (host, ask_host(net, host, a, &req).await)
                })
                .buffer_unordered(PARALLEL)
                .collect()
                .await;
        for e in plan::tally_grants(answers, &mut funded.granted) {
            tracing::warn!(%object, "{e}");
        }
        if funded.granted.len() < needed {
            self.void(&funded).await;
            return Err(format!(
                "only {} of the {needed} hosts a repair of {object} needs took the funding proof",
                funded.granted.len()
            )
            .into());
        }
        Ok(funded)
    }

    /// Step 5: contracts for what the repair placed, committed in one call that also voids
    /// the unused offers.
    pub async fn commit(
        &self,
        net: &Net,
        addrs: &HashMap<PeerId, Vec<Multiaddr>>,
        object: Root,
        layout: &Layout,
        funded: &Funded,
        report: &RepairReport,
    ) -> Result<Committed, String> {
        let (jobs, void) =
            plan::repair_commitments(&funded.offers, layout, &object, &report.repaired);
        let key = &self.key;
        let signed: Vec<(PeerId, Result<Cosigned, String>)> = stream::iter(jobs)
            .map(|(host, terms)| async move {
                let r = async {
                    let doc = Cosigned::propose(&terms).map_err(|e| e.to_string())?;
                    let a = addrs.get(&host).cloned().unwrap_or_default();
                    match ask_host(net, host, a, &HostRequest::Contract { doc }).await? {
                        HostResponse::Signed { doc } => {
                            if doc.verify_host().map_err(|e| e.to_string())? != terms {
                                return Err(format!("host {host} signed other terms"));
                            }
                            doc.sign(key).map_err(|e| e.to_string())
                        }
                        other => Err(format!("host {host} answered {other:?}")),
                    }
                }
                .await;
                (host, r)
            })
            .buffer_unordered(PARALLEL)
            .collect()
            .await;
        let mut out = Committed::default();
        let mut docs = Vec::new();
        for (host, r) in signed {
            match r {
                Ok(d) => {
                    out.locked += d.terms().map_or(0, |t| t.contract_amount());
                    docs.push(d);
                }
                Err(e) => {
                    tracing::warn!(%object, %host, error = %e, "a host did not sign its repair contract; its offer expires back into the allowance");
                    out.unsigned.push(host.to_base58());
                }
            }
        }
        for op in plan::commit_ops(docs, void) {
            let r = self.call(op).await?;
            out.contracts += r.contracts.len();
        }
        Ok(out)
    }

    /// Voids this Guard's open repair offers for `object` (left by a repair that crashed).
    async fn void_leftovers(&self, object: &Root) {
        let me = self.me().to_base58();
        let hex = object.to_hex();
        let Ok(EscrowResponse::Allowances { allowances }) = self
            .escrow
            .request(EscrowRequest::Allowances {
                manifest_id: hex.clone(),
            })
            .await
        else {
            return;
        };
        let mut ids = Vec::new();
        for a in allowances.iter().filter(|a| a.guard == me && a.spent > 0) {
            let req = EscrowRequest::Contracts {
                peer: a.tenant.clone(),
            };
            if let Ok(EscrowResponse::Contracts { contracts }) = self.escrow.request(req).await {
                ids.extend(
                    contracts
                        .into_iter()
                        .filter(|c| {
                            c.state == Stage::Offered
                                && c.guard == me
                                && c.doc
                                    .terms()
                                    .is_ok_and(|t| t.repair_of.as_ref() == Some(&hex))
                        })
                        .map(|c| c.id),
                );
            }
        }
        if ids.is_empty() {
            return;
        }
        tracing::info!(%object, offers = ids.len(), "voiding repair offers an interrupted repair left open");
        for void in ids.chunks(4 * MAX_DOCS_PER_CALL) {
            let op = Op::Commit {
                contracts: Vec::new(),
                void: void.to_vec(),
            };
            if let Err(e) = self.call(op).await {
                tracing::warn!(%object, error = %e, "cannot void leftover repair offers; they expire back into the allowance");
            }
        }
    }

    /// Voids every offer of a repair that did not happen (best effort: an offer not voided
    /// expires back into the allowance).
    pub async fn void(&self, funded: &Funded) {
        let ids: Vec<String> = funded.offers.iter().map(|(_, t)| t.id.clone()).collect();
        for void in ids.chunks(4 * MAX_DOCS_PER_CALL) {
            let op = Op::Commit {
                contracts: Vec::new(),
                void: void.to_vec(),
            };
            if let Err(e) = self.call(op).await {
                tracing::warn!(error = %e, "cannot void a repair's offers; they expire back into the allowance");
            }
        }
    }
}

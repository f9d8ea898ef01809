//! The ledger rules as a pure state machine: every balance change the Escrow makes.
//!
//! Model (TigerBeetle's): double-entry accounts keyed by peer id, and *pending* transfers. An
//! offer's reservation is a pending transfer tenant → host of the most the offer can cost;
//! committing the contract voids the part it will never need; then each (shard, epoch) part is
//! settled exactly once — **posted** to the host on the Guard's passing verdict for that epoch,
//! or **voided** back to the tenant on a failing verdict, on cancellation, or when no verdict
//! came within `grace_epochs` after the epoch (expiry). Deposits and withdrawals are the only
//! transfers with the outside world.
//!
//! Repair allowances ([`Allowance`], `Op::Allow`): money a tenant sets aside for one object's
//! repairs, spent only by the Guard it names, on repair offers (`Terms::repair_of`) it signs in
//! the tenant's place; their unused room goes back into the allowance, and what is left of it
//! goes back to the tenant when it ends (a tick).
//!
//! Invariants (checked by [`Ledger::check`] after every operation in the tests):
//! - money is conserved: Σ available + Σ locked + Σ allowances = deposits − withdrawals, and Σ
//!   locked (the tenants' pending debits) = Σ incoming (the hosts' pending credits) = Σ
//!   contracts' locks; each allowance's `spent` = what its repair contracts took from it;
//! - each (contract, shard, epoch) is settled at most once, and a payout only follows a passing
//!   verdict of the contract's Guard ([`Transfer`] names the batch and line behind it);
//! - no account goes negative (all amounts are `u64`; every subtraction is checked first).
//!
//! Idempotency: a [`Call`] carries an id its author chose and saved; the first result under
//! (account, id) is kept, a retry gets it again with `replayed: true`, another body under the
//! same id is refused ([`LedgerError::IdReused`]). Results are kept for good (like TigerBeetle's
//! transfer ids): calls are few, a handful per upload, while payouts, the busy path, are verdict
//! lines, which need no id: a (contract, shard, epoch) settles once, a repeat is counted as a
//! duplicate. A call must be fresh (within `max_skew` of the clock) only the first time. A call
//! from an account that never held anything is refused unrecorded unless it is a deposit
//! ([`LedgerError::UnknownAccount`]), so fresh keys cannot fill the log.
//!
//! Time comes in as `now_ms` (the Escrow's clock, logged with each command), so replaying the
//! command log reproduces the ledger exactly: that is how the Escrow recovers from a crash and
//! how an auditor checks it. Non-goals: signatures of the outside world (the settlement layer
//! confirms deposits before a `Deposit` reaches this machine), storage, networking.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::terms::{epoch_at, shard_epoch_amount, Call, Cosigned, Op, Settle, Terms};
use crate::signed::{Signed, SignedError};

/// Tuning of the ledger rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerConfig {
    /// Epochs after an epoch ends before its unsettled parts go back to the tenant.
    pub grace_epochs: u64,
    /// Largest accepted difference between a call's `issued_at_ms` and the clock.
    pub max_skew_ms: u64,
    /// Largest faucet deposit per call, or `None`: no faucet (deposits come from settlement).
    pub faucet_max: Option<u64>,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        Self {
            grace_epochs: 3,
            max_skew_ms: 10 * 60 * 1000,
            faucet_max: None,
        }
    }
}

/// One account.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// Spendable µBTT.
    pub available: u64,
    /// Locked in this account's contracts as tenant (pending debits).
    pub locked: u64,
    /// Promised to this account as host, not yet earned (pending credits).
    pub incoming: u64,
    /// Total deposited.
    pub deposited: u64,
    /// Total withdrawn.
    pub withdrawn: u64,
    /// Total earned as host.
    pub earned: u64,
    /// Total paid to hosts as tenant.
    pub spent: u64,
    /// Total returned from contracts as tenant.
    pub refunded: u64,
    /// Set aside as repair allowances, not yet spent on repairs ([`Allowance`]).
    #[serde(default)]
    pub allowance: u64,
}

/// Money a tenant set aside for the repairs of one object: only `guard` spends it, on repair
/// offers (`Terms::repair_of`) for that object, until `until_ms`; what is left then goes back
/// to the tenant. A repair offer's unused room comes back into it; a repair contract's
/// per-epoch refunds (failed or missing verdicts) go to the tenant like any contract's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allowance {
    /// Whose money.
    pub tenant: String,
    /// The object.
    pub manifest_id: String,
    /// The Guard that may spend it.
    pub guard: String,
    /// µBTT left to spend.
    pub available: u64,
    /// µBTT now locked in repair offers and contracts it funded (or paid from them).
    pub spent: u64,
    /// Unix ms when what is left goes back.
    pub until_ms: u64,
}

/// Where a contract is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Reserved, not committed yet.
    Offered,
    /// Committed; epochs are being settled.
    Active,
    /// Cancelled by the tenant; the epochs up to the cancellation still settle.
    Cancelled,
    /// Every epoch settled.
    Ended,
    /// An offer that expired or was cancelled before commit; everything went back.
    Voided,
}

/// A run of consecutive settled epochs of one shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    /// First epoch.
    pub start: u64,
    /// One past the last epoch.
    pub end: u64,
    /// Paid to the host (true) or returned to the tenant (false).
    pub paid: bool,
}

/// One shard of a contract.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardState {
    /// Root (hex).
    pub root: String,
    /// Bytes.
    pub size: u64,
    /// µBTT per epoch.
    pub per_epoch: u64,
    /// Settled epochs, sorted, non-overlapping, adjacent runs of the same kind merged.
    pub runs: Vec<Run>,
}

impl ShardState {
    fn settled(&self, epoch: u64) -> Option<bool> {
        let i = self.runs.partition_point(|r| r.end <= epoch);
        self.runs
            .get(i)
            .filter(|r| r.start <= epoch)
            .map(|r| r.paid)
    }

    fn settle(&mut self, epoch: u64, paid: bool) {
        self.settle_range(epoch, epoch + 1, paid);
    }

    /// Marks `[start, end)` settled; the caller knows none of it was.
    fn settle_range(&mut self, start: u64, end: u64, paid: bool) {
        let i = self.runs.partition_point(|r| r.end <= start);
        self.runs.insert(i, Run { start, end, paid });
        // Merge with neighbours of the same kind.
        if i + 1 < self.runs.len()
            && self.runs[i + 1].start == self.runs[i].end
            && self.runs[i + 1].paid == paid
        {
            self.runs[i].end = self.runs[i + 1].end;
            self.runs.remove(i + 1);
        }
        if i > 0 && self.runs[i - 1].end == self.runs[i].start && self.runs[i - 1].paid == paid {
            self.runs[i - 1].end = self.runs[i].end;
            self.runs.remove(i);
        }
    }

    /// Epochs in `[from, to)` not settled yet.
    fn unsettled_in(&self, from: u64, to: u64) -> Vec<(u64, u64)> {
        let mut gaps = Vec::new();
        let mut at = from;
        for r in &self.runs {
            if r.end <= at {
                continue;
            }
            if r.start >= to {
                break;
            }
            if r.start > at {
                gaps.push((at, r.start.min(to)));
            }
            at = at.max(r.end);
        }
        if at < to {
            gaps.push((at, to));
        }
        gaps
    }

    /// Epochs paid and returned.
    pub fn counts(&self) -> (u64, u64) {
        self.runs.iter().fold((0, 0), |(p, r), run| {
            if run.paid {
                (p + run.end - run.start, r)
            } else {
                (p, r + run.end - run.start)
            }
        })
    }
}

/// A contract (or offer) and how much of it is settled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContractState {
    /// The terms (the contract's once committed, else the offer's).
    pub terms: Terms,
    /// The document both parties signed.
    pub doc: Cosigned,
    /// Stage.
    pub stage: Stage,
    /// µBTT still pending.
    pub locked: u64,
    /// µBTT posted to the host.
    pub paid: u64,
    /// µBTT returned to the tenant.
    pub refunded: u64,
    /// One past the last epoch that can still be paid (shortened by a cancellation).
    pub end_epoch: u64,
    /// Every epoch before this one is settled for every shard.
    pub swept: u64,
    /// Shards (empty for an offer).
    pub shards: Vec<ShardState>,
    /// For a repair: µBTT it took from its repair allowance, less what it gave back there.
    #[serde(default)]
    pub from_allowance: u64,
}

/// Why a command was refused before it reached the ledger (nothing is recorded).
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum LedgerError {
    /// Signature, kind, size or field bounds.
    #[error("refused: {0}")]
    Signed(#[from] SignedError),
    /// `issued_at_ms` too far from the Escrow's clock.
    #[error("stale request: issued at {issued_at_ms} ms, the Escrow's clock says {now_ms} ms (allowed skew {max_skew_ms} ms); check your clock and send it again with a new id")]
    Stale {
        /// The call's time.
        issued_at_ms: u64,
        /// The clock.
        now_ms: u64,
        /// Allowed skew.
        max_skew_ms: u64,
    },
    /// A call other than a deposit from an account that never held anything: refused without
    /// a record, so strangers cannot fill the log with failing calls.
    #[error("unknown account {0}: it has never held anything; deposit first")]
    UnknownAccount(String),
    /// Another body under an id this account used before.
    #[error("request id {id} was already used by {account} for a different request; generate a new id for a new request")]
    IdReused {
        /// The account.
        account: String,
        /// The id.
        id: String,
    },
}

/// The result of a [`Call`] (kept, and returned again to retries).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallReceipt {
    /// The call's id.
    pub id: String,
    /// The account.
    pub account: String,
    /// Whether the operation was applied.
    pub ok: bool,
    /// Why not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// µBTT moved (deposited, withdrawn, locked, released or refunded).
    pub amount: u64,
    /// Contract ids the call touched.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub contracts: Vec<String>,
    /// True when this is the stored answer to an earlier identical call.
    #[serde(default)]
    pub replayed: bool,
    /// For a reservation: the Escrow's signed [`super::Funded`] proof of the offers still
    /// locked, for the hosts (added by the service, never stored in the ledger).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub funded: Option<Signed>,
}

/// What one verdict line did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LineOutcome {
    /// Posted to the host.
    Paid,
    /// Returned to the tenant.
    Refunded,
    /// Already settled the same way (a replayed or repeated verdict).
    Duplicate,
    /// Already settled the other way (e.g. expired before the verdict came).
    Conflict,
    /// No contract of this Guard covers that host, root and epoch.
    NoContract,
    /// The epoch has not started yet.
    Future,
}

/// The result of a [`Settle`] batch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettleReceipt {
    /// The batch's seq.
    pub seq: u64,
    /// Parts posted to hosts.
    pub paid: u32,
    /// Parts returned to tenants.
    pub refunded: u32,
    /// Repeats.
    pub duplicate: u32,
    /// Already settled the other way.
    pub conflict: u32,
    /// No matching contract.
    pub no_contract: u32,
    /// Epoch in the future.
    pub future: u32,
    /// µBTT posted.
    pub amount_paid: u64,
    /// µBTT returned.
    pub amount_refunded: u64,
}

/// The result of a [`Command::Tick`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TickReceipt {
    /// (shard, epoch) parts returned for want of a verdict.
    pub expired: u64,
    /// µBTT returned by expiry and voided offers.
    pub refunded: u64,
    /// Offers voided because they were never committed.
    pub voided_offers: u32,
    /// Contracts that ended.
    pub ended: u32,
    /// Repair allowances whose time ran out (what was left went back to their tenants).
    #[serde(default)]
    pub allowances_ended: u32,
}

/// Any result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Receipt {
    /// A call's.
    Call(CallReceipt),
    /// A batch's.
    Settle(SettleReceipt),
    /// A tick's.
    Tick(TickReceipt),
    /// The rules changed.
    Configured,
}

/// Something the ledger is asked to do; the Escrow logs each accepted one with its `now_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Command {
    /// A signed [`Call`].
    Call {
        /// The envelope.
        call: Signed,
    },
    /// A Guard's signed [`Settle`] batch.
    Settle {
        /// The envelope.
        batch: Signed,
    },
    /// Time passed: expire what is overdue.
    Tick,
    /// The operator changed the rules (faucet, grace, skew) from this point of the log on.
    Configure {
        /// The new rules.
        config: LedgerConfig,
    },
}

/// What moved, for histories and the auditor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfer {
    /// Ledger-wide sequence number.
    pub seq: u64,
    /// What kind.
    pub kind: TransferKind,
    /// Debited account (`"@settlement"` for deposits).
    pub debit: String,
    /// Credited account (`"@settlement"` for withdrawals).
    pub credit: String,
    /// µBTT.
    pub amount: u64,
    /// The contract, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contract: Option<String>,
    /// The shard root and epoch of a settled part.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part: Option<(String, u64)>,
    /// The verdict behind a settled part: (Guard, batch seq, line).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<(String, u64, u32)>,
    /// The object whose repair allowance the money came from or went back to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowance: Option<String>,
    /// The Escrow's clock.
    pub at_ms: u64,
}

/// Kinds of [`Transfer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransferKind {
    /// From outside.
    Deposit,
    /// To outside.
    Withdraw,
    /// A pending transfer tenant → host (reservation).
    Lock,
    /// Part of a lock voided back to the tenant (commit, cancellation, failed verdict, expiry).
    Release,
    /// Part of a lock posted to the host on a passing verdict.
    Payout,
    /// Available balance set aside as a repair allowance (debit and credit: the tenant).
    Allow,
    /// What was left of a repair allowance, back to available when its time ran out.
    AllowBack,
}

/// The account that stands for the outside world in [`Transfer`]s.
pub const SETTLEMENT: &str = "@settlement";

/// Ledger-wide totals and the conservation check.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    /// Σ deposits.
    pub deposits: u64,
    /// Σ withdrawals.
    pub withdrawals: u64,
    /// Σ available.
    pub balances: u64,
    /// Σ locked.
    pub locked: u64,
    /// Σ incoming (equals `locked`).
    pub incoming: u64,
    /// Σ repair allowances left.
    #[serde(default)]
    pub allowances: u64,
    /// Σ paid to hosts.
    pub paid: u64,
    /// Accounts.
    pub accounts: u64,
    /// Contracts (all stages).
    pub contracts: u64,
    /// balances + locked + allowances == deposits − withdrawals and locked == incoming.
    pub conserved: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct CallRecord {
    digest: String,
    issued_at_ms: u64,
    receipt: CallReceipt,
}

/// Whether a reservation's first offer is a repair (all must agree; unreadable ones are refused
/// by their own check).
fn offers_are_repairs(offers: &[Cosigned]) -> bool {
    offers
        .first()
        .and_then(|d| d.terms().ok())
        .is_some_and(|t| t.repair_of.is_some())
}

/// Newest transfers kept per account for histories.
pub const HISTORY_PER_ACCOUNT: usize = 1000;

/// The ledger.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Ledger {
    cfg: LedgerConfig,
    accounts: BTreeMap<String, Account>,
    contracts: BTreeMap<String, ContractState>,
    calls: BTreeMap<String, CallRecord>,
    /// Repair allowances by "manifest/tenant".
    #[serde(default)]
    allowances: BTreeMap<String, Allowance>,
    deposits: u64,
    withdrawals: u64,
    paid: u64,
    seq: u64,
    #[serde(skip)]
    by_host_root: BTreeMap<(String, String), Vec<String>>,
    #[serde(skip)]
    by_peer: BTreeMap<String, Vec<String>>,
    #[serde(skip)]
    live: BTreeSet<String>,
    /// Allowances with money left (the ones a tick may end).
    #[serde(skip)]
    open_allowances: BTreeSet<String>,
    #[serde(skip)]
    history: BTreeMap<String, VecDeque<Transfer>>,
    #[serde(skip)]
    journal: Vec<Transfer>,
}

impl Ledger {
    /// An empty ledger.
    pub fn new(cfg: LedgerConfig) -> Self {
        Self {
            cfg,
            ..Self::default()
        }
    }

    /// The configuration.
    pub fn config(&self) -> &LedgerConfig {
        &self.cfg
    }

    /// Rebuilds the indexes after deserializing a snapshot (histories start empty).
    pub fn reindex(&mut self) {
        self.by_host_root.clear();
        self.by_peer.clear();
        self.live.clear();
        let ids: Vec<String> = self.contracts.keys().cloned().collect();
        for id in ids {
            self.index(&id);
        }
        self.open_allowances = self
            .allowances
            .iter()
            .filter(|(_, a)| a.available > 0)
            .map(|(k, _)| k.clone())
            .collect();
    }

    fn index(&mut self, id: &str) {
        let Some(c) = self.contracts.get(id) else {
            return;
        };
        for s in &c.shards {
            let e = self
                .by_host_root
                .entry((c.terms.host.clone(), s.root.clone()))
                .or_default();
            if !e.iter().any(|x| x == id) {
                e.push(id.to_string());
            }
        }
        for p in [&c.terms.tenant, &c.terms.host] {
            let e = self.by_peer.entry(p.clone()).or_default();
            if !e.iter().any(|x| x == id) {
                e.push(id.to_string());
            }
        }
        if matches!(c.stage, Stage::Offered | Stage::Active | Stage::Cancelled) {
            self.live.insert(id.to_string());
        } else {
            self.live.remove(id);
        }
    }

    /// Applies one command at `now_ms`. `Err` means refused before anything was recorded (so
    /// the command need not be logged); `Ok` may still carry a failed call (`ok: false`), which
    /// *is* recorded and must be logged.
    pub fn apply(&mut self, cmd: &Command, now_ms: u64) -> Result<Receipt, LedgerError> {
        match cmd {
            Command::Call { call } => self.call(call, now_ms).map(Receipt::Call),
            Command::Settle { batch } => self.settle(batch, now_ms).map(Receipt::Settle),
            Command::Tick => Ok(Receipt::Tick(self.tick(now_ms))),
            Command::Configure { config } => {
                self.cfg = config.clone();
                Ok(Receipt::Configured)
            }
        }
    }

    fn call(&mut self, env: &Signed, now_ms: u64) -> Result<CallReceipt, LedgerError> {
        let v = env.verify::<Call>()?;
        let call = v.body;
        let key = format!("{}/{}", call.peer_id, call.id);
        let digest = blake3::hash(env.payload.as_bytes()).to_hex().to_string();
        if let Some(rec) = self.calls.get(&key) {
            if rec.digest == digest {
                let mut r = rec.receipt.clone();
                r.replayed = true;
                return Ok(r);
            }
            return Err(LedgerError::IdReused {
                account: call.peer_id,
                id: call.id,
            });
        }
        if !self.accounts.contains_key(&call.peer_id) && !matches!(call.op, Op::Deposit { .. }) {
            return Err(LedgerError::UnknownAccount(call.peer_id));
        }
        if call.issued_at_ms.abs_diff(now_ms) > self.cfg.max_skew_ms {
            return Err(LedgerError::Stale {
                issued_at_ms: call.issued_at_ms,
                now_ms,
                max_skew_ms: self.cfg.max_skew_ms,
            });
        }
        let mut receipt = CallReceipt {
            id: call.id.clone(),
            account: call.peer_id.clone(),
            ok: true,
            error: None,
            amount: 0,
            contracts: Vec::new(),
            replayed: false,
            funded: None,
        };
        let result = match &call.op {
            Op::Deposit { amount } => self.deposit(&call.peer_id, *amount, now_ms),
            Op::Withdraw { amount } => self.withdraw(&call.peer_id, *amount, now_ms),
            Op::Reserve { offers } => self.reserve(&call.peer_id, offers, now_ms),
            Op::Commit { contracts, void } => self.commit(&call.peer_id, contracts, void, now_ms),
            Op::Cancel { contract } => self.cancel(&call.peer_id, contract, now_ms),
            Op::Allow {
                manifest_id,
                guard,
                amount,
                until_ms,
            } => self.allow(
                &call.peer_id,
                manifest_id,
                guard,
                *amount,
                *until_ms,
                now_ms,
            ),
        };
        match result {
            Ok((amount, contracts)) => {
                receipt.amount = amount;
                receipt.contracts = contracts;
            }
            Err(e) => {
                receipt.ok = false;
                receipt.error = Some(e);
            }
        }
        self.calls.insert(
            key,
            CallRecord {
                digest,
                issued_at_ms: call.issued_at_ms,
                receipt: receipt.clone(),
            },
        );
        Ok(receipt)
    }

    fn record(&mut self, mut t: Transfer) {
        self.seq += 1;
        t.seq = self.seq;
        for who in [&t.debit, &t.credit] {
            if who == SETTLEMENT {
                continue;
            }
            let h = self.history.entry(who.clone()).or_default();
            if h.len() == HISTORY_PER_ACCOUNT {
                h.pop_front();
            }
            h.push_back(t.clone());
        }
        self.journal.push(t);
    }

    fn transfer(
        kind: TransferKind,
        debit: &str,
        credit: &str,
        amount: u64,
        contract: Option<&str>,
        at_ms: u64,
    ) -> Transfer {
        Transfer {
            seq: 0,
            kind,
            debit: debit.to_string(),
            credit: credit.to_string(),
            amount,
            contract: contract.map(str::to_string),
            part: None,
            verdict: None,
            allowance: None,
            at_ms,
        }
    }

    fn allowance_key(manifest_id: &str, tenant: &str) -> String {
        format!("{manifest_id}/{tenant}")
    }

    fn allow(
        &mut self,
        peer: &str,
        manifest_id: &str,
        guard: &str,
        amount: u64,
        until_ms: u64,
        now_ms: u64,
    ) -> Result<(u64, Vec<String>), String> {
        if until_ms <= now_ms {
            return Err(format!(
                "a repair allowance must last into the future: until {until_ms} ms is not after the Escrow's clock ({now_ms} ms)"
            ));
        }
        if guard == peer {
            return Err("a tenant cannot be the Guard of its own repair allowance".into());
        }
        let key = Self::allowance_key(manifest_id, peer);
        if let Some(a) = self.allowances.get(&key) {
            if a.guard != guard {
                return Err(format!(
                    "the repair allowance of {manifest_id} names Guard {}; add to it for that Guard",
                    a.guard
                ));
            }
        }
        let available = self.accounts.get(peer).map_or(0, |a| a.available);
        if amount > available {
            return Err(format!(
                "insufficient funds: a repair allowance of {amount} µBTT needs that much available, the account has {available} µBTT; deposit at least {} µBTT",
                amount - available
            ));
        }
        let acct = self.accounts.entry(peer.to_string()).or_default();
        acct.available -= amount;
        acct.allowance += amount;
        // The Guard may now call to spend it: its account exists from here on.
        self.accounts.entry(guard.to_string()).or_default();
        let a = self.allowances.entry(key.clone()).or_insert(Allowance {
            tenant: peer.to_string(),
            manifest_id: manifest_id.to_string(),
            guard: guard.to_string(),
            available: 0,
            spent: 0,
            until_ms,
        });
        a.available += amount;
        a.until_ms = a.until_ms.max(until_ms);
        self.open_allowances.insert(key);
        let mut t = Self::transfer(TransferKind::Allow, peer, peer, amount, None, now_ms);
        t.allowance = Some(manifest_id.to_string());
        self.record(t);
        Ok((amount, Vec::new()))
    }

    fn deposit(
        &mut self,
        peer: &str,
        amount: u64,
        now_ms: u64,
    ) -> Result<(u64, Vec<String>), String> {
        let Some(max) = self.cfg.faucet_max else {
            return Err("this Escrow has no faucet: deposits come from the settlement layer (on a devnet, the faucet is on)".into());
        };
        if amount > max {
            return Err(format!(
                "the faucet gives at most {max} µBTT per deposit; ask for less"
            ));
        }
        let a = self.accounts.entry(peer.to_string()).or_default();
        a.available += amount;
        a.deposited += amount;
        self.deposits += amount;
        self.record(Self::transfer(
            TransferKind::Deposit,
            SETTLEMENT,
            peer,
            amount,
            None,
            now_ms,
        ));
        Ok((amount, Vec::new()))
    }

    fn withdraw(
        &mut self,
        peer: &str,
        amount: u64,
        now_ms: u64,
    ) -> Result<(u64, Vec<String>), String> {
        let a = self.accounts.entry(peer.to_string()).or_default();
        if amount > a.available {
            return Err(format!(
                "cannot withdraw {amount} µBTT: the account has {} µBTT available ({} µBTT locked in contracts)",
                a.available, a.locked
            ));
        }
        a.available -= amount;
        a.withdrawn += amount;
        self.withdrawals += amount;
        self.record(Self::transfer(
            TransferKind::Withdraw,
            peer,
            SETTLEMENT,
            amount,
            None,
            now_ms,
        ));
        Ok((amount, Vec::new()))
    }

    fn reserve(
        &mut self,
        peer: &str,
        offers: &[Cosigned],
        now_ms: u64,
    ) -> Result<(u64, Vec<String>), String> {
        let mut terms = Vec::with_capacity(offers.len());
        let mut ids = BTreeSet::new();
        let mut total = 0u64;
        let mut repair_need: BTreeMap<String, u64> = BTreeMap::new();
        for (i, doc) in offers.iter().enumerate() {
            let t = doc.verify().map_err(|e| format!("offer {i}: {e}"))?;
            if t.is_contract() {
                return Err(format!(
                    "offer {i} ({}) already lists shards: reserve offers, commit contracts",
                    t.id
                ));
            }
            if t.payer() != peer {
                return Err(format!(
                    "offer {i} ({}) is paid by {}, not {peer}: an account reserves only its own offers",
                    t.id,
                    t.payer()
                ));
            }
            if t.repair_of.is_some() != offers_are_repairs(offers) {
                return Err(
                    "one reservation holds repair offers or others, not both; send two calls"
                        .into(),
                );
            }
            if self.contracts.contains_key(&t.id) || !ids.insert(t.id.clone()) {
                return Err(format!(
                    "contract id {} is already in use; choose a new id",
                    t.id
                ));
            }
            if t.offer_expires_ms <= now_ms {
                return Err(format!(
                    "offer {} expired at {} ms",
                    t.id, t.offer_expires_ms
                ));
            }
            // An offer may start in an epoch that has begun (a slow reservation): parts
            // nobody audits go back to the tenant after the grace period.
            let amount = t.reserve_amount().ok_or("amount out of range")?;
            total = total
                .checked_add(amount)
                .ok_or("the offers together are too expensive")?;
            if let Some(m) = &t.repair_of {
                let key = Self::allowance_key(m, &t.tenant);
                let Some(a) = self.allowances.get(&key) else {
                    return Err(format!(
                        "tenant {} has no repair allowance for {m}; only an allowance funds a repair",
                        t.tenant
                    ));
                };
                if a.guard != t.guard {
                    return Err(format!(
                        "the repair allowance of {m} names Guard {}, not {}",
                        a.guard, t.guard
                    ));
                }
                if a.until_ms <= now_ms {
                    return Err(format!(
                        "the repair allowance of {m} ended at {} ms",
                        a.until_ms
                    ));
                }
                let end_ms = (t.first_epoch + t.epochs).saturating_mul(t.epoch_ms);
                if end_ms > a.until_ms.saturating_add(t.epoch_ms) {
                    return Err(format!(
                        "repair offer {} runs to {end_ms} ms, past its allowance's end ({} ms)",
                        t.id, a.until_ms
                    ));
                }
                let e = repair_need.entry(key).or_insert(0u64);
                *e = e.saturating_add(amount);
            }
            terms.push((t, doc.clone(), amount));
        }
        for (key, need) in &repair_need {
            let have = self.allowances.get(key).map_or(0, |a| a.available);
            if *need > have {
                return Err(format!(
                    "the repair allowance {key} has {have} µBTT left; these repair offers need {need} µBTT (offer fewer hosts, or the tenant adds to the allowance)"
                ));
            }
        }
        let available = self.accounts.get(peer).map_or(0, |a| a.available);
        if repair_need.is_empty() && total > available {
            return Err(format!(
                "insufficient funds: these {} offers need {total} µBTT reserved, the account has {available} µBTT available; deposit at least {} µBTT",
                offers.len(),
                total - available
            ));
        }
        let mut out = Vec::with_capacity(terms.len());
        for (t, doc, amount) in terms {
            let a = self.accounts.entry(t.tenant.clone()).or_default();
            match &t.repair_of {
                None => a.available -= amount,
                Some(_) => a.allowance -= amount,
            }
            a.locked += amount;
            self.accounts.entry(t.host.clone()).or_default().incoming += amount;
            let mut lock = Self::transfer(
                TransferKind::Lock,
                &t.tenant,
                &t.host,
                amount,
                Some(&t.id),
                now_ms,
            );
            if let Some(m) = &t.repair_of {
                let key = Self::allowance_key(m, &t.tenant);
                if let Some(al) = self.allowances.get_mut(&key) {
                    al.available -= amount;
                    al.spent += amount;
                    if al.available == 0 {
                        self.open_allowances.remove(&key);
                    }
                }
                lock.allowance = Some(m.clone());
            }
            self.record(lock);
            let from_allowance = if t.repair_of.is_some() { amount } else { 0 };
            let id = t.id.clone();
            self.contracts.insert(
                id.clone(),
                ContractState {
                    end_epoch: t.first_epoch + t.epochs,
                    swept: t.first_epoch,
                    terms: t,
                    doc,
                    stage: Stage::Offered,
                    locked: amount,
                    paid: 0,
                    refunded: 0,
                    shards: Vec::new(),
                    from_allowance,
                },
            );
            self.index(&id);
            out.push(id);
        }
        Ok((total, out))
    }

    /// Returns `amount` of contract `id`'s lock to its tenant's available balance.
    fn release(&mut self, id: &str, amount: u64, now_ms: u64, part: Option<(String, u64)>) {
        self.release_to(id, amount, now_ms, part, false);
    }

    /// Returns room a contract will never use (a voided offer, a commit's surplus): a repair's
    /// goes back into the allowance that funded it, any other to the tenant. Returns whether it
    /// went to an allowance.
    fn unlock(&mut self, id: &str, amount: u64, now_ms: u64) -> bool {
        let repair = self
            .contracts
            .get(id)
            .is_some_and(|c| c.terms.repair_of.is_some());
        self.release_to(id, amount, now_ms, None, repair);
        repair
    }

    fn release_to(
        &mut self,
        id: &str,
        amount: u64,
        now_ms: u64,
        part: Option<(String, u64)>,
        to_allowance: bool,
    ) {
        if amount == 0 {
            return;
        }
        let Some(c) = self.contracts.get_mut(id) else {
            return;
        };
        c.locked -= amount;
        c.refunded += amount;
        let (tenant, host) = (c.terms.tenant.clone(), c.terms.host.clone());
        let object = c.terms.repair_of.clone().filter(|_| to_allowance);
        let t = self.accounts.entry(tenant.clone()).or_default();
        t.locked -= amount;
        if object.is_some() {
            t.allowance += amount;
        } else {
            t.available += amount;
            t.refunded += amount;
        }
        self.accounts.entry(host.clone()).or_default().incoming -= amount;
        if let Some(m) = &object {
            c.from_allowance -= amount;
            let key = Self::allowance_key(m, &tenant);
            if let Some(a) = self.allowances.get_mut(&key) {
                a.available += amount;
                a.spent -= amount;
                self.open_allowances.insert(key);
            }
        }
        let mut tr = Self::transfer(
            TransferKind::Release,
            &host,
            &tenant,
            amount,
            Some(id),
            now_ms,
        );
        tr.part = part;
        tr.allowance = object;
        self.record(tr);
    }

    fn commit(
        &mut self,
        peer: &str,
        docs: &[Cosigned],
        void: &[String],
        now_ms: u64,
    ) -> Result<(u64, Vec<String>), String> {
        let mut checked = Vec::with_capacity(docs.len());
        let mut ids = BTreeSet::new();
        for id in void {
            let Some(c) = self.contracts.get(id) else {
                return Err(format!("no offer {id} to void"));
            };
            if c.terms.payer() != peer || c.stage != Stage::Offered {
                return Err(format!(
                    "offer {id} is not an open offer of {peer}; only its payer voids an open offer"
                ));
            }
            if !ids.insert(id.clone()) {
                return Err(format!("offer {id} is listed twice"));
            }
        }
        for (i, doc) in docs.iter().enumerate() {
            let t = doc.verify().map_err(|e| format!("contract {i}: {e}"))?;
            if !t.is_contract() {
                return Err(format!(
                    "contract {i} ({}) lists no manifest and shards",
                    t.id
                ));
            }
            if t.payer() != peer {
                return Err(format!(
                    "contract {} is paid by {}, not {peer}",
                    t.id,
                    t.payer()
                ));
            }
            if !ids.insert(t.id.clone()) {
                return Err(format!("contract {} is listed twice", t.id));
            }
            let Some(c) = self.contracts.get(&t.id) else {
                return Err(format!(
                    "no offer {} was reserved; reserve the offer first",
                    t.id
                ));
            };
            if c.stage != Stage::Offered {
                return Err(format!(
                    "contract {} is {:?}, not an open offer",
                    t.id, c.stage
                ));
            }
            if !c.terms.committed_by(&t) {
                return Err(format!(
                    "contract {} does not match its offer's terms",
                    t.id
                ));
            }
            if now_ms > t.offer_expires_ms {
                return Err(format!(
                    "offer {} expired at {} ms; reserve a new one",
                    t.id, t.offer_expires_ms
                ));
            }
            let exact = t.contract_amount();
            if exact > c.locked {
                return Err(format!(
                    "contract {} costs {exact} µBTT, more than the {} µBTT reserved",
                    t.id, c.locked
                ));
            }
            checked.push((t, doc.clone(), exact));
        }
        let mut released = 0;
        let mut out = Vec::new();
        for id in void {
            let amount = self.contracts.get(id).map_or(0, |c| c.locked);
            self.unlock(id, amount, now_ms);
            if let Some(c) = self.contracts.get_mut(id) {
                c.stage = Stage::Voided;
            }
            self.index(id);
            released += amount;
        }
        for (t, doc, exact) in checked {
            let id = t.id.clone();
            let surplus = self.contracts.get(&id).map_or(0, |c| c.locked - exact);
            let to_allowance = self.unlock(&id, surplus, now_ms);
            released += surplus;
            if let Some(c) = self.contracts.get_mut(&id) {
                c.shards = t
                    .shards
                    .iter()
                    .map(|s| ShardState {
                        root: s.root.clone(),
                        size: s.size,
                        per_epoch: shard_epoch_amount(s.size, t.price_per_gib_epoch),
                        runs: Vec::new(),
                    })
                    .collect();
                // A commit's surplus is not a refund of storage: count it as never spent.
                c.refunded -= surplus;
                if !to_allowance {
                    if let Some(a) = self.accounts.get_mut(&t.tenant) {
                        a.refunded -= surplus;
                    }
                }
                c.terms = t;
                c.doc = doc;
                c.stage = Stage::Active;
            }
            self.index(&id);
            out.push(id);
        }
        Ok((released, out))
    }

    fn cancel(&mut self, peer: &str, id: &str, now_ms: u64) -> Result<(u64, Vec<String>), String> {
        let Some(c) = self.contracts.get(id) else {
            return Err(format!("no contract {id}"));
        };
        if c.terms.tenant != peer && c.terms.payer() != peer {
            return Err(format!(
                "contract {id} belongs to tenant {}; only its tenant (or, for a repair, its Guard) cancels it",
                c.terms.tenant
            ));
        }
        match c.stage {
            Stage::Offered => {
                let amount = c.locked;
                self.unlock(id, amount, now_ms);
                if let Some(c) = self.contracts.get_mut(id) {
                    c.stage = Stage::Voided;
                }
                self.index(id);
                Ok((amount, vec![id.to_string()]))
            }
            Stage::Active => {
                let cut = (epoch_at(now_ms, c.terms.epoch_ms) + 1).clamp(c.swept, c.end_epoch);
                let amount = self.refund_unsettled(id, cut, u64::MAX, now_ms).0;
                if let Some(c) = self.contracts.get_mut(id) {
                    c.end_epoch = cut;
                    c.stage = Stage::Cancelled;
                }
                self.finish_if_done(id);
                Ok((amount, vec![id.to_string()]))
            }
            s => Err(format!("contract {id} is already {s:?}")),
        }
    }

    /// Returns every unsettled part of `id` in epochs `[from, to)` (clamped to the contract) to
    /// the tenant and marks them settled. Returns (µBTT, parts).
    fn refund_unsettled(&mut self, id: &str, from: u64, to: u64, now_ms: u64) -> (u64, u64) {
        let Some(c) = self.contracts.get_mut(id) else {
            return (0, 0);
        };
        let (from, to) = (from.max(c.terms.first_epoch), to.min(c.end_epoch));
        if from >= to {
            return (0, 0);
        }
        let mut amount = 0u64;
        let mut parts = 0u64;
        for s in &mut c.shards {
            for (a, b) in s.unsettled_in(from, to) {
                s.settle_range(a, b, false);
                amount += s.per_epoch * (b - a);
                parts += b - a;
            }
        }
        self.release(id, amount, now_ms, None);
        (amount, parts)
    }

    fn finish_if_done(&mut self, id: &str) -> bool {
        let Some(c) = self.contracts.get_mut(id) else {
            return false;
        };
        let all_settled = c
            .shards
            .iter()
            .all(|s| s.unsettled_in(c.terms.first_epoch, c.end_epoch).is_empty());
        if matches!(c.stage, Stage::Active | Stage::Cancelled) && all_settled {
            // Parts beyond a cancellation were refunded; nothing stays locked.
            c.stage = Stage::Ended;
            c.swept = c.end_epoch;
            self.index(id);
            return true;
        }
        false
    }

    fn settle(&mut self, env: &Signed, now_ms: u64) -> Result<SettleReceipt, LedgerError> {
        let v = env.verify::<Settle>()?;
        let guard = v.body.peer_id;
        let mut r = SettleReceipt {
            seq: v.body.seq,
            ..SettleReceipt::default()
        };
        for (line_no, line) in v.body.verdicts.iter().enumerate() {
            let ids = self
                .by_host_root
                .get(&(line.host.clone(), line.root.clone()))
                .cloned()
                .unwrap_or_default();
            let mut outcome = LineOutcome::NoContract;
            for id in ids {
                let Some(c) = self.contracts.get_mut(&id) else {
                    continue;
                };
                if c.terms.guard != guard
                    || !matches!(c.stage, Stage::Active | Stage::Cancelled)
                    || line.epoch < c.terms.first_epoch
                    || line.epoch >= c.end_epoch
                {
                    continue;
                }
                if line.epoch > epoch_at(now_ms, c.terms.epoch_ms) + 1 {
                    outcome = LineOutcome::Future;
                    continue;
                }
                let Some(s) = c.shards.iter_mut().find(|s| s.root == line.root) else {
                    continue;
                };
                match s.settled(line.epoch) {
                    Some(p) if p == line.passed => {
                        outcome = LineOutcome::Duplicate;
                        continue;
                    }
                    Some(_) => {
                        outcome = LineOutcome::Conflict;
                        continue;
                    }
                    None => {}
                }
                s.settle(line.epoch, line.passed);
                let amount = s.per_epoch;
                let part = Some((line.root.clone(), line.epoch));
                if line.passed {
                    c.locked -= amount;
                    c.paid += amount;
                    let (tenant, host) = (c.terms.tenant.clone(), c.terms.host.clone());
                    let t = self.accounts.entry(tenant.clone()).or_default();
                    t.locked -= amount;
                    t.spent += amount;
                    let h = self.accounts.entry(host.clone()).or_default();
                    h.incoming -= amount;
                    h.available += amount;
                    h.earned += amount;
                    self.paid += amount;
                    let mut tr = Self::transfer(
                        TransferKind::Payout,
                        &tenant,
                        &host,
                        amount,
                        Some(&id),
                        now_ms,
                    );
                    tr.part = part;
                    tr.verdict = Some((guard.clone(), v.body.seq, line_no as u32));
                    self.record(tr);
                    outcome = LineOutcome::Paid;
                    r.amount_paid += amount;
                } else {
                    self.release(&id, amount, now_ms, part);
                    if let Some(t) = self.journal.last_mut() {
                        t.verdict = Some((guard.clone(), v.body.seq, line_no as u32));
                    }
                    outcome = LineOutcome::Refunded;
                    r.amount_refunded += amount;
                }
                self.finish_if_done(&id);
            }
            match outcome {
                LineOutcome::Paid => r.paid += 1,
                LineOutcome::Refunded => r.refunded += 1,
                LineOutcome::Duplicate => r.duplicate += 1,
                LineOutcome::Conflict => r.conflict += 1,
                LineOutcome::NoContract => r.no_contract += 1,
                LineOutcome::Future => r.future += 1,
            }
        }
        Ok(r)
    }

    fn tick(&mut self, now_ms: u64) -> TickReceipt {
        let mut r = TickReceipt::default();
        let live: Vec<String> = self.live.iter().cloned().collect();
        for id in live {
            let Some(c) = self.contracts.get(&id) else {
                continue;
            };
            match c.stage {
                Stage::Offered if now_ms > c.terms.offer_expires_ms => {
                    let amount = c.locked;
                    self.unlock(&id, amount, now_ms);
                    if let Some(c) = self.contracts.get_mut(&id) {
                        c.stage = Stage::Voided;
                    }
                    self.index(&id);
                    r.voided_offers += 1;
                    r.refunded += amount;
                }
                Stage::Active | Stage::Cancelled => {
                    let upto = epoch_at(now_ms, c.terms.epoch_ms)
                        .saturating_sub(self.cfg.grace_epochs)
                        .min(c.end_epoch);
                    if upto > c.swept {
                        let from = c.swept;
                        let (amount, parts) = self.refund_unsettled(&id, from, upto, now_ms);
                        r.expired += parts;
                        r.refunded += amount;
                        if let Some(c) = self.contracts.get_mut(&id) {
                            c.swept = upto;
                        }
                    }
                    if self.finish_if_done(&id) {
                        r.ended += 1;
                    }
                }
                _ => {}
            }
        }
        let open: Vec<String> = self.open_allowances.iter().cloned().collect();
        for key in open {
            let Some(a) = self.allowances.get_mut(&key) else {
                continue;
            };
            if a.until_ms > now_ms || a.available == 0 {
                continue;
            }
            let amount = std::mem::take(&mut a.available);
            let (tenant, object) = (a.tenant.clone(), a.manifest_id.clone());
            self.open_allowances.remove(&key);
            let acct = self.accounts.entry(tenant.clone()).or_default();
            acct.allowance -= amount;
            acct.available += amount;
            let mut t = Self::transfer(
                TransferKind::AllowBack,
                &tenant,
                &tenant,
                amount,
                None,
                now_ms,
            );
            t.allowance = Some(object);
            self.record(t);
            r.allowances_ended += 1;
            r.refunded += amount;
        }
        r
    }

    /// Takes the transfers made since the last call (for the service's history and the tests'
    /// auditor).
    pub fn take_transfers(&mut self) -> Vec<Transfer> {
        std::mem::take(&mut self.journal)
    }

    /// The kept result of `account`'s call `id`.
    pub fn receipt(&self, account: &str, id: &str) -> Option<&CallReceipt> {
        self.calls
            .get(&format!("{account}/{id}"))
            .map(|r| &r.receipt)
    }

    /// An account (all zero if it never appeared).
    pub fn account(&self, peer: &str) -> Account {
        self.accounts.get(peer).cloned().unwrap_or_default()
    }

    /// Every account.
    pub fn accounts(&self) -> &BTreeMap<String, Account> {
        &self.accounts
    }

    /// A contract.
    pub fn contract(&self, id: &str) -> Option<&ContractState> {
        self.contracts.get(id)
    }

    /// Every contract.
    pub fn contracts(&self) -> impl Iterator<Item = &ContractState> {
        self.contracts.values()
    }

    /// The repair allowances of object `manifest_id` (one per tenant that set one aside).
    pub fn allowances_of(&self, manifest_id: &str) -> Vec<&Allowance> {
        let from = format!("{manifest_id}/");
        self.allowances
            .range(from.clone()..)
            .take_while(|(k, _)| k.starts_with(&from))
            .map(|(_, a)| a)
            .collect()
    }

    /// Every repair allowance.
    pub fn allowances(&self) -> impl Iterator<Item = &Allowance> {
        self.allowances.values()
    }

    /// The contracts a peer is tenant or host of, oldest id first.
    pub fn contracts_of(&self, peer: &str) -> Vec<&ContractState> {
        self.by_peer
            .get(peer)
            .into_iter()
            .flatten()
            .filter_map(|id| self.contracts.get(id))
            .collect()
    }

    /// A peer's newest transfers (at most [`HISTORY_PER_ACCOUNT`] since the last restart of
    /// the process that holds this ledger), newest first.
    pub fn history(&self, peer: &str, limit: usize) -> Vec<Transfer> {
        self.history
            .get(peer)
            .map(|h| h.iter().rev().take(limit).cloned().collect())
            .unwrap_or_default()
    }

    /// Totals and the conservation check.
    pub fn totals(&self) -> Totals {
        let mut t = Totals {
            deposits: self.deposits,
            withdrawals: self.withdrawals,
            paid: self.paid,
            accounts: self.accounts.len() as u64,
            contracts: self.contracts.len() as u64,
            ..Totals::default()
        };
        for a in self.accounts.values() {
            t.balances += a.available;
            t.locked += a.locked;
            t.incoming += a.incoming;
            t.allowances += a.allowance;
        }
        t.conserved = t.balances + t.locked + t.allowances == self.deposits - self.withdrawals
            && t.locked == t.incoming;
        t
    }

    /// Checks every invariant; `Err` says which broke (tests call this after every command).
    pub fn check(&self) -> Result<(), String> {
        let t = self.totals();
        if !t.conserved {
            return Err(format!("money not conserved: {t:?}"));
        }
        let mut locked_by_tenant: BTreeMap<&str, u64> = BTreeMap::new();
        let mut incoming_by_host: BTreeMap<&str, u64> = BTreeMap::new();
        let mut sum_locked = 0u64;
        for (id, c) in &self.contracts {
            sum_locked += c.locked;
            *locked_by_tenant.entry(&c.terms.tenant).or_default() += c.locked;
            *incoming_by_host.entry(&c.terms.host).or_default() += c.locked;
            let total = match c.stage {
                Stage::Offered | Stage::Voided => c.terms.reserve_amount().unwrap_or(0),
                _ => c.terms.contract_amount(),
            };
            if c.locked + c.paid + c.refunded != total {
                return Err(format!(
                    "contract {id}: locked {} + paid {} + refunded {} != {total}",
                    c.locked, c.paid, c.refunded
                ));
            }
            if matches!(c.stage, Stage::Active | Stage::Cancelled | Stage::Ended) {
                let mut unsettled = 0u64;
                let mut paid = 0u64;
                for s in &c.shards {
                    for (a, b) in s.unsettled_in(c.terms.first_epoch, c.end_epoch) {
                        unsettled += s.per_epoch * (b - a);
                    }
                    paid += s.per_epoch * s.counts().0;
                }
                if unsettled != c.locked {
                    return Err(format!(
                        "contract {id}: {unsettled} µBTT unsettled but {} locked",
                        c.locked
                    ));
                }
                if paid != c.paid {
                    return Err(format!(
                        "contract {id}: runs say {paid} paid, contract says {}",
                        c.paid
                    ));
                }
            }
            if matches!(c.stage, Stage::Ended | Stage::Voided) && c.locked != 0 {
                return Err(format!(
                    "contract {id} is {:?} with {} locked",
                    c.stage, c.locked
                ));
            }
        }
        if sum_locked != t.locked {
            return Err(format!(
                "contracts lock {sum_locked}, accounts {}",
                t.locked
            ));
        }
        let mut allowance_by_tenant: BTreeMap<&str, u64> = BTreeMap::new();
        let mut spent_by_key: BTreeMap<String, u64> = BTreeMap::new();
        for c in self.contracts.values() {
            if let Some(m) = &c.terms.repair_of {
                if c.from_allowance < c.locked {
                    return Err(format!(
                        "repair contract {}: {} locked but only {} from its allowance",
                        c.terms.id, c.locked, c.from_allowance
                    ));
                }
                *spent_by_key
                    .entry(Self::allowance_key(m, &c.terms.tenant))
                    .or_default() += c.from_allowance;
            } else if c.from_allowance != 0 {
                return Err(format!(
                    "contract {} is no repair but took from an allowance",
                    c.terms.id
                ));
            }
        }
        for (key, a) in &self.allowances {
            *allowance_by_tenant.entry(&a.tenant).or_default() += a.available;
            if self.open_allowances.contains(key) != (a.available > 0) {
                return Err(format!("allowance {key}: open index disagrees"));
            }
            let spent = spent_by_key.get(key).copied().unwrap_or(0);
            if spent != a.spent {
                return Err(format!(
                    "allowance {key}: its repair contracts hold {spent} µBTT, it says {} spent",
                    a.spent
                ));
            }
        }
        for (peer, a) in &self.accounts {
            if a.allowance != allowance_by_tenant.get(peer.as_str()).copied().unwrap_or(0) {
                return Err(format!(
                    "{peer}: allowance {} disagrees with its allowances",
                    a.allowance
                ));
            }
        }
        for (peer, a) in &self.accounts {
            if a.locked != locked_by_tenant.get(peer.as_str()).copied().unwrap_or(0) {
                return Err(format!(
                    "{peer}: locked {} disagrees with its contracts",
                    a.locked
                ));
            }
            if a.incoming != incoming_by_host.get(peer.as_str()).copied().unwrap_or(0) {
                return Err(format!(
                    "{peer}: incoming {} disagrees with its contracts",
                    a.incoming
                ));
            }
        }
        Ok(())
    }
}

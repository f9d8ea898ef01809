//! Helpers shared by the Escrow property tests and the Escrow simulation: parties with real
//! ed25519 keys, signed offers, contracts, calls and verdict batches, and an [`Auditor`] that
//! checks every invariant after every command and can replay the whole log.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};

use btfs_core::escrow::{
    Call, Command, Cosigned, Ledger, LedgerConfig, Op, Receipt, Settle, ShardTerm, Terms,
    TransferKind, VerdictLine,
};
use btfs_core::signed::Signed;
use libp2p_identity::{ed25519, PublicKey};

/// A peer with a key.
#[derive(Clone)]
pub struct Party {
    pub key: ed25519::Keypair,
    pub peer: String,
}

impl Party {
    pub fn new(n: u8) -> Self {
        let mut b = [0u8; 32];
        b[0] = n;
        b[1] = 0xb7;
        let key = ed25519::Keypair::from(ed25519::SecretKey::try_from_bytes(b).unwrap());
        let peer = PublicKey::from(key.public()).to_peer_id().to_base58();
        Self { key, peer }
    }
}

/// 32 hex digits from a number.
pub fn id(n: u64) -> String {
    format!("{n:032x}")
}

/// 64 hex digits from a number (a stand-in shard root or manifest id: the ledger only needs
/// distinct names).
pub fn root(n: u64) -> String {
    format!("{n:064x}")
}

pub const EPOCH_MS: u64 = 1000;

/// Offer terms.
#[allow(clippy::too_many_arguments)]
pub fn offer_terms(
    cid: u64,
    tenant: &Party,
    host: &Party,
    guard: &Party,
    first_epoch: u64,
    epochs: u64,
    max_shards: u32,
    expires_ms: u64,
) -> Terms {
    Terms {
        id: id(cid),
        tenant: tenant.peer.clone(),
        host: host.peer.clone(),
        guard: guard.peer.clone(),
        price_per_gib_epoch: 3000,
        epoch_ms: EPOCH_MS,
        first_epoch,
        epochs,
        max_bytes: max_shards as u64 * (1 << 20),
        max_shards,
        offer_expires_ms: expires_ms,
        manifest_id: None,
        shards: Vec::new(),
        repair_of: None,
    }
}

/// Signed by both.
pub fn cosign(t: &Terms, tenant: &Party, host: &Party) -> Cosigned {
    Cosigned::propose(t)
        .unwrap()
        .sign(&host.key)
        .unwrap()
        .sign(&tenant.key)
        .unwrap()
}

/// The contract committing `offer` with `n` shards (roots from `root_base`).
pub fn contract_terms(offer: &Terms, n: u32, root_base: u64, size: u64) -> Terms {
    let mut t = offer.clone();
    t.manifest_id = Some(root(root_base ^ 0xfeed));
    t.shards = (0..n as u64)
        .map(|i| ShardTerm {
            root: root(root_base + i),
            size,
        })
        .collect();
    t
}

/// A signed call.
pub fn call(p: &Party, call_id: u64, op: Op, now_ms: u64) -> Command {
    let c = Call {
        peer_id: p.peer.clone(),
        id: id(call_id),
        issued_at_ms: now_ms,
        op,
    };
    Command::Call {
        call: Signed::sign(&c, &p.key).unwrap(),
    }
}

/// A signed verdict batch.
pub fn settle(guard: &Party, seq: u64, lines: Vec<VerdictLine>, now_ms: u64) -> Command {
    let s = Settle {
        peer_id: guard.peer.clone(),
        seq,
        issued_at_ms: now_ms,
        verdicts: lines,
    };
    Command::Settle {
        batch: Signed::sign(&s, &guard.key).unwrap(),
    }
}

/// Applies commands to a ledger and checks, after every one: the ledger's own invariants
/// (conservation, locks, runs), that no (contract, shard, epoch) part moves twice, and that
/// every payout names a passing line, signed by the contract's Guard, of a batch that was
/// really applied. Keeps the log of accepted commands for a replay.
pub struct Auditor {
    pub ledger: Ledger,
    pub log: Vec<(u64, Command)>,
    parts: BTreeSet<(String, String, u64)>,
    /// Passing lines: (guard, seq, line) → (host, root, epoch).
    passing: BTreeMap<(String, u64, u32), (String, String, u64)>,
    pub payouts: u64,
    pub refunds: u64,
}

impl Auditor {
    pub fn new(cfg: LedgerConfig) -> Self {
        Self {
            ledger: Ledger::new(cfg),
            log: Vec::new(),
            parts: BTreeSet::new(),
            passing: BTreeMap::new(),
            payouts: 0,
            refunds: 0,
        }
    }

    /// Applies `cmd`; panics on any broken invariant.
    pub fn apply(&mut self, cmd: &Command, now_ms: u64) -> Result<Receipt, String> {
        if let Command::Settle { batch } = cmd {
            if let Ok(v) = batch.verify::<Settle>() {
                for (i, l) in v.body.verdicts.iter().enumerate() {
                    if l.passed {
                        self.passing.insert(
                            (v.body.peer_id.clone(), v.body.seq, i as u32),
                            (l.host.clone(), l.root.clone(), l.epoch),
                        );
                    }
                }
            }
        }
        let r = self.ledger.apply(cmd, now_ms);
        if r.is_ok() {
            self.log.push((now_ms, cmd.clone()));
        }
        self.audit();
        r.map_err(|e| e.to_string())
    }

    /// Checks the invariants and the transfers made since the last check.
    pub fn audit(&mut self) {
        if let Err(e) = self.ledger.check() {
            panic!("ledger invariant broken: {e}");
        }
        for t in self.ledger.take_transfers() {
            if let (Some(c), Some((root, epoch))) = (&t.contract, &t.part) {
                assert!(
                    self.parts.insert((c.clone(), root.clone(), *epoch)),
                    "part {c}/{root}/{epoch} settled twice"
                );
            }
            if t.kind == TransferKind::Payout {
                self.payouts += 1;
                let v = t.verdict.clone().expect("a payout names its verdict");
                let (host, root, epoch) = self
                    .passing
                    .get(&v)
                    .unwrap_or_else(|| panic!("payout {t:?} without a passing verdict"));
                let c = self
                    .ledger
                    .contract(t.contract.as_deref().unwrap())
                    .unwrap();
                assert_eq!(&c.terms.guard, &v.0, "payout on another Guard's verdict");
                assert_eq!(host, &t.credit, "payout to another host than audited");
                assert_eq!(Some((root.clone(), *epoch)), t.part);
            }
            if t.kind == TransferKind::Release && t.part.is_some() {
                self.refunds += 1;
            }
        }
    }

    /// Replays the log through a fresh ledger: it must end in exactly the same state.
    pub fn replay_matches(&self) {
        let mut fresh = Ledger::new(self.ledger.config().clone());
        for (now, cmd) in &self.log {
            fresh
                .apply(cmd, *now)
                .expect("a logged command applies again");
        }
        assert_eq!(
            serde_json::to_string(&fresh).unwrap(),
            serde_json::to_string(&self.ledger).unwrap(),
            "replaying the log gives another ledger"
        );
    }
}

//! Property tests of the Escrow ledger (native only: proptest does not build for wasm32): random
//! sequences of deposits, withdrawals, reservations, commits (valid and not), cancellations,
//! verdicts (passing, failing, of another Guard, of the future), expiries, replays of earlier
//! calls and other bodies under used ids, repair allowances (for the right Guard and the wrong
//! one) and the Guard's repair reservations spending them. After every step the [`Auditor`] checks conservation,
//! locks, that no part moves twice and that every payout follows a passing verdict of the
//! contract's Guard; at the end the log replays to the same ledger.
#![cfg(not(target_arch = "wasm32"))]

mod escrow_support;

use btfs_core::escrow::{Command, Terms};
use btfs_core::escrow::{LedgerConfig, Op, Receipt, Stage, VerdictLine};
use escrow_support::*;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Action {
    Deposit {
        who: usize,
        amount: u64,
    },
    Withdraw {
        who: usize,
        amount: u64,
    },
    Reserve {
        tenant: usize,
        hosts: Vec<usize>,
        shards: u32,
        epochs: u64,
        start: u64,
        expires: u64,
    },
    Commit {
        which: usize,
        n: u32,
        size: u64,
    },
    Cancel {
        which: usize,
        other: bool,
    },
    Verdict {
        which: usize,
        shard: usize,
        epoch: u64,
        passed: bool,
        rogue: bool,
    },
    Replay {
        which: usize,
    },
    Reuse {
        which: usize,
    },
    Advance {
        ms: u64,
    },
    Tick,
    Allow {
        tenant: usize,
        object: u64,
        amount: u64,
        until: u64,
        wrong_guard: bool,
    },
    RepairReserve {
        tenant: usize,
        object: u64,
        hosts: Vec<usize>,
        shards: u32,
        epochs: u64,
        expires: u64,
    },
}

/// The object whose allowances the tests use (a stand-in manifest id).
fn object_id(n: u64) -> String {
    root(0x0b1e_c700 + n)
}

/// The Guard's index among the parties.
const GUARD: usize = 7;

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        2 => (0usize..7, 0u64..3_000_000).prop_map(|(who, amount)| Action::Deposit { who, amount }),
        1 => (0usize..7, 0u64..2_000_000).prop_map(|(who, amount)| Action::Withdraw { who, amount }),
        3 => (0usize..3, proptest::collection::vec(0usize..4, 1..4), 1u32..4, 1u64..6, 0u64..3, 1u64..6)
            .prop_map(|(tenant, hosts, shards, epochs, start, expires)| Action::Reserve { tenant, hosts, shards, epochs, start, expires }),
        3 => (any::<usize>(), 1u32..5, prop_oneof![Just(1u64 << 20), 1u64..(2 << 20)])
            .prop_map(|(which, n, size)| Action::Commit { which, n, size }),
        1 => (any::<usize>(), any::<bool>()).prop_map(|(which, other)| Action::Cancel { which, other }),
        6 => (any::<usize>(), 0usize..4, 0u64..9, prop_oneof![4 => Just(true), 1 => Just(false)], prop_oneof![9 => Just(false), 1 => Just(true)])
            .prop_map(|(which, shard, epoch, passed, rogue)| Action::Verdict { which, shard, epoch, passed, rogue }),
        1 => any::<usize>().prop_map(|which| Action::Replay { which }),
        1 => any::<usize>().prop_map(|which| Action::Reuse { which }),
        3 => (0u64..2500).prop_map(|ms| Action::Advance { ms }),
        2 => Just(Action::Tick),
        3 => (0usize..3, 0u64..2, 1u64..600_000, 4u64..20, prop_oneof![6 => Just(false), 1 => Just(true)])
            .prop_map(|(tenant, object, amount, until, wrong_guard)| Action::Allow { tenant, object, amount, until, wrong_guard }),
        3 => (0usize..3, 0u64..2, proptest::collection::vec(0usize..4, 1..4), 1u32..3, 1u64..8, 1u64..6)
            .prop_map(|(tenant, object, hosts, shards, epochs, expires)| Action::RepairReserve { tenant, object, hosts, shards, epochs, expires }),
    ]
}

struct World {
    audit: Auditor,
    parties: Vec<Party>, // 0..3 tenants, 3..7 hosts, 7 the Guard
    guard: Party,
    rogue: Party,
    now: u64,
    next_id: u64,
    offers: Vec<(Terms, usize, usize)>,
    sent: Vec<(Command, Receipt)>,
    seq: u64,
}

impl World {
    fn new() -> Self {
        Self {
            audit: Auditor::new(LedgerConfig {
                grace_epochs: 2,
                max_skew_ms: 60_000,
                faucet_max: Some(2_500_000),
            }),
            parties: (0..7)
                .map(|i| Party::new(i + 1))
                .chain([Party::new(50)])
                .collect(),
            guard: Party::new(50),
            rogue: Party::new(51),
            now: 1_000_000,
            next_id: 1,
            offers: Vec::new(),
            sent: Vec::new(),
            seq: 0,
        }
    }

    fn fresh(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn call(&mut self, who: usize, op: Op) -> Option<Receipt> {
        let n = self.fresh();
        let cmd = call(&self.parties[who], n, op, self.now);
        let known = self
            .audit
            .ledger
            .accounts()
            .contains_key(&self.parties[who].peer);
        match self.audit.apply(&cmd, self.now) {
            Ok(r) => {
                self.sent.push((cmd, r.clone()));
                Some(r)
            }
            // Only an account that exists may have its calls recorded (a stranger's failed
            // calls must not fill the Escrow's log); it comes to exist by a deposit.
            Err(e) if !known && e.contains("unknown account") => None,
            Err(e) => panic!("a fresh, well-signed call was refused: {e}"),
        }
    }

    fn step(&mut self, a: &Action) {
        let epoch = self.now / EPOCH_MS;
        match a.clone() {
            Action::Deposit { who, amount } => {
                if amount == 0 {
                    return;
                }
                let before = self.audit.ledger.account(&self.parties[who].peer).available;
                let Some(Receipt::Call(r)) = self.call(who, Op::Deposit { amount }) else {
                    return;
                };
                let after = self.audit.ledger.account(&self.parties[who].peer).available;
                assert_eq!(r.ok, amount <= 2_500_000, "{r:?}");
                assert_eq!(after - before, if r.ok { amount } else { 0 });
            }
            Action::Withdraw { who, amount } => {
                if amount == 0 {
                    return;
                }
                let before = self.audit.ledger.account(&self.parties[who].peer).available;
                let Some(Receipt::Call(r)) = self.call(who, Op::Withdraw { amount }) else {
                    return;
                };
                assert_eq!(
                    r.ok,
                    amount <= before,
                    "withdrawing {amount} of {before}: {r:?}"
                );
            }
            Action::Reserve {
                tenant,
                hosts,
                shards,
                epochs,
                start,
                expires,
            } => {
                let mut docs = Vec::new();
                let mut terms = Vec::new();
                for h in hosts {
                    let cid = self.fresh();
                    let t = offer_terms(
                        cid,
                        &self.parties[tenant],
                        &self.parties[3 + h],
                        &self.guard,
                        epoch + start,
                        epochs,
                        shards,
                        self.now + expires * EPOCH_MS,
                    );
                    docs.push(cosign(&t, &self.parties[tenant], &self.parties[3 + h]));
                    terms.push((t, tenant, 3 + h));
                }
                let avail = self
                    .audit
                    .ledger
                    .account(&self.parties[tenant].peer)
                    .available;
                let need: u64 = terms
                    .iter()
                    .map(|(t, _, _)| t.reserve_amount().unwrap())
                    .sum();
                let Some(Receipt::Call(r)) = self.call(tenant, Op::Reserve { offers: docs }) else {
                    return;
                };
                assert_eq!(r.ok, need <= avail, "{r:?}");
                if r.ok {
                    self.offers.extend(terms);
                }
            }
            Action::Commit { which, n, size } => {
                if self.offers.is_empty() {
                    return;
                }
                let (offer, tenant, host) = self.offers[which % self.offers.len()].clone();
                let mut t = contract_terms(&offer, n, (which as u64 % 1000) << 8, size);
                if offer.repair_of.is_some() {
                    t.manifest_id = offer.repair_of.clone();
                }
                let doc = match btfs_core::escrow::Cosigned::propose(&t) {
                    Ok(d) => d
                        .sign(&self.parties[host].key)
                        .unwrap()
                        .sign(&self.parties[tenant].key)
                        .unwrap(),
                    Err(_) => return, // over max_shards/max_bytes: cannot even be signed
                };
                let state = self.audit.ledger.contract(&offer.id).unwrap().stage;
                // Every other size also voids another offer of the same tenant (open or not).
                let void: Vec<String> = if size % 2 == 0 {
                    self.offers
                        .iter()
                        .filter(|(o, t, _)| *t == tenant && o.id != offer.id)
                        .map(|(o, _, _)| o.id.clone())
                        .take(1)
                        .collect()
                } else {
                    Vec::new()
                };
                let voided_open = void.iter().all(|id| {
                    self.audit.ledger.contract(id).map(|c| c.stage) == Some(Stage::Offered)
                });
                let Some(Receipt::Call(r)) = self.call(
                    tenant,
                    Op::Commit {
                        contracts: vec![doc],
                        void: void.clone(),
                    },
                ) else {
                    return;
                };
                if r.ok {
                    assert_eq!(state, Stage::Offered);
                    assert!(
                        voided_open,
                        "a commit voided a contract that was not an open offer"
                    );
                    assert_eq!(
                        self.audit.ledger.contract(&offer.id).unwrap().stage,
                        Stage::Active
                    );
                    for id in &void {
                        assert_eq!(self.audit.ledger.contract(id).unwrap().stage, Stage::Voided);
                    }
                }
            }
            Action::Cancel { which, other } => {
                if self.offers.is_empty() {
                    return;
                }
                let (offer, payer, _) = self.offers[which % self.offers.len()].clone();
                // Another party: neither the contract's tenant nor its payer.
                let who = if other {
                    (0..3)
                        .find(|&i| self.parties[i].peer != offer.tenant && i != payer)
                        .unwrap()
                } else {
                    payer
                };
                let Some(Receipt::Call(r)) = self.call(
                    who,
                    Op::Cancel {
                        contract: offer.id.clone(),
                    },
                ) else {
                    return;
                };
                if other {
                    assert!(!r.ok, "another tenant cancelled a contract");
                }
            }
            Action::Verdict {
                which,
                shard,
                epoch: e,
                passed,
                rogue,
            } => {
                if self.offers.is_empty() {
                    return;
                }
                let (offer, _, host) = self.offers[which % self.offers.len()].clone();
                let Some(c) = self.audit.ledger.contract(&offer.id) else {
                    return;
                };
                let Some(s) = c.shards.get(shard % c.shards.len().max(1)) else {
                    return;
                };
                let line = VerdictLine {
                    host: self.parties[host].peer.clone(),
                    root: s.root.clone(),
                    epoch: offer.first_epoch + e,
                    passed,
                };
                self.seq += 1;
                let g = if rogue {
                    self.rogue.clone()
                } else {
                    self.guard.clone()
                };
                let earned = self.audit.ledger.account(&self.parties[host].peer).earned;
                let cmd = settle(&g, self.seq, vec![line.clone(), line], self.now);
                let r = self.audit.apply(&cmd, self.now).unwrap();
                let Receipt::Settle(r) = r else {
                    unreachable!()
                };
                assert!(
                    r.paid + r.refunded <= 1,
                    "one line settled twice in a batch: {r:?}"
                );
                if rogue {
                    assert_eq!(
                        self.audit.ledger.account(&self.parties[host].peer).earned,
                        earned
                    );
                    assert_eq!(r.paid + r.refunded, 0);
                }
                self.sent.push((cmd.clone(), Receipt::Settle(r)));
            }
            Action::Replay { which } => {
                if self.sent.is_empty() {
                    return;
                }
                let (cmd, first) = self.sent[which % self.sent.len()].clone();
                let state = serde_json::to_string(&self.audit.ledger.accounts()).unwrap();
                let r = self.audit.apply(&cmd, self.now).unwrap();
                match (first, r) {
                    (Receipt::Call(a), Receipt::Call(mut b)) => {
                        assert!(b.replayed);
                        b.replayed = a.replayed;
                        assert_eq!(a, b, "a replay got another answer");
                        assert_eq!(
                            state,
                            serde_json::to_string(&self.audit.ledger.accounts()).unwrap(),
                            "a replayed call changed balances"
                        );
                    }
                    (Receipt::Settle(a), Receipt::Settle(b)) => {
                        // Only lines that settled nothing the first time (no contract yet, or
                        // an epoch not begun) may settle now; the Auditor checks no part moves
                        // twice.
                        assert!(
                            b.paid + b.refunded <= a.no_contract + a.future,
                            "a replayed batch settled again: first {a:?}, now {b:?}"
                        );
                    }
                    _ => unreachable!(),
                }
            }
            Action::Reuse { which } => {
                let calls: Vec<&Command> = self
                    .sent
                    .iter()
                    .map(|(c, _)| c)
                    .filter(|c| matches!(c, Command::Call { .. }))
                    .collect();
                if calls.is_empty() {
                    return;
                }
                let Command::Call { call: env } = calls[which % calls.len()] else {
                    unreachable!()
                };
                let body: btfs_core::escrow::Call = serde_json::from_str(&env.payload).unwrap();
                let who = self
                    .parties
                    .iter()
                    .position(|p| p.peer == body.peer_id)
                    .unwrap();
                let id_n = u64::from_str_radix(&body.id[16..], 16).unwrap();
                let other = call(
                    &self.parties[who],
                    id_n,
                    Op::Deposit { amount: 7 },
                    self.now,
                );
                let err = self.audit.apply(&other, self.now);
                if body.op != (Op::Deposit { amount: 7 }) || body.issued_at_ms != self.now {
                    let e = err.expect_err("another body under a used id");
                    assert!(e.contains("already used"), "{e}");
                }
            }
            Action::Allow {
                tenant,
                object,
                amount,
                until,
                wrong_guard,
            } => {
                let guard = if wrong_guard { 3 } else { GUARD };
                let manifest_id = object_id(object);
                let before = self.audit.ledger.account(&self.parties[tenant].peer);
                let existing = self
                    .audit
                    .ledger
                    .allowances_of(&manifest_id)
                    .into_iter()
                    .find(|a| a.tenant == self.parties[tenant].peer)
                    .cloned();
                let Some(Receipt::Call(r)) = self.call(
                    tenant,
                    Op::Allow {
                        manifest_id,
                        guard: self.parties[guard].peer.clone(),
                        amount,
                        until_ms: self.now + until * EPOCH_MS,
                    },
                ) else {
                    return;
                };
                let guard_ok = existing.is_none_or(|a| a.guard == self.parties[guard].peer);
                assert_eq!(r.ok, amount <= before.available && guard_ok, "{r:?}");
                let after = self.audit.ledger.account(&self.parties[tenant].peer);
                let moved = if r.ok { amount } else { 0 };
                assert_eq!(before.available - after.available, moved);
                assert_eq!(after.allowance - before.allowance, moved);
            }
            Action::RepairReserve {
                tenant,
                object,
                hosts,
                shards,
                epochs,
                expires,
            } => {
                let epoch = self.now / EPOCH_MS;
                let manifest_id = object_id(object);
                let mut docs = Vec::new();
                let mut terms = Vec::new();
                for h in hosts {
                    let cid = self.fresh();
                    let mut t = offer_terms(
                        cid,
                        &self.parties[tenant],
                        &self.parties[3 + h],
                        &self.parties[GUARD],
                        epoch + 1,
                        epochs,
                        shards,
                        self.now + expires * EPOCH_MS,
                    );
                    t.repair_of = Some(manifest_id.clone());
                    docs.push(cosign(&t, &self.parties[GUARD], &self.parties[3 + h]));
                    terms.push((t, GUARD, 3 + h));
                }
                let tenant_peer = self.parties[tenant].peer.clone();
                let before = self.audit.ledger.account(&tenant_peer);
                let allowance = self
                    .audit
                    .ledger
                    .allowances_of(&manifest_id)
                    .into_iter()
                    .find(|a| a.tenant == tenant_peer)
                    .cloned();
                let need: u64 = terms
                    .iter()
                    .map(|(t, _, _)| t.reserve_amount().unwrap())
                    .sum();
                let fits = |a: &btfs_core::escrow::Allowance| {
                    a.guard == self.parties[GUARD].peer
                        && a.until_ms > self.now
                        && terms.iter().all(|(t, _, _)| {
                            (t.first_epoch + t.epochs) * t.epoch_ms <= a.until_ms + t.epoch_ms
                        })
                        && need <= a.available
                };
                let expected = allowance.as_ref().is_some_and(fits);
                let Some(Receipt::Call(r)) = self.call(GUARD, Op::Reserve { offers: docs }) else {
                    assert!(
                        !expected,
                        "the Guard's repair reservation was refused unrecorded"
                    );
                    return;
                };
                assert_eq!(r.ok, expected, "{r:?} with {allowance:?}, need {need}");
                let after = self.audit.ledger.account(&tenant_peer);
                // A repair spends the allowance, never the tenant's available balance.
                assert_eq!(after.available, before.available);
                if r.ok {
                    assert_eq!(before.allowance - after.allowance, need);
                    assert_eq!(after.locked - before.locked, need);
                    self.offers.extend(terms);
                }
            }
            Action::Advance { ms } => self.now += ms,
            Action::Tick => {
                self.audit.apply(&Command::Tick, self.now).unwrap();
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(160))]

    #[test]
    fn ledger_invariants_hold(actions in proptest::collection::vec(action(), 1..90)) {
        let mut w = World::new();
        for a in &actions {
            w.step(a);
        }
        // Run out every contract: far in the future, everything settles or expires.
        w.now += 100 * EPOCH_MS;
        w.audit.apply(&Command::Tick, w.now).unwrap();
        for c in w.audit.ledger.contracts() {
            prop_assert!(matches!(c.stage, Stage::Ended | Stage::Voided), "{:?} still {:?}", c.terms.id, c.stage);
            prop_assert_eq!(c.locked, 0);
        }
        let t = w.audit.ledger.totals();
        prop_assert_eq!(t.locked, 0);
        prop_assert_eq!(t.allowances, 0);
        prop_assert_eq!(t.balances, t.deposits - t.withdrawals);
        w.audit.replay_matches();
    }
}

#[test]
fn a_whole_contract_life_pays_passing_epochs_and_refunds_the_rest() {
    let mut w = World::new();
    let (tenant, host) = (0, 3);
    w.step(&Action::Deposit {
        who: tenant,
        amount: 2_000_000,
    });
    let epoch = w.now / EPOCH_MS;
    w.step(&Action::Reserve {
        tenant,
        hosts: vec![0],
        shards: 2,
        epochs: 4,
        start: 1,
        expires: 3,
    });
    let (offer, _, _) = w.offers[0].clone();
    let reserve = offer.reserve_amount().unwrap();
    assert_eq!(
        w.audit.ledger.account(&w.parties[tenant].peer).locked,
        reserve
    );
    w.step(&Action::Commit {
        which: 0,
        n: 2,
        size: 1 << 20,
    });
    let c = w.audit.ledger.contract(&offer.id).unwrap().clone();
    assert_eq!(c.stage, Stage::Active);
    // 2 shards × 1 MiB at 3000 µBTT/GiB-epoch: ceil(3000/1024) = 3 µBTT per shard-epoch.
    assert_eq!(c.shards[0].per_epoch, 3);
    assert_eq!(c.locked, 2 * 3 * 4);
    w.now = (epoch + 2) * EPOCH_MS;
    let host_peer = w.parties[host].peer.clone();
    let lines = |e: u64, passed: bool| {
        c.shards
            .iter()
            .map(|s| VerdictLine {
                host: host_peer.clone(),
                root: s.root.clone(),
                epoch: e,
                passed,
            })
            .collect::<Vec<_>>()
    };
    // Epoch 1: both pass; epoch 2: shard 0 fails; epoch 3 and 4: no verdict (expire).
    let mut l = lines(epoch + 1, true);
    l.extend(lines(epoch + 2, true));
    l[2].passed = false;
    let g = w.guard.clone();
    let r = w
        .audit
        .apply(&settle(&g, 1, l.clone(), w.now), w.now)
        .unwrap();
    assert_eq!(
        r,
        Receipt::Settle(btfs_core::escrow::SettleReceipt {
            seq: 1,
            paid: 3,
            refunded: 1,
            amount_paid: 9,
            amount_refunded: 3,
            ..Default::default()
        })
    );
    // The same batch again pays nothing.
    let r = w.audit.apply(&settle(&g, 2, l, w.now), w.now).unwrap();
    let Receipt::Settle(r) = r else {
        unreachable!()
    };
    assert_eq!((r.paid, r.duplicate), (0, 4));
    w.now = (epoch + 10) * EPOCH_MS;
    w.audit.apply(&Command::Tick, w.now).unwrap();
    let c = w.audit.ledger.contract(&offer.id).unwrap();
    assert_eq!(c.stage, Stage::Ended);
    assert_eq!((c.paid, c.refunded, c.locked), (9, 15, 0));
    let h = w.audit.ledger.account(&host_peer);
    assert_eq!((h.earned, h.available, h.incoming), (9, 9, 0));
    let t = w.audit.ledger.account(&w.parties[tenant].peer);
    assert_eq!(t.available, 2_000_000 - 9);
    assert_eq!(t.locked, 0);
    w.audit.replay_matches();
}

#[test]
fn a_repair_is_paid_from_the_allowance_and_what_is_left_comes_back() {
    let mut w = World::new();
    let tenant = 0;
    let tp = w.parties[tenant].peer.clone();
    w.step(&Action::Deposit {
        who: tenant,
        amount: 1_000_000,
    });
    w.step(&Action::Allow {
        tenant,
        object: 0,
        amount: 400_000,
        until: 10,
        wrong_guard: false,
    });
    let a = w.audit.ledger.account(&tp);
    assert_eq!((a.available, a.allowance), (600_000, 400_000));
    // The tenant cannot spend its own allowance on a "repair": only the Guard signs those.
    let epoch = w.now / EPOCH_MS;
    let mut t = offer_terms(
        999,
        &w.parties[tenant],
        &w.parties[3],
        &w.parties[GUARD],
        epoch + 1,
        5,
        2,
        w.now + 3 * EPOCH_MS,
    );
    t.repair_of = Some(object_id(0));
    assert!(btfs_core::escrow::Cosigned::propose(&t)
        .unwrap()
        .sign(&w.parties[tenant].key)
        .is_err());
    // The Guard reserves two repair offers; the tenant's available balance does not move.
    w.step(&Action::RepairReserve {
        tenant,
        object: 0,
        hosts: vec![0, 1],
        shards: 2,
        epochs: 5,
        expires: 3,
    });
    assert_eq!(w.offers.len(), 2, "the repair reservation was refused");
    let (o1, o2) = (w.offers[0].0.clone(), w.offers[1].0.clone());
    let reserved = o1.reserve_amount().unwrap() + o2.reserve_amount().unwrap();
    let a = w.audit.ledger.account(&tp);
    assert_eq!(
        (a.available, a.allowance, a.locked),
        (600_000, 400_000 - reserved, reserved)
    );
    // It commits the first with two shards and voids the second: the surplus and the void go
    // back into the allowance, not to the tenant.
    let c = contract_terms(&o1, 2, 0x100, 1 << 20);
    let mut c = c;
    c.manifest_id = o1.repair_of.clone();
    let doc = cosign(&c, &w.parties[GUARD], &w.parties[3]);
    let Some(Receipt::Call(r)) = w.call(
        GUARD,
        Op::Commit {
            contracts: vec![doc],
            void: vec![o2.id.clone()],
        },
    ) else {
        panic!("the Guard's commit was not recorded");
    };
    assert!(r.ok, "{r:?}");
    let exact = c.contract_amount();
    let a = w.audit.ledger.account(&tp);
    assert_eq!(
        (a.available, a.allowance, a.locked),
        (600_000, 400_000 - exact, exact)
    );
    let al = w.audit.ledger.allowances_of(&object_id(0))[0].clone();
    assert_eq!((al.available, al.spent), (400_000 - exact, exact));
    // Epoch 1 passes: the host is paid from the lock, as for any contract.
    w.now = (epoch + 2) * EPOCH_MS;
    let lines: Vec<VerdictLine> = c
        .shards
        .iter()
        .map(|s| VerdictLine {
            host: w.parties[3].peer.clone(),
            root: s.root.clone(),
            epoch: epoch + 1,
            passed: true,
        })
        .collect();
    let g = w.parties[GUARD].clone();
    w.audit.apply(&settle(&g, 1, lines, w.now), w.now).unwrap();
    assert_eq!(w.audit.ledger.account(&w.parties[3].peer).earned, 2 * 3);
    // Past the allowance's end: what is left comes back, and the unproven epochs too.
    w.now = (epoch + 30) * EPOCH_MS;
    let Receipt::Tick(tick) = w.audit.apply(&Command::Tick, w.now).unwrap() else {
        unreachable!()
    };
    assert_eq!(tick.allowances_ended, 1);
    let a = w.audit.ledger.account(&tp);
    assert_eq!((a.allowance, a.locked), (0, 0));
    assert_eq!(a.available, 1_000_000 - 2 * 3);
    // An ended allowance funds nothing more.
    let before = w.offers.len();
    w.step(&Action::RepairReserve {
        tenant,
        object: 0,
        hosts: vec![2],
        shards: 1,
        epochs: 1,
        expires: 3,
    });
    assert_eq!(w.offers.len(), before);
    w.audit.replay_matches();
}

//! A deterministic simulation of Escrow + Guard + tenants + hosts, in the style of TigerBeetle's
//! VOPR: seeded, with the Escrow crashing and restarting at any step (its memory and its
//! not-yet-committed group of commands are lost; it recovers by replaying its durable log), and
//! a network that loses, duplicates, delays and reorders every message in both directions.
//! Honest clients behave as the protocol asks: a tenant saves each call (id and body) before it
//! sends and resends exactly that until it gets an answer; the Guard keeps its verdict batches
//! until the Escrow acknowledges them. Hosts fail audits: some lose a shard at a random epoch,
//! some fail now and then.
//!
//! At the end an auditor checks: the ledger's invariants after every command of the durable log
//! (conservation, locks, nothing settled twice, payouts only on the contract's Guard's passing
//! verdicts); replaying the log gives exactly the live ledger; every acknowledged call's receipt
//! is in the ledger as acknowledged (durable before acknowledged); and, independently of the
//! ledger's own bookkeeping, every host earned exactly the parts the Guard passed and every
//! tenant got back exactly the rest.

mod escrow_support;

use std::collections::{BTreeMap, BTreeSet};

use btfs_core::escrow::{
    shard_epoch_amount, Command, Ledger, LedgerConfig, Op, Receipt, Stage, Terms, VerdictLine,
};
use escrow_support::*;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }
}

const STEP_MS: u64 = 100;
const GRACE: u64 = 10_000; // no part expires for want of a delayed verdict: exact accounting

#[derive(Clone)]
enum Msg {
    ToEscrow {
        from: usize,
        cmd: Command,
    },
    Reply {
        to: usize,
        cmd_digest: String,
        receipt: Result<Receipt, String>,
    },
}

/// The Escrow process: durable log, memory, and the group of commands applied but not committed.
struct Escrow {
    disk: Vec<(u64, Command)>,
    mem: Option<Ledger>,
    group: Vec<(u64, Command, usize, String, Receipt)>,
    crashes: u32,
}

impl Escrow {
    fn recover(disk: &[(u64, Command)], cfg: &LedgerConfig) -> Ledger {
        let mut l = Ledger::new(cfg.clone());
        for (now, cmd) in disk {
            l.apply(cmd, *now).expect("the log replays");
        }
        l
    }
}

fn digest(cmd: &Command) -> String {
    blake3::hash(serde_json::to_string(cmd).unwrap().as_bytes())
        .to_hex()
        .to_string()
}

/// What a tenant is doing.
enum Plan {
    Deposit(u64),
    Reserve(Vec<(Terms, usize)>),
    Commit,
    Done,
}

struct Tenant {
    party: Party,
    plan: Plan,
    offers: Vec<(Terms, usize)>,
    /// The saved call being sent, and the step it was last sent at.
    outstanding: Option<(Command, u64)>,
    acked: Vec<(String, btfs_core::escrow::CallReceipt)>,
    deposited: u64,
}

fn run(seed: u64) -> (u32, u64, u64) {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let cfg = LedgerConfig {
        grace_epochs: GRACE,
        max_skew_ms: 3_600_000,
        faucet_max: Some(10_000_000),
    };
    let guard = Party::new(90);
    let hosts: Vec<Party> = (0..8).map(|i| Party::new(40 + i)).collect();
    // Per host: the epoch it loses everything (fails from then on), and a flakiness.
    let loses_at: Vec<Option<u64>> = (0..hosts.len())
        .map(|_| rng.chance(300).then(|| 1000 + rng.below(25)))
        .collect();
    let flaky: Vec<u64> = (0..hosts.len())
        .map(|_| if rng.chance(400) { 150 } else { 0 })
        .collect();
    let passes = |h: usize, root: &str, epoch: u64| -> bool {
        if loses_at[h].is_some_and(|at| epoch >= at) {
            return false;
        }
        let x = blake3::hash(format!("{seed}/{root}/{epoch}").as_bytes()).as_bytes()[0] as u64;
        x * 1000 / 256 >= flaky[h]
    };

    let mut now = 1000 * EPOCH_MS;
    let mut next_cid = seed << 20;
    let mut tenants: Vec<Tenant> = (0..3)
        .map(|i| Tenant {
            party: Party::new(10 + i as u8),
            plan: Plan::Deposit(2_000_000 + rng.below(5_000_000)),
            offers: Vec::new(),
            outstanding: None,
            acked: Vec::new(),
            deposited: 0,
        })
        .collect();
    let mut escrow = Escrow {
        disk: Vec::new(),
        mem: Some(Ledger::new(cfg.clone())),
        group: Vec::new(),
        crashes: 0,
    };
    // The Guard: contracts it watches (id → terms, host), its verdicts, batches not yet acked.
    let guard_slot = tenants.len();
    let mut watched: BTreeMap<String, (Terms, usize)> = BTreeMap::new();
    let mut judged: BTreeSet<(String, String, u64)> = BTreeSet::new();
    let mut verdicts: BTreeMap<(usize, String, u64), bool> = BTreeMap::new();
    let mut unacked: BTreeMap<String, (Command, u64)> = BTreeMap::new();
    let mut batch_seq = 0u64;
    let mut net: Vec<(u64, Msg)> = Vec::new(); // (deliver at step, message)

    let fault_steps = 500u64;
    let mut step = 0u64;
    let mut call_id = seed << 32;
    loop {
        step += 1;
        now += STEP_MS;
        let faults = step < fault_steps;
        let send = |net: &mut Vec<(u64, Msg)>, rng: &mut Rng, m: Msg| {
            if faults && rng.chance(150) {
                return; // lost
            }
            let copies = if faults && rng.chance(100) { 2 } else { 1 };
            for _ in 0..copies {
                let delay = if faults { 1 + rng.below(12) } else { 1 };
                net.push((step + delay, m.clone()));
            }
        };

        // Tenants: make progress on their plans, resending the saved call when unanswered.
        for (ti, t) in tenants.iter_mut().enumerate() {
            if let Some((cmd, sent)) = &mut t.outstanding {
                if step >= *sent + 15 {
                    *sent = step;
                    let cmd = cmd.clone();
                    send(&mut net, &mut rng, Msg::ToEscrow { from: ti, cmd });
                }
                continue;
            }
            let op = match &mut t.plan {
                Plan::Deposit(a) => Op::Deposit { amount: *a },
                Plan::Reserve(v) if v.is_empty() => {
                    let epoch = now / EPOCH_MS;
                    let n = 2 + rng.below(4) as usize;
                    let mut picks: Vec<usize> = (0..hosts.len()).collect();
                    for i in 0..n {
                        let j = i + rng.below((picks.len() - i) as u64) as usize;
                        picks.swap(i, j);
                    }
                    for &h in &picks[..n] {
                        next_cid += 1;
                        let terms = offer_terms(
                            next_cid,
                            &t.party,
                            &hosts[h],
                            &guard,
                            epoch + 1,
                            5 + rng.below(15),
                            1 + rng.below(3) as u32,
                            now + 600 * EPOCH_MS,
                        );
                        v.push((terms, h));
                    }
                    continue;
                }
                Plan::Reserve(v) => Op::Reserve {
                    offers: v
                        .iter()
                        .map(|(o, h)| cosign(o, &t.party, &hosts[*h]))
                        .collect(),
                },
                Plan::Commit => Op::Commit {
                    contracts: t
                        .offers
                        .iter()
                        .map(|(o, h)| {
                            let n = o.max_shards;
                            let c = contract_terms(
                                o,
                                n,
                                u64::from_str_radix(&o.id[16..], 16).unwrap() << 4,
                                1 << 20,
                            );
                            cosign(&c, &t.party, &hosts[*h])
                        })
                        .collect(),
                    void: vec![],
                },
                Plan::Done => continue,
            };
            call_id += 1;
            let cmd = call(&t.party, call_id, op, now);
            t.outstanding = Some((cmd.clone(), step));
            send(&mut net, &mut rng, Msg::ToEscrow { from: ti, cmd });
        }

        // The Guard: judge every epoch that ended of every watched contract, batch, resend.
        let ended = now / EPOCH_MS; // epochs < ended are over
        let mut lines = Vec::new();
        for (id, (t, h)) in &watched {
            for e in t.first_epoch..ended.min(t.first_epoch + t.epochs) {
                for s in &t.shards {
                    if judged.insert((id.clone(), s.root.clone(), e)) {
                        let ok = passes(*h, &s.root, e);
                        verdicts.insert((*h, s.root.clone(), e), ok);
                        lines.push(VerdictLine {
                            host: hosts[*h].peer.clone(),
                            root: s.root.clone(),
                            epoch: e,
                            passed: ok,
                        });
                    }
                }
            }
        }
        for chunk in lines.chunks(7) {
            batch_seq += 1;
            let cmd = settle(&guard, batch_seq, chunk.to_vec(), now);
            unacked.insert(digest(&cmd), (cmd.clone(), step));
            send(
                &mut net,
                &mut rng,
                Msg::ToEscrow {
                    from: guard_slot,
                    cmd,
                },
            );
        }
        for (cmd, sent) in unacked.values_mut() {
            if step >= *sent + 20 {
                *sent = step;
                let cmd = cmd.clone();
                send(
                    &mut net,
                    &mut rng,
                    Msg::ToEscrow {
                        from: guard_slot,
                        cmd,
                    },
                );
            }
        }

        // The Escrow: crash, restart, tick, take messages, commit its group.
        if let Some(mem) = escrow.mem.as_mut() {
            if faults && rng.chance(15) {
                escrow.mem = None;
                escrow.group.clear(); // applied but not durable: gone, never answered
                escrow.crashes += 1;
            } else {
                if step.is_multiple_of(10) {
                    let r = mem.apply(&Command::Tick, now).unwrap();
                    escrow
                        .group
                        .push((now, Command::Tick, usize::MAX, String::new(), r));
                }
                let (due, later): (Vec<_>, Vec<_>) = net
                    .drain(..)
                    .partition(|(at, m)| *at <= step && matches!(m, Msg::ToEscrow { .. }));
                net = later;
                let mut replies = Vec::new();
                let mut due = due;
                // Reorder what arrives in the same step.
                for i in (1..due.len()).rev() {
                    let j = rng.below(i as u64 + 1) as usize;
                    due.swap(i, j);
                }
                for (_, m) in due {
                    match m {
                        Msg::ToEscrow { from, cmd } => match mem.apply(&cmd, now) {
                            Ok(r) => escrow.group.push((now, cmd.clone(), from, digest(&cmd), r)),
                            Err(e) => replies.push(Msg::Reply {
                                to: from,
                                cmd_digest: digest(&cmd),
                                receipt: Err(e.to_string()),
                            }),
                        },
                        Msg::Reply { .. } => unreachable!(),
                    }
                }
                // Group commit: durable first, then the answers go out.
                if rng.chance(600) || !faults {
                    for (at, cmd, from, d, r) in escrow.group.drain(..) {
                        escrow.disk.push((at, cmd));
                        if from != usize::MAX {
                            replies.push(Msg::Reply {
                                to: from,
                                cmd_digest: d,
                                receipt: Ok(r),
                            });
                        }
                    }
                }
                for m in replies {
                    match m {
                        Msg::Reply { .. } => {
                            // Replies travel the same faulty network (delivered below).
                            send(&mut net, &mut rng, m);
                        }
                        Msg::ToEscrow { .. } => unreachable!(),
                    }
                }
            }
        } else if !faults || rng.chance(200) {
            escrow.mem = Some(Escrow::recover(&escrow.disk, &cfg));
            // Messages that arrived while it was down are lost.
            net.retain(|(at, m)| *at > step || matches!(m, Msg::Reply { .. }));
        }

        // Deliver replies to tenants and the Guard.
        let (due, later): (Vec<_>, Vec<_>) = net
            .drain(..)
            .partition(|(at, m)| *at <= step && matches!(m, Msg::Reply { .. }));
        net = later;
        for (_, m) in due {
            let Msg::Reply {
                to,
                cmd_digest,
                receipt,
            } = m
            else {
                unreachable!()
            };
            if to == guard_slot {
                if receipt.is_ok() {
                    unacked.remove(&cmd_digest);
                }
                continue;
            }
            let t = &mut tenants[to];
            let Some((cmd, _)) = &t.outstanding else {
                continue;
            };
            if digest(cmd) != cmd_digest {
                continue; // an answer to an earlier call, delivered twice
            }
            let Ok(Receipt::Call(r)) = receipt else {
                panic!("seed {seed}: an honest call was refused: {receipt:?}");
            };
            assert!(r.ok, "seed {seed}: an honest call failed: {r:?}");
            t.acked.push((r.id.clone(), r.clone()));
            t.outstanding = None;
            t.plan = match std::mem::replace(&mut t.plan, Plan::Done) {
                Plan::Deposit(a) => {
                    t.deposited += a;
                    Plan::Reserve(Vec::new())
                }
                Plan::Reserve(v) => {
                    t.offers = v;
                    Plan::Commit
                }
                Plan::Commit => {
                    for (o, h) in &t.offers {
                        let c = contract_terms(
                            o,
                            o.max_shards,
                            u64::from_str_radix(&o.id[16..], 16).unwrap() << 4,
                            1 << 20,
                        );
                        watched.insert(c.id.clone(), (c, *h));
                    }
                    Plan::Done
                }
                Plan::Done => Plan::Done,
            };
        }

        let settled = tenants.iter().all(|t| matches!(t.plan, Plan::Done))
            && unacked.is_empty()
            && watched
                .values()
                .all(|(t, _)| ended >= t.first_epoch + t.epochs)
            && escrow.mem.is_some()
            && escrow.group.is_empty();
        if settled && step > fault_steps {
            break;
        }
        assert!(step < 20_000, "seed {seed}: the simulation does not settle");
    }

    // The end: let every lock run out.
    now += (GRACE + 50) * EPOCH_MS;
    let mem = escrow.mem.as_mut().unwrap();
    mem.apply(&Command::Tick, now).unwrap();
    escrow.disk.push((now, Command::Tick));

    // The auditor replays the durable log, checking every invariant after every command.
    let mut auditor = Auditor::new(cfg.clone());
    for (at, cmd) in &escrow.disk {
        auditor.apply(cmd, *at).expect("the log replays");
    }
    assert_eq!(
        serde_json::to_string(&auditor.ledger).unwrap(),
        serde_json::to_string(escrow.mem.as_ref().unwrap()).unwrap(),
        "seed {seed}: the live ledger differs from a replay of its log"
    );
    let ledger = &auditor.ledger;
    // Acknowledged means durable.
    for t in &tenants {
        for (id, r) in &t.acked {
            let kept = ledger
                .receipt(&t.party.peer, id)
                .expect("an acknowledged call is in the ledger");
            let mut r = r.clone();
            r.replayed = false;
            assert_eq!(kept, &r, "seed {seed}: an acknowledged receipt changed");
        }
    }
    // Independent accounting from the Guard's verdicts.
    let mut earned: BTreeMap<String, u64> = BTreeMap::new();
    let mut spent: BTreeMap<String, u64> = BTreeMap::new();
    for (t, h) in watched.values() {
        let c = ledger.contract(&t.id).unwrap();
        assert_eq!(c.stage, Stage::Ended, "seed {seed}");
        for s in &t.shards {
            for e in t.first_epoch..t.first_epoch + t.epochs {
                if verdicts[&(*h, s.root.clone(), e)] {
                    let a = shard_epoch_amount(s.size, t.price_per_gib_epoch);
                    *earned.entry(hosts[*h].peer.clone()).or_default() += a;
                    *spent.entry(t.tenant.clone()).or_default() += a;
                }
            }
        }
    }
    for h in &hosts {
        let a = ledger.account(&h.peer);
        assert_eq!(
            a.earned,
            earned.get(&h.peer).copied().unwrap_or(0),
            "seed {seed}: host earned"
        );
        assert_eq!((a.incoming, a.available), (0, a.earned));
    }
    for t in &tenants {
        let a = ledger.account(&t.party.peer);
        let s = spent.get(&t.party.peer).copied().unwrap_or(0);
        assert_eq!(a.spent, s, "seed {seed}: tenant spent");
        assert_eq!(
            (a.available, a.locked),
            (t.deposited - s, 0),
            "seed {seed}: tenant balance"
        );
    }
    let totals = ledger.totals();
    assert!(totals.conserved);
    (escrow.crashes, auditor.payouts, auditor.refunds)
}

#[test]
fn escrow_survives_crashes_and_a_faulty_network() {
    let seeds: u64 = std::env::var("BTFS_ESCROW_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(24);
    let (mut crashes, mut payouts, mut refunds) = (0, 0, 0);
    for seed in 1..=seeds {
        let (c, p, r) = run(seed);
        crashes += c;
        payouts += p;
        refunds += r;
    }
    eprintln!(
        "{seeds} seeds: {crashes} Escrow crashes, {payouts} payouts, {refunds} refunded parts"
    );
    // The runs must have exercised what they claim to.
    assert!(u64::from(crashes) >= seeds, "too few crashes: {crashes}");
    assert!(
        payouts > 100 && refunds > 10,
        "payouts {payouts}, refunds {refunds}"
    );
}

//! Durable ledger throughput: posted payouts per second, every change in `escrow.redb` before
//! it is acknowledged (group commit).
//!
//! Run: `cargo bench -p btfs-host --bench escrow_ledger`. Sets up 100 funded contracts of 1,000
//! shards each through the real service (`services::escrow::start`, in-process, no network),
//! then sends the Guard's signed verdict batches (2,048 passing lines each, signed ahead of
//! time) with 1, 4 and 16 batches in flight and waits for every acknowledgment. Each row is
//! 200,000 payouts (one (shard, epoch) part each). Besides wall-clock time, the process's CPU
//! time (`getrusage`) is shown, so `payouts / CPU-second` stays meaningful on a busy machine.
//! Goal: ≥ 20,000 payouts/s on one core.

use std::time::{Duration, Instant};

use btfs_core::escrow::{
    epoch_at, Call, Cosigned, EscrowRequest, EscrowResponse, LedgerConfig, Op, Settle, ShardTerm,
    Terms, VerdictLine,
};
use btfs_core::signed::Signed;
use btfs_host::services::escrow::{self, EscrowOptions, LocalSettlement};
use libp2p::identity::{ed25519, PublicKey};
use nix::sys::resource::{getrusage, UsageWho};
use tokio_util::sync::CancellationToken;

const CONTRACTS: usize = 100;
const SHARDS: usize = 1000;
const EPOCHS: u64 = 10;
const EPOCH_MS: u64 = 1000;
const LINES: usize = 2048;
const PER_ROW: usize = 200_000;

fn peer(k: &ed25519::Keypair) -> String {
    PublicKey::from(k.public()).to_peer_id().to_base58()
}

fn cpu() -> Duration {
    let u = getrusage(UsageWho::RUSAGE_SELF).unwrap();
    let t = |tv: nix::sys::time::TimeVal| {
        Duration::from_secs(tv.tv_sec() as u64) + Duration::from_micros(tv.tv_usec() as u64)
    };
    t(u.user_time()) + t(u.system_time())
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run());
}

async fn run() {
    let dir = tempfile::tempdir().unwrap();
    let cancel = CancellationToken::new();
    let handle = escrow::start(
        dir.path(),
        None,
        libp2p::identity::ed25519::Keypair::generate(),
        EscrowOptions {
            ledger: LedgerConfig {
                faucet_max: Some(u64::MAX >> 17),
                grace_epochs: 1_000_000,
                ..LedgerConfig::default()
            },
            tick: Duration::from_secs(3600),
        },
        Box::new(LocalSettlement::new(dir.path())),
        cancel.child_token(),
    )
    .await
    .unwrap();
    let tenant = ed25519::Keypair::generate();
    let guard = ed25519::Keypair::generate();
    let hosts: Vec<ed25519::Keypair> = (0..CONTRACTS)
        .map(|_| ed25519::Keypair::generate())
        .collect();
    let mut ids = 0u64;
    let mut call = |op: Op| {
        ids += 1;
        EscrowRequest::Call {
            call: Signed::sign(
                &Call {
                    peer_id: peer(&tenant),
                    id: format!("{ids:032x}"),
                    issued_at_ms: now_ms(),
                    op,
                },
                &tenant,
            )
            .unwrap(),
        }
    };
    let ok = |r: Result<EscrowResponse, _>| match r {
        Ok(EscrowResponse::Call(c)) if c.ok => c,
        other => panic!("setup failed: {other:?}"),
    };
    ok(handle.request(call(Op::Deposit { amount: 1 << 40 })).await);
    let first = epoch_at(now_ms(), EPOCH_MS) - EPOCHS;
    let mut offers = Vec::new();
    let mut contracts = Vec::new();
    for (c, h) in hosts.iter().enumerate() {
        let offer = Terms {
            id: format!("{:032x}", 1_000_000 + c),
            tenant: peer(&tenant),
            host: peer(h),
            guard: peer(&guard),
            price_per_gib_epoch: 1024,
            epoch_ms: EPOCH_MS,
            first_epoch: first,
            epochs: EPOCHS,
            max_bytes: SHARDS as u64 * (1 << 20),
            max_shards: SHARDS as u32,
            offer_expires_ms: now_ms() + 3_600_000,
            manifest_id: None,
            shards: vec![],
            repair_of: None,
        };
        let mut contract = offer.clone();
        contract.manifest_id = Some(format!("{c:064x}"));
        contract.shards = (0..SHARDS)
            .map(|s| ShardTerm {
                root: format!("{:064x}", c * SHARDS + s),
                size: 1 << 20,
            })
            .collect();
        let sign = |t: &Terms| {
            Cosigned::propose(t)
                .unwrap()
                .sign(h)
                .unwrap()
                .sign(&tenant)
                .unwrap()
        };
        offers.push(sign(&offer));
        contracts.push((sign(&contract), contract));
    }
    for chunk in offers.chunks(50) {
        ok(handle
            .request(call(Op::Reserve {
                offers: chunk.to_vec(),
            }))
            .await);
    }
    for chunk in contracts.chunks(8) {
        let docs = chunk.iter().map(|(d, _)| d.clone()).collect();
        ok(handle
            .request(call(Op::Commit {
                contracts: docs,
                void: vec![],
            }))
            .await);
    }
    // Every (contract, shard, epoch) part once, in verdict batches signed ahead of time.
    let mut lines = Vec::with_capacity(CONTRACTS * SHARDS * EPOCHS as usize);
    for e in 0..EPOCHS {
        for (_, t) in &contracts {
            for s in &t.shards {
                lines.push(VerdictLine {
                    host: t.host.clone(),
                    root: s.root.clone(),
                    epoch: first + e,
                    passed: true,
                });
            }
        }
    }
    let batches: Vec<EscrowRequest> = lines
        .chunks(LINES)
        .enumerate()
        .map(|(i, l)| EscrowRequest::Settle {
            batch: Signed::sign(
                &Settle {
                    peer_id: peer(&guard),
                    seq: i as u64,
                    issued_at_ms: now_ms(),
                    verdicts: l.to_vec(),
                },
                &guard,
            )
            .unwrap(),
        })
        .collect();
    println!(
        "| batches in flight | payouts | wall s | payouts/s (wall) | CPU s | payouts / CPU-s |"
    );
    println!("|---|---|---|---|---|---|");
    let per_row = PER_ROW.div_ceil(LINES);
    let mut next = batches.into_iter();
    for inflight in [1usize, 4, 16] {
        let row: Vec<EscrowRequest> = next.by_ref().take(per_row).collect();
        let (t0, c0) = (Instant::now(), cpu());
        let mut paid = 0u64;
        let mut pending = futures::stream::FuturesUnordered::new();
        let mut it = row.into_iter();
        loop {
            while pending.len() < inflight {
                let Some(b) = it.next() else { break };
                let h = &handle;
                pending.push(async move { h.request(b).await });
            }
            use futures::StreamExt;
            match pending.next().await {
                Some(Ok(EscrowResponse::Settle(r))) => paid += u64::from(r.paid),
                Some(other) => panic!("settle failed: {other:?}"),
                None => break,
            }
        }
        let (wall, cpu_s) = (t0.elapsed().as_secs_f64(), (cpu() - c0).as_secs_f64());
        println!(
            "| {inflight} | {paid} | {wall:.2} | {:.0} | {cpu_s:.2} | {:.0} |",
            paid as f64 / wall,
            paid as f64 / cpu_s
        );
    }
    match handle.request(EscrowRequest::Ledger).await {
        Ok(EscrowResponse::Ledger(t)) => assert!(t.conserved),
        other => panic!("{other:?}"),
    }
    cancel.cancel();
    handle.join().await;
}

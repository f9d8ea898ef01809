//! Status ingest throughput: verified reports per second.
//!
//! Run: `cargo bench -p btfs-host --bench status_ingest`. Prints a table:
//! 1. in-process on one thread: JSON decode + ed25519 verification + admission + redb batch
//!    commits (the whole ingest path minus HTTP), and each stage alone;
//! 2. over HTTP on loopback: the real service on a single-threaded runtime (plus its blocking
//!    writer thread) fed by a single-threaded client runtime with keep-alive connections; then
//!    the same with a two-worker server runtime (the client shares the machine's cores).
//!
//! Reports come from 10,000 distinct peers, 5 each, signed ahead of time. The goal is ≥ 20,000
//! verified reports/s on one core. Besides wall-clock time, each row shows the CPU time spent
//! (`getrusage`: this thread for in-process rows; the server's thread plus the database writer's
//! threads for the HTTP row), so the per-core rate stays meaningful on a busy machine:
//! `reports / CPU-second` is what one fully available core does.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use btfs_core::signed::{Signed, StatusReport};
use btfs_host::services::status::ingest::{self, Ingest, Limits};
use btfs_host::services::status::store::{Op, StatusDb, Write};
use btfs_host::services::status::{self, Admission, StatusOptions, REPORTS_PATH};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use libp2p::identity::{ed25519, PublicKey};
use nix::sys::resource::{getrusage, UsageWho};
use tokio_util::sync::CancellationToken;

const PEERS: usize = 10_000;
const PER_PEER: usize = 5;
const BATCH: usize = 8_192;
const CONNECTIONS: usize = 32;
const LOCAL: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

/// Admits exactly the bench's peers of `seed` (the allow-list rule of a Status without a Hub).
fn admission(seed: u64) -> Admission {
    Admission::AllowList(Arc::new(
        keys(seed)
            .iter()
            .map(|k| PublicKey::from(k.public()).to_peer_id())
            .collect(),
    ))
}

fn keys(seed: u64) -> Vec<ed25519::Keypair> {
    (0..PEERS)
        .map(|i| {
            let mut b = [0u8; 32];
            b[..8].copy_from_slice(&(i as u64).to_le_bytes());
            b[8..16].copy_from_slice(&seed.to_le_bytes());
            ed25519::Keypair::from(ed25519::SecretKey::try_from_bytes(b).expect("key"))
        })
        .collect()
}

fn make_reports(base_ms: u64, seed: u64) -> Vec<Vec<u8>> {
    let keys = keys(seed);
    let mut out = Vec::with_capacity(PEERS * PER_PEER);
    // Round by round, so each peer's reports arrive in order, as from real nodes.
    for round in 0..PER_PEER {
        for k in &keys {
            let r = StatusReport {
                peer_id: PublicKey::from(k.public()).to_peer_id().to_base58(),
                issued_at_ms: base_ms + round as u64,
                uptime_secs: 3_600 + round as u64,
                capacity_bytes: 1 << 40,
                used_bytes: 1 << 35,
                shards_held: 1_234,
                requests_served: 98_765,
                requests_failed: 12,
                version: "0.1.0".into(),
            };
            out.push(serde_json::to_vec(&Signed::sign(&r, k).expect("sign")).expect("json"));
        }
    }
    out
}

fn limits() -> Limits {
    Limits {
        max_peers: PEERS * 2,
        min_interval_ms: 0,
        max_skew_ms: u64::MAX / 4,
        online_window_ms: 180_000,
        ..Limits::for_tests()
    }
}

fn cpu(who: UsageWho) -> Duration {
    match getrusage(who) {
        Ok(u) => {
            let t = |tv: nix::sys::time::TimeVal| {
                Duration::from_secs(tv.tv_sec() as u64) + Duration::from_micros(tv.tv_usec() as u64)
            };
            t(u.user_time()) + t(u.system_time())
        }
        Err(_) => Duration::ZERO,
    }
}

fn thread_cpu() -> Duration {
    cpu(UsageWho::RUSAGE_THREAD)
}

/// Wall clock and this thread's CPU time since creation.
struct Clock(Instant, Duration);

impl Clock {
    fn start() -> Self {
        Self(Instant::now(), thread_cpu())
    }

    fn row(&self, name: &str, n: usize) {
        row(
            name,
            n,
            self.0.elapsed(),
            thread_cpu().saturating_sub(self.1),
        );
    }
}

fn row(name: &str, n: usize, wall: Duration, cpu: Duration) {
    println!(
        "| {name:<50} | {n:>7} | {:>7.3} | {:>10.0} | {:>7.3} | {:>12.0} |",
        wall.as_secs_f64(),
        n as f64 / wall.as_secs_f64(),
        cpu.as_secs_f64(),
        n as f64 / cpu.as_secs_f64().max(1e-9)
    );
}

/// The floor: ed25519 verification alone (same key count and message size, no decoding).
fn ed25519_alone(wires: &[Vec<u8>]) {
    let n = wires.len().min(20_000);
    let signed: Vec<(ed25519::PublicKey, Vec<u8>, Vec<u8>)> = (0..n)
        .map(|i| {
            let k = ed25519::Keypair::generate();
            let msg = wires[i].clone();
            let sig = k.sign(&msg);
            (k.public(), msg, sig)
        })
        .collect();
    let t = Clock::start();
    for (pk, msg, sig) in &signed {
        assert!(pk.verify(msg, sig));
    }
    t.row("ed25519 signature check alone (floor)", n);
}

fn in_process(wires: &[Vec<u8>], admission: &Admission) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = StatusDb::open(dir.path(), 1_440).expect("db");

    let t = Clock::start();
    let keys = ingest::KeyCache::new(PEERS);
    let checked: Vec<_> = wires
        .iter()
        .map(|w| {
            let mut c = ingest::verify(w, &keys, admission).expect("verify");
            if let Some(s) = c.new_signer.take() {
                keys.put(s);
            }
            c
        })
        .collect();
    t.row("decode + verify only", wires.len());

    let mut state = Ingest::new(limits());
    let t = Clock::start();
    let now = status::now_ms();
    let writes: Vec<Op> = checked
        .into_iter()
        .map(|c| {
            let peer_id = c.body.peer_id.clone();
            let a = state.admit(c, LOCAL, now).expect("admit");
            Op::Put(Write {
                peer_id,
                record: a.record,
                sample: a.sample,
            })
        })
        .collect();
    t.row("admit only (freshness, rate limit, state)", wires.len());

    let t = Clock::start();
    for chunk in writes.chunks(BATCH) {
        db.write(chunk).expect("write");
    }
    t.row(
        &format!("redb batch commits only ({BATCH} per tx)"),
        writes.len(),
    );

    // The whole path on one thread, as the service does it minus HTTP.
    let dir = tempfile::tempdir().expect("tempdir");
    let db = StatusDb::open(dir.path(), 1_440).expect("db");
    let mut state = Ingest::new(limits());
    let keys = ingest::KeyCache::new(PEERS);
    let t = Clock::start();
    let mut batch = Vec::with_capacity(BATCH);
    for w in wires {
        let mut c = ingest::verify(w, &keys, admission).expect("verify");
        let new_signer = c.new_signer.take();
        let peer_id = c.body.peer_id.clone();
        let a = state.admit(c, LOCAL, status::now_ms()).expect("admit");
        if let Some(s) = new_signer {
            keys.put(s);
        }
        batch.push(Op::Put(Write {
            peer_id,
            record: a.record,
            sample: a.sample,
        }));
        if batch.len() == BATCH {
            db.write(&batch).expect("write");
            batch.clear();
        }
    }
    db.write(&batch).expect("write");
    t.row("FULL ingest, one thread (verify+admit+commit)", wires.len());
}

async fn client(addr: SocketAddr, wires: Vec<Vec<u8>>) -> usize {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let mut accepted = 0;
    for w in wires {
        let req = hyper::Request::post(REPORTS_PATH)
            .header("host", addr.to_string())
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(w)))
            .expect("request");
        send.ready().await.expect("ready");
        let resp = send.send_request(req).await.expect("send");
        let ok = resp.status() == hyper::StatusCode::ACCEPTED;
        let _ = resp.into_body().collect().await;
        accepted += usize::from(ok);
    }
    accepted
}

fn over_http(wires: Vec<Vec<u8>>, admission: Admission, server_threads: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let path = dir.path().to_path_buf();
    let server = std::thread::spawn(move || {
        let rt = if server_threads == 1 {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
        } else {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(server_threads)
                .enable_all()
                .build()
        }
        .expect("runtime");
        rt.block_on(async move {
            let opts = StatusOptions {
                max_peers: PEERS * 2,
                min_interval: Duration::ZERO,
                max_skew: Duration::from_secs(1 << 30),
                admission,
                // Every bench client is one loopback address.
                new_peers_per_source: u32::MAX,
                http: btfs_host::net::http::ServerOptions {
                    max_connections_per_ip: CONNECTIONS,
                    ..Default::default()
                },
                ..StatusOptions::default()
            };
            let svc = status::start(
                &path,
                SocketAddr::from(([127, 0, 0, 1], 0)),
                opts,
                CancellationToken::new(),
            )
            .await
            .expect("start");
            addr_tx.send(svc.http_addr).expect("send addr");
            let _ = stop_rx.await;
            svc.shutdown().await;
        });
    });
    let addr = addr_rx.recv().expect("addr");
    let n = wires.len();
    // Split round-robin so every peer's reports stay in order on one connection.
    let mut parts: Vec<Vec<Vec<u8>>> = vec![Vec::new(); CONNECTIONS];
    for (i, w) in wires.into_iter().enumerate() {
        parts[(i % PEERS) % CONNECTIONS].push(w);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (t, process0, client0) = (Instant::now(), cpu(UsageWho::RUSAGE_SELF), thread_cpu());
    let accepted: usize = rt.block_on(async {
        let tasks: Vec<_> = parts
            .into_iter()
            .map(|p| tokio::spawn(client(addr, p)))
            .collect();
        let mut sum = 0;
        for t in tasks {
            sum += t.await.expect("client");
        }
        sum
    });
    let _ = stop_tx.send(());
    server.join().expect("server thread");
    // Server-side CPU: the whole process minus this (client) thread; it includes the server's
    // thread and the database writer's blocking threads, up to the final commit.
    let (wall, process) = (
        t.elapsed(),
        cpu(UsageWho::RUSAGE_SELF).saturating_sub(process0),
    );
    let server_cpu = process.saturating_sub(thread_cpu().saturating_sub(client0));
    assert_eq!(accepted, n, "every report should be accepted");
    row(
        &format!("HTTP, {CONNECTIONS} keep-alive conns, server {server_threads} thread(s)"),
        n,
        wall,
        server_cpu,
    );
}

fn main() {
    let t = Instant::now();
    let base = status::now_ms();
    let wires = make_reports(base, 1);
    let http_wires = make_reports(base, 2);
    let http_wires_mt = make_reports(base, 3);
    println!(
        "signed {} reports from {PEERS} peers in {:.1} s; body ~{} bytes\n",
        wires.len() * 3,
        t.elapsed().as_secs_f64(),
        wires[0].len()
    );
    println!(
        "| {:<50} | {:>7} | {:>7} | {:>10} | {:>7} | {:>12} |",
        "path", "reports", "wall s", "reports/s", "CPU s", "per CPU-sec"
    );
    println!(
        "|{:-<52}|{:->9}|{:->9}|{:->12}|{:->9}|{:->14}|",
        "", "", "", "", "", ""
    );
    ed25519_alone(&wires);
    in_process(&wires, &admission(1));
    over_http(http_wires, admission(2), 1);
    over_http(http_wires_mt, admission(3), 2);
}

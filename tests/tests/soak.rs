//! The soak: several tenants upload and download on a namespaced network (`btfs devnet
//! --netns`) while hosts and the service node (Hub, Guard, Escrow, Status) are `kill -9`ed and
//! restarted at random; the Guard repairs and the Escrow pays throughout. At the end every
//! object downloads byte-identical and the ledger's books balance.
//!
//! Length: `BTFS_SOAK_SECS` (default 45 s, the bounded slice `cargo xtask test` runs);
//! `cargo xtask soak --secs N` runs a long one. The seed is `BTFS_SOAK_SEED` (default: the
//! clock; printed, so a failure can be replayed with the same faults in the same order).
//! The report (objects, bytes, faults injected, repairs, time) is printed as one JSON line
//! starting `soak report:` and written to `$BTFS_SOAK_REPORT` when set.
//!
//! Faults: at most 3 hosts down at once (so every slab keeps ≥ 27 of 30 shards and downloads
//! never need a repair to succeed); the service node down for a few seconds at a time. Besides
//! those, [`LOST`] holders of the first object's first slab are *lost*: killed once that object
//! is up, which takes the slab to the Guard's repair threshold (24 healthy of 30), and not
//! restarted until the Guard has repaired it (checked every few seconds during the run; after
//! it, waiting at most [`REPAIR_WAIT`]), so every soak proves a paid repair under load. While
//! they are down at most one other host is. An
//! upload refused while the service node is down, or in the 15 s after it restarts (hosts
//! re-announce and are probed again), is counted and not retried; any other failed upload,
//! and any failed download, fails the soak (hosts come from the network file when the Hub is
//! away).

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use btfs_tests::{hash_file, manifest_of, random_file, shard_location, Devnet};
use rand::{Rng, SeedableRng};

/// How long the soak waits after its run for the Guard to repair the lost hosts' shards (its
/// offline grace is 3 epochs, 15 s on the devnet, then the repair itself).
const REPAIR_WAIT: Duration = Duration::from_secs(120);

/// Holders of the first object's slab 0 lost at once: the Guard repairs a slab at 24 healthy
/// shards of 30 or fewer, so fewer lost hosts would never trigger a repair.
const LOST: usize = 6;

struct Object {
    link: String,
    hash: blake3::Hash,
    bytes: u64,
}

#[derive(Debug, Default, serde::Serialize)]
struct Report {
    seed: u64,
    secs: u64,
    hosts: usize,
    tenants: usize,
    objects: usize,
    bytes_uploaded: u64,
    downloads: usize,
    bytes_downloaded: u64,
    uploads_refused_around_service_restarts: usize,
    host_kills: usize,
    service_kills: usize,
    /// How long the lost hosts stayed down (until the Guard had repaired their shards).
    lost_hosts_down_ms: u128,
    repaired_shards: u64,
    final_downloads_identical: usize,
    ledger_conserved: bool,
    elapsed_ms: u128,
}

fn ok(net: &Devnet, args: &[&str]) -> Result<String> {
    net.run(args)
}

/// Whether the Guard has repaired shards of `link`, and its health answer.
fn repaired(net: &Devnet, link: &str, network: &str) -> Result<(bool, serde_json::Value)> {
    let h: serde_json::Value =
        serde_json::from_str(&ok(net, &["health", link, "--json", "--network", network])?)?;
    Ok((h["repaired_shards"].as_u64().unwrap_or(0) > 0, h))
}

#[test]
fn a_soak_with_kills_and_restarts_loses_nothing_and_the_books_balance() -> Result<()> {
    let secs: u64 = std::env::var("BTFS_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(45);
    let seed: u64 = std::env::var("BTFS_SOAK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    eprintln!("soak: seed {seed} (BTFS_SOAK_SEED={seed} replays it), {secs} s");
    let started = Instant::now();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    // 30 for an upload, LOST + 1 down, and spares for a host the Hub marks offline under load.
    let hosts = 40;
    let mut net = Devnet::start_netns(hosts, &[])?;
    let network = net.network_path().display().to_string();
    let wallets: Vec<String> = ["alice", "bob", "carol"]
        .iter()
        .map(|w| {
            net.scratch()
                .join("wallets")
                .join(format!("{w}.key"))
                .display()
                .to_string()
        })
        .collect();
    let mut report = Report {
        seed,
        secs,
        hosts,
        tenants: wallets.len(),
        ..Report::default()
    };
    let mut objects: Vec<Object> = Vec::new();
    let mut down: Vec<usize> = Vec::new();
    // The lost hosts and when they went down; whether they are back.
    let mut lost: Option<(Vec<usize>, Instant)> = None;
    let mut lost_back = false;
    let mut last_repair_check = Instant::now();
    let mut service_down_until: Option<Instant> = None;
    let mut unsettled_until = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut step = 0u64;
    while Instant::now() < deadline {
        step += 1;
        // The service node comes back after its few seconds down.
        if service_down_until.is_some_and(|t| Instant::now() >= t) {
            net.restart_service(2000, 10)?;
            service_down_until = None;
            unsettled_until = Instant::now() + Duration::from_secs(15);
        }
        // Once the first object is up, lose LOST of its first slab's holders (at most one
        // other host stays down meanwhile).
        if lost.is_none() && !objects.is_empty() {
            let manifest = manifest_of(&net, &objects[0].link)?;
            while down.len() > 1 {
                let back = down.swap_remove(0);
                net.restart_host(back)?;
            }
            let mut gone = Vec::new();
            while gone.len() < LOST {
                let (i, _) = shard_location(&net, &manifest, 0, rng.gen_range(0..30))?;
                if !down.contains(&i) && !gone.contains(&i) {
                    net.kill_host(i);
                    report.host_kills += 1;
                    gone.push(i);
                }
            }
            lost = Some((gone, Instant::now()));
            last_repair_check = Instant::now();
        }
        // Every few seconds: once the Guard has repaired, the lost hosts come back.
        if let (Some((gone, at)), false) = (&lost, lost_back) {
            if last_repair_check.elapsed() > Duration::from_secs(5) && service_down_until.is_none()
            {
                last_repair_check = Instant::now();
                // (A failed ask, e.g. right after a service restart, is asked again later.)
                if repaired(&net, &objects[0].link, &network).is_ok_and(|r| r.0) {
                    report.lost_hosts_down_ms = at.elapsed().as_millis();
                    for &i in gone {
                        net.restart_host(i)?;
                    }
                    lost_back = true;
                }
            }
        }
        let lost_now = lost.as_ref().filter(|_| !lost_back);
        let max_down = if lost_now.is_some() { 1 } else { 3 };
        match rng.gen_range(0..100) {
            // Upload from a random tenant.
            0..=39 => {
                let wallet = &wallets[rng.gen_range(0..wallets.len())];
                let len = rng.gen_range(1..=6 << 20);
                let file = net.scratch().join(format!("soak-{step}.bin"));
                let hash = random_file(&file, len, seed ^ step)?;
                let out = net.btfs(&[
                    "upload",
                    &file.display().to_string(),
                    "--wallet",
                    wallet,
                    "--json",
                ]);
                let _ = std::fs::remove_file(&file);
                if out.status.success() {
                    let up: serde_json::Value = serde_json::from_slice(&out.stdout)?;
                    let link = up["link"].as_str().context("no link")?.to_string();
                    report.bytes_uploaded += len as u64;
                    objects.push(Object {
                        link,
                        hash,
                        bytes: len as u64,
                    });
                } else if service_down_until.is_some() || Instant::now() < unsettled_until {
                    report.uploads_refused_around_service_restarts += 1;
                } else {
                    bail!(
                        "step {step}: upload failed with the service node up and {} hosts down: {}",
                        down.len(),
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
            }
            // Download a random object: always identical, whatever is down.
            40..=69 if !objects.is_empty() => {
                let o = &objects[rng.gen_range(0..objects.len())];
                let out = net.scratch().join("soak.out");
                net.download(&o.link, &out)
                    .with_context(|| format!("step {step}: download of {}", o.link))?;
                assert_eq!(hash_file(&out)?, o.hash, "step {step}: {}", o.link);
                report.downloads += 1;
                report.bytes_downloaded += o.bytes;
            }
            // kill -9 a host (at most 3 down), or bring one back.
            70..=84 => {
                if down.len() < max_down && rng.gen_bool(0.6) {
                    let i = loop {
                        let i = rng.gen_range(0..hosts);
                        if !down.contains(&i) && !lost_now.is_some_and(|l| l.0.contains(&i)) {
                            break i;
                        }
                    };
                    net.kill_host(i);
                    down.push(i);
                    report.host_kills += 1;
                } else if !down.is_empty() {
                    let i = down.swap_remove(rng.gen_range(0..down.len()));
                    net.restart_host(i)?;
                }
            }
            // kill -9 the service node for 2–5 s.
            85..=89 if service_down_until.is_none() => {
                net.kill_service();
                report.service_kills += 1;
                service_down_until =
                    Some(Instant::now() + Duration::from_millis(rng.gen_range(2000..5000)));
            }
            _ => std::thread::sleep(Duration::from_millis(200)),
        }
    }
    // Everything back up; then every object, byte-identical.
    if service_down_until.is_some() {
        net.restart_service(2000, 10)?;
    }
    for i in down.drain(..) {
        net.restart_host(i)?;
    }
    // The Guard repairs the lost hosts' shards of the first object (paid from its allowance),
    // if it has not during the run.
    let (gone, lost_at) = lost.context("the soak uploaded nothing")?;
    if !lost_back {
        let first = &objects[0].link;
        let waited = Instant::now();
        loop {
            let (done, h) = repaired(&net, first, &network)?;
            if done {
                break;
            }
            if waited.elapsed() > REPAIR_WAIT {
                bail!(
                    "hosts {gone:?} have been down {} s and the Guard has not repaired {first}: {h}",
                    lost_at.elapsed().as_secs()
                );
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        report.lost_hosts_down_ms = lost_at.elapsed().as_millis();
        for i in gone {
            net.restart_host(i)?;
        }
    }
    for o in &objects {
        let out = net.scratch().join("final.out");
        net.download(&o.link, &out)
            .with_context(|| format!("final download of {}", o.link))?;
        assert_eq!(hash_file(&out)?, o.hash, "final: {}", o.link);
        report.final_downloads_identical += 1;
        let h: serde_json::Value = serde_json::from_str(&ok(
            &net,
            &["health", &o.link, "--json", "--network", &network],
        )?)?;
        report.repaired_shards += h["repaired_shards"].as_u64().unwrap_or(0);
    }
    // The books: what is in accounts, locks and allowances is what was paid in minus out.
    let t: serde_json::Value =
        serde_json::from_str(&ok(&net, &["ledger", "--json", "--network", &network])?)?;
    let n = |k: &str| t[k].as_u64().unwrap_or(u64::MAX);
    assert_eq!(
        n("balances") + n("locked") + n("allowances"),
        n("deposits") - n("withdrawals"),
        "{t}"
    );
    assert_eq!(n("locked"), n("incoming"), "{t}");
    assert_eq!(t["conserved"], true, "{t}");
    report.ledger_conserved = true;
    assert!(report.repaired_shards > 0, "no repair: {report:?}");
    report.objects = objects.len();
    report.elapsed_ms = started.elapsed().as_millis();
    assert!(report.objects > 0, "the soak uploaded nothing");
    let line = serde_json::to_string(&report)?;
    eprintln!("soak report: {line}");
    if let Some(path) = std::env::var_os("BTFS_SOAK_REPORT") {
        std::fs::write(path, &line)?;
    }
    Ok(())
}

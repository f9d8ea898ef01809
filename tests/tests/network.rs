//! A real network: every node in its own network namespace (`btfs devnet --netns`, its own
//! address on a virtual bridge, its own /24), joined by bootstrap addresses, cut off by
//! partitions and slowed by shaped links. Needs root (as CI and this machine have).
//!
//! - a tenant given only a bootstrap address uploads, pays, downloads and reads health; a
//!   fresh host given only a bootstrap address joins, learns the Escrow (it refuses unfunded
//!   puts) and is recommended;
//! - a partition that cuts 20 of an object's 30 hosts off: the download is still identical;
//!   healed, the Guard sees them again and repairs nothing;
//! - hosts shaped to 2 Mbit/s: uploads and downloads route around them (hedges fire) and the
//!   bytes come back identical.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use btfs_tests::{btfs_bin, hash_file, manifest_of, random_file, shard_location, Devnet};

/// No network file: every command below must work from `--bootstrap` alone.
const NO_FILE: &str = "/nonexistent/network.json";

fn json(net: &Devnet, args: &[&str]) -> Result<serde_json::Value> {
    net.run_json(args)
}

/// A process killed on drop (also when a test fails).
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn health(net: &Devnet, link: &str, bootstrap: &str) -> Result<serde_json::Value> {
    json(
        net,
        &[
            "health",
            link,
            "--json",
            "--bootstrap",
            bootstrap,
            "--network",
            NO_FILE,
        ],
    )
}

#[test]
fn a_tenant_and_a_fresh_host_need_only_a_bootstrap_address() -> Result<()> {
    let net = Devnet::start_netns(30, &[])?;
    let boot = net.bootstrap_addr(7);
    let with_boot = |args: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        v.extend([
            "--bootstrap".into(),
            boot.clone(),
            "--network".into(),
            NO_FILE.into(),
        ]);
        v
    };
    let call = |args: &[&str]| -> Result<serde_json::Value> {
        let v = with_boot(args);
        let v: Vec<&str> = v.iter().map(String::as_str).collect();
        json(&net, &v)
    };

    // The tenant: upload (paid), download, health, balance.
    let file = net.scratch().join("a.bin");
    let want = random_file(&file, 3 << 20, 1)?;
    let up = call(&["upload", &file.display().to_string(), "--json"])?;
    let link = up["link"].as_str().context("no link")?.to_string();
    assert_eq!(up["guard"], "watching", "{up}");
    assert!(
        up["contracts"]["committed"].as_u64().unwrap_or(0) > 0,
        "a paid upload: {up}"
    );
    let out = net.scratch().join("a.out");
    call(&[
        "download",
        &link,
        "-o",
        &out.display().to_string(),
        "--json",
    ])?;
    assert_eq!(hash_file(&out)?, want);
    let h = health(&net, &link, &boot)?;
    assert_eq!(h["slabs"][0]["healthy"], 30, "{h}");
    let balance = call(&["wallet", "balance", "--json"])?;
    assert!(balance["locked"].as_u64().unwrap_or(0) > 0, "{balance}");

    // A fresh host on another machine (the root namespace, 198.18.0.1), given only the
    // bootstrap address: it learns the Hub, the Escrow and Status, and tenants find it.
    let dir = net.scratch().join("fresh-host");
    let log = std::fs::File::create(net.scratch().join("fresh-host.log"))?;
    let started = Instant::now();
    let _host = Killed(
        Command::new(btfs_bin())
            .args(["host", "--data-dir"])
            .arg(&dir)
            .args(["--listen-ip", "198.18.0.1", "--bootstrap", &boot])
            .args([
                "--announce-interval-secs",
                "2",
                "--report-interval-secs",
                "2",
            ])
            .args(["--quota", "1GiB"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?,
    );
    let node = wait_for_node_json(&dir)?;
    let peer = node["peer_id"].as_str().context("no peer id")?.to_string();
    let found = loop {
        let list = call(&["hosts", "--json"])?;
        let online = list.as_array().into_iter().flatten().any(|h| {
            h["peer_id"] == peer.as_str()
                && h["online"] == true
                && h["excluded"].is_null()
                && h["score"].as_f64().unwrap_or(0.0) > 0.0
        });
        if online {
            break started.elapsed();
        }
        if started.elapsed() > Duration::from_secs(60) {
            bail!(
                "the fresh host was not recommendable (online, scored, not excluded) within 60 s"
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    eprintln!(
        "a fresh host was recommendable {} ms after it started",
        found.as_millis()
    );
    // It took the Escrow from its bootstrap node: an unfunded put is refused.
    let addr = node["addrs"][0].as_str().context("no address")?;
    let blob = net.scratch().join("blob");
    random_file(&blob, 1000, 2)?;
    let put = net.btfs(&[
        "shard",
        "put",
        "--host",
        addr,
        &blob.display().to_string(),
        "--network",
        NO_FILE,
    ]);
    let err = String::from_utf8_lossy(&put.stderr).to_lowercase();
    assert!(!put.status.success() && err.contains("fund"), "{err}");
    // A bootstrap address that is not a BTFS node's, and one without a peer id, are explained.
    let bad = net.btfs(&[
        "hosts",
        "--bootstrap",
        "/ip4/198.18.0.1/tcp/9",
        "--network",
        NO_FILE,
    ]);
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        !bad.status.success() && err.contains("/p2p/<peer id>"),
        "{err}"
    );
    Ok(())
}

fn wait_for_node_json(dir: &Path) -> Result<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(bytes) = std::fs::read(dir.join("node.json")) {
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) {
                return Ok(v);
            }
        }
        if Instant::now() > deadline {
            bail!("the fresh host did not start within 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_partition_of_20_of_30_hosts_loses_nothing_and_heals_without_repairs() -> Result<()> {
    // 34 hosts: 4 could take repairs, so a needless repair would happen if the Guard made one.
    let net = Devnet::start_netns(34, &[])?;
    let boot = net.bootstrap_addr(0);
    let file = net.scratch().join("p.bin");
    // One slab: its 30 shards sit on 30 distinct hosts.
    let want = random_file(&file, 8 << 20, 3)?;
    let link = net.upload(&file)?;
    let manifest = manifest_of(&net, &link)?;
    let holders: Vec<usize> = (0..30)
        .map(|k| Ok(shard_location(&net, &manifest, 0, k)?.0))
        .collect::<Result<_>>()?;
    assert_eq!(holders.len(), 30);
    // Keep the bootstrap host on the reachable side.
    let mut cut: Vec<usize> = holders.iter().copied().filter(|&h| h != 0).collect();
    cut.truncate(20);
    let partition = net.cut_hosts(&cut)?;
    let started = Instant::now();
    let out = net.scratch().join("p.out");
    let report = net.download(&link, &out)?;
    let took = started.elapsed();
    assert_eq!(hash_file(&out)?, want, "{report}");
    eprintln!(
        "download with 20 of 30 hosts cut off: {} ms, {report}",
        took.as_millis()
    );
    // Hold the partition until the Guard has missed audits of the cut hosts' shards (it
    // then counts them silent, not yet lost: its offline grace is 3 epochs).
    let held = Instant::now();
    loop {
        let h = health(&net, &link, &boot)?;
        let missed = h["slabs"][0]["shards"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|x| x["passed"] == false)
            .count();
        if missed >= 15 {
            assert_eq!(h["repaired_shards"], 0, "{h}");
            eprintln!(
                "the Guard missed {missed} shards' audits after {} ms",
                held.elapsed().as_millis()
            );
            break;
        }
        if held.elapsed() > Duration::from_secs(30) {
            bail!("the Guard never noticed the partition: {h}");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    partition.heal();
    // The Guard sees all 30 again (each passed an audit since the heal), and repaired nothing:
    // every shard still sits on its original host.
    let healed = Instant::now();
    loop {
        let h = health(&net, &link, &boot)?;
        let shards = h["slabs"][0]["shards"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let all_passed = shards.len() == 30
            && shards
                .iter()
                .all(|x| x["passed"] == true && x["fails"] == 0);
        if all_passed && healed.elapsed() > Duration::from_secs(6) {
            assert_eq!(h["repaired_shards"], 0, "a needless repair: {h}");
            for (k, x) in shards.iter().enumerate() {
                assert_eq!(x["host"], net.hosts()[holders[k]].peer_id.as_str(), "{h}");
            }
            break;
        }
        if healed.elapsed() > Duration::from_secs(60) {
            bail!("the Guard did not see the healed hosts within 60 s: {h}");
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    Ok(())
}

#[test]
fn slow_hosts_are_routed_around() -> Result<()> {
    // 36 hosts: an upload has 6 spares to move a slow host's shards to.
    let net = Devnet::start_netns(36, &[])?;
    // A sixth of the network on 2 Mbit/s links (≈ 4 s per 1 MiB shard each way).
    let slow: Vec<usize> = (0..6).collect();
    net.shape_hosts(&slow, Some(2_000))?;
    let file = net.scratch().join("s.bin");
    let want = random_file(&file, 20 << 20, 4)?;
    let up = net.btfs(&["upload", &file.display().to_string(), "--json"]);
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    let up: serde_json::Value = serde_json::from_slice(&up.stdout)?;
    eprintln!(
        "upload past 6 slow hosts: {} ms, {} hedged puts, {} hosts used",
        up["elapsed_ms"], up["hedged_puts"], up["hosts_used"]
    );
    assert!(up["hedged_puts"].as_u64().unwrap_or(0) > 0, "{up}");
    net.shape_hosts(&slow, None)?;
    // Now slow down the hosts of slab 0's first 6 data shards, which a download asks first.
    let link = up["link"].as_str().context("no link")?;
    let manifest = manifest_of(&net, link)?;
    let data_holders: Vec<usize> = (0..6)
        .map(|k| Ok(shard_location(&net, &manifest, 0, k)?.0))
        .collect::<Result<_>>()?;
    net.shape_hosts(&data_holders, Some(2_000))?;
    let out = net.scratch().join("s.out");
    let report = net.download(link, &out)?;
    eprintln!("download past 6 slow data-shard holders: {report}");
    assert_eq!(hash_file(&out)?, want);
    assert!(
        report["hedged_fetches"].as_u64().unwrap_or(0) > 0,
        "{report}"
    );
    Ok(())
}

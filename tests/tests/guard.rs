//! The Guard on a real devnet (5 s epochs): audits that fail for damaged and deleted shards,
//! their signed history and the Hub's audit factor; repair after `kill -9` of 12 of an
//! object's 30 hosts, downloads that need the repaired shards, and a Guard killed mid-repair.

use std::time::{Duration, Instant};

use btfs_tests::{blob_path, hash_file, manifest_of, random_file, shard_location, Devnet};

const MIB: usize = 1 << 20;

fn json_of(net: &Devnet, args: &[&str]) -> serde_json::Value {
    let network = net.network_path();
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--network", network.to_str().unwrap(), "--json"]);
    let o = net.btfs(&all);
    assert!(
        o.status.success(),
        "btfs {args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

fn upload_watched(net: &Devnet, len: usize, seed: u64) -> (String, blake3::Hash) {
    let src = net.scratch().join(format!("in-{seed}.bin"));
    let want = random_file(&src, len, seed).unwrap();
    let report = json_of(net, &["upload", src.to_str().unwrap()]);
    assert_eq!(report["guard"], "watching", "{report:#}");
    (report["link"].as_str().unwrap().to_string(), want)
}

/// Polls `f` every 500 ms for up to `secs`; returns its last value once it says done.
fn wait_for<T>(secs: u64, what: &str, mut f: impl FnMut() -> (bool, T)) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let (done, v) = f();
        if done {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {secs} s waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn damaged_and_deleted_shards_fail_their_audits_and_lower_the_hosts_scores() {
    let net = Devnet::start(30).unwrap();
    assert!(net.services()["guard"]["peer_id"].is_string());
    assert!(net.services()["guard"]["pid"].as_u64().unwrap() > 0);
    let (link, _) = upload_watched(&net, 3 * MIB, 21);
    let manifest = manifest_of(&net, &link).unwrap();

    // First every shard passes.
    wait_for(30, "a first clean audit", || {
        let h = json_of(&net, &["health", &link]);
        let audited = h["slabs"][0]["shards"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["passed"] == true);
        (audited, ())
    });

    let (flip_host, flip_root) = shard_location(&net, &manifest, 0, 4).unwrap();
    let path = blob_path(&net.hosts()[flip_host].data_dir, &flip_root.to_hex());
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[1000] ^= 0x08;
    std::fs::write(&path, &bytes).unwrap();
    let (del_host, del_root) = shard_location(&net, &manifest, 0, 9).unwrap();
    std::fs::remove_file(blob_path(
        &net.hosts()[del_host].data_dir,
        &del_root.to_hex(),
    ))
    .unwrap();

    let health = wait_for(30, "both shards to fail an audit", || {
        let h = json_of(&net, &["health", &link]);
        let s = &h["slabs"][0]["shards"];
        (s[4]["passed"] == false && s[9]["passed"] == false, h)
    });
    assert_eq!(
        health["slabs"][0]["shards"][4]["host"],
        net.hosts()[flip_host].peer_id.as_str()
    );
    assert!(
        health["slabs"][0]["healthy"].as_u64().unwrap() <= 28,
        "{health:#}"
    );

    // The signed history names the failure; the Hub's audit factor dropped.
    for (host, root) in [(flip_host, flip_root), (del_host, del_root)] {
        let peer = net.hosts()[host].peer_id.clone();
        let audits = json_of(&net, &["audits", "--host", &peer]);
        let rows = audits.as_array().unwrap();
        assert!(
            rows.iter()
                .any(|v| v["root"] == root.to_hex().as_str() && v["passed"] == false),
            "{audits:#}"
        );
        assert!(rows
            .iter()
            .all(|v| v["epoch"].is_u64() && v["signed"].is_object()));
        let hub = wait_for(30, "the Hub to count the failed audit", || {
            let hosts = net.hosts_json().unwrap();
            let h = hosts
                .into_iter()
                .find(|h| h["peer_id"] == peer.as_str())
                .unwrap();
            (h["breakdown"]["audits"].as_f64().unwrap() < 1.0, h)
        });
        assert!(
            hub["facts"]["audits_failed"].as_u64().unwrap() >= 1,
            "{hub:#}"
        );
    }
    // An honest host keeps a perfect audit factor.
    let (honest, _) = shard_location(&net, &manifest, 0, 0).unwrap();
    let honest_peer = net.hosts()[honest].peer_id.clone();
    let audits = json_of(&net, &["audits", "--host", &honest_peer]);
    assert!(audits
        .as_array()
        .unwrap()
        .iter()
        .all(|v| v["passed"] == true));
}

/// 12 of an object's 30 hosts are killed: the Guard rebuilds exactly those shards on other
/// hosts (the Guard itself is killed and restarted in the middle), and the object downloads
/// byte-identical after 9 more original holders die — impossible without the repair.
#[test]
fn killed_hosts_are_repaired_and_downloads_follow_the_guard() {
    let mut net = Devnet::start(45).unwrap();
    let (link, want) = upload_watched(&net, 4 * MIB, 22);
    let manifest = manifest_of(&net, &link).unwrap();
    let holders: Vec<usize> = (0..30)
        .map(|k| shard_location(&net, &manifest, 0, k).unwrap().0)
        .collect();
    for &h in &holders[..12] {
        net.kill_host(h);
    }
    // Kill the Guard once the repair is under way (or done), and start it again.
    wait_for(60, "the Guard to notice the dead hosts", || {
        let h = json_of(&net, &["health", &link]);
        (h["slabs"][0]["healthy"].as_u64().unwrap() <= 24, ())
    });
    net.kill_service();
    net.restart_service(500, 2).unwrap();

    let health = wait_for(120, "the slab to be back to 30 healthy shards", || {
        let h = json_of(&net, &["health", &link]);
        let s = &h["slabs"][0];
        let ok = s["healthy"] == 30
            && s["shards"]
                .as_array()
                .unwrap()
                .iter()
                .all(|x| x["passed"] == true);
        (ok, h)
    });
    let shards = health["slabs"][0]["shards"].as_array().unwrap();
    let original: Vec<String> = holders
        .iter()
        .map(|&h| net.hosts()[h].peer_id.clone())
        .collect();
    let mut new_hosts = std::collections::BTreeSet::new();
    for (k, s) in shards.iter().enumerate() {
        let host = s["host"].as_str().unwrap().to_string();
        if k < 12 {
            assert!(
                !original.contains(&host),
                "shard {k} still on an original holder"
            );
            assert!(new_hosts.insert(host), "two repaired shards share a host");
        } else {
            assert_eq!(host, original[k], "shard {k} moved without being lost");
        }
    }
    assert_eq!(
        health["repaired_shards"], 12,
        "each lost shard is repaired exactly once: {health:#}"
    );

    // 9 more original holders die: 9 originals + 12 repaired shards remain.
    for &h in &holders[12..21] {
        net.kill_host(h);
    }
    let out = net.scratch().join("out.bin");
    net.download(&link, &out).unwrap();
    assert_eq!(hash_file(&out).unwrap(), want);
}

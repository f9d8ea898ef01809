//! Store and retrieve on a real 30-process devnet over loopback (issue #2's acceptance tests).

use btfs_tests::{blob_path, hash_file, manifest_of, random_file, shard_location, Devnet};

const MIB: usize = 1 << 20;

/// 1. Upload a 64 MiB random file to 30 hosts, download it, bytes identical.
/// 2. `kill -9` 20 of the 30 hosts, download again, bytes identical.
#[test]
fn upload_download_then_survive_losing_20_of_30_hosts() {
    let mut net = Devnet::start(30).unwrap();
    let src = net.scratch().join("in.bin");
    let want = random_file(&src, 64 * MIB, 1).unwrap();
    let link = net.upload(&src).unwrap();
    assert!(link.starts_with("btfs://"), "{link}");

    let out = net.scratch().join("out1.bin");
    let report = net.download(&link, &out).unwrap();
    assert_eq!(hash_file(&out).unwrap(), want);
    assert_eq!(report["bytes"], 64 * MIB);

    // The same manifest with another key: refused before any shard is fetched.
    let (id, _) = link.split_once('#').unwrap();
    let wrong = format!("{id}#{}A", "B".repeat(42));
    let err = net
        .download(&wrong, &net.scratch().join("wrong.bin"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("key is wrong"), "{err}");

    // Every host holds shards: the upload spread 30 shards per slab over 30 distinct hosts.
    let manifest = manifest_of(&net, &link).unwrap();
    assert_eq!(manifest.hosts().len(), 30);

    for i in 0..20 {
        net.kill_host(i);
    }
    let out = net.scratch().join("out2.bin");
    let report = net.download(&link, &out).unwrap();
    assert_eq!(hash_file(&out).unwrap(), want);
    assert!(report["failed_fetches"].as_u64().unwrap() > 0, "{report}");

    // With 21 hosts gone, no slab can be rebuilt, and the error says why.
    net.kill_host(20);
    let out = net.scratch().join("out3.bin");
    let err = net.download(&link, &out).unwrap_err().to_string();
    assert!(
        err.contains("cannot rebuild slab") || err.contains("object not found"),
        "{err}"
    );
    assert!(
        !out.exists(),
        "a failed download must not leave an output file"
    );
}

/// 3. A corrupted shard on one host's disk is detected and the download is still identical.
#[test]
fn corrupt_shard_on_disk_is_detected_and_routed_around() {
    let net = Devnet::start(30).unwrap();
    let src = net.scratch().join("in.bin");
    let want = random_file(&src, 8 * MIB, 3).unwrap();
    let link = net.upload(&src).unwrap();
    let manifest = manifest_of(&net, &link).unwrap();

    // Data shard 0 of slab 0 is always among the first fetched.
    let (host, root) = shard_location(&net, &manifest, 0, 0).unwrap();
    let path = blob_path(&net.hosts()[host].data_dir, &root.to_hex());
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();

    let out = net.scratch().join("out.bin");
    let report = net.download(&link, &out).unwrap();
    assert_eq!(hash_file(&out).unwrap(), want);
    let corrupt = report["corrupt_shards"].as_array().unwrap();
    assert_eq!(corrupt.len(), 1, "{report}");
    assert_eq!(corrupt[0]["slab"], 0);
    assert_eq!(corrupt[0]["shard"], 0);
    assert_eq!(corrupt[0]["host"], net.hosts()[host].peer_id.as_str());
}

/// 4. A restarted host keeps its identity, addresses and shards, and serves them.
#[test]
fn restarted_host_still_serves_its_shards() {
    let mut net = Devnet::start(30).unwrap();
    let src = net.scratch().join("in.bin");
    let want = random_file(&src, 8 * MIB, 4).unwrap();
    let link = net.upload(&src).unwrap();
    let manifest = manifest_of(&net, &link).unwrap();
    let (h, root) = shard_location(&net, &manifest, 0, 0).unwrap();

    net.kill_host(h);
    net.restart_host(h).unwrap();

    // Stat the shard on the restarted host directly.
    let addr = net.hosts()[h].addrs[0].clone();
    let o = net.btfs(&["shard", "stat", "--host", &addr, &root.to_hex()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let size: u64 = String::from_utf8_lossy(&o.stdout).trim().parse().unwrap();
    assert_eq!(
        size,
        u64::from(manifest.layout().slab(0).unwrap().shard_size)
    );

    // Leave exactly 10 hosts, the restarted one among them: the download needs its shards.
    let mut killed = 0;
    for i in 0..30 {
        if i != h && killed < 20 {
            net.kill_host(i);
            killed += 1;
        }
    }
    let out = net.scratch().join("out.bin");
    net.download(&link, &out).unwrap();
    assert_eq!(hash_file(&out).unwrap(), want);
}

/// 5. A put whose bytes do not match the declared root is refused and nothing is stored.
#[test]
fn put_with_mismatched_root_is_refused_and_nothing_is_stored() {
    let net = Devnet::start(1).unwrap();
    let host = &net.hosts()[0];
    let addr = host.addrs[0].clone();
    let file = net.scratch().join("blob");
    std::fs::write(&file, b"the real bytes").unwrap();
    let lie = btfs_core::Root::of(b"other bytes").to_hex();

    let o = net.btfs(&[
        "shard",
        "put",
        "--host",
        &addr,
        "--root",
        &lie,
        &file.display().to_string(),
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("do not hash to the declared root"), "{err}");
    assert!(!blob_path(&host.data_dir, &lie).exists());
    let tmp_entries = std::fs::read_dir(host.data_dir.join("tmp"))
        .unwrap()
        .count();
    assert_eq!(tmp_entries, 0, "no temp file may be left behind");
    let o = net.btfs(&["shard", "stat", "--host", &addr, &lie]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("does not hold"));

    // The honest put of the same bytes is accepted (the refusal was about the root).
    let o = net.btfs(&["shard", "put", "--host", &addr, &file.display().to_string()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let real = String::from_utf8_lossy(&o.stdout).trim().to_string();
    assert!(blob_path(&host.data_dir, &real).exists());
}

/// Bad input gets clear errors: missing file, bad link, too few hosts, unreachable network.
#[test]
fn clear_errors_for_bad_input() {
    let mut net = Devnet::start(5).unwrap();
    let src = net.scratch().join("in.bin");
    random_file(&src, 1000, 5).unwrap();

    let o = net.btfs(&["upload", "/nonexistent/file"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot read /nonexistent/file"));

    let o = net.btfs(&["upload", &src.display().to_string()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success()
            && err.contains("the Hub found only 5 of the 30 hosts needed: 5 registered, 0 offline"),
        "{err}"
    );

    let o = net.btfs(&["download", "https://example.com/x", "-o", "/tmp/x"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("not a btfs link"));
    let o = net.btfs(&[
        "download",
        &format!("btfs://{}", "ab".repeat(32)),
        "-o",
        "/tmp/x",
    ]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("no #key part"));

    let missing = format!("btfs://{}#{}", "ab".repeat(32), "A".repeat(43));
    let o = net.btfs(&["download", &missing, "-o", "/tmp/x"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("object not found"));

    for i in 0..5 {
        net.kill_host(i);
    }
    // The Hub notices within two probe intervals (2 s each on a devnet) and says so.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let o = net.btfs(&["upload", &src.display().to_string()]);
        let err = String::from_utf8_lossy(&o.stderr).to_string();
        assert!(!o.status.success(), "upload to a dead network succeeded");
        if err.contains("0 of the 30 hosts needed: 5 registered, 5 offline") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{err}");
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    net.kill_service();
    let o = net.btfs(&["upload", &src.display().to_string()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("cannot reach the Hub") && err.contains("service node running"),
        "{err}"
    );
    // Downloads fall back to the network file's hosts, all dead too.
    let o = net.btfs(&["download", &missing, "-o", "/tmp/x"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("network unreachable"), "{err}");

    let o = net.btfs(&[
        "download",
        &missing,
        "-o",
        "/tmp/x",
        "--network",
        "/nonexistent.json",
    ]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot read network file"));
}

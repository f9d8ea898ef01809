//! Storage proofs on a real devnet: `btfs audit LINK` challenges every shard of an object on its
//! holder (`/btfs/audit/1`) and verifies each proof against the shard's root alone.

use btfs_tests::{blob_path, manifest_of, random_file, shard_location, Devnet};

const MIB: usize = 1 << 20;

fn audit_json(net: &Devnet, link: &str) -> serde_json::Value {
    let network = net.network_path();
    let o = net.btfs(&[
        "audit",
        "--network",
        network.to_str().unwrap(),
        "--json",
        link,
    ]);
    assert!(
        o.status.success(),
        "btfs audit failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

/// A deleted shard, a shard with one flipped byte and a dead host each fail their challenge,
/// with a reason that says which; every other shard proves it is stored.
#[test]
fn deleted_flipped_and_unreachable_shards_fail_their_challenges() {
    let mut net = Devnet::start(30).unwrap();
    let src = net.scratch().join("in.bin");
    random_file(&src, 5 * MIB, 11).unwrap();
    let link = net.upload(&src).unwrap();
    let manifest = manifest_of(&net, &link).unwrap();

    let healthy = audit_json(&net, &link);
    assert_eq!(healthy["failed"], 0, "{healthy:#}");
    assert_eq!(healthy["passed"], 30 * manifest.slabs().len());

    let (deleted_host, deleted_root) = shard_location(&net, &manifest, 0, 3).unwrap();
    std::fs::remove_file(blob_path(
        &net.hosts()[deleted_host].data_dir,
        &deleted_root.to_hex(),
    ))
    .unwrap();
    let (flipped_host, flipped_root) = shard_location(&net, &manifest, 0, 7).unwrap();
    let path = blob_path(&net.hosts()[flipped_host].data_dir, &flipped_root.to_hex());
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.len() - 5; // near the end: far from most challenged chunks
    bytes[at] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();
    let (dead_host, _) = shard_location(&net, &manifest, 0, 12).unwrap();
    net.kill_host(dead_host);

    let report = audit_json(&net, &link);
    let slab0 = &report["slabs"][0];
    assert_eq!(slab0["healthy"], 27, "{report:#}");
    let shards = slab0["shards"].as_array().unwrap();
    assert_eq!(shards.len(), 30);
    for s in shards {
        let k = s["shard"].as_u64().unwrap();
        let reason = s["reason"].as_str().unwrap_or("");
        match k {
            3 => {
                assert_eq!(s["passed"], false, "{s}");
                assert!(reason.contains("does not hold"), "{s}");
            }
            7 => {
                assert_eq!(s["passed"], false, "{s}");
                assert!(reason.contains("damaged"), "{s}");
            }
            12 => assert_eq!(s["passed"], false, "{s}"),
            _ => assert_eq!(s["passed"], true, "{s}"),
        }
    }
    let failed = report["failed"].as_u64().unwrap();
    assert_eq!(failed, 3);

    // The text form names the failures and says the object is still recoverable.
    let network = net.network_path();
    let o = net.btfs(&["audit", "--network", network.to_str().unwrap(), &link]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(text.contains("slab 0: 27 of 30 shards proved"), "{text}");
    assert!(text.contains("recoverable"), "{text}");
}

//! Hung hosts (SIGSTOPped processes: connections open, nothing answered) on a real 30-process
//! devnet: a download hedges around them, an upload moves their shards to other hosts. How long
//! that takes is measured by `cargo bench -p btfs-tests --bench hung_hosts`, not asserted here.

use btfs_tests::{hash_file, manifest_of, random_file, Devnet};

const MIB: usize = 1 << 20;

/// A third of the hosts hung after the upload: the download finishes, identical, by hedging.
#[test]
fn download_hedges_around_a_third_of_hosts_hung() {
    let net = Devnet::start(30).unwrap();
    let src = net.scratch().join("in.bin");
    let want = random_file(&src, 32 * MIB, 11).unwrap();
    let link = net.upload(&src).unwrap();
    let manifest = manifest_of(&net, &link).unwrap();
    // Freeze the hosts of data shards 0, 3, 6, … of slab 0 (always among the first asked).
    let record = &manifest.slabs()[0];
    let hosts: Vec<usize> = (0..10)
        .map(|k| {
            let peer =
                bs58::encode(&manifest.hosts()[usize::from(record[k * 3 % 30].host)]).into_string();
            net.host_index(&peer).unwrap()
        })
        .collect();
    let frozen = net.freeze_hosts(&hosts);
    let out = net.scratch().join("out.bin");
    let report = net.download(&link, &out).unwrap();
    drop(frozen);
    assert_eq!(hash_file(&out).unwrap(), want);
    assert!(
        report["hedged_fetches"].as_u64().unwrap() > 0,
        "the download should have hedged: {report}"
    );
}

/// A third of the hosts hung before the upload: the upload places every shard elsewhere and
/// the object reads back once they are thawed.
#[test]
fn upload_moves_shards_off_hung_hosts() {
    // 44 hosts, 10 of them hung: 34 answer, so the upload has 4 to spare when the Hub marks a
    // live host offline for two probes missed under load (with exactly 30 live hosts one such
    // host failed the upload: "only 27 of the 30 hosts needed signed a storage offer").
    let net = Devnet::start(44).unwrap();
    let src = net.scratch().join("in.bin");
    let want = random_file(&src, 16 * MIB, 12).unwrap();
    let hung: Vec<usize> = (0..40).step_by(4).collect();
    let frozen = net.freeze_hosts(&hung);
    let link = net.upload(&src);
    drop(frozen);
    let link = link.unwrap();
    let manifest = manifest_of(&net, &link).unwrap();
    for id in manifest.hosts() {
        let peer = bs58::encode(id).into_string();
        let i = net.host_index(&peer).unwrap();
        assert!(!hung.contains(&i), "a shard was placed on hung host {i}");
    }
    let out = net.scratch().join("out.bin");
    net.download(&link, &out).unwrap();
    assert_eq!(hash_file(&out).unwrap(), want);
}

//! Throughput of the simulated network (`btfs_core::engine::sim`): whole transfers per second
//! of CPU, so Guard and Escrow simulations of thousands of hosts can be sized.
//!
//! `cargo bench -p btfs-core --bench sim` prints a table (medians of 5 runs of each case). Cases:
//! an upload of a 5-slab object (4 KiB shards, 40 honest hosts), a download of it with a third of
//! the hosts faulty, and a repair of 10 lost shards per slab.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use btfs_core::engine::download::{Download, DownloadConfig};
use btfs_core::engine::repair::{Repair, RepairConfig};
use btfs_core::engine::sim::{Fault, SimNet};
use btfs_core::engine::upload::{Upload, UploadConfig, UploadReport};
use btfs_core::{Encoder, Layout, Manifest, ObjectHeader, ObjectKey};

const SHARD: u32 = 4096;
const LEN: usize = 5 * 10 * 4096 - 5000;

fn upload(seed: u64, plain: &[u8]) -> (SimNet, UploadReport) {
    let mut net = SimNet::new(seed, &[Fault::Honest; 40]);
    let layout = Layout::new(plain.len() as u64, SHARD).unwrap();
    let key = ObjectKey::from_bytes([7; 32]);
    let mut m = Upload::new(
        layout,
        key.clone(),
        ObjectHeader::default(),
        net.ids(),
        UploadConfig::default(),
        net.now,
    );
    let mut enc = Encoder::new(&key, layout);
    let (mut slabs, mut fed) = (Vec::new(), 0);
    loop {
        while let Some(s) = enc.next_slab().unwrap() {
            slabs.push(s);
        }
        if fed == plain.len() {
            break;
        }
        fed += enc.feed(&plain[fed..]).unwrap();
    }
    let mut slabs = slabs.into_iter().peekable();
    let mut done = false;
    net.run(&mut m, |m, _| {
        if done {
            return false;
        }
        if slabs.peek().is_none() {
            m.finish_input();
            done = true;
            return true;
        }
        if !m.wants_slab() {
            return false;
        }
        slabs.next().is_some_and(|s| m.push_slab(s).is_ok())
    })
    .unwrap();
    let r = m.take_result().unwrap().unwrap();
    (net, r)
}

fn time(mut f: impl FnMut(u64)) -> f64 {
    let mut rates = Vec::new();
    for round in 0..5u64 {
        let n = 200u64;
        let t = Instant::now();
        for i in 0..n {
            f(round * 1000 + i);
        }
        rates.push(n as f64 / t.elapsed().as_secs_f64());
    }
    rates.sort_by(f64::total_cmp);
    rates[2]
}

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    let plain: Vec<u8> = (0..LEN).map(|i| (i * 31 % 251) as u8).collect();
    let up = time(|seed| {
        upload(seed, &plain);
    });
    let down = time(|seed| {
        let (mut net, r) = upload(seed, &plain);
        let ids = net.ids();
        for (i, id) in ids.iter().enumerate() {
            if i % 3 == 0 {
                net.host_mut(*id).unwrap().fault =
                    [Fault::Hung, Fault::Corrupt, Fault::Dead][i % 9 / 3];
            }
        }
        let mut d = Download::new(r.link, ids, DownloadConfig::default(), net.now);
        net.run(&mut d, |d, _| d.poll_output().is_some()).unwrap();
        assert!(d.take_result().unwrap().is_ok());
    });
    let repair = time(|seed| {
        let (mut net, r) = upload(seed, &plain);
        let m = {
            let h = r.manifest_hosts[0];
            Manifest::decode(&net.host(h).unwrap().blobs[&r.link.manifest_id]).unwrap()
        };
        let lost: BTreeMap<u64, BTreeSet<usize>> = (0..m.layout().slab_count())
            .map(|s| (s, (0..10).map(|k| k * 3).collect()))
            .collect();
        for (&s, ks) in &lost {
            for &k in ks {
                let h = r.placement[s as usize][k];
                net.host_mut(h)
                    .unwrap()
                    .blobs
                    .remove(&m.slabs()[s as usize][k].root);
            }
        }
        let ids = net.ids();
        let mut rep = Repair::new(m, lost, ids, RepairConfig::default(), net.now).unwrap();
        net.run(&mut rep, |_, _| false).unwrap();
        assert!(rep.take_result().unwrap().is_ok());
    });
    println!(
        "| case (5 slabs of 4 KiB shards, 40 hosts) | transfers per second (median of 5 × 200) |"
    );
    println!("|---|---|");
    println!("| upload | {up:.0} |");
    println!("| upload + download, a third of hosts hung/corrupt/dead | {down:.0} |");
    println!("| upload + repair of 10 lost shards per slab | {repair:.0} |");
}

//! `Recommend` latency with 100,000 registered hosts, in-process (no network).
//!
//! Run: `cargo bench -p btfs-host --bench hub_recommend`. Prints p50/p99/max over 1,000 calls
//! for a few request shapes. Hosts get varied free space, prices, regions, /24 subnets, ages and
//! probe histories, so scores differ and some hosts are excluded (full, offline, too expensive).

use std::time::Instant;

use btfs_core::hub::{Prefs, RecommendRequest};
use btfs_core::signed::{HostAd, Signed};
use btfs_host::services::hub::registry::Registry;
use libp2p::identity::Keypair;

const HOSTS: usize = 100_000;
const CALLS: usize = 1_000;

fn xorshift(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

fn main() {
    let setup = Instant::now();
    let mut reg = Registry::new(HOSTS);
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let regions = ["eu", "us", "asia", "sa", "af"];
    for i in 0..HOSTS {
        let k = Keypair::generate_ed25519();
        let peer = k.public().to_peer_id();
        let r = xorshift(&mut rng);
        let ad = HostAd {
            peer_id: peer.to_base58(),
            addrs: vec![format!(
                "/ip4/10.{}.{}.{}/tcp/4001",
                (i >> 16) & 255,
                (i >> 8) & 255,
                i & 255
            )],
            capacity_bytes: 1 << 40,
            free_bytes: (r % 1000) << 30, // 0..1000 GiB; some are full
            price_per_gib_month: r % 2000,
            version: "0.1.0".into(),
            region: Some(regions[(r >> 20) as usize % regions.len()].into()),
            issued_at_ms: 1_000,
        };
        let s = Signed::sign(&ad, &k.clone().try_into_ed25519().expect("ed25519")).expect("sign");
        let first_seen = (r >> 32) % (200 * 86_400_000);
        reg.announce(
            s.verify().expect("verify"),
            s,
            peer,
            1_000 + first_seen,
            u64::MAX / 4,
        )
        .expect("announce");
        let online_ratio = (r >> 40) % 100;
        for p in 0..20 {
            let ok = (xorshift(&mut rng) % 100) < online_ratio.max(50) || p == 19 && i % 10 != 0;
            reg.record_probe(&peer, ok, 1_000 + first_seen + p);
        }
    }
    reg.refresh_all(300 * 86_400_000);
    println!(
        "setup: {HOSTS} hosts signed, verified and registered in {:.1} s",
        setup.elapsed().as_secs_f64()
    );

    let shapes: [(&str, RecommendRequest); 3] = [
        ("30 hosts, 1 MiB × 4", req(30, 1 << 20, 4, Prefs::default())),
        (
            "30 hosts, max price 500, region eu",
            req(
                30,
                1 << 20,
                4,
                Prefs {
                    max_price: Some(500),
                    region: Some("eu".into()),
                    ..Prefs::default()
                },
            ),
        ),
        (
            "300 hosts, 4 MiB × 100",
            req(300, 4 << 20, 100, Prefs::default()),
        ),
    ];
    println!();
    println!("| request | qualified | p50 ms | p99 ms | max ms |");
    println!("|---|---:|---:|---:|---:|");
    for (name, r) in &shapes {
        let mut lat = Vec::with_capacity(CALLS);
        let mut qualified = 0;
        for _ in 0..CALLS {
            let t = Instant::now();
            let rec = reg.recommend(r);
            lat.push(t.elapsed().as_secs_f64() * 1e3);
            assert_eq!(rec.hosts.len(), r.count as usize);
            qualified = rec.qualified;
        }
        lat.sort_by(f64::total_cmp);
        println!(
            "| {name} | {qualified} | {:.2} | {:.2} | {:.2} |",
            lat[CALLS / 2],
            lat[CALLS * 99 / 100],
            lat[CALLS - 1]
        );
    }
}

fn req(count: u32, shard_size: u64, shards_per_host: u64, prefs: Prefs) -> RecommendRequest {
    RecommendRequest {
        count,
        shard_size,
        shards_per_host,
        duration_days: 30,
        prefs,
    }
}

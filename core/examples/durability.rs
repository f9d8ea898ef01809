//! The Guard's durability simulation (model: `btfs_core::guard::durability`): 10,000 hosts,
//! 100,000 one-slab objects, one simulated year, for repair thresholds 20, 22, 24, 26 of 30
//! and permanent failure rates 1×, 10×, 100× and 1000× Storj's 0.00005435 per node per day.
//!
//! ```text
//! cargo run --release -p btfs-core --example durability [-- --seed N --epoch-hours H --quick]
//! ```
//!
//! `--quick`: 1,000 hosts, 10,000 objects (a fast look). Deterministic: the same arguments print
//! the same table.

use btfs_core::guard::durability::{simulate, DurabilityConfig, STORJ_DEATH_RATE};

fn main() {
    let mut args = std::env::args().skip(1);
    let mut base = DurabilityConfig::default();
    while let Some(a) = args.next() {
        let mut num = |name: &str| -> u64 {
            args.next().and_then(|v| v.parse().ok()).unwrap_or_else(|| {
                eprintln!("{name} takes a whole number");
                std::process::exit(2)
            })
        };
        match a.as_str() {
            "--seed" => base.seed = num("--seed"),
            "--epoch-hours" => base.epoch_hours = num("--epoch-hours") as u32,
            "--days" => base.days = num("--days") as u32,
            "--quick" => {
                base.hosts = 1_000;
                base.objects = 10_000;
            }
            other => {
                eprintln!(
                    "unknown argument {other}: use --seed N, --epoch-hours H, --days D, --quick"
                );
                std::process::exit(2)
            }
        }
    }
    println!(
        "{} hosts, {} objects (1 slab of 30 shards each), {} days, epoch {} h, seed {}; \
         transient outages: {}/day per host, back with {}/day",
        base.hosts,
        base.objects,
        base.days,
        base.epoch_hours,
        base.seed,
        base.offline_rate,
        base.return_rate
    );
    println!(
        "| death rate /host/day | threshold | objects lost | fewest shards alive | repairs | shards rebuilt | repair bytes / stored byte | audits /host/day | host deaths |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for mult in [1.0, 10.0, 100.0, 1000.0] {
        for threshold in [20, 22, 24, 26] {
            let cfg = DurabilityConfig {
                threshold,
                death_rate: STORJ_DEATH_RATE * mult,
                ..base
            };
            let r = simulate(&cfg);
            println!(
                "| {:.7} ({mult}×) | {threshold} | {} | {} | {} | {} | {:.3} | {:.0} | {} |",
                cfg.death_rate,
                r.objects_lost,
                r.min_alive,
                r.repairs,
                r.shards_rebuilt,
                r.repair_per_stored_byte,
                r.audits_per_host_per_day,
                r.deaths
            );
        }
    }
}

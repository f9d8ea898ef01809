//! A durability model of the Guard's repair policy: many hosts, many objects, a simulated
//! year, deterministic from a seed. Used by `core/examples/durability.rs` (the numbers in
//! `BENCHMARKS.md` and `docs/guard.md`) and, tiny, by a test.
//!
//! What is modelled, exactly:
//! - Objects are one slab of 30 shards (10 data + 20 parity) on 30 distinct hosts drawn
//!   uniformly; a repaired shard goes to a uniformly drawn *online* host holding nothing of
//!   the slab (what the engine's `Repair` does with Hub candidates).
//! - Time advances in epochs of `epoch_hours`. At the start of each epoch every host, with
//!   per-epoch probabilities from per-day rates: dies for good (its shards are gone; a fresh,
//!   empty host takes its place, so the network size stays constant), goes offline (keeps its
//!   shards) or, if offline, comes back.
//! - Audits: every watched shard is challenged once per epoch; a shard on an offline or dead
//!   host fails, on an online host passes (honest hosts only: lying or corrupting hosts fail
//!   like deleted shards, so they are the same as deaths here). So a slab's health in an epoch
//!   is the number of its shards on online hosts: exactly what the [`super::Guard`] machine
//!   computes from those verdicts.
//! - The decision is [`super::slab_decision`], the function the machine uses: at
//!   [`SlabDecision::Repair`] every unhealthy shard (dead or offline holder) is rebuilt in the
//!   same epoch (repair is instant, never fails: no transfer is simulated); the offline
//!   holder's copy is dropped from the slab. [`SlabDecision::AtRisk`] slabs wait for hosts to
//!   come back.
//! - An object is lost when fewer than 10 of its shards are on hosts that are alive (online or
//!   offline).
//! - Bytes: a repair moves `(10 + lost) × shard size` (10 shards fetched, the lost ones put);
//!   reported per stored byte (30 shards per object) over the run.
//!
//! Not modelled: correlated failures (a data centre, an ISP), repair duration and failures,
//! hosts that come back after the Guard moved their shards (their copy is simply not counted),
//! and bandwidth limits of the Guard.

use serde::Serialize;

use super::{slab_decision, SlabDecision};
use crate::engine::sim::Rng;
use crate::layout::{DATA_SHARDS, TOTAL_SHARDS};

/// Storj's published permanent node failure rate, per node per day.
pub const STORJ_DEATH_RATE: f64 = 0.000_054_35;

/// Parameters of one run.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct DurabilityConfig {
    /// Hosts (constant: a dead host is replaced by an empty one).
    pub hosts: usize,
    /// Objects (one slab each).
    pub objects: usize,
    /// Simulated days.
    pub days: u32,
    /// Epoch length in hours (1..=168). Outages are drawn per epoch, so epochs longer than a
    /// day overstate the offline fraction: use 24 or less for numbers.
    pub epoch_hours: u32,
    /// Repair when healthy ≤ this.
    pub threshold: usize,
    /// Permanent failures per host per day.
    pub death_rate: f64,
    /// Probability per day that an online host goes offline (a transient outage).
    pub offline_rate: f64,
    /// Probability per day that an offline host comes back.
    pub return_rate: f64,
    /// Seed.
    pub seed: u64,
}

impl Default for DurabilityConfig {
    fn default() -> Self {
        Self {
            hosts: 10_000,
            objects: 100_000,
            days: 365,
            epoch_hours: 24,
            threshold: super::DEFAULT_REPAIR_THRESHOLD,
            death_rate: STORJ_DEATH_RATE,
            offline_rate: 0.02,
            return_rate: 0.5,
            seed: 1,
        }
    }
}

/// What one run observed.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq)]
pub struct DurabilityReport {
    /// Objects lost (fewer than 10 shards on living hosts).
    pub objects_lost: u64,
    /// Repairs (one per slab decision at `Repair`).
    pub repairs: u64,
    /// Shards rebuilt.
    pub shards_rebuilt: u64,
    /// Repair bytes (fetched + put) divided by stored bytes (30 shards per object).
    pub repair_per_stored_byte: f64,
    /// Audits (challenges) per host per day.
    pub audits_per_host_per_day: f64,
    /// Hosts that died.
    pub deaths: u64,
    /// The fewest shards on living hosts any surviving slab had at any epoch (the margin).
    pub min_alive: usize,
    /// Slab-epochs spent at [`SlabDecision::AtRisk`] (fewer than 10 online).
    pub at_risk_epochs: u64,
}

const NONE: u32 = u32::MAX;

struct Slab {
    holders: [u32; TOTAL_SHARDS],
    online: u8,
    alive: u8,
    lost: bool,
}

struct Host {
    online: bool,
    shards: Vec<(u32, u8)>,
}

fn unit(rng: &mut Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

/// Per-epoch probability of an event with per-day probability `p`.
fn per_epoch(p: f64, hours: u32) -> f64 {
    1.0 - (1.0 - p.clamp(0.0, 1.0)).powf(f64::from(hours) / 24.0)
}

/// Runs the model (see the module docs). `hosts` must be at least 31 (else nothing happens).
pub fn simulate(cfg: &DurabilityConfig) -> DurabilityReport {
    let mut rng = Rng::new(cfg.seed);
    let n = cfg.hosts;
    let mut report = DurabilityReport {
        min_alive: TOTAL_SHARDS,
        ..Default::default()
    };
    if n <= TOTAL_SHARDS || cfg.objects == 0 {
        return report;
    }
    let hours = cfg.epoch_hours.clamp(1, 168);
    let p_death = per_epoch(cfg.death_rate, hours);
    let p_off = per_epoch(cfg.offline_rate, hours);
    let p_back = per_epoch(cfg.return_rate, hours);
    let mut hosts: Vec<Host> = (0..n)
        .map(|_| Host {
            online: true,
            shards: Vec::new(),
        })
        .collect();
    let mut slabs: Vec<Slab> = Vec::with_capacity(cfg.objects);
    for s in 0..cfg.objects {
        let mut holders = [NONE; TOTAL_SHARDS];
        for k in 0..TOTAL_SHARDS {
            let h = loop {
                let h = rng.below(n as u64) as u32;
                if !holders[..k].contains(&h) {
                    break h;
                }
            };
            holders[k] = h;
            hosts[h as usize].shards.push((s as u32, k as u8));
        }
        slabs.push(Slab {
            holders,
            online: TOTAL_SHARDS as u8,
            alive: TOTAL_SHARDS as u8,
            lost: false,
        });
    }
    let epochs = u64::from(cfg.days) * 24 / u64::from(hours);
    let mut audits: u64 = 0;
    let mut moved_shards: u64 = 0;
    let mut dirty: Vec<u32> = Vec::new();
    for _ in 0..epochs {
        // Host events.
        for host in hosts.iter_mut() {
            if unit(&mut rng) < p_death {
                report.deaths += 1;
                for (s, k) in std::mem::take(&mut host.shards) {
                    let slab = &mut slabs[s as usize];
                    slab.holders[k as usize] = NONE;
                    slab.alive -= 1;
                    if host.online {
                        slab.online -= 1;
                    }
                    dirty.push(s);
                }
                host.online = true; // its replacement, empty
            } else if host.online && unit(&mut rng) < p_off {
                host.online = false;
                for &(s, _) in &host.shards {
                    slabs[s as usize].online -= 1;
                    dirty.push(s);
                }
            } else if !host.online && unit(&mut rng) < p_back {
                host.online = true;
                for &(s, _) in &host.shards {
                    slabs[s as usize].online += 1;
                    dirty.push(s);
                }
            }
        }
        // Audits of this epoch: every shard of every surviving slab (a shard on a dead or
        // offline host is challenged too, and fails).
        audits += (cfg.objects as u64 - report.objects_lost) * TOTAL_SHARDS as u64;
        // Decisions, for every slab whose health changed (and the ones at risk, which may be
        // repairable again).
        dirty.sort_unstable();
        dirty.dedup();
        for &s in &dirty {
            let slab = &mut slabs[s as usize];
            if slab.lost {
                continue;
            }
            if usize::from(slab.alive) < DATA_SHARDS {
                slab.lost = true;
                report.objects_lost += 1;
                for (k, &h) in slab.holders.iter().enumerate() {
                    if h != NONE {
                        let list = &mut hosts[h as usize].shards;
                        if let Some(i) = list.iter().position(|&x| x == (s, k as u8)) {
                            list.swap_remove(i);
                        }
                    }
                }
                continue;
            }
            report.min_alive = report.min_alive.min(usize::from(slab.alive));
            match slab_decision(usize::from(slab.online), cfg.threshold) {
                SlabDecision::Healthy => {}
                SlabDecision::AtRisk => report.at_risk_epochs += 1,
                SlabDecision::Repair => {
                    report.repairs += 1;
                    let mut lost = 0u64;
                    for k in 0..TOTAL_SHARDS {
                        let old = slab.holders[k];
                        if old != NONE && hosts[old as usize].online {
                            continue;
                        }
                        if old != NONE {
                            let list = &mut hosts[old as usize].shards;
                            if let Some(i) = list.iter().position(|&x| x == (s, k as u8)) {
                                list.swap_remove(i);
                            }
                            slab.alive -= 1;
                        }
                        let new = loop {
                            let h = rng.below(n as u64) as u32;
                            if hosts[h as usize].online && !slab.holders.contains(&h) {
                                break h;
                            }
                        };
                        slab.holders[k] = new;
                        hosts[new as usize].shards.push((s, k as u8));
                        slab.alive += 1;
                        slab.online += 1;
                        lost += 1;
                    }
                    report.shards_rebuilt += lost;
                    moved_shards += DATA_SHARDS as u64 + lost;
                }
            }
        }
        // At-risk slabs stay on the list: they are decided again next epoch.
        dirty.retain(|&s| {
            let slab = &slabs[s as usize];
            !slab.lost && usize::from(slab.online) < DATA_SHARDS
        });
    }
    let stored = (cfg.objects * TOTAL_SHARDS) as f64;
    report.repair_per_stored_byte = moved_shards as f64 / stored;
    report.audits_per_host_per_day = audits as f64 / (n as f64 * f64::from(cfg.days));
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn small(threshold: usize, death_rate: f64) -> DurabilityConfig {
        DurabilityConfig {
            hosts: 300,
            objects: 2_000,
            days: 90,
            threshold,
            death_rate,
            ..Default::default()
        }
    }

    #[test]
    fn deterministic_and_a_higher_threshold_repairs_more_with_more_margin() {
        let a = simulate(&small(20, 0.005));
        assert_eq!(a, simulate(&small(20, 0.005)));
        let b = simulate(&small(26, 0.005));
        assert!(b.repairs > a.repairs, "{a:?} {b:?}");
        assert!(b.repair_per_stored_byte > a.repair_per_stored_byte);
        assert!(b.min_alive >= a.min_alive);
        assert_eq!((a.objects_lost, b.objects_lost), (0, 0));
        // Every shard is audited once per daily epoch: 2000 × 30 / 300 per host.
        assert!((a.audits_per_host_per_day - 200.0).abs() < 5.0, "{a:?}");
    }

    #[test]
    fn without_repair_objects_are_lost() {
        // Threshold 10 repairs only at the last moment; hosts dying at 5 %/day for 90 days
        // with weekly audits lose objects that a threshold of 24 keeps.
        let weekly = |t| DurabilityConfig {
            epoch_hours: 168,
            ..small(t, 0.05)
        };
        let late = simulate(&weekly(10));
        let early = simulate(&weekly(24));
        assert!(late.objects_lost > early.objects_lost, "{late:?} {early:?}");
    }
}

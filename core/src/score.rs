//! Host scoring: a pure function from a host's measured facts and a tenant's request to a score
//! with its breakdown, so a browser can recompute and audit any ranking the Hub returns.
//!
//! Goals: every factor is in `[0, 1]`, documented here, and monotone in the direction users
//! expect (more uptime, space, age or audit success never lowers a score; a higher price, round
//! trip or failure count never raises it); a zero factor excludes the host, with the reason, so
//! "too few hosts" can say exactly why. Non-goals: signatures and measurement collection (the
//! Hub verifies signed `HostAd`s and probes hosts; Status reports uptime), choosing among hosts
//! (diversity across subnets/regions is the Hub's `Recommend`).
//!
//! ## The formula
//!
//! Like Sia renterd, the score is the **product** of sub-scores, so one bad factor cannot be
//! hidden by good ones; like BTFS's reputation, uptime weighs most (it enters with the steepest
//! curve). With `need = shard_size × shards` and `r = free_bytes / need`:
//!
//! | factor | value | zero (excluded) when |
//! |---|---|---|
//! | online | 1 | the host does not answer probes now |
//! | space | `1 − 0.5 / r` (0.5 when it just fits, 0.95 at 10× room) | `r < 1` (full) |
//! | uptime | `u⁴` for the fraction `u` of probes answered (0.99 → 0.96, 0.9 → 0.66) | `u = 0` |
//! | age | `1 − 0.5·e^(−days/30)` (new host 0.5, 30 days 0.82, 90 days 0.98) | never |
//! | proximity | `max(0.1, 1 / (1 + rtt_ms / 100))`; without an RTT: 1 same region, 0.7 other, 0.8 unknown | never |
//! | price | `1 − 0.5 · price / max_price` (free 1, at the maximum 0.5) | `price > max_price` |
//! | audits | `((passed + 1) / (passed + failed + 1))³` (no failures 1, 1 in 10 failed 0.75) | never |
//! | version | 1 at or above `preferred`, 0.9 between `minimum` and `preferred` | below `minimum` |
//!
//! `score = online · space · uptime · age · proximity · price · audits · version`.

/// A semantic version `(major, minor, patch)`.
pub type Version = (u16, u16, u16);

/// What is known about a host (from its signed ad, the Hub's probes and the Guard's audits).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct HostFacts {
    /// Answers probes right now.
    pub online: bool,
    /// Free space it advertises, in bytes.
    pub free_bytes: u64,
    /// Fraction of probes answered over the Hub's window, `0.0..=1.0`.
    pub uptime: f64,
    /// Days since the Hub first saw the host.
    pub age_days: f64,
    /// Round trip the tenant measured, in milliseconds, if any.
    pub rtt_ms: Option<f64>,
    /// Region the host declares, if any.
    pub region: Option<String>,
    /// Price per GiB-month, in the ledger's smallest unit.
    pub price: u64,
    /// Software version.
    pub version: Version,
    /// Storage proofs passed.
    pub audits_passed: u32,
    /// Storage proofs failed.
    pub audits_failed: u32,
}

/// What the tenant asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// Size of one shard, in bytes.
    pub shard_size: u64,
    /// Shards this host would hold.
    pub shards: u64,
    /// Highest acceptable price per GiB-month.
    pub max_price: u64,
    /// The tenant's region, if known.
    pub region: Option<String>,
    /// Versions below this are excluded.
    pub minimum_version: Version,
    /// Versions at or above this get full marks.
    pub preferred_version: Version,
}

/// Why a host scored zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Exclusion {
    /// Not answering probes.
    Offline,
    /// Not enough free space for the request.
    Full,
    /// Price above the tenant's maximum.
    TooExpensive,
    /// Software older than the minimum version.
    Outdated,
    /// Never answered a probe in the window.
    NoUptime,
}

/// A score and every factor behind it.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Score {
    /// The product of the factors.
    pub total: f64,
    /// Online factor.
    pub online: f64,
    /// Free-space factor.
    pub space: f64,
    /// Uptime factor.
    pub uptime: f64,
    /// Age factor.
    pub age: f64,
    /// Proximity factor.
    pub proximity: f64,
    /// Price factor.
    pub price: f64,
    /// Audit factor.
    pub audits: f64,
    /// Version factor.
    pub version: f64,
}

impl Score {
    /// Why the host is excluded, if it is (the first zero factor, in table order).
    pub fn exclusion(&self) -> Option<Exclusion> {
        if self.online == 0.0 {
            Some(Exclusion::Offline)
        } else if self.space == 0.0 {
            Some(Exclusion::Full)
        } else if self.uptime == 0.0 {
            Some(Exclusion::NoUptime)
        } else if self.price == 0.0 {
            Some(Exclusion::TooExpensive)
        } else if self.version == 0.0 {
            Some(Exclusion::Outdated)
        } else {
            None
        }
    }
}

/// Scores one host for one request (see the module docs for the formula).
pub fn score(host: &HostFacts, req: &Request) -> Score {
    let online = if host.online { 1.0 } else { 0.0 };
    let need = req.shard_size.saturating_mul(req.shards).max(1) as f64;
    let r = host.free_bytes as f64 / need;
    let space = if r < 1.0 { 0.0 } else { 1.0 - 0.5 / r };
    let uptime = host.uptime.clamp(0.0, 1.0).powi(4);
    let age = 1.0 - 0.5 * (-host.age_days.max(0.0) / 30.0).exp();
    let proximity = match (host.rtt_ms, &host.region, &req.region) {
        (Some(rtt), _, _) => (1.0 / (1.0 + rtt.max(0.0) / 100.0)).max(0.1),
        (None, Some(h), Some(t)) if h == t => 1.0,
        (None, Some(_), Some(_)) => 0.7,
        _ => 0.8,
    };
    let price = if host.price > req.max_price {
        0.0
    } else if req.max_price == 0 {
        1.0
    } else {
        1.0 - 0.5 * host.price as f64 / req.max_price as f64
    };
    let passed = f64::from(host.audits_passed);
    let audits = ((passed + 1.0) / (passed + f64::from(host.audits_failed) + 1.0)).powi(3);
    let version = if host.version < req.minimum_version {
        0.0
    } else if host.version < req.preferred_version {
        0.9
    } else {
        1.0
    };
    Score {
        total: online * space * uptime * age * proximity * price * audits * version,
        online,
        space,
        uptime,
        age,
        proximity,
        price,
        audits,
        version,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn request() -> Request {
        Request {
            shard_size: 1 << 20,
            shards: 100,
            max_price: 1000,
            region: Some("eu".into()),
            minimum_version: (0, 1, 0),
            preferred_version: (0, 2, 0),
        }
    }

    fn veteran() -> HostFacts {
        HostFacts {
            online: true,
            free_bytes: 1000 << 20, // 10× the 100 MiB needed
            uptime: 0.99,
            age_days: 90.0,
            rtt_ms: Some(20.0),
            region: Some("eu".into()),
            price: 200,
            version: (0, 2, 0),
            audits_passed: 99,
            audits_failed: 0,
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-3
    }

    /// Worked example 1: a 90-day-old, 99%-up host with 10× room, 20 ms away, at 1/5 of the
    /// maximum price, no failed audits, current version.
    #[test]
    fn worked_example_veteran_host() {
        let s = score(&veteran(), &request());
        assert!(close(s.space, 0.95));
        assert!(close(s.uptime, 0.9606)); // 0.99^4
        assert!(close(s.age, 0.9751)); // 1 - 0.5 e^-3
        assert!(close(s.proximity, 0.8333)); // 1 / 1.2
        assert!(close(s.price, 0.9));
        assert!(close(s.audits, 1.0));
        assert!(
            close(s.total, 0.95 * 0.9606 * 0.9751 * 0.8333 * 0.9),
            "{s:?}"
        );
        assert_eq!(s.exclusion(), None);
    }

    /// Worked example 2: a brand-new host, same region, no RTT yet, 90% up, older version,
    /// one failed audit out of ten: about a fifth of the veteran's score.
    #[test]
    fn worked_example_new_host() {
        let host = HostFacts {
            age_days: 0.0,
            uptime: 0.9,
            rtt_ms: None,
            version: (0, 1, 5),
            audits_passed: 9,
            audits_failed: 1,
            ..veteran()
        };
        let s = score(&host, &request());
        assert!(close(s.age, 0.5));
        assert!(close(s.proximity, 1.0));
        assert!(close(s.version, 0.9));
        assert!(close(s.audits, (10.0f64 / 11.0).powi(3)));
        let expected = 0.95 * 0.9f64.powi(4) * 0.5 * 1.0 * 0.9 * (10.0f64 / 11.0).powi(3) * 0.9;
        assert!(close(s.total, expected), "{} vs {expected}", s.total);
    }

    #[test]
    fn zero_factors_exclude_with_a_reason() {
        let req = request();
        let off = HostFacts {
            online: false,
            ..veteran()
        };
        assert_eq!(score(&off, &req).exclusion(), Some(Exclusion::Offline));
        let full = HostFacts {
            free_bytes: 99 << 20,
            ..veteran()
        };
        assert_eq!(score(&full, &req).exclusion(), Some(Exclusion::Full));
        let dear = HostFacts {
            price: 1001,
            ..veteran()
        };
        assert_eq!(
            score(&dear, &req).exclusion(),
            Some(Exclusion::TooExpensive)
        );
        let old = HostFacts {
            version: (0, 0, 9),
            ..veteran()
        };
        assert_eq!(score(&old, &req).exclusion(), Some(Exclusion::Outdated));
        for h in [off, full, dear, old] {
            assert_eq!(score(&h, &req).total, 0.0);
        }
    }

    /// More uptime, space, age or passed audits never lowers a score; a higher price, round
    /// trip or failure count never raises it — all else equal.
    #[test]
    fn monotonicity() {
        let req = request();
        let base = veteran();
        let steps = 50;
        let mut prev = -1.0;
        for i in 0..=steps {
            let s = score(
                &HostFacts {
                    uptime: f64::from(i) / f64::from(steps),
                    ..base.clone()
                },
                &req,
            )
            .total;
            assert!(s >= prev, "uptime step {i}");
            prev = s;
        }
        let mut prev = -1.0;
        for mib in (0..5000).step_by(50) {
            let s = score(
                &HostFacts {
                    free_bytes: mib << 20,
                    ..base.clone()
                },
                &req,
            )
            .total;
            assert!(s >= prev, "free {mib} MiB");
            prev = s;
        }
        let mut prev = -1.0;
        for days in 0..400 {
            let s = score(
                &HostFacts {
                    age_days: f64::from(days),
                    ..base.clone()
                },
                &req,
            )
            .total;
            assert!(s >= prev);
            prev = s;
        }
        let mut prev = f64::INFINITY;
        for price in (0..=1200).step_by(25) {
            let s = score(
                &HostFacts {
                    price,
                    ..base.clone()
                },
                &req,
            )
            .total;
            assert!(s <= prev, "price {price}");
            prev = s;
        }
        let mut prev = f64::INFINITY;
        for rtt in 0..1000 {
            let s = score(
                &HostFacts {
                    rtt_ms: Some(f64::from(rtt)),
                    ..base.clone()
                },
                &req,
            )
            .total;
            assert!(s <= prev);
            prev = s;
        }
        let mut prev = f64::INFINITY;
        for failed in 0..50 {
            let s = score(
                &HostFacts {
                    audits_failed: failed,
                    ..base.clone()
                },
                &req,
            )
            .total;
            assert!(s <= prev);
            prev = s;
        }
    }
}

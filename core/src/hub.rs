//! The Hub protocol's messages: hosts announce themselves, tenants ask for recommendations, the
//! Hub probes hosts. Shared by native nodes and the browser client, so both speak it the same way.
//!
//! Goals: one libp2p request-response protocol, [`PROTOCOL`], with JSON messages whose sizes are
//! bounded on both ends ([`MAX_REQUEST_BYTES`], [`MAX_RESPONSE_BYTES`], [`MAX_COUNT`]); every
//! recommended host comes with its signed ad and the measured facts behind its score, so a tenant
//! can recompute the score with [`crate::score::score`] and check the ad's signature.
//! Non-goals: transport (the libp2p codec lives with each node), Hub-side storage and probing.
//!
//! ## Messages (JSON, externally tagged enums)
//!
//! ```json
//! {"Announce": {"kind": "btfs/host-ad/1", "public_key": "...", "payload": "...", "signature": "..."}}
//! {"Recommend": {"count": 30, "shard_size": 1048576, "shards_per_host": 4, "duration_days": 30,
//!                "prefs": {"max_price": 1000, "region": "eu", "exclude": ["12D3KooW..."]}}}
//! {"Hosts": {"limit": 100}}
//! "Probe"
//! ```
//! Responses: `{"Accepted": {"next_announce_secs": 60}}`, `{"Refused": {"reason": "..."}}`,
//! `{"Recommendation": {...}}`, `{"Hosts": [...]}`, `"Pong"`, `{"Error": {"message": "..."}}`.

use serde::{Deserialize, Serialize};

use crate::score::{Exclusion, HostFacts, Score};
use crate::signed::Signed;

/// libp2p protocol name.
pub const PROTOCOL: &str = "/btfs/hub/1";
/// Largest request a node accepts.
pub const MAX_REQUEST_BYTES: u64 = 64 * 1024;
/// Largest response a node accepts.
pub const MAX_RESPONSE_BYTES: u64 = 4 * 1024 * 1024;
/// Most hosts one `Recommend` or `Hosts` request may ask for.
pub const MAX_COUNT: u32 = 1000;
/// Most peer ids a tenant may exclude in one request.
pub const MAX_EXCLUDE: usize = 1000;

/// A request to a Hub (or, for `Probe`, from the Hub to a host).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum HubRequest {
    /// A host's signed [`crate::signed::HostAd`].
    Announce(Signed),
    /// Rank hosts for an upload.
    Recommend(RecommendRequest),
    /// List registered hosts with their scores for a default request (best first).
    Hosts {
        /// At most this many (≤ [`MAX_COUNT`]).
        limit: u32,
    },
    /// Liveness probe; any node answers `Pong`.
    Probe,
}

/// What a tenant needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecommendRequest {
    /// Hosts wanted (≤ [`MAX_COUNT`]).
    pub count: u32,
    /// Shard size in bytes.
    pub shard_size: u64,
    /// Shards each host will hold.
    pub shards_per_host: u64,
    /// How long the data is to be stored, in days (for the cost estimate).
    pub duration_days: u32,
    /// Preferences.
    #[serde(default)]
    pub prefs: Prefs,
}

/// A tenant's preferences.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Prefs {
    /// Highest acceptable price per GiB-month (default: no limit).
    #[serde(default)]
    pub max_price: Option<u64>,
    /// The tenant's region, for proximity.
    #[serde(default)]
    pub region: Option<String>,
    /// Lowest acceptable version, `major.minor.patch`.
    #[serde(default)]
    pub min_version: Option<String>,
    /// Peer ids not to recommend (hosts that already failed this tenant).
    #[serde(default)]
    pub exclude: Vec<String>,
}

/// The Hub's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum HubResponse {
    /// The ad was stored.
    Accepted {
        /// Announce again within this many seconds.
        next_announce_secs: u64,
    },
    /// The ad was refused.
    Refused {
        /// Why (bad signature, wrong peer, stale, out of bounds).
        reason: String,
    },
    /// Ranked hosts.
    Recommendation(Recommendation),
    /// Registered hosts.
    Hosts(Vec<RankedHost>),
    /// Probe answer.
    Pong,
    /// The request could not be served.
    Error {
        /// What went wrong and what to do.
        message: String,
    },
}

/// Ranked hosts plus why others were left out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recommendation {
    /// Best first, all distinct.
    pub hosts: Vec<RankedHost>,
    /// Hosts registered with the Hub.
    pub registered: u64,
    /// Hosts that qualified (score > 0 and not excluded by the tenant).
    pub qualified: u64,
    /// Why the rest did not.
    pub excluded: ExclusionCounts,
}

impl Recommendation {
    /// A one-line explanation when fewer than `wanted` hosts qualified.
    pub fn shortfall(&self, wanted: usize) -> Option<String> {
        if self.hosts.len() >= wanted {
            return None;
        }
        let e = &self.excluded;
        Some(format!(
            "the Hub found only {} of the {wanted} hosts needed: {} registered, {} offline, {} full, {} over the price limit, {} outdated, {} not yet probed, {} excluded by you",
            self.hosts.len(),
            self.registered,
            e.offline,
            e.full,
            e.too_expensive,
            e.outdated,
            e.no_uptime,
            e.by_tenant
        ))
    }
}

/// Hosts left out, by reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ExclusionCounts {
    /// Not answering probes.
    pub offline: u64,
    /// Not enough free space.
    pub full: u64,
    /// Above the tenant's price limit.
    pub too_expensive: u64,
    /// Below the minimum version.
    pub outdated: u64,
    /// Never answered a probe yet.
    pub no_uptime: u64,
    /// In the tenant's `exclude` list.
    pub by_tenant: u64,
}

impl ExclusionCounts {
    /// Counts one exclusion.
    pub fn add(&mut self, e: Exclusion) {
        match e {
            Exclusion::Offline => self.offline += 1,
            Exclusion::Full => self.full += 1,
            Exclusion::TooExpensive => self.too_expensive += 1,
            Exclusion::Outdated => self.outdated += 1,
            Exclusion::NoUptime => self.no_uptime += 1,
        }
    }
}

/// One host with its score, the facts behind it, and its signed ad.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RankedHost {
    /// Peer id.
    pub peer_id: String,
    /// Dialable addresses (from the ad).
    pub addrs: Vec<String>,
    /// Score and breakdown.
    pub score: Score,
    /// Why the host scored zero, if it did.
    pub excluded: Option<Exclusion>,
    /// What the score was computed from.
    pub facts: HostFacts,
    /// Estimated cost of the request on this host, in the ledger's smallest unit.
    pub estimated_cost: u64,
    /// Subnet the Hub grouped the host in (for diversity).
    pub subnet: String,
    /// The host's signed ad, verifiable with [`Signed::verify`].
    pub ad: Signed,
}

/// Cost of storing `bytes` for `days` at `price` per GiB-month (rounded up).
pub fn cost(price_per_gib_month: u64, bytes: u64, days: u32) -> u64 {
    const GIB: u128 = 1 << 30;
    let num =
        (u128::from(price_per_gib_month) * u128::from(bytes)).saturating_mul(u128::from(days));
    let den = GIB * 30;
    u64::try_from(num.div_ceil(den)).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn cost_is_price_times_gib_months_rounded_up() {
        assert_eq!(cost(100, 1 << 30, 30), 100);
        assert_eq!(cost(100, 1 << 30, 15), 50);
        assert_eq!(cost(100, 1, 1), 1);
        assert_eq!(cost(0, 1 << 40, 365), 0);
        assert_eq!(cost(u64::MAX, u64::MAX, u32::MAX), u64::MAX);
    }

    #[test]
    fn messages_have_the_documented_json_shape() {
        assert_eq!(
            serde_json::to_string(&HubRequest::Probe).unwrap(),
            "\"Probe\""
        );
        let r: HubRequest = serde_json::from_str(
            r#"{"Recommend": {"count": 30, "shard_size": 1048576, "shards_per_host": 4, "duration_days": 30}}"#,
        )
        .unwrap();
        assert!(matches!(
            r,
            HubRequest::Recommend(RecommendRequest { count: 30, .. })
        ));
    }

    #[test]
    fn shortfall_names_every_reason() {
        let r = Recommendation {
            hosts: vec![],
            registered: 40,
            qualified: 0,
            excluded: ExclusionCounts {
                offline: 20,
                full: 10,
                too_expensive: 5,
                outdated: 1,
                no_uptime: 2,
                by_tenant: 2,
            },
        };
        let s = r.shortfall(30).unwrap();
        assert!(s.contains("only 0 of the 30"), "{s}");
        assert!(
            s.contains("20 offline") && s.contains("10 full") && s.contains("5 over the price")
        );
        assert!(r.shortfall(0).is_none());
    }
}

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
//! "Network"
//! ```
//! Responses: `{"Accepted": {"next_announce_secs": 60}}`, `{"Refused": {"reason": "..."}}`,
//! `{"Recommendation": {...}}`, `{"Hosts": [...]}`, `"Pong"`,
//! `{"Network": {"bootstrap": [...], "hosts": [], "services": {...}}}` (a
//! [`crate::network_file::NetworkFile`]), `{"Error": {"message": "..."}}`.
//!
//! `Probe` and `Network` are answered by every node, Hub or not: `Network` is how a node or a
//! tenant given only a bootstrap address learns the network's services (the node's answer is
//! what it runs itself plus what it was configured with or learned from its own bootstrap
//! nodes; see [`crate::network_file::merge_directories`]).

use serde::{Deserialize, Serialize};

use crate::score::{self, Exclusion, HostFacts, Score, Version};
use crate::signed::{self, HostAd, Signed};

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
    /// Which services (Hub, Status, Guard, Escrow) does this network have? Any node answers
    /// `Network` with what it knows, or `Error` when it knows none yet.
    Network,
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
    /// The services this node knows (its `hosts` are empty: hosts come from the Hub).
    Network(crate::network_file::NetworkFile),
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

/// The scoring request a [`RecommendRequest`] stands for; `preferred_version` is the Hub's
/// (and the checking tenant's) own version.
pub fn score_request(req: &RecommendRequest, preferred_version: Version) -> score::Request {
    score::Request {
        shard_size: req.shard_size,
        shards: req.shards_per_host.max(1),
        max_price: req.prefs.max_price.unwrap_or(u64::MAX),
        region: req.prefs.region.clone(),
        minimum_version: req
            .prefs
            .min_version
            .as_deref()
            .and_then(signed::parse_version)
            .unwrap_or((0, 0, 0)),
        preferred_version,
    }
}

/// A recommended host that passed [`check_recommendation`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedHost {
    /// Peer id (base58), the signer of the host's ad.
    pub peer_id: String,
    /// Addresses from the signed ad.
    pub addrs: Vec<String>,
}

/// What a tenant checks before trusting a Hub's answer: at least `need` hosts; every host's ad
/// verifies and matches the peer id and addresses listed; no host twice; every score is the one
/// core computes from the listed facts and is above zero; hosts come best first unless the
/// diversity rule reordered them (so the order is not checked). Errors say what was wrong.
pub fn check_recommendation(
    rec: &Recommendation,
    req: &RecommendRequest,
    preferred_version: Version,
    need: usize,
) -> Result<Vec<CheckedHost>, String> {
    if let Some(why) = rec.shortfall(need) {
        return Err(why);
    }
    let sreq = score_request(req, preferred_version);
    let mut seen = std::collections::HashSet::new();
    rec.hosts
        .iter()
        .map(|h| {
            let mine = check_host(h, &sreq)?;
            if mine.total <= 0.0 {
                return Err(format!(
                    "host {} is recommended with score {} but is excluded",
                    h.peer_id, h.score.total
                ));
            }
            if !seen.insert(h.peer_id.clone()) {
                return Err(format!("host {} recommended twice", h.peer_id));
            }
            Ok(CheckedHost {
                peer_id: h.peer_id.clone(),
                addrs: h.addrs.clone(),
            })
        })
        .collect()
}

/// One listed host checked by the reader: its ad verified and its score recomputed from the
/// listed facts (see [`check_host`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ListedHost {
    /// What the Hub said.
    #[serde(flatten)]
    pub host: RankedHost,
    /// The score and breakdown this reader computed from `host.facts`.
    pub recomputed: Score,
    /// Why the Hub's word cannot be trusted for this host; `None` when the ad verifies and
    /// the recomputed score equals the Hub's.
    pub problem: Option<String>,
}

/// The request [`HubRequest::Hosts`] scores against (what `btfs hosts` and the dApp page show):
/// one shard of the default size for 30 days, no price limit.
pub fn listing_request() -> RecommendRequest {
    RecommendRequest {
        count: 0,
        shard_size: crate::layout::DEFAULT_SHARD_SIZE.into(),
        shards_per_host: 1,
        duration_days: UPLOAD_DAYS,
        prefs: Prefs::default(),
    }
}

/// Checks a Hub's [`HubResponse::Hosts`] listing host by host, keeping every host: a page or a
/// CLI shows each one's breakdown as *it* computed it, and flags a host whose ad does not
/// verify or whose score the listed facts do not give.
pub fn check_listing(hosts: Vec<RankedHost>, preferred_version: Version) -> Vec<ListedHost> {
    let sreq = score_request(&listing_request(), preferred_version);
    hosts
        .into_iter()
        .map(|host| {
            let recomputed = score::score(&host.facts, &sreq);
            let problem = check_host(&host, &sreq).err();
            ListedHost {
                host,
                recomputed,
                problem,
            }
        })
        .collect()
}

/// One host of a Hub answer: its ad verifies and matches the peer id, addresses, free space and
/// price listed, and the listed score is the one core computes from the listed facts. Returns
/// that score.
pub fn check_host(h: &RankedHost, sreq: &score::Request) -> Result<Score, String> {
    let ad =
        h.ad.verify::<HostAd>()
            .map_err(|e| format!("host {}: its ad does not verify: {e}", h.peer_id))?;
    if ad.peer.to_base58() != h.peer_id || ad.body.addrs != h.addrs {
        return Err(format!(
            "host {}: peer id or addresses differ from its signed ad",
            h.peer_id
        ));
    }
    if ad.body.free_bytes != h.facts.free_bytes || ad.body.price_per_gib_month != h.facts.price {
        return Err(format!(
            "host {}: free space or price differ from its signed ad",
            h.peer_id
        ));
    }
    let mine = score::score(&h.facts, sreq);
    if (mine.total - h.score.total).abs() > 1e-9 {
        return Err(format!(
            "host {} has score {} but its facts give {}",
            h.peer_id, h.score.total, mine.total
        ));
    }
    Ok(mine)
}

/// Hosts a tenant asks the Hub for per upload: 30 per slab plus spares for hosts that fail.
pub const UPLOAD_HOSTS: u32 = 45;

/// Days an upload asks to be stored for (the cost estimate of a [`RecommendRequest`]).
pub const UPLOAD_DAYS: u32 = 30;

/// The [`RecommendRequest`] for an upload of `layout`: [`UPLOAD_HOSTS`] hosts able to hold its
/// largest shard, each taking its share of the 30 shards per slab plus the manifest's 30
/// copies. The CLI and the browser both ask with this.
pub fn upload_request(layout: &crate::Layout) -> RecommendRequest {
    let shard_size = layout
        .slabs()
        .map(|s| u64::from(s.shard_size))
        .max()
        .unwrap_or(64);
    let shards = (layout.slab_count() + 1) * crate::TOTAL_SHARDS as u64;
    RecommendRequest {
        count: UPLOAD_HOSTS,
        shard_size,
        shards_per_host: shards.div_ceil(u64::from(UPLOAD_HOSTS)),
        duration_days: UPLOAD_DAYS,
        prefs: Prefs::default(),
    }
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
    fn upload_request_sizes_hosts_and_shards_per_host() {
        // 100 MiB in 1 MiB shards: 11 slabs, (11 + 1) * 30 = 360 shards over 45 hosts -> 8.
        let layout = crate::Layout::new(100 << 20, 1 << 20).unwrap();
        assert_eq!(layout.slab_count(), 11);
        assert_eq!(
            upload_request(&layout),
            RecommendRequest {
                count: 45,
                shard_size: 1 << 20,
                shards_per_host: 8,
                duration_days: 30,
                prefs: Prefs::default(),
            }
        );
        // One small slab: its shard size, and (1 + 1) * 30 = 60 shards -> 2 per host.
        let small = crate::Layout::new(1000, 1 << 20).unwrap();
        let req = upload_request(&small);
        let shard = small.slabs().next().unwrap().shard_size;
        assert_eq!((req.shard_size, req.shards_per_host), (u64::from(shard), 2));
        assert!(req.count <= MAX_COUNT);
    }

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

    fn ranked(seed: u8, price: u64) -> (RankedHost, RecommendRequest) {
        use libp2p_identity::ed25519;
        let k = ed25519::Keypair::from(ed25519::SecretKey::try_from_bytes([seed; 32]).unwrap());
        let peer = libp2p_identity::PublicKey::from(k.public())
            .to_peer_id()
            .to_base58();
        let ad = crate::signed::HostAd {
            peer_id: peer.clone(),
            addrs: vec!["/ip4/127.0.0.1/tcp/1".into()],
            capacity_bytes: 1 << 30,
            free_bytes: 1 << 30,
            price_per_gib_month: price,
            version: "0.1.0".into(),
            region: None,
            issued_at_ms: 1,
        };
        let req = RecommendRequest {
            count: 1,
            shard_size: 1 << 20,
            shards_per_host: 1,
            duration_days: 30,
            prefs: Prefs::default(),
        };
        let facts = HostFacts {
            online: true,
            free_bytes: 1 << 30,
            uptime: 1.0,
            age_days: 1.0,
            rtt_ms: None,
            region: None,
            price,
            version: (0, 1, 0),
            audits_passed: 0,
            audits_failed: 0,
        };
        let score = score::score(&facts, &score_request(&req, (0, 1, 0)));
        let host = RankedHost {
            peer_id: peer,
            addrs: ad.addrs.clone(),
            score,
            excluded: None,
            facts,
            estimated_cost: 0,
            subnet: "127.0.0.0/24".into(),
            ad: Signed::sign(&ad, &k).unwrap(),
        };
        (host, req)
    }

    fn rec(hosts: Vec<RankedHost>) -> Recommendation {
        Recommendation {
            registered: hosts.len() as u64,
            qualified: hosts.len() as u64,
            hosts,
            excluded: ExclusionCounts::default(),
        }
    }

    #[test]
    fn tenants_catch_inflated_scores_forged_facts_and_duplicates() {
        let (h, req) = ranked(1, 10);
        let (h2, _) = ranked(2, 10);
        assert_eq!(
            check_recommendation(&rec(vec![h.clone(), h2.clone()]), &req, (0, 1, 0), 2)
                .unwrap()
                .len(),
            2
        );
        let mut inflated = h.clone();
        inflated.score.total *= 2.0;
        let e = check_recommendation(&rec(vec![inflated]), &req, (0, 1, 0), 1).unwrap_err();
        assert!(e.contains("has score"), "{e}");
        let mut forged = h.clone();
        forged.facts.price = 0;
        let e = check_recommendation(&rec(vec![forged]), &req, (0, 1, 0), 1).unwrap_err();
        assert!(e.contains("differ from its signed ad"), "{e}");
        let e =
            check_recommendation(&rec(vec![h.clone(), h.clone()]), &req, (0, 1, 0), 2).unwrap_err();
        assert!(e.contains("twice"), "{e}");
        let e = check_recommendation(&rec(vec![h]), &req, (0, 1, 0), 30).unwrap_err();
        assert!(e.contains("only 1 of the 30"), "{e}");
    }

    /// A listing keeps every host and flags the ones whose Hub word does not check out, each
    /// with the breakdown the reader computed itself.
    #[test]
    fn a_listing_is_checked_host_by_host() {
        let (honest, _) = ranked(1, 10);
        let (mut inflated, _) = ranked(2, 10);
        inflated.score.total = 1.0;
        let (mut forged, _) = ranked(3, 10);
        forged.facts.free_bytes = 1 << 40;
        let (mut offline, _) = ranked(4, 10);
        offline.facts.online = false;
        offline.score = score::score(
            &offline.facts,
            &score_request(&listing_request(), (0, 1, 0)),
        );
        let listed = check_listing(vec![honest.clone(), inflated, forged, offline], (0, 1, 0));
        assert_eq!(listed.len(), 4);
        assert_eq!(listed[0].problem, None);
        assert_eq!(listed[0].recomputed, honest.score);
        assert!(listed[1].problem.as_deref().unwrap().contains("facts give"));
        assert!(listed[1].recomputed.total < 1.0);
        assert!(listed[2].problem.as_deref().unwrap().contains("signed ad"));
        // Offline scores zero, which a listing shows rather than rejects.
        assert_eq!(
            (listed[3].problem.as_ref(), listed[3].recomputed.total),
            (None, 0.0)
        );
        let json = serde_json::to_value(&listed[0]).unwrap();
        assert!(json["peer_id"].is_string() && json["recomputed"]["total"].is_f64());
        assert!(json["problem"].is_null() && json["facts"]["online"] == true);
    }
}

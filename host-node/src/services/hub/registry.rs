//! The Hub's in-memory registry: verified ads, probe history, and `Recommend`.
//!
//! Pure data structure (no IO, time passed in), so it is unit-tested directly and benchmarked
//! with 100,000 hosts. [`super::db`] persists it; [`super::server`] feeds it.
//!
//! Recommend: every host is scored with [`btfs_core::score::score`] against the tenant's request
//! (facts are cached per host and refreshed on every probe, so scoring allocates nothing); hosts
//! scoring zero are counted by reason. Of the qualified hosts, the best `8·count + 64` by score
//! are ranked for diversity: each host gets its occurrence number within its subnet (IPv4 /24,
//! IPv6 /48) and within its region, in score order, and the result is sorted by (subnet
//! occurrence, region occurrence, score). So the first host of every subnet comes before any
//! subnet's second host, and so on; with a single subnet (a loopback devnet) this is plain score
//! order.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use btfs_core::hub::{ExclusionCounts, RankedHost, RecommendRequest, Recommendation};
use btfs_core::score::{self, HostFacts, Request, Version};
use btfs_core::signed::{self, HostAd, Signed, SignedError, Verified};
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use serde::{Deserialize, Serialize};

/// Probe results remembered per host (a bit each).
pub const PROBE_WINDOW: u32 = 128;
/// A host that has not announced for this long is forgotten, unless the Hub is told otherwise
/// ([`Registry::with_forget_after`]): a day, while hosts announce every few minutes.
pub const DEFAULT_FORGET_AFTER_MS: u64 = 86_400_000;
const DAY_MS: f64 = 86_400_000.0;

/// This build's version, the one the Hub prefers.
pub fn own_version() -> Version {
    signed::parse_version(env!("CARGO_PKG_VERSION")).unwrap_or((0, 0, 0))
}

/// What the database keeps per host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostRecord {
    /// The last accepted signed ad.
    pub ad: Signed,
    /// When the Hub first saw the host (unix ms).
    pub first_seen_ms: u64,
    /// `issued_at_ms` of the last accepted ad.
    pub last_ad_ms: u64,
    /// Last [`PROBE_WINDOW`] probe results, newest in bit 0 (as two u64 halves: low, high).
    pub probes: [u64; 2],
    /// Probes recorded in `probes` (≤ [`PROBE_WINDOW`]).
    pub probe_count: u32,
    /// Whether one of the last two probes was answered (two misses in a row mean offline).
    pub online: bool,
    /// When the last probe finished (unix ms).
    pub last_probe_ms: u64,
    /// Storage proofs passed (from the Guard).
    pub audits_passed: u32,
    /// Storage proofs failed.
    pub audits_failed: u32,
}

impl HostRecord {
    fn bits(&self) -> u128 {
        u128::from(self.probes[0]) | (u128::from(self.probes[1]) << 64)
    }

    fn set_bits(&mut self, b: u128) {
        self.probes = [b as u64, (b >> 64) as u64];
    }

    /// Fraction of remembered probes answered (0 before the first probe).
    pub fn uptime(&self) -> f64 {
        if self.probe_count == 0 {
            return 0.0;
        }
        let mask = if self.probe_count >= PROBE_WINDOW {
            u128::MAX
        } else {
            (1u128 << self.probe_count) - 1
        };
        f64::from((self.bits() & mask).count_ones()) / f64::from(self.probe_count)
    }
}

struct Entry {
    peer: PeerId,
    record: HostRecord,
    body: HostAd,
    addrs: Vec<Multiaddr>,
    subnet: String,
    facts: HostFacts,
    dirty: bool,
}

impl Entry {
    fn refresh(&mut self, now_ms: u64) {
        let r = &self.record;
        self.facts = HostFacts {
            // Not yet probed is not "offline": such a host is excluded for having no uptime.
            online: r.online || r.probe_count == 0,
            free_bytes: self.body.free_bytes,
            uptime: r.uptime(),
            age_days: now_ms.saturating_sub(r.first_seen_ms) as f64 / DAY_MS,
            rtt_ms: None,
            region: self.body.region.clone(),
            price: self.body.price_per_gib_month,
            version: signed::parse_version(&self.body.version).unwrap_or((0, 0, 0)),
            audits_passed: r.audits_passed,
            audits_failed: r.audits_failed,
        };
    }

    fn ranked(&self, score: score::Score, cost: u64) -> RankedHost {
        RankedHost {
            peer_id: self.body.peer_id.clone(),
            addrs: self.body.addrs.clone(),
            score,
            excluded: score.exclusion(),
            facts: self.facts.clone(),
            estimated_cost: cost,
            subnet: self.subnet.clone(),
            ad: self.record.ad.clone(),
        }
    }
}

/// Why an announce was refused.
#[derive(Debug, thiserror::Error)]
pub enum AnnounceError {
    /// Verification failed.
    #[error(transparent)]
    Signed(#[from] SignedError),
    /// The ad was sent over a connection from another peer (relaying someone else's ad is
    /// allowed only when the ad itself verifies, which it did; this variant is for a signer
    /// mismatch with the connection).
    #[error("the ad is signed by {signer} but was sent by {sender}; hosts announce themselves")]
    NotSender {
        /// Signer.
        signer: String,
        /// Connection peer.
        sender: String,
    },
    /// An address does not parse.
    #[error("address {0:?} is not a valid multiaddr")]
    Address(String),
    /// The registry is full.
    #[error("the Hub's registry is full ({0} hosts)")]
    Full(usize),
}

/// Status admits a report when the Hub registry holds a verified ad for its signer (see
/// [`crate::services::status::admission`]).
impl crate::services::status::KnownHosts for std::sync::Mutex<Registry> {
    fn advertised_capacity(&self, peer: &PeerId) -> Option<u64> {
        self.lock()
            .unwrap_or_else(|p| p.into_inner())
            .advertised_capacity(peer)
    }
}

/// Verified hosts and their history.
pub struct Registry {
    entries: Vec<Entry>,
    index: HashMap<PeerId, usize>,
    max_hosts: usize,
    forget_after_ms: u64,
}

/// The subnet a host is grouped in: the first IP address's /24 (IPv4) or /48 (IPv6), else the
/// first DNS name, else "unknown".
pub fn subnet_of(addrs: &[Multiaddr]) -> String {
    for a in addrs {
        for p in a.iter() {
            match p {
                Protocol::Ip4(ip) => {
                    let o = ip.octets();
                    return format!("{}.{}.{}.0/24", o[0], o[1], o[2]);
                }
                Protocol::Ip6(ip) => {
                    let s = ip.segments();
                    return format!("{:x}:{:x}:{:x}::/48", s[0], s[1], s[2]);
                }
                Protocol::Dns(n) | Protocol::Dns4(n) | Protocol::Dns6(n) => return n.to_string(),
                _ => {}
            }
        }
    }
    "unknown".into()
}

/// Whether an address is a loopback IP (useful to reject public-network ads later).
pub fn is_loopback(a: &Multiaddr) -> bool {
    a.iter().any(|p| match p {
        Protocol::Ip4(ip) => IpAddr::from(ip).is_loopback(),
        Protocol::Ip6(ip) => IpAddr::from(ip).is_loopback(),
        _ => false,
    })
}

pub use btfs_core::hub::listing_request;

fn score_request(req: &RecommendRequest) -> Request {
    btfs_core::hub::score_request(req, own_version())
}

impl Registry {
    /// An empty registry holding at most `max_hosts`, forgetting hosts silent for
    /// [`DEFAULT_FORGET_AFTER_MS`].
    pub fn new(max_hosts: usize) -> Self {
        Self {
            entries: Vec::new(),
            index: HashMap::new(),
            max_hosts,
            forget_after_ms: DEFAULT_FORGET_AFTER_MS,
        }
    }

    /// Forgets hosts that have not announced for `ms` instead ([`Registry::expire`]).
    pub fn with_forget_after(mut self, ms: u64) -> Self {
        self.forget_after_ms = ms;
        self
    }

    /// Whether a host with this record has been silent too long at `now_ms`: its last accepted
    /// ad was issued more than `forget_after` ago. (An ad's time is the host's clock, which the
    /// Hub checked against its own, within `max_skew`, when it accepted the ad.)
    pub fn is_expired(&self, record: &HostRecord, now_ms: u64) -> bool {
        now_ms.saturating_sub(record.last_ad_ms) > self.forget_after_ms
    }

    /// Forgets every host silent for longer than `forget_after` at `now_ms` (see
    /// [`Registry::is_expired`]) and returns them, so the caller deletes them from the
    /// database. A forgotten host that announces again is a new host: first seen anew, no
    /// probe history, and it counts against its address's new-host budget.
    pub fn expire(&mut self, now_ms: u64) -> Vec<PeerId> {
        let mut gone = Vec::new();
        let mut i = 0;
        while i < self.entries.len() {
            if !self.is_expired(&self.entries[i].record, now_ms) {
                i += 1;
                continue;
            }
            let e = self.entries.swap_remove(i);
            self.index.remove(&e.peer);
            if let Some(moved) = self.entries.get(i) {
                self.index.insert(moved.peer, i);
            }
            gone.push(e.peer);
        }
        gone
    }

    /// Hosts registered.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no host is registered.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Loads a record from the database (already verified when it was accepted; verified again
    /// here so a tampered database cannot inject hosts).
    pub fn load(&mut self, record: HostRecord, now_ms: u64) -> Result<PeerId, AnnounceError> {
        let v: Verified<HostAd> = record.ad.verify()?;
        self.upsert(v, record, now_ms)
    }

    /// Accepts a verified ad sent by `sender` at `now_ms`; returns whether the host is new.
    pub fn announce(
        &mut self,
        ad: Verified<HostAd>,
        raw: Signed,
        sender: PeerId,
        now_ms: u64,
        max_skew_ms: u64,
    ) -> Result<bool, AnnounceError> {
        if ad.peer != sender {
            return Err(AnnounceError::NotSender {
                signer: ad.peer.to_base58(),
                sender: sender.to_base58(),
            });
        }
        let last = self
            .index
            .get(&ad.peer)
            .map(|&i| self.entries[i].record.last_ad_ms);
        signed::check_fresh(ad.body.issued_at_ms, now_ms, max_skew_ms, last)?;
        let new = last.is_none();
        let record = match self.index.get(&ad.peer) {
            Some(&i) => {
                let mut r = self.entries[i].record.clone();
                r.ad = raw;
                r.last_ad_ms = ad.body.issued_at_ms;
                r
            }
            None => HostRecord {
                ad: raw,
                first_seen_ms: now_ms,
                last_ad_ms: ad.body.issued_at_ms,
                probes: [0, 0],
                probe_count: 0,
                online: false,
                last_probe_ms: 0,
                audits_passed: 0,
                audits_failed: 0,
            },
        };
        self.upsert(ad, record, now_ms)?;
        Ok(new)
    }

    fn upsert(
        &mut self,
        ad: Verified<HostAd>,
        record: HostRecord,
        now_ms: u64,
    ) -> Result<PeerId, AnnounceError> {
        let addrs = ad
            .body
            .addrs
            .iter()
            .map(|a| a.parse().map_err(|_| AnnounceError::Address(a.clone())))
            .collect::<Result<Vec<Multiaddr>, _>>()?;
        let peer = ad.peer;
        let mut entry = Entry {
            peer,
            subnet: subnet_of(&addrs),
            addrs,
            record,
            body: ad.body,
            facts: HostFacts {
                online: false,
                free_bytes: 0,
                uptime: 0.0,
                age_days: 0.0,
                rtt_ms: None,
                region: None,
                price: 0,
                version: (0, 0, 0),
                audits_passed: 0,
                audits_failed: 0,
            },
            dirty: true,
        };
        entry.refresh(now_ms);
        match self.index.get(&peer) {
            Some(&i) => self.entries[i] = entry,
            None => {
                if self.entries.len() >= self.max_hosts {
                    return Err(AnnounceError::Full(self.max_hosts));
                }
                self.index.insert(peer, self.entries.len());
                self.entries.push(entry);
            }
        }
        Ok(peer)
    }

    /// Records a probe result.
    pub fn record_probe(&mut self, peer: &PeerId, ok: bool, now_ms: u64) {
        let Some(&i) = self.index.get(peer) else {
            return;
        };
        let e = &mut self.entries[i];
        let r = &mut e.record;
        r.set_bits((r.bits() << 1) | u128::from(ok));
        r.probe_count = (r.probe_count + 1).min(PROBE_WINDOW);
        // One missed probe is forgiven (a busy host, a lost packet); two in a row mean offline,
        // so a dead host leaves recommendations within two probe intervals.
        r.online = ok || (r.probe_count > 1 && r.bits() & 0b10 != 0);
        r.last_probe_ms = now_ms;
        e.dirty = true;
        e.refresh(now_ms);
    }

    /// Records a storage-proof result from the Guard.
    pub fn record_audit(&mut self, peer: &PeerId, passed: bool, now_ms: u64) {
        if let Some(&i) = self.index.get(peer) {
            let e = &mut self.entries[i];
            if passed {
                e.record.audits_passed = e.record.audits_passed.saturating_add(1);
            } else {
                e.record.audits_failed = e.record.audits_failed.saturating_add(1);
            }
            e.dirty = true;
            e.refresh(now_ms);
        }
    }

    /// Refreshes every host's cached facts (ages move with the clock).
    pub fn refresh_all(&mut self, now_ms: u64) {
        for e in &mut self.entries {
            e.refresh(now_ms);
        }
    }

    /// Who to probe: every host with its addresses.
    pub fn probe_targets(&self) -> Vec<(PeerId, Vec<Multiaddr>)> {
        self.entries
            .iter()
            .map(|e| (e.peer, e.addrs.clone()))
            .collect()
    }

    /// The capacity in the host's current (verified) ad, if registered.
    pub fn advertised_capacity(&self, peer: &PeerId) -> Option<u64> {
        self.index
            .get(peer)
            .map(|&i| self.entries[i].body.capacity_bytes)
    }

    /// The addresses of one host, if registered.
    pub fn probe_targets_of(&self, peer: &PeerId) -> Option<Vec<Multiaddr>> {
        self.index.get(peer).map(|&i| self.entries[i].addrs.clone())
    }

    /// Records changed since the last call (for the database).
    pub fn take_dirty(&mut self) -> Vec<(PeerId, HostRecord)> {
        self.entries
            .iter_mut()
            .filter(|e| e.dirty)
            .map(|e| {
                e.dirty = false;
                (e.peer, e.record.clone())
            })
            .collect()
    }

    /// Ranks hosts for `req` (see the module docs).
    pub fn recommend(&self, req: &RecommendRequest) -> Recommendation {
        let sreq = score_request(req);
        let exclude: HashSet<&str> = req
            .prefs
            .exclude
            .iter()
            .take(btfs_core::hub::MAX_EXCLUDE)
            .map(String::as_str)
            .collect();
        let mut excluded = ExclusionCounts::default();
        let mut candidates: Vec<(f64, usize)> = Vec::new();
        for (i, e) in self.entries.iter().enumerate() {
            if !exclude.is_empty() && exclude.contains(e.body.peer_id.as_str()) {
                excluded.by_tenant += 1;
                continue;
            }
            let s = score::score(&e.facts, &sreq);
            match s.exclusion() {
                Some(why) => excluded.add(why),
                None => candidates.push((s.total, i)),
            }
        }
        let qualified = candidates.len() as u64;
        let count = (req.count.min(btfs_core::hub::MAX_COUNT)) as usize;
        let by_score = |a: &(f64, usize), b: &(f64, usize)| {
            b.0.total_cmp(&a.0)
                .then_with(|| self.entries[a.1].peer.cmp(&self.entries[b.1].peer))
        };
        let pool = (count * 8 + 64).min(candidates.len());
        if pool < candidates.len() && pool > 0 {
            candidates.select_nth_unstable_by(pool - 1, by_score);
            candidates.truncate(pool);
        }
        candidates.sort_unstable_by(by_score);
        // Occurrence numbers within subnet and region, in score order.
        let mut subnet_seen: HashMap<&str, u32> = HashMap::new();
        let mut region_seen: HashMap<Option<&str>, u32> = HashMap::new();
        let mut ranked: Vec<(u32, u32, usize, usize)> = candidates
            .iter()
            .enumerate()
            .map(|(rank, &(_, i))| {
                let e = &self.entries[i];
                let s = subnet_seen.entry(e.subnet.as_str()).or_default();
                let r = region_seen.entry(e.body.region.as_deref()).or_default();
                let key = (*s, *r, rank, i);
                *s += 1;
                *r += 1;
                key
            })
            .collect();
        ranked.sort_unstable();
        let bytes = req.shard_size.saturating_mul(req.shards_per_host.max(1));
        let hosts = ranked
            .into_iter()
            .take(count)
            .map(|(_, _, _, i)| {
                let e = &self.entries[i];
                let s = score::score(&e.facts, &sreq);
                let cost =
                    btfs_core::hub::cost(e.body.price_per_gib_month, bytes, req.duration_days);
                e.ranked(s, cost)
            })
            .collect();
        Recommendation {
            hosts,
            registered: self.entries.len() as u64,
            qualified,
            excluded,
        }
    }

    /// Every host scored against [`listing_request`], best first, at most `limit`.
    pub fn hosts(&self, limit: usize) -> Vec<RankedHost> {
        let req = listing_request();
        let sreq = score_request(&req);
        let mut all: Vec<(score::Score, usize)> = self
            .entries
            .iter()
            .enumerate()
            .map(|(i, e)| (score::score(&e.facts, &sreq), i))
            .collect();
        all.sort_by(|a, b| {
            b.0.total
                .total_cmp(&a.0.total)
                .then_with(|| self.entries[a.1].peer.cmp(&self.entries[b.1].peer))
        });
        all.into_iter()
            .take(limit)
            .map(|(s, i)| {
                let e = &self.entries[i];
                let cost = btfs_core::hub::cost(
                    e.body.price_per_gib_month,
                    req.shard_size,
                    req.duration_days,
                );
                e.ranked(s, cost)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::identity::Keypair;

    fn host(free: u64, price: u64, ip: [u8; 4]) -> (Keypair, Verified<HostAd>, Signed) {
        let k = Keypair::generate_ed25519();
        let ad = HostAd {
            peer_id: k.public().to_peer_id().to_base58(),
            addrs: vec![format!(
                "/ip4/{}.{}.{}.{}/tcp/4001",
                ip[0], ip[1], ip[2], ip[3]
            )],
            capacity_bytes: 1 << 40,
            free_bytes: free,
            price_per_gib_month: price,
            version: env!("CARGO_PKG_VERSION").into(),
            region: None,
            issued_at_ms: 1_000,
        };
        let ed = k.clone().try_into_ed25519().unwrap();
        let s = Signed::sign(&ad, &ed).unwrap();
        (k, s.verify().unwrap(), s)
    }

    fn add(r: &mut Registry, h: &(Keypair, Verified<HostAd>, Signed)) -> PeerId {
        let peer = h.0.public().to_peer_id();
        r.announce(h.1.clone(), h.2.clone(), peer, 1_000, 60_000)
            .unwrap();
        peer
    }

    fn request(count: u32) -> RecommendRequest {
        RecommendRequest {
            count,
            shard_size: 1 << 20,
            shards_per_host: 10,
            duration_days: 30,
            prefs: Default::default(),
        }
    }

    #[test]
    fn never_recommends_offline_full_or_duplicate_hosts() {
        let mut r = Registry::new(100);
        let mut peers = Vec::new();
        for i in 0..20u8 {
            // Hosts 0..5 are full (5 MiB free, 10 MiB needed).
            let free = if i < 5 { 5 << 20 } else { 1 << 30 };
            peers.push(add(&mut r, &host(free, 10, [10, 0, i, 1])));
        }
        for (i, p) in peers.iter().enumerate() {
            // Hosts 5..8 never answer.
            r.record_probe(p, !(5..8).contains(&i), 2_000);
            r.record_probe(p, !(5..8).contains(&i), 3_000);
        }
        let rec = r.recommend(&request(30));
        assert_eq!(rec.registered, 20);
        assert_eq!(rec.qualified, 12);
        assert_eq!(rec.excluded.full, 5);
        assert_eq!(rec.excluded.offline, 3);
        assert_eq!(rec.hosts.len(), 12);
        let distinct: HashSet<&str> = rec.hosts.iter().map(|h| h.peer_id.as_str()).collect();
        assert_eq!(distinct.len(), 12, "a host was recommended twice");
        for h in &rec.hosts {
            let i = peers
                .iter()
                .position(|p| p.to_base58() == h.peer_id)
                .unwrap();
            assert!(i >= 8, "host {i} is full or offline but was recommended");
            assert!(h.score.total > 0.0 && h.excluded.is_none());
        }
        let why = rec.shortfall(30).unwrap();
        assert!(why.contains("3 offline") && why.contains("5 full"), "{why}");
    }

    #[test]
    fn a_host_that_stops_answering_drops_out_and_comes_back() {
        let mut r = Registry::new(10);
        let p = add(&mut r, &host(1 << 30, 10, [10, 0, 0, 1]));
        assert_eq!(r.recommend(&request(1)).excluded.no_uptime, 1);
        r.record_probe(&p, true, 2_000);
        assert_eq!(r.recommend(&request(1)).hosts.len(), 1);
        // One miss is forgiven, two in a row are not.
        r.record_probe(&p, false, 3_000);
        assert_eq!(r.recommend(&request(1)).hosts.len(), 1);
        r.record_probe(&p, false, 4_000);
        let rec = r.recommend(&request(1));
        assert_eq!((rec.hosts.len(), rec.excluded.offline), (0, 1));
        r.record_probe(&p, true, 5_000);
        let rec = r.recommend(&request(1));
        assert_eq!(rec.hosts.len(), 1);
        // Uptime remembers the outage: 2 of 4 probes answered.
        assert!((rec.hosts[0].facts.uptime - 0.5).abs() < 1e-9);
    }

    #[test]
    fn spreads_across_subnets_before_reusing_one() {
        let mut r = Registry::new(100);
        // Eight cheap hosts in one /24, four pricier ones in four other /24s.
        for i in 0..8u8 {
            let p = add(&mut r, &host(1 << 30, 1, [10, 0, 0, i + 1]));
            r.record_probe(&p, true, 2_000);
        }
        for i in 0..4u8 {
            let p = add(&mut r, &host(1 << 30, 900, [10, 0, i + 1, 1]));
            r.record_probe(&p, true, 2_000);
        }
        let rec = r.recommend(&request(5));
        let subnets: HashSet<&str> = rec.hosts.iter().map(|h| h.subnet.as_str()).collect();
        assert_eq!(subnets.len(), 5, "{subnets:?}");
        // With more hosts wanted than subnets, the rest come by score.
        let rec = r.recommend(&request(12));
        assert_eq!(rec.hosts.len(), 12);
    }

    #[test]
    fn ranks_by_score_and_honours_price_limit_and_exclusions() {
        let mut r = Registry::new(100);
        let cheap = add(&mut r, &host(1 << 30, 10, [10, 0, 0, 1]));
        let dear = add(&mut r, &host(1 << 30, 500, [10, 0, 0, 2]));
        let too_dear = add(&mut r, &host(1 << 30, 2_000, [10, 0, 0, 3]));
        for p in [cheap, dear, too_dear] {
            r.record_probe(&p, true, 2_000);
        }
        let mut req = request(3);
        req.prefs.max_price = Some(1_000);
        let rec = r.recommend(&req);
        let order: Vec<String> = rec.hosts.iter().map(|h| h.peer_id.clone()).collect();
        assert_eq!(order, vec![cheap.to_base58(), dear.to_base58()]);
        assert_eq!(rec.excluded.too_expensive, 1);
        // The score in the answer is the one core computes from the listed facts.
        for h in &rec.hosts {
            assert_eq!(h.score, score::score(&h.facts, &score_request(&req)));
            h.ad.verify::<HostAd>().unwrap();
        }
        req.prefs.exclude = vec![cheap.to_base58()];
        let rec = r.recommend(&req);
        assert_eq!(rec.hosts.len(), 1);
        assert_eq!(rec.excluded.by_tenant, 1);
    }

    #[test]
    fn refuses_replays_relayed_ads_and_overflow() {
        let mut r = Registry::new(1);
        let h = host(1 << 30, 10, [10, 0, 0, 1]);
        let peer = add(&mut r, &h);
        // The same ad again is a replay.
        let e = r
            .announce(h.1.clone(), h.2.clone(), peer, 1_500, 60_000)
            .unwrap_err();
        assert!(
            matches!(e, AnnounceError::Signed(SignedError::Stale(_))),
            "{e}"
        );
        // Someone else sending a valid ad of this host is refused.
        let other = Keypair::generate_ed25519().public().to_peer_id();
        let e = r
            .announce(h.1.clone(), h.2.clone(), other, 1_500, 60_000)
            .unwrap_err();
        assert!(matches!(e, AnnounceError::NotSender { .. }), "{e}");
        // A second host does not fit.
        let h2 = host(1 << 30, 10, [10, 0, 0, 2]);
        let p2 = h2.0.public().to_peer_id();
        let e = r.announce(h2.1, h2.2, p2, 1_000, 60_000).unwrap_err();
        assert!(matches!(e, AnnounceError::Full(1)), "{e}");
    }

    #[test]
    fn uptime_window_counts_the_last_128_probes() {
        let mut r = Registry::new(1);
        let p = add(&mut r, &host(1 << 30, 10, [10, 0, 0, 1]));
        for _ in 0..200 {
            r.record_probe(&p, false, 2_000);
        }
        for _ in 0..64 {
            r.record_probe(&p, true, 2_000);
        }
        let rec = r.hosts(1);
        assert!((rec[0].facts.uptime - 0.5).abs() < 1e-9);
    }

    #[test]
    fn hosts_silent_for_forget_after_are_forgotten() {
        // Ads are issued at 1,000 (virtual ms); forget after 10 s without an announce.
        let mut r = Registry::new(10).with_forget_after(10_000);
        let a = host(1 << 30, 10, [10, 0, 0, 1]);
        let b = host(1 << 30, 10, [10, 0, 0, 2]);
        let c = host(1 << 30, 10, [10, 0, 0, 3]);
        let (pa, pb, pc) = (add(&mut r, &a), add(&mut r, &b), add(&mut r, &c));
        for p in [pa, pb, pc] {
            r.record_probe(&p, true, 2_000);
        }
        // b announces again at 8 s: its silence starts over. Probes do not count as announces.
        let mut ad = b.1.body.clone();
        ad.issued_at_ms = 8_000;
        let ed = b.0.clone().try_into_ed25519().unwrap();
        let signed = Signed::sign(&ad, &ed).unwrap();
        r.announce(signed.verify().unwrap(), signed, pb, 8_000, 60_000)
            .unwrap();
        r.record_probe(&pa, true, 10_500);
        assert!(
            r.expire(11_000).is_empty(),
            "10 s silent is not too long yet"
        );
        let gone = r.expire(11_001);
        let mut want = vec![pa, pc];
        want.sort();
        let mut gone_sorted = gone.clone();
        gone_sorted.sort();
        assert_eq!(gone_sorted, want);
        assert_eq!(r.len(), 1);
        // The survivor is still indexed right after the removals (swap_remove moved it).
        assert_eq!(r.advertised_capacity(&pb), Some(1 << 40));
        assert_eq!(r.advertised_capacity(&pa), None);
        assert_eq!(r.recommend(&request(3)).registered, 1);
        r.record_probe(&pb, true, 11_002);
        assert_eq!(r.recommend(&request(3)).hosts.len(), 1);
        assert!(r.take_dirty().iter().all(|(p, _)| *p == pb));
        // A stored record of a forgotten host is expired too (the Hub deletes it on open).
        let stored = HostRecord {
            ad: a.2.clone(),
            first_seen_ms: 1_000,
            last_ad_ms: 1_000,
            probes: [1, 0],
            probe_count: 1,
            online: true,
            last_probe_ms: 10_500,
            audits_passed: 0,
            audits_failed: 0,
        };
        assert!(!r.is_expired(&stored, 11_000));
        assert!(r.is_expired(&stored, 11_001));
        assert!(r.expire(18_000).is_empty());
        assert_eq!(r.expire(18_001), vec![pb]);
        assert!(r.is_empty());
        // Coming back after being forgotten: a new host, first seen anew.
        let mut ad = a.1.body.clone();
        ad.issued_at_ms = 20_000;
        let ed = a.0.clone().try_into_ed25519().unwrap();
        let signed = Signed::sign(&ad, &ed).unwrap();
        let new = r
            .announce(signed.verify().unwrap(), signed, pa, 20_000, 60_000)
            .unwrap();
        assert!(new);
        assert_eq!(r.take_dirty()[0].1.first_seen_ms, 20_000);
    }
}

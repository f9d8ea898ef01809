//! The Status service's per-peer table and its admission rules for reports.
//!
//! Pure data structure (no IO; time is passed in), so it is unit-tested directly and benchmarked
//! without sockets; [`super::state::StatusState`] wraps it with the write queue, group-commit
//! and sweep decisions, and [`super::server`]'s actor owns that. [`verify`] needs no lock: it decodes the envelope, asks [`Admission`]
//! whether the network knows the signer (before any signature check, so unknown keys are cheap
//! to refuse), then verifies the signature. [`Ingest::admit`] then applies the per-peer rules in
//! order:
//! 1. freshness and replay ([`check_fresh`] against the last accepted report);
//! 2. for a peer already tracked, the rate limit (one accepted report per `min_interval` of
//!    server time); for a new one, the peer cap (`max_peers`) and the new-identity budget of its
//!    source address ([`NewPeerBudget`]);
//! 3. plausibility ([`check_plausible`]): `used ≤ capacity ≤` the capacity the host advertised
//!    at the Hub and `≤ max_capacity_bytes`; `shards_held ≤ used_bytes + 1` (every blob but the
//!    empty one holds a byte); request counters never go backwards unless the node restarted,
//!    and grow at most `max_request_rate` per second; uptime never grows faster than the
//!    report clock, and a restart (uptime went down) must fit in the time since the last
//!    report.
//!
//! So one report moves the totals by at most one host's plausible figures, and the totals are
//! summed with saturating arithmetic. Peers silent for `forget_after_ms` are forgotten
//! ([`Ingest::expire`]; the server deletes them from the database too).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use btfs_core::signed::{check_fresh, Signed, SignedError, Signer, StatusReport, Verified};
use hyper::StatusCode;

use super::admission::{Admission, NewPeerBudget, Verdict};
use super::{HostStatus, PeerRecord, Sample, Totals};

/// Admission limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Peers remembered at most.
    pub max_peers: usize,
    /// Least time between two accepted reports of one peer, in ms.
    pub min_interval_ms: u64,
    /// Accepted clock difference between a report's `issued_at_ms` and ours, in ms.
    pub max_skew_ms: u64,
    /// A host is online if it reported within this many ms.
    pub online_window_ms: u64,
    /// A peer silent this long is forgotten (memory and database).
    pub forget_after_ms: u64,
    /// Largest capacity one host may report, whatever it advertised.
    pub max_capacity_bytes: u64,
    /// Most requests (served + failed) per second a host's counters may grow by.
    pub max_request_rate: u64,
    /// New peers one source address may introduce per window.
    pub new_peers_per_source: u32,
    /// The new-peer window, in ms.
    pub new_peer_window_ms: u64,
    /// Source addresses tracked for the new-peer budget at most.
    pub max_sources: usize,
}

impl Limits {
    /// Generous limits for unit tests and benches (no new-peer budget to speak of).
    pub fn for_tests() -> Self {
        Self {
            max_peers: 1_000_000,
            min_interval_ms: 1_000,
            max_skew_ms: 60_000,
            online_window_ms: 30_000,
            forget_after_ms: 7 * 86_400_000,
            max_capacity_bytes: 1 << 50,
            max_request_rate: 100_000,
            new_peers_per_source: u32::MAX,
            new_peer_window_ms: 60_000,
            max_sources: 65_536,
        }
    }
}

/// Why a report was refused; [`Rejection::status`] is the HTTP answer and
/// [`Rejection::reason`] the metrics label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// Not a JSON envelope, wrong kind, or a field out of bounds.
    Malformed(String),
    /// Payload over the size limit.
    TooLarge(String),
    /// The signature does not verify.
    BadSignature(String),
    /// The body names another peer than the signing key.
    WrongPeer(String),
    /// The network does not know the signer (no ad at the Hub, not on the allow-list).
    Unknown {
        /// The signer.
        peer_id: String,
        /// What to do.
        advice: &'static str,
    },
    /// Too old, from the future, or not newer than the stored report (a replay).
    Stale(String),
    /// Sent sooner than `min_interval` after the last accepted report.
    RateLimited {
        /// When the next report would be accepted, in ms from now.
        retry_after_ms: u64,
    },
    /// The source address introduced its share of new peers for this window.
    NewPeerLimit {
        /// When the window ends, in ms from now.
        retry_after_ms: u64,
        /// The limit per window.
        limit: u32,
    },
    /// A figure no real host can have (capacity over the advertised one, and the like).
    Implausible(String),
    /// A counter went backwards (or uptime jumped) without a restart.
    Backwards(String),
    /// The service already knows `max_peers` peers.
    Full {
        /// The limit.
        max_peers: usize,
    },
    /// The service is stopping.
    ShuttingDown,
    /// The database writer is behind: `queued` accepted reports wait to be committed already.
    Overloaded {
        /// Reports waiting (the limit, `write_queue`).
        queued: usize,
    },
}

impl Rejection {
    /// The HTTP status for this rejection.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Malformed(_) | Self::Stale(_) => StatusCode::BAD_REQUEST,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BadSignature(_) | Self::WrongPeer(_) => StatusCode::UNAUTHORIZED,
            Self::Unknown { .. } => StatusCode::FORBIDDEN,
            Self::Implausible(_) | Self::Backwards(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::RateLimited { .. } | Self::NewPeerLimit { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Full { .. } | Self::ShuttingDown | Self::Overloaded { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }

    /// `Retry-After` in ms, for the rejections that have one.
    pub fn retry_after_ms(&self) -> Option<u64> {
        match self {
            Self::RateLimited { retry_after_ms } | Self::NewPeerLimit { retry_after_ms, .. } => {
                Some(*retry_after_ms)
            }
            Self::Overloaded { .. } => Some(1_000),
            _ => None,
        }
    }

    /// Metrics label.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "malformed",
            Self::TooLarge(_) => "too_large",
            Self::BadSignature(_) => "bad_signature",
            Self::WrongPeer(_) => "wrong_peer",
            Self::Unknown { .. } => "unknown_peer",
            Self::Stale(_) => "stale",
            Self::RateLimited { .. } => "rate_limited",
            Self::NewPeerLimit { .. } => "new_peer_limit",
            Self::Implausible(_) => "implausible",
            Self::Backwards(_) => "counters_backwards",
            Self::Full { .. } => "full",
            Self::ShuttingDown => "shutting_down",
            Self::Overloaded { .. } => "overloaded",
        }
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Malformed(m) => write!(f, "malformed report: {m}"),
            Self::TooLarge(m) | Self::BadSignature(m) | Self::WrongPeer(m) => f.write_str(m),
            Self::Unknown { peer_id, advice } => {
                write!(f, "unknown host {peer_id}: {advice}")
            }
            Self::Stale(m) => write!(
                f,
                "{m} (reports must be newer than the last accepted one and within the allowed \
                 clock skew; check the node's clock)"
            ),
            Self::RateLimited { retry_after_ms } => write!(
                f,
                "too many reports from this peer; send the next one in {} s or later",
                retry_after_ms.div_ceil(1000)
            ),
            Self::NewPeerLimit {
                retry_after_ms,
                limit,
            } => write!(
                f,
                "this address already introduced {limit} new hosts recently; a new host from it \
                 is accepted again in {} s",
                retry_after_ms.div_ceil(1000)
            ),
            Self::Implausible(m) => write!(f, "implausible report: {m}"),
            Self::Backwards(m) => write!(
                f,
                "inconsistent with this host's previous report: {m} (counters only go back to \
                 zero when the node restarts, which its uptime must show)"
            ),
            Self::Full { max_peers } => write!(
                f,
                "this Status service already tracks {max_peers} peers and accepts no new ones; \
                 report to another Status service or ask the operator to raise the limit"
            ),
            Self::ShuttingDown => f.write_str("the Status service is shutting down; retry later"),
            Self::Overloaded { queued } => write!(
                f,
                "the Status service's database is behind ({queued} accepted reports wait to be \
                 saved); send this report again in 1 s"
            ),
        }
    }
}

impl From<SignedError> for Rejection {
    fn from(e: SignedError) -> Self {
        match e {
            SignedError::BadSignature => Self::BadSignature(e.to_string()),
            SignedError::WrongPeer { .. } => Self::WrongPeer(e.to_string()),
            SignedError::TooLarge(_) => Self::TooLarge(e.to_string()),
            SignedError::Stale(_) => Self::Stale(e.to_string()),
            other => Self::Malformed(other.to_string()),
        }
    }
}

/// Checks `r` against the bounds of the module docs; `prev` is the peer's last accepted report,
/// `advertised` the capacity of its Hub ad.
pub fn check_plausible(
    r: &StatusReport,
    prev: Option<&StatusReport>,
    advertised: Option<u64>,
    limits: &Limits,
) -> Result<(), Rejection> {
    let bad = |m: String| Err(Rejection::Implausible(m));
    if r.used_bytes > r.capacity_bytes {
        return bad(format!(
            "{} bytes used is more than the {} bytes capacity",
            r.used_bytes, r.capacity_bytes
        ));
    }
    if let Some(ad) = advertised {
        if r.capacity_bytes > ad {
            return bad(format!(
                "{} bytes capacity is more than the {ad} bytes this host advertised at the Hub \
                 (announce the new capacity first)",
                r.capacity_bytes
            ));
        }
    }
    if r.capacity_bytes > limits.max_capacity_bytes {
        return bad(format!(
            "{} bytes capacity is more than the {} bytes this Status service accepts per host",
            r.capacity_bytes, limits.max_capacity_bytes
        ));
    }
    if r.shards_held > r.used_bytes.saturating_add(1) {
        return bad(format!(
            "{} shards cannot fit in {} bytes",
            r.shards_held, r.used_bytes
        ));
    }
    let rate = limits.max_request_rate;
    let requests = r.requests_served.saturating_add(r.requests_failed);
    // Counters since the node started: bounded by its uptime (+1 s for rounding).
    let since_start = rate.saturating_mul(r.uptime_secs.saturating_add(1));
    let Some(p) = prev else {
        if requests > since_start {
            return bad(format!(
                "{requests} requests in {} s of uptime is more than {rate} per second",
                r.uptime_secs
            ));
        }
        return Ok(());
    };
    // The node's own clock between the two reports (positive: the replay check came first),
    // with slack for whole-second uptimes and clock adjustments.
    let dt_secs = r.issued_at_ms.saturating_sub(p.issued_at_ms) / 1000;
    let slack = 2 + dt_secs / 100;
    let back = |m: String| Err(Rejection::Backwards(m));
    if r.uptime_secs >= p.uptime_secs {
        let grew = r.uptime_secs - p.uptime_secs;
        if grew > dt_secs + slack {
            return back(format!(
                "uptime grew by {grew} s in {dt_secs} s between two reports"
            ));
        }
        if r.requests_served < p.requests_served || r.requests_failed < p.requests_failed {
            return back(format!(
                "requests served/failed went from {}/{} to {}/{} without a restart",
                p.requests_served, p.requests_failed, r.requests_served, r.requests_failed
            ));
        }
        let prev_requests = p.requests_served.saturating_add(p.requests_failed);
        let added = requests - prev_requests;
        if added > rate.saturating_mul(dt_secs + slack) {
            return bad(format!(
                "{added} requests in {dt_secs} s is more than {rate} per second"
            ));
        }
    } else {
        // A restart: the new uptime must fit in the time since the last report.
        if r.uptime_secs > dt_secs + slack {
            return back(format!(
                "uptime went from {} s to {} s (a restart) but only {dt_secs} s passed",
                p.uptime_secs, r.uptime_secs
            ));
        }
        if requests > since_start {
            return bad(format!(
                "{requests} requests in {} s of uptime is more than {rate} per second",
                r.uptime_secs
            ));
        }
    }
    Ok(())
}

/// A decoded and verified report, ready for [`Ingest::admit`].
#[derive(Debug, Clone)]
pub struct Checked {
    /// The envelope as received.
    pub signed: Signed,
    /// Its verified body.
    pub body: StatusReport,
    /// The capacity the host advertised at the Hub, if admission knows one.
    pub advertised: Option<u64>,
    /// The signer's decoded key when it was not cached yet: give it to [`KeyCache::put`] once
    /// the report is admitted (so refused reports never fill the cache).
    pub new_signer: Option<Arc<Signer>>,
}

/// Decoded signer keys by envelope `public_key`, so each peer's key is decompressed and its peer
/// id derived once rather than on every report (about a fifth of the cost of a verification).
/// Only keys of peers whose report was admitted are kept; bounded by emptying it when full.
pub struct KeyCache {
    map: Mutex<HashMap<String, Arc<Signer>>>,
    capacity: usize,
}

impl KeyCache {
    /// A cache of at most `capacity` keys.
    pub fn new(capacity: usize) -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
        }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Signer>>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn get(&self, public_key: &str) -> Option<Arc<Signer>> {
        self.map().get(public_key).cloned()
    }

    /// Remembers a signer (of an admitted report).
    pub fn put(&self, signer: Arc<Signer>) {
        let mut map = self.map();
        if map.len() >= self.capacity {
            map.clear();
        }
        map.insert(signer.public_key().to_string(), signer);
    }

    /// Keys cached.
    pub fn len(&self) -> usize {
        self.map().len()
    }

    /// Whether no key is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Decodes a JSON envelope, asks `admission` about its signer, then checks signature, kind,
/// bounds and that the body names the signer (no per-peer state; `keys` only saves work).
pub fn verify(json: &[u8], keys: &KeyCache, admission: &Admission) -> Result<Checked, Rejection> {
    let signed: Signed = serde_json::from_slice(json).map_err(|e| {
        Rejection::Malformed(format!(
            "the body must be a JSON signed envelope {{kind, public_key, payload, signature}}: {e}"
        ))
    })?;
    let (signer, cached) = match keys.get(&signed.public_key) {
        Some(s) => (s, true),
        None => (Arc::new(Signer::decode(&signed.public_key)?), false),
    };
    let advertised = match admission.check(&signer.peer()) {
        Verdict::Known { max_capacity } => max_capacity,
        Verdict::Unknown => {
            return Err(Rejection::Unknown {
                peer_id: signer.peer().to_base58(),
                advice: admission.advice(),
            })
        }
    };
    let Verified { body, .. } = signed.verify_by::<StatusReport>(&signer)?;
    Ok(Checked {
        signed,
        body,
        advertised,
        new_signer: (!cached).then_some(signer),
    })
}

/// What an accepted report changes: the peer's new record and its history sample.
#[derive(Debug, Clone)]
pub struct Accepted {
    /// The peer's record after this report.
    pub record: PeerRecord,
    /// The history sample for this report.
    pub sample: Sample,
}

/// What [`Ingest::load`] did with a stored record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Loaded {
    /// Restored.
    Kept,
    /// Silent for longer than `forget_after`: delete it.
    Expired,
    /// The network no longer knows the peer (or never did): delete it.
    Unknown,
}

struct PeerState {
    record: PeerRecord,
    body: StatusReport,
}

/// Latest report per peer, ordered by peer id (so listing pages needs no sort).
pub struct Ingest {
    peers: BTreeMap<String, PeerState>,
    limits: Limits,
    budget: NewPeerBudget,
}

impl Ingest {
    /// An empty state.
    pub fn new(limits: Limits) -> Self {
        Self {
            peers: BTreeMap::new(),
            budget: NewPeerBudget::new(
                limits.new_peers_per_source,
                limits.new_peer_window_ms,
                limits.max_sources,
            ),
            limits,
        }
    }

    /// Peers known.
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// Whether no peer is known.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// Source addresses with an open new-peer window.
    pub fn sources(&self) -> usize {
        self.budget.sources()
    }

    /// Restores a stored record (re-verified, and checked against `admission` and the
    /// forgetting time at `now_ms`); records over the peer cap are refused.
    pub fn load(
        &mut self,
        record: PeerRecord,
        admission: &Admission,
        now_ms: u64,
    ) -> Result<Loaded, Rejection> {
        let v = record.report.verify::<StatusReport>()?;
        if now_ms.saturating_sub(record.last_seen_ms) > self.limits.forget_after_ms {
            return Ok(Loaded::Expired);
        }
        if admission.check(&v.peer) == Verdict::Unknown {
            return Ok(Loaded::Unknown);
        }
        let body = v.body;
        if self.peers.len() >= self.limits.max_peers && !self.peers.contains_key(&body.peer_id) {
            return Err(Rejection::Full {
                max_peers: self.limits.max_peers,
            });
        }
        self.peers
            .insert(body.peer_id.clone(), PeerState { record, body });
        Ok(Loaded::Kept)
    }

    /// Applies freshness, replay, rate-limit, capacity, new-peer and plausibility rules to a
    /// verified report received from `source` at `now_ms`, and stores it in memory when
    /// accepted.
    pub fn admit(
        &mut self,
        report: Checked,
        source: IpAddr,
        now_ms: u64,
    ) -> Result<Accepted, Rejection> {
        let Checked {
            signed,
            body,
            advertised,
            ..
        } = report;
        let limits = self.limits;
        let known = self.peers.get(&body.peer_id);
        check_fresh(
            body.issued_at_ms,
            now_ms,
            limits.max_skew_ms,
            known.map(|p| p.body.issued_at_ms),
        )?;
        if let Some(p) = known {
            let next = p.record.last_seen_ms.saturating_add(limits.min_interval_ms);
            if now_ms < next {
                return Err(Rejection::RateLimited {
                    retry_after_ms: next - now_ms,
                });
            }
        } else {
            if self.peers.len() >= limits.max_peers {
                return Err(Rejection::Full {
                    max_peers: limits.max_peers,
                });
            }
            self.budget
                .check(source, now_ms)
                .map_err(|retry_after_ms| Rejection::NewPeerLimit {
                    retry_after_ms,
                    limit: limits.new_peers_per_source,
                })?;
        }
        check_plausible(&body, known.map(|p| &p.body), advertised, &limits)?;
        if known.is_none() {
            self.budget.spend(source, now_ms);
        }
        let sample = Sample::new(&body, now_ms);
        let state = self
            .peers
            .entry(body.peer_id.clone())
            .or_insert_with(|| PeerState {
                record: PeerRecord {
                    report: signed.clone(),
                    first_seen_ms: now_ms,
                    last_seen_ms: now_ms,
                    reports: 0,
                },
                body: body.clone(),
            });
        state.record.report = signed;
        state.record.last_seen_ms = now_ms;
        state.record.reports = state.record.reports.saturating_add(1);
        state.body = body;
        Ok(Accepted {
            record: state.record.clone(),
            sample,
        })
    }

    /// Forgets peers silent for longer than `forget_after` at `now_ms`; returns each with the
    /// `last_seen_ms` it had (the database deletes a record only if it is no newer).
    pub fn expire(&mut self, now_ms: u64) -> Vec<(String, u64)> {
        let forget = self.limits.forget_after_ms;
        let mut gone = Vec::new();
        self.peers.retain(|id, p| {
            let keep = now_ms.saturating_sub(p.record.last_seen_ms) <= forget;
            if !keep {
                gone.push((id.clone(), p.record.last_seen_ms));
            }
            keep
        });
        gone
    }

    fn host(&self, p: &PeerState, now_ms: u64) -> HostStatus {
        let b = &p.body;
        HostStatus {
            peer_id: b.peer_id.clone(),
            online: now_ms.saturating_sub(p.record.last_seen_ms) <= self.limits.online_window_ms,
            last_seen_ms: p.record.last_seen_ms,
            first_seen_ms: p.record.first_seen_ms,
            issued_at_ms: b.issued_at_ms,
            uptime_secs: b.uptime_secs,
            capacity_bytes: b.capacity_bytes,
            used_bytes: b.used_bytes,
            shards_held: b.shards_held,
            requests_served: b.requests_served,
            requests_failed: b.requests_failed,
            version: b.version.clone(),
            reports: p.record.reports,
        }
    }

    /// One peer's status.
    pub fn get(&self, peer_id: &str, now_ms: u64) -> Option<HostStatus> {
        self.peers.get(peer_id).map(|p| self.host(p, now_ms))
    }

    /// Network totals (sums are over online hosts: what the network offers right now).
    pub fn totals(&self, now_ms: u64) -> Totals {
        let mut t = Totals::default();
        for p in self.peers.values() {
            t.hosts += 1;
            if now_ms.saturating_sub(p.record.last_seen_ms) > self.limits.online_window_ms {
                continue;
            }
            let b = &p.body;
            t.online += 1;
            t.capacity_bytes = t.capacity_bytes.saturating_add(b.capacity_bytes);
            t.used_bytes = t.used_bytes.saturating_add(b.used_bytes);
            t.shards_held = t.shards_held.saturating_add(b.shards_held);
            t.requests_served = t.requests_served.saturating_add(b.requests_served);
            t.requests_failed = t.requests_failed.saturating_add(b.requests_failed);
        }
        t
    }

    /// Hosts sorted by peer id, `offset` hosts skipped, at most `limit` returned.
    pub fn hosts(&self, offset: usize, limit: usize, now_ms: u64) -> Vec<HostStatus> {
        self.peers
            .values()
            .skip(offset)
            .take(limit)
            .map(|p| self.host(p, now_ms))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::identity::{ed25519, PublicKey};

    fn key(seed: u8) -> ed25519::Keypair {
        ed25519::Keypair::from(ed25519::SecretKey::try_from_bytes([seed; 32]).unwrap())
    }

    fn report(k: &ed25519::Keypair, issued_at_ms: u64) -> StatusReport {
        StatusReport {
            peer_id: PublicKey::from(k.public()).to_peer_id().to_base58(),
            issued_at_ms,
            uptime_secs: 10,
            capacity_bytes: 100,
            used_bytes: 40,
            shards_held: 3,
            requests_served: 7,
            requests_failed: 1,
            version: "0.1.0".into(),
        }
    }

    fn wire(k: &ed25519::Keypair, issued_at_ms: u64) -> Vec<u8> {
        serde_json::to_vec(&Signed::sign(&report(k, issued_at_ms), k).unwrap()).unwrap()
    }

    const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    fn everyone() -> Admission {
        Admission::AllowList(Arc::new(
            (0..=40u8)
                .map(|s| PublicKey::from(key(s).public()).to_peer_id())
                .collect(),
        ))
    }

    fn check(w: &[u8]) -> Result<Checked, Rejection> {
        verify(w, &KeyCache::new(4), &everyone())
    }

    fn admit(i: &mut Ingest, c: Checked, now: u64) -> Result<Accepted, Rejection> {
        i.admit(c, LOCAL, now)
    }

    #[test]
    fn cached_keys_never_let_a_bad_report_through() {
        let keys = KeyCache::new(1);
        let (a, b) = (key(1), key(2));
        let remember = |c: Checked| {
            if let Some(s) = c.new_signer {
                keys.put(s);
            }
        };
        remember(verify(&wire(&a, 1_000), &keys, &everyone()).unwrap());
        assert!(verify(&wire(&a, 1_000), &keys, &everyone())
            .unwrap()
            .new_signer
            .is_none());
        // a's key is cached now; a tampered report under a's key still fails.
        let mut s = Signed::sign(&report(&a, 2_000), &a).unwrap();
        s.payload = s.payload.replace("\"shards_held\":", "\"shards_held\":1");
        let bad = serde_json::to_vec(&s).unwrap();
        assert!(matches!(
            verify(&bad, &keys, &everyone()),
            Err(Rejection::BadSignature(_))
        ));
        // A second peer evicts the first (capacity 1); both still verify.
        remember(verify(&wire(&b, 1_000), &keys, &everyone()).unwrap());
        assert!(verify(&wire(&a, 3_000), &keys, &everyone()).is_ok());
        assert_eq!(keys.map().len(), 1);
    }

    fn limits() -> Limits {
        Limits {
            max_peers: 2,
            min_interval_ms: 1_000,
            max_skew_ms: 60_000,
            online_window_ms: 30_000,
            ..Limits::for_tests()
        }
    }

    #[test]
    fn admits_then_applies_replay_rate_and_capacity_rules() {
        let mut ingest = Ingest::new(limits());
        let k = key(1);
        let now = 1_000_000;
        let a = admit(&mut ingest, check(&wire(&k, now)).unwrap(), now).unwrap();
        assert_eq!((a.record.reports, a.record.first_seen_ms), (1, now));
        // The same report again is a replay.
        let replay = admit(&mut ingest, check(&wire(&k, now)).unwrap(), now + 5_000);
        assert!(matches!(replay, Err(Rejection::Stale(_))), "{replay:?}");
        // A newer one too soon is rate-limited, with the wait.
        let soon = admit(&mut ingest, check(&wire(&k, now + 10)).unwrap(), now + 400);
        assert_eq!(
            soon.unwrap_err(),
            Rejection::RateLimited {
                retry_after_ms: 600
            }
        );
        let b = admit(
            &mut ingest,
            check(&wire(&k, now + 1_000)).unwrap(),
            now + 1_000,
        )
        .unwrap();
        assert_eq!((b.record.reports, b.record.first_seen_ms), (2, now));
        // Too old and from the future.
        let old = admit(
            &mut ingest,
            check(&wire(&key(2), now - 70_000)).unwrap(),
            now,
        );
        assert!(matches!(old, Err(Rejection::Stale(_))));
        let future = admit(
            &mut ingest,
            check(&wire(&key(2), now + 70_000)).unwrap(),
            now,
        );
        assert!(matches!(future, Err(Rejection::Stale(_))));
        // Capacity: two peers, the third is refused, known peers still report.
        admit(&mut ingest, check(&wire(&key(2), now)).unwrap(), now).unwrap();
        let full = admit(&mut ingest, check(&wire(&key(3), now)).unwrap(), now);
        assert_eq!(full.unwrap_err(), Rejection::Full { max_peers: 2 });
        admit(
            &mut ingest,
            check(&wire(&k, now + 5_000)).unwrap(),
            now + 5_000,
        )
        .unwrap();
        assert_eq!(ingest.len(), 2);
    }

    #[test]
    fn verify_sorts_failures_into_reasons() {
        let k = key(1);
        assert_eq!(
            check(b"not json").unwrap_err().status(),
            StatusCode::BAD_REQUEST
        );
        let mut s = Signed::sign(&report(&k, 5), &k).unwrap();
        s.payload = s.payload.replace("\"used_bytes\":40", "\"used_bytes\":41");
        let e = check(&serde_json::to_vec(&s).unwrap()).unwrap_err();
        assert_eq!(
            (e.reason(), e.status()),
            ("bad_signature", StatusCode::UNAUTHORIZED)
        );
        let mut body = report(&k, 5);
        body.peer_id = report(&key(2), 5).peer_id;
        let s = Signed::sign(&body, &k).unwrap();
        let e = check(&serde_json::to_vec(&s).unwrap()).unwrap_err();
        assert_eq!(e.reason(), "wrong_peer");
    }

    #[test]
    fn totals_count_online_hosts_only() {
        let mut ingest = Ingest::new(limits());
        let now = 1_000_000;
        admit(&mut ingest, check(&wire(&key(1), now)).unwrap(), now).unwrap();
        admit(
            &mut ingest,
            check(&wire(&key(2), now + 40_000)).unwrap(),
            now + 40_000,
        )
        .unwrap();
        let t = ingest.totals(now + 40_000);
        assert_eq!(
            (t.hosts, t.online, t.capacity_bytes, t.used_bytes),
            (2, 1, 100, 40)
        );
        let hosts = ingest.hosts(0, 10, now + 40_000);
        assert_eq!(hosts.len(), 2);
        assert_eq!(hosts.iter().filter(|h| h.online).count(), 1);
        assert!(hosts[0].peer_id < hosts[1].peer_id);
        assert_eq!(ingest.hosts(1, 10, now).len(), 1);
    }

    fn signed_with(
        k: &ed25519::Keypair,
        issued_at_ms: u64,
        f: impl FnOnce(&mut StatusReport),
    ) -> Checked {
        let mut r = report(k, issued_at_ms);
        f(&mut r);
        check(&serde_json::to_vec(&Signed::sign(&r, k).unwrap()).unwrap()).unwrap()
    }

    #[test]
    fn unknown_signers_are_refused_before_the_signature_is_checked() {
        let k = key(1);
        let nobody = Admission::default();
        let e = verify(&wire(&k, 5), &KeyCache::new(4), &nobody).unwrap_err();
        assert_eq!(
            (e.reason(), e.status()),
            ("unknown_peer", StatusCode::FORBIDDEN)
        );
        assert!(e.to_string().contains("operator"), "{e}");
        // Even with a broken signature the answer is "unknown": no verification was spent.
        let mut s = Signed::sign(&report(&k, 5), &k).unwrap();
        s.signature = "AAAA".into();
        let e = verify(&serde_json::to_vec(&s).unwrap(), &KeyCache::new(4), &nobody).unwrap_err();
        assert_eq!(e.reason(), "unknown_peer");
        // Refused keys are not cached.
        let keys = KeyCache::new(4);
        let _ = verify(&wire(&key(2), 5), &keys, &nobody);
        assert!(keys.is_empty());
    }

    #[test]
    fn implausible_figures_are_refused() {
        let l = Limits::for_tests();
        let now = 1_000_000;
        let k = key(1);
        let mut ingest = Ingest::new(l);
        // The 16 EiB report of issue #9: u64::MAX capacity.
        let huge = signed_with(&k, now, |r| r.capacity_bytes = u64::MAX);
        let e = admit(&mut ingest, huge, now).unwrap_err();
        assert_eq!(
            (e.reason(), e.status()),
            ("implausible", StatusCode::UNPROCESSABLE_ENTITY)
        );
        // More than the Hub ad says.
        let mut over = signed_with(&k, now, |_| {});
        over.advertised = Some(99);
        let e = admit(&mut ingest, over, now).unwrap_err();
        assert!(e.to_string().contains("advertised"), "{e}");
        // More shards than bytes.
        let e = admit(
            &mut ingest,
            signed_with(&k, now, |r| r.shards_held = 42),
            now,
        )
        .unwrap_err();
        assert_eq!(e.reason(), "implausible");
        // More requests than the uptime allows.
        let e = admit(
            &mut ingest,
            signed_with(&k, now, |r| r.requests_served = u64::MAX),
            now,
        )
        .unwrap_err();
        assert_eq!(e.reason(), "implausible");
        assert!(ingest.is_empty());
        let mut ok = signed_with(&k, now, |_| {});
        ok.advertised = Some(100);
        admit(&mut ingest, ok, now).unwrap();
        assert_eq!(ingest.totals(now).capacity_bytes, 100);
    }

    #[test]
    fn counters_never_go_backwards_without_a_restart() {
        let mut ingest = Ingest::new(Limits::for_tests());
        let (k, t0) = (key(1), 1_000_000);
        // uptime 100 s, 50 served, 5 failed.
        let base = |r: &mut StatusReport| {
            r.uptime_secs = 100;
            r.requests_served = 50;
            r.requests_failed = 5;
        };
        admit(&mut ingest, signed_with(&k, t0, base), t0).unwrap();
        let t1 = t0 + 10_000;
        // Served went down while uptime went up: refused.
        let e = admit(
            &mut ingest,
            signed_with(&k, t1, |r| {
                base(r);
                r.uptime_secs = 110;
                r.requests_served = 49;
            }),
            t1,
        )
        .unwrap_err();
        assert_eq!(
            (e.reason(), e.status()),
            ("counters_backwards", StatusCode::UNPROCESSABLE_ENTITY)
        );
        // Uptime jumped an hour in ten seconds: refused.
        let e = admit(
            &mut ingest,
            signed_with(&k, t1, |r| {
                base(r);
                r.uptime_secs = 3_700;
            }),
            t1,
        )
        .unwrap_err();
        assert_eq!(e.reason(), "counters_backwards");
        // A "restart" whose uptime does not fit in the 10 s since the last report: refused.
        let e = admit(
            &mut ingest,
            signed_with(&k, t1, |r| {
                r.uptime_secs = 60;
                r.requests_served = 0;
                r.requests_failed = 0;
            }),
            t1,
        )
        .unwrap_err();
        assert_eq!(e.reason(), "counters_backwards");
        // Counting on: fine.
        admit(
            &mut ingest,
            signed_with(&k, t1, |r| {
                base(r);
                r.uptime_secs = 110;
                r.requests_served = 70;
            }),
            t1,
        )
        .unwrap();
        // A real restart 5 s into the next 10 s: counters start over.
        let t2 = t1 + 10_000;
        admit(
            &mut ingest,
            signed_with(&k, t2, |r| {
                r.uptime_secs = 5;
                r.requests_served = 1;
                r.requests_failed = 0;
            }),
            t2,
        )
        .unwrap();
        assert_eq!(
            ingest
                .get(&report(&k, 0).peer_id, t2)
                .unwrap()
                .requests_served,
            1
        );
    }

    #[test]
    fn one_address_introduces_a_bounded_number_of_new_peers() {
        let l = Limits {
            new_peers_per_source: 3,
            new_peer_window_ms: 10_000,
            ..Limits::for_tests()
        };
        let mut ingest = Ingest::new(l);
        let now = 1_000_000;
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        for s in 1..=3 {
            ingest
                .admit(check(&wire(&key(s), now)).unwrap(), a, now)
                .unwrap();
        }
        let e = ingest
            .admit(check(&wire(&key(4), now)).unwrap(), a, now + 1)
            .unwrap_err();
        assert_eq!(
            (e.reason(), e.status()),
            ("new_peer_limit", StatusCode::TOO_MANY_REQUESTS)
        );
        assert_eq!(e.retry_after_ms(), Some(9_999));
        // Another address is not affected; known peers from `a` keep reporting.
        ingest
            .admit(check(&wire(&key(4), now)).unwrap(), b, now + 1)
            .unwrap();
        ingest
            .admit(check(&wire(&key(1), now + 2_000)).unwrap(), a, now + 2_000)
            .unwrap();
        // A refused report spends nothing; the next window admits again.
        ingest
            .admit(
                check(&wire(&key(5), now + 10_000)).unwrap(),
                a,
                now + 10_000,
            )
            .unwrap();
        assert_eq!(ingest.len(), 5);
    }

    #[test]
    fn silent_peers_are_forgotten() {
        let l = Limits {
            forget_after_ms: 5_000,
            ..Limits::for_tests()
        };
        let mut ingest = Ingest::new(l);
        let now = 1_000_000;
        admit(&mut ingest, check(&wire(&key(1), now)).unwrap(), now).unwrap();
        admit(
            &mut ingest,
            check(&wire(&key(2), now + 3_000)).unwrap(),
            now + 3_000,
        )
        .unwrap();
        assert!(ingest.expire(now + 5_000).is_empty());
        let gone = ingest.expire(now + 5_001);
        assert_eq!(gone, vec![(report(&key(1), 0).peer_id, now)]);
        assert_eq!(ingest.len(), 1);
        // A forgotten peer is a new peer again (first seen anew).
        let a = admit(
            &mut ingest,
            check(&wire(&key(1), now + 6_000)).unwrap(),
            now + 6_000,
        )
        .unwrap();
        assert_eq!((a.record.reports, a.record.first_seen_ms), (1, now + 6_000));
        // Loading: expired and unknown records are not restored.
        let mut fresh = Ingest::new(l);
        assert_eq!(
            fresh.load(a.record.clone(), &everyone(), now + 6_000),
            Ok(Loaded::Kept)
        );
        assert_eq!(
            fresh.load(a.record.clone(), &everyone(), now + 12_000),
            Ok(Loaded::Expired)
        );
        assert_eq!(
            fresh.load(a.record, &Admission::default(), now + 6_000),
            Ok(Loaded::Unknown)
        );
    }
}

//! The Status service's in-memory state and its admission rules for reports.
//!
//! Pure data structure (no IO; time is passed in), so it is unit-tested directly and benchmarked
//! without sockets. [`verify`] needs no state and runs outside any lock; [`Ingest::admit`] then
//! applies the per-peer rules in order: freshness and replay ([`check_fresh`] against the last
//! accepted report), rate limit (one accepted report per peer per `min_interval` of server time),
//! and the peer cap (a new peer is refused once `max_peers` are known).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use btfs_core::signed::{check_fresh, Signed, SignedError, Signer, StatusReport, Verified};
use hyper::StatusCode;

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
    /// Too old, from the future, or not newer than the stored report (a replay).
    Stale(String),
    /// Sent sooner than `min_interval` after the last accepted report.
    RateLimited {
        /// When the next report would be accepted, in ms from now.
        retry_after_ms: u64,
    },
    /// The service already knows `max_peers` peers.
    Full {
        /// The limit.
        max_peers: usize,
    },
    /// The service is stopping.
    ShuttingDown,
}

impl Rejection {
    /// The HTTP status for this rejection.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Malformed(_) | Self::Stale(_) => StatusCode::BAD_REQUEST,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BadSignature(_) | Self::WrongPeer(_) => StatusCode::UNAUTHORIZED,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Full { .. } | Self::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// Metrics label.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "malformed",
            Self::TooLarge(_) => "too_large",
            Self::BadSignature(_) => "bad_signature",
            Self::WrongPeer(_) => "wrong_peer",
            Self::Stale(_) => "stale",
            Self::RateLimited { .. } => "rate_limited",
            Self::Full { .. } => "full",
            Self::ShuttingDown => "shutting_down",
        }
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Malformed(m) => write!(f, "malformed report: {m}"),
            Self::TooLarge(m) | Self::BadSignature(m) | Self::WrongPeer(m) => f.write_str(m),
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
            Self::Full { max_peers } => write!(
                f,
                "this Status service already tracks {max_peers} peers and accepts no new ones; \
                 report to another Status service or ask the operator to raise the limit"
            ),
            Self::ShuttingDown => f.write_str("the Status service is shutting down; retry later"),
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

/// A decoded and verified report, ready for [`Ingest::admit`].
#[derive(Debug, Clone)]
pub struct Checked {
    /// The envelope as received.
    pub signed: Signed,
    /// Its verified body.
    pub body: StatusReport,
}

/// Decoded signer keys by envelope `public_key`, so each peer's key is decompressed and its peer
/// id derived once rather than on every report (about a fifth of the cost of a verification).
/// Only keys whose report verified are kept; bounded by emptying it when full.
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

    fn put(&self, signer: Arc<Signer>) {
        let mut map = self.map();
        if map.len() >= self.capacity {
            map.clear();
        }
        map.insert(signer.public_key().to_string(), signer);
    }
}

/// Decodes a JSON envelope and checks signature, kind, bounds and signer (no per-peer state;
/// `keys` only saves work).
pub fn verify(json: &[u8], keys: &KeyCache) -> Result<Checked, Rejection> {
    let signed: Signed = serde_json::from_slice(json).map_err(|e| {
        Rejection::Malformed(format!(
            "the body must be a JSON signed envelope {{kind, public_key, payload, signature}}: {e}"
        ))
    })?;
    let (signer, cached) = match keys.get(&signed.public_key) {
        Some(s) => (s, true),
        None => (Arc::new(Signer::decode(&signed.public_key)?), false),
    };
    let Verified { body, .. } = signed.verify_by::<StatusReport>(&signer)?;
    if !cached {
        keys.put(signer);
    }
    Ok(Checked { signed, body })
}

/// What an accepted report changes: the peer's new record and its history sample.
#[derive(Debug, Clone)]
pub struct Accepted {
    /// The peer's record after this report.
    pub record: PeerRecord,
    /// The history sample for this report.
    pub sample: Sample,
}

struct PeerState {
    record: PeerRecord,
    body: StatusReport,
}

/// Latest report per peer, ordered by peer id (so listing pages needs no sort).
pub struct Ingest {
    peers: BTreeMap<String, PeerState>,
    limits: Limits,
}

impl Ingest {
    /// An empty state.
    pub fn new(limits: Limits) -> Self {
        Self {
            peers: BTreeMap::new(),
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

    /// Restores a stored record (re-verified); records over the peer cap are refused.
    pub fn load(&mut self, record: PeerRecord) -> Result<(), Rejection> {
        let body = record.report.verify::<StatusReport>()?.body;
        if self.peers.len() >= self.limits.max_peers && !self.peers.contains_key(&body.peer_id) {
            return Err(Rejection::Full {
                max_peers: self.limits.max_peers,
            });
        }
        self.peers
            .insert(body.peer_id.clone(), PeerState { record, body });
        Ok(())
    }

    /// Applies freshness, replay, rate-limit and capacity rules to a verified report received
    /// at `now_ms`, and stores it in memory when accepted.
    pub fn admit(&mut self, report: Checked, now_ms: u64) -> Result<Accepted, Rejection> {
        let Checked { signed, body } = report;
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
        } else if self.peers.len() >= limits.max_peers {
            return Err(Rejection::Full {
                max_peers: limits.max_peers,
            });
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
        state.record.reports += 1;
        state.body = body;
        Ok(Accepted {
            record: state.record.clone(),
            sample,
        })
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

    fn check(w: &[u8]) -> Result<Checked, Rejection> {
        verify(w, &KeyCache::new(4))
    }

    #[test]
    fn cached_keys_never_let_a_bad_report_through() {
        let keys = KeyCache::new(1);
        let (a, b) = (key(1), key(2));
        assert!(verify(&wire(&a, 1_000), &keys).is_ok());
        // a's key is cached now; a tampered report under a's key still fails.
        let mut s = Signed::sign(&report(&a, 2_000), &a).unwrap();
        s.payload = s.payload.replace("\"shards_held\":", "\"shards_held\":1");
        let bad = serde_json::to_vec(&s).unwrap();
        assert!(matches!(
            verify(&bad, &keys),
            Err(Rejection::BadSignature(_))
        ));
        // A second peer evicts the first (capacity 1); both still verify.
        assert!(verify(&wire(&b, 1_000), &keys).is_ok());
        assert!(verify(&wire(&a, 3_000), &keys).is_ok());
        assert_eq!(keys.map().len(), 1);
    }

    fn limits() -> Limits {
        Limits {
            max_peers: 2,
            min_interval_ms: 1_000,
            max_skew_ms: 60_000,
            online_window_ms: 30_000,
        }
    }

    #[test]
    fn admits_then_applies_replay_rate_and_capacity_rules() {
        let mut ingest = Ingest::new(limits());
        let k = key(1);
        let now = 1_000_000;
        let a = ingest.admit(check(&wire(&k, now)).unwrap(), now).unwrap();
        assert_eq!((a.record.reports, a.record.first_seen_ms), (1, now));
        // The same report again is a replay.
        let replay = ingest.admit(check(&wire(&k, now)).unwrap(), now + 5_000);
        assert!(matches!(replay, Err(Rejection::Stale(_))), "{replay:?}");
        // A newer one too soon is rate-limited, with the wait.
        let soon = ingest.admit(check(&wire(&k, now + 10)).unwrap(), now + 400);
        assert_eq!(
            soon.unwrap_err(),
            Rejection::RateLimited {
                retry_after_ms: 600
            }
        );
        let b = ingest
            .admit(check(&wire(&k, now + 1_000)).unwrap(), now + 1_000)
            .unwrap();
        assert_eq!((b.record.reports, b.record.first_seen_ms), (2, now));
        // Too old and from the future.
        let old = ingest.admit(check(&wire(&key(2), now - 70_000)).unwrap(), now);
        assert!(matches!(old, Err(Rejection::Stale(_))));
        let future = ingest.admit(check(&wire(&key(2), now + 70_000)).unwrap(), now);
        assert!(matches!(future, Err(Rejection::Stale(_))));
        // Capacity: two peers, the third is refused, known peers still report.
        ingest
            .admit(check(&wire(&key(2), now)).unwrap(), now)
            .unwrap();
        let full = ingest.admit(check(&wire(&key(3), now)).unwrap(), now);
        assert_eq!(full.unwrap_err(), Rejection::Full { max_peers: 2 });
        ingest
            .admit(check(&wire(&k, now + 5_000)).unwrap(), now + 5_000)
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
        ingest
            .admit(check(&wire(&key(1), now)).unwrap(), now)
            .unwrap();
        ingest
            .admit(check(&wire(&key(2), now + 40_000)).unwrap(), now + 40_000)
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
}

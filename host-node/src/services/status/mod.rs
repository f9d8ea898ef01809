//! The Status service: every node pushes a signed [`StatusReport`] on an interval; the service
//! verifies and stores them, and serves network-wide health as JSON, Prometheus text and an HTML
//! page. [`StatusReader`] gives in-process readers (the service node) the same view. The Hub
//! scores uptime from its own probes rather than from these self-reported figures (see
//! `docs/architecture.md`, "Decisions worth knowing").
//!
//! Goals: a report counts only if it was signed by the peer it names (ed25519 identity key,
//! [`btfs_core::signed`]), that peer is known to the network ([`admission`]: the Hub holds a
//! valid signed ad for it, or — without a Hub — it is on the operator's allow-list), it is
//! fresh (within `max_skew` of our clock) and newer than the last one accepted from that peer,
//! so a captured report can be neither replayed nor forged, and its figures are plausible
//! ([`ingest::check_plausible`]: `used ≤ capacity ≤` the advertised capacity, counters never go
//! backwards without a restart), so one report cannot poison the totals. Every input is bounded:
//! 64 KiB bodies; 16 HTTP connections per client address and 256 in total ([`crate::net::http`]);
//! one accepted report per peer per `min_interval`; `new_peers_per_source` new peers per source
//! address per `new_peer_window`; at most `max_peers` peers; peers silent for `forget_after`
//! are forgotten in memory and on disk, so memory and `status.redb` stay bounded under any
//! flood. Ingest reaches ≥ 20,000 verified reports/s on one core (verification runs on the
//! connection's task, outside the actor; accepted reports are committed to redb in batches); a
//! restart keeps everything that is not forgotten ([`store`]).
//!
//! Layout — pure state, actor, database (as the Hub: [`crate::services::hub`]):
//! - [`state`] ([`state::StatusState`] around [`ingest::Ingest`]) — every decision, with no I/O,
//!   clock or tokio — what to answer a report, what to persist, when to commit a batch, when to
//!   sweep for silent peers, when a flush is done — tested with virtual time; [`admission`] and
//!   [`ingest::verify`] are the stateless checks before it;
//! - [`server`] — the actor (one tokio task owning the state, fed by a bounded channel; it
//!   commits batches, sleeps until the state's next timeout, answers readers) and the HTTP
//!   routes;
//! - [`store`] — `status.redb`.
//!
//! Non-goals: several Status services agreeing with each other; long-term time series (a
//! bounded per-peer history is kept; Prometheus scraping `/metrics` is the place for long
//! series); checking a host's figures against what it really stores (the Guard's job).

//! ## HTTP API
//!
//! | method & path | answer |
//! |---|---|
//! | `POST /api/v1/reports` | body: a [`Signed`](btfs_core::signed::Signed) envelope of a `StatusReport` (JSON, ≤ 64 KiB). `202 {"peer_id", "reports", "next_report_secs"}` when accepted; otherwise `{"error": "..."}` with 400 (not an envelope, wrong kind, bad field, stale or replayed), 401 (bad signature, or the body names another peer than the key), 403 (the network does not know the signer: no ad at the Hub / not on the allow-list), 413 (body too large), 422 (implausible figures, or counters backwards without a restart), 429 (sooner than `min_interval` after the last accepted report, or the source address introduced its share of new peers; `Retry-After` header in seconds), 503 (peer cap reached, the database writer is `write_queue` reports behind, or stopping) |
//! | `GET /api/v1/status[?offset=N&limit=M]` | [`NetworkStatus`]: totals and hosts sorted by peer id (default limit [`StatusOptions::list_limit`]) |
//! | `GET /api/v1/hosts/<peer id>` | [`HostDetail`]: one host and its stored history; 404 if unknown |
//! | `GET /metrics` | Prometheus text: `btfs_network_*` totals, `btfs_host_*{peer_id}` per host (first [`StatusOptions::metrics_host_limit`] by peer id), `btfs_status_reports_accepted_total`, `btfs_status_reports_rejected_total{reason}` |
//! | `GET /` | an HTML page: totals and a host table |
//!
//! Anything else is `404 {"error"}`; a known path with the wrong method is 405 with `Allow`.
//! A connection over the HTTP limits (per client address, total) is answered `503` with
//! `Retry-After: 1` before any route runs. Metrics reasons of refused reports: `malformed`,
//! `too_large`, `bad_signature`, `wrong_peer`, `unknown_peer`, `stale`, `rate_limited`,
//! `new_peer_limit`, `implausible`, `counters_backwards`, `full`, `shutting_down`, `overloaded`
//! (503 with `Retry-After: 1`: `write_queue` accepted reports already wait for the database).
//!
//! Wire formats: a report is `{"kind": "btfs/status-report/1", "public_key", "payload",
//! "signature"}` with `payload` the JSON text of [`StatusReport`] (see [`btfs_core::signed`]).
//! [`NetworkStatus`] (`GET /api/v1/status`):
//!
//! ```json
//! { "generated_at_ms": 1700000000000,
//!   "totals": { "hosts": 2, "online": 1, "capacity_bytes": 100, "used_bytes": 40,
//!               "shards_held": 3, "requests_served": 7, "requests_failed": 1 },
//!   "hosts": [ { "peer_id": "12D3KooW...", "online": true, "last_seen_ms": 1700000000000,
//!                "first_seen_ms": 1699990000000, "issued_at_ms": 1699999999990,
//!                "uptime_secs": 3600, "capacity_bytes": 100, "used_bytes": 40,
//!                "shards_held": 3, "requests_served": 7, "requests_failed": 1,
//!                "version": "0.1.0", "reports": 60 } ],
//!   "offset": 0, "hosts_total": 2 }
//! ```
//!
//! A host is online when its last report arrived within [`StatusOptions::online_window`]
//! (default 3 × the reporting interval). Totals other than `hosts` and `online` sum the latest
//! reports of online hosts only (what the network offers now).
//!
//! ## Retention
//!
//! Per peer: the latest accepted signed report, first/last-seen times and the report count;
//! plus the last [`StatusOptions::history_len`] samples (default 1,440: a day at one report a
//! minute). A peer that has not reported for [`StatusOptions::forget_after`] (default 7 days)
//! is forgotten: removed from memory by a sweep every [`StatusOptions::sweep_interval`], its
//! record and history deleted from `status.redb`; on open, expired records and records of
//! peers admission no longer knows are deleted and the file is compacted. A forgotten peer
//! that reports again is a new peer (first seen anew). Accepted reports are answered `202` once
//! queued; they are committed in groups (a batch is due when [`StatusOptions::batch_max`] wait,
//! or when the oldest has waited [`StatusOptions::commit_linger`], 50 ms; one commit at a
//! time), so a crash can lose the last ~50 ms of reports, which the next reports replace.
//! [`StatusHandle::flush`] waits for a commit; `shutdown` commits everything.

pub mod admission;
pub mod client;
pub mod ingest;
pub mod metrics;
mod page;
pub mod server;
pub mod state;
pub mod store;

use std::time::Duration;

use btfs_core::signed::{Signed, StatusReport};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::net::http::{HttpError, ServerOptions};

pub use admission::{Admission, KnownHosts};
pub use client::{fetch, fetch_host};
pub use server::{start, StatusHandle, StatusReader};

/// API paths.
pub const REPORTS_PATH: &str = "/api/v1/reports";
/// Network status path (one copy, in core: the browser reads it too).
pub use btfs_core::network_file::STATUS_PATH;
/// Per-host path prefix (`/api/v1/hosts/<peer id>`).
pub const HOSTS_PATH: &str = "/api/v1/hosts/";

/// The Status service or its client failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StatusError {
    /// Database.
    #[error(transparent)]
    Db(#[from] store::DbError),
    /// HTTP transport (bind, connect, timeout).
    #[error(transparent)]
    Http(#[from] HttpError),
    /// The service answered with an error.
    #[error("status service at {url} answered {status}: {message}")]
    Refused {
        /// URL.
        url: String,
        /// HTTP status.
        status: u16,
        /// The service's error text.
        message: String,
    },
    /// The answer is not what a Status service sends.
    #[error("status service at {url} sent an unreadable answer ({why}); is that URL a BTFS Status service?")]
    Decode {
        /// URL.
        url: String,
        /// Cause.
        why: String,
    },
    /// A background task of the service failed.
    #[error("status service task failed: {0}")]
    Task(String),
    /// A report could not be signed (the node's own fields are out of bounds).
    #[error("cannot sign the status report: {0}")]
    Sign(String),
}

/// Status service settings.
#[derive(Debug, Clone)]
pub struct StatusOptions {
    /// Peers tracked at most; new peers beyond are refused with 503.
    pub max_peers: usize,
    /// Least time between two accepted reports of one peer (429 otherwise).
    pub min_interval: Duration,
    /// Accepted clock difference between a report's time and ours.
    pub max_skew: Duration,
    /// The interval nodes are asked to report at (returned with every accepted report).
    pub report_interval: Duration,
    /// A host is online if its last report is at most this old.
    pub online_window: Duration,
    /// History samples kept per peer.
    pub history_len: u32,
    /// Default (and maximum) number of hosts in one `GET /api/v1/status` answer.
    pub list_limit: usize,
    /// Hosts with per-host series in `/metrics` (the first by peer id).
    pub metrics_host_limit: usize,
    /// Accepted reports waiting for the database at most; beyond, reports are refused with 503
    /// (`overloaded`, `Retry-After: 1`).
    pub write_queue: usize,
    /// Reports committed in one transaction at most.
    pub batch_max: usize,
    /// How long the oldest accepted report waits for others before a commit (group
    /// commit); a flush commits at once.
    pub commit_linger: Duration,
    /// Who may report ([`admission`]; default: nobody, so a Status service must be told).
    pub admission: Admission,
    /// A peer silent this long is forgotten, in memory and in `status.redb`.
    pub forget_after: Duration,
    /// Largest capacity one host may report (whatever it advertised).
    pub max_capacity_bytes: u64,
    /// Most requests per second a host's counters may grow by.
    pub max_request_rate: u64,
    /// New peers one source address (IPv4, IPv6 /64) may introduce per `new_peer_window`.
    pub new_peers_per_source: u32,
    /// The window of `new_peers_per_source`.
    pub new_peer_window: Duration,
    /// Source addresses tracked for the new-peer budget at most.
    pub max_sources: usize,
    /// HTTP limits.
    pub http: ServerOptions,
}

impl Default for StatusOptions {
    fn default() -> Self {
        let report_interval = Duration::from_secs(60);
        Self {
            max_peers: 100_000,
            min_interval: Duration::from_secs(10),
            max_skew: Duration::from_secs(300),
            report_interval,
            online_window: report_interval * 3,
            history_len: 1_440,
            list_limit: 10_000,
            metrics_host_limit: 1_000,
            write_queue: 65_536,
            batch_max: 8_192,
            commit_linger: Duration::from_millis(50),
            admission: Admission::default(),
            forget_after: Duration::from_secs(7 * 86_400),
            max_capacity_bytes: 1 << 50,
            max_request_rate: 100_000,
            new_peers_per_source: 64,
            new_peer_window: Duration::from_secs(600),
            max_sources: 65_536,
            http: ServerOptions::default(),
        }
    }
}

impl StatusOptions {
    /// Short intervals for tests: report every 200 ms, rate limit 100 ms; admits nobody until
    /// the test sets [`StatusOptions::admission`].
    pub fn for_tests() -> Self {
        let report_interval = Duration::from_millis(200);
        Self {
            min_interval: Duration::from_millis(100),
            report_interval,
            online_window: report_interval * 3,
            ..Self::default()
        }
    }
}

/// What the database keeps per peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerRecord {
    /// The latest accepted signed report.
    pub report: Signed,
    /// When the service first accepted a report from this peer (unix ms, our clock).
    pub first_seen_ms: u64,
    /// When it accepted the latest one (unix ms, our clock).
    pub last_seen_ms: u64,
    /// Reports accepted from this peer.
    pub reports: u64,
}

/// One history point (an accepted report, reduced to its numbers).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sample {
    /// The report's `issued_at_ms` (node's clock).
    pub issued_at_ms: u64,
    /// When we accepted it (our clock).
    pub received_ms: u64,
    /// Node uptime.
    pub uptime_secs: u64,
    /// Capacity.
    pub capacity_bytes: u64,
    /// Used.
    pub used_bytes: u64,
    /// Shards held.
    pub shards_held: u64,
    /// Requests served since the node started.
    pub requests_served: u64,
    /// Requests failed since the node started.
    pub requests_failed: u64,
}

impl Sample {
    /// The sample of `r` received at `received_ms`.
    pub fn new(r: &StatusReport, received_ms: u64) -> Self {
        Self {
            issued_at_ms: r.issued_at_ms,
            received_ms,
            uptime_secs: r.uptime_secs,
            capacity_bytes: r.capacity_bytes,
            used_bytes: r.used_bytes,
            shards_held: r.shards_held,
            requests_served: r.requests_served,
            requests_failed: r.requests_failed,
        }
    }
}

/// Network totals.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    /// Hosts known.
    pub hosts: u64,
    /// Hosts online (reported within the online window).
    pub online: u64,
    /// Capacity of online hosts.
    pub capacity_bytes: u64,
    /// Space used on online hosts.
    pub used_bytes: u64,
    /// Shards held by online hosts.
    pub shards_held: u64,
    /// Requests served by online hosts since they started.
    pub requests_served: u64,
    /// Requests failed on online hosts since they started.
    pub requests_failed: u64,
}

/// One host as the service sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostStatus {
    /// Peer id (base58).
    pub peer_id: String,
    /// Reported within the online window.
    pub online: bool,
    /// When the latest report was accepted (unix ms, service clock).
    pub last_seen_ms: u64,
    /// When the first report was accepted (unix ms, service clock).
    pub first_seen_ms: u64,
    /// The latest report's own time (node clock).
    pub issued_at_ms: u64,
    /// Seconds since the node started.
    pub uptime_secs: u64,
    /// Space offered.
    pub capacity_bytes: u64,
    /// Space used.
    pub used_bytes: u64,
    /// Shards held.
    pub shards_held: u64,
    /// Requests served since the node started.
    pub requests_served: u64,
    /// Requests failed since the node started.
    pub requests_failed: u64,
    /// Software version.
    pub version: String,
    /// Reports accepted from this host.
    pub reports: u64,
}

/// `GET /api/v1/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkStatus {
    /// When this answer was made (unix ms, service clock).
    pub generated_at_ms: u64,
    /// Network totals (over all hosts, not just the listed ones).
    pub totals: Totals,
    /// Hosts sorted by peer id, from `offset`, at most the requested limit.
    pub hosts: Vec<HostStatus>,
    /// Index of the first listed host.
    pub offset: u64,
    /// Hosts known (same as `totals.hosts`): list more with `?offset=`.
    pub hosts_total: u64,
}

/// `GET /api/v1/hosts/<peer id>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostDetail {
    /// The host.
    pub host: HostStatus,
    /// Stored history, oldest first.
    pub history: Vec<Sample>,
}

/// `202` answer to an accepted report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportAccepted {
    /// The reporting peer.
    pub peer_id: String,
    /// Reports accepted from it so far.
    pub reports: u64,
    /// When the service wants the next report, in seconds.
    pub next_report_secs: u64,
}

impl StatusOptions {
    /// The pure admission limits of these options.
    pub fn limits(&self) -> ingest::Limits {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        ingest::Limits {
            max_peers: self.max_peers,
            min_interval_ms: ms(self.min_interval),
            max_skew_ms: ms(self.max_skew),
            online_window_ms: ms(self.online_window),
            forget_after_ms: ms(self.forget_after),
            max_capacity_bytes: self.max_capacity_bytes,
            max_request_rate: self.max_request_rate,
            new_peers_per_source: self.new_peers_per_source,
            new_peer_window_ms: ms(self.new_peer_window),
            max_sources: self.max_sources,
        }
    }

    /// When the pure state commits and sweeps ([`state::Schedule`]).
    pub fn schedule(&self) -> state::Schedule {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        state::Schedule {
            write_queue: self.write_queue,
            batch_max: self.batch_max,
            linger_ms: ms(self.commit_linger),
            sweep_interval_ms: ms(self.sweep_interval()),
        }
    }

    /// How often silent peers are looked for: a tenth of `forget_after`, 50 ms to 10 min.
    pub fn sweep_interval(&self) -> Duration {
        (self.forget_after / 10).clamp(Duration::from_millis(50), Duration::from_secs(600))
    }
}

/// Unix time in ms.
pub fn now_ms() -> u64 {
    crate::services::hub::server::now_ms()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pins the `GET /api/v1/status` JSON that `btfs status`, dashboards and the dApp read.
    #[test]
    fn network_status_json_is_pinned() {
        let s = NetworkStatus {
            generated_at_ms: 3,
            totals: Totals {
                hosts: 1,
                online: 1,
                capacity_bytes: 100,
                used_bytes: 40,
                shards_held: 3,
                requests_served: 7,
                requests_failed: 1,
            },
            hosts: vec![HostStatus {
                peer_id: "12D3KooWx".into(),
                online: true,
                last_seen_ms: 2,
                first_seen_ms: 1,
                issued_at_ms: 2,
                uptime_secs: 60,
                capacity_bytes: 100,
                used_bytes: 40,
                shards_held: 3,
                requests_served: 7,
                requests_failed: 1,
                version: "0.1.0".into(),
                reports: 5,
            }],
            offset: 0,
            hosts_total: 1,
        };
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(
            json,
            concat!(
                r#"{"generated_at_ms":3,"totals":{"hosts":1,"online":1,"capacity_bytes":100,"#,
                r#""used_bytes":40,"shards_held":3,"requests_served":7,"requests_failed":1},"#,
                r#""hosts":[{"peer_id":"12D3KooWx","online":true,"last_seen_ms":2,"#,
                r#""first_seen_ms":1,"issued_at_ms":2,"uptime_secs":60,"capacity_bytes":100,"#,
                r#""used_bytes":40,"shards_held":3,"requests_served":7,"requests_failed":1,"#,
                r#""version":"0.1.0","reports":5}],"offset":0,"hosts_total":1}"#
            )
        );
        assert_eq!(serde_json::from_str::<NetworkStatus>(&json).unwrap(), s);
    }
}

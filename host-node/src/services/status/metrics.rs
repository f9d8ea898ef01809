//! Prometheus exposition (OpenMetrics text via `prometheus-client`) of the Status service's
//! network view ([`render_network`]); a host's own counters are [`crate::host::metrics`], built
//! with the same helpers.
//!
//! Each scrape builds a fresh registry from current values, so series of hosts that vanished
//! disappear and nothing is kept twice; only the ingest counters live across scrapes.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::{text::encode, EncodeLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::NetworkStatus;

/// `Content-Type` of the exposition.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

type U64Gauge = Gauge<u64, AtomicU64>;

/// Label of per-host series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabels {
    /// Peer id (base58).
    pub peer_id: String,
}

/// Label of rejected-report counts.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// [`super::ingest::Rejection::reason`].
    pub reason: String,
}

/// Ingest counters, kept for the life of the service.
#[derive(Debug, Default)]
pub struct IngestCounters {
    /// Reports accepted.
    pub accepted: Counter,
    rejected: Family<ReasonLabels, Counter>,
}

impl IngestCounters {
    /// Counts one rejected report.
    pub fn rejected(&self, reason: &'static str) {
        self.rejected
            .get_or_create(&ReasonLabels {
                reason: reason.into(),
            })
            .inc();
    }
}

pub(crate) fn gauge(registry: &mut Registry, name: &str, help: &str, value: u64) {
    let g = U64Gauge::default();
    g.set(value);
    registry.register(name, help, g);
}

pub(crate) fn counter(registry: &mut Registry, name: &str, help: &str, value: u64) {
    let c: Counter = Counter::default();
    c.inc_by(value);
    registry.register(name, help, c);
}

pub(crate) fn finish(registry: &Registry) -> String {
    let mut out = String::new();
    if let Err(e) = encode(&mut out, registry) {
        tracing::error!(%e, "cannot encode metrics");
    }
    out
}

/// The Status service's `/metrics`: network totals, per-host series for the listed hosts, and
/// ingest counters.
pub fn render_network(status: &NetworkStatus, counters: &IngestCounters) -> String {
    let mut r = Registry::default();
    let t = &status.totals;
    gauge(
        &mut r,
        "btfs_network_hosts",
        "Hosts that ever reported",
        t.hosts,
    );
    gauge(
        &mut r,
        "btfs_network_hosts_online",
        "Hosts that reported recently",
        t.online,
    );
    gauge(
        &mut r,
        "btfs_network_capacity_bytes",
        "Capacity of online hosts",
        t.capacity_bytes,
    );
    gauge(
        &mut r,
        "btfs_network_used_bytes",
        "Space used on online hosts",
        t.used_bytes,
    );
    gauge(
        &mut r,
        "btfs_network_shards_held",
        "Shards held by online hosts",
        t.shards_held,
    );
    gauge(
        &mut r,
        "btfs_network_requests_served",
        "Requests served by online hosts since they started",
        t.requests_served,
    );
    gauge(
        &mut r,
        "btfs_network_requests_failed",
        "Requests failed on online hosts since they started",
        t.requests_failed,
    );
    gauge(
        &mut r,
        "btfs_status_hosts_without_series",
        "Hosts left out of the per-host series (metrics_host_limit)",
        t.hosts.saturating_sub(status.hosts.len() as u64),
    );
    type Field = fn(&super::HostStatus) -> u64;
    let per_host: [(&str, &str, Field); 8] = [
        ("btfs_host_online", "1 if the host reported recently", |h| {
            u64::from(h.online)
        }),
        (
            "btfs_host_uptime_seconds",
            "Host uptime at its last report",
            |h| h.uptime_secs,
        ),
        ("btfs_host_capacity_bytes", "Capacity offered", |h| {
            h.capacity_bytes
        }),
        ("btfs_host_used_bytes", "Space used", |h| h.used_bytes),
        ("btfs_host_shards_held", "Shards held", |h| h.shards_held),
        (
            "btfs_host_requests_served",
            "Requests served since start",
            |h| h.requests_served,
        ),
        (
            "btfs_host_requests_failed",
            "Requests failed since start",
            |h| h.requests_failed,
        ),
        (
            "btfs_host_last_seen_seconds",
            "Unix time of the last accepted report",
            |h| h.last_seen_ms / 1000,
        ),
    ];
    for (name, help, field) in per_host {
        let family = Family::<PeerLabels, U64Gauge>::default();
        for h in &status.hosts {
            family
                .get_or_create(&PeerLabels {
                    peer_id: h.peer_id.clone(),
                })
                .set(field(h));
        }
        r.register(name, help, family);
    }
    r.register(
        "btfs_status_reports_accepted",
        "Reports accepted",
        counters.accepted.clone(),
    );
    r.register(
        "btfs_status_reports_rejected",
        "Reports refused, by reason",
        counters.rejected.clone(),
    );
    finish(&r)
}

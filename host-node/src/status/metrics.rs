//! Prometheus exposition (OpenMetrics text via `prometheus-client`): the Status service's
//! network view ([`render_network`]) and one node's own counters ([`serve_node_metrics`]).
//!
//! Each scrape builds a fresh registry from current values, so series of hosts that vanished
//! disappear and nothing is kept twice; only the ingest counters live across scrapes.
//!
//! Node metrics (`GET /metrics` on [`serve_node_metrics`]'s address):
//! `btfs_node_info{peer_id,version} 1`, `btfs_node_requests_served_total`,
//! `btfs_node_requests_failed_total`, `btfs_node_requests_refused_total`,
//! `btfs_node_requests_dropped_total`, `btfs_node_shards_held`, `btfs_node_used_bytes`,
//! `btfs_node_capacity_bytes`, `btfs_node_uptime_seconds`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use hyper::{Method, StatusCode};
use prometheus_client::encoding::{text::encode, EncodeLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use super::reporter::NodeSource;
use super::{NetworkStatus, StatusError};
use crate::http::{self, Response, ServerOptions};

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

fn gauge(registry: &mut Registry, name: &str, help: &str, value: u64) {
    let g = U64Gauge::default();
    g.set(value);
    registry.register(name, help, g);
}

fn counter(registry: &mut Registry, name: &str, help: &str, value: u64) {
    let c: Counter = Counter::default();
    c.inc_by(value);
    registry.register(name, help, c);
}

fn finish(registry: &Registry) -> String {
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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabels {
    peer_id: String,
    version: String,
}

/// One node's `/metrics` text.
pub fn render_node(source: &NodeSource) -> String {
    let mut r = Registry::default();
    r.register(
        "btfs_node",
        "This node",
        Info::new(NodeLabels {
            peer_id: source.peer_id.to_base58(),
            version: source.version.clone(),
        }),
    );
    let s = &source.stats;
    counter(
        &mut r,
        "btfs_node_requests_served",
        "Shard requests answered OK",
        s.served.load(Ordering::Relaxed),
    );
    counter(
        &mut r,
        "btfs_node_requests_failed",
        "Shard requests answered with an error",
        s.failed.load(Ordering::Relaxed),
    );
    counter(
        &mut r,
        "btfs_node_requests_refused",
        "Shard streams refused as busy",
        s.refused.load(Ordering::Relaxed),
    );
    counter(
        &mut r,
        "btfs_node_requests_dropped",
        "Shard streams dropped because the inbound queue was full",
        s.dropped.load(Ordering::Relaxed),
    );
    counter(
        &mut r,
        "btfs_node_requests_evicted",
        "Shard streams given up to make room for another peer's request",
        s.evicted.load(Ordering::Relaxed),
    );
    gauge(
        &mut r,
        "btfs_node_shard_streams_open",
        "Shard streams held right now (served or being answered busy)",
        s.open.load(Ordering::Relaxed),
    );
    let store = &source.store;
    gauge(
        &mut r,
        "btfs_node_shards_held",
        "Shards stored",
        store.count(),
    );
    gauge(&mut r, "btfs_node_used_bytes", "Space used", store.used());
    gauge(
        &mut r,
        "btfs_node_capacity_bytes",
        "Space offered (quota)",
        store.quota(),
    );
    gauge(
        &mut r,
        "btfs_node_uptime_seconds",
        "Seconds since the node started",
        source.started.elapsed().as_secs(),
    );
    finish(&r)
}

/// Serves `GET /metrics` for one node on `listen` until `cancel` fires; the returned server's
/// `addr` is the real address (port 0 picks one).
pub async fn serve_node_metrics(
    listen: SocketAddr,
    source: NodeSource,
    cancel: CancellationToken,
) -> Result<http::Server, StatusError> {
    let opts = ServerOptions {
        max_connections: 32,
        max_body: 4096,
        ..ServerOptions::default()
    };
    let server = http::serve(
        listen,
        opts,
        move |req| {
            let source = source.clone();
            async move {
                match (req.method, req.path.as_str()) {
                    (Method::GET, "/metrics") => {
                        Response::raw(StatusCode::OK, CONTENT_TYPE, render_node(&source))
                    }
                    (_, "/metrics") => {
                        Response::error(StatusCode::METHOD_NOT_ALLOWED, "use GET on /metrics")
                            .with_header("allow", "GET".into())
                    }
                    _ => Response::error(StatusCode::NOT_FOUND, "only /metrics is served here"),
                }
            }
        },
        cancel,
    )
    .await?;
    Ok(server)
}

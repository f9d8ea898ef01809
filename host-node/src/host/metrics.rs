//! A host's own Prometheus `/metrics` (OpenMetrics text via `prometheus-client`, see
//! [`crate::services::status::metrics`] for the Status service's network view).
//!
//! Each scrape builds a fresh registry from current values.
//!
//! Node metrics (`GET /metrics` on [`serve_node_metrics`]'s address):
//! `btfs_node_info{peer_id,version} 1`, `btfs_node_requests_served_total`,
//! `btfs_node_requests_failed_total`, `btfs_node_requests_refused_total`,
//! `btfs_node_requests_dropped_total`, `btfs_node_shards_held`, `btfs_node_used_bytes`,
//! `btfs_node_capacity_bytes`, `btfs_node_uptime_seconds`; with an Escrow configured,
//! `btfs_node_escrow_earned_microbtt`, `btfs_node_escrow_pending_microbtt` and
//! `btfs_node_escrow_available_microbtt` (read from the Escrow every report interval).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use hyper::{Method, StatusCode};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use super::reporter::NodeSource;
use crate::net::http::{self, Response, ServerOptions};
use crate::services::status::metrics::{counter, finish, gauge, CONTENT_TYPE};
use crate::services::status::StatusError;

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
    let account = source.escrow.lock().ok().and_then(|a| a.clone());
    if let Some(a) = account {
        gauge(
            &mut r,
            "btfs_node_escrow_earned_microbtt",
            "Paid to this host at the Escrow for proven storage (µBTT)",
            a.earned,
        );
        gauge(
            &mut r,
            "btfs_node_escrow_pending_microbtt",
            "Locked in this host's contracts, paid per proven epoch (µBTT)",
            a.incoming,
        );
        gauge(
            &mut r,
            "btfs_node_escrow_available_microbtt",
            "This host's spendable balance at the Escrow (µBTT)",
            a.available,
        );
    }
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

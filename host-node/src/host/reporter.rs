//! A node's side of Status: sign a [`StatusReport`] and POST it to the service on start and then
//! every interval. Failures, and refusals that pass soon (403: its Hub has not registered the
//! node's ad yet; 503: the service is busy), are logged and retried with backoff (1 s
//! doubling up to the interval); other refusals wait for the next interval; the reporter never panics and never blocks the node (it is its own task, and each
//! attempt has a deadline).

use std::sync::Arc;
use std::time::{Duration, Instant};

use btfs_core::signed::{Signed, StatusReport};
use libp2p::identity::ed25519;
use libp2p::PeerId;
use tokio_util::sync::CancellationToken;

use crate::host::shard_server::ServiceStats;
use crate::host::store::BlobStore;
use crate::net::http::HttpUrl;
use crate::services::status::{client, now_ms, StatusError};

/// Where a node's numbers come from (for reports and for its own `/metrics`).
#[derive(Clone)]
pub struct NodeSource {
    /// The node's peer id.
    pub peer_id: PeerId,
    /// Its store (used, quota, shard count).
    pub store: Arc<dyn BlobStore>,
    /// Its request counters.
    pub stats: Arc<ServiceStats>,
    /// When it started.
    pub started: Instant,
    /// Software version.
    pub version: String,
    /// The host's account at the Escrow as last read (earned, pending, available µBTT).
    pub escrow: Arc<std::sync::Mutex<Option<btfs_core::escrow::Account>>>,
}

impl NodeSource {
    /// A source for a node started now, with this build's version.
    pub fn new(peer_id: PeerId, store: Arc<dyn BlobStore>, stats: Arc<ServiceStats>) -> Self {
        Self {
            peer_id,
            store,
            stats,
            started: Instant::now(),
            version: env!("CARGO_PKG_VERSION").into(),
            escrow: Arc::default(),
        }
    }

    /// The node's current report (`issued_at_ms` is now).
    pub fn report(&self) -> StatusReport {
        use std::sync::atomic::Ordering::Relaxed;
        let capacity = self.store.quota();
        StatusReport {
            peer_id: self.peer_id.to_base58(),
            issued_at_ms: now_ms(),
            uptime_secs: self.started.elapsed().as_secs(),
            capacity_bytes: capacity,
            // A report with used > capacity would not sign; clamp (an over-full store is rare).
            used_bytes: self.store.used().min(capacity),
            shards_held: self.store.count(),
            requests_served: self.stats.served.load(Relaxed),
            requests_failed: self.stats.failed.load(Relaxed),
            version: self.version.clone(),
        }
    }
}

/// Starts reporting to the Status service at `url` (its base URL, e.g. `http://127.0.0.1:8090`)
/// until `cancel` fires. `source` makes each report; its `issued_at_ms` is raised if needed so
/// reports are strictly increasing. Fails only if `url` is not a plain `http://` URL.
pub fn spawn(
    url: String,
    key: ed25519::Keypair,
    interval: Duration,
    source: impl Fn() -> StatusReport + Send + 'static,
    cancel: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, StatusError> {
    let base = HttpUrl::parse(&url)?;
    let interval = interval.max(Duration::from_millis(10));
    Ok(tokio::spawn(async move {
        let mut last_issued = 0u64;
        let mut backoff = Duration::from_secs(1).min(interval);
        loop {
            let mut report = source();
            report.issued_at_ms = report.issued_at_ms.max(last_issued + 1);
            last_issued = report.issued_at_ms;
            let wait = match Signed::sign(&report, &key) {
                Err(e) => {
                    tracing::error!(%e, "cannot sign the status report; fix the node's configuration");
                    interval
                }
                Ok(signed) => match client::post_report(&base, &signed).await {
                    Ok(accepted) => {
                        tracing::debug!(%url, reports = accepted.reports, "status reported");
                        backoff = Duration::from_secs(1).min(interval);
                        interval
                    }
                    // Not yet known (403): the Hub may not have processed this node's first
                    // announcement yet (both start together); busy (503): the service is at a
                    // connection limit. Both pass soon: retry with backoff.
                    Err(
                        e @ StatusError::Refused {
                            status: 403 | 503, ..
                        },
                    ) => {
                        tracing::info!(%e, retry_in = ?backoff, "status report not taken yet");
                        let b = backoff;
                        backoff = (backoff * 2).min(interval);
                        b
                    }
                    Err(e @ StatusError::Refused { .. }) => {
                        tracing::warn!(%e, "the status service refused this node's report");
                        interval
                    }
                    Err(e) => {
                        tracing::warn!(%e, retry_in = ?backoff, "cannot report status");
                        let b = backoff;
                        backoff = (backoff * 2).min(interval);
                        b
                    }
                },
            };
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }))
}

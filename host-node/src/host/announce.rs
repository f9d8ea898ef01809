//! A host's side of the Hub: announce a signed [`HostAd`] on start and then periodically (at
//! the Hub's requested pace, never slower than the configured interval), so the Hub learns the
//! host's addresses, free space and price. Failures are retried with backoff (1 s doubling up to
//! the interval) and never stop the host.

use std::time::Duration;

use btfs_core::hub::{HubRequest, HubResponse};
use btfs_core::signed::{HostAd, Signed};
use libp2p::identity::ed25519;
use tokio_util::sync::CancellationToken;

use crate::net::Net;
use crate::services::hub::server::now_ms;
use crate::services::hub::HubAddr;

/// Sends ads built by `make_ad` (its `issued_at_ms` is filled in here) to `hub` until cancelled.
pub async fn run(
    net: Net,
    key: ed25519::Keypair,
    hub: HubAddr,
    make_ad: impl Fn() -> HostAd + Send + 'static,
    interval: Duration,
    cancel: CancellationToken,
) {
    let mut last_issued = 0u64;
    let mut backoff = Duration::from_secs(1);
    loop {
        let mut ad = make_ad();
        ad.issued_at_ms = now_ms().max(last_issued + 1);
        last_issued = ad.issued_at_ms;
        let wait = match Signed::sign(&ad, &key) {
            Err(e) => {
                tracing::error!(%e, "cannot sign the host ad; fix the host's configuration");
                interval
            }
            Ok(signed) => {
                let request = HubRequest::Announce(signed);
                match net.hub_request(hub.peer, hub.addrs.clone(), request).await {
                    Ok(HubResponse::Accepted { next_announce_secs }) => {
                        tracing::debug!(hub = %hub.peer, "announced to the hub");
                        backoff = Duration::from_secs(1);
                        interval.min(Duration::from_secs(next_announce_secs.max(1)))
                    }
                    Ok(HubResponse::Refused { reason }) => {
                        tracing::warn!(%reason, "the hub refused this host's ad");
                        interval
                    }
                    Ok(other) => {
                        tracing::warn!(?other, "unexpected answer from the hub");
                        interval
                    }
                    Err(e) => {
                        tracing::warn!(%e, retry_in = ?backoff, "cannot reach the hub");
                        let b = backoff;
                        backoff = (backoff * 2).min(interval);
                        b
                    }
                }
            }
        };
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

//! The client side of the Status HTTP API, for `btfs status` and the reporter. Every call has a
//! deadline ([`TIMEOUT`]) and a bound on the answer's size.

use std::time::Duration;

use btfs_core::signed::Signed;
use hyper::Method;
use serde::de::DeserializeOwned;

use super::{
    HostDetail, NetworkStatus, ReportAccepted, StatusError, HOSTS_PATH, REPORTS_PATH, STATUS_PATH,
};
use crate::net::http::{self, ClientResponse, HttpUrl};

/// Deadline of one call.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// Largest answer read (a full host list of 10,000 hosts is about 4 MB).
pub const MAX_RESPONSE: usize = 32 << 20;

fn decode<T: DeserializeOwned>(url: &HttpUrl, r: ClientResponse) -> Result<T, StatusError> {
    let shown = || format!("http://{}{}", url.authority, url.path);
    if !r.status.is_success() {
        #[derive(serde::Deserialize)]
        struct ErrorBody {
            error: String,
        }
        let message = serde_json::from_slice::<ErrorBody>(&r.body)
            .map(|b| b.error)
            .unwrap_or_else(|_| String::from_utf8_lossy(&r.body).chars().take(300).collect());
        return Err(StatusError::Refused {
            url: shown(),
            status: r.status.as_u16(),
            message,
        });
    }
    serde_json::from_slice(&r.body).map_err(|e| StatusError::Decode {
        url: shown(),
        why: e.to_string(),
    })
}

async fn get<T: DeserializeOwned>(url: HttpUrl) -> Result<T, StatusError> {
    let r = http::request(Method::GET, &url, None, TIMEOUT, MAX_RESPONSE).await?;
    decode(&url, r)
}

/// The network's status from the service at `base_url` (e.g. `http://127.0.0.1:8090`): totals
/// and the first page of hosts.
pub async fn fetch(base_url: &str) -> Result<NetworkStatus, StatusError> {
    get(HttpUrl::parse(base_url)?.join(STATUS_PATH)).await
}

/// One host and its history.
pub async fn fetch_host(base_url: &str, peer_id: &str) -> Result<HostDetail, StatusError> {
    if !peer_id.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(StatusError::Decode {
            url: base_url.chars().take(200).collect(),
            why: format!("{peer_id:?} is not a base58 peer id"),
        });
    }
    get(HttpUrl::parse(base_url)?.join(&format!("{HOSTS_PATH}{peer_id}"))).await
}

/// Sends one signed report to the service whose base URL is `base`.
pub async fn post_report(base: &HttpUrl, report: &Signed) -> Result<ReportAccepted, StatusError> {
    let url = base.join(REPORTS_PATH);
    let body = serde_json::to_vec(report).map_err(|e| StatusError::Sign(e.to_string()))?;
    let r = http::request(Method::POST, &url, Some(body), TIMEOUT, 64 * 1024).await?;
    decode(&url, r)
}

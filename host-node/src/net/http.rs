//! A small HTTP/1.1 server and client for the node's own endpoints (Status API, `/metrics`).
//!
//! Goals: every resource a remote peer controls is bounded — request bodies (413 beyond
//! [`ServerOptions::max_body`], checked against `Content-Length` before reading and enforced
//! while reading), connections at once per client address
//! ([`ServerOptions::max_connections_per_ip`]; IPv4 /32, IPv6 /64) and in total
//! ([`ServerOptions::max_connections`]), time to send the request head and time to send the
//! body; a graceful stop when the cancellation token fires (in-flight requests get
//! [`ServerOptions::drain`] to finish). One client holding many idle sockets (a slowloris) uses
//! up only its own share and never slows anyone else: the accept loop never waits for a free
//! slot, and a connection over either limit gets `503` (`Retry-After: 1`, `Connection: close`)
//! as soon as its request head arrives (within 1 s, or it is closed), so clients within their
//! share never queue behind it in the kernel's accept backlog. The client side is just enough
//! for our own tools: one request per connection to an `http://host:port/path` URL, with a
//! deadline and a bound on the response size.
//!
//! Non-goals: TLS, HTTP/2, routing frameworks, URLs other than plain `http://`.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{HeaderName, HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, HOST};
use hyper::{HeaderMap, Method, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use thiserror::Error;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// An HTTP server could not start, or a client request failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum HttpError {
    /// The listen address is taken or not ours.
    #[error(
        "cannot listen on {addr}: {source}; pick another address or port (0 picks a free one)"
    )]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The URL is not `http://host:port/path`.
    #[error("bad URL {url:?}: {why}; expected something like http://127.0.0.1:8080")]
    Url {
        /// The URL given.
        url: String,
        /// What is wrong.
        why: String,
    },
    /// Could not connect or the connection failed.
    #[error("{url}: {why}; is the service running and reachable?")]
    Connect {
        /// URL.
        url: String,
        /// Cause.
        why: String,
    },
    /// No answer within the deadline.
    #[error("{url}: no answer within {timeout:?}")]
    Timeout {
        /// URL.
        url: String,
        /// The deadline.
        timeout: Duration,
    },
    /// The answer was larger than allowed.
    #[error("{url}: the response is larger than {limit} bytes")]
    TooLarge {
        /// URL.
        url: String,
        /// Limit.
        limit: usize,
    },
}

/// Server limits.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Largest request body read; larger bodies get 413.
    pub max_body: usize,
    /// Connections served at once.
    pub max_connections: usize,
    /// Connections served at once from one client address (IPv4 /32, IPv6 /64).
    pub max_connections_per_ip: usize,
    /// Time a client has to send a request head (also the keep-alive idle limit).
    pub header_timeout: Duration,
    /// Time a client has to send the request body once the head arrived.
    pub body_timeout: Duration,
    /// On stop, how long in-flight requests may take to finish.
    pub drain: Duration,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            max_body: 64 * 1024,
            max_connections: 256,
            max_connections_per_ip: 16,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            drain: Duration::from_secs(5),
        }
    }
}

/// A request with its body read (bounded).
#[derive(Debug)]
pub struct Request {
    /// Method.
    pub method: Method,
    /// Path without the query.
    pub path: String,
    /// Query string without `?`, if any.
    pub query: Option<String>,
    /// Headers.
    pub headers: HeaderMap,
    /// Body (at most [`ServerOptions::max_body`] bytes).
    pub body: Bytes,
    /// The client's address.
    pub remote: SocketAddr,
}

impl Request {
    /// The value of query parameter `name` (no percent-decoding: our parameters are plain).
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query.as_deref()?.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k == name).then_some(v)
        })
    }
}

/// A response.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: StatusCode,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// Extra headers.
    pub headers: Vec<(&'static str, String)>,
    /// Body.
    pub body: Bytes,
}

impl Response {
    /// A JSON response; serialization failures become a 500 with an error body.
    pub fn json<T: Serialize>(status: StatusCode, value: &T) -> Self {
        match serde_json::to_vec(value) {
            Ok(body) => Self::raw(status, "application/json", body),
            Err(e) => Self::error(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("cannot encode the response: {e}"),
            ),
        }
    }

    /// `{"error": message}` with `status`.
    pub fn error(status: StatusCode, message: &str) -> Self {
        let body = serde_json::json!({ "error": message }).to_string();
        Self::raw(status, "application/json", body)
    }

    /// Any body with a content type.
    pub fn raw(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Self {
        Self {
            status,
            content_type,
            headers: Vec::new(),
            body: body.into(),
        }
    }

    /// Adds a header.
    pub fn with_header(mut self, name: &'static str, value: String) -> Self {
        self.headers.push((name, value));
        self
    }

    fn into_hyper(self) -> hyper::Response<Full<Bytes>> {
        let mut r = hyper::Response::new(Full::new(self.body));
        *r.status_mut() = self.status;
        let h = r.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static(self.content_type));
        for (name, value) in self.headers {
            if let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(&value),
            ) {
                h.insert(n, v);
            }
        }
        r
    }
}

/// A running server.
pub struct Server {
    /// The address it listens on (the real port when 0 was asked for).
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Waits until the server stopped (after its cancellation token fired) and its connections
    /// finished or were cut after the drain time.
    pub async fn join(self) {
        let _ = self.task.await;
    }
}

/// Binds `addr` and serves `handler` until `cancel` fires.
pub async fn serve<F, Fut>(
    addr: SocketAddr,
    opts: ServerOptions,
    handler: F,
    cancel: CancellationToken,
) -> Result<Server, HttpError>
where
    F: Fn(Request) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response> + Send + 'static,
{
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| HttpError::Bind { addr, source })?;
    let addr = listener
        .local_addr()
        .map_err(|source| HttpError::Bind { addr, source })?;
    let task = tokio::spawn(accept_loop(listener, opts, Arc::new(handler), cancel));
    Ok(Server { addr, task })
}

async fn accept_loop<F, Fut>(
    listener: TcpListener,
    opts: ServerOptions,
    handler: Arc<F>,
    cancel: CancellationToken,
) where
    F: Fn(Request) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(opts.max_connections.max(1)));
    let per_ip = Arc::new(PerIp::new(opts.max_connections_per_ip.max(1)));
    let refusals = Arc::new(Semaphore::new(MAX_REFUSING));
    let tracker = TaskTracker::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(opts.header_timeout)
        .max_buf_size(64 * 1024);
    let opts = Arc::new(opts);
    let hard_stop = CancellationToken::new();
    loop {
        let (stream, remote) = tokio::select! {
            () = cancel.cancelled() => break,
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait a little instead of spinning.
                    tracing::warn!(%e, "http accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // This client's share first, then a slot of the total; over either: refuse at once.
        let Some(share) = per_ip.take(remote.ip()) else {
            refuse(
                stream,
                &refusals,
                &tracker,
                "too many connections from your address; close some and retry",
            );
            continue;
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            refuse(
                stream,
                &refusals,
                &tracker,
                "the server is at its connection limit; retry in a second",
            );
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (handler, opts) = (handler.clone(), opts.clone());
        let (cancel, hard_stop) = (cancel.clone(), hard_stop.clone());
        let service = hyper::service::service_fn(move |req| {
            let (handler, opts) = (handler.clone(), opts.clone());
            async move {
                let response = match read_request(req, remote, &opts).await {
                    Ok(req) => handler(req).await,
                    Err(r) => r,
                };
                Ok::<_, std::convert::Infallible>(response.into_hyper())
            }
        });
        let conn = builder.serve_connection(TokioIo::new(stream), service);
        tracker.spawn(async move {
            let _permit = (permit, share);
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::trace!(%e, %remote, "http connection ended");
                    }
                }
                () = cancel.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    // Dropping the connection after the drain time closes its socket.
                    tokio::select! {
                        _ = conn => {}
                        () = hard_stop.cancelled() => {}
                    }
                }
            }
        });
    }
    drop(listener);
    tracker.close();
    if tokio::time::timeout(opts.drain, tracker.wait())
        .await
        .is_err()
    {
        tracing::debug!("http connections still open after the drain time; cutting them");
        hard_stop.cancel();
        tracker.wait().await;
    }
}

/// Open connections per client address, each bounded.
struct PerIp {
    limit: usize,
    open: std::sync::Mutex<std::collections::HashMap<IpAddr, usize>>,
}

/// One connection's place in [`PerIp`]; given back on drop.
struct Share {
    key: IpAddr,
    table: Arc<PerIp>,
}

impl PerIp {
    fn new(limit: usize) -> Self {
        Self {
            limit,
            open: Default::default(),
        }
    }

    fn take(self: &Arc<Self>, ip: IpAddr) -> Option<Share> {
        let key = client_key(ip);
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(key).or_insert(0);
        if *n >= self.limit {
            return None;
        }
        *n += 1;
        Some(Share {
            key,
            table: self.clone(),
        })
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        let mut open = self.table.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// The address a client's connections are counted under: IPv4 as is, IPv6 by /64 (one
/// customer's network), IPv4-mapped IPv6 as IPv4.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// Refused connections answered at once (beyond: closed without an answer).
const MAX_REFUSING: usize = 256;
/// How long a refused connection has to send its request head before it is closed.
const REFUSE_LINGER: Duration = Duration::from_secs(1);

/// Answers a connection over a limit: reads its first request head (for at most
/// [`REFUSE_LINGER`]) and answers `503` with `Retry-After: 1` and `Connection: close`, never
/// calling the handler or reading a body. Answering after the request head, not before, is what
/// HTTP clients understand (an answer before the request reads as a broken connection). At most
/// [`MAX_REFUSING`] connections are being refused at once; beyond that they are closed at once.
fn refuse(stream: TcpStream, refusals: &Arc<Semaphore>, tracker: &TaskTracker, why: &'static str) {
    tracing::debug!(why, "http connection refused");
    let Ok(permit) = refusals.clone().try_acquire_owned() else {
        return;
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(REFUSE_LINGER)
        .keep_alive(false)
        .max_buf_size(16 * 1024);
    let service = hyper::service::service_fn(move |_req| async move {
        let r = Response::error(StatusCode::SERVICE_UNAVAILABLE, why)
            .with_header("retry-after", "1".into())
            .with_header("connection", "close".into());
        Ok::<_, std::convert::Infallible>(r.into_hyper())
    });
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tracker.spawn(async move {
        let _permit = permit;
        let _ = tokio::time::timeout(REFUSE_LINGER * 2, conn).await;
    });
}

/// Reads a request's body within the limits (`pub(crate)` and generic over the body so the
/// `status_api` fuzz target drives it without a socket).
pub(crate) async fn read_request<B>(
    req: hyper::Request<B>,
    remote: SocketAddr,
    opts: &ServerOptions,
) -> Result<Request, Response>
where
    B: hyper::body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let too_large = || {
        Response::error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!(
                "request body is larger than {} bytes; send less",
                opts.max_body
            ),
        )
    };
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > opts.max_body as u64) {
        return Err(too_large());
    }
    let (parts, body) = req.into_parts();
    let collected = tokio::time::timeout(
        opts.body_timeout,
        Limited::new(body, opts.max_body).collect(),
    )
    .await;
    let body = match collected {
        Err(_) => {
            return Err(Response::error(
                StatusCode::REQUEST_TIMEOUT,
                &format!("request body not received within {:?}", opts.body_timeout),
            ))
        }
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => return Err(too_large()),
        Ok(Err(e)) => {
            return Err(Response::error(
                StatusCode::BAD_REQUEST,
                &format!("cannot read the request body: {e}"),
            ))
        }
        Ok(Ok(c)) => c.to_bytes(),
    };
    Ok(Request {
        method: parts.method,
        path: parts.uri.path().to_string(),
        query: parts.uri.query().map(str::to_string),
        headers: parts.headers,
        body,
        remote,
    })
}

/// A parsed `http://host:port/path?query` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    /// `host:port` (port defaults to 80).
    pub authority: String,
    /// Path and query, starting with `/`.
    pub path: String,
}

impl HttpUrl {
    /// Parses a plain `http://` URL; never panics.
    pub fn parse(url: &str) -> Result<Self, HttpError> {
        let bad = |why: &str| HttpError::Url {
            url: url.chars().take(200).collect(),
            why: why.into(),
        };
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| bad("only http:// URLs are supported"))?;
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.is_empty() || authority.contains('@') {
            return Err(bad("missing host (or user info, which is not supported)"));
        }
        let has_port = match authority.rfind(':') {
            // `[::1]` has colons but no port; `[::1]:80` and `host:80` have one.
            Some(i) => !authority[i..].contains(']'),
            None => false,
        };
        let authority = if has_port {
            let (host, port) = authority.rsplit_once(':').ok_or_else(|| bad("bad port"))?;
            if host.is_empty() || port.parse::<u16>().is_err() {
                return Err(bad("the port must be a number from 0 to 65535"));
            }
            authority.to_string()
        } else {
            format!("{authority}:80")
        };
        let path = if path.starts_with('?') {
            format!("/{path}")
        } else {
            path.to_string()
        };
        Ok(Self { authority, path })
    }

    /// This URL with `path` appended to its path (for a base URL plus an API path).
    pub fn join(&self, path: &str) -> Self {
        let base = self.path.trim_end_matches('/');
        Self {
            authority: self.authority.clone(),
            path: format!("{base}{path}"),
        }
    }
}

/// A response received by [`request`].
#[derive(Debug, Clone)]
pub struct ClientResponse {
    /// Status code.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// Body.
    pub body: Bytes,
}

/// Sends one request (a fresh connection each time) and reads the answer, all within `timeout`,
/// refusing answers larger than `max_response` bytes.
pub async fn request(
    method: Method,
    url: &HttpUrl,
    json_body: Option<Vec<u8>>,
    timeout: Duration,
    max_response: usize,
) -> Result<ClientResponse, HttpError> {
    let shown = format!("http://{}{}", url.authority, url.path);
    match tokio::time::timeout(
        timeout,
        request_inner(method, url, json_body, max_response, &shown),
    )
    .await
    {
        Ok(r) => r,
        Err(_) => Err(HttpError::Timeout {
            url: shown,
            timeout,
        }),
    }
}

async fn request_inner(
    method: Method,
    url: &HttpUrl,
    json_body: Option<Vec<u8>>,
    max_response: usize,
    shown: &str,
) -> Result<ClientResponse, HttpError> {
    let connect = |why: String| HttpError::Connect {
        url: shown.to_string(),
        why,
    };
    let stream = TcpStream::connect(url.authority.as_str())
        .await
        .map_err(|e| connect(e.to_string()))?;
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| connect(e.to_string()))?;
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    let is_json = json_body.is_some();
    let mut req = hyper::Request::new(Full::new(Bytes::from(json_body.unwrap_or_default())));
    *req.method_mut() = method;
    *req.uri_mut() = url
        .path
        .parse()
        .map_err(|e: hyper::http::uri::InvalidUri| connect(format!("bad path: {e}")))?;
    let host = HeaderValue::from_str(&url.authority).map_err(|e| connect(e.to_string()))?;
    req.headers_mut().insert(HOST, host);
    if is_json {
        req.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    let result = async {
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| connect(e.to_string()))?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = Limited::new(resp.into_body(), max_response)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    HttpError::TooLarge {
                        url: shown.to_string(),
                        limit: max_response,
                    }
                } else {
                    connect(e.to_string())
                }
            })?
            .to_bytes();
        Ok(ClientResponse {
            status,
            headers,
            body,
        })
    }
    .await;
    driver.abort();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_without_panicking() {
        let u = HttpUrl::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!(
            (u.authority.as_str(), u.path.as_str()),
            ("127.0.0.1:8080", "/")
        );
        let u = HttpUrl::parse("http://localhost/api?x=1").unwrap();
        assert_eq!(
            (u.authority.as_str(), u.path.as_str()),
            ("localhost:80", "/api?x=1")
        );
        let u = HttpUrl::parse("http://[::1]:9/").unwrap();
        assert_eq!(u.authority, "[::1]:9");
        assert_eq!(
            HttpUrl::parse("http://[::1]").unwrap().authority,
            "[::1]:80"
        );
        assert_eq!(
            HttpUrl::parse("http://h:1/base/")
                .unwrap()
                .join("/api/v1/status")
                .path,
            "/base/api/v1/status"
        );
        for bad in [
            "",
            "https://x",
            "http://",
            "http://:80",
            "http://h:99999",
            "http://h:x",
            "http://u@h:1",
            "ftp://h",
            "http://h:",
        ] {
            assert!(HttpUrl::parse(bad).is_err(), "{bad:?} should be refused");
        }
        // Arbitrary bytes never panic.
        for s in [
            "http://\u{e9}:1",
            "http://a:1\u{0}",
            "http://::::",
            "http://]:1",
        ] {
            let _ = HttpUrl::parse(s);
        }
    }

    #[test]
    fn query_params() {
        let r = Request {
            method: Method::GET,
            path: "/".into(),
            query: Some("limit=5&offset&x=y".into()),
            headers: HeaderMap::new(),
            body: Bytes::new(),
            remote: SocketAddr::from(([127, 0, 0, 1], 1)),
        };
        assert_eq!(r.query_param("limit"), Some("5"));
        assert_eq!(r.query_param("offset"), Some(""));
        assert_eq!(r.query_param("nope"), None);
    }
}

//! The Status service over real sockets (127.0.0.1, port 0) with a real redb in a temp dir.
//! Admission uses a real Hub registry holding signed ads of the test keys; "another client" is
//! another loopback source address (127.0.0.2, 127.0.0.3, ...).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use btfs_core::signed::{HostAd, Signed, StatusReport};
use btfs_host::host::shard_server::ServiceStats;
use btfs_host::host::store::{BlobStore, MemStore};
use btfs_host::host::{metrics, reporter};
use btfs_host::net::http::{self, HttpUrl};
use btfs_host::services::hub::registry::Registry;
use btfs_host::services::status::{self, Admission, StatusOptions};
use hyper::{Method, StatusCode};
use libp2p::identity::{ed25519, PublicKey};
use tokio_util::sync::CancellationToken;

fn any_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn key(seed: u8) -> ed25519::Keypair {
    ed25519::Keypair::from(ed25519::SecretKey::try_from_bytes([seed; 32]).unwrap())
}

fn peer(k: &ed25519::Keypair) -> String {
    PublicKey::from(k.public()).to_peer_id().to_base58()
}

fn report(k: &ed25519::Keypair, issued_at_ms: u64) -> StatusReport {
    StatusReport {
        peer_id: peer(k),
        issued_at_ms,
        uptime_secs: 42,
        capacity_bytes: 1 << 30,
        used_bytes: 1 << 20,
        shards_held: 5,
        requests_served: 9,
        requests_failed: 2,
        version: "0.1.0".into(),
    }
}

/// A Hub registry holding a signed ad (capacity `capacity`) for each seed.
fn hub_knowing(seeds: impl IntoIterator<Item = u8>, capacity: u64) -> Arc<Mutex<Registry>> {
    let mut reg = Registry::new(10_000);
    let now = status::now_ms();
    for s in seeds {
        let k = key(s);
        let ad = HostAd {
            peer_id: peer(&k),
            addrs: vec!["/ip4/127.0.0.1/tcp/1".into()],
            capacity_bytes: capacity,
            free_bytes: capacity,
            price_per_gib_month: 1,
            version: "0.1.0".into(),
            region: None,
            issued_at_ms: now,
        };
        let signed = Signed::sign(&ad, &k).unwrap();
        let v = signed.verify::<HostAd>().unwrap();
        let sender = v.peer;
        reg.announce(v, signed, sender, now, 300_000).unwrap();
    }
    Arc::new(Mutex::new(reg))
}

/// Test options admitting seeds 0..=200 (ads of 1 TiB).
fn opts() -> StatusOptions {
    StatusOptions {
        admission: Admission::Hub(hub_knowing(0..=200, 1 << 40)),
        ..StatusOptions::for_tests()
    }
}

fn wire(r: &StatusReport, k: &ed25519::Keypair) -> Vec<u8> {
    serde_json::to_vec(&Signed::sign(r, k).unwrap()).unwrap()
}

async fn send(
    base: &str,
    method: Method,
    path: &str,
    body: Option<Vec<u8>>,
) -> (StatusCode, String) {
    let url = HttpUrl::parse(base).unwrap().join(path);
    let r = http::request(method, &url, body, Duration::from_secs(10), 1 << 24)
        .await
        .unwrap();
    (r.status, String::from_utf8_lossy(&r.body).into_owned())
}

async fn post(base: &str, body: Vec<u8>) -> (StatusCode, String) {
    send(base, Method::POST, status::REPORTS_PATH, Some(body)).await
}

async fn start(dir: &std::path::Path) -> status::StatusHandle {
    status::start(dir, any_port(), opts(), CancellationToken::new())
        .await
        .unwrap()
}

#[tokio::test]
async fn accepted_report_shows_in_status_metrics_and_page() {
    let dir = tempfile::tempdir().unwrap();
    let svc = start(dir.path()).await;
    let k = key(1);
    let (code, body) = post(&svc.url(), wire(&report(&k, status::now_ms()), &k)).await;
    assert_eq!(code, StatusCode::ACCEPTED, "{body}");
    let accepted: status::ReportAccepted = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (accepted.peer_id.as_str(), accepted.reports),
        (peer(&k).as_str(), 1)
    );

    let url = HttpUrl::parse(&svc.url())
        .unwrap()
        .join(status::STATUS_PATH);
    let r = http::request(Method::GET, &url, None, Duration::from_secs(10), 1 << 20)
        .await
        .unwrap();
    assert_eq!(r.headers["access-control-allow-origin"], "*");
    let net = status::fetch(&svc.url()).await.unwrap();
    assert_eq!((net.totals.hosts, net.totals.online), (1, 1));
    assert_eq!(net.totals.capacity_bytes, 1 << 30);
    assert_eq!(net.hosts.len(), 1);
    let h = &net.hosts[0];
    assert_eq!(
        (h.peer_id.clone(), h.uptime_secs, h.reports),
        (peer(&k), 42, 1)
    );
    assert!(h.online);
    assert_eq!(svc.get(&peer(&k)).await.unwrap().uptime_secs, 42);
    assert_eq!(svc.latest().await.len(), 1);

    let detail = status::fetch_host(&svc.url(), &peer(&k)).await.unwrap();
    assert_eq!(detail.history.len(), 1);

    let (code, text) = send(&svc.url(), Method::GET, "/metrics", None).await;
    assert_eq!(code, StatusCode::OK);
    assert!(text.contains("btfs_network_hosts_online 1"), "{text}");
    assert!(
        text.contains(&format!(
            "btfs_host_uptime_seconds{{peer_id=\"{}\"}} 42",
            peer(&k)
        )),
        "{text}"
    );
    assert!(
        text.contains("btfs_status_reports_accepted_total 1"),
        "{text}"
    );

    let (code, html) = send(&svc.url(), Method::GET, "/", None).await;
    assert_eq!(code, StatusCode::OK);
    assert!(
        html.contains(&peer(&k)) && html.contains("1 hosts, 1 online"),
        "{html}"
    );

    let (code, body) = send(&svc.url(), Method::GET, "/nope", None).await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    assert!(body.contains("\"error\""), "{body}");
    let (code, _) = send(&svc.url(), Method::GET, status::REPORTS_PATH, None).await;
    assert_eq!(code, StatusCode::METHOD_NOT_ALLOWED);
    let (code, _) = send(&svc.url(), Method::POST, status::STATUS_PATH, Some(vec![])).await;
    assert_eq!(code, StatusCode::METHOD_NOT_ALLOWED);
    let (code, _) = send(&svc.url(), Method::GET, "/api/v1/hosts/12D3Unknown", None).await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    svc.shutdown().await;
}

#[tokio::test]
async fn forged_stale_replayed_and_oversized_reports_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let svc = start(dir.path()).await;
    let url = svc.url();
    let (k, other) = (key(1), key(2));
    let now = status::now_ms();

    // Bad signature: payload changed after signing.
    let mut s = Signed::sign(&report(&k, now), &k).unwrap();
    s.payload = s.payload.replace("\"shards_held\":5", "\"shards_held\":6");
    let (code, body) = post(&url, serde_json::to_vec(&s).unwrap()).await;
    assert_eq!(code, StatusCode::UNAUTHORIZED, "{body}");
    assert!(body.contains("bad signature"), "{body}");

    // Claiming another peer's id.
    let mut r = report(&k, now);
    r.peer_id = peer(&other);
    let (code, body) = post(&url, wire(&r, &k)).await;
    assert_eq!(code, StatusCode::UNAUTHORIZED, "{body}");
    assert!(body.contains("claims peer"), "{body}");

    // Not JSON at all.
    let (code, body) = post(&url, b"hello".to_vec()).await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{body}");

    // Stale: an hour old.
    let (code, body) = post(&url, wire(&report(&k, now - 3_600_000), &k)).await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("ago"), "{body}");

    // Accept one, then its replay is refused even after the rate-limit interval.
    let first = wire(&report(&k, now), &k);
    assert_eq!(post(&url, first.clone()).await.0, StatusCode::ACCEPTED);
    tokio::time::sleep(Duration::from_millis(150)).await;
    let (code, body) = post(&url, first).await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("not newer"), "{body}");

    // Oversized body.
    let (code, body) = post(&url, vec![b' '; 100 * 1024]).await;
    assert_eq!(code, StatusCode::PAYLOAD_TOO_LARGE, "{body}");

    let (_, text) = send(&url, Method::GET, "/metrics", None).await;
    for reason in ["bad_signature", "wrong_peer", "malformed", "stale"] {
        assert!(
            text.contains(&format!(
                "btfs_status_reports_rejected_total{{reason=\"{reason}\"}}"
            )),
            "{reason} missing in {text}"
        );
    }
    assert_eq!(status::fetch(&url).await.unwrap().hosts[0].reports, 1);
    svc.shutdown().await;
}

#[tokio::test]
async fn reports_faster_than_the_minimum_interval_get_429() {
    let dir = tempfile::tempdir().unwrap();
    let opts = StatusOptions {
        min_interval: Duration::from_secs(30),
        ..opts()
    };
    let svc = status::start(dir.path(), any_port(), opts, CancellationToken::new())
        .await
        .unwrap();
    let k = key(1);
    let now = status::now_ms();
    assert_eq!(
        post(&svc.url(), wire(&report(&k, now), &k)).await.0,
        StatusCode::ACCEPTED
    );
    let url = HttpUrl::parse(&svc.url())
        .unwrap()
        .join(status::REPORTS_PATH);
    let r = http::request(
        Method::POST,
        &url,
        Some(wire(&report(&k, now + 1), &k)),
        Duration::from_secs(10),
        1 << 16,
    )
    .await
    .unwrap();
    let body = String::from_utf8_lossy(&r.body);
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert!(body.contains("too many reports"), "{body}");
    let retry: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((29..=30).contains(&retry), "{retry}");
    // Another peer is not affected.
    let k2 = key(2);
    assert_eq!(
        post(&svc.url(), wire(&report(&k2, now), &k2)).await.0,
        StatusCode::ACCEPTED
    );
    svc.shutdown().await;
}

#[tokio::test]
async fn peers_beyond_the_cap_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let opts = StatusOptions {
        max_peers: 1,
        ..opts()
    };
    let svc = status::start(dir.path(), any_port(), opts, CancellationToken::new())
        .await
        .unwrap();
    let now = status::now_ms();
    let (a, b) = (key(1), key(2));
    assert_eq!(
        post(&svc.url(), wire(&report(&a, now), &a)).await.0,
        StatusCode::ACCEPTED
    );
    let (code, body) = post(&svc.url(), wire(&report(&b, now), &b)).await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains("accepts no new ones"), "{body}");
    svc.shutdown().await;
}

#[tokio::test]
async fn a_restart_on_the_same_dir_keeps_reports_and_history() {
    let dir = tempfile::tempdir().unwrap();
    let k = key(7);
    let now = status::now_ms();
    let svc = start(dir.path()).await;
    assert_eq!(
        post(&svc.url(), wire(&report(&k, now), &k)).await.0,
        StatusCode::ACCEPTED
    );
    tokio::time::sleep(Duration::from_millis(110)).await;
    assert_eq!(
        post(&svc.url(), wire(&report(&k, now + 200), &k)).await.0,
        StatusCode::ACCEPTED
    );
    svc.flush().await;
    assert_eq!(svc.reader().history(&peer(&k)).unwrap().len(), 2);
    svc.shutdown().await;

    let svc = start(dir.path()).await;
    let h = svc
        .get(&peer(&k))
        .await
        .expect("the peer survives a restart");
    assert_eq!((h.reports, h.issued_at_ms), (2, now + 200));
    assert_eq!(svc.reader().history(&peer(&k)).unwrap().len(), 2);
    // The replay protection survives too.
    let (code, _) = post(&svc.url(), wire(&report(&k, now + 200), &k)).await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    svc.shutdown().await;
}

fn node_source(seed: u8) -> (reporter::NodeSource, Arc<ServiceStats>) {
    let store: Arc<dyn BlobStore> = Arc::new(MemStore::new(1 << 30));
    let stats = Arc::new(ServiceStats::default());
    let peer_id = PublicKey::from(key(seed).public()).to_peer_id();
    (
        reporter::NodeSource::new(peer_id, store, stats.clone()),
        stats,
    )
}

#[tokio::test]
async fn the_reporter_pushes_reports_that_appear() {
    let dir = tempfile::tempdir().unwrap();
    let svc = start(dir.path()).await;
    let cancel = CancellationToken::new();
    let (source, stats) = node_source(3);
    stats.served.store(11, std::sync::atomic::Ordering::Relaxed);
    let task = reporter::spawn(
        svc.url(),
        key(3),
        Duration::from_millis(150),
        move || source.report(),
        cancel.clone(),
    )
    .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(h) = svc.get(&peer(&key(3))).await {
            if h.reports >= 3 {
                assert_eq!(h.requests_served, 11);
                assert_eq!(h.capacity_bytes, 1 << 30);
                break;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "reports did not arrive"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cancel.cancel();
    task.await.unwrap();
    svc.shutdown().await;
}

#[tokio::test]
async fn the_reporter_survives_an_unreachable_service() {
    // Nothing listens here: the reporter logs, backs off and stops cleanly when cancelled.
    let cancel = CancellationToken::new();
    let (source, _) = node_source(4);
    let task = reporter::spawn(
        "http://127.0.0.1:9".into(),
        key(4),
        Duration::from_millis(50),
        move || source.report(),
        cancel.clone(),
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    cancel.cancel();
    task.await.unwrap();
    assert!(reporter::spawn(
        "not a url".into(),
        key(4),
        Duration::from_secs(1),
        || report(&key(4), 1),
        CancellationToken::new()
    )
    .is_err());
}

#[tokio::test]
async fn node_metrics_endpoint_serves_text() {
    let cancel = CancellationToken::new();
    let (source, stats) = node_source(5);
    stats.failed.store(3, std::sync::atomic::Ordering::Relaxed);
    let server = metrics::serve_node_metrics(any_port(), source, cancel.clone())
        .await
        .unwrap();
    let base = format!("http://{}", server.addr);
    let (code, text) = send(&base, Method::GET, "/metrics", None).await;
    assert_eq!(code, StatusCode::OK);
    assert!(text.contains("btfs_node_requests_failed_total 3"), "{text}");
    assert!(
        text.contains("btfs_node_capacity_bytes 1073741824"),
        "{text}"
    );
    assert!(
        text.contains(&format!("peer_id=\"{}\"", peer(&key(5)))),
        "{text}"
    );
    assert!(text.ends_with("# EOF\n"), "{text}");
    let (code, _) = send(&base, Method::GET, "/other", None).await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    cancel.cancel();
    server.join().await;
}

#[tokio::test]
async fn connections_over_the_total_limit_are_refused_at_once_and_retries_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let opts = StatusOptions {
        http: http::ServerOptions {
            max_connections: 4,
            ..http::ServerOptions::default()
        },
        ..opts()
    };
    let svc = status::start(dir.path(), any_port(), opts, CancellationToken::new())
        .await
        .unwrap();
    let now = status::now_ms();
    let mut tasks = Vec::new();
    for seed in 10..60u8 {
        let url = svc.url();
        tasks.push(tokio::spawn(async move {
            let k = key(seed);
            // Beyond the limit the answer is an immediate 503 with Retry-After: retry then.
            for _ in 0..200 {
                let (code, body) = post(&url, wire(&report(&k, now), &k)).await;
                match code {
                    StatusCode::ACCEPTED => return code,
                    StatusCode::SERVICE_UNAVAILABLE => {
                        assert!(body.contains("connection limit"), "{body}");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    other => panic!("unexpected {other}: {body}"),
                }
            }
            panic!("never accepted");
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), StatusCode::ACCEPTED);
    }
    assert_eq!(status::fetch(&svc.url()).await.unwrap().totals.hosts, 50);
    svc.shutdown().await;
}

/// One HTTP/1.1 request from loopback source address `from` (127.0.0.x), `Connection: close`;
/// returns the status code and the body.
async fn request_from(
    from: [u8; 4],
    to: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(SocketAddr::from((from, 0))).unwrap();
    let mut s = sock.connect(to).await.unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nhost: {to}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    let text = String::from_utf8_lossy(&out).into_owned();
    let code = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

#[tokio::test]
async fn unknown_hosts_are_refused_and_ads_bound_the_capacity() {
    let dir = tempfile::tempdir().unwrap();
    let opts = StatusOptions {
        admission: Admission::Hub(hub_knowing([1], 1 << 30)),
        ..StatusOptions::for_tests()
    };
    let svc = status::start(dir.path(), any_port(), opts, CancellationToken::new())
        .await
        .unwrap();
    let now = status::now_ms();
    // Validly signed, but the Hub holds no ad for this peer.
    let stranger = key(250);
    let (code, body) = post(&svc.url(), wire(&report(&stranger, now), &stranger)).await;
    assert_eq!(code, StatusCode::FORBIDDEN, "{body}");
    assert!(body.contains("announce to the Hub first"), "{body}");
    // Known, but claiming more than its ad (1 GiB).
    let k = key(1);
    let mut r = report(&k, now);
    r.capacity_bytes = 2 << 30;
    let (code, body) = post(&svc.url(), wire(&r, &k)).await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body.contains("advertised at the Hub"), "{body}");
    // Within its ad: accepted.
    let (code, body) = post(&svc.url(), wire(&report(&k, now), &k)).await;
    assert_eq!(code, StatusCode::ACCEPTED, "{body}");
    let (_, text) = send(&svc.url(), Method::GET, "/metrics", None).await;
    for reason in ["unknown_peer", "implausible"] {
        assert!(
            text.contains(&format!(
                "btfs_status_reports_rejected_total{{reason=\"{reason}\"}} 1"
            )),
            "{reason} missing in {text}"
        );
    }
    assert_eq!(status::fetch(&svc.url()).await.unwrap().totals.hosts, 1);
    svc.shutdown().await;
}

#[tokio::test]
async fn one_address_introduces_a_bounded_number_of_new_hosts() {
    let dir = tempfile::tempdir().unwrap();
    let opts = StatusOptions {
        new_peers_per_source: 5,
        new_peer_window: Duration::from_secs(600),
        ..opts()
    };
    let svc = status::start(dir.path(), any_port(), opts, CancellationToken::new())
        .await
        .unwrap();
    let (addr, now) = (svc.http_addr, status::now_ms());
    let path = status::REPORTS_PATH;
    for seed in 1..=5u8 {
        let k = key(seed);
        let (code, body) = request_from(
            [127, 0, 0, 2],
            addr,
            "POST",
            path,
            &wire(&report(&k, now), &k),
        )
        .await;
        assert_eq!(code, 202, "{body}");
    }
    let k = key(6);
    let (code, body) = request_from(
        [127, 0, 0, 2],
        addr,
        "POST",
        path,
        &wire(&report(&k, now), &k),
    )
    .await;
    assert_eq!(code, 429, "{body}");
    assert!(body.contains("already introduced 5 new hosts"), "{body}");
    // Another address has its own budget; a known host keeps reporting from the first one.
    let (code, body) = request_from(
        [127, 0, 0, 3],
        addr,
        "POST",
        path,
        &wire(&report(&k, now), &k),
    )
    .await;
    assert_eq!(code, 202, "{body}");
    tokio::time::sleep(Duration::from_millis(120)).await;
    let k1 = key(1);
    let (code, body) = request_from(
        [127, 0, 0, 2],
        addr,
        "POST",
        path,
        &wire(&report(&k1, now + 150), &k1),
    )
    .await;
    assert_eq!(code, 202, "{body}");
    assert_eq!(status::fetch(&svc.url()).await.unwrap().totals.hosts, 6);
    svc.shutdown().await;
}

#[tokio::test]
async fn implausible_and_backwards_reports_cannot_poison_the_totals() {
    let dir = tempfile::tempdir().unwrap();
    let svc = start(dir.path()).await;
    let url = svc.url();
    let now = status::now_ms();
    let (k, m) = (key(1), key(2));
    assert_eq!(
        post(&url, wire(&report(&k, now), &k)).await.0,
        StatusCode::ACCEPTED
    );
    // The 16 EiB report of issue #9.
    let mut r = report(&m, now);
    r.capacity_bytes = u64::MAX;
    let (code, body) = post(&url, wire(&r, &m)).await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let mut r = report(&m, now);
    r.shards_held = u64::MAX;
    r.requests_served = u64::MAX;
    assert_eq!(
        post(&url, wire(&r, &m)).await.0,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    // Counters backwards without a restart (uptime went up).
    tokio::time::sleep(Duration::from_millis(120)).await;
    let mut r = report(&k, now + 1_000);
    r.uptime_secs += 1;
    r.requests_served -= 1;
    let (code, body) = post(&url, wire(&r, &k)).await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body.contains("without a restart"), "{body}");
    let t = status::fetch(&url).await.unwrap().totals;
    assert_eq!(
        (t.hosts, t.capacity_bytes, t.requests_served),
        (1, 1 << 30, 9)
    );
    let (_, text) = send(&url, Method::GET, "/metrics", None).await;
    assert!(
        text.contains("btfs_status_reports_rejected_total{reason=\"counters_backwards\"} 1"),
        "{text}"
    );
    svc.shutdown().await;
}

#[tokio::test]
async fn silent_hosts_are_forgotten_in_memory_and_on_disk_also_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let forget = |ms| StatusOptions {
        forget_after: Duration::from_millis(ms),
        ..opts()
    };
    // While running: forgotten after 300 ms of silence, history and record deleted.
    let svc = status::start(
        dir.path(),
        any_port(),
        forget(300),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    let (a, b) = (key(1), key(2));
    assert_eq!(
        post(&svc.url(), wire(&report(&a, status::now_ms()), &a))
            .await
            .0,
        StatusCode::ACCEPTED
    );
    svc.flush().await;
    assert_eq!(svc.reader().history(&peer(&a)).unwrap().len(), 1);
    let deadline = Instant::now() + Duration::from_secs(5);
    while svc.get(&peer(&a)).await.is_some() {
        assert!(Instant::now() < deadline, "not forgotten");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    svc.flush().await;
    assert!(svc.reader().history(&peer(&a)).unwrap().is_empty());
    // Forgotten means new again: a later report starts over.
    let (code, body) = post(&svc.url(), wire(&report(&a, status::now_ms()), &a)).await;
    assert_eq!(code, StatusCode::ACCEPTED, "{body}");
    assert!(body.contains("\"reports\":1"), "{body}");
    svc.shutdown().await;

    // Across a restart: stored while forgetting is slow, then reopened with a short time.
    let svc = status::start(
        dir.path(),
        any_port(),
        forget(3_600_000),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(
        post(&svc.url(), wire(&report(&b, status::now_ms()), &b))
            .await
            .0,
        StatusCode::ACCEPTED
    );
    svc.shutdown().await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let svc = status::start(
        dir.path(),
        any_port(),
        forget(300),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    assert!(svc.get(&peer(&a)).await.is_none() && svc.get(&peer(&b)).await.is_none());
    svc.shutdown().await;
    // ...and deleted from status.redb, not just skipped.
    let svc = status::start(
        dir.path(),
        any_port(),
        forget(3_600_000),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    assert!(svc.latest().await.is_empty(), "{:?}", svc.latest().await);
    assert!(svc.reader().history(&peer(&b)).unwrap().is_empty());
    svc.shutdown().await;
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// Sends `wires` over one keep-alive connection; counts answers by status code.
async fn flood(addr: SocketAddr, wires: Vec<Vec<u8>>) -> std::collections::BTreeMap<u16, usize> {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut codes = std::collections::BTreeMap::new();
    for w in wires {
        let req = hyper::Request::post(status::REPORTS_PATH)
            .header("host", addr.to_string())
            .body(Full::new(Bytes::from(w)))
            .unwrap();
        send.ready().await.unwrap();
        let resp = send.send_request(req).await.unwrap();
        *codes.entry(resp.status().as_u16()).or_insert(0) += 1;
        let _ = resp.into_body().collect().await;
    }
    codes
}

/// `n` reports signed by fresh keys (made on all cores).
fn forged(n: usize, seed: u64) -> (Vec<Vec<u8>>, Vec<libp2p::PeerId>) {
    let now = status::now_ms();
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let parts: Vec<_> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    (t..n)
                        .step_by(threads)
                        .map(|i| {
                            let mut b = [0u8; 32];
                            b[..8].copy_from_slice(&(i as u64).to_le_bytes());
                            b[8..16].copy_from_slice(&seed.to_le_bytes());
                            let k = ed25519::Keypair::from(
                                ed25519::SecretKey::try_from_bytes(b).unwrap(),
                            );
                            let id = PublicKey::from(k.public()).to_peer_id();
                            (wire(&report(&k, now), &k), id)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    parts.into_iter().flatten().unzip()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_fresh_identities_leaves_memory_and_disk_bounded() {
    const N: usize = 20_000;
    let (wires, ids) = forged(N, 9);
    // 1. Behind the Hub rule: every forged identity is unknown, nothing is kept.
    let dir = tempfile::tempdir().unwrap();
    let svc = start(dir.path()).await;
    svc.flush().await;
    let (rss0, db0) = (
        rss_bytes(),
        std::fs::metadata(dir.path().join("status.redb"))
            .unwrap()
            .len(),
    );
    let t = Instant::now();
    let mut parts: Vec<Vec<Vec<u8>>> = vec![Vec::new(); 4];
    for (i, w) in wires.iter().enumerate() {
        parts[i % 4].push(w.clone());
    }
    let tasks: Vec<_> = parts
        .into_iter()
        .map(|p| tokio::spawn(flood(svc.http_addr, p)))
        .collect();
    let mut codes = std::collections::BTreeMap::new();
    for task in tasks {
        for (c, n) in task.await.unwrap() {
            *codes.entry(c).or_insert(0) += n;
        }
    }
    let took = t.elapsed();
    svc.flush().await;
    let (rss1, db1) = (
        rss_bytes(),
        std::fs::metadata(dir.path().join("status.redb"))
            .unwrap()
            .len(),
    );
    println!(
        "Hub rule: {N} forged reports in {took:?}: {codes:?}; RSS {} -> {} MiB; status.redb {db0} -> {db1} bytes",
        rss0 >> 20,
        rss1 >> 20
    );
    assert_eq!(codes.get(&403), Some(&N), "{codes:?}");
    assert!(svc.latest().await.is_empty());
    assert_eq!(db1, db0, "nothing may be written for unknown hosts");
    assert!(
        rss1 < rss0 + (16 << 20),
        "RSS grew {} MiB",
        (rss1 - rss0) >> 20
    );
    svc.shutdown().await;

    // 2. Even if every forged key were admitted (an allow-list of all of them), one address
    // introduces only its budget of new hosts.
    let dir = tempfile::tempdir().unwrap();
    let opts = StatusOptions {
        admission: Admission::AllowList(Arc::new(ids.into_iter().collect())),
        new_peers_per_source: 64,
        ..StatusOptions::for_tests()
    };
    let svc = status::start(dir.path(), any_port(), opts, CancellationToken::new())
        .await
        .unwrap();
    let (rss0, db0) = (
        rss_bytes(),
        std::fs::metadata(dir.path().join("status.redb"))
            .unwrap()
            .len(),
    );
    let codes = flood(svc.http_addr, wires).await;
    svc.flush().await;
    let (rss1, db1) = (
        rss_bytes(),
        std::fs::metadata(dir.path().join("status.redb"))
            .unwrap()
            .len(),
    );
    println!(
        "allow-list: {codes:?}; RSS {} -> {} MiB; status.redb {db0} -> {db1} bytes",
        rss0 >> 20,
        rss1 >> 20
    );
    assert_eq!(
        (codes.get(&202), codes.get(&429)),
        (Some(&64), Some(&(N - 64))),
        "{codes:?}"
    );
    assert_eq!(svc.latest().await.len(), 64);
    assert!(db1 < db0 + (2 << 20), "status.redb grew to {db1} bytes");
    assert!(
        rss1 < rss0 + (16 << 20),
        "RSS grew {} MiB",
        (rss1 - rss0) >> 20
    );
    svc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowloris_from_one_address_does_not_slow_another_client() {
    let dir = tempfile::tempdir().unwrap();
    let svc = start(dir.path()).await;
    let cancel = CancellationToken::new();
    let (source, _) = node_source(5);
    let node_metrics = metrics::serve_node_metrics(any_port(), source, cancel.clone())
        .await
        .unwrap();
    for target in [svc.http_addr, node_metrics.addr] {
        // 500 sockets from 127.0.0.1 that connect and send half a request head, then nothing.
        let mut idle = Vec::new();
        for _ in 0..500 {
            let mut s = tokio::net::TcpStream::connect(target).await.unwrap();
            let _ = tokio::io::AsyncWriteExt::write_all(&mut s, b"GET / HTTP/1.1\r\n").await;
            idle.push(s);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        // Another client (127.0.0.2) is served at once.
        let path = if target == svc.http_addr {
            status::STATUS_PATH
        } else {
            "/metrics"
        };
        for _ in 0..5 {
            let t = Instant::now();
            let (code, body) = request_from([127, 0, 0, 2], target, "GET", path, b"").await;
            let took = t.elapsed();
            assert_eq!(code, 200, "{body}");
            assert!(
                took < Duration::from_secs(1),
                "{path} took {took:?} under a slowloris"
            );
        }
        // And a report from a third address is taken.
        if target == svc.http_addr {
            let k = key(1);
            let t = Instant::now();
            let (code, body) = request_from(
                [127, 0, 0, 3],
                target,
                "POST",
                status::REPORTS_PATH,
                &wire(&report(&k, status::now_ms()), &k),
            )
            .await;
            assert_eq!(code, 202, "{body}");
            assert!(t.elapsed() < Duration::from_secs(1));
        }
        // The attacker's sockets beyond its share were closed (their heads never finished).
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        let mut closed = 0;
        for s in &mut idle {
            let mut buf = [0u8; 256];
            let read = tokio::time::timeout(
                Duration::from_millis(5),
                tokio::io::AsyncReadExt::read(s, &mut buf),
            )
            .await;
            if matches!(read, Ok(Ok(0)) | Ok(Err(_))) {
                closed += 1;
            }
        }
        assert!(closed >= 480, "only {closed} of 500 idle sockets closed");
        drop(idle);
    }
    cancel.cancel();
    node_metrics.join().await;
    svc.shutdown().await;
}

#[tokio::test]
async fn idle_connections_are_closed_after_the_header_timeout() {
    use tokio::io::AsyncReadExt;
    let dir = tempfile::tempdir().unwrap();
    let opts = StatusOptions {
        http: http::ServerOptions {
            header_timeout: Duration::from_millis(200),
            ..http::ServerOptions::default()
        },
        ..opts()
    };
    let svc = status::start(dir.path(), any_port(), opts, CancellationToken::new())
        .await
        .unwrap();
    // Half a request head, then silence.
    let mut s = tokio::net::TcpStream::connect(svc.http_addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut s, b"GET / HTTP/1.1\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    assert!(
        read.is_ok(),
        "the server should close a connection that stalls"
    );
    svc.shutdown().await;
}

#[tokio::test]
async fn shutdown_cuts_stalled_requests_after_the_drain_time() {
    let dir = tempfile::tempdir().unwrap();
    let opts = StatusOptions {
        http: http::ServerOptions {
            header_timeout: Duration::from_secs(60),
            body_timeout: Duration::from_secs(60),
            drain: Duration::from_millis(200),
            ..http::ServerOptions::default()
        },
        ..opts()
    };
    let svc = status::start(dir.path(), any_port(), opts, CancellationToken::new())
        .await
        .unwrap();
    // A request whose body never finishes.
    let mut s = tokio::net::TcpStream::connect(svc.http_addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(
        &mut s,
        b"POST /api/v1/reports HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{\"kind\"",
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stopped = tokio::time::timeout(Duration::from_secs(5), svc.shutdown()).await;
    assert!(
        stopped.is_ok(),
        "shutdown should not wait for a stalled client"
    );
}

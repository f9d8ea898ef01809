//! The Status service over real sockets (127.0.0.1, port 0) with a real redb in a temp dir.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use btfs_core::signed::{Signed, StatusReport};
use btfs_host::http::{self, HttpUrl};
use btfs_host::shard_service::ServiceStats;
use btfs_host::status::{self, metrics, reporter, StatusOptions};
use btfs_host::store::{BlobStore, MemStore};
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
    status::start(
        dir,
        any_port(),
        StatusOptions::for_tests(),
        CancellationToken::new(),
    )
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
    assert_eq!(svc.get(&peer(&k)).unwrap().uptime_secs, 42);
    assert_eq!(svc.latest().len(), 1);

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
        ..StatusOptions::for_tests()
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
        ..StatusOptions::for_tests()
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
    let h = svc.get(&peer(&k)).expect("the peer survives a restart");
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
        if let Some(h) = svc.get(&peer(&key(3))) {
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
async fn many_connections_at_once_are_served_within_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let opts = StatusOptions {
        http: http::ServerOptions {
            max_connections: 4,
            ..http::ServerOptions::default()
        },
        ..StatusOptions::for_tests()
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
            post(&url, wire(&report(&k, now), &k)).await.0
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), StatusCode::ACCEPTED);
    }
    assert_eq!(status::fetch(&svc.url()).await.unwrap().totals.hosts, 50);
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
        ..StatusOptions::for_tests()
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
        ..StatusOptions::for_tests()
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

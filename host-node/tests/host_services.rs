//! A host that runs the Hub and Status services next to its storage (`btfs host --services
//! hub,status`), in-process over real TCP on 127.0.0.1: other hosts announce to its Hub and
//! report to its Status, a tenant gets them recommended by it — the service host itself too, as
//! it announces to its own Hub — and it still stores shards; a restart keeps its Status URL and
//! its Hub registry.

use std::path::Path;
use std::time::{Duration, Instant};

use btfs_core::hub::{HubRequest, HubResponse, RecommendRequest};
use btfs_core::Root;
use btfs_host::host::config::{HostConfig, Transport};
use btfs_host::host::{Node, NodeHandle};
use btfs_host::services::ServiceKind;
use btfs_host::tenant::network_file::KnownHost;
use btfs_host::tenant::{shard_client, Tenant};
use libp2p::PeerId;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Every wait in this test gives up after this long.
const LIMIT: Duration = Duration::from_secs(30);

fn tcp_config(dir: &Path) -> HostConfig {
    HostConfig {
        transports: vec![Transport::Tcp],
        announce_interval_secs: 1,
        report_interval_secs: 1,
        ..HostConfig::for_tests(dir)
    }
}

async fn start_service_host(dir: &Path) -> NodeHandle {
    Node::spawn(HostConfig {
        services: vec![ServiceKind::Hub, ServiceKind::Status],
        probe_interval_ms: 200,
        ..tcp_config(dir)
    })
    .await
    .unwrap()
}

/// Asks `hub`'s Hub for as many hosts as `peers` until all are recommended (announced and
/// probed).
async fn wait_recommended(tenant: &Tenant, hub: &NodeHandle, peers: &[PeerId]) {
    let start = Instant::now();
    loop {
        let req = RecommendRequest {
            count: peers.len() as u32,
            shard_size: 1 << 20,
            shards_per_host: 1,
            duration_days: 30,
            prefs: Default::default(),
        };
        let answer = tenant
            .net()
            .hub_request(hub.peer_id(), hub.full_addrs(), HubRequest::Recommend(req))
            .await
            .unwrap();
        let HubResponse::Recommendation(r) = answer else {
            panic!("unexpected answer {answer:?}");
        };
        let listed = |p: &PeerId| r.hosts.iter().any(|h| h.peer_id == p.to_base58());
        if peers.iter().all(listed) {
            return;
        }
        assert!(
            start.elapsed() < LIMIT,
            "hosts not recommended within {LIMIT:?}: {} hosts, excluded {:?}",
            r.hosts.len(),
            r.excluded
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `GET path` on the Status server at `url` (`http://IP:PORT`): status code and body.
async fn http_get(url: &str, path: &str) -> (u16, String) {
    let authority = url.strip_prefix("http://").unwrap();
    let mut s = tokio::net::TcpStream::connect(authority).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(LIMIT, s.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&out).to_string();
    let code = text.split(' ').nth(1).unwrap().parse().unwrap();
    let body = text.split_once("\r\n\r\n").unwrap().1.to_string();
    (code, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_with_hub_and_status_serves_both_and_still_stores_shards() {
    btfs_host::install_crypto_provider();
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let a = start_service_host(dirs[0].path()).await;
    assert_eq!(
        a.services().kinds(),
        vec![ServiceKind::Hub, ServiceKind::Status]
    );
    let status_url = a.services().status_url().unwrap();
    assert_eq!(a.info().status_http.as_deref(), Some(status_url.as_str()));
    let hub_addr = a.full_addrs()[0].to_string();

    // Two plain hosts announce to A's Hub and report to A's Status.
    let mut others = Vec::new();
    for dir in &dirs[1..] {
        let config = HostConfig {
            hub: Some(hub_addr.clone()),
            status_url: Some(status_url.clone()),
            ..tcp_config(dir.path())
        };
        others.push(Node::spawn(config).await.unwrap());
    }
    let peers: Vec<PeerId> = others.iter().map(NodeHandle::peer_id).collect();

    // A tenant asks A's Hub over A's own swarm: both hosts are recommended once probed.
    let tenant = Tenant::start(vec![KnownHost {
        peer: a.peer_id(),
        addrs: a.full_addrs(),
    }])
    .await
    .unwrap();
    wait_recommended(&tenant, &a, &peers).await;
    // A announces to its own Hub (it names no other), so it is registered and recommended too.
    let mut all = peers.clone();
    all.push(a.peer_id());
    wait_recommended(&tenant, &a, &all).await;
    assert_eq!(a.services().hub().unwrap().len(), 3);

    // A's Status admitted their signed reports (it admits what its Hub knows).
    let status = a.services().status().unwrap();
    let start = Instant::now();
    loop {
        let mut reported = 0;
        for p in &peers {
            if status
                .get(&p.to_base58())
                .await
                .is_some_and(|h| h.reports > 0)
            {
                reported += 1;
            }
        }
        if reported == peers.len() {
            break;
        }
        assert!(start.elapsed() < LIMIT, "no reports within {LIMIT:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (code, body) = http_get(&status_url, btfs_host::services::status::STATUS_PATH).await;
    assert_eq!(code, 200, "{body}");
    for p in &peers {
        assert!(body.contains(&p.to_base58()), "{body}");
    }

    // And A still stores shards.
    let peer = tenant.connect(0).await.unwrap();
    let mut control = tenant.net().control();
    let shard = vec![7u8; 64 * 1024];
    let root = Root::of(&shard);
    shard_client::put(&mut control, peer, root, &shard)
        .await
        .unwrap();
    let back = shard_client::get(&mut control, peer, root, 1 << 20)
        .await
        .unwrap();
    assert_eq!(back, shard);
    assert_eq!(a.store().used(), 64 * 1024);
    tenant.shutdown().await;

    // A restart keeps the Status URL, the Hub's registry and the shard.
    let before = a.info();
    a.shutdown().await;
    let a = start_service_host(dirs[0].path()).await;
    assert_eq!(a.info().status_http, before.status_http);
    assert_eq!(a.info().addrs, before.addrs);
    assert_eq!(a.services().hub().unwrap().len(), 3);
    assert_eq!(a.store().used(), 64 * 1024);

    for h in others {
        h.shutdown().await;
    }
    a.shutdown().await;
}

#[tokio::test]
async fn unknown_or_incomplete_service_lists_are_refused_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    let config = HostConfig {
        services: vec![ServiceKind::Status],
        ..tcp_config(dir.path())
    };
    let err = Node::spawn(config).await.err().unwrap().to_string();
    assert!(err.contains("status needs hub"), "{err}");
    // Nothing was created: the config is checked first.
    assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none());
    let e = ServiceKind::parse_list("hub,bank").unwrap_err().to_string();
    assert!(e.contains("valid services are hub, status"), "{e}");
}

/// The `btfs` binary: `btfs host --services` refuses bad lists with the valid names, and a good
/// one prints where its Status server listens next to the host's addresses.
#[test]
fn the_cli_flag_is_checked_and_reported() {
    let bin = env!("CARGO_BIN_EXE_btfs");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("host");
    let data = data.to_str().unwrap();
    let run = |services: &str| {
        std::process::Command::new(bin)
            .args(["host", "--data-dir", data, "--transports", "tcp"])
            .args(["--services", services])
            .output()
            .unwrap()
    };
    let o = run("hub,bank");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("unknown service \"bank\": valid services are hub, status, escrow, guard"),
        "{err}"
    );
    let o = run("status");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("service status needs hub on the same node"),
        "{err}"
    );

    let mut child = std::process::Command::new(bin)
        .args([
            "host",
            "--data-dir",
            data,
            "--transports",
            "tcp",
            "--no-metrics",
        ])
        .args(["--services", "hub,status"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)).map_while(Result::ok) {
            let done = line.starts_with("status: http://127.0.0.1:");
            lines.push(line);
            if done {
                let _ = tx.send(lines);
                return;
            }
        }
    });
    let lines = rx.recv_timeout(LIMIT);
    child.kill().unwrap();
    child.wait().unwrap();
    let lines = lines.expect("btfs host did not print its Status URL in time");
    assert!(lines
        .iter()
        .any(|l| l.starts_with("listening on /ip4/127.0.0.1/tcp/")));
    assert!(lines
        .iter()
        .any(|l| l == "hub: serving on the addresses above"));
    let info: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("host/node.json")).unwrap()).unwrap();
    assert_eq!(info["services"], serde_json::json!(["hub", "status"]));
    assert!(info["status_http"]
        .as_str()
        .unwrap()
        .starts_with("http://127.0.0.1:"));
}

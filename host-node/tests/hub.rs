//! A Hub and hosts in-process over real TCP on loopback: hosts announce signed ads, the Hub
//! probes them, a host that stops drops out of recommendations and comes back after a restart,
//! forged ads are refused, and a Hub restart keeps its registry.

use std::path::Path;
use std::time::{Duration, Instant};

use btfs_core::hub::{HubRequest, HubResponse, RecommendRequest, Recommendation};
use btfs_core::signed::{HostAd, Signed};
use btfs_host::host::config::{HostConfig, Transport};
use btfs_host::host::{Node, NodeHandle};
use btfs_host::net::Net;
use btfs_host::services::hub::server::{self, HubHandle, HubOptions};
use libp2p::identity::Keypair;
use libp2p::{Multiaddr, PeerId};
use tokio_util::sync::CancellationToken;

const PROBE: Duration = Duration::from_millis(400);

fn tcp_config(dir: &Path) -> HostConfig {
    HostConfig {
        transports: vec![Transport::Tcp],
        ..HostConfig::for_tests(dir)
    }
}

struct HubNode {
    node: NodeHandle,
    hub: HubHandle,
    cancel: CancellationToken,
}

async fn start_hub(dir: &Path) -> HubNode {
    let node = Node::spawn(tcp_config(dir)).await.unwrap();
    let cancel = CancellationToken::new();
    let opts = HubOptions {
        probe_interval: PROBE,
        announce_interval: Duration::from_secs(1),
        ..HubOptions::default()
    };
    let hub = server::start(node.net().clone(), dir, opts, cancel.clone())
        .await
        .unwrap();
    HubNode { node, hub, cancel }
}

impl HubNode {
    fn addr(&self) -> Multiaddr {
        self.node.full_addrs()[0].clone()
    }

    async fn stop(self) {
        self.cancel.cancel();
        self.hub.join().await;
        self.node.shutdown().await;
    }
}

async fn start_host(dir: &Path, hub: &Multiaddr) -> NodeHandle {
    let config = HostConfig {
        hub: Some(hub.to_string()),
        announce_interval_secs: 1,
        ..tcp_config(dir)
    };
    Node::spawn(config).await.unwrap()
}

async fn client() -> (Net, CancellationToken) {
    let cancel = CancellationToken::new();
    let (net, _, _) = Net::start(
        Keypair::generate_ed25519(),
        None,
        Default::default(),
        Vec::new(),
        cancel.clone(),
    )
    .await
    .unwrap();
    (net, cancel)
}

async fn ask(net: &Net, hub: &HubNode, request: HubRequest) -> HubResponse {
    net.hub_request(hub.node.peer_id(), vec![hub.addr()], request)
        .await
        .unwrap()
}

async fn recommend(net: &Net, hub: &HubNode, count: u32) -> Recommendation {
    let req = RecommendRequest {
        count,
        shard_size: 1 << 20,
        shards_per_host: 1,
        duration_days: 30,
        prefs: Default::default(),
    };
    match ask(net, hub, HubRequest::Recommend(req)).await {
        HubResponse::Recommendation(r) => r,
        other => panic!("unexpected answer {other:?}"),
    }
}

/// Polls until `ok` holds for a recommendation, or fails after `limit` with the last one.
async fn wait_for(
    net: &Net,
    hub: &HubNode,
    limit: Duration,
    ok: impl Fn(&Recommendation) -> bool,
) -> Recommendation {
    let start = Instant::now();
    loop {
        let r = recommend(net, hub, 10).await;
        if ok(&r) {
            return r;
        }
        assert!(
            start.elapsed() < limit,
            "condition not met within {limit:?}; last: {:?} hosts, excluded {:?}",
            r.hosts.len(),
            r.excluded
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn has(r: &Recommendation, peer: PeerId) -> bool {
    r.hosts.iter().any(|h| h.peer_id == peer.to_base58())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_announce_drop_out_when_dead_and_come_back_after_restart() {
    btfs_host::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let hub = start_hub(&dir.path().join("hub")).await;
    let mut hosts = Vec::new();
    for i in 0..4 {
        hosts.push(start_host(&dir.path().join(format!("h{i}")), &hub.addr()).await);
    }
    let (net, _c) = client().await;
    let r = wait_for(&net, &hub, Duration::from_secs(20), |r| r.hosts.len() == 4).await;
    assert_eq!(
        r.registered, 4,
        "the hub node itself must not be registered"
    );
    for h in &r.hosts {
        h.ad.verify::<HostAd>().unwrap();
        assert!(h.score.total > 0.0);
    }

    // Stop one host; it must leave recommendations within two probe intervals (+ slack for
    // a loaded machine), counted as offline.
    let victim = hosts.remove(0);
    let (victim_id, victim_dir) = (victim.peer_id(), dir.path().join("h0"));
    victim.shutdown().await;
    let r = wait_for(&net, &hub, PROBE * 2 + Duration::from_secs(3), |r| {
        !has(r, victim_id)
    })
    .await;
    assert_eq!(r.excluded.offline, 1, "{:?}", r.excluded);
    assert_eq!(r.hosts.len(), 3);

    // Restarted (same identity and port), it comes back.
    let back = start_host(&victim_dir, &hub.addr()).await;
    assert_eq!(back.peer_id(), victim_id);
    let r = wait_for(&net, &hub, Duration::from_secs(10), |r| has(r, victim_id)).await;
    assert_eq!(r.hosts.len(), 4);
    let again = r
        .hosts
        .iter()
        .find(|h| h.peer_id == victim_id.to_base58())
        .unwrap();
    assert!(again.facts.uptime < 1.0, "the outage must show in uptime");

    // A Hub restart keeps the registry: hosts are listed before any of them re-announces.
    let first_seen: Vec<(String, f64)> = r
        .hosts
        .iter()
        .map(|h| (h.peer_id.clone(), h.facts.age_days))
        .collect();
    for h in hosts {
        h.shutdown().await;
    }
    back.shutdown().await;
    hub.stop().await;
    let hub = start_hub(&dir.path().join("hub")).await;
    let listed = match ask(&net, &hub, HubRequest::Hosts { limit: 100 }).await {
        HubResponse::Hosts(h) => h,
        other => panic!("unexpected answer {other:?}"),
    };
    assert_eq!(listed.len(), 4);
    for (peer, age) in first_seen {
        let h = listed.iter().find(|h| h.peer_id == peer).unwrap();
        assert!(h.facts.age_days >= age, "first-seen time was lost");
    }
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_relayed_ads_are_refused() {
    btfs_host::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let hub = start_hub(&dir.path().join("hub")).await;
    let (net, _c) = client().await;
    let key = Keypair::generate_ed25519();
    let ed = key.clone().try_into_ed25519().unwrap();
    let now = server::now_ms();
    let ad = |peer: &PeerId| HostAd {
        peer_id: peer.to_base58(),
        addrs: vec!["/ip4/127.0.0.1/tcp/9".into()],
        capacity_bytes: 1 << 30,
        free_bytes: 1 << 30,
        price_per_gib_month: 1,
        version: "0.1.0".into(),
        region: None,
        issued_at_ms: now,
    };
    let refused = |r: HubResponse| match r {
        HubResponse::Refused { reason } => reason,
        other => panic!("expected a refusal, got {other:?}"),
    };

    // Signed by the sender, but the payload was altered afterwards.
    let mut s = Signed::sign(&ad(&key.public().to_peer_id()), &ed).unwrap();
    s.payload = s
        .payload
        .replace("\"price_per_gib_month\":1", "\"price_per_gib_month\":0");
    let why = refused(ask(&net, &hub, HubRequest::Announce(s)).await);
    assert!(why.contains("bad signature"), "{why}");

    // An ad claiming another peer's id.
    let other = Keypair::generate_ed25519().public().to_peer_id();
    let s = Signed::sign(&ad(&other), &ed).unwrap();
    let why = refused(ask(&net, &hub, HubRequest::Announce(s)).await);
    assert!(why.contains("claims peer"), "{why}");

    // A valid ad of `key`, relayed by the client (a different peer).
    let s = Signed::sign(&ad(&key.public().to_peer_id()), &ed).unwrap();
    let why = refused(ask(&net, &hub, HubRequest::Announce(s)).await);
    assert!(why.contains("announce themselves"), "{why}");

    // A request over the size limit never reaches the Hub's logic: the stream is refused.
    let mut big = ad(&key.public().to_peer_id());
    big.region = Some("x".repeat(200));
    let mut s = Signed::sign(&big, &ed).unwrap();
    s.payload = "y".repeat(70 * 1024);
    let r = net
        .hub_request(
            hub.node.peer_id(),
            vec![hub.addr()],
            HubRequest::Announce(s),
        )
        .await;
    assert!(r.is_err(), "an oversized request was answered: {r:?}");

    let r = recommend(&net, &hub, 5).await;
    assert_eq!(r.registered, 0, "a refused ad was registered");
    // Bad request bounds get a clear error.
    let bad = RecommendRequest {
        count: 0,
        shard_size: 1,
        shards_per_host: 1,
        duration_days: 1,
        prefs: Default::default(),
    };
    match ask(&net, &hub, HubRequest::Recommend(bad)).await {
        HubResponse::Error { message } => assert!(message.contains("count"), "{message}"),
        other => panic!("unexpected answer {other:?}"),
    }
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_registers_a_bounded_number_of_new_hosts() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::spawn(tcp_config(dir.path())).await.unwrap();
    let cancel = CancellationToken::new();
    let opts = HubOptions {
        probe_interval: PROBE,
        new_hosts_per_ip: 2,
        ..HubOptions::default()
    };
    let hub_handle = server::start(node.net().clone(), dir.path(), opts, cancel.clone())
        .await
        .unwrap();
    let hub = HubNode {
        node,
        hub: hub_handle,
        cancel,
    };
    // Four fresh identities, all from 127.0.0.1, each announcing itself.
    let announce = |key: Keypair, issued_at_ms: u64| {
        let hub_peer = hub.node.peer_id();
        let hub_addr = hub.addr();
        async move {
            let cancel = CancellationToken::new();
            let (net, _, _) = Net::start(
                key.clone(),
                None,
                Default::default(),
                Vec::new(),
                cancel.clone(),
            )
            .await
            .unwrap();
            let ad = HostAd {
                peer_id: key.public().to_peer_id().to_base58(),
                addrs: vec!["/ip4/127.0.0.1/tcp/9".into()],
                capacity_bytes: 1 << 30,
                free_bytes: 1 << 30,
                price_per_gib_month: 1,
                version: "0.1.0".into(),
                region: None,
                issued_at_ms,
            };
            let s = Signed::sign(&ad, &key.try_into_ed25519().unwrap()).unwrap();
            let r = net
                .hub_request(hub_peer, vec![hub_addr], HubRequest::Announce(s))
                .await
                .unwrap();
            cancel.cancel();
            r
        }
    };
    let now = server::now_ms();
    let keys: Vec<Keypair> = (0..4).map(|_| Keypair::generate_ed25519()).collect();
    for k in &keys[..2] {
        let r = announce(k.clone(), now).await;
        assert!(matches!(r, HubResponse::Accepted { .. }), "{r:?}");
    }
    for k in &keys[2..] {
        match announce(k.clone(), now).await {
            HubResponse::Refused { reason } => {
                assert!(
                    reason.contains("already registered 2 new hosts"),
                    "{reason}"
                )
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
    // A registered host keeps announcing from the same address.
    let r = announce(keys[0].clone(), now + 1).await;
    assert!(matches!(r, HubResponse::Accepted { .. }), "{r:?}");
    assert_eq!(hub.hub.len(), 2);
    hub.stop().await;
}

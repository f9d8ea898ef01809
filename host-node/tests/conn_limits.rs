//! libp2p connection limits on a real host (TCP on 127.0.0.1, real swarms as attackers): one
//! peer opening many connections, and many fresh peers opening one each, stay within the
//! configured limits (per peer, inbound total, per IP address), and the host keeps serving a
//! client that was connected before; slots come back when the attackers leave.

use std::path::Path;
use std::time::{Duration, Instant};

use btfs_core::Root;
use btfs_host::host::config::{HostConfig, Transport};
use btfs_host::host::{Node, NodeHandle};
use btfs_host::net::{ConnLimits, Net};
use btfs_host::tenant::shard_client;
use futures::StreamExt;
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{dummy, SwarmEvent};
use libp2p::{noise, tcp, yamux, Multiaddr, PeerId, Swarm};
use tokio_util::sync::CancellationToken;

async fn start_host(dir: &Path, connections: ConnLimits) -> NodeHandle {
    let config = HostConfig {
        transports: vec![Transport::Tcp],
        connections,
        ..HostConfig::for_tests(dir)
    };
    Node::spawn(config).await.unwrap()
}

fn tcp_addr(host: &NodeHandle) -> Multiaddr {
    let mut a = host.full_addrs()[0].clone();
    assert!(matches!(a.pop(), Some(Protocol::P2p(_))));
    a
}

/// A bare swarm (no protocols) that keeps idle connections open, so only the host's limits
/// decide how many survive.
fn attacker() -> Swarm<dummy::Behaviour> {
    libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .unwrap()
        .with_behaviour(|_| dummy::Behaviour)
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build()
}

/// Drives `swarms` for `time`; returns how many connections each has open at the end.
async fn drive(swarms: &mut [Swarm<dummy::Behaviour>], time: Duration) -> Vec<usize> {
    let mut open = vec![0i64; swarms.len()];
    let until = Instant::now() + time;
    while Instant::now() < until {
        let mut events = futures::stream::select_all(
            swarms
                .iter_mut()
                .enumerate()
                .map(|(i, s)| s.map(move |e| (i, e)).boxed()),
        );
        let Ok(Some((i, e))) = tokio::time::timeout(Duration::from_millis(50), events.next()).await
        else {
            continue;
        };
        match e {
            SwarmEvent::ConnectionEstablished { .. } => open[i] += 1,
            SwarmEvent::ConnectionClosed { .. } => open[i] -= 1,
            _ => {}
        }
    }
    open.into_iter().map(|n| n.max(0) as usize).collect()
}

async fn client_with_a_blob(host: &NodeHandle) -> (Net, CancellationToken, Root) {
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
    net.connect(host.peer_id(), vec![tcp_addr(host)])
        .await
        .unwrap();
    let blob = b"still served".to_vec();
    let root = Root::of(&blob);
    shard_client::put(&mut net.control(), host.peer_id(), root, &blob)
        .await
        .unwrap();
    (net, cancel, root)
}

async fn still_served(net: &Net, host: PeerId, root: Root) {
    let t = Instant::now();
    let got = shard_client::get(&mut net.control(), host, root, 1 << 20)
        .await
        .unwrap();
    assert_eq!(got, b"still served");
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_peer_gets_at_most_its_per_peer_connections() {
    let dir = tempfile::tempdir().unwrap();
    let limits = ConnLimits {
        max_established_per_peer: 2,
        ..ConnLimits::default()
    };
    let host = start_host(dir.path(), limits).await;
    let (net, cancel, root) = client_with_a_blob(&host).await;
    let mut swarms = vec![attacker()];
    for _ in 0..20 {
        swarms[0]
            .dial(
                DialOpts::peer_id(host.peer_id())
                    .addresses(vec![tcp_addr(&host)])
                    .condition(PeerCondition::Always)
                    .build(),
            )
            .unwrap();
    }
    let open = drive(&mut swarms, Duration::from_secs(3)).await;
    println!("one peer, 20 dials: {} connections survive", open[0]);
    assert!(open[0] <= 2, "{} connections from one peer", open[0]);
    assert!(open[0] >= 1, "the peer should keep its share");
    still_served(&net, host.peer_id(), root).await;
    cancel.cancel();
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_fresh_peers_get_at_most_the_total_and_the_host_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let limits = ConnLimits {
        max_established_incoming: 6,
        ..ConnLimits::default()
    };
    let host = start_host(dir.path(), limits).await;
    // Connected before the flood (1 of the 6 inbound slots).
    let (net, cancel, root) = client_with_a_blob(&host).await;
    let mut swarms: Vec<_> = (0..30).map(|_| attacker()).collect();
    for s in &mut swarms {
        s.dial(
            DialOpts::peer_id(host.peer_id())
                .addresses(vec![tcp_addr(&host)])
                .build(),
        )
        .unwrap();
    }
    let open: usize = drive(&mut swarms, Duration::from_secs(3))
        .await
        .iter()
        .sum();
    println!("30 fresh peers: {open} connections survive (limit 6 inbound, 1 taken)");
    assert!(open <= 5, "{open} inbound connections over the limit");
    still_served(&net, host.peer_id(), root).await;
    cancel.cancel();
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_gets_at_most_its_per_ip_connections_whatever_the_peer_ids() {
    let dir = tempfile::tempdir().unwrap();
    let limits = ConnLimits {
        max_incoming_per_ip: 4,
        ..ConnLimits::default()
    };
    let host = start_host(dir.path(), limits).await;
    // From 127.0.0.1, connected first (1 of that address's 4).
    let (net, cancel, root) = client_with_a_blob(&host).await;
    let dial = |s: &mut Swarm<dummy::Behaviour>| {
        s.dial(
            DialOpts::peer_id(host.peer_id())
                .addresses(vec![tcp_addr(&host)])
                .build(),
        )
        .unwrap();
    };
    let mut flood: Vec<_> = (0..20).map(|_| attacker()).collect();
    flood.iter_mut().for_each(dial);
    let open: usize = drive(&mut flood, Duration::from_secs(3)).await.iter().sum();
    println!("20 fresh peers from 127.0.0.1: {open} connections survive (limit 4, 1 taken)");
    assert!(open <= 3, "{open} connections from one address");
    still_served(&net, host.peer_id(), root).await;
    // The address's slots come back once the attackers leave.
    drop(flood);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut later: Vec<_> = (0..3).map(|_| attacker()).collect();
    later.iter_mut().for_each(dial);
    let open_later: usize = drive(&mut later, Duration::from_secs(2)).await.iter().sum();
    println!("after the flood left: {open_later} of 3 new peers connect");
    assert_eq!(open_later, 3, "slots are released when connections close");
    cancel.cancel();
    host.shutdown().await;
}

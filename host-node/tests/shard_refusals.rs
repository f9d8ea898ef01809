//! A real in-process host on real TCP sockets: every refusal reaches the requester at once,
//! whatever the body size (below and above the ~256 KiB yamux stream window); holds, release,
//! claim and the grace-period sweep work over the wire and survive a restart; a FIFO in the
//! store is answered at once, never served.

use std::time::{Duration, Instant};

use btfs_core::protocol::{self, Op, RequestHead, Status, MAX_BLOB_LEN, MAX_CLAIM_LEN, PROTOCOL};
use btfs_core::Root;
use btfs_host::host::config::{HostConfig, Transport};
use btfs_host::host::{Node, NodeHandle};
use btfs_host::tenant::network_file::KnownHost;
use btfs_host::tenant::shard_client;
use btfs_host::tenant::Tenant;
use futures::AsyncWriteExt;
use libp2p::StreamProtocol;

/// Generous bound for "at once" (the old client waited 60 s).
const AT_ONCE: Duration = Duration::from_secs(1);
/// Bodies below and above the stream window, up to one byte over the protocol limit.
const SIZES: [usize; 4] = [1 << 10, 300 << 10, 4 << 20, (4 << 20) + 1];

async fn host(dir: &std::path::Path, tweak: impl FnOnce(&mut HostConfig)) -> NodeHandle {
    let mut config = HostConfig {
        transports: vec![Transport::Tcp],
        metrics: false,
        ..HostConfig::for_tests(dir)
    };
    tweak(&mut config);
    Node::spawn(config).await.unwrap()
}

async fn tenant_of(node: &NodeHandle) -> Tenant {
    let t = Tenant::start(vec![KnownHost {
        peer: node.peer_id(),
        addrs: node.full_addrs(),
    }])
    .await
    .unwrap();
    t.connect(0).await.unwrap();
    t
}

/// One raw exchange on a fresh stream; returns the status, the message and the time it took.
async fn timed(tenant: &Tenant, head: RequestHead, body: &[u8]) -> (Status, String, Duration) {
    let peer = tenant.hosts()[0].peer;
    let started = Instant::now();
    let mut s = tenant
        .net()
        .control()
        .open_stream(peer, StreamProtocol::new(PROTOCOL))
        .await
        .unwrap();
    let (status, msg) = tokio::time::timeout(
        Duration::from_secs(20),
        protocol::exchange(&mut s, &head, body, MAX_BLOB_LEN),
    )
    .await
    .expect("no answer within 20 s")
    .unwrap();
    (
        status,
        String::from_utf8_lossy(&msg).into_owned(),
        started.elapsed(),
    )
}

fn put_head(body: &[u8]) -> RequestHead {
    RequestHead {
        op: Op::Put,
        root: Root::of(body),
        len: body.len() as u32,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_arrives_at_once_whatever_the_body_size() {
    btfs_host::install_crypto_provider();
    let (d1, d2, d3) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let roomy = host(d1.path(), |_| {}).await;
    let full = host(d2.path(), |c| c.quota = "512".into()).await;
    let strict = host(d3.path(), |c| {
        c.max_inbound_streams = 1;
        c.max_streams_per_peer = 1;
    })
    .await;
    let (t_roomy, t_full, t_strict) = (
        tenant_of(&roomy).await,
        tenant_of(&full).await,
        tenant_of(&strict).await,
    );
    // The strict host's only slot is taken by a stream that sent half a header.
    let mut hog = t_strict
        .net()
        .control()
        .open_stream(strict.peer_id(), StreamProtocol::new(PROTOCOL))
        .await
        .unwrap();
    hog.write_all(&[1, 2, 3]).await.unwrap();
    hog.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    for len in SIZES {
        let body = vec![0x5Au8; len];
        let mut cases: Vec<(&str, &Tenant, RequestHead, Vec<u8>, Status)> = Vec::new();
        if len > MAX_BLOB_LEN as usize {
            cases.push((
                "put over 4 MiB",
                &t_roomy,
                put_head(&body),
                body.clone(),
                Status::TooLarge,
            ));
        } else {
            // Read in full, then refused.
            let wrong = RequestHead {
                root: Root::of(b"something else"),
                ..put_head(&body)
            };
            cases.push((
                "wrong root",
                &t_roomy,
                wrong,
                body.clone(),
                Status::RootMismatch,
            ));
        }
        let over = len > MAX_BLOB_LEN as usize;
        let full_status = if over {
            Status::TooLarge
        } else {
            Status::QuotaExceeded
        };
        cases.push((
            "full host",
            &t_full,
            put_head(&body),
            body.clone(),
            full_status,
        ));
        cases.push((
            "busy host",
            &t_strict,
            put_head(&body),
            body.clone(),
            Status::Busy,
        ));
        let get_with_body = RequestHead {
            op: Op::Get,
            ..put_head(&body)
        };
        cases.push((
            "GET with a body",
            &t_roomy,
            get_with_body,
            body.clone(),
            Status::BadRequest,
        ));
        let release_with_body = RequestHead {
            op: Op::Release,
            ..put_head(&body)
        };
        cases.push((
            "RELEASE with a body",
            &t_roomy,
            release_with_body,
            body.clone(),
            Status::BadRequest,
        ));
        let claim = RequestHead {
            op: Op::Claim,
            root: Root::from_bytes([0; 32]),
            len: len as u32,
        };
        let claim_status = if len as u32 > MAX_CLAIM_LEN {
            Status::TooLarge
        } else if len % 32 != 0 {
            Status::BadRequest
        } else {
            // 1 KiB of zero-byte roots this peer never put.
            Status::NotFound
        };
        let claim_body = if claim_status == Status::NotFound {
            vec![0u8; len]
        } else {
            body.clone()
        };
        cases.push(("CLAIM", &t_roomy, claim, claim_body, claim_status));
        for (what, tenant, head, body, want) in cases {
            let (status, msg, took) = timed(tenant, head, &body).await;
            assert_eq!(status, want, "{what}, {len} bytes: {msg}");
            assert!(took < AT_ONCE, "{what}, {len} bytes: refusal took {took:?}");
            assert!(!msg.is_empty(), "{what}: a refusal says why");
        }
        // The requester's real path (shard_client::put) gets the real reason at once too.
        let started = Instant::now();
        let err = shard_client::put(
            &mut t_full.net().control(),
            full.peer_id(),
            Root::of(&body),
            &body,
        )
        .await
        .unwrap_err();
        assert_eq!(err.status(), Some(full_status), "{err}");
        let why = if over {
            "exceeds the limit"
        } else {
            "host is full"
        };
        assert!(err.to_string().contains(why), "{err}");
        assert!(
            started.elapsed() < AT_ONCE,
            "{len}: {:?}",
            started.elapsed()
        );
    }
    // 4 MiB + 1 through shard_client: TooLarge at once.
    let body = vec![1u8; (4 << 20) + 1];
    let started = Instant::now();
    let err = shard_client::put(
        &mut t_roomy.net().control(),
        roomy.peer_id(),
        Root::of(&body),
        &body,
    )
    .await
    .unwrap_err();
    assert_eq!(err.status(), Some(Status::TooLarge), "{err}");
    assert!(started.elapsed() < AT_ONCE);

    // Nothing was stored anywhere, and every host still serves an honest put.
    assert_eq!((roomy.store().count(), full.store().count()), (0, 0));
    drop(hog);
    tokio::time::sleep(Duration::from_millis(200)).await;
    for (node, t) in [(&roomy, &t_roomy), (&strict, &t_strict)] {
        let blob = vec![3u8; 300 << 10];
        shard_client::put(
            &mut t.net().control(),
            node.peer_id(),
            Root::of(&blob),
            &blob,
        )
        .await
        .unwrap();
    }
    for t in [t_roomy, t_full, t_strict] {
        t.shutdown().await;
    }
    for n in [roomy, full, strict] {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_claim_and_sweep_over_the_wire_and_across_a_restart() {
    btfs_host::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let short_grace = |c: &mut HostConfig| {
        c.unclaimed_grace_secs = 2;
        c.sweep_interval_secs = 1;
    };
    let node = host(dir.path(), short_grace).await;
    let (alice, mallory) = (tenant_of(&node).await, tenant_of(&node).await);
    let peer = node.peer_id();
    let (mut ca, mut cm) = (alice.net().control(), mallory.net().control());
    let kept = vec![1u8; 100_000];
    let dropped = vec![2u8; 100_000];
    let (k, d) = (Root::of(&kept), Root::of(&dropped));
    shard_client::put(&mut ca, peer, k, &kept).await.unwrap();
    shard_client::put(&mut ca, peer, d, &dropped).await.unwrap();

    // Another peer can neither release nor claim Alice's blobs.
    let err = shard_client::release(&mut cm, peer, k).await.unwrap_err();
    assert_eq!(err.status(), Some(Status::Forbidden), "{err}");
    assert!(err.to_string().contains("only the peer that put"), "{err}");
    let err = shard_client::claim(&mut cm, peer, &[k]).await.unwrap_err();
    assert_eq!(err.status(), Some(Status::Forbidden), "{err}");
    assert_eq!(shard_client::stat(&mut cm, peer, k).await.unwrap(), 100_000);
    // Releasing what nobody holds: NotFound.
    let err = shard_client::release(&mut ca, peer, Root::of(b"nothing"))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(Status::NotFound), "{err}");

    // Alice claims one; the sweep drops the other once the grace period passed.
    shard_client::claim(&mut ca, peer, &[k]).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while node.store().count() > 1 {
        assert!(
            Instant::now() < deadline,
            "the unclaimed blob was never swept"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let err = shard_client::stat(&mut ca, peer, d).await.unwrap_err();
    assert_eq!(err.status(), Some(Status::NotFound), "{err}");
    assert_eq!(node.store().used(), 100_000);

    // Restart: holds are remembered.
    let other = vec![3u8; 1000];
    let o = Root::of(&other);
    shard_client::put(&mut ca, peer, o, &other).await.unwrap();
    mallory.shutdown().await;
    alice.shutdown().await;
    node.shutdown().await;
    let node = host(dir.path(), |c| c.unclaimed_grace_secs = 3600).await;
    let (alice2, mallory) = (tenant_of(&node).await, tenant_of(&node).await);
    let holds = node.store().holds(&k);
    assert_eq!(holds.len(), 1);
    assert!(holds[0].claimed);
    assert_eq!(node.store().holds(&o).len(), 1);
    let mut cm = mallory.net().control();
    let err = shard_client::release(&mut cm, peer, o).await.unwrap_err();
    assert_eq!(err.status(), Some(Status::Forbidden), "{err}");
    assert_eq!(node.store().count(), 2);
    // (Alice's restarted client has a new identity: it cannot release either.)
    let err = shard_client::release(&mut alice2.net().control(), peer, k)
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(Status::Forbidden), "{err}");
    mallory.shutdown().await;
    alice2.shutdown().await;
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifo_in_the_store_is_answered_at_once_and_never_served() {
    btfs_host::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let node = host(dir.path(), |_| {}).await;
    let t = tenant_of(&node).await;
    let peer = node.peer_id();
    let mut c = t.net().control();
    let blob = vec![4u8; 5000];
    let root = Root::of(&blob);
    shard_client::put(&mut c, peer, root, &blob).await.unwrap();
    let hex = root.to_hex();
    let path = dir.path().join("blobs").join(&hex[..2]).join(&hex);
    std::fs::remove_file(&path).unwrap();
    assert!(std::process::Command::new("mkfifo")
        .arg(&path)
        .status()
        .unwrap()
        .success());
    for _ in 0..3 {
        let started = Instant::now();
        let err = shard_client::get(&mut c, peer, root, 5000)
            .await
            .unwrap_err();
        assert_eq!(err.status(), Some(Status::Internal), "{err}");
        let err = shard_client::stat(&mut c, peer, root).await.unwrap_err();
        assert_eq!(err.status(), Some(Status::Internal), "{err}");
        assert!(started.elapsed() < AT_ONCE, "{:?}", started.elapsed());
    }
    // The host keeps serving.
    let other = vec![5u8; 5000];
    shard_client::put(&mut c, peer, Root::of(&other), &other)
        .await
        .unwrap();
    assert_eq!(
        shard_client::get(&mut c, peer, Root::of(&other), 5000)
            .await
            .unwrap(),
        other
    );
    t.shutdown().await;
    node.shutdown().await;
}

//! A host in-process, attacked with malformed and oversized requests: it answers with errors,
//! stores nothing, and keeps serving.

use btfs_core::protocol::{
    Op, RequestHead, ResponseHead, Status, MAX_BLOB_LEN, PROTOCOL, RESPONSE_HEAD_LEN,
};
use btfs_core::Root;
use btfs_host::host::config::{HostConfig, Transport};
use btfs_host::host::Node;
use btfs_host::tenant::network_file::KnownHost;
use btfs_host::tenant::shard_client;
use btfs_host::tenant::Tenant;
use futures::{AsyncReadExt, AsyncWriteExt};
use libp2p::StreamProtocol;

async fn raw_exchange(tenant: &Tenant, bytes: &[u8]) -> Option<(Status, String)> {
    let peer = tenant.hosts()[0].peer;
    let mut s = tenant
        .net()
        .control()
        .open_stream(peer, StreamProtocol::new(PROTOCOL))
        .await
        .ok()?;
    let _ = s.write_all(bytes).await;
    let _ = s.close().await;
    let mut head = [0u8; RESPONSE_HEAD_LEN];
    s.read_exact(&mut head).await.ok()?;
    let r = ResponseHead::decode(&head, MAX_BLOB_LEN).ok()?;
    let mut body = vec![0u8; r.len as usize];
    s.read_exact(&mut body).await.ok()?;
    Some((r.status, String::from_utf8_lossy(&body).into_owned()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_oversized_requests_get_errors_and_the_host_keeps_serving() {
    btfs_host::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let config = HostConfig {
        transports: vec![Transport::Tcp],
        ..HostConfig::for_tests(dir.path())
    };
    let node = Node::spawn(config).await.unwrap();
    let host = KnownHost {
        peer: node.peer_id(),
        addrs: node.full_addrs(),
    };
    let tenant = Tenant::start(vec![host]).await.unwrap();
    tenant.connect(0).await.unwrap();

    // Unknown op.
    let mut bad = [0u8; 37];
    bad[0] = 42;
    let (status, msg) = raw_exchange(&tenant, &bad).await.unwrap();
    assert_eq!(status, Status::BadRequest);
    assert!(msg.contains("unknown request op 42"), "{msg}");

    // A PUT announcing more than 4 MiB is refused before any body is read.
    let huge = RequestHead {
        op: Op::Put,
        root: Root::of(b"x"),
        len: MAX_BLOB_LEN + 1,
    };
    let (status, _) = raw_exchange(&tenant, &huge.encode()).await.unwrap();
    assert_eq!(status, Status::TooLarge);

    // A GET with a body is malformed.
    let get_with_body = RequestHead {
        op: Op::Get,
        root: Root::of(b"x"),
        len: 0,
    };
    let mut b = get_with_body.encode().to_vec();
    b[33] = 5;
    let (status, _) = raw_exchange(&tenant, &b).await.unwrap();
    assert_eq!(status, Status::BadRequest);

    // A truncated header gets no answer and costs the host nothing lasting.
    assert!(raw_exchange(&tenant, &[1, 2, 3]).await.is_none());

    // A body shorter than announced: the host never stores it.
    let short = RequestHead {
        op: Op::Put,
        root: Root::of(&[7u8; 1000]),
        len: 1000,
    };
    let mut b = short.encode().to_vec();
    b.extend_from_slice(&[7u8; 10]);
    assert!(raw_exchange(&tenant, &b).await.is_none());

    // Nothing was stored, and an honest put and get still work.
    assert_eq!(node.store().count(), 0);
    let mut control = tenant.net().control();
    let peer = node.peer_id();
    let blob = vec![9u8; 100_000];
    let root = Root::of(&blob);
    shard_client::put(&mut control, peer, root, &blob)
        .await
        .unwrap();
    assert_eq!(
        shard_client::get(&mut control, peer, root, 100_000)
            .await
            .unwrap(),
        blob
    );
    assert_eq!(
        shard_client::stat(&mut control, peer, root).await.unwrap(),
        100_000
    );
    // A GET answer larger than the requester allows is refused by the requester.
    let err = shard_client::get(&mut control, peer, root, 99_999)
        .await
        .unwrap_err();
    let cause = std::error::Error::source(&err).map(ToString::to_string);
    assert!(
        cause
            .as_deref()
            .is_some_and(|c| c.contains("exceeds the limit")),
        "{err}: {cause:?}"
    );

    tenant.shutdown().await;
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_host_refuses_puts_with_quota_exceeded() {
    btfs_host::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let config = HostConfig {
        transports: vec![Transport::Tcp],
        quota: "150000".into(),
        ..HostConfig::for_tests(dir.path())
    };
    let node = Node::spawn(config).await.unwrap();
    let tenant = Tenant::start(vec![KnownHost {
        peer: node.peer_id(),
        addrs: node.full_addrs(),
    }])
    .await
    .unwrap();
    let peer = tenant.connect(0).await.unwrap();
    let mut control = tenant.net().control();
    let a = vec![1u8; 100_000];
    shard_client::put(&mut control, peer, Root::of(&a), &a)
        .await
        .unwrap();
    let b = vec![2u8; 100_000];
    let err = shard_client::put(&mut control, peer, Root::of(&b), &b)
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(Status::QuotaExceeded), "{err}");
    assert!(err.to_string().contains("host is full"), "{err}");
    assert_eq!(node.store().used(), 100_000);
    tenant.shutdown().await;
    node.shutdown().await;
}

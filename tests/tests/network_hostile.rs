//! Hostile peers on the namespaced network (`btfs devnet --netns`; issue #13):
//!
//! - **DHT flooding**: a peer speaking our Kademlia protocol sends every host it can reach
//!   thousands of bogus provider records and value records. The hosts store none of them
//!   (`StoreInserts::FilterBoth`), their memory stays flat, a tenant bootstrapping through a
//!   flooded host still learns the real services, and downloads stay identical.
//! - **Replayed payments**: a tenant's signed deposit sent again and again is applied once
//!   (`replayed: true` after the first), and the same call id under another amount is refused.
//! - **Late and altered proofs**: a host frozen past the Guard's deadline fails its audits as
//!   late or silent; a host whose shard was altered on disk fails every audit of it. Neither is
//!   paid for those epochs. (A fabricated proof failing verification is core's
//!   `proof` tests and fuzz target.)

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use btfs_core::escrow::{Call, EscrowRequest, EscrowResponse, Op};
use btfs_core::signed::Signed;
use btfs_tests::{blob_path, hash_file, manifest_of, random_file, shard_location, Devnet};
use futures::StreamExt;
use libp2p::identity::Keypair;
use libp2p::{kad, noise, tcp, yamux, Multiaddr, PeerId, StreamProtocol};

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn json(net: &Devnet, args: &[&str]) -> Result<serde_json::Value> {
    net.run_json(args)
}

/// Floods the DHT through `target` for `how_long`: provider records and value records under
/// random keys; returns how many it sent on their way.
async fn flood_dht(target: PeerId, addr: Multiaddr, how_long: Duration) -> Result<u64> {
    let key = Keypair::generate_ed25519();
    let me = key.public().to_peer_id();
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )?
        .with_behaviour(|_| {
            let mut c = kad::Config::new(StreamProtocol::new(btfs_host::net::KAD_PROTOCOL));
            c.set_query_timeout(Duration::from_secs(5));
            let store = kad::store::MemoryStore::with_config(
                me,
                kad::store::MemoryStoreConfig {
                    max_records: 1 << 20,
                    max_provided_keys: 1 << 20,
                    ..Default::default()
                },
            );
            let mut k = kad::Behaviour::with_config(me, store, c);
            k.set_mode(Some(kad::Mode::Server));
            k
        })?
        .build();
    swarm.behaviour_mut().add_address(&target, addr);
    let deadline = tokio::time::Instant::now() + how_long;
    let mut sent = 0u64;
    let mut in_flight = 0usize;
    loop {
        while in_flight < 32 {
            let mut k = [0u8; 32];
            rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut k);
            let key = kad::RecordKey::new(&k);
            if sent.is_multiple_of(2) {
                let _ = swarm.behaviour_mut().start_providing(key);
            } else {
                let _ = swarm
                    .behaviour_mut()
                    .put_record(kad::Record::new(key, vec![0xAB; 1024]), kad::Quorum::One);
            }
            sent += 1;
            in_flight += 1;
        }
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => break,
            ev = swarm.select_next_some() => {
                if let libp2p::swarm::SwarmEvent::Behaviour(kad::Event::OutboundQueryProgressed { step, .. }) = ev {
                    if step.last {
                        in_flight = in_flight.saturating_sub(1);
                    }
                }
            }
        }
    }
    Ok(sent)
}

#[test]
fn hostile_peers_on_a_namespaced_network_change_nothing() -> Result<()> {
    let net = Devnet::start_netns(30, &[])?;
    let network = net.network_path().display().to_string();
    let file = net.scratch().join("h.bin");
    let want = random_file(&file, 8 << 20, 9)?;
    let link = net.upload(&file)?;

    // 1. DHT flooding through host 0 (its routing table leads the flood to the others).
    let target: PeerId = net.hosts()[0].peer_id.parse()?;
    let addr: Multiaddr = net
        .bootstrap_addr(0)
        .rsplit_once("/p2p/")
        .context("no /p2p/")?
        .0
        .parse()?;
    let before: Vec<u64> = net.hosts().iter().map(|h| rss_kib(h.pid)).collect();
    let rt = tokio::runtime::Runtime::new()?;
    let sent = rt.block_on(flood_dht(target, addr, Duration::from_secs(15)))?;
    eprintln!("DHT flood: {sent} bogus records sent");
    assert!(sent > 500, "the flood barely ran: {sent}");
    let grown: Vec<i64> = net
        .hosts()
        .iter()
        .zip(&before)
        .map(|(h, b)| rss_kib(h.pid) as i64 - *b as i64)
        .collect();
    let worst = grown.iter().copied().max().unwrap_or(0);
    eprintln!("largest RSS growth of a host during the flood: {worst} KiB");
    assert!(
        worst < 64 * 1024,
        "a host grew {worst} KiB under a DHT flood"
    );
    // A tenant bootstrapping through the flooded host still learns the real services.
    let learned = json(
        &net,
        &[
            "network",
            "--bootstrap",
            &net.bootstrap_addr(0),
            "--network",
            "/nonexistent",
        ],
    )?;
    assert_eq!(
        learned["services"]["hub"]["peer_id"],
        net.services()["hub"]["peer_id"]
    );
    assert_eq!(
        learned["services"]["escrow"]["peer_id"],
        net.services()["escrow"]["peer_id"]
    );
    let out = net.scratch().join("h.out");
    net.download(&link, &out)?;
    assert_eq!(hash_file(&out)?, want);

    // 2. Replayed payments: one signed deposit, sent five times, credits once.
    let escrow_peer: PeerId = net.services()["escrow"]["peer_id"]
        .as_str()
        .context("no escrow")?
        .parse()?;
    let escrow_addrs: Vec<Multiaddr> = net.services()["escrow"]["addrs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a.as_str()?.parse().ok())
        .filter(|a: &Multiaddr| btfs_host::net::is_native(a))
        .collect();
    let wallet = libp2p::identity::ed25519::Keypair::generate();
    let me = Keypair::from(wallet.clone()).public().to_peer_id();
    let call = |amount: u64| -> Result<Signed> {
        Ok(Signed::sign(
            &Call {
                peer_id: me.to_base58(),
                id: "0123456789abcdef0123456789abcdef".into(),
                issued_at_ms: btfs_host::tenant::wallet::now_ms(),
                op: Op::Deposit { amount },
            },
            &wallet,
        )?)
    };
    let deposit = call(7_000_000)?;
    let receipts = rt.block_on(async {
        let (tenant_net, _, _task) = btfs_host::net::Net::start(
            Keypair::generate_ed25519(),
            None,
            Default::default(),
            Vec::new(),
            tokio_util::sync::CancellationToken::new(),
        )
        .await?;
        let ask = |req: EscrowRequest| {
            let (net, addrs) = (&tenant_net, escrow_addrs.clone());
            async move {
                btfs_host::services::escrow::client::request(net, escrow_peer, addrs, &req).await
            }
        };
        let mut out = Vec::new();
        for _ in 0..5 {
            out.push(
                ask(EscrowRequest::Call {
                    call: deposit.clone(),
                })
                .await?,
            );
        }
        // The same id under another amount: refused, naming the reused id.
        match ask(EscrowRequest::Call {
            call: call(9_000_000)?,
        })
        .await
        {
            Err(e) => assert!(e.to_string().contains("already used"), "{e}"),
            Ok(EscrowResponse::Call(r)) => assert!(!r.ok, "another body under a used id: {r:?}"),
            Ok(r) => bail!("{r:?}"),
        }
        out.push(
            ask(EscrowRequest::Account {
                peer: me.to_base58(),
            })
            .await?,
        );
        anyhow::Ok(out)
    })?;
    let mut replayed = 0;
    for (i, r) in receipts.iter().take(5).enumerate() {
        let EscrowResponse::Call(r) = r else {
            bail!("deposit {i}: {r:?}");
        };
        assert!(r.ok, "{r:?}");
        assert_eq!(r.replayed, i > 0, "{r:?}");
        replayed += usize::from(r.replayed);
    }
    assert_eq!(replayed, 4);
    let EscrowResponse::Account { account, .. } = &receipts[5] else {
        bail!("{:?}", receipts[5]);
    };
    assert_eq!(account.available, 7_000_000, "credited more than once");

    // 3. Late and forged proofs: freeze one holder past the deadline, alter another's shard.
    let manifest = manifest_of(&net, &link)?;
    let (late, _) = shard_location(&net, &manifest, 0, 3)?;
    let (forger, root) = shard_location(&net, &manifest, 0, 4)?;
    let blob = blob_path(&net.hosts()[forger].data_dir, &root.to_hex());
    let mut bytes = std::fs::read(&blob)?;
    for b in bytes.iter_mut().take(4096) {
        *b ^= 0x5A;
    }
    std::fs::write(&blob, &bytes)?;
    let frozen = net.freeze_hosts(&[late]);
    let started = Instant::now();
    let reasons = |i: usize| -> Result<Vec<String>> {
        let v = json(
            &net,
            &[
                "audits",
                "--host",
                &net.hosts()[i].peer_id,
                "--json",
                "--network",
                &network,
            ],
        )?;
        Ok(v.as_array()
            .into_iter()
            .flatten()
            .filter(|x| x["passed"] == false)
            .filter_map(|x| x["reason"].as_str().map(str::to_string))
            .collect())
    };
    loop {
        let (l, f) = (reasons(late)?, reasons(forger)?);
        let late_seen = l
            .iter()
            .any(|r| r.contains("deadline") || r.contains("no answer"));
        // The altered host either proves from the altered bytes (an invalid proof) or, as an
        // honest build does, notices they no longer match the root and says so: a failure
        // either way, and never a pass.
        let forged_seen = f
            .iter()
            .any(|r| r.contains("invalid proof") || r.contains("did not match their root"));
        if late_seen && forged_seen {
            eprintln!("late host: {l:?}; forger: {f:?}");
            break;
        }
        if started.elapsed() > Duration::from_secs(40) {
            bail!("the Guard did not fail the late host ({l:?}) and the forger ({f:?})");
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    drop(frozen);
    // The object is still whole.
    net.download(&link, &out)?;
    assert_eq!(hash_file(&out)?, want);
    Ok(())
}

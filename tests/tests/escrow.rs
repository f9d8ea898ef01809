//! The Escrow on a real devnet: an upload signs and funds one contract per host, the Guard's
//! verdicts pay hosts per proven epoch, a host that lost its shard stops being paid and the
//! tenant gets those epochs back, a `kill -9` of the Escrow during a burst of payouts loses and
//! doubles nothing, and forged or misdirected requests are refused.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use btfs_core::escrow::{
    Call, EscrowRequest, Ledger, LedgerConfig, Op, Settle, TransferKind, VerdictLine,
};
use btfs_core::signed::Signed;
use btfs_tests::{blob_path, manifest_of, random_file, shard_location, Devnet};
use libp2p::identity::ed25519;

const KIB: usize = 1 << 10;

fn json(net: &Devnet, args: &[&str]) -> serde_json::Value {
    let network = net.network_path();
    let mut full: Vec<&str> = args.to_vec();
    full.extend(["--network", network.to_str().unwrap(), "--json"]);
    let o = net.btfs(&full);
    assert!(
        o.status.success(),
        "btfs {args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "btfs {args:?}: not JSON ({e}): {}",
            String::from_utf8_lossy(&o.stdout)
        )
    })
}

fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let until = Instant::now() + limit;
    while !f() {
        assert!(
            Instant::now() < until,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn host_shard(e: &serde_json::Value, root: &str) -> (u64, u64) {
    for c in e["contracts"].as_array().unwrap() {
        for s in c["shards"].as_array().unwrap() {
            if s["root"] == root {
                return (
                    s["paid_epochs"].as_u64().unwrap(),
                    s["refunded_epochs"].as_u64().unwrap(),
                );
            }
        }
    }
    panic!("no contract covers shard {root}: {e:#}");
}

fn metrics_text(net: &Devnet, i: usize) -> Option<String> {
    let info = std::fs::read(net.hosts()[i].data_dir.join("node.json")).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&info).ok()?;
    let url = v
        .get("metrics_http")?
        .as_str()?
        .strip_prefix("http://")?
        .to_string();
    let hostport = url.split('/').next()?.to_string();
    let mut s = std::net::TcpStream::connect(&hostport).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    use std::io::{Read, Write};
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nhost: {hostport}\r\nconnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    Some(text)
}

fn blob_count(net: &Devnet) -> usize {
    net.hosts()
        .iter()
        .map(|h| walk(&h.data_dir.join("blobs")))
        .sum()
}

fn walk(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |rd| {
        rd.flatten()
            .map(|e| {
                let p = e.path();
                if p.is_dir() {
                    walk(&p)
                } else {
                    1
                }
            })
            .sum()
    })
}

fn peer_of(k: &ed25519::Keypair) -> String {
    libp2p::identity::PublicKey::from(k.public())
        .to_peer_id()
        .to_base58()
}

fn guard_key(net: &Devnet) -> ed25519::Keypair {
    let bytes = std::fs::read(net.service_dir().join("identity.key")).unwrap();
    libp2p::identity::Keypair::from_protobuf_encoding(&bytes)
        .unwrap()
        .try_into_ed25519()
        .unwrap()
}

fn wallet_key(net: &Devnet) -> ed25519::Keypair {
    let bytes = std::fs::read(net.scratch().join("wallet.key")).unwrap();
    libp2p::identity::Keypair::from_protobuf_encoding(&bytes)
        .unwrap()
        .try_into_ed25519()
        .unwrap()
}

/// Sends raw requests to the devnet's Escrow; returns each answer or the refusal's text.
fn ask(
    net: &Devnet,
    reqs: Vec<EscrowRequest>,
) -> Vec<Result<btfs_core::escrow::EscrowResponse, String>> {
    let file = btfs_host::tenant::network_file::load(&net.network_path()).unwrap();
    let escrow = btfs_host::tenant::network_file::escrow(&file, &net.network_path())
        .unwrap()
        .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let tenant = btfs_host::tenant::Tenant::start(Vec::new()).await.unwrap();
        let mut out = Vec::new();
        for r in reqs {
            out.push(
                btfs_host::services::escrow::client::request(
                    tenant.net(),
                    escrow.peer,
                    escrow.addrs.clone(),
                    &r,
                )
                .await
                .map_err(|e| e.to_string()),
            );
        }
        tenant.shutdown().await;
        out
    })
}

fn call(key: &ed25519::Keypair, peer: &str, id: u64, op: Op) -> Signed {
    let c = Call {
        peer_id: peer.into(),
        id: format!("{id:032x}"),
        issued_at_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64,
        op,
    };
    Signed::sign(&c, key).unwrap()
}

#[test]
fn hosts_are_paid_for_proven_epochs_only_and_the_ledger_survives_kill_9() {
    let mut net = Devnet::start(30).unwrap();
    let network = net.network_path();
    let src = net.scratch().join("in.bin");
    // Small shards: 10 slabs of 64 KiB shards, so every epoch brings a burst of 300 verdicts.
    random_file(&src, 6000 * KIB, 3).unwrap();
    let up = json(
        &net,
        &["upload", src.to_str().unwrap(), "--shard-size", "65536"],
    );
    let link = up["link"].as_str().unwrap().to_string();
    let c = &up["contracts"];
    assert_eq!(c["committed"], 30, "one contract per host: {up:#}");
    assert!(
        c["topped_up"].as_u64().unwrap() > 0,
        "the devnet faucet paid: {up:#}"
    );
    let balance = json(&net, &["wallet", "balance"]);
    assert!(balance["locked"].as_u64().unwrap() > 0, "{balance:#}");
    let tenant_peer = balance["peer"].as_str().unwrap().to_string();
    let contracts = json(&net, &["contracts"]);
    let list = contracts.as_array().unwrap();
    assert_eq!(list.len(), 30, "{contracts:#}");
    let hosts: BTreeSet<&str> = list.iter().map(|c| c["host"].as_str().unwrap()).collect();
    assert_eq!(hosts.len(), 30, "one contract per host, never per shard");
    assert!(list
        .iter()
        .all(|c| c["state"] == "active" && c["shards"].as_array().unwrap().len() == 10));

    // The upload set a repair allowance aside for the Guard, and `btfs wallet allow` adds to it.
    let allowance = c["repair_allowance"].as_u64().unwrap();
    assert!(allowance > 0, "no repair allowance: {up:#}");
    assert_eq!(balance["allowance"], allowance, "{balance:#}");
    let manifest_hex = btfs_core::Link::parse(&link).unwrap().manifest_id.to_hex();
    let r = json(&net, &["wallet", "allow", &manifest_hex, "0.5"]);
    assert_eq!(r["amount"], 500_000, "{r:#}");
    let after = json(&net, &["wallet", "balance"]);
    assert_eq!(after["allowance"], allowance + 500_000, "{after:#}");
    let bad = net.btfs(&[
        "wallet",
        "allow",
        "not-a-manifest",
        "1",
        "--network",
        network.to_str().unwrap(),
    ]);
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("manifest id"), "{err}");

    // A shard deleted from a host's disk: its epochs stop being paid.
    let manifest = manifest_of(&net, &link).unwrap();
    let (lost_host, lost_root) = shard_location(&net, &manifest, 0, 4).unwrap();
    let lost_peer = net.hosts()[lost_host].peer_id.clone();
    let lost_root = lost_root.to_hex();
    // Another shard the same host keeps (of another slab).
    let kept_root = (1..manifest.slabs().len())
        .flat_map(|slab| (0..30).map(move |k| (slab, k)))
        .filter_map(|(slab, k)| shard_location(&net, &manifest, slab, k).ok())
        .find(|(h, _)| *h == lost_host)
        .map(|(_, r)| r.to_hex())
        .expect("the host keeps a shard of another slab");
    wait_for("the first payouts", Duration::from_secs(60), || {
        let e = json(&net, &["earnings", "--peer", &lost_peer]);
        host_shard(&e, &lost_root).0 >= 1
    });
    std::fs::remove_file(blob_path(&net.hosts()[lost_host].data_dir, &lost_root)).unwrap();
    let paid_at_delete = host_shard(&json(&net, &["earnings", "--peer", &lost_peer]), &lost_root).0;
    wait_for(
        "refunds of the lost shard's epochs",
        Duration::from_secs(60),
        || {
            let e = json(&net, &["earnings", "--peer", &lost_peer]);
            host_shard(&e, &lost_root).1 >= 2
        },
    );
    let e = json(&net, &["earnings", "--peer", &lost_peer]);
    let (paid_lost, refunded_lost) = host_shard(&e, &lost_root);
    // At most the epoch that was running when the shard went may still have been proven.
    assert!(
        paid_lost <= paid_at_delete + 1,
        "a lost shard kept being paid: {e:#}"
    );
    assert!(refunded_lost >= 2);
    let (paid_kept, _) = host_shard(&json(&net, &["earnings", "--peer", &lost_peer]), &kept_root);
    assert!(
        paid_kept > paid_lost,
        "the host's other shard is still paid: {e:#}"
    );
    // Every payout names the Guard's verdict behind it.
    let payouts = e["payouts"].as_array().unwrap();
    assert!(!payouts.is_empty());
    let guard = net.services()["guard"]["peer_id"]
        .as_str()
        .unwrap()
        .to_string();
    for p in payouts {
        assert_eq!(p["verdict"][0], guard.as_str(), "{p}");
    }
    let tenant = json(&net, &["wallet", "balance"]);
    assert!(
        tenant["refunded"].as_u64().unwrap() > 0,
        "the tenant got the lost epochs back: {tenant:#}"
    );
    // The host's own /metrics shows what it earned and has pending.
    wait_for(
        "the host's /metrics to show its earnings",
        Duration::from_secs(30),
        || {
            let text = metrics_text(&net, lost_host).unwrap_or_default();
            let get = |name: &str| {
                text.lines()
                    .find(|l| l.starts_with(name))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|v| v.parse::<u64>().ok())
            };
            get("btfs_node_escrow_earned_microbtt ").is_some_and(|v| v > 0)
                && get("btfs_node_escrow_pending_microbtt ").is_some_and(|v| v > 0)
        },
    );

    // Off a devnet an upload with an empty wallet stops before a byte is sent, saying how much
    // it needs and how to pay.
    let mut nf: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&network).unwrap()).unwrap();
    nf["services"]["escrow"]["devnet"] = serde_json::Value::Bool(false);
    let prod = net.scratch().join("network-prod.json");
    std::fs::write(&prod, serde_json::to_vec(&nf).unwrap()).unwrap();
    let blobs_before = blob_count(&net);
    let o = std::process::Command::new(btfs_tests::btfs_bin())
        .args([
            "upload",
            src.to_str().unwrap(),
            "--network",
            prod.to_str().unwrap(),
        ])
        .env("BTFS_WALLET", net.scratch().join("empty-wallet.key"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "an unfunded upload succeeded: {err}");
    assert!(
        err.contains("needs") && err.contains("btfs wallet deposit"),
        "{err}"
    );
    assert_eq!(
        blob_count(&net),
        blobs_before,
        "an unfunded upload stored shards"
    );

    // kill -9 of the Escrow (the service node) during a burst of payouts.
    let before = json(&net, &["ledger"]);
    wait_for("a new burst of payouts", Duration::from_secs(30), || {
        json(&net, &["ledger"])["paid"].as_u64() > before["paid"].as_u64()
    });
    std::thread::sleep(Duration::from_millis(300));
    net.kill_service();
    // The auditor: replay the durable log through a fresh ledger, checking every invariant
    // after every command, that no part is settled twice, and that payouts name verdicts.
    let cfg = LedgerConfig {
        faucet_max: Some(btfs_host::tools::devnet::DEVNET_FAUCET_MAX),
        ..LedgerConfig::default()
    };
    // A process killed inside a disk write holds its file lock until the write returns.
    let until = Instant::now() + Duration::from_secs(20);
    let (db, recovered) = loop {
        match btfs_host::services::escrow::db::EscrowDb::open(&net.service_dir(), &cfg) {
            Ok(x) => break x,
            Err(e) if e.to_string().contains("already open") && Instant::now() < until => {
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => panic!("cannot open the killed Escrow's database: {e}"),
        }
    };
    let mut replay = Ledger::new(cfg.clone());
    let mut parts = BTreeSet::new();
    let mut from = 1;
    loop {
        let entries = db.entries(from, 10_000).unwrap();
        if entries.is_empty() {
            break;
        }
        for (seq, e) in &entries {
            replay.apply(&e.cmd, e.now_ms).unwrap();
            replay
                .check()
                .unwrap_or_else(|why| panic!("after log entry {seq}: {why}"));
            for t in replay.take_transfers() {
                if let (Some(c), Some(part)) = (&t.contract, &t.part) {
                    assert!(
                        parts.insert((c.clone(), part.clone())),
                        "part {c}/{part:?} settled twice"
                    );
                }
                if t.kind == TransferKind::Payout {
                    assert_eq!(
                        t.verdict.as_ref().map(|v| v.0.as_str()),
                        Some(guard.as_str())
                    );
                }
            }
            from = seq + 1;
        }
    }
    let totals = recovered.totals();
    assert!(totals.conserved, "{totals:?}");
    assert!(
        totals.paid >= before["paid"].as_u64().unwrap(),
        "acknowledged payouts were lost"
    );
    drop(db);
    net.restart_service(2000, 10).unwrap();
    let after = json(&net, &["ledger"]);
    assert_eq!(after["conserved"], true, "{after:#}");
    assert_eq!(after["deposits"], before["deposits"]);
    wait_for("payouts after the restart", Duration::from_secs(60), || {
        json(&net, &["ledger"])["paid"].as_u64() > after["paid"].as_u64()
    });

    // The devnet started with funded test accounts.
    let alice = net.scratch().join("wallets").join("alice.key");
    let o = std::process::Command::new(btfs_tests::btfs_bin())
        .args([
            "wallet",
            "balance",
            "--json",
            "--network",
            network.to_str().unwrap(),
        ])
        .env("BTFS_WALLET", &alice)
        .output()
        .unwrap();
    let a: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        a["balance"],
        btfs_host::tools::devnet::TEST_WALLET_FUNDS,
        "{a:#}"
    );

    // Refusals, each with a reason.
    let wallet = wallet_key(&net);
    let stranger = ed25519::Keypair::generate();
    let mut forged = call(&wallet, &tenant_peer, 1, Op::Withdraw { amount: 1 });
    forged.payload = forged.payload.replace("\"amount\":1", "\"amount\":1000000");
    let others = call(&stranger, &tenant_peer, 2, Op::Withdraw { amount: 1 });
    let gk = guard_key(&net);
    let epoch = manifest.slabs().len() as u64; // any epoch: the line is refused or a duplicate
    let paid_line = {
        let e = json(&net, &["earnings", "--peer", &lost_peer]);
        let c = e["contracts"][0]["shards"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["root"] == kept_root.as_str())
            .unwrap()
            .clone();
        let run = c["runs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["paid"] == true)
            .unwrap()
            .clone();
        VerdictLine {
            host: lost_peer.clone(),
            root: kept_root.clone(),
            epoch: run["start"].as_u64().unwrap(),
            passed: true,
        }
    };
    let batch = |k: &ed25519::Keypair, peer: &str, seq: u64, lines: Vec<VerdictLine>| {
        Signed::sign(
            &Settle {
                peer_id: peer.into(),
                seq,
                issued_at_ms: 1,
                verdicts: lines,
            },
            k,
        )
        .unwrap()
    };
    let answers = ask(
        &net,
        vec![
            EscrowRequest::Call { call: forged },
            EscrowRequest::Call { call: others },
            // A verdict the Guard already gave, sent again: settles nothing.
            EscrowRequest::Settle {
                batch: batch(&gk, &guard, 9_000_001, vec![paid_line.clone()]),
            },
            // The same line "from the Guard" but signed by someone else.
            EscrowRequest::Settle {
                batch: batch(&stranger, &guard, 9_000_002, vec![paid_line.clone()]),
            },
            // A stranger's own verdict on that contract: not the contract's Guard.
            EscrowRequest::Settle {
                batch: batch(
                    &stranger,
                    &peer_of(&stranger),
                    1,
                    vec![VerdictLine {
                        epoch: epoch + paid_line.epoch + 1,
                        ..paid_line.clone()
                    }],
                ),
            },
        ],
    );
    let text = |r: &Result<_, String>| format!("{r:?}");
    assert!(
        text(&answers[0]).contains("bad signature"),
        "forged: {:?}",
        answers[0]
    );
    assert!(
        text(&answers[1]).contains("signed by"),
        "another's account: {:?}",
        answers[1]
    );
    assert!(
        text(&answers[2]).contains("duplicate: 1") && text(&answers[2]).contains("paid: 0"),
        "replayed verdict: {:?}",
        answers[2]
    );
    assert!(
        answers[3].is_err(),
        "a verdict not signed by the Guard: {:?}",
        answers[3]
    );
    assert!(
        text(&answers[4]).contains("no_contract: 1") && text(&answers[4]).contains("paid: 0"),
        "another Guard's verdict: {:?}",
        answers[4]
    );
    // Withdrawing more than the balance, from the CLI.
    let o = net.btfs(&[
        "wallet",
        "withdraw",
        "1000000",
        "--network",
        network.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("cannot withdraw") && err.contains("available"),
        "{err}"
    );
    // And a withdrawal within it works and is reported.
    let w = json(&net, &["wallet", "withdraw", "0.5"]);
    assert_eq!(w["ok"], true, "{w:#}");
    let l = json(&net, &["ledger"]);
    assert_eq!(l["withdrawals"], 500_000);
    assert_eq!(l["conserved"], true);
}

/// One `/btfs/contract/1` request to `host` as `key`: the answer, or the refusal's text.
fn host_ask(
    key: &ed25519::Keypair,
    host: &btfs_tests::Host,
    req: &btfs_core::escrow::HostRequest,
) -> Result<btfs_core::escrow::HostResponse, String> {
    let peer: libp2p::PeerId = host.peer_id.parse().unwrap();
    let addrs = host.addrs.iter().map(|a| a.parse().unwrap()).collect();
    let body = serde_json::to_vec(req).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let t = btfs_host::tenant::Tenant::start_with_key(Vec::new(), key.clone().into())
            .await
            .unwrap();
        let r = btfs_host::net::exchange(
            t.net(),
            peer,
            addrs,
            btfs_core::escrow::HOST_PROTOCOL,
            &body,
            btfs_core::escrow::MAX_HOST_REQUEST_LEN,
            Duration::from_secs(20),
        )
        .await;
        t.shutdown().await;
        let (status, out) = r?;
        if status != btfs_core::protocol::Status::Ok {
            return Err(String::from_utf8_lossy(&out).into_owned());
        }
        Ok(serde_json::from_slice(&out).unwrap())
    })
}

#[test]
fn hosts_store_only_blobs_a_funded_offer_covers() {
    use btfs_core::escrow::plan::{offer_for, OfferParams, Room};
    use btfs_core::escrow::{Cosigned, EscrowResponse, Funded, HostRequest, HostResponse};
    let net = Devnet::start(1).unwrap();
    let host = net.hosts()[0].clone();
    let addr = host.addrs[0].clone();
    let blob = net.scratch().join("blob");
    random_file(&blob, 100 * KIB, 7).unwrap();
    let put = |network: &str, file: &std::path::Path| {
        net.btfs(&[
            "shard",
            "put",
            "--host",
            &addr,
            "--network",
            network,
            &file.display().to_string(),
        ])
    };

    // Without paying (no network file, so no Escrow to pay): refused before the body is read.
    let o = put("/nonexistent/network.json", &blob);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "an unfunded put was stored");
    assert!(err.contains("funded storage offer"), "{err}");
    let root = btfs_core::Root::of(&std::fs::read(&blob).unwrap()).to_hex();
    assert!(!blob_path(&host.data_dir, &root).exists());

    // Paying: one offer for the blob, reserved and shown to the host, then the put.
    let network = net.network_path().display().to_string();
    let o = put(&network, &blob);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(blob_path(&host.data_dir, &root).exists());
    let balance = json(&net, &["wallet", "balance"]);
    assert!(balance["locked"].as_u64().unwrap() > 0, "{balance:#}");

    // Raw: a fresh tenant's offer, signed by the host and reserved at the Escrow.
    let tenant = ed25519::Keypair::generate();
    let me = peer_of(&tenant);
    let escrow_key = guard_key(&net); // the devnet's service node runs the Escrow
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let terms = offer_for(
        &OfferParams {
            id: "5e".repeat(16),
            tenant: &me,
            host: &host.peer_id,
            guard: &peer_of(&escrow_key),
            price_per_gib_month: btfs_host::host::config::HostConfig::default().price_per_gib_month,
            epoch_ms: 60_000,
            epochs: 10,
            now_ms: now,
        },
        Room::blob(4096),
    );
    let doc = match host_ask(
        &tenant,
        &host,
        &HostRequest::Offer {
            doc: Cosigned::propose(&terms).unwrap(),
        },
    ) {
        Ok(HostResponse::Signed { doc }) => doc.sign(&tenant).unwrap(),
        other => panic!("the host did not sign the offer: {other:?}"),
    };
    let r = ask(
        &net,
        vec![
            EscrowRequest::Call {
                call: call(&tenant, &me, 1, Op::Deposit { amount: 1_000_000 }),
            },
            EscrowRequest::Call {
                call: call(
                    &tenant,
                    &me,
                    2,
                    Op::Reserve {
                        offers: vec![doc.clone()],
                    },
                ),
            },
        ],
    );
    let Ok(EscrowResponse::Call(receipt)) = &r[1] else {
        panic!("reserve: {r:?}")
    };
    let proof = receipt.funded.clone().expect("a funding proof");
    let v = proof.verify::<Funded>().unwrap();
    assert_eq!(v.peer.to_base58(), peer_of(&escrow_key));
    assert_eq!(v.body.offers, vec![terms.id.clone()]);

    // A proof the tenant signed itself, and someone else's proof, are refused.
    let forged = Signed::sign(
        &Funded {
            peer_id: me.clone(),
            ..v.body.clone()
        },
        &tenant,
    )
    .unwrap();
    let funded = |proof: &Signed| HostRequest::Funded {
        offers: vec![doc.clone()],
        proof: proof.clone(),
    };
    let e = host_ask(&tenant, &host, &funded(&forged)).unwrap_err();
    assert!(e.contains("not by this host's Escrow"), "{e}");
    let thief = ed25519::Keypair::generate();
    let e = host_ask(&thief, &host, &funded(&proof)).unwrap_err();
    assert!(e.contains("not for you"), "{e}");
    // The real proof grants exactly the offer's room, and showing it twice grants it once.
    for _ in 0..2 {
        match host_ask(&tenant, &host, &funded(&proof)) {
            Ok(HostResponse::Granted { bytes, blobs }) => assert_eq!((bytes, blobs), (4096, 1)),
            other => panic!("not granted: {other:?}"),
        }
    }
}

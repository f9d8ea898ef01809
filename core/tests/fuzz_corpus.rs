//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/*`, minimized by `cargo fuzz cmin`
//! after each campaign) through the same bodies the libFuzzer targets run
//! ([`btfs_core::fuzz_bodies`]), on stable, so every interesting input found so far, and every
//! crash found and fixed, stays checked in CI. `write_seeds` (ignored) regenerates the seed
//! inputs made from real encodings; `cargo xtask fuzz` runs it before a campaign.
//!
//! Named regression tests for the findings of the campaigns (docs/fuzzing.md) are at the end.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use btfs_core::fuzz_bodies::{self, FUZZ_KEY, FUZZ_VERSION};
use btfs_core::hub::{self, ExclusionCounts, HubRequest, HubResponse, RankedHost};
use btfs_core::layout::Layout;
use btfs_core::manifest::{Manifest, ObjectHeader, ShardRecord, SlabRecord};
use btfs_core::score::{self, HostFacts};
use btfs_core::signed::{HostAd, Signed, StatusReport};
use btfs_core::{Link, ObjectKey, Root};
use libp2p_identity::ed25519;

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target)
}

/// Runs every corpus file of `target` through `body`; fails naming each input that panics.
fn replay(target: &str, body: fn(&[u8])) {
    fuzz_bodies::replay_corpus(&corpus_dir(target), body);
}

#[test]
fn manifest_corpus() {
    replay("manifest", fuzz_bodies::manifest);
}

#[test]
fn link_corpus() {
    replay("link", fuzz_bodies::link);
}

#[test]
fn escrow_answers_corpus() {
    replay("escrow_answers", fuzz_bodies::escrow_answers);
}

#[test]
fn escrow_corpus() {
    replay("escrow", fuzz_bodies::escrow);
}

#[test]
fn proof_corpus() {
    replay("proof", fuzz_bodies::proof);
}

#[test]
fn frames_corpus() {
    replay("frames", fuzz_bodies::frames);
}

#[test]
fn hub_request_corpus() {
    replay("hub_request", fuzz_bodies::hub_request);
}

#[test]
fn hub_response_corpus() {
    replay("hub_response", fuzz_bodies::hub_response);
}

#[test]
fn signed_corpus() {
    replay("signed", fuzz_bodies::signed);
}

#[test]
fn signed_tamper_corpus() {
    replay("signed_tamper", fuzz_bodies::signed_tamper);
}

// ---- seeds from real encodings ----

fn key(seed: u8) -> ed25519::Keypair {
    ed25519::Keypair::from(ed25519::SecretKey::try_from_bytes([seed; 32]).unwrap())
}

fn peer(k: &ed25519::Keypair) -> String {
    libp2p_identity::PublicKey::from(k.public())
        .to_peer_id()
        .to_base58()
}

fn sample_manifest(plain_len: u64, shard: u32, header: &ObjectHeader) -> Manifest {
    let layout = Layout::new(plain_len, shard).unwrap();
    let hosts: Vec<Vec<u8>> = (0..40u8).map(|i| vec![i; 1 + usize::from(i % 3)]).collect();
    let slabs: Vec<SlabRecord> = (0..layout.slab_count())
        .map(|s| {
            std::array::from_fn(|i| ShardRecord {
                root: Root::of(&[s as u8, i as u8]),
                host: ((i as u64 + s * 7) % 40) as u16,
            })
        })
        .collect();
    Manifest::new(
        layout,
        &ObjectKey::from_bytes(FUZZ_KEY),
        header,
        hosts,
        slabs,
    )
    .unwrap()
}

fn ad(k: &ed25519::Keypair, price: u64) -> HostAd {
    HostAd {
        peer_id: peer(k),
        addrs: vec!["/ip4/127.0.0.1/tcp/4001".into()],
        capacity_bytes: 1 << 30,
        free_bytes: 1 << 30,
        price_per_gib_month: price,
        version: "0.1.0".into(),
        region: Some("eu".into()),
        issued_at_ms: 1_000,
    }
}

fn ranked(seed: u8) -> RankedHost {
    let k = key(seed);
    let ad = ad(&k, 10 + u64::from(seed));
    let facts = HostFacts {
        online: true,
        free_bytes: ad.free_bytes,
        uptime: 1.0,
        age_days: 1.0,
        rtt_ms: None,
        region: ad.region.clone(),
        price: ad.price_per_gib_month,
        version: (0, 1, 0),
        audits_passed: 0,
        audits_failed: 0,
    };
    let req = fuzz_bodies::fuzz_recommend_request();
    let score = score::score(&facts, &hub::score_request(&req, FUZZ_VERSION));
    RankedHost {
        peer_id: ad.peer_id.clone(),
        addrs: ad.addrs.clone(),
        score,
        excluded: None,
        facts,
        estimated_cost: hub::cost(ad.price_per_gib_month, req.shard_size, req.duration_days),
        subnet: "127.0.0.0/24".into(),
        ad: Signed::sign(&ad, &k).unwrap(),
    }
}

fn report(k: &ed25519::Keypair) -> StatusReport {
    StatusReport {
        peer_id: peer(k),
        issued_at_ms: 1_700_000_000_000,
        uptime_secs: 3600,
        capacity_bytes: 1 << 30,
        used_bytes: 1 << 20,
        shards_held: 3,
        requests_served: 7,
        requests_failed: 1,
        version: "0.1.0".into(),
    }
}

/// The seed inputs, by target and name.
fn seeds() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let named = ObjectHeader {
        name: "photo.jpg".into(),
        mime: "image/jpeg".into(),
    };
    let small = sample_manifest(100, 4096, &named);
    let two_slabs = sample_manifest(100_000, 4096, &ObjectHeader::default());
    let big_shards = sample_manifest(3 << 20, 1 << 20, &named);
    let rec = HubResponse::Recommendation(hub::Recommendation {
        hosts: vec![ranked(1), ranked(2)],
        registered: 3,
        qualified: 2,
        excluded: ExclusionCounts {
            offline: 1,
            ..ExclusionCounts::default()
        },
    });
    let k = key(1);
    let ad_env = Signed::sign(&ad(&k, 10), &k).unwrap();
    let report_env = Signed::sign(&report(&k), &k).unwrap();
    let json = |v: &dyn erased::Json| v.json();
    let link = Link {
        manifest_id: small.id(),
        key: ObjectKey::from_bytes(FUZZ_KEY),
    };
    vec![
        ("manifest", "one_slab", small.encode()),
        ("manifest", "two_slabs", two_slabs.encode()),
        ("manifest", "big_shards", big_shards.encode()),
        (
            "manifest",
            "header_plain",
            b"\x01\x05\x00a.txt\x0a\x00text/plain".to_vec(),
        ),
        ("link", "real", link.to_string().into_bytes()),
        ("proof", "honest", proof_seed()),
        ("escrow", "deposit", escrow_seed_call()),
        ("escrow", "reserve", escrow_seed_reserve()),
        ("escrow", "settle", escrow_seed_settle()),
        ("escrow", "allow", escrow_seed_allow()),
        ("escrow", "repair_reserve", escrow_seed_repair_reserve()),
        ("escrow_answers", "host_signed", escrow_seed_host_signed()),
        ("hub_response", "recommendation", json(&rec)),
        (
            "hub_response",
            "hosts",
            json(&HubResponse::Hosts(vec![ranked(3)])),
        ),
        (
            "hub_response",
            "network",
            json(&HubResponse::Network(directory())),
        ),
        (
            "hub_request",
            "announce",
            json(&HubRequest::Announce(ad_env.clone())),
        ),
        ("signed", "host_ad", json(&ad_env)),
        ("signed", "status_report", json(&report_env)),
    ]
}

/// A service node's `Network` answer (what a bootstrap node tells a tenant).
fn directory() -> btfs_core::network_file::NetworkFile {
    let peer = fuzz_bodies::fuzz_escrow_parties()[0].public();
    let peer = libp2p_identity::PublicKey::from(peer)
        .to_peer_id()
        .to_base58();
    let addrs = vec![format!("/ip4/198.18.1.2/tcp/4001/p2p/{peer}")];
    let mut d = btfs_core::network_file::NetworkFile::default();
    d.add_services_of(&btfs_core::network_file::NodeServices {
        peer_id: &peer,
        pid: 0,
        addrs: &addrs,
        hub: true,
        status_http: Some("http://198.18.1.2:4004"),
        guard_epoch_ms: Some(5000),
        escrow_devnet: Some(true),
    });
    d
}

/// A real challenge followed by its honest proof (the host side's input, and the nonce of the
/// body's own check).
fn proof_seed() -> Vec<u8> {
    let shard = fuzz_bodies::fuzz_proof_shard();
    let c = btfs_core::proof::Challenge {
        root: Root::of(&shard),
        nonce: [5; 32],
        size: shard.len() as u32,
    };
    let mut out = c.encode().to_vec();
    out.extend(btfs_core::proof::prove(&c, &shard).unwrap());
    out
}

fn escrow_call(id: u64, op: btfs_core::escrow::Op) -> Vec<u8> {
    let [t, _, _] = fuzz_bodies::fuzz_escrow_parties();
    escrow_call_by(&t, id, op)
}

fn escrow_call_by(t: &ed25519::Keypair, id: u64, op: btfs_core::escrow::Op) -> Vec<u8> {
    let call = btfs_core::escrow::Call {
        peer_id: libp2p_identity::PublicKey::from(t.public())
            .to_peer_id()
            .to_base58(),
        id: format!("{id:032x}"),
        issued_at_ms: fuzz_bodies::FUZZ_ESCROW_NOW,
        op,
    };
    serde_json::to_vec(&btfs_core::escrow::EscrowRequest::Call {
        call: Signed::sign(&call, t).unwrap(),
    })
    .unwrap()
}

/// The tenant adds to the fuzz world's repair allowance.
fn escrow_seed_allow() -> Vec<u8> {
    let [_, _, g] = fuzz_bodies::fuzz_escrow_parties();
    escrow_call(
        79,
        btfs_core::escrow::Op::Allow {
            manifest_id: format!("{:064x}", 9),
            guard: peer(&g),
            amount: 1000,
            until_ms: fuzz_bodies::FUZZ_ESCROW_NOW + 7_200_000,
        },
    )
}

/// The Guard reserves a repair offer from the fuzz world's allowance.
fn escrow_seed_repair_reserve() -> Vec<u8> {
    let [_, h, g] = fuzz_bodies::fuzz_escrow_parties();
    let mut t = fuzz_bodies::fuzz_escrow_offer(4);
    t.repair_of = Some(format!("{:064x}", 9));
    let doc = btfs_core::escrow::Cosigned::propose(&t)
        .unwrap()
        .sign(&h)
        .unwrap()
        .sign(&g)
        .unwrap();
    escrow_call_by(&g, 80, btfs_core::escrow::Op::Reserve { offers: vec![doc] })
}

/// A host's signed offer, as a tenant receives it.
fn escrow_seed_host_signed() -> Vec<u8> {
    let [_, h, _] = fuzz_bodies::fuzz_escrow_parties();
    let doc = btfs_core::escrow::Cosigned::propose(&fuzz_bodies::fuzz_escrow_offer(4))
        .unwrap()
        .sign(&h)
        .unwrap();
    serde_json::to_vec(&btfs_core::escrow::HostResponse::Signed { doc }).unwrap()
}

/// A faucet deposit by the fuzz world's tenant.
fn escrow_seed_call() -> Vec<u8> {
    escrow_call(77, btfs_core::escrow::Op::Deposit { amount: 5 })
}

/// A reservation of a new offer both parties signed.
fn escrow_seed_reserve() -> Vec<u8> {
    let [t, h, _] = fuzz_bodies::fuzz_escrow_parties();
    let doc = btfs_core::escrow::Cosigned::propose(&fuzz_bodies::fuzz_escrow_offer(3))
        .unwrap()
        .sign(&h)
        .unwrap()
        .sign(&t)
        .unwrap();
    escrow_call(78, btfs_core::escrow::Op::Reserve { offers: vec![doc] })
}

/// The Guard's verdicts on the fuzz world's contract: one pass, one fail.
fn escrow_seed_settle() -> Vec<u8> {
    let [_, h, g] = fuzz_bodies::fuzz_escrow_parties();
    let peer = |k: &ed25519::Keypair| {
        libp2p_identity::PublicKey::from(k.public())
            .to_peer_id()
            .to_base58()
    };
    let epoch = fuzz_bodies::FUZZ_ESCROW_NOW / 1000;
    let s = btfs_core::escrow::Settle {
        peer_id: peer(&g),
        seq: 1,
        issued_at_ms: fuzz_bodies::FUZZ_ESCROW_NOW,
        verdicts: (1..=2)
            .map(|i| btfs_core::escrow::VerdictLine {
                host: peer(&h),
                root: format!("{i:064x}"),
                epoch,
                passed: i == 1,
            })
            .collect(),
    };
    serde_json::to_vec(&btfs_core::escrow::EscrowRequest::Settle {
        batch: Signed::sign(&s, &g).unwrap(),
    })
    .unwrap()
}

/// Object-safe JSON encoding for the seed table.
mod erased {
    pub trait Json {
        fn json(&self) -> Vec<u8>;
    }
    impl<T: serde::Serialize> Json for T {
        fn json(&self) -> Vec<u8> {
            serde_json::to_vec_pretty(self).unwrap()
        }
    }
}

/// Writes the seeds into `fuzz/corpus/<target>/seed-<name>` (run by `cargo xtask fuzz`).
#[test]
#[ignore = "writes into fuzz/corpus; run by cargo xtask fuzz"]
fn write_seeds() {
    for (target, name, data) in seeds() {
        let dir = corpus_dir(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("seed-{name}")), data).unwrap();
    }
}

/// The seeds themselves pass every body (so a campaign starts from valid, deep inputs).
#[test]
fn seeds_pass_their_bodies() {
    for (target, name, data) in seeds() {
        let body: fn(&[u8]) = match target {
            "manifest" => fuzz_bodies::manifest,
            "link" => fuzz_bodies::link,
            "proof" => fuzz_bodies::proof,
            "escrow" => fuzz_bodies::escrow,
            "escrow_answers" => fuzz_bodies::escrow_answers,
            "hub_response" => fuzz_bodies::hub_response,
            "hub_request" => fuzz_bodies::hub_request,
            "signed" => fuzz_bodies::signed,
            other => panic!("no body for {other}"),
        };
        let ok = catch_unwind(AssertUnwindSafe(|| body(&data))).is_ok();
        assert!(ok, "seed {target}/{name} fails its body");
    }
    // The escrow seeds reach the ledger's rules: the deposit and reservation apply, the batch
    // pays one part and refunds the other.
    let mut l = fuzz_bodies::fuzz_escrow_ledger();
    for (name, want) in [
        ("deposit", "\"ok\":true"),
        ("reserve", "\"ok\":true"),
        ("settle", "\"paid\":1,\"refunded\":1"),
    ] {
        let (_, _, data) = seeds()
            .into_iter()
            .find(|(t, n, _)| *t == "escrow" && *n == name)
            .unwrap();
        let cmd = match btfs_core::escrow::decode_request(&data).unwrap() {
            btfs_core::escrow::EscrowRequest::Call { call } => {
                btfs_core::escrow::Command::Call { call }
            }
            btfs_core::escrow::EscrowRequest::Settle { batch } => {
                btfs_core::escrow::Command::Settle { batch }
            }
            _ => unreachable!(),
        };
        let r = serde_json::to_string(&l.apply(&cmd, fuzz_bodies::FUZZ_ESCROW_NOW + 1).unwrap())
            .unwrap();
        assert!(r.contains(want), "escrow seed {name}: {r}");
    }
    // And the recommendation seed really is one a tenant accepts.
    let (_, _, data) = seeds()
        .into_iter()
        .find(|(_, name, _)| *name == "recommendation")
        .unwrap();
    let HubResponse::Recommendation(rec) = serde_json::from_slice(&data).unwrap() else {
        panic!("not a recommendation");
    };
    let req = fuzz_bodies::fuzz_recommend_request();
    assert_eq!(
        hub::check_recommendation(&rec, &req, FUZZ_VERSION, 2)
            .unwrap()
            .len(),
        2
    );
}

// ---- regression tests for fuzzing findings (docs/fuzzing.md) ----

/// Finding 1 (`manifest`, header property): a header whose name is over `MAX_NAME_LEN` (or whose
/// media type is over `MAX_MIME_LEN`) opened, although `Manifest::new` refuses to write one; now
/// `open_header` refuses it. The inputs are header plaintexts, as the target seals them.
#[test]
fn finding_1_overlong_header_fields_are_refused_on_open() {
    for name in [
        "regression-header-name-over-limit",
        "regression-header-mime-over-limit",
    ] {
        let data = std::fs::read(corpus_dir("manifest").join(name)).unwrap();
        fuzz_bodies::manifest(&data);
    }
}

/// The allowance seeds are deep inputs: the fuzz world accepts them (a refused seed would only
/// exercise the first checks).
#[test]
fn escrow_allowance_seeds_are_accepted() {
    use btfs_core::escrow::{decode_request, Command, EscrowRequest, Receipt};
    for seed in [escrow_seed_allow(), escrow_seed_repair_reserve()] {
        let EscrowRequest::Call { call } = decode_request(&seed).unwrap() else {
            panic!("not a call");
        };
        let mut l = fuzz_bodies::fuzz_escrow_ledger();
        let r = l
            .apply(&Command::Call { call }, fuzz_bodies::FUZZ_ESCROW_NOW + 1)
            .unwrap();
        assert!(matches!(&r, Receipt::Call(c) if c.ok), "{r:?}");
        l.check().unwrap();
    }
}

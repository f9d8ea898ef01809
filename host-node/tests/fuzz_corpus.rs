//! Replays the committed fuzz corpus of btfs-host's targets (`fuzz/corpus/<target>/*`) through
//! the same bodies libFuzzer runs ([`btfs_host::fuzz_bodies`]), on stable, in CI. `write_seeds`
//! (ignored) regenerates the seed inputs made from real encodings; `cargo xtask fuzz` runs it.
//! Core's targets replay in `core/tests/fuzz_corpus.rs`; named regression tests for findings
//! are at the end (docs/fuzzing.md lists them).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use btfs_core::fuzz_bodies as core_bodies;
use btfs_core::hub::HubRequest;
use btfs_host::fuzz_bodies::{self, fuzz_host_ad};

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target)
}

/// Runs every corpus file of `target` through `body`; fails naming each input that panics.
fn replay(target: &str, body: fn(&[u8])) {
    core_bodies::replay_corpus(&corpus_dir(target), body);
}

#[test]
fn network_file_corpus() {
    replay("network_file", fuzz_bodies::network_file);
}

#[test]
fn hub_serve_corpus() {
    replay("hub_serve", fuzz_bodies::hub_serve);
}

#[test]
fn contract_serve_corpus() {
    replay("contract_serve", fuzz_bodies::contract_serve);
}

#[test]
fn status_api_corpus() {
    replay("status_api", fuzz_bodies::status_api);
}

/// The seed inputs made from real encodings, by target and name.
fn seeds() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let announce = |seed: u8, tail: &str| {
        let mut v = serde_json::to_vec(&HubRequest::Announce(fuzz_host_ad(seed))).unwrap();
        v.extend_from_slice(tail.as_bytes());
        v
    };
    vec![
        // A new host, sent by its signer (the last byte is even): accepted.
        ("hub_serve", "announce_new", announce(5, "\n")),
        // A known host's ad again: not newer than the one held, refused.
        ("hub_serve", "announce_again", announce(0, "\n")),
        // Relayed by another peer (the last byte, '}', is odd): refused.
        ("hub_serve", "announce_relayed", announce(6, "")),
        // A contract for the one shard the host holds for the asking tenant: signed.
        ("contract_serve", "contract_held", contract_seed(true)),
        // The same for a shard it does not hold: refused.
        ("contract_serve", "contract_not_held", contract_seed(false)),
        // The tenant's offer with the Escrow's (identity 3's) funding proof: granted.
        ("contract_serve", "funded", funded_seed(3)),
        // The same proof signed by the tenant itself: refused.
        ("contract_serve", "funded_forged", funded_seed(1)),
    ]
}

fn funded_seed(signer: u8) -> Vec<u8> {
    use btfs_core::escrow::{Cosigned, Funded, HostRequest};
    let peer = |k: &libp2p::identity::ed25519::Keypair| {
        libp2p::identity::PublicKey::from(k.public())
            .to_peer_id()
            .to_base58()
    };
    let (tenant, host, escrow) = (
        fuzz_bodies::fuzz_key(1),
        fuzz_bodies::fuzz_key(2),
        fuzz_bodies::fuzz_key(signer),
    );
    let terms = btfs_core::escrow::Terms {
        id: "ef".repeat(16),
        tenant: peer(&tenant),
        host: peer(&host),
        guard: peer(&fuzz_bodies::fuzz_key(3)),
        price_per_gib_epoch: 1,
        epoch_ms: 5000,
        first_epoch: 10,
        epochs: 100,
        max_bytes: 1 << 20,
        max_shards: 4,
        offer_expires_ms: 2_000_000_000_000,
        manifest_id: None,
        shards: Vec::new(),
        repair_of: None,
    };
    let doc = Cosigned::propose(&terms)
        .unwrap()
        .sign(&host)
        .unwrap()
        .sign(&tenant)
        .unwrap();
    let proof = btfs_core::signed::Signed::sign(
        &Funded {
            peer_id: peer(&escrow),
            tenant: peer(&tenant),
            offers: vec![terms.id.clone()],
            issued_at_ms: 1_000,
        },
        &escrow,
    )
    .unwrap();
    serde_json::to_vec(&HostRequest::Funded {
        offers: vec![doc],
        proof,
    })
    .unwrap()
}

fn contract_seed(held: bool) -> Vec<u8> {
    let peer = |k: &libp2p::identity::ed25519::Keypair| {
        libp2p::identity::PublicKey::from(k.public())
            .to_peer_id()
            .to_base58()
    };
    let shard = fuzz_bodies::fuzz_contract_shard();
    let root = if held {
        btfs_core::Root::of(&shard)
    } else {
        btfs_core::Root::of(b"other")
    };
    let terms = btfs_core::escrow::Terms {
        id: "ab".repeat(16),
        tenant: peer(&fuzz_bodies::fuzz_key(1)),
        host: peer(&fuzz_bodies::fuzz_key(2)),
        guard: peer(&fuzz_bodies::fuzz_key(3)),
        price_per_gib_epoch: 1,
        epoch_ms: 5000,
        first_epoch: 10,
        epochs: 100,
        max_bytes: 1 << 20,
        max_shards: 4,
        offer_expires_ms: 2_000_000_000_000,
        manifest_id: Some("cd".repeat(32)),
        shards: vec![btfs_core::escrow::ShardTerm {
            root: root.to_hex(),
            size: shard.len() as u64,
        }],
        repair_of: None,
    };
    let doc = btfs_core::escrow::Cosigned::propose(&terms).unwrap();
    serde_json::to_vec(&btfs_core::escrow::HostRequest::Contract { doc }).unwrap()
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

#[test]
fn seeds_pass_their_bodies() {
    for (target, name, data) in seeds() {
        let body: fn(&[u8]) = match target {
            "hub_serve" => fuzz_bodies::hub_serve,
            "contract_serve" => fuzz_bodies::contract_serve,
            other => panic!("no body for {other}"),
        };
        let ok = catch_unwind(AssertUnwindSafe(|| body(&data))).is_ok();
        assert!(ok, "seed {target}/{name} fails its body");
    }
    // The held-shard contract really is signed (the seed reaches the signing path), the other
    // refused with the reason.
    for (name, signed) in [("contract_held", true), ("contract_not_held", false)] {
        let (_, _, data) = seeds().into_iter().find(|(_, n, _)| *n == name).unwrap();
        match fuzz_bodies::contract_decide(&data).unwrap() {
            Ok(_) => assert!(signed, "{name} was signed"),
            Err(e) => assert!(!signed && e.contains("is not on this host"), "{name}: {e}"),
        }
    }
    // The Escrow's proof is granted, the forged one refused with the reason.
    for (name, want) in [
        ("funded", "funded: granted"),
        ("funded_forged", "not by this host's Escrow"),
    ] {
        let (_, _, data) = seeds().into_iter().find(|(_, n, _)| *n == name).unwrap();
        let got = fuzz_bodies::contract_decide(&data).unwrap().unwrap_err();
        assert!(got.contains(want), "{name}: {got}");
    }
}

// ---- regression tests for fuzzing findings (docs/fuzzing.md) ----

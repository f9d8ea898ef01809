//! The bodies of the fuzz targets over btfs-host's decoders and request handlers (`fuzz/` runs
//! them under libFuzzer; `host-node/tests/fuzz_corpus.rs` replays the committed corpus through
//! the same functions on stable, in CI). Core's decoders are in `btfs_core::fuzz_bodies`.
//!
//! Goals: what a remote peer or a shared file reaches without a socket — the network file and
//! the URLs in it, a Hub's handling of a request ([`crate::services::hub::server::answer`] on a
//! real [`Registry`]), and the Status HTTP API from an already-parsed HTTP request
//! ([`crate::net::http`]'s body reading, then [`crate::services::status::server::Api`], the
//! routes the server runs, over a real database). Beyond "no panic": an honest Hub's recommendation passes the
//! tenant's own check after a JSON round trip, and every Status answer is well-formed JSON or
//! text with a sensible status code. A violated property panics (how a fuzz target reports).
//! Non-goals: hyper's own HTTP/1 parser and libp2p's codecs (upstream fuzzes them).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use btfs_core::hub::{self as core_hub, HubRequest, HubResponse};
use btfs_core::signed::{HostAd, Signed, Signer, StatusReport};
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, StatusCode};
use libp2p::PeerId;

use crate::net::http::{HttpUrl, ServerOptions};
use crate::services::hub::registry::{own_version, Registry};
use crate::services::hub::server::{answer, HubOptions};
use crate::services::status::server::Api;
use crate::services::status::{StatusOptions, HOSTS_PATH, REPORTS_PATH, STATUS_PATH};
use crate::tenant::network_file::{self, NetworkFile};

/// The bytes of the one shard [`contract_serve`]'s host holds for the fuzz tenant.
pub fn fuzz_contract_shard() -> Vec<u8> {
    (0..4096u32).map(|i| (i * 7 % 251) as u8).collect()
}

/// A host deciding whether to sign what a peer sends on `/btfs/contract/1`
/// ([`crate::host::contract_server::decide`]): the asking peer is fuzz identity 1, the host is
/// identity 2 (asking price 100 per GiB-month) and holds [`fuzz_contract_shard`] for the
/// asking peer. Whatever arrives, a signature is given only to terms that name this host and this
/// tenant, price at or above 100/month, and (a contract) shards it holds for that tenant at
/// their size; the signed document verifies and says what was asked.
pub fn contract_serve(data: &[u8]) {
    let _ = contract_decide(data);
}

/// [`contract_serve`]'s decision: `None` if `data` is not a request, else what the host
/// answered (after the body's checks).
pub fn contract_decide(data: &[u8]) -> Option<Result<btfs_core::escrow::Cosigned, String>> {
    use crate::host::contract_server::{decide, ContractPolicy};
    use crate::host::store::{BlobStore, MemStore};
    use btfs_core::escrow::{HostRequest, HostResponse};
    let req = serde_json::from_slice::<HostRequest>(data).ok()?;
    let tenant = fuzz_key(1);
    let peer = libp2p::identity::PublicKey::from(tenant.public()).to_peer_id();
    static STORE: OnceLock<std::sync::Arc<MemStore>> = OnceLock::new();
    let store = STORE.get_or_init(|| {
        let s = MemStore::new(1 << 30);
        let shard = fuzz_contract_shard();
        let root = btfs_core::Root::of(&shard);
        let verified = root
            .verify_in(crate::host::store::Body::copy_of(&shard))
            .unwrap();
        s.put(&root, &verified, peer, 0).unwrap();
        std::sync::Arc::new(s)
    });
    let pid = |k: &libp2p::identity::ed25519::Keypair| {
        libp2p::identity::PublicKey::from(k.public()).to_peer_id()
    };
    let policy = ContractPolicy {
        key: fuzz_key(2),
        price_per_gib_month: 100,
        funding: Some(std::sync::Arc::new(crate::host::funding::Funding::new(
            pid(&fuzz_key(2)),
            pid(&fuzz_key(3)),
        ))),
    };
    let asked = match &req {
        HostRequest::Offer { doc } | HostRequest::Contract { doc } => doc.clone(),
        HostRequest::Funded { proof, .. } => {
            // A grant is given only on the Escrow's (identity 3's) proof for this tenant.
            // Answered as `Err("funded: granted")` or `Err("funded: <refusal>")`.
            let r = decide(peer, req.clone(), store.as_ref(), &policy);
            if let Ok(HostResponse::Granted { .. }) = &r {
                let v = proof
                    .verify::<btfs_core::escrow::Funded>()
                    .expect("a granted proof verifies");
                assert_eq!(v.peer, pid(&fuzz_key(3)), "granted on a stranger's proof");
                assert_eq!(v.body.tenant, peer.to_base58());
            }
            return Some(Err(match r {
                Ok(_) => "funded: granted".into(),
                Err(e) => format!("funded: {e}"),
            }));
        }
    };
    let r = decide(peer, req, store.as_ref(), &policy).and_then(|r| match r {
        HostResponse::Signed { doc } => Ok(doc),
        HostResponse::Granted { .. } => Err("an offer was answered with a grant".into()),
    });
    if let Ok(signed) = &r {
        let t = signed.verify_host().expect("what the host signs verifies");
        assert_eq!(signed.payload, asked.payload, "the host signed other terms");
        assert_eq!(t.tenant, peer.to_base58());
        assert!(t.price_per_gib_epoch >= btfs_core::escrow::price_per_epoch(100, t.epoch_ms));
        for sh in &t.shards {
            let root = btfs_core::Root::from_hex(&sh.root).unwrap();
            assert_eq!(store.size(&root).unwrap(), Some(sh.size));
        }
    }
    Some(r)
}

/// The clock of [`hub_serve`] (fixed, so runs are reproducible): the seed hosts' ads are
/// issued at this time.
pub const HUB_NOW_MS: u64 = 1_000_000;

/// The ed25519 key of fuzz identity `seed` (the seed corpora sign with the same keys).
pub fn fuzz_key(seed: u8) -> libp2p::identity::ed25519::Keypair {
    let secret = libp2p::identity::ed25519::SecretKey::try_from_bytes([seed | 0x80; 32])
        .expect("any 32 bytes are an ed25519 secret key");
    libp2p::identity::ed25519::Keypair::from(secret)
}

fn peer_of(key: &libp2p::identity::ed25519::Keypair) -> PeerId {
    libp2p::identity::PublicKey::from(key.public()).to_peer_id()
}

/// The signed ad of fuzz host `seed`, issued at [`HUB_NOW_MS`] (what [`hub_serve`]'s registry
/// holds, and what its seed corpus re-announces).
pub fn fuzz_host_ad(seed: u8) -> Signed {
    let key = fuzz_key(seed);
    let ad = HostAd {
        peer_id: peer_of(&key).to_base58(),
        addrs: vec![format!("/ip4/10.0.{seed}.1/tcp/4001")],
        capacity_bytes: 1 << 40,
        free_bytes: 1 << 39,
        price_per_gib_month: 10 + u64::from(seed),
        version: env!("CARGO_PKG_VERSION").into(),
        region: Some(if seed.is_multiple_of(2) { "eu" } else { "us" }.into()),
        issued_at_ms: HUB_NOW_MS,
    };
    Signed::sign(&ad, &key).expect("the fuzz ad is within bounds")
}

/// `network.json` as read by the CLI (`--network`; a file someone else may have written):
/// parse, then every accessor (Hub entry, Status URL, host entries), the Status URL through
/// [`HttpUrl::parse`] and joined with an API path; and the whole input as a URL too.
pub fn network_file(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        http_url(text);
    }
    if data.len() > 1 << 20 {
        return;
    }
    let Ok(file) = NetworkFile::parse(data) else {
        return;
    };
    let path = Path::new("network.json");
    if let Ok(Some(hub)) = network_file::hub(&file, path) {
        assert!(!hub.addrs.is_empty());
        assert!(hub.addrs.iter().all(crate::net::is_native));
    }
    if let Ok(Some(url)) = network_file::status_http(&file, path) {
        http_url(&url);
    }
    if let Ok(hosts) = network_file::known_hosts(&file, path) {
        assert_eq!(hosts.len(), file.hosts.len());
    }
    // What `btfs devnet` writes reads back the same.
    let json = serde_json::to_vec(&file).expect("a parsed network file serializes");
    let back: NetworkFile = serde_json::from_slice(&json).expect("its JSON parses");
    assert_eq!(back.bootstrap, file.bootstrap);
    assert_eq!(back.hosts, file.hosts);
}

fn http_url(text: &str) {
    let Ok(url) = HttpUrl::parse(text) else {
        return;
    };
    assert!(url.path.starts_with('/'), "{url:?}");
    let (host, port) = url
        .authority
        .rsplit_once(':')
        .expect("a parsed authority has a port");
    assert!(!host.is_empty() && port.parse::<u16>().is_ok(), "{url:?}");
    // The client puts the path in the request line and the authority in Host.
    let joined = url.join(STATUS_PATH);
    assert!(joined.path.ends_with(STATUS_PATH));
}

/// One Hub request, as the Hub's libp2p codec hands it over (JSON, bounded), answered by
/// [`answer`] on a registry of three probed hosts; the `peer` it came from is the ad's signer
/// or, when the input's last byte is odd, someone else (a relayed ad). The answer must
/// serialize within [`core_hub::MAX_RESPONSE_BYTES`], and a recommendation must pass the
/// tenant's [`core_hub::check_recommendation`] after the JSON round trip.
pub fn hub_serve(data: &[u8]) {
    if data.len() as u64 > core_hub::MAX_REQUEST_BYTES {
        return;
    }
    let Ok(request) = serde_json::from_slice::<HubRequest>(data) else {
        return;
    };
    let opts = HubOptions::default();
    let mut registry = Registry::new(8);
    for seed in 0..3 {
        let ad = fuzz_host_ad(seed);
        let verified = ad.verify::<HostAd>().expect("fuzz ads verify");
        let peer = verified.peer;
        registry
            .announce(verified, ad, peer, HUB_NOW_MS, 60_000)
            .expect("fuzz ads are accepted");
        for _ in 0..3 {
            registry.record_probe(&peer, true, HUB_NOW_MS);
        }
    }
    registry.refresh_all(HUB_NOW_MS);
    let relayed = data.last().is_some_and(|b| b % 2 == 1);
    let peer = match &request {
        HubRequest::Announce(s) if !relayed => Signer::decode(&s.public_key)
            .map(|s| s.peer())
            .unwrap_or_else(|_| peer_of(&fuzz_key(9))),
        _ => peer_of(&fuzz_key(9)),
    };
    let recommend = match &request {
        HubRequest::Recommend(r) => Some(r.clone()),
        _ => None,
    };
    let mut budget = crate::services::status::admission::NewPeerBudget::new(
        opts.new_hosts_per_ip,
        u64::try_from(opts.new_host_window.as_millis()).unwrap_or(u64::MAX),
        1024,
    );
    let source = Some(std::net::IpAddr::from([127, 0, 0, 1]));
    let (response, accepted) = answer(
        &mut registry,
        &mut budget,
        peer,
        source,
        request,
        HUB_NOW_MS,
        &opts,
    );
    assert_eq!(accepted, matches!(response, HubResponse::Accepted { .. }));
    let json = serde_json::to_vec(&response).expect("a Hub answer serializes");
    assert!(
        json.len() as u64 <= core_hub::MAX_RESPONSE_BYTES,
        "a Hub answer of {} bytes is over the limit tenants accept",
        json.len()
    );
    let back: HubResponse = serde_json::from_slice(&json).expect("a Hub answer parses");
    if let (Some(req), HubResponse::Recommendation(rec)) = (recommend, back) {
        if let Err(e) = core_hub::check_recommendation(&rec, &req, own_version(), rec.hosts.len()) {
            panic!("an honest Hub's recommendation fails the tenant's check: {e}\n{rec:?}");
        }
    }
}

/// The Status service with its database, on a runtime of its own (made once per process).
struct StatusFixture {
    runtime: tokio::runtime::Runtime,
    api: Api,
    max_body: usize,
}

fn status_fixture() -> &'static StatusFixture {
    static FIXTURE: OnceLock<StatusFixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let dir = std::env::temp_dir().join(format!("btfs-fuzz-status-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        let opts = StatusOptions {
            min_interval: Duration::ZERO,
            commit_linger: Duration::ZERO,
            history_len: 8,
            max_peers: 64,
            list_limit: 100,
            // The fuzz keys are the network's hosts, so reports reach ingest's deeper rules.
            admission: crate::services::status::admission::Admission::AllowList(
                std::sync::Arc::new((0..4).map(|seed| peer_of(&fuzz_key(seed))).collect()),
            ),
            http: ServerOptions {
                max_body: 4096,
                ..ServerOptions::default()
            },
            ..StatusOptions::for_tests()
        };
        let max_body = opts.http.max_body;
        let api = runtime
            .block_on(Api::open(&dir, opts))
            .expect("the Status database opens");
        StatusFixture {
            runtime,
            api,
            max_body,
        }
    })
}

/// One Status HTTP request, already parsed by hyper: the input picks the method, the path (an
/// API path or any bytes), a query, a declared `Content-Length` and the body — raw bytes, or a
/// status report freshly signed by one of four fuzz identities with fields from the input (so
/// admission, totals and history are reached, not only the signature check). The request goes
/// through the server's body reading (`http::read_request`) and the service's routes; every
/// answer must be a known status with a JSON body for JSON answers.
pub fn status_api(data: &[u8]) {
    let fx = status_fixture();
    let mut r = Input(data);
    let method = match r.u8() % 8 {
        0 | 1 => Method::GET,
        2 | 3 => Method::POST,
        4 => Method::PUT,
        5 => Method::HEAD,
        6 => Method::DELETE,
        _ => Method::OPTIONS,
    };
    let seed = r.u8();
    let peer = peer_of(&fuzz_key(seed % 4)).to_base58();
    let mut path = match r.u8() % 8 {
        0 => STATUS_PATH.to_string(),
        1 => REPORTS_PATH.to_string(),
        2 => format!("{HOSTS_PATH}{peer}"),
        3 => format!("{HOSTS_PATH}{}", r.text()),
        4 => "/metrics".into(),
        5 => "/".into(),
        _ => r.text(),
    };
    if r.u8() % 2 == 0 {
        path.push('?');
        path.push_str(&r.text());
    }
    let declared = (r.u8() % 4 == 0).then(|| r.text());
    let body: Vec<u8> = if r.u8() % 2 == 0 {
        let key = fuzz_key(seed % 4);
        let now = crate::services::status::now_ms();
        let skew = i64::from(r.u16() as i16) * 100;
        let report = StatusReport {
            peer_id: peer.clone(),
            issued_at_ms: now.saturating_add_signed(skew),
            uptime_secs: r.u64(),
            capacity_bytes: r.u64(),
            used_bytes: r.u64(),
            shards_held: r.u64(),
            requests_served: r.u64(),
            requests_failed: r.u64(),
            version: r.text(),
        };
        match Signed::sign(&report, &key) {
            Ok(s) => serde_json::to_vec(&s).expect("an envelope serializes"),
            Err(_) => r.rest().to_vec(),
        }
    } else {
        r.rest().to_vec()
    };
    let mut builder = hyper::Request::builder().method(method).uri(path.as_str());
    if let Some(n) = &declared {
        builder = builder.header(hyper::header::CONTENT_LENGTH, n.as_str());
    }
    // hyper refuses such request lines and headers before any of our code sees them.
    let Ok(req) = builder.body(Full::new(Bytes::from(body))) else {
        return;
    };
    let remote = SocketAddr::from(([127, 0, 0, 1], 40_000));
    let opts = ServerOptions {
        max_body: fx.max_body,
        ..ServerOptions::default()
    };
    let response = fx.runtime.block_on(async {
        match crate::net::http::read_request(req, remote, &opts).await {
            Ok(req) => fx.api.handle(req).await,
            Err(refused) => refused,
        }
    });
    let known = [
        StatusCode::OK,
        StatusCode::ACCEPTED,
        StatusCode::BAD_REQUEST,
        StatusCode::UNAUTHORIZED,
        StatusCode::FORBIDDEN,
        StatusCode::NOT_FOUND,
        StatusCode::METHOD_NOT_ALLOWED,
        StatusCode::REQUEST_TIMEOUT,
        StatusCode::PAYLOAD_TOO_LARGE,
        StatusCode::UNPROCESSABLE_ENTITY,
        StatusCode::TOO_MANY_REQUESTS,
        StatusCode::SERVICE_UNAVAILABLE,
    ];
    assert!(
        known.contains(&response.status),
        "unexpected status {} for {path:?}",
        response.status
    );
    if response.content_type == "application/json" {
        let v: serde_json::Value =
            serde_json::from_slice(&response.body).expect("a JSON answer parses");
        if !response.status.is_success() {
            assert!(v.get("error").is_some_and(|e| e.is_string()), "{v}");
        }
    }
}

use btfs_core::fuzz_bodies::Bytes as Input;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_accept_empty_and_tiny_inputs() {
        for f in [network_file, hub_serve, status_api] {
            f(&[]);
            f(&[0]);
            f(&[0xff; 64]);
        }
    }
}

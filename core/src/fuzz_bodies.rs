//! The bodies of the coverage-guided fuzz targets over core's decoders (`fuzz/` at the
//! workspace root runs them under libFuzzer; `core/tests/fuzz_corpus.rs` replays the committed
//! corpus through the very same functions on stable, in CI).
//!
//! Goals: every decoder a remote peer (a host, a Hub, a link's author) can feed bytes to is
//! driven with arbitrary input, and checked for more than "does not panic" where it is cheap:
//! decode → encode gives back the input for the canonical binary formats (manifest, frames),
//! a parsed link prints back to a link that parses to the same value, and a signed envelope that
//! was changed in any byte never verifies. A property violation panics: that is how a fuzz
//! target reports it. Non-goals: fuzzing third-party parsers for their own sake (serde_json and
//! ed25519 are reached only through our types), and anything with I/O.
//!
//! Each `pub fn` takes the raw fuzz input; none allocates more than the decoders it calls allow.
//! See `docs/fuzzing.md` for the campaigns run and what they found.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use crate::crypto::ObjectKey;
use crate::hub::{self, HubRequest, HubResponse, RecommendRequest};
use crate::layout::{DATA_SHARDS, MAX_SHARD_SIZE, TOTAL_SHARDS};
use crate::link::Link;
use crate::manifest::{Manifest, MAX_MANIFEST_LEN};
use crate::protocol::{
    self, Op, RequestHead, ResponseHead, Status, MAX_BLOB_LEN, MAX_MESSAGE_LEN, REQUEST_HEAD_LEN,
    RESPONSE_HEAD_LEN,
};
use crate::root::Root;
use crate::signed::{self, HostAd, Signed, Signer, StatusReport};

/// The key the manifest corpus' headers are sealed with (so seeds reach the header parser).
pub const FUZZ_KEY: [u8; 32] = [7; 32];

/// The version a tenant checks recommendations against in [`hub_response`].
pub const FUZZ_VERSION: crate::score::Version = (0, 1, 0);

/// The request a tenant checks recommendations against in [`hub_response`].
pub fn fuzz_recommend_request() -> RecommendRequest {
    RecommendRequest {
        count: 2,
        shard_size: 1 << 20,
        shards_per_host: 1,
        duration_days: 30,
        prefs: hub::Prefs::default(),
    }
}

/// Manifest bytes as fetched from a host: decode, and when they parse, re-encode to exactly the
/// same bytes (the format is canonical: the manifest id is the root of these bytes) and open the
/// header with [`FUZZ_KEY`]. Then the same input as a header *plaintext*, sealed into a valid
/// manifest, so the header parser sees arbitrary bytes too (a link's author controls them).
pub fn manifest(data: &[u8]) {
    if let Ok(m) = Manifest::decode(data) {
        assert_eq!(m.encode(), data, "decode → encode must give back the input");
        assert_eq!(m.id(), Root::of(data));
        let _ = m.open_header(&ObjectKey::from_bytes(FUZZ_KEY));
    }
    manifest_header(data);
}

fn manifest_header(plain: &[u8]) {
    let key = ObjectKey::from_bytes(FUZZ_KEY);
    let sealed = key.seal_header(plain);
    let Some(wire) = one_slab_manifest(&sealed) else {
        return;
    };
    let m = Manifest::decode(&wire).expect("a well-formed one-slab manifest must decode");
    let Ok(header) = m.open_header(&key) else {
        return;
    };
    // What was opened builds a manifest whose header opens to the same thing.
    let again = Manifest::new(
        *m.layout(),
        &key,
        &header,
        m.hosts().to_vec(),
        m.slabs().to_vec(),
    )
    .expect("an opened header is within bounds");
    assert_eq!(again.open_header(&key).unwrap(), header);
}

/// Wire bytes of a one-slab, 30-host manifest with `sealed` as its sealed header.
fn one_slab_manifest(sealed: &[u8]) -> Option<Vec<u8>> {
    let header_len = u16::try_from(sealed.len()).ok()?;
    let mut w = Vec::new();
    w.extend_from_slice(b"BTFSMAN\x01");
    w.extend_from_slice(&[DATA_SHARDS as u8, (TOTAL_SHARDS - DATA_SHARDS) as u8]);
    w.extend_from_slice(&crate::layout::BLOCK_PLAIN.to_le_bytes());
    w.extend_from_slice(&4096u32.to_le_bytes());
    w.extend_from_slice(&116u64.to_le_bytes()); // 100 plaintext bytes in one block
    w.extend_from_slice(&header_len.to_le_bytes());
    w.extend_from_slice(sealed);
    w.extend_from_slice(&(TOTAL_SHARDS as u16).to_le_bytes());
    for i in 0..TOTAL_SHARDS as u8 {
        w.extend_from_slice(&[1, i]);
    }
    for i in 0..TOTAL_SHARDS as u16 {
        w.extend_from_slice(&[i as u8; 32]);
        w.extend_from_slice(&i.to_le_bytes());
    }
    (w.len() <= MAX_MANIFEST_LEN).then_some(w)
}

/// A capability link as pasted by a user or opened from a web page: parse, and when it parses,
/// print it and parse that to the same link (the printed form is canonical).
pub fn link(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(link) = Link::parse(text) {
        let printed = link.to_string();
        let back = Link::parse(&printed).expect("a printed link must parse");
        assert_eq!(back, link);
        assert_eq!(back.to_string(), printed, "the printed form is canonical");
    }
}

/// The shard a [`proof`] input's honest proof is built from (16 KiB + 100 bytes: 17 chunks, the
/// last one short).
pub fn fuzz_proof_shard() -> Vec<u8> {
    (0..16 * 1024 + 100u32)
        .map(|i| (i * 31 % 251) as u8)
        .collect()
}

/// Storage proofs, both sides of `/btfs/audit/1`. The first 68 bytes are read as a challenge a
/// host decodes (decode → encode gives them back); the rest as a proof a Guard checks against
/// it: nothing a hostile host sends may verify unless it really is the proof (the only way to
/// build one is from the bytes). And for the fixed [`fuzz_proof_shard`] with the input's first
/// 32 bytes as nonce, the honest proof verifies, while the same proof with the byte at a
/// fuzz-chosen position flipped, cut short or with a byte appended does not.
pub fn proof(data: &[u8]) {
    use crate::proof::{self, Challenge, CHALLENGE_LEN};
    if data.len() >= CHALLENGE_LEN {
        if let Ok(c) = Challenge::decode(&data[..CHALLENGE_LEN]) {
            assert_eq!(&c.encode()[..], &data[..CHALLENGE_LEN]);
            let _ = proof::verify(&c, &data[CHALLENGE_LEN..]);
        }
    }
    let shard = fuzz_proof_shard();
    let mut nonce = [0u8; 32];
    let n = data.len().min(32);
    nonce[..n].copy_from_slice(&data[..n]);
    let c = Challenge {
        root: Root::of(&shard),
        nonce,
        size: shard.len() as u32,
    };
    let honest = proof::prove(&c, &shard).expect("an honest host can always prove");
    proof::verify(&c, &honest).expect("an honest proof verifies");
    let at = data.get(32..40).map_or(0, |b| {
        u64::from_le_bytes(b.try_into().expect("8 bytes")) as usize % honest.len()
    });
    let mut flipped = honest.clone();
    flipped[at] ^= data.get(40).copied().unwrap_or(1).max(1);
    assert!(
        proof::verify(&c, &flipped).is_err(),
        "a changed proof verified"
    );
    assert!(
        proof::verify(&c, &honest[..at]).is_err(),
        "a cut proof verified"
    );
    let mut longer = honest;
    longer.push(0);
    assert!(
        proof::verify(&c, &longer).is_err(),
        "a longer proof verified"
    );
}

/// Shard-protocol frames: the first 37 bytes as a request header a host reads (decode → encode
/// gives them back), the first 5 as a response header, and the whole input as a host's answer
/// to [`protocol::exchange`] (what a tenant reads from a hostile host): the body it returns is
/// bounded and is exactly what the host sent.
pub fn frames(data: &[u8]) {
    let mut head = [0u8; REQUEST_HEAD_LEN];
    let n = data.len().min(REQUEST_HEAD_LEN);
    head[..n].copy_from_slice(&data[..n]);
    if let Ok(req) = RequestHead::decode(&head) {
        assert_eq!(req.encode(), head);
        assert!(req.len <= MAX_BLOB_LEN);
        assert!(req.op == Op::Put || req.len == 0);
    }
    let mut rh = [0u8; RESPONSE_HEAD_LEN];
    let n = data.len().min(RESPONSE_HEAD_LEN);
    rh[..n].copy_from_slice(&data[..n]);
    // Bound OK answers by a value the input picks too (STAT asks for 8, GET for a shard).
    let max_ok_len = match data.get(RESPONSE_HEAD_LEN) {
        Some(b) if b % 2 == 0 => 8,
        _ => MAX_BLOB_LEN,
    };
    if let Ok(resp) = ResponseHead::decode(&rh, max_ok_len) {
        assert_eq!(resp.encode(), rh);
        let max = if resp.status == Status::Ok {
            max_ok_len
        } else {
            MAX_MESSAGE_LEN
        };
        assert!(resp.len <= max);
    }
    let request = RequestHead {
        op: Op::Get,
        root: Root::from_bytes([1; 32]),
        len: 0,
    };
    let mut stream = ScriptedStream {
        answer: data,
        written: Vec::new(),
    };
    let result = block_on(protocol::exchange(&mut stream, &request, &[], max_ok_len));
    assert_eq!(&stream.written[..REQUEST_HEAD_LEN], &request.encode());
    if let Ok((status, body)) = result {
        let head = ResponseHead::decode(&rh, max_ok_len).expect("exchange accepted this head");
        assert_eq!(status, head.status);
        assert_eq!(body.len(), head.len as usize);
        assert_eq!(
            &body[..],
            &data[RESPONSE_HEAD_LEN..RESPONSE_HEAD_LEN + body.len()]
        );
    }
}

/// A Hub request as a Hub (or, for `Probe`, a host) reads it: bounded, and a parsed request
/// serializes to JSON that parses back to the same request (so hosts and the browser, which
/// re-encode, never drift). The Hub's handling of it is `btfs_host::fuzz_bodies::hub_serve`.
pub fn hub_request(data: &[u8]) {
    if data.len() as u64 > hub::MAX_REQUEST_BYTES {
        return;
    }
    let Ok(req) = serde_json::from_slice::<HubRequest>(data) else {
        return;
    };
    let json = serde_json::to_vec(&req).expect("a parsed request serializes");
    let back: HubRequest = serde_json::from_slice(&json).expect("serialized JSON parses");
    assert_eq!(back, req);
    if let HubRequest::Recommend(r) = &req {
        let _ = hub::score_request(r, FUZZ_VERSION);
    }
    if let HubRequest::Announce(s) = &req {
        signed_envelope(s);
    }
}

/// A Hub's answer as a tenant reads it: bounded; a recommendation goes through
/// [`hub::check_recommendation`], and whatever passes has verifying, distinct hosts.
pub fn hub_response(data: &[u8]) {
    if data.len() as u64 > hub::MAX_RESPONSE_BYTES {
        return;
    }
    let Ok(resp) = serde_json::from_slice::<HubResponse>(data) else {
        return;
    };
    match resp {
        HubResponse::Recommendation(rec) => {
            let req = fuzz_recommend_request();
            let _ = rec.shortfall(req.count as usize);
            for need in [1, rec.hosts.len()] {
                let Ok(checked) = hub::check_recommendation(&rec, &req, FUZZ_VERSION, need) else {
                    continue;
                };
                assert!(checked.len() >= need);
                let mut seen = std::collections::HashSet::new();
                for (c, h) in checked.iter().zip(&rec.hosts) {
                    assert!(seen.insert(&c.peer_id), "a checked host appears twice");
                    let ad =
                        h.ad.verify::<HostAd>()
                            .expect("a checked host's ad verifies");
                    assert_eq!(ad.peer.to_base58(), c.peer_id);
                    assert_eq!(ad.body.addrs, c.addrs);
                }
            }
        }
        HubResponse::Hosts(hosts) => {
            for h in &hosts {
                signed_envelope(&h.ad);
            }
        }
        // A bootstrap node's `Network` answer, as discovery merges it (with itself, as two
        // bootstrap nodes saying the same would): never a panic, and what comes out is bounded
        // and readable through the same accessors as a network file.
        HubResponse::Network(file) => {
            let answers = [("a".to_string(), file.clone()), ("b".to_string(), file)];
            if let Ok(merged) = crate::network_file::merge_directories(&answers) {
                assert!(merged.hosts.is_empty());
                for name in merged.services.keys() {
                    assert!(crate::network_file::SERVICES.contains(&name.as_str()));
                }
                for s in [merged.hub(), merged.guard(), merged.escrow()]
                    .into_iter()
                    .flatten()
                    .flatten()
                {
                    assert!(s.addrs.len() <= crate::network_file::MAX_SERVICE_ADDRS);
                }
                let _ = (
                    merged.status_http(),
                    merged.guard_epoch_ms(),
                    merged.escrow_is_devnet(),
                );
            }
        }
        _ => {}
    }
}

/// A signed envelope (host ad or status report) as JSON off the wire: every verification path
/// runs, [`Signed::verify`] and [`Signed::verify_by`] agree, and a verified body names its
/// signer and is within bounds.
pub fn signed(data: &[u8]) {
    if data.len() > 64 * 1024 {
        return;
    }
    if let Ok(s) = serde_json::from_slice::<Signed>(data) {
        signed_envelope(&s);
    }
}

fn signed_envelope(s: &Signed) {
    fn check<T: signed::Body + PartialEq + std::fmt::Debug>(s: &Signed) {
        let direct = s.verify::<T>();
        if let Ok(signer) = Signer::decode(&s.public_key) {
            let cached = s.verify_by::<T>(&signer);
            assert_eq!(
                direct.is_ok(),
                cached.is_ok(),
                "verify and verify_by disagree"
            );
            if let (Ok(a), Ok(b)) = (&direct, &cached) {
                assert_eq!(a.body, b.body);
            }
        } else {
            assert!(direct.is_err(), "verified with a key that does not decode");
        }
        if let Ok(v) = direct {
            assert_eq!(v.body.peer_id(), v.peer.to_base58());
            assert!(v.body.validate().is_ok());
            assert!(s.payload.len() <= signed::MAX_PAYLOAD);
        }
    }
    check::<HostAd>(s);
    check::<StatusReport>(s);
}

/// A tampered envelope never verifies: the input picks a signing key, a body (host ad or status
/// report) and one byte to change in one of the envelope's four fields; the untouched envelope
/// verifies to the body, and any envelope that differs from it is refused.
pub fn signed_tamper(data: &[u8]) {
    let mut r = Bytes(data);
    let seed = r.u8();
    let key = libp2p_identity::ed25519::Keypair::from(
        libp2p_identity::ed25519::SecretKey::try_from_bytes([seed | 1; 32])
            .expect("any 32 bytes are an ed25519 secret key"),
    );
    let peer_id = libp2p_identity::PublicKey::from(key.public())
        .to_peer_id()
        .to_base58();
    let kind = r.u8();
    let (field, at, xor) = (r.u8() % 4, usize::from(r.u16()), r.u8().max(1));
    let (envelope, report) = if kind % 2 == 0 {
        let body = HostAd {
            peer_id,
            addrs: (0..1 + r.u8() % 3).map(|_| r.text()).collect(),
            capacity_bytes: r.u64(),
            free_bytes: r.u64(),
            price_per_gib_month: r.u64(),
            version: r.text(),
            region: (r.u8() % 2 == 0).then(|| r.text()),
            issued_at_ms: r.u64(),
        };
        let Ok(s) = Signed::sign(&body, &key) else {
            return;
        };
        assert_eq!(s.verify::<HostAd>().expect("fresh signature").body, body);
        (s, false)
    } else {
        let body = StatusReport {
            peer_id,
            issued_at_ms: r.u64(),
            uptime_secs: r.u64(),
            capacity_bytes: r.u64(),
            used_bytes: r.u64(),
            shards_held: r.u64(),
            requests_served: r.u64(),
            requests_failed: r.u64(),
            version: r.text(),
        };
        let Ok(s) = Signed::sign(&body, &key) else {
            return;
        };
        assert_eq!(
            s.verify::<StatusReport>().expect("fresh signature").body,
            body
        );
        (s, true)
    };
    let mut tampered = envelope.clone();
    let text = match field {
        0 => &mut tampered.kind,
        1 => &mut tampered.public_key,
        2 => &mut tampered.payload,
        _ => &mut tampered.signature,
    };
    let mut bytes = std::mem::take(text).into_bytes();
    if bytes.is_empty() {
        bytes.push(xor);
    } else {
        let i = at % bytes.len();
        bytes[i] ^= xor;
    }
    let Ok(changed) = String::from_utf8(bytes) else {
        return;
    };
    *text = changed;
    assert_ne!(tampered, envelope);
    if report {
        assert!(
            tampered.verify::<StatusReport>().is_err(),
            "a tampered status report verified: {tampered:?}"
        );
    } else {
        assert!(
            tampered.verify::<HostAd>().is_err(),
            "a tampered host ad verified: {tampered:?}"
        );
    }
    // And the untouched envelope is refused as the other kind.
    if report {
        assert!(envelope.verify::<HostAd>().is_err());
    } else {
        assert!(envelope.verify::<StatusReport>().is_err());
    }
}

/// Reads fuzz input front to back; past the end every read gives zeros (shared with
/// btfs-host's fuzz bodies).
pub struct Bytes<'a>(pub &'a [u8]);

impl Bytes<'_> {
    /// The next `n` bytes (fewer at the end).
    pub fn take(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        head
    }
    /// Everything left.
    pub fn rest(&mut self) -> &[u8] {
        self.take(usize::MAX)
    }
    /// The next `N` bytes, zero padded.
    pub fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut a = [0u8; N];
        let b = self.take(N);
        a[..b.len()].copy_from_slice(b);
        a
    }
    /// The next byte.
    pub fn u8(&mut self) -> u8 {
        self.array::<1>()[0]
    }
    /// The next u16, little-endian.
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.array())
    }
    /// The next u64, little-endian.
    pub fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.array())
    }
    /// A length byte, then that many bytes as (lossy) UTF-8.
    pub fn text(&mut self) -> String {
        let n = usize::from(self.u8());
        String::from_utf8_lossy(self.take(n)).into_owned()
    }
}

/// An in-memory stream: reads give `answer`, writes are kept.
struct ScriptedStream<'a> {
    answer: &'a [u8],
    written: Vec<u8>,
}

impl futures_util::AsyncRead for ScriptedStream<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        let n = buf.len().min(self.answer.len());
        buf[..n].copy_from_slice(&self.answer[..n]);
        self.answer = &self.answer[n..];
        Poll::Ready(Ok(n))
    }
}

impl futures_util::AsyncWrite for ScriptedStream<'_> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        // Bounded like a real peer's window: a request is at most a header plus a blob.
        let room = (REQUEST_HEAD_LEN + MAX_SHARD_SIZE as usize).saturating_sub(self.written.len());
        let n = buf.len().min(room);
        self.written.extend_from_slice(&buf[..n]);
        Poll::Ready(Ok(n))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Runs a future whose I/O is all in memory (always ready) to completion.
fn block_on<F: Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(out) = f.as_mut().poll(&mut cx) {
            return out;
        }
    }
}

/// Runs every file of the corpus directory `dir` through `body` (what CI does on stable with
/// the committed corpus); panics naming each input whose body panicked.
pub fn replay_corpus(dir: &std::path::Path, body: fn(&[u8])) {
    use std::panic::{catch_unwind, AssertUnwindSafe};
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read the corpus {}: {e}", dir.display()))
        .map(|e| e.expect("a readable corpus entry").path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "the corpus {} is empty", dir.display());
    let failed: Vec<String> = files
        .iter()
        .filter(|f| {
            let data = std::fs::read(f).expect("a readable corpus input");
            catch_unwind(AssertUnwindSafe(|| body(&data))).is_err()
        })
        .map(|f| f.display().to_string())
        .collect();
    assert!(failed.is_empty(), "corpus inputs that fail: {failed:#?}");
    eprintln!("{}: {} corpus inputs replayed", dir.display(), files.len());
}

/// What a tenant parses from a host (`/btfs/contract/1` answers) and from the Escrow (its
/// answers): both decodes are fallible; a host's signed document that verifies still verifies
/// after a JSON round trip, and any change to its payload breaks the host's signature.
pub fn escrow_answers(data: &[u8]) {
    use crate::escrow::{EscrowResponse, HostResponse};
    let _ = serde_json::from_slice::<EscrowResponse>(data);
    let Ok(HostResponse::Signed { doc }) = serde_json::from_slice::<HostResponse>(data) else {
        return;
    };
    if let Ok(t) = doc.verify_host() {
        t.validate().unwrap();
        let again: crate::escrow::Cosigned =
            serde_json::from_str(&serde_json::to_string(&doc).unwrap()).unwrap();
        assert_eq!(again.verify_host().unwrap(), t);
        let mut changed = doc.clone();
        changed.payload.push(' ');
        assert!(
            changed.verify_host().is_err(),
            "a changed payload still verifies"
        );
    }
}

/// The fixed parties of the [`escrow`] body: (tenant, host, guard) keys.
pub fn fuzz_escrow_parties() -> [libp2p_identity::ed25519::Keypair; 3] {
    [11u8, 12, 13].map(|n| {
        libp2p_identity::ed25519::Keypair::from(
            libp2p_identity::ed25519::SecretKey::try_from_bytes([n; 32]).unwrap(),
        )
    })
}

/// The [`escrow`] body's clock.
pub const FUZZ_ESCROW_NOW: u64 = 1_000_000_000;

fn escrow_peer(k: &libp2p_identity::ed25519::Keypair) -> String {
    libp2p_identity::PublicKey::from(k.public())
        .to_peer_id()
        .to_base58()
}

/// Offer terms of the [`escrow`] body's world, with contract id `n`.
pub fn fuzz_escrow_offer(n: u64) -> crate::escrow::Terms {
    let [t, h, g] = fuzz_escrow_parties();
    crate::escrow::Terms {
        id: format!("{n:032x}"),
        tenant: escrow_peer(&t),
        host: escrow_peer(&h),
        guard: escrow_peer(&g),
        price_per_gib_epoch: 5000,
        epoch_ms: 1000,
        first_epoch: FUZZ_ESCROW_NOW / 1000,
        epochs: 20,
        max_bytes: 4 << 20,
        max_shards: 4,
        offer_expires_ms: FUZZ_ESCROW_NOW + 60_000,
        manifest_id: None,
        shards: vec![],
        repair_of: None,
    }
}

/// The ledger every [`escrow`] input is applied to: a funded tenant with one committed contract
/// (contract id 1, two shards with roots `00…01` and `00…02`, object `00…09`), one open offer
/// (id 2), and a repair allowance for object `00…09` that the third party (the Guard) spends.
pub fn fuzz_escrow_ledger() -> crate::escrow::Ledger {
    use crate::escrow::{Call, Command, Cosigned, Ledger, LedgerConfig, Op, ShardTerm};
    static WORLD: std::sync::OnceLock<Ledger> = std::sync::OnceLock::new();
    WORLD
        .get_or_init(|| {
            let [t, h, g] = fuzz_escrow_parties();
            let mut l = Ledger::new(LedgerConfig {
                faucet_max: Some(1 << 40),
                ..LedgerConfig::default()
            });
            let cosign = |terms: &crate::escrow::Terms| {
                Cosigned::propose(terms)
                    .unwrap()
                    .sign(&h)
                    .unwrap()
                    .sign(&t)
                    .unwrap()
            };
            let mut contract = fuzz_escrow_offer(1);
            contract.manifest_id = Some(format!("{:064x}", 9));
            contract.shards = (1..=2)
                .map(|i| ShardTerm {
                    root: format!("{i:064x}"),
                    size: 1 << 20,
                })
                .collect();
            let ops = [
                Op::Deposit { amount: 1 << 30 },
                Op::Reserve {
                    offers: vec![cosign(&fuzz_escrow_offer(1)), cosign(&fuzz_escrow_offer(2))],
                },
                Op::Commit {
                    contracts: vec![cosign(&contract)],
                    void: vec![],
                },
                Op::Allow {
                    manifest_id: format!("{:064x}", 9),
                    guard: escrow_peer(&g),
                    amount: 1 << 20,
                    until_ms: FUZZ_ESCROW_NOW + 3_600_000,
                },
            ];
            for (i, op) in ops.into_iter().enumerate() {
                let call = Call {
                    peer_id: escrow_peer(&t),
                    id: format!("{:032x}", 1000 + i),
                    issued_at_ms: FUZZ_ESCROW_NOW,
                    op,
                };
                let r = l
                    .apply(
                        &Command::Call {
                            call: Signed::sign(&call, &t).unwrap(),
                        },
                        FUZZ_ESCROW_NOW,
                    )
                    .unwrap();
                assert!(
                    matches!(r, crate::escrow::Receipt::Call(ref c) if c.ok),
                    "{r:?}"
                );
            }
            l.take_transfers();
            l
        })
        .clone()
}

/// A request as the Escrow receives it (`/btfs/escrow/1`, JSON): decoding is bounded and
/// fallible; a call or verdict batch is applied to [`fuzz_escrow_ledger`] and, whatever it says,
/// every ledger invariant still holds afterwards; applying it a second time changes no balance
/// (a replay) and settles nothing twice.
pub fn escrow(data: &[u8]) {
    use crate::escrow::{decode_request, Command, EscrowRequest, Receipt};
    let Ok(req) = decode_request(data) else {
        return;
    };
    let cmd = match req {
        EscrowRequest::Call { call } => Command::Call { call },
        EscrowRequest::Settle { batch } => Command::Settle { batch },
        _ => return,
    };
    let mut l = fuzz_escrow_ledger();
    let first = l.apply(&cmd, FUZZ_ESCROW_NOW + 1);
    l.check().unwrap();
    let accounts = format!("{:?}", l.accounts());
    if let Ok(first) = first {
        let again = l.apply(&cmd, FUZZ_ESCROW_NOW + 2).unwrap();
        l.check().unwrap();
        assert_eq!(
            accounts,
            format!("{:?}", l.accounts()),
            "a replay moved money"
        );
        match (first, again) {
            (Receipt::Call(a), Receipt::Call(b)) => {
                assert!(b.replayed);
                assert_eq!((a.ok, a.amount), (b.ok, b.amount));
            }
            (Receipt::Settle(_), Receipt::Settle(b)) => assert_eq!(b.paid + b.refunded, 0),
            _ => panic!("a command changed kind"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn bodies_accept_empty_and_tiny_inputs() {
        for f in [
            manifest,
            link,
            frames,
            hub_request,
            hub_response,
            signed,
            signed_tamper,
        ] {
            f(&[]);
            f(&[0]);
            f(&[0xff; 64]);
        }
    }
}

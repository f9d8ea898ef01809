//! Signed measurements: a host's [`HostAd`] to the Hub and every node's [`StatusReport`] to the
//! Status service, signed with the node's libp2p ed25519 identity key.
//!
//! Goals: anyone (the Hub, the Status service, a browser auditing a ranking) can check that a
//! measurement was made by the peer it names, without trusting whoever relayed it; one kind of
//! message can never be replayed as another; every field a peer controls is bounded before it is
//! stored. Non-goals: freshness and replay ordering (the receiving service compares
//! `issued_at_ms` against its clock and the last message it accepted from that peer, see
//! [`check_fresh`]); other key types than ed25519 (every BTFS node identity is ed25519).
//!
//! ## Wire format (JSON)
//!
//! ```json
//! { "kind": "btfs/host-ad/1",
//!   "public_key": "<base64url, no padding: 32-byte ed25519 public key>",
//!   "payload": "<the body as JSON text>",
//!   "signature": "<base64url, no padding: ed25519 signature of kind ‖ 0x00 ‖ payload>" }
//! ```
//!
//! The body travels as text and is signed byte for byte, so verification never depends on how a
//! JSON library re-serializes it. The body's `peer_id` must be the peer id of `public_key`.

use data_encoding::BASE64URL_NOPAD;
use libp2p_identity::{ed25519, PeerId, PublicKey};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Largest accepted payload text, in bytes.
pub const MAX_PAYLOAD: usize = 4096;
/// Most addresses a host may advertise.
pub const MAX_ADDRS: usize = 16;
/// Longest accepted address, version or region string.
pub const MAX_FIELD: usize = 256;

/// A signed message failed verification; the message says which check failed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SignedError {
    /// The envelope is for another kind of message.
    #[error("expected a {expected} message, got {got:?}")]
    Kind {
        /// Expected kind.
        expected: &'static str,
        /// Kind found (truncated).
        got: String,
    },
    /// Payload over the kind's limit ([`MAX_PAYLOAD`] for most kinds).
    #[error("payload is {0} bytes, over the limit for this kind of message")]
    TooLarge(usize),
    /// Public key or signature is not valid base64url / ed25519.
    #[error("malformed {what}: {why}")]
    Malformed {
        /// Which field.
        what: &'static str,
        /// Why.
        why: String,
    },
    /// The signature does not match the payload and key.
    #[error("bad signature: the payload was not signed by this key")]
    BadSignature,
    /// The body names a different peer than the signing key.
    #[error("the message claims peer {claimed} but is signed by {signer}")]
    WrongPeer {
        /// Peer id in the body.
        claimed: String,
        /// Peer id of the key.
        signer: String,
    },
    /// A body field is out of bounds.
    #[error("invalid {field}: {why}")]
    Field {
        /// Field name.
        field: &'static str,
        /// Why.
        why: String,
    },
    /// Too old, from the future, or not newer than the last accepted one.
    #[error("stale message: {0}")]
    Stale(String),
}

/// A body that can be signed.
pub trait Body: Serialize + DeserializeOwned {
    /// Domain-separation tag and `kind` field.
    const KIND: &'static str;
    /// The peer id the body claims to come from.
    fn peer_id(&self) -> &str;
    /// Unix time in ms when the body was made.
    fn issued_at_ms(&self) -> u64;
    /// Checks field bounds.
    fn validate(&self) -> Result<(), SignedError>;
    /// Largest accepted payload text of this kind (most kinds: [`MAX_PAYLOAD`]).
    const MAX_LEN: usize = MAX_PAYLOAD;
}

/// The envelope, as sent on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signed {
    /// Message kind ([`Body::KIND`]).
    pub kind: String,
    /// base64url ed25519 public key.
    pub public_key: String,
    /// Body JSON text.
    pub payload: String,
    /// base64url signature.
    pub signature: String,
}

/// A verified body and its signer.
#[derive(Debug, Clone, PartialEq)]
pub struct Verified<T> {
    /// The body.
    pub body: T,
    /// The signer (equal to the body's `peer_id`).
    pub peer: PeerId,
}

fn signed_bytes(kind: &str, payload: &str) -> Vec<u8> {
    let mut m = Vec::with_capacity(kind.len() + 1 + payload.len());
    m.extend_from_slice(kind.as_bytes());
    m.push(0);
    m.extend_from_slice(payload.as_bytes());
    m
}

impl Signed {
    /// Signs `body` with `key`. Fails only if the body is out of bounds.
    pub fn sign<T: Body>(body: &T, key: &ed25519::Keypair) -> Result<Signed, SignedError> {
        body.validate()?;
        let payload = serde_json::to_string(body).map_err(|e| SignedError::Field {
            field: "payload",
            why: e.to_string(),
        })?;
        if payload.len() > T::MAX_LEN {
            return Err(SignedError::TooLarge(payload.len()));
        }
        let signature = key.sign(&signed_bytes(T::KIND, &payload));
        Ok(Signed {
            kind: T::KIND.into(),
            public_key: BASE64URL_NOPAD.encode(&key.public().to_bytes()),
            payload,
            signature: BASE64URL_NOPAD.encode(&signature),
        })
    }

    /// Checks kind, size, signature, that the body names its signer, and field bounds.
    pub fn verify<T: Body>(&self) -> Result<Verified<T>, SignedError> {
        self.check_kind_and_size::<T>()?;
        self.verify_by(&Signer::decode(&self.public_key)?)
    }

    /// [`Signed::verify`] with the signer's key already decoded — for services that see the same
    /// peers again and again and keep [`Signer`]s by `public_key` (decoding one costs about a
    /// fifth of a verification). Fails if `signer` is not this envelope's `public_key`.
    pub fn verify_by<T: Body>(&self, signer: &Signer) -> Result<Verified<T>, SignedError> {
        self.check_kind_and_size::<T>()?;
        if signer.encoded != self.public_key {
            return Err(SignedError::Malformed {
                what: "public_key",
                why: "does not match the signer it is checked against".into(),
            });
        }
        let sig = BASE64URL_NOPAD
            .decode(self.signature.as_bytes())
            .map_err(|e| SignedError::Malformed {
                what: "signature",
                why: e.to_string(),
            })?;
        if sig.len() != 64 {
            return Err(SignedError::Malformed {
                what: "signature",
                why: format!("{} bytes, expected 64", sig.len()),
            });
        }
        if !signer
            .key
            .verify(&signed_bytes(&self.kind, &self.payload), &sig)
        {
            return Err(SignedError::BadSignature);
        }
        let body: T = serde_json::from_str(&self.payload).map_err(|e| SignedError::Field {
            field: "payload",
            why: e.to_string(),
        })?;
        if body.peer_id() != signer.peer_b58 {
            return Err(SignedError::WrongPeer {
                claimed: body.peer_id().chars().take(64).collect(),
                signer: signer.peer_b58.clone(),
            });
        }
        body.validate()?;
        Ok(Verified {
            body,
            peer: signer.peer,
        })
    }

    fn check_kind_and_size<T: Body>(&self) -> Result<(), SignedError> {
        if self.kind != T::KIND {
            return Err(SignedError::Kind {
                expected: T::KIND,
                got: self.kind.chars().take(64).collect(),
            });
        }
        if self.payload.len() > T::MAX_LEN {
            return Err(SignedError::TooLarge(self.payload.len()));
        }
        Ok(())
    }
}

/// A signer's decoded ed25519 key and the peer id it stands for (see [`Signed::verify_by`]).
#[derive(Debug, Clone)]
pub struct Signer {
    encoded: String,
    key: ed25519::PublicKey,
    peer: PeerId,
    peer_b58: String,
}

impl Signer {
    /// Decodes an envelope's `public_key` (base64url of the 32-byte ed25519 key).
    pub fn decode(public_key: &str) -> Result<Self, SignedError> {
        let malformed = |why: String| SignedError::Malformed {
            what: "public_key",
            why,
        };
        if public_key.len() > 64 {
            return Err(malformed(format!(
                "{} characters, expected 43",
                public_key.len()
            )));
        }
        let bytes = BASE64URL_NOPAD
            .decode(public_key.as_bytes())
            .map_err(|e| malformed(e.to_string()))?;
        let key =
            ed25519::PublicKey::try_from_bytes(&bytes).map_err(|e| malformed(e.to_string()))?;
        let peer = PublicKey::from(key.clone()).to_peer_id();
        Ok(Self {
            encoded: public_key.to_string(),
            key,
            peer,
            peer_b58: peer.to_base58(),
        })
    }

    /// Whether `signature` is this key's ed25519 signature of `kind ‖ 0x00 ‖ payload`.
    pub(crate) fn verifies(&self, kind: &str, payload: &str, signature: &str) -> bool {
        match BASE64URL_NOPAD.decode(signature.as_bytes()) {
            Ok(sig) if sig.len() == 64 => self.key.verify(&signed_bytes(kind, payload), &sig),
            _ => false,
        }
    }

    /// The peer id as base58 text.
    pub fn peer_b58(&self) -> &str {
        &self.peer_b58
    }

    /// The peer id this key stands for.
    pub fn peer(&self) -> PeerId {
        self.peer
    }

    /// The key as it appears in envelopes (base64url).
    pub fn public_key(&self) -> &str {
        &self.encoded
    }
}

/// Accepts a message issued within `max_skew_ms` of `now_ms` and strictly after the last one
/// accepted from the same peer (`last_ms`), so a captured message cannot be replayed.
pub fn check_fresh(
    issued_ms: u64,
    now_ms: u64,
    max_skew_ms: u64,
    last_ms: Option<u64>,
) -> Result<(), SignedError> {
    if issued_ms > now_ms.saturating_add(max_skew_ms) {
        return Err(SignedError::Stale(format!(
            "issued {} ms in the future; check the sender's clock",
            issued_ms - now_ms
        )));
    }
    if issued_ms.saturating_add(max_skew_ms) < now_ms {
        return Err(SignedError::Stale(format!(
            "issued {} ms ago (limit {max_skew_ms} ms)",
            now_ms - issued_ms
        )));
    }
    if let Some(last) = last_ms {
        if issued_ms <= last {
            return Err(SignedError::Stale(format!(
                "not newer than the last accepted message ({issued_ms} <= {last})"
            )));
        }
    }
    Ok(())
}

/// Checks that a body's text field is at most [`MAX_FIELD`] bytes (every signed body uses it).
pub(crate) fn bounded(field: &'static str, s: &str) -> Result<(), SignedError> {
    if s.len() > MAX_FIELD {
        return Err(SignedError::Field {
            field,
            why: format!("{} bytes; the limit is {MAX_FIELD}", s.len()),
        });
    }
    Ok(())
}

/// Parses `"major.minor.patch"` (extra suffixes like `-alpha` are ignored).
pub fn parse_version(v: &str) -> Option<crate::score::Version> {
    let core = v.split(['-', '+']).next()?;
    let mut it = core.split('.').map(|p| p.parse::<u16>().ok());
    let v = (it.next()??, it.next()??, it.next()??);
    if it.next().is_some() {
        return None;
    }
    Some(v)
}

/// A host's advertisement to the Hub.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostAd {
    /// The host's peer id (must match the signing key).
    pub peer_id: String,
    /// Dialable multiaddrs (at most [`MAX_ADDRS`]).
    pub addrs: Vec<String>,
    /// Total space offered, in bytes.
    pub capacity_bytes: u64,
    /// Space still free, in bytes.
    pub free_bytes: u64,
    /// Price per GiB-month, in the ledger's smallest unit.
    pub price_per_gib_month: u64,
    /// Software version, `major.minor.patch`.
    pub version: String,
    /// Declared region (free text such as `eu-west`), if any.
    #[serde(default)]
    pub region: Option<String>,
    /// Unix time in ms.
    pub issued_at_ms: u64,
}

impl Body for HostAd {
    const KIND: &'static str = "btfs/host-ad/1";
    fn peer_id(&self) -> &str {
        &self.peer_id
    }
    fn issued_at_ms(&self) -> u64 {
        self.issued_at_ms
    }
    fn validate(&self) -> Result<(), SignedError> {
        if self.addrs.is_empty() || self.addrs.len() > MAX_ADDRS {
            return Err(SignedError::Field {
                field: "addrs",
                why: format!("{} addresses; give 1 to {MAX_ADDRS}", self.addrs.len()),
            });
        }
        for a in &self.addrs {
            bounded("addrs", a)?;
        }
        bounded("version", &self.version)?;
        if parse_version(&self.version).is_none() {
            return Err(SignedError::Field {
                field: "version",
                why: format!("{:?} is not major.minor.patch", self.version),
            });
        }
        if let Some(r) = &self.region {
            bounded("region", r)?;
        }
        if self.free_bytes > self.capacity_bytes {
            return Err(SignedError::Field {
                field: "free_bytes",
                why: format!(
                    "{} free is more than the {} capacity",
                    self.free_bytes, self.capacity_bytes
                ),
            });
        }
        Ok(())
    }
}

/// A node's periodic health report to the Status service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    /// The node's peer id (must match the signing key).
    pub peer_id: String,
    /// Unix time in ms.
    pub issued_at_ms: u64,
    /// Seconds since the node started.
    pub uptime_secs: u64,
    /// Space offered, in bytes.
    pub capacity_bytes: u64,
    /// Space used, in bytes.
    pub used_bytes: u64,
    /// Shards held.
    pub shards_held: u64,
    /// Requests served successfully since start.
    pub requests_served: u64,
    /// Requests that failed since start.
    pub requests_failed: u64,
    /// Software version.
    pub version: String,
}

impl Body for StatusReport {
    const KIND: &'static str = "btfs/status-report/1";
    fn peer_id(&self) -> &str {
        &self.peer_id
    }
    fn issued_at_ms(&self) -> u64 {
        self.issued_at_ms
    }
    fn validate(&self) -> Result<(), SignedError> {
        bounded("version", &self.version)?;
        if self.used_bytes > self.capacity_bytes {
            return Err(SignedError::Field {
                field: "used_bytes",
                why: format!(
                    "{} used is more than the {} capacity",
                    self.used_bytes, self.capacity_bytes
                ),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn key(seed: u8) -> ed25519::Keypair {
        ed25519::Keypair::from(ed25519::SecretKey::try_from_bytes([seed; 32]).unwrap())
    }

    fn peer(k: &ed25519::Keypair) -> String {
        PublicKey::from(k.public()).to_peer_id().to_base58()
    }

    fn ad(k: &ed25519::Keypair) -> HostAd {
        HostAd {
            peer_id: peer(k),
            addrs: vec!["/ip4/127.0.0.1/tcp/4001".into()],
            capacity_bytes: 10 << 30,
            free_bytes: 4 << 30,
            price_per_gib_month: 100,
            version: "0.1.0".into(),
            region: Some("eu".into()),
            issued_at_ms: 1_000,
        }
    }

    #[test]
    fn sign_then_verify_round_trips() {
        let k = key(1);
        let s = Signed::sign(&ad(&k), &k).unwrap();
        let v: Verified<HostAd> = s.verify().unwrap();
        assert_eq!(v.body, ad(&k));
        assert_eq!(v.peer.to_base58(), peer(&k));
        // And through JSON, as on the wire.
        let wire = serde_json::to_string(&s).unwrap();
        let back: Signed = serde_json::from_str(&wire).unwrap();
        assert_eq!(back.verify::<HostAd>().unwrap().body, ad(&k));
    }

    #[test]
    fn cached_signer_verifies_only_its_own_envelopes() {
        let (a, b) = (key(1), key(2));
        let sa = Signed::sign(&ad(&a), &a).unwrap();
        let sb = Signed::sign(&ad(&b), &b).unwrap();
        let signer = Signer::decode(&sa.public_key).unwrap();
        assert_eq!(signer.peer().to_base58(), peer(&a));
        assert_eq!(sa.verify_by::<HostAd>(&signer).unwrap().body, ad(&a));
        // b's envelope checked against a's cached key: refused, whatever it claims.
        let e = sb.verify_by::<HostAd>(&signer).unwrap_err().to_string();
        assert!(e.contains("does not match the signer"), "{e}");
        // b's envelope relabelled with a's key: the signature no longer verifies.
        let mut forged = sb.clone();
        forged.public_key = sa.public_key.clone();
        assert_eq!(
            forged.verify_by::<HostAd>(&signer).unwrap_err(),
            SignedError::BadSignature
        );
        assert!(Signer::decode("not base64!").is_err());
        assert!(Signer::decode(&"A".repeat(100)).is_err());
    }

    #[test]
    fn tampered_payload_is_refused() {
        let k = key(1);
        let mut s = Signed::sign(&ad(&k), &k).unwrap();
        s.payload = s
            .payload
            .replace("\"free_bytes\":4294967296", "\"free_bytes\":5368709120");
        assert!(s.payload.contains("5368709120"));
        assert_eq!(s.verify::<HostAd>(), Err(SignedError::BadSignature));
    }

    #[test]
    fn claiming_another_peer_is_refused() {
        let (k, other) = (key(1), key(2));
        let mut body = ad(&k);
        body.peer_id = peer(&other);
        let s = Signed::sign(&body, &k).unwrap();
        assert!(matches!(
            s.verify::<HostAd>(),
            Err(SignedError::WrongPeer { .. })
        ));
    }

    #[test]
    fn a_host_ad_cannot_be_replayed_as_a_status_report() {
        let k = key(1);
        let mut s = Signed::sign(&ad(&k), &k).unwrap();
        assert!(matches!(
            s.verify::<StatusReport>(),
            Err(SignedError::Kind { .. })
        ));
        // Relabelling the kind breaks the signature (the kind is signed).
        s.kind = StatusReport::KIND.into();
        assert_eq!(s.verify::<StatusReport>(), Err(SignedError::BadSignature));
    }

    #[test]
    fn bounds_are_enforced_on_both_ends() {
        let k = key(1);
        let mut body = ad(&k);
        body.addrs = vec!["/ip4/127.0.0.1/tcp/1".into(); MAX_ADDRS + 1];
        assert!(matches!(
            Signed::sign(&body, &k),
            Err(SignedError::Field { field: "addrs", .. })
        ));
        let mut body = ad(&k);
        body.free_bytes = body.capacity_bytes + 1;
        assert!(Signed::sign(&body, &k).is_err());
        let mut s = Signed::sign(&ad(&k), &k).unwrap();
        s.payload = " ".repeat(MAX_PAYLOAD + 1);
        assert_eq!(
            s.verify::<HostAd>(),
            Err(SignedError::TooLarge(MAX_PAYLOAD + 1))
        );
        s.signature = "!!".into();
        s.payload = "{}".into();
        assert!(matches!(
            s.verify::<HostAd>(),
            Err(SignedError::Malformed {
                what: "signature",
                ..
            })
        ));
    }

    #[test]
    fn freshness_window_and_ordering() {
        assert!(check_fresh(1_000, 1_000, 100, None).is_ok());
        assert!(check_fresh(1_050, 1_000, 100, Some(1_049)).is_ok());
        assert!(check_fresh(1_101, 1_000, 100, None).is_err());
        assert!(check_fresh(899, 1_000, 100, None).is_err());
        assert!(check_fresh(1_000, 1_000, 100, Some(1_000)).is_err());
    }

    #[test]
    fn versions_parse() {
        assert_eq!(parse_version("0.1.0"), Some((0, 1, 0)));
        assert_eq!(parse_version("1.22.3-alpha"), Some((1, 22, 3)));
        assert_eq!(parse_version("1.2"), None);
        assert_eq!(parse_version("1.2.3.4"), None);
    }
}

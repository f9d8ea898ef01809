//! The Guard service's protocol, `/btfs/guard/1`, and the signed documents it hands out.
//!
//! Goals: a tenant (CLI or browser) registers an object with the Guard by its manifest id, asks
//! for its health and for the Guard's placement updates, and anyone asks for a host's audit
//! history; every verdict and placement update is signed by the Guard's identity key
//! ([`crate::signed`]), so it can be relayed and checked later. Nothing here is trusted for the
//! bytes themselves: a tenant still verifies every shard against the manifest's roots, and can
//! challenge the holders itself ([`crate::proof`]). A tenant turns the placement updates into
//! the download machine's moves with [`moves_from`] (the CLI and the browser call the same
//! function). Non-goals: the Guard's policy (see `crate::guard`), payment.
//!
//! ## Wire format, one request per stream
//!
//! ```text
//! request  = len: u32 (LE, ≤ MAX_REQUEST_LEN) ‖ GuardRequest as JSON
//! response = status: u8 ‖ len: u32 ‖ body       (the shard protocol's ResponseHead framing)
//!            status 0: body = GuardResponse as JSON (≤ MAX_RESPONSE_LEN)
//!            else:     body = UTF-8 message (≤ 1 KiB)
//! ```
//!
//! JSON shapes (`type` tags the variant):
//!
//! ```json
//! {"type":"watch","manifest_id":"<64 hex>"}          → {"type":"watching","manifest_id":..,"slabs":N,"new":true}
//! {"type":"health","manifest_id":"<64 hex>"}         → {"type":"health", ..ObjectHealth}
//! {"type":"placement","manifest_id":"<64 hex>"}      → {"type":"placement","updates":[Signed PlacementUpdate]}
//! {"type":"audits","host":"<peer id>","limit":100}   → {"type":"audits","verdicts":[Signed AuditVerdict]}
//! ```

use serde::{Deserialize, Serialize};

use crate::signed::{bounded, Body, SignedError};

/// libp2p protocol name.
pub const PROTOCOL: &str = "/btfs/guard/1";
/// Largest request JSON.
pub const MAX_REQUEST_LEN: u32 = 4096;
/// Largest response JSON.
pub const MAX_RESPONSE_LEN: u32 = 4 << 20;
/// Most verdicts one `audits` answer carries.
pub const MAX_AUDITS_ANSWER: u32 = 1000;
/// Most shard moves one placement update lists (one slab's repair: at most 20 lost shards).
pub const MAX_MOVES: usize = 20;

/// A request to the Guard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum GuardRequest {
    /// Watch (audit and repair) the object with this manifest id.
    Watch {
        /// Manifest id, 64 hex digits.
        manifest_id: String,
    },
    /// The object's health as the Guard knows it.
    Health {
        /// Manifest id.
        manifest_id: String,
    },
    /// The signed placement updates of the object (shards moved by repairs).
    Placement {
        /// Manifest id.
        manifest_id: String,
    },
    /// A host's latest signed verdicts, newest first.
    Audits {
        /// The host's peer id.
        host: String,
        /// At most this many (≤ [`MAX_AUDITS_ANSWER`]).
        limit: u32,
    },
}

/// The Guard's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum GuardResponse {
    /// The object is watched.
    Watching {
        /// Manifest id.
        manifest_id: String,
        /// Slabs in the object.
        slabs: u64,
        /// Whether this request added it (false: already watched).
        new: bool,
    },
    /// Health.
    Health(ObjectHealth),
    /// Placement updates.
    Placement {
        /// Signed [`PlacementUpdate`]s, oldest first.
        updates: Vec<crate::signed::Signed>,
    },
    /// Verdicts.
    Audits {
        /// Signed [`AuditVerdict`]s, newest first.
        verdicts: Vec<crate::signed::Signed>,
    },
}

/// One shard's state at the Guard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardHealth {
    /// Shard index in its slab.
    pub shard: usize,
    /// The shard's root (hex).
    pub root: String,
    /// The holder as the Guard knows it now (after a repair, the new holder).
    pub host: String,
    /// Epoch of the last verdict, if audited yet.
    pub last_epoch: Option<u64>,
    /// The last verdict (`None`: not audited yet).
    pub passed: Option<bool>,
    /// Failed audits in a row.
    pub fails: u32,
}

/// One slab's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlabHealth {
    /// Slab index.
    pub slab: u64,
    /// Shards counted healthy, of 30: audited and passed, not audited yet, or unanswered in
    /// fewer epochs in a row than the Guard's offline grace.
    pub healthy: usize,
    /// Every shard.
    pub shards: Vec<ShardHealth>,
}

/// An object's state at the Guard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectHealth {
    /// Manifest id.
    pub manifest_id: String,
    /// The Guard's current epoch.
    pub epoch: u64,
    /// Repair threshold: a slab at or below this many healthy shards is repaired.
    pub repair_threshold: usize,
    /// Shards rebuilt on new hosts so far.
    pub repaired_shards: u64,
    /// The last repair that finished, if any since the Guard started.
    #[serde(default)]
    pub last_repair: Option<RepairStats>,
    /// Why the last repair failed (it is retried after the Guard's backoff), if it did: e.g.
    /// the object has no repair allowance left to pay new hosts with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_repair_error: Option<String>,
    /// Per slab.
    pub slabs: Vec<SlabHealth>,
}

/// What one finished repair of an object did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepairStats {
    /// Wall time from the Guard's decision to the last claim, in ms.
    pub ms: u64,
    /// Shards rebuilt and placed.
    pub shards: usize,
    /// Bytes fetched from holders.
    pub bytes_fetched: u64,
    /// Bytes stored on new holders.
    pub bytes_placed: u64,
}

/// A signed audit verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditVerdict {
    /// The Guard's peer id (the signer).
    pub peer_id: String,
    /// The audited host.
    pub host: String,
    /// The shard's root (hex).
    pub root: String,
    /// Object (manifest id), slab and shard.
    pub manifest_id: String,
    /// Slab index.
    pub slab: u64,
    /// Shard index.
    pub shard: usize,
    /// The Guard's epoch.
    pub epoch: u64,
    /// The challenge's nonce (hex), so anyone can re-check a stored proof.
    pub nonce: String,
    /// Whether the proof verified in time.
    pub passed: bool,
    /// Why not.
    #[serde(default)]
    pub reason: Option<String>,
    /// Unix ms.
    pub issued_at_ms: u64,
}

impl Body for AuditVerdict {
    const KIND: &'static str = "btfs/audit-verdict/1";
    fn peer_id(&self) -> &str {
        &self.peer_id
    }
    fn issued_at_ms(&self) -> u64 {
        self.issued_at_ms
    }
    fn validate(&self) -> Result<(), SignedError> {
        bounded("host", &self.host)?;
        bounded("root", &self.root)?;
        bounded("manifest_id", &self.manifest_id)?;
        bounded("nonce", &self.nonce)?;
        if let Some(r) = &self.reason {
            bounded("reason", r)?;
        }
        Ok(())
    }
}

/// One shard's new holder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardMove {
    /// Slab.
    pub slab: u64,
    /// Shard.
    pub shard: usize,
    /// Root (hex): a tenant applies the move only if it matches the manifest's root.
    pub root: String,
    /// The new holder's peer id.
    pub host: String,
}

/// A signed placement update: shards of one object that now live on other hosts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacementUpdate {
    /// The Guard's peer id (the signer).
    pub peer_id: String,
    /// Manifest id.
    pub manifest_id: String,
    /// Update number for this object, from 1 (later updates win).
    pub seq: u64,
    /// The moves (≤ [`MAX_MOVES`]).
    pub moves: Vec<ShardMove>,
    /// Unix ms.
    pub issued_at_ms: u64,
}

impl Body for PlacementUpdate {
    const KIND: &'static str = "btfs/placement/1";
    fn peer_id(&self) -> &str {
        &self.peer_id
    }
    fn issued_at_ms(&self) -> u64 {
        self.issued_at_ms
    }
    fn validate(&self) -> Result<(), SignedError> {
        bounded("manifest_id", &self.manifest_id)?;
        if self.moves.is_empty() || self.moves.len() > MAX_MOVES {
            return Err(SignedError::Field {
                field: "moves",
                why: format!("{} moves; give 1 to {MAX_MOVES}", self.moves.len()),
            });
        }
        for m in &self.moves {
            bounded("root", &m.root)?;
            bounded("host", &m.host)?;
        }
        Ok(())
    }
}

/// The moves of every valid placement update signed by `guard` for the object `manifest_id`,
/// with why each skipped update was skipped (a bad signature, another signer or another
/// object: a tenant warns and goes on; a download never fails because of one). For the same
/// shard the update with the higher `seq` wins; a move whose root or host does not parse is
/// ignored. What the CLI and the browser both apply before a download or an audit.
pub fn moves_from(
    guard: &libp2p_identity::PeerId,
    manifest_id: crate::Root,
    updates: &[crate::signed::Signed],
) -> (crate::engine::Moves, Vec<String>) {
    use crate::engine::HostId;
    use crate::Root;
    let mut latest: std::collections::BTreeMap<(u64, usize), (u64, Root, HostId)> =
        Default::default();
    let mut skipped = Vec::new();
    let want = manifest_id.to_hex();
    for s in updates {
        let v = match s.verify::<PlacementUpdate>() {
            Ok(v) if v.peer == *guard && v.body.manifest_id == want => v,
            Ok(v) => {
                skipped.push(format!(
                    "a placement update by {} for object {} (want {guard} and {want})",
                    v.peer, v.body.manifest_id
                ));
                continue;
            }
            Err(e) => {
                skipped.push(format!("a placement update that does not verify: {e}"));
                continue;
            }
        };
        for m in &v.body.moves {
            let (Ok(root), Ok(peer)) = (
                Root::from_hex(&m.root),
                m.host.parse::<libp2p_identity::PeerId>(),
            ) else {
                continue;
            };
            let e = latest
                .entry((m.slab, m.shard))
                .or_insert((0, root, HostId::new(peer)));
            if v.body.seq >= e.0 {
                *e = (v.body.seq, root, HostId::new(peer));
            }
        }
    }
    let moves = latest
        .into_iter()
        .map(|(k, (_, root, host))| (k, (root, host)))
        .collect();
    (moves, skipped)
}

/// Encodes a request for the wire: the length prefix and the JSON body.
pub fn encode_request(req: &GuardRequest) -> ([u8; 4], Vec<u8>) {
    let body = serde_json::to_vec(req).unwrap_or_default();
    ((body.len() as u32).to_le_bytes(), body)
}

/// Parses a request body (the caller read `len` bytes after checking `len ≤ MAX_REQUEST_LEN`).
pub fn decode_request(body: &[u8]) -> Result<GuardRequest, String> {
    serde_json::from_slice(body).map_err(|e| {
        format!("malformed Guard request: {e}; send {{\"type\":\"watch\",\"manifest_id\":\"<64 hex>\"}} or health/placement/audits")
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::signed::Signed;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn requests_round_trip_in_their_documented_json() {
        let r = GuardRequest::Watch {
            manifest_id: "ab".repeat(32),
        };
        let (len, body) = encode_request(&r);
        assert_eq!(u32::from_le_bytes(len) as usize, body.len());
        assert_eq!(
            String::from_utf8(body.clone()).unwrap(),
            format!(
                "{{\"type\":\"watch\",\"manifest_id\":\"{}\"}}",
                "ab".repeat(32)
            )
        );
        assert_eq!(decode_request(&body).unwrap(), r);
        assert!(decode_request(b"{\"type\":\"nope\"}")
            .unwrap_err()
            .contains("malformed Guard request"));
    }

    #[test]
    fn verdicts_and_placements_are_signed_and_bounded() {
        let key = libp2p_identity::ed25519::Keypair::from(
            libp2p_identity::ed25519::SecretKey::try_from_bytes([9; 32]).unwrap(),
        );
        let peer = libp2p_identity::PublicKey::from(key.public()).to_peer_id();
        let v = AuditVerdict {
            peer_id: peer.to_base58(),
            host: "h".into(),
            root: "00".repeat(32),
            manifest_id: "11".repeat(32),
            slab: 0,
            shard: 3,
            epoch: 7,
            nonce: "22".repeat(32),
            passed: false,
            reason: Some("no answer".into()),
            issued_at_ms: 1,
        };
        let s = Signed::sign(&v, &key).unwrap();
        assert_eq!(s.verify::<AuditVerdict>().unwrap().body, v);
        let mut tampered = s.clone();
        tampered.payload = tampered.payload.replace("false", "true ");
        assert!(tampered.verify::<AuditVerdict>().is_err());
        let p = PlacementUpdate {
            peer_id: peer.to_base58(),
            manifest_id: "11".repeat(32),
            seq: 1,
            moves: vec![],
            issued_at_ms: 1,
        };
        assert!(
            Signed::sign(&p, &key).is_err(),
            "an empty update is refused"
        );
        // A placement update is never accepted as a verdict.
        let p = PlacementUpdate {
            moves: vec![ShardMove {
                slab: 0,
                shard: 1,
                root: "33".repeat(32),
                host: "x".into(),
            }],
            ..p
        };
        let ps = Signed::sign(&p, &key).unwrap();
        assert!(ps.verify::<AuditVerdict>().is_err());
        assert_eq!(ps.verify::<PlacementUpdate>().unwrap().body, p);
    }

    #[test]
    fn moves_come_from_valid_updates_of_this_guard_and_object_and_later_seq_wins() {
        let secret = |b| {
            libp2p_identity::ed25519::Keypair::from(
                libp2p_identity::ed25519::SecretKey::try_from_bytes([b; 32]).unwrap(),
            )
        };
        let (key, other) = (secret(9), secret(8));
        let peer_of = |k: &libp2p_identity::ed25519::Keypair| {
            libp2p_identity::PublicKey::from(k.public()).to_peer_id()
        };
        let (guard, stranger) = (peer_of(&key), peer_of(&other));
        let object = crate::Root::of(b"manifest");
        let update = |signer: &libp2p_identity::ed25519::Keypair, id: &str, seq, host: &str| {
            let body = PlacementUpdate {
                peer_id: peer_of(signer).to_base58(),
                manifest_id: id.into(),
                seq,
                moves: vec![ShardMove {
                    slab: 0,
                    shard: 4,
                    root: crate::Root::of(b"shard").to_hex(),
                    host: host.into(),
                }],
                issued_at_ms: 1,
            };
            Signed::sign(&body, signer).unwrap()
        };
        let (h1, h2) = (stranger.to_base58(), guard.to_base58());
        let mut tampered = update(&key, &object.to_hex(), 9, &h1);
        tampered.payload = tampered.payload.replace("\"seq\":9", "\"seq\":8");
        let updates = vec![
            update(&key, &object.to_hex(), 2, &h2),
            update(&key, &object.to_hex(), 1, &h1),
            update(&other, &object.to_hex(), 5, &h1),
            update(&key, &"00".repeat(32), 6, &h1),
            tampered,
        ];
        let (moves, skipped) = moves_from(&guard, object, &updates);
        assert_eq!(skipped.len(), 3, "{skipped:?}");
        assert_eq!(moves.len(), 1);
        let (root, host) = moves[&(0, 4)];
        assert_eq!(root, crate::Root::of(b"shard"));
        assert_eq!(host.peer(), guard, "seq 2 beats seq 1, whatever the order");
    }
}

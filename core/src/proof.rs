//! Proofs of storage: a challenge anyone can issue and a proof anyone can check against the
//! shard's name alone.
//!
//! A shard's name is its BLAKE3 root, and BLAKE3 is a binary Merkle tree over 1 KiB chunks. A
//! challenge names a shard (root and size) and carries a fresh 32-byte nonce; the chunks it asks
//! for follow from `(root, nonce, size)` by a keyed BLAKE3 XOF, so the host cannot know them
//! before the nonce is drawn and the challenger cannot pick favourable ones. The proof is those
//! chunks plus their Merkle path (a Bao slice, `bao-tree` with 1 KiB blocks), verified by
//! [`verify`] from the root alone: the Guard, a tenant and a browser page check it the same way,
//! so nobody has to trust the Guard's word.
//!
//! Goals: unlimited, stateless challenges (nothing precomputed at upload, unlike go-btfs 1.x's
//! 100 stored answers); a host needs nothing but the shard bytes it stores; bounded, fallible
//! decoding of everything a peer sends. An honest host rebuilds the tree from the bytes on disk
//! for every answer (one read and hash of the shard, ~0.5 ms for 1 MiB: [`prove`] hashes the
//! subtrees beside the challenged paths in bulk), so a single flipped bit
//! anywhere in the shard fails the next challenge: the path of every chunk ends in the root, and
//! a tree built over damaged bytes has another root. A dishonest host that kept the tree
//! (64 bytes per 1 KiB chunk) but dropped a fraction `1 − p` of the chunks passes one challenge
//! with probability `p^8` ([`CHUNKS_PER_CHALLENGE`]): 0.4 % when it kept half. Non-goals: proving
//! *where* the bytes are (outsourcing is what the Guard's deadline is for) and proving
//! retrievability of a whole object (that is the 10-of-30 code plus audits of every shard).
//!
//! ## Wire format: `/btfs/audit/1`, one challenge per stream (integers little-endian)
//!
//! ```text
//! request  = root: [u8; 32] ‖ nonce: [u8; 32] ‖ size: u32          (CHALLENGE_LEN = 68 bytes)
//!            1 ≤ size ≤ MAX_SHARD_SIZE; the host answers for the blob named root
//! response = status: u8 ‖ len: u32 ‖ body: [u8; len]               (the shard protocol's framing)
//!            status 0 OK   body = the proof, len ≤ max_proof_len(size)
//!            status 1..=8  body = UTF-8 message (≤ 1 KiB): 1 not held, 2 the host's copy is
//!                          damaged, 5 busy, 6 malformed challenge, 7 disk error
//! proof    = the Bao encoding of the challenged chunks of the shard, in tree pre-order:
//!            for each parent on the paths from the root to the chunks, left ‖ right child
//!            hash (64 bytes), then each chunk's bytes (1024, the last chunk of the shard may
//!            be shorter); nothing else: trailing bytes are an error
//! ```
//!
//! Challenged chunks: `n = ceil(size / 1024)` chunks, `k = min(8, n)` distinct indices drawn as
//! `u64 mod n` from `blake3::Hasher::new_derive_key(CONTEXT)` over `root ‖ nonce ‖ size` (XOF,
//! 8 bytes per draw, duplicates skipped). [`Challenge::chunks`] is the reference.
//!
//! A tenant's audit of a whole object (the CLI's `btfs audit`, the browser's `client.audit`):
//! [`object_challenges`] from a fresh seed, [`apply_moves`] for shards a Guard's repair moved,
//! at most [`AUDIT_PARALLEL`] challenges at once, each within [`AUDIT_TIMEOUT`], every answer
//! checked with [`verify`], the verdicts gathered by [`AuditReport::from_verdicts`]. The drivers
//! only do the I/O.

use std::io::Cursor;

use bao_tree::io::sync::DecodeResponseIter;
use bao_tree::io::BaoContentItem;
use bao_tree::{BaoTree, BlockSize, ChunkNum, ChunkRanges};
use thiserror::Error;

use crate::layout::MAX_SHARD_SIZE;
use crate::root::Root;

/// libp2p protocol name.
pub const PROTOCOL: &str = "/btfs/audit/1";
/// Bytes of one BLAKE3 chunk.
pub const CHUNK_LEN: u32 = 1024;
/// Chunks asked for per challenge (fewer if the shard has fewer).
pub const CHUNKS_PER_CHALLENGE: usize = 8;
/// Wire length of a challenge.
pub const CHALLENGE_LEN: usize = 68;
/// Key-derivation context of the chunk draw.
pub const CONTEXT: &str = "btfs-rs 2026-12 audit challenge v1";

/// A challenge: prove you hold the shard named `root` of `size` bytes, for this `nonce`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Challenge {
    /// The shard's root.
    pub root: Root,
    /// Fresh randomness from the challenger.
    pub nonce: [u8; 32],
    /// The shard's size in bytes, as the challenger knows it (from the manifest's layout).
    pub size: u32,
}

/// What is wrong with a challenge or a proof.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProofError {
    /// A challenge that is not 68 bytes.
    #[error("a challenge is {CHALLENGE_LEN} bytes (root, nonce, size), got {0}")]
    ChallengeLength(usize),
    /// A size of 0 or above the largest shard.
    #[error("challenged size {0} is outside 1..={MAX_SHARD_SIZE} bytes")]
    Size(u32),
    /// The proof is longer than any honest proof for this size.
    #[error(
        "proof of {len} bytes exceeds the {max} bytes a proof for a {size}-byte shard can take"
    )]
    TooLong {
        /// Proof length.
        len: usize,
        /// Bound for this size.
        max: usize,
        /// Challenged size.
        size: u32,
    },
    /// The proof ended before every challenged chunk and its path were read.
    #[error("proof truncated: it ends before chunk {chunk} and its Merkle path")]
    Truncated {
        /// First chunk not covered.
        chunk: u64,
    },
    /// A chunk or a hash does not match the path to the root.
    #[error("proof does not match the root: {0}")]
    Mismatch(String),
    /// Bytes after the last challenged chunk.
    #[error("proof has {0} bytes after the last challenged chunk")]
    Trailing(usize),
    /// The prover's bytes do not hash to the challenged root (its copy is damaged or another blob).
    #[error("the stored bytes do not hash to the challenged root: the copy is damaged")]
    Damaged,
    /// The prover's blob has another size than the challenge names.
    #[error("the stored blob is {stored} bytes, the challenge names {challenged}")]
    SizeMismatch {
        /// What the prover holds.
        stored: usize,
        /// What the challenge names.
        challenged: u32,
    },
}

impl Challenge {
    /// Wire bytes.
    pub fn encode(&self) -> [u8; CHALLENGE_LEN] {
        let mut b = [0u8; CHALLENGE_LEN];
        b[..32].copy_from_slice(self.root.as_bytes());
        b[32..64].copy_from_slice(&self.nonce);
        b[64..].copy_from_slice(&self.size.to_le_bytes());
        b
    }

    /// Parses and bounds-checks a challenge.
    pub fn decode(b: &[u8]) -> Result<Self, ProofError> {
        if b.len() != CHALLENGE_LEN {
            return Err(ProofError::ChallengeLength(b.len()));
        }
        let mut root = [0u8; 32];
        root.copy_from_slice(&b[..32]);
        let mut nonce = [0u8; 32];
        nonce.copy_from_slice(&b[32..64]);
        let size = u32::from_le_bytes([b[64], b[65], b[66], b[67]]);
        let c = Self {
            root: Root::from_bytes(root),
            nonce,
            size,
        };
        c.check_size()?;
        Ok(c)
    }

    fn check_size(&self) -> Result<(), ProofError> {
        if self.size == 0 || self.size > MAX_SHARD_SIZE {
            return Err(ProofError::Size(self.size));
        }
        Ok(())
    }

    /// The challenged chunk indices, ascending (see the module docs for the draw).
    pub fn chunks(&self) -> Vec<u64> {
        let n = u64::from(self.size.div_ceil(CHUNK_LEN).max(1));
        let k = CHUNKS_PER_CHALLENGE.min(usize::try_from(n).unwrap_or(usize::MAX));
        let mut h = blake3::Hasher::new_derive_key(CONTEXT);
        h.update(self.root.as_bytes());
        h.update(&self.nonce);
        h.update(&self.size.to_le_bytes());
        let mut xof = h.finalize_xof();
        let mut out: Vec<u64> = Vec::with_capacity(k);
        while out.len() < k {
            let mut w = [0u8; 8];
            xof.fill(&mut w);
            let i = u64::from_le_bytes(w) % n;
            if !out.contains(&i) {
                out.push(i);
            }
        }
        out.sort_unstable();
        out
    }

    fn ranges(&self) -> ChunkRanges {
        let mut r = ChunkRanges::empty();
        for i in self.chunks() {
            r |= ChunkRanges::from(ChunkNum(i)..ChunkNum(i + 1));
        }
        r
    }

    fn tree(&self) -> BaoTree {
        BaoTree::new(u64::from(self.size), BlockSize::ZERO)
    }
}

/// The most bytes an honest proof for a `size`-byte shard takes: every challenged chunk with a
/// full-depth path of its own (paths share their upper parents, so real proofs are shorter).
pub fn max_proof_len(size: u32) -> usize {
    let chunks = size.div_ceil(CHUNK_LEN).max(1);
    let depth = (32 - (chunks - 1).leading_zeros()) as usize; // ceil(log2(chunks))
    let k = CHUNKS_PER_CHALLENGE.min(chunks as usize);
    k * (CHUNK_LEN as usize + 64 * depth)
}

/// Answers `challenge` from the shard bytes (the prover's side: a host).
///
/// Hashes the whole of `shard` into its BLAKE3 tree and refuses if it does not hash to the
/// challenged root ([`ProofError::Damaged`]) or has another size. Only the nodes on the paths
/// to the challenged chunks are computed one by one; every subtree beside a path is hashed in
/// one go (`blake3::hazmat`), so BLAKE3's many-chunk SIMD does the bulk of the work. The bytes
/// are the Bao pre-order encoding of the challenged chunks (module docs), exactly what
/// `bao_tree::io::sync::encode_ranges_validated` writes for the same ranges (tested).
pub fn prove(challenge: &Challenge, shard: &[u8]) -> Result<Vec<u8>, ProofError> {
    challenge.check_size()?;
    if shard.len() != challenge.size as usize {
        return Err(ProofError::SizeMismatch {
            stored: shard.len(),
            challenged: challenge.size,
        });
    }
    let chunks = challenge.chunks();
    let mut out = Vec::with_capacity(max_proof_len(challenge.size));
    let root = if shard.len() <= CHUNK_LEN as usize {
        // One chunk: no parents; the proof is the chunk.
        out.extend_from_slice(shard);
        blake3::hash(shard)
    } else {
        let (left, right) = encode_parent(shard, 0, &chunks, &mut out);
        blake3::hazmat::merge_subtrees_root(&left, &right, blake3::hazmat::Mode::Hash)
    };
    if root.as_bytes() != challenge.root.as_bytes() {
        return Err(ProofError::Damaged);
    }
    Ok(out)
}

/// Chaining value of the subtree `data` that starts at byte `offset` of the shard, with the
/// Bao encoding of its challenged `chunks` (absolute indices, ascending) appended to `out`.
fn encode_subtree(
    data: &[u8],
    offset: u64,
    chunks: &[u64],
    out: &mut Vec<u8>,
) -> blake3::hazmat::ChainingValue {
    use blake3::hazmat::HasherExt;
    if chunks.is_empty() || data.len() <= CHUNK_LEN as usize {
        if !chunks.is_empty() {
            out.extend_from_slice(data);
        }
        let mut h = blake3::Hasher::new();
        h.set_input_offset(offset);
        h.update(data);
        return h.finalize_non_root();
    }
    let (left, right) = encode_parent(data, offset, chunks, out);
    blake3::hazmat::merge_subtrees_non_root(&left, &right, blake3::hazmat::Mode::Hash)
}

/// For a subtree of more than one chunk that holds challenged `chunks`: writes its parent node
/// (left ‖ right child chaining values) and then its children's encodings, pre-order; returns
/// the two children's chaining values.
fn encode_parent(
    data: &[u8],
    offset: u64,
    chunks: &[u64],
    out: &mut Vec<u8>,
) -> (blake3::hazmat::ChainingValue, blake3::hazmat::ChainingValue) {
    let split = blake3::hazmat::left_subtree_len(data.len() as u64);
    let (l, r) = data.split_at(usize::try_from(split).unwrap_or(data.len()));
    let first_right = (offset + split) / u64::from(CHUNK_LEN);
    let (lc, rc) = chunks.split_at(chunks.partition_point(|&c| c < first_right));
    let at = out.len();
    out.extend_from_slice(&[0u8; 64]);
    let left = encode_subtree(l, offset, lc, out);
    let right = encode_subtree(r, offset + split, rc, out);
    out[at..at + 32].copy_from_slice(&left);
    out[at + 32..at + 64].copy_from_slice(&right);
    (left, right)
}

/// Checks `proof` against `challenge` (its root, nonce and size) and nothing else.
pub fn verify(challenge: &Challenge, proof: &[u8]) -> Result<(), ProofError> {
    challenge.check_size()?;
    let max = max_proof_len(challenge.size);
    if proof.len() > max {
        return Err(ProofError::TooLong {
            len: proof.len(),
            max,
            size: challenge.size,
        });
    }
    let wanted = challenge.chunks();
    let ranges = challenge.ranges();
    let root = blake3::Hash::from_bytes(*challenge.root.as_bytes());
    let mut reader = Cursor::new(proof);
    let mut got = Vec::with_capacity(wanted.len());
    for item in DecodeResponseIter::new(root, challenge.tree(), &mut reader, &ranges) {
        match item {
            Ok(BaoContentItem::Leaf(leaf)) => got.push(leaf.offset / u64::from(CHUNK_LEN)),
            Ok(BaoContentItem::Parent(_)) => {}
            Err(e) => {
                let missing = wanted.iter().find(|c| !got.contains(c)).copied();
                return Err(match (e, missing) {
                    (
                        bao_tree::io::DecodeError::LeafNotFound(_)
                        | bao_tree::io::DecodeError::ParentNotFound(_),
                        Some(chunk),
                    ) => ProofError::Truncated { chunk },
                    (e, _) => ProofError::Mismatch(e.to_string()),
                });
            }
        }
    }
    if let Some(&chunk) = wanted.iter().find(|c| !got.contains(c)) {
        return Err(ProofError::Truncated { chunk });
    }
    let read = usize::try_from(reader.position()).unwrap_or(usize::MAX);
    if read < proof.len() {
        return Err(ProofError::Trailing(proof.len() - read));
    }
    Ok(())
}

/// Deadline for one challenge sent by a tenant (CLI or browser): an honest host answers from one
/// read of the shard.
pub const AUDIT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Challenges a tenant or a Guard sends at once when auditing one object.
pub const AUDIT_PARALLEL: usize = 16;

/// One shard of an object to challenge, and where the manifest says it lives.
#[derive(Clone, Debug)]
pub struct ShardChallenge {
    /// Slab index.
    pub slab: u64,
    /// Shard index within the slab (0..30).
    pub shard: usize,
    /// The holder, if the manifest's host entry is a valid peer id.
    pub host: Option<crate::engine::HostId>,
    /// The challenge.
    pub challenge: Challenge,
}

/// A challenge for every shard of the object `manifest` describes, with nonces derived from
/// `seed` (draw it fresh from the OS for every audit: a host that can predict the nonce can
/// precompute its answers) and each shard's position.
pub fn object_challenges(manifest: &crate::Manifest, seed: &[u8; 32]) -> Vec<ShardChallenge> {
    let table: Vec<Option<crate::engine::HostId>> = manifest
        .hosts()
        .iter()
        .map(|b| crate::engine::HostId::from_bytes(b))
        .collect();
    let mut out = Vec::new();
    for (slab, layout) in manifest.layout().slabs().enumerate() {
        let Some(record) = manifest.slabs().get(slab) else {
            break;
        };
        for (shard, r) in record.iter().enumerate() {
            let mut h = blake3::Hasher::new_keyed(seed);
            h.update(&(slab as u64).to_le_bytes());
            h.update(&(shard as u64).to_le_bytes());
            out.push(ShardChallenge {
                slab: slab as u64,
                shard,
                host: table.get(usize::from(r.host)).copied().flatten(),
                challenge: Challenge {
                    root: r.root,
                    nonce: *h.finalize().as_bytes(),
                    size: layout.shard_size,
                },
            });
        }
    }
    out
}

/// Points each challenge at its shard's holder after a Guard's repair: a move (from the Guard's
/// signed placement updates, [`crate::guard_wire::moves_from`]) applies only where its root is
/// the manifest's root for that shard, so a Guard can never make a tenant audit another blob.
pub fn apply_moves(challenges: &mut [ShardChallenge], moves: &crate::engine::Moves) {
    for c in challenges {
        if let Some((root, host)) = moves.get(&(c.slab, c.shard)) {
            if *root == c.challenge.root {
                c.host = Some(*host);
            }
        }
    }
}

/// One shard's verdict in a tenant's own audit (`btfs audit`, the browser's `client.audit`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ShardVerdict {
    /// Shard index in its slab.
    pub shard: usize,
    /// Its root (hex).
    pub root: String,
    /// The holder challenged (peer id), or "" if the manifest's entry is not a peer id.
    pub host: String,
    /// Whether the proof verified.
    pub passed: bool,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Time to the answer, ms.
    pub ms: u64,
}

/// One slab's result.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SlabAudit {
    /// Slab index.
    pub slab: u64,
    /// Shards that proved they are held, of 30.
    pub healthy: usize,
    /// Every shard, by index.
    pub shards: Vec<ShardVerdict>,
}

/// What a tenant's audit of one object found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AuditReport {
    /// The manifest id (hex).
    pub manifest_id: String,
    /// Per slab, by index.
    pub slabs: Vec<SlabAudit>,
    /// Shards that passed.
    pub passed: usize,
    /// Shards that failed.
    pub failed: usize,
    /// Wall time, ms.
    pub elapsed_ms: u64,
}

impl AuditReport {
    /// Groups `(slab, verdict)` pairs (in any order) into slabs sorted by index, shards by
    /// index, and counts.
    pub fn from_verdicts(
        manifest_id: Root,
        verdicts: impl IntoIterator<Item = (u64, ShardVerdict)>,
        elapsed_ms: u64,
    ) -> Self {
        let mut by_slab: std::collections::BTreeMap<u64, Vec<ShardVerdict>> = Default::default();
        for (slab, v) in verdicts {
            by_slab.entry(slab).or_default().push(v);
        }
        let slabs: Vec<SlabAudit> = by_slab
            .into_iter()
            .map(|(slab, mut shards)| {
                shards.sort_by_key(|v| v.shard);
                SlabAudit {
                    slab,
                    healthy: shards.iter().filter(|v| v.passed).count(),
                    shards,
                }
            })
            .collect();
        let passed = slabs.iter().map(|s| s.healthy).sum();
        let total: usize = slabs.iter().map(|s| s.shards.len()).sum();
        Self {
            manifest_id: manifest_id.to_hex(),
            slabs,
            passed,
            failed: total - passed,
            elapsed_ms,
        }
    }

    /// Whether every slab can still be decoded from proven shards (≥ 10 of 30).
    pub fn recoverable(&self) -> bool {
        self.slabs.iter().all(|s| s.healthy >= crate::DATA_SHARDS)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use bao_tree::io::outboard::PreOrderMemOutboard;
    use bao_tree::io::sync::encode_ranges_validated;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn shard(len: usize, seed: u8) -> Vec<u8> {
        let mut x = u32::from(seed).wrapping_mul(2654435761) | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect()
    }

    fn challenge(data: &[u8], nonce: u8) -> Challenge {
        Challenge {
            root: Root::of(data),
            nonce: [nonce; 32],
            size: data.len() as u32,
        }
    }

    #[test]
    fn valid_proofs_verify_for_many_sizes() {
        for len in [1, 1023, 1024, 1025, 5000, 8 * 1024, 9 * 1024 + 7, 1 << 20] {
            let data = shard(len, 3);
            for nonce in 0..4 {
                let c = challenge(&data, nonce);
                let p = prove(&c, &data).unwrap();
                assert!(p.len() <= max_proof_len(c.size), "{len}");
                verify(&c, &p).unwrap_or_else(|e| panic!("len {len} nonce {nonce}: {e}"));
            }
        }
    }

    /// What `prove` computed before it hashed subtrees in bulk: bao-tree's outboard of the whole
    /// shard and its encoder.
    fn prove_with_bao_tree(c: &Challenge, data: &[u8]) -> Vec<u8> {
        let outboard = PreOrderMemOutboard::create(data, BlockSize::ZERO);
        assert_eq!(outboard.root.as_bytes(), c.root.as_bytes());
        let mut out = Vec::new();
        encode_ranges_validated(data, &outboard, &c.ranges(), &mut out).unwrap();
        out
    }

    #[test]
    fn proofs_are_byte_identical_to_bao_trees_encoding() {
        let mut lens = vec![1, 2, 1023, 1024, 1025, 2047, 2048, 2049, 3 * 1024 + 1, 5000];
        lens.extend([
            8 * 1024,
            9 * 1024 + 7,
            17 * 1024,
            100_000,
            1 << 20,
            (1 << 20) - 1,
        ]);
        lens.extend([(1 << 20) + 1, 3 * (1 << 20) + 5]);
        for len in lens {
            let data = shard(len, 5);
            for nonce in 0..6 {
                let c = challenge(&data, nonce);
                assert_eq!(
                    prove(&c, &data).unwrap(),
                    prove_with_bao_tree(&c, &data),
                    "len {len} nonce {nonce}"
                );
            }
        }
    }

    #[test]
    fn chunks_are_distinct_in_range_and_depend_on_every_input() {
        let data = shard(1 << 20, 1);
        let c = challenge(&data, 9);
        let k = c.chunks();
        assert_eq!(k.len(), CHUNKS_PER_CHALLENGE);
        assert!(k.windows(2).all(|w| w[0] < w[1]) && k.iter().all(|&i| i < 1024));
        assert_ne!(challenge(&data, 10).chunks(), k);
        let mut other = c;
        other.root = Root::of(b"x");
        assert_ne!(other.chunks(), k);
        let mut small = c;
        small.size = 3 * 1024;
        assert_eq!(small.chunks(), vec![0, 1, 2]);
    }

    #[test]
    fn a_flipped_byte_anywhere_in_the_proof_fails() {
        let data = shard(64 * 1024 + 100, 2);
        let c = challenge(&data, 1);
        let p = prove(&c, &data).unwrap();
        for i in 0..p.len() {
            let mut bad = p.clone();
            bad[i] ^= 0x01;
            assert!(
                verify(&c, &bad).is_err(),
                "flip at {i} of {} verified",
                p.len()
            );
        }
    }

    #[test]
    fn a_proof_for_another_root_nonce_or_size_fails() {
        let data = shard(256 * 1024, 4);
        let c = challenge(&data, 1);
        let p = prove(&c, &data).unwrap();
        let mut other_nonce = c;
        other_nonce.nonce[5] ^= 1;
        assert!(verify(&other_nonce, &p).is_err());
        let other = shard(256 * 1024, 5);
        let mut other_root = c;
        other_root.root = Root::of(&other);
        assert!(verify(&other_root, &p).is_err());
        let mut other_size = c;
        other_size.size -= 1;
        assert!(verify(&other_size, &p).is_err());
    }

    #[test]
    fn truncated_oversized_and_trailing_proofs_are_refused() {
        let data = shard(100 * 1024, 6);
        let c = challenge(&data, 2);
        let p = prove(&c, &data).unwrap();
        for cut in [0, 1, 63, 64, p.len() / 2, p.len() - 1] {
            assert!(
                matches!(
                    verify(&c, &p[..cut]),
                    Err(ProofError::Truncated { .. } | ProofError::Mismatch(_))
                ),
                "cut {cut}"
            );
        }
        let mut long = p.clone();
        long.push(0);
        assert_eq!(verify(&c, &long), Err(ProofError::Trailing(1)));
        let huge = vec![0u8; max_proof_len(c.size) + 1];
        assert!(matches!(verify(&c, &huge), Err(ProofError::TooLong { .. })));
    }

    #[test]
    fn a_damaged_or_resized_copy_cannot_prove() {
        let data = shard(32 * 1024, 7);
        let c = challenge(&data, 3);
        let mut bad = data.clone();
        bad[17_000] ^= 0x80;
        assert_eq!(prove(&c, &bad), Err(ProofError::Damaged));
        // A flipped bit in a chunk the challenge does not ask for, first, last and in between
        // (hashed in bulk, beside the paths), fails just the same.
        let data = shard((1 << 20) + 300, 8);
        let c = challenge(&data, 4);
        let asked = c.chunks();
        let n = data.len().div_ceil(1024) as u64;
        for chunk in [0, 1, 511, 512, 700, n - 2, n - 1] {
            if asked.contains(&chunk) {
                continue;
            }
            let mut bad = data.clone();
            let at = (chunk as usize * 1024 + 77).min(data.len() - 1);
            bad[at] ^= 0x01;
            assert_eq!(prove(&c, &bad), Err(ProofError::Damaged), "chunk {chunk}");
        }
        assert!(matches!(
            prove(&c, &data[1..]),
            Err(ProofError::SizeMismatch { .. })
        ));
    }

    #[test]
    fn a_proof_built_from_damaged_bytes_with_the_honest_tree_fails_on_the_damaged_chunk() {
        // A host that kept the tree but lost chunk bytes: it can only send what it has.
        let data = shard(16 * 1024, 8);
        let c = challenge(&data, 4);
        let victim = c.chunks()[0] as usize;
        let honest = prove(&c, &data).unwrap();
        let mut damaged = data.clone();
        damaged[victim * 1024] ^= 1;
        let outboard = PreOrderMemOutboard::create(&data, BlockSize::ZERO);
        let mut forged = Vec::new();
        let _ =
            bao_tree::io::sync::encode_ranges(&damaged[..], &outboard, &c.ranges(), &mut forged);
        assert_eq!(forged.len(), honest.len());
        assert!(matches!(verify(&c, &forged), Err(ProofError::Mismatch(_))));
    }

    #[test]
    fn challenge_wire_round_trips_and_refuses_bad_input() {
        let data = shard(4096, 9);
        let c = challenge(&data, 7);
        assert_eq!(Challenge::decode(&c.encode()).unwrap(), c);
        assert_eq!(
            Challenge::decode(&c.encode()[..67]),
            Err(ProofError::ChallengeLength(67))
        );
        let mut zero = c.encode();
        zero[64..].copy_from_slice(&0u32.to_le_bytes());
        assert_eq!(Challenge::decode(&zero), Err(ProofError::Size(0)));
        let mut big = c.encode();
        big[64..].copy_from_slice(&(MAX_SHARD_SIZE + 1).to_le_bytes());
        assert!(matches!(Challenge::decode(&big), Err(ProofError::Size(_))));
    }

    const GOLDEN_PARENTS: &str = concat!(
        "811f7d4f1735258e27c68b9214ff7c4aac866d47f73deef1fd8908b5e38f804f",
        "9987f6dcfebea80982c025ccf32f8ecd5abc10a4d42e8f10dec5b72c6b90badc",
        "5c9e654411e393d1f4bec710ccd5bc5669ab177d610a0eb691fcfee92fb4e8b1",
        "5b1f23b8390368a2c15095910389d1b716eb52a6dfd34d0aa66a22a21b761ca7",
    );
    const GOLDEN_PROOF_HASH: &str =
        "379c9ddf8fcf12bc51b21727cb77948ad04bdb5be915c2a9e6ccfcd57db7ff71";

    /// Golden bytes: the wire format is fixed; a change here is a protocol version bump.
    #[test]
    fn golden_challenge_and_proof_bytes() {
        let data: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
        let c = Challenge {
            root: Root::of(&data),
            nonce: [0xab; 32],
            size: 3000,
        };
        let hex = |b: &[u8]| data_encoding::HEXLOWER.encode(b);
        assert_eq!(
            hex(&c.encode()),
            format!("{}{}{}", c.root.to_hex(), "ab".repeat(32), "b80b0000")
        );
        assert_eq!(c.chunks(), vec![0, 1, 2]);
        let p = prove(&c, &data).unwrap();
        // Pre-order: root pair (chunks 0-1 | chunk 2), pair (0 | 1), chunk 0, chunk 1, chunk 2.
        assert_eq!(p.len(), 64 + 64 + 3000);
        assert_eq!(&p[128..128 + 1024], &data[..1024]);
        assert_eq!(&p[128 + 2048..], &data[2048..]);
        assert_eq!(hex(&p[..128]), GOLDEN_PARENTS);
        assert_eq!(blake3::hash(&p).to_hex().as_str(), GOLDEN_PROOF_HASH);
    }

    #[test]
    fn a_report_groups_verdicts_by_slab_and_shard_and_counts() {
        let v = |shard, passed| ShardVerdict {
            shard,
            root: String::new(),
            host: String::new(),
            passed,
            reason: (!passed).then(|| "not held".into()),
            ms: 1,
        };
        let r = AuditReport::from_verdicts(
            Root::of(b"m"),
            [
                (1, v(2, true)),
                (0, v(1, false)),
                (1, v(0, true)),
                (0, v(0, true)),
            ],
            5,
        );
        assert_eq!((r.passed, r.failed), (3, 1));
        assert_eq!(r.slabs.len(), 2);
        assert_eq!(r.slabs[0].healthy, 1);
        assert_eq!(
            r.slabs[1]
                .shards
                .iter()
                .map(|s| s.shard)
                .collect::<Vec<_>>(),
            vec![0, 2]
        );
        assert!(
            !r.recoverable(),
            "a slab with one proven shard cannot be decoded"
        );
        let json = serde_json::to_value(&r).unwrap();
        assert!(json["slabs"][0]["shards"][0].get("reason").is_none());
        assert_eq!(json["slabs"][0]["shards"][1]["reason"], "not held");
    }

    #[test]
    fn moves_redirect_only_challenges_whose_root_matches() {
        let key = libp2p_identity::ed25519::Keypair::from(
            libp2p_identity::ed25519::SecretKey::try_from_bytes([5; 32]).unwrap(),
        );
        let peer = libp2p_identity::PublicKey::from(key.public()).to_peer_id();
        let host = crate::engine::HostId::new(peer);
        let c = |shard, data: &[u8]| ShardChallenge {
            slab: 0,
            shard,
            host: None,
            challenge: challenge(data, 1),
        };
        let mut cs = vec![c(0, b"a"), c(1, b"b")];
        let mut moves = crate::engine::Moves::new();
        moves.insert((0, 0), (Root::of(b"a"), host));
        moves.insert((0, 1), (Root::of(b"not b"), host));
        apply_moves(&mut cs, &moves);
        assert_eq!(cs[0].host, Some(host));
        assert_eq!(cs[1].host, None, "a move for another root is ignored");
    }
}

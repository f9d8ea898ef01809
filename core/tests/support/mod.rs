//! Helpers shared by the round-trip tests (native and wasm) and the property tests (native).
#![allow(dead_code)]

use btfs_core::manifest::ShardRecord;
use btfs_core::{
    DecodeError, Decoder, EncodedSlab, Encoder, Layout, Manifest, ObjectHeader, ObjectKey,
    SlabRecord, TOTAL_SHARDS,
};

pub const SHARD: u32 = 4096; // small shards so "several slabs" stays fast

/// A small deterministic generator (xorshift64), the same on native and wasm.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

pub fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    (0..len).map(|_| (rng.next() >> 24) as u8).collect()
}

/// Encodes `plain`, feeding it in `chunk`-byte pieces.
pub fn encode(
    key: &ObjectKey,
    plain: &[u8],
    shard: u32,
    chunk: usize,
) -> (Manifest, Vec<EncodedSlab>) {
    let layout = Layout::new(plain.len() as u64, shard).unwrap();
    let mut enc = Encoder::new(key, layout);
    let mut slabs = Vec::new();
    while let Some(s) = enc.next_slab().unwrap() {
        slabs.push(s);
    }
    for piece in plain.chunks(chunk.max(1)) {
        let mut rest = piece;
        while !rest.is_empty() {
            rest = &rest[enc.feed(rest).unwrap()..];
            while let Some(s) = enc.next_slab().unwrap() {
                slabs.push(s);
            }
        }
    }
    enc.finish().unwrap();
    let hosts: Vec<Vec<u8>> = (0..TOTAL_SHARDS as u8).map(|i| vec![i, 1]).collect();
    let records: Vec<SlabRecord> = slabs
        .iter()
        .map(|s| {
            std::array::from_fn(|i| ShardRecord {
                root: s.roots[i],
                host: i as u16,
            })
        })
        .collect();
    let header = ObjectHeader {
        name: "f.bin".into(),
        mime: String::new(),
    };
    let m = Manifest::new(layout, key, &header, hosts, records).unwrap();
    (Manifest::decode(&m.encode()).unwrap(), slabs)
}

/// Decodes using only the shards `pick(slab)` names.
pub fn decode(
    key: &ObjectKey,
    m: &Manifest,
    slabs: &[EncodedSlab],
    pick: impl Fn(usize) -> Vec<usize>,
) -> Result<Vec<u8>, DecodeError> {
    let mut dec = Decoder::new(m, key)?;
    let mut out = Vec::new();
    for (i, slab) in slabs.iter().enumerate() {
        let mut shards = vec![None; TOTAL_SHARDS];
        for k in pick(i) {
            let root = m.slabs()[i][k].root;
            shards[k] = root.verify(slab.shard(k).to_vec()).ok();
        }
        out.extend(dec.decode_slab(i as u64, &shards)?);
    }
    dec.finish()?;
    Ok(out)
}

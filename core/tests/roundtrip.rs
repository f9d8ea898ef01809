//! End-to-end properties of the core data path: encode → pick shards → verify → decode.

use btfs_core::layout::BLOCK_PLAIN;
use btfs_core::manifest::ShardRecord;
use btfs_core::{
    DecodeError, Decoder, EncodedSlab, Encoder, Layout, Manifest, ObjectHeader, ObjectKey, Root,
    SlabRecord, TOTAL_SHARDS,
};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};

const SHARD: u32 = 4096; // small shards so "several slabs" stays fast

fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..len).map(|_| rng.gen()).collect()
}

/// Encodes `plain`, feeding it in `chunk`-byte pieces.
fn encode(key: &ObjectKey, plain: &[u8], shard: u32, chunk: usize) -> (Manifest, Vec<EncodedSlab>) {
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
fn decode(
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

#[test]
fn boundary_sizes_round_trip() {
    let key = ObjectKey::from_bytes([3; 32]);
    let slab_plain = (SHARD as usize * 10) - 16; // roughly one slab
    let block = BLOCK_PLAIN as usize;
    for len in [
        0,
        1,
        SHARD as usize - 1,
        SHARD as usize,
        SHARD as usize + 1,
        block - 1,
        block,
        block + 1,
        slab_plain,
        slab_plain + 1,
        7 * block + 12_345, // many slabs, blocks straddling slab edges
    ] {
        let plain = data(len, len as u64);
        let (m, slabs) = encode(&key, &plain, SHARD, 1000);
        assert_eq!(slabs.len() as u64, m.layout().slab_count(), "len {len}");
        let got = decode(&key, &m, &slabs, |_| (20..30).collect()).unwrap();
        assert_eq!(got, plain, "len {len}");
    }
}

#[test]
fn default_shard_size_round_trips_a_multi_slab_object() {
    let key = ObjectKey::from_bytes([4; 32]);
    let plain = data(25 << 20, 9);
    let (m, slabs) = encode(&key, &plain, btfs_core::layout::DEFAULT_SHARD_SIZE, 1 << 20);
    assert_eq!(slabs.len(), 3);
    let got = decode(&key, &m, &slabs, |i| (i..i + 10).collect()).unwrap();
    assert_eq!(got, plain);
}

#[test]
fn a_flipped_bit_in_any_shard_is_detected() {
    let key = ObjectKey::from_bytes([5; 32]);
    let plain = data(50_000, 1);
    let (m, slabs) = encode(&key, &plain, SHARD, 50_000);
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for k in 0..TOTAL_SHARDS {
        let mut bytes = slabs[0].shard(k).to_vec();
        let bit = rng.gen_range(0..bytes.len() * 8);
        bytes[bit / 8] ^= 1 << (bit % 8);
        assert!(m.slabs()[0][k].root.verify(bytes).is_err(), "shard {k}");
    }
}

#[test]
fn a_wrong_key_fails_with_a_clear_error_before_any_download() {
    let key = ObjectKey::from_bytes([6; 32]);
    let (m, _) = encode(&key, b"secret", SHARD, 10);
    let err = Decoder::new(&m, &ObjectKey::from_bytes([7; 32]))
        .err()
        .unwrap();
    assert!(err.to_string().contains("key is wrong"), "{err}");
}

#[test]
fn shards_that_verified_but_come_from_another_object_fail_authentication() {
    // Same layout, different key: the shards are self-consistent, the blocks are not ours.
    let key = ObjectKey::from_bytes([1; 32]);
    let plain = data(10_000, 2);
    let (m, _) = encode(&key, &plain, SHARD, 10_000);
    let (_, other_slabs) = encode(&ObjectKey::from_bytes([2; 32]), &plain, SHARD, 10_000);
    let mut dec = Decoder::new(&m, &key).unwrap();
    let shards: Vec<_> = (0..TOTAL_SHARDS)
        .map(|k| {
            let bytes = other_slabs[0].shard(k).to_vec();
            Some(Root::of(&bytes).verify(bytes).unwrap())
        })
        .collect();
    let err = dec.decode_slab(0, &shards).unwrap_err();
    assert!(matches!(err, DecodeError::Crypto(_)), "{err}");
}

#[test]
fn too_much_or_too_little_input_is_an_error() {
    let key = ObjectKey::from_bytes([1; 32]);
    let mut enc = Encoder::new(&key, Layout::new(10, SHARD).unwrap());
    assert!(enc.feed(&[0; 11]).is_err());
    enc.feed(&[0; 5]).unwrap();
    assert!(enc
        .finish()
        .unwrap_err()
        .to_string()
        .contains("5 of the declared 10"));
}

fn ten_of_thirty() -> impl Strategy<Value = Vec<usize>> {
    Just((0..TOTAL_SHARDS).collect::<Vec<_>>())
        .prop_shuffle()
        .prop_map(|v| v[..10].to_vec())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any 10 of the 30 shards rebuild the object, at any size and feeding pattern.
    #[test]
    fn any_ten_shards_rebuild(len in 0usize..200_000, chunk in 1usize..70_000,
                              picks in proptest::collection::vec(ten_of_thirty(), 8)) {
        let key = ObjectKey::from_bytes([9; 32]);
        let plain = data(len, len as u64);
        let (m, slabs) = encode(&key, &plain, SHARD, chunk);
        let got = decode(&key, &m, &slabs, |i| picks[i % picks.len()].clone()).unwrap();
        prop_assert_eq!(got, plain);
    }

    /// Nine shards never suffice, and the decoder says so.
    #[test]
    fn nine_shards_do_not(pick in ten_of_thirty()) {
        let key = ObjectKey::from_bytes([9; 32]);
        let plain = data(1000, 1);
        let (m, slabs) = encode(&key, &plain, SHARD, 1000);
        let err = decode(&key, &m, &slabs, |_| pick[..9].to_vec()).unwrap_err();
        prop_assert!(err.to_string().contains("only 9 of the 10"));
    }
}

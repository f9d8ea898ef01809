//! End-to-end properties of the core data path: encode → pick shards → verify → decode.

mod support;

use btfs_core::layout::BLOCK_PLAIN;
use btfs_core::{DecodeError, Decoder, Encoder, Layout, ObjectKey, Root, TOTAL_SHARDS};
use support::{data, decode, encode, Rng, SHARD};

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

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
    let mut rng = Rng::new(7);
    for k in 0..TOTAL_SHARDS {
        let mut bytes = slabs[0].shard(k).to_vec();
        let bit = (rng.next() % (bytes.len() as u64 * 8)) as usize;
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

//! Property tests of the core data path (native only: proptest does not build for wasm32).
#![cfg(not(target_arch = "wasm32"))]

mod support;

use btfs_core::{ObjectKey, TOTAL_SHARDS};
use proptest::prelude::*;
use support::{data, decode, encode, SHARD};

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

//! Reed-Solomon 10 data + 20 parity over one slab, in cache-sized column stripes.
//!
//! Goals: any 10 of a slab's 30 shards rebuild it; encode and decode run at the library's best
//! speed. reed-solomon-simd is ~2.5× faster on 8-128 KiB columns than on whole multi-MiB shards
//! (its working set then stays in L2), so both directions walk the shards in [`STRIPE`]-byte
//! columns and reuse one encoder/decoder. Non-goals: other shard counts (the whole network uses
//! 10-of-30).
//!
//! Engine: on wasm32 built with `simd128` (the workspace's `.cargo/config.toml` enables it) the
//! work runs on the `simd128` module's engine, elsewhere on the library's runtime-selected default
//! (AVX2, SSSE3, Neon, or its portable engine). Every engine produces the same bytes.

use reed_solomon_simd::engine::Engine;
use reed_solomon_simd::rate::{DefaultRateDecoder, DefaultRateEncoder, RateDecoder, RateEncoder};
use thiserror::Error;

use crate::layout::{DATA_SHARDS, PARITY_SHARDS, TOTAL_SHARDS};

/// Column width processed at a time.
pub const STRIPE: usize = 64 * 1024;

/// Erasure coding failed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErasureError {
    /// Fewer than 10 shards were given.
    #[error("only {have} of the 10 shards needed to rebuild the slab are available")]
    NotEnoughShards {
        /// Shards available.
        have: usize,
    },
    /// A shard's length differs from the slab's shard size.
    #[error("shard {index} is {got} bytes, expected {expected}")]
    ShardLen {
        /// Shard index.
        index: usize,
        /// Its length.
        got: usize,
        /// Expected length.
        expected: usize,
    },
    /// The library refused the input (should not happen with checked sizes).
    #[error("reed-solomon: {0}")]
    Library(String),
}

fn lib(e: reed_solomon_simd::Error) -> ErasureError {
    ErasureError::Library(e.to_string())
}

/// The engine [`encode`] and [`decode`] use.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
type BestEngine = crate::simd128::Simd128;
/// The engine [`encode`] and [`decode`] use.
#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
type BestEngine = reed_solomon_simd::engine::DefaultEngine;

/// Computes the 20 parity shards of `data` (10 shards of `shard_size` bytes, back to back).
pub fn encode(data: &[u8], shard_size: usize) -> Result<Vec<u8>, ErasureError> {
    encode_with::<BestEngine>(data, shard_size)
}

/// [`encode`] on a chosen reed-solomon-simd [`Engine`]: for comparing engines in tests and
/// benchmarks. The output does not depend on the engine.
pub fn encode_with<E: Engine + Default>(
    data: &[u8],
    shard_size: usize,
) -> Result<Vec<u8>, ErasureError> {
    let mut parity = Vec::new();
    encode_stripes::<E>(&mut None, data, shard_size, &mut parity)?;
    Ok(parity)
}

/// A reusable parity encoder: [`encode`] for a stream of slabs, keeping the library's encoder
/// (and its work buffers) from one slab to the next and writing into a caller's buffer, so
/// encoding a slab allocates nothing once the buffers have their size.
#[derive(Default)]
pub struct ParityEncoder {
    encoder: Option<DefaultRateEncoder<BestEngine>>,
}

impl ParityEncoder {
    /// Writes the 20 parity shards of `data` (10 shards of `shard_size` bytes, back to back)
    /// into `parity`, resized to `20 × shard_size` (its old bytes are overwritten, never read).
    pub fn encode_into(
        &mut self,
        data: &[u8],
        shard_size: usize,
        parity: &mut Vec<u8>,
    ) -> Result<(), ErasureError> {
        encode_stripes::<BestEngine>(&mut self.encoder, data, shard_size, parity)
    }
}

fn encode_stripes<E: Engine + Default>(
    encoder: &mut Option<DefaultRateEncoder<E>>,
    data: &[u8],
    shard_size: usize,
    parity: &mut Vec<u8>,
) -> Result<(), ErasureError> {
    if data.len() != DATA_SHARDS * shard_size {
        return Err(ErasureError::ShardLen {
            index: 0,
            got: data.len() / DATA_SHARDS,
            expected: shard_size,
        });
    }
    // Every byte is written below; resizing a reused buffer of the same size costs nothing.
    parity.resize(PARITY_SHARDS * shard_size, 0);
    let mut off = 0;
    while off < shard_size {
        let len = STRIPE.min(shard_size - off);
        let enc = match encoder.as_mut() {
            Some(enc) => {
                enc.reset(DATA_SHARDS, PARITY_SHARDS, len).map_err(lib)?;
                enc
            }
            None => encoder.insert(
                DefaultRateEncoder::new(DATA_SHARDS, PARITY_SHARDS, len, E::default(), None)
                    .map_err(lib)?,
            ),
        };
        for k in 0..DATA_SHARDS {
            let start = k * shard_size + off;
            enc.add_original_shard(&data[start..start + len])
                .map_err(lib)?;
        }
        let result = enc.encode().map_err(lib)?;
        for (j, rec) in result.recovery_iter().enumerate() {
            let start = j * shard_size + off;
            parity[start..start + len].copy_from_slice(rec);
        }
        off += len;
    }
    Ok(())
}

/// Rebuilds the 10 data shards (back to back) from any 10 of the 30 `shards`.
///
/// `shards[i]` is shard `i` (0..10 data, 10..30 parity) if available. When all data shards are
/// present this is a copy; otherwise only the missing data shards are computed.
pub fn decode(shards: &[Option<&[u8]>], shard_size: usize) -> Result<Vec<u8>, ErasureError> {
    decode_with::<BestEngine>(shards, shard_size)
}

/// [`decode`] on a chosen reed-solomon-simd [`Engine`]: for comparing engines in tests and
/// benchmarks. The output does not depend on the engine.
pub fn decode_with<E: Engine + Default>(
    shards: &[Option<&[u8]>],
    shard_size: usize,
) -> Result<Vec<u8>, ErasureError> {
    let have = shards
        .iter()
        .take(TOTAL_SHARDS)
        .filter(|s| s.is_some())
        .count();
    if shards.len() != TOTAL_SHARDS || have < DATA_SHARDS {
        return Err(ErasureError::NotEnoughShards { have });
    }
    for (index, s) in shards.iter().enumerate() {
        if let Some(s) = s {
            if s.len() != shard_size {
                return Err(ErasureError::ShardLen {
                    index,
                    got: s.len(),
                    expected: shard_size,
                });
            }
        }
    }
    let mut out = vec![0u8; DATA_SHARDS * shard_size];
    for (k, s) in shards[..DATA_SHARDS].iter().enumerate() {
        if let Some(s) = s {
            out[k * shard_size..(k + 1) * shard_size].copy_from_slice(s);
        }
    }
    let missing = shards[..DATA_SHARDS].iter().filter(|s| s.is_none()).count();
    if missing == 0 {
        return Ok(out);
    }
    // Exactly `missing` parity shards are needed; use the first ones available.
    let parity: Vec<(usize, &[u8])> = shards[DATA_SHARDS..]
        .iter()
        .enumerate()
        .filter_map(|(j, s)| s.map(|s| (j, s)))
        .take(missing)
        .collect();
    let mut decoder: Option<DefaultRateDecoder<E>> = None;
    let mut off = 0;
    while off < shard_size {
        let len = STRIPE.min(shard_size - off);
        let dec = match decoder.as_mut() {
            Some(dec) => {
                dec.reset(DATA_SHARDS, PARITY_SHARDS, len).map_err(lib)?;
                dec
            }
            None => decoder.insert(
                DefaultRateDecoder::new(DATA_SHARDS, PARITY_SHARDS, len, E::default(), None)
                    .map_err(lib)?,
            ),
        };
        for (k, s) in shards[..DATA_SHARDS].iter().enumerate() {
            if let Some(s) = s {
                dec.add_original_shard(k, &s[off..off + len]).map_err(lib)?;
            }
        }
        for (j, s) in &parity {
            dec.add_recovery_shard(*j, &s[off..off + len])
                .map_err(lib)?;
        }
        let result = dec.decode().map_err(lib)?;
        for (k, restored) in result.restored_original_iter() {
            let start = k * shard_size + off;
            out[start..start + len].copy_from_slice(restored);
        }
        off += len;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn slab(shard_size: usize, seed: u8) -> Vec<u8> {
        (0..DATA_SHARDS * shard_size)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    fn shards_of(data: &[u8], parity: &[u8], s: usize) -> Vec<Vec<u8>> {
        data.chunks(s)
            .chain(parity.chunks(s))
            .map(<[u8]>::to_vec)
            .collect()
    }

    #[test]
    fn every_window_of_ten_rebuilds_across_stripes() {
        // 2.5 stripes wide, so stripe boundaries and the short last stripe are exercised.
        let s = STRIPE * 2 + STRIPE / 2;
        let data = slab(s, 3);
        let parity = encode(&data, s).unwrap();
        let all = shards_of(&data, &parity, s);
        for start in 0..=TOTAL_SHARDS - DATA_SHARDS {
            let mut avail: Vec<Option<&[u8]>> = vec![None; TOTAL_SHARDS];
            for i in start..start + DATA_SHARDS {
                avail[i] = Some(&all[i]);
            }
            assert_eq!(decode(&avail, s).unwrap(), data, "window {start}");
        }
    }

    /// The parity of a fixed slab, pinned: the native default engine (AVX2/SSSE3/Neon), the
    /// portable engine and, in the wasm test run, the `simd128` engine must all produce it.
    #[test]
    fn parity_is_pinned_on_every_engine_and_target() {
        // Two stripes, the second short; pseudo-random bytes (xorshift64).
        let s = STRIPE + 192;
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let data: Vec<u8> = (0..DATA_SHARDS * s)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let parity = encode(&data, s).unwrap();
        assert_eq!(parity.len(), PARITY_SHARDS * s);
        assert_eq!(
            blake3::hash(&parity).to_hex().as_str(),
            "0771db17a849589c2d898ace053a08132ba51afb404c0cdc1eeaf316fc00be88"
        );
        let portable = encode_with::<reed_solomon_simd::engine::NoSimd>(&data, s).unwrap();
        assert!(portable == parity, "portable engine differs");
    }

    /// One [`ParityEncoder`] over slabs of different shard sizes (the last slab of an object
    /// is smaller), with a dirty, reused output buffer, gives exactly [`encode`]'s parity.
    #[test]
    fn reused_parity_encoder_matches_encode() {
        let mut enc = ParityEncoder::default();
        let mut parity = vec![0xAA; 7];
        for (s, seed) in [
            (STRIPE + 64, 1),
            (STRIPE + 64, 2),
            (192, 3),
            (STRIPE * 2, 4),
        ] {
            let data = slab(s, seed);
            enc.encode_into(&data, s, &mut parity).unwrap();
            assert!(parity == encode(&data, s).unwrap(), "shard size {s}");
        }
        assert!(enc.encode_into(&[0; 100], 64, &mut parity).is_err());
    }

    #[test]
    fn nine_shards_are_not_enough() {
        let s = 64;
        let data = slab(s, 1);
        let parity = encode(&data, s).unwrap();
        let all = shards_of(&data, &parity, s);
        let mut avail: Vec<Option<&[u8]>> = vec![None; TOTAL_SHARDS];
        for i in 0..9 {
            avail[i * 3] = Some(&all[i * 3]);
        }
        assert_eq!(
            decode(&avail, s).unwrap_err(),
            ErasureError::NotEnoughShards { have: 9 }
        );
    }

    #[test]
    fn wrong_shard_length_is_an_error_not_a_panic() {
        let s = 128;
        let data = slab(s, 1);
        let parity = encode(&data, s).unwrap();
        let all = shards_of(&data, &parity, s);
        let mut avail: Vec<Option<&[u8]>> = all.iter().map(|v| Some(v.as_slice())).collect();
        avail[4] = Some(&all[4][..64]);
        assert!(matches!(
            decode(&avail, s),
            Err(ErasureError::ShardLen { index: 4, .. })
        ));
        assert!(encode(&data[..100], s).is_err());
    }
}

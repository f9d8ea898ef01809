//! A wasm `simd128` [`Engine`] for reed-solomon-simd.
//!
//! Goals: Reed-Solomon in the browser at a useful fraction of native speed. reed-solomon-simd
//! picks AVX2, SSSE3 or Neon at runtime natively, but on wasm32 it only has its portable `NoSimd`
//! engine (~100 MiB/s). [`Simd128`] plugs into the library's public [`Engine`] trait and gives
//! output byte-identical to `NoSimd` (and so to every native engine: the same parity everywhere),
//! with no `unsafe`: `core::arch::wasm32` intrinsics are safe functions once `simd128` is enabled
//! at compile time (`.cargo/config.toml` does that for `wasm32-unknown-unknown`).
//!
//! Non-goals: runtime feature detection (a wasm module either validates with `simd128` or not;
//! every current browser and Node has it), relaxed-simd, and native use: off wasm the module only
//! exists in tests, where the same engine logic runs on a portable emulation of the few 128-bit
//! operations it needs, so its byte-identity is checked by `cargo test` too.
//!
//! How it works. The library stores 32 GF(2^16) elements per 64-byte chunk: 32 low bytes, then
//! 32 high bytes. Multiplying by a constant `m` is linear over GF(2), so the product splits into
//! four table lookups, one per nibble of the element: `x * m = T0[x & 15] ^ T1[(x >> 4) & 15] ^
//! T2[(x >> 8) & 15] ^ T3[x >> 12]`, each `Ti` 16 entries of 16 bits kept as a 16-byte table of
//! low bytes and one of high bytes (the library's `Mul128` table, built for SSSE3). `i8x16_swizzle`
//! looks up 16 nibbles at once, exactly like `pshufb` in the library's SSSE3 engine, so one chunk
//! costs 16 swizzles and a few XORs. The FFT/IFFT control flow (two butterfly layers at a time,
//! `GF_MODULUS` meaning "multiply by zero, just XOR") is the library's, copied from its SSSE3
//! engine (reed-solomon-simd, MIT AND BSD-3-Clause, after Leopard-RS).

use core::iter::zip;

use reed_solomon_simd::engine::tables::{self, Mul128, Multiply128lutT, Skew};
use reed_solomon_simd::engine::{utils, Engine, GfElement, ShardsRefMut, GF_MODULUS};

use lanes::V;

/// The 128-bit operations the engine uses: real `simd128` instructions on wasm.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod lanes {
    use core::arch::wasm32 as w;

    pub(super) type V = w::v128;

    /// Bytes `16 * i .. 16 * i + 16` of `x` (LLVM folds this into one `v128.load`).
    #[inline(always)]
    pub(super) fn load(x: &[u8; 64], i: usize) -> V {
        let b = &x[16 * i..16 * i + 16];
        w::u8x16(
            b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13],
            b[14], b[15],
        )
    }

    /// Writes `v` to bytes `16 * i .. 16 * i + 16` of `x`.
    #[inline(always)]
    pub(super) fn store(x: &mut [u8; 64], i: usize, v: V) {
        let b = &mut x[16 * i..16 * i + 16];
        b[0] = w::u8x16_extract_lane::<0>(v);
        b[1] = w::u8x16_extract_lane::<1>(v);
        b[2] = w::u8x16_extract_lane::<2>(v);
        b[3] = w::u8x16_extract_lane::<3>(v);
        b[4] = w::u8x16_extract_lane::<4>(v);
        b[5] = w::u8x16_extract_lane::<5>(v);
        b[6] = w::u8x16_extract_lane::<6>(v);
        b[7] = w::u8x16_extract_lane::<7>(v);
        b[8] = w::u8x16_extract_lane::<8>(v);
        b[9] = w::u8x16_extract_lane::<9>(v);
        b[10] = w::u8x16_extract_lane::<10>(v);
        b[11] = w::u8x16_extract_lane::<11>(v);
        b[12] = w::u8x16_extract_lane::<12>(v);
        b[13] = w::u8x16_extract_lane::<13>(v);
        b[14] = w::u8x16_extract_lane::<14>(v);
        b[15] = w::u8x16_extract_lane::<15>(v);
    }

    /// A 16-byte lookup table stored as a little-endian `u128`.
    #[inline(always)]
    pub(super) fn table(t: u128) -> V {
        w::u64x2(t as u64, (t >> 64) as u64)
    }

    #[inline(always)]
    pub(super) fn splat(b: u8) -> V {
        w::u8x16_splat(b)
    }

    #[inline(always)]
    pub(super) fn xor(a: V, b: V) -> V {
        w::v128_xor(a, b)
    }

    #[inline(always)]
    pub(super) fn and(a: V, b: V) -> V {
        w::v128_and(a, b)
    }

    /// Shifts both 64-bit lanes right by 4 (like `_mm_srli_epi64`; callers mask the nibbles).
    #[inline(always)]
    pub(super) fn shr4(a: V) -> V {
        w::u64x2_shr(a, 4)
    }

    /// `out[i] = t[idx[i]]`, 0 for indices ≥ 16 (callers only pass nibbles).
    #[inline(always)]
    pub(super) fn lookup(t: V, idx: V) -> V {
        w::i8x16_swizzle(t, idx)
    }
}

/// The same operations on plain bytes, with wasm's semantics, so the engine's logic can be
/// tested natively against the library's `NoSimd`.
#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
mod lanes {
    #[derive(Clone, Copy)]
    pub(super) struct V([u8; 16]);

    fn map2(a: V, b: V, f: impl Fn(u8, u8) -> u8) -> V {
        V(core::array::from_fn(|i| f(a.0[i], b.0[i])))
    }

    pub(super) fn load(x: &[u8; 64], i: usize) -> V {
        V(core::array::from_fn(|j| x[16 * i + j]))
    }

    pub(super) fn store(x: &mut [u8; 64], i: usize, v: V) {
        x[16 * i..16 * i + 16].copy_from_slice(&v.0);
    }

    pub(super) fn table(t: u128) -> V {
        V(t.to_le_bytes())
    }

    pub(super) fn splat(b: u8) -> V {
        V([b; 16])
    }

    pub(super) fn xor(a: V, b: V) -> V {
        map2(a, b, |a, b| a ^ b)
    }

    pub(super) fn and(a: V, b: V) -> V {
        map2(a, b, |a, b| a & b)
    }

    pub(super) fn shr4(a: V) -> V {
        let v = u128::from_le_bytes(a.0);
        let lo = (v as u64) >> 4;
        let hi = ((v >> 64) as u64) >> 4;
        V((u128::from(lo) | (u128::from(hi) << 64)).to_le_bytes())
    }

    pub(super) fn lookup(t: V, idx: V) -> V {
        V(core::array::from_fn(|i| {
            t.0.get(usize::from(idx.0[i])).copied().unwrap_or(0)
        }))
    }
}

/// Reed-Solomon [`Engine`] using wasm `simd128` (see the module docs).
#[derive(Clone, Copy)]
pub struct Simd128 {
    mul128: &'static Mul128,
    skew: &'static Skew,
}

impl Simd128 {
    /// Creates the engine, initializing the library's shared tables on first use.
    pub fn new() -> Self {
        Self {
            mul128: tables::get_mul128(),
            skew: tables::get_skew(),
        }
    }
}

impl Default for Simd128 {
    fn default() -> Self {
        Self::new()
    }
}

/// The eight lookup tables for one multiplier, loaded once per run of chunks.
struct Lut {
    lo: [V; 4],
    hi: [V; 4],
    mask: V,
}

impl Lut {
    #[inline(always)]
    fn new(t: &Multiply128lutT) -> Self {
        Self {
            lo: t.lo.map(lanes::table),
            hi: t.hi.map(lanes::table),
            mask: lanes::splat(0x0f),
        }
    }

    /// Products of 16 elements given as their low and high bytes: `(low, high)` bytes.
    #[inline(always)]
    fn mul(&self, lo: V, hi: V) -> (V, V) {
        let n0 = lanes::and(lo, self.mask);
        let n1 = lanes::and(lanes::shr4(lo), self.mask);
        let n2 = lanes::and(hi, self.mask);
        let n3 = lanes::and(lanes::shr4(hi), self.mask);
        let mut p_lo = lanes::lookup(self.lo[0], n0);
        let mut p_hi = lanes::lookup(self.hi[0], n0);
        p_lo = lanes::xor(p_lo, lanes::lookup(self.lo[1], n1));
        p_hi = lanes::xor(p_hi, lanes::lookup(self.hi[1], n1));
        p_lo = lanes::xor(p_lo, lanes::lookup(self.lo[2], n2));
        p_hi = lanes::xor(p_hi, lanes::lookup(self.hi[2], n2));
        p_lo = lanes::xor(p_lo, lanes::lookup(self.lo[3], n3));
        p_hi = lanes::xor(p_hi, lanes::lookup(self.hi[3], n3));
        (p_lo, p_hi)
    }

    /// `x *= m` for one 64-byte chunk (32 elements: lanes 0, 1 low bytes; 2, 3 high bytes).
    #[inline(always)]
    fn mul_chunk(&self, x: &mut [u8; 64]) {
        let (p0_lo, p0_hi) = self.mul(lanes::load(x, 0), lanes::load(x, 2));
        let (p1_lo, p1_hi) = self.mul(lanes::load(x, 1), lanes::load(x, 3));
        lanes::store(x, 0, p0_lo);
        lanes::store(x, 1, p1_lo);
        lanes::store(x, 2, p0_hi);
        lanes::store(x, 3, p1_hi);
    }

    /// FFT butterfly on one chunk: `x ^= y * m; y ^= x`.
    #[inline(always)]
    fn fft_chunk(&self, x: &mut [u8; 64], y: &mut [u8; 64]) {
        let ys = [0, 1, 2, 3].map(|i| lanes::load(y, i));
        let (p0_lo, p0_hi) = self.mul(ys[0], ys[2]);
        let (p1_lo, p1_hi) = self.mul(ys[1], ys[3]);
        let xs = [
            lanes::xor(lanes::load(x, 0), p0_lo),
            lanes::xor(lanes::load(x, 1), p1_lo),
            lanes::xor(lanes::load(x, 2), p0_hi),
            lanes::xor(lanes::load(x, 3), p1_hi),
        ];
        for i in 0..4 {
            lanes::store(x, i, xs[i]);
            lanes::store(y, i, lanes::xor(ys[i], xs[i]));
        }
    }

    /// IFFT butterfly on one chunk: `y ^= x; x ^= y * m`.
    #[inline(always)]
    fn ifft_chunk(&self, x: &mut [u8; 64], y: &mut [u8; 64]) {
        let xs = [0, 1, 2, 3].map(|i| lanes::load(x, i));
        let ys = [0, 1, 2, 3].map(|i| lanes::xor(lanes::load(y, i), xs[i]));
        let (p0_lo, p0_hi) = self.mul(ys[0], ys[2]);
        let (p1_lo, p1_hi) = self.mul(ys[1], ys[3]);
        let prods = [p0_lo, p1_lo, p0_hi, p1_hi];
        for i in 0..4 {
            lanes::store(y, i, ys[i]);
            lanes::store(x, i, lanes::xor(xs[i], prods[i]));
        }
    }
}

impl Engine for Simd128 {
    fn fft(
        &self,
        data: &mut ShardsRefMut,
        pos: usize,
        size: usize,
        truncated_size: usize,
        skew_delta: usize,
    ) {
        // Two layers at a time.
        let mut dist4 = size;
        let mut dist = size >> 2;
        while dist != 0 {
            let mut r = 0;
            while r < truncated_size {
                let base = r + dist + skew_delta - 1;
                let log_m01 = self.skew[base];
                let log_m02 = self.skew[base + dist];
                let log_m23 = self.skew[base + dist * 2];
                for i in r..r + dist {
                    self.fft_two_layers(data, pos + i, dist, log_m01, log_m23, log_m02);
                }
                r += dist4;
            }
            dist4 = dist;
            dist >>= 2;
        }
        // Final odd layer.
        if dist4 == 2 {
            let mut r = 0;
            while r < truncated_size {
                let log_m = self.skew[r + skew_delta];
                let (x, y) = data.dist2_mut(pos + r, 1);
                self.fft_butterfly(x, y, log_m);
                r += 2;
            }
        }
    }

    fn ifft(
        &self,
        data: &mut ShardsRefMut,
        pos: usize,
        size: usize,
        truncated_size: usize,
        skew_delta: usize,
    ) {
        // Two layers at a time.
        let mut dist = 1;
        let mut dist4 = 4;
        while dist4 <= size {
            let mut r = 0;
            while r < truncated_size {
                let base = r + dist + skew_delta - 1;
                let log_m01 = self.skew[base];
                let log_m02 = self.skew[base + dist];
                let log_m23 = self.skew[base + dist * 2];
                for i in r..r + dist {
                    self.ifft_two_layers(data, pos + i, dist, log_m01, log_m23, log_m02);
                }
                r += dist4;
            }
            dist = dist4;
            dist4 <<= 2;
        }
        // Final odd layer.
        if dist < size {
            let log_m = self.skew[dist + skew_delta - 1];
            if log_m == GF_MODULUS {
                utils::xor_within(data, pos + dist, pos, dist);
            } else {
                let (mut a, mut b) = data.split_at_mut(pos + dist);
                for i in 0..dist {
                    self.ifft_butterfly(&mut a[pos + i], &mut b[i], log_m);
                }
            }
        }
    }

    fn mul(&self, x: &mut [[u8; 64]], log_m: GfElement) {
        let lut = Lut::new(&self.mul128[usize::from(log_m)]);
        for chunk in x.iter_mut() {
            lut.mul_chunk(chunk);
        }
    }
}

impl Simd128 {
    /// `x ^= y * m; y ^= x` over whole shards (`m` = 0 when `log_m` is `GF_MODULUS`).
    #[inline(always)]
    fn fft_butterfly(&self, x: &mut [[u8; 64]], y: &mut [[u8; 64]], log_m: GfElement) {
        if log_m == GF_MODULUS {
            utils::xor(y, x);
        } else {
            let lut = Lut::new(&self.mul128[usize::from(log_m)]);
            for (x, y) in zip(x.iter_mut(), y.iter_mut()) {
                lut.fft_chunk(x, y);
            }
        }
    }

    /// `y ^= x; x ^= y * m` over whole shards (`m` = 0 when `log_m` is `GF_MODULUS`).
    #[inline(always)]
    fn ifft_butterfly(&self, x: &mut [[u8; 64]], y: &mut [[u8; 64]], log_m: GfElement) {
        if log_m == GF_MODULUS {
            utils::xor(y, x);
        } else {
            let lut = Lut::new(&self.mul128[usize::from(log_m)]);
            for (x, y) in zip(x.iter_mut(), y.iter_mut()) {
                lut.ifft_chunk(x, y);
            }
        }
    }

    #[inline(always)]
    fn fft_two_layers(
        &self,
        data: &mut ShardsRefMut,
        pos: usize,
        dist: usize,
        log_m01: GfElement,
        log_m23: GfElement,
        log_m02: GfElement,
    ) {
        let (s0, s1, s2, s3) = data.dist4_mut(pos, dist);
        self.fft_butterfly(s0, s2, log_m02);
        self.fft_butterfly(s1, s3, log_m02);
        self.fft_butterfly(s0, s1, log_m01);
        self.fft_butterfly(s2, s3, log_m23);
    }

    #[inline(always)]
    fn ifft_two_layers(
        &self,
        data: &mut ShardsRefMut,
        pos: usize,
        dist: usize,
        log_m01: GfElement,
        log_m23: GfElement,
        log_m02: GfElement,
    ) {
        let (s0, s1, s2, s3) = data.dist4_mut(pos, dist);
        self.ifft_butterfly(s0, s1, log_m01);
        self.ifft_butterfly(s2, s3, log_m23);
        self.ifft_butterfly(s0, s2, log_m02);
        self.ifft_butterfly(s1, s3, log_m02);
    }
}

#[cfg(test)]
mod tests {
    //! Byte-identity with the library's `NoSimd`: the engine's primitives on random inputs, whole
    //! encodes and decodes at several shard counts (both of the library's rates), and the
    //! striped 10+20 `erasure` functions with random erasures.
    use reed_solomon_simd::engine::{NoSimd, GF_ORDER};
    use reed_solomon_simd::rate::{
        DefaultRateDecoder, DefaultRateEncoder, RateDecoder, RateEncoder,
    };
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use crate::erasure::{decode_with, encode_with, STRIPE};
    use crate::layout::{DATA_SHARDS, TOTAL_SHARDS};

    /// xorshift64: deterministic test data and erasure patterns without a dependency.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        fn bytes(&mut self, len: usize) -> Vec<u8> {
            (0..len).map(|_| self.next() as u8).collect()
        }
        /// `k` distinct indices out of `0..n`, in random order.
        fn pick(&mut self, n: usize, k: usize) -> Vec<usize> {
            let mut all: Vec<usize> = (0..n).collect();
            for i in 0..k {
                let j = i + self.below(n - i);
                all.swap(i, j);
            }
            all.truncate(k);
            all
        }
    }

    fn chunks(rng: &mut Rng, n: usize) -> Vec<[u8; 64]> {
        (0..n)
            .map(|_| core::array::from_fn(|_| rng.next() as u8))
            .collect()
    }

    #[test]
    fn mul_matches_nosimd() {
        let (simd, plain) = (Simd128::new(), NoSimd::new());
        let mut rng = Rng(1);
        let mut logs: Vec<GfElement> = vec![0, 1, 2, GF_MODULUS - 1, GF_MODULUS];
        logs.extend((0..200).map(|_| rng.below(GF_ORDER) as GfElement));
        for log_m in logs {
            let n = rng.below(5);
            let mut a = chunks(&mut rng, n);
            let mut b = a.clone();
            simd.mul(&mut a, log_m);
            plain.mul(&mut b, log_m);
            assert_eq!(a, b, "log_m {log_m}");
        }
    }

    #[test]
    fn fft_and_ifft_match_nosimd() {
        let (simd, plain) = (Simd128::new(), NoSimd::new());
        let mut rng = Rng(2);
        for size in [1usize, 2, 4, 8, 16, 32, 64, 128] {
            for _ in 0..8 {
                let len_64 = 1 + rng.below(3);
                let truncated = 1 + rng.below(size);
                let skew_delta = size + rng.below(4000);
                let original = chunks(&mut rng, size * len_64);
                for inverse in [false, true] {
                    let (mut a, mut b) = (original.clone(), original.clone());
                    let mut sa = ShardsRefMut::new(size, len_64, &mut a);
                    let mut sb = ShardsRefMut::new(size, len_64, &mut b);
                    if inverse {
                        simd.ifft(&mut sa, 0, size, truncated, skew_delta);
                        plain.ifft(&mut sb, 0, size, truncated, skew_delta);
                    } else {
                        simd.fft(&mut sa, 0, size, truncated, skew_delta);
                        plain.fft(&mut sb, 0, size, truncated, skew_delta);
                    }
                    assert_eq!(a, b, "size {size} trunc {truncated} inverse {inverse}");
                }
            }
        }
    }

    /// Recovery shards of `originals` (each `shard_bytes` long) with engine `E`.
    fn rate_encode<E: Engine + Default>(originals: &[Vec<u8>], recovery: usize) -> Vec<Vec<u8>> {
        let bytes = originals[0].len();
        let mut enc =
            DefaultRateEncoder::new(originals.len(), recovery, bytes, E::default(), None).unwrap();
        for o in originals {
            enc.add_original_shard(o).unwrap();
        }
        let out = enc.encode().unwrap();
        out.recovery_iter().map(<[u8]>::to_vec).collect()
    }

    /// Restored `(index, shard)`s from the originals in `have_o` and recoveries in `have_r`.
    fn rate_decode<E: Engine + Default>(
        counts: (usize, usize),
        have_o: &[(usize, &[u8])],
        have_r: &[(usize, &[u8])],
    ) -> Vec<(usize, Vec<u8>)> {
        let bytes = have_o
            .iter()
            .chain(have_r)
            .map(|(_, s)| s.len())
            .max()
            .unwrap();
        let mut dec =
            DefaultRateDecoder::new(counts.0, counts.1, bytes, E::default(), None).unwrap();
        for (i, s) in have_o {
            dec.add_original_shard(*i, s).unwrap();
        }
        for (i, s) in have_r {
            dec.add_recovery_shard(*i, s).unwrap();
        }
        let out = dec.decode().unwrap();
        let mut restored: Vec<(usize, Vec<u8>)> = out
            .restored_original_iter()
            .map(|(i, s)| (i, s.to_vec()))
            .collect();
        restored.sort();
        restored
    }

    #[test]
    fn encode_and_decode_match_nosimd_at_both_rates() {
        let mut rng = Rng(3);
        // (original, recovery): low rate (fewer originals), high rate (more), and uneven counts.
        for (orig, rec) in [(10, 20), (20, 10), (3, 5), (1, 1), (30, 2), (7, 33)] {
            for bytes in [2, 64, 126, 192, 1000, 4096] {
                let originals: Vec<Vec<u8>> = (0..orig).map(|_| rng.bytes(bytes)).collect();
                let recovery = rate_encode::<Simd128>(&originals, rec);
                assert_eq!(
                    recovery,
                    rate_encode::<NoSimd>(&originals, rec),
                    "encode {orig}+{rec}, {bytes} B"
                );
                // Lose a random `min(orig, rec)` originals; use that many random recoveries.
                let lost = orig.min(rec);
                let gone = rng.pick(orig, lost);
                let have_o: Vec<(usize, &[u8])> = (0..orig)
                    .filter(|i| !gone.contains(i))
                    .map(|i| (i, originals[i].as_slice()))
                    .collect();
                let have_r: Vec<(usize, &[u8])> = rng
                    .pick(rec, lost)
                    .into_iter()
                    .map(|j| (j, recovery[j].as_slice()))
                    .collect();
                let got = rate_decode::<Simd128>((orig, rec), &have_o, &have_r);
                assert_eq!(
                    got,
                    rate_decode::<NoSimd>((orig, rec), &have_o, &have_r),
                    "decode {orig}+{rec}, {bytes} B"
                );
                for (i, s) in &got {
                    assert_eq!(s, &originals[*i], "restored {i} of {orig}+{rec}, {bytes} B");
                }
            }
        }
    }

    #[test]
    fn striped_erasure_coding_matches_nosimd_with_random_erasures() {
        let mut rng = Rng(4);
        for s in [
            64,
            128,
            192,
            640,
            4096,
            STRIPE - 64,
            STRIPE,
            STRIPE + 64,
            2 * STRIPE + 320,
        ] {
            let data = rng.bytes(DATA_SHARDS * s);
            let parity = encode_with::<Simd128>(&data, s).unwrap();
            assert_eq!(
                parity,
                encode_with::<NoSimd>(&data, s).unwrap(),
                "encode {s}"
            );
            let all: Vec<&[u8]> = data.chunks(s).chain(parity.chunks(s)).collect();
            for round in 0..3 {
                // Any 10 of 30, chosen at random (round 0 always loses every data shard).
                let keep = if round == 0 {
                    rng.pick(20, DATA_SHARDS).iter().map(|j| 10 + j).collect()
                } else {
                    rng.pick(TOTAL_SHARDS, DATA_SHARDS)
                };
                let avail: Vec<Option<&[u8]>> = (0..TOTAL_SHARDS)
                    .map(|i| keep.contains(&i).then_some(all[i]))
                    .collect();
                let got = decode_with::<Simd128>(&avail, s).unwrap();
                assert_eq!(got, decode_with::<NoSimd>(&avail, s).unwrap(), "decode {s}");
                assert_eq!(got, data, "decode {s}, kept {keep:?}");
            }
        }
    }
}

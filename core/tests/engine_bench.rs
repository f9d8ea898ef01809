//! Benchmark (not a test; ignored unless asked for): Reed-Solomon 10+20 and BLAKE3 throughput
//! with the same inputs and timing loop natively and in wasm32, so the two can be compared.
//!
//! ```text
//! cargo test -p btfs-core --release --test engine_bench -- --ignored --nocapture
//! CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner \
//!   cargo test -p btfs-core --release --target wasm32-unknown-unknown --test engine_bench -- --include-ignored --nocapture
//! ```
//!
//! Prints `BENCH <target> <case> <MiB/s>` lines: medians of 5 runs over 40 MiB of original data
//! (4 slabs of 10 × 1 MiB shards, like `cargo xtask bench-browser`). `erasure::encode` runs on the
//! target's best engine (natively the library's runtime choice, in wasm `simd128`); `NoSimd` is
//! the library's portable engine, which is what wasm had before.

use btfs_core::{erasure, Root};
use reed_solomon_simd::engine::NoSimd;

#[cfg(not(target_arch = "wasm32"))]
use std::time::Instant;
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::{wasm_bindgen_test as test, Instant};

const MIB: usize = 1 << 20;
const RUNS: usize = 5;

#[cfg(target_arch = "wasm32")]
const TARGET: &str = "wasm32";
#[cfg(not(target_arch = "wasm32"))]
const TARGET: &str = "native";

fn report(case: &str, bytes: usize, secs: f64) {
    let line = format!(
        "BENCH {TARGET} {case} {:.0}",
        bytes as f64 / MIB as f64 / secs
    );
    #[cfg(target_arch = "wasm32")]
    wasm_bindgen_test::console_log!("{line}");
    #[cfg(not(target_arch = "wasm32"))]
    println!("{line}");
}

/// Median of [`RUNS`] timed runs of `f`, in seconds.
fn median(mut f: impl FnMut()) -> f64 {
    f(); // warm-up: tables, allocator
    let mut t: Vec<f64> = (0..RUNS)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[RUNS / 2]
}

#[test]
#[ignore = "benchmark: run with --ignored (native) or --include-ignored (wasm) and --nocapture"]
fn rs_and_blake3_throughput() {
    let data: Vec<u8> = (0..40 * MIB)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761) as u8)
        .collect();
    let slabs: Vec<&[u8]> = data.chunks_exact(10 * MIB).collect();

    let best = median(|| {
        for slab in &slabs {
            std::hint::black_box(erasure::encode(slab, MIB).unwrap());
        }
    });
    report("rs_encode_best_engine", data.len(), best);
    let portable = median(|| {
        for slab in &slabs {
            std::hint::black_box(erasure::encode_with::<NoSimd>(slab, MIB).unwrap());
        }
    });
    report("rs_encode_nosimd", data.len(), portable);

    // Decode one slab from its 10 first parity shards (every data shard lost: the slow path).
    let parity = erasure::encode(slabs[0], MIB).unwrap();
    let shards: Vec<Option<&[u8]>> = (0..10)
        .map(|_| None)
        .chain(parity.chunks(MIB).map(Some))
        .collect();
    let best = median(|| {
        std::hint::black_box(erasure::decode(&shards, MIB).unwrap());
    });
    report("rs_decode_10_lost_best_engine", 10 * MIB, best);
    let portable = median(|| {
        std::hint::black_box(erasure::decode_with::<NoSimd>(&shards, MIB).unwrap());
    });
    report("rs_decode_10_lost_nosimd", 10 * MIB, portable);

    let b3 = median(|| {
        for chunk in data.chunks(MIB) {
            std::hint::black_box(Root::of(chunk));
        }
    });
    report("blake3", data.len(), b3);
}

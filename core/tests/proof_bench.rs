//! Benchmark (not a test; ignored unless asked for): storage-proof generation by a host
//! (`proof::prove`, which rebuilds the Bao tree from the shard bytes, as a host does for every
//! challenge) and verification by the Guard (`proof::verify`), with the same inputs and timing loop
//! natively and in wasm32, plus the proof bytes per challenge.
//!
//! ```text
//! cargo test -p btfs-core --release --test proof_bench -- --ignored --nocapture
//! CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner \
//!   cargo test -p btfs-core --release --target wasm32-unknown-unknown --test proof_bench -- --include-ignored --nocapture
//! ```
//!
//! Prints `BENCH <target> <case> <value>` lines. Rates are operations per second: the median of
//! 5 windows, each running the operation for at least 0.25 s (after one warm-up window), cycling
//! through 16 challenges with different nonces (so different chunks are drawn). Proof sizes are
//! `proof.len()` over 256 nonces (min / median / max) and the bound `proof::max_proof_len`.

use btfs_core::proof::{self, Challenge};
use btfs_core::Root;

#[cfg(not(target_arch = "wasm32"))]
use std::time::Instant;
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::{wasm_bindgen_test as test, Instant};

const MIB: usize = 1 << 20;
const WINDOWS: usize = 5;
const WINDOW_SECS: f64 = 0.25;
const NONCES: usize = 16;

#[cfg(target_arch = "wasm32")]
const TARGET: &str = "wasm32";
#[cfg(not(target_arch = "wasm32"))]
const TARGET: &str = "native";

fn report(case: &str, value: String) {
    let line = format!("BENCH {TARGET} {case} {value}");
    #[cfg(target_arch = "wasm32")]
    wasm_bindgen_test::console_log!("{line}");
    #[cfg(not(target_arch = "wasm32"))]
    println!("{line}");
}

/// Median over [`WINDOWS`] windows of `f` calls per second (`f` gets the call number).
fn per_second(mut f: impl FnMut(usize)) -> f64 {
    let window = |f: &mut dyn FnMut(usize)| {
        let start = Instant::now();
        let mut n = 0usize;
        loop {
            f(n);
            n += 1;
            let secs = start.elapsed().as_secs_f64();
            if secs >= WINDOW_SECS {
                return n as f64 / secs;
            }
        }
    };
    window(&mut f); // warm-up: allocator, caches
    let mut rates: Vec<f64> = (0..WINDOWS).map(|_| window(&mut f)).collect();
    rates.sort_by(f64::total_cmp);
    rates[WINDOWS / 2]
}

fn shard(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761) as u8)
        .collect()
}

fn challenges(data: &[u8], count: usize) -> Vec<Challenge> {
    let root = Root::of(data);
    (0..count)
        .map(|i| {
            let mut nonce = [0u8; 32];
            nonce[..8].copy_from_slice(&(i as u64).to_le_bytes());
            nonce[8] = 0xb7;
            Challenge {
                root,
                nonce,
                size: data.len() as u32,
            }
        })
        .collect()
}

#[test]
#[ignore = "benchmark: run with --ignored (native) or --include-ignored (wasm) and --nocapture"]
fn prove_and_verify_rate() {
    for mib in [1usize, 4] {
        let data = shard(mib * MIB);
        let cs = challenges(&data, NONCES);
        let proofs: Vec<Vec<u8>> = cs.iter().map(|c| proof::prove(c, &data).unwrap()).collect();

        let prove = per_second(|n| {
            std::hint::black_box(proof::prove(&cs[n % NONCES], &data).unwrap());
        });
        report(&format!("prove_{mib}MiB_per_s"), format!("{prove:.1}"));
        let verify = per_second(|n| {
            proof::verify(&cs[n % NONCES], std::hint::black_box(&proofs[n % NONCES])).unwrap();
        });
        report(&format!("verify_{mib}MiB_per_s"), format!("{verify:.0}"));

        let mut lens: Vec<usize> = challenges(&data, 256)
            .iter()
            .map(|c| proof::prove(c, &data).unwrap().len())
            .collect();
        lens.sort_unstable();
        report(
            &format!("proof_bytes_{mib}MiB"),
            format!(
                "min={} median={} max={} bound={}",
                lens[0],
                lens[lens.len() / 2],
                lens[lens.len() - 1],
                proof::max_proof_len(data.len() as u32)
            ),
        );
    }
}

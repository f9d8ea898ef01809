//! Browser benchmark (not a test): run by `cargo xtask bench-browser`, which starts a devnet,
//! measures the native CLI on it in the same run and prints the comparison table.
//! Prints `BENCH <name> <MiB/s>` lines.
#![cfg(target_arch = "wasm32")]
// The devnet description arrives at build time; without it the tests say how to run them.
#![allow(clippy::option_env_unwrap)]

use btfs_client::BtfsClient;
use btfs_core::{erasure, Root};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

const MIB: usize = 1 << 20;

fn now_ms() -> f64 {
    js_sys::Date::now()
}

fn report(name: &str, bytes: usize, ms: f64) {
    let rate = bytes as f64 / MIB as f64 / (ms.max(1.0) / 1000.0);
    web_sys::console::log_1(&format!("BENCH {name} {rate:.1}").into());
}

fn options(pairs: &[(&str, JsValue)]) -> JsValue {
    let o = js_sys::Object::new();
    for (k, v) in pairs {
        js_sys::Reflect::set(&o, &(*k).into(), v).unwrap();
    }
    o.into()
}

fn message(e: &JsValue) -> String {
    e.dyn_ref::<js_sys::Error>()
        .map(|e| String::from(e.message()))
        .unwrap_or_else(|| format!("{e:?}"))
}

/// Median of three timed runs, in ms.
fn median3(mut f: impl FnMut()) -> f64 {
    let mut t: Vec<f64> = (0..3)
        .map(|_| {
            let s = now_ms();
            f();
            now_ms() - s
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[1]
}

#[wasm_bindgen_test]
async fn bench_stages_and_transfers() {
    // Raw stages in wasm: RS 10+20 encode over 4 slabs of 10 × 1 MiB, BLAKE3 over 40 MiB.
    let data: Vec<u8> = (0..40 * MIB)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761) as u8)
        .collect();
    let rs = median3(|| {
        for slab in data.chunks_exact(10 * MIB) {
            std::hint::black_box(erasure::encode(slab, MIB).unwrap());
        }
    });
    report("wasm_rs_encode", data.len(), rs);
    let b3 = median3(|| {
        for chunk in data.chunks(MIB) {
            std::hint::black_box(Root::of(chunk));
        }
    });
    report("wasm_blake3", data.len(), b3);
    drop(data);

    let network = js_sys::JSON::parse(
        option_env!("BTFS_TEST_NETWORK_JSON").expect("run through cargo xtask bench-browser"),
    )
    .unwrap();
    // 64 MiB of data in JS memory (not the wasm heap); the 256 MiB file is it four times over
    // (every shard still differs: each block is encrypted under its own nonce).
    let chunk = js_sys::Uint8Array::new_with_length(64 * MIB as u32);
    let part: Vec<u8> = (0..MIB)
        .map(|i| (i as u32).wrapping_mul(0x9E37_79B9) as u8)
        .collect();
    for i in 0..64u32 {
        let at = i * MIB as u32;
        chunk.subarray(at, at + MIB as u32).copy_from(&part);
        // Vary each MiB so the object does not repeat within a slab either.
        chunk.set_index(at, i as u8);
    }
    drop(part);
    watch_long_tasks();
    for mib in [64usize, 256] {
        let parts = js_sys::Array::new();
        for _ in 0..mib / 64 {
            parts.push(&chunk);
        }
        let blob = web_sys::Blob::new_with_u8_array_sequence(&parts).unwrap();
        for transport in ["websocket", "webrtc"] {
            let client = BtfsClient::connect(options(&[
                ("network", network.clone()),
                ("transport", transport.into()),
                ("wallet", "ephemeral".into()),
            ]))
            .await
            .unwrap();
            let name = format!("{mib}_{transport}");
            long_tasks_since_reset();
            let s = now_ms();
            let link = match client.upload(blob.clone().into(), JsValue::UNDEFINED).await {
                Ok(l) => l,
                Err(e) => {
                    web_sys::console::log_1(
                        &format!("BENCH_FAIL upload_{name} {}", message(&e)).into(),
                    );
                    continue;
                }
            };
            report(&format!("browser_upload_{name}"), mib * MIB, now_ms() - s);
            report_long_tasks(&format!("upload_{name}")).await;
            let s = now_ms();
            match client.download(link, JsValue::UNDEFINED).await {
                Ok(_) => {
                    report(&format!("browser_download_{name}"), mib * MIB, now_ms() - s);
                    report_long_tasks(&format!("download_{name}")).await;
                }
                Err(e) => web_sys::console::log_1(
                    &format!("BENCH_FAIL download_{name} {}", message(&e)).into(),
                ),
            }
            // The wasm heap never shrinks: its size now is the peak so far.
            let heap = wasm_bindgen::memory()
                .unchecked_into::<js_sys::WebAssembly::Memory>()
                .buffer()
                .unchecked_into::<js_sys::ArrayBuffer>()
                .byte_length();
            web_sys::console::log_1(
                &format!(
                    "BENCH heap_mib_after_{name} {:.0}",
                    f64::from(heap) / MIB as f64
                )
                .into(),
            );
        }
    }
}

/// Starts recording the main thread's long tasks (over 50 ms) in `globalThis.__btfsLong`.
fn watch_long_tasks() {
    let f = js_sys::Function::new_no_args(
        "globalThis.__btfsLong = [];
         new PerformanceObserver((l) => { for (const e of l.getEntries()) globalThis.__btfsLong.push(e.duration); })
           .observe({ type: 'longtask' });",
    );
    f.call0(&JsValue::NULL).unwrap();
}

/// Forgets the long tasks seen so far.
fn long_tasks_since_reset() {
    let _ = js_sys::Function::new_no_args("globalThis.__btfsLong = [];").call0(&JsValue::NULL);
}

/// Prints `BENCH longtask_max_ms_<name>` and `BENCH longtask_count_<name>` for the long tasks
/// since the last reset, then resets.
async fn report_long_tasks(name: &str) {
    // Observer callbacks arrive after the task that ended: let them run first.
    let tick = js_sys::Promise::new(&mut |resolve, _| {
        let _ = web_sys::window()
            .unwrap()
            .set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, 50);
    });
    let _ = wasm_bindgen_futures::JsFuture::from(tick).await;
    let got = js_sys::Function::new_no_args(
        "const l = globalThis.__btfsLong || []; globalThis.__btfsLong = [];
         return [l.length, l.reduce((a, b) => Math.max(a, b), 0)];",
    )
    .call0(&JsValue::NULL)
    .unwrap_or(JsValue::UNDEFINED);
    let got: js_sys::Array = got.unchecked_into();
    let (count, max) = (
        got.get(0).as_f64().unwrap_or(-1.0),
        got.get(1).as_f64().unwrap_or(-1.0),
    );
    web_sys::console::log_1(&format!("BENCH longtask_count_{name} {count:.0}").into());
    web_sys::console::log_1(&format!("BENCH longtask_max_ms_{name} {max:.0}").into());
}

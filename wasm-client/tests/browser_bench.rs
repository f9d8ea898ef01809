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
    let size = 64 * MIB;
    let payload: Vec<u8> = (0..size)
        .map(|i| (i as u32).wrapping_mul(0x9E37_79B9) as u8)
        .collect();
    for transport in ["websocket", "webrtc"] {
        let client = BtfsClient::connect(options(&[
            ("network", network.clone()),
            ("transport", transport.into()),
            ("wallet", "ephemeral".into()),
        ]))
        .await
        .unwrap();
        let bytes: JsValue = js_sys::Uint8Array::from(&payload[..]).into();
        let s = now_ms();
        let link = match client.upload(bytes, JsValue::UNDEFINED).await {
            Ok(l) => l,
            Err(e) => {
                web_sys::console::log_1(
                    &format!("BENCH_FAIL upload_{transport} {}", message(&e)).into(),
                );
                continue;
            }
        };
        report(&format!("browser_upload_{transport}"), size, now_ms() - s);
        let s = now_ms();
        match client.download(link, JsValue::UNDEFINED).await {
            Ok(_) => report(&format!("browser_download_{transport}"), size, now_ms() - s),
            Err(e) => web_sys::console::log_1(
                &format!("BENCH_FAIL download_{transport} {}", message(&e)).into(),
            ),
        }
    }
}

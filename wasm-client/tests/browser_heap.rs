//! Browser memory benchmark (not a test): run by `cargo xtask bench-browser`. Uploads a 1 GiB
//! `Blob` and downloads it back through `downloadStream`, and prints the wasm heap's size (the
//! `WebAssembly.Memory` buffer, which only grows, so its final size is the peak) after each.
//! Its own test target, so no other test's allocations share the heap.
//! Prints `BENCH <name> <value>` lines.
#![cfg(target_arch = "wasm32")]
#![allow(clippy::option_env_unwrap)]

use btfs_client::BtfsClient;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

const MIB: u32 = 1 << 20;
/// File size in MiB (`BTFS_HEAP_BENCH_MIB` at build time, default 1024).
fn size_mib() -> u32 {
    option_env!("BTFS_HEAP_BENCH_MIB")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024)
}

fn heap_mib() -> f64 {
    let mem: js_sys::WebAssembly::Memory = wasm_bindgen::memory().unchecked_into();
    let buf: js_sys::ArrayBuffer = mem.buffer().unchecked_into();
    buf.byte_length() as f64 / f64::from(MIB)
}

fn log(line: String) {
    web_sys::console::log_1(&line.into());
}

fn options(pairs: &[(&str, JsValue)]) -> JsValue {
    let o = js_sys::Object::new();
    for (k, v) in pairs {
        js_sys::Reflect::set(&o, &(*k).into(), v).unwrap();
    }
    o.into()
}

/// Distinct 1 MiB patterns the big file cycles through.
const PATTERNS: u32 = 7;

/// Byte `j` of pattern `k`.
fn pattern_byte(k: u32, j: u32) -> u8 {
    (j.wrapping_mul(31).wrapping_add(k.wrapping_mul(97)) % 251) as u8
}

/// A `size_mib` MiB Blob made in JavaScript of references to a few 1 MiB Blobs (MiB `i` is
/// pattern `i % PATTERNS`), so neither wasm memory nor the browser's blob store holds the whole
/// file (Chromium cannot page a 1 GiB blob built from fresh bytes in a test profile).
fn big_blob(size_mib: u32) -> web_sys::Blob {
    let bases: Vec<web_sys::Blob> = (0..PATTERNS)
        .map(|k| {
            let bytes: Vec<u8> = (0..MIB).map(|j| pattern_byte(k, j)).collect();
            let parts = js_sys::Array::of1(&js_sys::Uint8Array::from(&bytes[..]));
            web_sys::Blob::new_with_u8_array_sequence(&parts).unwrap()
        })
        .collect();
    let parts = js_sys::Array::new();
    for i in 0..size_mib {
        parts.push(&bases[(i % PATTERNS) as usize]);
    }
    web_sys::Blob::new_with_blob_sequence(&parts).unwrap()
}

#[wasm_bindgen_test]
async fn heap_stays_bounded_for_a_large_file() {
    let network = js_sys::JSON::parse(
        option_env!("BTFS_TEST_NETWORK_JSON").expect("run through cargo xtask bench-browser"),
    )
    .unwrap();
    let size = size_mib();
    log(format!("BENCH heap_start_mib {:.1}", heap_mib()));
    let client = BtfsClient::connect(options(&[
        ("network", network),
        ("transport", "websocket".into()),
        ("wallet", "ephemeral".into()),
    ]))
    .await
    .unwrap();
    let blob = big_blob(size);
    assert_eq!(blob.size(), f64::from(size) * f64::from(MIB));

    let start = js_sys::Date::now();
    let link = client
        .upload(blob.into(), JsValue::UNDEFINED)
        .await
        .unwrap();
    let secs = (js_sys::Date::now() - start) / 1000.0;
    log(format!("BENCH heap_after_upload_mib {:.1}", heap_mib()));
    log(format!(
        "BENCH heap_upload_rate {:.1}",
        f64::from(size) / secs
    ));

    let start = js_sys::Date::now();
    let stream = client.download_stream(link);
    let reader: web_sys::ReadableStreamDefaultReader = stream.get_reader().unchecked_into();
    let mut total = 0f64;
    let mut mismatches = 0u32;
    loop {
        let chunk = JsFuture::from(reader.read()).await.unwrap();
        let done = js_sys::Reflect::get(&chunk, &"done".into()).unwrap();
        if done.as_bool() == Some(true) {
            break;
        }
        let value: js_sys::Uint8Array = js_sys::Reflect::get(&chunk, &"value".into())
            .unwrap()
            .unchecked_into();
        // Spot-check 64 bytes per chunk against the pattern at their offset in the file.
        let len = value.length();
        for n in 0..64u32 {
            let at = (u64::from(n) * 104_729 % u64::from(len.max(1))) as u32;
            let offset = total as u64 + u64::from(at);
            let (mib, j) = ((offset >> 20) as u32, (offset & u64::from(MIB - 1)) as u32);
            if value.get_index(at) != pattern_byte(mib % PATTERNS, j) {
                mismatches += 1;
            }
        }
        total += f64::from(len);
    }
    let secs = (js_sys::Date::now() - start) / 1000.0;
    assert_eq!(total, f64::from(size) * f64::from(MIB), "downloaded size");
    assert_eq!(
        mismatches, 0,
        "downloaded bytes differ from what was uploaded"
    );
    log(format!("BENCH heap_after_download_mib {:.1}", heap_mib()));
    log(format!(
        "BENCH heap_download_rate {:.1}",
        f64::from(size) / secs
    ));
    log(format!("BENCH heap_file_mib {size}"));
}

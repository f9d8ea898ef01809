//! Where an upload's encoded slabs come from: a dedicated Web Worker when the page can start
//! one, else the page's own thread.
//!
//! Goal: the page's main thread does no encryption, Reed-Solomon or BLAKE3 during an upload
//! (each slab is about 100 ms of it in wasm), so the page stays responsive. Non-goals: the
//! libp2p node in a worker (browsers offer no `RTCPeerConnection` in workers, and WebRTC-direct
//! needs it), and several encoding workers (one keeps up with the transports measured so far).
//!
//! The worker is a module worker started from a `blob:` URL whose few lines import this very
//! package (the glue's own `import.meta.url`), wait for the page's compiled
//! `WebAssembly.Module`, instantiate it, and call [`btfs_encode_worker`]. Messages (structured
//! clone; the shard buffers are transferred, not copied):
//!
//! ```text
//! page → worker   the page's WebAssembly.Module                       first
//! worker → page   { type: 'ready' }                                   once initialised
//! page → worker   { type: 'start', key: Uint8Array(32), size, shardSize, blob: Blob }
//! page → worker   { type: 'grant' }                      one per slab the upload wants
//! worker → page   { type: 'slab', index, data: ArrayBuffer, parity: ArrayBuffer,
//!                   roots: Uint8Array(30 × 32) }                       one per grant
//!                 { type: 'end' }                   the input ended where it should
//!                 { type: 'error', message }        reading or encoding failed
//! ```
//!
//! The worker reads the `Blob` itself (a `File` crosses to a worker as a handle, not a copy), so
//! the page copies each slab once, into its own wasm memory, and holds what it held before: the
//! slabs being placed. If the worker cannot start (no `Worker`, a blocked `blob:` URL, a glue
//! that is not an ES module) within [`WORKER_START`], the page encodes on its own thread, as
//! before, and says so in the console and in the upload's report (`encoder`).

use std::time::Duration;

use btfs_core::layout::Layout;
use btfs_core::{EncodedSlab, Encoder, ObjectKey, Root, TOTAL_SHARDS};
use futures::channel::mpsc;
use futures::StreamExt;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;

use crate::error::{from_js, ClientError};

/// Read size of the input.
const READ_CHUNK: f64 = (1 << 20) as f64;
/// How long the worker may take to say it is ready.
const WORKER_START: Duration = Duration::from_secs(10);

#[wasm_bindgen]
extern "C" {
    /// The URL of this package's JavaScript glue (`import.meta.url` inside the glue).
    #[wasm_bindgen(thread_local_v2, js_namespace = ["import", "meta"], js_name = url)]
    static GLUE_URL: String;
}

async fn read_blob(blob: &web_sys::Blob, start: f64, end: f64) -> Result<Vec<u8>, ClientError> {
    let part = blob.slice_with_f64_and_f64(start, end).map_err(from_js)?;
    let buf = JsFuture::from(part.array_buffer()).await.map_err(from_js)?;
    Ok(js_sys::Uint8Array::new(&buf).to_vec())
}

/// A `Blob` read slab by slab into the encoder (on whichever thread runs it).
pub struct SlabReader {
    blob: web_sys::Blob,
    size: f64,
    offset: f64,
    chunk: Vec<u8>,
    pos: usize,
    /// `None` once the end of the input was checked.
    encoder: Option<Encoder>,
}

impl SlabReader {
    /// Reads `blob` (of `layout.plain_len()` bytes) under `key`.
    pub fn new(blob: web_sys::Blob, key: &ObjectKey, layout: Layout) -> Self {
        Self {
            size: blob.size(),
            blob,
            offset: 0.0,
            chunk: Vec::new(),
            pos: 0,
            encoder: Some(Encoder::new(key, layout)),
        }
    }

    /// The next slab, or `None` once the input ended where the layout says (checked).
    pub async fn next(&mut self) -> Result<Option<EncodedSlab>, ClientError> {
        loop {
            let Some(encoder) = self.encoder.as_mut() else {
                return Ok(None);
            };
            if let Some(slab) = encoder.next_slab()? {
                return Ok(Some(slab));
            }
            if self.pos < self.chunk.len() {
                self.pos += encoder.feed(&self.chunk[self.pos..])?;
                continue;
            }
            if self.offset >= self.size {
                if let Some(e) = self.encoder.take() {
                    e.finish()?;
                }
                return Ok(None);
            }
            let end = (self.offset + READ_CHUNK).min(self.size);
            self.chunk = read_blob(&self.blob, self.offset, end).await?;
            self.pos = 0;
            self.offset = end;
        }
    }
}

/// An upload's slabs: encoded by a worker, or on the page's thread.
pub enum SlabSource {
    /// A dedicated worker encodes; the page receives finished slabs.
    Worker(WorkerReader),
    /// The page encodes itself.
    Page(SlabReader),
}

impl SlabSource {
    /// A worker if one starts, else the page's thread.
    pub async fn open(blob: &web_sys::Blob, key: &ObjectKey, layout: Layout) -> Self {
        match WorkerReader::start(blob, key, layout).await {
            Ok(w) => Self::Worker(w),
            Err(e) => {
                web_sys::console::warn_1(
                    &format!("btfs: encoding on the page's thread (no encoding worker: {e})")
                        .into(),
                );
                Self::Page(SlabReader::new(blob.clone(), key, layout))
            }
        }
    }

    /// `"worker"` or `"page"`: where the slabs are encoded.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Worker(_) => "worker",
            Self::Page(_) => "page",
        }
    }

    /// The next slab, or `None` at the (checked) end of the input; comes back with `self` so a
    /// driver can hold it in a future beside the transfer.
    pub async fn next_slab(mut self) -> (Self, Result<Option<EncodedSlab>, ClientError>) {
        let got = match &mut self {
            Self::Worker(w) => w.next().await,
            Self::Page(r) => r.next().await,
        };
        (self, got)
    }
}

fn get(v: &JsValue, key: &str) -> JsValue {
    js_sys::Reflect::get(v, &key.into()).unwrap_or(JsValue::UNDEFINED)
}

fn message(kind: &str) -> js_sys::Object {
    let m = js_sys::Object::new();
    let _ = js_sys::Reflect::set(&m, &"type".into(), &kind.into());
    m
}

/// The page's side of an encoding worker.
pub struct WorkerReader {
    worker: web_sys::Worker,
    rx: mpsc::UnboundedReceiver<JsValue>,
    layout: Layout,
    _on_message: Closure<dyn FnMut(web_sys::MessageEvent)>,
    _on_error: Closure<dyn FnMut(web_sys::Event)>,
}

impl Drop for WorkerReader {
    fn drop(&mut self) {
        self.worker.terminate();
    }
}

impl WorkerReader {
    async fn start(blob: &web_sys::Blob, key: &ObjectKey, layout: Layout) -> Result<Self, String> {
        let glue = GLUE_URL.with(String::clone);
        if glue.is_empty() {
            return Err("the package's URL is unknown".into());
        }
        // The page's compiled module is handed over (no second fetch or compile, and no guess
        // at where the `.wasm` file is served).
        let src = format!(
            "import init, {{ btfsEncodeWorker }} from {glue:?};\n\
             self.onmessage = async (e) => {{\n\
               self.onmessage = null;\n\
               try {{ await init({{ module_or_path: e.data }}); btfsEncodeWorker(); }}\n\
               catch (err) {{ self.postMessage({{ type: 'error', message: String(err) }}); }}\n\
             }};\n"
        );
        let parts = js_sys::Array::of1(&JsValue::from_str(&src));
        let opts = web_sys::BlobPropertyBag::new();
        opts.set_type("text/javascript");
        let code = web_sys::Blob::new_with_str_sequence_and_options(&parts, &opts)
            .map_err(|e| from_js(e).to_string())?;
        let url =
            web_sys::Url::create_object_url_with_blob(&code).map_err(|e| from_js(e).to_string())?;
        let wopts = web_sys::WorkerOptions::new();
        wopts.set_type(web_sys::WorkerType::Module);
        let worker = web_sys::Worker::new_with_options(&url, &wopts);
        let _ = web_sys::Url::revoke_object_url(&url);
        let worker = worker.map_err(|e| from_js(e).to_string())?;
        let (tx, mut rx) = mpsc::unbounded::<JsValue>();
        let msg_tx = tx.clone();
        let on_message =
            Closure::<dyn FnMut(web_sys::MessageEvent)>::new(move |e: web_sys::MessageEvent| {
                let _ = msg_tx.unbounded_send(e.data());
            });
        let on_error = Closure::<dyn FnMut(web_sys::Event)>::new(move |e: web_sys::Event| {
            let text = e
                .dyn_ref::<web_sys::ErrorEvent>()
                .map_or_else(|| "the worker failed to load".to_string(), |e| e.message());
            let m = message("error");
            let _ = js_sys::Reflect::set(&m, &"message".into(), &text.into());
            let _ = tx.unbounded_send(m.into());
        });
        worker.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        worker.set_onerror(Some(on_error.as_ref().unchecked_ref()));
        worker
            .post_message(&wasm_bindgen::module())
            .map_err(|e| from_js(e).to_string())?;
        let ready = futures::future::select(
            Box::pin(rx.next()),
            Box::pin(futures_timer::Delay::new(WORKER_START)),
        )
        .await;
        match ready {
            futures::future::Either::Left((Some(m), _)) if get(&m, "type") == "ready" => {}
            futures::future::Either::Left((Some(m), _)) => {
                worker.terminate();
                return Err(get(&m, "message")
                    .as_string()
                    .unwrap_or_else(|| "it did not start".into()));
            }
            _ => {
                worker.terminate();
                return Err(format!("it did not start within {WORKER_START:?}"));
            }
        }
        let start = message("start");
        let set = |k: &str, v: &JsValue| {
            let _ = js_sys::Reflect::set(&start, &k.into(), v);
        };
        set("key", &js_sys::Uint8Array::from(&key.as_bytes()[..]).into());
        set("size", &JsValue::from_f64(layout.plain_len() as f64));
        set(
            "shardSize",
            &JsValue::from_f64(f64::from(layout.max_shard_size())),
        );
        set("blob", blob);
        worker
            .post_message(&start)
            .map_err(|e| from_js(e).to_string())?;
        Ok(Self {
            worker,
            rx,
            layout,
            _on_message: on_message,
            _on_error: on_error,
        })
    }

    async fn next(&mut self) -> Result<Option<EncodedSlab>, ClientError> {
        self.worker
            .post_message(&message("grant"))
            .map_err(from_js)?;
        let m = self.rx.next().await.ok_or(ClientError::Stalled)?;
        let kind = get(&m, "type").as_string().unwrap_or_default();
        match kind.as_str() {
            "slab" => {
                let bad = || ClientError::Js("the encoding worker sent a malformed slab".into());
                let index = get(&m, "index").as_f64().ok_or_else(bad)? as u64;
                let layout = self.layout.slab(index).ok_or_else(bad)?;
                let data = js_sys::Uint8Array::new(&get(&m, "data")).to_vec();
                let parity = js_sys::Uint8Array::new(&get(&m, "parity")).to_vec();
                let raw = js_sys::Uint8Array::new(&get(&m, "roots")).to_vec();
                if raw.len() != 32 * TOTAL_SHARDS {
                    return Err(bad());
                }
                let mut roots = [Root::from_bytes([0; 32]); TOTAL_SHARDS];
                for (r, c) in roots.iter_mut().zip(raw.chunks_exact(32)) {
                    let mut b = [0u8; 32];
                    b.copy_from_slice(c);
                    *r = Root::from_bytes(b);
                }
                EncodedSlab::from_parts(layout, data, parity, roots)
                    .map(Some)
                    .ok_or_else(bad)
            }
            "end" => Ok(None),
            _ => Err(ClientError::Js(
                get(&m, "message")
                    .as_string()
                    .unwrap_or_else(|| format!("the encoding worker sent {kind:?}")),
            )),
        }
    }
}

/// The encoding worker's main loop (called by the worker's bootstrap script, never by a page):
/// answers `start` and `grant` messages as the module docs say.
#[wasm_bindgen(js_name = btfsEncodeWorker)]
pub fn btfs_encode_worker() -> Result<(), JsValue> {
    let scope: web_sys::DedicatedWorkerGlobalScope = js_sys::global()
        .dyn_into()
        .map_err(|_| JsValue::from_str("btfsEncodeWorker runs only in a dedicated worker"))?;
    let (tx, mut rx) = mpsc::unbounded::<JsValue>();
    let on_message =
        Closure::<dyn FnMut(web_sys::MessageEvent)>::new(move |e: web_sys::MessageEvent| {
            let _ = tx.unbounded_send(e.data());
        });
    scope.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    on_message.forget(); // lives as long as the worker
    let post_scope = scope.clone();
    wasm_bindgen_futures::spawn_local(async move {
        let post = |m: &js_sys::Object, transfer: Option<&js_sys::Array>| {
            let _ = match transfer {
                Some(t) => post_scope.post_message_with_transfer(m, t),
                None => post_scope.post_message(m),
            };
        };
        let fail = |e: String| {
            let m = message("error");
            let _ = js_sys::Reflect::set(&m, &"message".into(), &e.into());
            m
        };
        let mut reader: Option<SlabReader> = None;
        while let Some(msg) = rx.next().await {
            match get(&msg, "type").as_string().as_deref() {
                Some("start") => {
                    let key = js_sys::Uint8Array::new(&get(&msg, "key")).to_vec();
                    let size = get(&msg, "size").as_f64().unwrap_or(-1.0);
                    let shard = get(&msg, "shardSize").as_f64().unwrap_or(0.0);
                    let blob = get(&msg, "blob").dyn_into::<web_sys::Blob>();
                    let (Ok(key), Ok(blob)) = (<[u8; 32]>::try_from(key), blob) else {
                        post(&fail("malformed start message".into()), None);
                        continue;
                    };
                    match Layout::new(size as u64, shard as u32) {
                        Ok(layout) if size >= 0.0 => {
                            reader =
                                Some(SlabReader::new(blob, &ObjectKey::from_bytes(key), layout));
                        }
                        Ok(_) => post(&fail("negative size".into()), None),
                        Err(e) => post(&fail(e.to_string()), None),
                    }
                }
                Some("grant") => {
                    let Some(r) = reader.as_mut() else {
                        post(&fail("grant before start".into()), None);
                        continue;
                    };
                    match r.next().await {
                        Ok(Some(slab)) => {
                            let m = message("slab");
                            let (data, parity) = slab.parts();
                            let data = js_sys::Uint8Array::from(data);
                            let parity = js_sys::Uint8Array::from(parity);
                            let mut roots = Vec::with_capacity(32 * TOTAL_SHARDS);
                            for root in &slab.roots {
                                roots.extend_from_slice(root.as_bytes());
                            }
                            let set = |k: &str, v: &JsValue| {
                                let _ = js_sys::Reflect::set(&m, &k.into(), v);
                            };
                            set("index", &JsValue::from_f64(slab.layout.index as f64));
                            set("data", &data.buffer());
                            set("parity", &parity.buffer());
                            set("roots", &js_sys::Uint8Array::from(&roots[..]));
                            post(
                                &m,
                                Some(&js_sys::Array::of2(&data.buffer(), &parity.buffer())),
                            );
                        }
                        Ok(None) => post(&message("end"), None),
                        Err(e) => post(&fail(e.to_string()), None),
                    }
                }
                _ => post(&fail("unknown message".into()), None),
            }
        }
    });
    let _ = scope.post_message(&message("ready"));
    Ok(())
}

//! The wallet key: the page's ed25519 libp2p identity, generated on first use and kept in
//! IndexedDB (database `btfs-client`, object store `wallet`, key `identity`, value: the
//! protobuf-encoded libp2p keypair). Contracts and escrow will sign with it.
//!
//! Non-goals: encryption at rest (IndexedDB is origin-scoped; a passphrase can wrap the bytes
//! later), several wallets per origin.

use libp2p::identity::Keypair;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use web_sys::{IdbDatabase, IdbFactory, IdbRequest, IdbTransactionMode};

use crate::error::{from_js, ClientError};

const DB: &str = "btfs-client";
const STORE: &str = "wallet";
const KEY: &str = "identity";

/// Resolves when an IndexedDB request succeeds, with its result.
fn done(req: &IdbRequest) -> JsFuture {
    let promise = js_sys::Promise::new(&mut |resolve, reject| {
        let ok_req = req.clone();
        let on_ok = Closure::once_into_js(move |_: web_sys::Event| {
            let _ = resolve.call1(
                &JsValue::NULL,
                &ok_req.result().unwrap_or(JsValue::UNDEFINED),
            );
        });
        let err_req = req.clone();
        let on_err = Closure::once_into_js(move |_: web_sys::Event| {
            let e = err_req
                .error()
                .ok()
                .flatten()
                .map_or(JsValue::UNDEFINED, JsValue::from);
            let _ = reject.call1(&JsValue::NULL, &e);
        });
        req.set_onsuccess(Some(on_ok.unchecked_ref()));
        req.set_onerror(Some(on_err.unchecked_ref()));
    });
    JsFuture::from(promise)
}

fn idb_error(what: &str) -> impl Fn(JsValue) -> ClientError + '_ {
    move |e| ClientError::Js(format!("IndexedDB {what} failed: {}", from_js(e)))
}

async fn open() -> Result<IdbDatabase, ClientError> {
    let factory: IdbFactory = js_sys::Reflect::get(&js_sys::global(), &"indexedDB".into())
        .ok()
        .and_then(|f| f.dyn_into().ok())
        .ok_or_else(|| {
            ClientError::Js("IndexedDB is not available here; use { wallet: 'ephemeral' }".into())
        })?;
    let req = factory.open_with_u32(DB, 1).map_err(idb_error("open"))?;
    let upgrade_req = req.clone();
    let on_upgrade = Closure::once_into_js(move |_: web_sys::Event| {
        if let Ok(db) = upgrade_req
            .result()
            .and_then(|r| r.dyn_into::<IdbDatabase>())
        {
            let _ = db.create_object_store(STORE);
        }
    });
    req.set_onupgradeneeded(Some(on_upgrade.unchecked_ref()));
    let db = done(&req).await.map_err(idb_error("open"))?;
    db.dyn_into()
        .map_err(|_| ClientError::Js("IndexedDB open returned no database".into()))
}

async fn read() -> Result<Option<Vec<u8>>, ClientError> {
    let db = open().await?;
    let store = db
        .transaction_with_str(STORE)
        .and_then(|t| t.object_store(STORE))
        .map_err(idb_error("read"))?;
    let v = done(&store.get(&KEY.into()).map_err(idb_error("read"))?)
        .await
        .map_err(idb_error("read"))?;
    db.close();
    Ok(v.dyn_into::<js_sys::Uint8Array>().ok().map(|a| a.to_vec()))
}

async fn write(bytes: &[u8]) -> Result<(), ClientError> {
    let db = open().await?;
    let store = db
        .transaction_with_str_and_mode(STORE, IdbTransactionMode::Readwrite)
        .and_then(|t| t.object_store(STORE))
        .map_err(idb_error("write"))?;
    let value = js_sys::Uint8Array::from(bytes);
    done(
        &store
            .put_with_key(&value, &KEY.into())
            .map_err(idb_error("write"))?,
    )
    .await
    .map_err(idb_error("write"))?;
    db.close();
    Ok(())
}

/// Parses exported wallet bytes.
pub fn decode(bytes: &[u8]) -> Result<Keypair, ClientError> {
    Keypair::from_protobuf_encoding(bytes).map_err(|_| {
        ClientError::Js(
            "not a valid BTFS wallet: expected the bytes exportWallet() returned".into(),
        )
    })
}

/// Wallet bytes for export.
pub fn encode(key: &Keypair) -> Result<Vec<u8>, ClientError> {
    key.to_protobuf_encoding()
        .map_err(|e| ClientError::Js(format!("cannot encode the wallet: {e}")))
}

/// The stored wallet, created and stored on first use.
pub async fn load_or_create() -> Result<Keypair, ClientError> {
    if let Some(bytes) = read().await? {
        return decode(&bytes);
    }
    let key = Keypair::generate_ed25519();
    write(&encode(&key)?).await?;
    Ok(key)
}

/// Replaces the stored wallet with `bytes` (validated first).
pub async fn import(bytes: &[u8]) -> Result<Keypair, ClientError> {
    let key = decode(bytes)?;
    write(&encode(&key)?).await?;
    Ok(key)
}

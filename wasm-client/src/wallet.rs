//! The wallet key: the page's ed25519 libp2p identity, generated on first use and kept in
//! IndexedDB (database `btfs-client`, object store `wallet`, key `identity`, value: the
//! protobuf-encoded libp2p keypair). It signs the page's storage contracts and its calls to the
//! Escrow (`crate::contracts`).
//!
//! The call journal (object store `calls`, key: the call id, value: the signed call as JSON),
//! like the CLI's `wallet.key.journal`: every call to the Escrow is saved **before** it is sent
//! and deleted once answered, so a call whose answer was lost (a closed tab, a dropped
//! connection) is resent, byte for byte, by the next client of this origin; the Escrow answers a
//! resent call with its first result, so nothing is done twice.
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
const CALLS: &str = "calls";
/// Version 2 added the call journal, version 3 the upload journals (`crate::upload_journal`).
const DB_VERSION: u32 = 3;

/// Resolves when an IndexedDB request succeeds, with its result.
pub(crate) fn done(req: &IdbRequest) -> JsFuture {
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

pub(crate) fn idb_error(what: &str) -> impl Fn(JsValue) -> ClientError + '_ {
    move |e| ClientError::Js(format!("IndexedDB {what} failed: {}", from_js(e)))
}

pub(crate) async fn open() -> Result<IdbDatabase, ClientError> {
    let factory: IdbFactory = js_sys::Reflect::get(&js_sys::global(), &"indexedDB".into())
        .ok()
        .and_then(|f| f.dyn_into().ok())
        .ok_or_else(|| {
            ClientError::Js("IndexedDB is not available here; use { wallet: 'ephemeral' }".into())
        })?;
    let req = factory
        .open_with_u32(DB, DB_VERSION)
        .map_err(idb_error("open"))?;
    let upgrade_req = req.clone();
    let on_upgrade = Closure::once_into_js(move |_: web_sys::Event| {
        if let Ok(db) = upgrade_req
            .result()
            .and_then(|r| r.dyn_into::<IdbDatabase>())
        {
            let names = db.object_store_names();
            let uploads = [
                crate::upload_journal::UPLOADS,
                crate::upload_journal::UPLOAD_SLABS,
            ];
            for store in [STORE, CALLS].into_iter().chain(uploads) {
                if !names.contains(store) {
                    let _ = db.create_object_store(store);
                }
            }
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

/// Puts (`Some`) or deletes (`None`) `key` in `store`, durably once the promise resolves.
pub(crate) async fn put(
    store: &str,
    key: &str,
    value: Option<&JsValue>,
) -> Result<(), ClientError> {
    let db = open().await?;
    let os = db
        .transaction_with_str_and_mode(store, IdbTransactionMode::Readwrite)
        .and_then(|t| t.object_store(store))
        .map_err(idb_error("write"))?;
    let req = match value {
        Some(v) => os.put_with_key(v, &key.into()),
        None => os.delete(&key.into()),
    }
    .map_err(idb_error("write"))?;
    done(&req).await.map_err(idb_error("write"))?;
    db.close();
    Ok(())
}

async fn write(bytes: &[u8]) -> Result<(), ClientError> {
    put(STORE, KEY, Some(&js_sys::Uint8Array::from(bytes).into())).await
}

/// Saves a signed call (JSON) under its id before it is sent.
pub async fn save_call(id: &str, call_json: &str) -> Result<(), ClientError> {
    put(CALLS, id, Some(&JsValue::from_str(call_json))).await
}

/// Forgets an answered call.
pub async fn forget_call(id: &str) -> Result<(), ClientError> {
    put(CALLS, id, None).await
}

/// Calls saved but never answered (JSON), at most `limit`.
pub async fn pending_calls(limit: u32) -> Result<Vec<String>, ClientError> {
    get_all(CALLS, &JsValue::UNDEFINED, limit).await
}

/// The string values of `store` with keys in `range` (`undefined`: all), at most `limit`.
pub(crate) async fn get_all(
    store: &str,
    range: &JsValue,
    limit: u32,
) -> Result<Vec<String>, ClientError> {
    let db = open().await?;
    let os = db
        .transaction_with_str(store)
        .and_then(|t| t.object_store(store))
        .map_err(idb_error("read"))?;
    let req = os
        .get_all_with_key_and_limit(range, limit)
        .map_err(idb_error("read"))?;
    let v = done(&req).await.map_err(idb_error("read"))?;
    db.close();
    Ok(v.dyn_into::<js_sys::Array>()
        .map(|a| a.iter().filter_map(|x| x.as_string()).collect())
        .unwrap_or_default())
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

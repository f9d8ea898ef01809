//! Upload journals in IndexedDB, so that an upload stopped by a reload, a closed tab or a lost
//! network finishes later (`client.resumeUploads()`, `client.resume(id, file)`) without
//! sending its placed slabs again. The lines are core's journal format
//! ([`btfs_core::engine::journal`]), the same the CLI writes to a file.
//!
//! Database `btfs-client` (shared with the wallet, `crate::wallet`), two object stores:
//!
//! ```text
//! uploads       key <id>                 value: the journal's header line
//! upload-slabs  key <id>/<slab, 10 digits> value: that slab's line
//! ```
//!
//! A slab line is written once its 30 shards are stored (one small transaction each); the
//! header when the upload starts. A finished upload (success, or a failure that released its
//! shards) deletes both; `discardUpload(id)` does the same on request. Only a client with an
//! IndexedDB wallet journals: an ephemeral wallet's holds die with the page.

use btfs_core::engine::journal::Journal;
use btfs_core::engine::HostId;
use btfs_core::Root;
use wasm_bindgen::prelude::*;
use web_sys::{IdbKeyRange, IdbTransactionMode};

use crate::error::ClientError;
use crate::wallet::{done, get_all, idb_error, open, put};

/// Object store of header lines.
pub const UPLOADS: &str = "uploads";
/// Object store of slab lines.
pub const UPLOAD_SLABS: &str = "upload-slabs";
/// Most unfinished uploads listed.
const MAX_LISTED: u32 = 1000;

fn slab_key(id: &str, slab: u64) -> String {
    format!("{id}/{slab:010}")
}

/// Starts the journal of a new upload.
pub async fn start(j: &Journal) -> Result<(), ClientError> {
    put(UPLOADS, &j.id, Some(&JsValue::from_str(&j.header_line()))).await
}

/// Records a placed slab.
pub async fn placed(id: &str, slab: u64, p: &[(Root, HostId)]) -> Result<(), ClientError> {
    let line = Journal::slab_line(slab, p);
    put(
        UPLOAD_SLABS,
        &slab_key(id, slab),
        Some(&JsValue::from_str(&line)),
    )
    .await
}

/// Deletes an upload's journal.
pub async fn remove(id: &str) -> Result<(), ClientError> {
    let db = open().await?;
    let tx = db
        .transaction_with_str_sequence_and_mode(
            &js_sys::Array::of2(&UPLOADS.into(), &UPLOAD_SLABS.into()),
            IdbTransactionMode::Readwrite,
        )
        .map_err(idb_error("delete"))?;
    let range = IdbKeyRange::bound(&format!("{id}/").into(), &format!("{id}/~").into())
        .map_err(idb_error("delete"))?;
    let slabs = tx.object_store(UPLOAD_SLABS).map_err(idb_error("delete"))?;
    done(&slabs.delete(&range).map_err(idb_error("delete"))?)
        .await
        .map_err(idb_error("delete"))?;
    let uploads = tx.object_store(UPLOADS).map_err(idb_error("delete"))?;
    done(&uploads.delete(&id.into()).map_err(idb_error("delete"))?)
        .await
        .map_err(idb_error("delete"))?;
    db.close();
    Ok(())
}

/// Reads one upload's journal; `None` if there is none with that id.
pub async fn load(id: &str) -> Result<Option<Journal>, ClientError> {
    let header = get_all(UPLOADS, &JsValue::from_str(id), 1).await?;
    match header.first() {
        Some(h) => with_slabs(id, h).await.map(Some),
        None => Ok(None),
    }
}

/// The journal of `header` (upload `id`) with its slab lines.
async fn with_slabs(id: &str, header: &str) -> Result<Journal, ClientError> {
    let range = IdbKeyRange::bound(&format!("{id}/").into(), &format!("{id}/~").into())
        .map_err(idb_error("read"))?;
    let lines = get_all(UPLOAD_SLABS, &range, u32::MAX).await?;
    Journal::from_parts(header, lines.iter().map(String::as_str), false).map_err(|e| {
        ClientError::Js(format!(
            "the journal of upload {id} is damaged ({e}); discardUpload('{id}') and upload anew"
        ))
    })
}

/// Every unfinished upload's journal (oldest first); damaged ones are skipped with a warning.
pub async fn list() -> Result<Vec<Journal>, ClientError> {
    let headers = get_all(UPLOADS, &JsValue::UNDEFINED, MAX_LISTED).await?;
    let mut out = Vec::new();
    for h in headers {
        let id = match Journal::from_parts(&h, [], false) {
            Ok(j) => j.id,
            Err(e) => {
                crate::transfer::warn(&format!("btfs: skipping a damaged upload journal: {e}"));
                continue;
            }
        };
        match with_slabs(&id, &h).await {
            Ok(j) => out.push(j),
            Err(e) => crate::transfer::warn(&e.to_string()),
        }
    }
    out.sort_by_key(|j| j.started_ms);
    Ok(out)
}

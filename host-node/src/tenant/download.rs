//! `btfs download`: link → manifest → any 10 verified shards per slab → plaintext file.
//!
//! Every decision (manifest fan-out, which shards, retries, hedging a slow fetch after its
//! deadline, read-ahead, corrupt-shard reports) is core's [`btfs_core::engine::download`]
//! machine; this file drives it with [`crate::tenant::driver::Runner`] and writes what it emits.
//!
//! ```text
//! output:   see [`crate::tenant::output`]: a regular file is written to a unique, exclusively created
//!           `.OUT.<random>.btfs-part` beside it, fsynced and renamed over OUT only when every
//!           block authenticated; a special file (device, FIFO, terminal) or stdout (`-o -`) is
//!           written in place, block by authenticated block
//! ```
//!
//! Memory: the machine's read-ahead (2 slabs of shards) plus one slab of plaintext.
//! Errors name the reason that really stopped the download, for the manifest
//! ([`TransferError::ManifestLost`]) and for each slab ([`TransferError::SlabLost`]).

use std::path::Path;
use std::time::Instant;

use btfs_core::engine::download::{Download, DownloadConfig, DownloadError};
use btfs_core::engine::{HostId, Machine};
use btfs_core::Link;
use indicatif::ProgressBar;
use serde::Serialize;

pub use btfs_core::engine::CorruptShard;

use crate::tenant::driver::Runner;
use crate::tenant::output::Output;
use crate::tenant::{Tenant, TransferError};

/// What a download did.
#[derive(Debug, Clone, Serialize, Default)]
pub struct DownloadReport {
    /// Object name from the encrypted header.
    pub name: String,
    /// Plaintext bytes written.
    pub bytes: u64,
    /// Slabs.
    pub slabs: u64,
    /// Shards fetched and verified.
    pub shards_fetched: usize,
    /// Fetches that failed (unreachable host, missing shard).
    pub failed_fetches: usize,
    /// Fetches started because another passed its hedge deadline.
    pub hedged_fetches: usize,
    /// Shards whose bytes did not match their root.
    pub corrupt_shards: Vec<CorruptShard>,
    /// Wall time.
    pub elapsed_ms: u128,
    /// Peak resident memory of this process, if known.
    pub peak_rss_bytes: Option<u64>,
}

/// Downloads the object behind `link` into `out`.
pub async fn download(
    tenant: &Tenant,
    link: &Link,
    out: &Path,
    progress: ProgressBar,
) -> Result<DownloadReport, TransferError> {
    let started = Instant::now();
    // Open the output first: a bad path fails before any network work. Opening a FIFO waits
    // for its reader.
    let mut file = tokio::task::block_in_place(|| Output::open(out))?;
    let candidates: Vec<HostId> = tenant.hosts().iter().map(|h| HostId::new(h.peer)).collect();
    let mut runner = Runner::new(tenant.net().clone(), tenant.dial_addrs());
    let moves = guard_moves(tenant, link).await;
    let mut m = Download::with_moves(
        link.clone(),
        candidates,
        moves,
        DownloadConfig::default(),
        runner.now(),
    );
    let mut sized = false;
    loop {
        runner.apply_all(&mut m);
        while let Some(plain) = m.poll_output() {
            // On an error `file` is dropped, which removes a part file and leaves the target.
            tokio::task::block_in_place(|| file.write_all(&plain))?;
            progress.inc(plain.len() as u64);
        }
        runner.apply_all(&mut m);
        if !sized {
            if let Some(manifest) = m.manifest() {
                progress.set_length(manifest.layout().plain_len());
                sized = true;
            }
        }
        if m.is_finished() {
            break;
        }
        runner.step(&mut m).await;
    }
    let report = match m.take_result() {
        Some(Ok(r)) => r,
        Some(Err(e)) => return Err(download_error(e, tenant)),
        None => return Err(TransferError::Interrupted),
    };
    tokio::task::block_in_place(|| file.commit())?;
    progress.finish_and_clear();
    for c in &report.corrupt_shards {
        tracing::warn!(slab = c.slab, shard = c.shard, host = %c.host, "shard failed verification; fetched another");
    }
    Ok(DownloadReport {
        name: report.name,
        bytes: report.bytes,
        slabs: report.slabs,
        shards_fetched: report.shards_fetched,
        failed_fetches: report.failed_fetches,
        hedged_fetches: report.hedged_fetches,
        corrupt_shards: report.corrupt_shards,
        elapsed_ms: started.elapsed().as_millis(),
        peak_rss_bytes: crate::peak_rss_bytes(),
    })
}

/// Where the network's Guard says repaired shards of `link` live now (signed placement
/// updates, checked); none without a Guard or when it cannot be asked (a download never fails
/// because of the Guard).
pub async fn guard_moves(tenant: &Tenant, link: &Link) -> btfs_core::engine::Moves {
    let Some(guard) = tenant.guard() else {
        return Default::default();
    };
    let ask = crate::services::guard::client::moves(
        tenant.net(),
        guard.peer,
        guard.addrs.clone(),
        link.manifest_id,
    );
    match ask.await {
        Ok(m) => {
            if !m.is_empty() {
                tracing::info!(moved = m.len(), "the Guard moved shards of this object");
            }
            m
        }
        Err(crate::services::guard::client::GuardClientError::Refused(e)) => {
            tracing::debug!(%e, "the Guard does not watch this object");
            Default::default()
        }
        Err(e) => {
            tracing::warn!(%e, "cannot ask the Guard where repaired shards are; using the manifest's hosts");
            Default::default()
        }
    }
}

/// The CLI's error for the machine's.
pub(crate) fn download_error(e: DownloadError, tenant: &Tenant) -> TransferError {
    match e {
        DownloadError::Unreachable { .. } => TransferError::Unreachable {
            total: tenant.hosts().len(),
        },
        DownloadError::ManifestLost { id, failures } => TransferError::ManifestLost {
            id: id.to_hex(),
            failures,
        },
        DownloadError::SlabLost {
            slab,
            have,
            failures,
        } => TransferError::SlabLost {
            slab,
            have,
            failures,
        },
        DownloadError::Manifest(m) => TransferError::Manifest(m),
        DownloadError::Decode(d) => TransferError::Decode(d),
        other => TransferError::Input {
            path: String::new(),
            source: std::io::Error::other(other.to_string()),
        },
    }
}

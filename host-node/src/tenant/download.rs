//! `btfs download`: link → manifest → any 10 verified shards per slab → plaintext file.
//!
//! ```text
//! manifest: ask hosts (8 at a time) for the manifest id; the first copy whose BLAKE3 root
//!           matches wins; the key then opens its header (a wrong key stops here)
//! slabs:    up to 2 slabs fetching ahead of the decoder; per slab 10 fetches start (data
//!           shards first: decoding is a copy when all 10 arrive); a failure, a corrupt shard
//!           or no progress for HEDGE_AFTER starts another fetch on a host not yet asked
//! output:   see [`crate::tenant::output`]: a regular file is written to a unique, exclusively created
//!           `.OUT.<random>.btfs-part` beside it, fsynced and renamed over OUT only when every
//!           block authenticated; a special file (device, FIFO, terminal) or stdout (`-o -`) is
//!           written in place, block by authenticated block
//! ```
//!
//! Hosts that failed once are asked last for later slabs. Memory: ~3 slabs of shards.
//!
//! Every failed fetch is classified ([`FailureKind`]: corrupt, unreachable, missing, refused) so
//! a failed download names the reason that really stopped it, for the manifest
//! ([`TransferError::ManifestLost`]) and for each slab ([`TransferError::SlabLost`]).

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use btfs_core::{Decoder, Link, Manifest, Root, VerifiedShard, DATA_SHARDS, TOTAL_SHARDS};
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use indicatif::ProgressBar;
use serde::Serialize;

use crate::tenant::output::Output;
use crate::tenant::shard_client;
use crate::tenant::{FailureKind, FetchFailures, Tenant, TransferError};

/// Start one more fetch when a slab made no progress for this long.
pub const HEDGE_AFTER: Duration = Duration::from_millis(1500);
/// Manifest requests in flight at once.
const MANIFEST_FANOUT: usize = 8;
/// Slabs fetched ahead of the decoder.
const SLABS_AHEAD: usize = 2;

/// A shard that failed verification.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CorruptShard {
    /// Slab.
    pub slab: u64,
    /// Shard index (0..30).
    pub shard: usize,
    /// Host peer id.
    pub host: String,
}

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
    /// Shards whose bytes did not match their root.
    pub corrupt_shards: Vec<CorruptShard>,
    /// Wall time.
    pub elapsed_ms: u128,
    /// Peak resident memory of this process, if known.
    pub peak_rss_bytes: Option<u64>,
}

/// Fetches and verifies the manifest named by `link`.
pub async fn fetch_manifest(tenant: &Tenant, id: Root) -> Result<Manifest, TransferError> {
    let n = tenant.hosts().len();
    let mut dial_failed = 0;
    let mut failures = FetchFailures::default();
    let mut asks = futures::stream::iter(0..n)
        .map(|i| async move {
            let peer = tenant.connect(i).await.map_err(|_| None)?;
            let mut control = tenant.net().control();
            let bytes = shard_client::get(
                &mut control,
                peer,
                id,
                btfs_core::manifest::MAX_MANIFEST_LEN as u32,
            )
            .await
            .map_err(|e| {
                tracing::info!(error = ?e, "manifest fetch failed");
                Some((i, FailureKind::of(&e)))
            })?;
            // Only bytes that hash to the id are parsed.
            let verified = id
                .verify(bytes)
                .map_err(|_| Some((i, FailureKind::Corrupt)))?;
            // Every copy that hashes to the id is the same bytes: a parse failure is final.
            Ok(Manifest::decode(verified.bytes()))
        })
        .buffer_unordered(MANIFEST_FANOUT);
    while let Some(r) = asks.next().await {
        match r {
            Ok(parsed) => return Ok(parsed?),
            Err(None) => {
                dial_failed += 1;
                failures.record(FailureKind::Unreachable, String::new);
            }
            Err(Some((i, kind))) => {
                if kind == FailureKind::Corrupt {
                    tracing::warn!(host = %tenant.hosts()[i].peer, "manifest copy failed verification");
                }
                failures.record(kind, || tenant.hosts()[i].peer.to_string());
            }
        }
    }
    if dial_failed == n {
        return Err(TransferError::Unreachable { total: n });
    }
    Err(TransferError::ManifestLost {
        id: id.to_hex(),
        failures,
    })
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
    let manifest = fetch_manifest(tenant, link.manifest_id).await?;
    let mut decoder = Decoder::new(&manifest, &link.key)?;
    let layout = *manifest.layout();
    progress.set_length(layout.plain_len());

    // Manifest host index → tenant host index (hosts missing from the network file are skipped).
    let by_peer: HashMap<Vec<u8>, usize> = tenant
        .hosts()
        .iter()
        .enumerate()
        .map(|(i, h)| (h.peer.to_bytes(), i))
        .collect();
    let host_map: Vec<Option<usize>> = manifest
        .hosts()
        .iter()
        .map(|id| by_peer.get(id).copied())
        .collect();

    let mut report = DownloadReport {
        name: decoder.header().name.clone(),
        slabs: layout.slab_count(),
        ..DownloadReport::default()
    };

    let result: Result<(), TransferError> = async {
        let manifest = &manifest;
        let host_map = &host_map;
        let mut slabs = futures::stream::iter(0..layout.slab_count())
            .map(|i| fetch_slab(tenant, manifest, host_map, i))
            .buffered(SLABS_AHEAD);
        while let Some(fetched) = slabs.next().await {
            let fetched = fetched?;
            report.shards_fetched += DATA_SHARDS;
            report.failed_fetches += fetched.failed;
            report.corrupt_shards.extend(fetched.corrupt);
            let plain = tokio::task::block_in_place(|| {
                decoder.decode_slab(fetched.index, &fetched.shards)
            })?;
            tokio::task::block_in_place(|| file.write_all(&plain))?;
            report.bytes += plain.len() as u64;
            progress.inc(plain.len() as u64);
        }
        Ok(())
    }
    .await;
    // On any error `file` is dropped here, which removes a part file and leaves the target.
    result?;
    decoder.finish()?;
    tokio::task::block_in_place(|| file.commit())?;
    progress.finish_and_clear();
    report.elapsed_ms = started.elapsed().as_millis();
    report.peak_rss_bytes = crate::peak_rss_bytes();
    Ok(report)
}

struct FetchedSlab {
    index: u64,
    shards: Vec<Option<VerifiedShard>>,
    failed: usize,
    corrupt: Vec<CorruptShard>,
}

/// Fetches 10 verified shards of slab `index`, starting extra fetches on failure or slowness.
async fn fetch_slab(
    tenant: &Tenant,
    manifest: &Manifest,
    host_map: &[Option<usize>],
    index: u64,
) -> Result<FetchedSlab, TransferError> {
    let record = &manifest.slabs()[index as usize];
    let shard_size = manifest
        .layout()
        .slab(index)
        .map(|s| s.shard_size)
        .unwrap_or_default();
    // Data shards first (cheapest decode), hosts that failed before last.
    let mut order: Vec<usize> = (0..TOTAL_SHARDS).collect();
    order.sort_by_key(|&k| {
        let bad = host_map[usize::from(record[k].host)].is_none_or(|h| tenant.is_bad(h));
        (bad, k)
    });
    let mut order = order.into_iter();

    let fetch = |k: usize| async move {
        let root = record[k].root;
        let Some(h) = host_map[usize::from(record[k].host)] else {
            // The manifest names a host this tenant has no address for.
            return (k, None, Err(FailureKind::Unreachable));
        };
        let result = async {
            let peer = tenant
                .connect(h)
                .await
                .map_err(|_| FailureKind::Unreachable)?;
            let mut control = tenant.net().control();
            let bytes = shard_client::get(&mut control, peer, root, shard_size)
                .await
                .map_err(|e| {
                    tracing::info!(slab = index, shard = k, error = ?e, "shard fetch failed");
                    FailureKind::of(&e)
                })?;
            root.verify(bytes).map_err(|_| FailureKind::Corrupt)
        }
        .await;
        (k, Some(h), result)
    };

    let mut shards: Vec<Option<VerifiedShard>> = vec![None; TOTAL_SHARDS];
    let (mut have, mut failed) = (0, 0);
    let mut failures = FetchFailures::default();
    let mut corrupt = Vec::new();
    let mut running = FuturesUnordered::new();
    for k in order.by_ref().take(DATA_SHARDS) {
        running.push(fetch(k));
    }
    let hedge = tokio::time::sleep(HEDGE_AFTER);
    tokio::pin!(hedge);
    while have < DATA_SHARDS {
        tokio::select! {
            done = running.next() => {
                let Some((k, host, result)) = done else { break };
                match result {
                    Ok(v) => {
                        shards[k] = Some(v);
                        have += 1;
                        hedge.as_mut().reset(tokio::time::Instant::now() + HEDGE_AFTER);
                        continue;
                    }
                    Err(why) => {
                        failed += 1;
                        if let Some(h) = host {
                            tenant.mark_bad(h);
                        }
                        let peer = || host.map(|h| tenant.hosts()[h].peer.to_string()).unwrap_or_default();
                        if why == FailureKind::Corrupt {
                            let host = peer();
                            tracing::warn!(slab = index, shard = k, %host, "shard failed verification; fetching another");
                            corrupt.push(CorruptShard { slab: index, shard: k, host });
                        }
                        failures.record(why, peer);
                    }
                }
                if let Some(k) = order.next() {
                    running.push(fetch(k));
                }
            }
            () = &mut hedge => {
                if let Some(k) = order.next() {
                    tracing::debug!(slab = index, shard = k, "slow hosts: starting an extra fetch");
                    running.push(fetch(k));
                }
                hedge.as_mut().reset(tokio::time::Instant::now() + HEDGE_AFTER);
            }
        }
    }
    if have < DATA_SHARDS {
        return Err(TransferError::SlabLost {
            slab: index,
            have,
            failures,
        });
    }
    Ok(FetchedSlab {
        index,
        shards,
        failed,
        corrupt,
    })
}

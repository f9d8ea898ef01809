//! `btfs upload`: file → encrypted, erasure-coded slabs → 30 distinct hosts per slab → link.
//!
//! Pipeline (each stage overlaps the others):
//!
//! ```text
//! reader thread: read 1 MiB → Encoder (AEAD, RS, BLAKE3) ─slab─▶ channel(1)
//!   └▶ up to `slabs_in_flight` slabs uploading, 30 puts each in parallel, one per host
//!        └▶ a failed put moves that shard to a host not yet used by the slab
//! then:    the manifest goes to 30 distinct hosts
//! finally: one CLAIM per host used, listing every root it holds for the object (shards and
//!          manifest); the link is printed only when every host confirmed
//! ```
//!
//! Nothing lost, nothing left behind: every put attempt whose outcome may have stored bytes is
//! written down before it starts. If the upload fails (a read error, too few hosts, a claim
//! refused), everything written down is RELEASEd, best effort within [`RELEASE_BUDGET`]; after
//! a success, the attempts that are not part of the object (a put that timed out, then moved)
//! are released. What a crashed or killed upload leaves behind, hosts sweep after their grace
//! period, because it was never claimed (see `btfs_core::protocol`).
//!
//! Memory: at most `slabs_in_flight + 1` slabs alive (30 MiB each at the default 1 MiB shards),
//! plus the transport's send buffers.
//! Host choice: slab `i` starts at host `(30·i) mod n` of the reachable hosts, so load spreads
//! evenly over a network larger than 30 hosts.

use std::collections::{BTreeMap, HashSet};
use std::io::Read;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use btfs_core::layout::{Layout, DEFAULT_SHARD_SIZE};
use btfs_core::{
    EncodedSlab, Encoder, Link, Manifest, ObjectHeader, ObjectKey, Root, TOTAL_SHARDS,
};
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use indicatif::ProgressBar;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use crate::tenant::shard_client::{self, ShardError};
use crate::tenant::{Tenant, TransferError};

/// Tries per host before a shard moves to another host.
const PUT_ATTEMPTS_PER_HOST: usize = 2;
/// Tries per host of a CLAIM.
const CLAIM_ATTEMPTS: usize = 2;
/// Longest time spent releasing what a failed upload placed.
pub const RELEASE_BUDGET: Duration = Duration::from_secs(15);
/// Releases and claims in flight at once.
const CLEANUP_PARALLEL: usize = 16;

/// An upload failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UploadError {
    /// Reading, encoding or placing failed.
    #[error(transparent)]
    Transfer(#[from] TransferError),
    /// A host did not confirm keeping its shards; the upload was rolled back.
    #[error("host {host} did not confirm keeping its {roots} shards of this upload, so the upload was undone; retry")]
    Claim {
        /// The host.
        host: libp2p::PeerId,
        /// How many roots it should have kept.
        roots: usize,
        /// Why.
        #[source]
        source: ShardError,
    },
}

/// Every (root, host index) whose put may have stored bytes: written down before each put
/// attempt, removed again when the host refused (a refusal stores nothing).
#[derive(Default)]
struct Placements(Mutex<HashSet<(Root, usize)>>);

impl Placements {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<(Root, usize)>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}
/// Read size of the input file.
const READ_CHUNK: usize = 1 << 20;

/// Upload tuning.
#[derive(Debug, Clone, Copy)]
pub struct UploadOptions {
    /// Largest shard size (multiple of 64, ≤ 4 MiB).
    pub shard_size: u32,
    /// Slabs uploading at once.
    pub slabs_in_flight: usize,
}

impl Default for UploadOptions {
    fn default() -> Self {
        Self {
            shard_size: DEFAULT_SHARD_SIZE,
            slabs_in_flight: 2,
        }
    }
}

/// What an upload did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct UploadReport {
    /// The capability link.
    pub link: String,
    /// Plaintext bytes.
    pub bytes: u64,
    /// Slabs.
    pub slabs: u64,
    /// Distinct hosts holding shards.
    pub hosts_used: usize,
    /// Put attempts that failed (then retried or moved to another host).
    pub failed_puts: usize,
    /// Wall time.
    pub elapsed_ms: u128,
    /// Peak resident memory of this process, if known.
    pub peak_rss_bytes: Option<u64>,
}

/// Uploads the file at `path`; returns its link. On failure, releases what it placed.
pub async fn upload(
    tenant: &Tenant,
    path: &Path,
    opts: UploadOptions,
    progress: ProgressBar,
) -> Result<UploadReport, UploadError> {
    let placements = Placements::default();
    let placed = place(tenant, path, opts, progress, &placements).await;
    let outcome = match placed {
        Ok((report, kept)) => match claim_all(tenant, &kept).await {
            Ok(()) => {
                // Attempts that are not part of the object (e.g. a put that timed out, then
                // moved) are let go.
                placements.lock().retain(|p| !kept.contains(p));
                Ok(report)
            }
            Err(e) => Err(e),
        },
        Err(e) => Err(UploadError::Transfer(e)),
    };
    let leftovers: Vec<(Root, usize)> = placements.lock().iter().copied().collect();
    release_all(tenant, &leftovers).await;
    outcome
}

/// Claims, on each host, every root it holds for the object; all hosts in parallel.
async fn claim_all(tenant: &Tenant, kept: &HashSet<(Root, usize)>) -> Result<(), UploadError> {
    let mut by_host: BTreeMap<usize, Vec<Root>> = BTreeMap::new();
    for &(root, h) in kept {
        by_host.entry(h).or_default().push(root);
    }
    let claims = futures::stream::iter(by_host)
        .map(|(h, roots)| async move {
            let mut last = None;
            for _ in 0..CLAIM_ATTEMPTS {
                let result = async {
                    let peer = tenant.connect(h).await.map_err(|e| ShardError::Open {
                        peer: tenant.hosts()[h].peer,
                        reason: e.to_string(),
                    })?;
                    shard_client::claim(&mut tenant.net().control(), peer, &roots).await
                }
                .await;
                match result {
                    Ok(()) => return Ok(()),
                    // A refusal will not change on retry.
                    Err(e) if e.status().is_some() => {
                        last = Some(e);
                        break;
                    }
                    Err(e) => last = Some(e),
                }
            }
            Err(UploadError::Claim {
                host: tenant.hosts()[h].peer,
                roots: roots.len(),
                source: last.unwrap_or(ShardError::Timeout {
                    peer: tenant.hosts()[h].peer,
                    secs: 0,
                }),
            })
        })
        .buffer_unordered(CLEANUP_PARALLEL);
    let results: Vec<Result<(), UploadError>> = claims.collect().await;
    results.into_iter().collect()
}

/// Releases `what`, best effort, within [`RELEASE_BUDGET`].
async fn release_all(tenant: &Tenant, what: &[(Root, usize)]) {
    if what.is_empty() {
        return;
    }
    let released = std::sync::atomic::AtomicUsize::new(0);
    let work = futures::stream::iter(what)
        .for_each_concurrent(CLEANUP_PARALLEL, |&(root, h)| {
            let released = &released;
            async move {
                let Ok(peer) = tenant.connect(h).await else {
                    return;
                };
                match shard_client::release(&mut tenant.net().control(), peer, root).await {
                    Ok(()) => {
                        released.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    // The put never landed (or the host lost it): nothing to release.
                    Err(e) if e.status() == Some(btfs_core::protocol::Status::NotFound) => {}
                    Err(e) => tracing::info!(%peer, %root, error = ?e, "release failed; the host sweeps it after its grace period"),
                }
            }
        });
    let finished = tokio::time::timeout(RELEASE_BUDGET, work).await.is_ok();
    tracing::info!(
        placed = what.len(),
        released = released.load(std::sync::atomic::Ordering::Relaxed),
        finished,
        "released the shards of an unfinished upload attempt"
    );
}

/// Reads, encodes and places the file; returns the report and every (root, host) the object
/// keeps. Writes each put attempt into `placements` first.
async fn place(
    tenant: &Tenant,
    path: &Path,
    opts: UploadOptions,
    progress: ProgressBar,
    placements: &Placements,
) -> Result<(UploadReport, HashSet<(Root, usize)>), TransferError> {
    let started = Instant::now();
    let input = |source| TransferError::Input {
        path: path.display().to_string(),
        source,
    };
    let file = std::fs::File::open(path).map_err(input)?;
    let meta = file.metadata().map_err(input)?;
    if !meta.is_file() {
        return Err(input(std::io::Error::other("not a regular file")));
    }
    let layout = Layout::new(meta.len(), opts.shard_size)?;

    let reachable = tenant.reachable().await;
    if reachable.is_empty() {
        return Err(TransferError::Unreachable {
            total: tenant.hosts().len(),
        });
    }
    if reachable.len() < TOTAL_SHARDS {
        return Err(TransferError::TooFewHosts {
            reachable: reachable.len(),
            total: tenant.hosts().len(),
        });
    }

    let mut key = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut key);
    let key = ObjectKey::from_bytes(key);
    progress.set_length(layout.slabs().map(|s| u64::from(s.shard_size) * 30).sum());

    // Reader + encoder on a blocking thread. A slab needs a slot from the moment its data is
    // read until its last put finishes, so at most `slabs_in_flight + 1` slabs are alive.
    let slots = Arc::new(Semaphore::new(opts.slabs_in_flight.max(1) + 1));
    let _close_slots = CloseOnDrop(slots.clone());
    let (tx, mut rx) =
        mpsc::channel::<Result<(EncodedSlab, OwnedSemaphorePermit), TransferError>>(1);
    let reader_key = key.clone();
    let path_text = path.display().to_string();
    let reader = tokio::task::spawn_blocking(move || {
        let result = encode_file(file, &reader_key, layout, &tx, &slots, &path_text);
        if let Err(e) = result {
            let _ = tx.blocking_send(Err(e));
        }
    });

    let placer = Placer::new(reachable);
    let failed_puts = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    // Per slab: (shard root, tenant host index) for shards 0..30.
    let mut placed: Vec<Vec<(Root, usize)>> = vec![Vec::new(); layout.slab_count() as usize];
    let mut in_flight = FuturesUnordered::new();
    let mut input_done = false;
    loop {
        tokio::select! {
            slab = rx.recv(), if !input_done && in_flight.len() < opts.slabs_in_flight.max(1) => match slab {
                None => input_done = true,
                Some(Err(e)) => return Err(e),
                Some(Ok((slab, slot))) => {
                    let (placer, progress, failed) = (&placer, progress.clone(), failed_puts.clone());
                    in_flight.push(async move {
                        let placer = (placer, placements);
                        let _slot = slot;
                        let idx = slab.layout.index;
                        let blobs: Vec<(Root, &[u8])> =
                            (0..TOTAL_SHARDS).map(|k| (slab.roots[k], slab.shard(k))).collect();
                        let hosts = placer.0.put_spread(tenant, &blobs, idx as usize, &progress, &failed, placer.1).await?;
                        let placed: Vec<(Root, usize)> = slab.roots.iter().copied().zip(hosts).collect();
                        Ok::<_, TransferError>((idx, placed))
                    });
                }
            },
            done = in_flight.next(), if !in_flight.is_empty() => {
                if let Some(done) = done {
                    let (idx, slab_placed) = done?;
                    placed[idx as usize] = slab_placed;
                }
            },
            else => break,
        }
    }
    let _ = reader.await;
    if placed.iter().any(Vec::is_empty) {
        return Err(TransferError::Input {
            path: path.display().to_string(),
            source: std::io::Error::other("the reader stopped before the end of the file"),
        });
    }
    let (table, records) = btfs_core::placement::records(&placed)?;
    let host_ids = table
        .iter()
        .map(|&i| tenant.hosts()[i].peer.to_bytes())
        .collect();
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let header = ObjectHeader {
        name,
        mime: String::new(),
    };
    let manifest = Manifest::new(layout, &key, &header, host_ids, records)?;
    let bytes = manifest.encode();
    let id = Root::of(&bytes);
    let copies: Vec<(Root, &[u8])> = (0..TOTAL_SHARDS).map(|_| (id, bytes.as_slice())).collect();
    let manifest_hosts = placer
        .put_spread(
            tenant,
            &copies,
            0,
            &ProgressBar::hidden(),
            &failed_puts,
            placements,
        )
        .await?;
    progress.finish_and_clear();
    let kept: HashSet<(Root, usize)> = placed
        .iter()
        .flatten()
        .copied()
        .chain(manifest_hosts.into_iter().map(|h| (id, h)))
        .collect();

    let report = UploadReport {
        link: Link {
            manifest_id: id,
            key,
        }
        .to_string(),
        bytes: layout.plain_len(),
        slabs: layout.slab_count(),
        hosts_used: table.len(),
        failed_puts: failed_puts.load(std::sync::atomic::Ordering::Relaxed),
        elapsed_ms: started.elapsed().as_millis(),
        peak_rss_bytes: crate::peak_rss_bytes(),
    };
    Ok((report, kept))
}

/// Closes the slot semaphore when the upload ends, so a waiting reader thread stops.
struct CloseOnDrop(Arc<Semaphore>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close();
    }
}

type SlabMsg = Result<(EncodedSlab, OwnedSemaphorePermit), TransferError>;

fn encode_file(
    mut file: std::fs::File,
    key: &ObjectKey,
    layout: Layout,
    tx: &mpsc::Sender<SlabMsg>,
    slots: &Arc<Semaphore>,
    path: &str,
) -> Result<(), TransferError> {
    let mut enc = Encoder::new(key, layout);
    let mut buf = vec![0u8; READ_CHUNK];
    // `None` when the uploader has gone away.
    let acquire = || futures::executor::block_on(slots.clone().acquire_owned()).ok();
    let Some(first) = acquire() else {
        return Ok(());
    };
    let mut slot = Some(first);
    // Sends every finished slab with its slot; then takes a slot for the next one.
    let mut send = |enc: &mut Encoder| -> Result<bool, TransferError> {
        while let Some(slab) = enc.next_slab()? {
            let Some(permit) = slot.take().or_else(acquire) else {
                return Ok(false);
            };
            if tx.blocking_send(Ok((slab, permit))).is_err() {
                return Ok(false); // uploader gave up
            }
        }
        if slot.is_none() {
            slot = acquire();
        }
        Ok(slot.is_some())
    };
    if !send(&mut enc)? {
        return Ok(());
    }
    loop {
        let n = file.read(&mut buf).map_err(|source| TransferError::Input {
            path: path.into(),
            source,
        })?;
        if n == 0 {
            break;
        }
        let mut rest = &buf[..n];
        while !rest.is_empty() {
            rest = &rest[enc.feed(rest)?..];
            if !send(&mut enc)? {
                return Ok(());
            }
        }
    }
    enc.finish()?;
    Ok(())
}

/// Chooses hosts for shards: distinct per slab, rotating across slabs, avoiding failed hosts.
struct Placer {
    /// Reachable host indices (into the tenant's host list).
    hosts: Vec<usize>,
    failed: Mutex<HashSet<usize>>,
}

impl Placer {
    fn new(hosts: Vec<usize>) -> Self {
        Self {
            hosts,
            failed: Mutex::default(),
        }
    }

    fn is_failed(&self, h: usize) -> bool {
        self.failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&h)
    }

    /// Puts `blobs[k]` on a distinct host each; returns the host of each.
    async fn put_spread(
        &self,
        tenant: &Tenant,
        blobs: &[(Root, &[u8])],
        slab: usize,
        progress: &ProgressBar,
        failed_puts: &std::sync::atomic::AtomicUsize,
        placements: &Placements,
    ) -> Result<Vec<usize>, TransferError> {
        let n = self.hosts.len();
        let start = (slab * TOTAL_SHARDS) % n;
        // Rotation order for this slab; the first `blobs.len()` healthy ones are the first choice.
        let order: Vec<usize> = (0..n).map(|i| self.hosts[(start + i) % n]).collect();
        let healthy: Vec<usize> = order
            .iter()
            .copied()
            .filter(|&h| !self.is_failed(h))
            .collect();
        let spare: Vec<usize> = order
            .iter()
            .copied()
            .filter(|&h| self.is_failed(h))
            .collect();
        let mut queue: Vec<usize> = healthy.into_iter().chain(spare).collect();
        queue.reverse(); // pop() takes from the front of the order
        let queue = Mutex::new(queue);
        let next_host = || queue.lock().unwrap_or_else(|p| p.into_inner()).pop();

        let puts = blobs.iter().map(|&(root, bytes)| {
            let next_host = &next_host;
            async move {
                while let Some(h) = next_host() {
                    // A broken stream or connection is retried once on the same host before the
                    // shard moves elsewhere; a refusal (full, busy, mismatch) moves it at once.
                    for attempt in 1..=PUT_ATTEMPTS_PER_HOST {
                        placements.lock().insert((root, h));
                        let result = async {
                            let peer = tenant.connect(h).await.map_err(|e| (e.to_string(), true))?;
                            let mut control = tenant.net().control();
                            shard_client::put(&mut control, peer, root, bytes)
                                .await
                                .map_err(|e| (e.to_string(), e.status().is_none()))
                        }
                        .await;
                        if matches!(result, Err((_, false))) {
                            // Refused: the host stored nothing for us.
                            placements.lock().remove(&(root, h));
                        }
                        match result {
                            Ok(()) => {
                                progress.inc(bytes.len() as u64);
                                return Ok(h);
                            }
                            Err((e, transient)) => {
                                failed_puts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                let host = tenant.hosts()[h].peer;
                                if transient && attempt < PUT_ATTEMPTS_PER_HOST {
                                    tracing::info!(%host, error = ?e, "put failed; retrying on the same host");
                                    continue;
                                }
                                tracing::warn!(%host, error = ?e, "put failed; moving shard to another host");
                                self.failed.lock().unwrap_or_else(|p| p.into_inner()).insert(h);
                                tenant.mark_bad(h);
                                break;
                            }
                        }
                    }
                }
                Err(())
            }
        });
        let results = futures::future::join_all(puts).await;
        let placed: Vec<usize> = results.iter().filter_map(|r| r.ok()).collect();
        if placed.len() < blobs.len() {
            return Err(TransferError::TooFewHosts {
                reachable: n - self.failed.lock().unwrap_or_else(|p| p.into_inner()).len(),
                total: tenant.hosts().len(),
            });
        }
        Ok(placed)
    }
}

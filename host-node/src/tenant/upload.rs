//! `btfs upload`: file → encrypted, erasure-coded slabs → 30 distinct hosts per slab → link.
//!
//! Every decision (which hosts, retries, moving a shard to a spare host, hedging a slow put,
//! spreading the manifest, claiming, releasing) is core's [`btfs_core::engine::upload`]
//! machine; this file reads and encodes the file and drives the machine with
//! [`crate::tenant::driver::Runner`].
//!
//! ```text
//! reader thread: read 1 MiB → Encoder (AEAD, RS, BLAKE3) ─slab─▶ channel, one slab per grant
//!   └▶ the Upload machine takes a slab while it places fewer than `slabs_in_flight`
//! then:    the machine spreads the manifest, claims, releases leftovers; the link is printed
//!          only when every host confirmed
//! ```
//!
//! Resuming: with [`Journaling::New`] each placed slab is appended to a journal file
//! ([`crate::tenant::upload_journal`]); [`Journaling::Resume`] hands the journal to core's
//! `Upload::resume`, which checks the journaled shards on their hosts and sends only the rest.
//! The file is read and encoded again from the start either way: the roots of every journaled
//! slab must come out the same, which proves it is the same file.
//!
//! Memory: the reader encodes a slab only when granted one, and grants keep the machine's slabs
//! plus the one being read at `slabs_in_flight + 1` (30 MiB each at the default 1 MiB shards),
//! plus the transport's send buffers. What a crashed or killed upload leaves behind, hosts sweep
//! after their grace period, because it was never claimed (see `btfs_core::protocol`).

use std::io::Read;
use std::path::Path;
use std::sync::mpsc as std_mpsc;
use std::time::Instant;

use btfs_core::engine::upload::{self as machine, Upload, UploadConfig};
use btfs_core::engine::{Failure, HostId, Machine};
use btfs_core::layout::{Layout, DEFAULT_SHARD_SIZE};
use btfs_core::{EncodedSlab, Encoder, ObjectHeader, ObjectKey};
use indicatif::ProgressBar;
use tokio::sync::mpsc;

use std::collections::HashMap;

use btfs_core::TOTAL_SHARDS;
use libp2p::PeerId;

use btfs_core::engine::journal::Journal;

use crate::tenant::contracts::{self, ContractError, ContractsReport, PayPlan};
use crate::tenant::driver::Runner;
use crate::tenant::upload_journal::{JournalFile, JournalFileError};
use crate::tenant::wallet::Wallet;
use crate::tenant::{Tenant, TransferError};

/// An upload failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UploadError {
    /// Reading, encoding or placing failed.
    #[error(transparent)]
    Transfer(#[from] TransferError),
    /// A host did not confirm keeping its shards; the upload was rolled back.
    #[error("host {host} did not confirm keeping its {roots} shards of this upload ({failure}), so the upload was undone; retry")]
    Claim {
        /// The host.
        host: libp2p::PeerId,
        /// How many roots it should have kept.
        roots: usize,
        /// Why.
        failure: Failure,
    },
    /// The storage contracts could not be made or committed.
    #[error("storage contracts: {0}")]
    Contracts(#[source] ContractError),
    /// The upload journal could not be started.
    #[error(transparent)]
    Journal(#[from] JournalFileError),
    /// `--resume` with a journal that does not fit this upload.
    #[error("cannot resume: {0}")]
    Resume(String),
    /// The upload stopped, and can be resumed.
    #[error("{source} (the {placed} slabs placed so far are kept for an hour: `btfs upload --resume {path}` sends only the rest)")]
    Resumable {
        /// Why it stopped.
        #[source]
        source: Box<UploadError>,
        /// Slabs journaled.
        placed: usize,
        /// The file (for the hint).
        path: String,
    },
}

/// Whether and how an upload keeps a journal.
pub enum Journaling {
    /// No journal.
    Off,
    /// A new journal in this directory ([`crate::tenant::upload_journal::dir_of`]).
    New(std::path::PathBuf),
    /// Resume the journal read from this file.
    Resume(std::path::PathBuf, Box<Journal>),
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
            slabs_in_flight: UploadConfig::default().slabs_in_flight,
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
    /// Puts started because another passed its hedge deadline.
    pub hedged_puts: usize,
    /// Wall time.
    pub elapsed_ms: u128,
    /// Peak resident memory of this process, if known.
    pub peak_rss_bytes: Option<u64>,
    /// Registration with the network's Guard: `"watching"`, or why it failed (the upload
    /// itself succeeded either way); absent when the network has no Guard.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guard: Option<String>,
    /// The storage contracts (absent when the network has no Escrow).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contracts: Option<ContractsReport>,
    /// A resumed upload: shards found on their hosts and not sent again.
    pub resumed_shards: usize,
}

/// How an upload pays, when the network has an Escrow.
pub struct Payment<'a> {
    /// The payer (also the tenant's identity).
    pub wallet: &'a Wallet,
    /// The network's Escrow, Guard and epochs.
    pub plan: PayPlan,
    /// Each candidate host's advertised price per GiB-month.
    pub prices: HashMap<PeerId, u64>,
}

/// Uploads the file at `path`; returns its link. On failure, what was placed is released.
pub async fn upload(
    tenant: &Tenant,
    path: &Path,
    opts: UploadOptions,
    pay: Option<Payment<'_>>,
    journaling: Journaling,
    progress: ProgressBar,
) -> Result<UploadReport, UploadError> {
    let started = Instant::now();
    let input = |source| TransferError::Input {
        path: path.display().to_string(),
        source,
    };
    let file = std::fs::File::open(path).map_err(input)?;
    let meta = file.metadata().map_err(input)?;
    if !meta.is_file() {
        return Err(input(std::io::Error::other("not a regular file")).into());
    }
    let me = tenant.net().peer_id();
    let (layout, key, header, resume) = match journaling {
        Journaling::Resume(jpath, j) => {
            if j.holder != me {
                return Err(UploadError::Resume(format!(
                    "the upload in {} was started by wallet {}, this is {me}: pass that wallet with --wallet",
                    jpath.display(),
                    j.holder
                )));
            }
            if j.layout.plain_len() != meta.len() {
                return Err(UploadError::Resume(format!(
                    "{} is {} bytes, but the upload in {} was of {} bytes: the file changed; upload it anew without --resume",
                    path.display(),
                    meta.len(),
                    jpath.display(),
                    j.layout.plain_len()
                )));
            }
            let file = JournalFile::reopen(&jpath)?;
            (j.layout, j.key.clone(), j.header.clone(), Some((file, j)))
        }
        other => {
            let layout = Layout::new(meta.len(), opts.shard_size).map_err(TransferError::from)?;
            let mut key = [0u8; 32];
            rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut key);
            let key = ObjectKey::from_bytes(key);
            let header = ObjectHeader {
                name: path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                mime: String::new(),
            };
            let file = match other {
                Journaling::New(dir) => {
                    let source = journal_source(path);
                    // A new upload of this file replaces an unfinished one.
                    if let Some((old, j)) = crate::tenant::upload_journal::find(&dir, &source, me) {
                        tracing::warn!(
                            "replacing the unfinished upload of {source} ({} of {} slabs placed; `btfs upload --resume` would have finished it)",
                            j.placed_slabs(),
                            j.layout.slab_count()
                        );
                        let _ = std::fs::remove_file(old);
                    }
                    let j = Journal::new(
                        format!("{:016x}", rand::random::<u64>()),
                        me,
                        layout,
                        key.clone(),
                        header.clone(),
                        crate::tenant::wallet::now_ms(),
                        source,
                    );
                    Some((JournalFile::create(&dir, &j)?, Box::new(j)))
                }
                _ => None,
            };
            (layout, key, header, file)
        }
    };
    let (mut journal, prior) = match resume {
        Some((f, j)) => (Some(f), Some(j)),
        None => (None, None),
    };
    let cfg = UploadConfig {
        slabs_in_flight: opts.slabs_in_flight.max(1),
        ..UploadConfig::default()
    };
    // Contracts first: no byte moves before every host's offer is signed and funded.
    let reserved = match &pay {
        None => None,
        Some(p) => Some(
            contracts::reserve(
                tenant,
                p.wallet,
                &p.plan,
                btfs_core::escrow::plan::Room::upload(&layout),
                &p.prices,
                TOTAL_SHARDS,
            )
            .await
            .map_err(UploadError::Contracts)?,
        ),
    };
    let candidates: Vec<HostId> = match &reserved {
        Some(r) => r.hosts().map(HostId::new).collect(),
        None => tenant.hosts().iter().map(|h| HostId::new(h.peer)).collect(),
    };
    let mut runner = Runner::new(tenant.net().clone(), tenant.dial_addrs());
    let mut m = match &prior {
        Some(j) => Upload::resume(j, candidates, cfg, runner.now()),
        None => Upload::new(layout, key.clone(), header, candidates, cfg, runner.now()),
    };
    let mut journaled = prior.as_ref().map_or(0, |j| j.placed_slabs());
    progress.set_length(m.progress().1);

    // The reader encodes one slab per grant.
    let (grant_tx, grant_rx) = std_mpsc::channel::<()>();
    let (slab_tx, mut slab_rx) = mpsc::unbounded_channel::<Result<EncodedSlab, TransferError>>();
    let path_text = path.display().to_string();
    let reader = tokio::task::spawn_blocking(move || {
        if let Err(e) = encode_file(file, &key, layout, &grant_rx, &slab_tx, &path_text) {
            let _ = slab_tx.send(Err(e));
        }
    });

    let slabs = layout.slab_count() as usize;
    let (mut granted, mut outstanding) = (0usize, 0usize);
    let mut ready: Option<EncodedSlab> = None;
    let mut input_open = true;
    let mut input_error: Option<TransferError> = None;
    while !m.is_finished() {
        runner.apply_all(&mut m);
        while let Some((slab, placed)) = m.poll_placed() {
            journaled += 1;
            if let Some(f) = journal.as_mut() {
                if let Err(e) = f.append(slab, &placed) {
                    // The upload goes on; only resuming it later would send this slab again.
                    tracing::warn!(%e, "cannot journal a placed slab; this upload will not be resumable");
                    journal = None;
                }
            }
        }
        // Grants: the machine's slabs plus those read or being read stay ≤ slabs_in_flight + 1.
        while granted < slabs && m.slabs_held() + outstanding < cfg.slabs_in_flight + 1 {
            if grant_tx.send(()).is_err() {
                break;
            }
            granted += 1;
            outstanding += 1;
        }
        if let Some(slab) = ready.take() {
            if m.wants_slab() {
                outstanding -= 1;
                if let Err(back) = m.push_slab(slab) {
                    ready = Some(*back);
                }
                continue;
            }
            ready = Some(slab);
        }
        if m.is_finished() {
            break;
        }
        let timeout = m.poll_timeout().map(|t| runner.instant(t));
        tokio::select! {
            (op, outcome) = runner.next() => {
                let now = runner.now();
                m.handle_event(op, outcome, now);
            }
            slab = slab_rx.recv(), if ready.is_none() && input_open => match slab {
                Some(Ok(s)) => ready = Some(s),
                Some(Err(e)) => {
                    input_error = Some(e);
                    input_open = false;
                    m.abort();
                }
                None => {
                    input_open = false;
                    m.finish_input();
                }
            },
            () = crate::tenant::driver::sleep_until(timeout) => {
                let now = runner.now();
                m.handle_timeout(now);
            }
        }
        progress.set_position(m.progress().0);
    }
    drop(grant_tx);
    let _ = reader.await;
    let result = m
        .take_result()
        .unwrap_or(Err(machine::UploadError::Aborted));
    let report = match result {
        Ok(r) => r,
        Err(e) => {
            if let (Some(p), Some(r)) = (&pay, &reserved) {
                contracts::cancel_all(tenant, p.wallet, &p.plan, r).await;
            }
            let resumable = e.resumable();
            let e = upload_error(e, input_error, tenant);
            return Err(match journal {
                Some(f) if !resumable => {
                    f.remove();
                    e
                }
                Some(_) => UploadError::Resumable {
                    source: Box::new(e),
                    placed: journaled,
                    path: path.display().to_string(),
                },
                None => e,
            });
        }
    };
    if let Some(f) = journal.take() {
        f.remove();
    }
    progress.finish_and_clear();
    // Committing the contracts and registering with the Guard do not depend on each other:
    // both travel at once.
    let commit = async {
        match (&pay, &reserved) {
            (Some(p), Some(r)) => contracts::commit(tenant, p.wallet, &p.plan, r, &layout, &report)
                .await
                .map(Some),
            _ => Ok(None),
        }
    };
    let watch = async {
        let g = tenant.guard()?;
        let watch = crate::services::guard::client::watch(
            tenant.net(),
            g.peer,
            g.addrs.clone(),
            report.link.manifest_id,
        );
        Some(match watch.await {
            Ok(_) => "watching".to_string(),
            Err(e) => {
                tracing::warn!(%e, "the upload succeeded but the Guard will not watch it");
                e.to_string()
            }
        })
    };
    let (contracts, guard) = futures::join!(commit, watch);
    let contracts = contracts.map_err(UploadError::Contracts)?;
    Ok(UploadReport {
        link: report.link.to_string(),
        bytes: report.bytes,
        slabs: report.slabs,
        hosts_used: report.hosts_used,
        failed_puts: report.failed_puts,
        hedged_puts: report.hedged_puts,
        elapsed_ms: started.elapsed().as_millis(),
        peak_rss_bytes: crate::peak_rss_bytes(),
        guard,
        contracts,
        resumed_shards: report.resumed_shards,
    })
}

/// How a journal names the file it uploads: its absolute path.
pub fn journal_source(path: &Path) -> String {
    std::path::absolute(path)
        .unwrap_or_else(|_| path.to_path_buf())
        .display()
        .to_string()
}

/// The CLI's error for the machine's.
fn upload_error(
    e: machine::UploadError,
    input: Option<TransferError>,
    tenant: &Tenant,
) -> UploadError {
    use machine::UploadError as E;
    let total = tenant.hosts().len();
    match e {
        E::Aborted => input.unwrap_or(TransferError::Interrupted).into(),
        E::Unreachable { .. } => TransferError::Unreachable { total }.into(),
        E::TooFewHosts { reachable, .. } => TransferError::TooFewHosts { reachable, total }.into(),
        E::Claim {
            host,
            roots,
            failure,
        } => UploadError::Claim {
            host: host.peer(),
            roots,
            failure,
        },
        E::Input { got, expected } => input
            .unwrap_or_else(|| TransferError::Input {
                path: String::new(),
                source: std::io::Error::other(format!(
                    "the reader stopped at slab {got} of {expected}"
                )),
            })
            .into(),
        E::Manifest(m) => TransferError::Manifest(m).into(),
        c @ E::Changed { .. } => UploadError::Resume(c.to_string()),
        other => TransferError::Input {
            path: String::new(),
            source: std::io::Error::other(other.to_string()),
        }
        .into(),
    }
}

/// Reads and encodes the file, one slab per grant, until the grants stop or the file ends.
fn encode_file(
    mut file: std::fs::File,
    key: &ObjectKey,
    layout: Layout,
    grants: &std_mpsc::Receiver<()>,
    tx: &mpsc::UnboundedSender<Result<EncodedSlab, TransferError>>,
    path: &str,
) -> Result<(), TransferError> {
    let mut enc = Encoder::new(key, layout);
    let mut buf = vec![0u8; READ_CHUNK];
    let mut rest: Vec<u8> = Vec::new();
    let mut eof = false;
    for _ in 0..layout.slab_count() {
        if grants.recv().is_err() {
            return Ok(()); // the uploader gave up
        }
        let slab = loop {
            if let Some(slab) = enc.next_slab()? {
                break slab;
            }
            if rest.is_empty() {
                if eof {
                    // `finish` names how short the file was.
                    enc.finish()?;
                    return Err(TransferError::Input {
                        path: path.into(),
                        source: std::io::Error::other("the file ended before its size"),
                    });
                }
                let n = file.read(&mut buf).map_err(|source| TransferError::Input {
                    path: path.into(),
                    source,
                })?;
                if n == 0 {
                    eof = true;
                    continue;
                }
                rest.extend_from_slice(&buf[..n]);
            }
            let used = enc.feed(&rest)?;
            rest.drain(..used);
        };
        if tx.send(Ok(slab)).is_err() {
            return Ok(());
        }
    }
    if !rest.is_empty() || file.read(&mut buf[..1]).is_ok_and(|n| n > 0) {
        return Err(TransferError::Input {
            path: path.into(),
            source: std::io::Error::other("the file grew while it was read"),
        });
    }
    enc.finish()?;
    Ok(())
}

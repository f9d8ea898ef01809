//! Blob storage on a host: content-addressed, quota-bounded, crash-safe, and only ever kept
//! while somebody holds it.
//!
//! Goals: a blob becomes visible only after its bytes matched their BLAKE3 root (the API takes a
//! [`VerifiedBody`], so no path can store unverified bytes) and were made durable (temp file,
//! fsync, rename, fsync of the directory); a restart keeps every blob, its holds, and recomputes
//! usage; the quota is never exceeded, even by concurrent puts; only regular files are ever
//! opened (anything else in the store's directories — FIFO, symlink, directory, device — is an
//! error, logged, never served, and never blocks). Non-goals: deduplicating across hosts,
//! erasure coding (the tenant does that), contracts (Escrow work).
//!
//! Holds (see `btfs_core::protocol` for the rules): every put records the putting peer's hold,
//! at most [`MAX_HOLDERS`] per blob; [`BlobStore::release`] drops a hold and deletes the blob
//! when none is left; [`BlobStore::claim`] marks holds as kept by a completed upload;
//! [`BlobStore::sweep`] drops unclaimed holds older than the grace period. Blobs found on disk
//! without any hold record (written before holds existed) are *legacy*: kept, never swept, and
//! nobody can release them.
//!
//! Two implementations share the [`BlobStore`] trait and its test suite: [`MemStore`] for
//! in-process tests and [`FsStore`] for real hosts. Disk layout of `FsStore`:
//!
//! ```text
//! <data_dir>/blobs/<first 2 hex digits>/<64 hex digits>   one file per blob
//! <data_dir>/tmp/                                          puts in progress (emptied on open)
//! <data_dir>/holds.redb                                    root → holds (written before the blob)
//! ```
//!
//! A hold record is committed before its blob file is renamed into place, so a crash leaves at
//! worst a record without a file (dropped on the next open), never an unowned blob.
//!
//! Blob files of [`DIRECT_MIN`] bytes or more are written with `O_DIRECT` (straight from the
//! put's [`Body`]: a reused, 4 KiB-aligned buffer the shard server read the bytes into, padded
//! with zeros to 4 KiB, then truncated to the blob's length) and fsynced like every other: the shards a host keeps are cold data, and copying them into the page cache
//! was the largest CPU cost of a put (new cache pages for every byte). A filesystem that
//! refuses `O_DIRECT` (tmpfs) gets ordinary buffered writes; durability is the same either way:
//! a put is answered only after `fsync` of the file and of its directory.

use std::collections::HashMap;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use btfs_core::protocol::{MAX_BLOB_LEN, MAX_HOLDERS};
use btfs_core::{Root, VerifiedShard};
use libp2p::PeerId;
use redb::{Database, ReadableTable, TableDefinition};
use thiserror::Error;

/// Smallest blob written with `O_DIRECT` (smaller ones, e.g. manifests, are buffered).
pub const DIRECT_MIN: usize = 64 * 1024;
/// Alignment of `O_DIRECT` buffers, lengths and offsets (the largest logical block size).
const DIRECT_ALIGN: usize = 4096;
/// Idle [`Body`] buffers kept for reuse (each up to [`MAX_BLOB_LEN`] + 8 KiB).
const POOLED_BODIES: usize = 8;

/// Idle [`Body`] buffers.
static BODY_POOL: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// The bytes of one put, in a reused buffer whose start is 4 KiB-aligned, so that
/// [`FsStore`] writes them with `O_DIRECT` straight from where the shard server read them off
/// the stream: no per-put allocation, zeroing, page faults or copy. Dropping a `Body` returns
/// its buffer to a small pool ([`POOLED_BODIES`] buffers).
pub struct Body {
    buf: Vec<u8>,
    start: usize,
    len: usize,
}

impl Body {
    /// A body of `len` bytes (the caller bounds `len`: the shard server refuses a put over
    /// [`MAX_BLOB_LEN`] before it asks for a body). Its content is unspecified (bytes of an
    /// earlier put): overwrite all of [`Body::bytes_mut`] before use.
    pub fn with_len(len: usize) -> Self {
        let mut buf = lock(&BODY_POOL).pop().unwrap_or_default();
        // Room for the aligned start, the body and its padding to a whole 4 KiB block. Only a
        // buffer that grows is zeroed (the new part); the rest is overwritten by the caller.
        let need = len.next_multiple_of(DIRECT_ALIGN) + DIRECT_ALIGN;
        if buf.len() < need {
            buf.resize(need, 0);
        }
        let start = buf.as_ptr().align_offset(DIRECT_ALIGN);
        // The padding stays zero: `bytes_mut` never reaches it.
        buf[start + len..start + len.next_multiple_of(DIRECT_ALIGN)].fill(0);
        Self { buf, start, len }
    }

    /// A body holding a copy of `bytes`.
    pub fn copy_of(bytes: &[u8]) -> Self {
        let mut b = Self::with_len(bytes.len());
        b.bytes_mut().copy_from_slice(bytes);
        b
    }

    /// The body's bytes, to fill.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.start..self.start + self.len]
    }

    /// The body padded with zeros to whole 4 KiB blocks, at a 4 KiB-aligned address.
    fn padded_block(&self) -> &[u8] {
        &self.buf[self.start..self.start + self.len.next_multiple_of(DIRECT_ALIGN)]
    }
}

impl AsRef<[u8]> for Body {
    fn as_ref(&self) -> &[u8] {
        &self.buf[self.start..self.start + self.len]
    }
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Body({} bytes)", self.len)
    }
}

impl Drop for Body {
    fn drop(&mut self) {
        let mut pool = lock(&BODY_POOL);
        if pool.len() < POOLED_BODIES {
            pool.push(std::mem::take(&mut self.buf));
        }
    }
}

/// A put's body that matched its root: the only thing [`BlobStore::put`] stores.
pub type VerifiedBody = VerifiedShard<Body>;

/// root (32 bytes) → encoded [`Entry`] holds.
const HOLDS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("holds_v1");

/// A storage operation failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Storing would exceed the quota.
    #[error("quota exceeded: {used} of {quota} bytes used, {wanted} more requested")]
    Quota {
        /// Bytes in use (including reservations).
        used: u64,
        /// Configured quota.
        quota: u64,
        /// Size of the refused blob.
        wanted: u64,
    },
    /// A blob on disk is larger than any valid blob (tampered or foreign file).
    #[error("blob file {0} is larger than the protocol allows")]
    Oversized(PathBuf),
    /// Something other than a regular file sits where a blob file should be.
    #[error("{path} is a {kind}, not a regular blob file; remove it (the store never opens it)")]
    NotRegular {
        /// Where.
        path: PathBuf,
        /// What it is.
        kind: &'static str,
    },
    /// The store does not hold the blob.
    #[error("this host does not hold {0}")]
    NotHeld(Root),
    /// The requester holds no hold on the blob.
    #[error("you hold no hold on {0}: only the peer that put a blob can release or claim it (an unclaimed hold also ends after the grace period)")]
    NotHolder(Root),
    /// The blob has the maximum number of holds.
    #[error("{0} already has {MAX_HOLDERS} holders; put it on another host")]
    TooManyHolders(Root),
    /// Disk I/O failed.
    #[error("storage I/O error at {path}")]
    Io {
        /// Where.
        path: PathBuf,
        /// What.
        #[source]
        source: std::io::Error,
    },
    /// The hold database failed.
    #[error("hold database {path}: {why}")]
    Db {
        /// Where.
        path: PathBuf,
        /// What.
        why: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Whether a put stored new bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// Newly stored.
    Stored,
    /// Already held; the requester's hold was recorded (or refreshed).
    AlreadyHeld,
}

/// One peer's hold on a blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hold {
    /// The peer that put the blob.
    pub peer: PeerId,
    /// Kept by a completed upload (never swept).
    pub claimed: bool,
    /// When the hold was last put, in Unix milliseconds.
    pub since_ms: u64,
}

/// What a sweep removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Unclaimed holds that expired.
    pub holds_dropped: u64,
    /// Blobs deleted because no hold was left.
    pub blobs_deleted: u64,
    /// Bytes freed.
    pub bytes_freed: u64,
}

/// Content-addressed blob storage. Methods block; call them from `spawn_blocking`.
pub trait BlobStore: Send + Sync + 'static {
    /// Stores verified bytes under their root and records `holder`'s hold (at `now_ms`).
    fn put(
        &self,
        root: &Root,
        blob: &VerifiedBody,
        holder: PeerId,
        now_ms: u64,
    ) -> Result<PutOutcome, StoreError>;
    /// Reads a blob.
    fn get(&self, root: &Root) -> Result<Option<Vec<u8>>, StoreError>;
    /// Size of a blob, if held.
    fn size(&self, root: &Root) -> Result<Option<u64>, StoreError>;
    /// Drops `holder`'s hold; deletes the blob when no hold is left. Returns whether it was
    /// deleted.
    fn release(&self, root: &Root, holder: PeerId) -> Result<bool, StoreError>;
    /// Marks `holder`'s holds on every root as claimed; all or nothing.
    fn claim(&self, roots: &[Root], holder: PeerId) -> Result<(), StoreError>;
    /// Drops unclaimed holds older than `grace_ms` and deletes blobs left without a hold.
    fn sweep(&self, now_ms: u64, grace_ms: u64) -> Result<SweepReport, StoreError>;
    /// The holds on a blob (empty for legacy blobs and blobs not held).
    fn holds(&self, root: &Root) -> Vec<Hold>;
    /// Bytes in use.
    fn used(&self) -> u64;
    /// The quota in bytes.
    fn quota(&self) -> u64;
    /// Blobs held.
    fn count(&self) -> u64;
    /// Whether `len` more bytes fit right now (a cheap pre-check before reading a body).
    fn fits(&self, len: u64) -> bool {
        self.used().saturating_add(len) <= self.quota()
    }
}

/// Quota accounting shared by both stores: reserve before writing, release on failure.
struct Usage {
    used: AtomicU64,
    count: AtomicU64,
    quota: u64,
}

impl Usage {
    fn new(used: u64, count: u64, quota: u64) -> Self {
        Self {
            used: AtomicU64::new(used),
            count: AtomicU64::new(count),
            quota,
        }
    }
    fn reserve(&self, len: u64) -> Result<(), StoreError> {
        self.used
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| {
                used.checked_add(len).filter(|n| *n <= self.quota)
            })
            .map(|_| ())
            .map_err(|used| StoreError::Quota {
                used,
                quota: self.quota,
                wanted: len,
            })
    }
    fn release(&self, len: u64) {
        self.used.fetch_sub(len, Ordering::SeqCst);
    }
}

/// What the store knows about one blob.
#[derive(Debug, Clone, Default)]
struct Entry {
    len: u64,
    holds: Vec<Hold>,
    /// On disk from before holds existed: kept regardless of holds.
    legacy: bool,
    /// Its bytes are being written right now.
    writing: bool,
}

impl Entry {
    /// Records (or refreshes) a hold.
    fn hold(&mut self, root: &Root, peer: PeerId, now_ms: u64) -> Result<(), StoreError> {
        if let Some(h) = self.holds.iter_mut().find(|h| h.peer == peer) {
            h.since_ms = now_ms;
            return Ok(());
        }
        if self.holds.len() >= MAX_HOLDERS {
            return Err(StoreError::TooManyHolders(*root));
        }
        self.holds.push(Hold {
            peer,
            claimed: false,
            since_ms: now_ms,
        });
        Ok(())
    }

    /// Whether nothing keeps the blob any more.
    fn orphaned(&self) -> bool {
        self.holds.is_empty() && !self.legacy && !self.writing
    }

    /// Wire form in the hold database:
    /// `version 1 ‖ legacy: u8 ‖ n: u8 ‖ n × (claimed: u8 ‖ since_ms: u64 LE ‖ peer_len: u8 ‖ peer)`.
    fn encode(&self) -> Vec<u8> {
        let mut b = vec![1, u8::from(self.legacy), self.holds.len() as u8];
        for h in &self.holds {
            let peer = h.peer.to_bytes();
            b.push(u8::from(h.claimed));
            b.extend_from_slice(&h.since_ms.to_le_bytes());
            b.push(peer.len() as u8);
            b.extend_from_slice(&peer);
        }
        b
    }

    /// Parses [`Entry::encode`]'s output (`len` comes from the file).
    fn decode(b: &[u8]) -> Option<(bool, Vec<Hold>)> {
        let (&[1, legacy, n], mut rest) = b.split_first_chunk::<3>()? else {
            return None;
        };
        let mut holds = Vec::new();
        for _ in 0..n.min(MAX_HOLDERS as u8) {
            let (&[claimed], r) = rest.split_first_chunk::<1>()?;
            let (since, r) = r.split_first_chunk::<8>()?;
            let (&[plen], r) = r.split_first_chunk::<1>()?;
            let peer = PeerId::from_bytes(r.get(..usize::from(plen))?).ok()?;
            rest = &r[usize::from(plen)..];
            holds.push(Hold {
                peer,
                claimed: claimed == 1,
                since_ms: u64::from_le_bytes(*since),
            });
        }
        Some((legacy == 1, holds))
    }
}

/// The holds of every blob, and the rules for changing them; shared by both stores. Each
/// change returns the roots whose entry changed and the roots to delete (with their length).
#[derive(Default)]
struct Index {
    entries: HashMap<Root, Entry>,
}

/// Roots whose entry must be saved, and `(root, len)` of blobs to delete.
#[derive(Default)]
struct Changes {
    save: Vec<Root>,
    delete: Vec<(Root, u64)>,
}

impl Index {
    fn release(&mut self, root: &Root, peer: PeerId) -> Result<Changes, StoreError> {
        let e = self
            .entries
            .get_mut(root)
            .ok_or(StoreError::NotHeld(*root))?;
        let before = e.holds.len();
        e.holds.retain(|h| h.peer != peer);
        if e.holds.len() == before {
            return Err(StoreError::NotHolder(*root));
        }
        let mut c = Changes::default();
        if e.orphaned() {
            c.delete.push((*root, e.len));
            self.entries.remove(root);
        } else {
            c.save.push(*root);
        }
        Ok(c)
    }

    fn claim(&mut self, roots: &[Root], peer: PeerId) -> Result<Changes, StoreError> {
        for r in roots {
            let e = self.entries.get(r).ok_or(StoreError::NotHeld(*r))?;
            if !e.holds.iter().any(|h| h.peer == peer) {
                return Err(StoreError::NotHolder(*r));
            }
        }
        let mut c = Changes::default();
        for r in roots {
            if let Some(h) = self
                .entries
                .get_mut(r)
                .and_then(|e| e.holds.iter_mut().find(|h| h.peer == peer))
            {
                if !h.claimed {
                    h.claimed = true;
                    c.save.push(*r);
                }
            }
        }
        Ok(c)
    }

    fn sweep(&mut self, now_ms: u64, grace_ms: u64) -> (Changes, u64) {
        let mut c = Changes::default();
        let mut dropped = 0;
        for (root, e) in &mut self.entries {
            let before = e.holds.len();
            e.holds
                .retain(|h| h.claimed || now_ms.saturating_sub(h.since_ms) < grace_ms);
            dropped += (before - e.holds.len()) as u64;
            if e.orphaned() {
                c.delete.push((*root, e.len));
            } else if e.holds.len() != before {
                c.save.push(*root);
            }
        }
        for (root, _) in &c.delete {
            self.entries.remove(root);
        }
        (c, dropped)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// In-memory store for tests.
pub struct MemStore {
    blobs: Mutex<(HashMap<Root, Vec<u8>>, Index)>,
    usage: Usage,
}

impl MemStore {
    /// An empty store with a quota.
    pub fn new(quota: u64) -> Self {
        Self {
            blobs: Mutex::default(),
            usage: Usage::new(0, 0, quota),
        }
    }

    fn apply(&self, blobs: &mut HashMap<Root, Vec<u8>>, c: &Changes) {
        for (root, len) in &c.delete {
            blobs.remove(root);
            self.usage.release(*len);
            self.usage.count.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl BlobStore for MemStore {
    fn put(
        &self,
        root: &Root,
        blob: &VerifiedBody,
        holder: PeerId,
        now_ms: u64,
    ) -> Result<PutOutcome, StoreError> {
        let mut guard = lock(&self.blobs);
        let (blobs, index) = &mut *guard;
        if let Some(e) = index.entries.get_mut(root) {
            e.hold(root, holder, now_ms)?;
            return Ok(PutOutcome::AlreadyHeld);
        }
        let len = blob.bytes().len() as u64;
        self.usage.reserve(len)?;
        let mut e = Entry {
            len,
            ..Entry::default()
        };
        e.hold(root, holder, now_ms)?;
        index.entries.insert(*root, e);
        blobs.insert(*root, blob.bytes().to_vec());
        self.usage.count.fetch_add(1, Ordering::SeqCst);
        Ok(PutOutcome::Stored)
    }
    fn get(&self, root: &Root) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(lock(&self.blobs).0.get(root).cloned())
    }
    fn size(&self, root: &Root) -> Result<Option<u64>, StoreError> {
        Ok(lock(&self.blobs).0.get(root).map(|b| b.len() as u64))
    }
    fn release(&self, root: &Root, holder: PeerId) -> Result<bool, StoreError> {
        let mut guard = lock(&self.blobs);
        let (blobs, index) = &mut *guard;
        let c = index.release(root, holder)?;
        self.apply(blobs, &c);
        Ok(!c.delete.is_empty())
    }
    fn claim(&self, roots: &[Root], holder: PeerId) -> Result<(), StoreError> {
        lock(&self.blobs).1.claim(roots, holder).map(|_| ())
    }
    fn sweep(&self, now_ms: u64, grace_ms: u64) -> Result<SweepReport, StoreError> {
        let mut guard = lock(&self.blobs);
        let (blobs, index) = &mut *guard;
        let (c, holds_dropped) = index.sweep(now_ms, grace_ms);
        self.apply(blobs, &c);
        Ok(SweepReport {
            holds_dropped,
            blobs_deleted: c.delete.len() as u64,
            bytes_freed: c.delete.iter().map(|(_, l)| l).sum(),
        })
    }
    fn holds(&self, root: &Root) -> Vec<Hold> {
        lock(&self.blobs)
            .1
            .entries
            .get(root)
            .map(|e| e.holds.clone())
            .unwrap_or_default()
    }
    fn used(&self) -> u64 {
        self.usage.used.load(Ordering::SeqCst)
    }
    fn quota(&self) -> u64 {
        self.usage.quota
    }
    fn count(&self) -> u64 {
        self.usage.count.load(Ordering::SeqCst)
    }
}

/// On-disk store (see the module docs for the layout).
pub struct FsStore {
    blobs: PathBuf,
    tmp: PathBuf,
    db: Database,
    db_path: PathBuf,
    usage: Usage,
    index: Mutex<Index>,
    /// Whether this filesystem takes `O_DIRECT` writes (cleared at the first refusal).
    direct: std::sync::atomic::AtomicBool,
}

/// What a directory entry is, for error messages; `None` for a regular file.
fn special_kind(t: fs::FileType) -> Option<&'static str> {
    use std::os::unix::fs::FileTypeExt;
    if t.is_file() {
        None
    } else if t.is_symlink() {
        Some("symbolic link")
    } else if t.is_dir() {
        Some("directory")
    } else if t.is_fifo() {
        Some("FIFO")
    } else if t.is_socket() {
        Some("socket")
    } else if t.is_block_device() || t.is_char_device() {
        Some("device")
    } else {
        Some("special file")
    }
}

impl FsStore {
    /// Opens (creating if needed) a store under `dir`, empties `tmp/`, indexes existing blobs
    /// (regular files only; anything else is logged and ignored) and loads their holds.
    pub fn open(dir: &Path, quota: u64) -> Result<Self, StoreError> {
        let blobs = dir.join("blobs");
        let tmp = dir.join("tmp");
        fs::create_dir_all(&blobs).map_err(io(&blobs))?;
        if tmp.exists() {
            fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
        }
        fs::create_dir_all(&tmp).map_err(io(&tmp))?;
        let db_path = dir.join("holds.redb");
        let db_err = |e: &dyn std::fmt::Display| StoreError::Db {
            path: db_path.clone(),
            why: e.to_string(),
        };
        let db = Database::create(&db_path).map_err(|e| db_err(&e))?;

        let mut index = Index::default();
        for shelf in fs::read_dir(&blobs).map_err(io(&blobs))? {
            let shelf = shelf.map_err(io(&blobs))?;
            let (path, kind) = (shelf.path(), shelf.file_type().map_err(io(&shelf.path()))?);
            if !kind.is_dir() {
                tracing::error!(path = %path.display(), kind = special_kind(kind).unwrap_or("file"), "not a blob shelf directory; ignored");
                continue;
            }
            for f in fs::read_dir(&path).map_err(io(&path))? {
                let f = f.map_err(io(&path))?;
                let fpath = f.path();
                if let Some(kind) = special_kind(f.file_type().map_err(io(&fpath))?) {
                    let e = StoreError::NotRegular { path: fpath, kind };
                    tracing::error!(error = ?e, "ignoring a non-regular file in the blob store");
                    continue;
                }
                let name = f.file_name();
                let Some(root) = name.to_str().and_then(|n| Root::from_hex(n).ok()) else {
                    tracing::warn!(path = %fpath.display(), "file name is not a blob root; ignored");
                    continue;
                };
                let len = f.metadata().map_err(io(&fpath))?.len();
                index.entries.insert(
                    root,
                    Entry {
                        len,
                        legacy: true,
                        ..Entry::default()
                    },
                );
            }
        }
        // Holds: a record without a file was a put that crashed before its rename.
        let tx = db.begin_write().map_err(|e| db_err(&e))?;
        {
            let mut t = tx.open_table(HOLDS).map_err(|e| db_err(&e))?;
            let mut stale = Vec::new();
            for row in t.iter().map_err(|e| db_err(&e))? {
                let (k, v) = row.map_err(|e| db_err(&e))?;
                let Ok(key) = <[u8; 32]>::try_from(k.value()) else {
                    stale.push(k.value().to_vec());
                    continue;
                };
                let root = Root::from_bytes(key);
                match (index.entries.get_mut(&root), Entry::decode(v.value())) {
                    (Some(e), Some((legacy, holds))) => {
                        e.legacy = legacy;
                        e.holds = holds;
                    }
                    (Some(_), None) => {
                        tracing::warn!(%root, "unreadable hold record; the blob is kept as legacy")
                    }
                    (None, _) => stale.push(key.to_vec()),
                }
            }
            for k in stale {
                t.remove(k.as_slice()).map_err(|e| db_err(&e))?;
            }
        }
        tx.commit().map_err(|e| db_err(&e))?;
        // A record with no hold left (e.g. a crash mid-release) keeps nothing.
        let orphans: Vec<Root> = index
            .entries
            .iter()
            .filter(|(_, e)| e.orphaned())
            .map(|(r, _)| *r)
            .collect();
        let used = index.entries.values().map(|e| e.len).sum();
        let count = index.entries.len() as u64;
        let legacy = index.entries.values().filter(|e| e.legacy).count();
        if legacy > 0 {
            tracing::info!(
                legacy,
                "blobs without hold records (from before holds) are kept"
            );
        }
        let store = Self {
            blobs,
            tmp,
            db,
            db_path,
            usage: Usage::new(used, count, quota),
            index: Mutex::new(index),
            direct: std::sync::atomic::AtomicBool::new(true),
        };
        if !orphans.is_empty() {
            let mut idx = lock(&store.index);
            let delete = orphans
                .iter()
                .filter_map(|r| idx.entries.remove(r).map(|e| (*r, e.len)))
                .collect();
            store.apply(
                &idx,
                Changes {
                    save: Vec::new(),
                    delete,
                },
            )?;
        }
        Ok(store)
    }

    /// Path of a blob's file.
    pub fn path_of(&self, root: &Root) -> PathBuf {
        let hex = root.to_hex();
        self.blobs.join(&hex[..2]).join(hex)
    }

    fn db_err(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError::Db {
            path: self.db_path.clone(),
            why: e.to_string(),
        }
    }

    /// Persists `c` in one transaction (saved entries from `idx`, deleted ones removed), then
    /// deletes the files of deleted blobs and releases their bytes.
    fn apply(&self, idx: &Index, c: Changes) -> Result<(), StoreError> {
        if c.save.is_empty() && c.delete.is_empty() {
            return Ok(());
        }
        let tx = self.db.begin_write().map_err(|e| self.db_err(e))?;
        {
            let mut t = tx.open_table(HOLDS).map_err(|e| self.db_err(e))?;
            for r in &c.save {
                if let Some(e) = idx.entries.get(r) {
                    t.insert(r.as_bytes().as_slice(), e.encode().as_slice())
                        .map_err(|e| self.db_err(e))?;
                }
            }
            for (r, _) in &c.delete {
                t.remove(r.as_bytes().as_slice())
                    .map_err(|e| self.db_err(e))?;
            }
        }
        tx.commit().map_err(|e| self.db_err(e))?;
        for (root, len) in &c.delete {
            let path = self.path_of(root);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::error!(path = %path.display(), error = ?e, "cannot delete a released blob")
                }
            }
            self.usage.release(*len);
            self.usage.count.fetch_sub(1, Ordering::SeqCst);
        }
        Ok(())
    }

    fn write_durably(&self, root: &Root, body: &Body) -> Result<(), StoreError> {
        let tmp = self
            .tmp
            .join(format!("{}.{}", root.to_hex(), rand::random::<u64>()));
        let result = (|| {
            self.create_durably(&tmp, body)?;
            let dest = self.path_of(root);
            let shelf = dest.parent().unwrap_or(&self.blobs);
            fs::create_dir_all(shelf).map_err(io(shelf))?;
            fs::rename(&tmp, &dest).map_err(io(&dest))?;
            fs::File::open(shelf)
                .and_then(|d| d.sync_all())
                .map_err(io(shelf))
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    /// Creates the file `path` holding `body`, fsynced.
    fn create_durably(&self, path: &Path, body: &Body) -> Result<(), StoreError> {
        let bytes = body.as_ref();
        if bytes.len() >= DIRECT_MIN && self.direct.load(Ordering::Relaxed) {
            match create_direct(path, body) {
                Ok(()) => return Ok(()),
                Err(e) if e.raw_os_error() == Some(nix::libc::EINVAL) => {
                    let _ = fs::remove_file(path);
                    self.direct.store(false, Ordering::Relaxed);
                    tracing::info!(dir = %self.tmp.display(), "the filesystem refuses O_DIRECT writes; using buffered writes");
                }
                Err(e) => {
                    let _ = fs::remove_file(path);
                    return Err(io(path)(e));
                }
            }
        }
        let mut f = fs::File::create_new(path).map_err(io(path))?;
        f.write_all(bytes).map_err(io(path))?;
        f.sync_all().map_err(io(path))
    }

    /// Opens a blob file only if it is a regular file: `O_NOFOLLOW` refuses a symlink,
    /// `O_NONBLOCK` keeps a FIFO from blocking the open, and `fstat` checks what was opened.
    fn open_regular(&self, root: &Root) -> Result<Option<(fs::File, u64)>, StoreError> {
        use std::os::unix::fs::OpenOptionsExt;
        let path = self.path_of(root);
        let opened = fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
            .open(&path);
        let file = match opened {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) if e.raw_os_error() == Some(nix::libc::ELOOP) => {
                let e = StoreError::NotRegular {
                    path,
                    kind: "symbolic link",
                };
                tracing::error!(error = ?e, "refusing to serve a blob");
                return Err(e);
            }
            Err(e) => return Err(io(&path)(e)),
        };
        let meta = file.metadata().map_err(io(&path))?;
        if let Some(kind) = special_kind(meta.file_type()) {
            let e = StoreError::NotRegular { path, kind };
            tracing::error!(error = ?e, "refusing to serve a blob");
            return Err(e);
        }
        if meta.len() > u64::from(MAX_BLOB_LEN) {
            return Err(StoreError::Oversized(path));
        }
        Ok(Some((file, meta.len())))
    }

    fn known(&self, root: &Root) -> bool {
        lock(&self.index)
            .entries
            .get(root)
            .is_some_and(|e| !e.writing)
    }
}

/// [`FsStore::create_durably`] through `O_DIRECT`: the bytes go from the body's aligned buffer
/// to the disk without a copy and without the page cache.
fn create_direct(path: &Path, body: &Body) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(nix::libc::O_DIRECT)
        .open(path)?;
    f.write_all(body.padded_block())?;
    f.set_len(body.as_ref().len() as u64)?;
    f.sync_all()
}

impl BlobStore for FsStore {
    fn put(
        &self,
        root: &Root,
        blob: &VerifiedBody,
        holder: PeerId,
        now_ms: u64,
    ) -> Result<PutOutcome, StoreError> {
        let len = blob.bytes().len() as u64;
        {
            let mut idx = lock(&self.index);
            if let Some(e) = idx.entries.get_mut(root) {
                // Held, or another put of the same bytes is finishing right now.
                let before = e.clone();
                e.hold(root, holder, now_ms)?;
                let saved = self.apply(
                    &idx,
                    Changes {
                        save: vec![*root],
                        delete: Vec::new(),
                    },
                );
                if saved.is_err() {
                    idx.entries.insert(*root, before);
                }
                return saved.map(|()| PutOutcome::AlreadyHeld);
            }
            self.usage.reserve(len)?;
            let mut e = Entry {
                len,
                writing: true,
                ..Entry::default()
            };
            e.hold(root, holder, now_ms)?;
            idx.entries.insert(*root, e);
            // The hold is durable before the blob is visible.
            let saved = self.apply(
                &idx,
                Changes {
                    save: vec![*root],
                    delete: Vec::new(),
                },
            );
            if let Err(e) = saved {
                idx.entries.remove(root);
                self.usage.release(len);
                return Err(e);
            }
        }
        let written = self.write_durably(root, blob.buffer());
        let mut idx = lock(&self.index);
        match written {
            Ok(()) => {
                self.usage.count.fetch_add(1, Ordering::SeqCst);
                let orphaned = idx.entries.get_mut(root).is_some_and(|e| {
                    e.writing = false;
                    e.orphaned()
                });
                if orphaned {
                    // Every hold was released while the bytes were being written.
                    idx.entries.remove(root);
                    self.apply(
                        &idx,
                        Changes {
                            save: Vec::new(),
                            delete: vec![(*root, len)],
                        },
                    )?;
                }
                Ok(PutOutcome::Stored)
            }
            Err(e) => {
                idx.entries.remove(root);
                self.usage.release(len);
                let _ = self.db.begin_write().map(|tx| {
                    if let Ok(mut t) = tx.open_table(HOLDS) {
                        let _ = t.remove(root.as_bytes().as_slice());
                    }
                    let _ = tx.commit();
                });
                Err(e)
            }
        }
    }

    fn get(&self, root: &Root) -> Result<Option<Vec<u8>>, StoreError> {
        if !self.known(root) {
            return Ok(None);
        }
        let Some((file, len)) = self.open_regular(root)? else {
            return Ok(None);
        };
        let path = self.path_of(root);
        let mut out = Vec::with_capacity(len as usize);
        file.take(u64::from(MAX_BLOB_LEN) + 1)
            .read_to_end(&mut out)
            .map_err(io(&path))?;
        if out.len() > MAX_BLOB_LEN as usize {
            return Err(StoreError::Oversized(path));
        }
        Ok(Some(out))
    }

    fn size(&self, root: &Root) -> Result<Option<u64>, StoreError> {
        if !self.known(root) {
            return Ok(None);
        }
        Ok(self.open_regular(root)?.map(|(_, len)| len))
    }

    fn release(&self, root: &Root, holder: PeerId) -> Result<bool, StoreError> {
        let mut idx = lock(&self.index);
        let before = idx.entries.get(root).cloned();
        let c = idx.release(root, holder)?;
        let deleted = !c.delete.is_empty();
        let applied = self.apply(&idx, c);
        if applied.is_err() {
            if let Some(b) = before {
                idx.entries.insert(*root, b);
            }
        }
        applied.map(|()| deleted)
    }

    fn claim(&self, roots: &[Root], holder: PeerId) -> Result<(), StoreError> {
        let mut idx = lock(&self.index);
        let c = idx.claim(roots, holder)?;
        self.apply(&idx, c)
    }

    fn sweep(&self, now_ms: u64, grace_ms: u64) -> Result<SweepReport, StoreError> {
        let mut idx = lock(&self.index);
        let (c, holds_dropped) = idx.sweep(now_ms, grace_ms);
        let report = SweepReport {
            holds_dropped,
            blobs_deleted: c.delete.len() as u64,
            bytes_freed: c.delete.iter().map(|(_, l)| l).sum(),
        };
        self.apply(&idx, c)?;
        Ok(report)
    }

    fn holds(&self, root: &Root) -> Vec<Hold> {
        lock(&self.index)
            .entries
            .get(root)
            .map(|e| e.holds.clone())
            .unwrap_or_default()
    }

    fn used(&self) -> u64 {
        self.usage.used.load(Ordering::SeqCst)
    }
    fn quota(&self) -> u64 {
        self.usage.quota
    }
    fn count(&self) -> u64 {
        self.usage.count.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    fn verified(bytes: &[u8]) -> (Root, VerifiedBody) {
        let root = Root::of(bytes);
        (root, root.verify_in(Body::copy_of(bytes)).unwrap())
    }

    /// The same behaviour, checked on both implementations.
    fn contract(store: &dyn BlobStore) {
        let a = PeerId::random();
        let (root, blob) = verified(b"hello");
        assert_eq!(store.get(&root).unwrap(), None);
        assert_eq!(store.put(&root, &blob, a, 1).unwrap(), PutOutcome::Stored);
        assert_eq!(
            store.put(&root, &blob, a, 2).unwrap(),
            PutOutcome::AlreadyHeld
        );
        assert_eq!(store.get(&root).unwrap().unwrap(), b"hello");
        assert_eq!(store.size(&root).unwrap(), Some(5));
        assert_eq!((store.used(), store.count()), (5, 1));
        let h = store.holds(&root);
        assert_eq!(h.len(), 1);
        assert_eq!((h[0].peer, h[0].claimed, h[0].since_ms), (a, false, 2));
        // quota is 10 bytes: 6 more do not fit, and nothing is stored
        let (big, big_blob) = verified(b"abcdef");
        assert!(matches!(
            store.put(&big, &big_blob, a, 3),
            Err(StoreError::Quota { .. })
        ));
        assert_eq!(store.get(&big).unwrap(), None);
        assert_eq!(store.used(), 5);
    }

    /// Holds: release, claim, sweep, limits.
    fn holds_contract(store: &dyn BlobStore) {
        let (a, b, c) = (PeerId::random(), PeerId::random(), PeerId::random());
        let (x, xb) = verified(b"x-blob");
        let (y, yb) = verified(b"y-blob");
        store.put(&x, &xb, a, 1000).unwrap();
        store.put(&x, &xb, b, 1000).unwrap();
        // Somebody who never put it can neither release nor claim it.
        assert!(matches!(
            store.release(&x, c),
            Err(StoreError::NotHolder(_))
        ));
        assert!(matches!(
            store.claim(&[x], c),
            Err(StoreError::NotHolder(_))
        ));
        assert!(matches!(store.release(&y, a), Err(StoreError::NotHeld(_))));
        assert_eq!(store.holds(&x).len(), 2);
        // One holder's release keeps the blob for the other; the last one deletes it.
        assert!(!store.release(&x, a).unwrap());
        assert_eq!(store.get(&x).unwrap().unwrap(), b"x-blob");
        assert!(matches!(
            store.release(&x, a),
            Err(StoreError::NotHolder(_))
        ));
        assert!(store.release(&x, b).unwrap());
        assert_eq!(store.get(&x).unwrap(), None);
        assert_eq!((store.used(), store.count()), (0, 0));

        // A claim is all or nothing.
        store.put(&x, &xb, a, 1000).unwrap();
        store.put(&y, &yb, a, 1000).unwrap();
        let missing = Root::of(b"missing");
        assert!(matches!(
            store.claim(&[x, missing], a),
            Err(StoreError::NotHeld(_))
        ));
        assert!(!store.holds(&x)[0].claimed);
        store.claim(&[x], a).unwrap();
        assert!(store.holds(&x)[0].claimed);
        // The sweep drops the unclaimed blob once the grace period passed, never the claimed.
        assert_eq!(store.sweep(1500, 1000).unwrap(), SweepReport::default());
        let r = store.sweep(2000, 1000).unwrap();
        assert_eq!((r.holds_dropped, r.blobs_deleted, r.bytes_freed), (1, 1, 6));
        assert_eq!(store.get(&y).unwrap(), None);
        assert_eq!(store.sweep(u64::MAX, 1).unwrap(), SweepReport::default());
        assert_eq!(store.get(&x).unwrap().unwrap(), b"x-blob");
        // A claimed hold can still be released by its holder (the tenant deletes its file).
        store.put(&y, &yb, b, 3000).unwrap();
        store.claim(&[y], b).unwrap();
        assert!(store.release(&y, b).unwrap());

        // At most MAX_HOLDERS holds per blob.
        for _ in 1..MAX_HOLDERS {
            store.put(&x, &xb, PeerId::random(), 1).unwrap();
        }
        assert!(matches!(
            store.put(&x, &xb, c, 1),
            Err(StoreError::TooManyHolders(_))
        ));
        assert_eq!(store.holds(&x).len(), MAX_HOLDERS);
    }

    #[test]
    fn mem_store_contract() {
        contract(&MemStore::new(10));
        holds_contract(&MemStore::new(1000));
    }

    #[test]
    fn fs_store_contract_and_restart() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = FsStore::open(dir.path(), 10).unwrap();
            contract(&store);
            fs::write(store.tmp.join("leftover"), b"x").unwrap();
        }
        let store = FsStore::open(dir.path(), 10).unwrap();
        assert_eq!((store.used(), store.count()), (5, 1));
        assert_eq!(store.get(&Root::of(b"hello")).unwrap().unwrap(), b"hello");
        assert_eq!(fs::read_dir(&store.tmp).unwrap().count(), 0);
        let other = tempfile::tempdir().unwrap();
        holds_contract(&FsStore::open(other.path(), 1000).unwrap());
    }

    /// Blobs at and around the `O_DIRECT` threshold and 4 KiB boundaries, up to the largest,
    /// come back byte for byte with their exact length, also after a restart, and leave no
    /// temporary file behind (on a filesystem without `O_DIRECT` the buffered path runs).
    #[test]
    fn fs_store_keeps_exact_bytes_of_direct_and_buffered_writes() {
        let dir = tempfile::tempdir().unwrap();
        let a = PeerId::random();
        let sizes = [
            DIRECT_MIN - 64,
            DIRECT_MIN,
            DIRECT_MIN + 64,
            (1 << 20) + 4096,
            (1 << 20) + 4096 - 64,
            MAX_BLOB_LEN as usize,
        ];
        let blobs: Vec<Vec<u8>> = sizes
            .iter()
            .map(|&n| (0..n).map(|i| (i * 31 + n) as u8).collect())
            .collect();
        {
            let store = FsStore::open(dir.path(), u64::MAX).unwrap();
            for b in &blobs {
                let (root, v) = verified(b);
                assert_eq!(store.put(&root, &v, a, 1).unwrap(), PutOutcome::Stored);
                assert_eq!(store.get(&root).unwrap().as_deref(), Some(b.as_slice()));
            }
            assert_eq!(fs::read_dir(&store.tmp).unwrap().count(), 0);
        }
        let store = FsStore::open(dir.path(), u64::MAX).unwrap();
        for b in &blobs {
            let root = Root::of(b);
            assert_eq!(store.size(&root).unwrap(), Some(b.len() as u64));
            assert_eq!(store.get(&root).unwrap().as_deref(), Some(b.as_slice()));
        }
        assert_eq!(store.used(), sizes.iter().sum::<usize>() as u64);
    }

    /// A body's padding (written to disk with `O_DIRECT`, then cut off) is zero whatever an
    /// earlier put left in the reused buffer, and its bytes sit at a 4 KiB-aligned address.
    #[test]
    fn body_padding_is_zero_whatever_the_reused_buffer_held() {
        for _ in 0..4 {
            let mut b = Body::with_len(3 * DIRECT_ALIGN);
            b.bytes_mut().fill(0xff);
        }
        for len in [1, 100, DIRECT_ALIGN - 1, DIRECT_ALIGN, DIRECT_ALIGN + 1] {
            let mut b = Body::with_len(len);
            b.bytes_mut().fill(7);
            let block = b.padded_block();
            assert_eq!(block.as_ptr() as usize % DIRECT_ALIGN, 0);
            assert_eq!(block.len(), len.next_multiple_of(DIRECT_ALIGN));
            assert!(block[..len].iter().all(|&x| x == 7));
            assert!(block[len..].iter().all(|&x| x == 0), "padding of {len}");
            assert_eq!(b.as_ref().len(), len);
        }
    }

    #[test]
    fn fs_store_holds_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (PeerId::random(), PeerId::random());
        let (x, xb) = verified(b"claimed");
        let (y, yb) = verified(b"unclaimed");
        {
            let store = FsStore::open(dir.path(), 1000).unwrap();
            store.put(&x, &xb, a, 1000).unwrap();
            store.put(&y, &yb, a, 1000).unwrap();
            store.put(&y, &yb, b, 1200).unwrap();
            store.claim(&[x], a).unwrap();
        }
        let store = FsStore::open(dir.path(), 1000).unwrap();
        assert_eq!(
            store.holds(&x),
            vec![Hold {
                peer: a,
                claimed: true,
                since_ms: 1000
            }]
        );
        let hy = store.holds(&y);
        assert_eq!(hy.len(), 2);
        assert_eq!(
            (hy[1].peer, hy[1].claimed, hy[1].since_ms),
            (b, false, 1200)
        );
        // Still only the putters may release, after the restart too.
        assert!(matches!(
            store.release(&y, PeerId::random()),
            Err(StoreError::NotHolder(_))
        ));
        assert!(!store.release(&y, a).unwrap());
        // The sweep after a restart sees the recorded times.
        let r = store.sweep(1200 + 400, 400).unwrap();
        assert_eq!((r.holds_dropped, r.blobs_deleted), (1, 1));
        assert!(!store.path_of(&y).exists());
        assert!(store.path_of(&x).exists());
        assert_eq!((store.used(), store.count()), (7, 1));
    }

    #[test]
    fn fs_store_keeps_legacy_blobs_and_drops_records_without_files() {
        let dir = tempfile::tempdir().unwrap();
        let a = PeerId::random();
        let (x, xb) = verified(b"legacy");
        let (y, yb) = verified(b"record only");
        {
            let store = FsStore::open(dir.path(), 1000).unwrap();
            store.put(&x, &xb, a, 1).unwrap();
            store.put(&y, &yb, a, 1).unwrap();
            fs::remove_file(store.path_of(&y)).unwrap(); // a crash before the rename
        }
        // A blob written before holds existed: its file, no record.
        fs::remove_file(dir.path().join("holds.redb")).unwrap();
        {
            let store = FsStore::open(dir.path(), 1000).unwrap();
            assert_eq!((store.used(), store.count()), (6, 1));
            assert!(store.holds(&x).is_empty());
            assert!(matches!(
                store.release(&x, a),
                Err(StoreError::NotHolder(_))
            ));
            assert_eq!(store.sweep(u64::MAX, 1).unwrap(), SweepReport::default());
            assert_eq!(store.get(&x).unwrap().unwrap(), b"legacy");
            assert_eq!(store.get(&y).unwrap(), None);
            // A put of a legacy blob adds a hold, and releasing it keeps the blob.
            store.put(&x, &xb, a, 5).unwrap();
            assert!(!store.release(&x, a).unwrap());
        }
        let store = FsStore::open(dir.path(), 1000).unwrap();
        assert_eq!(store.get(&x).unwrap().unwrap(), b"legacy");
    }

    /// Runs `f` on a thread; fails the test if it does not finish within 5 s (a FIFO would
    /// have blocked it forever).
    fn within_5s<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(Duration::from_secs(5))
            .expect("store call blocked")
    }

    #[test]
    fn fs_store_never_opens_a_fifo_symlink_or_directory() {
        let dir = tempfile::tempdir().unwrap();
        let a = PeerId::random();
        let secret = dir.path().join("secret");
        fs::write(&secret, b"not a blob").unwrap();
        let store = Arc::new(FsStore::open(dir.path(), 1 << 20).unwrap());
        let mut roots = Vec::new();
        for (i, kind) in ["fifo", "symlink", "dir"].into_iter().enumerate() {
            let (root, blob) = verified(format!("blob {i}").as_bytes());
            store.put(&root, &blob, a, 1).unwrap();
            let path = store.path_of(&root);
            fs::remove_file(&path).unwrap();
            match kind {
                "fifo" => {
                    let ok = std::process::Command::new("mkfifo")
                        .arg(&path)
                        .status()
                        .unwrap();
                    assert!(ok.success());
                }
                "symlink" => std::os::unix::fs::symlink(&secret, &path).unwrap(),
                _ => fs::create_dir(&path).unwrap(),
            }
            roots.push((root, kind));
        }
        for &(root, kind) in &roots {
            let s = store.clone();
            let got = within_5s(move || s.get(&root));
            assert!(
                matches!(got, Err(StoreError::NotRegular { .. })),
                "{kind}: {got:?}"
            );
            let s = store.clone();
            let size = within_5s(move || s.size(&root));
            assert!(
                matches!(size, Err(StoreError::NotRegular { .. })),
                "{kind}: {size:?}"
            );
        }
        // After a restart they are not indexed at all: not served, not counted.
        drop(store);
        let store = Arc::new(within_5s({
            let d = dir.path().to_path_buf();
            move || FsStore::open(&d, 1 << 20).unwrap()
        }));
        assert_eq!((store.count(), store.used()), (0, 0));
        for &(root, _) in &roots {
            let s = store.clone();
            assert_eq!(within_5s(move || s.get(&root)).unwrap(), None);
        }
    }
}

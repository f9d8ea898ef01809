//! Blob storage on a host: content-addressed, quota-bounded, crash-safe.
//!
//! Goals: a blob becomes visible only after its bytes matched their BLAKE3 root (the API takes a
//! [`VerifiedShard`], so no path can store unverified bytes) and were made durable (temp file,
//! fsync, rename, fsync of the directory); a restart keeps every blob and recomputes usage; the
//! quota is never exceeded, even by concurrent puts. Non-goals: deduplicating across hosts,
//! erasure coding (the tenant does that), garbage collection of expired contracts (Escrow work).
//!
//! Two implementations share the [`BlobStore`] trait and its test suite: [`MemStore`] for
//! in-process tests and [`FsStore`] for real hosts. Disk layout of `FsStore`:
//!
//! ```text
//! <data_dir>/blobs/<first 2 hex digits>/<64 hex digits>   one file per blob
//! <data_dir>/tmp/                                          puts in progress (emptied on open)
//! ```

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use btfs_core::protocol::MAX_BLOB_LEN;
use btfs_core::{Root, VerifiedShard};
use thiserror::Error;

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
    /// Disk I/O failed.
    #[error("storage I/O error at {path}: {source}")]
    Io {
        /// Where.
        path: PathBuf,
        /// What.
        #[source]
        source: std::io::Error,
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
    /// Already held; nothing changed.
    AlreadyHeld,
}

/// Content-addressed blob storage. Methods block; call them from `spawn_blocking`.
pub trait BlobStore: Send + Sync + 'static {
    /// Stores verified bytes under their root.
    fn put(&self, root: &Root, blob: &VerifiedShard) -> Result<PutOutcome, StoreError>;
    /// Reads a blob.
    fn get(&self, root: &Root) -> Result<Option<Vec<u8>>, StoreError>;
    /// Size of a blob, if held.
    fn size(&self, root: &Root) -> Result<Option<u64>, StoreError>;
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

/// In-memory store for tests.
pub struct MemStore {
    blobs: Mutex<HashMap<Root, Vec<u8>>>,
    usage: Usage,
}

impl MemStore {
    /// An empty store with a quota.
    pub fn new(quota: u64) -> Self {
        Self {
            blobs: Mutex::default(),
            usage: Usage {
                used: AtomicU64::new(0),
                count: AtomicU64::new(0),
                quota,
            },
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Root, Vec<u8>>> {
        self.blobs.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl BlobStore for MemStore {
    fn put(&self, root: &Root, blob: &VerifiedShard) -> Result<PutOutcome, StoreError> {
        let mut blobs = self.lock();
        if blobs.contains_key(root) {
            return Ok(PutOutcome::AlreadyHeld);
        }
        self.usage.reserve(blob.bytes().len() as u64)?;
        blobs.insert(*root, blob.bytes().to_vec());
        self.usage.count.fetch_add(1, Ordering::SeqCst);
        Ok(PutOutcome::Stored)
    }
    fn get(&self, root: &Root) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.lock().get(root).cloned())
    }
    fn size(&self, root: &Root) -> Result<Option<u64>, StoreError> {
        Ok(self.lock().get(root).map(|b| b.len() as u64))
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
    usage: Usage,
    /// Roots being written right now, so two puts of one root cannot both count.
    in_progress: Mutex<std::collections::HashSet<Root>>,
}

impl FsStore {
    /// Opens (creating if needed) a store under `dir`, empties `tmp/` and sums existing blobs.
    pub fn open(dir: &Path, quota: u64) -> Result<Self, StoreError> {
        let blobs = dir.join("blobs");
        let tmp = dir.join("tmp");
        fs::create_dir_all(&blobs).map_err(io(&blobs))?;
        if tmp.exists() {
            fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
        }
        fs::create_dir_all(&tmp).map_err(io(&tmp))?;
        let (mut used, mut count) = (0u64, 0u64);
        for shelf in fs::read_dir(&blobs).map_err(io(&blobs))? {
            let shelf = shelf.map_err(io(&blobs))?.path();
            if !shelf.is_dir() {
                continue;
            }
            for f in fs::read_dir(&shelf).map_err(io(&shelf))? {
                let f = f.map_err(io(&shelf))?;
                used += f.metadata().map_err(io(&f.path()))?.len();
                count += 1;
            }
        }
        Ok(Self {
            blobs,
            tmp,
            usage: Usage {
                used: AtomicU64::new(used),
                count: AtomicU64::new(count),
                quota,
            },
            in_progress: Mutex::default(),
        })
    }

    /// Path of a blob's file.
    pub fn path_of(&self, root: &Root) -> PathBuf {
        let hex = root.to_hex();
        self.blobs.join(&hex[..2]).join(hex)
    }

    fn write_durably(&self, root: &Root, bytes: &[u8]) -> Result<(), StoreError> {
        let tmp = self
            .tmp
            .join(format!("{}.{}", root.to_hex(), rand::random::<u64>()));
        let result = (|| {
            let mut f = fs::File::create_new(&tmp).map_err(io(&tmp))?;
            f.write_all(bytes).map_err(io(&tmp))?;
            f.sync_all().map_err(io(&tmp))?;
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
}

impl BlobStore for FsStore {
    fn put(&self, root: &Root, blob: &VerifiedShard) -> Result<PutOutcome, StoreError> {
        let lock = || self.in_progress.lock().unwrap_or_else(|p| p.into_inner());
        if self.path_of(root).exists() || !lock().insert(*root) {
            // Held, or another put of the same bytes is finishing right now.
            return Ok(PutOutcome::AlreadyHeld);
        }
        let len = blob.bytes().len() as u64;
        let result = self.usage.reserve(len).and_then(|()| {
            self.write_durably(root, blob.bytes())
                .inspect_err(|_| self.usage.release(len))
        });
        lock().remove(root);
        result?;
        self.usage.count.fetch_add(1, Ordering::SeqCst);
        Ok(PutOutcome::Stored)
    }

    fn get(&self, root: &Root) -> Result<Option<Vec<u8>>, StoreError> {
        let path = self.path_of(root);
        match fs::metadata(&path) {
            Ok(m) if m.len() > u64::from(MAX_BLOB_LEN) => Err(StoreError::Oversized(path)),
            Ok(_) => fs::read(&path).map(Some).map_err(io(&path)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(&path)(e)),
        }
    }

    fn size(&self, root: &Root) -> Result<Option<u64>, StoreError> {
        let path = self.path_of(root);
        match fs::metadata(&path) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(&path)(e)),
        }
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

    fn verified(bytes: &[u8]) -> (Root, VerifiedShard) {
        let root = Root::of(bytes);
        (root, root.verify(bytes.to_vec()).unwrap())
    }

    /// The same behaviour, checked on both implementations.
    fn contract(store: &dyn BlobStore) {
        let (root, blob) = verified(b"hello");
        assert_eq!(store.get(&root).unwrap(), None);
        assert_eq!(store.put(&root, &blob).unwrap(), PutOutcome::Stored);
        assert_eq!(store.put(&root, &blob).unwrap(), PutOutcome::AlreadyHeld);
        assert_eq!(store.get(&root).unwrap().unwrap(), b"hello");
        assert_eq!(store.size(&root).unwrap(), Some(5));
        assert_eq!((store.used(), store.count()), (5, 1));
        // quota is 10 bytes: 6 more do not fit, and nothing is stored
        let (big, big_blob) = verified(b"abcdef");
        assert!(matches!(
            store.put(&big, &big_blob),
            Err(StoreError::Quota { .. })
        ));
        assert_eq!(store.get(&big).unwrap(), None);
        assert_eq!(store.used(), 5);
    }

    #[test]
    fn mem_store_contract() {
        contract(&MemStore::new(10));
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
    }
}

//! The Guard's database: one `redb` file, `DATA_DIR/guard.redb`, so a restart (also after
//! `kill -9`) resumes watching and repairing with nothing lost.
//!
//! Tables (all values JSON or raw bytes; every write is one transaction, committed before the
//! effect is announced):
//!
//! ```text
//! objects_v1     manifest id (hex)            → the manifest's bytes (as fetched and verified)
//! holders_v1     "id/slab/shard"              → peer id (base58) of the shard's holder after a repair
//! placements_v1  (manifest id, seq)           → signed PlacementUpdate (JSON)
//! verdicts_v1    (host peer id, seq)          → signed AuditVerdict (JSON); the newest
//!                                               MAX_VERDICTS_PER_HOST per host are kept
//! escrow_outbox_v1 seq                       → verdict lines for the Escrow (JSON), until it
//!                                               acknowledges their Settle batch (seq = batch seq)
//! meta_v1        "secret" → 32 bytes (nonce key), "epoch" → u64 LE, "seq" → u64 LE,
//!                "outbox" → u64 LE (last outbox seq)
//! ```

use std::path::{Path, PathBuf};

use redb::{Database, ReadableTable, TableDefinition};
use thiserror::Error;

const OBJECTS: TableDefinition<&str, &[u8]> = TableDefinition::new("objects_v1");
const HOLDERS: TableDefinition<&str, &str> = TableDefinition::new("holders_v1");
const PLACEMENTS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("placements_v1");
const VERDICTS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("verdicts_v1");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta_v1");
const OUTBOX: TableDefinition<u64, &[u8]> = TableDefinition::new("escrow_outbox_v1");

/// Verdicts kept per host (older ones are dropped as new ones arrive).
pub const MAX_VERDICTS_PER_HOST: u64 = 1000;

/// A database operation failed.
#[derive(Debug, Error)]
#[error("guard database {path}: {why}")]
pub struct DbError {
    path: PathBuf,
    why: String,
}

/// One shard's holder after a repair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HolderRow {
    /// Manifest id (hex).
    pub object: String,
    /// Slab.
    pub slab: u64,
    /// Shard.
    pub shard: usize,
    /// Peer id (base58).
    pub host: String,
}

/// What one loop iteration writes, in one transaction.
#[derive(Debug, Default)]
pub struct Batch {
    /// New objects: (manifest id hex, manifest bytes).
    pub objects: Vec<(String, Vec<u8>)>,
    /// New holders.
    pub holders: Vec<HolderRow>,
    /// New placement updates: (manifest id hex, signed JSON).
    pub placements: Vec<(String, Vec<u8>)>,
    /// New verdicts: (host, signed JSON).
    pub verdicts: Vec<(String, Vec<u8>)>,
    /// The epoch reached.
    pub epoch: Option<u64>,
    /// Verdict lines to send the Escrow (JSON of `Vec<VerdictLine>`), one outbox row each.
    pub settle: Vec<Vec<u8>>,
}

impl Batch {
    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
            && self.holders.is_empty()
            && self.placements.is_empty()
            && self.verdicts.is_empty()
            && self.epoch.is_none()
            && self.settle.is_empty()
    }
}

/// The Guard's database.
pub struct GuardDb {
    db: Database,
    path: PathBuf,
}

fn holder_key(object: &str, slab: u64, shard: usize) -> String {
    format!("{object}/{slab}/{shard}")
}

fn u64_of(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    let n = b.len().min(8);
    a[..n].copy_from_slice(&b[..n]);
    u64::from_le_bytes(a)
}

impl GuardDb {
    /// Opens or creates `dir/guard.redb`.
    pub fn open(dir: &Path) -> Result<Self, DbError> {
        let path = dir.join("guard.redb");
        let err = |why: String| DbError {
            path: path.clone(),
            why,
        };
        std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
        let db = Database::create(&path).map_err(|e| err(e.to_string()))?;
        let this = Self { db, path };
        this.write(&Batch::default())?;
        Ok(this)
    }

    fn err(&self, e: impl std::fmt::Display) -> DbError {
        DbError {
            path: self.path.clone(),
            why: e.to_string(),
        }
    }

    /// The nonce secret, created from `fresh` on first use and kept forever after.
    pub fn secret(&self, fresh: [u8; 32]) -> Result<[u8; 32], DbError> {
        let tx = self.db.begin_write().map_err(|e| self.err(e))?;
        let secret = {
            let mut t = tx.open_table(META).map_err(|e| self.err(e))?;
            let existing = t
                .get("secret")
                .map_err(|e| self.err(e))?
                .map(|v| v.value().to_vec());
            match existing {
                Some(b) if b.len() == 32 => {
                    let mut s = [0u8; 32];
                    s.copy_from_slice(&b);
                    s
                }
                _ => {
                    t.insert("secret", fresh.as_slice())
                        .map_err(|e| self.err(e))?;
                    fresh
                }
            }
        };
        tx.commit().map_err(|e| self.err(e))?;
        Ok(secret)
    }

    /// Writes `b` in one transaction.
    pub fn write(&self, b: &Batch) -> Result<(), DbError> {
        let tx = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            let mut objects = tx.open_table(OBJECTS).map_err(|e| self.err(e))?;
            for (id, bytes) in &b.objects {
                objects
                    .insert(id.as_str(), bytes.as_slice())
                    .map_err(|e| self.err(e))?;
            }
            let mut holders = tx.open_table(HOLDERS).map_err(|e| self.err(e))?;
            for h in &b.holders {
                holders
                    .insert(
                        holder_key(&h.object, h.slab, h.shard).as_str(),
                        h.host.as_str(),
                    )
                    .map_err(|e| self.err(e))?;
            }
            let mut meta = tx.open_table(META).map_err(|e| self.err(e))?;
            let mut seq = meta
                .get("seq")
                .map_err(|e| self.err(e))?
                .map_or(0, |v| u64_of(v.value()));
            let mut placements = tx.open_table(PLACEMENTS).map_err(|e| self.err(e))?;
            for (id, json) in &b.placements {
                seq += 1;
                placements
                    .insert((id.as_str(), seq), json.as_slice())
                    .map_err(|e| self.err(e))?;
            }
            let mut verdicts = tx.open_table(VERDICTS).map_err(|e| self.err(e))?;
            for (host, json) in &b.verdicts {
                seq += 1;
                verdicts
                    .insert((host.as_str(), seq), json.as_slice())
                    .map_err(|e| self.err(e))?;
            }
            // Keep the newest MAX_VERDICTS_PER_HOST per host written to.
            let mut touched: Vec<&str> = b.verdicts.iter().map(|(h, _)| h.as_str()).collect();
            touched.sort_unstable();
            touched.dedup();
            for host in touched {
                let keys: Vec<u64> = verdicts
                    .range((host, 0)..=(host, u64::MAX))
                    .map_err(|e| self.err(e))?
                    .filter_map(|r| r.ok().map(|(k, _)| k.value().1))
                    .collect();
                let excess = (keys.len() as u64).saturating_sub(MAX_VERDICTS_PER_HOST);
                for k in keys.into_iter().take(excess as usize) {
                    verdicts.remove((host, k)).map_err(|e| self.err(e))?;
                }
            }
            meta.insert("seq", seq.to_le_bytes().as_slice())
                .map_err(|e| self.err(e))?;
            if let Some(epoch) = b.epoch {
                meta.insert("epoch", epoch.to_le_bytes().as_slice())
                    .map_err(|e| self.err(e))?;
            }
            let mut outbox = tx.open_table(OUTBOX).map_err(|e| self.err(e))?;
            let mut next = meta
                .get("outbox")
                .map_err(|e| self.err(e))?
                .map_or(0, |v| u64_of(v.value()));
            for lines in &b.settle {
                next += 1;
                outbox
                    .insert(next, lines.as_slice())
                    .map_err(|e| self.err(e))?;
            }
            meta.insert("outbox", next.to_le_bytes().as_slice())
                .map_err(|e| self.err(e))?;
        }
        tx.commit().map_err(|e| self.err(e))
    }

    /// The last persisted epoch.
    pub fn epoch(&self) -> Result<Option<u64>, DbError> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = tx.open_table(META).map_err(|e| self.err(e))?;
        Ok(t.get("epoch")
            .map_err(|e| self.err(e))?
            .map(|v| u64_of(v.value())))
    }

    /// The oldest `limit` outbox rows for the Escrow: (seq, JSON verdict lines).
    pub fn outbox(&self, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, DbError> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = tx.open_table(OUTBOX).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for row in t.iter().map_err(|e| self.err(e))?.take(limit) {
            let (k, v) = row.map_err(|e| self.err(e))?;
            out.push((k.value(), v.value().to_vec()));
        }
        Ok(out)
    }

    /// Drops outbox row `seq` (the Escrow acknowledged it).
    pub fn outbox_done(&self, seq: u64) -> Result<(), DbError> {
        let tx = self.db.begin_write().map_err(|e| self.err(e))?;
        tx.open_table(OUTBOX)
            .map_err(|e| self.err(e))?
            .remove(seq)
            .map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))
    }

    /// Every watched object: (manifest id hex, manifest bytes).
    pub fn objects(&self) -> Result<Vec<(String, Vec<u8>)>, DbError> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = tx.open_table(OBJECTS).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for row in t.iter().map_err(|e| self.err(e))? {
            let (k, v) = row.map_err(|e| self.err(e))?;
            out.push((k.value().to_string(), v.value().to_vec()));
        }
        Ok(out)
    }

    /// Every holder set by a repair; malformed rows are skipped with a warning.
    pub fn holders(&self) -> Result<Vec<HolderRow>, DbError> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = tx.open_table(HOLDERS).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for row in t.iter().map_err(|e| self.err(e))? {
            let (k, v) = row.map_err(|e| self.err(e))?;
            let key = k.value();
            let mut parts = key.split('/');
            let parsed = (|| {
                let object = parts.next()?.to_string();
                let slab = parts.next()?.parse().ok()?;
                let shard = parts.next()?.parse().ok()?;
                Some(HolderRow {
                    object,
                    slab,
                    shard,
                    host: v.value().to_string(),
                })
            })();
            match parsed {
                Some(h) => out.push(h),
                None => tracing::warn!(key, "skipping malformed guard holder row"),
            }
        }
        Ok(out)
    }

    /// The signed placement updates of an object, oldest first.
    pub fn placements(&self, object: &str) -> Result<Vec<Vec<u8>>, DbError> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = tx.open_table(PLACEMENTS).map_err(|e| self.err(e))?;
        let rows = t
            .range((object, 0)..=(object, u64::MAX))
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for row in rows {
            let (_, v) = row.map_err(|e| self.err(e))?;
            out.push(v.value().to_vec());
        }
        Ok(out)
    }

    /// A host's newest `limit` verdicts, newest first.
    pub fn verdicts(&self, host: &str, limit: usize) -> Result<Vec<Vec<u8>>, DbError> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = tx.open_table(VERDICTS).map_err(|e| self.err(e))?;
        let rows = t
            .range((host, 0)..=(host, u64::MAX))
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for row in rows.rev().take(limit) {
            let (_, v) = row.map_err(|e| self.err(e))?;
            out.push(v.value().to_vec());
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn everything_survives_a_reopen_and_verdicts_stay_bounded() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = GuardDb::open(dir.path()).unwrap();
            assert_eq!(db.secret([1; 32]).unwrap(), [1; 32]);
            let mut b = Batch {
                objects: vec![("ab".into(), vec![1, 2, 3])],
                holders: vec![HolderRow {
                    object: "ab".into(),
                    slab: 2,
                    shard: 17,
                    host: "peer".into(),
                }],
                placements: vec![("ab".into(), b"p1".to_vec()), ("ab".into(), b"p2".to_vec())],
                epoch: Some(9),
                ..Batch::default()
            };
            for i in 0..(MAX_VERDICTS_PER_HOST + 5) {
                b.verdicts.push(("h".into(), i.to_string().into_bytes()));
            }
            db.write(&b).unwrap();
        }
        let db = GuardDb::open(dir.path()).unwrap();
        assert_eq!(db.secret([2; 32]).unwrap(), [1; 32], "the secret is kept");
        assert_eq!(db.epoch().unwrap(), Some(9));
        assert_eq!(db.objects().unwrap(), vec![("ab".into(), vec![1, 2, 3])]);
        assert_eq!(db.holders().unwrap()[0].shard, 17);
        assert_eq!(
            db.placements("ab").unwrap(),
            vec![b"p1".to_vec(), b"p2".to_vec()]
        );
        assert!(db.placements("other").unwrap().is_empty());
        let v = db.verdicts("h", 10_000).unwrap();
        assert_eq!(v.len() as u64, MAX_VERDICTS_PER_HOST);
        assert_eq!(v[0], (MAX_VERDICTS_PER_HOST + 4).to_string().into_bytes());
        assert_eq!(db.verdicts("h", 2).unwrap().len(), 2);
    }
}

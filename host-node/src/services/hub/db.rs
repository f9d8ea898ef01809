//! The Hub's database: one `redb` file, `DATA_DIR/hub.redb`, so a Hub restart keeps every
//! registered host, its first-seen time (age), probe history and audit counts.
//!
//! Format: table `hosts_v1`, key = peer id (base58 text), value = [`HostRecord`] as JSON (the
//! signed ad as received, re-verified on load). Writes are batched: the service commits each
//! accepted ad before answering `Accepted`, and each probe round's changes in one transaction.

use std::path::{Path, PathBuf};

use libp2p::PeerId;
use redb::{Database, ReadableTable, TableDefinition};
use thiserror::Error;

use super::registry::HostRecord;

const HOSTS: TableDefinition<&str, &[u8]> = TableDefinition::new("hosts_v1");

/// A database operation failed.
#[derive(Debug, Error)]
#[error("hub database {path}: {why}")]
pub struct DbError {
    path: PathBuf,
    why: String,
}

/// The Hub's database.
pub struct HubDb {
    db: Database,
    path: PathBuf,
}

impl HubDb {
    /// Opens or creates `dir/hub.redb`.
    pub fn open(dir: &Path) -> Result<Self, DbError> {
        let path = dir.join("hub.redb");
        let err = |why: String| DbError {
            path: path.clone(),
            why,
        };
        std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
        let db = Database::create(&path).map_err(|e| err(e.to_string()))?;
        let this = Self { db, path };
        // Make sure the table exists so reads of a fresh database succeed.
        this.save(&[])?;
        Ok(this)
    }

    fn err(&self, e: impl std::fmt::Display) -> DbError {
        DbError {
            path: self.path.clone(),
            why: e.to_string(),
        }
    }

    /// Writes `records` in one transaction.
    pub fn save(&self, records: &[(PeerId, HostRecord)]) -> Result<(), DbError> {
        let tx = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            let mut t = tx.open_table(HOSTS).map_err(|e| self.err(e))?;
            for (peer, r) in records {
                let json = serde_json::to_vec(r).map_err(|e| self.err(e))?;
                t.insert(peer.to_base58().as_str(), json.as_slice())
                    .map_err(|e| self.err(e))?;
            }
        }
        tx.commit().map_err(|e| self.err(e))
    }

    /// Every stored record; unreadable rows are skipped with a warning (never fatal).
    pub fn load(&self) -> Result<Vec<HostRecord>, DbError> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = tx.open_table(HOSTS).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for row in t.iter().map_err(|e| self.err(e))? {
            let (k, v) = row.map_err(|e| self.err(e))?;
            match serde_json::from_slice::<HostRecord>(v.value()) {
                Ok(r) => out.push(r),
                Err(e) => tracing::warn!(peer = k.value(), %e, "skipping unreadable hub record"),
            }
        }
        Ok(out)
    }
}

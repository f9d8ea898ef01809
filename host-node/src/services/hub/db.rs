//! The Hub's database: one `redb` file, `DATA_DIR/hub.redb`, so a Hub restart keeps every
//! registered host, its first-seen time (age), probe history and audit counts.
//!
//! Format: table `hosts_v1`, key = peer id (base58 text), value = [`HostRecord`] as JSON (the
//! signed ad as received, re-verified on load). Writes are batched: the service commits each
//! accepted ad before answering `Accepted`, and each probe round's changes in one transaction.
//! A host the registry forgets ([`super::registry::Registry::expire`]) is deleted here at once
//! ([`HubDb::remove`]), and a stored record that is already expired when the Hub opens is
//! deleted instead of loaded, so a restart never brings a forgotten host back.

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

    /// Deletes the records of `peers` (forgotten hosts) in one transaction.
    pub fn remove(&self, peers: &[PeerId]) -> Result<(), DbError> {
        let tx = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            let mut t = tx.open_table(HOSTS).map_err(|e| self.err(e))?;
            for peer in peers {
                t.remove(peer.to_base58().as_str())
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

#[cfg(test)]
mod tests {
    use super::*;
    use btfs_core::signed::{HostAd, Signed};
    use libp2p::identity::Keypair;

    fn record(k: &Keypair) -> HostRecord {
        let ad = HostAd {
            peer_id: k.public().to_peer_id().to_base58(),
            addrs: vec!["/ip4/10.0.0.1/tcp/4001".into()],
            capacity_bytes: 1 << 30,
            free_bytes: 1 << 30,
            price_per_gib_month: 10,
            version: env!("CARGO_PKG_VERSION").into(),
            region: None,
            issued_at_ms: 1_000,
        };
        let ed = k.clone().try_into_ed25519().unwrap();
        HostRecord {
            ad: Signed::sign(&ad, &ed).unwrap(),
            first_seen_ms: 1_000,
            last_ad_ms: 1_000,
            probes: [0, 0],
            probe_count: 0,
            online: false,
            last_probe_ms: 0,
            audits_passed: 0,
            audits_failed: 0,
        }
    }

    #[test]
    fn removed_hosts_stay_gone_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
        let (pa, pb) = (a.public().to_peer_id(), b.public().to_peer_id());
        {
            let db = HubDb::open(dir.path()).unwrap();
            db.save(&[(pa, record(&a)), (pb, record(&b))]).unwrap();
            db.remove(&[pa, PeerId::random()]).unwrap();
        }
        let db = HubDb::open(dir.path()).unwrap();
        let left: Vec<String> = db
            .load()
            .unwrap()
            .into_iter()
            .map(|r| r.ad.public_key)
            .collect();
        assert_eq!(left, [record(&b).ad.public_key]);
    }
}

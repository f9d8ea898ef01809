//! The Status database: one `redb` file, `DIR/status.redb`, so a restart keeps every peer's
//! latest report, first/last-seen times, report count and recent history.
//!
//! Tables:
//! - `peers_v1`: key = peer id (base58 text), value = [`PeerRecord`] as JSON (the signed report
//!   as received; re-verified on load).
//! - `history_v1`: key = (peer id, slot), value = a [`Sample`] as 64 bytes: eight little-endian
//!   u64 in field order (`issued_at_ms`, `received_ms`, `uptime_secs`, `capacity_bytes`,
//!   `used_bytes`, `shards_held`, `requests_served`, `requests_failed`). The slot is
//!   `(report number − 1) mod history_len`, so each peer's history is a ring of at most
//!   `history_len` samples that never needs deleting.
//!
//! Writes come in batches ([`StatusDb::write`]): one transaction per batch, however many reports;
//! a batch can also forget peers ([`Op::Forget`]: the record and its history rows are deleted).
//! Deleted pages are reused by later writes; [`StatusDb::compact`] (run on open after a large
//! clean-up) gives them back to the file system, so the file stays bounded by the peers kept.

use std::path::{Path, PathBuf};

use redb::{Database, ReadableTable, TableDefinition};
use thiserror::Error;

use super::{PeerRecord, Sample};

const PEERS: TableDefinition<&str, &[u8]> = TableDefinition::new("peers_v1");
const HISTORY: TableDefinition<(&str, u32), &[u8]> = TableDefinition::new("history_v1");

/// A database operation failed.
#[derive(Debug, Error)]
#[error("status database {path}: {why}")]
pub struct DbError {
    path: PathBuf,
    why: String,
}

/// One accepted report to persist.
#[derive(Debug, Clone)]
pub struct Write {
    /// The peer (base58).
    pub peer_id: String,
    /// The peer's record after the report.
    pub record: PeerRecord,
    /// The report's history sample.
    pub sample: Sample,
}

/// One change in a batch.
#[derive(Debug, Clone)]
pub enum Op {
    /// Save an accepted report.
    Put(Write),
    /// Forget a peer, if its stored record was last seen at or before `last_seen_ms` (a peer
    /// that reported again meanwhile is kept).
    Forget {
        /// The peer (base58).
        peer_id: String,
        /// Its last-seen time when it was forgotten in memory.
        last_seen_ms: u64,
    },
}

/// The Status database.
pub struct StatusDb {
    db: Database,
    path: PathBuf,
    history_len: u32,
}

impl StatusDb {
    /// Opens or creates `dir/status.redb`, keeping `history_len` samples per peer.
    pub fn open(dir: &Path, history_len: u32) -> Result<Self, DbError> {
        let path = dir.join("status.redb");
        let err = |why: String| DbError {
            path: path.clone(),
            why,
        };
        std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
        let db = Database::create(&path).map_err(|e| {
            err(format!(
                "{e} (is another Status service using this directory?)"
            ))
        })?;
        let this = Self {
            db,
            path,
            history_len: history_len.max(1),
        };
        // Create the tables so reads of a fresh database succeed.
        this.write(&[])?;
        Ok(this)
    }

    fn err(&self, e: impl std::fmt::Display) -> DbError {
        DbError {
            path: self.path.clone(),
            why: e.to_string(),
        }
    }

    /// Applies a batch in one transaction, in order.
    pub fn write(&self, batch: &[Op]) -> Result<(), DbError> {
        let tx = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            let mut peers = tx.open_table(PEERS).map_err(|e| self.err(e))?;
            let mut history = tx.open_table(HISTORY).map_err(|e| self.err(e))?;
            let mut buf = Vec::with_capacity(1024);
            for op in batch {
                match op {
                    Op::Put(w) => {
                        let peer = w.peer_id.as_str();
                        buf.clear();
                        serde_json::to_writer(&mut buf, &w.record).map_err(|e| self.err(e))?;
                        peers
                            .insert(peer, buf.as_slice())
                            .map_err(|e| self.err(e))?;
                        let slot = (w.record.reports.saturating_sub(1)
                            % u64::from(self.history_len))
                            as u32;
                        history
                            .insert((peer, slot), encode_sample(&w.sample).as_slice())
                            .map_err(|e| self.err(e))?;
                    }
                    Op::Forget {
                        peer_id,
                        last_seen_ms,
                    } => {
                        let peer = peer_id.as_str();
                        let stored = peers
                            .get(peer)
                            .map_err(|e| self.err(e))?
                            .map(|v| serde_json::from_slice::<PeerRecord>(v.value()));
                        let newer =
                            matches!(&stored, Some(Ok(r)) if r.last_seen_ms > *last_seen_ms);
                        if stored.is_none() || newer {
                            continue;
                        }
                        peers.remove(peer).map_err(|e| self.err(e))?;
                        history
                            .retain_in((peer, 0u32)..=(peer, u32::MAX), |_, _| false)
                            .map_err(|e| self.err(e))?;
                    }
                }
            }
        }
        tx.commit().map_err(|e| self.err(e))
    }

    /// Gives deleted pages back to the file system (needs exclusive access: call before the
    /// database is shared). Returns whether anything was compacted.
    pub fn compact(&mut self) -> Result<bool, DbError> {
        self.db.compact().map_err(|e| self.err(e))
    }

    /// The database file's size in bytes.
    pub fn file_len(&self) -> u64 {
        std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0)
    }

    /// Every stored record with its peer id; unreadable rows are skipped with a warning (never
    /// fatal).
    pub fn load(&self) -> Result<Vec<(String, PeerRecord)>, DbError> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = tx.open_table(PEERS).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for row in t.iter().map_err(|e| self.err(e))? {
            let (k, v) = row.map_err(|e| self.err(e))?;
            match serde_json::from_slice::<PeerRecord>(v.value()) {
                Ok(r) => out.push((k.value().to_string(), r)),
                Err(e) => tracing::warn!(peer = k.value(), %e, "skipping unreadable status record"),
            }
        }
        Ok(out)
    }

    /// A peer's stored samples, oldest first (at most `history_len`).
    pub fn history(&self, peer_id: &str) -> Result<Vec<Sample>, DbError> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = tx.open_table(HISTORY).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for row in t
            .range((peer_id, 0u32)..=(peer_id, u32::MAX))
            .map_err(|e| self.err(e))?
        {
            let (_, v) = row.map_err(|e| self.err(e))?;
            if let Some(s) = decode_sample(v.value()) {
                out.push(s);
            }
        }
        out.sort_by_key(|s| s.issued_at_ms);
        let excess = out.len().saturating_sub(self.history_len as usize);
        out.drain(..excess);
        Ok(out)
    }
}

const SAMPLE_LEN: usize = 64;

fn encode_sample(s: &Sample) -> [u8; SAMPLE_LEN] {
    let fields = [
        s.issued_at_ms,
        s.received_ms,
        s.uptime_secs,
        s.capacity_bytes,
        s.used_bytes,
        s.shards_held,
        s.requests_served,
        s.requests_failed,
    ];
    let mut out = [0u8; SAMPLE_LEN];
    for (chunk, f) in out.chunks_exact_mut(8).zip(fields) {
        chunk.copy_from_slice(&f.to_le_bytes());
    }
    out
}

fn decode_sample(b: &[u8]) -> Option<Sample> {
    if b.len() != SAMPLE_LEN {
        return None;
    }
    let mut f = [0u64; 8];
    for (v, chunk) in f.iter_mut().zip(b.chunks_exact(8)) {
        *v = u64::from_le_bytes(chunk.try_into().ok()?);
    }
    Some(Sample {
        issued_at_ms: f[0],
        received_ms: f[1],
        uptime_secs: f[2],
        capacity_bytes: f[3],
        used_bytes: f[4],
        shards_held: f[5],
        requests_served: f[6],
        requests_failed: f[7],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use btfs_core::signed::Signed;

    fn write(peer: &str, n: u64) -> Op {
        Op::Put(Write {
            peer_id: peer.into(),
            record: PeerRecord {
                report: Signed {
                    kind: "k".into(),
                    public_key: "p".into(),
                    payload: "{}".into(),
                    signature: "s".into(),
                },
                first_seen_ms: 1,
                last_seen_ms: n,
                reports: n,
            },
            sample: Sample {
                issued_at_ms: n,
                received_ms: n,
                uptime_secs: n,
                capacity_bytes: 10,
                used_bytes: 1,
                shards_held: 1,
                requests_served: n,
                requests_failed: 0,
            },
        })
    }

    #[test]
    fn sample_encoding_is_pinned() {
        let s = Sample {
            issued_at_ms: 1,
            received_ms: 2,
            uptime_secs: 3,
            capacity_bytes: 4,
            used_bytes: 5,
            shards_held: 6,
            requests_served: 7,
            requests_failed: 0x0102_0304_0506_0708,
        };
        let b = encode_sample(&s);
        assert_eq!(&b[..16], &[1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&b[56..], &[8, 7, 6, 5, 4, 3, 2, 1]);
        assert_eq!(decode_sample(&b), Some(s));
        assert_eq!(decode_sample(&b[..63]), None);
    }

    #[test]
    fn history_is_a_bounded_ring_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = StatusDb::open(dir.path(), 3).unwrap();
            let batch: Vec<_> = (1..=5).map(|n| write("a", n)).collect();
            db.write(&batch).unwrap();
            db.write(&[write("b", 1)]).unwrap();
        }
        let db = StatusDb::open(dir.path(), 3).unwrap();
        let h: Vec<u64> = db
            .history("a")
            .unwrap()
            .iter()
            .map(|s| s.issued_at_ms)
            .collect();
        assert_eq!(h, [3, 4, 5]);
        assert_eq!(db.history("b").unwrap().len(), 1);
        assert!(db.history("c").unwrap().is_empty());
        let mut loaded: Vec<u64> = db.load().unwrap().iter().map(|r| r.1.reports).collect();
        loaded.sort_unstable();
        assert_eq!(loaded, [1, 5]);
    }

    #[test]
    fn forgetting_deletes_record_and_history_unless_newer() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = StatusDb::open(dir.path(), 4).unwrap();
        let batch: Vec<_> = (1..=3)
            .map(|n| write("a", n))
            .chain([write("b", 9)])
            .collect();
        db.write(&batch).unwrap();
        let forget = |peer: &str, last_seen_ms| Op::Forget {
            peer_id: peer.into(),
            last_seen_ms,
        };
        // "b" reported (last seen 9) after it was forgotten at 5: kept.
        db.write(&[forget("a", 3), forget("b", 5), forget("c", 1)])
            .unwrap();
        assert!(db.history("a").unwrap().is_empty());
        let left: Vec<String> = db.load().unwrap().into_iter().map(|r| r.0).collect();
        assert_eq!(left, ["b"]);
        assert_eq!(db.history("b").unwrap().len(), 1);
        db.compact().unwrap();
        assert!(db.file_len() > 0);
    }
}

//! The Escrow's database: one `redb` file, `DATA_DIR/escrow.redb`, holding the ledger's command
//! log and periodic snapshots. The ledger itself is core's pure machine
//! (`btfs_core::escrow::Ledger`): replaying the log from the newest snapshot rebuilds it exactly,
//! so a restart — also after `kill -9` — loses nothing that was acknowledged.
//!
//! Tables (values JSON):
//!
//! ```text
//! log_v1       seq: u64 → {"now_ms": u64, "cmd": Command}   every accepted command, in order
//! snapshot_v1  "ledger" → {"seq": u64, "ledger": Ledger}      the ledger after command `seq`
//! ```
//!
//! Each group of commands is appended in one write transaction (fsynced by redb's default
//! durability) before any of them is answered: group commit. The log is never truncated: it is
//! the public audit trail an auditor replays. A snapshot is written every [`SNAPSHOT_EVERY`]
//! commands, in the same transaction as the log entries it covers.

use std::path::{Path, PathBuf};

use btfs_core::escrow::{Command, Ledger, LedgerConfig};
use redb::{Database, TableDefinition};
use serde::{Deserialize, Serialize};
use thiserror::Error;

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log_v1");
const SNAPSHOT: TableDefinition<&str, &[u8]> = TableDefinition::new("snapshot_v1");

/// Commands between snapshots.
pub const SNAPSHOT_EVERY: u64 = 20_000;

/// A database operation failed.
#[derive(Debug, Error)]
#[error("escrow database {path}: {why}")]
pub struct DbError {
    path: PathBuf,
    why: String,
}

/// One logged command.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    /// The Escrow's clock when it was applied.
    pub now_ms: u64,
    /// The command.
    pub cmd: Command,
}

#[derive(Serialize, Deserialize)]
struct Snapshot {
    seq: u64,
    ledger: Ledger,
}

/// The Escrow's database.
pub struct EscrowDb {
    db: Database,
    path: PathBuf,
    seq: u64,
    since_snapshot: u64,
}

impl EscrowDb {
    /// Opens or creates `dir/escrow.redb` and rebuilds the ledger: the newest snapshot, then
    /// every command logged after it. `cfg` is used for a new ledger; when an existing ledger's
    /// rules differ from `cfg`, a `Configure` command is logged and `cfg` applies from then on.
    pub fn open(dir: &Path, cfg: &LedgerConfig) -> Result<(Self, Ledger), DbError> {
        let path = dir.join("escrow.redb");
        let err = |why: String| DbError {
            path: path.clone(),
            why,
        };
        std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
        let db = Database::create(&path).map_err(|e| err(e.to_string()))?;
        {
            let tx = db.begin_write().map_err(|e| err(e.to_string()))?;
            tx.open_table(LOG).map_err(|e| err(e.to_string()))?;
            tx.open_table(SNAPSHOT).map_err(|e| err(e.to_string()))?;
            tx.commit().map_err(|e| err(e.to_string()))?;
        }
        let tx = db.begin_read().map_err(|e| err(e.to_string()))?;
        let snap = tx.open_table(SNAPSHOT).map_err(|e| err(e.to_string()))?;
        let (mut ledger, from) = match snap.get("ledger").map_err(|e| err(e.to_string()))? {
            Some(v) => {
                let s: Snapshot = serde_json::from_slice(v.value())
                    .map_err(|e| err(format!("unreadable snapshot: {e}")))?;
                (s.ledger, s.seq)
            }
            None => (Ledger::new(cfg.clone()), 0),
        };
        ledger.reindex();
        let log = tx.open_table(LOG).map_err(|e| err(e.to_string()))?;
        let mut seq = from;
        for row in log.range(from + 1..).map_err(|e| err(e.to_string()))? {
            let (k, v) = row.map_err(|e| err(e.to_string()))?;
            let e: Entry = serde_json::from_slice(v.value())
                .map_err(|e| err(format!("unreadable log entry {}: {e}", k.value())))?;
            // A logged command was applied once; it applies again (or the log is not ours).
            ledger
                .apply(&e.cmd, e.now_ms)
                .map_err(|x| err(format!("log entry {} no longer applies: {x}", k.value())))?;
            seq = k.value();
        }
        ledger.take_transfers();
        drop(log);
        drop(snap);
        drop(tx);
        let mut this = Self {
            db,
            path,
            seq,
            since_snapshot: seq - from,
        };
        if ledger.config() != cfg {
            // New rules apply from here on, and the log says so (replays stay exact).
            let cmd = Command::Configure {
                config: cfg.clone(),
            };
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            ledger
                .apply(&cmd, now_ms)
                .map_err(|e| this.err(e.to_string()))?;
            this.append(&[Entry { now_ms, cmd }], &ledger)?;
        }
        Ok((this, ledger))
    }

    fn err(&self, e: impl std::fmt::Display) -> DbError {
        DbError {
            path: self.path.clone(),
            why: e.to_string(),
        }
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Commands logged so far.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Appends a group of commands in one durable transaction; with `ledger` (the state after
    /// them) a snapshot is taken in the same transaction when one is due.
    pub fn append(&mut self, entries: &[Entry], ledger: &Ledger) -> Result<(), DbError> {
        if entries.is_empty() {
            return Ok(());
        }
        let tx = self.db.begin_write().map_err(|e| self.err(e))?;
        let mut seq = self.seq;
        {
            let mut log = tx.open_table(LOG).map_err(|e| self.err(e))?;
            for e in entries {
                seq += 1;
                let json = serde_json::to_vec(e).map_err(|e| self.err(e))?;
                log.insert(seq, json.as_slice()).map_err(|e| self.err(e))?;
            }
        }
        let due = self.since_snapshot + entries.len() as u64 >= SNAPSHOT_EVERY;
        if due {
            let mut snap = tx.open_table(SNAPSHOT).map_err(|e| self.err(e))?;
            let json = serde_json::to_vec(&Snapshot {
                seq,
                ledger: ledger.clone(),
            })
            .map_err(|e| self.err(e))?;
            snap.insert("ledger", json.as_slice())
                .map_err(|e| self.err(e))?;
        }
        tx.commit().map_err(|e| self.err(e))?;
        self.seq = seq;
        self.since_snapshot = if due {
            0
        } else {
            self.since_snapshot + entries.len() as u64
        };
        Ok(())
    }

    /// Logged commands `from..=to` (for an auditor), at most `limit`.
    pub fn entries(&self, from: u64, limit: usize) -> Result<Vec<(u64, Entry)>, DbError> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let log = tx.open_table(LOG).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for row in log.range(from..).map_err(|e| self.err(e))?.take(limit) {
            let (k, v) = row.map_err(|e| self.err(e))?;
            let e: Entry = serde_json::from_slice(v.value()).map_err(|e| self.err(e))?;
            out.push((k.value(), e));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use btfs_core::escrow::{Call, Op};
    use btfs_core::signed::Signed;
    use libp2p::identity::ed25519;

    fn deposit(k: &ed25519::Keypair, n: u64) -> Command {
        let peer = libp2p::identity::PublicKey::from(k.public())
            .to_peer_id()
            .to_base58();
        Command::Call {
            call: Signed::sign(
                &Call {
                    peer_id: peer,
                    id: format!("{n:032x}"),
                    issued_at_ms: 1000,
                    op: Op::Deposit { amount: n },
                },
                k,
            )
            .unwrap(),
        }
    }

    #[test]
    fn the_ledger_survives_a_reopen_with_and_without_snapshots() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = LedgerConfig {
            faucet_max: Some(1 << 40),
            ..LedgerConfig::default()
        };
        let k = ed25519::Keypair::generate();
        let (mut db, mut ledger) = EscrowDb::open(dir.path(), &cfg).unwrap();
        let mut total = 0;
        // More than one snapshot interval, in groups.
        let mut n = 0;
        while n < SNAPSHOT_EVERY + 300 {
            let mut group = Vec::new();
            for _ in 0..700 {
                n += 1;
                let cmd = deposit(&k, n);
                ledger.apply(&cmd, 1000).unwrap();
                total += n;
                group.push(Entry { now_ms: 1000, cmd });
            }
            db.append(&group, &ledger).unwrap();
        }
        drop(db);
        let (db, again) = EscrowDb::open(dir.path(), &cfg).unwrap();
        assert_eq!(db.seq(), n);
        assert_eq!(again.totals().deposits, total);
        assert_eq!(
            serde_json::to_string(&again).unwrap(),
            serde_json::to_string(&ledger).unwrap()
        );
        assert_eq!(db.entries(1, 3).unwrap().len(), 3);
    }
}

//! The CLI's wallet: an ed25519 key under the user's config directory, and the calls it signs
//! to the network's Escrow (`btfs_core::escrow`).
//!
//! Goals: the key is created on first use (`$XDG_CONFIG_HOME/btfs/wallet.key`, else
//! `~/.config/btfs/wallet.key`, mode 0600; `--wallet FILE` or `BTFS_WALLET` choose another) and
//! is also the tenant's libp2p identity, so hosts see the payer as the peer that uploads. Every
//! call gets a fresh random id and is **saved before it is sent** (`wallet.key.journal`, one JSON
//! line per call, and one when its answer came): a retry after a lost answer or a crash sends
//! the very same signed call, which the Escrow answers with its first result, so nothing is
//! done twice. `btfs wallet …` resends what an earlier run left unanswered before it does
//! anything else. Non-goals: key encryption at rest (the file is the key, like an SSH key
//! without a passphrase), several keys per wallet.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use btfs_core::escrow::{Call, CallReceipt, EscrowRequest, EscrowResponse, Op, MICRO_PER_BTT};
use btfs_core::signed::Signed;
use libp2p::identity::{ed25519, Keypair};
use libp2p::PeerId;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::net::Net;
use crate::services::escrow::client::{self, EscrowClientError};
use crate::services::hub::HubAddr;

/// A wallet failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum WalletError {
    /// The key file.
    #[error("wallet {path}: {why}")]
    Key {
        /// File.
        path: String,
        /// Why.
        why: String,
    },
    /// The Escrow could not be asked.
    #[error(transparent)]
    Escrow(#[from] EscrowClientError),
    /// The Escrow did the call's checks and said no.
    #[error("{0}")]
    Refused(String),
    /// An amount on the command line.
    #[error("{0}")]
    Amount(String),
}

/// A loaded wallet.
pub struct Wallet {
    key: Keypair,
    path: PathBuf,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
enum JournalLine {
    Pending { id: String, call: Signed },
    Done { id: String },
}

impl Wallet {
    /// The default key file.
    pub fn default_path() -> PathBuf {
        let base = std::env::var_os("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
            .unwrap_or_else(|| PathBuf::from("."));
        base.join("btfs").join("wallet.key")
    }

    /// Opens the key at `path` (default: [`Wallet::default_path`]), creating it on first use.
    pub fn open(path: Option<&Path>) -> Result<Self, WalletError> {
        let path = path.map_or_else(Self::default_path, Path::to_path_buf);
        let key = crate::host::identity::load_or_create_key_file(&path).map_err(|e| {
            WalletError::Key {
                path: path.display().to_string(),
                why: e.to_string(),
            }
        })?;
        if key.clone().try_into_ed25519().is_err() {
            return Err(WalletError::Key {
                path: path.display().to_string(),
                why: "not an ed25519 key".into(),
            });
        }
        Ok(Self { key, path })
    }

    /// The account (peer id).
    pub fn peer(&self) -> PeerId {
        self.key.public().to_peer_id()
    }

    /// The key, as the tenant's libp2p identity.
    pub fn keypair(&self) -> Keypair {
        self.key.clone()
    }

    /// The ed25519 key (for signing contracts).
    pub fn ed25519(&self) -> ed25519::Keypair {
        self.key
            .clone()
            .try_into_ed25519()
            .unwrap_or_else(|_| unreachable!("checked in open"))
    }

    /// The key file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn journal(&self) -> PathBuf {
        let mut p = self.path.clone().into_os_string();
        p.push(".journal");
        PathBuf::from(p)
    }

    fn append(&self, line: &JournalLine) -> Result<(), WalletError> {
        let path = self.journal();
        let err = |e: std::io::Error| WalletError::Key {
            path: path.display().to_string(),
            why: e.to_string(),
        };
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(err)?;
        let text = serde_json::to_string(line).unwrap_or_default();
        writeln!(f, "{text}").map_err(err)?;
        f.sync_data().map_err(err)
    }

    /// Calls saved but never answered (by an earlier run that crashed or lost its connection).
    fn pending(&self) -> Vec<Signed> {
        let Ok(text) = std::fs::read_to_string(self.journal()) else {
            return Vec::new();
        };
        let mut open: Vec<(String, Signed)> = Vec::new();
        for line in text.lines() {
            match serde_json::from_str::<JournalLine>(line) {
                Ok(JournalLine::Pending { id, call }) => open.push((id, call)),
                Ok(JournalLine::Done { id }) => open.retain(|(i, _)| *i != id),
                Err(_) => {} // a torn last line from a crash: that call was never sent
            }
        }
        open.into_iter().map(|(_, c)| c).collect()
    }

    /// Signs `op` under a fresh id, saves it, sends it (retrying the same call), and returns the
    /// Escrow's receipt. A receipt with `ok: false` becomes [`WalletError::Refused`].
    pub async fn call(
        &self,
        net: &Net,
        escrow: &HubAddr,
        op: Op,
    ) -> Result<CallReceipt, WalletError> {
        let mut id = [0u8; 16];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut id);
        let id = id.iter().map(|b| format!("{b:02x}")).collect::<String>();
        let call = Call {
            peer_id: self.peer().to_base58(),
            id: id.clone(),
            issued_at_ms: now_ms(),
            op,
        };
        let env = Signed::sign(&call, &self.ed25519())
            .map_err(|e| WalletError::Refused(e.to_string()))?;
        self.append(&JournalLine::Pending {
            id: id.clone(),
            call: env.clone(),
        })?;
        let receipt = self.send(net, escrow, env).await?;
        if !receipt.ok {
            return Err(WalletError::Refused(
                receipt.error.unwrap_or_else(|| "the Escrow refused".into()),
            ));
        }
        Ok(receipt)
    }

    async fn send(
        &self,
        net: &Net,
        escrow: &HubAddr,
        env: Signed,
    ) -> Result<CallReceipt, WalletError> {
        let id = serde_json::from_str::<Call>(&env.payload)
            .map(|c| c.id)
            .unwrap_or_default();
        let req = EscrowRequest::Call { call: env };
        let mut last = None;
        for attempt in 0..4u32 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(300 << attempt)).await;
            }
            match client::request(net, escrow.peer, escrow.addrs.clone(), &req).await {
                Ok(EscrowResponse::Call(r)) => {
                    self.append(&JournalLine::Done { id })?;
                    return Ok(r);
                }
                Ok(other) => {
                    return Err(WalletError::Refused(format!(
                        "the Escrow answered {other:?} to a call"
                    )))
                }
                // Refused before the ledger (bad signature, stale): retrying cannot help, and
                // nothing was done.
                Err(EscrowClientError::Refused(msg))
                    if !msg.contains("busy") && !msg.contains("could not save") =>
                {
                    self.append(&JournalLine::Done { id })?;
                    return Err(WalletError::Refused(msg));
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last
            .map(WalletError::from)
            .unwrap_or_else(|| WalletError::Refused("no answer".into())))
    }

    /// Resends every call an earlier run saved but got no answer for; returns how many.
    pub async fn resume(&self, net: &Net, escrow: &HubAddr) -> Result<usize, WalletError> {
        let pending = self.pending();
        let n = pending.len();
        for env in pending {
            match self.send(net, escrow, env).await {
                Ok(_) | Err(WalletError::Refused(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(n)
    }
}

/// The wall clock, unix ms.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Parses an amount of BTT (`"12"`, `"0.5"`, up to 6 decimals) into µBTT.
pub fn parse_btt(s: &str) -> Result<u64, WalletError> {
    let bad = || {
        WalletError::Amount(format!(
            "{s:?} is not an amount of BTT: write e.g. 10 or 0.25 (at most 6 decimals)"
        ))
    };
    let s = s.trim();
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    if whole.is_empty() && frac.is_empty() || frac.len() > 6 {
        return Err(bad());
    }
    if !whole.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let w: u64 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| bad())?
    };
    let f: u64 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<6}").parse().map_err(|_| bad())?
    };
    let v = w
        .checked_mul(MICRO_PER_BTT)
        .and_then(|x| x.checked_add(f))
        .ok_or_else(bad)?;
    if v == 0 {
        return Err(WalletError::Amount("the amount must be more than 0".into()));
    }
    Ok(v)
}

/// µBTT as BTT text (`1.5 BTT`).
pub fn btt(micro: u64) -> String {
    let (w, f) = (micro / MICRO_PER_BTT, micro % MICRO_PER_BTT);
    if f == 0 {
        format!("{w} BTT")
    } else {
        let frac = format!("{f:06}");
        format!("{w}.{} BTT", frac.trim_end_matches('0'))
    }
}

/// Asks the Escrow a query (no signature needed: the ledger is public).
pub async fn query(
    net: &Net,
    escrow: &HubAddr,
    req: &EscrowRequest,
) -> Result<EscrowResponse, WalletError> {
    Ok(client::request(net, escrow.peer, escrow.addrs.clone(), req).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_parse_and_print() {
        assert_eq!(parse_btt("10").unwrap(), 10_000_000);
        assert_eq!(parse_btt("0.25").unwrap(), 250_000);
        assert_eq!(parse_btt(".5").unwrap(), 500_000);
        assert_eq!(parse_btt("1.000001").unwrap(), 1_000_001);
        for bad in [
            "",
            "abc",
            "1.0000001",
            "-1",
            "1e3",
            "0",
            "99999999999999999999",
        ] {
            assert!(parse_btt(bad).is_err(), "{bad}");
        }
        assert_eq!(btt(1_500_000), "1.5 BTT");
        assert_eq!(btt(3), "0.000003 BTT");
        assert_eq!(btt(7_000_000), "7 BTT");
    }

    #[test]
    fn the_key_is_created_once_and_the_journal_remembers_open_calls() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cfg/btfs/wallet.key");
        let w = Wallet::open(Some(&path)).unwrap();
        let again = Wallet::open(Some(&path)).unwrap();
        assert_eq!(w.peer(), again.peer());
        let call = Call {
            peer_id: w.peer().to_base58(),
            id: "ab".repeat(16),
            issued_at_ms: 1,
            op: Op::Deposit { amount: 1 },
        };
        let env = Signed::sign(&call, &w.ed25519()).unwrap();
        w.append(&JournalLine::Pending {
            id: call.id.clone(),
            call: env.clone(),
        })
        .unwrap();
        assert_eq!(w.pending(), vec![env]);
        w.append(&JournalLine::Done { id: call.id }).unwrap();
        assert!(w.pending().is_empty());
    }
}

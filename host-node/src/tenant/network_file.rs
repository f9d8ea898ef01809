//! `network.json`: everything a tenant needs to reach a network.
//!
//! Written by `btfs devnet`; read by the CLI (`--network`) and, later, by the browser client.
//! When `services.hub` is present, uploads ask the Hub which hosts to use (`Recommend`) and
//! downloads also look hosts up there; otherwise tenants use `hosts` directly. The Hub's `addrs`
//! include WebSocket and WebRTC-direct addresses so browsers can reach it too.
//! `services.status.http` is the base URL of the Status server's HTTP API (`btfs status`).
//!
//! ```json
//! {
//!   "bootstrap": ["/ip4/127.0.0.1/tcp/40001/p2p/12D3KooW..."],
//!   "hosts": [
//!     { "peer_id": "12D3KooW...", "pid": 4242, "data_dir": "/tmp/devnet/hosts/host-00",
//!       "addrs": ["/ip4/127.0.0.1/tcp/40001/p2p/12D3KooW...", "..."] }
//!   ],
//!   "services": {
//!     "hub": { "peer_id": "12D3KooW...", "addrs": ["/ip4/127.0.0.1/tcp/40100/p2p/12D3KooW...", "..."] },
//!     "status": { "http": "http://127.0.0.1:40104" }
//!   }
//! }
//! ```

use std::path::{Path, PathBuf};

use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::services::hub::HubAddr;

/// The network file could not be used.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum NetworkFileError {
    /// Missing or unreadable.
    #[error("cannot read network file {path} (start a local network with `btfs devnet --dir DIR` and pass --network DIR/network.json)")]
    Read {
        /// Path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Not valid JSON of this shape.
    #[error("network file {path} is invalid")]
    Parse {
        /// Path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: serde_json::Error,
    },
    /// A service entry is malformed.
    #[error("network file {path}: services.{service} is invalid: {why}")]
    Service {
        /// Path.
        path: PathBuf,
        /// Service name.
        service: &'static str,
        /// What is wrong.
        why: String,
    },
    /// A peer id or address does not parse.
    #[error("network file {path}: host entry {index} is invalid: {why}")]
    Entry {
        /// Path.
        path: PathBuf,
        /// Index in `hosts`.
        index: usize,
        /// What is wrong.
        why: String,
    },
}

/// One host in the network file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HostEntry {
    /// libp2p peer id.
    pub peer_id: String,
    /// OS process id (devnet only; 0 if unknown).
    #[serde(default)]
    pub pid: u32,
    /// Dialable multiaddrs.
    pub addrs: Vec<String>,
    /// Data directory (devnet only).
    #[serde(default)]
    pub data_dir: PathBuf,
}

/// The network file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct NetworkFile {
    /// Addresses to join the network through.
    pub bootstrap: Vec<String>,
    /// Known hosts.
    pub hosts: Vec<HostEntry>,
    /// Service endpoints (Hub, Guard, Escrow, Status) as they appear.
    #[serde(default)]
    pub services: serde_json::Map<String, serde_json::Value>,
}

/// A host a tenant can dial.
#[derive(Debug, Clone)]
pub struct KnownHost {
    /// Peer id.
    pub peer: PeerId,
    /// Addresses.
    pub addrs: Vec<Multiaddr>,
}

impl NetworkFile {
    /// Reads and parses a network file.
    pub fn load(path: &Path) -> Result<Self, NetworkFileError> {
        let bytes = std::fs::read(path).map_err(|source| NetworkFileError::Read {
            path: path.into(),
            source,
        })?;
        serde_json::from_slice(&bytes).map_err(|source| NetworkFileError::Parse {
            path: path.into(),
            source,
        })
    }

    /// Writes atomically (temp file + rename).
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let tmp = path.with_extension("json.tmp");
        std::fs::write(
            &tmp,
            serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?,
        )?;
        std::fs::rename(tmp, path)
    }

    /// The Hub (`services.hub`: `{"peer_id": "...", "addrs": ["/ip4/.../p2p/..."]}`), if the
    /// network has one. Native tenants dial its TCP/QUIC addresses.
    pub fn hub(&self, path: &Path) -> Result<Option<HubAddr>, NetworkFileError> {
        let Some(hub) = self.services.get("hub") else {
            return Ok(None);
        };
        let entry = |why: String| NetworkFileError::Service {
            path: path.into(),
            service: "hub",
            why,
        };
        let peer: PeerId = hub
            .get("peer_id")
            .and_then(|v| v.as_str())
            .ok_or_else(|| entry("missing peer_id".into()))?
            .parse()
            .map_err(|e| entry(format!("peer_id: {e}")))?;
        let mut addrs = Vec::new();
        for a in hub
            .get("addrs")
            .and_then(|v| v.as_array())
            .ok_or_else(|| entry("missing addrs".into()))?
        {
            let text = a
                .as_str()
                .ok_or_else(|| entry("addrs must be strings".into()))?;
            let mut m: Multiaddr = text
                .parse()
                .map_err(|e| entry(format!("address {text:?}: {e}")))?;
            if matches!(m.iter().last(), Some(Protocol::P2p(_))) {
                m.pop();
            }
            if crate::net::is_native(&m) {
                addrs.push(m);
            }
        }
        if addrs.is_empty() {
            return Err(entry("no TCP or QUIC address".into()));
        }
        Ok(Some(HubAddr { peer, addrs }))
    }

    /// The Status server's base URL (`services.status.http`), if the network has one.
    pub fn status_http(&self, path: &Path) -> Result<Option<String>, NetworkFileError> {
        let Some(status) = self.services.get("status") else {
            return Ok(None);
        };
        let url = status.get("http").and_then(|v| v.as_str()).ok_or_else(|| {
            NetworkFileError::Service {
                path: path.into(),
                service: "status",
                why: "missing http (the Status server's base URL)".into(),
            }
        })?;
        if !url.starts_with("http://") {
            return Err(NetworkFileError::Service {
                path: path.into(),
                service: "status",
                why: format!("http {url:?} is not an http:// URL"),
            });
        }
        Ok(Some(url.to_string()))
    }

    /// Parsed hosts; fails on the first malformed entry, naming it.
    pub fn known_hosts(&self, path: &Path) -> Result<Vec<KnownHost>, NetworkFileError> {
        self.hosts
            .iter()
            .enumerate()
            .map(|(index, h)| {
                let entry = |why: String| NetworkFileError::Entry {
                    path: path.into(),
                    index,
                    why,
                };
                let peer: PeerId = h
                    .peer_id
                    .parse()
                    .map_err(|e| entry(format!("peer_id {:?}: {e}", h.peer_id)))?;
                let addrs = h
                    .addrs
                    .iter()
                    .map(|a| a.parse().map_err(|e| entry(format!("address {a:?}: {e}"))))
                    .collect::<Result<Vec<Multiaddr>, _>>()?;
                Ok(KnownHost { peer, addrs })
            })
            .collect()
    }
}

//! `network.json` on disk, for native tenants: reading it (`--network`), writing it
//! (`btfs devnet`, atomically), and turning its entries into libp2p [`PeerId`]s and
//! [`Multiaddr`]s this node dials.
//!
//! The format itself — the serde types, the parse, what each entry must hold — is
//! [`btfs_core::network_file`], shared with the browser; which addresses a native node keeps is
//! [`btfs_core::transport`]. This module adds the file's path to every error.

use std::path::{Path, PathBuf};

use btfs_core::network_file::FormatError;
pub use btfs_core::network_file::{HostEntry, NetworkFile};
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
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
    /// Any other problem the format reports.
    #[error("network file {path} is invalid")]
    Format {
        /// Path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: FormatError,
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

impl NetworkFileError {
    /// The core format error `e`, for the file at `path`.
    pub fn at(path: &Path, e: FormatError) -> Self {
        let path = path.into();
        match e {
            FormatError::Json(source) => Self::Parse { path, source },
            FormatError::Service { service, why } => Self::Service { path, service, why },
            FormatError::Entry { index, why } => Self::Entry { path, index, why },
            // A browser's list of multiaddrs (a file is always the object form), or a problem
            // the format learns to name later.
            source => Self::Format { path, source },
        }
    }
}

/// A host a tenant can dial.
#[derive(Debug, Clone)]
pub struct KnownHost {
    /// Peer id.
    pub peer: PeerId,
    /// Addresses.
    pub addrs: Vec<Multiaddr>,
}

/// Reads and parses a network file.
pub fn load(path: &Path) -> Result<NetworkFile, NetworkFileError> {
    let bytes = std::fs::read(path).map_err(|source| NetworkFileError::Read {
        path: path.into(),
        source,
    })?;
    NetworkFile::parse(&bytes).map_err(|e| NetworkFileError::at(path, e))
}

/// Writes `file` atomically (temp file + rename).
pub fn save(file: &NetworkFile, path: &Path) -> std::io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    std::fs::write(
        &tmp,
        serde_json::to_vec_pretty(file).map_err(std::io::Error::other)?,
    )?;
    std::fs::rename(tmp, path)
}

/// The Hub (`services.hub`) with the addresses native tenants dial (TCP/QUIC, without the
/// `/p2p/` suffix), if the network has one; `path` names the file in errors.
pub fn hub(file: &NetworkFile, path: &Path) -> Result<Option<HubAddr>, NetworkFileError> {
    service(file.hub(), "hub", path)
}

/// The Guard's peer id and native addresses (`services.guard`), if the network has one.
pub fn guard(file: &NetworkFile, path: &Path) -> Result<Option<HubAddr>, NetworkFileError> {
    service(file.guard(), "guard", path)
}

/// The Escrow's peer id and native addresses (`services.escrow`), if the network has one.
pub fn escrow(file: &NetworkFile, path: &Path) -> Result<Option<HubAddr>, NetworkFileError> {
    service(file.escrow(), "escrow", path)
}

fn service(
    entry: Result<
        Option<btfs_core::network_file::ServiceHost>,
        btfs_core::network_file::FormatError,
    >,
    service: &'static str,
    path: &Path,
) -> Result<Option<HubAddr>, NetworkFileError> {
    let Some(hub) = entry.map_err(|e| NetworkFileError::at(path, e))? else {
        return Ok(None);
    };
    let entry = |why: String| NetworkFileError::Service {
        path: path.into(),
        service,
        why,
    };
    let mut addrs = Vec::new();
    for text in &hub.addrs {
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
    Ok(Some(HubAddr {
        peer: hub.peer,
        addrs,
    }))
}

/// The Status server's base URL (`services.status.http`), if the network has one.
pub fn status_http(file: &NetworkFile, path: &Path) -> Result<Option<String>, NetworkFileError> {
    file.status_http()
        .map(|u| u.map(str::to_string))
        .map_err(|e| NetworkFileError::at(path, e))
}

/// The file's hosts with parsed peer ids and addresses; fails on the first malformed entry,
/// naming it.
pub fn known_hosts(file: &NetworkFile, path: &Path) -> Result<Vec<KnownHost>, NetworkFileError> {
    file.hosts
        .iter()
        .enumerate()
        .map(|(index, h)| {
            let peer = h.peer(index).map_err(|e| NetworkFileError::at(path, e))?;
            let addrs = h
                .addrs
                .iter()
                .map(|a| {
                    a.parse().map_err(|e| NetworkFileError::Entry {
                        path: path.into(),
                        index,
                        why: format!("address {a:?}: {e}"),
                    })
                })
                .collect::<Result<Vec<Multiaddr>, _>>()?;
            Ok(KnownHost { peer, addrs })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "12D3KooWHEhPvLr1GWp28i4W6xrHQo6ZMSkKNx2yxoo2TDVX6Tzb";

    #[test]
    fn errors_name_the_file_and_the_entry() {
        let path = Path::new("/n/network.json");
        let file = |json: String| NetworkFile::parse(json.as_bytes()).unwrap();
        let e = known_hosts(
            &file(format!(
                r#"{{"hosts":[{{"peer_id":"{P}","addrs":["nope"]}}]}}"#
            )),
            path,
        )
        .unwrap_err();
        assert!(
            e.to_string().starts_with(
                "network file /n/network.json: host entry 0 is invalid: address \"nope\": "
            ),
            "{e}"
        );
        let e = hub(
            &file(format!(
                r#"{{"hosts":[],"services":{{"hub":{{"peer_id":"{P}","addrs":["/ip4/1.2.3.4/tcp/1/ws/p2p/{P}"]}}}}}}"#
            )),
            path,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "network file /n/network.json: services.hub is invalid: no TCP or QUIC address"
        );
        let e = load(Path::new("/nonexistent/network.json")).unwrap_err();
        assert!(e
            .to_string()
            .starts_with("cannot read network file /nonexistent/network.json"));
        let e = NetworkFileError::at(path, NetworkFile::parse(b"42").unwrap_err());
        assert_eq!(e.to_string(), "network file /n/network.json is invalid");
        assert!(matches!(e, NetworkFileError::Parse { .. }));
    }

    #[test]
    fn hub_keeps_native_addresses_without_the_peer_suffix() {
        let f = NetworkFile::parse(
            format!(
                r#"{{"hosts":[],"services":{{"hub":{{"peer_id":"{P}","addrs":[
              "/ip4/1.2.3.4/tcp/1/p2p/{P}","/ip4/1.2.3.4/tcp/2/ws/p2p/{P}",
              "/ip4/1.2.3.4/udp/3/quic-v1/p2p/{P}"]}}}}}}"#
            )
            .as_bytes(),
        )
        .unwrap();
        let hub = hub(&f, Path::new("n.json")).unwrap().unwrap();
        assert_eq!(hub.peer.to_base58(), P);
        let addrs: Vec<String> = hub.addrs.iter().map(|a| a.to_string()).collect();
        assert_eq!(
            addrs,
            vec!["/ip4/1.2.3.4/tcp/1", "/ip4/1.2.3.4/udp/3/quic-v1"]
        );
    }
}

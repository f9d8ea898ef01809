//! `network.json`: everything a tenant needs to reach a network — the one definition of the
//! format, read by the CLI (`--network`) and the browser (`BtfsClient.connect({ network })`),
//! written by `btfs devnet`.
//!
//! Goals: one set of serde types, one parse with errors that say which entry is wrong and how,
//! the same accepted inputs in both shells. When `services.hub` is present, uploads ask the Hub
//! which hosts to use (`Recommend`) and downloads also look hosts up there; otherwise tenants
//! use `hosts` directly. The Hub's `addrs` include WebSocket and WebRTC-direct addresses so
//! browsers can reach it too. `services.status.http` is the base URL of the Status server's
//! HTTP API (`btfs status`). `services.guard` names the Guard (`peer_id`, `addrs`, and the `pid`
//! of the process running it): uploads register with it, downloads ask it where repaired shards
//! live. `services.escrow` names the Escrow the same way (plus `"devnet": true` when its faucet
//! may top up tenants): uploads sign and fund storage contracts there.
//! Non-goals: reading or writing the file (the native shell does, with the path in its
//! errors), parsing multiaddrs (each shell does with its libp2p; [`crate::transport`] says
//! which addresses each shell keeps).
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
//!     "status": { "http": "http://127.0.0.1:40104" },
//!     "guard": { "peer_id": "12D3KooW...", "addrs": ["/ip4/127.0.0.1/tcp/40100/p2p/12D3KooW..."], "pid": 4241 },
//!     "escrow": { "peer_id": "12D3KooW...", "addrs": ["..."], "pid": 4241, "devnet": true }
//!   }
//! }
//! ```
//! `hosts` is required; `bootstrap`, `services`, and a host's `pid` and `data_dir` may be left
//! out; unknown fields are ignored. Instead of the object, a browser may pass a JSON array of
//! multiaddrs each ending in `/p2p/<peer id>` ([`NetworkFile::parse_or_addrs`]): one host per
//! peer id, with its addresses in order.

use std::path::PathBuf;

use libp2p_identity::PeerId;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// What is wrong with a network file's contents (the shell adds where it came from).
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum FormatError {
    /// Not JSON of the network file's shape.
    #[error("not a network file: {0}")]
    Json(#[source] serde_json::Error),
    /// An address in a list of multiaddrs does not name its host.
    #[error("{addr} has no /p2p/<peer id>")]
    NoPeerId {
        /// The address.
        addr: String,
    },
    /// A `services` entry is malformed.
    #[error("services.{service} is invalid: {why}")]
    Service {
        /// Service name (`hub`, `status`).
        service: &'static str,
        /// What is wrong.
        why: String,
    },
    /// Two nodes asked for the network's services name different nodes for one service.
    #[error("the bootstrap nodes disagree about the network's {service}: {who}; bootstrap from nodes of one network only")]
    Conflict {
        /// Service name.
        service: &'static str,
        /// Who said what (`X says A, Y says B`).
        who: String,
    },
    /// A `hosts` entry is malformed.
    #[error("host entry {index} is invalid: {why}")]
    Entry {
        /// Index in `hosts`.
        index: usize,
        /// What is wrong.
        why: String,
    },
}

/// One host in the network file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HostEntry {
    /// libp2p peer id (base58).
    pub peer_id: String,
    /// OS process id (devnet only; 0 if unknown).
    #[serde(default)]
    pub pid: u32,
    /// Multiaddrs, usually ending in `/p2p/<peer id>`.
    pub addrs: Vec<String>,
    /// Data directory (devnet only).
    #[serde(default)]
    pub data_dir: PathBuf,
}

impl HostEntry {
    /// The entry's peer id; `index` (its place in `hosts`) names it in the error.
    pub fn peer(&self, index: usize) -> Result<PeerId, FormatError> {
        self.peer_id.parse().map_err(|e| FormatError::Entry {
            index,
            why: format!("peer_id {:?}: {e}", self.peer_id),
        })
    }
}

/// The network file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct NetworkFile {
    /// Addresses to join the network through.
    #[serde(default)]
    pub bootstrap: Vec<String>,
    /// Known hosts.
    pub hosts: Vec<HostEntry>,
    /// Service endpoints (Hub, Guard, Escrow, Status) as they appear; read through
    /// [`NetworkFile::hub`] and [`NetworkFile::status_http`].
    #[serde(default)]
    pub services: serde_json::Map<String, serde_json::Value>,
}

/// A service reachable over libp2p (`services.hub`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceHost {
    /// Its peer id.
    pub peer: PeerId,
    /// Its multiaddrs as written (every transport; each shell keeps the ones it dials).
    pub addrs: Vec<String>,
}

impl NetworkFile {
    /// Parses the JSON object.
    pub fn parse(json: &[u8]) -> Result<Self, FormatError> {
        serde_json::from_slice(json).map_err(FormatError::Json)
    }

    /// Parses either the JSON object or a JSON array of multiaddrs ending in
    /// `/p2p/<peer id>` (what a browser may pass instead; see [`NetworkFile::from_addrs`]).
    pub fn parse_or_addrs(json: &str) -> Result<Self, FormatError> {
        if json.trim_start().starts_with('[') {
            let addrs: Vec<String> = serde_json::from_str(json).map_err(FormatError::Json)?;
            Self::from_addrs(addrs)
        } else {
            Self::parse(json.as_bytes())
        }
    }

    /// A network of the hosts these multiaddrs name: one host per `/p2p/<peer id>`, in order of
    /// first appearance, with its addresses in order.
    pub fn from_addrs(addrs: Vec<String>) -> Result<Self, FormatError> {
        let mut hosts: Vec<HostEntry> = Vec::new();
        for addr in addrs {
            let Some((_, peer)) = addr.rsplit_once("/p2p/") else {
                return Err(FormatError::NoPeerId { addr });
            };
            let peer = peer.to_string();
            match hosts.iter_mut().find(|h| h.peer_id == peer) {
                Some(h) => h.addrs.push(addr),
                None => hosts.push(HostEntry {
                    peer_id: peer,
                    pid: 0,
                    addrs: vec![addr],
                    data_dir: PathBuf::new(),
                }),
            }
        }
        Ok(Self {
            hosts,
            ..Self::default()
        })
    }

    /// The Hub (`services.hub`: `{"peer_id": "...", "addrs": ["/ip4/.../p2p/..."]}`), if the
    /// network has one.
    pub fn hub(&self) -> Result<Option<ServiceHost>, FormatError> {
        self.libp2p_service("hub")
    }

    /// The Guard (`services.guard`: `{"peer_id": "...", "addrs": [...], "pid": N}`), if the
    /// network has one: uploads register with it, downloads ask it for placement updates.
    pub fn guard(&self) -> Result<Option<ServiceHost>, FormatError> {
        self.libp2p_service("guard")
    }

    /// The Escrow (`services.escrow`: `{"peer_id": "...", "addrs": [...], "pid": N}`), if the
    /// network has one: uploads sign and fund storage contracts there; `"devnet": true` on it
    /// means its faucet tops up tenants that cannot pay.
    pub fn escrow(&self) -> Result<Option<ServiceHost>, FormatError> {
        self.libp2p_service("escrow")
    }

    /// The Guard's epoch length in ms (`services.guard.epoch_ms`; default one hour): storage
    /// contracts are paid per epoch of the Guard.
    pub fn guard_epoch_ms(&self) -> u64 {
        self.services
            .get("guard")
            .and_then(|e| e.get("epoch_ms"))
            .and_then(|v| v.as_u64())
            .filter(|&v| v > 0)
            .unwrap_or(3_600_000)
    }

    /// Whether the network says it is a devnet (`services.escrow.devnet`): tenants may take test
    /// money from the Escrow's faucet.
    pub fn escrow_is_devnet(&self) -> bool {
        self.services
            .get("escrow")
            .and_then(|e| e.get("devnet"))
            .and_then(|v| v.as_bool())
            .unwrap_or(false)
    }

    fn libp2p_service(&self, name: &'static str) -> Result<Option<ServiceHost>, FormatError> {
        let Some(hub) = self.services.get(name) else {
            return Ok(None);
        };
        let entry = |why: String| FormatError::Service { service: name, why };
        let peer: PeerId = hub
            .get("peer_id")
            .and_then(|v| v.as_str())
            .ok_or_else(|| entry("missing peer_id".into()))?
            .parse()
            .map_err(|e| entry(format!("peer_id: {e}")))?;
        let addrs = hub
            .get("addrs")
            .and_then(|v| v.as_array())
            .ok_or_else(|| entry("missing addrs".into()))?
            .iter()
            .map(|a| {
                a.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| entry("addrs must be strings".into()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(ServiceHost { peer, addrs }))
    }

    /// Adds the `services` entries of the services one node runs (what `btfs devnet` writes for
    /// its service node, and what a node answers a `Network` request with about itself).
    pub fn add_services_of(&mut self, node: &NodeServices<'_>) {
        let base = |extra: serde_json::Value| {
            let mut v = serde_json::json!({ "peer_id": node.peer_id, "addrs": node.addrs });
            if node.pid != 0 {
                v["pid"] = node.pid.into();
            }
            if let (Some(v), serde_json::Value::Object(extra)) = (v.as_object_mut(), extra) {
                v.extend(extra);
            }
            v
        };
        if node.hub {
            self.services
                .insert("hub".into(), base(serde_json::json!({})));
        }
        if let Some(http) = node.status_http {
            self.services
                .insert("status".into(), serde_json::json!({ "http": http }));
        }
        if let Some(epoch_ms) = node.guard_epoch_ms {
            self.services.insert(
                "guard".into(),
                base(serde_json::json!({ "epoch_ms": epoch_ms })),
            );
        }
        if let Some(devnet) = node.escrow_devnet {
            self.services.insert(
                "escrow".into(),
                base(serde_json::json!({ "devnet": devnet })),
            );
        }
    }

    /// The Status server's base URL (`services.status.http`), if the network has one.
    pub fn status_http(&self) -> Result<Option<&str>, FormatError> {
        let Some(status) = self.services.get("status") else {
            return Ok(None);
        };
        let entry = |why: String| FormatError::Service {
            service: "status",
            why,
        };
        let url = status
            .get("http")
            .and_then(|v| v.as_str())
            .ok_or_else(|| entry("missing http (the Status server's base URL)".into()))?;
        if !url.starts_with("http://") {
            return Err(entry(format!("http {url:?} is not an http:// URL")));
        }
        Ok(Some(url))
    }
}

/// The Status server's network-status path under `services.status.http` (`GET`, JSON).
pub const STATUS_PATH: &str = "/api/v1/status";

/// The services one node runs, for [`NetworkFile::add_services_of`].
#[derive(Debug, Clone, Copy)]
pub struct NodeServices<'a> {
    /// The node's peer id.
    pub peer_id: &'a str,
    /// Its OS process id (0: not said; devnets record it so tests can kill the process).
    pub pid: u32,
    /// Its full multiaddrs (`…/p2p/<peer id>`).
    pub addrs: &'a [String],
    /// It runs the Hub.
    pub hub: bool,
    /// It runs Status, at this base URL.
    pub status_http: Option<&'a str>,
    /// It runs the Guard, with epochs this long.
    pub guard_epoch_ms: Option<u64>,
    /// It runs the Escrow; `true` when its faucet tops tenants up.
    pub escrow_devnet: Option<bool>,
}

/// The services a network has, on the word of several nodes (`(who, what it said)`, best
/// source first): for each service, the first answer that names it, with the addresses every
/// answer naming the same node gives (at most [`MAX_SERVICE_ADDRS`]) and the fields the first
/// answer lacks taken from later ones. Two answers naming
/// different nodes (or Status URLs) for one service are an error: a tenant must not pick one of
/// two networks by chance. Services other than [`SERVICES`] are dropped; `hosts` and
/// `bootstrap` are not taken from answers (hosts come from the Hub).
///
/// This is the trust rule of discovery: the network is what your bootstrap nodes say it is.
/// Their peer ids are in the bootstrap addresses, so a stranger cannot answer for them; a
/// wrong address for a service only fails its handshake (the peer id is checked).
pub fn merge_directories(answers: &[(String, NetworkFile)]) -> Result<NetworkFile, FormatError> {
    let mut out = NetworkFile::default();
    let mut from: std::collections::HashMap<&str, &str> = Default::default();
    for (who, file) in answers {
        for &name in SERVICES {
            let Some(entry) = file.services.get(name) else {
                continue;
            };
            let id = |v: &serde_json::Value| {
                let key = if name == "status" { "http" } else { "peer_id" };
                v.get(key)
                    .and_then(|x| x.as_str())
                    .unwrap_or_default()
                    .to_string()
            };
            match out.services.get_mut(name) {
                None => {
                    let mut entry = entry.clone();
                    if let Some(a) = entry.get_mut("addrs").and_then(|a| a.as_array_mut()) {
                        a.truncate(MAX_SERVICE_ADDRS);
                    }
                    out.services.insert(name.into(), entry);
                    from.insert(name, who);
                }
                Some(have) if id(have) != id(entry) => {
                    return Err(FormatError::Conflict {
                        service: name,
                        who: format!(
                            "{} says {}, {who} says {}",
                            from.get(name).copied().unwrap_or_default(),
                            id(have),
                            id(entry)
                        ),
                    });
                }
                Some(have) => {
                    // The same node: fields the first answer lacks (a Guard's epoch, an
                    // Escrow's devnet flag) come from later ones.
                    if let (Some(have), Some(entry)) = (have.as_object_mut(), entry.as_object()) {
                        for (k, v) in entry {
                            if !have.contains_key(k) {
                                have.insert(k.clone(), v.clone());
                            }
                        }
                    }
                    let more = entry.get("addrs").and_then(|a| a.as_array()).cloned();
                    if let (Some(a), Some(more)) =
                        (have.get_mut("addrs").and_then(|a| a.as_array_mut()), more)
                    {
                        for m in more {
                            if a.len() < MAX_SERVICE_ADDRS && !a.contains(&m) {
                                a.push(m);
                            }
                        }
                    }
                }
            }
        }
    }
    Ok(out)
}

/// What a tenant or node learns from its bootstrap nodes: `answers` are `(who, what it said or
/// why it did not)`, in bootstrap order. At least one must have answered; the answers are then
/// merged by [`merge_directories`], and `bootstrap` records the addresses given. Shared by the
/// CLI's `--bootstrap` and the browser's `connect({ bootstrap })`.
pub fn directory_from(
    answers: Vec<(String, Result<NetworkFile, String>)>,
    bootstrap: &[String],
) -> Result<NetworkFile, DirectoryError> {
    let mut ok = Vec::new();
    let mut failed = Vec::new();
    for (who, r) in answers {
        match r {
            Ok(d) => ok.push((who, d)),
            Err(e) => failed.push(format!("{who}: {e}")),
        }
    }
    if ok.is_empty() {
        return Err(DirectoryError::NoAnswer(failed.join("; ")));
    }
    let mut found = merge_directories(&ok)?;
    found.bootstrap = bootstrap.to_vec();
    Ok(found)
}

/// The bootstrap nodes did not say what the network is ([`directory_from`]).
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum DirectoryError {
    /// None of them answered; why, per node.
    #[error("no bootstrap node told us the network's services: {0}")]
    NoAnswer(String),
    /// Their answers disagree, or one is malformed.
    #[error(transparent)]
    Format(#[from] FormatError),
}

/// The services discovery knows ([`merge_directories`]).
pub const SERVICES: &[&str] = &["hub", "status", "guard", "escrow"];
/// Most addresses kept per service from discovery answers.
pub const MAX_SERVICE_ADDRS: usize = 16;

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const P: &str = "12D3KooWHEhPvLr1GWp28i4W6xrHQo6ZMSkKNx2yxoo2TDVX6Tzb";

    /// What `btfs devnet` writes (golden: field names and nesting are the format).
    fn devnet_file() -> String {
        format!(
            r#"{{
  "bootstrap": ["/ip4/127.0.0.1/tcp/1/p2p/{P}"],
  "hosts": [
    {{ "peer_id": "{P}", "pid": 7, "data_dir": "/tmp/d/hosts/host-00",
      "addrs": ["/ip4/127.0.0.1/tcp/1/p2p/{P}", "/ip4/127.0.0.1/tcp/3/ws/p2p/{P}"] }}
  ],
  "services": {{
    "hub": {{ "peer_id": "{P}", "addrs": ["/ip4/127.0.0.1/tcp/9/p2p/{P}"] }},
    "status": {{ "http": "http://127.0.0.1:8" }}
  }}
}}"#
        )
    }

    fn err(json: &str) -> String {
        let f = NetworkFile::parse(json.as_bytes()).unwrap();
        match (f.hub(), f.status_http()) {
            (Err(e), _) | (_, Err(e)) => e.to_string(),
            _ => f.hosts[0].peer(0).unwrap_err().to_string(),
        }
    }

    #[test]
    fn reads_what_the_devnet_writes() {
        let f = NetworkFile::parse(devnet_file().as_bytes()).unwrap();
        assert_eq!(f.bootstrap, vec![format!("/ip4/127.0.0.1/tcp/1/p2p/{P}")]);
        assert_eq!(f.hosts.len(), 1);
        let h = &f.hosts[0];
        assert_eq!((h.pid, h.addrs.len()), (7, 2));
        assert_eq!(h.data_dir, PathBuf::from("/tmp/d/hosts/host-00"));
        assert_eq!(h.peer(0).unwrap().to_base58(), P);
        let hub = f.hub().unwrap().unwrap();
        assert_eq!(hub.peer.to_base58(), P);
        assert_eq!(hub.addrs, vec![format!("/ip4/127.0.0.1/tcp/9/p2p/{P}")]);
        assert_eq!(f.status_http().unwrap(), Some("http://127.0.0.1:8"));
        // Written back (as the devnet does) it reads the same.
        let back = NetworkFile::parse(&serde_json::to_vec(&f).unwrap()).unwrap();
        assert_eq!(back, f);
    }

    #[test]
    fn optional_parts_may_be_left_out() {
        let f = NetworkFile::parse(
            format!(r#"{{"hosts":[{{"peer_id":"{P}","addrs":[],"extra":1}}]}}"#).as_bytes(),
        )
        .unwrap();
        assert!(f.bootstrap.is_empty() && f.services.is_empty());
        assert_eq!(
            (f.hosts[0].pid, f.hosts[0].data_dir.as_os_str().len()),
            (0, 0)
        );
        assert_eq!(f.hub().unwrap(), None);
        assert_eq!(f.status_http().unwrap(), None);
    }

    #[test]
    fn explains_what_is_wrong() {
        for bad in [
            "42",
            "{}",
            r#"{"hosts":[{"addrs":[]}]}"#,
            r#"{"hosts":[],"services":5}"#,
        ] {
            let e = NetworkFile::parse(bad.as_bytes()).unwrap_err();
            assert!(matches!(e, FormatError::Json(_)), "{bad}: {e}");
            assert!(e.to_string().starts_with("not a network file: "), "{e}");
        }
        let hub = |v: &str| format!(r#"{{"hosts":[],"services":{{"hub":{v}}}}}"#);
        assert_eq!(err(&hub("{}")), "services.hub is invalid: missing peer_id");
        assert!(err(&hub(r#"{"peer_id":"nope","addrs":[]}"#))
            .starts_with("services.hub is invalid: peer_id: "));
        assert_eq!(
            err(&hub(&format!(r#"{{"peer_id":"{P}"}}"#))),
            "services.hub is invalid: missing addrs"
        );
        assert_eq!(
            err(&hub(&format!(r#"{{"peer_id":"{P}","addrs":[1]}}"#))),
            "services.hub is invalid: addrs must be strings"
        );
        let status = |v: &str| format!(r#"{{"hosts":[],"services":{{"status":{v}}}}}"#);
        assert_eq!(
            err(&status("{}")),
            "services.status is invalid: missing http (the Status server's base URL)"
        );
        assert_eq!(
            err(&status(r#"{"http":"https://x"}"#)),
            "services.status is invalid: http \"https://x\" is not an http:// URL"
        );
        assert!(err(r#"{"hosts":[{"peer_id":"zz","addrs":[]}]}"#)
            .starts_with("host entry 0 is invalid: peer_id \"zz\": "));
    }

    #[test]
    fn directories_merge_and_conflicts_are_named() {
        const Q: &str = "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN";
        let node = |peer: &'static str, addr: &str, http: Option<&'static str>| {
            let addrs = vec![addr.to_string()];
            let mut f = NetworkFile::default();
            f.add_services_of(&NodeServices {
                peer_id: peer,
                pid: 0,
                addrs: &addrs,
                hub: true,
                status_http: http,
                guard_epoch_ms: Some(5000),
                escrow_devnet: Some(true),
            });
            f
        };
        let a = node(P, "/ip4/1.1.1.1/tcp/1", Some("http://1.1.1.1:8"));
        // The wire and the devnet's file are the same shape.
        assert_eq!(a.hub().unwrap().unwrap().peer.to_base58(), P);
        assert_eq!(a.guard_epoch_ms(), 5000);
        assert!(a.escrow_is_devnet());
        assert_eq!(a.status_http().unwrap(), Some("http://1.1.1.1:8"));
        assert!(!a.services["hub"].as_object().unwrap().contains_key("pid"));
        // A second source for the same node adds its addresses; unknown services are dropped.
        let mut b = node(P, "/ip4/2.2.2.2/tcp/1", None);
        b.services.insert("evil".into(), serde_json::json!({}));
        let m = merge_directories(&[("x".into(), a.clone()), ("y".into(), b)]).unwrap();
        // An answer that names the Escrow without its flag takes it from a later one.
        let bare = NetworkFile {
            services: [(
                "escrow".to_string(),
                serde_json::json!({"peer_id": P, "addrs": []}),
            )]
            .into_iter()
            .collect(),
            ..NetworkFile::default()
        };
        let flagged = merge_directories(&[("c".into(), bare), ("x".into(), a.clone())]).unwrap();
        assert!(flagged.escrow_is_devnet());
        assert_eq!(m.hub().unwrap().unwrap().addrs.len(), 2);
        assert_eq!(m.guard().unwrap().unwrap().addrs.len(), 2);
        assert!(!m.services.contains_key("evil"));
        assert!(m.hosts.is_empty() && m.bootstrap.is_empty());
        // At least one bootstrap node must answer; the others' failures are named.
        let e = directory_from(vec![("x".into(), Err("timeout".into()))], &[]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "no bootstrap node told us the network's services: x: timeout"
        );
        let d = directory_from(
            vec![
                ("x".into(), Err("down".into())),
                ("y".into(), Ok(a.clone())),
            ],
            &["/ip4/1.1.1.1/tcp/1".to_string()],
        )
        .unwrap();
        assert_eq!(d.hub().unwrap().unwrap().peer.to_base58(), P);
        assert_eq!(d.bootstrap.len(), 1);
        // A source naming another Hub is refused, naming both.
        let c = node(Q, "/ip4/3.3.3.3/tcp/1", None);
        let e = merge_directories(&[("x".into(), a.clone()), ("z".into(), c)]).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("disagree about the network's hub"), "{text}");
        assert!(
            text.contains(P) && text.contains(Q) && text.contains(" z "),
            "{text}"
        );
        // So is another Status URL.
        let d = node(P, "/ip4/1.1.1.1/tcp/1", Some("http://9.9.9.9:8"));
        let e = merge_directories(&[("x".into(), a), ("w".into(), d)]).unwrap_err();
        assert!(e.to_string().contains("network's status"), "{e}");
        // Address lists from answers are bounded.
        let many: Vec<String> = (0..100).map(|i| format!("/ip4/1.1.1.1/tcp/{i}")).collect();
        let mut big = NetworkFile::default();
        big.add_services_of(&NodeServices {
            peer_id: P,
            pid: 0,
            addrs: &many,
            hub: true,
            status_http: None,
            guard_epoch_ms: None,
            escrow_devnet: None,
        });
        let m = merge_directories(&[("x".into(), big)]).unwrap();
        assert_eq!(m.hub().unwrap().unwrap().addrs.len(), MAX_SERVICE_ADDRS);
    }

    #[test]
    fn a_list_of_multiaddrs_groups_by_peer() {
        const Q: &str = "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN";
        let list = format!(
            r#" ["/ip4/1.1.1.1/tcp/3/ws/p2p/{P}", "/ip4/2.2.2.2/tcp/1/p2p/{Q}",
                 "/ip4/1.1.1.1/udp/2/webrtc-direct/certhash/uEiAx/p2p/{P}"]"#
        );
        let f = NetworkFile::parse_or_addrs(&list).unwrap();
        let peers: Vec<&str> = f.hosts.iter().map(|h| h.peer_id.as_str()).collect();
        assert_eq!(peers, vec![P, Q]);
        assert_eq!(f.hosts[0].addrs.len(), 2);
        assert!(f.hosts[0].addrs[1].contains("webrtc-direct"));
        let e = NetworkFile::parse_or_addrs(r#"["/ip4/1.1.1.1/tcp/3"]"#).unwrap_err();
        assert_eq!(e.to_string(), "/ip4/1.1.1.1/tcp/3 has no /p2p/<peer id>");
        assert!(matches!(
            NetworkFile::parse_or_addrs("[1]"),
            Err(FormatError::Json(_))
        ));
        // The object form goes through the same parse.
        assert_eq!(
            NetworkFile::parse_or_addrs(&devnet_file()).unwrap(),
            NetworkFile::parse(devnet_file().as_bytes()).unwrap()
        );
    }
}

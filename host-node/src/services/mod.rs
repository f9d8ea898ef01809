//! The network services ([`hub`], [`status`]), the [`components`] any node composes them from,
//! and the service node: `btfs service` is simply a node that runs the Hub (on libp2p) and the
//! Status server (on HTTP) with one identity and no storage. A host runs the same components
//! next to its storage with `btfs host --services hub,status` ([`crate::host`]).
//!
//! Goals: one command an operator (or `btfs devnet`) runs to give a network its Hub and Status;
//! a restart keeps the peer id, the ports and every record (`hub.redb`, `status.redb`), so hosts
//! and tenants that know the old addresses keep working.
//!
//! Start order: identity → libp2p swarm → [`components::Services`]: Hub (loads `hub.redb`) →
//! Status (loads `status.redb`, admitting only hosts the Hub registry holds a valid signed ad
//! for: [`crate::services::status::admission`]).
//!
//! Uptime in scores comes from the Hub's own probes, not from Status: a `StatusReport`'s uptime
//! is what the host says about itself, while a probe is what a tenant would see. Status keeps
//! the self-reported view for operators (`btfs status`, `/metrics`).
//!
//! Non-goals: storing shards (the service node has no shard protocol), several Hubs agreeing
//! with each other.
//!
//! `<data_dir>/service.json` is written once everything listens (read by `btfs devnet`):
//! ```json
//! { "peer_id": "12D3KooW...", "pid": 4242,
//!   "addrs": ["/ip4/127.0.0.1/tcp/4001/p2p/12D3...", "/ip4/127.0.0.1/tcp/4002/ws/p2p/12D3..."],
//!   "ports": { "tcp": 4001, "ws": 4002, "webrtc": 4003 },
//!   "status_http": "http://127.0.0.1:4004" }
//! ```

pub mod components;
pub mod escrow;
pub mod guard;
pub mod hub;
pub mod status;

pub use components::{NodeParts, ServiceKind, Services, ServicesError, ServicesOptions};

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::host::config::Transport;
use crate::host::identity;
use crate::net::{self, ConnLimits, Listen, Net};
use crate::services::hub::server::{HubHandle, HubOptions};
use crate::services::status::{StatusHandle, StatusOptions};

/// Service node settings.
#[derive(Debug, Clone)]
pub struct ServiceNodeOptions {
    /// Identity, databases and `service.json`.
    pub data_dir: PathBuf,
    /// Address every listener binds.
    pub listen_ip: IpAddr,
    /// libp2p transports (browsers reach the Hub over ws / webrtc).
    pub transports: Vec<Transport>,
    /// Hub settings.
    pub hub: HubOptions,
    /// Status settings.
    pub status: StatusOptions,
    /// Status HTTP port (0 = any free port, reused on restart).
    pub status_port: u16,
    /// libp2p connection limits ([`ConnLimits::for_service`] of the Hub's `max_hosts` suits).
    pub connections: ConnLimits,
    /// Guard settings.
    pub guard: crate::services::guard::GuardOptions,
    /// Escrow settings.
    pub escrow: crate::services::escrow::EscrowOptions,
    /// Nodes whose DHT this node joins (multiaddrs ending in `/p2p/<peer id>`).
    pub bootstrap: Vec<String>,
}

/// What `service.json` records.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ServiceNodeInfo {
    /// Peer id.
    pub peer_id: String,
    /// OS process id.
    pub pid: u32,
    /// Full multiaddrs including `/p2p/<peer id>`.
    pub addrs: Vec<String>,
    /// Port per transport.
    pub ports: BTreeMap<Transport, u16>,
    /// Base URL of the Status HTTP API.
    pub status_http: String,
}

impl ServiceNodeInfo {
    /// Reads `<dir>/service.json`.
    pub fn read(dir: &Path) -> Option<Self> {
        let bytes = std::fs::read(dir.join("service.json")).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// The first address of a transport (e.g. TCP for hosts announcing to the Hub).
    pub fn addr_of(&self, t: Transport) -> Option<&str> {
        self.addrs
            .iter()
            .find(|a| {
                a.parse::<Multiaddr>()
                    .ok()
                    .and_then(|m| transport_of(&m))
                    .is_some_and(|x| x == t)
            })
            .map(String::as_str)
    }
}

/// The transport an address uses.
pub fn transport_of(a: &Multiaddr) -> Option<Transport> {
    let mut udp = false;
    let mut t = None;
    for p in a.iter() {
        match p {
            Protocol::Tcp(_) => t = Some(Transport::Tcp),
            Protocol::Udp(_) => udp = true,
            Protocol::Ws(_) => t = Some(Transport::Ws),
            Protocol::QuicV1 if udp => t = Some(Transport::Quic),
            Protocol::WebRTCDirect if udp => t = Some(Transport::Webrtc),
            _ => {}
        }
    }
    t
}

/// A running service node.
pub struct ServiceNodeHandle {
    peer_id: PeerId,
    info: ServiceNodeInfo,
    services: Services,
    cancel: CancellationToken,
    net_task: tokio::task::JoinHandle<()>,
}

impl ServiceNodeHandle {
    /// Peer id.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// What `service.json` records.
    pub fn info(&self) -> &ServiceNodeInfo {
        &self.info
    }

    /// The Hub.
    pub fn hub(&self) -> &HubHandle {
        self.services
            .hub()
            .unwrap_or_else(|| unreachable!("the service node always runs the Hub"))
    }

    /// The Status server.
    pub fn status(&self) -> &StatusHandle {
        self.services
            .status()
            .unwrap_or_else(|| unreachable!("the service node always runs Status"))
    }

    /// The services it runs.
    pub fn services(&self) -> &Services {
        &self.services
    }

    /// Stops everything and waits.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        self.services.shutdown().await;
        let _ = self.net_task.await;
    }
}

/// Starts the Status server and the Hub; writes `service.json`.
pub async fn start(opts: ServiceNodeOptions) -> Result<ServiceNodeHandle> {
    let dir = &opts.data_dir;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let keypair = identity::load_or_create_keypair(dir)?;
    let cert = if opts.transports.contains(&Transport::Webrtc) {
        Some(identity::load_or_create_certificate(dir)?)
    } else {
        None
    };
    let previous_info = ServiceNodeInfo::read(dir);
    let previous_status = previous_info
        .as_ref()
        .and_then(|i| net::port_of_url(&i.status_http));
    let previous = previous_info.map(|i| i.ports).unwrap_or_default();
    let cancel = CancellationToken::new();

    let listen = |reuse: bool| -> Vec<Listen> {
        opts.transports
            .iter()
            .map(|&t| {
                let port = if reuse {
                    previous.get(&t).copied().unwrap_or(0)
                } else {
                    0
                };
                Listen {
                    transport: t,
                    addr: net::listen_addr(t, opts.listen_ip, port),
                }
            })
            .collect()
    };
    // The remembered ports may still be held for a moment by a process killed just before:
    // try them again for a few seconds before taking new ones (hosts remember these addresses).
    let mut tries = 0;
    let mut service_incoming = None;
    let mut queues = || {
        let (queues, incoming) = components::service_only_queues(&ServiceKind::ALL);
        service_incoming = Some(incoming);
        queues
    };
    let started = loop {
        let r = Net::start_with(
            keypair.clone(),
            cert.clone(),
            queues(),
            listen(true),
            opts.connections,
            cancel.child_token(),
        )
        .await;
        match r {
            Err(_) if !previous.is_empty() && tries < net::REBIND_TRIES => {
                tries += 1;
                tokio::time::sleep(net::REBIND_PAUSE).await;
            }
            other => break other,
        }
    };
    let (net, addrs, net_task) = match started {
        Ok(s) => s,
        Err(e) if !previous.is_empty() => {
            tracing::warn!(%e, "previous ports unavailable; listening on new ports");
            Net::start_with(
                keypair.clone(),
                cert,
                queues(),
                listen(false),
                opts.connections,
                cancel.child_token(),
            )
            .await?
        }
        Err(e) => return Err(e.into()),
    };
    let peer_id = net.peer_id();
    let services = Services::start(
        NodeParts {
            net: &net,
            data_dir: dir,
            listen_ip: opts.listen_ip,
            previous_status_port: previous_status,
            cancel: &cancel,
            key: &keypair,
            incoming: service_incoming.unwrap_or_default(),
        },
        &ServicesOptions {
            kinds: ServiceKind::ALL.to_vec(),
            hub: opts.hub.clone(),
            status: opts.status.clone(),
            status_port: opts.status_port,
            guard: opts.guard.clone(),
            escrow: opts.escrow.clone(),
        },
    )
    .await?;
    let status_http = services.status_url().unwrap_or_default();

    let ports = addrs
        .iter()
        .filter_map(|(t, a)| Some((*t, net::port_of(a)?)))
        .collect();
    let info = ServiceNodeInfo {
        peer_id: peer_id.to_base58(),
        pid: std::process::id(),
        addrs: addrs
            .iter()
            .map(|(_, a)| a.clone().with(Protocol::P2p(peer_id)).to_string())
            .collect(),
        ports,
        status_http,
    };
    write_info(dir, &info)?;
    // Answers `Network` requests with the services it runs (it is a DHT server: it listens).
    tokio::spawn(net::discovery::serve_directory(
        net.clone(),
        services.directory(&info.peer_id, 0, &info.addrs),
        btfs_core::network_file::NetworkFile::default(),
        opts.bootstrap.clone(),
        Duration::from_secs(300),
        cancel.child_token(),
    ));
    tracing::info!(%peer_id, addrs = ?info.addrs, status = %info.status_http, "service node started");
    Ok(ServiceNodeHandle {
        peer_id,
        info,
        services,
        cancel,
        net_task,
    })
}

/// Status settings for hosts reporting every `report_interval`, at most `max_hosts` of them.
pub fn status_options(report_interval: Duration, max_hosts: usize) -> StatusOptions {
    StatusOptions {
        max_peers: max_hosts,
        report_interval,
        // A host is online while its last report is younger than three intervals.
        online_window: report_interval * 3,
        // Accept a report at most twice per interval (a restart reports at once).
        min_interval: (report_interval / 2).min(Duration::from_secs(30)),
        ..StatusOptions::default()
    }
}

fn write_info(dir: &Path, info: &ServiceNodeInfo) -> Result<()> {
    let path = dir.join("service.json");
    let tmp = dir.join("service.json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(info)?)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))
}

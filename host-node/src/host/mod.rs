//! The host node's composition root: identity → store → network → shard service and its
//! sweep of unclaimed blobs → the network services it runs on the same swarm (`services =
//! ["hub", "status"]`, [`crate::services::components`]) → Hub announcements (when a Hub is
//! configured) → Status reports (when a Status URL is configured) → its own Prometheus
//! `/metrics` (unless disabled).
//!
//! [`Node::spawn`] starts everything in dependency order under one cancellation token and
//! returns a [`NodeHandle`] with the peer id and listen addresses; `shutdown` cancels and waits.
//! Ports given as 0 pick a free port on first start and reuse it on every restart (recorded in
//! `<data_dir>/node.json`), so a restarted host keeps its addresses.
//!
//! `node.json` (written once the node listens; read by `btfs devnet` and operators' scripts):
//! ```json
//! { "peer_id": "12D3KooW...", "pid": 4242, "addrs": ["/ip4/127.0.0.1/tcp/4001/p2p/12D3..."],
//!   "ports": { "tcp": 4001, "quic": 4001, "ws": 4002, "webrtc": 4003 },
//!   "metrics_http": "http://127.0.0.1:4005/metrics",
//!   "services": ["hub", "status"], "status_http": "http://127.0.0.1:4006" }
//! ```
//! (`services` and `status_http` only when the host runs services; its Hub listens on the
//! host's own `addrs`.)

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use btfs_core::signed::HostAd;

use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId, StreamProtocol};
use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio_util::sync::CancellationToken;

pub mod announce;
pub mod audit_server;
pub mod config;
pub mod contract_server;
pub mod fair_slots;
pub mod funding;
pub mod identity;
pub mod inbound;
pub mod metrics;
pub mod reporter;
pub mod shard_server;
pub mod store;

use self::config::{ConfigError, HostConfig, Transport};
use self::identity::IdentityError;
use self::inbound::{InboundQueues, InboundStreams};
use self::reporter::NodeSource;
use self::shard_server::{Limits, ServiceStats};
use self::store::{BlobStore, FsStore, StoreError};
use crate::net::{self, Listen, Net, NetError};
use crate::services::hub::server::HubOptions;
use crate::services::hub::HubAddr;
use crate::services::{NodeParts, ServiceKind, Services, ServicesError, ServicesOptions};

/// A node failed to start.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum NodeError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Identity files.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// Storage.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Networking.
    #[error(transparent)]
    Net(#[from] NetError),
    /// A network service did not start.
    #[error(transparent)]
    Services(#[from] ServicesError),
    /// The identity key is not ed25519 (every BTFS node's is).
    #[error("{0}")]
    Key(String),
    /// The bootstrap nodes did not say what the network's services are.
    #[error("cannot join the network through its bootstrap nodes: {0}")]
    Bootstrap(#[from] crate::net::discovery::DiscoveryError),
    /// The metrics endpoint could not listen.
    #[error("cannot serve /metrics: {0}; pick another --metrics-port or pass --no-metrics")]
    Metrics(String),
    /// Data directory.
    #[error("data directory {path}")]
    DataDir {
        /// Path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// The contents of `node.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Peer id.
    pub peer_id: String,
    /// OS process id.
    pub pid: u32,
    /// Full multiaddrs including `/p2p/<peer id>`.
    pub addrs: Vec<String>,
    /// Port per transport.
    pub ports: BTreeMap<Transport, u16>,
    /// This node's Prometheus endpoint (`http://IP:PORT/metrics`), if it serves one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_http: Option<String>,
    /// The network services this host runs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<ServiceKind>,
    /// Base URL of its Status service's HTTP API, if it runs one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_http: Option<String>,
}

/// A running node.
pub struct NodeHandle {
    peer_id: PeerId,
    addrs: Vec<(Transport, Multiaddr)>,
    store: Arc<dyn BlobStore>,
    stats: Arc<ServiceStats>,
    net: Net,
    metrics: Option<SocketAddr>,
    services: Services,
    cancel: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// How long a host that names only bootstrap nodes waits for one of them to answer at start.
pub const BOOTSTRAP_PATIENCE: Duration = Duration::from_secs(120);

/// Host node entry point.
pub struct Node;

impl Node {
    /// Starts a host node; returns once it listens on every configured transport.
    pub async fn spawn(mut config: HostConfig) -> Result<NodeHandle, NodeError> {
        config.validate()?;
        let dir = &config.data_dir;
        std::fs::create_dir_all(dir).map_err(|source| NodeError::DataDir {
            path: dir.clone(),
            source,
        })?;
        let keypair = identity::load_or_create_keypair(dir)?;
        let cert = if config.transports.contains(&Transport::Webrtc) {
            Some(identity::load_or_create_certificate(dir)?)
        } else {
            None
        };
        let store: Arc<dyn BlobStore> = Arc::new(open_store(dir, config.quota_bytes()?).await?);

        let previous_info = read_node_info(dir);
        let previous_metrics = previous_info
            .as_ref()
            .and_then(|i| net::port_of_url(i.metrics_http.as_deref()?));
        let previous_status = previous_info
            .as_ref()
            .and_then(|i| net::port_of_url(i.status_http.as_deref()?));
        let previous = previous_info.map(|i| i.ports).unwrap_or_default();
        let cancel = CancellationToken::new();
        // A host that runs the Hub keeps a connection with every host it registers.
        let connections = if config.services.contains(&ServiceKind::Hub) {
            config
                .connections
                .at_least(net::ConnLimits::for_service(config.service_max_hosts))
        } else {
            config.connections
        };
        let listen = config
            .transports
            .iter()
            .map(|&t| {
                let configured = config.port(t);
                let port = if configured == 0 {
                    previous.get(&t).copied().unwrap_or(0)
                } else {
                    configured
                };
                Listen {
                    transport: t,
                    addr: net::listen_addr(t, config.listen_ip, port),
                }
            })
            .collect::<Vec<_>>();
        let protocol = StreamProtocol::new(btfs_core::protocol::PROTOCOL);
        // Queue twice the concurrency limit, so a burst waits instead of being dropped.
        let queue = config.max_inbound_streams * 2;
        let audit_protocol = StreamProtocol::new(btfs_core::proof::PROTOCOL);
        let streams = |protocol: &StreamProtocol| {
            let (shards, incoming) = InboundStreams::new(protocol.clone(), queue);
            let (audits, audit_incoming) =
                InboundStreams::new(audit_protocol.clone(), 2 * audit_server::MAX_AUDITS);
            let (contracts, contract_incoming) = InboundStreams::new(
                StreamProtocol::new(btfs_core::escrow::HOST_PROTOCOL),
                2 * contract_server::MAX_REQUESTS,
            );
            let dropped = shards.dropped();
            let (guard, escrow, service_incoming) =
                crate::services::components::service_queues(&config.services);
            let queues = InboundQueues {
                shards: Some(shards),
                audits: Some(audits),
                contracts: Some(contracts),
                guard,
                escrow,
            };
            (
                queues,
                incoming,
                (audit_incoming, contract_incoming),
                service_incoming,
                dropped,
            )
        };
        let (inbound, incoming, audit_incoming, service_incoming, dropped) = streams(&protocol);
        let started = Net::start_with(
            keypair.clone(),
            cert.clone(),
            inbound,
            listen.clone(),
            connections,
            cancel.child_token(),
        )
        .await;
        let (net, addrs, net_task, incoming, audit_incoming, service_incoming, dropped) =
            match started {
                Ok((net, addrs, task)) => (
                    net,
                    addrs,
                    task,
                    incoming,
                    audit_incoming,
                    service_incoming,
                    dropped,
                ),
                // A remembered port may have been taken meanwhile: fall back to fresh ports.
                Err(NetError::Listen { .. }) if !previous.is_empty() => {
                    tracing::warn!("previous ports unavailable; listening on new ports");
                    let fresh = config
                        .transports
                        .iter()
                        .map(|&t| Listen {
                            transport: t,
                            addr: net::listen_addr(t, config.listen_ip, config.port(t)),
                        })
                        .collect();
                    let (inbound, incoming, audit_incoming, service_incoming, dropped) =
                        streams(&protocol);
                    let (net, addrs, task) = Net::start_with(
                        keypair.clone(),
                        cert,
                        inbound,
                        fresh,
                        connections,
                        cancel.child_token(),
                    )
                    .await?;
                    (
                        net,
                        addrs,
                        task,
                        incoming,
                        audit_incoming,
                        service_incoming,
                        dropped,
                    )
                }
                Err(e) => return Err(e.into()),
            };
        let peer_id = net.peer_id();
        // Hosts route for the DHT (every node that listens does). A host named only its bootstrap nodes: it takes the Hub, the
        // Escrow (so it stores only funded puts) and Status from them before serving anything.
        if config.hub.is_none()
            && !config.bootstrap.is_empty()
            && !config.services.contains(&ServiceKind::Hub)
        {
            let learned = crate::net::discovery::directory_patiently(
                &net,
                &config.bootstrap,
                BOOTSTRAP_PATIENCE,
            )
            .await?;
            let bad = |e: btfs_core::network_file::FormatError| {
                NodeError::Bootstrap(crate::net::discovery::DiscoveryError::Directory(e.into()))
            };
            config.hub = learned
                .hub()
                .map_err(bad)?
                .as_ref()
                .and_then(crate::net::discovery::native_addr);
            config.escrow = learned
                .escrow()
                .map_err(bad)?
                .as_ref()
                .and_then(crate::net::discovery::native_addr);
            config.status_url = learned.status_http().map_err(bad)?.map(str::to_string);
            tracing::info!(hub = ?config.hub, escrow = ?config.escrow, status = ?config.status_url, "joined through the bootstrap nodes");
        }

        let stats = Arc::new(ServiceStats {
            dropped,
            ..ServiceStats::default()
        });
        let limits = Limits {
            max_inbound: config.max_inbound_streams,
            max_per_peer: config.max_streams_per_peer,
        };
        // With an Escrow, only funded puts are stored (the Guard's repairs too: it funds them
        // from the tenant's repair allowance).
        if config.guard.is_some() {
            tracing::warn!("config `guard` is no longer used and can be removed: the Guard's repairs come with repair offers funded from the tenant's repair allowance");
        }
        let funding = match &config.escrow {
            Some(e) => {
                let escrow = HubAddr::parse(e).map_err(ConfigError::Invalid)?.peer;
                Some(Arc::new(funding::Funding::new(
                    keypair.public().to_peer_id(),
                    escrow,
                )))
            }
            None => None,
        };
        let service = tokio::spawn(shard_server::serve(
            incoming,
            store.clone(),
            limits,
            stats.clone(),
            funding.clone(),
            cancel.child_token(),
        ));

        let (audit_incoming, contract_incoming) = audit_incoming;
        let contracts = tokio::spawn(contract_server::serve(
            contract_incoming,
            store.clone(),
            contract_server::ContractPolicy {
                key: keypair.clone().try_into_ed25519().map_err(|e| {
                    NodeError::Key(format!("the host needs an ed25519 identity: {e}"))
                })?,
                price_per_gib_month: config.price_per_gib_month,
                funding,
            },
            cancel.child_token(),
        ));
        let audit_stats = Arc::new(audit_server::AuditStats::default());
        let auditor = tokio::spawn(audit_server::serve(
            audit_incoming,
            store.clone(),
            audit_stats,
            cancel.child_token(),
        ));

        let sweeper = tokio::spawn(shard_server::sweep(
            store.clone(),
            Duration::from_secs(config.unclaimed_grace_secs),
            Duration::from_secs(config.sweep_interval_secs),
            cancel.child_token(),
        ));

        let mut tasks = vec![sweeper, service, auditor, contracts, net_task];
        let services = Services::start(
            NodeParts {
                net: &net,
                data_dir: dir,
                listen_ip: config.listen_ip,
                previous_status_port: previous_status,
                cancel: &cancel,
                key: &keypair,
                incoming: service_incoming,
            },
            &services_options(&config),
        )
        .await;
        let services = match services {
            Ok(s) => s,
            Err(e) => {
                cancel.cancel();
                return Err(e.into());
            }
        };
        // What this node answers `Network` requests with: its own services, its config, and
        // what its bootstrap nodes and its Hub say.
        let full_addrs: Vec<String> = addrs
            .iter()
            .map(|(_, a)| a.clone().with(Protocol::P2p(peer_id)).to_string())
            .collect();
        let sources: Vec<String> = config
            .bootstrap
            .iter()
            .cloned()
            .chain(config.hub.clone())
            .collect();
        tasks.push(tokio::spawn(crate::net::discovery::serve_directory(
            net.clone(),
            services.directory(&peer_id.to_base58(), 0, &full_addrs),
            crate::net::discovery::configured(
                config.hub.as_deref(),
                config.escrow.as_deref(),
                config.status_url.as_deref(),
            ),
            sources,
            Duration::from_secs(300),
            cancel.child_token(),
        )));
        // A host that runs the Hub and names no other announces to its own (through `Net`'s
        // loopback), so it is registered, probed and recommended like every other host.
        let hub = match &config.hub {
            Some(hub) => Some(HubAddr::parse(hub).map_err(ConfigError::Invalid)?),
            None if config.services.contains(&ServiceKind::Hub) => Some(HubAddr {
                peer: peer_id,
                addrs: Vec::new(),
            }),
            None => None,
        };
        if let Some(hub) = hub {
            let key = keypair
                .clone()
                .try_into_ed25519()
                .map_err(|e| ConfigError::Invalid(format!("identity key: {e}")))?;
            let full: Vec<String> = addrs
                .iter()
                .map(|(_, a)| a.clone().with(Protocol::P2p(peer_id)).to_string())
                .collect();
            let (ad_store, quota) = (store.clone(), config.quota_bytes()?);
            let (price, region) = (config.price_per_gib_month, config.region.clone());
            let make_ad = move || HostAd {
                peer_id: peer_id.to_base58(),
                addrs: full
                    .iter()
                    .take(btfs_core::signed::MAX_ADDRS)
                    .cloned()
                    .collect(),
                capacity_bytes: quota,
                free_bytes: quota.saturating_sub(ad_store.used()),
                price_per_gib_month: price,
                version: env!("CARGO_PKG_VERSION").into(),
                region: region.clone(),
                issued_at_ms: 0,
            };
            let interval = Duration::from_secs(config.announce_interval_secs);
            tasks.push(tokio::spawn(announce::run(
                net.clone(),
                key,
                hub,
                make_ad,
                interval,
                cancel.child_token(),
            )));
        }

        let source = NodeSource::new(peer_id, store.clone(), stats.clone());
        if let Some(url) = &config.status_url {
            let key = keypair
                .clone()
                .try_into_ed25519()
                .map_err(|e| ConfigError::Invalid(format!("identity key: {e}")))?;
            let src = source.clone();
            tasks.push(
                reporter::spawn(
                    url.clone(),
                    key,
                    Duration::from_secs(config.report_interval_secs),
                    move || src.report(),
                    cancel.child_token(),
                )
                .map_err(|e| ConfigError::Invalid(format!("status_url: {e}")))?,
            );
        }
        if let Some(escrow) = &config.escrow {
            let escrow = HubAddr::parse(escrow).map_err(ConfigError::Invalid)?;
            let (net, cell, every) = (
                net.clone(),
                source.escrow.clone(),
                Duration::from_secs(config.report_interval_secs.max(1)),
            );
            let token = cancel.child_token();
            tasks.push(tokio::spawn(async move {
                let req = btfs_core::escrow::EscrowRequest::Account {
                    peer: peer_id.to_base58(),
                };
                loop {
                    match crate::services::escrow::client::request(
                        &net,
                        escrow.peer,
                        escrow.addrs.clone(),
                        &req,
                    )
                    .await
                    {
                        Ok(btfs_core::escrow::EscrowResponse::Account { account, .. }) => {
                            if let Ok(mut c) = cell.lock() {
                                *c = Some(account);
                            }
                        }
                        Ok(_) => {}
                        Err(e) => tracing::debug!(%e, "cannot read this host's Escrow account"),
                    }
                    tokio::select! {
                        () = token.cancelled() => break,
                        () = tokio::time::sleep(every) => {}
                    }
                }
            }));
        }
        let metrics = if config.metrics {
            let server =
                net::bind_remembered(config.metrics_port, previous_metrics, "metrics", |port| {
                    metrics::serve_node_metrics(
                        SocketAddr::new(config.listen_ip, port),
                        source.clone(),
                        cancel.child_token(),
                    )
                })
                .await
                .map_err(|e| NodeError::Metrics(e.to_string()))?;
            let addr = server.addr;
            tasks.push(tokio::spawn(server.join()));
            Some(addr)
        } else {
            None
        };

        let handle = NodeHandle {
            peer_id,
            addrs,
            store,
            stats,
            net,
            metrics,
            services,
            cancel,
            tasks,
        };
        write_node_info(dir, &handle.info())?;
        tracing::info!(%peer_id, addrs = ?handle.full_addrs(), used = handle.store.used(), "host started");
        Ok(handle)
    }
}

impl NodeHandle {
    /// Peer id.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// Listen addresses with their transport (without `/p2p`).
    pub fn listen_addrs(&self) -> &[(Transport, Multiaddr)] {
        &self.addrs
    }

    /// Listen addresses ending in `/p2p/<peer id>`, ready to dial.
    pub fn full_addrs(&self) -> Vec<Multiaddr> {
        self.addrs
            .iter()
            .map(|(_, a)| a.clone().with(Protocol::P2p(self.peer_id)))
            .collect()
    }

    /// The node's store.
    pub fn store(&self) -> &Arc<dyn BlobStore> {
        &self.store
    }

    /// Request counters.
    pub fn stats(&self) -> &Arc<ServiceStats> {
        &self.stats
    }

    /// Where this node serves `/metrics`, if it does.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics
    }

    /// The network services this host runs (on its own swarm).
    pub fn services(&self) -> &Services {
        &self.services
    }

    /// The node's network handle.
    pub fn net(&self) -> &Net {
        &self.net
    }

    /// What `node.json` records.
    pub fn info(&self) -> NodeInfo {
        NodeInfo {
            peer_id: self.peer_id.to_string(),
            pid: std::process::id(),
            addrs: self.full_addrs().iter().map(ToString::to_string).collect(),
            ports: self
                .addrs
                .iter()
                .filter_map(|(t, a)| net::port_of(a).map(|p| (*t, p)))
                .collect(),
            metrics_http: self.metrics.map(|a| format!("http://{a}/metrics")),
            services: self.services.kinds(),
            status_http: self.services.status_url(),
        }
    }

    /// Stops every task, in reverse order of start, and waits for them.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        self.services.shutdown().await;
        for t in self.tasks {
            let _ = t.await;
        }
        // A put or get still running on a blocking thread holds the store (and its database
        // lock) until its disk work returns: wait for it (bounded), so a node restarted in the
        // same process finds the database free.
        let store = Arc::downgrade(&self.store);
        drop(self.store);
        drop(self.net);
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while store.strong_count() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
}

/// Opens the blob store, waiting (up to 5 s) for a node of this process that just shut down to
/// let go of the database: the last holder of the old store may still be closing it on another
/// thread when `shutdown` returns.
async fn open_store(dir: &Path, quota: u64) -> Result<FsStore, StoreError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match FsStore::open(dir, quota) {
            Err(StoreError::Db { why, .. })
                if why.contains("already open") && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            r => return r,
        }
    }
}

/// The settings of the services `config` names: the Hub asks hosts to announce as often as
/// this host does and probes every `probe_interval_ms`; Status expects reports as often as this
/// host sends them.
fn services_options(config: &HostConfig) -> ServicesOptions {
    let report = Duration::from_secs(config.report_interval_secs);
    ServicesOptions {
        kinds: config.services.clone(),
        hub: HubOptions {
            probe_interval: Duration::from_millis(config.probe_interval_ms),
            announce_interval: Duration::from_secs(config.announce_interval_secs),
            max_hosts: config.service_max_hosts,
            ..HubOptions::default()
        },
        status: crate::services::status_options(report, config.service_max_hosts),
        status_port: config.status_port,
        guard: crate::services::guard::GuardOptions::default(),
        escrow: crate::services::escrow::EscrowOptions::default(),
    }
}

fn read_node_info(dir: &Path) -> Option<NodeInfo> {
    let bytes = std::fs::read(dir.join("node.json")).ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn write_node_info(dir: &Path, info: &NodeInfo) -> Result<(), NodeError> {
    let path = dir.join("node.json");
    let tmp = dir.join("node.json.tmp");
    let err = |source| NodeError::DataDir {
        path: path.clone(),
        source,
    };
    let json = serde_json::to_vec_pretty(info).map_err(|e| err(std::io::Error::other(e)))?;
    std::fs::write(&tmp, json).map_err(err)?;
    std::fs::rename(&tmp, &path).map_err(err)
}

//! Services as components any node composes: a host runs them next to its storage
//! (`btfs host --services hub,status`), and the service node (`btfs service`) is simply a node
//! that runs them with no storage.
//!
//! Goals: one place that knows which services exist ([`ServiceKind::ALL`]), what each needs
//! and in which order they start; every service registers its own handlers on the node it is
//! given ([`NodeParts`]: the node's one libp2p swarm, its data directory, listen address and
//! cancellation token) — the Hub takes the node's Hub-protocol requests
//! ([`crate::net::Net::serve_hub`]), Status serves its HTTP API on its own port.
//! Non-goals: running two of one service on a node, services on different nodes agreeing.
//!
//! Adding a service: add a [`ServiceKind`] variant (its name is what
//! `--services` accepts), its options to [`ServicesOptions`], a handle field to [`Services`],
//! and one arm in [`Services::start`] that starts it on [`NodeParts`] after the services it
//! depends on (which it finds in the [`Services`] started so far); [`Services::shutdown`] stops
//! it before them.
//!
//! Dependencies today: Status admits only hosts the Hub registry holds a valid signed ad for
//! ([`crate::services::status::admission`]), so `status` needs `hub` on the same node; the
//! Guard finds hosts (addresses, repair candidates) in the Hub registry and reports audit
//! results into it, so `guard` needs `hub` too.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio_util::sync::CancellationToken;

use crate::host::inbound::{Inbound, InboundQueues, InboundStreams};
use crate::net::{self, Net};
use crate::services::escrow::{EscrowHandle, EscrowOptions, EscrowServiceError};
use crate::services::guard::{GuardHandle, GuardOptions, GuardServiceError};
use crate::services::hub::server::{HubError, HubHandle, HubOptions};
use crate::services::status::{Admission, StatusError, StatusHandle, StatusOptions};

/// A service a node can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceKind {
    /// The Hub: hosts announce to it, tenants ask it for hosts, it probes them (libp2p).
    Hub,
    /// Status: hosts push signed reports, operators read the network's state (HTTP).
    Status,
    /// The Escrow: the ledger of contracts and payments (libp2p).
    Escrow,
    /// The Guard: challenges every watched shard each epoch, repairs slabs at risk (libp2p).
    Guard,
}

impl ServiceKind {
    /// Every service, in start order (a service comes after those it depends on).
    pub const ALL: [ServiceKind; 4] = [Self::Hub, Self::Status, Self::Escrow, Self::Guard];

    /// The name `--services` and the config file use.
    pub fn name(self) -> &'static str {
        match self {
            Self::Hub => "hub",
            Self::Status => "status",
            Self::Escrow => "escrow",
            Self::Guard => "guard",
        }
    }

    /// The services this one needs on the same node.
    pub fn needs(self) -> &'static [ServiceKind] {
        match self {
            Self::Hub => &[],
            Self::Status => &[Self::Hub],
            Self::Escrow => &[],
            Self::Guard => &[Self::Hub],
        }
    }

    /// Parses one name (`hub`, `status`).
    pub fn parse(name: &str) -> Result<Self, ServicesError> {
        let name = name.trim();
        Self::ALL
            .into_iter()
            .find(|k| k.name() == name)
            .ok_or_else(|| ServicesError::Unknown {
                name: name.into(),
                valid: valid_names(),
            })
    }

    /// Parses a comma-separated list (`hub,status`), sorted into start order, duplicates
    /// removed, dependencies checked.
    pub fn parse_list(list: &str) -> Result<Vec<Self>, ServicesError> {
        let kinds = list
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(Self::parse)
            .collect::<Result<Vec<_>, _>>()?;
        normalize(kinds)
    }
}

impl std::fmt::Display for ServiceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

fn valid_names() -> String {
    ServiceKind::ALL.map(ServiceKind::name).join(", ")
}

/// `kinds` in start order without duplicates, if every service's dependencies are in it.
pub fn normalize(mut kinds: Vec<ServiceKind>) -> Result<Vec<ServiceKind>, ServicesError> {
    kinds.sort();
    kinds.dedup();
    for k in &kinds {
        if let Some(missing) = k.needs().iter().find(|n| !kinds.contains(n)) {
            return Err(ServicesError::Needs {
                service: *k,
                missing: *missing,
            });
        }
    }
    Ok(kinds)
}

/// The services could not be set up.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ServicesError {
    /// A name that is not a service.
    #[error("unknown service {name:?}: valid services are {valid} (e.g. --services hub,status)")]
    Unknown {
        /// The name given.
        name: String,
        /// The valid names.
        valid: String,
    },
    /// A service without one it needs on the same node.
    #[error(
        "service {service} needs {missing} on the same node: add it (e.g. --services hub,status)"
    )]
    Needs {
        /// The service.
        service: ServiceKind,
        /// What it needs.
        missing: ServiceKind,
    },
    /// The Hub did not start.
    #[error("cannot start the Hub service")]
    Hub(#[source] HubError),
    /// Status did not start.
    #[error("cannot start the Status service")]
    Status(#[source] StatusError),
    /// The Guard did not start.
    #[error("cannot start the Guard service")]
    Guard(#[source] GuardServiceError),
    /// The Escrow did not start.
    #[error("cannot start the Escrow service")]
    Escrow(#[source] EscrowServiceError),
}

/// Which services to run, and their settings.
#[derive(Debug, Clone, Default)]
pub struct ServicesOptions {
    /// The services, in start order ([`normalize`]).
    pub kinds: Vec<ServiceKind>,
    /// Hub settings.
    pub hub: HubOptions,
    /// Status settings (its admission is set from the Hub when both run).
    pub status: StatusOptions,
    /// Status HTTP port (0 = the port of the last run if any, else any free port).
    pub status_port: u16,
    /// Guard settings.
    pub guard: GuardOptions,
    /// Escrow settings.
    pub escrow: EscrowOptions,
}

/// What a node lends the services it runs.
pub struct NodeParts<'a> {
    /// The node's libp2p swarm (shared with everything else the node does).
    pub net: &'a Net,
    /// The node's data directory (each service keeps its database there).
    pub data_dir: &'a Path,
    /// Address HTTP services bind.
    pub listen_ip: IpAddr,
    /// The Status port of the node's last run, to keep its URL across restarts.
    pub previous_status_port: Option<u16>,
    /// The node's cancellation token; services stop with the node.
    pub cancel: &'a CancellationToken,
    /// The node's identity key (the Guard signs its verdicts with it).
    pub key: &'a libp2p::identity::Keypair,
    /// The node's queues of inbound service streams ([`service_queues`]).
    pub incoming: ServiceIncoming,
}

/// The receivers of a node's inbound service streams.
#[derive(Default)]
pub struct ServiceIncoming {
    /// `/btfs/guard/1` streams.
    pub guard: Option<tokio::sync::mpsc::Receiver<Inbound>>,
    /// `/btfs/escrow/1` streams.
    pub escrow: Option<tokio::sync::mpsc::Receiver<Inbound>>,
}

/// Inbound Guard streams queued before the Guard answers `Busy`.
pub const GUARD_QUEUE: usize = 256;
/// Inbound Escrow streams queued before they are dropped.
pub const ESCROW_QUEUE: usize = 1024;

/// The inbound queues for the services in `kinds` that take streams (Guard, Escrow), to put
/// into the node's [`InboundQueues`], and their receivers for [`NodeParts::incoming`].
pub fn service_queues(
    kinds: &[ServiceKind],
) -> (
    Option<InboundStreams>,
    Option<InboundStreams>,
    ServiceIncoming,
) {
    let mut incoming = ServiceIncoming::default();
    let guard = kinds.contains(&ServiceKind::Guard).then(|| {
        let (q, rx) = InboundStreams::new(
            libp2p::StreamProtocol::new(btfs_core::guard_wire::PROTOCOL),
            GUARD_QUEUE,
        );
        incoming.guard = Some(rx);
        q
    });
    let escrow = kinds.contains(&ServiceKind::Escrow).then(|| {
        let (q, rx) = InboundStreams::new(
            libp2p::StreamProtocol::new(btfs_core::escrow::PROTOCOL),
            ESCROW_QUEUE,
        );
        incoming.escrow = Some(rx);
        q
    });
    (guard, escrow, incoming)
}

/// The inbound queues of a node that stores nothing (the service node): only service streams.
pub fn service_only_queues(kinds: &[ServiceKind]) -> (InboundQueues, ServiceIncoming) {
    let (guard, escrow, incoming) = service_queues(kinds);
    (
        InboundQueues {
            guard,
            escrow,
            ..InboundQueues::default()
        },
        incoming,
    )
}

/// The services a node runs.
#[derive(Default)]
pub struct Services {
    hub: Option<HubHandle>,
    status: Option<StatusHandle>,
    guard: Option<GuardHandle>,
    escrow: Option<EscrowHandle>,
    guard_epoch_ms: Option<u64>,
    escrow_devnet: Option<bool>,
}

impl Services {
    /// Starts `opts.kinds` on `node`, in dependency order.
    pub async fn start(
        mut node: NodeParts<'_>,
        opts: &ServicesOptions,
    ) -> Result<Self, ServicesError> {
        let kinds = normalize(opts.kinds.clone())?;
        let mut running = Self::default();
        for kind in kinds {
            match kind {
                ServiceKind::Hub => {
                    let hub = crate::services::hub::server::start(
                        node.net.clone(),
                        node.data_dir,
                        opts.hub.clone(),
                        node.cancel.child_token(),
                    )
                    .await
                    .map_err(ServicesError::Hub)?;
                    running.hub = Some(hub);
                }
                ServiceKind::Status => {
                    // `normalize` checked that the Hub runs; Status admits the hosts it knows.
                    let admission = match &running.hub {
                        Some(hub) => Admission::Hub(hub.known_hosts()),
                        None => opts.status.admission.clone(),
                    };
                    let status_opts = StatusOptions {
                        admission,
                        ..opts.status.clone()
                    };
                    let status = net::bind_remembered(
                        opts.status_port,
                        node.previous_status_port,
                        "Status",
                        |port| {
                            crate::services::status::start(
                                node.data_dir,
                                SocketAddr::new(node.listen_ip, port),
                                status_opts.clone(),
                                node.cancel.child_token(),
                            )
                        },
                    )
                    .await
                    .map_err(ServicesError::Status)?;
                    running.status = Some(status);
                }
                ServiceKind::Escrow => {
                    let escrow = crate::services::escrow::start(
                        node.data_dir,
                        node.incoming.escrow.take(),
                        node.key.clone().try_into_ed25519().map_err(|e| {
                            ServicesError::Escrow(EscrowServiceError::Setup(format!(
                                "the Escrow signs with an ed25519 node key: {e}"
                            )))
                        })?,
                        opts.escrow.clone(),
                        Box::new(crate::services::escrow::LocalSettlement::new(node.data_dir)),
                        node.cancel.child_token(),
                    )
                    .await
                    .map_err(ServicesError::Escrow)?;
                    running.escrow = Some(escrow);
                    running.escrow_devnet = Some(opts.escrow.ledger.faucet_max.is_some());
                }
                ServiceKind::Guard => {
                    let (Some(hub), Some(incoming)) = (&running.hub, node.incoming.guard.take())
                    else {
                        return Err(ServicesError::Guard(GuardServiceError::Setup(
                            "the node gives the Guard no Hub or no inbound queue".into(),
                        )));
                    };
                    let guard = crate::services::guard::start(
                        node.net.clone(),
                        node.data_dir,
                        node.key.clone(),
                        hub.book(),
                        incoming,
                        opts.guard.clone(),
                        running.escrow.as_ref().map(EscrowHandle::local),
                        node.cancel.child_token(),
                    )
                    .await
                    .map_err(ServicesError::Guard)?;
                    running.guard = Some(guard);
                    running.guard_epoch_ms = Some(
                        u64::try_from(opts.guard.config.epoch.as_millis()).unwrap_or(u64::MAX),
                    );
                }
            }
        }
        Ok(running)
    }

    /// The services running, in start order.
    pub fn kinds(&self) -> Vec<ServiceKind> {
        let mut k = Vec::new();
        if self.hub.is_some() {
            k.push(ServiceKind::Hub);
        }
        if self.status.is_some() {
            k.push(ServiceKind::Status);
        }
        if self.escrow.is_some() {
            k.push(ServiceKind::Escrow);
        }
        if self.guard.is_some() {
            k.push(ServiceKind::Guard);
        }
        k
    }

    /// The Hub, if this node runs it.
    pub fn hub(&self) -> Option<&HubHandle> {
        self.hub.as_ref()
    }

    /// The Status server, if this node runs it.
    pub fn status(&self) -> Option<&StatusHandle> {
        self.status.as_ref()
    }

    /// The Guard, if this node runs it.
    pub fn guard(&self) -> Option<&GuardHandle> {
        self.guard.as_ref()
    }

    /// The Escrow, if this node runs it.
    pub fn escrow(&self) -> Option<&EscrowHandle> {
        self.escrow.as_ref()
    }

    /// The `services` entries of what this node runs (`peer_id`, full `addrs`; `pid` 0 leaves it
    /// out), for its answer to `Network` requests and the devnet's network file.
    pub fn directory(
        &self,
        peer_id: &str,
        pid: u32,
        addrs: &[String],
    ) -> btfs_core::network_file::NetworkFile {
        let status = self.status_url();
        let mut d = btfs_core::network_file::NetworkFile::default();
        d.add_services_of(&btfs_core::network_file::NodeServices {
            peer_id,
            pid,
            addrs,
            hub: self.hub.is_some(),
            status_http: status.as_deref(),
            guard_epoch_ms: self.guard_epoch_ms,
            escrow_devnet: self.escrow_devnet,
        });
        d
    }

    /// The Status server's base URL, if this node runs it.
    pub fn status_url(&self) -> Option<String> {
        self.status.as_ref().map(StatusHandle::url)
    }

    /// Waits for every service to stop, in reverse start order (after the node's cancellation
    /// token fired; Status is also told to stop here).
    pub async fn shutdown(self) {
        if let Some(guard) = self.guard {
            guard.join().await;
        }
        if let Some(escrow) = self.escrow {
            escrow.join().await;
        }
        if let Some(status) = self.status {
            status.shutdown().await;
        }
        if let Some(hub) = self.hub {
            hub.join().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_validates_and_orders_the_list() {
        assert_eq!(
            ServiceKind::parse_list("status,hub").unwrap(),
            vec![ServiceKind::Hub, ServiceKind::Status]
        );
        assert_eq!(
            ServiceKind::parse_list(" hub , hub ").unwrap(),
            vec![ServiceKind::Hub]
        );
        assert!(ServiceKind::parse_list("").unwrap().is_empty());
        let e = ServiceKind::parse_list("hub,guard,bank").unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown service \"bank\": valid services are hub, status, escrow, guard (e.g. --services hub,status)"
        );
        let e = ServiceKind::parse_list("status").unwrap_err();
        assert_eq!(
            e.to_string(),
            "service status needs hub on the same node: add it (e.g. --services hub,status)"
        );
    }

    #[test]
    fn names_round_trip_through_the_config_file_form() {
        for k in ServiceKind::ALL {
            assert_eq!(ServiceKind::parse(k.name()).unwrap(), k);
            let json = serde_json::to_string(&k).unwrap();
            assert_eq!(json, format!("\"{}\"", k.name()));
        }
    }
}

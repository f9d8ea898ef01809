//! The libp2p side of a node: transports, the behaviour, and the one task that owns the `Swarm`.
//!
//! Goals: hosts listen on TCP (Noise + Yamux), QUIC, WebSocket and WebRTC-direct; tenants dial
//! TCP or QUIC. Everything else talks to the swarm through [`Net`]: a bounded command channel
//! with `oneshot` replies, plus a cloneable `libp2p_stream::Control` for opening and accepting
//! protocol streams. Small control messages (the Hub protocol, [`btfs_core::hub`]) go over
//! libp2p request-response with JSON bodies bounded at both ends; any node answers the Hub's
//! `Probe` itself, and a node that runs a Hub takes the other requests from
//! [`Net::serve_hub`]'s bounded queue. A Hub request to the node's own peer id never touches
//! the network (a node cannot dial itself): `Probe` is answered `Pong` and the others go to the
//! node's own Hub queue (with no source address), so a host that runs the Hub announces to it
//! and is probed by it like any other host.
//!
//! Discovery ([`crate::net::discovery`]): every node runs Kademlia ([`KAD_PROTOCOL`], our own
//! DHT, not IPFS's): every node that listens (hosts, service nodes) is a DHT server; tenants,
//! which listen on nothing, run no DHT at all (they talk to the bootstrap nodes, the Hub and
//! the hosts it names; a DHT client would walk the network in the middle of its transfers). On servers identify feeds each peer's listen addresses (TCP/QUIC, at most
//! [`MAX_DHT_ADDRS`]) into the routing table (a tenant's table holds only the bootstrap nodes it
//! joined through, so it never walks the DHT in the middle of a transfer); [`Net::join`] adds bootstrap peers and starts a
//! bootstrap query; a dial of a
//! peer with no known address takes the routing table's. The DHT stores nothing: values and
//! provider records that peers send are dropped unread (`StoreInserts::FilterBoth`), so a
//! flood of bogus records costs one message each and no memory; the routing table is
//! Kademlia's bounded k-buckets (20 per bucket). Every node answers the Hub protocol's
//! `Network` request with the services it knows ([`Net::set_directory`]).
//!
//! Connections are bounded by libp2p's `connection-limits` behaviour ([`ConnLimits`]): per peer
//! and in total, established and pending, inbound and outbound; and per remote IP address
//! ([`crate::net::ip_limit`], since peer ids are free to make); a connection over a limit is
//! denied during the handshake (the peer sees its dial fail) and the node keeps serving the
//! others. Streams stay bounded separately (shard service: per-peer and total concurrency;
//! Hub protocol: 64 concurrent request-response streams per connection, a bounded queue).

pub mod discovery;
pub mod http;
pub mod ip_limit;

use std::collections::HashMap;
use std::time::Duration;

use btfs_core::hub::{self as hubproto, HubRequest, HubResponse};
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{
    connection_limits, identify, kad, noise, ping, request_response, tcp, yamux, Multiaddr, PeerId,
    StreamProtocol, Swarm,
};
use thiserror::Error;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::host::config::Transport;
use crate::host::inbound::{InboundQueues, InboundStreams};

/// Agent version announced over identify.
pub const AGENT: &str = concat!("btfs-rs/", env!("CARGO_PKG_VERSION"));

/// A network operation failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum NetError {
    /// Building the transports failed.
    #[error("cannot set up libp2p transports: {0}")]
    Setup(String),
    /// Listening failed (port in use?).
    #[error("cannot listen on {addr}: {reason}")]
    Listen {
        /// Address.
        addr: Multiaddr,
        /// Cause.
        reason: String,
    },
    /// Dialing a peer failed.
    #[error("cannot connect to {peer}: {reason}")]
    Dial {
        /// Peer.
        peer: PeerId,
        /// Cause.
        reason: String,
    },
    /// The swarm task has stopped.
    #[error("the network task has stopped")]
    Stopped,
}

/// Connection limits of one swarm (libp2p `connection-limits`). Per-peer limits bound what one
/// identity can hold; the totals bound the node whatever the number of identities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConnLimits {
    /// Established connections at most, inbound and outbound together.
    pub max_established: u32,
    /// Established inbound connections at most.
    pub max_established_incoming: u32,
    /// Established outbound connections at most.
    pub max_established_outgoing: u32,
    /// Established connections with one peer at most.
    pub max_established_per_peer: u32,
    /// Inbound connections still in their handshake at most.
    pub max_pending_incoming: u32,
    /// Outbound connections still being dialed at most.
    pub max_pending_outgoing: u32,
    /// Inbound connections (pending or established) from one IP address (IPv6: /64) at most,
    /// whatever peer ids they claim ([`crate::net::ip_limit`]).
    pub max_incoming_per_ip: u32,
}

impl Default for ConnLimits {
    /// Hosts and tenants: 1,024 connections (768 inbound), 8 per peer, 64 inbound per IP
    /// address, 128 inbound handshakes, 512 dials in flight (an upload dials every host of the
    /// network file).
    fn default() -> Self {
        Self {
            max_established: 1_024,
            max_established_incoming: 768,
            max_established_outgoing: 1_024,
            max_established_per_peer: 8,
            max_pending_incoming: 128,
            max_pending_outgoing: 512,
            max_incoming_per_ip: 64,
        }
    }
}

impl ConnLimits {
    /// The service node (Hub): every host keeps a connection for announcements and probes, so
    /// the totals scale with the hosts expected (at least the defaults); 256 inbound per IP
    /// address (hosts behind one NAT).
    pub fn for_service(max_hosts: usize) -> Self {
        let d = Self::default();
        let hosts = u32::try_from(max_hosts).unwrap_or(u32::MAX);
        let total = hosts
            .saturating_add(hosts / 4)
            .clamp(d.max_established, 65_536);
        Self {
            max_established: total,
            max_established_incoming: total,
            max_established_outgoing: total,
            max_pending_incoming: 512,
            max_incoming_per_ip: 256,
            ..d
        }
    }

    /// Each limit the larger of `self`'s and `other`'s (a host that also runs the Hub needs
    /// at least the service node's limits).
    pub fn at_least(self, other: Self) -> Self {
        Self {
            max_established: self.max_established.max(other.max_established),
            max_established_incoming: self
                .max_established_incoming
                .max(other.max_established_incoming),
            max_established_outgoing: self
                .max_established_outgoing
                .max(other.max_established_outgoing),
            max_established_per_peer: self
                .max_established_per_peer
                .max(other.max_established_per_peer),
            max_pending_incoming: self.max_pending_incoming.max(other.max_pending_incoming),
            max_pending_outgoing: self.max_pending_outgoing.max(other.max_pending_outgoing),
            max_incoming_per_ip: self.max_incoming_per_ip.max(other.max_incoming_per_ip),
        }
    }

    /// Checks that every limit is at least 1.
    pub fn validate(&self) -> Result<(), String> {
        let all = [
            ("max_established", self.max_established),
            ("max_established_incoming", self.max_established_incoming),
            ("max_established_outgoing", self.max_established_outgoing),
            ("max_established_per_peer", self.max_established_per_peer),
            ("max_pending_incoming", self.max_pending_incoming),
            ("max_pending_outgoing", self.max_pending_outgoing),
            ("max_incoming_per_ip", self.max_incoming_per_ip),
        ];
        match all.iter().find(|(_, v)| *v == 0) {
            Some((name, _)) => Err(format!(
                "connection limit {name} must be at least 1 (0 would refuse every connection)"
            )),
            None => Ok(()),
        }
    }

    fn behaviour(&self) -> connection_limits::Behaviour {
        connection_limits::Behaviour::new(
            connection_limits::ConnectionLimits::default()
                .with_max_established(Some(self.max_established))
                .with_max_established_incoming(Some(self.max_established_incoming))
                .with_max_established_outgoing(Some(self.max_established_outgoing))
                .with_max_established_per_peer(Some(self.max_established_per_peer))
                .with_max_pending_incoming(Some(self.max_pending_incoming))
                .with_max_pending_outgoing(Some(self.max_pending_outgoing)),
        )
    }
}

/// The node's behaviour: connection limits, identify, ping, and generic protocol streams.
#[derive(NetworkBehaviour)]
pub struct Behaviour {
    limits: connection_limits::Behaviour,
    per_ip: crate::net::ip_limit::Behaviour,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    stream: libp2p_stream::Behaviour,
    shards: Toggle<InboundStreams>,
    audits: Toggle<InboundStreams>,
    guard: Toggle<InboundStreams>,
    escrow: Toggle<InboundStreams>,
    contracts: Toggle<InboundStreams>,
    hub: request_response::json::Behaviour<HubRequest, HubResponse>,
    kad: Toggle<kad::Behaviour<kad::store::MemoryStore>>,
}

/// The Kademlia protocol of BTFS nodes (its own DHT: IPFS peers do not join it).
pub const KAD_PROTOCOL: &str = "/btfs/kad/1";
/// Most of one peer's identify-reported addresses put into the routing table.
pub const MAX_DHT_ADDRS: usize = 8;
/// How long one DHT query (a bootstrap walk) may take.
pub const DHT_QUERY_TIMEOUT: Duration = Duration::from_secs(15);

/// Hub requests queued for the local Hub before it answers `Busy`.
pub const HUB_QUEUE: usize = 256;
/// How long an outbound Hub request may take.
pub const HUB_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// An inbound Hub request for the local Hub to answer through `reply`.
pub struct HubCall {
    /// The requesting peer (authenticated by the connection).
    pub peer: PeerId,
    /// The IP address the request's connection comes from, if it has one.
    pub source: Option<std::net::IpAddr>,
    /// The request.
    pub request: HubRequest,
    /// Where the answer goes.
    pub reply: oneshot::Sender<HubResponse>,
}

enum Command {
    Dial {
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        reply: oneshot::Sender<Result<(), NetError>>,
    },
    HubRequest {
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        request: HubRequest,
        reply: oneshot::Sender<Result<HubResponse, NetError>>,
    },
    ServeHub {
        calls: mpsc::Sender<HubCall>,
    },
    Join {
        peers: Vec<(PeerId, Vec<Multiaddr>)>,
    },
    SetDirectory(Box<btfs_core::network_file::NetworkFile>),
}

/// Handle to a running swarm task.
#[derive(Clone)]
pub struct Net {
    peer_id: PeerId,
    control: libp2p_stream::Control,
    commands: mpsc::Sender<Command>,
}

/// What to listen on.
#[derive(Debug, Clone)]
pub struct Listen {
    /// Transport.
    pub transport: Transport,
    /// Address without the peer id.
    pub addr: Multiaddr,
}

/// A started node's listening addresses, by transport.
pub type ListenAddrs = Vec<(Transport, Multiaddr)>;

/// Largest yamux data frame this node sends. yamux's default of 16 KiB costs a frame (a copy
/// into a new buffer, a channel send to the connection task, a wake-up, a header) per 16 KiB of
/// every shard; 256 KiB frames cut that per-frame work 16-fold. Receivers accept any frame
/// within the window they granted, so peers with the default (browsers) interoperate.
pub const YAMUX_FRAME: usize = 256 * 1024;

/// The yamux configuration of every TCP and WebSocket connection (see [`YAMUX_FRAME`]).
fn yamux_config() -> yamux::Config {
    let mut c = yamux::Config::default();
    c.set_split_send_size(YAMUX_FRAME);
    c
}

async fn build_swarm(
    keypair: Keypair,
    webrtc: Option<libp2p_webrtc::tokio::Certificate>,
    inbound: InboundQueues,
    limits: ConnLimits,
    dht: bool,
) -> Result<Swarm<Behaviour>, NetError> {
    let setup = |e: &dyn std::fmt::Display| NetError::Setup(e.to_string());
    let cert = match webrtc {
        Some(c) => c,
        None => libp2p_webrtc::tokio::Certificate::generate(&mut rand010::rng())
            .map_err(|e| setup(&e))?,
    };
    let webrtc_transport = |key: &Keypair| libp2p_webrtc::tokio::Transport::new(key.clone(), cert);
    let swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux_config,
        )
        .map_err(|e| setup(&e))?
        .with_quic()
        .with_other_transport(webrtc_transport)
        .map_err(|e| setup(&e))?
        .with_dns()
        .map_err(|e| setup(&e))?
        .with_websocket(noise::Config::new, yamux_config)
        .await
        .map_err(|e| setup(&e))?
        .with_behaviour(|key| Behaviour {
            limits: limits.behaviour(),
            per_ip: crate::net::ip_limit::Behaviour::new(limits.max_incoming_per_ip),
            identify: identify::Behaviour::new(
                identify::Config::new("/btfs/id/1".into(), key.public())
                    .with_agent_version(AGENT.into()),
            ),
            ping: ping::Behaviour::default(),
            stream: libp2p_stream::Behaviour::new(),
            shards: Toggle::from(inbound.shards),
            audits: Toggle::from(inbound.audits),
            guard: Toggle::from(inbound.guard),
            escrow: Toggle::from(inbound.escrow),
            contracts: Toggle::from(inbound.contracts),
            hub: request_response::json::Behaviour::with_codec(
                request_response::json::codec::Codec::default()
                    .set_request_size_maximum(hubproto::MAX_REQUEST_BYTES)
                    .set_response_size_maximum(hubproto::MAX_RESPONSE_BYTES),
                [(
                    StreamProtocol::new(hubproto::PROTOCOL),
                    request_response::ProtocolSupport::Full,
                )],
                request_response::Config::default()
                    .with_request_timeout(HUB_REQUEST_TIMEOUT)
                    .with_max_concurrent_streams(64),
            ),
            kad: Toggle::from(dht.then(|| {
                let mut c = kad::Config::new(StreamProtocol::new(KAD_PROTOCOL));
                c.set_query_timeout(DHT_QUERY_TIMEOUT)
                    .set_record_filtering(kad::StoreInserts::FilterBoth)
                    .set_periodic_bootstrap_interval(Some(Duration::from_secs(120)));
                let store = kad::store::MemoryStore::with_config(
                    key.public().to_peer_id(),
                    kad::store::MemoryStoreConfig {
                        max_records: 16,
                        max_value_bytes: 1024,
                        max_providers_per_key: 20,
                        max_provided_keys: 16,
                    },
                );
                let mut k = kad::Behaviour::with_config(key.public().to_peer_id(), store, c);
                k.set_mode(Some(kad::Mode::Server));
                k
            })),
        })
        .map_err(|e| setup(&e))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    Ok(swarm)
}

impl Net {
    /// [`Net::start_with`] the default [`ConnLimits`] (tenants).
    pub async fn start(
        keypair: Keypair,
        webrtc: Option<libp2p_webrtc::tokio::Certificate>,
        inbound: InboundQueues,
        listen: Vec<Listen>,
        cancel: CancellationToken,
    ) -> Result<(Net, ListenAddrs, tokio::task::JoinHandle<()>), NetError> {
        Self::start_with(
            keypair,
            webrtc,
            inbound,
            listen,
            ConnLimits::default(),
            cancel,
        )
        .await
    }

    /// Starts the swarm task with connection `limits`; listens on `listen` and returns once
    /// every listener has an address (with the actual port and, for WebRTC, the certificate
    /// hash). Inbound shard and audit streams go to `inbound`'s queues (hosts); tenants pass none.
    pub async fn start_with(
        keypair: Keypair,
        webrtc: Option<libp2p_webrtc::tokio::Certificate>,
        inbound: InboundQueues,
        listen: Vec<Listen>,
        limits: ConnLimits,
        cancel: CancellationToken,
    ) -> Result<(Net, ListenAddrs, tokio::task::JoinHandle<()>), NetError> {
        limits.validate().map_err(NetError::Setup)?;
        let peer_id = keypair.public().to_peer_id();
        let dht = !listen.is_empty();
        let mut swarm = build_swarm(keypair, webrtc, inbound, limits, dht).await?;
        let mut pending_listen = HashMap::new();
        for l in listen {
            let id = swarm
                .listen_on(l.addr.clone())
                .map_err(|e| NetError::Listen {
                    addr: l.addr.clone(),
                    reason: e.to_string(),
                })?;
            pending_listen.insert(id, l);
        }
        let mut addrs = Vec::new();
        let deadline = tokio::time::sleep(Duration::from_secs(20));
        tokio::pin!(deadline);
        while !pending_listen.is_empty() {
            tokio::select! {
                event = swarm.select_next_some() => match event {
                    SwarmEvent::NewListenAddr { listener_id, address } => {
                        if let Some(l) = pending_listen.remove(&listener_id) {
                            addrs.push((l.transport, address));
                        }
                    }
                    SwarmEvent::ListenerError { listener_id, error } | SwarmEvent::ListenerClosed { listener_id, reason: Err(error), .. } => {
                        if let Some(l) = pending_listen.remove(&listener_id) {
                            return Err(NetError::Listen { addr: l.addr, reason: error.to_string() });
                        }
                    }
                    _ => {}
                },
                () = &mut deadline => {
                    let addr = pending_listen.into_values().next().map(|l| l.addr).unwrap_or(Multiaddr::empty());
                    return Err(NetError::Listen { addr, reason: "no address after 20 s".into() });
                }
            }
        }
        addrs.sort_by_key(|(t, _)| *t);
        let control = swarm.behaviour().stream.new_control();
        let (commands, rx) = mpsc::channel(64);
        let task = tokio::spawn(run(swarm, rx, cancel));
        Ok((
            Net {
                peer_id,
                control,
                commands,
            },
            addrs,
            task,
        ))
    }

    /// This node's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// A stream control for opening/accepting protocol streams.
    pub fn control(&self) -> libp2p_stream::Control {
        self.control.clone()
    }

    /// Connects to `peer` at `addrs` (no-op when already connected).
    pub async fn connect(&self, peer: PeerId, addrs: Vec<Multiaddr>) -> Result<(), NetError> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::Dial { peer, addrs, reply })
            .await
            .map_err(|_| NetError::Stopped)?;
        rx.await.map_err(|_| NetError::Stopped)?
    }

    /// Sends a Hub-protocol request to `peer` (dialing `addrs` if not connected) and waits for
    /// the answer (at most [`HUB_REQUEST_TIMEOUT`]).
    pub async fn hub_request(
        &self,
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        request: HubRequest,
    ) -> Result<HubResponse, NetError> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::HubRequest {
                peer,
                addrs,
                request,
                reply,
            })
            .await
            .map_err(|_| NetError::Stopped)?;
        rx.await.map_err(|_| NetError::Stopped)?
    }

    /// Joins the DHT through `peers` (bootstrap nodes): adds them to the routing table, dials
    /// them and starts a bootstrap query (in the background).
    /// A node that listens on nothing (a tenant) runs no DHT, and this does nothing.
    pub async fn join(&self, peers: Vec<(PeerId, Vec<Multiaddr>)>) -> Result<(), NetError> {
        self.send(Command::Join { peers }).await
    }

    /// What this node answers a `Network` request with (the services it knows).
    pub async fn set_directory(
        &self,
        directory: btfs_core::network_file::NetworkFile,
    ) -> Result<(), NetError> {
        self.send(Command::SetDirectory(Box::new(directory))).await
    }

    async fn send(&self, c: Command) -> Result<(), NetError> {
        self.commands.send(c).await.map_err(|_| NetError::Stopped)
    }

    /// Makes this node a Hub: inbound Hub requests other than `Probe` arrive on the returned
    /// queue (at most [`HUB_QUEUE`] waiting; beyond that peers get a "busy" error).
    pub async fn serve_hub(&self) -> Result<mpsc::Receiver<HubCall>, NetError> {
        let (calls, rx) = mpsc::channel(HUB_QUEUE);
        self.commands
            .send(Command::ServeHub { calls })
            .await
            .map_err(|_| NetError::Stopped)?;
        Ok(rx)
    }
}

type HubChannel = request_response::ResponseChannel<HubResponse>;

async fn run(
    mut swarm: Swarm<Behaviour>,
    mut commands: mpsc::Receiver<Command>,
    cancel: CancellationToken,
) {
    let mut dials: HashMap<PeerId, Vec<oneshot::Sender<Result<(), NetError>>>> = HashMap::new();
    let mut hub_calls: Option<mpsc::Sender<HubCall>> = None;
    let mut hub_pending: HashMap<
        request_response::OutboundRequestId,
        oneshot::Sender<Result<HubResponse, NetError>>,
    > = HashMap::new();
    let mut hub_answers = FuturesUnordered::new();
    // Remote IP per connection (bounded by the connection limits), for the Hub's per-address
    // budget of new hosts.
    let mut remote_ips: HashMap<libp2p::swarm::ConnectionId, std::net::IpAddr> = HashMap::new();
    let mut directory: Option<btfs_core::network_file::NetworkFile> = None;
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            Some((channel, answer)) = hub_answers.next(), if !hub_answers.is_empty() => {
                let channel: HubChannel = channel;
                let answer: Result<HubResponse, oneshot::error::RecvError> = answer;
                let response = answer.unwrap_or_else(|_| HubResponse::Error {
                    message: "the hub stopped before answering".into(),
                });
                let _ = swarm.behaviour_mut().hub.send_response(channel, response);
            }
            cmd = commands.recv() => match cmd {
                None => break,
                Some(Command::Dial { peer, addrs, reply }) => {
                    if swarm.is_connected(&peer) {
                        let _ = reply.send(Ok(()));
                        continue;
                    }
                    let addrs: Vec<Multiaddr> = addrs.into_iter().map(strip_p2p).collect();
                    let opts = DialOpts::peer_id(peer)
                        .addresses(addrs)
                        .condition(PeerCondition::DisconnectedAndNotDialing)
                        .build();
                    let first = !dials.contains_key(&peer);
                    dials.entry(peer).or_default().push(reply);
                    if first {
                        match swarm.dial(opts) {
                            // Someone else (the DHT, identify's dial-back) is dialing it
                            // already: that dial's outcome answers this one too.
                            Ok(()) | Err(libp2p::swarm::DialError::DialPeerConditionFalse(_)) => {}
                            Err(e) => {
                                for r in dials.remove(&peer).unwrap_or_default() {
                                    let _ = r.send(Err(NetError::Dial { peer, reason: e.to_string() }));
                                }
                            }
                        }
                    }
                }
                Some(Command::HubRequest { peer, addrs: _, request, reply }) if peer == *swarm.local_peer_id() => {
                    // A node cannot dial itself: a request to our own Hub (a host that runs the
                    // Hub announcing to it, the Hub probing its own host) is answered here.
                    match (request, &hub_calls) {
                        (HubRequest::Probe, _) => {
                            let _ = reply.send(Ok(HubResponse::Pong));
                        }
                        (HubRequest::Network, _) => {
                            let _ = reply.send(Ok(directory_answer(&directory)));
                        }
                        (_, None) => {
                            let _ = reply.send(Err(NetError::Dial { peer, reason: "that is this node, and it runs no Hub; name another node's Hub".into() }));
                        }
                        (request, Some(calls)) => {
                            let (to_hub, answer) = oneshot::channel();
                            let call = HubCall { peer, source: None, request, reply: to_hub };
                            match calls.try_send(call) {
                                Ok(()) => {
                                    tokio::spawn(async move {
                                        let _ = reply.send(answer.await.map_err(|_| NetError::Stopped));
                                    });
                                }
                                Err(_) => {
                                    let _ = reply.send(Ok(HubResponse::Error { message: "the Hub is busy; retry in a few seconds".into() }));
                                }
                            }
                        }
                    }
                }
                Some(Command::HubRequest { peer, addrs, request, reply }) => {
                    let addrs = addrs.into_iter().map(strip_p2p).collect();
                    let id = swarm.behaviour_mut().hub.send_request_with_addresses(&peer, request, addrs);
                    hub_pending.insert(id, reply);
                }
                Some(Command::ServeHub { calls }) => hub_calls = Some(calls),
                Some(Command::Join { peers }) => {
                    // A tenant runs no DHT: it asks its bootstrap nodes directly.
                    let local = *swarm.local_peer_id();
                    let Some(kad) = swarm.behaviour_mut().kad.as_mut() else {
                        continue;
                    };
                    let peers: Vec<_> = peers.into_iter().filter(|(p, _)| *p != local).collect();
                    for (peer, addrs) in &peers {
                        for a in addrs.iter().cloned().map(strip_p2p) {
                            kad.add_address(peer, a);
                        }
                    }
                    if let Err(e) = kad.bootstrap() {
                        tracing::debug!(%e, "no DHT bootstrap yet");
                    }
                    for (peer, _) in peers {
                        // Connecting runs identify, which confirms the peer speaks the DHT.
                        let _ = swarm.dial(DialOpts::peer_id(peer).condition(PeerCondition::DisconnectedAndNotDialing).build());
                    }
                }
                Some(Command::SetDirectory(d)) => directory = Some(*d),
            },
            event = swarm.select_next_some() => match event {
                SwarmEvent::Behaviour(BehaviourEvent::Hub(event)) => match event {
                    request_response::Event::Message { peer, connection_id, message } => match message {
                        request_response::Message::Request { request, channel, .. } => {
                            let immediate = match (&request, &hub_calls) {
                                (HubRequest::Probe, _) => Some(HubResponse::Pong),
                                (HubRequest::Network, _) => Some(directory_answer(&directory)),
                                (_, None) => Some(HubResponse::Error { message: "this node is not a Hub; find the Hub's address in the network file (services.hub)".into() }),
                                (_, Some(calls)) => {
                                    let (reply, rx) = oneshot::channel();
                                    let source = remote_ips.get(&connection_id).copied();
                                    match calls.try_send(HubCall { peer, source, request, reply }) {
                                        Ok(()) => {
                                            hub_answers.push(async move { (channel, rx.await) });
                                            continue;
                                        }
                                        Err(_) => Some(HubResponse::Error { message: "the Hub is busy; retry in a few seconds".into() }),
                                    }
                                }
                            };
                            if let Some(r) = immediate {
                                let _ = swarm.behaviour_mut().hub.send_response(channel, r);
                            }
                        }
                        request_response::Message::Response { request_id, response } => {
                            if let Some(r) = hub_pending.remove(&request_id) {
                                let _ = r.send(Ok(response));
                            }
                        }
                    },
                    request_response::Event::OutboundFailure { peer, request_id, error, .. } => {
                        if let Some(r) = hub_pending.remove(&request_id) {
                            let _ = r.send(Err(NetError::Dial { peer, reason: error.to_string() }));
                        }
                    }
                    request_response::Event::InboundFailure { peer, error, .. } => {
                        tracing::debug!(%peer, %error, "inbound hub request failed");
                    }
                    request_response::Event::ResponseSent { .. } => {}
                },
                SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }))
                    if info.protocols.iter().any(|p| p.as_ref() == KAD_PROTOCOL) =>
                {
                    if let Some(kad) = swarm.behaviour_mut().kad.as_mut() {
                        let addrs = info.listen_addrs.into_iter().filter(dht_worthy).take(MAX_DHT_ADDRS);
                        for a in addrs {
                            kad.add_address(&peer_id, a);
                        }
                    }
                }
                SwarmEvent::ConnectionEstablished { peer_id, connection_id, endpoint, .. } => {
                    if let Some(ip) = crate::net::ip_limit::ip_of(endpoint.get_remote_address()) {
                        remote_ips.insert(connection_id, ip);
                    }
                    for r in dials.remove(&peer_id).unwrap_or_default() {
                        let _ = r.send(Ok(()));
                    }
                }
                SwarmEvent::OutgoingConnectionError { peer_id: Some(peer), error, .. }
                    if !swarm.is_connected(&peer) =>
                {
                    for r in dials.remove(&peer).unwrap_or_default() {
                        let _ = r.send(Err(NetError::Dial { peer, reason: error.to_string() }));
                    }
                }
                SwarmEvent::ConnectionClosed { connection_id, .. } => {
                    remote_ips.remove(&connection_id);
                }
                SwarmEvent::NewListenAddr { address, .. } => tracing::debug!(%address, "listening"),
                SwarmEvent::IncomingConnectionError { error, .. } => tracing::debug!(%error, "inbound connection failed"),
                _ => {}
            },
        }
    }
    tracing::debug!("network task stopped");
}

/// The answer to a `Network` request.
fn directory_answer(d: &Option<btfs_core::network_file::NetworkFile>) -> HubResponse {
    match d {
        Some(d) => HubResponse::Network(d.clone()),
        None => HubResponse::Error {
            message: "this node knows no network services yet; ask another bootstrap node".into(),
        },
    }
}

/// Whether a peer-reported address goes into the routing table: one a native node dials
/// (TCP/QUIC), not an unspecified address.
fn dht_worthy(a: &Multiaddr) -> bool {
    is_native(a)
        && !a.iter().any(|p| match p {
            Protocol::Ip4(ip) => ip.is_unspecified(),
            Protocol::Ip6(ip) => ip.is_unspecified(),
            _ => false,
        })
}

/// Removes a trailing `/p2p/<id>` (the peer id is passed separately).
fn strip_p2p(mut a: Multiaddr) -> Multiaddr {
    if matches!(a.iter().last(), Some(Protocol::P2p(_))) {
        a.pop();
    }
    a
}

/// The listen address of a transport on `ip:port`.
pub fn listen_addr(t: Transport, ip: std::net::IpAddr, port: u16) -> Multiaddr {
    let base = Multiaddr::from(ip);
    match t {
        Transport::Tcp => base.with(Protocol::Tcp(port)),
        Transport::Quic => base.with(Protocol::Udp(port)).with(Protocol::QuicV1),
        Transport::Ws => base
            .with(Protocol::Tcp(port))
            .with(Protocol::Ws("/".into())),
        Transport::Webrtc => base.with(Protocol::Udp(port)).with(Protocol::WebRTCDirect),
    }
}

/// Binds a single-port listener with `bind(port)`: the `configured` port, or — when that is 0 —
/// the port `remembered` from the last run (so addresses survive restarts), falling back to any
/// free port if the remembered one is taken now. `what` names the listener in the log.
pub async fn bind_remembered<T, E, F, Fut>(
    configured: u16,
    remembered: Option<u16>,
    what: &str,
    bind: F,
) -> Result<T, E>
where
    E: std::fmt::Display,
    F: Fn(u16) -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let port = match (configured, remembered) {
        (0, Some(p)) => p,
        (p, _) => p,
    };
    let mut tries = 0;
    loop {
        match bind(port).await {
            // The process that held the port may have been killed a moment ago: its port is
            // free again shortly, and keeping it keeps every address others remember.
            Err(_) if configured == 0 && port != 0 && tries < REBIND_TRIES => {
                tries += 1;
                tokio::time::sleep(REBIND_PAUSE).await;
            }
            Err(e) if configured == 0 && port != 0 => {
                tracing::warn!(%e, "previous {what} port unavailable; using a new one");
                return bind(0).await;
            }
            other => return other,
        }
    }
}

/// How often a remembered port is tried again before a node takes a new one.
pub const REBIND_TRIES: u32 = 20;
/// Pause between those tries (20 × 250 ms: 5 s).
pub const REBIND_PAUSE: std::time::Duration = std::time::Duration::from_millis(250);

/// The port of an `http://IP:PORT[/path]` URL this node wrote itself (node.json, service.json).
pub fn port_of_url(url: &str) -> Option<u16> {
    let rest = url.strip_prefix("http://")?;
    let authority = rest.split('/').next()?;
    Some(authority.parse::<std::net::SocketAddr>().ok()?.port())
}

/// Whether a native node dials this address (TCP or QUIC), rather than it being there for
/// browsers (WebSocket, WebRTC-direct): [`btfs_core::transport::is_native`].
pub fn is_native(a: &Multiaddr) -> bool {
    btfs_core::transport::is_native(&a.to_string())
}

/// The TCP/UDP port of an address, if any.
pub fn port_of(a: &Multiaddr) -> Option<u16> {
    a.iter().find_map(|p| match p {
        Protocol::Tcp(p) | Protocol::Udp(p) => Some(p),
        _ => None,
    })
}

/// One request on a fresh stream of `protocol` to `peer` (dialled at `addrs` if not connected):
/// writes `len: u32 LE ‖ body`, reads a `ResponseHead`-framed answer of at most `max` bytes, all within
/// `timeout`. `Err` says why the peer could not be reached or did not answer; a refusal is an
/// `Ok` with its status (the Guard, Escrow and hosts' contract protocols all frame this way).
pub async fn exchange(
    net: &Net,
    peer: PeerId,
    addrs: Vec<Multiaddr>,
    protocol: &'static str,
    body: &[u8],
    max: u32,
    timeout: std::time::Duration,
) -> Result<(btfs_core::protocol::Status, Vec<u8>), String> {
    let work = async {
        net.connect(peer, addrs).await.map_err(|e| e.to_string())?;
        let mut stream = net
            .control()
            .open_stream(peer, StreamProtocol::new(protocol))
            .await
            .map_err(|e| e.to_string())?;
        let len = u32::try_from(body.len())
            .map_err(|_| "request too large".to_string())?
            .to_le_bytes();
        btfs_core::protocol::exchange_bytes(&mut stream, &len, body, max)
            .await
            .map_err(|e| e.to_string())
    };
    tokio::time::timeout(timeout, work)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {} s", timeout.as_secs())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_of_urls_we_write() {
        assert_eq!(port_of_url("http://127.0.0.1:4005/metrics"), Some(4005));
        assert_eq!(port_of_url("http://127.0.0.1:8090"), Some(8090));
        assert_eq!(port_of_url("http://[::1]:9000/metrics"), Some(9000));
        assert_eq!(port_of_url("https://127.0.0.1:1"), None);
        assert_eq!(port_of_url("http://example.com/"), None);
    }
}

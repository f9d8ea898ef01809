//! Accepting inbound protocol streams into a bounded queue.
//!
//! Why not `libp2p_stream::Control::accept`: its inbound channel has capacity 0 (upstream
//! rust-libp2p issue #5651), so when a tenant opens ten shard streams at once, every stream that
//! arrives before the accept loop is polled again is silently dropped — the tenant sees
//! "connection is closed". This behaviour hands each negotiated inbound stream of one protocol
//! to a `tokio::sync::mpsc` queue of a chosen, bounded capacity; a stream that finds the queue
//! full is dropped (the peer sees a reset) and counted. Outbound streams still go through
//! `libp2p_stream::Control`.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use libp2p::core::transport::PortUse;
use libp2p::core::upgrade::{DeniedUpgrade, ReadyUpgrade};
use libp2p::core::Endpoint;
use libp2p::swarm::handler::{ConnectionEvent, FullyNegotiatedInbound};
use libp2p::swarm::{
    ConnectionDenied, ConnectionHandler, ConnectionHandlerEvent, ConnectionId, FromSwarm,
    NetworkBehaviour, SubstreamProtocol, THandler, THandlerInEvent, THandlerOutEvent, ToSwarm,
};
use libp2p::{Multiaddr, PeerId, Stream, StreamProtocol};
use tokio::sync::mpsc;

/// A negotiated inbound stream and the peer that opened it.
pub type Inbound = (PeerId, Stream);

/// The inbound stream queues a node accepts, each with its own bound: a storage host takes
/// shard streams (`/btfs/shard/1`) and storage challenges (`/btfs/audit/1`); a node running the
/// Guard takes Guard requests (`/btfs/guard/1`), one running the Escrow Escrow requests
/// (`/btfs/escrow/1`). A tenant takes none.
#[derive(Default)]
pub struct InboundQueues {
    /// Shard protocol streams.
    pub shards: Option<InboundStreams>,
    /// Audit challenge streams.
    pub audits: Option<InboundStreams>,
    /// Contract signing streams (`/btfs/contract/1`).
    pub contracts: Option<InboundStreams>,
    /// Guard protocol streams.
    pub guard: Option<InboundStreams>,
    /// Escrow protocol streams.
    pub escrow: Option<InboundStreams>,
}

/// Behaviour that queues inbound streams of one protocol. Wrap in `Toggle` for client nodes.
pub struct InboundStreams {
    protocol: StreamProtocol,
    queue: mpsc::Sender<Inbound>,
    dropped: Arc<AtomicU64>,
}

impl InboundStreams {
    /// Accepts `protocol` into a queue of `capacity`; returns the behaviour and the receiver.
    pub fn new(protocol: StreamProtocol, capacity: usize) -> (Self, mpsc::Receiver<Inbound>) {
        let (queue, rx) = mpsc::channel(capacity.max(1));
        let dropped = Arc::default();
        (
            Self {
                protocol,
                queue,
                dropped,
            },
            rx,
        )
    }

    /// Streams dropped because the queue was full.
    pub fn dropped(&self) -> Arc<AtomicU64> {
        self.dropped.clone()
    }

    fn handler(&self, peer: PeerId) -> Handler {
        Handler {
            peer,
            protocol: self.protocol.clone(),
            queue: self.queue.clone(),
            dropped: self.dropped.clone(),
        }
    }
}

impl NetworkBehaviour for InboundStreams {
    type ConnectionHandler = Handler;
    type ToSwarm = Infallible;

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(self.handler(peer))
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(self.handler(peer))
    }

    fn on_swarm_event(&mut self, _: FromSwarm) {}

    fn on_connection_handler_event(
        &mut self,
        _: PeerId,
        _: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

/// Per-connection handler: negotiates the protocol and queues each inbound stream.
pub struct Handler {
    peer: PeerId,
    protocol: StreamProtocol,
    queue: mpsc::Sender<Inbound>,
    dropped: Arc<AtomicU64>,
}

impl ConnectionHandler for Handler {
    type FromBehaviour = Infallible;
    type ToBehaviour = Infallible;
    type InboundProtocol = ReadyUpgrade<StreamProtocol>;
    type OutboundProtocol = DeniedUpgrade;
    type InboundOpenInfo = ();
    type OutboundOpenInfo = Infallible;

    fn listen_protocol(&self) -> SubstreamProtocol<Self::InboundProtocol, ()> {
        SubstreamProtocol::new(ReadyUpgrade::new(self.protocol.clone()), ())
    }

    fn poll(
        &mut self,
        _: &mut Context<'_>,
    ) -> Poll<ConnectionHandlerEvent<Self::OutboundProtocol, Infallible, Self::ToBehaviour>> {
        Poll::Pending
    }

    fn on_behaviour_event(&mut self, event: Infallible) {
        match event {}
    }

    fn on_connection_event(
        &mut self,
        event: ConnectionEvent<Self::InboundProtocol, Self::OutboundProtocol, (), Infallible>,
    ) {
        if let ConnectionEvent::FullyNegotiatedInbound(FullyNegotiatedInbound {
            protocol: stream,
            ..
        }) = event
        {
            if self.queue.try_send((self.peer, stream)).is_err() {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(peer = %self.peer, protocol = %self.protocol, "inbound queue full; stream dropped");
            }
        }
    }
}

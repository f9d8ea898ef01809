//! A `NetworkBehaviour` that bounds inbound libp2p connections per remote IP address (IPv4 /32,
//! IPv6 /64, the rule of [`crate::net::http::client_key`]).
//!
//! libp2p's `connection-limits` bounds connections per *peer id* and in total, but peer ids
//! cost nothing: one machine with fresh keys could take every inbound slot. This behaviour
//! counts an inbound connection from the moment it is pending (before the handshake) until it
//! fails or closes, and denies a new one once its address holds `limit`. Connections we dial
//! are not counted. Non-goals: outbound limits (libp2p `connection-limits` does those), rate
//! limits over time.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::IpAddr;
use std::task::{Context, Poll};

use libp2p::core::transport::PortUse;
use libp2p::core::Endpoint;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::{
    dummy, ConnectionClosed, ConnectionDenied, ConnectionId, FromSwarm, ListenFailure,
    NetworkBehaviour, THandler, THandlerInEvent, THandlerOutEvent, ToSwarm,
};
use libp2p::{Multiaddr, PeerId};

/// Why an inbound connection was denied.
#[derive(Debug, thiserror::Error)]
#[error("{ip} already holds {limit} inbound connections (the per-address limit)")]
pub struct TooManyFromIp {
    /// The address (after grouping).
    pub ip: IpAddr,
    /// The limit.
    pub limit: u32,
}

/// Inbound connections per remote address, each at most `limit`.
pub struct Behaviour {
    limit: u32,
    by_ip: HashMap<IpAddr, u32>,
    conns: HashMap<ConnectionId, IpAddr>,
}

impl Behaviour {
    /// At most `limit` inbound connections per address.
    pub fn new(limit: u32) -> Self {
        Self {
            limit,
            by_ip: HashMap::new(),
            conns: HashMap::new(),
        }
    }

    /// Inbound connections counted for `ip` now.
    pub fn count(&self, ip: IpAddr) -> u32 {
        self.by_ip
            .get(&crate::net::http::client_key(ip))
            .copied()
            .unwrap_or(0)
    }

    fn release(&mut self, id: ConnectionId) {
        let Some(ip) = self.conns.remove(&id) else {
            return;
        };
        if let Some(n) = self.by_ip.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.by_ip.remove(&ip);
            }
        }
    }
}

/// The IP address of a multiaddr (`/ip4/…` or `/ip6/…` first), if any.
pub fn ip_of(a: &Multiaddr) -> Option<IpAddr> {
    a.iter().find_map(|p| match p {
        Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
        Protocol::Ip6(ip) => Some(IpAddr::V6(ip)),
        _ => None,
    })
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_pending_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        _local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        let Some(ip) = ip_of(remote).map(crate::net::http::client_key) else {
            return Ok(());
        };
        let n = self.by_ip.entry(ip).or_insert(0);
        if *n >= self.limit {
            if *n == 0 {
                self.by_ip.remove(&ip);
            }
            return Err(ConnectionDenied::new(TooManyFromIp {
                ip,
                limit: self.limit,
            }));
        }
        *n += 1;
        self.conns.insert(connection_id, ip);
        Ok(())
    }

    fn handle_established_inbound_connection(
        &mut self,
        _connection_id: ConnectionId,
        _peer: PeerId,
        _local: &Multiaddr,
        _remote: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _connection_id: ConnectionId,
        _peer: PeerId,
        _addr: &Multiaddr,
        _role: Endpoint,
        _port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::ConnectionClosed(ConnectionClosed { connection_id, .. })
            | FromSwarm::ListenFailure(ListenFailure { connection_id, .. }) => {
                self.release(connection_id);
            }
            _ => {}
        }
    }

    fn on_connection_handler_event(
        &mut self,
        _peer: PeerId,
        _connection_id: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

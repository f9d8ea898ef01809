//! The Hub: a registry of hosts with transparent scores, and recommendations for tenants.
//!
//! Goals: hosts announce signed [`btfs_core::signed::HostAd`]s ([`crate::host::announce`]); the
//! Hub verifies them (signature, signer = sender, freshness, bounds), records first-seen time,
//! probes every host itself on an interval (uptime = share of the last 128 probes answered; two
//! misses in a row = offline), and ranks hosts for a tenant's `Recommend` with core's pure
//! [`btfs_core::score::score`], spreading picks across subnets and regions ([`registry`]).
//! A new host is registered only within its source address's budget (`new_hosts_per_ip` per
//! 10 minutes, IPv4 /32 or IPv6 /64), so fresh keys from one machine cannot fill the registry.
//! A host that has not announced for `forget_after` (24 h by default) is forgotten, in memory
//! and in the database, so the registry holds the hosts that are still around, not every host
//! that ever was ([`registry::Registry::expire`]). Everything else survives a restart ([`db`]:
//! redb). A host that runs the Hub itself announces to it like any other host (the node's
//! [`crate::net::Net`] answers requests to its own peer id locally). Layout: [`registry`] is
//! the pure state (no I/O, time passed in, unit-tested with virtual time), [`server`] the task
//! that owns it and does the probing and saving, [`db`] the database. The protocol is
//! [`btfs_core::hub::PROTOCOL`] over libp2p request-response with bounded JSON messages.
//!
//! Non-goals (for now): several Hubs agreeing with each other; audit results arrive from the
//! Guard through [`registry::Registry::record_audit`] once the Guard exists; tenant-measured
//! round trips are not yet sent with requests (proximity uses regions).

pub mod client;
pub mod db;
pub mod registry;
pub mod server;

use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};

/// Where a Hub is: its peer id and addresses.
#[derive(Debug, Clone)]
pub struct HubAddr {
    /// Peer id.
    pub peer: PeerId,
    /// Addresses (without `/p2p`).
    pub addrs: Vec<Multiaddr>,
}

impl HubAddr {
    /// From a multiaddr ending in `/p2p/<peer id>`.
    pub fn parse(addr: &str) -> Result<Self, String> {
        let mut a: Multiaddr = addr
            .parse()
            .map_err(|e| format!("hub address {addr:?} is not a multiaddr: {e}"))?;
        match a.pop() {
            Some(Protocol::P2p(peer)) => Ok(Self {
                peer,
                addrs: vec![a],
            }),
            _ => Err(format!("hub address {addr:?} must end in /p2p/<peer id>")),
        }
    }
}

//! The native tenant: a client-only libp2p node that stores and fetches objects on hosts.
//!
//! Goals: upload and download stream slab by slab with bounded memory and bounded parallelism;
//! failures are retried on other hosts; every error says what to do. Until the Hub lands, hosts
//! come from the network file. See [`crate::upload`] and [`crate::download`].

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use futures::StreamExt;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use thiserror::Error;
use tokio_util::sync::CancellationToken;

use crate::net::{Net, NetError};
use crate::network_file::KnownHost;

/// How long a dial may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Dials in flight at once.
pub const MAX_PARALLEL_DIALS: usize = 32;

/// An upload or download failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum TransferError {
    /// Reading the input failed.
    #[error("cannot read {path}: {source}")]
    Input {
        /// Path.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Writing the output failed.
    #[error("cannot write {path}: {source}")]
    Output {
        /// Path.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// No host answered.
    #[error("network unreachable: none of the {total} hosts in the network file answered. Is the network running (`btfs devnet`)? Is --network the right file?")]
    Unreachable {
        /// Hosts tried.
        total: usize,
    },
    /// Not enough distinct hosts for 30 shards.
    #[error("too few hosts: {reachable} of {total} known hosts are reachable, but every slab needs 30 distinct hosts")]
    TooFewHosts {
        /// Reachable hosts.
        reachable: usize,
        /// Known hosts.
        total: usize,
    },
    /// The manifest was on no reachable host.
    #[error("object not found: no host has manifest {id} ({unreachable} of {asked} hosts unreachable, the rest do not hold it). Check the link and that --network names the network it was uploaded to")]
    ManifestNotFound {
        /// Manifest id.
        id: String,
        /// Hosts asked.
        asked: usize,
        /// Of which unreachable.
        unreachable: usize,
    },
    /// Too few valid shards of a slab could be fetched.
    #[error("cannot rebuild slab {slab}: only {have} of the 10 needed shards could be fetched and verified ({unreachable} hosts unreachable, {corrupt} shards corrupt, {missing} missing). Too many hosts are down; retry later")]
    SlabLost {
        /// Slab.
        slab: u64,
        /// Verified shards.
        have: usize,
        /// Hosts that could not be reached.
        unreachable: usize,
        /// Shards that failed verification.
        corrupt: usize,
        /// Shards the host did not have or refused.
        missing: usize,
    },
    /// The manifest is malformed.
    #[error(transparent)]
    Manifest(#[from] btfs_core::ManifestError),
    /// Decoding failed (wrong key, tampering).
    #[error(transparent)]
    Decode(#[from] btfs_core::DecodeError),
    /// Encoding failed.
    #[error(transparent)]
    Encode(#[from] btfs_core::EncodeError),
    /// The layout is impossible.
    #[error(transparent)]
    Layout(#[from] btfs_core::layout::LayoutError),
    /// Network.
    #[error(transparent)]
    Net(#[from] NetError),
}

/// A client node plus the hosts it knows.
pub struct Tenant {
    net: Net,
    hosts: Vec<KnownHost>,
    /// Hosts that failed during this session; tried last.
    bad: Mutex<HashSet<usize>>,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Tenant {
    /// Starts a client node (listens nowhere) that knows `hosts`.
    pub async fn start(hosts: Vec<KnownHost>) -> Result<Self, TransferError> {
        let cancel = CancellationToken::new();
        let keypair = libp2p::identity::Keypair::generate_ed25519();
        let (net, _, task) =
            Net::start(keypair, None, None, Vec::new(), cancel.child_token()).await?;
        Ok(Self {
            net,
            hosts,
            bad: Mutex::default(),
            cancel,
            task,
        })
    }

    /// Replaces the known hosts (before any transfer starts), e.g. with the Hub's picks.
    pub fn set_hosts(&mut self, hosts: Vec<KnownHost>) {
        self.hosts = hosts;
        self.bad.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// The known hosts.
    pub fn hosts(&self) -> &[KnownHost] {
        &self.hosts
    }

    /// The network handle.
    pub fn net(&self) -> &Net {
        &self.net
    }

    /// Connects to host `i` (TCP preferred, then QUIC, then anything).
    pub async fn connect(&self, i: usize) -> Result<PeerId, NetError> {
        let h = &self.hosts[i];
        let fut = self.net.connect(h.peer, preferred_addrs(&h.addrs));
        match tokio::time::timeout(CONNECT_TIMEOUT, fut).await {
            Ok(Ok(())) => Ok(h.peer),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(NetError::Dial {
                peer: h.peer,
                reason: format!("no answer within {} s", CONNECT_TIMEOUT.as_secs()),
            }),
        }
    }

    /// Connects to every known host; returns the indices that answered, in file order.
    pub async fn reachable(&self) -> Vec<usize> {
        let mut ok: Vec<usize> = futures::stream::iter(0..self.hosts.len())
            .map(|i| async move { self.connect(i).await.ok().map(|_| i) })
            .buffer_unordered(MAX_PARALLEL_DIALS)
            .filter_map(|x| async move { x })
            .collect()
            .await;
        ok.sort_unstable();
        ok
    }

    /// Remembers that host `i` failed.
    pub fn mark_bad(&self, i: usize) {
        self.bad.lock().unwrap_or_else(|p| p.into_inner()).insert(i);
    }

    /// Whether host `i` failed before.
    pub fn is_bad(&self, i: usize) -> bool {
        self.bad
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&i)
    }

    /// Stops the client node.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        let _ = self.task.await;
    }
}

/// TCP addresses if the host has any (fastest natively), else QUIC, else all.
fn preferred_addrs(addrs: &[Multiaddr]) -> Vec<Multiaddr> {
    let is = |a: &Multiaddr, want: fn(&Protocol) -> bool, not: fn(&Protocol) -> bool| {
        a.iter().any(|p| want(&p)) && !a.iter().any(|p| not(&p))
    };
    let tcp: Vec<_> = addrs
        .iter()
        .filter(|a| {
            is(
                a,
                |p| matches!(p, Protocol::Tcp(_)),
                |p| matches!(p, Protocol::Ws(_) | Protocol::Wss(_)),
            )
        })
        .cloned()
        .collect();
    if !tcp.is_empty() {
        return tcp;
    }
    let quic: Vec<_> = addrs
        .iter()
        .filter(|a| is(a, |p| matches!(p, Protocol::QuicV1), |_| false))
        .cloned()
        .collect();
    if !quic.is_empty() {
        return quic;
    }
    addrs.to_vec()
}

//! The native tenant: a client-only libp2p node that stores and fetches objects on hosts.
//!
//! Goals: upload and download stream slab by slab with bounded memory and bounded parallelism;
//! failures are retried on other hosts; every error says what to do. Until the Hub lands, hosts
//! come from the network file. See [`crate::upload`] and [`crate::download`].
//!
//! Errors ([`TransferError`]) are typed down to the reason: a lost slab or manifest carries
//! [`FetchFailures`] (corrupt hosts, unreachable, missing, refused counts), its message and
//! [`TransferError::kind`] follow the dominant [`FailureKind`], and no message repeats its
//! `source()`.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use futures::StreamExt;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use thiserror::Error;
use tokio_util::sync::CancellationToken;

use btfs_core::protocol::Status;

use crate::net::{Net, NetError};
use crate::network_file::KnownHost;
use crate::output::OutputError;
use crate::shard_client::ShardError;

/// How long a dial may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Dials in flight at once.
pub const MAX_PARALLEL_DIALS: usize = 32;

/// An upload or download failed.
///
/// Messages never repeat their cause: an error that wraps another names it as its `source()`
/// and leaves printing it to whoever walks the chain (`{:#}` in the CLI, `causes` in `--json`).
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum TransferError {
    /// Reading the input failed.
    #[error("cannot read {path}")]
    Input {
        /// Path.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Opening, writing or finishing the output failed.
    #[error(transparent)]
    Output(#[from] OutputError),
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
    /// No host returned a copy of the manifest that hashes to its id.
    #[error("{}", manifest_lost(.id, .failures))]
    ManifestLost {
        /// Manifest id.
        id: String,
        /// Why each host's copy was not usable.
        failures: FetchFailures,
    },
    /// Too few valid shards of a slab could be fetched.
    #[error("cannot rebuild slab {slab}: only {have} of the 10 needed shards could be fetched and verified: {failures}. {}", failures.shard_advice())]
    SlabLost {
        /// Slab.
        slab: u64,
        /// Verified shards.
        have: usize,
        /// Why the other fetches failed.
        failures: FetchFailures,
    },
    /// Stopped by Ctrl-C or SIGTERM.
    #[error("interrupted by a signal: the transfer did not finish (a download's temporary file was removed; stdout or a special file holds only a prefix)")]
    Interrupted,
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

impl TransferError {
    /// A stable machine-readable name of what stopped the transfer (`--json` errors): for lost
    /// shards and manifests it names the dominant reason, e.g. `shards_corrupt`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Input { .. } => "input",
            Self::Output(_) => "output",
            Self::Unreachable { .. } => "network_unreachable",
            Self::TooFewHosts { .. } => "too_few_hosts",
            Self::ManifestLost { failures, .. } => match failures.reason() {
                FailureKind::Corrupt => "manifest_corrupt",
                FailureKind::Unreachable => "manifest_unreachable",
                FailureKind::Missing => "not_found",
                FailureKind::Refused => "manifest_refused",
            },
            Self::SlabLost { failures, .. } => match failures.reason() {
                FailureKind::Corrupt => "shards_corrupt",
                FailureKind::Unreachable => "shards_unreachable",
                FailureKind::Missing => "shards_missing",
                FailureKind::Refused => "shards_refused",
            },
            Self::Interrupted => "interrupted",
            Self::Manifest(_) => "bad_manifest",
            Self::Decode(btfs_core::DecodeError::Manifest(_)) => "wrong_key",
            Self::Decode(_) => "decode",
            Self::Encode(_) => "encode",
            Self::Layout(_) => "layout",
            Self::Net(_) => "network",
        }
    }

    /// Structured details for `--json` errors (fetch failure counts), if any.
    pub fn details(&self) -> Option<serde_json::Value> {
        match self {
            Self::ManifestLost { id, failures } => Some(serde_json::json!({
                "manifest_id": id,
                "failures": failures,
            })),
            Self::SlabLost {
                slab,
                have,
                failures,
            } => Some(serde_json::json!({
                "slab": slab,
                "verified_shards": have,
                "failures": failures,
            })),
            _ => None,
        }
    }
}

/// Why one fetch (of a shard, or of a manifest copy) failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The host answered with bytes that are not the blob: they do not hash to its root, or the
    /// answer was malformed or oversized.
    Corrupt,
    /// No connection or stream, the stream broke, or no answer in time.
    Unreachable,
    /// The host said it does not hold the blob.
    Missing,
    /// The host refused for another reason (busy, internal error).
    Refused,
}

impl FailureKind {
    /// Classifies a failed shard request.
    pub fn of(e: &ShardError) -> Self {
        match e {
            ShardError::Open { .. } | ShardError::Timeout { .. } | ShardError::Io { .. } => {
                Self::Unreachable
            }
            ShardError::Frame { .. } => Self::Corrupt,
            ShardError::Refused {
                status: Status::NotFound,
                ..
            } => Self::Missing,
            _ => Self::Refused,
        }
    }
}

/// Counts of failed fetches by [`FailureKind`], with the hosts that sent corrupt bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct FetchFailures {
    /// Peer ids of hosts that sent corrupt bytes (one entry per corrupt fetch).
    pub corrupt_hosts: Vec<String>,
    /// Fetches that found no connection or answer.
    pub unreachable: usize,
    /// Hosts that do not hold the blob.
    pub missing: usize,
    /// Hosts that refused otherwise.
    pub refused: usize,
}

/// Corrupt hosts named in a message; the rest are counted (`--json` lists them all).
const HOSTS_NAMED: usize = 3;

impl FetchFailures {
    /// Records one failed fetch from `host`.
    pub fn record(&mut self, kind: FailureKind, host: impl FnOnce() -> String) {
        match kind {
            FailureKind::Corrupt => self.corrupt_hosts.push(host()),
            FailureKind::Unreachable => self.unreachable += 1,
            FailureKind::Missing => self.missing += 1,
            FailureKind::Refused => self.refused += 1,
        }
    }

    /// Failures of this kind.
    pub fn count(&self, kind: FailureKind) -> usize {
        match kind {
            FailureKind::Corrupt => self.corrupt_hosts.len(),
            FailureKind::Unreachable => self.unreachable,
            FailureKind::Missing => self.missing,
            FailureKind::Refused => self.refused,
        }
    }

    /// Every failed fetch.
    pub fn total(&self) -> usize {
        self.corrupt_hosts.len() + self.unreachable + self.missing + self.refused
    }

    /// The reason that stopped the transfer: the most frequent kind (ties: corrupt, missing,
    /// refused, unreachable — the more specific finding wins).
    pub fn reason(&self) -> FailureKind {
        if self.total() == 0 {
            return FailureKind::Unreachable;
        }
        [
            FailureKind::Corrupt,
            FailureKind::Missing,
            FailureKind::Refused,
            FailureKind::Unreachable,
        ]
        .into_iter()
        .rev()
        .max_by_key(|&k| self.count(k))
        .unwrap_or(FailureKind::Unreachable)
    }

    /// What to do when too few shards of a slab could be had.
    fn shard_advice(&self) -> &'static str {
        match self.reason() {
            FailureKind::Corrupt => "Hosts returned corrupt shards: the object cannot be rebuilt from this network's copies",
            FailureKind::Unreachable => "Too many hosts are down; retry later",
            FailureKind::Missing => "The hosts no longer hold the shards: the object was lost or removed",
            FailureKind::Refused => "Hosts refused (busy or failing); retry later",
        }
    }
}

impl std::fmt::Display for FetchFailures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} corrupt", self.corrupt_hosts.len())?;
        if !self.corrupt_hosts.is_empty() {
            let mut distinct: Vec<&str> = Vec::new();
            for h in &self.corrupt_hosts {
                if !distinct.contains(&h.as_str()) {
                    distinct.push(h);
                }
            }
            let named = distinct.len().min(HOSTS_NAMED);
            write!(
                f,
                " (host{} {}",
                if distinct.len() == 1 { "" } else { "s" },
                distinct[..named].join(", ")
            )?;
            if distinct.len() > named {
                write!(f, " and {} more", distinct.len() - named)?;
            }
            f.write_str(")")?;
        }
        write!(
            f,
            ", {} unreachable, {} missing",
            self.unreachable, self.missing
        )?;
        if self.refused > 0 {
            write!(f, ", {} refused", self.refused)?;
        }
        Ok(())
    }
}

fn manifest_lost(id: &str, failures: &FetchFailures) -> String {
    let asked = failures.total();
    match failures.reason() {
        FailureKind::Missing => format!(
            "object not found: no host has manifest {id} (of {asked} hosts asked: {failures}). Check the link and that --network names the network it was uploaded to"
        ),
        FailureKind::Corrupt => format!(
            "cannot read manifest {id}: the manifest copies were corrupt (of {asked} hosts asked: {failures}). The hosts hold damaged copies; the object cannot be opened from this network"
        ),
        FailureKind::Unreachable => format!(
            "cannot fetch manifest {id}: too many hosts are unreachable (of {asked} hosts asked: {failures}). Retry later"
        ),
        FailureKind::Refused => format!(
            "cannot fetch manifest {id}: the hosts refused (of {asked} hosts asked: {failures}). Retry later"
        ),
    }
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
pub(crate) fn preferred_addrs(addrs: &[Multiaddr]) -> Vec<Multiaddr> {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// No error in the chain repeats the text of its cause.
    fn assert_causes_once(e: &dyn std::error::Error) {
        let mut cur = e;
        while let Some(src) = cur.source() {
            let (outer, inner) = (cur.to_string(), src.to_string());
            assert!(
                !outer.contains(&inner),
                "cause printed twice: {outer:?} contains {inner:?}"
            );
            cur = src;
        }
    }

    fn corrupt(n: usize) -> FetchFailures {
        let mut f = FetchFailures::default();
        for i in 0..n {
            f.record(FailureKind::Corrupt, || format!("peer{i}"));
        }
        f
    }

    #[test]
    fn io_causes_are_printed_once() {
        let denied = || std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        assert_causes_once(&TransferError::Input {
            path: "in.bin".into(),
            source: denied(),
        });
        assert_causes_once(&TransferError::Output(OutputError::Open {
            path: "/dev/x".into(),
            source: denied(),
        }));
        let anyhow = anyhow::Error::new(TransferError::Output(OutputError::CreatePart {
            dir: "/ro".into(),
            path: "/ro/out".into(),
            source: std::io::Error::from_raw_os_error(13),
        }))
        .context("download failed");
        let text = format!("{anyhow:#}");
        assert_eq!(text.matches("os error 13").count(), 1, "{text}");
    }

    #[test]
    fn slab_lost_names_corrupt_shards_and_their_hosts() {
        let mut f = corrupt(21);
        assert_eq!(f.reason(), FailureKind::Corrupt);
        let e = TransferError::SlabLost {
            slab: 3,
            have: 9,
            failures: f.clone(),
        };
        let text = e.to_string();
        assert!(text.contains("slab 3: only 9 of the 10"), "{text}");
        assert!(
            text.contains(
                "21 corrupt (hosts peer0, peer1, peer2 and 18 more), 0 unreachable, 0 missing"
            ),
            "{text}"
        );
        assert!(text.contains("corrupt shards"), "{text}");
        assert!(!text.contains("down"), "{text}");
        assert_eq!(e.kind(), "shards_corrupt");
        f.unreachable = 22;
        assert_eq!(f.reason(), FailureKind::Unreachable);
    }

    #[test]
    fn manifest_lost_says_corrupt_or_not_found() {
        let e = TransferError::ManifestLost {
            id: "ab".into(),
            failures: corrupt(30),
        };
        assert!(
            e.to_string().contains("manifest copies were corrupt"),
            "{e}"
        );
        assert_eq!(e.kind(), "manifest_corrupt");
        let e = TransferError::ManifestLost {
            id: "ab".into(),
            failures: FetchFailures {
                missing: 28,
                unreachable: 2,
                ..Default::default()
            },
        };
        let text = e.to_string();
        assert!(text.starts_with("object not found"), "{text}");
        assert!(text.contains("2 unreachable, 28 missing"), "{text}");
        assert_eq!(e.kind(), "not_found");
    }

    #[test]
    fn ties_prefer_the_more_specific_reason() {
        let mut f = corrupt(5);
        f.unreachable = 5;
        assert_eq!(f.reason(), FailureKind::Corrupt);
        let f = FetchFailures {
            missing: 3,
            unreachable: 3,
            ..Default::default()
        };
        assert_eq!(f.reason(), FailureKind::Missing);
        assert_eq!(FetchFailures::default().reason(), FailureKind::Unreachable);
    }
}

//! The native tenant: a client-only libp2p node that stores and fetches objects on hosts.
//!
//! Goals: upload and download stream slab by slab with bounded memory and bounded parallelism;
//! failures are retried on other hosts; every error says what to do. Hosts come from the network
//! file or the Hub. Every transfer decision is core's (`btfs_core::engine`); [`driver`] performs
//! the machines' actions on this node. See [`upload`] and [`download`].
//!
//! Errors ([`TransferError`]) are typed down to the reason: a lost slab or manifest carries
//! [`FetchFailures`] (corrupt hosts, unreachable, missing, refused counts), its message and
//! [`TransferError::kind`] follow the dominant [`FailureClass`], and no message repeats its
//! `source()`.

pub mod audit;
pub mod contracts;
pub mod download;
pub mod driver;
pub mod network_file;
pub mod output;
pub mod shard_client;
pub mod upload;
pub mod upload_journal;
pub mod wallet;

use std::collections::HashMap;
use std::time::Duration;

use libp2p::{Multiaddr, PeerId};
use thiserror::Error;
use tokio_util::sync::CancellationToken;

use crate::net::{Net, NetError};
use crate::tenant::network_file::KnownHost;
use crate::tenant::output::OutputError;

/// How long a dial may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

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
                FailureClass::Corrupt => "manifest_corrupt",
                FailureClass::Unreachable => "manifest_unreachable",
                FailureClass::Missing => "not_found",
                FailureClass::Refused => "manifest_refused",
            },
            Self::SlabLost { failures, .. } => match failures.reason() {
                FailureClass::Corrupt => "shards_corrupt",
                FailureClass::Unreachable => "shards_unreachable",
                FailureClass::Missing => "shards_missing",
                FailureClass::Refused => "shards_refused",
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

pub use btfs_core::engine::{FailureClass, FetchFailures};

/// What `--network` hint ends a not-found message.
const NOT_FOUND_HINT: &str =
    "Check the link and that --network names the network it was uploaded to";

fn manifest_lost(id: &str, failures: &FetchFailures) -> String {
    failures.manifest_lost_message(id, NOT_FOUND_HINT)
}

/// A client node plus the hosts it knows.
pub struct Tenant {
    net: Net,
    hosts: Vec<KnownHost>,
    guard: Option<crate::services::hub::HubAddr>,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Tenant {
    /// Starts a client node (listens nowhere) that knows `hosts`, with a fresh identity.
    pub async fn start(hosts: Vec<KnownHost>) -> Result<Self, TransferError> {
        Self::start_with_key(hosts, libp2p::identity::Keypair::generate_ed25519()).await
    }

    /// Starts a client node whose identity is `keypair` (a wallet's: hosts then see the payer
    /// of the contracts as the peer that uploads).
    pub async fn start_with_key(
        hosts: Vec<KnownHost>,
        keypair: libp2p::identity::Keypair,
    ) -> Result<Self, TransferError> {
        let cancel = CancellationToken::new();
        let (net, _, task) = Net::start(
            keypair,
            None,
            Default::default(),
            Vec::new(),
            cancel.child_token(),
        )
        .await?;
        Ok(Self {
            net,
            hosts,
            guard: None,
            cancel,
            task,
        })
    }

    /// Replaces the known hosts (before any transfer starts), e.g. with the Hub's picks.
    pub fn set_hosts(&mut self, hosts: Vec<KnownHost>) {
        self.hosts = hosts;
    }

    /// Sets the network's Guard (uploads register with it, downloads ask it where repaired
    /// shards live).
    pub fn set_guard(&mut self, guard: Option<crate::services::hub::HubAddr>) {
        self.guard = guard;
    }

    /// The network's Guard, if it has one.
    pub fn guard(&self) -> Option<&crate::services::hub::HubAddr> {
        self.guard.as_ref()
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

    /// Every known host's addresses in dial order, for the transfer driver.
    pub fn dial_addrs(&self) -> HashMap<PeerId, Vec<Multiaddr>> {
        self.hosts
            .iter()
            .map(|h| (h.peer, preferred_addrs(&h.addrs)))
            .collect()
    }

    /// Stops the client node.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        let _ = self.task.await;
    }
}

/// The addresses a native tenant dials: [`btfs_core::transport::native_preferred`] (plain TCP
/// if the host has any, else QUIC, else all).
pub(crate) fn preferred_addrs(addrs: &[Multiaddr]) -> Vec<Multiaddr> {
    let texts: Vec<String> = addrs.iter().map(Multiaddr::to_string).collect();
    btfs_core::transport::native_preferred(&texts)
        .into_iter()
        .map(|i| addrs[i].clone())
        .collect()
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
        for h in btfs_core::engine::sim::host_ids(n) {
            f.record(btfs_core::engine::Failure::Corrupt, Some(h));
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
        assert_eq!(f.reason(), FailureClass::Corrupt);
        let e = TransferError::SlabLost {
            slab: 3,
            have: 9,
            failures: f.clone(),
        };
        let text = e.to_string();
        assert!(text.contains("slab 3: only 9 of the 10"), "{text}");
        assert!(
            text.contains(&{
                let ids = btfs_core::engine::sim::host_ids(3);
                format!(
                    "21 corrupt (hosts {}, {}, {} and 18 more), 0 unreachable, 0 missing",
                    ids[0], ids[1], ids[2]
                )
            }),
            "{text}"
        );
        assert!(text.contains("corrupt shards"), "{text}");
        assert!(!text.contains("down"), "{text}");
        assert_eq!(e.kind(), "shards_corrupt");
        f.unreachable = 22;
        assert_eq!(f.reason(), FailureClass::Unreachable);
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
}

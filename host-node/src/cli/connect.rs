//! The tenant a command works through: which network (a network file, or what bootstrap nodes
//! say: [`NetworkArg::resolve`]), which hosts it knows (the network file, the Hub's list or
//! recommendation), or one host's address.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use btfs_host::services::hub;
use btfs_host::tenant::contracts::PayPlan;
use btfs_host::tenant::network_file;
use btfs_host::tenant::wallet::Wallet;

use super::args::NetworkArg;
use btfs_host::tenant::{Tenant, TransferError};
use libp2p::multiaddr::Protocol;
use libp2p::Multiaddr;

/// A network as a command was told of it.
pub struct Network {
    /// The network file, or what the bootstrap nodes said (with no `hosts`).
    pub file: network_file::NetworkFile,
    /// Where it came from, for errors: the file's path, or `bootstrap <first address>`.
    pub origin: PathBuf,
}

impl NetworkArg {
    /// The network: with `--bootstrap`, what those nodes say (joining through them); otherwise
    /// the network file.
    pub async fn resolve(&self) -> Result<Network> {
        if self.bootstrap.is_empty() {
            return Ok(Network {
                file: network_file::load(&self.network)?,
                origin: self.network.clone(),
            });
        }
        let probe = Tenant::start(Vec::new()).await?;
        let found = btfs_host::net::discovery::directory(probe.net(), &self.bootstrap).await;
        probe.shutdown().await;
        let file = found.context("cannot join the network through --bootstrap")?;
        Ok(Network {
            file,
            origin: PathBuf::from(format!("(from bootstrap {})", self.bootstrap[0])),
        })
    }
}

/// A tenant for downloads: the network file's hosts plus, with a Hub, every host it lists.
pub async fn tenant_for(net: &Network) -> Result<Tenant> {
    tenant_with_key(net, None).await
}

/// [`tenant_for`] with `key` as its identity (an upload's: the hosts' holds are the wallet's,
/// so that `--resume` can claim them later); a fresh identity without one.
async fn tenant_with_key(net: &Network, key: Option<libp2p::identity::Keypair>) -> Result<Tenant> {
    let (file, network) = (net.file.clone(), net.origin.as_path());
    let mut hosts = network_file::known_hosts(&file, network)?;
    let hub = network_file::hub(&file, network)?;
    if hosts.is_empty() && hub.is_none() {
        bail!(
            "network file {} lists no hosts and no Hub",
            network.display()
        );
    }
    let mut tenant = match key {
        Some(k) => Tenant::start_with_key(hosts.clone(), k).await?,
        None => Tenant::start(hosts.clone()).await?,
    };
    tenant.set_guard(network_file::guard(&file, network)?);
    if let Some(hub) = hub {
        match hub::client::hosts(tenant.net(), &hub, btfs_core::hub::MAX_COUNT).await {
            Ok(list) => {
                for h in hub::client::known_hosts(&list) {
                    if !hosts.iter().any(|k| k.peer == h.peer) {
                        hosts.push(h);
                    }
                }
                tenant.set_hosts(hosts);
            }
            Err(e) if !hosts.is_empty() => {
                tracing::warn!(%e, "the Hub is unavailable; using the network file's hosts")
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(tenant)
}

/// A tenant for an upload of `file`: with a Hub, the hosts it recommends (best first, with
/// spares for hosts that fail); without one, the network file's hosts.
pub async fn tenant_for_upload(
    net: &Network,
    file: &Path,
    shard_size: u32,
    wallet: &Wallet,
    days: u32,
) -> Result<(Tenant, Option<(PayPlan, HashMap<libp2p::PeerId, u64>)>)> {
    let (nf, network) = (&net.file, net.origin.as_path());
    let Some(hub) = network_file::hub(nf, network)? else {
        return Ok((tenant_with_key(net, Some(wallet.keypair())).await?, None));
    };
    let len = std::fs::metadata(file)
        .map_err(|source| TransferError::Input {
            path: file.display().to_string(),
            source,
        })?
        .len();
    let layout = btfs_core::Layout::new(len, shard_size)?;
    let mut req = btfs_core::hub::upload_request(&layout);
    req.duration_days = days;
    let mut tenant = Tenant::start_with_key(Vec::new(), wallet.keypair()).await?;
    let guard = network_file::guard(nf, network)?;
    tenant.set_guard(guard.clone());
    let (hosts, rec) = hub::client::recommend(tenant.net(), &hub, req, btfs_core::TOTAL_SHARDS)
        .await
        .context("cannot choose hosts")?;
    tenant.set_hosts(hosts);
    // With an Escrow (and the Guard whose verdicts pay), the upload signs and funds contracts.
    let pay = pay_plan(nf, network, days)?.map(|plan| {
        let prices = rec
            .hosts
            .iter()
            .filter_map(|h| Some((h.peer_id.parse().ok()?, h.facts.price)))
            .collect();
        (plan, prices)
    });
    Ok((tenant, pay))
}

/// How storage is paid for on the network of file `nf`, for `days`: `None` without an Escrow
/// and a Guard.
pub fn pay_plan(
    nf: &network_file::NetworkFile,
    network: &Path,
    days: u32,
) -> Result<Option<PayPlan>> {
    let (Some(escrow), Some(guard)) = (
        network_file::escrow(nf, network)?,
        network_file::guard(nf, network)?,
    ) else {
        return Ok(None);
    };
    let epoch_ms = nf.guard_epoch_ms();
    let epochs = (u64::from(days) * 86_400_000)
        .div_ceil(epoch_ms)
        .clamp(1, btfs_core::escrow::terms::MAX_EPOCHS);
    Ok(Some(PayPlan {
        escrow,
        guard: guard.peer,
        epoch_ms,
        epochs,
        devnet: nf.escrow_is_devnet(),
        repair_allowance: None,
    }))
}

/// A single host from a `/p2p/`-terminated multiaddr.
pub async fn tenant_for_addr(addr: &Multiaddr) -> Result<Tenant> {
    tenant_for_addr_as(addr, None).await
}

/// A single host from a `/p2p/`-terminated multiaddr, asked as `key` (default: a fresh key).
pub async fn tenant_for_addr_as(
    addr: &Multiaddr,
    key: Option<libp2p::identity::Keypair>,
) -> Result<Tenant> {
    let Some(Protocol::P2p(peer)) = addr.iter().last() else {
        bail!("host address {addr} must end in /p2p/<peer id>");
    };
    let host = network_file::KnownHost {
        peer,
        addrs: vec![addr.clone()],
    };
    let t = match key {
        Some(k) => Tenant::start_with_key(vec![host], k).await?,
        None => Tenant::start(vec![host]).await?,
    };
    t.connect(0).await?;
    Ok(t)
}

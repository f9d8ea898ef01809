//! The inspection subcommands: `btfs shard` (one host's shard protocol), `btfs hosts` (the
//! Hub's registry) and `btfs status` (the Status service's network view), each asked once and
//! printed as text or JSON.

use anyhow::{bail, Context, Result};
use btfs_core::Root;
use btfs_host::services::hub;
use btfs_host::tenant::contracts;
use btfs_host::tenant::network_file;
use btfs_host::tenant::shard_client;
use btfs_host::tenant::wallet::Wallet;
use btfs_host::tenant::Tenant;

use super::args::ShardCmd;
use super::connect::{tenant_for_addr, tenant_for_addr_as, Network};
use super::render::human_bytes;

/// `btfs shard put|get|stat`: one request to one host, its answer on stdout.
pub async fn shard(cmd: ShardCmd) -> Result<()> {
    match cmd {
        ShardCmd::Put {
            host,
            root,
            file,
            net,
            wallet,
            days,
        } => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let root = root.unwrap_or_else(|| Root::of(&bytes));
            // On a network with an Escrow, the host stores only a funded blob: one offer for
            // it, reserved from the wallet, shown to the host before the put.
            let plan = match net.network.exists() || !net.bootstrap.is_empty() {
                true => {
                    let n = net.resolve().await?;
                    super::connect::pay_plan(&n.file, &n.origin, days)?
                        .map(|plan| (plan, network_file::hub(&n.file, &n.origin)))
                }
                false => None,
            };
            let wallet = match &plan {
                Some(_) => Some(Wallet::open(wallet.wallet.as_deref())?),
                None => None,
            };
            let t = tenant_for_addr_as(&host, wallet.as_ref().map(Wallet::keypair)).await?;
            let peer = t.hosts()[0].peer;
            let r = async {
                if let (Some((plan, hub)), Some(w)) = (&plan, &wallet) {
                    let price = match hub {
                        Ok(Some(hub)) => {
                            hub::client::hosts(t.net(), hub, btfs_core::hub::MAX_COUNT)
                                .await
                                .ok()
                                .and_then(|l| l.into_iter().find(|h| h.peer_id == peer.to_base58()))
                                .map_or(0, |h| h.facts.price)
                        }
                        _ => 0,
                    };
                    let prices = std::collections::HashMap::from([(peer, price)]);
                    let room = btfs_core::escrow::plan::Room::blob(bytes.len() as u64);
                    contracts::reserve(&t, w, plan, room, &prices, 1).await?;
                }
                shard_client::put(&mut t.net().control(), peer, root, &bytes)
                    .await
                    .map_err(anyhow::Error::from)
            }
            .await;
            t.shutdown().await;
            r?;
            println!("{root}");
        }
        ShardCmd::Get { host, root, output } => {
            let t = tenant_for_addr(&host).await?;
            let peer = t.hosts()[0].peer;
            let r = shard_client::get(
                &mut t.net().control(),
                peer,
                root,
                btfs_core::protocol::MAX_BLOB_LEN,
            )
            .await;
            t.shutdown().await;
            let verified = root.verify(r?).map_err(|_| {
                anyhow::anyhow!("the host's bytes do not match root {root}: the blob is corrupt")
            })?;
            // Same output rules as downloads: atomic for regular files, in place for devices.
            let mut out = btfs_host::tenant::output::Output::open(&output)?;
            out.write_all(verified.bytes())?;
            out.commit()?;
        }
        ShardCmd::Stat { host, root } => {
            let t = tenant_for_addr(&host).await?;
            let peer = t.hosts()[0].peer;
            let r = shard_client::stat(&mut t.net().control(), peer, root).await;
            t.shutdown().await;
            println!("{}", r?);
        }
    }
    Ok(())
}

/// `btfs hosts`: the Hub's registry, as a table or JSON.
pub async fn hosts(net: &Network, json: bool, limit: u32) -> Result<()> {
    let (nf, network) = (&net.file, net.origin.as_path());
    let Some(hub) = network_file::hub(nf, network)? else {
        bail!(
            "network file {} names no Hub (services.hub); start a network with `btfs devnet`",
            network.display()
        );
    };
    let tenant = Tenant::start(Vec::new()).await?;
    let list = hub::client::hosts(tenant.net(), &hub, limit).await;
    tenant.shutdown().await;
    let list = list?;
    if json {
        let rows: Vec<serde_json::Value> = list
            .iter()
            .map(|h| {
                serde_json::json!({
                    "peer_id": h.peer_id,
                    "online": h.facts.online,
                    "score": h.score.total,
                    "excluded": h.excluded,
                    "breakdown": h.score,
                    "facts": h.facts,
                    "subnet": h.subnet,
                    "addrs": h.addrs,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!(
        "{:<54} {:>6} {:>6}  {:>5} {:>5} {:>5} {:>5} {:>5} {:>5} {:>5}  {:>10} {:>6}  excluded",
        "peer id",
        "online",
        "score",
        "space",
        "uptm",
        "age",
        "prox",
        "price",
        "audit",
        "vers",
        "free",
        "price"
    );
    for h in &list {
        let s = &h.score;
        println!(
            "{:<54} {:>6} {:>6.3}  {:>5.2} {:>5.2} {:>5.2} {:>5.2} {:>5.2} {:>5.2} {:>5.2}  {:>10} {:>6}  {}",
            h.peer_id,
            if h.facts.online { "yes" } else { "no" },
            s.total,
            s.space,
            s.uptime,
            s.age,
            s.proximity,
            s.price,
            s.audits,
            s.version,
            human_bytes(h.facts.free_bytes),
            h.facts.price,
            h.excluded.map(|e| format!("{e:?}")).unwrap_or_default()
        );
    }
    let online = list.iter().filter(|h| h.facts.online).count();
    println!(
        "{} hosts, {online} online (scores for one 1 MiB shard, no price limit)",
        list.len()
    );
    Ok(())
}

/// `btfs status`: the Status server's view of the network.
pub async fn status(net: &Network, json: bool) -> Result<()> {
    let (nf, network) = (&net.file, net.origin.as_path());
    let Some(url) = network_file::status_http(nf, network)? else {
        bail!(
            "network file {} names no Status server (services.status.http); start a network with `btfs devnet`",
            network.display()
        );
    };
    let s = btfs_host::services::status::fetch(&url)
        .await
        .with_context(|| format!("cannot read network status from {url}"))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(());
    }
    let t = &s.totals;
    let failed_pct = if t.requests_served + t.requests_failed == 0 {
        0.0
    } else {
        100.0 * t.requests_failed as f64 / (t.requests_served + t.requests_failed) as f64
    };
    println!("network status from {url}");
    println!(
        "  {} hosts, {} online ({} reporting late or gone)",
        t.hosts,
        t.online,
        t.hosts.saturating_sub(t.online)
    );
    println!(
        "  storage: {} used of {} ({:.1}%), {} shards",
        human_bytes(t.used_bytes),
        human_bytes(t.capacity_bytes),
        if t.capacity_bytes == 0 {
            0.0
        } else {
            100.0 * t.used_bytes as f64 / t.capacity_bytes as f64
        },
        t.shards_held
    );
    println!(
        "  requests: {} served, {} failed ({failed_pct:.2}%)",
        t.requests_served, t.requests_failed
    );
    let late: Vec<_> = s.hosts.iter().filter(|h| !h.online).collect();
    for h in late.iter().take(10) {
        let ago = s.generated_at_ms.saturating_sub(h.last_seen_ms) / 1000;
        println!("  offline: {} (last report {ago} s ago)", h.peer_id);
    }
    if late.len() > 10 {
        println!("  … and {} more offline", late.len() - 10);
    }
    if s.hosts_total > s.hosts.len() as u64 {
        println!(
            "  (showing {} of {} hosts; --json for the list)",
            s.hosts.len(),
            s.hosts_total
        );
    }
    Ok(())
}

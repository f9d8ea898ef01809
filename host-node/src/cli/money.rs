//! `btfs wallet …`, `btfs contracts`, `btfs earnings`, `btfs ledger`: asking the network's
//! Escrow and printing what it says.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use btfs_core::escrow::{
    Account, ContractView, EscrowRequest, EscrowResponse, Op, Transfer, TransferKind,
};
use btfs_host::services::hub::HubAddr;
use btfs_host::tenant::network_file;
use btfs_host::tenant::wallet::{btt, parse_btt, query, Wallet};
use btfs_host::tenant::Tenant;

use crate::cli::args::WalletCmd;
use crate::cli::connect::Network;

/// The network's Escrow, and whether its faucet may be used.
fn escrow_of(net: &Network) -> Result<(HubAddr, bool)> {
    let (file, network) = (&net.file, net.origin.as_path());
    let escrow = network_file::escrow(file, network)?.with_context(|| {
        format!(
            "network file {} names no Escrow (services.escrow); start one with `btfs service` or `btfs host --services escrow`",
            network.display()
        )
    })?;
    Ok((escrow, file.escrow_is_devnet()))
}

async fn account(tenant: &Tenant, escrow: &HubAddr, peer: &str) -> Result<Account> {
    match query(
        tenant.net(),
        escrow,
        &EscrowRequest::Account { peer: peer.into() },
    )
    .await?
    {
        EscrowResponse::Account { account, .. } => Ok(account),
        other => bail!("the Escrow answered {other:?} to an account query"),
    }
}

async fn contracts_of(tenant: &Tenant, escrow: &HubAddr, peer: &str) -> Result<Vec<ContractView>> {
    match query(
        tenant.net(),
        escrow,
        &EscrowRequest::Contracts { peer: peer.into() },
    )
    .await?
    {
        EscrowResponse::Contracts { contracts } => Ok(contracts),
        other => bail!("the Escrow answered {other:?} to a contracts query"),
    }
}

async fn history(
    tenant: &Tenant,
    escrow: &HubAddr,
    peer: &str,
    limit: u32,
) -> Result<Vec<Transfer>> {
    match query(
        tenant.net(),
        escrow,
        &EscrowRequest::History {
            peer: peer.into(),
            limit,
        },
    )
    .await?
    {
        EscrowResponse::History { transfers } => Ok(transfers),
        other => bail!("the Escrow answered {other:?} to a history query"),
    }
}

fn account_json(peer: &str, a: &Account) -> serde_json::Value {
    serde_json::json!({
        "peer": peer,
        "balance": a.available,
        "locked": a.locked,
        "incoming": a.incoming,
        "deposited": a.deposited,
        "withdrawn": a.withdrawn,
        "earned": a.earned,
        "spent": a.spent,
        "refunded": a.refunded,
        "allowance": a.allowance,
        "unit": "µBTT",
    })
}

/// `btfs wallet …`.
pub async fn wallet(cmd: WalletCmd) -> Result<()> {
    let opts = match &cmd {
        WalletCmd::Balance { opts, .. }
        | WalletCmd::Deposit { opts, .. }
        | WalletCmd::Withdraw { opts, .. }
        | WalletCmd::Allow { opts, .. }
        | WalletCmd::History { opts, .. } => opts,
    };
    let net = opts.net.resolve().await?;
    let (escrow, devnet) = escrow_of(&net)?;
    let w = Wallet::open(opts.wallet.wallet.as_deref())?;
    let tenant = Tenant::start_with_key(Vec::new(), w.keypair()).await?;
    let r = async {
        let resumed = w.resume(tenant.net(), &escrow).await?;
        if resumed > 0 {
            eprintln!("resent {resumed} call(s) an earlier run left unanswered");
        }
        let me = w.peer().to_base58();
        match cmd {
            WalletCmd::Balance { json, .. } => {
                let a = account(&tenant, &escrow, &me).await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&account_json(&me, &a))?);
                } else {
                    println!("wallet {me} ({})", w.path().display());
                    println!("  available {}", btt(a.available));
                    println!("  locked    {} (in your storage contracts)", btt(a.locked));
                    println!("  incoming  {} (promised to you as a host, not yet earned)", btt(a.incoming));
                    println!("  allowance {} (set aside for repairs of your files)", btt(a.allowance));
                    println!("  earned {}, spent {}, refunded {}", btt(a.earned), btt(a.spent), btt(a.refunded));
                }
            }
            WalletCmd::Deposit { amount, json, .. } => {
                let amount = parse_btt(&amount)?;
                if !devnet {
                    eprintln!("note: this network's Escrow takes deposits only from its settlement layer; a faucet deposit is refused unless its operator runs one");
                }
                let r = w.call(tenant.net(), &escrow, Op::Deposit { amount }).await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&r)?);
                } else {
                    let from = if devnet { " from the devnet faucet" } else { "" };
                    println!("deposited {}{from} into {me}", btt(r.amount));
                }
            }
            WalletCmd::Withdraw { amount, json, .. } => {
                let amount = parse_btt(&amount)?;
                let r = w.call(tenant.net(), &escrow, Op::Withdraw { amount }).await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&r)?);
                } else {
                    println!("withdrew {} from {me}", btt(r.amount));
                }
            }
            WalletCmd::Allow {
                manifest_id,
                amount,
                days,
                json,
                ..
            } => {
                let amount = parse_btt(&amount)?;
                btfs_core::Root::from_hex(&manifest_id)
                    .map_err(|e| anyhow::anyhow!("manifest id {manifest_id:?}: {e}"))?;
                if days == 0 {
                    bail!("--days must be at least 1");
                }
                let guard = network_file::guard(&net.file, &net.origin)?.with_context(|| {
                    format!(
                        "network file {} names no Guard (services.guard): nobody could spend a repair allowance",
                        net.origin.display()
                    )
                })?;
                let until_ms = btfs_host::tenant::wallet::now_ms()
                    .saturating_add(u64::from(days) * 86_400_000);
                let op = Op::Allow {
                    manifest_id: manifest_id.clone(),
                    guard: guard.peer.to_base58(),
                    amount,
                    until_ms,
                };
                let r = w.call(tenant.net(), &escrow, op).await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&r)?);
                } else {
                    println!(
                        "set {} aside for repairs of {manifest_id} for {days} days (Guard {})",
                        btt(r.amount),
                        guard.peer
                    );
                }
            }
            WalletCmd::History { limit, json, .. } => {
                let h = history(&tenant, &escrow, &me, limit).await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&h)?);
                } else {
                    for t in &h {
                        println!("{}", transfer_line(t, &me));
                    }
                    if h.is_empty() {
                        println!("no transfers yet");
                    }
                }
            }
        }
        anyhow::Ok(())
    }
    .await;
    tenant.shutdown().await;
    r
}

fn transfer_line(t: &Transfer, me: &str) -> String {
    let sign = if t.credit == me { "+" } else { "-" };
    let what = match t.kind {
        TransferKind::Deposit => "deposit".to_string(),
        TransferKind::Withdraw => "withdrawal".to_string(),
        TransferKind::Lock => format!(
            "locked for contract {}",
            t.contract.as_deref().unwrap_or("")
        ),
        TransferKind::Release => match &t.part {
            Some((root, epoch)) => format!("returned: shard {} epoch {epoch}", short(root)),
            None => format!(
                "returned from contract {}",
                t.contract.as_deref().unwrap_or("")
            ),
        },
        TransferKind::Payout => match &t.part {
            Some((root, epoch)) => format!("paid: shard {} epoch {epoch} (proven)", short(root)),
            None => "paid".to_string(),
        },
        TransferKind::Allow => format!(
            "set aside for repairs of {}",
            short(t.allowance.as_deref().unwrap_or(""))
        ),
        TransferKind::AllowBack => format!(
            "back from the repair allowance of {}",
            short(t.allowance.as_deref().unwrap_or(""))
        ),
    };
    let sign = match t.kind {
        TransferKind::Lock | TransferKind::Release | TransferKind::Allow => "",
        TransferKind::AllowBack => "+",
        _ => sign,
    };
    format!("#{:<8} {sign}{:>16}  {what}", t.seq, btt(t.amount))
}

fn short(root: &str) -> &str {
    &root[..root.len().min(12)]
}

/// `btfs contracts`.
pub async fn contracts(
    wallet: Option<PathBuf>,
    peer: Option<String>,
    network: &Network,
    json: bool,
) -> Result<()> {
    let (escrow, _) = escrow_of(network)?;
    let peer = match peer {
        Some(p) => p,
        None => Wallet::open(wallet.as_deref())?.peer().to_base58(),
    };
    let tenant = Tenant::start(Vec::new()).await?;
    let r = contracts_of(&tenant, &escrow, &peer).await;
    tenant.shutdown().await;
    let list = r?;
    if json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    if list.is_empty() {
        println!("no contracts for {peer}");
    }
    for c in &list {
        let role = if c.tenant == peer { "tenant" } else { "host" };
        println!(
            "{} {:?} as {role}: host {} · {} shards · epochs {}..{} · paid {} · pending {} · returned {}",
            c.id,
            c.state,
            c.host,
            c.shards.len(),
            c.first_epoch,
            c.end_epoch,
            btt(c.paid),
            btt(c.pending),
            btt(c.refunded)
        );
    }
    Ok(())
}

/// `btfs earnings --peer PEER`.
pub async fn earnings(peer: &str, network: &Network, json: bool) -> Result<()> {
    peer.parse::<libp2p::PeerId>()
        .map_err(|e| anyhow::anyhow!("--peer {peer:?} is not a peer id: {e}"))?;
    let (escrow, _) = escrow_of(network)?;
    let tenant = Tenant::start(Vec::new()).await?;
    let r = async {
        let a = account(&tenant, &escrow, peer).await?;
        let all = contracts_of(&tenant, &escrow, peer).await?;
        let payouts: Vec<Transfer> = history(&tenant, &escrow, peer, 1000)
            .await?
            .into_iter()
            .filter(|t| t.kind == TransferKind::Payout && t.credit == peer)
            .collect();
        anyhow::Ok((a, all, payouts))
    }
    .await;
    tenant.shutdown().await;
    let (a, all, payouts) = r?;
    let hosted: Vec<&ContractView> = all.iter().filter(|c| c.host == peer).collect();
    if json {
        let v = serde_json::json!({
            "peer": peer,
            "paid": a.earned,
            "pending": a.incoming,
            "available": a.available,
            "unit": "µBTT",
            "contracts": hosted,
            "payouts": payouts,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!(
        "host {peer}: earned {} · pending {} (locked by tenants, paid per proven epoch) · {} contracts",
        btt(a.earned),
        btt(a.incoming),
        hosted.len()
    );
    for c in hosted {
        println!("  contract {} ({:?}), tenant {}", c.id, c.state, c.tenant);
        for s in &c.shards {
            println!(
                "    shard {}: {} epochs paid, {} returned, {} per epoch",
                short(&s.root),
                s.paid_epochs,
                s.refunded_epochs,
                btt(s.per_epoch)
            );
        }
    }
    for t in payouts.iter().take(10) {
        if let (Some((root, epoch)), Some((guard, seq, line))) = (&t.part, &t.verdict) {
            println!(
                "  paid {} for shard {} epoch {epoch}: verdict line {line} of batch {seq} signed by the Guard {guard}",
                btt(t.amount),
                short(root)
            );
        }
    }
    Ok(())
}

/// `btfs ledger`.
pub async fn ledger(network: &Network, json: bool) -> Result<()> {
    let (escrow, _) = escrow_of(network)?;
    let tenant = Tenant::start(Vec::new()).await?;
    let r = query(tenant.net(), &escrow, &EscrowRequest::Ledger).await;
    tenant.shutdown().await;
    let EscrowResponse::Ledger(t) = r? else {
        bail!("the Escrow answered something other than its totals");
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&t)?);
        return Ok(());
    }
    println!(
        "deposits {} − withdrawals {} = balances {} + locked {}: {}",
        btt(t.deposits),
        btt(t.withdrawals),
        btt(t.balances),
        btt(t.locked),
        if t.conserved {
            "conserved"
        } else {
            "NOT CONSERVED"
        }
    );
    println!(
        "{} accounts, {} contracts, {} paid to hosts",
        t.accounts,
        t.contracts,
        btt(t.paid)
    );
    Ok(())
}

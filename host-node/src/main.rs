//! The `btfs` binary: host node, tenant CLI and local devnet. Parses flags ([`cli::args`]) and
//! dispatches to the `btfs_host` library; output rendering is in [`cli`].

mod cli;

use std::time::Duration;

use anyhow::{bail, Context, Result};
use btfs_core::Link;
use btfs_host::host::Node;
use btfs_host::services;
use btfs_host::tenant::upload::{self, UploadOptions};
use btfs_host::tenant::{download, upload_journal, TransferError};
use btfs_host::tools::devnet::{self, DevnetOptions};
use clap::Parser;

use cli::args::{Cli, Cmd};
use cli::connect::{tenant_for, tenant_for_upload};
use cli::inspect::{hosts, shard, status};
use cli::render::{error_kind, print_json_error, progress_bar};

fn init_tracing(default: &str) {
    // The WebRTC stack logs every ICE/DTLS state change at INFO: keep operators' logs readable.
    let default = format!(
        "{default},webrtc=warn,webrtc_ice=warn,webrtc_dtls=warn,webrtc_sctp=warn,webrtc_mdns=warn"
    );
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Exit status of a command stopped by Ctrl-C or SIGTERM (128 + SIGINT, as shells report it).
const EXIT_INTERRUPTED: u8 = 130;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    btfs_host::install_crypto_provider();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            let usage = !matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion);
            if usage && std::env::args_os().any(|a| a == "--json") {
                let message = e.kind().to_string();
                let detail = e.render().to_string();
                print_json_error("usage", &message, &[detail.trim().to_string()], None);
            }
            e.exit();
        }
    };
    let json = cli.command.json();
    match run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            if json {
                let causes: Vec<String> = e.chain().skip(1).map(|c| c.to_string()).collect();
                let transfer = e.chain().find_map(|c| c.downcast_ref::<TransferError>());
                print_json_error(
                    error_kind(&e),
                    &e.to_string(),
                    &causes,
                    transfer.and_then(TransferError::details),
                );
            }
            std::process::ExitCode::FAILURE
        }
    }
}

/// Why `--resume` found nothing, with what there is to resume.
fn no_journal(
    dir: &std::path::Path,
    source: &str,
    wallet: &btfs_host::tenant::wallet::Wallet,
) -> String {
    let mut msg = format!(
        "no unfinished upload of {source} by wallet {} (journals: {}); upload it without --resume",
        wallet.peer(),
        dir.display()
    );
    let all = upload_journal::list(dir);
    if !all.is_empty() {
        msg.push_str("\nunfinished uploads:");
    }
    for j in all {
        match j {
            Ok((_, j)) => msg.push_str(&format!(
                "\n  {} ({} of {} slabs placed, wallet {})",
                j.source,
                j.placed_slabs(),
                j.layout.slab_count(),
                j.holder
            )),
            Err(e) => msg.push_str(&format!("\n  unreadable: {e}")),
        }
    }
    msg
}

/// On Ctrl-C or SIGTERM: removes the part files of open outputs, reports, exits 130. Runs on a
/// runtime worker, so it acts even while the command is blocked in a write to a full pipe or in
/// opening a FIFO that has no reader yet.
fn exit_on_signal(json: bool) {
    tokio::spawn(async move {
        btfs_host::shutdown_signal().await;
        btfs_host::tenant::output::remove_open_parts();
        let e = TransferError::Interrupted;
        eprintln!("error: {e}");
        if json {
            print_json_error(e.kind(), &e.to_string(), &[], None);
        }
        let _ = std::io::Write::flush(&mut std::io::stdout());
        std::process::exit(i32::from(EXIT_INTERRUPTED));
    });
}

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Cmd::Host(args) => {
            init_tracing("info");
            let config = args.into_config()?;
            let node = Node::spawn(config).await?;
            println!("peer id: {}", node.peer_id());
            for a in node.full_addrs() {
                println!("listening on {a}");
            }
            let services = node.services();
            if services.hub().is_some() {
                println!("hub: serving on the addresses above");
            }
            if let Some(url) = services.status_url() {
                println!("status: {url}");
            }
            btfs_host::shutdown_signal().await;
            tracing::info!("shutting down");
            node.shutdown().await;
        }
        Cmd::Upload {
            file,
            resume,
            net,
            shard_size,
            slabs_in_flight,
            days,
            repair_allowance,
            wallet,
            json,
        } => {
            init_tracing("warn");
            if !(1..=16).contains(&slabs_in_flight) {
                bail!("--slabs-in-flight must be between 1 and 16");
            }
            if days == 0 {
                bail!("--days must be at least 1");
            }
            let wallet = btfs_host::tenant::wallet::Wallet::open(wallet.wallet.as_deref())?;
            let journals = upload_journal::dir_of(wallet.path());
            let journaling = if resume {
                let source = upload::journal_source(&file);
                match upload_journal::find(&journals, &source, wallet.peer()) {
                    Some((path, j)) => upload::Journaling::Resume(path, Box::new(j)),
                    None => bail!("{}", no_journal(&journals, &source, &wallet)),
                }
            } else {
                upload::Journaling::New(journals)
            };
            let shard_size = match &journaling {
                upload::Journaling::Resume(_, j) => j.layout.max_shard_size(),
                _ => shard_size,
            };
            let (tenant, pay) =
                tenant_for_upload(&net.resolve().await?, &file, shard_size, &wallet, days).await?;
            let opts = UploadOptions {
                shard_size,
                slabs_in_flight,
            };
            let repair_allowance = match repair_allowance.as_deref() {
                None => None,
                Some(a) if a.trim().chars().all(|c| c == '0' || c == '.') => Some(0),
                Some(a) => Some(
                    btfs_host::tenant::wallet::parse_btt(a)
                        .with_context(|| format!("--repair-allowance {a}"))?,
                ),
            };
            let pay = pay.map(|(mut plan, prices)| {
                plan.repair_allowance = repair_allowance;
                upload::Payment {
                    wallet: &wallet,
                    plan,
                    prices,
                }
            });
            let report = upload::upload(
                &tenant,
                &file,
                opts,
                pay,
                journaling,
                progress_bar("upload"),
            )
            .await;
            tenant.shutdown().await;
            let report = report.with_context(|| format!("upload of {} failed", file.display()))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!("{}", report.link);
            }
        }
        Cmd::Download {
            link,
            output,
            net,
            json,
        } => {
            init_tracing("warn");
            if json && output.as_os_str() == btfs_host::tenant::output::STDOUT {
                bail!("--json cannot be combined with -o -: stdout carries the object's bytes; write to a file, or drop --json");
            }
            let link = Link::parse(&link)?;
            let tenant = tenant_for(&net.resolve().await?).await?;
            exit_on_signal(json);
            let report =
                download::download(&tenant, &link, &output, progress_bar("download")).await;
            tenant.shutdown().await;
            let report = report.context("download failed")?;
            for c in &report.corrupt_shards {
                eprintln!(
                    "warning: shard {} of slab {} from host {} was corrupt; used another",
                    c.shard, c.slab, c.host
                );
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                eprintln!("wrote {} bytes to {}", report.bytes, output.display());
            }
        }
        Cmd::Audit { link, net, json } => {
            init_tracing("warn");
            let link = Link::parse(&link)?;
            let tenant = tenant_for(&net.resolve().await?).await?;
            exit_on_signal(json);
            let report = btfs_host::tenant::audit::audit(&tenant, &link).await;
            tenant.shutdown().await;
            let report = report.context("audit failed")?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                for s in &report.slabs {
                    println!("slab {}: {} of 30 shards proved", s.slab, s.healthy);
                    for v in s.shards.iter().filter(|v| !v.passed) {
                        let why = v.reason.as_deref().unwrap_or("failed");
                        println!("  shard {} on {}: {why}", v.shard, v.host);
                    }
                }
                let verdict = if report.failed == 0 {
                    "every shard proved it is stored"
                } else if report.recoverable() {
                    "recoverable: every slab has at least 10 proven shards"
                } else {
                    "AT RISK: a slab has fewer than 10 proven shards"
                };
                println!(
                    "{} passed, {} failed in {} ms: {verdict}",
                    report.passed, report.failed, report.elapsed_ms
                );
            }
        }
        Cmd::Health { link, net, json } => {
            init_tracing("warn");
            let link = Link::parse(&link)?;
            guard_health(&net.resolve().await?, &link, json).await?;
        }
        Cmd::Audits {
            host,
            limit,
            net,
            json,
        } => {
            init_tracing("warn");
            let host: libp2p::PeerId = host
                .parse()
                .map_err(|e| anyhow::anyhow!("--host {host:?} is not a peer id: {e}"))?;
            guard_audits(&net.resolve().await?, host, limit, json).await?;
        }
        Cmd::Devnet {
            hosts,
            dir,
            quota,
            probe_interval_ms,
            report_interval_secs,
            free_storage,
            netns,
            host_rate_kbit,
        } => {
            init_tracing("info");
            devnet::run(DevnetOptions {
                hosts,
                dir,
                quota,
                probe_interval: Duration::from_millis(probe_interval_ms),
                report_interval_secs,
                exe: None,
                free_storage,
                netns,
                host_rate_kbit,
            })
            .await?;
        }
        Cmd::Service(args) => {
            init_tracing("info");
            let opts = args.into_options()?;
            let service = services::start(opts).await?;
            let info = service.info();
            println!("peer id: {}", info.peer_id);
            for a in &info.addrs {
                println!("hub listening on {a}");
            }
            println!("status: {}", info.status_http);
            btfs_host::shutdown_signal().await;
            tracing::info!("shutting down");
            service.shutdown().await;
        }
        Cmd::Status { net, json } => {
            init_tracing("warn");
            status(&net.resolve().await?, json).await?;
        }
        Cmd::Bench {
            hosts,
            size,
            rss_size,
            dir,
            rounds,
            json,
            btfs,
        } => {
            init_tracing("warn");
            let size = btfs_host::host::config::parse_size(&size)?;
            let rss_size = btfs_host::host::config::parse_size(&rss_size)?;
            btfs_host::tools::bench::run(btfs_host::tools::bench::BenchOptions {
                hosts,
                size,
                rss_size,
                dir,
                rounds: rounds.max(1),
                json,
                exe: btfs,
            })
            .await?;
        }
        Cmd::Wallet { cmd } => {
            init_tracing("warn");
            cli::money::wallet(cmd).await?;
        }
        Cmd::Contracts {
            wallet,
            peer,
            net,
            json,
        } => {
            init_tracing("warn");
            cli::money::contracts(wallet.wallet, peer, &net.resolve().await?, json).await?;
        }
        Cmd::Earnings { peer, net, json } => {
            init_tracing("warn");
            cli::money::earnings(&peer, &net.resolve().await?, json).await?;
        }
        Cmd::Ledger { net, json } => {
            init_tracing("warn");
            cli::money::ledger(&net.resolve().await?, json).await?;
        }
        Cmd::Shard(cmd) => {
            init_tracing("warn");
            shard(cmd).await?;
        }
        Cmd::Network { net } => {
            init_tracing("warn");
            let n = net.resolve().await?;
            println!("{}", serde_json::to_string_pretty(&n.file)?);
        }
        Cmd::Hosts { net, json, limit } => {
            init_tracing("warn");
            hosts(&net.resolve().await?, json, limit).await?;
        }
    }
    Ok(())
}

/// The network's Guard and a client node to ask it.
async fn guard_of(
    net: &cli::connect::Network,
) -> Result<(btfs_host::tenant::Tenant, btfs_host::services::hub::HubAddr)> {
    let network = net.origin.as_path();
    let guard = btfs_host::tenant::network_file::guard(&net.file, network)?.with_context(|| {
        format!(
            "network file {} names no Guard (services.guard); start one with `btfs service` or `btfs host --services hub,guard`",
            network.display()
        )
    })?;
    let tenant = btfs_host::tenant::Tenant::start(Vec::new()).await?;
    Ok((tenant, guard))
}

async fn guard_health(network: &cli::connect::Network, link: &Link, json: bool) -> Result<()> {
    use btfs_core::guard_wire::{GuardRequest, GuardResponse};
    let (tenant, guard) = guard_of(network).await?;
    let req = GuardRequest::Health {
        manifest_id: link.manifest_id.to_hex(),
    };
    let r = btfs_host::services::guard::client::request(
        tenant.net(),
        guard.peer,
        guard.addrs.clone(),
        &req,
    )
    .await;
    tenant.shutdown().await;
    let GuardResponse::Health(h) = r.context("cannot get the object's health")? else {
        bail!("the Guard answered something other than health");
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&h)?);
        return Ok(());
    }
    println!(
        "object {}: epoch {}, repair at <= {} healthy of 30, {} shards repaired so far",
        h.manifest_id, h.epoch, h.repair_threshold, h.repaired_shards
    );
    if let Some(e) = &h.last_repair_error {
        println!("last repair failed (retried later): {e}");
    }
    for s in &h.slabs {
        println!("slab {}: {} of 30 shards healthy", s.slab, s.healthy);
        for x in s.shards.iter().filter(|x| x.passed == Some(false)) {
            println!(
                "  shard {} on {}: failed {} audit(s) in a row",
                x.shard, x.host, x.fails
            );
        }
    }
    Ok(())
}

async fn guard_audits(
    network: &cli::connect::Network,
    host: libp2p::PeerId,
    limit: u32,
    json: bool,
) -> Result<()> {
    let (tenant, guard) = guard_of(network).await?;
    let r = btfs_host::services::guard::client::audits(
        tenant.net(),
        guard.peer,
        guard.addrs.clone(),
        host,
        limit,
    )
    .await;
    tenant.shutdown().await;
    let verdicts = r.context("cannot get the host's audits")?;
    if json {
        let rows: Vec<serde_json::Value> = verdicts
            .iter()
            .map(|(v, signed)| {
                let mut row = serde_json::to_value(v).unwrap_or_default();
                row["signed"] = serde_json::to_value(signed).unwrap_or_default();
                row
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    let failed = verdicts.iter().filter(|(v, _)| !v.passed).count();
    println!(
        "host {host}: {} verdicts signed by the Guard {}, {failed} failed",
        verdicts.len(),
        guard.peer
    );
    for (v, _) in &verdicts {
        let mark = if v.passed { "passed" } else { "FAILED" };
        let why = v.reason.as_deref().unwrap_or("");
        println!(
            "  epoch {} slab {} shard {} root {}: {mark} {why}",
            v.epoch, v.slab, v.shard, v.root
        );
    }
    Ok(())
}

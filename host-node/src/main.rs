//! The `btfs` binary: host node, tenant CLI and local devnet. Flag parsing only; the work is in
//! the `btfs_host` library.

use std::io::IsTerminal;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use btfs_core::{Link, Root};
use btfs_host::config::{HostConfig, Transport};
use btfs_host::devnet::{self, DevnetOptions};
use btfs_host::network_file::NetworkFile;
use btfs_host::node::Node;
use btfs_host::service::{self, ServiceOptions};
use btfs_host::tenant::{Tenant, TransferError};
use btfs_host::upload::UploadOptions;
use btfs_host::{download, hub, shard_client, upload};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use libp2p::multiaddr::Protocol;
use libp2p::Multiaddr;

#[derive(Parser)]
#[command(
    name = "btfs",
    version,
    about = "BTFS-rs: decentralized storage — host, tenant CLI and local network"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a host node that rents out disk space.
    Host(HostArgs),
    /// Encrypt, erasure-code and store a file on 30 hosts; prints its capability link.
    Upload {
        /// File to upload.
        file: PathBuf,
        #[command(flatten)]
        net: NetworkArg,
        /// Largest shard size in bytes (multiple of 64, at most 4194304).
        #[arg(long, default_value_t = btfs_core::layout::DEFAULT_SHARD_SIZE)]
        shard_size: u32,
        /// Slabs uploading at once (memory: about 30 MiB per slab at the default shard size).
        #[arg(long, default_value_t = UploadOptions::default().slabs_in_flight)]
        slabs_in_flight: usize,
        /// Print a JSON report instead of just the link.
        #[arg(long)]
        json: bool,
    },
    /// Fetch, verify and decrypt an object from its link.
    ///
    /// A regular file OUTPUT is replaced only when every block authenticated. A special file
    /// (device, FIFO, terminal) and stdout (`-o -`) receive authenticated blocks as they are
    /// decoded: if the download fails midway they hold a truncated prefix (never wrong bytes)
    /// and the exit status is non-zero.
    Download {
        /// The btfs:// link printed by upload.
        link: String,
        /// Output file, or `-` for stdout.
        #[arg(short, long)]
        output: PathBuf,
        #[command(flatten)]
        net: NetworkArg,
        /// Print a JSON report on stdout (a JSON error object on failure). Not with `-o -`.
        #[arg(long)]
        json: bool,
    },
    /// Start a local network of host processes and write its network.json.
    Devnet {
        /// Number of hosts.
        #[arg(long, default_value_t = 30)]
        hosts: usize,
        /// Directory for network.json and host data.
        #[arg(long, default_value = "btfs-devnet")]
        dir: PathBuf,
        /// Storage quota per host.
        #[arg(long, default_value = "2GiB")]
        quota: String,
        /// How often the Hub probes every host, in milliseconds (a dead host leaves
        /// recommendations within two intervals).
        #[arg(long, default_value_t = 2000)]
        probe_interval_ms: u64,
        /// How often hosts re-announce to the Hub and report to Status, in seconds.
        #[arg(long, default_value_t = 10)]
        report_interval_secs: u64,
    },
    /// Run the network's service node: the Hub (libp2p) and the Status server (HTTP).
    Service(ServiceArgs),
    /// Network health at a glance, from the Status server.
    Status {
        #[command(flatten)]
        net: NetworkArg,
        /// Print the Status server's JSON instead of a summary.
        #[arg(long)]
        json: bool,
    },
    /// Measure end-to-end upload/download speed on a fresh local devnet, beside disk and
    /// single-stream capacity, and the tenant's peak memory.
    Bench {
        /// Hosts in the devnet.
        #[arg(long, default_value_t = 30)]
        hosts: usize,
        /// File size for the throughput run.
        #[arg(long, default_value = "256MiB")]
        size: String,
        /// File size for the peak-memory run ("0" to skip).
        #[arg(long, default_value = "1GiB")]
        rss_size: String,
        /// Scratch directory.
        #[arg(long, default_value = "btfs-bench")]
        dir: PathBuf,
        /// Repetitions of each measurement (medians are reported).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Print a JSON report (every median, CPU per GiB) on stdout; the table goes to stderr.
        #[arg(long)]
        json: bool,
        /// The `btfs` executable for the devnet and the upload/download processes (default:
        /// this one), to measure another build with the same bench side by side.
        #[arg(long)]
        btfs: Option<PathBuf>,
    },
    /// List the Hub's hosts with their scores and score breakdowns.
    Hosts {
        #[command(flatten)]
        net: NetworkArg,
        /// Print a JSON array instead of a table.
        #[arg(long)]
        json: bool,
        /// At most this many hosts (best first).
        #[arg(long, default_value_t = 1000)]
        limit: u32,
    },
    /// Low-level shard requests to one host (operators, debugging).
    #[command(subcommand)]
    Shard(ShardCmd),
}

#[derive(Args)]
struct NetworkArg {
    /// Network file (written by `btfs devnet`).
    #[arg(long, env = "BTFS_NETWORK", default_value = "btfs-devnet/network.json")]
    network: PathBuf,
}

#[derive(Subcommand)]
enum ShardCmd {
    /// Store FILE's bytes under ROOT (the host refuses bytes that do not hash to ROOT).
    Put {
        /// Host multiaddr ending in /p2p/<peer id>.
        #[arg(long)]
        host: Multiaddr,
        /// Declared BLAKE3 root (defaults to the file's real root).
        #[arg(long)]
        root: Option<Root>,
        /// File with the bytes.
        file: PathBuf,
    },
    /// Fetch the blob ROOT into OUTPUT (verified against ROOT).
    Get {
        /// Host multiaddr ending in /p2p/<peer id>.
        #[arg(long)]
        host: Multiaddr,
        /// BLAKE3 root.
        root: Root,
        /// Output file, or `-` for stdout.
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Print the size of blob ROOT on the host.
    Stat {
        /// Host multiaddr ending in /p2p/<peer id>.
        #[arg(long)]
        host: Multiaddr,
        /// BLAKE3 root.
        root: Root,
    },
}

#[derive(Args)]
struct ServiceArgs {
    /// Data directory (identity, hub.redb, status.redb, service.json).
    #[arg(long, env = "BTFS_DATA_DIR", default_value = "btfs-service")]
    data_dir: PathBuf,
    /// IP address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    listen_ip: IpAddr,
    /// Status HTTP port (0 = any free port, reused on restart).
    #[arg(long, default_value_t = 0)]
    status_port: u16,
    /// How often the Hub probes every registered host, in milliseconds.
    #[arg(long, default_value_t = 30_000)]
    probe_interval_ms: u64,
    /// How often hosts are expected to announce and report, in seconds.
    #[arg(long, default_value_t = 300)]
    report_interval_secs: u64,
    /// Most hosts the Hub and Status keep.
    #[arg(long, default_value_t = 1_000_000)]
    max_hosts: usize,
    /// New hosts one IP address (IPv6: /64) may register at the Hub, and introduce to Status,
    /// per 10 minutes.
    #[arg(long, default_value_t = 64)]
    new_hosts_per_ip: u32,
    /// Status forgets a host that has not reported for this many seconds.
    #[arg(long, default_value_t = 7 * 86_400)]
    forget_after_secs: u64,
    /// Status HTTP connections one IP address (IPv6: /64) may hold at once.
    #[arg(long, default_value_t = 16)]
    http_connections_per_ip: usize,
    /// libp2p connections at most, inbound and outbound (default: 1.25 × --max-hosts, at
    /// least 1024, at most 65536).
    #[arg(long)]
    max_connections: Option<u32>,
    /// libp2p connections one peer may hold at once.
    #[arg(long, default_value_t = 8)]
    max_connections_per_peer: u32,
    /// Inbound libp2p connections one IP address (IPv6: /64) may hold at once, whatever peer
    /// ids they use.
    #[arg(long, default_value_t = 256)]
    max_connections_per_ip: u32,
}

#[derive(Args)]
struct HostArgs {
    /// TOML config file (flags and BTFS_* environment variables override it).
    #[arg(long, env = "BTFS_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory (identity, certificate, blobs).
    #[arg(long, env = "BTFS_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// IP address to listen on.
    #[arg(long, env = "BTFS_LISTEN_IP")]
    listen_ip: Option<IpAddr>,
    /// Transports, comma separated: tcp,quic,ws,webrtc.
    #[arg(long, env = "BTFS_TRANSPORTS", value_delimiter = ',', value_parser = parse_transport)]
    transports: Option<Vec<Transport>>,
    /// TCP port (0 = any, kept across restarts).
    #[arg(long, env = "BTFS_TCP_PORT")]
    tcp_port: Option<u16>,
    /// QUIC port.
    #[arg(long, env = "BTFS_QUIC_PORT")]
    quic_port: Option<u16>,
    /// WebSocket port.
    #[arg(long, env = "BTFS_WS_PORT")]
    ws_port: Option<u16>,
    /// WebRTC-direct port.
    #[arg(long, env = "BTFS_WEBRTC_PORT")]
    webrtc_port: Option<u16>,
    /// Storage quota, e.g. 100GiB.
    #[arg(long, env = "BTFS_QUOTA")]
    quota: Option<String>,
    /// Shard requests served at once.
    #[arg(long, env = "BTFS_MAX_INBOUND_STREAMS")]
    max_inbound_streams: Option<usize>,
    /// Hub to announce to (multiaddr ending in /p2p/<peer id>).
    #[arg(long, env = "BTFS_HUB")]
    hub: Option<String>,
    /// Asking price per GiB-month.
    #[arg(long, env = "BTFS_PRICE")]
    price_per_gib_month: Option<u64>,
    /// Region to declare (e.g. eu-west).
    #[arg(long, env = "BTFS_REGION")]
    region: Option<String>,
    /// Re-announce to the Hub at least this often, in seconds.
    #[arg(long, env = "BTFS_ANNOUNCE_INTERVAL_SECS")]
    announce_interval_secs: Option<u64>,
    /// Status server to push signed reports to (e.g. http://127.0.0.1:4004).
    #[arg(long, env = "BTFS_STATUS_URL")]
    status_url: Option<String>,
    /// Seconds between two status reports.
    #[arg(long, env = "BTFS_REPORT_INTERVAL_SECS")]
    report_interval_secs: Option<u64>,
    /// Port of this node's Prometheus /metrics (0 = any free port, reused on restart).
    #[arg(long, env = "BTFS_METRICS_PORT")]
    metrics_port: Option<u16>,
    /// Do not serve /metrics.
    #[arg(long)]
    no_metrics: bool,
}

fn parse_transport(s: &str) -> Result<Transport, String> {
    match s.trim() {
        "tcp" => Ok(Transport::Tcp),
        "quic" => Ok(Transport::Quic),
        "ws" | "websocket" => Ok(Transport::Ws),
        "webrtc" | "webrtc-direct" => Ok(Transport::Webrtc),
        other => Err(format!(
            "unknown transport {other:?}: use tcp, quic, ws or webrtc"
        )),
    }
}

impl ServiceArgs {
    fn into_options(self) -> Result<ServiceOptions> {
        if !(100..=3_600_000).contains(&self.probe_interval_ms) {
            bail!("--probe-interval-ms must be between 100 and 3600000");
        }
        if !(1..=86_400).contains(&self.report_interval_secs) {
            bail!("--report-interval-secs must be between 1 and 86400");
        }
        if self.max_hosts == 0 || self.max_hosts > 10_000_000 {
            bail!("--max-hosts must be between 1 and 10000000");
        }
        if !(1..=315_360_000).contains(&self.forget_after_secs) {
            bail!("--forget-after-secs must be between 1 and 315360000 (ten years)");
        }
        if self.http_connections_per_ip == 0 || self.max_connections_per_peer == 0 {
            bail!("--http-connections-per-ip and --max-connections-per-peer must be at least 1");
        }
        let report = Duration::from_secs(self.report_interval_secs);
        let mut status = service::status_options(report, self.max_hosts);
        status.new_peers_per_source = self.new_hosts_per_ip;
        status.forget_after = Duration::from_secs(self.forget_after_secs);
        status.http.max_connections_per_ip = self.http_connections_per_ip;
        let mut connections = btfs_host::net::ConnLimits::for_service(self.max_hosts);
        if let Some(n) = self.max_connections {
            connections.max_established = n;
            connections.max_established_incoming = n;
            connections.max_established_outgoing = n;
        }
        connections.max_established_per_peer = self.max_connections_per_peer;
        connections.max_incoming_per_ip = self.max_connections_per_ip;
        connections.validate().map_err(anyhow::Error::msg)?;
        Ok(ServiceOptions {
            data_dir: self.data_dir,
            listen_ip: self.listen_ip,
            transports: vec![
                Transport::Tcp,
                Transport::Quic,
                Transport::Ws,
                Transport::Webrtc,
            ],
            hub: hub::service::HubOptions {
                probe_interval: Duration::from_millis(self.probe_interval_ms),
                announce_interval: report,
                max_hosts: self.max_hosts,
                new_hosts_per_ip: self.new_hosts_per_ip,
                ..Default::default()
            },
            status,
            status_port: self.status_port,
            connections,
        })
    }
}

impl HostArgs {
    fn into_config(self) -> Result<HostConfig> {
        let mut c = match &self.config {
            Some(p) => HostConfig::from_file(p)?,
            None => HostConfig::default(),
        };
        macro_rules! set {
            ($($f:ident),*) => { $( if let Some(v) = self.$f { c.$f = v; } )* };
        }
        set!(
            data_dir,
            listen_ip,
            transports,
            tcp_port,
            quic_port,
            ws_port,
            webrtc_port,
            quota,
            max_inbound_streams,
            price_per_gib_month,
            announce_interval_secs,
            report_interval_secs,
            metrics_port
        );
        if self.status_url.is_some() {
            c.status_url = self.status_url;
        }
        if self.no_metrics {
            c.metrics = false;
        }
        if self.hub.is_some() {
            c.hub = self.hub;
        }
        if self.region.is_some() {
            c.region = self.region;
        }
        c.validate()?;
        Ok(c)
    }
}

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

fn progress_bar(label: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_message(label.to_string());
    bar
}

/// A tenant for downloads: the network file's hosts plus, with a Hub, every host it lists.
async fn tenant_for(network: &Path) -> Result<Tenant> {
    let file = NetworkFile::load(network)?;
    let mut hosts = file.known_hosts(network)?;
    let hub = file.hub(network)?;
    if hosts.is_empty() && hub.is_none() {
        bail!(
            "network file {} lists no hosts and no Hub",
            network.display()
        );
    }
    let mut tenant = Tenant::start(hosts.clone()).await?;
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
async fn tenant_for_upload(network: &Path, file: &Path, shard_size: u32) -> Result<Tenant> {
    let nf = NetworkFile::load(network)?;
    let Some(hub) = nf.hub(network)? else {
        return tenant_for(network).await;
    };
    let len = std::fs::metadata(file)
        .map_err(|source| TransferError::Input {
            path: file.display().to_string(),
            source,
        })?
        .len();
    let layout = btfs_core::Layout::new(len, shard_size)?;
    let shard = layout
        .slabs()
        .map(|s| u64::from(s.shard_size))
        .max()
        .unwrap_or(64);
    // 30 shards per slab plus the manifest's 30 copies, spread over `want` hosts.
    let want = UPLOAD_HOSTS;
    let shards = (layout.slab_count() + 1) * btfs_core::TOTAL_SHARDS as u64;
    let req = btfs_core::hub::RecommendRequest {
        count: want,
        shard_size: shard,
        shards_per_host: shards.div_ceil(u64::from(want)),
        duration_days: 30,
        prefs: Default::default(),
    };
    let mut tenant = Tenant::start(Vec::new()).await?;
    let (hosts, _) = hub::client::recommend(tenant.net(), &hub, req, btfs_core::TOTAL_SHARDS)
        .await
        .context("cannot choose hosts")?;
    tenant.set_hosts(hosts);
    Ok(tenant)
}

/// Hosts asked of the Hub per upload: 30 per slab plus spares for hosts that fail.
const UPLOAD_HOSTS: u32 = 45;

/// A single host from a `/p2p/`-terminated multiaddr.
async fn tenant_for_addr(addr: &Multiaddr) -> Result<Tenant> {
    let Some(Protocol::P2p(peer)) = addr.iter().last() else {
        bail!("host address {addr} must end in /p2p/<peer id>");
    };
    let host = btfs_host::network_file::KnownHost {
        peer,
        addrs: vec![addr.clone()],
    };
    let t = Tenant::start(vec![host]).await?;
    t.connect(0).await?;
    Ok(t)
}

impl Cmd {
    /// Whether the command was asked for JSON output (errors are then JSON on stdout too).
    fn json(&self) -> bool {
        match self {
            Cmd::Upload { json, .. }
            | Cmd::Download { json, .. }
            | Cmd::Status { json, .. }
            | Cmd::Hosts { json, .. } => *json,
            _ => false,
        }
    }
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

/// On Ctrl-C or SIGTERM: removes the part files of open outputs, reports, exits 130. Runs on a
/// runtime worker, so it acts even while the command is blocked in a write to a full pipe or in
/// opening a FIFO that has no reader yet.
fn exit_on_signal(json: bool) {
    tokio::spawn(async move {
        btfs_host::shutdown_signal().await;
        btfs_host::output::remove_open_parts();
        let e = TransferError::Interrupted;
        eprintln!("error: {e}");
        if json {
            print_json_error(e.kind(), &e.to_string(), &[], None);
        }
        let _ = std::io::Write::flush(&mut std::io::stdout());
        std::process::exit(i32::from(EXIT_INTERRUPTED));
    });
}

/// `{"error": {"kind", "message", "causes", "details"?}}` on stdout: `message` is the outermost
/// error, `causes` the chain below it, each once.
fn print_json_error(
    kind: &str,
    message: &str,
    causes: &[String],
    details: Option<serde_json::Value>,
) {
    let mut error = serde_json::json!({
        "kind": kind,
        "message": message,
        "causes": causes,
    });
    if let Some(d) = details {
        error["details"] = d;
    }
    let doc = serde_json::json!({ "error": error });
    println!(
        "{}",
        serde_json::to_string_pretty(&doc).unwrap_or_else(|_| doc.to_string())
    );
}

/// A machine-readable name for the error: the first typed error in the chain that has one.
fn error_kind(e: &anyhow::Error) -> &'static str {
    for c in e.chain() {
        if let Some(t) = c.downcast_ref::<TransferError>() {
            return t.kind();
        }
        if c.is::<btfs_host::network_file::NetworkFileError>() {
            return "network_file";
        }
        if c.is::<btfs_core::link::LinkError>() {
            return "bad_link";
        }
        if c.is::<btfs_host::hub::client::HubClientError>() {
            return "hub";
        }
        if c.is::<btfs_host::status::StatusError>() {
            return "status";
        }
        if c.is::<shard_client::ShardError>() {
            return "shard";
        }
        if c.is::<btfs_host::output::OutputError>() {
            return "output";
        }
    }
    "error"
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
            btfs_host::shutdown_signal().await;
            tracing::info!("shutting down");
            node.shutdown().await;
        }
        Cmd::Upload {
            file,
            net,
            shard_size,
            slabs_in_flight,
            json,
        } => {
            init_tracing("warn");
            if !(1..=16).contains(&slabs_in_flight) {
                bail!("--slabs-in-flight must be between 1 and 16");
            }
            let tenant = tenant_for_upload(&net.network, &file, shard_size).await?;
            let opts = UploadOptions {
                shard_size,
                slabs_in_flight,
            };
            let report = upload::upload(&tenant, &file, opts, progress_bar("upload")).await;
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
            if json && output.as_os_str() == btfs_host::output::STDOUT {
                bail!("--json cannot be combined with -o -: stdout carries the object's bytes; write to a file, or drop --json");
            }
            let link = Link::parse(&link)?;
            let tenant = tenant_for(&net.network).await?;
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
        Cmd::Devnet {
            hosts,
            dir,
            quota,
            probe_interval_ms,
            report_interval_secs,
        } => {
            init_tracing("info");
            devnet::run(DevnetOptions {
                hosts,
                dir,
                quota,
                probe_interval: Duration::from_millis(probe_interval_ms),
                report_interval_secs,
                exe: None,
            })
            .await?;
        }
        Cmd::Service(args) => {
            init_tracing("info");
            let opts = args.into_options()?;
            let service = service::start(opts).await?;
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
            status(&net.network, json).await?;
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
            let size = btfs_host::config::parse_size(&size)?;
            let rss_size = btfs_host::config::parse_size(&rss_size)?;
            btfs_host::bench::run(btfs_host::bench::BenchOptions {
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
        Cmd::Shard(cmd) => {
            init_tracing("warn");
            shard(cmd).await?;
        }
        Cmd::Hosts { net, json, limit } => {
            init_tracing("warn");
            hosts(&net.network, json, limit).await?;
        }
    }
    Ok(())
}

async fn shard(cmd: ShardCmd) -> Result<()> {
    match cmd {
        ShardCmd::Put { host, root, file } => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let root = root.unwrap_or_else(|| Root::of(&bytes));
            let t = tenant_for_addr(&host).await?;
            let peer = t.hosts()[0].peer;
            let r = shard_client::put(&mut t.net().control(), peer, root, &bytes).await;
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
            let mut out = btfs_host::output::Output::open(&output)?;
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

async fn hosts(network: &Path, json: bool, limit: u32) -> Result<()> {
    let nf = NetworkFile::load(network)?;
    let Some(hub) = nf.hub(network)? else {
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
async fn status(network: &Path, json: bool) -> Result<()> {
    let nf = NetworkFile::load(network)?;
    let Some(url) = nf.status_http(network)? else {
        bail!(
            "network file {} names no Status server (services.status.http); start a network with `btfs devnet`",
            network.display()
        );
    };
    let s = btfs_host::status::fetch(&url)
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

fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1} {}", UNITS[u])
}

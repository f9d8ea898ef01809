//! The `btfs` command line: clap definitions, and their checks and conversion into library
//! options ([`HostConfig`], [`ServiceNodeOptions`]). Nothing here does I/O beyond reading a
//! host's config file.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Result};
use btfs_core::guard::GuardConfig;
use btfs_core::Root;
use btfs_host::host::config::{HostConfig, Transport};
use btfs_host::services::guard::GuardOptions;
use btfs_host::services::hub;
use btfs_host::services::{self, ServiceKind, ServiceNodeOptions};
use btfs_host::tenant::upload::UploadOptions;
use clap::{Args, Parser, Subcommand};
use libp2p::Multiaddr;

#[derive(Parser)]
#[command(
    name = "btfs",
    version,
    about = "BTFS-rs: decentralized storage — host, tenant CLI and local network"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Cmd,
}

#[derive(Subcommand)]
pub enum Cmd {
    /// Run a host node that rents out disk space.
    Host(Box<HostArgs>),
    /// Encrypt, erasure-code and store a file on 30 hosts; prints its capability link.
    ///
    /// The upload keeps a journal beside the wallet key (`<wallet>.uploads/`), one line per
    /// placed slab: if it stops (Ctrl-C, a crash, a lost network), `--resume` finishes it
    /// without sending the placed slabs again.
    Upload {
        /// File to upload.
        file: PathBuf,
        /// Finish this file's unfinished upload (same wallet, same file: the placed slabs are
        /// checked on their hosts and re-encoded to prove the file did not change).
        #[arg(long)]
        resume: bool,
        #[command(flatten)]
        net: NetworkArg,
        /// Largest shard size in bytes (multiple of 64, at most 4194304).
        #[arg(long, default_value_t = btfs_core::layout::DEFAULT_SHARD_SIZE)]
        shard_size: u32,
        /// Slabs uploading at once (memory: about 30 MiB per slab at the default shard size).
        #[arg(long, default_value_t = UploadOptions::default().slabs_in_flight)]
        slabs_in_flight: usize,
        /// Days of storage to pay for (contracts cover the Guard's epochs in that time).
        #[arg(long, default_value_t = btfs_core::hub::UPLOAD_DAYS)]
        days: u32,
        /// BTT set aside for repairs of this file (default: a third of its contracts' cost,
        /// enough to re-place 10 of every 30 shards for the whole term; 0 for none).
        #[arg(long)]
        repair_allowance: Option<String>,
        #[command(flatten)]
        wallet: WalletArg,
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
    /// Challenge every shard of an object on its host and check each proof yourself.
    ///
    /// Each host must answer with the challenged 1 KiB chunks of its shard and their Merkle
    /// path to the shard's root (the name in the manifest); the nonce is fresh, so only a host
    /// that holds the bytes can answer. Prints per slab how many of the 30 shards proved.
    Audit {
        /// The btfs:// link printed by upload.
        link: String,
        #[command(flatten)]
        net: NetworkArg,
        /// Print the per-shard verdicts as JSON.
        #[arg(long)]
        json: bool,
    },
    /// An object's health as the network's Guard knows it: per slab, healthy shards of 30,
    /// each shard's holder (after a repair, the new one) and its last audit.
    Health {
        /// The btfs:// link printed by upload.
        link: String,
        #[command(flatten)]
        net: NetworkArg,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// A host's audit history at the network's Guard, each verdict signed by the Guard.
    Audits {
        /// The host's peer id.
        #[arg(long)]
        host: String,
        /// At most this many verdicts, newest first.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[command(flatten)]
        net: NetworkArg,
        /// Print JSON (an array of verdicts).
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
        /// Hosts store for free: no Escrow in their configs or in network.json, so uploads
        /// make no contracts (a baseline to measure what contracts cost).
        #[arg(long)]
        free_storage: bool,
        /// Run every node in its own Linux network namespace, with its own address in
        /// 198.18.0.0/15 on a virtual bridge (needs root); this machine reaches them as
        /// 198.18.0.1.
        #[arg(long)]
        netns: bool,
        /// With --netns: shape every host's link to this many kbit/s each way (tc tbf).
        #[arg(long, requires = "netns")]
        host_rate_kbit: Option<u64>,
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
    /// The network's services as JSON, in the network file's format: with --bootstrap, what
    /// the bootstrap nodes say (save it to use as --network later).
    Network {
        #[command(flatten)]
        net: NetworkArg,
    },
    /// Low-level shard requests to one host (operators, debugging).
    #[command(subcommand)]
    Shard(ShardCmd),
    /// Your wallet at the network's Escrow: balance, deposits, withdrawals, history.
    Wallet {
        #[command(subcommand)]
        cmd: WalletCmd,
    },
    /// Your storage contracts (as tenant or host) at the network's Escrow.
    Contracts {
        #[command(flatten)]
        wallet: WalletArg,
        /// Another peer's contracts instead of your wallet's (the ledger is public).
        #[arg(long)]
        peer: Option<String>,
        #[command(flatten)]
        net: NetworkArg,
        /// Print a JSON array.
        #[arg(long)]
        json: bool,
    },
    /// What a host earned: every contract, every epoch paid or returned, and the Guard's verdict
    /// behind each payout (the ledger is public).
    Earnings {
        /// The host's peer id.
        #[arg(long)]
        peer: String,
        #[command(flatten)]
        net: NetworkArg,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// The Escrow's totals and its invariant: balances + locked = deposits − withdrawals.
    Ledger {
        #[command(flatten)]
        net: NetworkArg,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
pub struct WalletArg {
    /// Wallet key file (default: $XDG_CONFIG_HOME/btfs/wallet.key or ~/.config/btfs/wallet.key;
    /// created on first use).
    #[arg(long, env = "BTFS_WALLET")]
    pub wallet: Option<PathBuf>,
}

/// Where the wallet is and which network's Escrow it uses.
#[derive(Args)]
pub struct WalletOpts {
    #[command(flatten)]
    pub wallet: WalletArg,
    #[command(flatten)]
    pub net: NetworkArg,
}

#[derive(Subcommand)]
pub enum WalletCmd {
    /// Available, locked and incoming amounts.
    Balance {
        #[command(flatten)]
        opts: WalletOpts,
        /// Print JSON (`balance`, `locked`, `incoming`, ... in µBTT).
        #[arg(long)]
        json: bool,
    },
    /// Pay into the wallet (on a devnet: from the faucet).
    Deposit {
        #[command(flatten)]
        opts: WalletOpts,
        /// Amount in BTT (e.g. 10 or 0.5).
        amount: String,
        /// Print the receipt as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Pay out of the wallet to the settlement layer.
    Withdraw {
        #[command(flatten)]
        opts: WalletOpts,
        /// Amount in BTT.
        amount: String,
        /// Print the receipt as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Set money aside for the repairs of one of your files (an upload sets a third of its
    /// contracts' cost aside by itself): only the network's Guard spends it, on contracts for
    /// new hosts when shards are lost; what is left comes back when it ends.
    Allow {
        #[command(flatten)]
        opts: WalletOpts,
        /// The object's manifest id (64 hex digits; `btfs upload --json` prints it).
        manifest_id: String,
        /// Amount in BTT.
        amount: String,
        /// Days it lasts (from now).
        #[arg(long, default_value_t = btfs_core::hub::UPLOAD_DAYS)]
        days: u32,
        /// Print the receipt as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The newest transfers in and out of the wallet.
    History {
        #[command(flatten)]
        opts: WalletOpts,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
pub struct NetworkArg {
    /// Network file (written by `btfs devnet`).
    #[arg(long, env = "BTFS_NETWORK", default_value = "btfs-devnet/network.json")]
    pub network: PathBuf,
    /// Join the network through this node instead of a network file: a multiaddr ending in
    /// /p2p/<peer id> (repeatable, or comma-separated in BTFS_BOOTSTRAP). The services come
    /// from what the bootstrap nodes say.
    #[arg(long, env = "BTFS_BOOTSTRAP", value_delimiter = ',')]
    pub bootstrap: Vec<String>,
}

#[derive(Subcommand)]
pub enum ShardCmd {
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
        /// With an Escrow in this network file (when it exists), the put is paid for first: one
        /// storage offer for the blob, reserved from the wallet and shown to the host.
        #[command(flatten)]
        net: NetworkArg,
        #[command(flatten)]
        wallet: WalletArg,
        /// Days of storage the offer covers.
        #[arg(long, default_value_t = btfs_core::hub::UPLOAD_DAYS)]
        days: u32,
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
pub struct ServiceArgs {
    /// Data directory (identity, hub.redb, status.redb, service.json).
    #[arg(long, env = "BTFS_DATA_DIR", default_value = "btfs-service")]
    data_dir: PathBuf,
    /// IP address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    listen_ip: IpAddr,
    /// Join the DHT of the network through this node (multiaddr ending in /p2p/<peer id>;
    /// repeatable or comma-separated).
    #[arg(long, env = "BTFS_BOOTSTRAP", value_delimiter = ',')]
    bootstrap: Vec<String>,
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
    /// The Hub forgets a host that has not announced for this many seconds.
    #[arg(long, default_value_t = 86_400)]
    hub_forget_after_secs: u64,
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
    /// Guard: length of an epoch (every watched shard is challenged once per epoch), in ms.
    #[arg(long, default_value_t = 3_600_000)]
    guard_epoch_ms: u64,
    /// Guard: a challenge answered later than this fails, in ms.
    #[arg(long, default_value_t = 10_000)]
    guard_deadline_ms: u64,
    /// Guard: unanswered audits in a row (host unreachable, silent or busy) before its shard
    /// counts lost and is repaired; a wrong or missing proof counts at once.
    #[arg(long, default_value_t = 2)]
    guard_offline_grace: u32,
    /// Guard: repair a slab when at most this many of its 30 shards are healthy (10-29).
    #[arg(long, default_value_t = btfs_core::guard::DEFAULT_REPAIR_THRESHOLD)]
    guard_repair_threshold: usize,
    /// Escrow: run a faucet that credits up to this many µBTT per deposit (test networks
    /// only; without it deposits come from the settlement layer).
    #[arg(long)]
    escrow_faucet_max: Option<u64>,
    /// Escrow: epochs after an epoch ends before its unpaid parts go back to the tenant.
    #[arg(long, default_value_t = 3)]
    escrow_grace_epochs: u64,
}

#[derive(Args)]
pub struct HostArgs {
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
    /// Join the network through this node (multiaddr ending in /p2p/<peer id>; repeatable or
    /// comma-separated). Without --hub, the Hub, Escrow and Status come from what it says.
    #[arg(long, env = "BTFS_BOOTSTRAP", value_delimiter = ',')]
    bootstrap: Vec<String>,
    /// The network's Escrow (multiaddr ending in /p2p/<peer id>): /metrics then shows what this
    /// host earned and has pending there.
    #[arg(long, env = "BTFS_ESCROW")]
    escrow: Option<String>,
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
    /// Network services to run on this host, next to its storage and on its own swarm, comma
    /// separated: hub,status (status needs hub).
    #[arg(long, env = "BTFS_SERVICES", value_delimiter = ',', value_parser = parse_service)]
    services: Option<Vec<ServiceKind>>,
    /// HTTP port of the Status service (0 = any free port, reused on restart).
    #[arg(long, env = "BTFS_STATUS_PORT")]
    status_port: Option<u16>,
    /// How often the Hub service probes every registered host, in milliseconds.
    #[arg(long, env = "BTFS_PROBE_INTERVAL_MS")]
    probe_interval_ms: Option<u64>,
}

fn parse_service(s: &str) -> Result<ServiceKind, String> {
    ServiceKind::parse(s).map_err(|e| e.to_string())
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
    pub fn into_options(self) -> Result<ServiceNodeOptions> {
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
        if !(60..=315_360_000).contains(&self.hub_forget_after_secs) {
            bail!("--hub-forget-after-secs must be between 60 and 315360000 (ten years)");
        }
        if self.hub_forget_after_secs < 2 * self.report_interval_secs {
            bail!(
                "--hub-forget-after-secs must be at least twice --report-interval-secs (hosts \
                 announce that often), or the Hub forgets hosts that are still announcing"
            );
        }
        if self.http_connections_per_ip == 0 || self.max_connections_per_peer == 0 {
            bail!("--http-connections-per-ip and --max-connections-per-peer must be at least 1");
        }
        let report = Duration::from_secs(self.report_interval_secs);
        let mut status = services::status_options(report, self.max_hosts);
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
        btfs_host::net::discovery::parse_bootstrap(&self.bootstrap)?;
        Ok(ServiceNodeOptions {
            bootstrap: self.bootstrap,
            data_dir: self.data_dir,
            listen_ip: self.listen_ip,
            transports: vec![
                Transport::Tcp,
                Transport::Quic,
                Transport::Ws,
                Transport::Webrtc,
            ],
            hub: hub::server::HubOptions {
                probe_interval: Duration::from_millis(self.probe_interval_ms),
                announce_interval: report,
                max_hosts: self.max_hosts,
                new_hosts_per_ip: self.new_hosts_per_ip,
                forget_after: Duration::from_secs(self.hub_forget_after_secs),
                ..Default::default()
            },
            status,
            status_port: self.status_port,
            connections,
            guard: GuardOptions {
                config: GuardConfig {
                    deadline: Duration::from_millis(self.guard_deadline_ms),
                    repair_threshold: self.guard_repair_threshold,
                    offline_grace: self.guard_offline_grace,
                    ..GuardConfig::with_epoch(Duration::from_millis(self.guard_epoch_ms))
                },
            },
            escrow: btfs_host::services::escrow::EscrowOptions {
                ledger: btfs_core::escrow::LedgerConfig {
                    faucet_max: self.escrow_faucet_max,
                    grace_epochs: self.escrow_grace_epochs,
                    ..Default::default()
                },
                ..Default::default()
            },
        })
    }
}

impl HostArgs {
    pub fn into_config(self) -> Result<HostConfig> {
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
            metrics_port,
            services,
            status_port,
            probe_interval_ms
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
        if !self.bootstrap.is_empty() {
            c.bootstrap = self.bootstrap;
        }
        if self.escrow.is_some() {
            c.escrow = self.escrow;
        }
        if self.region.is_some() {
            c.region = self.region;
        }
        c.validate()?;
        Ok(c)
    }
}

impl Cmd {
    /// Whether the command was asked for JSON output (errors are then JSON on stdout too).
    pub fn json(&self) -> bool {
        match self {
            Cmd::Upload { json, .. }
            | Cmd::Download { json, .. }
            | Cmd::Audit { json, .. }
            | Cmd::Health { json, .. }
            | Cmd::Audits { json, .. }
            | Cmd::Status { json, .. }
            | Cmd::Contracts { json, .. }
            | Cmd::Earnings { json, .. }
            | Cmd::Ledger { json, .. }
            | Cmd::Hosts { json, .. } => *json,
            Cmd::Wallet { cmd } => match cmd {
                WalletCmd::Balance { json, .. }
                | WalletCmd::Deposit { json, .. }
                | WalletCmd::Withdraw { json, .. }
                | WalletCmd::Allow { json, .. }
                | WalletCmd::History { json, .. } => *json,
            },
            _ => false,
        }
    }
}

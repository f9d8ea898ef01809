//! `btfs devnet`: a complete local network, each host its own `btfs host` OS process.
//!
//! Goals: the embedded default for the README's first command and the fixture the integration
//! tests start; a test or an operator can `kill -9` any host. Layout of `--dir`:
//!
//! ```text
//! DIR/network.json           what tenants need (see network_file.rs); rewritten atomically
//! DIR/service/               the service node (`btfs service`: Hub + Status): identity,
//!                            hub.redb, status.redb, service.json, service.log
//! DIR/hosts/host-NN/         each host's data dir: host.toml (its config), identity, blobs,
//!                            node.json, host.log
//! DIR/netns.json             with --netns: the namespace, bridge port and address of every
//!                            node (the service node first)
//! ```
//!
//! With `--netns` ([`crate::tools::netns`]) every node runs in its own network namespace with
//! its own address (the service node at 198.18.1.2, host k at the next /24s), so the nodes are
//! separate machines to each other; the tenant's CLI, run outside, reaches them over the bridge
//! (198.18.0.1). `--host-rate-kbit` shapes every host's link. The namespaces are deleted when
//! the devnet stops; a devnet killed with SIGKILL leaves them for the next one to delete.
//!
//! Start order: the service node first, then every host with `--config host.toml` (which names
//! the Hub, the Status URL and short intervals), then network.json once the Hub has probed every
//! host and lists it online — so an upload right after start-up finds its 30 hosts. Restarting a
//! host by hand is `btfs host --config DIR/hosts/host-NN/host.toml`.
//!
//! A data dir survives a devnet restart, and so do peer ids and ports. The devnet runs until
//! Ctrl-C or SIGTERM, then stops its children (SIGTERM, then SIGKILL after 5 s).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

use crate::host::config::{HostConfig, Transport};
use crate::host::NodeInfo;
use crate::services::hub::HubAddr;
use crate::services::ServiceNodeInfo;
use crate::tenant::network_file::{self, HostEntry, NetworkFile};
use crate::tenant::Tenant;
use crate::tools::netns::Testbed;
use btfs_core::guard::GuardConfig;

/// The devnet Escrow's faucet: at most this many µBTT per deposit (1,000 BTT).
pub const DEVNET_FAUCET_MAX: u64 = 1000 * btfs_core::escrow::MICRO_PER_BTT;

/// Devnet settings.
#[derive(Debug, Clone)]
pub struct DevnetOptions {
    /// Number of hosts.
    pub hosts: usize,
    /// Directory for network.json and host data.
    pub dir: PathBuf,
    /// Quota per host.
    pub quota: String,
    /// How often the Hub probes every host.
    pub probe_interval: Duration,
    /// How often hosts re-announce and report to Status, in seconds.
    pub report_interval_secs: u64,
    /// The `btfs` executable the nodes run (`None`: this one), e.g. another build to compare.
    pub exe: Option<PathBuf>,
    /// Hosts store for free: their configs name no Escrow and network.json lists none, so
    /// uploads make no contracts (a baseline for measuring what contracts cost).
    pub free_storage: bool,
    /// Every node in its own network namespace ([`crate::tools::netns`]; needs root).
    pub netns: bool,
    /// With `netns`: every host's link shaped to this many kbit/s each way.
    pub host_rate_kbit: Option<u64>,
}

/// A started devnet: its processes (the service node first), its network file and, with
/// `--netns`, its namespaces (deleted by [`Devnet::stop`], or on drop).
pub struct Devnet {
    /// The service node, then every host.
    pub children: Vec<Child>,
    /// What network.json holds.
    pub network: NetworkFile,
    /// The namespaces, with `--netns`.
    pub testbed: Option<Testbed>,
}

impl Devnet {
    /// Stops every process, then deletes the namespaces.
    pub async fn stop(self) {
        stop(self.children).await;
        if let Some(mut t) = self.testbed {
            t.teardown();
        }
    }
}

impl Default for DevnetOptions {
    fn default() -> Self {
        Self {
            hosts: 30,
            dir: PathBuf::from("btfs-devnet"),
            quota: "2GiB".into(),
            probe_interval: Duration::from_secs(2),
            report_interval_secs: 10,
            exe: None,
            free_storage: false,
            netns: false,
            host_rate_kbit: None,
        }
    }
}

/// Starts the service node and the hosts, waits until the Hub lists every host online, writes
/// network.json and returns the children (the service node first).
pub async fn start(opts: &DevnetOptions) -> Result<Devnet> {
    if opts.hosts == 0 || opts.hosts > 500 {
        bail!("--hosts must be between 1 and 500 (got {})", opts.hosts);
    }
    if !(1..=3600).contains(&opts.report_interval_secs) {
        bail!("--report-interval-secs must be between 1 and 3600");
    }
    let exe = match &opts.exe {
        Some(exe) => exe.clone(),
        None => std::env::current_exe().context("cannot find the btfs executable")?,
    };
    let hosts_dir = opts.dir.join("hosts");
    std::fs::create_dir_all(&hosts_dir)
        .with_context(|| format!("cannot create {}", hosts_dir.display()))?;

    let testbed = match opts.netns {
        true => {
            let t = Testbed::create(opts.hosts + 1)?;
            std::fs::write(opts.dir.join("netns.json"), serde_json::to_vec_pretty(&t)?)?;
            if let Some(rate) = opts.host_rate_kbit {
                for k in 1..=opts.hosts {
                    t.shape(k, Some(rate))?;
                }
            }
            Some(t)
        }
        false => None,
    };
    // Node k's command: in its namespace with --netns.
    let node_cmd = |k: usize| match &testbed {
        Some(t) => {
            let pre = t.exec(k);
            let mut c = Command::new(&pre[0]);
            c.args(&pre[1..]).arg(&exe);
            c
        }
        None => Command::new(&exe),
    };
    let node_ip = |k: usize| match &testbed {
        Some(t) => std::net::IpAddr::V4(t.nodes[k].ip),
        None => HostConfig::default().listen_ip,
    };
    let service_dir = opts.dir.join("service");
    std::fs::create_dir_all(&service_dir)?;
    let mut service = spawn_logged(
        node_cmd(0)
            .arg("service")
            .arg("--listen-ip")
            .arg(node_ip(0).to_string())
            .arg("--data-dir")
            .arg(&service_dir)
            .arg("--probe-interval-ms")
            .arg(opts.probe_interval.as_millis().to_string())
            .arg("--report-interval-secs")
            .arg(opts.report_interval_secs.to_string())
            // Every devnet host reports from one loopback address.
            .arg("--new-hosts-per-ip")
            .arg(opts.hosts.max(64).to_string())
            .arg("--max-connections-per-ip")
            .arg((opts.hosts + 256).to_string())
            // The Guard audits every few seconds, so tests and demos see repairs happen.
            .arg("--guard-epoch-ms")
            .arg(GuardConfig::for_devnet().epoch.as_millis().to_string())
            .arg("--guard-deadline-ms")
            .arg(GuardConfig::for_devnet().deadline.as_millis().to_string())
            .arg("--guard-offline-grace")
            .arg(GuardConfig::for_devnet().offline_grace.to_string())
            // Test money: a faucet, so every tenant can pay.
            .arg("--escrow-faucet-max")
            .arg(DEVNET_FAUCET_MAX.to_string()),
        &service_dir.join("service.log"),
    )
    .context("cannot start the service node")?;
    let info = wait_for_service(&service_dir, &mut service).await?;
    let hub_addr = info
        .addr_of(Transport::Tcp)
        .context("the service node does not listen on TCP")?
        .to_string();

    let mut children = Vec::new();
    for i in 0..opts.hosts {
        let dir = hosts_dir.join(format!("host-{i:02}"));
        std::fs::create_dir_all(&dir)?;
        let dir = std::fs::canonicalize(&dir).unwrap_or(dir);
        let config = HostConfig {
            data_dir: dir.clone(),
            listen_ip: node_ip(i + 1),
            quota: opts.quota.clone(),
            hub: Some(hub_addr.clone()),
            escrow: (!opts.free_storage).then(|| hub_addr.clone()),
            announce_interval_secs: opts.report_interval_secs,
            status_url: Some(info.status_http.clone()),
            // Joins the service node's DHT, and answers `Network` with what it says.
            bootstrap: vec![hub_addr.clone()],
            report_interval_secs: opts.report_interval_secs,
            ..HostConfig::default()
        };
        config.validate()?;
        let config_path = dir.join("host.toml");
        std::fs::write(&config_path, toml::to_string(&config)?)
            .with_context(|| format!("cannot write {}", config_path.display()))?;
        let child = spawn_logged(
            node_cmd(i + 1)
                .arg("host")
                .arg("--config")
                .arg(&config_path),
            &dir.join("host.log"),
        )
        .with_context(|| format!("cannot start host {i}"))?;
        children.push((dir, child));
    }
    let mut entries = Vec::new();
    for (dir, child) in &mut children {
        entries.push(wait_for_host(dir, child).await?);
    }
    let bootstrap = entries
        .iter()
        .take(3)
        .filter_map(|h| h.addrs.first().cloned())
        .collect();
    let mut network = NetworkFile {
        bootstrap,
        hosts: entries,
        ..NetworkFile::default()
    };
    network.add_services_of(&btfs_core::network_file::NodeServices {
        peer_id: &info.peer_id,
        pid: info.pid,
        addrs: &info.addrs,
        hub: true,
        status_http: Some(&info.status_http),
        guard_epoch_ms: Some(GuardConfig::for_devnet().epoch.as_millis() as u64),
        escrow_devnet: (!opts.free_storage).then_some(true),
    });
    let path = opts.dir.join("network.json");
    let hub = network_file::hub(&network, &path)?.context("network file without a Hub")?;
    wait_until_listed(&hub, &network, opts.probe_interval, &mut service).await?;
    if let Some(escrow) = crate::tenant::network_file::escrow(&network, &path)? {
        fund_test_wallets(&opts.dir, &escrow)
            .await
            .context("cannot fund the devnet's test wallets")?;
    }
    network_file::save(&network, &path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    let mut all = vec![service];
    all.extend(children.into_iter().map(|(_, c)| c));
    Ok(Devnet {
        children: all,
        network,
        testbed,
    })
}

/// The devnet's funded test accounts: `DIR/wallets/<name>.key`.
pub const TEST_WALLETS: [&str; 3] = ["alice", "bob", "carol"];
/// What each test account starts with (µBTT): 1,000 BTT.
pub const TEST_WALLET_FUNDS: u64 = 1000 * btfs_core::escrow::MICRO_PER_BTT;

/// Creates the test wallets (or reuses them) and tops each up to [`TEST_WALLET_FUNDS`] from the
/// faucet.
async fn fund_test_wallets(dir: &Path, escrow: &crate::services::hub::HubAddr) -> Result<()> {
    use btfs_core::escrow::{EscrowRequest, EscrowResponse, Op};
    for name in TEST_WALLETS {
        let w = crate::tenant::wallet::Wallet::open(Some(
            &dir.join("wallets").join(format!("{name}.key")),
        ))?;
        let t = crate::tenant::Tenant::start_with_key(Vec::new(), w.keypair()).await?;
        let r = async {
            let have = match crate::tenant::wallet::query(
                t.net(),
                escrow,
                &EscrowRequest::Account {
                    peer: w.peer().to_base58(),
                },
            )
            .await?
            {
                EscrowResponse::Account { account, .. } => account.available,
                _ => 0,
            };
            if have < TEST_WALLET_FUNDS {
                w.call(
                    t.net(),
                    escrow,
                    Op::Deposit {
                        amount: TEST_WALLET_FUNDS - have,
                    },
                )
                .await?;
            }
            anyhow::Ok(())
        }
        .await;
        t.shutdown().await;
        r?;
    }
    Ok(())
}

fn spawn_logged(cmd: &mut Command, log: &Path) -> Result<Child> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("cannot open {}", log.display()))?;
    Ok(cmd
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .kill_on_drop(true)
        .spawn()?)
}

async fn wait_for_service(dir: &Path, child: &mut Child) -> Result<ServiceNodeInfo> {
    let pid = child.id().unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait()? {
            bail!(
                "the service node exited during start-up ({status}); see {}",
                dir.join("service.log").display()
            );
        }
        if let Some(info) = ServiceNodeInfo::read(dir) {
            if info.pid == pid {
                return Ok(info);
            }
        }
        if Instant::now() > deadline {
            bail!(
                "the service node did not start within 60 s; see {}",
                dir.join("service.log").display()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the Hub lists every host of `network` as online (announced and probed).
async fn wait_until_listed(
    hub: &HubAddr,
    network: &NetworkFile,
    probe_interval: Duration,
    service: &mut Child,
) -> Result<()> {
    let tenant = Tenant::start(Vec::new()).await?;
    let deadline = Instant::now() + Duration::from_secs(60) + probe_interval * 3;
    let want: std::collections::HashSet<&str> =
        network.hosts.iter().map(|h| h.peer_id.as_str()).collect();
    let result = loop {
        if let Some(status) = service.try_wait()? {
            break Err(anyhow::anyhow!("the service node exited ({status})"));
        }
        let online =
            match crate::services::hub::client::hosts(tenant.net(), hub, btfs_core::hub::MAX_COUNT)
                .await
            {
                Ok(list) => list
                    .iter()
                    .filter(|h| h.facts.online && want.contains(h.peer_id.as_str()))
                    .count(),
                Err(e) => {
                    tracing::debug!(%e, "hub not ready");
                    0
                }
            };
        if online == want.len() {
            break Ok(());
        }
        if Instant::now() > deadline {
            break Err(anyhow::anyhow!(
                "the Hub lists only {online} of {} hosts online after 60 s; see the hosts' host.log",
                want.len()
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    tenant.shutdown().await;
    result
}

async fn wait_for_host(dir: &Path, child: &mut Child) -> Result<HostEntry> {
    let pid = child.id().unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait()? {
            bail!(
                "host in {} exited during start-up ({status}); see {}",
                dir.display(),
                dir.join("host.log").display()
            );
        }
        if let Ok(bytes) = std::fs::read(dir.join("node.json")) {
            if let Ok(info) = serde_json::from_slice::<NodeInfo>(&bytes) {
                if info.pid == pid {
                    return Ok(HostEntry {
                        peer_id: info.peer_id,
                        pid,
                        addrs: info.addrs,
                        data_dir: std::fs::canonicalize(dir).unwrap_or_else(|_| dir.into()),
                    });
                }
            }
        }
        if Instant::now() > deadline {
            bail!("host in {} did not start within 60 s", dir.display());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Stops children: SIGTERM, then SIGKILL for those still running after 5 s.
pub async fn stop(children: Vec<Child>) {
    for c in &children {
        if let Some(pid) = c.id() {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
        }
    }
    for mut c in children {
        if tokio::time::timeout(Duration::from_secs(5), c.wait())
            .await
            .is_err()
        {
            let _ = c.kill().await;
        }
    }
}

/// Runs a devnet until Ctrl-C or SIGTERM.
pub async fn run(opts: DevnetOptions) -> Result<()> {
    let devnet = start(&opts).await?;
    let network = &devnet.network;
    let path = opts.dir.join("network.json");
    println!(
        "devnet: {} hosts running; network file: {}",
        network.hosts.len(),
        path.display()
    );
    if let Some(url) = network
        .services
        .get("status")
        .and_then(|s| s.get("http"))
        .and_then(|v| v.as_str())
    {
        println!(
            "  status:   {url}  (btfs status --network {})",
            path.display()
        );
    }
    println!(
        "  wallets:  {} funded test wallets in {} (btfs wallet balance --wallet {} --network {})",
        TEST_WALLETS.len(),
        opts.dir.join("wallets").display(),
        opts.dir.join("wallets").join("alice.key").display(),
        path.display()
    );
    println!("  hosts:    btfs hosts --network {}", path.display());
    println!("  upload:   btfs upload FILE --network {}", path.display());
    println!(
        "  download: btfs download LINK -o OUT --network {}",
        path.display()
    );
    println!("  stop:     Ctrl-C");
    crate::shutdown_signal().await;
    println!("devnet: stopping {} processes", devnet.children.len());
    devnet.stop().await;
    Ok(())
}

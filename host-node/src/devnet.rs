//! `btfs devnet`: a complete local network, each host its own `btfs host` OS process.
//!
//! Goals: the embedded default for the README's first command and the fixture the integration
//! tests start; a test or an operator can `kill -9` any host. Layout of `--dir`:
//!
//! ```text
//! DIR/network.json           what tenants need (see network_file.rs); rewritten atomically
//! DIR/hosts/host-NN/         each host's data dir: identity, blobs, node.json, host.log
//! ```
//!
//! A host's data dir survives a devnet restart, and so do its peer id and ports. The devnet
//! runs until Ctrl-C or SIGTERM, then stops its children (SIGTERM, then SIGKILL after 5 s).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

use crate::network_file::{HostEntry, NetworkFile};
use crate::node::NodeInfo;

/// Devnet settings.
#[derive(Debug, Clone)]
pub struct DevnetOptions {
    /// Number of hosts.
    pub hosts: usize,
    /// Directory for network.json and host data.
    pub dir: PathBuf,
    /// Quota per host.
    pub quota: String,
}

/// Starts the hosts, writes network.json and returns the children.
pub async fn start(opts: &DevnetOptions) -> Result<(Vec<Child>, NetworkFile)> {
    if opts.hosts == 0 || opts.hosts > 500 {
        bail!("--hosts must be between 1 and 500 (got {})", opts.hosts);
    }
    let exe = std::env::current_exe().context("cannot find the btfs executable")?;
    let hosts_dir = opts.dir.join("hosts");
    std::fs::create_dir_all(&hosts_dir)
        .with_context(|| format!("cannot create {}", hosts_dir.display()))?;
    let mut children = Vec::new();
    for i in 0..opts.hosts {
        let dir = hosts_dir.join(format!("host-{i:02}"));
        std::fs::create_dir_all(&dir)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("host.log"))?;
        let child = Command::new(&exe)
            .arg("host")
            .arg("--data-dir")
            .arg(&dir)
            .arg("--quota")
            .arg(&opts.quota)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
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
    let network = NetworkFile {
        bootstrap,
        hosts: entries,
        services: serde_json::Map::new(),
    };
    let path = opts.dir.join("network.json");
    network
        .save(&path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok((children.into_iter().map(|(_, c)| c).collect(), network))
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
    let (children, network) = start(&opts).await?;
    let path = opts.dir.join("network.json");
    println!(
        "devnet: {} hosts running; network file: {}",
        network.hosts.len(),
        path.display()
    );
    println!("  upload:   btfs upload FILE --network {}", path.display());
    println!(
        "  download: btfs download LINK -o OUT --network {}",
        path.display()
    );
    println!("  stop:     Ctrl-C");
    crate::shutdown_signal().await;
    println!("devnet: stopping {} hosts", children.len());
    stop(children).await;
    Ok(())
}

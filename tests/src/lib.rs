//! Test harness for whole networks of real `btfs` processes on loopback, or each in its own
//! network namespace.
//!
//! [`Devnet::start`] runs `btfs devnet` in a temporary directory and waits for its
//! `network.json`; tests then kill, restart and corrupt hosts and drive the real CLI. Everything
//! is torn down on drop, including hosts a test restarted itself. [`Devnet::start_netns`] runs
//! `btfs devnet --netns` (root only): every node its own machine on a virtual bridge, which a
//! test can cut hosts off ([`Devnet::cut_hosts`]) and shape ([`Devnet::shape_hosts`]); the
//! namespaces are deleted on drop too, after every process is killed.
//!
//! The `btfs` binary comes from `$BTFS_BIN`, or from the same target directory as the test
//! binary (`cargo xtask test` builds it first).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use rand::{RngCore, SeedableRng};
use serde::Deserialize;

/// One host as listed in network.json.
#[derive(Debug, Clone, Deserialize)]
pub struct Host {
    /// Peer id.
    pub peer_id: String,
    /// OS pid.
    pub pid: u32,
    /// Multiaddrs ending in /p2p/<peer id>.
    pub addrs: Vec<String>,
    /// Data directory.
    pub data_dir: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
struct NetworkJson {
    hosts: Vec<Host>,
    #[serde(default)]
    services: serde_json::Value,
}

/// What the service node records in `service.json`.
#[derive(Debug, Clone, Deserialize)]
pub struct ServiceInfo {
    /// Peer id.
    pub peer_id: String,
    /// OS pid.
    pub pid: u32,
    /// Multiaddrs ending in /p2p/<peer id>.
    pub addrs: Vec<String>,
    /// Status base URL.
    pub status_http: String,
}

/// Path of the `btfs` binary under test.
pub fn btfs_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("BTFS_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    // target/<profile>/deps/<test> → target/<profile>/btfs
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|p| p.join("btfs"))
        .unwrap_or_default();
    assert!(
        bin.exists(),
        "the btfs binary is not built at {}: run `cargo build -p btfs-host` first (`cargo xtask test` does), or set BTFS_BIN",
        bin.display()
    );
    bin
}

/// A running devnet.
pub struct Devnet {
    dir: tempfile::TempDir,
    devnet: Child,
    hosts: Vec<Host>,
    /// Hosts restarted by the test (not children of the devnet).
    restarted: Vec<Child>,
    /// `services` of network.json.
    services: serde_json::Value,
    /// The service node's pid (changes when a test restarts it).
    service_pid: u32,
    /// With `--netns`: the namespaces (deleted on drop, after the processes).
    netns: Option<btfs_host::tools::netns::Testbed>,
    /// With `--netns`: this test binary's turn ([`NETNS_TURN`]); dropped last, after the
    /// namespaces are gone.
    _turn: Option<std::sync::MutexGuard<'static, ()>>,
}

/// One namespaced devnet at a time in a test binary: every testbed uses the same addresses
/// (`btfs_host::tools::netns` refuses a second one), so tests that start one take turns
/// instead of failing.
static NETNS_TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl Devnet {
    /// Starts `btfs devnet --hosts n` and waits for network.json.
    pub fn start(n: usize) -> Result<Self> {
        Self::start_with(n, &[])
    }

    /// Starts `btfs devnet --netns --hosts n` with `extra` flags: every node in its own
    /// network namespace (needs root).
    pub fn start_netns(n: usize, extra: &[&str]) -> Result<Self> {
        let turn = NETNS_TURN.lock().unwrap_or_else(|e| e.into_inner());
        let mut args = vec!["--netns"];
        args.extend_from_slice(extra);
        let mut net = Self::start_with(n, &args)?;
        net._turn = Some(turn);
        Ok(net)
    }

    /// Starts `btfs devnet --hosts n` with `extra` flags and waits for network.json.
    pub fn start_with(n: usize, extra: &[&str]) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let log = std::fs::File::create(dir.path().join("devnet.log"))?;
        let devnet = Command::new(btfs_bin())
            .args(["devnet", "--hosts", &n.to_string()])
            .args(extra)
            .arg("--dir")
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("cannot start btfs devnet")?;
        let mut net = Self {
            dir,
            devnet,
            hosts: Vec::new(),
            restarted: Vec::new(),
            services: serde_json::Value::Null,
            service_pid: 0,
            netns: None,
            _turn: None,
        };
        let path = net.network_path();
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(status) = net.devnet.try_wait()? {
                let log =
                    std::fs::read_to_string(net.dir.path().join("devnet.log")).unwrap_or_default();
                bail!("btfs devnet exited early ({status}):\n{log}");
            }
            if net.netns.is_none() {
                if let Ok(bytes) = std::fs::read(net.dir.path().join("netns.json")) {
                    net.netns = Some(serde_json::from_slice(&bytes)?);
                }
            }
            if let Ok(bytes) = std::fs::read(&path) {
                let parsed: NetworkJson = serde_json::from_slice(&bytes)?;
                net.hosts = parsed.hosts;
                net.services = parsed.services;
                net.service_pid = net.service_info()?.pid;
                return Ok(net);
            }
            if Instant::now() > deadline {
                bail!("devnet did not write {} within 120 s", path.display());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The devnet's network.json.
    pub fn network_path(&self) -> PathBuf {
        self.dir.path().join("network.json")
    }

    /// The service node's data dir.
    pub fn service_dir(&self) -> PathBuf {
        self.dir.path().join("service")
    }

    /// The service node's `service.json`.
    pub fn service_info(&self) -> Result<ServiceInfo> {
        let path = self.service_dir().join("service.json");
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        Ok(serde_json::from_slice(&bytes)?)
    }

    /// `services` of network.json.
    pub fn services(&self) -> &serde_json::Value {
        &self.services
    }

    /// `kill -9` the service node (Hub and Status).
    pub fn kill_service(&mut self) {
        let pid = self.service_pid;
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        wait_dead(pid);
        for c in &mut self.restarted {
            if c.id() == pid {
                let _ = c.wait();
            }
        }
    }

    /// Starts the service node again on its data dir with the devnet's intervals; waits until
    /// it has written service.json with the same peer id and addresses.
    pub fn restart_service(
        &mut self,
        probe_interval_ms: u64,
        report_interval_secs: u64,
    ) -> Result<()> {
        let dir = self.service_dir();
        let before = self.service_info()?;
        let mut cmd = self.node_command(0);
        cmd.arg("service");
        if let Some(t) = &self.netns {
            cmd.args(["--listen-ip", &t.nodes[0].ip.to_string()]);
        }
        cmd.arg("--data-dir")
            .arg(&dir)
            .arg("--probe-interval-ms")
            .arg(probe_interval_ms.to_string())
            .arg("--report-interval-secs")
            .arg(report_interval_secs.to_string())
            // The devnet's Guard settings (`btfs devnet` starts the service node with them).
            .args(["--guard-epoch-ms", "5000", "--guard-deadline-ms", "2000"])
            .args(["--guard-offline-grace", "3"])
            .args([
                "--escrow-faucet-max",
                &btfs_host::tools::devnet::DEVNET_FAUCET_MAX.to_string(),
            ]);
        let log_path = dir.join("service.log");
        let log_len = || std::fs::metadata(&log_path).map_or(0, |m| m.len() as usize);
        let mut log_from = log_len();
        let child = spawn_logged(&mut cmd, &log_path)?;
        let mut pid = child.id();
        self.restarted.push(child);
        self.service_pid = pid;
        let deadline = Instant::now() + Duration::from_secs(60);
        // A process killed while inside a disk write dies only when the write returns, and
        // until then it holds its database locks and ports: a restart that finds them still
        // held exits with "Database already open", and is tried again for a while.
        let retry_until = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(Ok(Some(status))) = self.restarted.last_mut().map(Child::try_wait) {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                let new_part = log.get(log_from..).unwrap_or_default();
                if new_part.contains("Cannot acquire lock") && Instant::now() < retry_until {
                    std::thread::sleep(Duration::from_millis(500));
                    log_from = log_len();
                    let child = spawn_logged(&mut cmd, &log_path)?;
                    pid = child.id();
                    self.restarted.push(child);
                    self.service_pid = pid;
                    continue;
                }
                let tail: Vec<&str> = log
                    .lines()
                    .filter(|l| !l.trim_start().starts_with("at ") && !l.starts_with("   "))
                    .rev()
                    .take(20)
                    .collect();
                bail!(
                    "restarted service node exited ({status}); its log ends:\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
            if let Ok(info) = self.service_info() {
                if info.pid == pid {
                    if info.addrs != before.addrs || info.status_http != before.status_http {
                        bail!("restarted service node changed addresses");
                    }
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!("restarted service node did not listen within 60 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs `btfs hosts --json` on this network; returns the array.
    pub fn hosts_json(&self) -> Result<Vec<serde_json::Value>> {
        let out = self.btfs(&[
            "hosts",
            "--json",
            "--network",
            &self.network_path().display().to_string(),
        ]);
        if !out.status.success() {
            bail!(
                "btfs hosts failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(serde_json::from_slice(&out.stdout)?)
    }

    /// Waits until the Hub lists host `i` online (e.g. after a restart: its announcement and
    /// the Hub's next probe), at most `limit`.
    pub fn wait_online(&self, i: usize, limit: Duration) -> Result<()> {
        let peer = self.hosts[i].peer_id.clone();
        let deadline = Instant::now() + limit;
        loop {
            let listed = self.hosts_json().unwrap_or_default();
            if listed
                .iter()
                .any(|h| h["peer_id"] == peer.as_str() && h["online"] == true)
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the Hub did not list host {i} ({peer}) online within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// A scratch directory for test files.
    pub fn scratch(&self) -> &Path {
        self.dir.path()
    }

    /// Hosts in network.json order.
    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// Index of the host with this peer id.
    pub fn host_index(&self, peer_id: &str) -> Option<usize> {
        self.hosts.iter().position(|h| h.peer_id == peer_id)
    }

    /// `kill -9` host `i`, and wait until it is gone (ports and files released).
    pub fn kill_host(&mut self, i: usize) {
        let pid = self.hosts[i].pid;
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        wait_dead(pid);
        // Reap it if it is ours.
        for c in &mut self.restarted {
            if c.id() == pid {
                let _ = c.wait();
            }
        }
    }

    /// Starts host `i` again on its data dir (same identity, same ports) and waits until it
    /// listens.
    pub fn restart_host(&mut self, i: usize) -> Result<()> {
        let dir = self.hosts[i].data_dir.clone();
        let config = dir.join("host.toml");
        let mut cmd = self.node_command(i + 1);
        cmd.arg("host");
        // The devnet writes each host's config (Hub, Status, intervals) next to its data.
        if config.exists() {
            cmd.arg("--config").arg(&config);
        } else {
            cmd.arg("--data-dir").arg(&dir);
        }
        let child = spawn_logged(&mut cmd, &dir.join("host.log"))?;
        let pid = child.id();
        self.restarted.push(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(bytes) = std::fs::read(dir.join("node.json")) {
                let info: Host = serde_json::from_slice::<serde_json::Value>(&bytes)
                    .ok()
                    .and_then(|mut v| {
                        v["data_dir"] = serde_json::Value::String(dir.display().to_string());
                        serde_json::from_value(v).ok()
                    })
                    .context("node.json is malformed")?;
                if info.pid == pid {
                    if info.addrs != self.hosts[i].addrs {
                        bail!(
                            "restarted host changed addresses: {:?} → {:?}",
                            self.hosts[i].addrs,
                            info.addrs
                        );
                    }
                    self.hosts[i].pid = pid;
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!("restarted host {i} did not listen within 60 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A command running `btfs` as node `k` (0: the service node, k: host k − 1): in its
    /// namespace with `--netns`.
    fn node_command(&self, k: usize) -> Command {
        match &self.netns {
            Some(t) => {
                let pre = t.exec(k);
                let mut c = Command::new(&pre[0]);
                c.args(&pre[1..]).arg(btfs_bin());
                c
            }
            None => Command::new(btfs_bin()),
        }
    }

    /// The namespaces, with `--netns`.
    pub fn testbed(&self) -> Option<&btfs_host::tools::netns::Testbed> {
        self.netns.as_ref()
    }

    /// Cuts hosts `which` off the network (their bridge ports down: nothing in or out, as a
    /// partition does) until the returned guard is dropped (also when a test fails).
    pub fn cut_hosts(&self, which: &[usize]) -> Result<Cut> {
        let t = self
            .netns
            .as_ref()
            .context("cutting hosts off needs --netns")?;
        let nodes: Vec<_> = which.iter().map(|&i| t.nodes[i + 1].clone()).collect();
        for n in &nodes {
            btfs_host::tools::netns::link(n, false)?;
        }
        Ok(Cut { nodes })
    }

    /// Shapes hosts `which` to `rate_kbit` each way (`None`: unshaped).
    pub fn shape_hosts(&self, which: &[usize], rate_kbit: Option<u64>) -> Result<()> {
        let t = self.netns.as_ref().context("shaping hosts needs --netns")?;
        for &i in which {
            t.shape(i + 1, rate_kbit)?;
        }
        Ok(())
    }

    /// The address a tenant outside the namespaces bootstraps from: host `i`'s TCP address.
    pub fn bootstrap_addr(&self, i: usize) -> String {
        self.hosts[i]
            .addrs
            .iter()
            .find(|a| a.contains("/tcp/") && !a.contains("/ws"))
            .cloned()
            .unwrap_or_default()
    }

    /// Freezes hosts `which` (SIGSTOP: connections stay open, nothing is answered, as a hung
    /// machine behaves) until the returned guard is dropped (SIGCONT, also when a test fails).
    pub fn freeze_hosts(&self, which: &[usize]) -> Frozen {
        let pids: Vec<u32> = which.iter().map(|&i| self.hosts[i].pid).collect();
        for &pid in &pids {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGSTOP);
        }
        Frozen { pids }
    }

    /// Runs the CLI with `--network` appended for upload/download.
    pub fn btfs(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(btfs_bin());
        cmd.args(args);
        // Each devnet's tenant pays from its own wallet, never the user's.
        if std::env::var_os("BTFS_WALLET").is_none() {
            cmd.env("BTFS_WALLET", self.scratch().join("wallet.key"));
        }
        // Uploads, downloads and raw puts (which pay on a network with an Escrow) use this devnet.
        let paid_put = args.starts_with(&["shard", "put"]);
        if (matches!(args.first(), Some(&"upload") | Some(&"download")) || paid_put)
            && !args.contains(&"--network")
        {
            cmd.arg("--network").arg(self.network_path());
        }
        cmd.stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run btfs: {e}"))
    }

    /// Runs the CLI ([`Devnet::btfs`]); its stdout, or an error with its stderr.
    pub fn run(&self, args: &[&str]) -> Result<String> {
        let out = self.btfs(args);
        if !out.status.success() {
            bail!(
                "btfs {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8(out.stdout)?)
    }

    /// [`Devnet::run`], its stdout parsed as JSON.
    pub fn run_json(&self, args: &[&str]) -> Result<serde_json::Value> {
        Ok(serde_json::from_str(&self.run(args)?)?)
    }

    /// Uploads `file`; returns the link.
    pub fn upload(&self, file: &Path) -> Result<String> {
        let out = self.btfs(&["upload", &file.display().to_string()]);
        if !out.status.success() {
            bail!("upload failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8(out.stdout)?.trim().to_string())
    }

    /// Downloads `link` into `out`; returns the JSON report.
    pub fn download(&self, link: &str, out: &Path) -> Result<serde_json::Value> {
        let o = self.btfs(&["download", link, "-o", &out.display().to_string(), "--json"]);
        if !o.status.success() {
            bail!("download failed: {}", String::from_utf8_lossy(&o.stderr));
        }
        Ok(serde_json::from_slice(&o.stdout)?)
    }
}

/// Hosts cut off by [`Devnet::cut_hosts`]; connected again on drop.
pub struct Cut {
    nodes: Vec<btfs_host::tools::netns::NsNode>,
}

impl Cut {
    /// Connects them again now.
    pub fn heal(self) {}
}

impl Drop for Cut {
    fn drop(&mut self) {
        for n in &self.nodes {
            let _ = btfs_host::tools::netns::link(n, true);
        }
    }
}

/// Hosts frozen by [`Devnet::freeze_hosts`]; thawed on drop.
pub struct Frozen {
    pids: Vec<u32>,
}

impl Drop for Frozen {
    fn drop(&mut self) {
        for &pid in &self.pids {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGCONT);
        }
    }
}

impl Drop for Devnet {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.devnet.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.devnet.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.devnet.kill();
        let _ = self.devnet.wait();
        for c in &mut self.restarted {
            let _ = c.kill();
            let _ = c.wait();
        }
        for h in &self.hosts {
            let _ = kill(Pid::from_raw(h.pid as i32), Signal::SIGKILL);
        }
        if self.service_pid != 0 {
            let _ = kill(Pid::from_raw(self.service_pid as i32), Signal::SIGKILL);
        }
    }
}

/// Waits (up to 10 s) until process `pid` has exited: gone, or a zombie waiting for its parent.
/// `kill` returns before the kernel has torn the process down, and until then its ports and
/// database locks are still held.
fn wait_dead(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => return,
            // Field 3, after the parenthesised command name, is the state.
            Ok(stat) => {
                let state = stat
                    .rsplit(')')
                    .next()
                    .and_then(|r| r.split_whitespace().next());
                if matches!(state, Some("Z") | Some("X")) {
                    return;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts `cmd` with stdout and stderr appended to `log`.
fn spawn_logged(cmd: &mut Command, log: &Path) -> Result<Child> {
    let file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(log)
        .with_context(|| format!("cannot open {}", log.display()))?;
    Ok(cmd
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .spawn()?)
}

/// Writes `len` seeded random bytes to `path`; returns their BLAKE3 hash.
pub fn random_file(path: &Path, len: usize, seed: u64) -> Result<blake3::Hash> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut data = vec![0u8; len];
    rng.fill_bytes(&mut data);
    std::fs::write(path, &data)?;
    Ok(blake3::hash(&data))
}

/// BLAKE3 of a file's contents.
pub fn hash_file(path: &Path) -> Result<blake3::Hash> {
    Ok(blake3::hash(&std::fs::read(path)?))
}

/// Path of a blob in a host's data dir (mirrors host-node's FsStore layout).
pub fn blob_path(data_dir: &Path, root_hex: &str) -> PathBuf {
    data_dir.join("blobs").join(&root_hex[..2]).join(root_hex)
}

/// Reads and parses an object's manifest from the first host that holds it.
pub fn manifest_of(net: &Devnet, link: &str) -> Result<btfs_core::Manifest> {
    let parsed = btfs_core::Link::parse(link)?;
    let id = parsed.manifest_id.to_hex();
    for h in net.hosts() {
        if let Ok(bytes) = std::fs::read(blob_path(&h.data_dir, &id)) {
            return Ok(btfs_core::Manifest::decode(&bytes)?);
        }
    }
    bail!("no host holds manifest {id}")
}

/// The devnet index of the host holding shard `shard` of slab `slab`, and that shard's root.
pub fn shard_location(
    net: &Devnet,
    manifest: &btfs_core::Manifest,
    slab: usize,
    shard: usize,
) -> Result<(usize, btfs_core::Root)> {
    let rec = manifest.slabs()[slab][shard];
    let peer = bs58::encode(&manifest.hosts()[usize::from(rec.host)]).into_string();
    let i = net
        .host_index(&peer)
        .with_context(|| format!("manifest names unknown host {peer}"))?;
    Ok((i, rec.root))
}

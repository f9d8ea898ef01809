//! `btfs bench`: end-to-end throughput of a local devnet, beside the capacity of its stages.
//!
//! Measured in one run, on the same machine:
//! 1. disk: 1 MiB blobs written through the host's `FsStore` (hold record commit, temp file,
//!    fsync, rename, fsync of the directory) by 30 writers at once, as 30 hosts do during an
//!    upload;
//! 2. libp2p single stream: sequential 4 MiB GETs from one host over one TCP+Noise+Yamux
//!    connection (the shard protocol, blob served from the page cache);
//! 3. end to end: `btfs upload` and `btfs download` of a random file (real CLI processes) to a
//!    30-host devnet, timed by the CLI's own report, with each process's peak RSS;
//! 4. CPU per GiB of each transfer, for the tenant (user+sys of the CLI process, from
//!    `getrusage(RUSAGE_CHILDREN)` around the waited-for child) and for the hosts together
//!    (utime+stime from `/proc/PID/stat` of every host process before and after the transfer;
//!    this includes what idle hosts burn meanwhile, about 0.02 CPU-s per second for 30 hosts).
//!
//! `--json` prints one JSON object (every median, see [`Report`]) on stdout; the table then
//! goes to stderr.
//!
//! Goal from the issue: upload MiB/s ≥ (slowest stage capacity) / 3, because every byte leaves the
//! tenant as 3 bytes of shards; the stages must overlap instead of running in series.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use btfs_core::Root;
use rand::RngCore;

use crate::host::store::{BlobStore, FsStore};
use crate::tenant::network_file::{self, NetworkFile};
use crate::tenant::Tenant;
use crate::tools::devnet::{self, DevnetOptions};

/// Bench settings.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Hosts in the devnet.
    pub hosts: usize,
    /// File size for the throughput run.
    pub size: u64,
    /// File size for the peak-RSS run (0 = skip).
    pub rss_size: u64,
    /// Scratch directory.
    pub dir: PathBuf,
    /// Repetitions of each measurement (medians are reported).
    pub rounds: usize,
    /// Print a JSON [`Report`] on stdout (and the table on stderr).
    pub json: bool,
    /// The `btfs` executable for the devnet and the CLI processes (`None`: this one). The disk
    /// and single-stream stages always run in this process.
    pub exe: Option<PathBuf>,
}

/// CPU seconds one transfer cost, and the same per GiB of file.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct CpuCost {
    /// user+sys seconds of the tenant process.
    pub tenant_s: f64,
    /// user+sys seconds of all host processes together.
    pub hosts_s: f64,
    /// `tenant_s` per GiB of file.
    pub tenant_s_per_gib: f64,
    /// `hosts_s` per GiB of file.
    pub hosts_s_per_gib: f64,
}

impl CpuCost {
    fn new(tenant_s: f64, hosts_s: f64, size: u64) -> Self {
        let gib = (size as f64 / GIB).max(1e-12);
        Self {
            tenant_s,
            hosts_s,
            tenant_s_per_gib: tenant_s / gib,
            hosts_s_per_gib: hosts_s / gib,
        }
    }
}

/// What `btfs bench --json` prints: medians over the rounds.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    /// Hosts in the devnet.
    pub hosts: usize,
    /// File size in bytes.
    pub size: u64,
    /// Rounds each median is taken over.
    pub rounds: usize,
    /// CPU cores of this machine.
    pub cores: usize,
    /// Disk write+fsync, 30 writers, 1 MiB blobs, MiB/s.
    pub disk_mibps: f64,
    /// One libp2p stream, sequential 4 MiB GETs, MiB/s.
    pub stream_mibps: f64,
    /// Upload end to end, MiB/s (the CLI's own timing).
    pub upload_mibps: f64,
    /// Download end to end, MiB/s.
    pub download_mibps: f64,
    /// CPU of one upload (median of each figure separately).
    pub upload_cpu: CpuCost,
    /// CPU of one download.
    pub download_cpu: CpuCost,
    /// Largest peak RSS of an upload CLI process, bytes.
    pub upload_peak_rss_bytes: u64,
    /// Largest peak RSS of a download CLI process, bytes.
    pub download_peak_rss_bytes: u64,
}

const MIB: f64 = 1024.0 * 1024.0;
const GIB: f64 = 1024.0 * MIB;

fn mibps(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / MIB / d.as_secs_f64().max(1e-9)
}

/// Runs the bench and prints a table.
pub async fn run(opts: BenchOptions) -> Result<()> {
    std::fs::create_dir_all(&opts.dir)?;
    let mut disks = (0..opts.rounds.max(1))
        .map(|_| disk_capacity(&opts.dir.join("disk-bench")))
        .collect::<Result<Vec<_>>>()?;
    let disk = median(&mut disks);
    say(
        opts.json,
        format!(
            "disk write+fsync, 30 writers, 1 MiB blobs, median of {}: {disk:.0} MiB/s",
            disks.len()
        ),
    );

    let dev = DevnetOptions {
        hosts: opts.hosts,
        dir: opts.dir.join("devnet"),
        quota: "64GiB".into(),
        exe: opts.exe.clone(),
        // Free storage: the single-stream step puts raw blobs, which hosts of a paid network
        // refuse (no funded offer), and the transfer numbers compare the data path with Tahoe,
        // which has no payments. A paid upload adds 30 contract calls, a fixed cost per upload.
        free_storage: true,
        ..DevnetOptions::default()
    };
    let _ = std::fs::remove_dir_all(&dev.dir);
    let net = devnet::start(&dev).await?;
    let result = measure(&opts, &dev, &net.network, disk).await;
    net.stop().await;
    result
}

async fn measure(
    opts: &BenchOptions,
    dev: &DevnetOptions,
    network: &NetworkFile,
    disk: f64,
) -> Result<()> {
    let json = opts.json;
    let exe = match &opts.exe {
        Some(exe) => exe.clone(),
        None => std::env::current_exe()?,
    };
    let net_path = dev.dir.join("network.json");
    let mut streams = Vec::new();
    for _ in 0..opts.rounds {
        streams.push(single_stream(network, &net_path).await?);
    }
    let stream = median(&mut streams);
    say(
        json,
        format!(
            "libp2p single stream (4 MiB GETs, TCP+Noise+Yamux), median of {}: {stream:.0} MiB/s",
            opts.rounds
        ),
    );

    let file = opts.dir.join("bench-input.bin");
    write_random(&file, opts.size)?;
    let want = Root::of(&std::fs::read(&file)?);
    let host_pids: Vec<u32> = network.hosts.iter().map(|h| h.pid).collect();
    let (mut ups, mut downs, mut rss_up, mut rss_down) = (Vec::new(), Vec::new(), 0u64, 0u64);
    let (mut up_cpu, mut down_cpu) = (CpuSamples::default(), CpuSamples::default());
    for _ in 0..opts.rounds {
        let (up, cpu) = cli_measured(&exe, &["upload", "--json"], &file, &net_path, &host_pids)?;
        up_cpu.push(cpu);
        let link = up["link"]
            .as_str()
            .context("upload report has no link")?
            .to_string();
        let out = opts.dir.join("bench-output.bin");
        let (down, cpu) = cli_measured(
            &exe,
            &["download", &link, "--json", "-o"],
            &out,
            &net_path,
            &host_pids,
        )?;
        down_cpu.push(cpu);
        if Root::of(&std::fs::read(&out)?) != want {
            bail!("downloaded bytes differ from the uploaded file");
        }
        ups.push(rate(&up, opts.size));
        downs.push(rate(&down, opts.size));
        rss_up = rss_up.max(up["peak_rss_bytes"].as_u64().unwrap_or(0));
        rss_down = rss_down.max(down["peak_rss_bytes"].as_u64().unwrap_or(0));
    }
    let (up_rate, down_rate) = (median(&mut ups), median(&mut downs));
    let slowest = disk.min(stream);
    let size_mib = opts.size as f64 / MIB;
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let report = Report {
        hosts: network.hosts.len(),
        size: opts.size,
        rounds: opts.rounds,
        cores,
        disk_mibps: disk,
        stream_mibps: stream,
        upload_mibps: up_rate,
        download_mibps: down_rate,
        upload_cpu: up_cpu.median(opts.size),
        download_cpu: down_cpu.median(opts.size),
        upload_peak_rss_bytes: rss_up,
        download_peak_rss_bytes: rss_down,
    };

    let (u, d) = (report.upload_cpu, report.download_cpu);
    let table = [
        String::new(),
        format!("| measurement (median of {}) | MiB/s |", opts.rounds),
        "|---|---|".into(),
        format!("| disk write+fsync (30 writers, 1 MiB blobs) | {disk:.0} |"),
        format!("| libp2p single stream | {stream:.0} |"),
        format!("| upload {size_mib:.0} MiB end to end | {up_rate:.0} |"),
        format!("| download {size_mib:.0} MiB end to end | {down_rate:.0} |"),
        format!(
            "| goal: upload ≥ slowest stage / 3 = {:.0} | ratio {:.2} |",
            slowest / 3.0,
            up_rate / (slowest / 3.0)
        ),
        String::new(),
        format!(
            "| CPU, user+sys (median of {}, {cores} cores) | tenant s | hosts s | tenant s/GiB | hosts s/GiB |",
            opts.rounds
        ),
        "|---|---|---|---|---|".into(),
        format!(
            "| upload {size_mib:.0} MiB | {:.2} | {:.2} | {:.2} | {:.2} |",
            u.tenant_s, u.hosts_s, u.tenant_s_per_gib, u.hosts_s_per_gib
        ),
        format!(
            "| download {size_mib:.0} MiB | {:.2} | {:.2} | {:.2} | {:.2} |",
            d.tenant_s, d.hosts_s, d.tenant_s_per_gib, d.hosts_s_per_gib
        ),
        String::new(),
        format!(
            "peak RSS ({size_mib:.0} MiB file): upload {:.0} MiB, download {:.0} MiB",
            rss_up as f64 / MIB,
            rss_down as f64 / MIB
        ),
    ];
    for line in table {
        say(json, line);
    }

    if opts.rss_size > 0 {
        let big = opts.dir.join("bench-rss.bin");
        write_random(&big, opts.rss_size)?;
        let up = cli(&exe, &["upload", "--json"], &big, &net_path)?;
        let link = up["link"]
            .as_str()
            .context("upload report has no link")?
            .to_string();
        let out = opts.dir.join("bench-rss.out");
        let down = cli(&exe, &["download", &link, "--json", "-o"], &out, &net_path)?;
        say(
            json,
            format!(
                "peak RSS with a {:.0} MiB file: upload {} MiB, download {} MiB (goal < 256 MiB)",
                opts.rss_size as f64 / MIB,
                rss_mib(&up),
                rss_mib(&down)
            ),
        );
        let _ = std::fs::remove_file(big);
        let _ = std::fs::remove_file(out);
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(())
}

/// A line of the human-readable output: stdout, or stderr when stdout carries the JSON report.
fn say(json: bool, line: String) {
    if json {
        eprintln!("{line}");
    } else {
        println!("{line}");
    }
}

/// Per-round CPU seconds of one kind of transfer.
#[derive(Default)]
struct CpuSamples {
    tenant: Vec<f64>,
    hosts: Vec<f64>,
}

impl CpuSamples {
    fn push(&mut self, (tenant, hosts): (f64, f64)) {
        self.tenant.push(tenant);
        self.hosts.push(hosts);
    }

    fn median(&mut self, size: u64) -> CpuCost {
        CpuCost::new(median(&mut self.tenant), median(&mut self.hosts), size)
    }
}

/// [`cli`], plus the CPU seconds it cost: (the CLI process, all `host_pids` together).
fn cli_measured(
    exe: &Path,
    args: &[&str],
    path: &Path,
    network: &Path,
    host_pids: &[u32],
) -> Result<(serde_json::Value, (f64, f64))> {
    let hosts_before = cpu_seconds_of(host_pids);
    let tenant_before = children_cpu_seconds();
    let report = cli(exe, args, path, network)?;
    let tenant = children_cpu_seconds() - tenant_before;
    let hosts = cpu_seconds_of(host_pids) - hosts_before;
    Ok((report, (tenant, hosts)))
}

fn rate(report: &serde_json::Value, size: u64) -> f64 {
    let ms = report["elapsed_ms"]
        .as_f64()
        .unwrap_or(f64::INFINITY)
        .max(1.0);
    size as f64 / MIB / (ms / 1000.0)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// user+sys CPU seconds of waited-for child processes so far.
fn children_cpu_seconds() -> f64 {
    use nix::sys::resource::{getrusage, UsageWho};
    getrusage(UsageWho::RUSAGE_CHILDREN).map_or(0.0, |u| {
        let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
        t(u.user_time()) + t(u.system_time())
    })
}

/// user+sys CPU seconds of running processes (from /proc/PID/stat).
fn cpu_seconds_of(pids: &[u32]) -> f64 {
    let ticks: u64 = pids
        .iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/stat")).ok())
        .filter_map(|s| {
            // Fields after the ")" that ends the command name; utime and stime are 14 and 15.
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .sum();
    ticks as f64 / 100.0 // USER_HZ, 100 on every Linux ABI
}

fn rss_mib(report: &serde_json::Value) -> String {
    report["peak_rss_bytes"]
        .as_u64()
        .map_or("?".into(), |b| format!("{:.0}", b as f64 / MIB))
}

fn write_random(path: &Path, len: u64) -> Result<()> {
    use std::io::Write;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        rand::thread_rng().fill_bytes(&mut buf);
        let n = left.min(buf.len() as u64) as usize;
        f.write_all(&buf[..n])?;
        left -= n as u64;
    }
    f.flush()?;
    Ok(())
}

/// Runs the real CLI (`exe`) and parses its JSON report.
fn cli(exe: &Path, args: &[&str], path: &Path, network: &Path) -> Result<serde_json::Value> {
    let out = std::process::Command::new(exe)
        .args(args)
        .arg(path)
        .arg("--network")
        .arg(network)
        .output()?;
    if !out.status.success() {
        bail!(
            "btfs {} failed: {}",
            args[0],
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// Aggregate MiB/s of 30 writers putting 1 MiB blobs durably.
fn disk_capacity(dir: &Path) -> Result<f64> {
    let _ = std::fs::remove_dir_all(dir);
    let store = Arc::new(FsStore::open(dir, u64::MAX)?);
    const WRITERS: usize = 30;
    const PER_WRITER: usize = 16;
    let blobs: Vec<Vec<_>> = (0..WRITERS)
        .map(|_| {
            (0..PER_WRITER)
                .map(|_| {
                    let mut b = vec![0u8; 1 << 20];
                    rand::thread_rng().fill_bytes(&mut b);
                    let root = Root::of(&b);
                    root.verify_in(crate::host::store::Body::copy_of(&b))
                        .map(|v| (root, v))
                        .map_err(|_| anyhow::anyhow!("hash"))
                })
                .collect::<Result<Vec<_>>>()
        })
        .collect::<Result<_>>()?;
    let holder = libp2p::PeerId::random();
    let started = Instant::now();
    std::thread::scope(|s| {
        for mine in &blobs {
            let store = store.clone();
            s.spawn(move || {
                for (root, blob) in mine {
                    let _ = store.put(root, blob, holder, 0);
                }
            });
        }
    });
    let elapsed = started.elapsed();
    let written = store.used();
    let _ = std::fs::remove_dir_all(dir);
    if written < ((WRITERS * PER_WRITER) as u64) << 20 {
        bail!("disk bench wrote only {written} bytes");
    }
    Ok(mibps(written, elapsed))
}

/// Sequential 4 MiB GETs from one host over one connection.
async fn single_stream(network: &NetworkFile, path: &Path) -> Result<f64> {
    let hosts = network_file::known_hosts(network, path)?;
    let tenant = Tenant::start(hosts).await?;
    let peer = tenant.connect(0).await?;
    let mut blob = vec![0u8; btfs_core::protocol::MAX_BLOB_LEN as usize];
    rand::thread_rng().fill_bytes(&mut blob);
    let root = Root::of(&blob);
    let mut control = tenant.net().control();
    crate::tenant::shard_client::put(&mut control, peer, root, &blob).await?;
    let rounds = 64u64;
    let started = Instant::now();
    for _ in 0..rounds {
        let got =
            crate::tenant::shard_client::get(&mut control, peer, root, blob.len() as u32).await?;
        if got.len() != blob.len() {
            bail!("short read");
        }
    }
    let rate = mibps(rounds * blob.len() as u64, started.elapsed());
    tenant.shutdown().await;
    Ok(rate)
}

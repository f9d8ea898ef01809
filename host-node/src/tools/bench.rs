//! `btfs bench`: end-to-end throughput of a local devnet, beside the capacity of its stages.
//!
//! Measured in one run, on the same machine:
//! 1. disk: 1 MiB blobs written through the host's `FsStore` (hold record commit, temp file,
//!    fsync, rename, fsync of the directory) by 30 writers at once, as 30 hosts do during an
//!    upload;
//! 2. libp2p single stream: sequential 4 MiB GETs from one host over one TCP+Noise+Yamux
//!    connection (the shard protocol, blob served from the page cache);
//! 3. end to end: `btfs upload` and `btfs download` of a random file (real CLI processes) to a
//!    30-host devnet, timed by the CLI's own report, with each process's peak RSS.
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
}

const MIB: f64 = 1024.0 * 1024.0;

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
    println!(
        "disk write+fsync, 30 writers, 1 MiB blobs, median of {}: {disk:.0} MiB/s",
        disks.len()
    );

    let dev = DevnetOptions {
        hosts: opts.hosts,
        dir: opts.dir.join("devnet"),
        quota: "64GiB".into(),
        ..DevnetOptions::default()
    };
    let _ = std::fs::remove_dir_all(&dev.dir);
    let (children, network) = devnet::start(&dev).await?;
    let result = measure(&opts, &dev, &network, disk).await;
    devnet::stop(children).await;
    result
}

async fn measure(
    opts: &BenchOptions,
    dev: &DevnetOptions,
    network: &NetworkFile,
    disk: f64,
) -> Result<()> {
    let net_path = dev.dir.join("network.json");
    let mut streams = Vec::new();
    for _ in 0..opts.rounds {
        streams.push(single_stream(network, &net_path).await?);
    }
    let stream = median(&mut streams);
    println!(
        "libp2p single stream (4 MiB GETs, TCP+Noise+Yamux), median of {}: {stream:.0} MiB/s",
        opts.rounds
    );

    let file = opts.dir.join("bench-input.bin");
    write_random(&file, opts.size)?;
    let want = Root::of(&std::fs::read(&file)?);
    let host_pids: Vec<u32> = network.hosts.iter().map(|h| h.pid).collect();
    let (mut ups, mut downs, mut up_cpu, mut host_cpu, mut rss_up, mut rss_down) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), 0u64, 0u64);
    for _ in 0..opts.rounds {
        let hosts_before = cpu_seconds_of(&host_pids);
        let tenant_before = children_cpu_seconds();
        let up = cli(&["upload", "--json"], &file, &net_path)?;
        up_cpu.push(children_cpu_seconds() - tenant_before);
        host_cpu.push(cpu_seconds_of(&host_pids) - hosts_before);
        let link = up["link"]
            .as_str()
            .context("upload report has no link")?
            .to_string();
        let out = opts.dir.join("bench-output.bin");
        let down = cli(&["download", &link, "--json", "-o"], &out, &net_path)?;
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
    let (tenant_s, hosts_s) = (median(&mut up_cpu), median(&mut host_cpu));

    println!();
    println!("| measurement (median of {}) | MiB/s |", opts.rounds);
    println!("|---|---|");
    println!("| disk write+fsync (30 writers, 1 MiB blobs) | {disk:.0} |");
    println!("| libp2p single stream | {stream:.0} |");
    println!("| upload {size_mib:.0} MiB end to end | {up_rate:.0} |");
    println!("| download {size_mib:.0} MiB end to end | {down_rate:.0} |");
    println!(
        "| goal: upload ≥ slowest stage / 3 = {:.0} | ratio {:.2} |",
        slowest / 3.0,
        up_rate / (slowest / 3.0)
    );
    println!(
        "CPU per upload of {size_mib:.0} MiB: tenant {tenant_s:.2} s, hosts {hosts_s:.2} s (user+sys; {} cores here)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "peak RSS ({size_mib:.0} MiB file): upload {:.0} MiB, download {:.0} MiB",
        rss_up as f64 / MIB,
        rss_down as f64 / MIB
    );

    if opts.rss_size > 0 {
        let big = opts.dir.join("bench-rss.bin");
        write_random(&big, opts.rss_size)?;
        let up = cli(&["upload", "--json"], &big, &net_path)?;
        let link = up["link"]
            .as_str()
            .context("upload report has no link")?
            .to_string();
        let out = opts.dir.join("bench-rss.out");
        let down = cli(&["download", &link, "--json", "-o"], &out, &net_path)?;
        println!(
            "peak RSS with a {:.0} MiB file: upload {} MiB, download {} MiB (goal < 256 MiB)",
            opts.rss_size as f64 / MIB,
            rss_mib(&up),
            rss_mib(&down)
        );
        let _ = std::fs::remove_file(big);
        let _ = std::fs::remove_file(out);
    }
    Ok(())
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
    ticks as f64 / 100.0
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

/// Runs the real CLI (this executable) and parses its JSON report.
fn cli(args: &[&str], path: &Path, network: &Path) -> Result<serde_json::Value> {
    let exe = std::env::current_exe()?;
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
                    root.verify(b)
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

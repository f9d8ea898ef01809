//! `btfs bench`: end-to-end throughput of a local devnet, beside the capacity of its stages.
//!
//! Measured in one run, on the same machine:
//! 1. disk: 1 MiB blobs written through the host's `FsStore` (temp file, fsync, rename, fsync of
//!    the directory) by 30 writers at once, as 30 hosts do during an upload;
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

use crate::devnet::{self, DevnetOptions};
use crate::network_file::NetworkFile;
use crate::store::{BlobStore, FsStore};
use crate::tenant::Tenant;

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
}

const MIB: f64 = 1024.0 * 1024.0;

fn mibps(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / MIB / d.as_secs_f64().max(1e-9)
}

/// Runs the bench and prints a table.
pub async fn run(opts: BenchOptions) -> Result<()> {
    std::fs::create_dir_all(&opts.dir)?;
    let disk = disk_capacity(&opts.dir.join("disk-bench"))?;
    println!("disk write+fsync, 30 writers, 1 MiB blobs: {disk:.0} MiB/s");

    let dev = DevnetOptions {
        hosts: opts.hosts,
        dir: opts.dir.join("devnet"),
        quota: "64GiB".into(),
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
    let stream = single_stream(network, &net_path).await?;
    println!("libp2p single stream (4 MiB GETs, TCP+Noise+Yamux): {stream:.0} MiB/s");

    let file = opts.dir.join("bench-input.bin");
    write_random(&file, opts.size)?;
    let up = cli(&["upload", "--json"], &file, &net_path)?;
    let link = up["link"]
        .as_str()
        .context("upload report has no link")?
        .to_string();
    let out = opts.dir.join("bench-output.bin");
    let down = cli(&["download", &link, "--json", "-o"], &out, &net_path)?;
    if Root::of(&std::fs::read(&file)?) != Root::of(&std::fs::read(&out)?) {
        bail!("downloaded bytes differ from the uploaded file");
    }
    let up_s = up["elapsed_ms"].as_f64().unwrap_or(1.0) / 1000.0;
    let down_s = down["elapsed_ms"].as_f64().unwrap_or(1.0) / 1000.0;
    let up_rate = opts.size as f64 / MIB / up_s;
    let down_rate = opts.size as f64 / MIB / down_s;
    let slowest = disk.min(stream);
    let size_mib = opts.size as f64 / MIB;

    println!();
    println!("| measurement | MiB/s |");
    println!("|---|---|");
    println!("| disk write+fsync (30 writers) | {disk:.0} |");
    println!("| libp2p single stream | {stream:.0} |");
    println!("| upload {size_mib:.0} MiB end to end | {up_rate:.0} |");
    println!("| download {size_mib:.0} MiB end to end | {down_rate:.0} |");
    println!(
        "| goal: upload ≥ slowest stage / 3 = {:.0} | ratio {:.2} |",
        slowest / 3.0,
        up_rate / (slowest / 3.0)
    );
    println!(
        "peak RSS: upload {} MiB, download {} MiB ({size_mib:.0} MiB file)",
        rss_mib(&up),
        rss_mib(&down)
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
    let started = Instant::now();
    std::thread::scope(|s| {
        for mine in &blobs {
            let store = store.clone();
            s.spawn(move || {
                for (root, blob) in mine {
                    let _ = store.put(root, blob);
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
    let hosts = network.known_hosts(path)?;
    let tenant = Tenant::start(hosts).await?;
    let peer = tenant.connect(0).await?;
    let mut blob = vec![0u8; btfs_core::protocol::MAX_BLOB_LEN as usize];
    rand::thread_rng().fill_bytes(&mut blob);
    let root = Root::of(&blob);
    let mut control = tenant.net().control();
    crate::shard_client::put(&mut control, peer, root, &blob).await?;
    let rounds = 64u64;
    let started = Instant::now();
    for _ in 0..rounds {
        let got = crate::shard_client::get(&mut control, peer, root, blob.len() as u32).await?;
        if got.len() != blob.len() {
            bail!("short read");
        }
    }
    let rate = mibps(rounds * blob.len() as u64, started.elapsed());
    tenant.shutdown().await;
    Ok(rate)
}

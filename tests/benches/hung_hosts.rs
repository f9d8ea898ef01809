//! What hung hosts cost a transfer, on a real devnet: `cargo bench -p btfs-tests --bench
//! hung_hosts` (needs `BTFS_BIN`, the `btfs` binary the devnet and tenant run; set
//! `BTFS_BIN_BASELINE` to another `btfs` to time its tenant side by side on the same devnet).
//!
//! Cases (32 MiB object, medians of `BTFS_BENCH_ROUNDS`, default 3):
//! - download, healthy: 30 hosts;
//! - download, a third hung: the hosts of 10 of slab 0's shards SIGSTOPped after the upload;
//! - upload, a quarter hung: 10 of 40 hosts SIGSTOPped before the upload.
//!
//! Prints a table; nothing is asserted (timings belong here, not in tests).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use btfs_tests::{btfs_bin, manifest_of, random_file, Devnet};

const MIB: usize = 1 << 20;

fn rounds() -> usize {
    std::env::var("BTFS_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn run(bin: &Path, args: &[&str], net: &Devnet) -> Duration {
    let started = Instant::now();
    let out = Command::new(bin)
        .args(args)
        .arg("--network")
        .arg(net.network_path())
        .stdin(Stdio::null())
        .output()
        .expect("run btfs");
    let took = started.elapsed();
    assert!(
        out.status.success(),
        "{} {args:?} failed: {}",
        bin.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    took
}

fn upload_link(bin: &Path, file: &Path, net: &Devnet) -> (String, Duration) {
    let started = Instant::now();
    let out = Command::new(bin)
        .args(["upload", &file.display().to_string(), "--network"])
        .arg(net.network_path())
        .stdin(Stdio::null())
        .output()
        .expect("run btfs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        started.elapsed(),
    )
}

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return; // `cargo test --benches` probes; this bench only runs under `cargo bench`
    }
    let mut bins: Vec<(String, PathBuf)> = vec![("this tree".into(), btfs_bin())];
    if let Some(b) = std::env::var_os("BTFS_BIN_BASELINE") {
        bins.push(("baseline".into(), PathBuf::from(b)));
    }
    let n = rounds();
    let mut rows: Vec<(String, &str, Duration)> = Vec::new();

    let net = Devnet::start(30).expect("devnet");
    let src = net.scratch().join("in.bin");
    random_file(&src, 32 * MIB, 21).expect("file");
    let (link, _) = upload_link(&bins[0].1, &src, &net);
    let manifest = manifest_of(&net, &link).expect("manifest");
    let record = &manifest.slabs()[0];
    let hung: Vec<usize> = (0..10)
        .map(|k| {
            let id = &manifest.hosts()[usize::from(record[k * 3 % 30].host)];
            net.host_index(&bs58::encode(id).into_string())
                .expect("host")
        })
        .collect();
    let out = net.scratch().join("out.bin");
    let out_s = out.display().to_string();
    for (name, bin) in &bins {
        let healthy = (0..n)
            .map(|_| run(bin, &["download", &link, "-o", &out_s], &net))
            .collect();
        rows.push((name.clone(), "download 32 MiB, healthy", median(healthy)));
        let frozen = net.freeze_hosts(&hung);
        let slow = (0..n)
            .map(|_| run(bin, &["download", &link, "-o", &out_s], &net))
            .collect();
        drop(frozen);
        rows.push((
            name.clone(),
            "download 32 MiB, 10 of 30 hosts hung",
            median(slow),
        ));
    }
    drop(net);

    let net = Devnet::start(40).expect("devnet");
    let src = net.scratch().join("in.bin");
    random_file(&src, 32 * MIB, 22).expect("file");
    let hung: Vec<usize> = (0..40).step_by(4).collect();
    for (name, bin) in &bins {
        let frozen = net.freeze_hosts(&hung);
        let ups = (0..n).map(|_| upload_link(bin, &src, &net).1).collect();
        drop(frozen);
        rows.push((
            name.clone(),
            "upload 32 MiB, 10 of 40 hosts hung",
            median(ups),
        ));
    }
    drop(net);

    println!("\n| tenant | case | median of {n} (s) |\n|---|---|---|");
    for (name, case, d) in rows {
        println!("| {name} | {case} | {:.2} |", d.as_secs_f64());
    }
}

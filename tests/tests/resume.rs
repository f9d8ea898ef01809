//! Resumable uploads on a real devnet: `btfs upload` killed with SIGKILL midway keeps a journal
//! beside the wallet; `btfs upload --resume FILE` checks the journaled shards on their hosts,
//! sends only the rest, and the object downloads identical (paid: the devnet has an Escrow, so
//! the resumed upload's contracts cover the shards placed before the kill). A file that changed
//! under a journal is refused, naming the slab, and the journal is dropped; `--resume` with no
//! journal says what there is to resume.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use btfs_tests::{btfs_bin, hash_file, random_file, Devnet};

const MIB: usize = 1 << 20;

/// Journal files in the devnet wallet's journal directory, with their slab lines.
fn journals(net: &Devnet) -> Vec<(PathBuf, usize)> {
    let dir = net.scratch().join("wallet.key.uploads");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "journal"))
        .map(|p| {
            let lines = std::fs::read_to_string(&p)
                .map(|t| t.lines().skip(1).filter(|l| l.ends_with('}')).count())
                .unwrap_or(0);
            (p, lines)
        })
        .collect()
}

/// Starts `btfs upload FILE` and SIGKILLs it once its journal lists `slabs` placed slabs.
fn upload_killed_after(net: &Devnet, file: &Path, slabs: usize) -> usize {
    let mut child = Command::new(btfs_bin())
        .args(["upload", "--slabs-in-flight", "1"])
        .arg(file)
        .arg("--network")
        .arg(net.network_path())
        .env("BTFS_WALLET", net.scratch().join("wallet.key"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start btfs upload");
    let until = Instant::now() + Duration::from_secs(120);
    loop {
        let placed = journals(net).iter().map(|(_, n)| *n).max().unwrap_or(0);
        if placed >= slabs {
            child.kill().expect("kill -9 the upload");
            let _ = child.wait();
            return placed;
        }
        if let Some(status) = child.try_wait().expect("wait") {
            panic!("the upload ended ({status}) before {slabs} slabs were journaled");
        }
        assert!(
            Instant::now() < until,
            "no {slabs} slabs journaled in 120 s"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn upload_json(net: &Devnet, args: &[&str]) -> std::process::Output {
    let mut full = vec!["upload", "--json"];
    full.extend_from_slice(args);
    net.btfs(&full)
}

#[test]
fn a_killed_upload_resumes_without_resending_and_a_changed_file_is_refused() {
    let net = Devnet::start(30).expect("devnet");
    let file = net.scratch().join("big.bin");
    let sha = random_file(&file, 120 * MIB + 12345, 41).expect("file");
    let f = file.display().to_string();

    // Nothing to resume yet: the error says so and how to upload.
    let o = upload_json(&net, &["--resume", &f]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("no unfinished upload of") && err.contains("without --resume"),
        "{err}"
    );

    // Killed after 3 of 13 slabs; the resume sends only the rest.
    let placed = upload_killed_after(&net, &file, 3);
    let o = upload_json(&net, &["--resume", &f]);
    assert!(
        o.status.success(),
        "resume failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json report");
    let resumed = report["resumed_shards"].as_u64().expect("resumed_shards");
    assert!(
        resumed >= (placed * 30) as u64,
        "{placed} slabs were journaled but only {resumed} shards resumed: {report:#}"
    );
    assert!(report["contracts"].is_object(), "paid upload: {report:#}");
    assert!(
        journals(&net).is_empty(),
        "a finished upload keeps no journal"
    );
    let link = report["link"].as_str().expect("link");
    let out = net.scratch().join("big.out");
    net.download(link, &out).expect("download");
    assert_eq!(
        hash_file(&out).expect("hash"),
        sha,
        "resumed upload reads back different"
    );

    // Killed again, then the file changes in a slab already placed: refused, journal dropped.
    upload_killed_after(&net, &file, 2);
    let mut bytes = std::fs::read(&file).expect("read");
    bytes[1000] ^= 1;
    std::fs::write(&file, &bytes).expect("write");
    let o = upload_json(&net, &["--resume", &f]);
    assert!(!o.status.success(), "a changed file was resumed");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("not the one this upload started with: slab 0"),
        "{err}"
    );
    assert!(journals(&net).is_empty(), "the stale journal was kept");
    // Uploading it anew works.
    let o = upload_json(&net, &[&f]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

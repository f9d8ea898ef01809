//! The Hub and Status on a real devnet: 30 host processes and a `btfs service` process, driven
//! through the CLI (`btfs hosts --json`, `btfs status --json`, upload/download).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use btfs_tests::{random_file, Devnet};
use serde_json::Value;

/// The devnet's defaults (`btfs devnet --probe-interval-ms 2000 --report-interval-secs 10`).
const PROBE_MS: u64 = 2000;
const REPORT_SECS: u64 = 10;

fn by_peer(rows: &[Value]) -> HashMap<String, Value> {
    rows.iter()
        .map(|r| (r["peer_id"].as_str().unwrap().to_string(), r.clone()))
        .collect()
}

fn status_json(net: &Devnet) -> Value {
    let out = net.btfs(&[
        "status",
        "--json",
        "--network",
        &net.network_path().display().to_string(),
    ]);
    assert!(
        out.status.success(),
        "btfs status failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Polls `f` every 200 ms until it returns true or `limit` passes; returns the time it took.
fn wait_for(limit: Duration, what: &str, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if f() {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "timed out after {limit:?}: {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn hub_and_status_track_hosts_through_kills_and_restarts() {
    let mut net = Devnet::start(30).unwrap();
    let services = net.services().clone();
    let hub_peer = services["hub"]["peer_id"]
        .as_str()
        .expect("services.hub.peer_id");
    let status_url = services["status"]["http"]
        .as_str()
        .expect("services.status.http");
    assert!(status_url.starts_with("http://127.0.0.1:"), "{status_url}");
    assert_eq!(net.service_info().unwrap().peer_id, hub_peer);

    // Every host is registered, online, scored, with a breakdown.
    let rows = net.hosts_json().unwrap();
    assert_eq!(rows.len(), 30, "{rows:?}");
    let expected: HashSet<&str> = net.hosts().iter().map(|h| h.peer_id.as_str()).collect();
    for r in &rows {
        assert!(expected.contains(r["peer_id"].as_str().unwrap()), "{r}");
        assert_eq!(r["online"], true, "{r}");
        assert!(r["score"].as_f64().unwrap() > 0.0, "{r}");
        for k in ["space", "uptime", "age", "price", "version"] {
            assert!(r["breakdown"][k].is_number(), "breakdown.{k} missing: {r}");
        }
    }

    // An upload goes through Recommend and round-trips.
    let file = net.scratch().join("in.bin");
    let hash = random_file(&file, 3 << 20, 7).unwrap();
    let out = net.btfs(&["upload", &file.display().to_string(), "--json"]);
    assert!(
        out.status.success(),
        "upload failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let link = report["link"].as_str().unwrap().to_string();
    let back = net.scratch().join("out.bin");
    net.download(&link, &back).unwrap();
    assert_eq!(btfs_tests::hash_file(&back).unwrap(), hash);

    // Status has a signed report from every host.
    wait_for(
        Duration::from_secs(3 * REPORT_SECS),
        "Status lists all 30 hosts",
        || status_json(&net)["hosts"].as_array().map_or(0, Vec::len) == 30,
    );
    let status = status_json(&net);
    assert_eq!(status["totals"]["hosts"], 30, "{status}");
    // The next round of reports counts the shards the upload stored.
    wait_for(
        Duration::from_secs(2 * REPORT_SECS + 5),
        "Status counts the uploaded shards",
        || {
            status_json(&net)["totals"]["shards_held"]
                .as_u64()
                .unwrap_or(0)
                >= 30
        },
    );

    // kill -9: the host leaves recommendations within two probe intervals (plus the CLI's
    // own round trip), and comes back after a restart.
    let victim = 3;
    let victim_id = net.hosts()[victim].peer_id.clone();
    net.kill_host(victim);
    let limit = Duration::from_millis(2 * PROBE_MS) + Duration::from_secs(3);
    wait_for(limit, "killed host shown offline and excluded", || {
        let rows = by_peer(&net.hosts_json().unwrap());
        let r = &rows[&victim_id];
        r["online"] == false && !r["excluded"].is_null()
    });
    net.restart_host(victim).unwrap();
    wait_for(
        Duration::from_millis(3 * PROBE_MS) + Duration::from_secs(5),
        "restarted host back online",
        || {
            let rows = by_peer(&net.hosts_json().unwrap());
            rows[&victim_id]["online"] == true && rows[&victim_id]["excluded"].is_null()
        },
    );

    // Hub and Status restart (kill -9) and keep their records.
    let before_hub = by_peer(&net.hosts_json().unwrap());
    let before_status = status_json(&net);
    net.kill_service();
    net.restart_service(PROBE_MS, REPORT_SECS).unwrap();
    let after_status = status_json(&net);
    assert_eq!(
        after_status["hosts"].as_array().map(Vec::len),
        Some(30),
        "Status lost hosts across a restart: {after_status}"
    );
    let first_seen = |s: &Value| -> HashMap<String, u64> {
        s["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| {
                (
                    h["peer_id"].as_str().unwrap().to_string(),
                    h["first_seen_ms"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    assert_eq!(first_seen(&before_status), first_seen(&after_status));
    // Hosts re-announce only every 10 s: a Hub listing all 30 right away comes from its database.
    let after_hub = by_peer(&net.hosts_json().unwrap());
    assert_eq!(after_hub.len(), 30, "Hub lost hosts across a restart");
    for (peer, r) in &after_hub {
        let age_before = before_hub[peer]["facts"]["age_days"].as_f64().unwrap();
        let age_after = r["facts"]["age_days"].as_f64().unwrap();
        assert!(
            age_after >= age_before,
            "{peer}: age {age_before} → {age_after}"
        );
    }
    // And the network still works through the restarted Hub.
    wait_for(
        Duration::from_millis(3 * PROBE_MS) + Duration::from_secs(5),
        "all hosts online after the Hub restart",
        || {
            net.hosts_json()
                .unwrap()
                .iter()
                .all(|r| r["online"] == true)
        },
    );
    let link2 = net.upload(&file).unwrap();
    let back2 = net.scratch().join("out2.bin");
    net.download(&link2, &back2).unwrap();
    assert_eq!(btfs_tests::hash_file(&back2).unwrap(), hash);

    // The human summary names the totals.
    let out = net.btfs(&[
        "status",
        "--network",
        &net.network_path().display().to_string(),
    ]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("30 hosts"), "{text}");
}

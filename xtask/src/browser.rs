//! `cargo xtask test`'s browser phase (alone: `cargo xtask test-browser`): wasm-bindgen tests in
//! headless Chromium against a real 30-host devnet, plus CLI ↔ browser interop, the Guard from
//! the browser (registration, health, the page's own audit, also of an object with one shard
//! deleted from a host's disk), a download with 10 of 30 hosts hung (SIGSTOP, timed) and one with
//! 20 of 30 hosts killed; then, on a second short-lived devnet of 44 hosts, the Guard's repair
//! after `kill -9` of 12 of an object's 30 holders and a browser download that needs the
//! repaired shards.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::{cargo, output, root, run, target_dir, WASM_TARGET};

/// Must equal the `wasm-bindgen` pin in the root Cargo.toml.
const WASM_BINDGEN: &str = "0.2.108";
const MIB: usize = 1 << 20;

/// Installs Chromium, ChromeDriver and the matching wasm-bindgen test runner when missing.
pub fn ensure_tools() -> Result<()> {
    if !Path::new("/usr/bin/chromium").exists() || !Path::new("/usr/bin/chromedriver").exists() {
        let root_user = output(Command::new("id").arg("-u"))
            .as_deref()
            .map(str::trim)
            == Some("0");
        let apt = |args: &[&str]| {
            let mut c = if root_user {
                Command::new("apt-get")
            } else {
                let mut c = Command::new("sudo");
                c.arg("apt-get");
                c
            };
            c.args(args).env("DEBIAN_FRONTEND", "noninteractive");
            c
        };
        run("apt-get update", &mut apt(&["update", "-qq"]))?;
        run(
            "install chromium and chromium-driver",
            &mut apt(&["install", "-y", "-qq", "chromium", "chromium-driver"]),
        )?;
    }
    let have =
        output(Command::new("wasm-bindgen-test-runner").arg("--version")).unwrap_or_default();
    if !have.contains(WASM_BINDGEN) {
        eprintln!(
            "wasm-bindgen-test-runner {:?} is not {WASM_BINDGEN}; installing it",
            have.trim()
        );
        run(
            "cargo install wasm-bindgen-cli",
            Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())).args([
                "install",
                "wasm-bindgen-cli",
                "--version",
                &format!("={WASM_BINDGEN}"),
                "--locked",
            ]),
        )?;
    }
    Ok(())
}

/// Deterministic test bytes; the browser tests generate the same (wasm-client/tests/browser.rs).
fn seeded(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A devnet for the browser tests; stopped on drop.
struct Devnet {
    child: std::process::Child,
    network: PathBuf,
}

impl Devnet {
    fn start(btfs: &Path, dir: &Path, hosts: usize) -> Result<Self> {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir)?;
        let log = std::fs::File::create(dir.join("devnet.log"))?;
        let child = Command::new(btfs)
            .args(["devnet", "--hosts", &hosts.to_string(), "--dir"])
            .arg(dir)
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("cannot start btfs devnet")?;
        let mut net = Self {
            child,
            network: dir.join("network.json"),
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        while !net.network.exists() {
            if net.child.try_wait()?.is_some() || Instant::now() > deadline {
                bail!(
                    "the devnet for the browser tests did not start; see {}",
                    dir.join("devnet.log").display()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(net)
    }
}

impl Drop for Devnet {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

fn btfs_cli(btfs: &Path, args: &[&str], network: &Path) -> Result<String> {
    let out = Command::new(btfs)
        .args(args)
        .arg("--network")
        .arg(network)
        .output()?;
    if !out.status.success() {
        bail!(
            "btfs {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Host pids from network.json (xtask keeps no JSON dependency; the format is ours).
fn host_pids(json: &str) -> Vec<u32> {
    json.match_indices("\"pid\":")
        .filter_map(|(i, m)| {
            let rest = json[i + m.len()..].trim_start();
            let end = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            rest[..end].parse().ok()
        })
        .collect()
}

/// Host processes frozen with SIGSTOP (a hung machine: connections are accepted by the kernel,
/// nothing answers); continued with SIGCONT on drop, so also when a test fails.
struct Stopped(Vec<u32>);

impl Stopped {
    fn stop(pids: &[u32]) -> Result<Self> {
        let mut stopped = Self(Vec::new());
        for &pid in pids {
            let ok = Command::new("kill")
                .args(["-STOP", &pid.to_string()])
                .status()?
                .success();
            if !ok {
                bail!("cannot stop host process {pid}");
            }
            stopped.0.push(pid);
        }
        Ok(stopped)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        for pid in &self.0 {
            let _ = Command::new("kill")
                .args(["-CONT", &pid.to_string()])
                .status();
        }
    }
}

/// Milliseconds of the `BENCH hung_download_ms <ms>` lines a test printed.
fn hung_times(log: &str) -> Vec<f64> {
    log.lines()
        .filter_map(|l| l.split_once("BENCH hung_download_ms "))
        .filter_map(|(_, rest)| rest.split_whitespace().next()?.parse().ok())
        .collect()
}

/// Builds the npm package with wasm-pack and checks that `npm pack` accepts it.
fn npm_package() -> Result<()> {
    let pkg = build_pkg()?;
    run(
        "npm pack --dry-run",
        Command::new("npm")
            .current_dir(pkg)
            .args(["pack", "--dry-run"]),
    )
}

/// Installs wasm-pack if missing and builds the npm package into `wasm-client/pkg/`; returns
/// that directory.
pub fn build_pkg() -> Result<PathBuf> {
    if output(Command::new("wasm-pack").arg("--version")).is_none() {
        run(
            "cargo install wasm-pack",
            Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())).args([
                "install",
                "wasm-pack",
                "--locked",
            ]),
        )?;
    }
    let crate_dir = root().join("wasm-client");
    run(
        "wasm-pack build (npm package)",
        Command::new("wasm-pack")
            .current_dir(&crate_dir)
            .args(["build", "--target", "web", "--release", "--out-dir", "pkg"])
            .env("CARGO_TARGET_DIR", target_dir()),
    )?;
    let pkg = crate_dir.join("pkg");
    for file in [
        "package.json",
        "btfs_client.d.ts",
        "btfs_client.js",
        "btfs_client_bg.wasm",
        "README.md",
    ] {
        if !pkg.join(file).exists() {
            bail!("wasm-pack did not produce pkg/{file}");
        }
    }
    Ok(pkg)
}

/// The dApp page (`www/`) in headless Chromium, served as `cargo xtask demo` serves it: it
/// connects, uploads a file through the file input (registered with the Guard, paid with 30
/// storage contracts that the wallet section then lists), shows its health
/// and passes its own audit ("Audit it yourself"), downloads it back, and the CLI downloads the
/// page's link byte-identical.
fn page_round_trip(btfs: &Path, network: &Path, dir: &Path) -> Result<()> {
    eprintln!("\n==> the dApp page (www/) in headless Chromium");
    let started = Instant::now();
    let addr = crate::www::serve(
        crate::www::Roots {
            www: root().join("www"),
            pkg: root().join("wasm-client").join("pkg"),
            network: network.to_path_buf(),
        },
        0,
    )?;
    let driver = crate::www::Driver::start()?;
    driver.goto(&format!("http://{addr}/"))?;
    let minute = std::time::Duration::from_secs(60);
    let status = driver.wait_text("status", minute, |t| {
        t.starts_with("connected") || t.contains("rror")
    })?;
    if !status.starts_with("connected") || !status.contains("30 hosts known") {
        bail!("the page did not connect: {status}");
    }
    let file = dir.join("page-upload.bin");
    let data = seeded(64 * MIB + 5, 21);
    std::fs::write(&file, &data)?;
    let sum = sha256sum(&file)?;
    let transfer = std::time::Duration::from_secs(240);
    page_transport(&driver, "websocket")?;
    watch_long_tasks(&driver)?;
    let (link, up) = page_upload(&driver, &file, transfer, "WebSocket")?;
    let slabs = page_slabs_done(&driver)?;
    if !up.contains("the Guard watches it") {
        bail!("the page's upload was not registered with the Guard: {up}");
    }
    // Encrypted, Reed-Solomon encoded and hashed off the page's main thread.
    if !up.contains("encoded in a Web Worker") {
        bail!("the page's upload was not encoded in a Web Worker: {up}");
    }
    // Paid with the page's wallet: 30 contracts, which the wallet section lists after it.
    if !up.contains("30 storage contracts") {
        bail!("the page's upload did not report its 30 storage contracts: {up}");
    }
    let listed = driver.wait_text("contracts-summary", minute, |t| {
        t.starts_with("30 active") || t.contains("rror")
    })?;
    if !listed.starts_with("30 active contract(s) in 1 upload(s)") {
        bail!("the page's wallet does not list its upload's contracts: {listed}");
    }
    // After the upload the page shows the Guard's health of every slab; "Audit it yourself"
    // verifies 30 proofs per slab.
    let health = driver.wait_text("health-result", minute, |t| {
        t.contains("healthy") || t.contains("rror") || t.contains("guard:")
    })?;
    if let Some(s) = (0..slabs).find(|s| !health.contains(&format!("slab {s} 30 of 30 healthy"))) {
        bail!("the page did not show the Guard's health of slab {s} of its upload: {health}");
    }
    driver.click("audit")?;
    let audit = driver.wait_text("audit-result", minute, |t| {
        t.contains(" passed, ") || t.contains("rror")
    })?;
    if !audit.starts_with(&format!("{} passed, 0 failed", 30 * slabs)) {
        bail!("the page's own audit of its {slabs} slabs did not pass: {audit}");
    }
    let shots = target_dir().join("www-screenshots");
    driver.execute("document.getElementById('up-title').scrollIntoView()")?;
    driver.screenshot(&shots.join("1-upload-slabs.png"))?;
    driver.execute("document.getElementById('wallet').scrollIntoView()")?;
    driver.screenshot(&shots.join("1-health-wallet.png"))?;
    page_download(&driver, data.len(), &sum, transfer)?;
    page_long_tasks(&driver, "64 MiB download over WebSocket (and its SHA-256)")?;
    let files = driver.text("files")?;
    if !files.contains("page-upload.bin") || !files.contains(&format!("{} bytes", data.len())) {
        bail!("My files does not list the upload: {files}");
    }
    // The hosts view and the network view show what the CLI shows. Both change as the Hub
    // probes (an uptime bit, a host going offline under load), so the page and the CLI are
    // asked again, a few seconds apart, until one pair of answers agrees.
    agree_within(4, || page_hosts_match_cli(&driver, btfs, network))?;
    agree_within(4, || page_status_matches_cli(&driver, btfs, network))?;
    driver.screenshot(&shots.join("2-download-files-hosts-network.png"))?;
    driver.window_size(390, 844)?;
    let overflow = driver.execute(
        "return document.documentElement.scrollWidth - document.documentElement.clientWidth",
    )?;
    driver.screenshot(&shots.join("3-phone-width.png"))?;
    if overflow.as_i64().unwrap_or(0) > 0 {
        // Name the innermost elements that stick out, so the fix is obvious.
        let culprits = driver.execute(
            "const w = document.documentElement.clientWidth; \
             const out = [...document.querySelectorAll('body *')].filter(e => \
               e.getBoundingClientRect().right > w + 0.5 && !e.closest('.scroll *')); \
             return out.filter(e => !out.some(o => o !== e && e.contains(o))).slice(0, 8) \
               .map(e => e.tagName.toLowerCase() + (e.id ? '#' + e.id : '') + \
                 (e.className ? '.' + e.className : '') + ' right=' + \
                 Math.round(e.getBoundingClientRect().right)).join(', ')",
        )?;
        bail!(
            "at phone width (390 px) the page is {overflow} px wider than the screen; \
             sticking out: {culprits}"
        );
    }
    eprintln!("screenshots of the page: {}", shots.display());
    let out = dir.join("page-upload.out");
    cli_download_matches(btfs, network, &link, &out, &data, "the page's upload")?;
    // The same 64 MiB round trip over WebRTC-direct.
    driver.window_size(1280, 900)?;
    let webrtc = Instant::now();
    page_transport(&driver, "webrtc")?;
    let (rtc_link, up) = page_upload(&driver, &file, transfer, "WebRTC-direct")?;
    if rtc_link == link {
        bail!("the page's upload over WebRTC-direct shows the earlier link: {up}");
    }
    page_slabs_done(&driver)?;
    page_download(&driver, data.len(), &sum, transfer)?;
    page_long_tasks(
        &driver,
        "64 MiB download over WebRTC-direct (and its SHA-256)",
    )?;
    let what = "the page's WebRTC-direct upload";
    cli_download_matches(btfs, network, &rtc_link, &out, &data, what)?;
    eprintln!(
        "the dApp page: 64 MiB up and down over WebRTC-direct in {:.0?}",
        webrtc.elapsed()
    );
    page_resume(&driver, &format!("http://{addr}/"), btfs, network, dir)?;
    eprintln!(
        "<== the dApp page: connect, 64 MiB upload with 30 contracts over WebSocket and WebRTC-direct, per-slab progress, wallet, Guard health, own audit, download with checksum, CLI interop ok in {:.0?}",
        started.elapsed()
    );
    Ok(())
}

/// Reload mid-upload, then resume: the page lists the unfinished upload after the reload,
/// choosing the same file again finishes it without re-sending the placed slabs, and the CLI
/// downloads the link byte-identical.
fn page_resume(
    driver: &crate::www::Driver,
    url: &str,
    btfs: &Path,
    network: &Path,
    dir: &Path,
) -> Result<()> {
    let started = Instant::now();
    let minute = std::time::Duration::from_secs(60);
    let file = dir.join("page-resume.bin");
    let data = seeded(64 * MIB + 7, 23);
    std::fs::write(&file, &data)?;
    driver.goto(url)?;
    driver.wait_text("status", minute, |t| {
        t.starts_with("connected") || t.contains("rror")
    })?;
    driver.type_into("file", &file.display().to_string())?;
    driver.click("upload")?;
    // Reload once two slabs are stored: the upload in flight dies with the page.
    let stored = |t: &str| {
        t.split_whitespace()
            .next()
            .and_then(|n| n.parse::<u64>().ok())
    };
    let summary = driver.wait_text("slabs-summary", minute, |t| {
        stored(t).is_some_and(|n| n >= 2)
    })?;
    let placed = stored(&summary).unwrap_or(0);
    if placed >= 7 {
        bail!("the upload finished before the reload: {summary}");
    }
    driver.goto(url)?;
    driver.wait_text("status", minute, |t| {
        t.starts_with("connected") || t.contains("rror")
    })?;
    let listed = driver.wait_text("unfinished", minute, |t| {
        t.contains("page-resume.bin") || t.contains("rror")
    })?;
    if !listed.contains(&format!("page-resume.bin — {} bytes", data.len())) {
        bail!("after a reload the page does not list the unfinished upload: {listed}");
    }
    let shots = target_dir().join("www-screenshots");
    driver.execute("document.getElementById('unfinished-section').scrollIntoView()")?;
    driver.screenshot(&shots.join("4-unfinished.png"))?;
    driver.type_into("resume-0", &file.display().to_string())?;
    let up = driver.wait_text("up-result", std::time::Duration::from_secs(240), |t| {
        !t.is_empty()
    })?;
    let link = page_link(&up, "the resumed upload")?;
    let resumed: u64 = up
        .split("resumed: ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    if resumed < 30 * placed {
        bail!("{placed} slabs were stored before the reload, but the resume reused {resumed} shards: {up}");
    }
    page_slabs_done(driver)?;
    let gone = driver.text("unfinished-section")?;
    if !gone.is_empty() {
        bail!("a finished resume is still listed as unfinished: {gone}");
    }
    driver.execute("document.getElementById('up-title').scrollIntoView()")?;
    driver.screenshot(&shots.join("5-resumed.png"))?;
    let out = dir.join("page-resume.out");
    cli_download_matches(
        btfs,
        network,
        &link,
        &out,
        &data,
        "the page's resumed upload",
    )?;
    eprintln!(
        "the dApp page: reloaded after {placed} of 7 slabs, resumed ({resumed} shards reused), CLI download identical, in {:.0?}",
        started.elapsed()
    );
    Ok(())
}

/// The npm package's README example page, run exactly as written: its HTML is taken from the
/// README's "Example page" section, served next to `pkg/` and the devnet's `network.json`; a
/// file chosen in it makes the round trip, and the CLI downloads its link byte-identical.
fn npm_readme_example(btfs: &Path, network: &Path, dir: &Path) -> Result<()> {
    eprintln!("\n==> the npm README's example page in headless Chromium");
    let started = Instant::now();
    let readme = std::fs::read_to_string(root().join("wasm-client").join("README.md"))?;
    let html = readme_example(&readme)?;
    let site = dir.join("npm-example");
    std::fs::create_dir_all(&site)?;
    std::fs::write(site.join("index.html"), html)?;
    let addr = crate::www::serve(
        crate::www::Roots {
            www: site,
            pkg: root().join("wasm-client").join("pkg"),
            network: network.to_path_buf(),
        },
        0,
    )?;
    let driver = crate::www::Driver::start()?;
    driver.goto(&format!("http://{addr}/"))?;
    let file = dir.join("npm-example.bin");
    let data = seeded(MIB + 17, 33);
    std::fs::write(&file, &data)?;
    // The page connects at load; choosing a file before it has is fine (it awaits first).
    std::thread::sleep(std::time::Duration::from_secs(2));
    driver.type_into("file", &file.display().to_string())?;
    let out = driver.wait_text("out", std::time::Duration::from_secs(120), |t| {
        t.contains("round trip:") || t.contains("rror") || t.contains("caused by")
    })?;
    if !out.contains(&format!("round trip: {} bytes", data.len())) {
        bail!("the README example did not make the round trip: {out}");
    }
    let link = out
        .split_whitespace()
        .next()
        .filter(|l| l.starts_with("btfs://"))
        .with_context(|| format!("the README example printed no link: {out}"))?;
    let back = dir.join("npm-example.out");
    cli_download_matches(
        btfs,
        network,
        link,
        &back,
        &data,
        "the README example's upload",
    )?;
    eprintln!(
        "<== the npm README's example page: upload, download, CLI interop ok in {:.0?}",
        started.elapsed()
    );
    Ok(())
}

/// The ```html block of the README's "## Example page" section.
fn readme_example(readme: &str) -> Result<&str> {
    let section = readme
        .split_once("## Example page")
        .context("wasm-client/README.md has no \"## Example page\" section")?
        .1;
    let start = section
        .find("```html\n")
        .context("the README's example page has no ```html block")?
        + "```html\n".len();
    let len = section[start..]
        .find("```")
        .context("the README's example block is not closed")?;
    Ok(&section[start..start + len])
}

/// Uploads `file` through the page's file input over the transport now chosen; prints the
/// page's long tasks meanwhile; returns the link and the upload's result text.
fn page_upload(
    driver: &crate::www::Driver,
    file: &Path,
    limit: std::time::Duration,
    transport: &str,
) -> Result<(String, String)> {
    driver.execute("document.getElementById('up-result').textContent = ''")?;
    driver.type_into("file", &file.display().to_string())?;
    driver.click("upload")?;
    let up = driver.wait_text("up-result", limit, |t| !t.is_empty())?;
    page_long_tasks(driver, &format!("64 MiB upload over {transport}"))?;
    let link = page_link(&up, &format!("the page's upload over {transport}"))?;
    Ok((link, up))
}

/// The link at the start of the page's upload result, or why `what` failed.
fn page_link(up: &str, what: &str) -> Result<String> {
    up.split_whitespace()
        .next()
        .filter(|l| l.starts_with("btfs://"))
        .map(str::to_string)
        .with_context(|| format!("{what} failed: {up}"))
}

/// The CLI downloads `link` to `out`, byte-identical to `data` (`what` names the upload).
fn cli_download_matches(
    btfs: &Path,
    network: &Path,
    link: &str,
    out: &Path,
    data: &[u8],
    what: &str,
) -> Result<()> {
    btfs_cli(
        btfs,
        &["download", link, "-o", &out.display().to_string()],
        network,
    )?;
    if std::fs::read(out)? != data {
        bail!("{what}, downloaded with the CLI, differs");
    }
    Ok(())
}

/// Runs `check` up to `tries` times, 3 s apart, until it passes; the last error otherwise.
fn agree_within(tries: usize, mut check: impl FnMut() -> Result<()>) -> Result<()> {
    let mut last = None;
    for _ in 0..tries {
        match check() {
            Ok(()) => return Ok(()),
            Err(e) => last = Some(e),
        }
        std::thread::sleep(std::time::Duration::from_secs(3));
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("no check ran")))
}

/// The page's hosts view (refreshed now) lists what `btfs hosts --json` lists: the same hosts,
/// online count and scores.
fn page_hosts_match_cli(driver: &crate::www::Driver, btfs: &Path, network: &Path) -> Result<()> {
    let minute = std::time::Duration::from_secs(60);
    let cli_hosts: serde_json::Value =
        serde_json::from_str(&btfs_cli(btfs, &["hosts", "--json"], network)?)?;
    let cli_hosts = cli_hosts
        .as_array()
        .context("btfs hosts --json is not a list")?;
    let online = cli_hosts.iter().filter(|h| h["online"] == true).count();
    driver.execute("document.getElementById('hosts-summary').textContent = ''")?;
    driver.click("hosts")?;
    let hosts = driver.wait_text("hosts-summary", minute, |t| !t.is_empty())?;
    let want = format!(
        "{} hosts, {online} online; all {} scores recomputed in this page agree with the Hub",
        cli_hosts.len(),
        cli_hosts.len()
    );
    if hosts != want {
        bail!("the page's hosts view says {hosts:?}; from btfs hosts --json: {want:?}");
    }
    let table = driver.text("hosts-table")?;
    for h in cli_hosts {
        let score = h["score"].as_f64().unwrap_or(-1.0);
        let peer = h["peer_id"].as_str().unwrap_or_default();
        let row = table
            .lines()
            .find(|l| l.starts_with(&peer[..20.min(peer.len())]))
            .with_context(|| format!("the hosts view has no row for {peer}"))?;
        // host, online, Hub score, recomputed, …; scores drift by ~1e-6 per second (age).
        let cells: Vec<&str> = row.split_whitespace().collect();
        let shown: Vec<f64> = cells
            .iter()
            .skip(2)
            .take(2)
            .filter_map(|c| c.parse().ok())
            .collect();
        if shown.len() != 2 || shown.iter().any(|s| (s - score).abs() > 0.002) {
            bail!("the hosts view shows {row:?} for {peer}; btfs hosts --json says score {score}");
        }
    }
    Ok(())
}

/// The page's network view (refreshed now) shows the totals of `btfs status --json`.
fn page_status_matches_cli(driver: &crate::www::Driver, btfs: &Path, network: &Path) -> Result<()> {
    let cli_status: serde_json::Value =
        serde_json::from_str(&btfs_cli(btfs, &["status", "--json"], network)?)?;
    driver.execute("document.getElementById('net-summary').textContent = ''")?;
    driver.click("net-status")?;
    let net = driver.wait_text("net-summary", std::time::Duration::from_secs(60), |t| {
        !t.is_empty()
    })?;
    let t = &cli_status["totals"];
    let want = format!("{} hosts, {} online;", t["hosts"], t["online"]);
    if !net.starts_with(&want) {
        bail!("the page's network view says {net:?}; btfs status --json: {want:?}");
    }
    Ok(())
}

/// Picks `transport` in the page's transport menu and waits until it reconnected.
fn page_transport(driver: &crate::www::Driver, transport: &str) -> Result<()> {
    driver.execute(&format!(
        "const s = document.getElementById('transport'); s.value = '{transport}'; \
         s.dispatchEvent(new Event('change'));"
    ))?;
    let status = driver.wait_text("status", std::time::Duration::from_secs(60), |t| {
        t.starts_with("connected") || t.contains("rror")
    })?;
    if !status.starts_with("connected") {
        bail!("the page did not connect over {transport}: {status}");
    }
    Ok(())
}

/// Starts recording the page's main-thread long tasks (over 50 ms).
fn watch_long_tasks(driver: &crate::www::Driver) -> Result<()> {
    driver.execute(
        "window.__btfsLong = []; new PerformanceObserver((l) => { \
           for (const e of l.getEntries()) window.__btfsLong.push(e.duration); \
         }).observe({ type: 'longtask' });",
    )?;
    Ok(())
}

/// Prints (and forgets) the long tasks the page's main thread had since the last call: the
/// goal is none over 50 ms during a transfer (issue #14; measured here, not yet asserted).
fn page_long_tasks(driver: &crate::www::Driver, what: &str) -> Result<()> {
    let got = driver.execute(
        "const l = window.__btfsLong || []; window.__btfsLong = []; \
         return [l.length, Math.round(l.reduce((a, b) => Math.max(a, b), 0)), \
                 Math.round(l.reduce((a, b) => a + b, 0))];",
    )?;
    eprintln!("page main-thread long tasks during the {what}: {got} (count, longest ms, total ms)");
    Ok(())
}

/// Every slab cell of the page's last upload is full; returns the number of slabs.
fn page_slabs_done(driver: &crate::www::Driver) -> Result<u64> {
    let summary = driver.text("slabs-summary")?;
    let n: Vec<u64> = summary
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    let cells = driver.execute(
        "return [...document.querySelectorAll('#slabs span')].filter(c => c.classList.contains('done')).length",
    )?;
    match n[..] {
        [done, slabs, 30] if done == slabs && slabs >= 7 && cells.as_u64() == Some(slabs) => {
            Ok(slabs)
        }
        _ => bail!("the page's per-slab progress is not complete: {summary:?}, {cells} cells full"),
    }
}

/// Clicks Download and checks the saved file's name, size and SHA-256 shown by the page.
fn page_download(
    driver: &crate::www::Driver,
    len: usize,
    sum: &str,
    limit: std::time::Duration,
) -> Result<()> {
    driver.execute("document.getElementById('down-result').textContent = ''")?;
    driver.click("download")?;
    let down = driver.wait_text("down-result", limit, |t| !t.is_empty())?;
    // Saved under the object's own name from its sealed header, not a generic one.
    if !down.starts_with(&format!("save page-upload.bin ({len} bytes")) {
        bail!("the page's download failed or lost the file's name: {down}");
    }
    if !down.contains(&format!("sha-256 {sum}")) {
        bail!("the page's download differs from the file: {down}, want sha-256 {sum}");
    }
    Ok(())
}

/// The SHA-256 of `file`, in hex (`sha256sum`).
fn sha256sum(file: &Path) -> Result<String> {
    let out = Command::new("sha256sum")
        .arg(file)
        .output()
        .context("sha256sum is missing")?;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .map(str::to_string)
        .context("sha256sum printed nothing")
}

/// The contracts a browser upload committed (its test prints `BTFS_WALLET <peer>` and one
/// `BTFS_CONTRACT <id>` line each), as the native CLI sees them at the Escrow:
/// `btfs contracts --peer <browser wallet> --json` lists every one as `active`.
fn browser_contracts_seen_by_the_cli(btfs: &Path, network: &Path, log: &str) -> Result<()> {
    let field = |tag: &str| -> Vec<String> {
        log.lines()
            .filter_map(|l| l.split_once(tag).map(|(_, v)| v.trim().to_string()))
            .collect()
    };
    let peer = field("BTFS_WALLET ")
        .pop()
        .context("the browser contracts test printed no BTFS_WALLET line")?;
    let ids = field("BTFS_CONTRACT ");
    if ids.len() != 30 {
        bail!(
            "the browser upload printed {} contract ids, expected 30",
            ids.len()
        );
    }
    let json = btfs_cli(btfs, &["contracts", "--peer", &peer, "--json"], network)?;
    for id in &ids {
        // Pretty JSON of `ContractView`s: `state` follows `id` (the signed document's own
        // fields are inside an escaped string, so they do not match).
        let at = json
            .find(&format!("\"id\": \"{id}\""))
            .with_context(|| format!("btfs contracts --peer {peer} does not list {id}"))?;
        let state = json[at..]
            .split_once("\"state\": \"")
            .and_then(|(_, rest)| rest.split('"').next())
            .unwrap_or("");
        if state != "active" {
            bail!("the CLI sees the browser's contract {id} as {state:?}, not active");
        }
    }
    eprintln!(
        "browser → CLI: the 30 contracts of the browser wallet {peer} are active at the Escrow"
    );
    Ok(())
}

/// `cargo test` of one browser test target in headless Chromium, with the devnet description
/// compiled in and an optional test-name filter.
fn wasm_test_command(test_target: &str, network_json: &str, filter: &str) -> Command {
    let mut cmd = wasm_test_cargo(test_target, network_json);
    cmd.args(["--", "--nocapture"])
        .args((!filter.is_empty()).then_some(filter));
    cmd
}

/// [`wasm_test_command`] without the test runner's arguments (add `--no-run` to only build).
fn wasm_test_cargo(test_target: &str, network_json: &str) -> Command {
    let mut cmd = cargo();
    cmd.current_dir(root().join("wasm-client"))
        .args([
            "test",
            "-p",
            "btfs-client",
            "--target",
            WASM_TARGET,
            "--release",
            "--locked",
        ])
        .args(["--test", test_target])
        .env(
            "CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER",
            "wasm-bindgen-test-runner",
        )
        .env("CHROMEDRIVER", "/usr/bin/chromedriver")
        .env("BTFS_TEST_NETWORK_JSON", network_json);
    cmd
}

/// Runs one browser test command (see [`wasm_test_command`]), echoes its output and returns it.
fn run_wasm_test(mut cmd: Command, what: &str) -> Result<String> {
    eprintln!("\n==> {what}");
    let started = Instant::now();
    let out = cmd.output().with_context(|| format!("cannot run {what}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{text}");
    if !out.status.success() {
        bail!("{what} failed");
    }
    eprintln!("<== {what}: ok in {:.0?}", started.elapsed());
    Ok(text)
}

/// Only the dApp page's test (part of [`tests`]), for working on the page.
pub fn page_tests() -> Result<()> {
    ensure_tools()?;
    npm_package()?;
    let btfs = target_dir().join("debug").join("btfs");
    let dir = target_dir().join("page-test-devnet");
    let net = Devnet::start(&btfs, &dir, 30)?;
    page_round_trip(&btfs, &net.network, &dir)
}

/// Runs the browser phase.
pub fn tests() -> Result<()> {
    ensure_tools()?;
    npm_package()?;
    let btfs = target_dir().join("debug").join("btfs");
    let dir = target_dir().join("browser-test-devnet");
    let net = Devnet::start(&btfs, &dir, 30)?;
    let network_json = std::fs::read_to_string(&net.network)?;

    // CLI → browser: the native CLI uploads a file that a browser test downloads as a stream.
    let cli_file = dir.join("cli-upload.bin");
    std::fs::write(&cli_file, seeded(5 * MIB + 123, 7))?;
    let cli_link = btfs_cli(
        &btfs,
        &["upload", &cli_file.display().to_string()],
        &net.network,
    )?;

    // A shard deleted from a host's disk: the browser's own audit must fail exactly that one.
    let (damaged_link, damaged_root) = delete_one_shard(&btfs, &net.network, &dir)?;

    let test_target = "browser";
    let wasm_test = |extra_env: &[(&str, &str)], filter: &str, what: &str| -> Result<String> {
        let mut cmd = wasm_test_command(test_target, &network_json, filter);
        cmd.env("WASM_BINDGEN_TEST_TIMEOUT", "300")
            .env("BTFS_TEST_CLI_LINK", &cli_link)
            .env("BTFS_TEST_DAMAGED_LINK", &damaged_link)
            .env("BTFS_TEST_DAMAGED_ROOT", &damaged_root);
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        run_wasm_test(cmd, what)
    };
    let log = wasm_test(&[], "", "browser tests in headless Chromium (30 hosts up)")?;

    // Browser → CLI: every link the browser printed downloads with the native CLI.
    let links: Vec<(String, String)> = log
        .lines()
        .filter_map(|l| {
            l.split_once("BTFS_LINK ")
                .map(|(_, rest)| rest.trim().to_string())
        })
        .filter_map(|rest| {
            rest.split_once(' ')
                .map(|(n, l)| (n.to_string(), l.to_string()))
        })
        .collect();
    if links.len() < 2 {
        bail!(
            "the browser tests printed {} links, expected 2",
            links.len()
        );
    }
    for (name, link) in &links {
        let seed: u64 = name
            .rsplit('-')
            .next()
            .and_then(|s| s.parse().ok())
            .context("bad link name")?;
        let out = dir.join(format!("browser-{name}.out"));
        let what = format!("the browser's upload {name}");
        cli_download_matches(
            &btfs,
            &net.network,
            link,
            &out,
            &seeded(16 * MIB, seed),
            &what,
        )?;
        eprintln!("browser → CLI interop ok: {name}");
    }

    browser_contracts_seen_by_the_cli(&btfs, &net.network, &log)?;

    page_round_trip(&btfs, &net.network, &dir)?;
    npm_readme_example(&btfs, &net.network, &dir)?;

    // Hang 10 of the 30 hosts (each holds shards of every slab, the first ones also the
    // manifest copies the download asks first); the browser download finishes by hedging.
    let hung_file = dir.join("hung-32MiB.bin");
    std::fs::write(&hung_file, seeded(32 * MIB, 32))?;
    let hung_link = btfs_cli(
        &btfs,
        &["upload", &hung_file.display().to_string()],
        &net.network,
    )?;
    let pids = host_pids(&network_json);
    let log = {
        let _stopped = Stopped::stop(&pids[..10.min(pids.len())])?;
        wasm_test(
            &[
                ("BTFS_TEST_HUNG_LINK", &hung_link),
                ("BTFS_TEST_HUNG_RUNS", "3"),
            ],
            "download_with_10_of_30_hosts_hung",
            "browser download with 10 of 30 hosts hung (SIGSTOP)",
        )?
    };
    let mut times = hung_times(&log);
    times.sort_by(f64::total_cmp);
    if let Some(median) = times.get(times.len() / 2) {
        eprintln!(
            "hung hosts: 32 MiB browser download over WebSocket with 10 of 30 hosts stopped: median {:.1} s of {:?} ms",
            median / 1000.0,
            times
        );
    }

    // Kill 20 of the 30 hosts; the browser still downloads the WebSocket upload.
    for pid in host_pids(&network_json).iter().take(20) {
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    }
    let ws_link = links
        .iter()
        .find(|(n, _)| n.starts_with("websocket"))
        .map(|(_, l)| l.clone())
        .context("no websocket link printed")?;
    wasm_test(
        &[("BTFS_TEST_DEGRADED_LINK", &ws_link)],
        "download_with_20_of_30_hosts_killed",
        "browser download with 20 of 30 hosts killed",
    )?;
    drop(net);

    repair(&btfs, &target_dir().join("browser-repair-devnet"))
}

/// Hosts of the repair phase's devnet: the slab's 30 holders plus exactly the 12 hosts
/// without a shard of it that the Guard's repair needs for the 12 rebuilt shards, and 2 more
/// so that the repair does not depend on every spare host being ranked.
const REPAIR_HOSTS: usize = 44;
/// How long the Guard has to bring the slab back to 30 healthy, audited shards (devnet epochs
/// are 5 s: a few epochs to see the failures, one repair, one epoch to audit the new holders).
const REPAIR_WAIT: Duration = Duration::from_secs(150);

/// The Guard's repair, seen from the browser, on a short-lived devnet of its own
/// ([`REPAIR_HOSTS`]; the main phase's 30 hosts leave no host free to repair to): the CLI
/// uploads a one-slab object, 12 of its 30 holders are `kill -9`ed, the Guard must report the
/// slab back at 30 healthy, audited shards on other hosts within [`REPAIR_WAIT`], then original
/// holders die until 9 are left (fewer than the 10 a download needs, so it can only succeed
/// with repaired shards), and a browser test downloads the unchanged link byte-identical
/// (`a_repaired_object_downloads_with_most_original_holders_dead`).
fn repair(btfs: &Path, dir: &Path) -> Result<()> {
    eprintln!("\n==> repair: {REPAIR_HOSTS}-host devnet, 12 of an object's 30 holders killed");
    let started = Instant::now();
    let net = Devnet::start(btfs, dir, REPAIR_HOSTS)?;
    let network_json = std::fs::read_to_string(&net.network)?;
    let network = btfs_core::network_file::NetworkFile::parse(network_json.as_bytes())
        .map_err(|e| anyhow::anyhow!("the repair devnet's network.json: {e}"))?;
    let pid_of = |peer: &str| -> Result<u32> {
        network
            .hosts
            .iter()
            .find(|h| h.peer_id == peer)
            .map(|h| h.pid)
            .filter(|&pid| pid > 0)
            .with_context(|| format!("host {peer} is not in the repair devnet's network.json"))
    };

    // Must match REPAIRED_LEN and the seed in wasm-client/tests/browser.rs.
    let file = dir.join("repair-3MiB.bin");
    std::fs::write(&file, seeded(3 * MIB + 52, 52))?;
    let up: serde_json::Value = serde_json::from_str(&btfs_cli(
        btfs,
        &["upload", "--json", &file.display().to_string()],
        &net.network,
    )?)?;
    if up["guard"] != "watching" {
        bail!("the repair phase's upload was not registered with the Guard: {up}");
    }
    let link = up["link"]
        .as_str()
        .with_context(|| format!("no link in the upload report: {up}"))?
        .to_string();
    let health = guard_health(btfs, &link, &net.network)?;
    if health.slabs.len() != 1 || health.slabs[0].shards.len() != 30 {
        bail!("expected one slab of 30 shards: {health:?}");
    }
    let original: Vec<String> = health.slabs[0]
        .shards
        .iter()
        .map(|s| s.host.clone())
        .collect();

    // kill -9 the holders of shards 0..12.
    let mut dead: Vec<String> = Vec::new();
    for peer in &original[..12] {
        sigkill(pid_of(peer)?)?;
        dead.push(peer.clone());
    }
    let killed_at = Instant::now();
    let repaired = loop {
        let h = guard_health(btfs, &link, &net.network)?;
        let slab = &h.slabs[0];
        let done = slab.healthy == 30
            && slab
                .shards
                .iter()
                .all(|s| s.passed == Some(true) && !dead.contains(&s.host));
        if done {
            break h;
        }
        if killed_at.elapsed() > REPAIR_WAIT {
            bail!(
                "the Guard did not bring the slab back to 30 healthy, audited shards on live hosts within {REPAIR_WAIT:?} of killing 12 holders (see {}): {h:?}",
                dir.join("service").join("service.log").display()
            );
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    let repair_secs = killed_at.elapsed().as_secs_f64();
    let mut new_holders = std::collections::BTreeSet::new();
    for (k, s) in repaired.slabs[0].shards.iter().enumerate() {
        let moved = s.host != original[k];
        let fresh = !original.contains(&s.host) && new_holders.insert(s.host.clone());
        if moved != (k < 12) || (moved && !fresh) {
            bail!(
                "after the repair shard {k} is on {} (originally {}): only the 12 lost shards move, each to its own host that held nothing of the slab",
                s.host,
                original[k]
            );
        }
    }

    // The browser test is built first (its inputs are compile-time), so that the download runs
    // right after the next kills.
    let lost = original[..12].join(",");
    let test_env = |mut cmd: Command| {
        cmd.env("WASM_BINDGEN_TEST_TIMEOUT", "300")
            .env("BTFS_TEST_REPAIRED_LINK", &link)
            .env("BTFS_TEST_REPAIRED_LOST", &lost);
        cmd
    };
    let mut build = test_env(wasm_test_cargo("browser", &network_json));
    run("build the repair browser test", build.arg("--no-run"))?;

    // Original holders die until 9 are left alive: the download needs a repaired shard.
    for peer in &original[12..21] {
        sigkill(pid_of(peer)?)?;
        dead.push(peer.clone());
    }
    let alive = original.iter().filter(|p| !dead.contains(p)).count();
    if alive >= 10 {
        bail!("{alive} original holders still alive; the download would not need the repair");
    }
    eprintln!(
        "repair: 30 of 30 healthy {repair_secs:.0} s after 12 holders were killed ({} shards repaired); {alive} original holders left alive",
        repaired.repaired_shards
    );
    run_wasm_test(
        test_env(wasm_test_command(
            "browser",
            &network_json,
            "a_repaired_object",
        )),
        "browser download of a repaired object with 21 of its 30 original holders dead",
    )?;
    drop(net);
    eprintln!(
        "<== repair phase (devnet start, upload, repair, browser download): ok in {:.0?}",
        started.elapsed()
    );
    Ok(())
}

/// `btfs health LINK --json`: the Guard's view of the object.
fn guard_health(
    btfs: &Path,
    link: &str,
    network: &Path,
) -> Result<btfs_core::guard_wire::ObjectHealth> {
    let json = btfs_cli(btfs, &["health", link, "--json"], network)?;
    serde_json::from_str(&json).with_context(|| format!("`btfs health --json` printed {json}"))
}

/// `kill -9 PID`.
fn sigkill(pid: u32) -> Result<()> {
    let ok = Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()?
        .success();
    if !ok {
        bail!("cannot kill host process {pid}");
    }
    Ok(())
}

/// Uploads a 3 MiB file with the CLI, asks the Guard for its shards (`btfs health --json`) and
/// deletes the file of slab 0's shard 0 from its host's disk (`<data_dir>/blobs/<2 hex>/<hex>`,
/// found by name under the devnet's hosts/). Returns the link and the deleted shard's root. One lost
/// shard leaves 29 of 30 healthy, above the Guard's repair threshold: nothing repairs it during
/// the tests.
fn delete_one_shard(btfs: &Path, network: &Path, dir: &Path) -> Result<(String, String)> {
    let file = dir.join("damaged-3MiB.bin");
    std::fs::write(&file, seeded(3 * MIB, 41))?;
    let link = btfs_cli(btfs, &["upload", &file.display().to_string()], network)?;
    let health = btfs_cli(btfs, &["health", &link, "--json"], network)?;
    let root = health
        .split("\"root\"")
        .nth(1)
        .and_then(|r| r.split('"').nth(1))
        .filter(|r| r.len() == 64 && r.bytes().all(|b| b.is_ascii_hexdigit()))
        .with_context(|| format!("no shard root in `btfs health --json`: {health}"))?
        .to_string();
    let hosts = dir.join("hosts");
    let path = find_file(&hosts, &root)?
        .with_context(|| format!("no host under {} stores shard {root}", hosts.display()))?;
    std::fs::remove_file(&path).with_context(|| format!("cannot delete {}", path.display()))?;
    eprintln!("deleted shard {root} of {link} from {}", path.display());
    Ok((link, root))
}

/// The first file named `name` under `dir`.
fn find_file(dir: &Path, name: &str) -> Result<Option<PathBuf>> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            if let Some(found) = find_file(&path, name)? {
                return Ok(Some(found));
            }
        } else if entry.file_name() == name {
            return Ok(Some(path));
        }
    }
    Ok(None)
}

/// Median of three runs of `f`, in MiB/s for `bytes`.
fn median_rate(bytes: usize, mut f: impl FnMut()) -> f64 {
    let mut r: Vec<f64> = (0..3)
        .map(|_| {
            let t = Instant::now();
            f();
            bytes as f64 / MIB as f64 / t.elapsed().as_secs_f64()
        })
        .collect();
    r.sort_by(f64::total_cmp);
    r[1]
}

/// Runs one browser bench target in headless Chromium; returns its console output.
fn run_bench_target(target: &str, network_json: &str, env: &[(&str, &str)]) -> Result<String> {
    let mut cmd = wasm_test_command(target, network_json, "");
    cmd.envs(env.iter().copied());
    let o = cmd.output()?;
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    if !o.status.success() {
        eprintln!("{log}");
        bail!("the browser bench {target} failed");
    }
    Ok(log)
}

/// The value of a `BENCH <name> <value>` line.
fn bench_value(log: &str, name: &str) -> Option<f64> {
    log.lines()
        .find_map(|l| {
            l.split_once(&format!("BENCH {name} "))
                .map(|(_, v)| v.trim().parse().ok())
        })
        .flatten()
}

/// `cargo xtask bench-browser`: browser vs native CLI on one devnet, and RS/BLAKE3 in wasm vs
/// native, all in one run.
pub fn bench() -> Result<()> {
    ensure_tools()?;
    run(
        "cargo build --release -p btfs-host",
        cargo().args(["build", "--release", "-p", "btfs-host", "--locked"]),
    )?;
    let btfs = target_dir().join("release").join("btfs");
    let dir = target_dir().join("browser-bench-devnet");
    let net = Devnet::start(&btfs, &dir, 30)?;
    let network_json = std::fs::read_to_string(&net.network)?;

    // Native stages, same inputs as the browser's.
    let data: Vec<u8> = (0..40 * MIB)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761) as u8)
        .collect();
    let native_rs = median_rate(data.len(), || {
        for slab in data.chunks_exact(10 * MIB) {
            std::hint::black_box(btfs_core::erasure::encode(slab, MIB).ok());
        }
    });
    let native_b3 = median_rate(data.len(), || {
        for chunk in data.chunks(MIB) {
            std::hint::black_box(btfs_core::Root::of(chunk));
        }
    });

    // Native CLI on the same devnet, 64 and 256 MiB.
    let cli_rate = |report: &str, mib: f64| -> f64 {
        let ms = report
            .split("\"elapsed_ms\":")
            .nth(1)
            .and_then(|r| r.trim_start().split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|n| n.parse::<f64>().ok())
            .unwrap_or(f64::INFINITY);
        mib / (ms.max(1.0) / 1000.0)
    };
    let mut cli = Vec::new();
    for mib in [64usize, 256] {
        let file = dir.join(format!("bench-{mib}MiB.bin"));
        std::fs::write(&file, seeded(mib * MIB, 11))?;
        let up = btfs_cli(
            &btfs,
            &["upload", "--json", &file.display().to_string()],
            &net.network,
        )?;
        let link = up
            .split("\"link\":")
            .nth(1)
            .and_then(|r| r.split('"').nth(1))
            .context("no link in the upload report")?
            .to_string();
        let out = dir.join(format!("bench-{mib}MiB.out"));
        let down = btfs_cli(
            &btfs,
            &[
                "download",
                &link,
                "--json",
                "-o",
                &out.display().to_string(),
            ],
            &net.network,
        )?;
        cli.push((mib, cli_rate(&up, mib as f64), cli_rate(&down, mib as f64)));
        let _ = std::fs::remove_file(&file);
        let _ = std::fs::remove_file(&out);
    }

    let log = run_bench_target(
        "browser_bench",
        &network_json,
        &[("WASM_BINDGEN_TEST_TIMEOUT", "1200")],
    )?;
    let get = |name: &str| bench_value(&log, name);
    let show = |v: Option<f64>| v.map_or("failed".to_string(), |v| format!("{v:.0}"));
    println!(
        "\n| measurement (same devnet, same run) | MiB/s | main-thread long tasks > 50 ms (count, longest ms) | wasm heap after, MiB |\n|---|---|---|---|"
    );
    for (mib, up, down) in &cli {
        println!("| native CLI upload {mib} MiB | {up:.0} | | |");
        println!("| native CLI download {mib} MiB | {down:.0} | | |");
    }
    for mib in [64, 256] {
        for t in ["websocket", "webrtc"] {
            let name = format!("{mib}_{t}");
            let heap = show(get(&format!("heap_mib_after_{name}")));
            for dir in ["upload", "download"] {
                println!(
                    "| browser {dir} {mib} MiB over {t} | {} | {}, {} | {heap} |",
                    show(get(&format!("browser_{dir}_{name}"))),
                    show(get(&format!("longtask_count_{dir}_{name}"))),
                    show(get(&format!("longtask_max_ms_{dir}_{name}"))),
                );
            }
        }
    }
    let (wrs, wb3) = (get("wasm_rs_encode"), get("wasm_blake3"));
    println!("\n| stage (40 MiB) | native MiB/s | wasm MiB/s | wasm / native |\n|---|---|---|---|");
    println!(
        "| Reed-Solomon 10+20 encode | {native_rs:.0} | {} | {} |",
        show(wrs),
        wrs.map_or("-".into(), |w| format!("{:.2}", w / native_rs))
    );
    println!(
        "| BLAKE3 | {native_b3:.0} | {} | {} |",
        show(wb3),
        wb3.map_or("-".into(), |w| format!("{:.2}", w / native_b3))
    );
    for l in log.lines().filter(|l| l.contains("BENCH_FAIL")) {
        println!("note: {}", l.trim());
    }

    // Peak wasm heap for a large file (its own wasm instance, so nothing else shares the heap).
    let heap_mib = std::env::var("BTFS_HEAP_BENCH_MIB").unwrap_or_else(|_| "1024".into());
    let log = run_bench_target(
        "browser_heap",
        &network_json,
        &[
            ("WASM_BINDGEN_TEST_TIMEOUT", "1800"),
            ("BTFS_HEAP_BENCH_MIB", &heap_mib),
        ],
    )?;
    let get = |name: &str| bench_value(&log, name);
    let show1 = |v: Option<f64>| v.map_or("failed".to_string(), |v| format!("{v:.1}"));
    println!("\n| {heap_mib} MiB file over WebSocket (one wasm instance) | value |\n|---|---|");
    println!(
        "| wasm heap at start, MiB | {} |",
        show1(get("heap_start_mib"))
    );
    println!(
        "| wasm heap after upload (peak so far), MiB | {} |",
        show1(get("heap_after_upload_mib"))
    );
    println!(
        "| wasm heap after streamed download (peak), MiB | {} |",
        show1(get("heap_after_download_mib"))
    );
    println!("| upload MiB/s | {} |", show1(get("heap_upload_rate")));
    println!(
        "| streamed download MiB/s | {} |",
        show1(get("heap_download_rate"))
    );
    drop(net);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_npm_readme_has_the_example_page_ci_runs() {
        let readme = std::fs::read_to_string(root().join("wasm-client").join("README.md")).unwrap();
        let html = readme_example(&readme).unwrap();
        assert!(html.contains("BtfsClient.connect") && html.contains("id=\"out\""));
        assert!(readme_example("no example here").is_err());
    }
}

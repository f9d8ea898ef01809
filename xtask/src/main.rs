//! Project automation, run as `cargo xtask <command>`.
//!
//! - `demo`: installs what it needs, builds, starts a 30-host devnet, proves a round trip and
//!   prints how to use it; runs until Ctrl-C.
//! - `test`: installs what it needs, then runs every check CI runs: fmt, clippy (native and
//!   wasm32), the wasm32 build of `btfs-core`, and every test.
//! - `test-browser`: only `test`'s browser phase (headless Chromium against a devnet).
//! - `soak [--secs N] [--seed S]`: the soak test (`tests/tests/soak.rs`) for N seconds
//!   (default 600) on a namespaced devnet; its report goes to `target/soak-report.json`.
//!   `test` runs a 45 s slice of it.
//!
//! The build cache lives in `$CARGO_TARGET_DIR`, defaulting to `~/.cache/btfs-target`, so
//! repeat runs are quick; nothing depends on it being warm.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use anyhow::{bail, Context, Result};

mod browser;
mod fuzz;
mod www;

const WASM_TARGET: &str = "wasm32-unknown-unknown";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test") => test(),
        Some("test-browser") => test_browser(),
        Some("test-page") => test_page(),
        Some("demo") => demo(&args[1..]),
        Some("bench-browser") => browser::bench(),
        Some("fuzz") => fuzz::fuzz(&args[1..]),
        Some("soak") => soak(&args[1..]),
        _ => {
            eprintln!("usage: cargo xtask <test|test-browser|demo|bench-browser|fuzz>\n  test           run every check and test (what CI runs)\n  test-browser   only the browser phase of `test` (headless Chromium against a devnet)\n  test-page      only the dApp page's test (part of test-browser)\n  demo           start a local 30-host network and show it working\n  bench-browser  browser vs native throughput on one devnet (needs Chromium)\n  fuzz [--time SECS] [TARGET...]  fuzzing campaigns on nightly (default: every target, 600 s each)\n  soak [--secs N] [--seed S]  kills and restarts under load on a namespaced devnet (default 600 s; needs root)");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace this xtask runs in, found at run time from the current directory (as cargo
/// finds it), never from a path baked in at compile time: two checkouts sharing one target
/// directory share one xtask binary, and each must act on its own tree.
fn root() -> PathBuf {
    static ROOT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    ROOT.get_or_init(|| {
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
        find_workspace(&cwd).unwrap_or(cwd)
    })
    .clone()
}

/// The nearest ancestor of `from` (itself included) whose `Cargo.toml` declares a workspace
/// with an `xtask` member.
fn find_workspace(from: &Path) -> Option<PathBuf> {
    from.ancestors()
        .find(|dir| {
            std::fs::read_to_string(dir.join("Cargo.toml"))
                .is_ok_and(|t| t.contains("[workspace]") && t.contains("\"xtask\""))
        })
        .map(Path::to_path_buf)
}

fn target_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(root);
    home.join(".cache").join("btfs-target")
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root()).env("CARGO_TARGET_DIR", target_dir());
    c
}

fn run(what: &str, cmd: &mut Command) -> Result<()> {
    let started = Instant::now();
    eprintln!("\n==> {what}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot run {what}: is it installed?"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    eprintln!("<== {what}: ok in {:.0?}", started.elapsed());
    Ok(())
}

fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Installs the rustup pieces the build needs (target and components).
fn ensure_toolchain() -> Result<()> {
    let rustup = || Command::new("rustup");
    let Some(targets) = output(rustup().args(["target", "list", "--installed"])) else {
        bail!("rustup is not available: install Rust with rustup (https://rustup.rs) and retry");
    };
    if !targets.lines().any(|l| l.trim() == WASM_TARGET) {
        run(
            "install the wasm32 target",
            rustup().args(["target", "add", WASM_TARGET]),
        )?;
    }
    let components =
        output(rustup().args(["component", "list", "--installed"])).unwrap_or_default();
    for c in ["rustfmt", "clippy"] {
        if !components.lines().any(|l| l.starts_with(c)) {
            run(
                &format!("install {c}"),
                rustup().args(["component", "add", c]),
            )?;
        }
    }
    Ok(())
}

fn test() -> Result<()> {
    let started = Instant::now();
    ensure_toolchain()?;
    run(
        "cargo fmt --check",
        cargo().args(["fmt", "--all", "--check"]),
    )?;
    run(
        "cargo clippy (native)",
        cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--locked",
            "--",
            "-D",
            "warnings",
        ]),
    )?;
    run(
        "cargo clippy (wasm32)",
        cargo().args([
            "clippy",
            "-p",
            "btfs-core",
            "-p",
            "btfs-client",
            "--target",
            WASM_TARGET,
            "--locked",
            "--",
            "-D",
            "warnings",
        ]),
    )?;
    run(
        "cargo build -p btfs-core --target wasm32-unknown-unknown",
        cargo().args([
            "build",
            "-p",
            "btfs-core",
            "--target",
            WASM_TARGET,
            "--locked",
        ]),
    )?;
    // core's unit and round-trip tests again, compiled to wasm32 and run in Node, so encoder
    // and decoder are proven to behave the same in the browser.
    browser::ensure_tools()?;
    if output(Command::new("node").arg("--version")).is_none() {
        bail!("Node.js is missing: install it (Debian: apt-get install nodejs) to run core's wasm tests");
    }
    run(
        "core tests in wasm32 (Node)",
        cargo()
            .args([
                "test",
                "-p",
                "btfs-core",
                "--target",
                WASM_TARGET,
                "--release",
                "--locked",
            ])
            .env(
                "CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER",
                "wasm-bindgen-test-runner",
            ),
    )?;
    // The integration tests spawn the real `btfs` binary from the same target directory.
    run(
        "cargo build -p btfs-host",
        cargo().args(["build", "-p", "btfs-host", "--locked"]),
    )?;
    run(
        "cargo test --workspace",
        cargo()
            .args(["test", "--workspace", "--locked"])
            .env("BTFS_BIN", target_dir().join("debug").join("btfs")),
    )?;
    browser::tests()?;
    eprintln!(
        "\nxtask test: every check passed in {:.0?}",
        started.elapsed()
    );
    Ok(())
}

/// `cargo xtask soak`: the soak test for `--secs` (default 600), with `--seed` to replay one.
fn soak(args: &[String]) -> Result<()> {
    let mut secs = "600".to_string();
    let mut seed = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--secs" => secs = it.next().context("--secs needs a number")?.clone(),
            "--seed" => seed = Some(it.next().context("--seed needs a number")?.clone()),
            other => bail!("unknown soak argument {other:?}: use --secs N and --seed S"),
        }
    }
    secs.parse::<u64>()
        .map_err(|_| anyhow::anyhow!("--secs {secs:?} is not a number of seconds"))?;
    ensure_toolchain()?;
    run(
        "cargo build -p btfs-host",
        cargo().args(["build", "-p", "btfs-host", "--locked"]),
    )?;
    let report = target_dir().join("soak-report.json");
    let mut cmd = cargo();
    cmd.args([
        "test",
        "-p",
        "btfs-tests",
        "--test",
        "soak",
        "--locked",
        "--",
        "--nocapture",
    ])
    .env("BTFS_BIN", target_dir().join("debug").join("btfs"))
    .env("BTFS_SOAK_SECS", &secs)
    .env("BTFS_SOAK_REPORT", &report);
    if let Some(s) = seed {
        cmd.env("BTFS_SOAK_SEED", s);
    }
    run("soak", &mut cmd)?;
    eprintln!("soak report: {}", report.display());
    Ok(())
}

/// `cargo xtask test-browser`: only the browser phase of `test`, after building what it runs.
fn test_browser() -> Result<()> {
    ensure_toolchain()?;
    run(
        "cargo build -p btfs-host",
        cargo().args(["build", "-p", "btfs-host", "--locked"]),
    )?;
    browser::tests()
}

fn test_page() -> Result<()> {
    ensure_toolchain()?;
    run(
        "cargo build -p btfs-host",
        cargo().args(["build", "-p", "btfs-host", "--locked"]),
    )?;
    browser::page_tests()
}

fn demo(args: &[String]) -> Result<()> {
    ensure_toolchain()?;
    run(
        "cargo build -p btfs-host",
        cargo().args(["build", "-p", "btfs-host", "--locked"]),
    )?;
    let btfs = target_dir().join("debug").join("btfs");
    let dir = target_dir().join("devnet");
    let hosts = args
        .iter()
        .position(|a| a == "--hosts")
        .and_then(|i| args.get(i + 1))
        .map_or("30", String::as_str);
    let network = dir.join("network.json");
    let _ = std::fs::remove_file(&network);
    eprintln!("\n==> starting a {hosts}-host devnet in {}", dir.display());
    let mut devnet = Command::new(&btfs)
        .args(["devnet", "--hosts", hosts, "--dir"])
        .arg(&dir)
        .spawn()
        .context("cannot start btfs devnet")?;
    let deadline = Instant::now() + std::time::Duration::from_secs(120);
    while !network.exists() {
        if let Some(status) = devnet.try_wait()? {
            bail!("btfs devnet exited ({status})");
        }
        if Instant::now() > deadline {
            let _ = devnet.kill();
            bail!("the devnet did not start within 120 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }

    // Prove it works: a 4 MiB round trip through the real CLI.
    let sample = dir.join("demo-sample.bin");
    let data: Vec<u8> = (0..4u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&sample, &data)?;
    let up = Command::new(&btfs)
        .args(["upload"])
        .arg(&sample)
        .arg("--network")
        .arg(&network)
        .output()?;
    if !up.status.success() {
        let _ = devnet.kill();
        bail!(
            "demo upload failed: {}",
            String::from_utf8_lossy(&up.stderr)
        );
    }
    let link = String::from_utf8_lossy(&up.stdout).trim().to_string();
    let back = dir.join("demo-sample.out");
    let down = Command::new(&btfs)
        .args(["download", &link, "-o"])
        .arg(&back)
        .arg("--network")
        .arg(&network)
        .output()?;
    let ok = down.status.success() && std::fs::read(&back).ok().as_deref() == Some(&data[..]);
    eprintln!("\n==> building the btfs-client npm package for the web page");
    let page = match browser::build_pkg().and_then(|pkg| {
        www::serve(
            www::Roots {
                www: root().join("www"),
                pkg,
                network: network.clone(),
            },
            8090,
        )
    }) {
        Ok(addr) => format!("http://{addr}/"),
        Err(e) => format!("(not available: {e:#})"),
    };
    let b = btfs.display();
    let n = network.display();
    let status_url = std::fs::read_to_string(&network)
        .ok()
        .and_then(|t| {
            let rest = t.split("\"http\":").nth(1)?;
            rest.split('"').nth(1).map(String::from)
        })
        .unwrap_or_else(|| "(none)".into());
    println!(
        "\nBTFS devnet is running ({hosts} hosts + a service node with the Hub and Status). \
         Round trip of a 4 MiB file: {}\n\
         \n  web page:  {page}   (upload and download from the browser)\
         \n  link:      {link}\
         \n  upload:    {b} upload FILE --network {n}\
         \n  download:  {b} download LINK -o OUT --network {n}\
         \n  hosts:     {b} hosts --network {n}\
         \n  health:    {b} status --network {n}   (page: {status_url}/)\
         \n  host logs: {}/hosts/host-NN/host.log\
         \n\nPress Ctrl-C to stop the network.",
        if ok { "ok" } else { "FAILED" },
        dir.display()
    );
    let status = devnet.wait()?;
    if !status.success() {
        bail!("devnet exited with {status}");
    }
    Ok(())
}

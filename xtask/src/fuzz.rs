//! `cargo xtask fuzz [--time SECS] [TARGET...]`: the long fuzzing campaigns.
//!
//! Installs `cargo-fuzz` if it is missing, regenerates the seed inputs from real encodings (the
//! ignored `write_seeds` tests of `core/tests/fuzz_corpus.rs` and `host-node/tests/fuzz_corpus.rs`),
//! then for each target (all of them by default) runs libFuzzer on the nightly toolchain for
//! `SECS` seconds (default 600) in one process, growing `fuzz/corpus/<target>`, and minimizes
//! that corpus with `cargo fuzz cmin`. A crash stops the run with libFuzzer's report and the
//! crashing input in `fuzz/artifacts/<target>/`: fix it, add the input to the corpus and a named
//! regression test, as docs/fuzzing.md describes. The corpus is replayed on stable by the ordinary
//! test suite, so CI never needs nightly.

use std::process::Command;

use anyhow::{bail, Result};

use crate::{cargo, output, root, run, target_dir};

/// Targets over `btfs_core::fuzz_bodies`.
const CORE_TARGETS: &[&str] = &[
    "manifest",
    "link",
    "frames",
    "hub_request",
    "hub_response",
    "signed",
    "signed_tamper",
    "proof",
    "escrow",
    "escrow_answers",
];
/// Targets over `btfs_host::fuzz_bodies` (built with the fuzz crate's `host` feature).
const HOST_TARGETS: &[&str] = &["network_file", "hub_serve", "status_api", "contract_serve"];

/// Parses `[--time SECS] [TARGET...]` and runs the campaigns.
pub fn fuzz(args: &[String]) -> Result<()> {
    let mut secs: u64 = 600;
    let mut targets: Vec<&str> = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--time" => {
                let v = it.next().map(String::as_str).unwrap_or_default();
                secs = match v.parse() {
                    Ok(s) if s > 0 => s,
                    _ => bail!("--time takes a number of seconds above 0, got {v:?}"),
                };
            }
            t => match CORE_TARGETS.iter().chain(HOST_TARGETS).find(|k| **k == t) {
                Some(k) => targets.push(k),
                None => bail!(
                    "unknown fuzz target {t:?}; the targets are {}",
                    CORE_TARGETS
                        .iter()
                        .chain(HOST_TARGETS)
                        .copied()
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            },
        }
    }
    if targets.is_empty() {
        targets = CORE_TARGETS.iter().chain(HOST_TARGETS).copied().collect();
    }
    ensure_cargo_fuzz()?;
    for pkg in ["btfs-core", "btfs-host"] {
        run(
            &format!("write the {pkg} fuzz seeds"),
            cargo().args([
                "test",
                "-p",
                pkg,
                "--test",
                "fuzz_corpus",
                "--",
                "--ignored",
                "--exact",
                "write_seeds",
            ]),
        )?;
    }
    for t in targets {
        let host = HOST_TARGETS.contains(&t);
        let corpus = format!("corpus/{t}");
        let mut args = vec!["+nightly", "fuzz", "run"];
        if host {
            args.extend(["--features", "host"]);
        }
        let max_time = format!("-max_total_time={secs}");
        args.extend([
            t,
            &corpus,
            "--",
            &max_time,
            "-print_final_stats=1",
            "-timeout=10",
        ]);
        run(
            &format!("fuzz {t} for {secs} s"),
            nightly_fuzz().args(&args),
        )?;
        let mut cmin = vec!["+nightly", "fuzz", "cmin"];
        if host {
            cmin.extend(["--features", "host"]);
        }
        cmin.extend([t, &corpus]);
        run(
            &format!("minimize the {t} corpus"),
            nightly_fuzz().args(&cmin),
        )?;
    }
    eprintln!(
        "\nfuzz: done. Commit fuzz/corpus (kept small by cmin) and record the executions \
         (stat::number_of_executed_units above) in docs/fuzzing.md."
    );
    Ok(())
}

/// `cargo` through rustup's proxy (so `+nightly` works), in `fuzz/`, with its own target
/// directory (instrumented builds would otherwise evict the normal ones).
fn nightly_fuzz() -> Command {
    let mut c = Command::new("cargo");
    c.current_dir(root().join("fuzz"))
        .env("CARGO_TARGET_DIR", target_dir().join("fuzz"))
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("CARGO")
        .env_remove("RUSTC");
    c
}

fn ensure_cargo_fuzz() -> Result<()> {
    if output(Command::new("rustup").args(["run", "nightly", "rustc", "--version"])).is_none() {
        bail!("fuzzing needs the nightly toolchain: run `rustup toolchain install nightly`");
    }
    if output(Command::new("cargo-fuzz").arg("--version")).is_none() {
        run(
            "install cargo-fuzz",
            Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    /// Every `[[bin]]` of fuzz/Cargo.toml is a target `cargo xtask fuzz` knows, and back.
    #[test]
    fn the_target_lists_match_the_fuzz_crate() {
        let toml = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/Cargo.toml"),
        )
        .unwrap();
        let mut bins: Vec<&str> = toml
            .split("[[bin]]")
            .skip(1)
            .filter_map(|b| b.lines().find_map(|l| l.strip_prefix("name = ")))
            .map(|n| n.trim().trim_matches('"'))
            .collect();
        let mut known: Vec<&str> = super::CORE_TARGETS
            .iter()
            .chain(super::HOST_TARGETS)
            .copied()
            .collect();
        bins.sort_unstable();
        known.sort_unstable();
        assert_eq!(bins, known);
    }

    /// The fuzz crate is its own workspace, so the root's `[patch.crates-io]` does not reach
    /// it: it must repeat every patch, or campaigns build other dependency versions than we ship
    /// (a missing libp2p-yamux patch once broke every `host` target's build).
    #[test]
    fn the_fuzz_crate_repeats_every_workspace_patch() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let patches = |file: &str| -> Vec<(String, String)> {
            let toml = std::fs::read_to_string(root.join(file)).unwrap();
            let section = toml
                .split("[patch.crates-io]")
                .nth(1)
                .unwrap_or_default()
                .split("\n[")
                .next()
                .unwrap_or_default()
                .to_string();
            let mut out: Vec<(String, String)> = section
                .lines()
                .filter_map(|l| {
                    let (name, rest) = l.split_once('=')?;
                    let path = rest.split("path = \"").nth(1)?.split('"').next()?;
                    Some((
                        name.trim().to_string(),
                        path.trim_start_matches("../").to_string(),
                    ))
                })
                .collect();
            out.sort();
            out
        };
        let workspace = patches("Cargo.toml");
        assert!(!workspace.is_empty(), "the workspace patches nothing?");
        assert_eq!(patches("fuzz/Cargo.toml"), workspace);
    }
}

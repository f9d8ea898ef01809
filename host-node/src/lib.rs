//! # btfs-host
//!
//! The native side of BTFS-rs: a host node that stores shards for tenants, the tenant CLI that
//! uploads and downloads, the network services, and `btfs devnet`, a complete local network.
//! `main.rs` (with the binary's `cli/`: clap definitions and output rendering) only parses
//! flags and calls into this library, so tests can start nodes in-process
//! ([`host::Node::spawn`]) or as real processes (the `btfs` binary).
//!
//! Module map, one folder per role:
//! - [`host`]: the storage host. Its composition root ([`host::Node`]) wires [`host::config`] →
//!   [`host::identity`] → [`host::store`] → [`net`] → [`host::shard_server`] (with
//!   [`host::fair_slots`] and [`host::inbound`]) → [`host::announce`] (to the Hub) →
//!   [`host::reporter`] (to Status) → [`host::metrics`] (its own `/metrics`).
//! - [`tenant`]: the tenant side — [`tenant::upload`], [`tenant::download`] (writing through
//!   [`tenant::output`]) over [`tenant::shard_client`], with the hosts and services named in a
//!   [`tenant::network_file`] (the file on disk; its format is `btfs_core::network_file`).
//! - [`services`]: the network services, [`services::hub`] and [`services::status`], the
//!   [`services::components`] any node composes them from (a host with `--services hub,status`
//!   runs them on its own swarm), and the service node that runs them with no storage
//!   (`btfs service`, [`services::ServiceNodeHandle`]).
//! - [`net`]: transport every role shares — the libp2p swarm task ([`net::Net`]), HTTP
//!   ([`net::http`]) and per-address connection limits ([`net::ip_limit`]).
//! - [`tools`]: [`tools::devnet`] (`btfs devnet`) and [`tools::bench`] (`btfs bench`).
//! - `fuzz_bodies` (hidden): the bodies of the fuzz targets in `fuzz/`, shared with the
//!   corpus replay test.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

#[doc(hidden)]
pub mod fuzz_bodies;
pub mod host;
pub mod net;
pub mod services;
pub mod tenant;
pub mod tools;

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}

/// Installs the process-wide rustls crypto provider (QUIC and WebRTC both use rustls; without
/// this the WebRTC DTLS handshake panics choosing between two providers).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// This process's peak resident set size (Linux `VmHWM`), if known.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

//! # btfs-host
//!
//! The native side of BTFS-rs: a host node that stores shards for tenants, the tenant CLI that
//! uploads and downloads, and `btfs devnet`, a complete local network. `main.rs` only parses
//! flags and calls into this library, so tests can start nodes in-process
//! ([`node::Node::spawn`]) or as real processes (the `btfs` binary).
//!
//! Module map: [`config`] → [`identity`] → [`store`] → [`net`] → [`shard_service`] compose a
//! host in [`node`]; [`tenant`], [`upload`], [`download`] (writing through [`output`]) and
//! [`shard_client`] are the tenant; [`network_file`] and [`devnet`] describe and run a local
//! network; [`hub`] and [`status`] are the network services, run together by [`service`]
//! (`btfs service`).
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod bench;
pub mod config;
pub mod devnet;
pub mod download;
pub mod drive;
pub mod fair_slots;
#[doc(hidden)]
pub mod fuzz_bodies;
pub mod http;
pub mod hub;
pub mod identity;
pub mod inbound;
pub mod ip_limit;
pub mod net;
pub mod network_file;
pub mod node;
pub mod output;
pub mod service;
pub mod shard_client;
pub mod shard_service;
pub mod status;
pub mod store;
pub mod tenant;
pub mod upload;

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

//! Host configuration: a TOML file, overridden by environment variables, overridden by flags.
//!
//! ```toml
//! # btfs-host.toml — every key is optional
//! data_dir = "/var/lib/btfs"
//! listen_ip = "127.0.0.1"       # 0.0.0.0 to serve other machines
//! tcp_port = 4001               # 0 = any free port (kept across restarts); omit a transport
//! quic_port = 4001              #   with `transports = [...]`
//! ws_port = 4002
//! webrtc_port = 4003
//! transports = ["tcp", "quic", "ws", "webrtc"]
//! quota = "100GiB"
//! max_inbound_streams = 64      # shard requests served at once
//! max_streams_per_peer = 16     # of which one peer may hold at most this many
//! hub = "/ip4/127.0.0.1/tcp/4100/p2p/12D3KooW..."   # announce to this Hub (omit: no Hub)
//! bootstrap = ["/ip4/198.18.0.2/tcp/4001/p2p/12D3KooW..."]  # join the DHT through these;
//!                               # with no `hub`, the Hub, Escrow and Status come from them too
//! price_per_gib_month = 100     # asking price, in the ledger's smallest unit
//! region = "eu-west"            # optional, helps tenants pick nearby hosts
//! announce_interval_secs = 300  # re-announce at least this often
//! unclaimed_grace_secs = 3600   # drop blobs no completed upload claimed after this long
//! sweep_interval_secs = 60      # how often to look for them
//! services = ["hub", "status"]  # network services to run on this host too (default: none)
//! status_port = 0               # the Status service's HTTP port (0 = any, kept across restarts)
//! probe_interval_ms = 30000     # how often the Hub service probes every registered host
//! service_max_hosts = 1000000   # most hosts the Hub and Status services keep
//!
//! [connections]                 # libp2p connection limits (these are the defaults)
//! max_established = 1024        # inbound + outbound
//! max_established_incoming = 768
//! max_established_outgoing = 1024
//! max_established_per_peer = 8
//! max_pending_incoming = 128    # inbound handshakes in progress
//! max_pending_outgoing = 512    # dials in progress
//! max_incoming_per_ip = 64      # inbound from one IP address (IPv6: /64), any peer ids
//! ```

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Configuration could not be loaded.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}")]
    Read {
        /// Path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("config file {path} is invalid")]
    Parse {
        /// Path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: toml::de::Error,
    },
    /// A size such as "10GiB" could not be parsed.
    #[error("invalid size {0:?}: use a number with an optional unit, e.g. 500MiB, 10GiB, 1TB")]
    Size(String),
    /// A setting is out of range.
    #[error("invalid setting {0}")]
    Invalid(String),
}

/// A transport a host can listen on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// TCP with Noise and Yamux.
    Tcp,
    /// QUIC v1.
    Quic,
    /// WebSocket (for browsers), Noise and Yamux.
    Ws,
    /// WebRTC-direct (for browsers, no certificate needed).
    Webrtc,
}

impl Transport {
    /// All transports.
    pub const ALL: [Transport; 4] = [Self::Tcp, Self::Quic, Self::Ws, Self::Webrtc];
}

/// Everything a host node needs to start.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HostConfig {
    /// Where identity, certificate and blobs live.
    pub data_dir: PathBuf,
    /// Address every listener binds.
    pub listen_ip: IpAddr,
    /// Transports to listen on.
    pub transports: Vec<Transport>,
    /// TCP port (0 = any free port, reused on restart).
    pub tcp_port: u16,
    /// QUIC (UDP) port.
    pub quic_port: u16,
    /// WebSocket (TCP) port.
    pub ws_port: u16,
    /// WebRTC-direct (UDP) port.
    pub webrtc_port: u16,
    /// Storage quota, e.g. "10GiB".
    pub quota: String,
    /// Shard requests served at once.
    pub max_inbound_streams: usize,
    /// Shard requests one peer may have in flight.
    pub max_streams_per_peer: usize,
    /// The Hub to announce to: a multiaddr ending in `/p2p/<peer id>`.
    pub hub: Option<String>,
    /// Nodes to join the network through (multiaddrs ending in `/p2p/<peer id>`): the host
    /// joins their DHT, and when `hub` is not set it takes the Hub, the Escrow and the Status
    /// URL from what they say ([`crate::net::discovery`]).
    pub bootstrap: Vec<String>,
    /// The network's Escrow (a multiaddr ending in `/p2p/<peer id>`): `/metrics` shows this
    /// host's earned and pending amounts there.
    pub escrow: Option<String>,
    /// No longer used (kept so older config files still load, with a warning): the Guard's
    /// repairs are funded like any put, from the tenant's repair allowance.
    pub guard: Option<String>,
    /// Asking price per GiB-month.
    pub price_per_gib_month: u64,
    /// Declared region.
    pub region: Option<String>,
    /// Longest time between two announcements, in seconds.
    pub announce_interval_secs: u64,
    /// Status server to push signed reports to (base URL, e.g. `http://127.0.0.1:4004`).
    pub status_url: Option<String>,
    /// Time between two status reports, in seconds.
    pub report_interval_secs: u64,
    /// Serve this node's Prometheus `/metrics` over HTTP on `listen_ip`.
    pub metrics: bool,
    /// Port of `/metrics` (0 = any free port, reused on restart).
    pub metrics_port: u16,
    /// Grace period of an unclaimed hold, in seconds: a blob that no completed upload claimed
    /// is dropped this long after its last put (see `btfs_core::protocol`). Must exceed the
    /// longest upload.
    pub unclaimed_grace_secs: u64,
    /// Time between two sweeps for expired unclaimed holds, in seconds.
    pub sweep_interval_secs: u64,
    /// Network services this host runs next to its storage, on its own swarm
    /// ([`crate::services::components`]).
    pub services: Vec<crate::services::ServiceKind>,
    /// The Status service's HTTP port (0 = any free port, reused on restart).
    pub status_port: u16,
    /// How often the Hub service probes every registered host, in milliseconds.
    pub probe_interval_ms: u64,
    /// Most hosts the Hub and Status services keep.
    pub service_max_hosts: usize,
    /// libp2p connection limits (a TOML table, so it comes last).
    pub connections: crate::net::ConnLimits,
}

impl Default for HostConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("btfs-data"),
            listen_ip: IpAddr::from([127, 0, 0, 1]),
            transports: Transport::ALL.to_vec(),
            tcp_port: 0,
            quic_port: 0,
            ws_port: 0,
            webrtc_port: 0,
            quota: "10GiB".into(),
            max_inbound_streams: 64,
            max_streams_per_peer: 16,
            hub: None,
            bootstrap: Vec::new(),
            escrow: None,
            guard: None,
            price_per_gib_month: 100,
            region: None,
            announce_interval_secs: 300,
            status_url: None,
            report_interval_secs: 60,
            metrics: true,
            metrics_port: 0,
            unclaimed_grace_secs: 3600,
            sweep_interval_secs: 60,
            connections: crate::net::ConnLimits::default(),
            services: Vec::new(),
            status_port: 0,
            probe_interval_ms: 30_000,
            service_max_hosts: 1_000_000,
        }
    }
}

impl HostConfig {
    /// Reads a TOML file (missing keys take defaults).
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.into(),
            source,
        })
    }

    /// A config for tests: a data dir, loopback, every transport on a free port.
    pub fn for_tests(data_dir: &Path) -> Self {
        Self {
            data_dir: data_dir.into(),
            quota: "1GiB".into(),
            ..Self::default()
        }
    }

    /// Quota in bytes.
    pub fn quota_bytes(&self) -> Result<u64, ConfigError> {
        parse_size(&self.quota)
    }

    /// Checks ranges.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.quota_bytes()?;
        if self.max_inbound_streams == 0 || self.max_inbound_streams > 4096 {
            return Err(ConfigError::Invalid(
                "max_inbound_streams must be 1..=4096".into(),
            ));
        }
        if self.max_streams_per_peer == 0 || self.max_streams_per_peer > self.max_inbound_streams {
            return Err(ConfigError::Invalid(
                "max_streams_per_peer must be 1..=max_inbound_streams".into(),
            ));
        }
        if let Some(h) = &self.hub {
            crate::services::hub::HubAddr::parse(h).map_err(ConfigError::Invalid)?;
        }
        crate::net::discovery::parse_bootstrap(&self.bootstrap)
            .map_err(|e| ConfigError::Invalid(format!("bootstrap: {e}")))?;
        if let Some(e) = &self.escrow {
            crate::services::hub::HubAddr::parse(e)
                .map_err(|why| ConfigError::Invalid(format!("escrow: {why}")))?;
        }
        if let Some(g) = &self.guard {
            parse_peer(g).map_err(|why| ConfigError::Invalid(format!("guard: {why}")))?;
        }
        self.connections.validate().map_err(ConfigError::Invalid)?;
        if self.region.as_ref().is_some_and(|r| r.len() > 64) {
            return Err(ConfigError::Invalid(
                "region must be at most 64 bytes".into(),
            ));
        }
        if !(1..=86_400).contains(&self.announce_interval_secs) {
            return Err(ConfigError::Invalid(
                "announce_interval_secs must be 1..=86400".into(),
            ));
        }
        if !(1..=86_400).contains(&self.report_interval_secs) {
            return Err(ConfigError::Invalid(
                "report_interval_secs must be 1..=86400".into(),
            ));
        }
        if let Some(u) = &self.status_url {
            if !u.starts_with("http://") || u.len() > 256 {
                return Err(ConfigError::Invalid(format!(
                    "status_url {u:?} must be an http:// URL such as http://127.0.0.1:4004"
                )));
            }
        }
        if !(1..=30 * 86_400).contains(&self.unclaimed_grace_secs) {
            return Err(ConfigError::Invalid(
                "unclaimed_grace_secs must be 1..=2592000 (30 days)".into(),
            ));
        }
        if !(1..=86_400).contains(&self.sweep_interval_secs) {
            return Err(ConfigError::Invalid(
                "sweep_interval_secs must be 1..=86400".into(),
            ));
        }
        crate::services::components::normalize(self.services.clone())
            .map_err(|e| ConfigError::Invalid(format!("services: {e}")))?;
        if !(100..=3_600_000).contains(&self.probe_interval_ms) {
            return Err(ConfigError::Invalid(
                "probe_interval_ms must be 100..=3600000".into(),
            ));
        }
        if self.service_max_hosts == 0 || self.service_max_hosts > 10_000_000 {
            return Err(ConfigError::Invalid(
                "service_max_hosts must be 1..=10000000".into(),
            ));
        }
        if self.transports.is_empty() {
            return Err(ConfigError::Invalid(
                "transports must name at least one".into(),
            ));
        }
        Ok(())
    }

    /// Configured port of a transport.
    pub fn port(&self, t: Transport) -> u16 {
        match t {
            Transport::Tcp => self.tcp_port,
            Transport::Quic => self.quic_port,
            Transport::Ws => self.ws_port,
            Transport::Webrtc => self.webrtc_port,
        }
    }
}

/// Parses "1024", "500MiB", "10GiB", "1TB", "1.5 GB".
pub fn parse_size(s: &str) -> Result<u64, ConfigError> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let num: f64 = num.parse().map_err(|_| ConfigError::Size(s.into()))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "tb" => 1e12,
        "kib" | "k" => 1024.0,
        "mib" | "m" => 1024.0 * 1024.0,
        "gib" | "g" => 1024.0 * 1024.0 * 1024.0,
        "tib" | "t" => 1024.0f64.powi(4),
        _ => return Err(ConfigError::Size(s.into())),
    };
    let v = num * mult;
    if !v.is_finite() || !(0.0..=1e18).contains(&v) {
        return Err(ConfigError::Size(s.into()));
    }
    Ok(v as u64)
}

/// A peer id, given bare or as the `/p2p/` part of a multiaddr.
pub fn parse_peer(s: &str) -> Result<libp2p::PeerId, String> {
    let id = s.rsplit("/p2p/").next().unwrap_or(s);
    id.parse()
        .map_err(|e| format!("{s:?} is not a peer id or a multiaddr ending in /p2p/<peer id>: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tenant running two transfers at once (each machine keeps at most
    /// `MAX_OPS_PER_HOST` ops on a host) is never turned away as busy by a default host.
    #[test]
    fn default_per_peer_streams_fit_two_transfers() {
        let c = HostConfig::default();
        assert!(c.max_streams_per_peer >= 2 * btfs_core::engine::MAX_OPS_PER_HOST);
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("1024").unwrap(), 1024);
        assert_eq!(parse_size("10GiB").unwrap(), 10 << 30);
        assert_eq!(parse_size("1.5 GB").unwrap(), 1_500_000_000);
        assert!(parse_size("ten").is_err());
        assert!(parse_size("5 parsecs").is_err());
    }

    #[test]
    fn toml_file_fills_defaults_and_rejects_unknown_keys() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "quota = \"2GiB\"\ntransports = [\"tcp\"]\n").unwrap();
        let c = HostConfig::from_file(&p).unwrap();
        assert_eq!(c.quota_bytes().unwrap(), 2 << 30);
        assert_eq!(c.transports, vec![Transport::Tcp]);
        assert_eq!(c.max_inbound_streams, 64);
        std::fs::write(&p, "qouta = 1\n").unwrap();
        // The parser's message is the cause, printed once by whoever walks the chain.
        let err = anyhow::Error::new(HostConfig::from_file(&p).unwrap_err());
        let err = format!("{err:#}");
        assert!(err.contains("qouta"), "{err}");
        assert!(err.contains("c.toml is invalid"), "{err}");
    }
}

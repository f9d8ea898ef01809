//! A testbed of Linux network namespaces: every node its own "machine", with its own address on
//! one virtual bridge, so nodes share no loopback and the Hub sees each in its own subnet.
//!
//! Goals: `btfs devnet --netns` and the fault tests run a real multi-machine network on one
//! box: addresses from the RFC 2544 benchmarking range 198.18.0.0/15, each node in its own /24
//! (`198.18.k.2`, then `198.19.…`), the root namespace on the bridge as `198.18.0.1` (so the
//! tenant's CLI, run outside, reaches every node); per-node bandwidth (`tc tbf`, both
//! directions); cutting a node off the network and healing it (its bridge port down/up).
//! Nothing is routed out: the namespaces have no default route, only the bridge's /15.
//! Everything is deleted by [`Testbed::teardown`] (also on drop), and a testbed left behind by a
//! killed process is deleted by the next one (names carry the owner's pid).
//!
//! Non-goals: delay and loss (this kernel has no `netem`; the engine's simulated network in
//! core covers them), IPv6, NAT.
//!
//! Names (at most 15 bytes, the kernel's limit for links): namespaces `btfs-<pid>-<k>`, the
//! bridge `bb<pid>`, node k's bridge-side veth `bv<pid>n<k>` (inside its namespace: `eth0`).
//! Needs root (`ip netns add`).
//!
//! One testbed at a time per machine: every testbed uses the same addresses, and two bridges
//! holding `198.18.0.1/15` in the root namespace would send the tenant's packets to whichever
//! route the kernel lists first. [`Testbed::create`] takes an exclusive lock on
//! [`LOCK_PATH`] (released when its process exits, however it exits) and refuses with the
//! holder's pid while another testbed runs.

use std::net::Ipv4Addr;
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// The root namespace's address on the bridge (where the tenant's CLI runs).
pub const ROOT_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// Most nodes one testbed holds.
pub const MAX_NODES: usize = 500;
/// The lock one running testbed holds (its owner's pid inside).
pub const LOCK_PATH: &str = "/run/btfs-netns.lock";

/// One node's place in the testbed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NsNode {
    /// Its network namespace (`ip netns exec NAME …`).
    pub netns: String,
    /// Its veth's name on the bridge (in the root namespace).
    pub veth: String,
    /// Its address.
    pub ip: Ipv4Addr,
}

/// A running testbed (what `DIR/netns.json` records).
#[derive(Debug, Serialize, Deserialize)]
pub struct Testbed {
    /// The bridge.
    pub bridge: String,
    /// Every node, in order.
    pub nodes: Vec<NsNode>,
    #[serde(skip)]
    torn_down: bool,
    /// The machine-wide lock ([`LOCK_PATH`]), held by the process that created the testbed.
    #[serde(skip)]
    _lock: Option<nix::fcntl::Flock<std::fs::File>>,
}

/// Node `k`'s address: `198.18.k.2` for k < 256, then on into 198.19.0.0/16.
pub fn node_ip(k: usize) -> Ipv4Addr {
    let k = k + 1;
    Ipv4Addr::new(198, 18 + (k / 256) as u8, (k % 256) as u8, 2)
}

fn run(args: &[&str]) -> Result<()> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .with_context(|| format!("cannot run {}", args[0]))?;
    if !out.status.success() {
        bail!(
            "`{}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn in_ns(ns: &str, args: &[&str]) -> Result<()> {
    let mut all = vec!["ip", "netns", "exec", ns];
    all.extend_from_slice(args);
    run(&all)
}

/// `tc tbf` arguments for `rate_kbit`: a burst of 20 ms at that rate (at least 16 KiB) and a
/// queue of 200 ms, so a shaped link keeps its rate without unbounded buffering.
pub fn tbf_args(rate_kbit: u64) -> Vec<String> {
    let burst = (rate_kbit * 1000 / 8 / 50).max(16 * 1024);
    vec![
        "rate".into(),
        format!("{rate_kbit}kbit"),
        "burst".into(),
        burst.to_string(),
        "latency".into(),
        "200ms".into(),
    ]
}

impl Testbed {
    /// Creates the bridge and `n` namespaces, each with its address, and cleans up testbeds
    /// whose owner process is gone.
    pub fn create(n: usize) -> Result<Self> {
        if n == 0 || n > MAX_NODES {
            bail!("a testbed holds 1 to {MAX_NODES} nodes (asked for {n})");
        }
        if !nix::unistd::geteuid().is_root() {
            bail!("network namespaces need root (run as root, or drop --netns)");
        }
        let lock = take_lock()?;
        clean_stale();
        raise_neighbour_limits(n)?;
        let pid = std::process::id();
        let mut bed = Testbed {
            bridge: format!("bb{pid}"),
            nodes: Vec::new(),
            torn_down: false,
            _lock: Some(lock),
        };
        let bridge = bed.bridge.clone();
        run(&["ip", "link", "add", &bridge, "type", "bridge"])?;
        // A fixed address: a bridge without one takes its lowest port's, so it would change as
        // ports join, and nodes that cached the old one would lose the root namespace's
        // packets until their ARP entries expire.
        run(&["ip", "link", "set", &bridge, "address", "02:42:c6:12:00:01"])?;
        run(&[
            "ip",
            "addr",
            "add",
            &format!("{ROOT_IP}/15"),
            "dev",
            &bridge,
        ])?;
        run(&["ip", "link", "set", &bridge, "up"])?;
        for k in 0..n {
            let node = NsNode {
                netns: format!("btfs-{pid}-{k}"),
                veth: format!("bv{pid}n{k}"),
                ip: node_ip(k),
            };
            bed.nodes.push(node.clone());
            let (ns, veth) = (node.netns.as_str(), node.veth.as_str());
            let peer = format!("bp{pid}n{k}");
            run(&["ip", "netns", "add", ns])?;
            run(&[
                "ip", "link", "add", veth, "type", "veth", "peer", "name", &peer,
            ])?;
            run(&["ip", "link", "set", &peer, "netns", ns])?;
            in_ns(ns, &["ip", "link", "set", &peer, "name", "eth0"])?;
            in_ns(
                ns,
                &[
                    "ip",
                    "addr",
                    "add",
                    &format!("{}/15", node.ip),
                    "dev",
                    "eth0",
                ],
            )?;
            in_ns(ns, &["ip", "link", "set", "eth0", "up"])?;
            in_ns(ns, &["ip", "link", "set", "lo", "up"])?;
            run(&["ip", "link", "set", veth, "master", &bridge])?;
            run(&["ip", "link", "set", veth, "up"])?;
        }
        Ok(bed)
    }

    /// The command prefix that runs a program in node `k`'s namespace.
    pub fn exec(&self, k: usize) -> Vec<String> {
        vec![
            "ip".into(),
            "netns".into(),
            "exec".into(),
            self.nodes[k].netns.clone(),
        ]
    }

    /// Shapes node `k`'s link to `rate_kbit` each way (`None`: unshaped again).
    pub fn shape(&self, k: usize, rate_kbit: Option<u64>) -> Result<()> {
        shape(&self.nodes[k], rate_kbit)
    }

    /// Cuts node `k` off the network (`false`) or connects it again (`true`).
    pub fn link(&self, k: usize, up: bool) -> Result<()> {
        link(&self.nodes[k], up)
    }

    /// Deletes every namespace, link and the bridge (idempotent; errors are logged).
    pub fn teardown(&mut self) {
        if self.torn_down {
            return;
        }
        self.torn_down = true;
        for n in &self.nodes {
            // Deleting the namespace deletes its veth pair.
            if let Err(e) = run(&["ip", "netns", "del", &n.netns]) {
                tracing::warn!(%e, "cannot delete a namespace");
            }
        }
        if let Err(e) = run(&["ip", "link", "del", &self.bridge]) {
            tracing::warn!(%e, "cannot delete the bridge");
        }
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// Takes the machine-wide testbed lock, or says who holds it.
fn take_lock() -> Result<nix::fcntl::Flock<std::fs::File>> {
    use nix::fcntl::{Flock, FlockArg};
    use std::io::{Read, Seek, Write};
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(LOCK_PATH)
        .with_context(|| format!("cannot open the testbed lock {LOCK_PATH}"))?;
    let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => lock,
        Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            bail!(
                "another network-namespace testbed is running (pid {}): its addresses in \
                 198.18.0.0/15 would collide with this one's; stop it (or wait for it) and \
                 try again",
                holder.trim()
            );
        }
        Err((_, e)) => bail!("cannot lock {LOCK_PATH}: {e}"),
    };
    lock.set_len(0)?;
    lock.rewind()?;
    write!(lock, "{}", std::process::id())?;
    Ok(lock)
}

/// Makes room in the kernel's IPv4 neighbour (ARP) table for a testbed of `n` nodes. The
/// table is shared by every namespace, and its default hard limit (`gc_thresh3`, 1,024) is
/// below the ~n² entries of a network where every node talks to every other (the DHT does):
/// past it new entries fail and connections time out. Only ever raised, never lowered (other
/// testbeds may be running), so it is left raised afterwards.
pub fn raise_neighbour_limits(n: usize) -> Result<()> {
    let n = n as u64 + 1;
    let path = |k: u8| format!("/proc/sys/net/ipv4/neigh/default/gc_thresh{k}");
    let read = |k: u8| -> u64 {
        std::fs::read_to_string(path(k))
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    let want3 = (n * n * 4 + 4096).min(1 << 22);
    let want2 = want3 * 3 / 4;
    for (k, want) in [(3u8, want3), (2, want2)] {
        if read(k) < want {
            std::fs::write(path(k), want.to_string())
                .with_context(|| format!("cannot raise {}", path(k)))?;
        }
    }
    Ok(())
}

/// Shapes `node`'s link to `rate_kbit` each way (into it on the bridge side, out of it inside
/// its namespace); `None` removes the shaping.
pub fn shape(node: &NsNode, rate_kbit: Option<u64>) -> Result<()> {
    match rate_kbit {
        Some(r) => {
            let tbf = tbf_args(r);
            let tbf: Vec<&str> = tbf.iter().map(String::as_str).collect();
            let mut outer = vec!["tc", "qdisc", "replace", "dev", &node.veth, "root", "tbf"];
            outer.extend_from_slice(&tbf);
            run(&outer)?;
            let mut inner = vec!["tc", "qdisc", "replace", "dev", "eth0", "root", "tbf"];
            inner.extend_from_slice(&tbf);
            in_ns(&node.netns, &inner)
        }
        None => {
            let _ = run(&["tc", "qdisc", "del", "dev", &node.veth, "root"]);
            let _ = in_ns(&node.netns, &["tc", "qdisc", "del", "dev", "eth0", "root"]);
            Ok(())
        }
    }
}

/// Takes `node`'s bridge port down (cut off: nothing in or out) or up again.
pub fn link(node: &NsNode, up: bool) -> Result<()> {
    run(&[
        "ip",
        "link",
        "set",
        &node.veth,
        if up { "up" } else { "down" },
    ])
}

/// Deletes namespaces and bridges of testbeds whose owner process no longer runs.
pub fn clean_stale() {
    let alive = |pid: &str| std::path::Path::new(&format!("/proc/{pid}")).exists();
    if let Ok(out) = Command::new("ip").args(["netns", "list"]).output() {
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let name = line.split_whitespace().next().unwrap_or_default();
            let Some(rest) = name.strip_prefix("btfs-") else {
                continue;
            };
            let pid = rest.split('-').next().unwrap_or_default();
            if !pid.is_empty() && pid.chars().all(|c| c.is_ascii_digit()) && !alive(pid) {
                let _ = run(&["ip", "netns", "del", name]);
            }
        }
    }
    if let Ok(out) = Command::new("ip").args(["-o", "link", "show"]).output() {
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let Some(name) = line.split(':').nth(1).map(str::trim) else {
                continue;
            };
            let name = name.split('@').next().unwrap_or_default();
            let pid = name
                .strip_prefix("bb")
                .or_else(|| name.strip_prefix("bv").and_then(|r| r.split('n').next()));
            if let Some(pid) = pid {
                if !pid.is_empty() && pid.chars().all(|c| c.is_ascii_digit()) && !alive(pid) {
                    let _ = run(&["ip", "link", "del", name]);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_one_per_subnet_in_the_benchmarking_range() {
        assert_eq!(node_ip(0), Ipv4Addr::new(198, 18, 1, 2));
        assert_eq!(node_ip(254), Ipv4Addr::new(198, 18, 255, 2));
        assert_eq!(node_ip(255), Ipv4Addr::new(198, 19, 0, 2));
        assert_eq!(node_ip(MAX_NODES - 1), Ipv4Addr::new(198, 19, 244, 2));
        let mut subnets: Vec<[u8; 3]> = (0..MAX_NODES)
            .map(|k| {
                let o = node_ip(k).octets();
                [o[0], o[1], o[2]]
            })
            .collect();
        subnets.dedup();
        assert_eq!(subnets.len(), MAX_NODES);
        for k in 0..MAX_NODES {
            let o = node_ip(k).octets();
            assert!(o[0] == 198 && (o[1] == 18 || o[1] == 19), "{k}");
            assert_ne!(node_ip(k), ROOT_IP);
        }
        let names = format!("bv{}n{}", 4_194_304, MAX_NODES - 1);
        assert!(names.len() <= 15, "{names}");
    }

    #[test]
    fn tbf_bursts_scale_with_the_rate() {
        assert_eq!(tbf_args(4_000)[3], (16 * 1024).to_string());
        assert_eq!(tbf_args(1_000_000)[3], "2500000");
        assert_eq!(tbf_args(8_000)[1], "8000kbit");
    }
}

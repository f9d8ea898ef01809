//! Who may report to Status, and how many new identities one address may introduce.
//!
//! **Admission rule.** A report counts only if the network knows its signer:
//! - [`Admission::Hub`] (the service node, `btfs service`, where Hub and Status share a process):
//!   the Hub's registry holds a verified signed [`HostAd`](btfs_core::signed::HostAd) for the
//!   report's peer id. The ad's `capacity_bytes` is then the most capacity a report may claim.
//!   The Hub accepts an ad only over a libp2p connection authenticated as that peer, so every
//!   identity Status admits has reached the Hub itself; and the Hub's registry is capped
//!   (`--max-hosts`).
//! - [`Admission::AllowList`] (a Status service without a Hub): only the listed peer ids, with
//!   no advertised capacity (the absolute per-host bound of [`super::ingest::Limits`] applies).
//!   An empty list refuses everyone, which is the default: an open Status service is exactly the
//!   flood target this rule exists to prevent.
//!
//! The check runs before the signature is verified, on the key the envelope names, so a flood
//! of reports from unknown keys costs a key decode and a map lookup each, and leaves no state.
//!
//! **New identities per address** ([`NewPeerBudget`]): a peer Status does not track yet counts
//! against its source address (IPv4 /32, IPv6 /64): at most `per_source` new peers per
//! `window`; beyond that, 429 with the time until the window ends. At most `max_sources`
//! addresses are tracked; when that many have open windows, new peers from further addresses
//! wait (429) until windows expire, so the table stays bounded under any flood.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use libp2p::PeerId;

/// Answers "does the network know this host, and what capacity did it advertise?".
pub trait KnownHosts: Send + Sync {
    /// The `capacity_bytes` of the valid signed ad the registry holds for `peer`, or `None` if
    /// it holds none.
    fn advertised_capacity(&self, peer: &PeerId) -> Option<u64>;
}

/// Which signers Status admits (see the module docs).
#[derive(Clone)]
pub enum Admission {
    /// Hosts the Hub registry holds a valid signed ad for.
    Hub(Arc<dyn KnownHosts>),
    /// Exactly these peers (empty: nobody).
    AllowList(Arc<HashSet<PeerId>>),
}

impl Default for Admission {
    fn default() -> Self {
        Self::AllowList(Arc::default())
    }
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Hub(_) => f.write_str("Admission::Hub"),
            Self::AllowList(l) => write!(f, "Admission::AllowList({} peers)", l.len()),
        }
    }
}

/// What admission says about a signer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Known; reports may claim at most this capacity (`None`: no advertised bound).
    Known {
        /// Advertised capacity.
        max_capacity: Option<u64>,
    },
    /// Not known to the network.
    Unknown,
}

impl Admission {
    /// Looks `peer` up.
    pub fn check(&self, peer: &PeerId) -> Verdict {
        match self {
            Self::Hub(hub) => match hub.advertised_capacity(peer) {
                Some(c) => Verdict::Known {
                    max_capacity: Some(c),
                },
                None => Verdict::Unknown,
            },
            Self::AllowList(list) if list.contains(peer) => Verdict::Known { max_capacity: None },
            Self::AllowList(_) => Verdict::Unknown,
        }
    }

    /// What to tell a refused peer.
    pub fn advice(&self) -> &'static str {
        match self {
            Self::Hub(_) => {
                "this Status service admits only hosts registered at its Hub; announce to the \
                 Hub first (set `hub` in the host's config), then report again"
            }
            Self::AllowList(_) => {
                "this Status service admits only the hosts its operator listed; ask the operator \
                 to add this peer id"
            }
        }
    }
}

/// The address a new-identity budget is kept for: IPv4 as is, IPv6 by /64 (one customer's
/// network), IPv4-mapped IPv6 as IPv4 (the same rule as the HTTP connection limits).
pub fn source_key(ip: IpAddr) -> IpAddr {
    crate::net::http::client_key(ip)
}

#[derive(Debug, Clone, Copy)]
struct Window {
    start_ms: u64,
    count: u32,
}

/// Counts new identities per source address in fixed windows (see the module docs).
#[derive(Debug)]
pub struct NewPeerBudget {
    per_source: u32,
    window_ms: u64,
    max_sources: usize,
    windows: HashMap<IpAddr, Window>,
}

impl NewPeerBudget {
    /// At most `per_source` new peers per source per `window_ms`, `max_sources` sources tracked.
    pub fn new(per_source: u32, window_ms: u64, max_sources: usize) -> Self {
        Self {
            per_source,
            window_ms: window_ms.max(1),
            max_sources: max_sources.max(1),
            windows: HashMap::new(),
        }
    }

    /// Sources with an open window.
    pub fn sources(&self) -> usize {
        self.windows.len()
    }

    /// Whether `source` may introduce one more new peer at `now_ms`; `Err(ms until it may)`.
    /// Does not count it: call [`NewPeerBudget::spend`] once the peer is admitted.
    pub fn check(&mut self, source: IpAddr, now_ms: u64) -> Result<(), u64> {
        let key = source_key(source);
        let window_ms = self.window_ms;
        if let Some(w) = self.windows.get_mut(&key) {
            if now_ms.saturating_sub(w.start_ms) >= window_ms {
                *w = Window {
                    start_ms: now_ms,
                    count: 0,
                };
            }
            if w.count >= self.per_source {
                return Err((w.start_ms + window_ms).saturating_sub(now_ms).max(1));
            }
            return Ok(());
        }
        if self.per_source == 0 {
            return Err(window_ms);
        }
        if self.windows.len() >= self.max_sources {
            self.windows
                .retain(|_, w| now_ms.saturating_sub(w.start_ms) < window_ms);
            if self.windows.len() >= self.max_sources {
                let soonest = self
                    .windows
                    .values()
                    .map(|w| w.start_ms + window_ms)
                    .min()
                    .unwrap_or(now_ms);
                return Err(soonest.saturating_sub(now_ms).max(1));
            }
        }
        Ok(())
    }

    /// Counts one new peer from `source` (after a successful [`NewPeerBudget::check`]).
    pub fn spend(&mut self, source: IpAddr, now_ms: u64) {
        let w = self.windows.entry(source_key(source)).or_insert(Window {
            start_ms: now_ms,
            count: 0,
        });
        w.count = w.count.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_per_source_and_window() {
        let mut b = NewPeerBudget::new(2, 1_000, 2);
        let (a, c, d): (IpAddr, IpAddr, IpAddr) = (
            "10.0.0.1".parse().unwrap(),
            "10.0.0.2".parse().unwrap(),
            "10.0.0.3".parse().unwrap(),
        );
        for _ in 0..2 {
            b.check(a, 0).unwrap();
            b.spend(a, 0);
        }
        assert_eq!(b.check(a, 400), Err(600));
        // Another source has its own budget.
        b.check(c, 400).unwrap();
        b.spend(c, 400);
        // The table is full (2 sources): a third waits until the first window ends.
        assert_eq!(b.check(d, 500), Err(500));
        // A new window.
        b.check(a, 1_000).unwrap();
        // Expired windows make room.
        b.check(d, 1_500).unwrap();
        b.spend(d, 1_500);
        assert!(b.sources() <= 2);
    }

    #[test]
    fn ipv6_sources_are_grouped_by_64() {
        let x: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let y: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        assert_eq!(source_key(x), source_key(y));
        let m: IpAddr = "::ffff:10.1.2.3".parse().unwrap();
        assert_eq!(source_key(m), "10.1.2.3".parse::<IpAddr>().unwrap());
        let mut b = NewPeerBudget::new(1, 1_000, 10);
        b.check(x, 0).unwrap();
        b.spend(x, 0);
        assert!(b.check(y, 1).is_err());
    }

    #[test]
    fn allow_list_and_default() {
        let p = PeerId::random();
        assert_eq!(Admission::default().check(&p), Verdict::Unknown);
        let list = Admission::AllowList(Arc::new([p].into_iter().collect()));
        assert_eq!(list.check(&p), Verdict::Known { max_capacity: None });
        assert_eq!(list.check(&PeerId::random()), Verdict::Unknown);
    }
}

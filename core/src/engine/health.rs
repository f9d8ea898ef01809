//! What a transfer learned about its hosts: who failed, who was slow. Hosts that failed or were
//! hedged against are asked last for the rest of the transfer.

use std::collections::BTreeMap;

use super::HostId;

#[derive(Default, Clone, Copy)]
struct Marks {
    answered: u32,
    failures: u32,
    slow: u32,
}

/// Per-host marks of one transfer.
#[derive(Default)]
pub(crate) struct Health {
    hosts: BTreeMap<HostId, Marks>,
}

impl Health {
    /// `host` answered a request well.
    pub fn answered(&mut self, host: HostId) {
        self.hosts.entry(host).or_default().answered += 1;
    }

    /// `host` failed a request.
    pub fn failed(&mut self, host: HostId) {
        self.hosts.entry(host).or_default().failures += 1;
    }

    /// A request to `host` passed its hedge deadline.
    pub fn slow(&mut self, host: HostId) {
        self.hosts.entry(host).or_default().slow += 1;
    }

    /// Whether `host` failed a request of this transfer.
    pub fn has_failed(&self, host: HostId) -> bool {
        self.hosts.get(&host).is_some_and(|m| m.failures > 0)
    }

    /// Sort key, lower is asked first: 0 answered in this transfer (and never failed or was
    /// slow), 1 not asked yet, 2 slow but it did answer (a busy host), 3 slow and never
    /// answered (likely hung), 4 failed, 5 failed and slow. Hosts known to answer go first: a
    /// hedge on a host that never answered may well hit another hung one.
    pub fn rank(&self, host: HostId) -> u8 {
        let m = self.hosts.get(&host).copied().unwrap_or_default();
        match (m.failures > 0, m.slow > 0, m.answered > 0) {
            (false, false, true) => 0,
            (false, false, false) => 1,
            (false, true, true) => 2,
            (false, true, false) => 3,
            (true, false, _) => 4,
            (true, true, _) => 5,
        }
    }
}

//! Failed fetches, counted by class, and the messages every tenant prints for them.

use super::{Failure, HostId};

/// The class of a failed fetch users see: what kind of trouble stopped a transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureClass {
    /// The host answered with bytes that are not the blob: they do not hash to its root, or the
    /// answer was malformed or oversized.
    Corrupt,
    /// No connection or stream, the stream broke, or no answer in time.
    Unreachable,
    /// The host said it does not hold the blob.
    Missing,
    /// The host refused for another reason (busy, full, internal error).
    Refused,
}

impl serde::Serialize for HostId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A shard whose bytes did not match its root.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CorruptShard {
    /// Slab.
    pub slab: u64,
    /// Shard index (0..30).
    pub shard: usize,
    /// The host that sent it.
    pub host: HostId,
}

/// Counts of failed fetches by [`FailureClass`], with the hosts that sent corrupt bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct FetchFailures {
    /// Hosts that sent corrupt bytes (one entry per corrupt fetch).
    pub corrupt_hosts: Vec<HostId>,
    /// Fetches that found no connection or answer.
    pub unreachable: usize,
    /// Hosts that do not hold the blob.
    pub missing: usize,
    /// Hosts that refused otherwise.
    pub refused: usize,
}

/// Corrupt hosts named in a message; the rest are counted (JSON lists them all).
const HOSTS_NAMED: usize = 3;

impl FetchFailures {
    /// Records one failed fetch from `host` (`None`: a host nobody can address).
    pub fn record(&mut self, failure: Failure, host: Option<HostId>) {
        match (failure.class(), host) {
            (FailureClass::Corrupt, Some(h)) => self.corrupt_hosts.push(h),
            (FailureClass::Corrupt, None) | (FailureClass::Unreachable, _) => self.unreachable += 1,
            (FailureClass::Missing, _) => self.missing += 1,
            (FailureClass::Refused, _) => self.refused += 1,
        }
    }

    /// Failures of this class.
    pub fn count(&self, class: FailureClass) -> usize {
        match class {
            FailureClass::Corrupt => self.corrupt_hosts.len(),
            FailureClass::Unreachable => self.unreachable,
            FailureClass::Missing => self.missing,
            FailureClass::Refused => self.refused,
        }
    }

    /// Every failed fetch.
    pub fn total(&self) -> usize {
        self.corrupt_hosts.len() + self.unreachable + self.missing + self.refused
    }

    /// The reason that stopped the transfer: the most frequent class (ties: corrupt, missing,
    /// refused, unreachable — the more specific finding wins).
    pub fn reason(&self) -> FailureClass {
        if self.total() == 0 {
            return FailureClass::Unreachable;
        }
        [
            FailureClass::Corrupt,
            FailureClass::Missing,
            FailureClass::Refused,
            FailureClass::Unreachable,
        ]
        .into_iter()
        .rev()
        .max_by_key(|&k| self.count(k))
        .unwrap_or(FailureClass::Unreachable)
    }

    /// What to do when too few shards of a slab could be had.
    pub fn shard_advice(&self) -> &'static str {
        match self.reason() {
            FailureClass::Corrupt => "Hosts returned corrupt shards: the object cannot be rebuilt from this network's copies",
            FailureClass::Unreachable => "Too many hosts are down; retry later",
            FailureClass::Missing => "The hosts no longer hold the shards: the object was lost or removed",
            FailureClass::Refused => "Hosts refused (busy or failing); retry later",
        }
    }

    /// The message for a manifest no host could supply; `hint` ends the not-found case
    /// (e.g. which flag names the network).
    pub fn manifest_lost_message(&self, id: &str, hint: &str) -> String {
        let asked = self.total();
        match self.reason() {
            FailureClass::Missing => format!(
                "object not found: no host has manifest {id} (of {asked} hosts asked: {self}). {hint}"
            ),
            FailureClass::Corrupt => format!(
                "cannot read manifest {id}: the manifest copies were corrupt (of {asked} hosts asked: {self}). The hosts hold damaged copies; the object cannot be opened from this network"
            ),
            FailureClass::Unreachable => format!(
                "cannot fetch manifest {id}: too many hosts are unreachable (of {asked} hosts asked: {self}). Retry later"
            ),
            FailureClass::Refused => format!(
                "cannot fetch manifest {id}: the hosts refused (of {asked} hosts asked: {self}). Retry later"
            ),
        }
    }
}

impl std::fmt::Display for FetchFailures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} corrupt", self.corrupt_hosts.len())?;
        if !self.corrupt_hosts.is_empty() {
            let mut distinct: Vec<HostId> = Vec::new();
            for h in &self.corrupt_hosts {
                if !distinct.contains(h) {
                    distinct.push(*h);
                }
            }
            let named = distinct.len().min(HOSTS_NAMED);
            let names: Vec<String> = distinct[..named].iter().map(ToString::to_string).collect();
            write!(
                f,
                " (host{} {}",
                if distinct.len() == 1 { "" } else { "s" },
                names.join(", ")
            )?;
            if distinct.len() > named {
                write!(f, " and {} more", distinct.len() - named)?;
            }
            f.write_str(")")?;
        }
        write!(
            f,
            ", {} unreachable, {} missing",
            self.unreachable, self.missing
        )?;
        if self.refused > 0 {
            write!(f, ", {} refused", self.refused)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::sim::host_ids;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn corrupt(n: usize) -> FetchFailures {
        let hosts = host_ids(n);
        let mut f = FetchFailures::default();
        for h in hosts {
            f.record(Failure::Corrupt, Some(h));
        }
        f
    }

    #[test]
    fn names_three_corrupt_hosts_and_counts_the_rest() {
        let f = corrupt(21);
        assert_eq!(f.reason(), FailureClass::Corrupt);
        let text = f.to_string();
        assert!(text.starts_with("21 corrupt (hosts "), "{text}");
        assert!(
            text.ends_with(" and 18 more), 0 unreachable, 0 missing"),
            "{text}"
        );
        assert!(f.shard_advice().contains("corrupt shards"));
    }

    #[test]
    fn ties_prefer_the_more_specific_reason() {
        let mut f = corrupt(5);
        f.unreachable = 5;
        assert_eq!(f.reason(), FailureClass::Corrupt);
        let f = FetchFailures {
            missing: 3,
            unreachable: 3,
            ..Default::default()
        };
        assert_eq!(f.reason(), FailureClass::Missing);
        assert_eq!(FetchFailures::default().reason(), FailureClass::Unreachable);
        let text = f.manifest_lost_message("ab", "Check the link.");
        assert!(text.starts_with("object not found"), "{text}");
        assert!(text.contains("3 unreachable, 3 missing"), "{text}");
        assert!(text.ends_with("Check the link."), "{text}");
    }

    #[test]
    fn timeouts_count_as_unreachable() {
        let mut f = FetchFailures::default();
        f.record(Failure::Timeout, host_ids(1).first().copied());
        f.record(Failure::Busy, None);
        f.record(Failure::NotFound, None);
        assert_eq!((f.unreachable, f.refused, f.missing), (1, 1, 1));
    }
}

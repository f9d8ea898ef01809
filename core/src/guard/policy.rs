//! The one repair rule: what a slab with `healthy` good shards needs. The [`super::Guard`]
//! machine and the durability model ([`super::durability`]) both decide with this function, so
//! the simulated durability is the durability of the shipped policy.

use serde::Serialize;

use crate::layout::{DATA_SHARDS, TOTAL_SHARDS};

/// What one slab needs, from its healthy shard count.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SlabDecision {
    /// More than the threshold healthy: nothing to do.
    Healthy,
    /// At or below the threshold, at least 10 healthy: rebuild the unhealthy shards now.
    Repair,
    /// Fewer than 10 healthy: nothing can rebuild it now. The slab is lost unless hosts that
    /// are only unreachable come back (the Guard keeps auditing and repairs as soon as 10 pass).
    AtRisk,
}

/// The decision for a slab with `healthy` shards of 30 and repair threshold `threshold`
/// (repair when `healthy <= threshold`).
pub fn slab_decision(healthy: usize, threshold: usize) -> SlabDecision {
    if healthy < DATA_SHARDS {
        SlabDecision::AtRisk
    } else if healthy <= threshold.min(TOTAL_SHARDS - 1) {
        SlabDecision::Repair
    } else {
        SlabDecision::Healthy
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn boundaries() {
        assert_eq!(slab_decision(30, 24), SlabDecision::Healthy);
        assert_eq!(slab_decision(25, 24), SlabDecision::Healthy);
        assert_eq!(slab_decision(24, 24), SlabDecision::Repair);
        assert_eq!(slab_decision(10, 24), SlabDecision::Repair);
        assert_eq!(slab_decision(9, 24), SlabDecision::AtRisk);
        assert_eq!(slab_decision(0, 24), SlabDecision::AtRisk);
        // A threshold of 30 would repair healthy slabs forever: capped at 29.
        assert_eq!(slab_decision(30, 30), SlabDecision::Healthy);
    }
}

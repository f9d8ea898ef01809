//! From "where each shard went" to the manifest's host table and slab records.
//!
//! Uploaders (native and browser) track placements as `(shard root, host)` per shard, with the
//! host in whatever form they address it. [`records`] turns that into the compact form the
//! manifest stores: each host once, in first-use order, and shards pointing into that table.

use std::collections::HashMap;
use std::hash::Hash;

use crate::layout::TOTAL_SHARDS;
use crate::manifest::{ManifestError, ShardRecord, SlabRecord};
use crate::root::Root;

/// The host table (first use first) and one record per slab.
pub fn records<H: Copy + Eq + Hash>(
    placed: &[Vec<(Root, H)>],
) -> Result<(Vec<H>, Vec<SlabRecord>), ManifestError> {
    let mut table: Vec<H> = Vec::new();
    let mut index: HashMap<H, u16> = HashMap::new();
    let mut slabs = Vec::with_capacity(placed.len());
    for (i, slab) in placed.iter().enumerate() {
        if slab.len() != TOTAL_SHARDS {
            return Err(ManifestError::Field {
                field: "slabs",
                why: format!("slab {i} has {} placed shards, not 30", slab.len()),
            });
        }
        let mut record = [ShardRecord {
            root: Root::from_bytes([0; 32]),
            host: 0,
        }; TOTAL_SHARDS];
        for (r, &(root, host)) in record.iter_mut().zip(slab) {
            let next = u16::try_from(table.len()).map_err(|_| ManifestError::Field {
                field: "hosts",
                why: "more than 65535 hosts".into(),
            })?;
            let pos = *index.entry(host).or_insert_with(|| {
                table.push(host);
                next
            });
            *r = ShardRecord { root, host: pos };
        }
        slabs.push(record);
    }
    Ok((table, slabs))
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn hosts_are_listed_once_in_first_use_order() {
        let slab = |offset: usize| -> Vec<(Root, usize)> {
            (0..30)
                .map(|k| (Root::of(&[k as u8]), 100 + (k + offset) % 31))
                .collect()
        };
        let (table, slabs) = records(&[slab(0), slab(5)]).unwrap();
        assert_eq!(table.len(), 31);
        assert_eq!(table[0], 100);
        assert_eq!(
            slabs[1][0].host as usize,
            table.iter().position(|&h| h == 105).unwrap()
        );
        assert!(records::<usize>(&[vec![]]).is_err());
    }
}

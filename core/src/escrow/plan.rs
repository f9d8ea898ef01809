//! How a tenant turns an upload into storage terms — the same in the CLI and the browser.
//!
//! [`offer`]: before any byte moves, the terms one candidate host is asked to sign: at most one
//! shard per slab (a slab's 30 shards go to 30 distinct hosts), as many bytes as those shards
//! can take and one copy of the manifest, at the host's advertised price converted to the Guard's epoch, from the next epoch
//! on. [`contract`]: after the upload, that host's offer plus the manifest id and the roots and
//! sizes of the shards it keeps, read off the upload machine's placement.
//!
//! Repairs ([`repair_offer`], [`repair_commitments`]): with the commit the tenant sets a repair
//! allowance aside for the object ([`allowance_for`], by default a third of what its committed
//! contracts' offers reserved: enough to reserve new hosts for 10 of a slab's 30 shards for the
//! whole term at the same prices, with the same rounding room);
//! the Guard later offers new hosts room for one shard of each slab it repairs, from the next
//! epoch to the allowance's end, signs in the tenant's place, and commits what it placed.

use std::collections::BTreeMap;

use super::terms::{epoch_at, price_per_epoch, Cosigned, ShardTerm, Terms, MAX_DOCS_PER_CALL};
use super::{HostRequest, HostResponse};
use crate::engine::HostId;
use crate::layout::Layout;
use crate::root::Root;
use crate::signed::Signed;
use libp2p_identity::PeerId;

/// How long an offer stays open for the upload to commit it.
pub const OFFER_LIFETIME_MS: u64 = 3_600_000;

/// Who pays whom, audited by whom, for how long.
#[derive(Debug, Clone)]
pub struct OfferParams<'a> {
    /// Contract id (32 hex digits, random, chosen by the tenant).
    pub id: String,
    /// The tenant's peer id.
    pub tenant: &'a str,
    /// The host's peer id.
    pub host: &'a str,
    /// The Guard's peer id.
    pub guard: &'a str,
    /// The host's advertised price per GiB-month.
    pub price_per_gib_month: u64,
    /// The Guard's epoch length.
    pub epoch_ms: u64,
    /// Epochs to pay for.
    pub epochs: u64,
    /// The tenant's clock.
    pub now_ms: u64,
}

/// How much one offer lets a tenant put on its host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Room {
    /// Bytes in all.
    pub max_bytes: u64,
    /// Blobs.
    pub max_shards: u32,
}

impl Room {
    /// One host's part of an upload of `layout`: at most one shard per slab, and one copy of
    /// the manifest.
    pub fn upload(layout: &Layout) -> Self {
        let slabs = layout.slab_count().max(1);
        Self {
            max_bytes: layout
                .slabs()
                .map(|s| u64::from(s.shard_size))
                .sum::<u64>()
                .saturating_add(crate::manifest::max_len_for(slabs)),
            max_shards: u32::try_from(slabs + 1).unwrap_or(u32::MAX),
        }
    }

    /// One host's part of a repair of `slabs` of an object of `layout`: one shard of each.
    pub fn repair(layout: &Layout, slabs: impl IntoIterator<Item = u64>) -> Self {
        let (mut bytes, mut n) = (0u64, 0u32);
        for s in slabs {
            if let Some(s) = layout.slab(s) {
                bytes = bytes.saturating_add(u64::from(s.shard_size));
                n = n.saturating_add(1);
            }
        }
        Self {
            max_bytes: bytes.max(1),
            max_shards: n.max(1),
        }
    }

    /// One blob of `len` bytes (`btfs shard put`).
    pub fn blob(len: u64) -> Self {
        Self {
            max_bytes: len.max(1),
            max_shards: 1,
        }
    }
}

/// The offer for one candidate host of an upload of `layout`.
pub fn offer(p: &OfferParams<'_>, layout: &Layout) -> Terms {
    offer_for(p, Room::upload(layout))
}

/// The offer for `room` on one host.
pub fn offer_for(p: &OfferParams<'_>, room: Room) -> Terms {
    Terms {
        id: p.id.clone(),
        tenant: p.tenant.to_string(),
        host: p.host.to_string(),
        guard: p.guard.to_string(),
        price_per_gib_epoch: price_per_epoch(p.price_per_gib_month, p.epoch_ms),
        epoch_ms: p.epoch_ms,
        first_epoch: epoch_at(p.now_ms, p.epoch_ms) + 1,
        epochs: p.epochs,
        max_bytes: room.max_bytes,
        max_shards: room.max_shards,
        offer_expires_ms: p.now_ms + OFFER_LIFETIME_MS,
        manifest_id: None,
        shards: Vec::new(),
        repair_of: None,
    }
}

/// The share of an upload's reservation set aside for its repairs by default: a third, what
/// reserving new hosts for 10 of every slab's 30 shards costs for the whole term at the same
/// prices. It is measured on the reservation (not the exact contract cost) because repair
/// offers are reserved the same way, with one µBTT of rounding room per shard and epoch — on a
/// devnet's tiny prices that room is most of the amount.
pub const DEFAULT_ALLOWANCE_DIVISOR: u64 = 3;

/// The default repair allowance of an upload whose committed contracts' offers reserved
/// `reserved` µBTT.
pub fn allowance_for(reserved: u64) -> u64 {
    reserved.div_ceil(DEFAULT_ALLOWANCE_DIVISOR)
}

/// When an upload's repair allowance ends: with the term its offers pay for.
pub fn allowance_until(offer: &Terms) -> u64 {
    offer
        .first_epoch
        .saturating_add(offer.epochs)
        .saturating_mul(offer.epoch_ms)
}

/// The Guard's repair offer to one new host: `room` for object `object` of tenant `p.tenant`,
/// from the next epoch to the end of its repair allowance (`until_ms`, at least one epoch),
/// paid by the Guard `p.guard` from that allowance. `p.epochs` is ignored.
pub fn repair_offer(p: &OfferParams<'_>, room: Room, object: &Root, until_ms: u64) -> Terms {
    let mut t = offer_for(p, room);
    let end_epoch = until_ms / p.epoch_ms.max(1);
    t.epochs = end_epoch.saturating_sub(t.first_epoch).max(1);
    t.repair_of = Some(object.to_hex());
    t
}

/// Which candidates a repair offers room to: in `ranked` order (host, its offer's reserve
/// amount), skipping hosts in `busy` (they hold a shard of a repaired slab) and offers that no
/// longer fit in `available` (a cheaper host further down may still fit), at most `want`.
pub fn pick_repair_hosts<H: Copy + Eq>(
    ranked: impl IntoIterator<Item = (H, Option<u64>)>,
    busy: impl Fn(&H) -> bool,
    available: u64,
    want: usize,
) -> Vec<H> {
    let mut picked = Vec::new();
    let mut cost = 0u64;
    for (h, amount) in ranked {
        if picked.len() >= want {
            break;
        }
        if busy(&h) {
            continue;
        }
        if let Some(a) = amount.filter(|a| cost.saturating_add(*a) <= available) {
            cost += a;
            picked.push(h);
        }
    }
    picked
}

/// After a repair: the contract each offered host signs (hosts that got shards: the offer plus
/// the shards the report says they now keep) and the ids of the offers to void.
pub fn repair_commitments(
    offers: &[(PeerId, Terms)],
    layout: &Layout,
    object: &Root,
    repaired: &[crate::engine::repair::RepairedShard],
) -> (Vec<(PeerId, Terms)>, Vec<String>) {
    let mut per_host: BTreeMap<PeerId, Vec<ShardTerm>> = BTreeMap::new();
    for r in repaired {
        let size = layout.slab(r.slab).map_or(0, |s| u64::from(s.shard_size));
        per_host.entry(r.host.peer()).or_default().push(ShardTerm {
            root: r.root.to_hex(),
            size,
        });
    }
    let mut jobs = Vec::new();
    let mut void = Vec::new();
    for (h, offer) in offers {
        match per_host.remove(h) {
            Some(shards) => jobs.push((*h, contract(offer, object, shards))),
            None => void.push(offer.id.clone()),
        }
    }
    (jobs, void)
}

/// Each host's shards from an upload's placement (`placement[slab][shard]` holds
/// `roots[slab][shard]`), with the slab's shard size from `layout`.
pub fn shards_by_host(
    layout: &Layout,
    placement: &[Vec<HostId>],
    roots: &[Vec<Root>],
) -> BTreeMap<HostId, Vec<ShardTerm>> {
    let mut out: BTreeMap<HostId, Vec<ShardTerm>> = BTreeMap::new();
    for (slab, (hosts, roots)) in placement.iter().zip(roots).enumerate() {
        let size = layout
            .slab(slab as u64)
            .map_or(0, |s| u64::from(s.shard_size));
        for (h, r) in hosts.iter().zip(roots) {
            out.entry(*h).or_default().push(ShardTerm {
                root: r.to_hex(),
                size,
            });
        }
    }
    out
}

/// The contract that commits `offer` for an object `manifest_id` whose shards on that host are
/// `shards`.
pub fn contract(offer: &Terms, manifest_id: &Root, shards: Vec<ShardTerm>) -> Terms {
    let mut t = offer.clone();
    t.manifest_id = Some(manifest_id.to_hex());
    t.shards = shards;
    t
}

/// After an upload: the contract each offered host signs (hosts that got shards) and the ids of
/// the offers to void (hosts that got none), from the upload machine's placement.
pub fn commitments(
    offers: &[(PeerId, Terms)],
    layout: &Layout,
    report: &crate::engine::upload::UploadReport,
) -> (Vec<(PeerId, Terms)>, Vec<String>) {
    let per_host = shards_by_host(layout, &report.placement, &report.roots);
    let mut jobs = Vec::new();
    let mut void = Vec::new();
    for (h, offer) in offers {
        match per_host.get(&HostId::new(*h)) {
            Some(shards) => jobs.push((
                *h,
                contract(offer, &report.link.manifest_id, shards.clone()),
            )),
            None => void.push(offer.id.clone()),
        }
    }
    (jobs, void)
}

/// The commit calls for `contracts` (signed by both) and the offers to `void`: one call, more
/// only past [`MAX_DOCS_PER_CALL`] contracts; the first also voids.
pub fn commit_ops(contracts: Vec<super::Cosigned>, void: Vec<String>) -> Vec<super::Op> {
    let mut void = Some(void);
    let mut ops: Vec<super::Op> = contracts
        .chunks(MAX_DOCS_PER_CALL)
        .map(|c| super::Op::Commit {
            contracts: c.to_vec(),
            void: void.take().unwrap_or_default(),
        })
        .collect();
    if let Some(v) = void.filter(|v| !v.is_empty()) {
        ops.push(super::Op::Commit {
            contracts: Vec::new(),
            void: v,
        });
    }
    ops
}

/// What each host of one reservation is shown after it: its own offers and the Escrow's
/// funding proof ([`super::funding`]); a host stores the tenant's blobs only after it.
pub fn funding_notices<H: Copy + Ord>(
    reserved: &[(H, Cosigned)],
    proof: &Signed,
) -> Vec<(H, HostRequest)> {
    let mut by_host: BTreeMap<H, Vec<Cosigned>> = BTreeMap::new();
    for (h, doc) in reserved {
        by_host.entry(*h).or_default().push(doc.clone());
    }
    by_host
        .into_iter()
        .flat_map(|(h, docs)| {
            docs.chunks(super::funding::MAX_FUNDED_OFFERS)
                .map(|c| {
                    (
                        h,
                        HostRequest::Funded {
                            offers: c.to_vec(),
                            proof: proof.clone(),
                        },
                    )
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Sorts the hosts' answers to funding notices: adds each host that granted room to `granted`;
/// returns why the others did not ("host H: reason"), for the driver to log and report.
pub fn tally_grants<H: Copy + Ord + std::fmt::Display>(
    answers: Vec<(H, Result<HostResponse, String>)>,
    granted: &mut std::collections::BTreeSet<H>,
) -> Vec<String> {
    let mut why = Vec::new();
    for (host, answer) in answers {
        match answer.and_then(|a| self::granted(&a)) {
            Ok(()) => {
                granted.insert(host);
            }
            Err(e) => why.push(format!("host {host} did not take the funding proof: {e}")),
        }
    }
    why
}

/// A host's answer to a funding notice: `Ok` when it granted room for the tenant's blobs.
pub fn granted(answer: &HostResponse) -> Result<(), String> {
    match answer {
        HostResponse::Granted { bytes, blobs } if *bytes > 0 && *blobs > 0 => Ok(()),
        HostResponse::Granted { .. } => Err("the host granted no room".into()),
        HostResponse::Signed { .. } => {
            Err("the host answered a funding notice with a document".into())
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn an_upload_becomes_valid_offers_and_contracts_within_them() {
        let key = |n: u8| {
            let k = libp2p_identity::ed25519::Keypair::from(
                libp2p_identity::ed25519::SecretKey::try_from_bytes([n; 32]).unwrap(),
            );
            libp2p_identity::PublicKey::from(k.public()).to_peer_id()
        };
        let (tenant, host, guard) = (key(1), key(2), key(3));
        let layout = Layout::new(25 << 20, 1 << 20).unwrap(); // 3 slabs, the last one smaller
        let (t58, h58, g58) = (tenant.to_base58(), host.to_base58(), guard.to_base58());
        let o = offer(
            &OfferParams {
                id: "ab".repeat(16),
                tenant: &t58,
                host: &h58,
                guard: &g58,
                price_per_gib_month: 100,
                epoch_ms: 5000,
                epochs: 10,
                now_ms: 1_000_000,
            },
            &layout,
        );
        o.validate().unwrap();
        // Three slabs' shards and one copy of the manifest.
        assert_eq!((o.first_epoch, o.max_shards), (201, 4));
        let shards: u64 = layout.slabs().map(|s| u64::from(s.shard_size)).sum();
        assert!(o.max_bytes > shards);
        let h = HostId::new(host);
        let other = HostId::new(guard);
        let placement: Vec<Vec<HostId>> = (0..3).map(|_| vec![h, other]).collect();
        let roots: Vec<Vec<Root>> = (0..3u8)
            .map(|s| vec![Root::from_bytes([s; 32]), Root::from_bytes([s + 10; 32])])
            .collect();
        let by = shards_by_host(&layout, &placement, &roots);
        assert_eq!(by[&h].len(), 3);
        let c = contract(&o, &Root::from_bytes([9; 32]), by[&h].clone());
        c.validate().unwrap();
        assert!(o.committed_by(&c));
        assert!(c.contract_amount() <= o.reserve_amount().unwrap());
        assert_eq!(commit_ops(Vec::new(), Vec::new()).len(), 0);
        // Repair candidates: busy hosts skipped, a dear one passed over for a cheaper one.
        let ranked = [
            (1, Some(5)),
            (2, Some(1)),
            (3, Some(9)),
            (4, Some(3)),
            (5, None),
        ];
        assert_eq!(pick_repair_hosts(ranked, |h| *h == 2, 10, 9), vec![1, 4]);
        assert_eq!(pick_repair_hosts(ranked, |_| false, 100, 2), vec![1, 2]);
        assert_eq!(commit_ops(Vec::new(), vec!["ab".repeat(16)]).len(), 1);
    }
}

//! Funding proofs: how a host knows a tenant's shards are paid for before it stores a byte.
//!
//! Goals: a host that works with an Escrow stores only what a funded offer covers. After one
//! [`super::Op::Reserve`] the Escrow signs a [`Funded`] statement (the tenant and the offer
//! ids that are locked *now*); the tenant shows each host that statement beside the host's own
//! countersigned offer ([`super::HostRequest::Funded`]). The host checks both signatures, that
//! it is the offer's host, that the asking peer is the offer's payer (its tenant, or for a
//! repair the Guard spending the tenant's repair allowance), and that the offer is
//! open, and then grants that peer `max_bytes` in `max_shards` blobs until the offer expires
//! ([`Grants`]). Each accepted put spends from a grant; a put that fails gives its share back.
//! Nothing here needs a round trip from host to Escrow, and a forged, foreign or expired proof
//! is refused with the reason.
//!
//! Non-goals: noticing that an offer was voided after the proof was issued (the grant then
//! lasts until the offer's expiry, bounded by its size; the bytes are never paid), and keeping
//! grants across a host restart (a restarted host refuses the rest of an upload in flight, and
//! the tenant moves those shards to spare hosts as it would after any refusal).
//!
//! ## Wire format
//! `Funded` is a [`crate::signed::Signed`] envelope of kind `btfs/escrow-funded/1`:
//! ```json
//! {"peer_id":"<Escrow>","tenant":"12D3..","offers":["<32 hex>",..],"issued_at_ms":1764600000000}
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::terms::{hex_id, Cosigned, MAX_DOCS_PER_CALL};
use crate::signed::{Body, Signed, SignedError};

/// Most offers one [`super::HostRequest::Funded`] may carry.
pub const MAX_FUNDED_OFFERS: usize = 16;
/// Grants one peer may hold on a host at once.
pub const MAX_GRANTS_PER_PEER: usize = 64;
/// Grants a host keeps in all.
pub const MAX_GRANTS: usize = 16_384;

/// The Escrow's signed word that `offers` of `tenant` are reserved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Funded {
    /// The Escrow (signer).
    pub peer_id: String,
    /// Whose offers.
    pub tenant: String,
    /// Ids of offers locked at `issued_at_ms`.
    pub offers: Vec<String>,
    /// When the Escrow said so.
    pub issued_at_ms: u64,
}

impl Body for Funded {
    const KIND: &'static str = "btfs/escrow-funded/1";
    const MAX_LEN: usize = 64 + MAX_DOCS_PER_CALL * 40 + 256;
    fn peer_id(&self) -> &str {
        &self.peer_id
    }
    fn issued_at_ms(&self) -> u64 {
        self.issued_at_ms
    }
    fn validate(&self) -> Result<(), SignedError> {
        if self.offers.is_empty() || self.offers.len() > MAX_DOCS_PER_CALL {
            return Err(SignedError::Field {
                field: "offers",
                why: format!("must list 1..={MAX_DOCS_PER_CALL} offers"),
            });
        }
        for id in &self.offers {
            hex_id("offers", id, 32)?;
        }
        if self.tenant.is_empty() || self.tenant.len() > 64 {
            return Err(SignedError::Field {
                field: "tenant",
                why: "must be a peer id".into(),
            });
        }
        Ok(())
    }
}

/// What one funded offer lets its tenant put on the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// The offer's id.
    pub offer: String,
    /// Bytes left.
    pub bytes: u64,
    /// Blobs left.
    pub blobs: u32,
    /// The offer's expiry (unix ms): no put is accepted under it afterwards.
    pub expires_ms: u64,
}

/// Checks a funding proof as host `me`, asked by `peer`, trusting only `escrow`'s signature.
/// Returns a grant per offer.
pub fn check(
    offers: &[Cosigned],
    receipt: &Signed,
    me: &str,
    peer: &str,
    escrow: &str,
    now_ms: u64,
) -> Result<Vec<Grant>, String> {
    if offers.is_empty() || offers.len() > MAX_FUNDED_OFFERS {
        return Err(format!(
            "send 1..={MAX_FUNDED_OFFERS} offers with one funding proof"
        ));
    }
    let v = receipt
        .verify::<Funded>()
        .map_err(|e| format!("the funding proof does not verify: {e}"))?;
    if v.body.peer_id != escrow {
        return Err(format!(
            "the funding proof is signed by {}, not by this host's Escrow {escrow}",
            v.body.peer_id
        ));
    }
    if v.body.tenant != peer {
        return Err(format!(
            "the funding proof is for tenant {}, not for you ({peer})",
            v.body.tenant
        ));
    }
    let mut out = Vec::with_capacity(offers.len());
    for doc in offers {
        let t = doc
            .verify()
            .map_err(|e| format!("an offer does not verify: {e}"))?;
        if t.host != me {
            return Err(format!(
                "offer {} is for host {}, not this host",
                t.id, t.host
            ));
        }
        if t.payer() != peer {
            return Err(format!(
                "offer {} is paid by {}, not by you ({peer})",
                t.id,
                t.payer()
            ));
        }
        if !v.body.offers.contains(&t.id) {
            return Err(format!(
                "the funding proof does not list offer {}: reserve it at the Escrow first",
                t.id
            ));
        }
        if t.offer_expires_ms <= now_ms {
            return Err(format!(
                "offer {} expired at {} ms; make and reserve a new one",
                t.id, t.offer_expires_ms
            ));
        }
        if t.is_contract() {
            return Err(format!("{} is a contract, not an offer", t.id));
        }
        out.push(Grant {
            offer: t.id,
            bytes: t.max_bytes,
            blobs: t.max_shards,
            expires_ms: t.offer_expires_ms,
        });
    }
    Ok(out)
}

/// Why a put was not covered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Uncovered {
    /// The peer has no open grant.
    None,
    /// Its grants are too small for this blob.
    Spent {
        /// The most bytes left in one grant.
        largest: u64,
    },
}

impl std::fmt::Display for Uncovered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::None => f.write_str(
                "this host stores only shards covered by a funded storage offer: reserve an offer at the Escrow and show the host its funding proof first (`btfs upload` does both)",
            ),
            Self::Spent { largest } => write!(
                f,
                "your funded offers on this host are spent ({largest} bytes left in the largest): put this shard on another host or fund a new offer"
            ),
        }
    }
}

/// A host's open grants, by peer. Bounded: [`MAX_GRANTS_PER_PEER`] per peer and
/// [`MAX_GRANTS`] in all (expired ones are dropped first; a full table refuses new grants).
#[derive(Debug, Default)]
pub struct Grants {
    by_peer: BTreeMap<String, Vec<Grant>>,
    count: usize,
}

/// Which grant paid for a put, to give it back if the put fails.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spent {
    peer: String,
    offer: String,
    bytes: u64,
}

impl Grants {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Grants held in all.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether no grant is held.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    fn prune(&mut self, now_ms: u64) {
        let mut count = 0;
        self.by_peer.retain(|_, gs| {
            gs.retain(|g| g.expires_ms > now_ms && (g.blobs > 0 && g.bytes > 0));
            count += gs.len();
            !gs.is_empty()
        });
        self.count = count;
    }

    /// Adds `grants` for `peer`. An offer granted before keeps what is left of it (showing a
    /// proof twice grants nothing twice). Returns the bytes and blobs `peer` may now put.
    pub fn add(
        &mut self,
        peer: &str,
        grants: Vec<Grant>,
        now_ms: u64,
    ) -> Result<(u64, u64), String> {
        self.prune(now_ms);
        let have = self.by_peer.get(peer).map_or(0, Vec::len);
        let new: Vec<Grant> = grants
            .into_iter()
            .filter(|g| {
                !self
                    .by_peer
                    .get(peer)
                    .is_some_and(|gs| gs.iter().any(|h| h.offer == g.offer))
            })
            .collect();
        if have + new.len() > MAX_GRANTS_PER_PEER {
            return Err(format!(
                "you hold {have} open funded offers on this host, the most is {MAX_GRANTS_PER_PEER}; finish or let some expire first"
            ));
        }
        if self.count + new.len() > MAX_GRANTS {
            return Err(
                "host busy: too many funded offers open; retry later or use another host".into(),
            );
        }
        self.count += new.len();
        let gs = self.by_peer.entry(peer.to_string()).or_default();
        gs.extend(new);
        Ok(gs.iter().fold((0, 0), |(b, n), g| {
            (b.saturating_add(g.bytes), n + u64::from(g.blobs))
        }))
    }

    /// Spends `len` bytes and one blob of one of `peer`'s open grants (the one expiring first
    /// that fits).
    pub fn spend(&mut self, peer: &str, len: u64, now_ms: u64) -> Result<Spent, Uncovered> {
        let Some(gs) = self.by_peer.get_mut(peer) else {
            return Err(Uncovered::None);
        };
        let open = |g: &&mut Grant| g.expires_ms > now_ms && g.blobs > 0;
        let largest = gs.iter_mut().filter(open).map(|g| g.bytes).max();
        let Some(largest) = largest else {
            return Err(Uncovered::None);
        };
        let g = gs
            .iter_mut()
            .filter(open)
            .filter(|g| g.bytes >= len)
            .min_by_key(|g| g.expires_ms)
            .ok_or(Uncovered::Spent { largest })?;
        g.bytes -= len;
        g.blobs -= 1;
        Ok(Spent {
            peer: peer.to_string(),
            offer: g.offer.clone(),
            bytes: len,
        })
    }

    /// Gives a failed put's share back.
    pub fn refund(&mut self, s: Spent) {
        if let Some(g) = self
            .by_peer
            .get_mut(&s.peer)
            .and_then(|gs| gs.iter_mut().find(|g| g.offer == s.offer))
        {
            g.bytes += s.bytes;
            g.blobs += 1;
        }
    }

    /// What `peer` may still put: (bytes, blobs) over its open grants.
    pub fn left(&self, peer: &str, now_ms: u64) -> (u64, u64) {
        self.by_peer.get(peer).map_or((0, 0), |gs| {
            gs.iter()
                .filter(|g| g.expires_ms > now_ms)
                .fold((0, 0), |(b, n), g| (b + g.bytes, n + u64::from(g.blobs)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::escrow::plan::{offer, OfferParams};
    use crate::layout::Layout;
    use libp2p_identity::ed25519::Keypair;
    use libp2p_identity::PublicKey;

    fn pid(k: &Keypair) -> String {
        PublicKey::from(k.public()).to_peer_id().to_base58()
    }

    struct World {
        tenant: Keypair,
        host: Keypair,
        escrow: Keypair,
        doc: Cosigned,
        id: String,
    }

    fn key(n: u8) -> Keypair {
        Keypair::from(libp2p_identity::ed25519::SecretKey::try_from_bytes([n; 32]).unwrap())
    }

    fn world() -> World {
        let (tenant, host, escrow) = (key(1), key(2), key(3));
        let (t, h) = (pid(&tenant), pid(&host));
        let id = "ab".repeat(16);
        let terms = offer(
            &OfferParams {
                id: id.clone(),
                tenant: &t,
                host: &h,
                guard: &h,
                price_per_gib_month: 1000,
                epoch_ms: 60_000,
                epochs: 10,
                now_ms: 1_000,
            },
            &Layout::new(5 << 20, crate::layout::DEFAULT_SHARD_SIZE).unwrap(),
        );
        let doc = Cosigned::propose(&terms)
            .unwrap()
            .sign(&host)
            .unwrap()
            .sign(&tenant)
            .unwrap();
        World {
            tenant,
            host,
            escrow,
            doc,
            id,
        }
    }

    fn proof(tenant: &str, offers: Vec<String>, by: &Keypair) -> Signed {
        let body = Funded {
            peer_id: pid(by),
            tenant: tenant.into(),
            offers,
            issued_at_ms: 2_000,
        };
        Signed::sign(&body, by).unwrap()
    }

    #[test]
    fn a_valid_proof_grants_the_offer_and_forgeries_are_refused() {
        let w = world();
        let (t, h, e) = (pid(&w.tenant), pid(&w.host), pid(&w.escrow));
        let good = proof(&t, vec![w.id.clone()], &w.escrow);
        let docs = std::slice::from_ref(&w.doc);
        let g = check(docs, &good, &h, &t, &e, 2_000).unwrap();
        assert_eq!(g.len(), 1);
        assert_eq!(
            g[0].blobs, 2,
            "the offer covers the slab's shard and the manifest"
        );
        assert!(g[0].bytes > (5 << 20) / 10, "and their bytes");
        // Signed by someone else than the Escrow.
        let forged = proof(&t, vec![w.id.clone()], &w.tenant);
        assert!(check(docs, &forged, &h, &t, &e, 2_000)
            .unwrap_err()
            .contains("not by this host's Escrow"));
        // Someone else's proof, someone else asking, another host, an unlisted offer, expiry.
        let other = key(4);
        assert!(check(docs, &good, &h, &pid(&other), &e, 2_000).is_err());
        assert!(check(docs, &good, &pid(&other), &t, &e, 2_000)
            .unwrap_err()
            .contains("not this host"));
        let unlisted = proof(&t, vec!["cd".repeat(16)], &w.escrow);
        assert!(check(docs, &unlisted, &h, &t, &e, 2_000)
            .unwrap_err()
            .contains("does not list"));
        assert!(check(docs, &good, &h, &t, &e, u64::MAX)
            .unwrap_err()
            .contains("expired"));
        // A tampered payload fails its signature.
        let mut bad = good.clone();
        bad.payload = bad.payload.replace(&t, &h);
        assert!(check(docs, &bad, &h, &t, &e, 2_000).is_err());
    }

    /// A repair offer is the Guard's to show: the room goes to the Guard, never to the tenant
    /// whose allowance pays for it.
    #[test]
    fn a_repair_offer_grants_the_guard_not_the_tenant() {
        let w = world();
        let guard = key(5);
        let (t, h, e, g) = (pid(&w.tenant), pid(&w.host), pid(&w.escrow), pid(&guard));
        let mut terms = w.doc.terms().unwrap();
        terms.guard = g.clone();
        terms.repair_of = Some("ef".repeat(32));
        let doc = Cosigned::propose(&terms)
            .unwrap()
            .sign(&w.host)
            .unwrap()
            .sign(&guard)
            .unwrap();
        let docs = std::slice::from_ref(&doc);
        let by_guard = proof(&g, vec![w.id.clone()], &w.escrow);
        assert_eq!(check(docs, &by_guard, &h, &g, &e, 2_000).unwrap().len(), 1);
        let by_tenant = proof(&t, vec![w.id.clone()], &w.escrow);
        assert!(check(docs, &by_tenant, &h, &t, &e, 2_000)
            .unwrap_err()
            .contains("paid by"));
    }

    #[test]
    fn grants_are_spent_refunded_bounded_and_never_granted_twice() {
        let mut gs = Grants::new();
        let g = |offer: &str, bytes, blobs| Grant {
            offer: offer.repeat(16),
            bytes,
            blobs,
            expires_ms: 10_000,
        };
        assert_eq!(gs.spend("p", 1, 0), Err(Uncovered::None));
        assert_eq!(gs.add("p", vec![g("ab", 100, 2)], 0).unwrap(), (100, 2));
        let s = gs.spend("p", 60, 0).unwrap();
        assert_eq!(gs.spend("p", 60, 0), Err(Uncovered::Spent { largest: 40 }));
        gs.refund(s);
        assert_eq!(gs.left("p", 0), (100, 2));
        // Showing the same offer again grants nothing more.
        gs.spend("p", 60, 0).unwrap();
        assert_eq!(gs.add("p", vec![g("ab", 100, 2)], 0).unwrap(), (40, 1));
        // Other peers have nothing; expiry ends a grant.
        assert_eq!(gs.spend("q", 1, 0), Err(Uncovered::None));
        assert_eq!(gs.spend("p", 1, 10_000), Err(Uncovered::None));
        // Bounded per peer.
        let many: Vec<Grant> = (0..MAX_GRANTS_PER_PEER + 1)
            .map(|i| Grant {
                offer: format!("{i:032x}"),
                bytes: 1,
                blobs: 1,
                expires_ms: 20_000,
            })
            .collect();
        assert!(gs.add("q", many, 0).unwrap_err().contains("the most is"));
        assert_eq!(gs.left("q", 0), (0, 0));
    }
}

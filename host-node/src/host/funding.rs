//! Which puts this host accepts when it works with an Escrow (rules: `btfs_core::escrow::funding`).
//!
//! A host whose config names an Escrow stores a peer's blobs only under that peer's funded
//! offers: the contract protocol adds grants when a tenant shows the Escrow's proof, and each
//! PUT spends from them before its body is read (a refused PUT costs the host one header). The
//! Guard is no exception: its repairs arrive under repair offers it funded from the tenant's
//! repair allowance, shown with the Escrow's proof like any other. Grants live in memory,
//! bounded by `btfs_core::escrow::funding::{MAX_GRANTS, MAX_GRANTS_PER_PEER}`.

use std::sync::Mutex;

use btfs_core::escrow::funding::{self, Grants, Spent, Uncovered};
use btfs_core::escrow::Cosigned;
use btfs_core::signed::Signed;
use libp2p::PeerId;

/// The host's funding rules and open grants.
pub struct Funding {
    me: String,
    escrow: String,
    grants: Mutex<Grants>,
}

/// What paid for an accepted put (given back if the put fails).
pub struct Paid(Spent);

impl Funding {
    /// Rules for host `me` trusting `escrow`'s proofs.
    pub fn new(me: PeerId, escrow: PeerId) -> Self {
        Self {
            me: me.to_base58(),
            escrow: escrow.to_base58(),
            grants: Mutex::new(Grants::new()),
        }
    }

    fn grants(&self) -> std::sync::MutexGuard<'_, Grants> {
        self.grants.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Checks `peer`'s proof for `offers`; returns what it may now put (bytes, blobs).
    pub fn grant(
        &self,
        peer: PeerId,
        offers: &[Cosigned],
        proof: &Signed,
        now_ms: u64,
    ) -> Result<(u64, u64), String> {
        let p = peer.to_base58();
        let gs = funding::check(offers, proof, &self.me, &p, &self.escrow, now_ms)
            .map_err(|e| format!("refused: {e}"))?;
        self.grants().add(&p, gs, now_ms)
    }

    /// Whether a put of `len` bytes by `peer` is covered; spends from its grants if so.
    pub fn spend(&self, peer: PeerId, len: u64, now_ms: u64) -> Result<Paid, Uncovered> {
        self.grants()
            .spend(&peer.to_base58(), len, now_ms)
            .map(Paid)
    }

    /// Gives a failed put's share back.
    pub fn refund(&self, paid: Paid) {
        self.grants().refund(paid.0);
    }
}

//! Storage contracts and the messages peers send the Escrow, with their bounds and checks.
//!
//! A contract exists twice in its life, both times signed by its tenant *and* its host
//! ([`Cosigned`]):
//! 1. as an **offer** before any byte moves: the host agrees to keep up to `max_bytes` in up to
//!    `max_shards` shards for the tenant, at `price_per_gib_epoch`, for `epochs` epochs from
//!    `first_epoch`, audited by `guard`; the tenant reserves (locks) the most it can cost;
//! 2. as the **contract** once the upload is done: the same terms plus the object's manifest id
//!    and the roots and sizes of the shards that host keeps; committing it shrinks the lock to
//!    the exact amount and returns the rest.
//!
//! One contract per host per upload, listing every shard of the object that host keeps (never one
//! per shard). The amount a shard earns per epoch is `ceil(size × price_per_gib_epoch / 2^30)`
//! µBTT ([`shard_epoch_amount`]), so every part is a whole number and the sum of the parts is the
//! whole: the ledger never rounds money away.

use serde::{Deserialize, Serialize};

use crate::signed::{bounded, Body, SignedError, Signer};

/// µBTT per BTT: amounts on the ledger are whole µBTT.
pub const MICRO_PER_BTT: u64 = 1_000_000;
/// Bytes in the GiB of `price_per_gib_epoch`.
pub const GIB: u64 = 1 << 30;
/// Longest contract, in epochs.
pub const MAX_EPOCHS: u64 = 1_000_000;
/// Most shards one contract lists (a 16 GiB object at 4 MiB shards on one host).
pub const MAX_CONTRACT_SHARDS: usize = 4096;
/// Largest contract payload text.
pub const MAX_CONTRACT_LEN: usize = 512 * 1024;
/// Largest shard one contract may list.
pub const MAX_SHARD_BYTES: u64 = 64 << 20;

/// The amount one shard of `size` bytes earns in one epoch at `price_per_gib_epoch`.
pub fn shard_epoch_amount(size: u64, price_per_gib_epoch: u64) -> u64 {
    let a = (size as u128 * price_per_gib_epoch as u128).div_ceil(GIB as u128);
    u64::try_from(a).unwrap_or(u64::MAX)
}

/// `price_per_gib_month` (what hosts advertise) as a price per GiB-epoch for `epoch_ms` epochs,
/// rounded up (a host signs only at or above its advertised price).
pub fn price_per_epoch(price_per_gib_month: u64, epoch_ms: u64) -> u64 {
    const MONTH_MS: u128 = 30 * 24 * 3600 * 1000;
    let p = (price_per_gib_month as u128 * epoch_ms as u128).div_ceil(MONTH_MS);
    u64::try_from(p).unwrap_or(u64::MAX).max(1)
}

/// The epoch a unix time falls in, for `epoch_ms` epochs (Guard and Escrow number epochs so).
pub fn epoch_at(unix_ms: u64, epoch_ms: u64) -> u64 {
    unix_ms / epoch_ms.max(1)
}

/// A shard a contract covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardTerm {
    /// The shard's root, 64 hex digits.
    pub root: String,
    /// Its size in bytes.
    pub size: u64,
}

/// The terms both parties sign: an offer (no `manifest_id`, no `shards`) or a contract.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Terms {
    /// Chosen by the tenant before it asks: 32 hex digits, unique per tenant. Offer and contract
    /// share it.
    pub id: String,
    /// The paying tenant's peer id.
    pub tenant: String,
    /// The host's peer id.
    pub host: String,
    /// The Guard whose signed verdicts count for payouts.
    pub guard: String,
    /// Price in µBTT per GiB stored per epoch.
    pub price_per_gib_epoch: u64,
    /// Length of an epoch in ms (the Guard's epoch).
    pub epoch_ms: u64,
    /// First paid epoch.
    pub first_epoch: u64,
    /// Number of epochs.
    pub epochs: u64,
    /// Most bytes the host agreed to keep.
    pub max_bytes: u64,
    /// Most shards the host agreed to keep.
    pub max_shards: u32,
    /// Unix ms after which an offer that was never committed is void.
    pub offer_expires_ms: u64,
    /// The object (manifest id, 64 hex digits); absent in an offer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_id: Option<String>,
    /// The shards the host keeps; empty in an offer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shards: Vec<ShardTerm>,
    /// A repair's terms: the object (manifest id, 64 hex digits) whose lost shards they
    /// re-place. The Guard signs them in the tenant's place ([`Terms::payer`]) and the Escrow
    /// funds them from the tenant's repair allowance for that object; absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repair_of: Option<String>,
}

/// Why a document or request is refused before it reaches the ledger.
pub type TermsError = SignedError;

fn field(field: &'static str, why: impl Into<String>) -> SignedError {
    SignedError::Field {
        field,
        why: why.into(),
    }
}

/// Checks `s` is exactly `n` lowercase hex digits.
pub(crate) fn hex_id(name: &'static str, s: &str, n: usize) -> Result<(), SignedError> {
    if s.len() != n
        || !s
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(field(
            name,
            format!(
                "{:?} is not {n} lowercase hex digits",
                s.chars().take(80).collect::<String>()
            ),
        ));
    }
    Ok(())
}

fn peer(name: &'static str, s: &str) -> Result<(), SignedError> {
    bounded(name, s)?;
    s.parse::<libp2p_identity::PeerId>()
        .map_err(|e| field(name, format!("not a peer id: {e}")))?;
    Ok(())
}

impl Terms {
    /// Whether these are a committed contract's terms (manifest and shards given).
    pub fn is_contract(&self) -> bool {
        self.manifest_id.is_some()
    }

    /// Who signs on the paying side and spends for these terms: the tenant, or for a repair
    /// (`repair_of`) the Guard, which spends the tenant's repair allowance.
    pub fn payer(&self) -> &str {
        if self.repair_of.is_some() {
            &self.guard
        } else {
            &self.tenant
        }
    }

    /// Checks every bound; an offer must have no shards, a contract at least one and at most
    /// `max_shards` of at most `max_bytes` in all, with distinct roots.
    pub fn validate(&self) -> Result<(), SignedError> {
        hex_id("id", &self.id, 32)?;
        peer("tenant", &self.tenant)?;
        peer("host", &self.host)?;
        peer("guard", &self.guard)?;
        if self.tenant == self.host {
            return Err(field("host", "a tenant cannot contract with itself"));
        }
        if let Some(m) = &self.repair_of {
            hex_id("repair_of", m, 64)?;
            if self.guard == self.host {
                return Err(field("host", "a Guard cannot place a repair on itself"));
            }
            if self.manifest_id.as_ref().is_some_and(|id| id != m) {
                return Err(field(
                    "manifest_id",
                    "a repair contract is for the object it repairs (manifest_id = repair_of)",
                ));
            }
        }
        if self.price_per_gib_epoch == 0 {
            return Err(field("price_per_gib_epoch", "must be at least 1 µBTT"));
        }
        if self.epoch_ms == 0 || self.epoch_ms > 366 * 24 * 3600 * 1000 {
            return Err(field("epoch_ms", "must be between 1 ms and a year"));
        }
        if self.epochs == 0 || self.epochs > MAX_EPOCHS {
            return Err(field("epochs", format!("must be 1..={MAX_EPOCHS}")));
        }
        if self.first_epoch.checked_add(self.epochs).is_none() {
            return Err(field("first_epoch", "first_epoch + epochs overflows"));
        }
        if self.max_shards == 0 || self.max_shards as usize > MAX_CONTRACT_SHARDS {
            return Err(field(
                "max_shards",
                format!("must be 1..={MAX_CONTRACT_SHARDS}"),
            ));
        }
        if self.max_bytes == 0 || self.max_bytes > self.max_shards as u64 * MAX_SHARD_BYTES {
            return Err(field(
                "max_bytes",
                format!("must be 1..={MAX_SHARD_BYTES} per shard"),
            ));
        }
        // The most this contract can ever lock must fit in a u64 with room to spare.
        if self.reserve_amount().is_none() {
            return Err(field(
                "price_per_gib_epoch",
                "price × size × epochs is too large",
            ));
        }
        match &self.manifest_id {
            None if !self.shards.is_empty() => {
                return Err(field("shards", "an offer lists no shards"))
            }
            None => {}
            Some(m) => {
                hex_id("manifest_id", m, 64)?;
                if self.shards.is_empty() || self.shards.len() > self.max_shards as usize {
                    return Err(field(
                        "shards",
                        format!(
                            "{} shards; a contract lists 1..={} (max_shards)",
                            self.shards.len(),
                            self.max_shards
                        ),
                    ));
                }
                let mut roots = std::collections::BTreeSet::new();
                let mut total = 0u64;
                for s in &self.shards {
                    hex_id("shards.root", &s.root, 64)?;
                    if s.size == 0 || s.size > MAX_SHARD_BYTES {
                        return Err(field(
                            "shards.size",
                            format!("must be 1..={MAX_SHARD_BYTES}"),
                        ));
                    }
                    if !roots.insert(s.root.as_str()) {
                        return Err(field("shards", format!("root {} is listed twice", s.root)));
                    }
                    total = total.saturating_add(s.size);
                }
                if total > self.max_bytes {
                    return Err(field(
                        "shards",
                        format!(
                            "{total} bytes of shards; the offer allows {}",
                            self.max_bytes
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The most an offer can cost: every shard may round up by one µBTT per epoch.
    pub fn reserve_amount(&self) -> Option<u64> {
        let per_epoch = shard_epoch_amount(self.max_bytes, self.price_per_gib_epoch)
            .checked_add(self.max_shards as u64)?;
        let total = per_epoch.checked_mul(self.epochs)?;
        // Leave headroom so sums of many contracts cannot overflow an account.
        (total <= u64::MAX >> 16).then_some(total)
    }

    /// A committed contract's exact cost: Σ over shards of per-epoch amount × epochs.
    pub fn contract_amount(&self) -> u64 {
        self.shards
            .iter()
            .map(|s| shard_epoch_amount(s.size, self.price_per_gib_epoch))
            .sum::<u64>()
            .saturating_mul(self.epochs)
    }

    /// Whether `contract` commits this offer: the same terms, plus a manifest and shards.
    pub fn committed_by(&self, contract: &Terms) -> bool {
        let Terms {
            id,
            tenant,
            host,
            guard,
            price_per_gib_epoch,
            epoch_ms,
            first_epoch,
            epochs,
            max_bytes,
            max_shards,
            offer_expires_ms,
            manifest_id: _,
            shards: _,
            repair_of,
        } = self;
        contract.is_contract()
            && *id == contract.id
            && *tenant == contract.tenant
            && *host == contract.host
            && *guard == contract.guard
            && *price_per_gib_epoch == contract.price_per_gib_epoch
            && *epoch_ms == contract.epoch_ms
            && *first_epoch == contract.first_epoch
            && *epochs == contract.epochs
            && *max_bytes == contract.max_bytes
            && *max_shards == contract.max_shards
            && *offer_expires_ms == contract.offer_expires_ms
            && *repair_of == contract.repair_of
    }
}

/// A document signed by two peers: the payer ([`Terms::payer`]: the tenant, or for a repair the
/// Guard) and the host its [`Terms`] name.
///
/// ```json
/// { "kind": "btfs/contract/1",
///   "payload": "<Terms as JSON text>",
///   "tenant_key": "<base64url ed25519 key>", "tenant_signature": "<base64url>",
///   "host_key":   "<base64url ed25519 key>", "host_signature":   "<base64url>" }
/// ```
///
/// Both signatures are over `kind ‖ 0x00 ‖ payload`, the same bytes as a
/// [`crate::signed::Signed`] envelope; each key must be the key of the peer id the terms name.
/// `tenant_key`/`tenant_signature` hold the payer's: for a repair (`repair_of` set) the
/// Guard's, which alone may spend the tenant's repair allowance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cosigned {
    /// Always [`CONTRACT_KIND`].
    pub kind: String,
    /// [`Terms`] as JSON text.
    pub payload: String,
    /// The payer's key (the tenant's; a repair's: the Guard's).
    pub tenant_key: String,
    /// The payer's signature.
    pub tenant_signature: String,
    /// Host's key.
    pub host_key: String,
    /// Host's signature.
    pub host_signature: String,
}

/// The `kind` of a [`Cosigned`] contract or offer.
pub const CONTRACT_KIND: &str = "btfs/contract/1";

impl Cosigned {
    /// Parses terms that one party proposes (no signatures yet), checking bounds.
    pub fn propose(terms: &Terms) -> Result<Cosigned, SignedError> {
        terms.validate()?;
        let payload = serde_json::to_string(terms).map_err(|e| field("payload", e.to_string()))?;
        if payload.len() > MAX_CONTRACT_LEN {
            return Err(SignedError::TooLarge(payload.len()));
        }
        Ok(Cosigned {
            kind: CONTRACT_KIND.into(),
            payload,
            tenant_key: String::new(),
            tenant_signature: String::new(),
            host_key: String::new(),
            host_signature: String::new(),
        })
    }

    /// Adds `key`'s signature as the payer's or the host's (whichever the terms name it).
    pub fn sign(
        mut self,
        key: &libp2p_identity::ed25519::Keypair,
    ) -> Result<Cosigned, SignedError> {
        let terms = self.terms_unchecked()?;
        let public = data_encoding::BASE64URL_NOPAD.encode(&key.public().to_bytes());
        let me = libp2p_identity::PublicKey::from(key.public())
            .to_peer_id()
            .to_base58();
        let sig = data_encoding::BASE64URL_NOPAD.encode(&key.sign(&sign_bytes(&self.payload)));
        if me == terms.payer() {
            self.tenant_key = public;
            self.tenant_signature = sig;
        } else if me == terms.host {
            self.host_key = public;
            self.host_signature = sig;
        } else {
            let payer = if terms.repair_of.is_some() {
                "repairing Guard"
            } else {
                "tenant"
            };
            return Err(SignedError::WrongPeer {
                claimed: format!("{payer} {} or host {}", terms.payer(), terms.host),
                signer: me,
            });
        }
        Ok(self)
    }

    fn terms_unchecked(&self) -> Result<Terms, SignedError> {
        if self.kind != CONTRACT_KIND {
            return Err(SignedError::Kind {
                expected: CONTRACT_KIND,
                got: self.kind.chars().take(64).collect(),
            });
        }
        if self.payload.len() > MAX_CONTRACT_LEN {
            return Err(SignedError::TooLarge(self.payload.len()));
        }
        serde_json::from_str(&self.payload).map_err(|e| field("payload", e.to_string()))
    }

    /// The terms, after checking kind, size and bounds, whoever signed (what a host checks
    /// before it signs).
    pub fn terms(&self) -> Result<Terms, SignedError> {
        let t = self.terms_unchecked()?;
        t.validate()?;
        Ok(t)
    }

    /// The terms, after checking kind, size, bounds and that the host signed them (what a
    /// tenant checks on the host's answer before it adds its own signature).
    pub fn verify_host(&self) -> Result<Terms, SignedError> {
        let terms = self.terms_unchecked()?;
        terms.validate()?;
        check_sig(
            &self.host_key,
            &self.host_signature,
            &self.payload,
            &terms.host,
        )?;
        Ok(terms)
    }

    /// The terms, after checking kind, size, bounds and both signatures (the host's and the
    /// payer's).
    pub fn verify(&self) -> Result<Terms, SignedError> {
        let terms = self.verify_host()?;
        check_sig(
            &self.tenant_key,
            &self.tenant_signature,
            &self.payload,
            terms.payer(),
        )?;
        Ok(terms)
    }
}

fn sign_bytes(payload: &str) -> Vec<u8> {
    let mut m = Vec::with_capacity(CONTRACT_KIND.len() + 1 + payload.len());
    m.extend_from_slice(CONTRACT_KIND.as_bytes());
    m.push(0);
    m.extend_from_slice(payload.as_bytes());
    m
}

fn check_sig(key: &str, sig: &str, payload: &str, who: &str) -> Result<(), SignedError> {
    if key.is_empty() || sig.is_empty() {
        return Err(SignedError::Malformed {
            what: "signature",
            why: format!("{who} has not signed"),
        });
    }
    let signer = Signer::decode(key)?;
    if signer.peer_b58() != who {
        return Err(SignedError::WrongPeer {
            claimed: who.chars().take(64).collect(),
            signer: signer.peer_b58().to_string(),
        });
    }
    if !signer.verifies(CONTRACT_KIND, payload, sig) {
        return Err(SignedError::BadSignature);
    }
    Ok(())
}

/// What a peer asks the Escrow to do with its account; signed by that account's key as a
/// [`crate::signed::Signed`] envelope of kind [`Call::KIND`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Call {
    /// The account the call spends from (the signer).
    pub peer_id: String,
    /// Chosen and saved by the caller before it sends: 32 hex digits, unique per account. A
    /// retry with the same id and body gets the first answer; another body under a used id is
    /// refused.
    pub id: String,
    /// Unix ms; the Escrow refuses calls more than its `max_skew` away from its clock.
    pub issued_at_ms: u64,
    /// What to do.
    pub op: Op,
}

/// Most documents one `reserve` or `commit` call carries.
pub const MAX_DOCS_PER_CALL: usize = 64;
/// Largest call payload.
pub const MAX_CALL_LEN: usize = 1 << 20;

/// The operations of a [`Call`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Op {
    /// Credit the account from outside (the devnet faucet, or a chain deposit the settlement
    /// layer confirms).
    Deposit {
        /// µBTT.
        amount: u64,
    },
    /// Move `amount` out of the account to the settlement layer.
    Withdraw {
        /// µBTT.
        amount: u64,
    },
    /// Lock the most each offer can cost (all or nothing; the caller must be each offer's
    /// payer). Repair offers (`repair_of`, the Guard pays) are funded from their tenant's
    /// repair allowance for that object; a call reserves repair offers or others, not both.
    Reserve {
        /// Offers signed by both parties.
        offers: Vec<Cosigned>,
    },
    /// Replace reserved offers by the contracts that commit them, and void the offers the
    /// upload did not use (all or nothing).
    Commit {
        /// Contracts signed by both parties.
        contracts: Vec<Cosigned>,
        /// Ids of this tenant's open offers to void (hosts that got no shard).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        void: Vec<String>,
    },
    /// End a contract (or void an uncommitted offer): every epoch after the current one is
    /// refunded to the tenant.
    Cancel {
        /// The contract id.
        contract: String,
    },
    /// Set `amount` aside from the caller's available balance as the repair allowance of object
    /// `manifest_id`: only `guard` may spend it, on repair offers for that object, until
    /// `until_ms`; what is left then comes back. A second call for the same object adds to it
    /// (same Guard) and may push `until_ms` later.
    Allow {
        /// The object (64 hex digits).
        manifest_id: String,
        /// The Guard that repairs it.
        guard: String,
        /// µBTT.
        amount: u64,
        /// Unix ms when what is left comes back.
        until_ms: u64,
    },
}

impl Body for Call {
    const KIND: &'static str = "btfs/escrow-call/1";
    const MAX_LEN: usize = MAX_CALL_LEN;
    fn peer_id(&self) -> &str {
        &self.peer_id
    }
    fn issued_at_ms(&self) -> u64 {
        self.issued_at_ms
    }
    fn validate(&self) -> Result<(), SignedError> {
        bounded("peer_id", &self.peer_id)?;
        hex_id("id", &self.id, 32)?;
        match &self.op {
            Op::Deposit { amount } | Op::Withdraw { amount } => {
                if *amount == 0 || *amount > u64::MAX >> 16 {
                    return Err(field("amount", "must be at least 1 µBTT and below 2^48"));
                }
            }
            Op::Commit { contracts, void } => {
                if contracts.is_empty() && void.is_empty()
                    || contracts.len() > MAX_DOCS_PER_CALL
                    || void.len() > 4 * MAX_DOCS_PER_CALL
                {
                    return Err(field(
                        "op",
                        format!(
                            "{} contracts and {} offers to void; one commit carries 1..={MAX_DOCS_PER_CALL} contracts and at most {} voids",
                            contracts.len(),
                            void.len(),
                            4 * MAX_DOCS_PER_CALL
                        ),
                    ));
                }
                for id in void {
                    hex_id("void", id, 32)?;
                }
            }
            Op::Reserve { offers: docs } => {
                if docs.is_empty() || docs.len() > MAX_DOCS_PER_CALL {
                    return Err(field(
                        "op",
                        format!(
                            "{} documents; one call carries 1..={MAX_DOCS_PER_CALL}",
                            docs.len()
                        ),
                    ));
                }
            }
            Op::Cancel { contract } => hex_id("contract", contract, 32)?,
            Op::Allow {
                manifest_id,
                guard,
                amount,
                ..
            } => {
                hex_id("manifest_id", manifest_id, 64)?;
                peer("guard", guard)?;
                if *amount == 0 || *amount > u64::MAX >> 16 {
                    return Err(field("amount", "must be at least 1 µBTT and below 2^48"));
                }
            }
        }
        Ok(())
    }
}

/// One Guard verdict as the Escrow needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerdictLine {
    /// The audited host.
    pub host: String,
    /// The shard root (64 hex).
    pub root: String,
    /// The Guard's epoch.
    pub epoch: u64,
    /// Whether the proof verified in time.
    pub passed: bool,
}

/// Most verdicts per [`Settle`] batch.
pub const MAX_VERDICTS_PER_BATCH: usize = 4096;

/// A batch of verdicts, signed once by the Guard (kind [`Settle::KIND`]): one signature per
/// batch keeps payouts cheap; each line is settled at most once whatever the batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settle {
    /// The Guard (the signer).
    pub peer_id: String,
    /// The Guard's batch counter (for its own bookkeeping and logs).
    pub seq: u64,
    /// Unix ms.
    pub issued_at_ms: u64,
    /// Verdicts.
    pub verdicts: Vec<VerdictLine>,
}

impl Body for Settle {
    const KIND: &'static str = "btfs/escrow-settle/1";
    const MAX_LEN: usize = 1 << 20;
    fn peer_id(&self) -> &str {
        &self.peer_id
    }
    fn issued_at_ms(&self) -> u64 {
        self.issued_at_ms
    }
    fn validate(&self) -> Result<(), SignedError> {
        bounded("peer_id", &self.peer_id)?;
        if self.verdicts.is_empty() || self.verdicts.len() > MAX_VERDICTS_PER_BATCH {
            return Err(field(
                "verdicts",
                format!("1..={MAX_VERDICTS_PER_BATCH} per batch"),
            ));
        }
        for v in &self.verdicts {
            bounded("host", &v.host)?;
            hex_id("root", &v.root, 64)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::signed::Signed;
    use libp2p_identity::ed25519;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn key(n: u8) -> (ed25519::Keypair, String) {
        let k = ed25519::Keypair::from(ed25519::SecretKey::try_from_bytes([n; 32]).unwrap());
        let p = libp2p_identity::PublicKey::from(k.public())
            .to_peer_id()
            .to_base58();
        (k, p)
    }

    fn offer() -> (Terms, ed25519::Keypair, ed25519::Keypair) {
        let (tk, tenant) = key(1);
        let (hk, host) = key(2);
        let (_, guard) = key(3);
        let t = Terms {
            id: "0123456789abcdef0123456789abcdef".into(),
            tenant,
            host,
            guard,
            price_per_gib_epoch: 7,
            epoch_ms: 5000,
            first_epoch: 100,
            epochs: 10,
            max_bytes: 3 << 20,
            max_shards: 3,
            offer_expires_ms: 1_700_000_000_000,
            manifest_id: None,
            shards: vec![],
            repair_of: None,
        };
        (t, tk, hk)
    }

    /// The exact bytes both parties sign, and the signatures (ed25519 is deterministic): a change
    /// of the encoding breaks every contract ever signed, so it must be deliberate.
    #[test]
    fn golden_offer_encoding_and_signatures() {
        let (t, tk, hk) = offer();
        let doc = Cosigned::propose(&t)
            .unwrap()
            .sign(&hk)
            .unwrap()
            .sign(&tk)
            .unwrap();
        assert_eq!(
            doc.payload,
            format!(
                "{{\"id\":\"0123456789abcdef0123456789abcdef\",\"tenant\":\"{}\",\"host\":\"{}\",\"guard\":\"{}\",\"price_per_gib_epoch\":7,\"epoch_ms\":5000,\"first_epoch\":100,\"epochs\":10,\"max_bytes\":3145728,\"max_shards\":3,\"offer_expires_ms\":1700000000000}}",
                t.tenant, t.host, t.guard
            )
        );
        assert_eq!(doc.kind, "btfs/contract/1");
        assert_eq!(
            doc.tenant_key,
            "iojj3XQJ8ZX9UtstPLpdcspnCb8dlBIb83SIAbQPb1w"
        );
        assert_eq!(doc.tenant_signature, "Gm6oo0VeaKOom0mtWtx6KVcYsMYpG-L0IQiOrM5SgM2I1ihPk8yCZtWTCzieW2y4dLmXFovO8vs_Zc8zX1lTCw");
        assert_eq!(doc.host_key, "gTl3Dqh9F19Wo1Rmw0x-zMuNipG07jeiXfYPW4_Js5Q");
        assert_eq!(doc.host_signature, "ynC6iDvJoHk2XPvvZxxrtLPPh0UiG5MWusaIw8v746TKRPGvXEs7e4Dv8fVbmQ3M61nFL5qp_4LnIW9HjKPLBw");
        assert_eq!(doc.verify().unwrap(), t);
        // Exact µBTT: 3 MiB at 7/GiB-epoch rounds up to 1, plus 3 shards' rounding, × 10 epochs.
        assert_eq!(t.reserve_amount(), Some((1 + 3) * 10));
    }

    #[test]
    fn one_signature_is_not_enough_and_every_byte_counts() {
        let (t, tk, hk) = offer();
        let host_only = Cosigned::propose(&t).unwrap().sign(&hk).unwrap();
        assert!(host_only.verify_host().is_ok());
        assert!(host_only
            .verify()
            .unwrap_err()
            .to_string()
            .contains("has not signed"));
        let both = host_only.sign(&tk).unwrap();
        // A changed payload, a swapped signature or a stranger's key all fail.
        let mut m = both.clone();
        m.payload = m.payload.replace("\"epochs\":10", "\"epochs\":11");
        assert_eq!(m.verify().unwrap_err(), SignedError::BadSignature);
        let mut m = both.clone();
        std::mem::swap(&mut m.tenant_signature, &mut m.host_signature);
        assert!(m.verify().is_err());
        let (stranger, _) = key(9);
        assert!(Cosigned::propose(&t).unwrap().sign(&stranger).is_err());
        let mut m = both.clone();
        m.kind = "btfs/host-ad/1".into();
        assert!(matches!(m.verify(), Err(SignedError::Kind { .. })));
    }

    /// A repair's terms are signed by the Guard in the tenant's place: the tenant's own
    /// signature does not count, and plain terms still need the tenant's.
    #[test]
    fn repair_terms_are_signed_by_the_guard_not_the_tenant() {
        let (mut t, tk, hk) = offer();
        let (gk, guard) = key(3);
        assert_eq!(t.guard, guard);
        assert_eq!(t.payer(), t.tenant);
        t.repair_of = Some("ab".repeat(32));
        assert_eq!(t.payer(), guard);
        let host_signed = Cosigned::propose(&t).unwrap().sign(&hk).unwrap();
        // Wire format: the plain terms' payload, with `repair_of` last.
        assert!(host_signed.payload.ends_with(&format!(
            "\"offer_expires_ms\":1700000000000,\"repair_of\":\"{}\"}}",
            "ab".repeat(32)
        )));
        let by_guard = host_signed.clone().sign(&gk).unwrap();
        assert_eq!(by_guard.verify().unwrap(), t);
        // The tenant cannot sign a repair: it is not a party to it.
        assert!(matches!(
            host_signed.clone().sign(&tk),
            Err(SignedError::WrongPeer { .. })
        ));
        // A Guard's signature moved onto plain terms does not make them the tenant's.
        let mut plain = t.clone();
        plain.repair_of = None;
        let mut forged = Cosigned::propose(&plain).unwrap().sign(&hk).unwrap();
        forged.tenant_key = by_guard.tenant_key.clone();
        forged.tenant_signature = by_guard.tenant_signature.clone();
        assert!(forged.verify().is_err());
        // The repair of one object cannot commit another, nor sit on the Guard itself.
        let mut c = t.clone();
        c.manifest_id = Some("cd".repeat(32));
        c.shards = vec![ShardTerm {
            root: "ee".repeat(32),
            size: 1,
        }];
        assert!(c.validate().unwrap_err().to_string().contains("repair_of"));
        c.manifest_id = t.repair_of.clone();
        c.validate().unwrap();
        assert!(t.committed_by(&c));
        let mut plain_contract = c.clone();
        plain_contract.repair_of = None;
        assert!(!t.committed_by(&plain_contract));
        let mut on_guard = t.clone();
        on_guard.host = guard;
        assert!(on_guard
            .validate()
            .unwrap_err()
            .to_string()
            .contains("itself"));
    }

    #[test]
    fn bounds_are_checked_with_clear_errors() {
        let (t, _, _) = offer();
        let bad = |f: &dyn Fn(&mut Terms), want: &str| {
            let mut x = t.clone();
            f(&mut x);
            let e = x.validate().unwrap_err().to_string();
            assert!(e.contains(want), "{e} should mention {want}");
        };
        bad(&|x| x.id = "XYZ".into(), "hex");
        bad(&|x| x.host = x.tenant.clone(), "itself");
        bad(&|x| x.epochs = 0, "epochs");
        bad(&|x| x.price_per_gib_epoch = 0, "price");
        bad(&|x| x.price_per_gib_epoch = u64::MAX, "too large");
        bad(&|x| x.first_epoch = u64::MAX, "overflows");
        bad(&|x| x.guard = "not a peer".into(), "peer id");
        bad(
            &|x| {
                x.shards = vec![ShardTerm {
                    root: "ab".repeat(32),
                    size: 1,
                }]
            },
            "offer lists no shards",
        );
        let mut c = t.clone();
        c.manifest_id = Some("cd".repeat(32));
        c.shards = (0..4)
            .map(|i| ShardTerm {
                root: format!("{i:064x}"),
                size: 1 << 20,
            })
            .collect();
        assert!(c.validate().unwrap_err().to_string().contains("max_shards"));
        c.shards.truncate(3);
        c.shards[2].root = c.shards[1].root.clone();
        assert!(c.validate().unwrap_err().to_string().contains("twice"));
        c.shards[2].root = "ee".repeat(32);
        c.shards[2].size = (1 << 20) + 1;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("offer allows"));
        c.shards[2].size = 1 << 20;
        c.validate().unwrap();
        assert!(t.committed_by(&c));
        assert_eq!(c.contract_amount(), 3 * 10); // 1 µBTT per 1 MiB shard-epoch, rounded up
    }

    #[test]
    fn calls_and_batches_are_bounded_and_signed() {
        let (k, peer) = key(4);
        let call = Call {
            peer_id: peer.clone(),
            id: "ff".repeat(16),
            issued_at_ms: 5,
            op: Op::Deposit { amount: 10 },
        };
        let env = Signed::sign(&call, &k).unwrap();
        assert_eq!(
            env.payload,
            format!("{{\"peer_id\":\"{peer}\",\"id\":\"ffffffffffffffffffffffffffffffff\",\"issued_at_ms\":5,\"op\":{{\"type\":\"deposit\",\"amount\":10}}}}")
        );
        assert_eq!(env.verify::<Call>().unwrap().body, call);
        let allow = Call {
            op: Op::Allow {
                manifest_id: "cd".repeat(32),
                guard: peer.clone(),
                amount: 7,
                until_ms: 9,
            },
            ..call.clone()
        };
        assert!(Signed::sign(&allow, &k).unwrap().payload.ends_with(&format!(
            "\"op\":{{\"type\":\"allow\",\"manifest_id\":\"{}\",\"guard\":\"{peer}\",\"amount\":7,\"until_ms\":9}}}}",
            "cd".repeat(32)
        )));
        let mut c = call.clone();
        c.op = Op::Reserve { offers: vec![] };
        assert!(Signed::sign(&c, &k).is_err());
        c.op = Op::Deposit { amount: 0 };
        assert!(Signed::sign(&c, &k).is_err());
        let s = Settle {
            peer_id: peer,
            seq: 1,
            issued_at_ms: 1,
            verdicts: vec![
                VerdictLine {
                    host: "h".into(),
                    root: "ab".repeat(32),
                    epoch: 3,
                    passed: true
                };
                MAX_VERDICTS_PER_BATCH + 1
            ],
        };
        assert!(Signed::sign(&s, &k).is_err());
    }

    #[test]
    fn amounts_round_up_and_never_overflow() {
        assert_eq!(shard_epoch_amount(1, 1), 1);
        assert_eq!(shard_epoch_amount(GIB, 5), 5);
        assert_eq!(shard_epoch_amount(GIB + 1, 5), 6);
        assert_eq!(shard_epoch_amount(u64::MAX, u64::MAX), u64::MAX);
        // 100 µBTT per GiB-month in 5 s epochs is a tiny fraction: at least 1.
        assert_eq!(price_per_epoch(100, 5000), 1);
        assert_eq!(price_per_epoch(30 * 24 * 3600 * 1000, 1), 1);
        assert_eq!(price_per_epoch(2 * 30 * 24 * 3600, 1000), 2);
        assert_eq!(epoch_at(10_999, 1000), 10);
    }
}

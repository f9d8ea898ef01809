//! Escrow: storage contracts, the ledger that pays hosts only for proven storage, and the
//! `/btfs/escrow/1` protocol.
//!
//! Goals: a tenant's money leaves its account only (a) into a lock for a contract both parties
//! signed, and (b) from that lock to the host, one (shard, epoch) part at a time, on a passing
//! verdict of the Guard the contract names; everything else goes back to the tenant. Money is
//! never created or lost ([`ledger`]'s invariants), every request is signed by the account it
//! spends from and carries an id its author saved before sending, so retries are harmless. The
//! rules are a pure machine, so the Escrow service recovers from a crash by replaying its log, and
//! anyone can audit it the same way. Non-goals: a blockchain (settlement with the outside world is
//! behind the service's `Settlement` trait), pricing policy (hosts advertise prices; a host signs
//! only at or above its own), storage and networking (`btfs-host`).
//!
//! ## Life of an upload's money
//! 1. The tenant chooses hosts (Hub), builds one offer per host ([`Terms`] without shards: at most
//!    `max_bytes` in `max_shards` shards, price, epochs from the next one), the host signs it if
//!    the price is at or above its own and it has room, the tenant countersigns ([`Cosigned`]).
//! 2. One [`Op::Reserve`] call locks the most all offers can cost. The tenant shows the host the
//!    Escrow's receipt; the host accepts that tenant's shards up to the offer's size.
//! 3. After the upload, the tenant adds the manifest id and the shards each host keeps; the host
//!    checks it holds them and signs; one [`Op::Commit`] call shrinks each lock to the exact cost.
//! 4. Each epoch the Guard audits every shard and sends the Escrow a signed [`Settle`] batch: a
//!    passing line posts that shard's part for that epoch to the host, a failing one returns it.
//!    Parts with no verdict `grace_epochs` after their epoch go back to the tenant.
//! 5. With the commit the tenant sets a repair allowance aside for the object ([`Op::Allow`]).
//!    When shards are lost the Guard makes *repair* offers (`Terms::repair_of`) to new hosts,
//!    signs them in the tenant's place and reserves them: their locks come out of the
//!    allowance, and it commits the repair contracts as a tenant commits an upload's. What is
//!    left of the allowance goes back to the tenant when it ends.
//!
//! ## Wire format, one request per stream
//!
//! ```text
//! request  = len: u32 (LE, ≤ MAX_REQUEST_LEN) ‖ EscrowRequest as JSON
//! response = status: u8 ‖ len: u32 ‖ body       (the shard protocol's ResponseHead framing)
//!            status 0: body = EscrowResponse as JSON (≤ MAX_RESPONSE_LEN)
//!            else:     body = UTF-8 message (≤ 1 KiB)
//! ```
//!
//! ```json
//! {"type":"call","call":<Signed Call>}          → {"type":"call", ..CallReceipt}
//! {"type":"settle","batch":<Signed Settle>}     → {"type":"settle", ..SettleReceipt}
//! {"type":"account","peer":"12D3.."}            → {"type":"account","peer":..,"account":{..}}
//! {"type":"contracts","peer":"12D3.."}          → {"type":"contracts","contracts":[ContractView]}
//! {"type":"history","peer":"12D3..","limit":50} → {"type":"history","transfers":[Transfer]}
//! {"type":"ledger"}                             → {"type":"ledger", ..Totals}
//! {"type":"allowances","manifest_id":"<64 hex>"}→ {"type":"allowances","allowances":[Allowance]}
//! {"type":"info"}                               → {"type":"info", ..EscrowInfo}
//! ```
//!
//! Amounts are whole µBTT (10⁻⁶ BTT) in `u64`.

pub mod funding;
pub mod ledger;
pub mod plan;
pub mod terms;

use serde::{Deserialize, Serialize};

pub use funding::{Funded, Grant, Grants};
pub use ledger::{
    Account, Allowance, CallReceipt, Command, ContractState, Ledger, LedgerConfig, LedgerError,
    Receipt, SettleReceipt, Stage, TickReceipt, Totals, Transfer, TransferKind,
};
pub use terms::{
    epoch_at, price_per_epoch, shard_epoch_amount, Call, Cosigned, Op, Settle, ShardTerm, Terms,
    VerdictLine, MAX_DOCS_PER_CALL, MICRO_PER_BTT,
};

use crate::signed::Signed;

/// libp2p protocol name.
pub const PROTOCOL: &str = "/btfs/escrow/1";
/// Largest request JSON.
pub const MAX_REQUEST_LEN: u32 = 2 << 20;
/// Largest response JSON.
pub const MAX_RESPONSE_LEN: u32 = 8 << 20;
/// Most contracts one `contracts` answer lists (newest last).
pub const MAX_CONTRACTS_ANSWER: usize = 1000;
/// Most allowances one `allowances` answer lists.
pub const MAX_ALLOWANCES_ANSWER: usize = 1000;
/// Most transfers one `history` answer lists.
pub const MAX_HISTORY_ANSWER: u32 = 1000;

/// A request to the Escrow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EscrowRequest {
    /// A signed call on the caller's account.
    Call {
        /// The envelope.
        call: Signed,
    },
    /// A Guard's signed verdicts.
    Settle {
        /// The envelope.
        batch: Signed,
    },
    /// An account's balances (public).
    Account {
        /// Peer id.
        peer: String,
    },
    /// The contracts a peer is tenant or host of (public).
    Contracts {
        /// Peer id.
        peer: String,
    },
    /// A peer's newest transfers (public).
    History {
        /// Peer id.
        peer: String,
        /// At most this many (≤ [`MAX_HISTORY_ANSWER`]).
        limit: u32,
    },
    /// Ledger totals and the conservation check.
    Ledger,
    /// The Escrow's rules.
    Info,
    /// The repair allowances of one object (public).
    Allowances {
        /// The object's manifest id.
        manifest_id: String,
    },
}

/// The Escrow's rules, as a tenant needs them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EscrowInfo {
    /// The ledger configuration.
    pub config: LedgerConfig,
    /// The Escrow's clock, unix ms.
    pub now_ms: u64,
}

/// One shard of a contract as shown to users.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardView {
    /// Root.
    pub root: String,
    /// Bytes.
    pub size: u64,
    /// µBTT per epoch.
    pub per_epoch: u64,
    /// Epochs paid to the host.
    pub paid_epochs: u64,
    /// Epochs returned to the tenant.
    pub refunded_epochs: u64,
    /// Settled runs of epochs.
    pub runs: Vec<ledger::Run>,
}

/// A contract as shown to users.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContractView {
    /// Id.
    pub id: String,
    /// Tenant.
    pub tenant: String,
    /// Host.
    pub host: String,
    /// Guard.
    pub guard: String,
    /// Stage.
    pub state: Stage,
    /// Manifest id (committed contracts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_id: Option<String>,
    /// µBTT per GiB-epoch.
    pub price_per_gib_epoch: u64,
    /// Epoch length.
    pub epoch_ms: u64,
    /// First epoch.
    pub first_epoch: u64,
    /// One past the last payable epoch.
    pub end_epoch: u64,
    /// µBTT still locked.
    pub pending: u64,
    /// µBTT paid to the host.
    pub paid: u64,
    /// µBTT returned to the tenant.
    pub refunded: u64,
    /// Shards.
    pub shards: Vec<ShardView>,
    /// The document both signed.
    pub doc: Cosigned,
}

impl From<&ContractState> for ContractView {
    fn from(c: &ContractState) -> Self {
        Self {
            id: c.terms.id.clone(),
            tenant: c.terms.tenant.clone(),
            host: c.terms.host.clone(),
            guard: c.terms.guard.clone(),
            state: c.stage,
            manifest_id: c.terms.manifest_id.clone(),
            price_per_gib_epoch: c.terms.price_per_gib_epoch,
            epoch_ms: c.terms.epoch_ms,
            first_epoch: c.terms.first_epoch,
            end_epoch: c.end_epoch,
            pending: c.locked,
            paid: c.paid,
            refunded: c.refunded,
            shards: c
                .shards
                .iter()
                .map(|s| {
                    let (paid_epochs, refunded_epochs) = s.counts();
                    ShardView {
                        root: s.root.clone(),
                        size: s.size,
                        per_epoch: s.per_epoch,
                        paid_epochs,
                        refunded_epochs,
                        runs: s.runs.clone(),
                    }
                })
                .collect(),
            doc: c.doc.clone(),
        }
    }
}

/// The Escrow's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EscrowResponse {
    /// A call's receipt.
    Call(CallReceipt),
    /// A batch's receipt.
    Settle(SettleReceipt),
    /// An account.
    Account {
        /// Peer.
        peer: String,
        /// Balances.
        account: Account,
    },
    /// Contracts.
    Contracts {
        /// Oldest first.
        contracts: Vec<ContractView>,
    },
    /// Transfers, newest first.
    History {
        /// Transfers.
        transfers: Vec<Transfer>,
    },
    /// Totals.
    Ledger(Totals),
    /// Rules.
    Info(EscrowInfo),
    /// Repair allowances.
    Allowances {
        /// One per tenant that set one aside.
        allowances: Vec<Allowance>,
    },
}

/// The hosts' protocol for signing offers and contracts (same framing as `/btfs/escrow/1`):
///
/// ```json
/// {"type":"offer","doc":<Cosigned, no signatures>}      → {"type":"signed","doc":<Cosigned, host signed>}
/// {"type":"contract","doc":<Cosigned, no signatures>}   → {"type":"signed","doc":<Cosigned, host signed>}
/// {"type":"funded","offers":[<Cosigned offer>],"proof":<Signed Funded>}
///                                                       → {"type":"granted","bytes":N,"blobs":N}
/// ```
///
/// A host signs an offer only when the payer (the tenant; for a repair, the Guard) is the peer
/// asking, the host is itself, the price
/// is at or above its own (per GiB-month, converted with [`price_per_epoch`]) and `max_bytes`
/// fits its free space; a contract only when, in addition, it holds every listed shard, at the
/// listed size, put by that peer. A host that works with an Escrow stores a tenant's blobs
/// only under a funded offer: `funded` shows it the offers with the Escrow's proof
/// ([`funding`]), and the answer says what the tenant may now put there.
pub const HOST_PROTOCOL: &str = "/btfs/contract/1";
/// Largest host-protocol request.
pub const MAX_HOST_REQUEST_LEN: u32 = 1 << 20;

/// A request to a host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum HostRequest {
    /// Sign this offer.
    Offer {
        /// The proposed document.
        doc: Cosigned,
    },
    /// Sign this contract.
    Contract {
        /// The proposed document.
        doc: Cosigned,
    },
    /// These offers (signed by both) are funded: here is the Escrow's [`Funded`] proof.
    Funded {
        /// This host's offers.
        offers: Vec<Cosigned>,
        /// The Escrow's signed statement.
        proof: Signed,
    },
}

/// A host's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum HostResponse {
    /// The document with the host's signature.
    Signed {
        /// The document.
        doc: Cosigned,
    },
    /// The offers are granted: what the tenant may now put on this host in all.
    Granted {
        /// Bytes.
        bytes: u64,
        /// Blobs.
        blobs: u64,
    },
}

/// Encodes a request for the wire: the length prefix and the JSON body.
pub fn encode_request(req: &EscrowRequest) -> ([u8; 4], Vec<u8>) {
    let body = serde_json::to_vec(req).unwrap_or_default();
    ((body.len() as u32).to_le_bytes(), body)
}

/// Parses a request body (the caller read `len` bytes after checking `len ≤ MAX_REQUEST_LEN`).
pub fn decode_request(body: &[u8]) -> Result<EscrowRequest, String> {
    serde_json::from_slice(body).map_err(|e| {
        format!("malformed Escrow request: {e}; send {{\"type\":\"ledger\"}}, account, contracts, history, call or settle")
    })
}

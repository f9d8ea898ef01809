//! The Escrow service: holds tenants' money and pays hosts per epoch, only for storage the Guard
//! proved — "the safe and secure transaction of funds between tenants and hosts".
//!
//! Goals: every rule is core's pure `btfs_core::escrow::Ledger` (double entry, pending locks
//! posted per shard-epoch on the contract's Guard's passing verdict, refunds on failure, expiry
//! and cancellation, idempotent calls by client-chosen ids); this service makes it durable and
//! reachable: every command that changes the ledger is in `escrow.redb` ([`db`]) before it is
//! acknowledged (group commit: one fsync per batch of requests), a restart — also after `kill
//! -9` — replays the log from the newest snapshot, and `/btfs/escrow/1` ([`server`]) serves
//! signed calls, the Guard's signed verdict batches and public queries (accounts, contracts,
//! histories, totals) with per-peer rate limits and bounded queues. Withdrawals and deposits
//! cross the [`Settlement`] trait, so a chain can replace the local ledger's faucet later.
//!
//! Who may do what: only an account's key spends from it (calls are signed by the account);
//! only the Guard a contract names settles its epochs (batches are signed by that Guard); only
//! the owner withdraws. Forged, replayed, stale or mismatched requests get a clear error, and a
//! replayed call gets its first answer again.
//!
//! Non-goals: several Escrows agreeing (one ledger per network), hiding balances (the ledger is
//! public), pricing (hosts advertise, tenants choose).

pub mod client;
pub mod db;
pub mod server;

pub use server::{
    start, EscrowHandle, EscrowLocal, EscrowOptions, EscrowServiceError, LocalSettlement,
    Settlement,
};

//! The Guard service: proves that hosts still hold what they accepted, and repairs an object
//! before it is at risk.
//!
//! Goals: every watched shard is challenged once per epoch (`btfs_core::proof`: a fresh nonce,
//! 8 random 1 KiB chunks and their Merkle path, checked against the shard's root alone); every
//! verdict is signed with the node's identity key, kept in a queryable log
//! (`btfs audits --host PEER`) and counted in the Hub's score (`Registry::record_audit`: a host
//! that fails audits drops in the ranking); a slab whose healthy shards fall to the repair
//! threshold is repaired by core's `Repair` machine (fetch any 10 verified shards, rebuild only
//! the lost ones, place them on Hub-ranked hosts holding nothing of the slab), and each repair
//! is published as signed placement updates that both tenants apply: **the link never
//! changes**. The Guard never has an object's key: the manifest is public (roots and hosts),
//! and shards are ciphertext. A restart (also `kill -9`) resumes from `guard.redb` ([`db`]).
//!
//! Every policy decision (what to challenge when, deadlines, verdicts, health, when to repair,
//! backoff) is core's `btfs_core::guard::Guard` machine; [`server`] only moves bytes: it
//! performs the machine's challenges and repairs on the node's swarm, signs and stores what it
//! emits, and answers `/btfs/guard/1` requests (`btfs_core::guard_wire`: watch, health,
//! placement, audits).
//!
//! How tenants find repaired shards: `download` asks the Guard named in the network file for
//! the object's placement updates, checks each one's signature against the Guard's peer id,
//! and passes the moves to core's `Download::with_moves`, which applies a move only where its
//! root equals the manifest's root for that shard; every fetched shard is still verified
//! against that root. Without a reachable Guard a download uses the manifest's holders.
//!
//! Paying for repairs ([`pay`]): on a network with an Escrow, each repair places its shards
//! under repair contracts the Guard signs in the tenant's place, funded from the tenant's
//! repair allowance for the object; without an allowance the repair waits (retried after the
//! backoff) rather than store unpaid shards.
//!
//! Non-goals: setting prices or allowances (tenants and hosts do), several Guards agreeing, repairing objects nobody registered,
//! cleaning up the copies a repair killed mid-way had already claimed (a restart repeats the
//! repair of every shard whose new holder was not recorded; unclaimed copies are swept by the
//! hosts' grace period, and once Escrow pays per proven shard an unpaid claimed copy expires).

pub mod client;
pub mod db;
pub mod pay;
pub mod server;

pub use server::{start, GuardHandle, GuardOptions, GuardServiceError, HostBook};

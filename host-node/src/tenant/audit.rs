//! `btfs audit LINK`: the tenant challenges every shard of an object on its holder and checks
//! each proof itself (`btfs_core::proof`), so it never has to trust a Guard's word.
//!
//! Steps: find the manifest (core's download machine, the same fan-out as a download, stopped as
//! soon as the manifest is open), draw a fresh OS-random seed, send one challenge per shard
//! ([`btfs_core::proof::object_challenges`]), at most [`btfs_core::proof::AUDIT_PARALLEL`] at
//! once, each under [`shard_client::AUDIT_TIMEOUT`], and verify every answer against the
//! shard's root. A shard passes only with a valid proof; every other outcome (no answer, not
//! held, damaged copy, bad proof) fails it with the reason.
//!
//! Non-goals: repairing (the Guard's job), following placement updates of a Guard (next step of
//! the Guard work: until then an audit checks the holders the manifest names).

use std::collections::BTreeMap;
use std::time::Instant;

use btfs_core::engine::download::{Download, DownloadConfig};
use btfs_core::engine::{HostId, Machine};
use btfs_core::proof::{self, ShardChallenge, AUDIT_PARALLEL};
use btfs_core::{Link, Manifest, TOTAL_SHARDS};
use futures::stream::{FuturesUnordered, StreamExt};
use libp2p::Multiaddr;
use rand::RngCore;
use serde::Serialize;

use crate::tenant::driver::Runner;
use crate::tenant::shard_client::{self, AUDIT_TIMEOUT};
use crate::tenant::{Tenant, TransferError};

/// One shard's verdict.
#[derive(Debug, Clone, Serialize)]
pub struct ShardVerdict {
    /// Shard index in its slab.
    pub shard: usize,
    /// Its root.
    pub root: String,
    /// The holder challenged (peer id), or "" if the manifest's entry is not a peer id.
    pub host: String,
    /// Whether the proof verified.
    pub passed: bool,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Time to the answer.
    pub ms: u128,
}

/// One slab's result.
#[derive(Debug, Clone, Serialize)]
pub struct SlabAudit {
    /// Slab index.
    pub slab: u64,
    /// Shards that proved they are held, of 30.
    pub healthy: usize,
    /// Every shard.
    pub shards: Vec<ShardVerdict>,
}

/// What an audit found.
#[derive(Debug, Clone, Serialize)]
pub struct AuditReport {
    /// The manifest id.
    pub manifest_id: String,
    /// Per slab.
    pub slabs: Vec<SlabAudit>,
    /// Shards that passed.
    pub passed: usize,
    /// Shards that failed.
    pub failed: usize,
    /// Wall time.
    pub elapsed_ms: u128,
}

impl AuditReport {
    /// Whether every slab can still be decoded from proven shards (≥ 10 of 30).
    pub fn recoverable(&self) -> bool {
        self.slabs
            .iter()
            .all(|s| s.healthy >= btfs_core::DATA_SHARDS)
    }
}

/// Finds the manifest of `link` the way a download does.
pub async fn find_manifest(tenant: &Tenant, link: &Link) -> Result<Manifest, TransferError> {
    let candidates: Vec<HostId> = tenant.hosts().iter().map(|h| HostId::new(h.peer)).collect();
    let mut runner = Runner::new(tenant.net().clone(), tenant.dial_addrs());
    let moves = super::download::guard_moves(tenant, link).await;
    let mut m = Download::with_moves(
        link.clone(),
        candidates,
        moves,
        DownloadConfig::default(),
        runner.now(),
    );
    loop {
        runner.apply_all(&mut m);
        if let Some(manifest) = m.manifest() {
            return Ok(manifest.clone()); // dropping the runner aborts the slab fetches
        }
        if m.is_finished() {
            return Err(match m.take_result() {
                Some(Err(e)) => super::download::download_error(e, tenant),
                _ => TransferError::Interrupted,
            });
        }
        runner.step(&mut m).await;
    }
}

/// Audits the object behind `link`.
pub async fn audit(tenant: &Tenant, link: &Link) -> Result<AuditReport, TransferError> {
    let started = Instant::now();
    let manifest = find_manifest(tenant, link).await?;
    let mut seed = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut seed);
    let challenges = proof::object_challenges(&manifest, &seed);
    let addrs = tenant.dial_addrs();
    let mut pending = challenges.into_iter();
    let mut running = FuturesUnordered::new();
    let mut results: BTreeMap<(u64, usize), ShardVerdict> = BTreeMap::new();
    loop {
        while running.len() < AUDIT_PARALLEL {
            let Some(c) = pending.next() else { break };
            let peer_addrs = c
                .host
                .and_then(|h| addrs.get(&h.peer()).cloned())
                .unwrap_or_default();
            running.push(challenge_one(tenant, c, peer_addrs));
        }
        match running.next().await {
            Some((slab, v)) => {
                results.insert((slab, v.shard), v);
            }
            None => break,
        }
    }
    let mut slabs: BTreeMap<u64, SlabAudit> = BTreeMap::new();
    for ((slab, _), v) in results {
        let s = slabs.entry(slab).or_insert_with(|| SlabAudit {
            slab,
            healthy: 0,
            shards: Vec::with_capacity(TOTAL_SHARDS),
        });
        s.healthy += usize::from(v.passed);
        s.shards.push(v);
    }
    let slabs: Vec<SlabAudit> = slabs.into_values().collect();
    let passed = slabs.iter().map(|s| s.healthy).sum();
    let total: usize = slabs.iter().map(|s| s.shards.len()).sum();
    Ok(AuditReport {
        manifest_id: link.manifest_id.to_hex(),
        slabs,
        passed,
        failed: total - passed,
        elapsed_ms: started.elapsed().as_millis(),
    })
}

async fn challenge_one(
    tenant: &Tenant,
    c: ShardChallenge,
    addrs: Vec<Multiaddr>,
) -> (u64, ShardVerdict) {
    let started = Instant::now();
    let root = c.challenge.root.to_hex();
    let verdict = |passed, reason: Option<String>, host: String| ShardVerdict {
        shard: c.shard,
        root: root.clone(),
        host,
        passed,
        reason,
        ms: started.elapsed().as_millis(),
    };
    let Some(host) = c.host else {
        let v = verdict(
            false,
            Some("the manifest names no valid holder".into()),
            "".into(),
        );
        return (c.slab, v);
    };
    let peer = host.peer();
    let name = peer.to_base58();
    if addrs.is_empty() {
        let v = verdict(
            false,
            Some("the holder is not among the network's known hosts".into()),
            name,
        );
        return (c.slab, v);
    }
    let answer = async {
        tenant
            .net()
            .connect(peer, addrs)
            .await
            .map_err(|e| e.to_string())?;
        shard_client::challenge(
            &mut tenant.net().control(),
            peer,
            &c.challenge,
            AUDIT_TIMEOUT,
        )
        .await
        .map_err(|e| e.to_string())
    };
    let v = match tokio::time::timeout(AUDIT_TIMEOUT, answer).await {
        Err(_) => verdict(
            false,
            Some(format!("no answer within {} s", AUDIT_TIMEOUT.as_secs())),
            name,
        ),
        Ok(Err(e)) => verdict(false, Some(e), name),
        Ok(Ok(p)) => match proof::verify(&c.challenge, &p) {
            Ok(()) => verdict(true, None, name),
            Err(e) => verdict(false, Some(format!("invalid proof: {e}")), name),
        },
    };
    (c.slab, v)
}

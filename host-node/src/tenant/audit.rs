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
//! Shards a Guard's repair moved are challenged on their new holders (the Guard's signed
//! placement updates, applied by [`btfs_core::proof::apply_moves`] only where the root matches
//! the manifest). The report types are core's ([`btfs_core::proof::AuditReport`]), shared with
//! the browser's `client.audit`. Non-goals: repairing (the Guard's job).

use std::time::Instant;

use btfs_core::engine::download::{Download, DownloadConfig};
use btfs_core::engine::{HostId, Machine, Moves};
use btfs_core::proof::{self, ShardChallenge, AUDIT_PARALLEL};
use btfs_core::{Link, Manifest};
use futures::stream::{FuturesUnordered, StreamExt};
use libp2p::Multiaddr;
use rand::RngCore;

use crate::tenant::driver::Runner;
use crate::tenant::shard_client::{self, AUDIT_TIMEOUT};
use crate::tenant::{Tenant, TransferError};

pub use btfs_core::proof::{AuditReport, ShardVerdict, SlabAudit};

/// Finds the manifest of `link` the way a download does; returns it with the Guard's placement
/// moves (shards its repairs moved to new holders).
pub async fn find_manifest(
    tenant: &Tenant,
    link: &Link,
) -> Result<(Manifest, Moves), TransferError> {
    let candidates: Vec<HostId> = tenant.hosts().iter().map(|h| HostId::new(h.peer)).collect();
    let mut runner = Runner::new(tenant.net().clone(), tenant.dial_addrs());
    let moves = super::download::guard_moves(tenant, link).await;
    let mut m = Download::with_moves(
        link.clone(),
        candidates,
        moves.clone(),
        DownloadConfig::default(),
        runner.now(),
    );
    loop {
        runner.apply_all(&mut m);
        if let Some(manifest) = m.manifest() {
            return Ok((manifest.clone(), moves)); // dropping the runner aborts the slab fetches
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
    let (manifest, moves) = find_manifest(tenant, link).await?;
    let mut seed = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut seed);
    let mut challenges = proof::object_challenges(&manifest, &seed);
    proof::apply_moves(&mut challenges, &moves);
    let addrs = tenant.dial_addrs();
    let mut pending = challenges.into_iter();
    let mut running = FuturesUnordered::new();
    let mut results = Vec::new();
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
            Some(verdict) => results.push(verdict),
            None => break,
        }
    }
    Ok(AuditReport::from_verdicts(
        link.manifest_id,
        results,
        started.elapsed().as_millis() as u64,
    ))
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
        ms: started.elapsed().as_millis() as u64,
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

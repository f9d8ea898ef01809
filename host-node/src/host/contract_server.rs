//! The host side of `/btfs/contract/1`: signing storage offers and contracts
//! (`btfs_core::escrow`, [`btfs_core::escrow::HOST_PROTOCOL`]).
//!
//! Goals: a host puts its name only under terms it accepts — the asking peer is the payer (the
//! tenant; for a repair, the Guard spending the tenant's repair allowance), the
//! price is at or above the host's own asking price, the space fits, and (for a contract) every
//! listed shard is on this host's disk, at the listed size, held for that peer. The host keeps
//! no state for this: everything it checks is in the document and on its disk, so a restart
//! between offer and contract changes nothing. Bounded like the other host protocols: fair
//! slots per peer, a token bucket per peer, a size limit and deadlines.
//! Funding: a host that works with an Escrow also takes the Escrow's proof that a tenant's
//! offers are reserved (`funded`), and grants that tenant room for its puts
//! ([`crate::host::funding`]); those grants are the only state this protocol keeps.
//! Non-goals: funding (the tenant funds at the Escrow).

use std::sync::Arc;
use std::time::{Duration, Instant};

use btfs_core::escrow::{price_per_epoch, HostRequest, HostResponse, MAX_HOST_REQUEST_LEN};
use btfs_core::protocol::Status;
use btfs_core::Root;
use futures::AsyncReadExt;
use libp2p::identity::ed25519;
use libp2p::{PeerId, Stream};
use tokio_util::sync::CancellationToken;

use crate::host::fair_slots::{refuse_busy, Gate};
use crate::host::funding::Funding;
use crate::host::inbound::Inbound;
use crate::host::shard_server::{respond, HEADER_DEADLINE};
use crate::host::store::BlobStore;

/// Requests answered at once.
pub const MAX_REQUESTS: usize = 32;
/// Requests one peer may have in flight.
pub const MAX_PER_PEER: usize = 8;
/// Requests per second per peer, and burst.
pub const RATE: f64 = 20.0;
/// Burst per peer.
pub const BURST: f64 = 100.0;
/// Longest offer a host signs (time until it expires).
pub const MAX_OFFER_LIFETIME_MS: u64 = 24 * 3600 * 1000;

/// What the host accepts.
#[derive(Clone)]
pub struct ContractPolicy {
    /// The host's identity key.
    pub key: ed25519::Keypair,
    /// Its asking price per GiB-month.
    pub price_per_gib_month: u64,
    /// Whose funding proofs it takes (a host without an Escrow stores for free).
    pub funding: Option<Arc<Funding>>,
}

/// Answers offer and contract requests until cancelled.
pub async fn serve(
    mut incoming: tokio::sync::mpsc::Receiver<Inbound>,
    store: Arc<dyn BlobStore>,
    policy: ContractPolicy,
    cancel: CancellationToken,
) {
    let gate = Gate::new(MAX_REQUESTS, MAX_PER_PEER, RATE, BURST, 4096);
    loop {
        let (peer, mut stream) = tokio::select! {
            () = cancel.cancelled() => break,
            next = incoming.recv() => match next { Some(s) => s, None => break },
        };
        let slot = gate.admit(peer, Instant::now());
        let store = store.clone();
        let policy = policy.clone();
        tokio::spawn(async move {
            let Some(slot) = slot else {
                let msg = "host busy: too many contract requests from you; retry later";
                refuse_busy(&mut stream, msg).await;
                return;
            };
            slot.set_working();
            let _ = tokio::time::timeout(
                Duration::from_secs(30),
                answer(peer, &mut stream, store, &policy),
            )
            .await;
            drop(slot);
        });
    }
}

async fn answer(
    peer: PeerId,
    stream: &mut Stream,
    store: Arc<dyn BlobStore>,
    policy: &ContractPolicy,
) -> std::io::Result<()> {
    let mut len = [0u8; 4];
    tokio::time::timeout(HEADER_DEADLINE, stream.read_exact(&mut len))
        .await
        .map_err(|_| std::io::Error::other("no request in time"))??;
    let len = u32::from_le_bytes(len);
    if len > MAX_HOST_REQUEST_LEN {
        let msg = format!("request of {len} bytes exceeds the limit of {MAX_HOST_REQUEST_LEN}");
        return respond(stream, Status::TooLarge, msg.as_bytes(), true).await;
    }
    let mut body = vec![0u8; len as usize];
    stream.read_exact(&mut body).await?;
    let result = match serde_json::from_slice::<HostRequest>(&body) {
        Err(e) => Err(format!(
            "malformed contract request: {e}; send {{\"type\":\"offer\",\"doc\":..}} or contract"
        )),
        Ok(req) => {
            let store = store.clone();
            let policy = policy.clone();
            tokio::task::spawn_blocking(move || decide(peer, req, store.as_ref(), &policy))
                .await
                .unwrap_or_else(|e| Err(e.to_string()))
        }
    };
    match result.and_then(|r| serde_json::to_vec(&r).map_err(|e| e.to_string())) {
        Ok(json) => respond(stream, Status::Ok, &json, false).await,
        Err(msg) => respond(stream, Status::BadRequest, msg.as_bytes(), false).await,
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Checks a proposed document against the host's policy and disk; signs it if acceptable.
pub fn decide(
    peer: PeerId,
    req: HostRequest,
    store: &dyn BlobStore,
    policy: &ContractPolicy,
) -> Result<HostResponse, String> {
    let me = libp2p::identity::PublicKey::from(policy.key.public())
        .to_peer_id()
        .to_base58();
    let (doc, want_contract) = match req {
        HostRequest::Offer { doc } => (doc, false),
        HostRequest::Contract { doc } => (doc, true),
        HostRequest::Funded { offers, proof } => {
            let Some(f) = &policy.funding else {
                return Err(
                    "refused: this host works with no Escrow and stores without contracts".into(),
                );
            };
            let (bytes, blobs) = f.grant(peer, &offers, &proof, now_ms())?;
            return Ok(HostResponse::Granted { bytes, blobs });
        }
    };
    let t = doc.terms().map_err(|e| format!("refused: {e}"))?;
    if t.host != me {
        return Err(format!(
            "refused: the terms name host {}, I am {me}",
            t.host
        ));
    }
    if t.payer() != peer.to_base58() {
        return Err(format!(
            "refused: the terms are paid by {}, but {peer} asks; a payer (the tenant, or for a repair the Guard) signs for itself",
            t.payer()
        ));
    }
    let min = price_per_epoch(policy.price_per_gib_month, t.epoch_ms);
    if t.price_per_gib_epoch < min {
        return Err(format!(
            "refused: price {} µBTT per GiB-epoch is below this host's {min} ({} per GiB-month)",
            t.price_per_gib_epoch, policy.price_per_gib_month
        ));
    }
    let now = now_ms();
    if want_contract != t.is_contract() {
        return Err(if want_contract {
            "refused: a contract lists the manifest and its shards".into()
        } else {
            "refused: an offer lists no shards".into()
        });
    }
    if !want_contract {
        if t.offer_expires_ms <= now || t.offer_expires_ms > now + MAX_OFFER_LIFETIME_MS {
            return Err(format!(
                "refused: an offer must expire within {} h from now",
                MAX_OFFER_LIFETIME_MS / 3_600_000
            ));
        }
        let free = store.quota().saturating_sub(store.used());
        if t.max_bytes > free {
            return Err(format!(
                "refused: host is full: {} bytes asked, {free} free",
                t.max_bytes
            ));
        }
    } else {
        for s in &t.shards {
            let root = Root::from_hex(&s.root).map_err(|e| format!("refused: root: {e}"))?;
            let held = store.holds(&root).iter().any(|h| h.peer == peer);
            let size = store.size(&root).map_err(|e| e.to_string())?;
            if !held || size != Some(s.size) {
                return Err(format!(
                    "refused: shard {} is not on this host at {} bytes for {peer}",
                    s.root, s.size
                ));
            }
        }
    }
    doc.sign(&policy.key)
        .map(|doc| HostResponse::Signed { doc })
        .map_err(|e| format!("cannot sign: {e}"))
}

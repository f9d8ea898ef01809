//! The browser's libp2p node: WebSocket and WebRTC-direct transports, one task that owns the
//! `Swarm` (a `spawn_local` future), dials by command, and shard requests over
//! `/btfs/shard/1` streams using the same framing code as the native tenant
//! (`btfs_core::protocol::exchange`). Hub requests (`btfs_core::hub`) go over libp2p
//! request-response with the same bounded JSON codec as native nodes. Guard requests
//! (`/btfs/guard/1`, `btfs_core::guard_wire`), storage challenges (`/btfs/audit/1`,
//! `btfs_core::proof`), Escrow requests (`/btfs/escrow/1`) and contract signing
//! (`/btfs/contract/1`, both `btfs_core::escrow`) are one stream each, in the same response framing as the native tenant
//! (`btfs_core::protocol::exchange_bytes`).
//!
//! Dials and shard requests carry no deadline of their own: the transfer engine
//! (`btfs_core::engine`) sets every deadline and cancels an op by dropping its future. Their
//! errors are typed ([`RequestError`]) so the driver can classify them as engine failures.

use std::collections::HashMap;
use std::time::Duration;

use btfs_core::engine::Failure;
use btfs_core::guard_wire::{self, GuardRequest, GuardResponse};
use btfs_core::hub::{self as hubproto, HubRequest, HubResponse};
use btfs_core::proof::{self, Challenge};
use btfs_core::protocol::{self, ExchangeError, Op, RequestHead, Status, PROTOCOL};
use btfs_core::Root;
use futures::channel::{mpsc, oneshot};
use futures::{SinkExt, StreamExt};
use futures_timer::Delay;
use libp2p::core::upgrade::Version;
use libp2p::core::Transport as _;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{
    identify, noise, ping, request_response, yamux, Multiaddr, PeerId, StreamProtocol, Swarm,
};

use crate::error::ClientError;

/// Deadline for one Hub request (Hub requests are not engine ops).
const HUB_TIMEOUT: Duration = Duration::from_secs(15);
/// Deadline for one Guard request (dial included).
const GUARD_TIMEOUT: Duration = Duration::from_secs(15);

/// Why a shard request failed, as the transport saw it.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// No stream could be opened (no connection, or the connection broke).
    #[error("cannot open a stream: {0}")]
    Stream(String),
    /// The stream broke, or the answer was malformed or too large.
    #[error(transparent)]
    Exchange(#[from] ExchangeError),
    /// The host answered with a refusal.
    #[error("the host refused: {status:?}: {message}")]
    Refused {
        /// Its status.
        status: Status,
        /// Its message.
        message: String,
    },
}

impl RequestError {
    /// The engine's failure kind for this error.
    pub fn failure(&self) -> Failure {
        match self {
            Self::Stream(_) => Failure::Unreachable,
            Self::Exchange(ExchangeError::Io(e)) if e.kind() == std::io::ErrorKind::TimedOut => {
                Failure::Timeout
            }
            Self::Exchange(ExchangeError::Frame(_)) => Failure::Corrupt,
            // A broken stream (and any future kind of transport error).
            Self::Exchange(_) => Failure::Unreachable,
            Self::Refused { status, .. } => {
                Failure::from_status(*status).unwrap_or(Failure::Refused)
            }
        }
    }
}

/// Why a service request ([`Node::framed_request`]) failed.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The peer answered with a refusal (its message).
    #[error("refused: {0}")]
    Refused(String),
    /// No connection, a broken stream, no answer in time, or a malformed answer.
    #[error("{0}")]
    Failed(String),
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    stream: libp2p_stream::Behaviour,
    hub: request_response::json::Behaviour<HubRequest, HubResponse>,
}

enum Command {
    Dial {
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        reply: oneshot::Sender<Result<(), String>>,
    },
    Hub {
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        request: HubRequest,
        reply: oneshot::Sender<Result<HubResponse, String>>,
    },
}

/// Handle to the browser node.
#[derive(Clone)]
pub struct Node {
    control: libp2p_stream::Control,
    commands: mpsc::Sender<Command>,
}

fn build(keypair: libp2p::identity::Keypair) -> Result<Swarm<Behaviour>, ClientError> {
    let setup = |e: &dyn std::fmt::Display| ClientError::Setup(e.to_string());
    let swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
        .with_wasm_bindgen()
        .with_other_transport(|key| {
            Ok(libp2p_websocket_websys::Transport::default()
                .upgrade(Version::V1Lazy)
                .authenticate(noise::Config::new(key)?)
                .multiplex(yamux::Config::default()))
        })
        .map_err(|e| setup(&e))?
        .with_other_transport(|key| {
            libp2p_webrtc_websys::Transport::new(libp2p_webrtc_websys::Config::new(key))
        })
        .map_err(|e| setup(&e))?
        .with_behaviour(|key| Behaviour {
            identify: identify::Behaviour::new(identify::Config::new(
                "/btfs/id/1".into(),
                key.public(),
            )),
            ping: ping::Behaviour::default(),
            stream: libp2p_stream::Behaviour::new(),
            hub: request_response::json::Behaviour::with_codec(
                request_response::json::codec::Codec::default()
                    .set_request_size_maximum(hubproto::MAX_REQUEST_BYTES)
                    .set_response_size_maximum(hubproto::MAX_RESPONSE_BYTES),
                [(
                    StreamProtocol::new(hubproto::PROTOCOL),
                    request_response::ProtocolSupport::Outbound,
                )],
                request_response::Config::default().with_request_timeout(HUB_TIMEOUT),
            ),
        })
        .map_err(|e| setup(&e))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    Ok(swarm)
}

impl Node {
    /// Starts the node's task on the page's event loop, with `keypair` as its identity.
    pub fn start(keypair: libp2p::identity::Keypair) -> Result<Self, ClientError> {
        let swarm = build(keypair)?;
        let control = swarm.behaviour().stream.new_control();
        let (commands, rx) = mpsc::channel(64);
        wasm_bindgen_futures::spawn_local(run(swarm, rx));
        Ok(Self { control, commands })
    }

    /// Connects to `peer` (no-op when connected), trying `addrs` in order of preference. No
    /// deadline: the caller drops the future to give up.
    pub async fn connect(&self, peer: PeerId, addrs: Vec<Multiaddr>) -> Result<(), ClientError> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .clone()
            .send(Command::Dial { peer, addrs, reply })
            .await
            .map_err(|_| ClientError::Stopped)?;
        rx.await
            .map_err(|_| ClientError::Stopped)?
            .map_err(|reason| ClientError::Dial {
                peer: peer.to_string(),
                reason,
            })
    }

    async fn request(
        &self,
        peer: PeerId,
        head: RequestHead,
        body: &[u8],
        max_ok_len: u32,
    ) -> Result<Vec<u8>, RequestError> {
        self.exchange_on(peer, PROTOCOL, &head.encode(), body, max_ok_len)
            .await
    }

    /// Sends a Hub-protocol request and waits for the answer.
    pub async fn hub_request(
        &self,
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        request: HubRequest,
    ) -> Result<HubResponse, ClientError> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .clone()
            .send(Command::Hub {
                peer,
                addrs,
                request,
                reply,
            })
            .await
            .map_err(|_| ClientError::Stopped)?;
        rx.await
            .map_err(|_| ClientError::Stopped)?
            .map_err(|reason| ClientError::Hub(format!("cannot reach the Hub {peer}: {reason}")))
    }

    /// One request on a fresh stream of `protocol` (`head ‖ body` out, the `ResponseHead`
    /// framing back, at most `max_ok_len` bytes of body).
    async fn exchange_on(
        &self,
        peer: PeerId,
        protocol: &'static str,
        head: &[u8],
        body: &[u8],
        max_ok_len: u32,
    ) -> Result<Vec<u8>, RequestError> {
        let mut stream = self
            .control
            .clone()
            .open_stream(peer, StreamProtocol::new(protocol))
            .await
            .map_err(|e| RequestError::Stream(e.to_string()))?;
        let (status, out) = protocol::exchange_bytes(&mut stream, head, body, max_ok_len).await?;
        if status == Status::Ok {
            Ok(out)
        } else {
            Err(RequestError::Refused {
                status,
                message: String::from_utf8_lossy(&out).into_owned(),
            })
        }
    }

    /// Sends `request` to the Guard `peer` (connected first through `addrs`) and returns its
    /// answer, within [`GUARD_TIMEOUT`].
    pub async fn guard_request(
        &self,
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        request: &GuardRequest,
    ) -> Result<GuardResponse, ClientError> {
        let guard = |why: String| ClientError::Guard(format!("the Guard {peer}: {why}"));
        let work = async {
            self.connect(peer, addrs).await?;
            let (len, body) = guard_wire::encode_request(request);
            let out = self
                .exchange_on(
                    peer,
                    guard_wire::PROTOCOL,
                    &len,
                    &body,
                    guard_wire::MAX_RESPONSE_LEN,
                )
                .await
                .map_err(|e| match e {
                    RequestError::Refused { message, .. } => guard(format!("refused: {message}")),
                    e => guard(e.to_string()),
                })?;
            serde_json::from_slice::<GuardResponse>(&out)
                .map_err(|e| guard(format!("malformed answer: {e}")))
        };
        let timeout = Delay::new(GUARD_TIMEOUT);
        futures::pin_mut!(work);
        match futures::future::select(work, timeout).await {
            futures::future::Either::Left((r, _)) => r,
            futures::future::Either::Right(_) => Err(guard(format!(
                "no answer within {} s",
                GUARD_TIMEOUT.as_secs()
            ))),
        }
    }

    /// One length-prefixed JSON request (`len: u32 LE ‖ body`) on a fresh stream of
    /// `protocol` to `peer`, connected first through `addrs`, answered in the `ResponseHead`
    /// framing within `timeout`: the Escrow's `/btfs/escrow/1` and the hosts'
    /// `/btfs/contract/1` (`btfs_core::escrow`). Returns the body of an `Ok` answer.
    pub async fn framed_request(
        &self,
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        protocol: &'static str,
        body: &[u8],
        max_ok_len: u32,
        timeout: Duration,
    ) -> Result<Vec<u8>, ServiceError> {
        let work = async {
            self.connect(peer, addrs)
                .await
                .map_err(|e| ServiceError::Failed(e.to_string()))?;
            let len = u32::try_from(body.len()).unwrap_or(u32::MAX).to_le_bytes();
            self.exchange_on(peer, protocol, &len, body, max_ok_len)
                .await
                .map_err(|e| match e {
                    RequestError::Refused { message, .. } => ServiceError::Refused(message),
                    e => ServiceError::Failed(e.to_string()),
                })
        };
        let deadline = Delay::new(timeout);
        futures::pin_mut!(work);
        match futures::future::select(work, deadline).await {
            futures::future::Either::Left((r, _)) => r,
            futures::future::Either::Right(_) => Err(ServiceError::Failed(format!(
                "no answer within {} s",
                timeout.as_secs()
            ))),
        }
    }

    /// Sends a storage challenge to `peer` (connected) and returns its proof, unverified (the
    /// caller checks it with `btfs_core::proof::verify`). No deadline: the caller sets it.
    pub async fn challenge(&self, peer: PeerId, c: &Challenge) -> Result<Vec<u8>, RequestError> {
        let max = u32::try_from(proof::max_proof_len(c.size)).unwrap_or(u32::MAX);
        self.exchange_on(peer, proof::PROTOCOL, &c.encode(), &[], max)
            .await
    }

    /// Stores a blob on `peer`.
    pub async fn put(&self, peer: PeerId, root: Root, blob: &[u8]) -> Result<(), RequestError> {
        let head = RequestHead {
            op: Op::Put,
            root,
            // Over 4 GiB saturates: the host refuses anything over 4 MiB as too large.
            len: u32::try_from(blob.len()).unwrap_or(u32::MAX),
        };
        self.request(peer, head, blob, 0).await.map(|_| ())
    }

    /// Drops this client's hold on `root` at `peer` (the host deletes the blob when no hold is
    /// left); only a blob this client put can be released.
    pub async fn release(&self, peer: PeerId, root: Root) -> Result<(), RequestError> {
        let head = RequestHead {
            op: Op::Release,
            root,
            len: 0,
        };
        self.request(peer, head, &[], 0).await.map(|_| ())
    }

    /// The size of blob `root` at `peer` (a resumed upload checks its placed shards).
    pub async fn stat(&self, peer: PeerId, root: Root) -> Result<u64, RequestError> {
        let head = RequestHead {
            op: Op::Stat,
            root,
            len: 0,
        };
        let body = self.request(peer, head, &[], 8).await?;
        let len = body.len() as u32;
        let bytes: [u8; 8] = body.try_into().map_err(|_| {
            ExchangeError::Frame(protocol::FrameError::TooLong {
                what: "stat body",
                len,
                max: 8,
            })
        })?;
        Ok(u64::from_le_bytes(bytes))
    }

    /// Claims this client's holds on `roots` at `peer` for a completed upload.
    pub async fn claim(&self, peer: PeerId, roots: &[Root]) -> Result<(), RequestError> {
        for chunk in roots.chunks(protocol::MAX_CLAIM_ROOTS as usize) {
            let body = protocol::claim_body(chunk);
            let head = RequestHead {
                op: Op::Claim,
                root: Root::from_bytes([0; 32]),
                len: body.len() as u32,
            };
            self.request(peer, head, &body, 0).await?;
        }
        Ok(())
    }

    /// Fetches a blob of at most `max_len` bytes (the caller verifies it).
    pub async fn get(
        &self,
        peer: PeerId,
        root: Root,
        max_len: u32,
    ) -> Result<Vec<u8>, RequestError> {
        let head = RequestHead {
            op: Op::Get,
            root,
            len: 0,
        };
        self.request(peer, head, &[], max_len).await
    }
}

async fn run(mut swarm: Swarm<Behaviour>, mut commands: mpsc::Receiver<Command>) {
    let mut dials: HashMap<PeerId, Vec<oneshot::Sender<Result<(), String>>>> = HashMap::new();
    let mut hub_pending: HashMap<
        request_response::OutboundRequestId,
        oneshot::Sender<Result<HubResponse, String>>,
    > = HashMap::new();
    loop {
        futures::select! {
            cmd = commands.next() => match cmd {
                None => break,
                Some(Command::Dial { peer, addrs, reply }) => {
                    if swarm.is_connected(&peer) {
                        let _ = reply.send(Ok(()));
                        continue;
                    }
                    let first = !dials.contains_key(&peer);
                    let waiting = dials.entry(peer).or_default();
                    // Callers that gave up (their op was cancelled) are dropped here, so a dial
                    // that never ends holds at most the callers still waiting.
                    waiting.retain(|r| !r.is_canceled());
                    waiting.push(reply);
                    if first {
                        let opts = DialOpts::peer_id(peer)
                            .addresses(addrs)
                            .condition(PeerCondition::DisconnectedAndNotDialing)
                            .build();
                        if let Err(e) = swarm.dial(opts) {
                            for r in dials.remove(&peer).unwrap_or_default() {
                                let _ = r.send(Err(e.to_string()));
                            }
                        }
                    }
                }
                Some(Command::Hub { peer, addrs, request, reply }) => {
                    let id = swarm.behaviour_mut().hub.send_request_with_addresses(&peer, request, addrs);
                    hub_pending.insert(id, reply);
                }
            },
            event = swarm.select_next_some() => match event {
                SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                    for r in dials.remove(&peer_id).unwrap_or_default() {
                        let _ = r.send(Ok(()));
                    }
                }
                SwarmEvent::OutgoingConnectionError { peer_id: Some(peer), error, .. }
                    if !swarm.is_connected(&peer) =>
                {
                    for r in dials.remove(&peer).unwrap_or_default() {
                        let _ = r.send(Err(error.to_string()));
                    }
                }
                SwarmEvent::Behaviour(BehaviourEvent::Hub(event)) => match event {
                    request_response::Event::Message {
                        message: request_response::Message::Response { request_id, response },
                        ..
                    } => {
                        if let Some(r) = hub_pending.remove(&request_id) {
                            let _ = r.send(Ok(response));
                        }
                    }
                    request_response::Event::OutboundFailure { request_id, error, .. } => {
                        if let Some(r) = hub_pending.remove(&request_id) {
                            let _ = r.send(Err(error.to_string()));
                        }
                    }
                    _ => {}
                },
                _ => {}
            },
        }
    }
}

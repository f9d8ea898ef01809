//! Client errors, and their one conversion into a JavaScript `Error` that keeps the cause chain.

use thiserror::Error;

use crate::network_file::NetworkError;

/// Anything the browser client can fail at. Each message says what to do.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The libp2p node could not be built.
    #[error("cannot set up the browser's libp2p node: {0}")]
    Setup(String),
    /// The node's task ended.
    #[error("the client's network task has stopped; create a new client with BtfsClient.connect")]
    Stopped,
    /// A dial failed.
    #[error("cannot connect to host {peer}: {reason}")]
    Dial {
        /// Peer id.
        peer: String,
        /// Cause.
        reason: String,
    },
    /// The Hub could not be asked, refused, or gave an answer that does not check out.
    #[error("hub: {0}")]
    Hub(String),
    /// The Guard could not be asked, refused, or answered what the protocol does not allow.
    #[error("guard: {0}")]
    Guard(String),
    /// The Escrow could not be asked, refused a call, or answered what the protocol does not
    /// allow.
    #[error("escrow: {0}")]
    Escrow(String),
    /// The wallet cannot pay for an upload (on a network without a faucet).
    #[error("this upload needs {need} reserved and the wallet {peer} has {have} available; pay into {peer} through the network's settlement (or use a devnet, whose faucet tops wallets up), then upload again")]
    Unfunded {
        /// Needed.
        need: String,
        /// Available.
        have: String,
        /// The wallet's peer id.
        peer: String,
    },
    /// Too few hosts signed a storage offer.
    #[error(
        "too few hosts: only {signed} of the {needed} hosts needed signed a storage offer: {why}"
    )]
    TooFewOffers {
        /// Signed.
        signed: usize,
        /// Needed.
        needed: usize,
        /// Some hosts' answers.
        why: String,
    },
    /// Bad `network` option.
    #[error(transparent)]
    Network(#[from] NetworkError),
    /// Bad link.
    #[error(transparent)]
    Link(#[from] btfs_core::link::LinkError),
    /// No host answered.
    #[error("network unreachable: none of the {total} hosts answered over the browser transports ({first_error}). Is the network running, and do its hosts listen on WebSocket or WebRTC-direct?")]
    Unreachable {
        /// Hosts tried.
        total: usize,
        /// The first failure seen.
        first_error: String,
    },
    /// Fewer than 30 hosts reachable.
    #[error("too few hosts: {reachable} of {total} hosts are reachable, but every slab needs 30 distinct hosts ({first_error})")]
    TooFewHosts {
        /// Reachable.
        reachable: usize,
        /// Known.
        total: usize,
        /// The first failure seen.
        first_error: String,
    },
    /// The upload failed (core's engine says why and what to do).
    #[error(transparent)]
    Upload(btfs_core::engine::upload::UploadError),
    /// The download failed (core's engine says why and what to do).
    #[error(transparent)]
    Download(btfs_core::engine::download::DownloadError),
    /// The transfer engine waits for nothing yet is not finished: a bug.
    #[error("internal error: the transfer stopped with nothing in flight; please report this bug")]
    Stalled,
    /// Encoding failed.
    #[error(transparent)]
    Encode(#[from] btfs_core::EncodeError),
    /// Impossible layout (object too large, bad shard size).
    #[error(transparent)]
    Layout(#[from] btfs_core::layout::LayoutError),
    /// A browser API failed.
    #[error("browser API error: {0}")]
    Js(String),
}

#[cfg(target_arch = "wasm32")]
mod js {
    use wasm_bindgen::JsValue;

    impl From<super::ClientError> for JsValue {
        fn from(e: super::ClientError) -> JsValue {
            to_js(&e)
        }
    }

    /// A JS `Error` whose `cause` chain mirrors the Rust `source()` chain.
    pub fn to_js(e: &(dyn std::error::Error + 'static)) -> JsValue {
        let err = js_sys::Error::new(&e.to_string());
        err.set_name("BtfsError");
        if let Some(source) = e.source() {
            let _ = js_sys::Reflect::set(&err, &"cause".into(), &to_js(source));
        }
        err.into()
    }

    /// Turns a thrown JS value into a client error.
    pub fn from_js(v: JsValue) -> super::ClientError {
        let msg = v
            .dyn_ref::<js_sys::Error>()
            .map(|e| String::from(e.message()))
            .or_else(|| v.as_string())
            .unwrap_or_else(|| format!("{v:?}"));
        super::ClientError::Js(msg)
    }

    use wasm_bindgen::JsCast;
}

#[cfg(target_arch = "wasm32")]
pub use js::from_js;

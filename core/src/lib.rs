//! # btfs-core
//!
//! Everything that must behave identically in a browser tab and on a native host: the object
//! [`layout`], client-side [`crypto`], Reed-Solomon [`erasure`] coding, BLAKE3 content [`root`]s,
//! the streaming [`encoder`] and [`decoder`], the [`manifest`] and capability [`link`] formats,
//! the shard [`protocol`] framing, host [`score`]s (so a browser can audit the Hub's ranking) and
//! [`signed`] measurements (host ads and status reports), the [`hub`] protocol's messages (and
//! how many hosts an upload asks for), the [`network_file`] format, and the [`transport`]
//! rules for which of a host's addresses each shell dials.
//!
//! Goals: sans-io (no sockets, disk, clock or RNG: keys and time come in as arguments), bounded
//! memory, every decode fallible and bounded, identical results on native and wasm32.
//! Non-goals: transports and storage (they live in `btfs-host` and `btfs-client`).
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]
#![warn(missing_docs)]

pub mod crypto;
pub mod decoder;
pub mod encoder;
pub mod engine;
pub mod erasure;
pub mod escrow;
#[doc(hidden)]
pub mod fuzz_bodies;
pub mod guard;
pub mod guard_wire;
pub mod hub;
pub mod layout;
pub mod link;
pub mod manifest;
pub mod network_file;
pub mod placement;
pub mod proof;
pub mod protocol;
pub mod root;
pub mod score;
pub mod signed;
#[cfg(any(all(target_arch = "wasm32", target_feature = "simd128"), test))]
pub mod simd128;
pub mod transport;

pub use crypto::ObjectKey;
pub use decoder::{DecodeError, Decoder};
pub use encoder::{EncodeError, EncodedSlab, Encoder};
pub use layout::{Layout, SlabLayout, DATA_SHARDS, PARITY_SHARDS, TOTAL_SHARDS};
pub use link::Link;
pub use manifest::{Manifest, ManifestError, ObjectHeader, ShardRecord, SlabRecord};
pub use root::{Root, VerifiedShard};

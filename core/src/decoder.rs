//! Streaming decoder: verified shards in, slab by slab, plaintext out.
//!
//! Sans-io: the caller fetches any 10 shards of a slab (each checked against its root with
//! [`Root::verify`](crate::root::Root::verify), which is the only way to get a
//! [`VerifiedShard`]), hands them over in slab order and writes out the plaintext it gets back.
//! Memory: one slab plus one partial AEAD block, whatever the object's size.

use thiserror::Error;

use crate::crypto::{BlockCipher, CryptoError, ObjectKey};
use crate::erasure::{self, ErasureError};
use crate::layout::{Layout, SlabLayout, BLOCK_CIPHER, TOTAL_SHARDS};
use crate::manifest::{Manifest, ManifestError, ObjectHeader};
use crate::root::VerifiedShard;

/// Decoding failed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// The header did not open: almost always a wrong key.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// Slabs must come in order.
    #[error("slab {got} given while slab {expected} was expected")]
    OutOfOrder {
        /// Slab given.
        got: u64,
        /// Slab expected.
        expected: u64,
    },
    /// The object has no such slab.
    #[error("the object has no slab {0}")]
    NoSuchSlab(u64),
    /// Wrong number of shard slots.
    #[error("expected 30 shard slots, got {0}")]
    Slots(usize),
    /// Rebuilding failed.
    #[error(transparent)]
    Erasure(#[from] ErasureError),
    /// A block failed authentication.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    /// Called `finish` before the last slab.
    #[error("download incomplete: {done} of {total} slabs decoded")]
    Incomplete {
        /// Slabs decoded.
        done: u64,
        /// Slabs in the object.
        total: u64,
    },
}

/// The streaming decoder of one object.
pub struct Decoder {
    layout: Layout,
    cipher: BlockCipher,
    header: ObjectHeader,
    next_slab: u64,
    next_block: u64,
    /// Ciphertext of a block that continues in the next slab.
    carry: Vec<u8>,
}

impl Decoder {
    /// Opens the manifest's header with `key`; a wrong key fails here, before any download.
    pub fn new(manifest: &Manifest, key: &ObjectKey) -> Result<Self, DecodeError> {
        let header = manifest.open_header(key)?;
        Ok(Self {
            layout: *manifest.layout(),
            cipher: key.data_cipher(),
            header,
            next_slab: 0,
            next_block: 0,
            carry: Vec::new(),
        })
    }

    /// The decrypted object header.
    pub fn header(&self) -> &ObjectHeader {
        &self.header
    }

    /// The slab expected next, or `None` when all are done.
    pub fn next_slab(&self) -> Option<SlabLayout> {
        self.layout.slab(self.next_slab)
    }

    /// Rebuilds slab `index` from any 10 verified shards (`shards[i]` is shard `i`), decrypts
    /// every block it completes and returns that plaintext.
    pub fn decode_slab(
        &mut self,
        index: u64,
        shards: &[Option<VerifiedShard>],
    ) -> Result<Vec<u8>, DecodeError> {
        let slab = self
            .layout
            .slab(index)
            .ok_or(DecodeError::NoSuchSlab(index))?;
        if index != self.next_slab {
            return Err(DecodeError::OutOfOrder {
                got: index,
                expected: self.next_slab,
            });
        }
        if shards.len() != TOTAL_SHARDS {
            return Err(DecodeError::Slots(shards.len()));
        }
        let view: Vec<Option<&[u8]>> = shards
            .iter()
            .map(|s| s.as_ref().map(VerifiedShard::bytes))
            .collect();
        let data = erasure::decode(&view, slab.shard_size as usize)?;
        self.carry
            .extend_from_slice(&data[..slab.cipher_len as usize]);
        drop(data);
        self.next_slab += 1;

        let is_last_slab = self.next_slab == self.layout.slab_count();
        let block = BLOCK_CIPHER as usize;
        let mut out = Vec::with_capacity(self.carry.len());
        let mut pos = 0;
        while self.carry.len() - pos >= block || (is_last_slab && pos < self.carry.len()) {
            let end = (pos + block).min(self.carry.len());
            let last = self.next_block + 1 == self.layout.blocks();
            let plain = self
                .cipher
                .open(self.next_block, last, &mut self.carry[pos..end])?;
            out.extend_from_slice(plain);
            self.next_block += 1;
            pos = end;
        }
        self.carry.drain(..pos);
        Ok(out)
    }

    /// Checks that every slab was decoded.
    pub fn finish(self) -> Result<ObjectHeader, DecodeError> {
        if self.next_slab != self.layout.slab_count() || !self.carry.is_empty() {
            return Err(DecodeError::Incomplete {
                done: self.next_slab,
                total: self.layout.slab_count(),
            });
        }
        Ok(self.header)
    }
}

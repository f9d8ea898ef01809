//! Streaming encoder: plaintext in, encoded slabs (30 named shards each) out.
//!
//! Sans-io: the caller feeds bytes as it reads them and takes finished slabs; the encoder holds at
//! most one slab of ciphertext plus one 64 KiB block, whatever the object's size.
//!
//! ```text
//! let mut enc = Encoder::new(&key, layout);
//! while let Some(chunk) = read() {
//!     let mut rest = &chunk[..];
//!     while !rest.is_empty() {
//!         rest = &rest[enc.feed(rest)?..];
//!         while let Some(slab) = enc.next_slab()? { send(slab) }
//!     }
//! }
//! enc.finish()?; // every byte promised by the layout was fed
//! ```

use thiserror::Error;

use crate::crypto::{BlockCipher, ObjectKey};
use crate::erasure::{self, ErasureError};
use crate::layout::{Layout, SlabLayout, BLOCK_PLAIN, DATA_SHARDS, TOTAL_SHARDS};
use crate::root::Root;

/// Encoding failed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EncodeError {
    /// More bytes than the declared size.
    #[error("the input is longer than the declared {declared} bytes (did the file grow while uploading?)")]
    TooLong {
        /// Declared plaintext length.
        declared: u64,
    },
    /// Fewer bytes than the declared size.
    #[error("the input ended after {got} of the declared {declared} bytes (did the file shrink while uploading?)")]
    TooShort {
        /// Bytes fed.
        got: u64,
        /// Declared plaintext length.
        declared: u64,
    },
    /// Erasure coding failed.
    #[error(transparent)]
    Erasure(#[from] ErasureError),
}

/// One slab's 30 shards and their roots.
#[derive(Debug, Clone)]
pub struct EncodedSlab {
    /// Where the slab sits in the object.
    pub layout: SlabLayout,
    /// Data shards 0..10, back to back (the slab's ciphertext, zero padded).
    data: Vec<u8>,
    /// Parity shards 10..30, back to back.
    parity: Vec<u8>,
    /// BLAKE3 root of each shard.
    pub roots: [Root; TOTAL_SHARDS],
}

impl EncodedSlab {
    /// Shard `i` (0..30).
    pub fn shard(&self, i: usize) -> &[u8] {
        let s = self.layout.shard_size as usize;
        if i < DATA_SHARDS {
            &self.data[i * s..(i + 1) * s]
        } else {
            &self.parity[(i - DATA_SHARDS) * s..(i - DATA_SHARDS + 1) * s]
        }
    }
}

/// The streaming encoder of one object.
pub struct Encoder {
    layout: Layout,
    cipher: BlockCipher,
    /// Plaintext of the block being filled.
    block: Vec<u8>,
    next_block: u64,
    fed: u64,
    /// Ciphertext of the slab being filled.
    slab: Vec<u8>,
    slab_index: u64,
    /// Ciphertext that did not fit in the previous slab.
    carry: Vec<u8>,
    ready: bool,
}

impl Encoder {
    /// An encoder for one object of `layout.plain_len()` bytes under `key`.
    pub fn new(key: &ObjectKey, layout: Layout) -> Self {
        let mut e = Self {
            layout,
            cipher: key.data_cipher(),
            block: Vec::with_capacity(BLOCK_PLAIN as usize + 16),
            next_block: 0,
            fed: 0,
            slab: Vec::new(),
            slab_index: 0,
            carry: Vec::new(),
            ready: false,
        };
        e.start_slab();
        if layout.plain_len() == 0 {
            e.seal_block();
        }
        e
    }

    fn current(&self) -> Option<SlabLayout> {
        self.layout.slab(self.slab_index)
    }

    fn start_slab(&mut self) {
        if let Some(s) = self.current() {
            self.slab = Vec::with_capacity(s.shard_size as usize * DATA_SHARDS);
            let take = self.carry.len().min(s.cipher_len as usize);
            self.slab.extend(self.carry.drain(..take));
            self.ready = self.slab.len() as u64 == s.cipher_len;
        }
    }

    /// Encrypts the filled block and appends it to the slab (spilling into `carry`).
    fn seal_block(&mut self) {
        let last = self.next_block + 1 == self.layout.blocks();
        self.cipher.seal(self.next_block, last, &mut self.block);
        self.next_block += 1;
        let room = self
            .current()
            .map_or(0, |s| s.cipher_len as usize - self.slab.len());
        let take = room.min(self.block.len());
        self.slab.extend_from_slice(&self.block[..take]);
        self.carry.extend_from_slice(&self.block[take..]);
        self.block.clear();
        if let Some(s) = self.current() {
            self.ready = self.slab.len() as u64 == s.cipher_len;
        }
    }

    /// Consumes plaintext up to the end of the current slab; returns how many bytes were used.
    /// Returns 0 while a finished slab waits in [`Encoder::next_slab`].
    pub fn feed(&mut self, mut data: &[u8]) -> Result<usize, EncodeError> {
        let declared = self.layout.plain_len();
        if data.len() as u64 > declared - self.fed {
            return Err(EncodeError::TooLong { declared });
        }
        let start = data.len();
        while !data.is_empty() && !self.ready {
            let want = BLOCK_PLAIN as usize - self.block.len();
            let n = want.min(data.len());
            self.block.extend_from_slice(&data[..n]);
            data = &data[n..];
            self.fed += n as u64;
            if self.block.len() == BLOCK_PLAIN as usize || self.fed == declared {
                self.seal_block();
            }
        }
        Ok(start - data.len())
    }

    /// Erasure-codes and returns the finished slab, if one is ready.
    pub fn next_slab(&mut self) -> Result<Option<EncodedSlab>, EncodeError> {
        let Some(layout) = self.current().filter(|_| self.ready) else {
            return Ok(None);
        };
        let shard_size = layout.shard_size as usize;
        let mut data = std::mem::take(&mut self.slab);
        data.resize(shard_size * DATA_SHARDS, 0);
        let parity = erasure::encode(&data, shard_size)?;
        let mut slab = EncodedSlab {
            layout,
            data,
            parity,
            roots: [Root::from_bytes([0; 32]); TOTAL_SHARDS],
        };
        for i in 0..TOTAL_SHARDS {
            slab.roots[i] = Root::of(slab.shard(i));
        }
        self.slab_index += 1;
        self.ready = false;
        self.start_slab();
        Ok(Some(slab))
    }

    /// Checks that the whole object was fed and every slab taken.
    pub fn finish(self) -> Result<(), EncodeError> {
        if self.fed != self.layout.plain_len() {
            return Err(EncodeError::TooShort {
                got: self.fed,
                declared: self.layout.plain_len(),
            });
        }
        debug_assert!(self.slab_index == self.layout.slab_count());
        Ok(())
    }

    /// Plaintext bytes fed so far.
    pub fn fed(&self) -> u64 {
        self.fed
    }
}

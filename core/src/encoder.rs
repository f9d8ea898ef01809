//! Streaming encoder: plaintext in, encoded slabs (30 named shards each) out.
//!
//! Sans-io: the caller feeds bytes as it reads them and takes finished slabs; the encoder holds at
//! most one slab of ciphertext plus one 64 KiB block, whatever the object's size.
//!
//! CPU: plaintext is copied once, into the slab's buffer, and sealed there in place (only a
//! block that straddles two slabs goes through a block buffer). Slab buffers are recycled: a
//! dropped [`EncodedSlab`] hands its data and parity buffers back to its encoder (at most
//! [`POOL_BUFFERS`] of each are kept), and the Reed-Solomon encoder keeps its work buffers, so
//! a long upload stops allocating (and page-faulting) after its first slabs.
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

use std::sync::{Arc, Mutex};

use thiserror::Error;

use crate::crypto::{BlockCipher, ObjectKey};
use crate::erasure::{ErasureError, ParityEncoder};
use crate::layout::{Layout, SlabLayout, BLOCK_PLAIN, DATA_SHARDS, TAG_LEN, TOTAL_SHARDS};
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

/// Buffers of each kind (data, parity) an encoder keeps for reuse.
pub const POOL_BUFFERS: usize = 2;

/// Slab buffers handed back by dropped slabs, shared by an encoder and its slabs.
#[derive(Clone, Default)]
struct Pool(Arc<Mutex<Buffers>>);

#[derive(Default)]
struct Buffers {
    data: Vec<Vec<u8>>,
    parity: Vec<Vec<u8>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pool")
    }
}

impl Pool {
    fn buffers(&self) -> std::sync::MutexGuard<'_, Buffers> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An empty buffer with room for `cap` bytes.
    fn take_data(&self, cap: usize) -> Vec<u8> {
        let mut buf = self.buffers().data.pop().unwrap_or_default();
        buf.clear();
        buf.reserve(cap);
        buf
    }

    /// A buffer for parity; its length is left as it was, so resizing it to the same size
    /// writes nothing.
    fn take_parity(&self) -> Vec<u8> {
        self.buffers().parity.pop().unwrap_or_default()
    }

    fn give(&self, data: Vec<u8>, parity: Vec<u8>) {
        let mut b = self.buffers();
        if b.data.len() < POOL_BUFFERS && data.capacity() > 0 {
            b.data.push(data);
        }
        if b.parity.len() < POOL_BUFFERS && parity.capacity() > 0 {
            b.parity.push(parity);
        }
    }
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
    /// Where the buffers go when the slab is dropped.
    pool: Pool,
}

impl Drop for EncodedSlab {
    fn drop(&mut self) {
        self.pool.give(
            std::mem::take(&mut self.data),
            std::mem::take(&mut self.parity),
        );
    }
}

impl EncodedSlab {
    /// A slab encoded elsewhere (the browser's encoding worker): its data shards and parity
    /// shards back to back, and their roots. `None` if the lengths are not 10 and 20 shards of
    /// the layout's size. The roots are taken as given: hosts check every shard against its
    /// root before storing it.
    pub fn from_parts(
        layout: SlabLayout,
        data: Vec<u8>,
        parity: Vec<u8>,
        roots: [Root; TOTAL_SHARDS],
    ) -> Option<Self> {
        let s = layout.shard_size as usize;
        (data.len() == DATA_SHARDS * s && parity.len() == (TOTAL_SHARDS - DATA_SHARDS) * s).then(
            || Self {
                layout,
                data,
                parity,
                roots,
                pool: Pool::default(),
            },
        )
    }

    /// The data shards back to back, and the parity shards back to back (for
    /// [`EncodedSlab::from_parts`] on the other side of a worker boundary).
    pub fn parts(&self) -> (&[u8], &[u8]) {
        (&self.data, &self.parity)
    }

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
    /// Plaintext of the block being filled, when it does not fit in the slab's room.
    block: Vec<u8>,
    /// Where the plaintext of the block being filled starts in `slab`, when the whole sealed
    /// block fits there (it is then sealed in place).
    in_slab: Option<usize>,
    next_block: u64,
    fed: u64,
    /// Ciphertext of the slab being filled.
    slab: Vec<u8>,
    slab_index: u64,
    /// Ciphertext that did not fit in the previous slab.
    carry: Vec<u8>,
    ready: bool,
    parity: ParityEncoder,
    pool: Pool,
}

impl Encoder {
    /// An encoder for one object of `layout.plain_len()` bytes under `key`.
    pub fn new(key: &ObjectKey, layout: Layout) -> Self {
        let mut e = Self {
            layout,
            cipher: key.data_cipher(),
            block: Vec::with_capacity(BLOCK_PLAIN as usize + 16),
            in_slab: None,
            next_block: 0,
            fed: 0,
            slab: Vec::new(),
            slab_index: 0,
            carry: Vec::new(),
            ready: false,
            parity: ParityEncoder::default(),
            pool: Pool::default(),
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
            self.slab = self.pool.take_data(s.shard_size as usize * DATA_SHARDS);
            let take = self.carry.len().min(s.cipher_len as usize);
            self.slab.extend(self.carry.drain(..take));
            self.ready = self.slab.len() as u64 == s.cipher_len;
        }
    }

    /// Plaintext length of block `index` (every block is full but the last).
    fn block_plain_len(&self, index: u64) -> usize {
        let start = index * u64::from(BLOCK_PLAIN);
        (self.layout.plain_len().saturating_sub(start)).min(u64::from(BLOCK_PLAIN)) as usize
    }

    /// Plaintext bytes of the block being filled.
    fn block_filled(&self) -> usize {
        match self.in_slab {
            Some(start) => self.slab.len() - start,
            None => self.block.len(),
        }
    }

    /// Encrypts the filled block and appends it to the slab (spilling into `carry`).
    fn seal_block(&mut self) {
        let last = self.next_block + 1 == self.layout.blocks();
        if let Some(start) = self.in_slab.take() {
            // The whole sealed block fits in the slab: seal it where it lies.
            let tag = self
                .cipher
                .seal_detached(self.next_block, last, &mut self.slab[start..]);
            self.slab.extend_from_slice(&tag);
            self.next_block += 1;
            if let Some(s) = self.current() {
                self.ready = self.slab.len() as u64 == s.cipher_len;
            }
            return;
        }
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
            let block_len = self.block_plain_len(self.next_block);
            if self.block_filled() == 0 && self.in_slab.is_none() {
                // A new block: in place if its ciphertext and tag fit in the slab's room.
                let room = self
                    .current()
                    .map_or(0, |s| s.cipher_len as usize - self.slab.len());
                if self.carry.is_empty() && block_len + TAG_LEN as usize <= room {
                    self.in_slab = Some(self.slab.len());
                }
            }
            let n = (block_len - self.block_filled()).min(data.len());
            match self.in_slab {
                Some(_) => self.slab.extend_from_slice(&data[..n]),
                None => self.block.extend_from_slice(&data[..n]),
            }
            data = &data[n..];
            self.fed += n as u64;
            if self.block_filled() == block_len {
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
        let mut parity = self.pool.take_parity();
        if let Err(e) = self.parity.encode_into(&data, shard_size, &mut parity) {
            self.slab = data;
            return Err(e.into());
        }
        let mut slab = EncodedSlab {
            layout,
            data,
            parity,
            roots: [Root::from_bytes([0; 32]); TOTAL_SHARDS],
            pool: self.pool.clone(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::erasure;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    /// The object's 30 shards per slab the obvious way: seal every block into one ciphertext
    /// stream, cut it at the layout's slab offsets, pad, erasure-code.
    fn reference(key: &ObjectKey, layout: Layout, plain: &[u8]) -> Vec<Vec<Vec<u8>>> {
        let cipher = key.data_cipher();
        let mut stream = Vec::new();
        let blocks: Vec<&[u8]> = if plain.is_empty() {
            vec![&[]]
        } else {
            plain.chunks(BLOCK_PLAIN as usize).collect()
        };
        for (i, b) in blocks.iter().enumerate() {
            let mut buf = b.to_vec();
            cipher.seal(i as u64, i + 1 == blocks.len(), &mut buf);
            stream.extend_from_slice(&buf);
        }
        layout
            .slabs()
            .map(|s| {
                let size = s.shard_size as usize;
                let start = s.cipher_offset as usize;
                let mut data = stream[start..start + s.cipher_len as usize].to_vec();
                data.resize(size * DATA_SHARDS, 0);
                let parity = erasure::encode(&data, size).unwrap();
                data.chunks(size)
                    .chain(parity.chunks(size))
                    .map(<[u8]>::to_vec)
                    .collect()
            })
            .collect()
    }

    /// Encodes in `chunk`-byte feeds; keeps every slab alive or drops each at once (so the
    /// next slabs reuse its buffers).
    fn encoded(
        key: &ObjectKey,
        layout: Layout,
        plain: &[u8],
        chunk: usize,
        keep: bool,
    ) -> Vec<Vec<Vec<u8>>> {
        let mut enc = Encoder::new(key, layout);
        let (mut out, mut alive) = (Vec::new(), Vec::new());
        let mut take = |enc: &mut Encoder, out: &mut Vec<Vec<Vec<u8>>>| {
            while let Some(slab) = enc.next_slab().unwrap() {
                assert_eq!(slab.layout.index as usize, out.len());
                let shards: Vec<Vec<u8>> =
                    (0..TOTAL_SHARDS).map(|i| slab.shard(i).to_vec()).collect();
                for (i, s) in shards.iter().enumerate() {
                    assert_eq!(slab.roots[i], Root::of(s));
                }
                out.push(shards);
                if keep {
                    alive.push(slab);
                }
            }
        };
        take(&mut enc, &mut out);
        for piece in plain.chunks(chunk.max(1)) {
            let mut rest = piece;
            while !rest.is_empty() {
                rest = &rest[enc.feed(rest).unwrap()..];
                take(&mut enc, &mut out);
            }
        }
        enc.finish().unwrap();
        out
    }

    /// Sealing in place, straddling blocks, tiny last slabs and recycled buffers give exactly
    /// the bytes of the one-shot reference.
    #[test]
    fn slabs_match_the_one_shot_reference() {
        let key = ObjectKey::from_bytes([9; 32]);
        let block = BLOCK_PLAIN as usize;
        for (len, shard) in [
            (0, 64),
            (1, 64),
            (block, 64),
            (block + 1, 4096),
            (3 * block + 7, 4096 * 4),
            (10 * 4096 * 4 + 5, 4096 * 4),
            (5 * block - 3, 6400),
        ] {
            let layout = Layout::new(len as u64, shard).unwrap();
            let plain: Vec<u8> = (0..len).map(|i| (i * 7 + i / 251) as u8).collect();
            let want = reference(&key, layout, &plain);
            for chunk in [1000, block - 1, block + 17, len.max(1)] {
                for keep in [false, true] {
                    let got = encoded(&key, layout, &plain, chunk, keep);
                    assert!(
                        got == want,
                        "len {len} shard {shard} chunk {chunk} keep {keep}"
                    );
                }
            }
        }
    }

    #[test]
    fn dropped_slabs_hand_their_buffers_back_within_the_bound() {
        let key = ObjectKey::from_bytes([1; 32]);
        let layout = Layout::new(20 * 4096 * 10, 4096).unwrap();
        let plain = vec![5u8; layout.plain_len() as usize];
        let mut enc = Encoder::new(&key, layout);
        let mut rest = &plain[..];
        let mut slabs = Vec::new();
        while !rest.is_empty() {
            rest = &rest[enc.feed(rest).unwrap()..];
            while let Some(s) = enc.next_slab().unwrap() {
                slabs.push(s);
            }
        }
        assert!(slabs.len() > POOL_BUFFERS + 1);
        drop(slabs);
        let b = enc.pool.buffers();
        assert_eq!((b.data.len(), b.parity.len()), (POOL_BUFFERS, POOL_BUFFERS));
    }
}

//! How an object's bytes are cut into encryption blocks, slabs and shards.
//!
//! Goals: one pure function from `(plain_len, max_shard_size)` to every offset and size the
//! encoder, decoder and hosts need, so the browser and the native client always agree and the
//! manifest does not have to carry derivable numbers.
//!
//! ```text
//! plaintext   | 64 KiB | 64 KiB | ... | ≤64 KiB |           (at least one block, even when empty)
//! ciphertext  | 64 KiB+16 | 64 KiB+16 | ... | ≤64 KiB+16 |  (ChaCha20-Poly1305 per block)
//! slabs       |<--- 10 × max_shard_size --->|<-- ... -->|<- last, smaller ->|
//! shards      each slab → 10 data shards of `shard_size` (zero padded) + 20 parity shards
//! ```
//!
//! A slab's shard size is `round_up(ceil(slab_len / 10), 64)`, so small objects and the last slab
//! of a large one get small shards instead of padding to the maximum.

use thiserror::Error;

/// Data shards per slab: any this many of [`TOTAL_SHARDS`] rebuild the slab.
pub const DATA_SHARDS: usize = 10;
/// Parity shards per slab.
pub const PARITY_SHARDS: usize = 20;
/// Shards per slab, each on a distinct host.
pub const TOTAL_SHARDS: usize = DATA_SHARDS + PARITY_SHARDS;
/// Largest shard the protocol allows (and so the largest blob a host accepts).
pub const MAX_SHARD_SIZE: u32 = 4 * 1024 * 1024;
/// Default shard size: 1 MiB keeps a tenant's memory at a few 30 MiB slabs (see `docs/architecture.md`).
pub const DEFAULT_SHARD_SIZE: u32 = 1024 * 1024;
/// Shard sizes are multiples of this (reed-solomon-simd works in 64-byte units).
pub const SHARD_ALIGN: u32 = 64;
/// Plaintext bytes per AEAD block.
pub const BLOCK_PLAIN: u32 = 64 * 1024;
/// Poly1305 tag appended to every block.
pub const TAG_LEN: u32 = 16;
/// Ciphertext bytes per full AEAD block.
pub const BLOCK_CIPHER: u32 = BLOCK_PLAIN + TAG_LEN;
/// Largest object one manifest describes (1 TiB); larger objects are split by the application.
pub const MAX_OBJECT_LEN: u64 = 1 << 40;

/// A layout parameter or size is out of range.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LayoutError {
    /// The shard size is zero, too large or not a multiple of 64.
    #[error("invalid shard size {0}: use a multiple of 64 bytes between 64 B and 4 MiB")]
    ShardSize(u32),
    /// The object is larger than one manifest may describe.
    #[error("object of {0} bytes is larger than the 1 TiB limit: split it into several objects")]
    TooLarge(u64),
    /// A ciphertext length that no plaintext length produces.
    #[error("ciphertext length {0} is impossible for this block size: the manifest is corrupt")]
    CipherLen(u64),
}

/// The cut of one object into blocks and slabs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    plain_len: u64,
    max_shard_size: u32,
}

/// Where one slab sits in the ciphertext and how big its shards are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlabLayout {
    /// Slab number, from 0.
    pub index: u64,
    /// Offset of the slab's first byte in the ciphertext stream.
    pub cipher_offset: u64,
    /// Ciphertext bytes in this slab (≤ 10 × shard_size; the rest of the data shards is zeros).
    pub cipher_len: u64,
    /// Size of each of the slab's 30 shards.
    pub shard_size: u32,
}

impl Layout {
    /// The layout of a `plain_len`-byte object with shards of at most `max_shard_size` bytes.
    pub fn new(plain_len: u64, max_shard_size: u32) -> Result<Self, LayoutError> {
        if max_shard_size == 0
            || max_shard_size > MAX_SHARD_SIZE
            || !max_shard_size.is_multiple_of(SHARD_ALIGN)
        {
            return Err(LayoutError::ShardSize(max_shard_size));
        }
        if plain_len > MAX_OBJECT_LEN {
            return Err(LayoutError::TooLarge(plain_len));
        }
        Ok(Self {
            plain_len,
            max_shard_size,
        })
    }

    /// The layout that produced `cipher_len` bytes of ciphertext (as recorded in a manifest).
    pub fn from_cipher_len(cipher_len: u64, max_shard_size: u32) -> Result<Self, LayoutError> {
        let blocks = cipher_len.div_ceil(u64::from(BLOCK_CIPHER)).max(1);
        let plain_len = cipher_len
            .checked_sub(blocks * u64::from(TAG_LEN))
            .ok_or(LayoutError::CipherLen(cipher_len))?;
        let layout = Self::new(plain_len, max_shard_size)?;
        if layout.cipher_len() != cipher_len {
            return Err(LayoutError::CipherLen(cipher_len));
        }
        Ok(layout)
    }

    /// Plaintext length of the object.
    pub fn plain_len(&self) -> u64 {
        self.plain_len
    }

    /// Largest shard size of this object.
    pub fn max_shard_size(&self) -> u32 {
        self.max_shard_size
    }

    /// Number of AEAD blocks (at least one, so an empty object still authenticates).
    pub fn blocks(&self) -> u64 {
        self.plain_len.div_ceil(u64::from(BLOCK_PLAIN)).max(1)
    }

    /// Ciphertext length: plaintext plus one tag per block.
    pub fn cipher_len(&self) -> u64 {
        self.plain_len + self.blocks() * u64::from(TAG_LEN)
    }

    /// Ciphertext bytes a full slab holds.
    pub fn slab_capacity(&self) -> u64 {
        u64::from(self.max_shard_size) * DATA_SHARDS as u64
    }

    /// Number of slabs (at least one).
    pub fn slab_count(&self) -> u64 {
        self.cipher_len().div_ceil(self.slab_capacity()).max(1)
    }

    /// Layout of slab `index`, or `None` past the end.
    pub fn slab(&self, index: u64) -> Option<SlabLayout> {
        if index >= self.slab_count() {
            return None;
        }
        let cipher_offset = index * self.slab_capacity();
        let cipher_len = (self.cipher_len() - cipher_offset).min(self.slab_capacity());
        Some(SlabLayout {
            index,
            cipher_offset,
            cipher_len,
            shard_size: shard_size_for(cipher_len),
        })
    }

    /// All slabs in order.
    pub fn slabs(&self) -> impl Iterator<Item = SlabLayout> + '_ {
        (0..self.slab_count()).filter_map(|i| self.slab(i))
    }
}

/// Smallest 64-byte-aligned shard size whose 10 data shards hold `slab_len` bytes.
fn shard_size_for(slab_len: u64) -> u32 {
    let per_shard = slab_len.div_ceil(DATA_SHARDS as u64).max(1);
    let aligned = per_shard.div_ceil(u64::from(SHARD_ALIGN)) * u64::from(SHARD_ALIGN);
    // slab_len ≤ 10 × MAX_SHARD_SIZE, so this always fits.
    u32::try_from(aligned).unwrap_or(MAX_SHARD_SIZE)
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn empty_object_has_one_block_and_one_tiny_slab() {
        let l = Layout::new(0, DEFAULT_SHARD_SIZE).unwrap();
        assert_eq!(l.blocks(), 1);
        assert_eq!(l.cipher_len(), 16);
        assert_eq!(l.slab_count(), 1);
        assert_eq!(l.slab(0).unwrap().shard_size, 64);
    }

    #[test]
    fn large_object_uses_full_slabs_then_a_small_last_one() {
        // 25 MiB of plaintext: 400 blocks, 25 MiB + 6400 B of ciphertext.
        let l = Layout::new(25 << 20, DEFAULT_SHARD_SIZE).unwrap();
        assert_eq!(l.blocks(), 400);
        assert_eq!(l.slab_count(), 3);
        let last = l.slab(2).unwrap();
        assert_eq!(last.cipher_offset, 20 << 20);
        assert_eq!(last.cipher_len, (5 << 20) + 6400);
        assert_eq!(last.shard_size, 524_928); // ceil(5_249_280 / 10) rounded up to 64
        assert_eq!(l.slab(1).unwrap().shard_size, DEFAULT_SHARD_SIZE);
        assert!(l.slab(3).is_none());
    }

    #[test]
    fn cipher_len_round_trips() {
        for plain in [0u64, 1, 65535, 65536, 65537, 10 << 20, (10 << 20) + 1] {
            let l = Layout::new(plain, 4096).unwrap();
            assert_eq!(Layout::from_cipher_len(l.cipher_len(), 4096).unwrap(), l);
        }
        assert!(Layout::from_cipher_len(5, 4096).is_err());
        assert!(Layout::from_cipher_len(u64::from(BLOCK_CIPHER) + 3, 4096).is_err());
    }

    #[test]
    fn bad_parameters_are_refused() {
        assert!(Layout::new(1, 0).is_err());
        assert!(Layout::new(1, 100).is_err());
        assert!(Layout::new(1, MAX_SHARD_SIZE + 64).is_err());
        assert!(Layout::new(MAX_OBJECT_LEN + 1, 4096).is_err());
    }
}

//! Client-side encryption: a fresh 256-bit key per object, ChaCha20-Poly1305 per 64 KiB block.
//!
//! Goals: encryption streams block by block; a corrupt, reordered, truncated or extended
//! ciphertext fails loudly; the key never leaves the tenant (it travels only in the link's URL
//! fragment). Non-goals: hiding the object's size (the ciphertext length is public), key
//! management beyond one key per object.
//!
//! Two sub-keys are derived from the object key with BLAKE3's KDF, so the data blocks and the
//! object header can never share a (key, nonce) pair:
//!
//! ```text
//! data_key   = blake3::derive_key("btfs-rs 2026-11 object data v1",   object_key)
//! header_key = blake3::derive_key("btfs-rs 2026-11 object header v1", object_key)
//! block nonce (12 bytes) = block_index: u64 LE ‖ is_last_block: u32 LE (0 or 1)
//! header nonce           = 12 zero bytes (one header per key)
//! ```
//!
//! Because the nonce carries the block's position and whether it is the last one, moving,
//! dropping or appending blocks makes authentication fail.

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce, Tag};
use thiserror::Error;

use crate::layout::TAG_LEN;

const DATA_CONTEXT: &str = "btfs-rs 2026-11 object data v1";
const HEADER_CONTEXT: &str = "btfs-rs 2026-11 object header v1";

/// Authentication of encrypted data failed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CryptoError {
    /// The tag did not verify: wrong key, or the bytes were changed.
    #[error("decryption failed for {what}: the link's key is wrong or the data was tampered with")]
    Auth {
        /// Which piece failed ("object header", "block 7").
        what: String,
    },
    /// Ciphertext shorter than a tag.
    #[error("{what} is too short to be ciphertext ({len} bytes)")]
    Short {
        /// Which piece.
        what: String,
        /// Its length.
        len: usize,
    },
}

/// The 256-bit secret of one object. Whoever holds it can read the object.
#[derive(Clone, PartialEq, Eq)]
pub struct ObjectKey([u8; 32]);

impl std::fmt::Debug for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ObjectKey(..)")
    }
}

impl ObjectKey {
    /// Wraps key bytes; the caller draws them from a cryptographic RNG.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw key bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub(crate) fn data_cipher(&self) -> BlockCipher {
        BlockCipher(ChaCha20Poly1305::new(Key::from_slice(&blake3::derive_key(
            DATA_CONTEXT,
            &self.0,
        ))))
    }

    /// Encrypts the object header.
    pub(crate) fn seal_header(&self, plain: &[u8]) -> Vec<u8> {
        let mut buf = plain.to_vec();
        let tag = self
            .header_cipher()
            .encrypt_in_place_detached(&Nonce::default(), b"", &mut buf)
            // Only fails for messages over 256 GiB.
            .unwrap_or_default();
        buf.extend_from_slice(&tag);
        buf
    }

    /// Decrypts the object header.
    pub(crate) fn open_header(&self, sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let what = || "object header".to_string();
        let split =
            sealed
                .len()
                .checked_sub(TAG_LEN as usize)
                .ok_or_else(|| CryptoError::Short {
                    what: what(),
                    len: sealed.len(),
                })?;
        let mut buf = sealed[..split].to_vec();
        self.header_cipher()
            .decrypt_in_place_detached(
                &Nonce::default(),
                b"",
                &mut buf,
                Tag::from_slice(&sealed[split..]),
            )
            .map_err(|_| CryptoError::Auth { what: what() })?;
        Ok(buf)
    }

    fn header_cipher(&self) -> ChaCha20Poly1305 {
        ChaCha20Poly1305::new(Key::from_slice(&blake3::derive_key(
            HEADER_CONTEXT,
            &self.0,
        )))
    }
}

/// The per-object data cipher; seals and opens numbered blocks in place.
pub(crate) struct BlockCipher(ChaCha20Poly1305);

fn block_nonce(index: u64, last: bool) -> Nonce {
    let mut n = [0u8; 12];
    n[..8].copy_from_slice(&index.to_le_bytes());
    n[8..].copy_from_slice(&u32::from(last).to_le_bytes());
    Nonce::from(n)
}

impl BlockCipher {
    /// Encrypts `buf` (one block of plaintext) in place and appends the tag.
    pub(crate) fn seal(&self, index: u64, last: bool, buf: &mut Vec<u8>) {
        let tag = self.seal_detached(index, last, buf);
        buf.extend_from_slice(&tag);
    }

    /// Encrypts `block` (one block of plaintext) in place; returns its tag.
    pub(crate) fn seal_detached(&self, index: u64, last: bool, block: &mut [u8]) -> [u8; 16] {
        self.0
            .encrypt_in_place_detached(&block_nonce(index, last), b"", block)
            .unwrap_or_default()
            .into()
    }

    /// Decrypts one block (ciphertext ‖ tag) in place; returns the plaintext part.
    pub(crate) fn open<'a>(
        &self,
        index: u64,
        last: bool,
        block: &'a mut [u8],
    ) -> Result<&'a [u8], CryptoError> {
        let split =
            block
                .len()
                .checked_sub(TAG_LEN as usize)
                .ok_or_else(|| CryptoError::Short {
                    what: format!("block {index}"),
                    len: block.len(),
                })?;
        let (data, tag) = block.split_at_mut(split);
        self.0
            .decrypt_in_place_detached(&block_nonce(index, last), b"", data, Tag::from_slice(tag))
            .map_err(|_| CryptoError::Auth {
                what: format!("block {index}"),
            })?;
        Ok(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn blocks_round_trip_and_bind_their_position() {
        let key = ObjectKey::from_bytes([7; 32]);
        let c = key.data_cipher();
        let mut buf = b"hello".to_vec();
        c.seal(3, false, &mut buf);
        assert_eq!(buf.len(), 5 + 16);
        let mut copy = buf.clone();
        assert_eq!(c.open(3, false, &mut copy).unwrap(), b"hello");
        assert!(c.open(4, false, &mut buf.clone()).is_err());
        assert!(c.open(3, true, &mut buf.clone()).is_err());
        let other = ObjectKey::from_bytes([8; 32]).data_cipher();
        assert!(other.open(3, false, &mut buf).is_err());
    }

    #[test]
    fn header_round_trips_and_rejects_wrong_key() {
        let key = ObjectKey::from_bytes([1; 32]);
        let sealed = key.seal_header(b"name");
        assert_eq!(key.open_header(&sealed).unwrap(), b"name");
        let err = ObjectKey::from_bytes([2; 32])
            .open_header(&sealed)
            .unwrap_err();
        assert!(err.to_string().contains("key is wrong"));
        assert!(key.open_header(&sealed[..3]).is_err());
    }
}

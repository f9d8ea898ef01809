//! Content names: every shard and every manifest is named by its BLAKE3 root.
//!
//! The BLAKE3 hash *is* the root of a binary Merkle tree over 1 KiB chunks, so the same 32 bytes
//! serve three uses: a host checks a put against it before the bytes become visible, a tenant
//! checks every downloaded shard against it, and (later) a Guard challenge can be answered with
//! chunk bytes plus their Merkle path (BLAKE3/Bao verified streaming) against the same root.
//!
//! Text form: 64 lowercase hex digits.

use thiserror::Error;

/// BLAKE3 root of a blob (a shard or a manifest).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Root([u8; 32]);

/// A root could not be parsed from text.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("invalid root {0:?}: expected 64 hex digits")]
pub struct ParseRootError(pub String);

impl Root {
    /// The root of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self(*blake3::hash(bytes).as_bytes())
    }

    /// Wraps raw root bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lowercase hex, 64 characters.
    pub fn to_hex(&self) -> String {
        data_encoding::HEXLOWER.encode(&self.0)
    }

    /// Parses 64 hex digits.
    pub fn from_hex(s: &str) -> Result<Self, ParseRootError> {
        let bytes = data_encoding::HEXLOWER_PERMISSIVE
            .decode(s.as_bytes())
            .map_err(|_| ParseRootError(s.to_string()))?;
        let arr: [u8; 32] = bytes
            .try_into()
            .map_err(|_| ParseRootError(s.to_string()))?;
        Ok(Self(arr))
    }

    /// Checks `bytes` against this root; only verified bytes become a [`VerifiedShard`].
    pub fn verify(&self, bytes: Vec<u8>) -> Result<VerifiedShard, Vec<u8>> {
        self.verify_in(bytes)
    }

    /// [`Root::verify`] for bytes in any buffer (a host reads a put into a reused, aligned
    /// buffer and writes it to disk from there, without a copy).
    pub fn verify_in<B: AsRef<[u8]>>(&self, bytes: B) -> Result<VerifiedShard<B>, B> {
        if Root::of(bytes.as_ref()) == *self {
            Ok(VerifiedShard(bytes))
        } else {
            Err(bytes)
        }
    }
}

impl std::fmt::Display for Root {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl std::fmt::Debug for Root {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Root({})", &self.to_hex()[..12])
    }
}

impl std::str::FromStr for Root {
    type Err = ParseRootError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_hex(s)
    }
}

/// Bytes that matched their root. The decoder accepts nothing else, so a shard is hashed once.
/// `B` is the buffer holding them (a `Vec` unless the holder needs another kind).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedShard<B = Vec<u8>>(B);

impl<B: AsRef<[u8]>> VerifiedShard<B> {
    /// The verified bytes.
    pub fn bytes(&self) -> &[u8] {
        self.0.as_ref()
    }

    /// The buffer holding the verified bytes.
    pub fn buffer(&self) -> &B {
        &self.0
    }

    /// Takes the bytes out.
    pub fn into_bytes(self) -> B {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn root_of_empty_is_blake3_of_empty() {
        assert_eq!(
            Root::of(b"").to_hex(),
            "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
        );
    }

    #[test]
    fn hex_round_trips_and_rejects_garbage() {
        let r = Root::of(b"abc");
        assert_eq!(Root::from_hex(&r.to_hex()).unwrap(), r);
        assert!(Root::from_hex("xyz").is_err());
        assert!(Root::from_hex(&r.to_hex()[..62]).is_err());
    }

    #[test]
    fn verify_accepts_only_matching_bytes() {
        let r = Root::of(b"abc");
        assert!(r.verify(b"abc".to_vec()).is_ok());
        assert_eq!(r.verify(b"abd".to_vec()).unwrap_err(), b"abd");
        // Any buffer: the bytes stay where they are.
        let v = r.verify_in(&b"abc"[..]).unwrap();
        assert_eq!((v.bytes(), *v.buffer()), (&b"abc"[..], &b"abc"[..]));
        assert_eq!(r.verify_in(&b"abd"[..]).unwrap_err(), b"abd");
    }
}

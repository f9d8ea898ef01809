//! The manifest: the public placement record of one object plus its encrypted header.
//!
//! Goals: everything a tenant needs to fetch and rebuild an object, given only the link; a
//! compact, versioned, bounded binary format that the browser and the CLI parse identically.
//! The manifest is stored on hosts like a shard, named by its own BLAKE3 root (the *manifest
//! id*), so a fetched copy is verified before it is parsed. Non-goals: contracts and payments
//! (added by the Escrow work as a new version), secrecy of sizes or host choice.
//!
//! ## Wire format, version 1 (all integers little-endian)
//!
//! ```text
//! off  len  field
//!   0    7  magic "BTFSMAN"
//!   7    1  version = 1
//!   8    1  data shards per slab = 10
//!   9    1  parity shards per slab = 20
//!  10    4  plaintext bytes per AEAD block = 65536
//!  14    4  max shard size (multiple of 64, ≤ 4 MiB)
//!  18    8  ciphertext length; with the max shard size this fixes every slab (see layout.rs)
//!  26    2  H = sealed header length, then H bytes: ChaCha20-Poly1305(header_key, header v1)
//!   .    2  N = host count (1..=65535), then N × { 1 byte length L (1..=64), L bytes peer id }
//!   .       per slab, in order: 30 × { 32 bytes shard root, 2 bytes host index < N }
//! ```
//!
//! Header v1 (plaintext before sealing): `version u8 = 1 ‖ name_len u16 ‖ name (UTF-8) ‖
//! mime_len u16 ‖ mime (UTF-8)`.
//!
//! Every slab's 30 shards sit on 30 distinct hosts; a manifest that breaks this is refused.

use thiserror::Error;

use crate::crypto::{CryptoError, ObjectKey};
use crate::layout::{
    Layout, LayoutError, BLOCK_PLAIN, DATA_SHARDS, MAX_SHARD_SIZE, PARITY_SHARDS, TOTAL_SHARDS,
};
use crate::root::Root;

const MAGIC: &[u8; 7] = b"BTFSMAN";
/// Current manifest version.
pub const MANIFEST_VERSION: u8 = 1;
/// Largest manifest accepted (the largest blob a host stores).
pub const MAX_MANIFEST_LEN: usize = MAX_SHARD_SIZE as usize;
/// Longest host id (libp2p peer ids are 38 bytes for ed25519).
pub const MAX_HOST_ID_LEN: usize = 64;
/// Longest object name kept in the header, in bytes.
pub const MAX_NAME_LEN: usize = 1024;
/// Longest media type kept in the header, in bytes.
pub const MAX_MIME_LEN: usize = 255;
const SHARD_RECORD_LEN: usize = 32 + 2;

/// The most bytes the manifest of an object of `slabs` slabs can take (every shard on its own
/// host, the longest name and media type), capped at [`MAX_MANIFEST_LEN`]: what a storage offer
/// sets aside for a manifest copy before the manifest exists.
pub fn max_len_for(slabs: u64) -> u64 {
    let shards = slabs.max(1).saturating_mul(TOTAL_SHARDS as u64);
    let hosts = shards.min(u64::from(u16::MAX));
    let sealed = (1 + 2 + MAX_NAME_LEN + 2 + MAX_MIME_LEN + 64) as u64;
    (26 + 2 + sealed + 2)
        .saturating_add(hosts.saturating_mul(1 + MAX_HOST_ID_LEN as u64))
        .saturating_add(shards.saturating_mul(SHARD_RECORD_LEN as u64))
        .min(MAX_MANIFEST_LEN as u64)
}

/// A manifest could not be built, parsed or opened.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ManifestError {
    /// Bytes do not start with the manifest magic.
    #[error("not a BTFS manifest (bad magic bytes)")]
    Magic,
    /// Written by a newer client.
    #[error(
        "manifest version {0} is not supported by this client (it reads version 1): upgrade btfs"
    )]
    Version(u8),
    /// Shard counts or block size differ from the network's.
    #[error("manifest uses an unsupported coding: {0}")]
    Coding(String),
    /// Ran out of bytes.
    #[error("manifest is truncated while reading {0}")]
    Truncated(&'static str),
    /// Bytes left after the last slab.
    #[error("manifest has {0} unexpected trailing bytes")]
    Trailing(usize),
    /// Too large to store or parse.
    #[error("manifest is {0} bytes, over the {MAX_MANIFEST_LEN}-byte limit: split the object")]
    TooLarge(usize),
    /// A field is out of range.
    #[error("manifest field {field} is invalid: {why}")]
    Field {
        /// The field.
        field: &'static str,
        /// What is wrong.
        why: String,
    },
    /// Layout numbers are impossible.
    #[error(transparent)]
    Layout(#[from] LayoutError),
    /// The header did not decrypt.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

fn field(field: &'static str, why: impl Into<String>) -> ManifestError {
    ManifestError::Field {
        field,
        why: why.into(),
    }
}

/// Where one shard lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardRecord {
    /// BLAKE3 root of the shard bytes.
    pub root: Root,
    /// Index into [`Manifest::hosts`].
    pub host: u16,
}

/// The 30 shards of one slab, by shard index (0..10 data, 10..30 parity).
pub type SlabRecord = [ShardRecord; TOTAL_SHARDS];

/// The private object header (encrypted inside the manifest).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ObjectHeader {
    /// File name, if any.
    pub name: String,
    /// Media type, if known.
    pub mime: String,
}

/// Name a download is saved under when the header has no usable name.
pub const FALLBACK_FILE_NAME: &str = "btfs-download";

impl ObjectHeader {
    /// The name to save a download under: the header's name without any directory part (a
    /// hostile uploader may seal `../../.bashrc`), control characters, or leading dots and
    /// spaces; [`FALLBACK_FILE_NAME`] when nothing is left. The header is the uploader's word,
    /// so a saver must never use `name` as a path.
    pub fn file_name(&self) -> String {
        let last = self.name.rsplit(['/', '\\']).next().unwrap_or("");
        let clean: String = last.chars().filter(|c| !c.is_control()).collect();
        let clean = clean.trim_start_matches(['.', ' ']).trim_end();
        if clean.is_empty() {
            FALLBACK_FILE_NAME.to_string()
        } else {
            clean.to_string()
        }
    }
}

/// The placement record of one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    layout: Layout,
    sealed_header: Vec<u8>,
    hosts: Vec<Vec<u8>>,
    slabs: Vec<SlabRecord>,
}

impl Manifest {
    /// Builds a manifest; checks that there is one record per slab and 30 distinct hosts each.
    pub fn new(
        layout: Layout,
        key: &ObjectKey,
        header: &ObjectHeader,
        hosts: Vec<Vec<u8>>,
        slabs: Vec<SlabRecord>,
    ) -> Result<Self, ManifestError> {
        if header.name.len() > MAX_NAME_LEN {
            return Err(field("name", format!("longer than {MAX_NAME_LEN} bytes")));
        }
        if header.mime.len() > MAX_MIME_LEN {
            return Err(field("mime", format!("longer than {MAX_MIME_LEN} bytes")));
        }
        let mut plain = vec![1u8];
        for s in [&header.name, &header.mime] {
            plain.extend_from_slice(&(s.len() as u16).to_le_bytes());
            plain.extend_from_slice(s.as_bytes());
        }
        let m = Self {
            layout,
            sealed_header: key.seal_header(&plain),
            hosts,
            slabs,
        };
        m.validate()?;
        let len = m.encoded_len();
        if len > MAX_MANIFEST_LEN {
            return Err(ManifestError::TooLarge(len));
        }
        Ok(m)
    }

    fn validate(&self) -> Result<(), ManifestError> {
        if self.hosts.is_empty() || self.hosts.len() > usize::from(u16::MAX) {
            return Err(field("hosts", format!("{} hosts", self.hosts.len())));
        }
        for h in &self.hosts {
            if h.is_empty() || h.len() > MAX_HOST_ID_LEN {
                return Err(field("hosts", format!("host id of {} bytes", h.len())));
            }
        }
        if self.slabs.len() as u64 != self.layout.slab_count() {
            return Err(field(
                "slabs",
                format!(
                    "{} slab records for {} slabs",
                    self.slabs.len(),
                    self.layout.slab_count()
                ),
            ));
        }
        for (i, slab) in self.slabs.iter().enumerate() {
            let mut seen = std::collections::BTreeSet::new();
            for s in slab {
                if usize::from(s.host) >= self.hosts.len() {
                    return Err(field("slabs", format!("slab {i} names host {}", s.host)));
                }
                if !seen.insert(s.host) {
                    return Err(field(
                        "slabs",
                        format!("slab {i} puts two shards on host {}", s.host),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The object's layout.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Host ids (libp2p peer id bytes), indexed by [`ShardRecord::host`].
    pub fn hosts(&self) -> &[Vec<u8>] {
        &self.hosts
    }

    /// Slab records in order.
    pub fn slabs(&self) -> &[SlabRecord] {
        &self.slabs
    }

    /// Decrypts the header; fails with a clear error when the key is wrong.
    pub fn open_header(&self, key: &ObjectKey) -> Result<ObjectHeader, ManifestError> {
        let plain = key.open_header(&self.sealed_header)?;
        let mut r = Reader::new(&plain);
        let version = r.u8("header version")?;
        if version != 1 {
            return Err(field("header", format!("version {version}")));
        }
        let mut text = |what: &'static str| -> Result<String, ManifestError> {
            let len = r.u16(what)?;
            let bytes = r.take(usize::from(len), what)?;
            String::from_utf8(bytes.to_vec()).map_err(|_| field(what, "not UTF-8"))
        };
        let name = text("name")?;
        let mime = text("mime")?;
        // The bounds `new` enforces, so an opened header is one a client could have written
        // (found by the `manifest` fuzz target's header property, docs/fuzzing.md).
        if name.len() > MAX_NAME_LEN {
            return Err(field("name", format!("longer than {MAX_NAME_LEN} bytes")));
        }
        if mime.len() > MAX_MIME_LEN {
            return Err(field("mime", format!("longer than {MAX_MIME_LEN} bytes")));
        }
        Ok(ObjectHeader { name, mime })
    }

    fn encoded_len(&self) -> usize {
        26 + 2
            + self.sealed_header.len()
            + 2
            + self.hosts.iter().map(|h| 1 + h.len()).sum::<usize>()
            + self.slabs.len() * TOTAL_SHARDS * SHARD_RECORD_LEN
    }

    /// The wire bytes (see the module docs).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        out.extend_from_slice(MAGIC);
        out.push(MANIFEST_VERSION);
        out.push(DATA_SHARDS as u8);
        out.push(PARITY_SHARDS as u8);
        out.extend_from_slice(&BLOCK_PLAIN.to_le_bytes());
        out.extend_from_slice(&self.layout.max_shard_size().to_le_bytes());
        out.extend_from_slice(&self.layout.cipher_len().to_le_bytes());
        out.extend_from_slice(&(self.sealed_header.len() as u16).to_le_bytes());
        out.extend_from_slice(&self.sealed_header);
        out.extend_from_slice(&(self.hosts.len() as u16).to_le_bytes());
        for h in &self.hosts {
            out.push(h.len() as u8);
            out.extend_from_slice(h);
        }
        for slab in &self.slabs {
            for s in slab {
                out.extend_from_slice(s.root.as_bytes());
                out.extend_from_slice(&s.host.to_le_bytes());
            }
        }
        out
    }

    /// The manifest id: the BLAKE3 root of the wire bytes.
    pub fn id(&self) -> Root {
        Root::of(&self.encode())
    }

    /// Parses wire bytes; never panics, never allocates more than the input justifies.
    pub fn decode(bytes: &[u8]) -> Result<Self, ManifestError> {
        if bytes.len() > MAX_MANIFEST_LEN {
            return Err(ManifestError::TooLarge(bytes.len()));
        }
        let mut r = Reader::new(bytes);
        if r.take(7, "magic")? != MAGIC {
            return Err(ManifestError::Magic);
        }
        let version = r.u8("version")?;
        if version != MANIFEST_VERSION {
            return Err(ManifestError::Version(version));
        }
        let (d, p, block) = (
            r.u8("data shards")?,
            r.u8("parity shards")?,
            r.u32("block size")?,
        );
        if usize::from(d) != DATA_SHARDS || usize::from(p) != PARITY_SHARDS || block != BLOCK_PLAIN
        {
            return Err(ManifestError::Coding(format!(
                "{d}+{p} shards, {block}-byte blocks (this client supports 10+20, 65536)"
            )));
        }
        let max_shard_size = r.u32("max shard size")?;
        let cipher_len = r.u64("ciphertext length")?;
        let layout = Layout::from_cipher_len(cipher_len, max_shard_size)?;
        let header_len = r.u16("header length")?;
        let sealed_header = r.take(usize::from(header_len), "header")?.to_vec();
        let host_count = r.u16("host count")?;
        let mut hosts = Vec::with_capacity(usize::from(host_count).min(r.remaining()));
        for _ in 0..host_count {
            let len = r.u8("host id length")?;
            hosts.push(r.take(usize::from(len), "host id")?.to_vec());
        }
        let slab_count = layout.slab_count();
        let need = slab_count.saturating_mul((TOTAL_SHARDS * SHARD_RECORD_LEN) as u64);
        if need > r.remaining() as u64 {
            return Err(ManifestError::Truncated("slab records"));
        }
        let mut slabs = Vec::with_capacity(slab_count as usize);
        for _ in 0..slab_count {
            let mut slab = [ShardRecord {
                root: Root::from_bytes([0; 32]),
                host: 0,
            }; TOTAL_SHARDS];
            for s in &mut slab {
                let root = r.take(32, "shard root")?;
                let mut arr = [0u8; 32];
                arr.copy_from_slice(root);
                s.root = Root::from_bytes(arr);
                s.host = r.u16("shard host")?;
            }
            slabs.push(slab);
        }
        if r.remaining() != 0 {
            return Err(ManifestError::Trailing(r.remaining()));
        }
        let m = Self {
            layout,
            sealed_header,
            hosts,
            slabs,
        };
        m.validate()?;
        Ok(m)
    }
}

/// A bounds-checked little-endian reader.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { bytes }
    }
    fn remaining(&self) -> usize {
        self.bytes.len()
    }
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], ManifestError> {
        if self.bytes.len() < n {
            return Err(ManifestError::Truncated(what));
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }
    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], ManifestError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, what)?);
        Ok(a)
    }
    fn u8(&mut self, what: &'static str) -> Result<u8, ManifestError> {
        Ok(self.array::<1>(what)?[0])
    }
    fn u16(&mut self, what: &'static str) -> Result<u16, ManifestError> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, ManifestError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }
    fn u64(&mut self, what: &'static str) -> Result<u64, ManifestError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn sample() -> (ObjectKey, Manifest) {
        let key = ObjectKey::from_bytes([9; 32]);
        let layout = Layout::new(100, 4096).unwrap();
        let hosts: Vec<Vec<u8>> = (0..30u8).map(|i| vec![i; 2]).collect();
        let slab: SlabRecord = std::array::from_fn(|i| ShardRecord {
            root: Root::from_bytes([i as u8; 32]),
            host: 29 - i as u16,
        });
        let header = ObjectHeader {
            name: "a.txt".into(),
            mime: "text/plain".into(),
        };
        let m = Manifest::new(layout, &key, &header, hosts, vec![slab]).unwrap();
        (key, m)
    }

    #[test]
    fn round_trips_and_opens_header() {
        let (key, m) = sample();
        let bytes = m.encode();
        let back = Manifest::decode(&bytes).unwrap();
        assert_eq!(back, m);
        assert_eq!(back.open_header(&key).unwrap().name, "a.txt");
        let wrong = back.open_header(&ObjectKey::from_bytes([1; 32]));
        assert!(wrong.unwrap_err().to_string().contains("key is wrong"));
    }

    /// Golden bytes: the fixed part of the v1 format. Changing these breaks every stored link.
    #[test]
    fn golden_fixed_header() {
        let (_, m) = sample();
        let bytes = m.encode();
        let expected_prefix = [
            0x42, 0x54, 0x46, 0x53, 0x4d, 0x41, 0x4e, // "BTFSMAN"
            0x01, // version 1
            0x0a, 0x14, // 10 data + 20 parity
            0x00, 0x00, 0x01, 0x00, // block 65536
            0x00, 0x10, 0x00, 0x00, // max shard 4096
            0x74, 0, 0, 0, 0, 0, 0, 0, // cipher len 116 = 100 + 16
            0x24, 0x00, // sealed header: 20 plaintext bytes + 16 tag = 36
        ];
        assert_eq!(&bytes[..28], &expected_prefix);
        // hosts: count 30, then [len 2, i, i]
        let hosts_at = 28 + 36;
        assert_eq!(&bytes[hosts_at..hosts_at + 5], &[30, 0, 2, 0, 0]);
        // first shard record: root [0; 32], host 29
        let slab_at = hosts_at + 2 + 30 * 3;
        assert_eq!(&bytes[slab_at + 32..slab_at + 34], &[29, 0]);
        assert_eq!(bytes.len(), slab_at + 30 * 34);
    }

    #[test]
    fn every_truncation_and_bit_flip_is_an_error_not_a_panic() {
        let (_, m) = sample();
        let bytes = m.encode();
        for n in 0..bytes.len() {
            assert!(Manifest::decode(&bytes[..n]).is_err(), "truncated at {n}");
        }
        let mut extended = bytes.clone();
        extended.push(0);
        assert!(matches!(
            Manifest::decode(&extended),
            Err(ManifestError::Trailing(1))
        ));
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x80;
            let _ = Manifest::decode(&b); // must not panic
        }
    }

    #[test]
    fn a_saved_name_is_never_a_path() {
        let name = |n: &str| {
            ObjectHeader {
                name: n.into(),
                mime: String::new(),
            }
            .file_name()
        };
        assert_eq!(name("report.pdf"), "report.pdf");
        assert_eq!(name("photos/2026/cat.jpg"), "cat.jpg");
        assert_eq!(name("..\\..\\boot.ini"), "boot.ini");
        assert_eq!(name("../../.bashrc"), "bashrc");
        assert_eq!(name("a\u{0}b\nc.txt"), "abc.txt");
        for empty in ["", "..", "dir/", " . ", "\u{7}"] {
            assert_eq!(name(empty), FALLBACK_FILE_NAME, "{empty:?}");
        }
        assert_eq!(name("weird name é.txt "), "weird name é.txt");
    }

    /// Fuzzing finding: a header sealed with a name over `MAX_NAME_LEN` (or a media type over
    /// `MAX_MIME_LEN`) used to open, although `new` refuses to write one.
    #[test]
    fn opened_headers_keep_the_bounds_new_enforces() {
        let (key, m) = sample();
        for (name, mime, field) in [(MAX_NAME_LEN + 1, 0, "name"), (0, MAX_MIME_LEN + 1, "mime")] {
            let mut plain = vec![1u8];
            for len in [name, mime] {
                plain.extend_from_slice(&(len as u16).to_le_bytes());
                plain.extend(std::iter::repeat_n(b'a', len));
            }
            let forged = Manifest {
                sealed_header: key.seal_header(&plain),
                ..m.clone()
            };
            let back = Manifest::decode(&forged.encode()).unwrap();
            let err = back.open_header(&key).unwrap_err();
            assert!(
                matches!(&err, ManifestError::Field { field: f, .. } if *f == field),
                "{err}"
            );
        }
        let at_limit = ObjectHeader {
            name: "n".repeat(MAX_NAME_LEN),
            mime: "m".repeat(MAX_MIME_LEN),
        };
        let ok = Manifest::new(
            *m.layout(),
            &key,
            &at_limit,
            m.hosts().to_vec(),
            m.slabs().to_vec(),
        )
        .unwrap();
        assert_eq!(ok.open_header(&key).unwrap(), at_limit);
    }

    #[test]
    fn refuses_newer_versions_and_duplicate_hosts() {
        let (key, m) = sample();
        let mut bytes = m.encode();
        bytes[7] = 2;
        assert_eq!(
            Manifest::decode(&bytes).unwrap_err(),
            ManifestError::Version(2)
        );
        let mut slab = m.slabs()[0];
        slab[1].host = slab[0].host;
        let err = Manifest::new(
            *m.layout(),
            &key,
            &ObjectHeader::default(),
            m.hosts().to_vec(),
            vec![slab],
        )
        .unwrap_err();
        assert!(err.to_string().contains("two shards on host"));
    }
}

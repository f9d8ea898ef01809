//! The capability link: `btfs://<manifest-id>#<key>`.
//!
//! Goals: one string is enough to find, verify and decrypt an object. The manifest id (64 hex
//! digits, the manifest's BLAKE3 root) is public and is what hosts are asked for; the key (43
//! characters of unpadded base64url) sits in the URL fragment, which browsers never send to a
//! server. Non-goals: revocation (anyone holding the link can read the object, forever).

use thiserror::Error;

use crate::crypto::ObjectKey;
use crate::root::Root;

const SCHEME: &str = "btfs://";

/// A link could not be parsed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LinkError {
    /// Missing `btfs://`.
    #[error("not a btfs link: it must start with btfs:// (got {0:?})")]
    Scheme(String),
    /// Missing `#key`.
    #[error("the link has no #key part: copy the whole link, including everything after '#'")]
    NoKey,
    /// Bad manifest id.
    #[error("the link's manifest id is not 64 hex digits: the link is damaged")]
    Id,
    /// Bad key.
    #[error("the link's key is not 43 base64url characters: the link is damaged")]
    Key,
}

/// A parsed capability link.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Link {
    /// BLAKE3 root of the manifest bytes.
    pub manifest_id: Root,
    /// The object key.
    pub key: ObjectKey,
}

impl Link {
    /// Parses `btfs://<hex id>#<base64url key>` (surrounding whitespace is ignored).
    pub fn parse(s: &str) -> Result<Self, LinkError> {
        let s = s.trim();
        let rest = s
            .strip_prefix(SCHEME)
            .ok_or_else(|| LinkError::Scheme(s.chars().take(40).collect()))?;
        let (id, key) = rest.split_once('#').ok_or(LinkError::NoKey)?;
        let manifest_id = Root::from_hex(id.trim_end_matches('/')).map_err(|_| LinkError::Id)?;
        let key_bytes = data_encoding::BASE64URL_NOPAD
            .decode(key.as_bytes())
            .map_err(|_| LinkError::Key)?;
        let key: [u8; 32] = key_bytes.try_into().map_err(|_| LinkError::Key)?;
        Ok(Self {
            manifest_id,
            key: ObjectKey::from_bytes(key),
        })
    }
}

impl std::fmt::Display for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{SCHEME}{}#{}",
            self.manifest_id,
            data_encoding::BASE64URL_NOPAD.encode(self.key.as_bytes())
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn golden_link_round_trips() {
        let link = Link {
            manifest_id: Root::from_bytes([0xab; 32]),
            key: ObjectKey::from_bytes([0xff; 32]),
        };
        let text = link.to_string();
        assert_eq!(
            text,
            "btfs://abababababababababababababababababababababababababababababababab\
             #__________________________________________8"
        );
        assert_eq!(Link::parse(&format!(" {text}\n")).unwrap(), link);
    }

    #[test]
    fn damaged_links_say_what_is_wrong() {
        assert!(matches!(Link::parse("http://x"), Err(LinkError::Scheme(_))));
        assert_eq!(
            Link::parse(&format!("btfs://{}", "ab".repeat(32))),
            Err(LinkError::NoKey)
        );
        assert_eq!(Link::parse("btfs://abc#AAAA"), Err(LinkError::Id));
        assert_eq!(
            Link::parse(&format!("btfs://{}#AAAA", "ab".repeat(32))),
            Err(LinkError::Key)
        );
    }
}

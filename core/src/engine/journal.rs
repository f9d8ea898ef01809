//! The upload journal: what a resumable upload has placed so far, one line per slab, kept by
//! the tenant (a file beside the CLI's wallet, IndexedDB records in the browser) so that an
//! upload stopped by a kill, a crash or a page reload finishes later without sending its placed
//! slabs again ([`super::upload::Upload::resume`]).
//!
//! Goals: one format for every tenant; appending a slab costs one short line (no rewrite of
//! what is there); a torn last line (the process died mid-write) loses at most that slab;
//! every field is checked when read, so a damaged or edited journal is refused with a message
//! that names the line, never trusted. Non-goals: sharing journals between identities (the
//! hosts' holds belong to the peer that put the shards, `holder`), and keeping the key secret
//! on disk (the journal holds the object key, like the link: the CLI writes it mode 0600).
//!
//! ## Format (UTF-8 JSON lines)
//!
//! ```text
//! line 1:  {"btfs_upload_journal":1,"id":"<16 hex>","holder":"<peer id>","size":<plain bytes>,
//!           "shard_size":<max shard size>,"key":"<64 hex>","name":"…","mime":"…",
//!           "started_ms":<unix ms>,"source":"<where the input came from>"}
//! then:    {"slab":<index>,"roots":["<64 hex>" × 30],"hosts":["<peer id>" × 30]}
//!          one per placed slab, shard order; a later line for the same slab replaces it
//! ```
//!
//! Bounds: a slab index is below the layout's slab count, a slab has exactly 30 roots and 30
//! distinct hosts, a name or media type is no longer than a manifest allows.

use std::collections::BTreeMap;

use libp2p_identity::PeerId;
use serde::{Deserialize, Serialize};

use super::HostId;
use crate::crypto::ObjectKey;
use crate::layout::{Layout, TOTAL_SHARDS};
use crate::manifest::{ObjectHeader, MAX_MIME_LEN, MAX_NAME_LEN};
use crate::root::Root;

/// The journal format this build writes and reads.
pub const JOURNAL_VERSION: u32 = 1;

/// Longest `source` (the CLI's absolute path, the browser's file name).
pub const MAX_SOURCE_LEN: usize = 4096;

/// Longest journal line accepted (a slab line with 30 roots and 30 peer ids is about 3.6 KiB).
pub const MAX_LINE_LEN: usize = 16 * 1024;

/// A journal that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum JournalError {
    /// The first line is not a journal header of a version this build reads.
    #[error("not an upload journal (line 1: {0})")]
    Header(String),
    /// A slab line (other than a torn last one) is malformed.
    #[error("upload journal line {line}: {reason}")]
    Line {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
}

/// One resumable upload: its identity, key, layout, and the slabs placed so far.
#[derive(Clone, Debug)]
pub struct Journal {
    /// The upload's id (16 hex digits), unique per tenant.
    pub id: String,
    /// The peer that put the shards (only it holds them on the hosts).
    pub holder: PeerId,
    /// The object's layout.
    pub layout: Layout,
    /// The object key.
    pub key: ObjectKey,
    /// The sealed header (name, media type).
    pub header: ObjectHeader,
    /// When the upload started (unix ms).
    pub started_ms: u64,
    /// Where the input came from, to find the journal again (the CLI: the file's absolute
    /// path; the browser: the file's name, size and modification time).
    pub source: String,
    /// Placed slabs: index → (root, host) of each of its 30 shards in shard order.
    pub slabs: BTreeMap<u64, Vec<(Root, HostId)>>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct HeaderLine {
    btfs_upload_journal: u32,
    id: String,
    holder: String,
    size: u64,
    shard_size: u32,
    key: String,
    name: String,
    mime: String,
    started_ms: u64,
    source: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SlabLine {
    slab: u64,
    roots: Vec<String>,
    hosts: Vec<String>,
}

impl Journal {
    /// A journal with no slab placed yet.
    pub fn new(
        id: String,
        holder: PeerId,
        layout: Layout,
        key: ObjectKey,
        header: ObjectHeader,
        started_ms: u64,
        source: String,
    ) -> Self {
        Self {
            id,
            holder,
            layout,
            key,
            header,
            started_ms,
            source,
            slabs: BTreeMap::new(),
        }
    }

    /// The first line (no newline).
    pub fn header_line(&self) -> String {
        let h = HeaderLine {
            btfs_upload_journal: JOURNAL_VERSION,
            id: self.id.clone(),
            holder: self.holder.to_base58(),
            size: self.layout.plain_len(),
            shard_size: self.layout.max_shard_size(),
            key: hex(self.key.as_bytes()),
            name: self.header.name.clone(),
            mime: self.header.mime.clone(),
            started_ms: self.started_ms,
            source: self.source.clone(),
        };
        serde_json::to_string(&h).unwrap_or_default()
    }

    /// The line recording slab `slab`'s placement (no newline).
    pub fn slab_line(slab: u64, placed: &[(Root, HostId)]) -> String {
        let l = SlabLine {
            slab,
            roots: placed.iter().map(|(r, _)| r.to_hex()).collect(),
            hosts: placed.iter().map(|(_, h)| h.peer().to_base58()).collect(),
        };
        serde_json::to_string(&l).unwrap_or_default()
    }

    /// Reads a journal file's text: the header line, then slab lines. An unreadable *last* line
    /// is ignored (a write the process did not finish); any other bad line is an error.
    pub fn parse(text: &str) -> Result<Self, JournalError> {
        let mut lines = text.lines();
        let header = lines
            .next()
            .ok_or_else(|| JournalError::Header("empty".into()))?;
        let rest: Vec<&str> = lines.filter(|l| !l.trim().is_empty()).collect();
        let torn_ok = !text.ends_with('\n');
        Self::from_parts(header, rest.iter().copied(), torn_ok)
    }

    /// Builds a journal from its header line and slab lines (the browser keeps them as separate
    /// records). With `torn_last_ok`, a bad last slab line is dropped instead of refused.
    pub fn from_parts<'a>(
        header: &str,
        slabs: impl IntoIterator<Item = &'a str>,
        torn_last_ok: bool,
    ) -> Result<Self, JournalError> {
        let mut j = parse_header(header)?;
        let slabs: Vec<&str> = slabs.into_iter().collect();
        for (i, line) in slabs.iter().enumerate() {
            match j.parse_slab(line) {
                Ok((slab, placed)) => {
                    j.slabs.insert(slab, placed);
                }
                Err(_) if torn_last_ok && i + 1 == slabs.len() => {}
                Err(reason) => {
                    return Err(JournalError::Line {
                        line: i + 2,
                        reason,
                    })
                }
            }
        }
        Ok(j)
    }

    /// Checks one slab line against this journal's layout.
    pub fn parse_slab(&self, line: &str) -> Result<(u64, Vec<(Root, HostId)>), String> {
        if line.len() > MAX_LINE_LEN {
            return Err(format!("longer than {MAX_LINE_LEN} bytes"));
        }
        let l: SlabLine = serde_json::from_str(line).map_err(|e| e.to_string())?;
        if l.slab >= self.layout.slab_count() {
            return Err(format!(
                "slab {} is past the object's {} slabs",
                l.slab,
                self.layout.slab_count()
            ));
        }
        if l.roots.len() != TOTAL_SHARDS || l.hosts.len() != TOTAL_SHARDS {
            return Err(format!(
                "slab {} lists {} roots and {} hosts; a slab has {TOTAL_SHARDS} of each",
                l.slab,
                l.roots.len(),
                l.hosts.len()
            ));
        }
        let mut placed = Vec::with_capacity(TOTAL_SHARDS);
        let mut seen = std::collections::BTreeSet::new();
        for (r, h) in l.roots.iter().zip(&l.hosts) {
            let root = Root::from_hex(r).map_err(|e| format!("slab {}: root: {e}", l.slab))?;
            let peer: PeerId = h
                .parse()
                .map_err(|e| format!("slab {}: host {h:?}: {e}", l.slab))?;
            if !seen.insert(peer) {
                return Err(format!("slab {}: host {peer} holds two shards", l.slab));
            }
            placed.push((root, HostId::new(peer)));
        }
        Ok((l.slab, placed))
    }

    /// Slabs placed so far.
    pub fn placed_slabs(&self) -> usize {
        self.slabs.len()
    }
}

fn parse_header(line: &str) -> Result<Journal, JournalError> {
    let bad = |m: String| JournalError::Header(m);
    if line.trim().is_empty() {
        return Err(bad("empty".into()));
    }
    if line.len() > MAX_LINE_LEN {
        return Err(bad(format!("longer than {MAX_LINE_LEN} bytes")));
    }
    let h: HeaderLine = serde_json::from_str(line).map_err(|e| bad(e.to_string()))?;
    if h.btfs_upload_journal != JOURNAL_VERSION {
        return Err(bad(format!(
            "version {} (this build reads version {JOURNAL_VERSION})",
            h.btfs_upload_journal
        )));
    }
    if h.id.len() != 16 || !h.id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad(format!("id {:?} is not 16 hex digits", h.id)));
    }
    let holder: PeerId = h.holder.parse().map_err(|e| bad(format!("holder: {e}")))?;
    let layout = Layout::new(h.size, h.shard_size).map_err(|e| bad(e.to_string()))?;
    let key = unhex32(&h.key).ok_or_else(|| bad("key is not 64 hex digits".into()))?;
    if h.name.len() > MAX_NAME_LEN || h.mime.len() > MAX_MIME_LEN {
        return Err(bad("name or media type too long for a manifest".into()));
    }
    if h.source.len() > MAX_SOURCE_LEN {
        return Err(bad(format!("source longer than {MAX_SOURCE_LEN} bytes")));
    }
    Ok(Journal::new(
        h.id,
        holder,
        layout,
        ObjectKey::from_bytes(key),
        ObjectHeader {
            name: h.name,
            mime: h.mime,
        },
        h.started_ms,
        h.source,
    ))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::sim::host_ids;

    fn journal() -> Journal {
        Journal::new(
            "00112233aabbccdd".into(),
            host_ids(TOTAL_SHARDS + 1)[TOTAL_SHARDS].peer(),
            Layout::new(5 * 1024 * 1024, 4096).unwrap_or_else(|e| panic!("{e}")),
            ObjectKey::from_bytes([7; 32]),
            ObjectHeader {
                name: "a \"b\".bin".into(),
                mime: "text/plain".into(),
            },
            1234,
            "/tmp/a \"b\".bin".into(),
        )
    }

    fn slab(seed: u8) -> Vec<(Root, HostId)> {
        host_ids(TOTAL_SHARDS)
            .into_iter()
            .enumerate()
            .map(|(k, h)| (Root::of(&[seed, k as u8]), h))
            .collect()
    }

    #[test]
    fn lines_round_trip_and_a_torn_last_line_is_dropped() {
        let j = journal();
        let text = format!(
            "{}\n{}\n{}\n",
            j.header_line(),
            Journal::slab_line(0, &slab(0)),
            Journal::slab_line(3, &slab(3))
        );
        let back = Journal::parse(&text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back.id, j.id);
        assert_eq!(back.holder, j.holder);
        assert_eq!(back.layout, j.layout);
        assert_eq!(back.key.as_bytes(), j.key.as_bytes());
        assert_eq!(back.header.name, j.header.name);
        assert_eq!(back.source, j.source);
        assert_eq!(back.slabs.get(&3), Some(&slab(3)));
        assert_eq!(back.placed_slabs(), 2);
        // The process died writing slab 4: that slab is lost, the rest is kept.
        let line = Journal::slab_line(4, &slab(4));
        let torn = format!("{text}{}", &line[..line.len() / 2]);
        assert_eq!(Journal::parse(&torn).map(|j| j.placed_slabs()), Ok(2));
        // The same damage in the middle is refused, naming the line.
        let middle = format!(
            "{}\n{}\n{}\n",
            j.header_line(),
            &line[..line.len() / 2],
            Journal::slab_line(0, &slab(0))
        );
        assert!(matches!(
            Journal::parse(&middle),
            Err(JournalError::Line { line: 2, .. })
        ));
    }

    #[test]
    fn damaged_journals_are_refused_with_what_is_wrong() {
        let j = journal();
        let cases = [
            (String::new(), "empty"),
            ("{\"btfs_upload_journal\":2}".to_string(), "missing field"),
            (
                j.header_line().replace("\"size\":5242880", "\"size\":1"),
                "",
            ),
            (j.header_line().replace(&hex(&[7; 32]), "zz"), "key"),
            (j.header_line().replace("\":1,", "\":9,"), "version 9"),
        ];
        for (text, want) in cases {
            let text = format!("{text}\n{}\n", Journal::slab_line(0, &slab(0)));
            match Journal::parse(&text) {
                Err(e) => assert!(e.to_string().contains(want), "{e} lacks {want:?}"),
                // A smaller size makes slab 0's line fine, but a past-the-end slab is refused.
                Ok(j) => assert_eq!(j.layout.slab_count(), 1, "{text}"),
            }
        }
        let mut twice = slab(1);
        twice[1].1 = twice[0].1;
        let past = Journal::slab_line(j.layout.slab_count(), &slab(1));
        for (line, want) in [
            (Journal::slab_line(0, &twice), "holds two shards"),
            (Journal::slab_line(0, &slab(1)[..29]), "lists 29 roots"),
            (past, "past the object's"),
        ] {
            let text = format!("{}\n{line}\n{}\n", j.header_line(), j.header_line());
            let e = Journal::parse(&text).err().map(|e| e.to_string());
            assert!(
                e.as_deref().is_some_and(|e| e.contains(want)),
                "{e:?} lacks {want:?}"
            );
        }
    }
}

//! Where `btfs upload` keeps its journals, so that `btfs upload --resume FILE` finishes an
//! upload that a kill, a crash, Ctrl-C or a lost network stopped.
//!
//! One file per unfinished upload, `<wallet key file>.uploads/<id>.journal`, in core's journal
//! format ([`btfs_core::engine::journal`]): the header line when the upload starts, one line
//! appended (and synced) per placed slab. The directory is mode 0700 and each file 0600: a
//! journal holds the object key. A journal belongs to its wallet (the hosts' holds are that
//! identity's), so it sits beside the wallet's key file.
//!
//! Lifecycle: a successful upload removes its journal; a failed one keeps it when the failure
//! may pass (no hosts, unreadable input: the error says how to resume), and removes it after a
//! refused claim (everything was released) or a changed file; a new upload of the same file replaces an
//! older journal of it. What a journal lists but nobody resumes, hosts drop after their grace
//! period for unclaimed blobs (one hour by default), so a resume after that sends those slabs
//! again (the STAT check finds them gone).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use btfs_core::engine::journal::Journal;
use btfs_core::engine::HostId;
use btfs_core::Root;

/// A journal could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum JournalFileError {
    /// The file system said no.
    #[error("upload journal {path}: {source}")]
    Io {
        /// The journal or its directory.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The journal's contents are not usable.
    #[error("upload journal {path}: {source}; remove it to start the upload anew")]
    Bad {
        /// The journal.
        path: String,
        /// What is wrong.
        #[source]
        source: btfs_core::engine::journal::JournalError,
    },
}

/// The journal directory of the wallet whose key file is `wallet`.
pub fn dir_of(wallet: &Path) -> PathBuf {
    let mut p = wallet.as_os_str().to_owned();
    p.push(".uploads");
    PathBuf::from(p)
}

/// An open journal being appended to.
pub struct JournalFile {
    path: PathBuf,
    file: File,
}

impl JournalFile {
    /// Creates `dir/<id>.journal` with `j`'s header line (and the slabs it already lists).
    pub fn create(dir: &Path, j: &Journal) -> Result<Self, JournalFileError> {
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |source| JournalFileError::Io { path, source }
        };
        create_private_dir(dir).map_err(io(dir))?;
        let path = dir.join(format!("{}.journal", j.id));
        let mut text = format!("{}\n", j.header_line());
        for (i, placed) in &j.slabs {
            text.push_str(&Journal::slab_line(*i, placed));
            text.push('\n');
        }
        let mut opts = OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut file = opts.open(&path).map_err(io(&path))?;
        file.write_all(text.as_bytes()).map_err(io(&path))?;
        file.sync_data().map_err(io(&path))?;
        Ok(Self { path, file })
    }

    /// Opens an existing journal to append to it.
    pub fn reopen(path: &Path) -> Result<Self, JournalFileError> {
        let file = OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|source| JournalFileError::Io {
                path: path.display().to_string(),
                source,
            })?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Appends and syncs one placed slab.
    pub fn append(&mut self, slab: u64, placed: &[(Root, HostId)]) -> Result<(), JournalFileError> {
        let line = format!("{}\n", Journal::slab_line(slab, placed));
        let io = |source| JournalFileError::Io {
            path: self.path.display().to_string(),
            source,
        };
        self.file.write_all(line.as_bytes()).map_err(io)?;
        self.file.sync_data().map_err(io)
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Deletes the journal (the upload finished).
    pub fn remove(self) {
        let removed = std::fs::remove_file(&self.path);
        // Gone already: a newer upload of the same file replaced this journal.
        if let Err(e) = removed.or_else(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Ok(()),
            _ => Err(e),
        }) {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot remove a finished upload's journal");
        }
    }
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(dir)
}

/// Every readable journal in `dir` (oldest first), each with its path; unreadable ones are
/// returned as errors so the caller can name them.
pub fn list(dir: &Path) -> Vec<Result<(PathBuf, Journal), JournalFileError>> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<Result<(PathBuf, Journal), JournalFileError>> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "journal"))
        .map(|p| read(&p).map(|j| (p, j)))
        .collect();
    out.sort_by_key(|r| r.as_ref().map_or(0, |(_, j)| j.started_ms));
    out
}

/// Reads one journal (at most 64 MiB: a 1 TiB object's journal is about 40 MiB).
pub fn read(path: &Path) -> Result<Journal, JournalFileError> {
    const MAX_JOURNAL_LEN: u64 = 64 << 20;
    let io = |source| JournalFileError::Io {
        path: path.display().to_string(),
        source,
    };
    let len = std::fs::metadata(path).map_err(io)?.len();
    if len > MAX_JOURNAL_LEN {
        return Err(io(std::io::Error::other(format!(
            "{len} bytes is more than a journal can be"
        ))));
    }
    let text = std::fs::read_to_string(path).map_err(io)?;
    Journal::parse(&text).map_err(|source| JournalFileError::Bad {
        path: path.display().to_string(),
        source,
    })
}

/// The unfinished upload of `source` by `holder` in `dir`, if any (the newest if several).
pub fn find(dir: &Path, source: &str, holder: libp2p::PeerId) -> Option<(PathBuf, Journal)> {
    list(dir)
        .into_iter()
        .flatten()
        .filter(|(_, j)| j.source == source && j.holder == holder)
        .last()
}

#[cfg(test)]
mod tests {
    use super::*;
    use btfs_core::{Layout, ObjectHeader, ObjectKey};

    #[test]
    fn a_journal_survives_a_torn_append_and_is_private() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let holder = libp2p::PeerId::random();
        let layout = Layout::new(100_000, 1024).unwrap_or_else(|e| panic!("{e}"));
        let j = Journal::new(
            "0123456789abcdef".into(),
            holder,
            layout,
            ObjectKey::from_bytes([1; 32]),
            ObjectHeader::default(),
            5,
            "/data/x.bin".into(),
        );
        let jdir = dir.path().join("wallet.key.uploads");
        let mut f = JournalFile::create(&jdir, &j).unwrap_or_else(|e| panic!("{e}"));
        let placed: Vec<(Root, HostId)> = (0..30u8)
            .map(|k| (Root::of(&[k]), HostId::new(libp2p::PeerId::random())))
            .collect();
        f.append(2, &placed).unwrap_or_else(|e| panic!("{e}"));
        let path = f.path().to_path_buf();
        drop(f);
        // A write the process did not finish.
        let mut raw = OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("{e}"));
        raw.write_all(b"{\"slab\":3,\"roo")
            .unwrap_or_else(|e| panic!("{e}"));
        let (p, back) = find(&jdir, "/data/x.bin", holder).unwrap_or_else(|| panic!("not found"));
        assert_eq!(p, path);
        assert_eq!(back.slabs.get(&2), Some(&placed));
        assert_eq!(back.placed_slabs(), 1);
        assert!(find(&jdir, "/data/x.bin", libp2p::PeerId::random()).is_none());
        assert!(find(&jdir, "/data/y.bin", holder).is_none());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| {
                std::fs::metadata(p)
                    .map(|m| m.permissions().mode() & 0o777)
                    .unwrap_or(0)
            };
            assert_eq!(mode(&path), 0o600);
            assert_eq!(mode(&jdir), 0o700);
        }
        // Damage in the middle is refused with the path and the line.
        std::fs::write(&path, format!("{}\nnot json\n{{}}\n", j.header_line()))
            .unwrap_or_else(|e| panic!("{e}"));
        let e = read(&path).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("line 2") && e.contains("remove it"), "{e}");
    }
}

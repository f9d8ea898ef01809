//! Where a download's plaintext goes: a regular file replaced atomically, a special file written
//! in place, or stdout.
//!
//! Goals:
//! - a regular-file target (existing or not) changes only when the whole object authenticated:
//!   bytes go to a temporary file in the same directory, created exclusively (`O_EXCL`) under a
//!   random name `.OUT.<16 hex>.btfs-part`, fsynced, then renamed over `OUT`. Two downloads into
//!   one path each have their own part file, so the target ends as one whole object or the
//!   other, never a mix; a failed download removes its part file and leaves an existing target
//!   untouched. A signal ends the process without running destructors, so open part files are
//!   also listed for [`remove_open_parts`], which the CLI's Ctrl-C/SIGTERM handler calls before
//!   it exits (that handler runs on a runtime worker, so it works even while the download is
//!   blocked writing into a full pipe).
//! - a target that exists and is not a regular file (character or block device, FIFO, terminal)
//!   is opened for writing and written in place, never replaced: as root,
//!   `btfs download LINK -o /dev/null` leaves `/dev/null` a device.
//! - `-o -` writes to stdout.
//!
//! Non-goals: preserving hard links or the owner of a replaced file (the rename makes a new
//! inode; the old file's permission bits are copied). A symlink target is resolved first, so the
//! file it points to is replaced and the link stays.
//!
//! Streaming targets (stdout, special files) necessarily receive bytes before the last slab has
//! been fetched. That never exposes wrong bytes: the decoder opens every AEAD block (nonce = block
//! index, the last block flagged) before it returns its plaintext, so what was written is always
//! an authenticated prefix of the object. A failure later ends the stream early and the command
//! exits non-zero; only the exit status tells a truncated stream from a whole one.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use thiserror::Error;

/// Part files of outputs not yet committed or dropped.
static OPEN_PARTS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

fn open_parts() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    OPEN_PARTS.lock().unwrap_or_else(|p| p.into_inner())
}

fn forget_part(part: &Path) {
    open_parts().retain(|p| p != part);
}

/// Removes the part file of every output still open. For a signal handler that is about to end
/// the process: the outputs' destructors will not run.
pub fn remove_open_parts() {
    for part in open_parts().drain(..) {
        let _ = std::fs::remove_file(part);
    }
}

/// The `-o` argument that means stdout.
pub const STDOUT: &str = "-";

/// The output could not be opened, written or put in place. Messages name the path; the I/O
/// cause is the error's `source()` (printed once by whoever walks the chain).
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum OutputError {
    /// The target is a directory.
    #[error("output {path} is a directory: give a file name, e.g. -o {path}/NAME")]
    IsDirectory {
        /// Target.
        path: String,
    },
    /// The temporary file next to the target could not be created.
    #[error("cannot create a temporary file in {dir} for {path}")]
    CreatePart {
        /// Directory of the target.
        dir: String,
        /// Target.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A special file (or stdout) could not be opened.
    #[error("cannot open {path} for writing")]
    Open {
        /// Target.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Writing or syncing failed.
    #[error("cannot write {path}")]
    Write {
        /// Target (or its part file).
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The finished part file could not replace the target.
    #[error("cannot move the finished download {part} to {path}")]
    Rename {
        /// Part file.
        part: String,
        /// Target.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

enum Sink {
    /// A part file renamed over `target` on commit.
    Replace {
        file: File,
        part: PathBuf,
        target: PathBuf,
    },
    /// A special file or stdout, written in place.
    Stream { file: File, name: String },
}

/// An open download output. Dropping it without [`Output::commit`] removes the part file.
pub struct Output {
    sink: Option<Sink>,
}

impl Output {
    /// Opens the output named by `-o ARG`: [`STDOUT`], a special file, or a regular file path
    /// (existing or not). Blocks while a FIFO has no reader, like any writer of a FIFO.
    pub fn open(arg: &Path) -> Result<Self, OutputError> {
        let shown = arg.display().to_string();
        if arg.as_os_str() == STDOUT {
            return Ok(Self::stream(stdout_file()?, "stdout".into()));
        }
        let target = match std::fs::symlink_metadata(arg) {
            Ok(m) if m.file_type().is_symlink() => {
                std::fs::canonicalize(arg).unwrap_or_else(|_| arg.to_path_buf())
            }
            _ => arg.to_path_buf(),
        };
        match std::fs::metadata(&target) {
            Ok(m) if m.is_dir() => Err(OutputError::IsDirectory { path: shown }),
            Ok(m) if !m.is_file() => {
                let file = OpenOptions::new()
                    .write(true)
                    .open(&target)
                    .map_err(|source| OutputError::Open {
                        path: shown.clone(),
                        source,
                    })?;
                Ok(Self::stream(file, shown))
            }
            existing => {
                let mode = existing.ok().map(|m| m.permissions());
                let (file, part) =
                    create_part(&target).map_err(|source| OutputError::CreatePart {
                        dir: dir_of(&target).display().to_string(),
                        path: shown.clone(),
                        source,
                    })?;
                let out = Self {
                    sink: Some(Sink::Replace { file, part, target }),
                };
                if let (Some(mode), Some(Sink::Replace { file, part, .. })) = (mode, &out.sink) {
                    file.set_permissions(mode)
                        .map_err(|source| OutputError::Write {
                            path: part.display().to_string(),
                            source,
                        })?;
                }
                Ok(out)
            }
        }
    }

    fn stream(file: File, name: String) -> Self {
        Self {
            sink: Some(Sink::Stream { file, name }),
        }
    }

    /// Whether bytes reach the destination before the download is complete (stdout, special
    /// files): a failure then leaves an authenticated but truncated stream.
    pub fn is_streaming(&self) -> bool {
        matches!(self.sink, Some(Sink::Stream { .. }))
    }

    /// The temporary file, for a regular-file target.
    pub fn part_path(&self) -> Option<&Path> {
        match &self.sink {
            Some(Sink::Replace { part, .. }) => Some(part),
            _ => None,
        }
    }

    /// Appends authenticated plaintext.
    pub fn write_all(&mut self, bytes: &[u8]) -> Result<(), OutputError> {
        let (file, path) = match &mut self.sink {
            Some(Sink::Replace { file, part, .. }) => (file, part.display().to_string()),
            Some(Sink::Stream { file, name }) => (file, name.clone()),
            None => return Ok(()),
        };
        file.write_all(bytes)
            .map_err(|source| OutputError::Write { path, source })
    }

    /// Finishes the output once every block authenticated: fsync and rename over the target for
    /// a regular file; fsync where the device supports it for a special file.
    pub fn commit(mut self) -> Result<(), OutputError> {
        match self.sink.take() {
            Some(Sink::Replace { file, part, target }) => {
                let result = file
                    .sync_all()
                    .map_err(|source| OutputError::Write {
                        path: part.display().to_string(),
                        source,
                    })
                    .and_then(|()| {
                        drop(file);
                        std::fs::rename(&part, &target).map_err(|source| OutputError::Rename {
                            part: part.display().to_string(),
                            path: target.display().to_string(),
                            source,
                        })
                    });
                if result.is_err() {
                    let _ = std::fs::remove_file(&part);
                } else if let Ok(dir) = File::open(dir_of(&target)) {
                    // Make the rename itself durable; not every filesystem supports it.
                    let _ = dir.sync_all();
                }
                forget_part(&part);
                result
            }
            Some(Sink::Stream { file, name }) => match file.sync_all() {
                // Pipes, terminals and /dev/null cannot be synced; that is not a failure.
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::InvalidInput | std::io::ErrorKind::Unsupported
                    ) =>
                {
                    Ok(())
                }
                Err(source) => Err(OutputError::Write { path: name, source }),
                Ok(()) => Ok(()),
            },
            None => Ok(()),
        }
    }
}

impl Drop for Output {
    fn drop(&mut self) {
        if let Some(Sink::Replace { part, .. }) = &self.sink {
            let _ = std::fs::remove_file(part);
            forget_part(part);
        }
    }
}

fn dir_of(target: &Path) -> &Path {
    match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Creates `.NAME.<random>.btfs-part` beside `target` with `O_EXCL`; retries on the (unlikely)
/// name collision.
fn create_part(target: &Path) -> std::io::Result<(File, PathBuf)> {
    let name = target.file_name().unwrap_or_default().to_string_lossy();
    let dir = dir_of(target);
    let mut last = None;
    for _ in 0..8 {
        let part = dir.join(format!(".{name}.{:016x}.btfs-part", rand::random::<u64>()));
        match OpenOptions::new().write(true).create_new(true).open(&part) {
            Ok(f) => {
                open_parts().push(part.clone());
                return Ok((f, part));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no free temporary file name")))
}

/// Stdout as a file (a duplicate of fd 1), so writes are unbuffered and need no lock.
fn stdout_file() -> Result<File, OutputError> {
    use std::os::fd::AsFd;
    std::io::stdout()
        .as_fd()
        .try_clone_to_owned()
        .map(File::from)
        .map_err(|source| OutputError::Open {
            path: "stdout".into(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};

    fn entries(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn new_file_appears_only_on_commit() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out.bin");
        let mut out = Output::open(&target).unwrap();
        assert!(!out.is_streaming());
        out.write_all(b"hello").unwrap();
        assert!(!target.exists());
        let part = out.part_path().unwrap().to_path_buf();
        let name = part.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            name.starts_with(".out.bin.") && name.ends_with(".btfs-part"),
            "{name}"
        );
        out.commit().unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"hello");
        assert_eq!(entries(dir.path()), ["out.bin"]);
    }

    #[test]
    fn dropped_output_removes_its_part_and_keeps_the_target() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out.bin");
        std::fs::write(&target, b"old").unwrap();
        let mut out = Output::open(&target).unwrap();
        out.write_all(b"new bytes").unwrap();
        drop(out);
        assert_eq!(std::fs::read(&target).unwrap(), b"old");
        assert_eq!(entries(dir.path()), ["out.bin"]);
    }

    /// `remove_open_parts` itself is exercised end to end by the devnet Ctrl-C test (calling it
    /// here would race the other tests' part files).
    #[test]
    fn open_part_files_are_listed_until_committed_or_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let out = Output::open(&dir.path().join("out.bin")).unwrap();
        let part = out.part_path().unwrap().to_path_buf();
        assert!(open_parts().contains(&part));
        out.commit().unwrap();
        assert!(!open_parts().contains(&part));
        let out = Output::open(&dir.path().join("out.bin")).unwrap();
        let part = out.part_path().unwrap().to_path_buf();
        drop(out);
        assert!(!open_parts().contains(&part));
    }

    #[test]
    fn two_outputs_for_one_path_do_not_share_a_part_file() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out.bin");
        let mut a = Output::open(&target).unwrap();
        let mut b = Output::open(&target).unwrap();
        assert_ne!(a.part_path(), b.part_path());
        a.write_all(&[b'a'; 1000]).unwrap();
        b.write_all(&[b'b'; 10]).unwrap();
        b.commit().unwrap();
        a.commit().unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), vec![b'a'; 1000]);
        assert_eq!(entries(dir.path()), ["out.bin"]);
    }

    #[test]
    fn replacing_keeps_the_permission_bits() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out.bin");
        std::fs::write(&target, b"old").unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o640)).unwrap();
        let mut out = Output::open(&target).unwrap();
        out.write_all(b"new").unwrap();
        out.commit().unwrap();
        let mode = std::fs::metadata(&target).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o640);
    }

    #[test]
    fn symlink_target_is_followed_and_the_link_kept() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.bin");
        let link = dir.path().join("link.bin");
        std::fs::write(&real, b"old").unwrap();
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let mut out = Output::open(&link).unwrap();
        out.write_all(b"new").unwrap();
        out.commit().unwrap();
        assert!(std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(std::fs::read(&real).unwrap(), b"new");
    }

    #[test]
    fn dev_null_is_written_not_replaced() {
        let target = Path::new("/dev/null");
        let mut out = Output::open(target).unwrap();
        assert!(out.is_streaming());
        assert!(out.part_path().is_none());
        out.write_all(b"bytes").unwrap();
        out.commit().unwrap();
        let ft = std::fs::metadata(target).unwrap().file_type();
        assert!(ft.is_char_device());
    }

    #[test]
    fn a_directory_target_is_refused_with_advice() {
        let dir = tempfile::tempdir().unwrap();
        let err = Output::open(dir.path()).err().unwrap().to_string();
        assert!(
            err.contains("is a directory") && err.contains("-o "),
            "{err}"
        );
        assert!(entries(dir.path()).is_empty());
    }

    #[test]
    fn a_missing_directory_names_the_directory_and_the_cause_once() {
        let err = Output::open(Path::new("/nonexistent-dir/out.bin"))
            .err()
            .unwrap();
        let top = err.to_string();
        let cause = std::error::Error::source(&err).unwrap().to_string();
        assert!(top.contains("/nonexistent-dir"), "{top}");
        assert!(!top.contains(&cause), "the cause is printed twice: {top}");
    }
}

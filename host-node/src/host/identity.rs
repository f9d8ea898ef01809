//! A node's persistent identity: its ed25519 libp2p keypair and its WebRTC certificate.
//!
//! Both live in the data directory so that a restarted host keeps its peer id (tenants' manifests
//! name hosts by peer id) and its `/certhash` (browsers dial WebRTC-direct by certificate hash).
//!
//! ```text
//! <data_dir>/identity.key     protobuf-encoded libp2p keypair, mode 0600
//! <data_dir>/webrtc-cert.pem  PKCS#8 PEM certificate and key, mode 0600
//! ```

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use libp2p::identity::Keypair;
use thiserror::Error;

/// Identity files could not be read or written.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// File I/O.
    #[error("identity file {path}")]
    Io {
        /// Path.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The file does not hold a valid key or certificate.
    #[error("identity file {0} is corrupt: move it away to create a new identity (the host then gets a new peer id)")]
    Corrupt(String),
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), IdentityError> {
    let err = |source| IdentityError::Io {
        path: path.display().to_string(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(err)?;
    f.write_all(bytes).map_err(err)?;
    f.sync_all().map_err(err)
}

fn read(path: &Path) -> Result<Option<Vec<u8>>, IdentityError> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(IdentityError::Io {
            path: path.display().to_string(),
            source,
        }),
    }
}

/// Loads `<dir>/identity.key`, creating a fresh ed25519 keypair on first start.
pub fn load_or_create_keypair(dir: &Path) -> Result<Keypair, IdentityError> {
    load_or_create_key_file(&dir.join("identity.key"))
}

/// Loads the ed25519 key at `path` (libp2p protobuf encoding), creating it (mode 0600) on first
/// use.
pub fn load_or_create_key_file(path: &Path) -> Result<Keypair, IdentityError> {
    let path = path.to_path_buf();
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|source| IdentityError::Io {
            path: parent.display().to_string(),
            source,
        })?;
    }
    if let Some(bytes) = read(&path)? {
        return Keypair::from_protobuf_encoding(&bytes)
            .map_err(|_| IdentityError::Corrupt(path.display().to_string()));
    }
    let key = Keypair::generate_ed25519();
    let bytes = key
        .to_protobuf_encoding()
        .map_err(|_| IdentityError::Corrupt(path.display().to_string()))?;
    write_private(&path, &bytes)?;
    Ok(key)
}

/// Loads `<dir>/webrtc-cert.pem`, creating a certificate on first start.
pub fn load_or_create_certificate(
    dir: &Path,
) -> Result<libp2p_webrtc::tokio::Certificate, IdentityError> {
    use libp2p_webrtc::tokio::Certificate;
    let path = dir.join("webrtc-cert.pem");
    let corrupt = || IdentityError::Corrupt(path.display().to_string());
    if let Some(bytes) = read(&path)? {
        let pem = String::from_utf8(bytes).map_err(|_| corrupt())?;
        return Certificate::from_pem(&pem).map_err(|_| corrupt());
    }
    let cert = Certificate::generate(&mut rand010::rng()).map_err(|_| corrupt())?;
    write_private(&path, cert.serialize_pem().as_bytes())?;
    Ok(cert)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_survives_restart() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create_keypair(dir.path()).unwrap();
        let b = load_or_create_keypair(dir.path()).unwrap();
        assert_eq!(a.public().to_peer_id(), b.public().to_peer_id());
        let c1 = load_or_create_certificate(dir.path()).unwrap();
        let c2 = load_or_create_certificate(dir.path()).unwrap();
        assert_eq!(c1.fingerprint(), c2.fingerprint());
        std::fs::write(dir.path().join("identity.key"), b"junk").unwrap();
        let err = load_or_create_keypair(dir.path()).unwrap_err().to_string();
        assert!(err.contains("corrupt"), "{err}");
    }
}

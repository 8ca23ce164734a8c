//! The HMAC secret that turns an address into a key no one can read back, and its fingerprint.
//!
//! The secret is 32 random bytes in `<state>/secret` (mode 0600), created at first start. Every
//! host of one Help Desk must use the same secret, or a person reaching two hosts would be
//! answered twice: a shared store keeps the secret's fingerprint and refuses a host whose
//! secret differs (`store::postgres`).

use super::StoreError;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// A keyed hash: HMAC-SHA256 under the secret.
pub type Key = [u8; 32];

pub const SECRET_FILE: &str = "secret";

/// The secret, and the keyed hashes made with it.
#[derive(Clone)]
pub struct Keys {
    secret: [u8; 32],
}

// Hand-written so that a stray `{:?}` cannot print the secret.
impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys(<secret>)")
    }
}

impl Keys {
    /// A secret that nothing keeps: for `classify` and for states that remember nothing on disk.
    pub fn random() -> Keys {
        let mut secret = [0u8; 32];
        // Only keys an in-memory map that is thrown away; a fixed value would do too.
        let _ = getrandom::fill(&mut secret);
        Keys { secret }
    }

    /// Reads the secret of `dir`, or creates it on first start (32 random bytes, mode 0600). A
    /// missing secret beside a store that remembers answered senders is an error: a new secret
    /// would forget everyone answered and answer them again.
    pub fn load_or_create(dir: &Path, store_has_entries: bool) -> Result<Keys, StoreError> {
        let path = dir.join(SECRET_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => {
                let meta = std::fs::metadata(&path).map_err(|e| StoreError::at("cannot read", &path, e))?;
                if meta.permissions().mode() & 0o077 != 0 {
                    tracing::warn!("{} is readable by others; it should be mode 0600", path.display());
                }
                let secret = <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
                    StoreError(format!(
                        "{} is not a 32-byte secret; restore it or remove the whole state directory",
                        path.display()
                    ))
                })?;
                Ok(Keys { secret })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !store_has_entries => {
                let mut secret = [0u8; 32];
                getrandom::fill(&mut secret)
                    .map_err(|e| StoreError(format!("no randomness for the secret: {e}")))?;
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                    .map_err(|e| StoreError::at("cannot create", &path, e))?;
                f.write_all(&secret)
                    .and_then(|()| f.sync_all())
                    .map_err(|e| StoreError::at("cannot write", &path, e))?;
                Ok(Keys { secret })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(StoreError(format!(
                "{} is missing but the state store holds answered senders; restore the secret, or remove the store to start afresh",
                path.display()
            ))),
            Err(e) => Err(StoreError::at("cannot read", &path, e)),
        }
    }

    /// The keyed hash of a canonical address, or of `@domain`.
    pub fn key(&self, canonical: &str) -> Key {
        keyed(&self.secret, canonical.as_bytes())
    }

    /// The key of a sender, and of its domain (for the per-domain cap).
    pub fn sender_and_domain(&self, canonical_sender: &str) -> (Key, Key) {
        let domain = canonical_sender.rsplit_once('@').map_or("", |(_, d)| d);
        (self.key(canonical_sender), self.key(&format!("@{domain}")))
    }

    /// What identifies the secret without revealing it: hosts compare it in a shared store.
    pub fn fingerprint(&self) -> String {
        keyed(&self.secret, b"helpdesk-milter secret fingerprint 1")
            .iter()
            .take(16)
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// HMAC-SHA256 of `data` under `key`.
pub fn keyed(key: &[u8], data: &[u8]) -> Key {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_secret_is_created_private_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let a = Keys::load_or_create(dir.path(), false).unwrap();
        let mode = std::fs::metadata(dir.path().join(SECRET_FILE)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let b = Keys::load_or_create(dir.path(), true).unwrap();
        assert_eq!(a.key("x@y.org"), b.key("x@y.org"));
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_ne!(a.fingerprint(), Keys::random().fingerprint());
        assert_eq!(a.fingerprint().len(), 32);
    }

    #[test]
    fn a_missing_secret_beside_entries_is_an_error_not_a_new_secret() {
        let dir = tempfile::tempdir().unwrap();
        let e = Keys::load_or_create(dir.path(), true).unwrap_err();
        assert!(e.0.contains("missing"), "{e}");
        std::fs::write(dir.path().join(SECRET_FILE), b"short").unwrap();
        assert!(Keys::load_or_create(dir.path(), false).is_err());
    }
}

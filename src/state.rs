//! The state store: which senders were answered, kept as keyed hashes with an expiry.
//!
//! No address is stored: the key is HMAC-SHA256(secret, canonical sender), with a secret created
//! at first start (mode 0600). Decisions are taken in memory under one lock (atomic
//! check-and-set, no disk I/O on the milter's path); reservations are then written to an
//! embedded database (redb) by a background task, before the reply is sent.

use crate::policy::{Decision, StateView};
use hmac::{Hmac, Mac};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use sha2::Sha256;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// Sender key (HMAC of the canonical sender) to expiry, in unix seconds.
const ANSWERED: TableDefinition<&[u8], u64> = TableDefinition::new("answered");
const SECRET_FILE: &str = "secret";
const DB_FILE: &str = "state.redb";
const HOUR: u64 = 3600;

pub type Key = [u8; 32];

#[derive(Debug)]
pub struct StateError(pub String);

impl fmt::Display for StateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StateError {}

fn err(context: &str, path: &Path, e: impl fmt::Display) -> StateError {
    StateError(format!("{context} {}: {e}", path.display()))
}

/// A reply reserved in memory, to be written to the store before the reply is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    pub key: Key,
    pub expiry: u64,
}

struct Inner {
    answered: HashMap<Key, u64>,
    /// Time and domain key of each reply queued in the last hour, oldest first (F16 caps).
    recent: VecDeque<(u64, Key)>,
}

/// The state of the auto-responder.
pub struct ReplyState {
    secret: [u8; 32],
    inner: Mutex<Inner>,
    /// The store on disk; None for a store in memory only.
    disk: Option<Disk>,
    /// Why the store cannot be used; every decision is then "suppressed (store)".
    unavailable: Option<String>,
    max_entries: usize,
}

impl ReplyState {
    /// Opens (creating on first start) the store in `dir`.
    pub fn open(dir: &Path, max_entries: usize, now: u64) -> Result<ReplyState, StateError> {
        std::fs::create_dir_all(dir).map_err(|e| err("cannot create the state directory", dir, e))?;
        let db_path = dir.join(DB_FILE);
        let db_existed = db_path.exists();
        let db = Database::create(&db_path).map_err(|e| err("cannot open the state store", &db_path, e))?;
        let mut answered = HashMap::new();
        {
            let tx = db.begin_read().map_err(|e| err("cannot read the state store", &db_path, e))?;
            match tx.open_table(ANSWERED) {
                Ok(table) => {
                    let iter = table.iter().map_err(|e| err("cannot read the state store", &db_path, e))?;
                    for row in iter {
                        let (k, v) = row.map_err(|e| err("cannot read the state store", &db_path, e))?;
                        if let Ok(key) = <Key>::try_from(k.value())
                            && v.value() > now
                        {
                            answered.insert(key, v.value());
                        }
                    }
                }
                Err(redb::TableError::TableDoesNotExist(_)) => {}
                Err(e) => return Err(err("cannot read the state store", &db_path, e)),
            }
        }
        let secret = load_or_create_secret(dir, db_existed && !answered.is_empty())?;
        let state = ReplyState {
            secret,
            inner: Mutex::new(Inner { answered, recent: VecDeque::new() }),
            disk: Some(Disk { path: db_path, db: Mutex::new(Some(db)) }),
            unavailable: None,
            max_entries,
        };
        state.purge(now)?;
        Ok(state)
    }

    /// A store that remembers nothing on disk, for `classify`: as if nobody had been answered.
    pub fn in_memory() -> ReplyState {
        let mut secret = [0u8; 32];
        // Only used to key an in-memory map that is thrown away; a fixed value would do too.
        let _ = getrandom::fill(&mut secret);
        ReplyState {
            secret,
            inner: Mutex::new(Inner { answered: HashMap::new(), recent: VecDeque::new() }),
            disk: None,
            unavailable: None,
            max_entries: usize::MAX,
        }
    }

    /// A store that cannot be used: no reply is ever queued (fail closed), mail flows as usual.
    pub fn unavailable(why: String) -> ReplyState {
        ReplyState { unavailable: Some(why), ..ReplyState::in_memory() }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The maps stay consistent across a panic (each update is a single insert or push).
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The keyed hash of a canonical address or domain.
    pub fn key(&self, canonical: &str) -> Key {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.secret).expect("HMAC takes any key length");
        mac.update(canonical.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// Atomic check-and-set: builds the state view for this sender, lets `decide` (the pure
    /// policy) choose, and if it queues a reply, reserves it before anyone else can decide.
    pub fn decide_and_reserve(
        &self,
        canonical_sender: &str,
        now: u64,
        interval: Duration,
        decide: impl FnOnce(&StateView) -> Decision,
    ) -> (Decision, Option<Reservation>) {
        let key = self.key(canonical_sender);
        let domain = canonical_sender.rsplit_once('@').map_or("", |(_, d)| d);
        let domain_key = self.key(&format!("@{domain}"));
        let mut inner = self.lock();
        while inner.recent.front().is_some_and(|(t, _)| *t + HOUR <= now) {
            inner.recent.pop_front();
        }
        let view = StateView {
            answered_recently: inner.answered.get(&key).is_some_and(|&expiry| expiry > now),
            replies_last_hour: u32::try_from(inner.recent.len()).unwrap_or(u32::MAX),
            domain_replies_last_hour: u32::try_from(
                inner.recent.iter().filter(|(_, d)| *d == domain_key).count(),
            )
            .unwrap_or(u32::MAX),
            unavailable: self.unavailable.is_some(),
        };
        let decision = decide(&view);
        if decision != Decision::Queued {
            return (decision, None);
        }
        let expiry = now.saturating_add(interval.as_secs());
        inner.answered.insert(key, expiry);
        inner.recent.push_back((now, domain_key));
        (decision, Some(Reservation { key, expiry }))
    }

    /// Writes a reservation to disk (blocking: call it off the milter's path). A failure means
    /// the reply must not be sent, since a restart would forget it was.
    pub fn persist(&self, r: &Reservation) -> Result<(), StateError> {
        let Some(disk) = &self.disk else { return Ok(()) };
        disk.write("cannot write the state store", |table| {
            table.insert(r.key.as_slice(), r.expiry)?;
            Ok(())
        })
    }

    /// Forgets a reservation whose reply was not queued (the store or the outbox could not be
    /// written), in memory and, best effort, on disk: otherwise the sender would get no reply for
    /// a whole interval although none was sent. Never call it for a reply that may be queued.
    pub fn release(&self, r: &Reservation) -> Result<(), StateError> {
        {
            let mut inner = self.lock();
            if inner.answered.get(&r.key) == Some(&r.expiry) {
                inner.answered.remove(&r.key);
            }
        }
        let Some(disk) = &self.disk else { return Ok(()) };
        disk.write("cannot undo the record in the state store", |table| {
            if table.get(r.key.as_slice())?.is_some_and(|v| v.value() == r.expiry) {
                table.remove(r.key.as_slice())?;
            }
            Ok(())
        })
    }

    /// Drops expired entries, and the oldest ones past `max_entries` (RFC 5230: bounded, oldest
    /// first), in memory and on disk.
    pub fn purge(&self, now: u64) -> Result<usize, StateError> {
        let removed: Vec<Key> = {
            let mut inner = self.lock();
            let mut removed: Vec<Key> =
                inner.answered.iter().filter(|(_, e)| **e <= now).map(|(k, _)| *k).collect();
            for k in &removed {
                inner.answered.remove(k);
            }
            if inner.answered.len() > self.max_entries {
                let mut by_expiry: Vec<(u64, Key)> = inner.answered.iter().map(|(k, e)| (*e, *k)).collect();
                by_expiry.sort_unstable();
                let excess = inner.answered.len() - self.max_entries;
                for (_, k) in by_expiry.into_iter().take(excess) {
                    inner.answered.remove(&k);
                    removed.push(k);
                }
            }
            removed
        };
        let Some(disk) = &self.disk else { return Ok(removed.len()) };
        if removed.is_empty() {
            return Ok(0);
        }
        disk.write("cannot purge the state store", |table| {
            for k in &removed {
                table.remove(k.as_slice())?;
            }
            Ok(())
        })?;
        Ok(removed.len())
    }

    /// Number of senders currently remembered.
    pub fn len(&self) -> usize {
        self.lock().answered.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The database file and its handle.
struct Disk {
    path: PathBuf,
    /// None after a failed write, until it is opened again.
    db: Mutex<Option<Database>>,
}

impl Disk {
    /// Runs `f` on the table of answered senders in one write transaction. After an I/O error redb
    /// refuses every later write ("Previous I/O error occurred") until the database is opened
    /// again: without a reopen, a disk that was full or read-only for a moment would stop the
    /// replies until the next restart.
    fn write(
        &self,
        what: &str,
        f: impl FnOnce(&mut redb::Table<'_, &'static [u8], u64>) -> Result<(), redb::StorageError>,
    ) -> Result<(), StateError> {
        let mut db = self.db.lock().unwrap_or_else(|p| p.into_inner());
        if db.is_none() {
            let reopened = Database::create(&self.path)
                .map_err(|e| StateError(format!("{what}: cannot open {} again: {e}", self.path.display())))?;
            *db = Some(reopened);
        }
        let Some(open) = db.as_ref() else { return Err(StateError(format!("{what}: not open"))) };
        let transaction = || -> Result<(), String> {
            let tx = open.begin_write().map_err(|e| e.to_string())?;
            f(&mut tx.open_table(ANSWERED).map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
            tx.commit().map_err(|e| e.to_string())
        };
        transaction().map_err(|e| {
            // Closed now (before the lock is released), opened again at the next write.
            *db = None;
            StateError(format!("{what}: {e}"))
        })
    }
}

/// Reads the HMAC secret, or creates it on first start (32 random bytes, mode 0600). A missing
/// secret next to a store that has entries is an error: a new secret would forget everyone
/// answered and answer them again.
fn load_or_create_secret(dir: &Path, store_has_entries: bool) -> Result<[u8; 32], StateError> {
    let path = dir.join(SECRET_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => {
            let meta = std::fs::metadata(&path).map_err(|e| err("cannot read", &path, e))?;
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!("{} is readable by others; it should be mode 0600", path.display());
            }
            <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
                StateError(format!(
                    "{} is not a 32-byte secret; restore it or remove the whole state directory",
                    path.display()
                ))
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !store_has_entries => {
            let mut secret = [0u8; 32];
            getrandom::fill(&mut secret)
                .map_err(|e| StateError(format!("no randomness for the secret: {e}")))?;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .map_err(|e| err("cannot create", &path, e))?;
            f.write_all(&secret).and_then(|()| f.sync_all()).map_err(|e| err("cannot write", &path, e))?;
            Ok(secret)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(StateError(format!(
            "{} is missing but the state store holds answered senders; restore the secret, or remove the store to start afresh",
            path.display()
        ))),
        Err(e) => Err(err("cannot read", &path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WEEK: Duration = Duration::from_secs(7 * 86400);

    fn queue(_: &StateView) -> Decision {
        Decision::Queued
    }

    #[test]
    fn second_message_within_the_interval_sees_the_first() {
        let s = ReplyState::in_memory();
        let (d, r) = s.decide_and_reserve("alice@example.org", 1000, WEEK, queue);
        assert_eq!(d, Decision::Queued);
        assert!(r.is_some());
        let (_, r2) = s.decide_and_reserve("alice@example.org", 2000, WEEK, |v| {
            assert!(v.answered_recently);
            assert_eq!(v.replies_last_hour, 1);
            assert_eq!(v.domain_replies_last_hour, 1);
            Decision::Suppressed(crate::policy::Reason::Interval)
        });
        assert!(r2.is_none());
        // After the interval the sender is answered again.
        s.decide_and_reserve("alice@example.org", 1000 + WEEK.as_secs(), WEEK, |v| {
            assert!(!v.answered_recently);
            assert_eq!(v.replies_last_hour, 0, "the hour window slides");
            Decision::Queued
        });
    }

    #[test]
    fn concurrent_decisions_for_one_sender_reserve_once() {
        let s = std::sync::Arc::new(ReplyState::in_memory());
        let handles: Vec<_> = (0..16)
            .map(|_| {
                let s = s.clone();
                std::thread::spawn(move || {
                    s.decide_and_reserve("bob@example.org", 10, WEEK, |v| {
                        if v.answered_recently {
                            Decision::Suppressed(crate::policy::Reason::Interval)
                        } else {
                            Decision::Queued
                        }
                    })
                    .1
                    .is_some()
                })
            })
            .collect();
        let reserved = handles.into_iter().map(|h| h.join().unwrap()).filter(|r| *r).count();
        assert_eq!(reserved, 1);
    }

    #[test]
    fn reservations_survive_a_restart_and_store_no_address() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = ReplyState::open(dir.path(), 1000, 100).unwrap();
            let (_, r) = s.decide_and_reserve("carol@example.org", 100, WEEK, queue);
            s.persist(&r.unwrap()).unwrap();
        }
        let secret = dir.path().join(SECRET_FILE);
        assert_eq!(std::fs::metadata(&secret).unwrap().permissions().mode() & 0o777, 0o600);
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            assert!(!bytes.windows(5).any(|w| w == b"carol"), "an address in clear");
        }
        let s = ReplyState::open(dir.path(), 1000, 200).unwrap();
        assert_eq!(s.len(), 1);
        s.decide_and_reserve("Carol@example.org".to_lowercase().as_str(), 200, WEEK, |v| {
            assert!(v.answered_recently);
            Decision::Suppressed(crate::policy::Reason::Interval)
        });
        drop(s);
        // Expired entries are purged at open.
        let s = ReplyState::open(dir.path(), 1000, 100 + WEEK.as_secs() + 1).unwrap();
        assert!(s.is_empty());
    }

    #[test]
    fn missing_secret_with_entries_is_an_error_not_a_new_secret() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = ReplyState::open(dir.path(), 1000, 100).unwrap();
            let (_, r) = s.decide_and_reserve("dave@example.org", 100, WEEK, queue);
            s.persist(&r.unwrap()).unwrap();
        }
        std::fs::remove_file(dir.path().join(SECRET_FILE)).unwrap();
        let e = ReplyState::open(dir.path(), 1000, 100).err().unwrap();
        assert!(e.0.contains("missing"), "{e}");
        // A corrupt secret is refused too.
        std::fs::write(dir.path().join(SECRET_FILE), b"short").unwrap();
        assert!(ReplyState::open(dir.path(), 1000, 100).is_err());
    }

    #[test]
    fn corrupt_store_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(DB_FILE), vec![0x42; 4096]).unwrap();
        assert!(ReplyState::open(dir.path(), 1000, 100).is_err());
    }

    #[test]
    fn bounded_size_drops_the_oldest() {
        let dir = tempfile::tempdir().unwrap();
        let s = ReplyState::open(dir.path(), 3, 0).unwrap();
        for (i, who) in ["a", "b", "c", "d", "e"].iter().enumerate() {
            let (_, r) = s.decide_and_reserve(&format!("{who}@x.org"), i as u64 * 10_000, WEEK, queue);
            s.persist(&r.unwrap()).unwrap();
        }
        assert_eq!(s.purge(50_000).unwrap(), 2);
        assert_eq!(s.len(), 3);
        s.decide_and_reserve("a@x.org", 50_000, WEEK, |v| {
            assert!(!v.answered_recently, "the oldest was dropped");
            Decision::Suppressed(crate::policy::Reason::Class)
        });
    }

    #[test]
    fn unavailable_store_never_queues() {
        let s = ReplyState::unavailable("disk full".into());
        s.decide_and_reserve("x@y.org", 1, WEEK, |v| {
            assert!(v.unavailable);
            Decision::Suppressed(crate::policy::Reason::Store)
        });
    }
}

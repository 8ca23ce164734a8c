//! The outbox directory: durable writes, scans, quarantine of damaged entries.

use super::entry::{Entry, decode, encode, new_id, recipient_tag, valid_id};
use crate::clock::{from_unix, unix_secs};
use crate::metrics::{self, LostReply};
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};
use tokio::sync::Notify;
use tracing::{debug, error, info, warn};

/// Temp files older than this are leftovers of a crash during a write.
const STALE_TEMP_AGE: Duration = Duration::from_secs(60 * 60);
/// Replies are a few kB; anything much bigger is not ours.
const MAX_MESSAGE_BYTES: usize = 10 * 1024 * 1024;
const SUFFIX: &str = ".reply";
const TEMP_PREFIX: &str = ".tmp-";
const CORRUPT_DIR: &str = "corrupt";

/// Wakes the gauges' task (`super::gauges`) when the outbox changed. A permit is kept while it
/// scans, so that no change is missed; without the metrics endpoint nothing waits on it.
pub(super) static CHANGED: Notify = Notify::const_new();

/// An entry was added, sent, dropped or set aside.
fn changed() {
    CHANGED.notify_one();
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The outbox directory.
#[derive(Debug)]
pub struct Outbox {
    dir: PathBuf,
}

impl Outbox {
    /// Opens the outbox in `dir`, creating it (mode 0700) if missing.
    pub fn open(dir: &Path) -> io::Result<Outbox> {
        match DirBuilder::new().recursive(true).mode(0o700).create(dir) {
            Ok(()) => {}
            Err(e) => {
                return Err(io::Error::new(e.kind(), format!("creating outbox {}: {e}", dir.display())));
            }
        }
        if !fs::metadata(dir)?.is_dir() {
            return Err(io::Error::other(format!("outbox {} is not a directory", dir.display())));
        }
        Ok(Outbox { dir: dir.to_owned() })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn entry_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}{SUFFIX}"))
    }

    /// Writes `bytes` as entry `id`: temp file, fsync, rename, fsync of the directory.
    fn write_durable(&self, id: &str, bytes: &[u8], fresh: bool) -> io::Result<()> {
        let temp = self.dir.join(format!("{TEMP_PREFIX}{id}"));
        let mut options = OpenOptions::new();
        options.write(true).mode(0o600);
        if fresh {
            options.create_new(true);
        } else {
            // A leftover temp file of a crashed rewrite is simply replaced.
            options.create(true).truncate(true);
        }
        let result = (|| {
            let mut file = options.open(&temp)?;
            file.write_all(bytes)?;
            file.sync_all()?;
            drop(file);
            fs::rename(&temp, self.entry_path(id))?;
            sync_dir(&self.dir).inspect_err(|_| {
                // An error must mean "not queued": the caller then forgets the reply.
                if fresh {
                    let _ = fs::remove_file(self.entry_path(id));
                }
            })
        })();
        if result.is_err() {
            let _ = fs::remove_file(&temp);
        }
        result
    }

    /// Queues `message` for `recipient` durably and returns the new entry's id. Blocking (fsync):
    /// call it from `spawn_blocking`, then notify the sender's `wake`.
    pub fn enqueue(&self, recipient: &str, message: &[u8], now: SystemTime) -> io::Result<String> {
        // Control characters have no place in an address and would let a caller inject SMTP.
        if recipient.is_empty() || recipient.chars().any(char::is_control) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "recipient is empty or has control characters",
            ));
        }
        if message.len() > MAX_MESSAGE_BYTES {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "reply message too large"));
        }
        let id = new_id()?;
        let created = unix_secs(now);
        let entry = Entry {
            id: id.clone(),
            recipient: recipient.to_owned(),
            created,
            attempts: 0,
            next_attempt: created,
            message: message.to_vec(),
        };
        self.write_durable(&id, &encode(&entry)?, true)?;
        debug!(id = %id, rcpt = %recipient_tag(recipient), "reply queued");
        changed();
        Ok(id)
    }

    /// All readable entries, oldest first. Corrupt entry files are moved to `corrupt/`, temp files
    /// older than an hour are removed.
    pub fn entries(&self) -> Vec<Entry> {
        self.scan(true)
    }

    fn scan(&self, maintain: bool) -> Vec<Entry> {
        let reader = match fs::read_dir(&self.dir) {
            Ok(r) => r,
            Err(e) => {
                error!("cannot read outbox {}: {e}", self.dir.display());
                return Vec::new();
            }
        };
        let mut entries = Vec::new();
        for item in reader {
            let item = match item {
                Ok(i) => i,
                Err(e) => {
                    error!("cannot read outbox {}: {e}", self.dir.display());
                    continue;
                }
            };
            let name = item.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with(TEMP_PREFIX) {
                if maintain {
                    self.remove_stale_temp(&item.path());
                }
                continue;
            }
            let Some(stem) = name.strip_suffix(SUFFIX) else { continue };
            if name.starts_with('.') {
                continue;
            }
            let path = item.path();
            let result = match read_entry_file(&path) {
                Ok(bytes) => decode(&bytes).and_then(|e| {
                    if e.id == stem { Ok(e) } else { Err("id in header does not match the file name".into()) }
                }),
                // Removed meanwhile (sent by the sender): nothing to report.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => Err(format!("unreadable: {e}")),
            };
            match result {
                Ok(entry) => entries.push(entry),
                Err(why) if maintain => self.quarantine(&path, name, &why),
                Err(_) => {}
            }
        }
        entries.sort_by(|a, b| (a.created, &a.id).cmp(&(b.created, &b.id)));
        entries
    }

    /// Removes quarantined entries last written more than `lifetime` ago: they hold a recipient's
    /// address, and would never be sent anyway. Returns how many were removed.
    pub fn purge_corrupt(&self, lifetime: Duration) -> usize {
        let Ok(reader) = fs::read_dir(self.dir.join(CORRUPT_DIR)) else { return 0 };
        let mut removed = 0;
        for item in reader.flatten() {
            let old = item
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().is_ok_and(|age| age > lifetime));
            if old {
                match fs::remove_file(item.path()) {
                    Ok(()) => removed += 1,
                    Err(e) => warn!("cannot remove old corrupt outbox entry {}: {e}", item.path().display()),
                }
            }
        }
        if removed > 0 {
            info!("removed {removed} corrupt outbox entries older than the lifetime");
        }
        removed
    }

    fn remove_stale_temp(&self, path: &Path) {
        let old = fs::symlink_metadata(path)
            .and_then(|m| m.modified())
            .map(|t| t.elapsed().is_ok_and(|age| age > STALE_TEMP_AGE))
            .unwrap_or(false);
        if old {
            match fs::remove_file(path) {
                Ok(()) => info!("removed stale outbox temp file {}", path.display()),
                Err(e) => warn!("cannot remove stale outbox temp file {}: {e}", path.display()),
            }
        }
    }

    /// Moves a bad entry file aside, so that it is neither sent nor lost.
    fn quarantine(&self, path: &Path, name: &str, why: &str) {
        let corrupt = self.dir.join(CORRUPT_DIR);
        let moved = DirBuilder::new().mode(0o700).recursive(true).create(&corrupt).and_then(|()| {
            let mut target = corrupt.join(name);
            let mut n = 1;
            while target.exists() {
                target = corrupt.join(format!("{name}.{n}"));
                n += 1;
            }
            fs::rename(path, &target)?;
            sync_dir(&corrupt)?;
            sync_dir(&self.dir)?;
            Ok(target)
        });
        match moved {
            Ok(target) => {
                error!("corrupt outbox entry {} ({why}): moved to {}", path.display(), target.display());
                metrics::reply_failed(LostReply::Corrupt);
                changed();
            }
            Err(e) => error!(
                "corrupt outbox entry {} ({why}): cannot move it to {CORRUPT_DIR}/: {e}",
                path.display()
            ),
        }
    }

    /// Removes an entry (durably). Removing an entry that is not there is not an error.
    pub fn remove(&self, id: &str) -> io::Result<()> {
        if !valid_id(id) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "invalid outbox id"));
        }
        match fs::remove_file(self.entry_path(id)) {
            Ok(()) => {
                changed();
                sync_dir(&self.dir)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Rewrites an existing entry (durably), e.g. with new `attempts` and `next_attempt`.
    pub fn reschedule(&self, entry: &Entry) -> io::Result<()> {
        if !valid_id(&entry.id) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "invalid outbox id"));
        }
        // Never bring back an entry that was removed.
        if !self.entry_path(&entry.id).exists() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("outbox entry {} is gone", entry.id),
            ));
        }
        self.write_durable(&entry.id, &encode(entry)?, false)
    }

    /// Number of entry files (including not yet detected corrupt ones).
    pub fn depth(&self) -> usize {
        fs::read_dir(&self.dir)
            .map(|r| {
                r.filter_map(Result::ok)
                    .filter(|i| {
                        i.file_name().to_str().is_some_and(|n| n.ends_with(SUFFIX) && !n.starts_with('.'))
                    })
                    .count()
            })
            .unwrap_or(0)
    }

    /// Age of the oldest readable entry (no side effects on bad files).
    pub fn oldest_age(&self, now: SystemTime) -> Option<Duration> {
        let oldest = self.scan(false).into_iter().map(|e| e.created).min()?;
        Some(now.duration_since(from_unix(oldest)).unwrap_or(Duration::ZERO))
    }
}

fn read_entry_file(path: &Path) -> io::Result<Vec<u8>> {
    let file = File::open(path)?;
    let mut bytes = Vec::new();
    // Bounded, so that a huge stray file cannot exhaust memory.
    file.take((MAX_MESSAGE_BYTES + 64 * 1024) as u64).read_to_end(&mut bytes)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn quarantined_entries_are_removed_after_the_lifetime() {
        let dir = tempfile::tempdir().unwrap();
        let ob = Outbox::open(&dir.path().join("outbox")).unwrap();
        let id = ob.enqueue("bob@example.net", b"msg", SystemTime::now()).unwrap();
        let path = ob.dir().join(format!("{id}{SUFFIX}"));
        let mut bytes = fs::read(&path).unwrap();
        bytes.truncate(bytes.len() - 1);
        fs::write(&path, bytes).unwrap();
        assert!(ob.entries().is_empty());
        let quarantined = ob.dir().join(CORRUPT_DIR).join(format!("{id}{SUFFIX}"));
        assert!(quarantined.exists());
        // Younger than the lifetime: kept for the sysadmin to look at.
        assert_eq!(ob.purge_corrupt(Duration::from_secs(3600)), 0);
        assert!(quarantined.exists());
        let old = SystemTime::now() - Duration::from_secs(7200);
        File::options().write(true).open(&quarantined).unwrap().set_modified(old).unwrap();
        assert_eq!(ob.purge_corrupt(Duration::from_secs(3600)), 1);
        assert!(!quarantined.exists());
    }

    #[test]
    fn outbox_round_trip_and_remove() {
        let dir = tempfile::tempdir().unwrap();
        let ob = Outbox::open(&dir.path().join("outbox")).unwrap();
        let mode = fs::metadata(ob.dir()).unwrap().permissions();
        assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777, 0o700);
        let now = UNIX_EPOCH + Duration::from_secs(1_741_079_702);
        let id = ob.enqueue("bob@example.net", b"msg", now).unwrap();
        assert!(valid_id(&id));
        let entries = ob.entries();
        assert_eq!(entries.len(), 1);
        let mut e = entries[0].clone();
        assert_eq!(
            (e.recipient.as_str(), e.created, e.attempts, e.next_attempt),
            ("bob@example.net", 1_741_079_702, 0, 1_741_079_702)
        );
        e.attempts = 1;
        e.next_attempt += 60;
        ob.reschedule(&e).unwrap();
        assert_eq!(ob.entries(), vec![e.clone()]);
        assert_eq!(ob.depth(), 1);
        assert_eq!(ob.oldest_age(now + Duration::from_secs(5)), Some(Duration::from_secs(5)));
        ob.remove(&id).unwrap();
        ob.remove(&id).unwrap();
        assert!(ob.reschedule(&e).is_err(), "a removed entry must not come back");
        assert_eq!(ob.depth(), 0);
        assert_eq!(ob.oldest_age(now), None);
        assert!(ob.remove("../etc/passwd").is_err());
        assert!(ob.enqueue("a@b\r\nRCPT TO:<c@d>", b"m", now).is_err());
        let leftovers: Vec<_> = fs::read_dir(ob.dir()).unwrap().map(|i| i.unwrap().file_name()).collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }
}

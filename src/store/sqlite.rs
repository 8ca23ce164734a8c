//! The embedded store: one SQLite file, `<state>/store.sqlite`, in WAL mode, so that `stats`
//! reads a consistent snapshot while the daemon writes, and a write is an append to the log,
//! not a new file and an fsync. The daemon keeps one connection open for its life.
//!
//! Durability: the counts are written with `synchronous = NORMAL` (a power cut may lose the last
//! second; a crash of the daemon loses nothing written), a reply's record with `synchronous =
//! FULL`, since it must be on disk before the reply is sent.

use super::keys::{Key, keyed};
use super::{Batch, CountsData, Loaded, PeopleRow, Recorded, Reservation, Row, StoreError, WEEK_GRACE_SECS};
use crate::calendar::Week;
use rusqlite::{Connection, OpenFlags, OptionalExtension, Transaction, params};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

pub const STORE_FILE: &str = "store.sqlite";

/// The embedded store of one host.
pub struct Embedded {
    path: PathBuf,
    /// None after a failed write, opened again at the next one: a disk that was full or
    /// read-only for a moment must not stop the store until a restart.
    conn: Mutex<Option<Connection>>,
}

fn err(what: &str, path: &Path, e: impl std::fmt::Display) -> StoreError {
    StoreError(format!("{what} {}: {e}{}", path.display(), os_cause(path)))
}

/// What the file system says about writing `path`, when it refuses: SQLite's own words ("disk
/// I/O error", "unable to open database file") do not tell a read-only disk from a missing one.
fn os_cause(path: &Path) -> String {
    let dir_writable = || {
        let dir = path.parent().unwrap_or(Path::new("."));
        let probe = dir.join(format!(".store-probe-{}", std::process::id()));
        let r = std::fs::OpenOptions::new().write(true).create_new(true).open(&probe).map(drop);
        let _ = std::fs::remove_file(&probe);
        r
    };
    let probe = match std::fs::OpenOptions::new().append(true).open(path) {
        Ok(_) => dir_writable(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => dir_writable(),
        Err(e) => Err(e),
    };
    probe.err().map_or_else(String::new, |e| format!(" ({e})"))
}

fn open_rw(path: &Path) -> Result<Connection, StoreError> {
    // A file that is there but empty was emptied, not created: taking it for a new store would
    // forget everyone answered, and answer them again.
    let existed = match path.metadata() {
        Ok(m) if m.len() == 0 => {
            return Err(StoreError(format!(
                "{} is empty: it was damaged; restore it, or move it away to start afresh",
                path.display()
            )));
        }
        Ok(_) => true,
        Err(_) => false,
    };
    let conn = Connection::open(path).map_err(|e| err("cannot open the store", path, e))?;
    let setup = || -> rusqlite::Result<Option<String>> {
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        if !existed {
            // Created whole or not at all, and in the main file at once: a store whose tables
            // were only in the log would look foreign after a disk failure.
            conn.pragma_update(None, "synchronous", "FULL")?;
            conn.execute_batch(&format!(
                "BEGIN; {SCHEMA} INSERT INTO meta (name, value) VALUES ('schema', '{SCHEMA_VERSION}'); COMMIT;"
            ))?;
            conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
            return Ok(Some(SCHEMA_VERSION.to_string()));
        }
        // A damaged file is found now, not at the first reply.
        let check: String = conn.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
        if check != "ok" {
            return Err(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
                Some(format!("damaged: {check}")),
            ));
        }
        conn.query_row("SELECT value FROM meta WHERE name = 'schema'", [], |r| r.get(0)).optional()
    };
    let version = setup().map_err(|e| err("cannot open the store", path, e))?;
    match version.as_deref() {
        Some(SCHEMA_VERSION) => Ok(conn),
        Some(v) => Err(StoreError(format!(
            "{} has schema version {v}, this daemon knows {SCHEMA_VERSION}: use the daemon that wrote it, or move the file away",
            path.display()
        ))),
        None => Err(StoreError(format!(
            "{} is not a store of this daemon (no schema version): restore it, or move it away to start afresh",
            path.display()
        ))),
    }
}

impl Embedded {
    /// Opens the store of `dir`, creating it on first start (`store::open_embedded` also
    /// carries over the stores of earlier versions).
    pub fn open(dir: &Path) -> Result<Embedded, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| err("cannot create the state directory", dir, e))?;
        let path = dir.join(STORE_FILE);
        let conn = open_rw(&path)?;
        Ok(Embedded { path, conn: Mutex::new(Some(conn)) })
    }

    /// The store of `dir`, opened at its first use (and again after each failure): for the
    /// statistics writer when the store could not be opened at start, so that the counts kept
    /// meanwhile are written once the file is usable again.
    pub fn lazy(dir: &Path) -> Embedded {
        Embedded { path: dir.join(STORE_FILE), conn: Mutex::new(None) }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` in one transaction on the daemon's connection, opening it again if a previous
    /// write failed. On error nothing is written and the connection is closed.
    pub fn write<T>(
        &self,
        what: &str,
        durable: bool,
        f: impl FnOnce(&Transaction<'_>) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let mut guard = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_none() {
            *guard = Some(open_rw(&self.path)?);
        }
        let Some(conn) = guard.as_mut() else { return Err(StoreError(format!("{what}: not open"))) };
        let run = |conn: &mut Connection| -> rusqlite::Result<T> {
            conn.pragma_update(None, "synchronous", if durable { "FULL" } else { "NORMAL" })?;
            let tx = conn.transaction()?;
            let out = f(&tx)?;
            tx.commit()?;
            Ok(out)
        };
        run(conn).map_err(|e| {
            *guard = None;
            err(what, &self.path, e)
        })
    }

    /// Whether the store remembers any answered sender (a missing secret is then an error).
    pub fn has_answered(&self) -> Result<bool, StoreError> {
        self.write("cannot read the store", false, |tx| {
            tx.query_row("SELECT EXISTS (SELECT 1 FROM answered)", [], |r| r.get(0))
        })
    }

    /// What the reply state starts from at `now`: the senders answered and the topic replies
    /// sent that have not expired, and the replies of the last hour (the caps).
    pub fn load(&self, now: u64) -> Result<Loaded, StoreError> {
        self.write("cannot read the store", false, |tx| load(tx, now))
    }

    /// Records a reply before it is written to the outbox: its sender, its topics, its place
    /// in the caps. Durable.
    pub fn record(&self, r: &Reservation) -> Result<(), StoreError> {
        self.write("cannot write the state store", true, |tx| record(tx, r))
    }

    /// Forgets a reply that was not queued after all.
    pub fn release(&self, r: &Reservation) -> Result<(), StoreError> {
        self.write("cannot undo the record in the state store", true, |tx| release(tx, r))
    }

    /// Drops expired entries and the given senders (past `max_entries`).
    pub fn purge(&self, now: u64, dropped: &[Key]) -> Result<(), StoreError> {
        self.write("cannot purge the state store", false, |tx| purge(tx, now, dropped))
    }

    /// Adds one batch of counts, reduces the weeks that are over and purges what is past the
    /// retention, in one transaction.
    pub fn add_counts(&self, batch: &Batch, now: u64, first_day_kept: u32) -> Result<Recorded, StoreError> {
        self.write("cannot write the statistics", false, |tx| add(tx, batch, now, first_day_kept))
    }
}

/// A read-only view of the store for `stats`, safe while the daemon writes. A store that does
/// not exist yet holds nothing.
pub fn read_counts(dir: &Path) -> Result<CountsData, StoreError> {
    let path = dir.join(STORE_FILE);
    if !path.exists() {
        return Ok(CountsData::default());
    }
    let conn = Connection::open_with_flags(
        &path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| err("cannot read the statistics", &path, e))?;
    let read = || -> rusqlite::Result<CountsData> {
        conn.busy_timeout(Duration::from_secs(10))?;
        // One snapshot for every table.
        conn.execute_batch("BEGIN")?;
        // A daemon starting for the first time has created the file but not yet its tables.
        let tables: i64 = conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))?;
        if tables == 0 {
            conn.execute_batch("COMMIT")?;
            return Ok(CountsData::default());
        }
        let data = read(&conn)?;
        conn.execute_batch("COMMIT")?;
        Ok(data)
    };
    read().map_err(|e| err("cannot read the statistics", &path, e))
}

/// The rows of one table, for tests that look at what is stored.
pub fn dump(dir: &Path, table: &str) -> Result<Vec<Vec<String>>, StoreError> {
    let path = dir.join(STORE_FILE);
    let conn = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| err("cannot read", &path, e))?;
    let run = || -> rusqlite::Result<Vec<Vec<String>>> {
        let mut stmt = conn.prepare(&format!("SELECT * FROM {table}"))?;
        let n = stmt.column_count();
        let rows = stmt.query_map([], |r| {
            (0..n)
                .map(|i| {
                    Ok(match r.get_ref(i)? {
                        rusqlite::types::ValueRef::Null => "NULL".to_string(),
                        rusqlite::types::ValueRef::Integer(v) => v.to_string(),
                        rusqlite::types::ValueRef::Real(v) => v.to_string(),
                        rusqlite::types::ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
                        rusqlite::types::ValueRef::Blob(b) => b.iter().map(|x| format!("{x:02x}")).collect(),
                    })
                })
                .collect::<rusqlite::Result<Vec<String>>>()
        })?;
        rows.collect()
    };
    run().map_err(|e| err("cannot read", &path, e))
}

const SCHEMA_VERSION: &str = "1";

/// Every table, created on first start. Keys are keyed hashes (HMAC-SHA256 under the secret, or
/// under a week's own key for `writers`); no address, Subject or Message-ID is ever stored.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS answered (sender BLOB PRIMARY KEY, expiry INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS replies_sent (at INTEGER NOT NULL, domain BLOB NOT NULL, sender BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS replies_sent_at ON replies_sent (at);
CREATE TABLE IF NOT EXISTS topic_replies (sender BLOB NOT NULL, topic TEXT NOT NULL,
    expiry INTEGER NOT NULL, PRIMARY KEY (sender, topic));
CREATE TABLE IF NOT EXISTS messages (day INTEGER NOT NULL, class TEXT NOT NULL, topics TEXT NOT NULL,
    encrypted INTEGER NOT NULL, decision TEXT NOT NULL, count INTEGER NOT NULL,
    PRIMARY KEY (day, class, topics, encrypted, decision)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS week_keys (week TEXT PRIMARY KEY, key BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS writers (week TEXT NOT NULL, kind TEXT NOT NULL, name TEXT NOT NULL,
    writer BLOB NOT NULL, PRIMARY KEY (week, kind, name, writer)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS people (week TEXT NOT NULL, kind TEXT NOT NULL, name TEXT NOT NULL,
    count INTEGER NOT NULL, PRIMARY KEY (week, kind, name)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS reports (id TEXT PRIMARY KEY, day INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS report_topics (id TEXT NOT NULL, topic TEXT NOT NULL, day INTEGER NOT NULL,
    PRIMARY KEY (id, topic));
";

const HOUR: u64 = 3600;

fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn key_of(bytes: &[u8]) -> Option<Key> {
    <Key>::try_from(bytes).ok()
}

fn load(tx: &Transaction<'_>, now: u64) -> rusqlite::Result<Loaded> {
    let now = i64_of(now);
    let mut answered = Vec::new();
    let mut stmt = tx.prepare("SELECT sender, expiry FROM answered WHERE expiry > ?1")?;
    for row in stmt.query_map([now], |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, i64>(1)?)))? {
        let (k, e) = row?;
        answered.extend(key_of(&k).map(|k| (k, u64::try_from(e).unwrap_or(0))));
    }
    let mut sent = Vec::new();
    let mut stmt = tx.prepare("SELECT at, domain FROM replies_sent WHERE at > ?1 ORDER BY at")?;
    for row in stmt.query_map([now - i64_of(HOUR)], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)))? {
        let (at, d) = row?;
        sent.extend(key_of(&d).map(|d| (u64::try_from(at).unwrap_or(0), d)));
    }
    let mut topics = Vec::new();
    let mut stmt = tx.prepare("SELECT sender, topic, expiry FROM topic_replies WHERE expiry > ?1")?;
    for row in
        stmt.query_map([now], |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?)))?
    {
        let (k, t, e) = row?;
        topics.extend(key_of(&k).map(|k| (k, t, u64::try_from(e).unwrap_or(0))));
    }
    Ok(Loaded { answered, sent, topics })
}

fn record(tx: &Transaction<'_>, r: &Reservation) -> rusqlite::Result<()> {
    if r.first {
        tx.execute(
            "INSERT INTO answered (sender, expiry) VALUES (?1, ?2)
             ON CONFLICT (sender) DO UPDATE SET expiry = max(expiry, excluded.expiry)",
            params![&r.key[..], i64_of(r.expiry)],
        )?;
    }
    tx.execute(
        "INSERT INTO replies_sent (at, domain, sender) VALUES (?1, ?2, ?3)",
        params![i64_of(r.at), &r.domain[..], &r.key[..]],
    )?;
    for topic in &r.topics {
        tx.execute(
            "INSERT INTO topic_replies (sender, topic, expiry) VALUES (?1, ?2, ?3)
             ON CONFLICT (sender, topic) DO UPDATE SET expiry = max(expiry, excluded.expiry)",
            params![&r.key[..], topic, i64_of(r.expiry)],
        )?;
    }
    Ok(())
}

fn release(tx: &Transaction<'_>, r: &Reservation) -> rusqlite::Result<()> {
    if r.first {
        tx.execute(
            "DELETE FROM answered WHERE sender = ?1 AND expiry = ?2",
            params![&r.key[..], i64_of(r.expiry)],
        )?;
    }
    tx.execute(
        "DELETE FROM replies_sent WHERE at = ?1 AND domain = ?2 AND sender = ?3",
        params![i64_of(r.at), &r.domain[..], &r.key[..]],
    )?;
    for topic in &r.topics {
        tx.execute(
            "DELETE FROM topic_replies WHERE sender = ?1 AND topic = ?2 AND expiry = ?3",
            params![&r.key[..], topic, i64_of(r.expiry)],
        )?;
    }
    Ok(())
}

fn purge(tx: &Transaction<'_>, now: u64, dropped: &[Key]) -> rusqlite::Result<()> {
    let now = i64_of(now);
    tx.execute("DELETE FROM answered WHERE expiry <= ?1", [now])?;
    tx.execute("DELETE FROM topic_replies WHERE expiry <= ?1", [now])?;
    tx.execute("DELETE FROM replies_sent WHERE at <= ?1", [now - i64_of(HOUR)])?;
    for k in dropped {
        tx.execute("DELETE FROM answered WHERE sender = ?1", [&k[..]])?;
        tx.execute("DELETE FROM topic_replies WHERE sender = ?1", [&k[..]])?;
    }
    Ok(())
}

/// The week's own random key, created at its first writer.
fn week_key(
    tx: &Transaction<'_>,
    keys: &mut HashMap<String, Vec<u8>>,
    week: &str,
) -> rusqlite::Result<Vec<u8>> {
    if let Some(k) = keys.get(week) {
        return Ok(k.clone());
    }
    let found: Option<Vec<u8>> =
        tx.query_row("SELECT key FROM week_keys WHERE week = ?1", [week], |r| r.get(0)).optional()?;
    let key = match found {
        Some(k) => k,
        None => {
            let mut k = vec![0u8; 32];
            getrandom::fill(&mut k)
                .map_err(|e| rusqlite::Error::ToSqlConversionFailure(format!("no randomness: {e}").into()))?;
            tx.execute("INSERT INTO week_keys (week, key) VALUES (?1, ?2)", params![week, &k])?;
            k
        }
    };
    keys.insert(week.to_string(), key.clone());
    Ok(key)
}

fn add(tx: &Transaction<'_>, batch: &Batch, now: u64, first_day_kept: u32) -> rusqlite::Result<Recorded> {
    for (row, n) in &batch.messages {
        tx.execute(
            "INSERT INTO messages (day, class, topics, encrypted, decision, count) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (day, class, topics, encrypted, decision) DO UPDATE SET count = count + excluded.count",
            params![row.day, row.class, row.topics.join(","), row.encrypted, row.decision, i64_of(*n)],
        )?;
    }
    let mut keys = HashMap::new();
    for (week, kind, name, writer) in &batch.writers {
        let key = week_key(tx, &mut keys, week)?;
        let hash = keyed(&key, writer.hashed_form().as_bytes());
        tx.execute(
            "INSERT OR IGNORE INTO writers (week, kind, name, writer) VALUES (?1, ?2, ?3, ?4)",
            params![week, kind, name, &hash[..]],
        )?;
    }
    for (id, day) in &batch.reports {
        tx.execute("INSERT OR IGNORE INTO reports (id, day) VALUES (?1, ?2)", params![id, day])?;
    }
    for ((id, topic), day) in &batch.tags {
        tx.execute(
            "INSERT OR IGNORE INTO report_topics (id, topic, day) VALUES (?1, ?2, ?3)",
            params![id, topic, day],
        )?;
    }
    let reduced = reduce(tx, now)?;
    let purged = purge_counts(tx, first_day_kept)?;
    Ok(Recorded { purged, reduced })
}

/// Whether the week `label` is over, its grace included, at `now`.
pub(super) fn week_is_over(label: &str, now: u64) -> bool {
    Week::parse(label).is_ok_and(|w| {
        let end = u64::from(crate::calendar::day_of_date(w.plus(1).monday())) * 86400;
        end + WEEK_GRACE_SECS <= now
    })
}

/// Turns the writers of every week that is over into counts, and deletes them and the week's
/// key: nothing then links a person to that week, or one week to another.
fn reduce(tx: &Transaction<'_>, now: u64) -> rusqlite::Result<usize> {
    let mut stmt = tx.prepare("SELECT week FROM week_keys UNION SELECT DISTINCT week FROM writers")?;
    let weeks: Vec<String> = stmt.query_map([], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?;
    let over: Vec<String> = weeks.into_iter().filter(|w| week_is_over(w, now)).collect();
    for week in &over {
        tx.execute(
            "INSERT INTO people (week, kind, name, count)
             SELECT week, kind, name, COUNT(*) FROM writers WHERE week = ?1 GROUP BY week, kind, name
             ON CONFLICT (week, kind, name) DO UPDATE SET count = count + excluded.count",
            [week],
        )?;
        tx.execute("DELETE FROM writers WHERE week = ?1", [week])?;
        tx.execute("DELETE FROM week_keys WHERE week = ?1", [week])?;
    }
    Ok(over.len())
}

/// Removes the counts older than the retention.
fn purge_counts(tx: &Transaction<'_>, first_day_kept: u32) -> rusqlite::Result<usize> {
    let mut purged = tx.execute("DELETE FROM messages WHERE day < ?1", [first_day_kept])?;
    purged += tx.execute("DELETE FROM reports WHERE day < ?1", [first_day_kept])?;
    purged += tx.execute("DELETE FROM report_topics WHERE day < ?1", [first_day_kept])?;
    let mut stmt = tx.prepare("SELECT DISTINCT week FROM people")?;
    let weeks: Vec<String> = stmt.query_map([], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?;
    for week in weeks {
        if week_ends_before(&week, first_day_kept) {
            purged += tx.execute("DELETE FROM people WHERE week = ?1", [&week])?;
        }
    }
    Ok(purged)
}

/// Whether the week `label` ended by the day `first_day_kept`: its people counts are past the
/// retention.
pub(super) fn week_ends_before(label: &str, first_day_kept: u32) -> bool {
    Week::parse(label).is_ok_and(|w| crate::calendar::day_of_date(w.plus(1).monday()) <= first_day_kept)
}

fn read(conn: &Connection) -> rusqlite::Result<CountsData> {
    let mut data = CountsData::default();
    let mut stmt = conn.prepare("SELECT day, class, topics, encrypted, decision, count FROM messages")?;
    for row in stmt.query_map([], |r| {
        let topics: String = r.get(2)?;
        let row = Row {
            day: r.get(0)?,
            class: r.get(1)?,
            topics: topics.split(',').filter(|t| !t.is_empty()).map(str::to_string).collect(),
            encrypted: r.get(3)?,
            decision: r.get(4)?,
        };
        Ok((row, u64::try_from(r.get::<_, i64>(5)?).unwrap_or(0)))
    })? {
        data.messages.push(row?);
    }
    let mut stmt = conn.prepare(
        "SELECT week, kind, name, count FROM people
         UNION ALL SELECT week, kind, name, COUNT(*) FROM writers GROUP BY week, kind, name",
    )?;
    for row in stmt.query_map([], |r| {
        Ok(PeopleRow {
            week: r.get(0)?,
            kind: r.get(1)?,
            name: r.get(2)?,
            count: u64::try_from(r.get::<_, i64>(3)?).unwrap_or(0),
        })
    })? {
        data.people.push(row?);
    }
    let mut stmt = conn.prepare("SELECT id, day FROM reports")?;
    for row in stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))? {
        data.reports.push(row?);
    }
    let mut stmt = conn.prepare(
        "SELECT t.id, t.topic, COALESCE(r.day, t.day) FROM report_topics t LEFT JOIN reports r ON r.id = t.id",
    )?;
    for row in stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))? {
        data.tags.push(row?);
    }
    Ok(data)
}

//! The statistics store: how many messages of each kind arrived on each day, and nothing that
//! identifies whoever wrote them.
//!
//! A row is (day received, class, topics, encryption, auto-reply decision) with a count; there is
//! no address, Subject, Message-ID or report ID to store. The milter hands each triaged message to
//! a background task ([`record`]) over a channel; the task adds the counts up in memory and writes
//! them in one transaction, so the milter's path never touches the disk.
//!
//! The rows live in their own redb file, `stats.redb`, which the daemon opens only while it writes
//! (a few milliseconds). `helpdesk-milter stats` can then open it read-only while the daemon runs;
//! redb allows one process at a time to write, so whichever comes second waits and tries again.
//! The answered-senders store (`state.redb`) stays locked by the daemon and is never read here.

use redb::{Database, ReadOnlyDatabase, ReadableDatabase, ReadableTable, TableDefinition};
use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

/// (day received, in days since 1970-01-01 UTC; class; topic ids joined by ','; "yes"/"no"
/// encrypted; the X-HelpDesk-Autoreply value) to the number of messages.
const MESSAGES: TableDefinition<(u32, &str, &str, &str, &str), u64> =
    TableDefinition::new("messages_per_day");
pub const STATS_FILE: &str = "stats.redb";
const DAY: u64 = 86400;
/// A small cache: the file is opened for one transaction at a time.
const CACHE_BYTES: usize = 4 << 20;

/// One triaged message, as counted.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Row {
    /// Days since 1970-01-01, UTC, of the moment the daemon received the message.
    pub day: u32,
    pub class: String,
    /// Topic ids of the reply file, sorted.
    pub topics: Vec<String>,
    pub encrypted: bool,
    /// `queued`, `suppressed (REASON)`, or empty when no decision was taken.
    pub decision: String,
}

impl Row {
    /// The row for a message received at `unix_time` (seconds).
    pub fn new(unix_time: u64, class: &str, topics: &[String], encrypted: bool, decision: &str) -> Row {
        let mut topics = topics.to_vec();
        topics.sort();
        topics.dedup();
        Row {
            day: u32::try_from(unix_time / DAY).unwrap_or(u32::MAX),
            class: class.to_string(),
            topics,
            encrypted,
            decision: decision.to_string(),
        }
    }
}

#[derive(Debug)]
pub struct CountError(pub String);

impl std::fmt::Display for CountError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CountError {}

/// Whether the failure is only the other process holding the file (try again shortly).
fn is_busy(e: &redb::DatabaseError) -> bool {
    matches!(e, redb::DatabaseError::DatabaseAlreadyOpen)
}

/// The statistics file in a state directory.
#[derive(Debug, Clone)]
pub struct CountStore {
    path: PathBuf,
}

impl CountStore {
    pub fn new(state_dir: &Path) -> CountStore {
        CountStore { path: state_dir.join(STATS_FILE) }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Adds `counts` to the store and removes the days before `first_day_kept`, in one
    /// transaction; the file is closed again before this returns. On error nothing is written.
    pub fn add(&self, counts: &HashMap<Row, u64>, first_day_kept: u32) -> Result<Added, CountError> {
        let fail = |what: &str, e: &dyn std::fmt::Display| {
            CountError(format!("{what} {}: {e}", self.path.display()))
        };
        let db = match redb::Builder::new().set_cache_size(CACHE_BYTES).create(&self.path) {
            Ok(db) => db,
            Err(e) if is_busy(&e) => return Err(CountError(BUSY.into())),
            Err(e) => return Err(fail("cannot open the statistics", &e)),
        };
        let write = |db: &Database| -> Result<usize, redb::Error> {
            let tx = db.begin_write()?;
            let mut purged = 0;
            {
                let mut table = tx.open_table(MESSAGES)?;
                for (row, n) in counts {
                    let topics = row.topics.join(",");
                    let key = (
                        row.day,
                        row.class.as_str(),
                        topics.as_str(),
                        yes_no(row.encrypted),
                        row.decision.as_str(),
                    );
                    let old = table.get(key)?.map_or(0, |v| v.value());
                    table.insert(key, old.saturating_add(*n))?;
                }
                // Rows are ordered by day: look at the oldest before scanning them all.
                if table.first()?.is_some_and(|(k, _)| k.value().0 < first_day_kept) {
                    table.retain(|(day, ..), _| {
                        let keep = day >= first_day_kept;
                        purged += usize::from(!keep);
                        keep
                    })?;
                }
            }
            tx.commit()?;
            Ok(purged)
        };
        let purged = write(&db).map_err(|e| fail("cannot write the statistics", &e))?;
        Ok(Added { purged })
    }

    /// Every row, read from a read-only open that works while the daemon runs: if the daemon is
    /// writing at that moment, waits up to `patience` for it to finish. A store that does not
    /// exist yet holds no rows.
    pub fn read(&self, patience: Duration) -> Result<Vec<(Row, u64)>, CountError> {
        if !self.path.exists() {
            return Ok(Vec::new());
        }
        let t0 = Instant::now();
        let db = loop {
            match ReadOnlyDatabase::open(&self.path) {
                Ok(db) => break db,
                Err(e) if is_busy(&e) && t0.elapsed() < patience => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) if is_busy(&e) => return Err(CountError(format!("{} {BUSY}", self.path.display()))),
                Err(e) => {
                    return Err(CountError(format!(
                        "cannot read the statistics {}: {e}",
                        self.path.display()
                    )));
                }
            }
        };
        let read = || -> Result<Vec<(Row, u64)>, redb::Error> {
            let tx = db.begin_read()?;
            let table = match tx.open_table(MESSAGES) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
                Err(e) => return Err(e.into()),
            };
            let mut rows = Vec::new();
            for entry in table.iter()? {
                let (k, v) = entry?;
                let (day, class, topics, encrypted, decision) = k.value();
                let topics = topics.split(',').filter(|t| !t.is_empty()).map(str::to_string).collect();
                let row = Row {
                    day,
                    class: class.to_string(),
                    topics,
                    encrypted: encrypted == "yes",
                    decision: decision.to_string(),
                };
                rows.push((row, v.value()));
            }
            Ok(rows)
        };
        read().map_err(|e| CountError(format!("cannot read the statistics {}: {e}", self.path.display())))
    }
}

const BUSY: &str = "is in use by another process (the daemon writing, or a long `stats`)";

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

/// What one write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Added {
    /// Rows removed because they were older than the retention.
    pub purged: usize,
}

/// The first day to keep at `unix_time` under `retention`.
pub fn first_day_kept(unix_time: u64, retention: Duration) -> u32 {
    u32::try_from(unix_time.saturating_sub(retention.as_secs()) / DAY).unwrap_or(u32::MAX)
}

/// The rows to count, and the stop request: once it comes, the channel is closed, so that what
/// was already sent is still received and then nothing more.
struct Incoming<'a, F: Future<Output = ()>> {
    rows: mpsc::UnboundedReceiver<Row>,
    stop: std::pin::Pin<&'a mut F>,
    stopped: bool,
}

impl<F: Future<Output = ()>> Incoming<'_, F> {
    async fn recv(&mut self) -> Option<Row> {
        if !self.stopped {
            tokio::select! {
                biased;
                r = self.rows.recv() => return r,
                () = &mut self.stop => {
                    self.stopped = true;
                    self.rows.close();
                }
            }
        }
        self.rows.recv().await
    }
}

/// Counts the rows sent on `rows` and writes them to `store`, batched: whatever arrived while a
/// write was running goes into the next one. A write that fails (the disk, or `stats` holding
/// the file) keeps the counts in memory and tries again, waiting longer each time, up to a
/// minute. Runs until `stop` completes or the channel closes, then writes what is left.
pub async fn record(
    rows: mpsc::UnboundedReceiver<Row>,
    store: CountStore,
    retention: Duration,
    stop: impl Future<Output = ()>,
) {
    let mut rows = Incoming { rows, stop: std::pin::pin!(stop), stopped: false };
    let mut pending: HashMap<Row, u64> = HashMap::new();
    let mut backoff = Duration::ZERO;
    let mut failing = false;
    let mut open = true;
    while open || !pending.is_empty() {
        if pending.is_empty() {
            // Quiet for a day: write nothing, but still purge the days past the retention.
            match tokio::time::timeout(Duration::from_secs(DAY), rows.recv()).await {
                Ok(Some(r)) => *pending.entry(r).or_default() += 1,
                Ok(None) => break,
                Err(_) => {}
            }
        } else if !backoff.is_zero() {
            // Waiting to try again; keep counting meanwhile.
            let retry = tokio::time::sleep(backoff);
            tokio::pin!(retry);
            while open {
                tokio::select! {
                    r = rows.recv() => match r {
                        Some(r) => *pending.entry(r).or_default() += 1,
                        None => open = false,
                    },
                    _ = &mut retry => break,
                }
            }
        }
        while let Ok(r) = rows.rows.try_recv() {
            *pending.entry(r).or_default() += 1;
        }
        let (s, batch) = (store.clone(), std::mem::take(&mut pending));
        let now = crate::clock::unix_now();
        let done = tokio::task::spawn_blocking(move || {
            let result = s.add(&batch, first_day_kept(now, retention));
            (result, batch)
        })
        .await;
        match done {
            Ok((Ok(added), batch)) => {
                let n: u64 = batch.values().sum();
                debug!(messages = n, purged = added.purged, "statistics written");
                if failing {
                    info!("statistics written again to {}", store.path().display());
                    failing = false;
                }
                backoff = Duration::ZERO;
            }
            Ok((Err(e), batch)) => {
                for (row, n) in batch {
                    *pending.entry(row).or_default() += n;
                }
                if !failing {
                    // Once per outage, not per retry; the counts are kept meanwhile.
                    warn!("statistics not written, kept in memory and retried: {e}");
                    failing = true;
                }
                backoff = (backoff * 2).clamp(Duration::from_millis(200), Duration::from_secs(60));
                if !open {
                    // Stopping: a few quick tries for a reader to let go, then give up.
                    if backoff > Duration::from_secs(2) {
                        error!(
                            "statistics of {} messages lost at shutdown: {e}",
                            pending.values().sum::<u64>()
                        );
                        break;
                    }
                    tokio::time::sleep(backoff).await;
                }
            }
            Err(e) => error!("statistics writer failed: {e}"),
        }
    }
    debug!("statistics writer stopped");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(day: u32, class: &str, topics: &[&str]) -> Row {
        let topics: Vec<String> = topics.iter().map(|t| t.to_string()).collect();
        Row::new(u64::from(day) * DAY + 3600, class, &topics, false, "queued")
    }

    #[test]
    fn counts_add_up_across_writes_and_old_days_are_purged() {
        let dir = tempfile::tempdir().unwrap();
        let store = CountStore::new(dir.path());
        assert!(store.read(Duration::ZERO).unwrap().is_empty(), "no file yet: no rows");
        let mut batch = HashMap::new();
        batch.insert(row(100, "support", &["wifi", "bridges"]), 2);
        batch.insert(row(90, "whisperback", &[]), 1);
        store.add(&batch, 0).unwrap();
        store.add(&batch, 0).unwrap();
        let mut rows = store.read(Duration::ZERO).unwrap();
        rows.sort();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0], (row(90, "whisperback", &[]), 2));
        assert_eq!(rows[1].0.topics, vec!["bridges".to_string(), "wifi".to_string()], "sorted");
        assert_eq!(rows[1].1, 4);
        let added = store.add(&HashMap::new(), 95).unwrap();
        assert_eq!(added.purged, 1);
        assert_eq!(store.read(Duration::ZERO).unwrap().len(), 1);
    }

    #[test]
    fn a_reader_and_the_writer_take_turns() {
        let dir = tempfile::tempdir().unwrap();
        let store = CountStore::new(dir.path());
        let batch = HashMap::from([(row(1, "support", &[]), 1)]);
        store.add(&batch, 0).unwrap();
        let reader = ReadOnlyDatabase::open(store.path()).unwrap();
        let e = store.add(&batch, 0).unwrap_err();
        assert!(e.0.contains("in use"), "{e}");
        drop(reader);
        store.add(&batch, 0).unwrap();
        assert_eq!(store.read(Duration::ZERO).unwrap()[0].1, 2);
    }

    #[test]
    fn the_retention_is_counted_in_whole_days() {
        assert_eq!(first_day_kept(10 * DAY + 5, Duration::from_secs(3 * DAY)), 7);
        assert_eq!(first_day_kept(5, Duration::from_secs(3 * DAY)), 0);
    }

    #[tokio::test]
    async fn the_recorder_writes_every_row_it_receives_and_waits_out_a_reader() {
        let dir = tempfile::tempdir().unwrap();
        let store = CountStore::new(dir.path());
        store.add(&HashMap::new(), 0).unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        let reader = ReadOnlyDatabase::open(store.path()).unwrap();
        let task =
            tokio::spawn(record(rx, store.clone(), Duration::from_secs(400 * DAY), std::future::pending()));
        let now = crate::clock::unix_now();
        for _ in 0..5 {
            tx.send(Row::new(now, "support", &[], false, "queued")).unwrap();
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(reader);
        drop(tx);
        task.await.unwrap();
        let rows = store.read(Duration::ZERO).unwrap();
        assert_eq!(rows.iter().map(|(_, n)| n).sum::<u64>(), 5);
    }
}

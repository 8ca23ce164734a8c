//! Counting what arrives: the milter hands each triaged message to [`record`] over a channel,
//! and [`record`] writes the counts to the store in batches, at most a second after the first
//! message of a batch, off the milter's path.
//!
//! A row is (day received, class, topics, encryption, auto-reply decision) with a count. The
//! writer of a message is counted too, as one person per ISO week: its canonical sender (or, for
//! a WhisperBack report, its report ID) travels in memory to the writer task, which stores only
//! its keyed hash under the week's own random key (`store::sqlite`); once the week is over, those
//! hashes become counts and the key is deleted. WhisperBack report IDs and the day of each are
//! kept for the retention: they are random, name no one, and the GitLab issues cite them.

use crate::calendar::Week;
pub use crate::store::Row;
use crate::store::{Batch, CountStore, Writer};
use std::future::Future;
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

const DAY: u64 = 86400;
/// A message waits at most this long before its counts are written.
pub const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// At most this many distinct rows of counts wait in memory while the store cannot be written;
/// past that, new ones are dropped (and said so), not the mail.
const MAX_PENDING_ROWS: usize = 100_000;

/// What the milter hands over for one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counted {
    /// The day it was received.
    pub day: u32,
    /// The message's own row; None for a message that only tags reports (a Help Desk member's,
    /// not a report).
    pub row: Option<Row>,
    /// Who wrote it (None: nobody to count, such as a bounce with the null sender).
    pub writer: Option<Writer>,
    /// The ID of a WhisperBack report, recorded with its day.
    pub report: Option<String>,
    /// (report ID, topic) tags given by a trusted member.
    pub tags: Vec<(String, String)>,
}

impl Counted {
    /// A message counted as itself.
    pub fn message(row: Row, writer: Option<Writer>, report: Option<String>) -> Counted {
        Counted { day: row.day, row: Some(row), writer, report, tags: Vec::new() }
    }

    /// Adds this message to `batch`: its row, its writer in the week (at all, in its class, and
    /// about each topic), its report, its tags.
    fn add_to(self, batch: &mut Batch) {
        if let (Some(w), Some(row)) = (&self.writer, &self.row) {
            let week = Week::of_day(self.day).label();
            let mut add = |kind: &str, name: &str| {
                batch.writers.insert((week.clone(), kind.to_string(), name.to_string(), w.clone()));
            };
            add("all", "");
            add("class", &row.class);
            for t in &row.topics {
                add("topic", t);
            }
        }
        if let Some(id) = self.report {
            batch.reports.entry(id).or_insert(self.day);
        }
        for tag in self.tags {
            batch.tags.entry(tag).or_insert(self.day);
        }
        if let Some(row) = self.row {
            *batch.messages.entry(row).or_default() += 1;
        }
    }
}

/// The first day to keep at `unix_time` under `retention`.
pub fn first_day_kept(unix_time: u64, retention: Duration) -> u32 {
    u32::try_from(unix_time.saturating_sub(retention.as_secs()) / DAY).unwrap_or(u32::MAX)
}

/// The messages to count, and the stop request: once it comes, the channel is closed, so that
/// what was already sent is still received and then nothing more.
struct Incoming<'a, F: Future<Output = ()>> {
    rx: mpsc::UnboundedReceiver<Counted>,
    stop: std::pin::Pin<&'a mut F>,
    stopped: bool,
}

impl<F: Future<Output = ()>> Incoming<'_, F> {
    /// The next message, waiting at most `wait` (None: forever); None at the end.
    async fn next(&mut self, wait: Option<Duration>) -> Next {
        let recv = async {
            if !self.stopped {
                tokio::select! {
                    biased;
                    r = self.rx.recv() => return r,
                    () = &mut self.stop => {
                        self.stopped = true;
                        self.rx.close();
                    }
                }
            }
            self.rx.recv().await
        };
        match wait {
            None => recv.await.map_or(Next::End, Next::Message),
            Some(w) => match tokio::time::timeout(w, recv).await {
                Ok(r) => r.map_or(Next::End, Next::Message),
                Err(_) => Next::Timeout,
            },
        }
    }
}

enum Next {
    Message(Counted),
    Timeout,
    End,
}

/// Counts what arrives on `rx` and writes it to `store`: every message within [`FLUSH_EVERY`],
/// in one transaction per batch. A write that fails (the disk) keeps the batch in memory and is
/// tried again, waiting longer each time up to a minute. Runs until `stop` completes or the
/// channel closes, then writes what is left.
pub async fn record(
    rx: mpsc::UnboundedReceiver<Counted>,
    store: CountStore,
    retention: Duration,
    stop: impl Future<Output = ()>,
) {
    let mut incoming = Incoming { rx, stop: std::pin::pin!(stop), stopped: false };
    let mut pending = Batch::default();
    let mut backoff = Duration::ZERO;
    let mut failing = false;
    let mut open = true;
    while open || !pending.is_empty() {
        if pending.is_empty() {
            // Quiet: wait for the next message; once a day, write nothing but still purge what
            // is past the retention and reduce the weeks that are over.
            match incoming.next(Some(Duration::from_secs(DAY))).await {
                Next::Message(m) => m.add_to(&mut pending),
                Next::Timeout => {}
                Next::End => break,
            }
        }
        // Gather what else comes within the second (or the back-off after a failure).
        let deadline = tokio::time::Instant::now() + backoff.max(FLUSH_EVERY);
        while open && !pending.is_empty() {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                break;
            }
            match incoming.next(Some(left)).await {
                Next::Message(m) => m.add_to(&mut pending),
                Next::Timeout => break,
                Next::End => open = false,
            }
        }
        let batch = std::mem::take(&mut pending);
        match write(&store, batch, retention).await {
            Ok(()) => {
                if failing {
                    info!("statistics written again to {}", store.describe());
                    failing = false;
                }
                backoff = Duration::ZERO;
            }
            Err((e, batch)) => {
                keep(&mut pending, batch);
                if !failing {
                    // Once per outage, not per retry; the counts are kept meanwhile.
                    warn!("statistics not written, kept in memory and retried: {e}");
                    failing = true;
                }
                backoff = (backoff * 2).clamp(Duration::from_millis(200), Duration::from_secs(60));
                if !open {
                    // Stopping: a few quick tries for the disk to come back, then give up.
                    if backoff > Duration::from_secs(2) {
                        error!("statistics of {} messages lost at shutdown: {e}", pending.message_count());
                        break;
                    }
                    tokio::time::sleep(backoff).await;
                }
            }
        }
    }
    debug!("statistics writer stopped");
}

/// Puts a batch that could not be written back in front of what came since, within the bound.
fn keep(pending: &mut Batch, mut failed: Batch) {
    if failed.messages.len() + pending.messages.len() > MAX_PENDING_ROWS {
        warn!(
            "statistics kept in memory reached {MAX_PENDING_ROWS} rows: the newest are dropped until the store can be written"
        );
        return;
    }
    failed.absorb(std::mem::take(pending));
    *pending = failed;
}

async fn write(store: &CountStore, batch: Batch, retention: Duration) -> Result<(), (String, Batch)> {
    let now = crate::clock::unix_now();
    let messages = batch.message_count();
    match store.add(batch, now, first_day_kept(now, retention)).await {
        Ok(r) => {
            debug!(messages, purged = r.purged, reduced = r.reduced, "statistics written");
            Ok(())
        }
        Err((e, batch)) => Err((e.to_string(), batch)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite;

    fn counted(at: u64, class: &str, topics: &[&str], writer: Option<&str>) -> Counted {
        let topics: Vec<String> = topics.iter().map(|t| t.to_string()).collect();
        Counted::message(
            Row::new(at, class, &topics, false, "queued"),
            writer.map(|w| Writer::Sender(w.to_string())),
            None,
        )
    }

    #[test]
    fn the_retention_is_counted_in_whole_days() {
        assert_eq!(first_day_kept(10 * DAY + 5, Duration::from_secs(3 * DAY)), 7);
        assert_eq!(first_day_kept(5, Duration::from_secs(3 * DAY)), 0);
    }

    #[test]
    fn a_store_without_its_tables_yet_reads_as_no_statistics() {
        // What `stats` finds while a first daemon start creates the file.
        let dir = tempfile::tempdir().unwrap();
        assert!(sqlite::read_counts(dir.path()).unwrap().messages.is_empty());
        std::fs::write(dir.path().join("store.sqlite"), b"").unwrap();
        assert!(sqlite::read_counts(dir.path()).unwrap().messages.is_empty());
    }

    #[tokio::test]
    async fn the_recorder_writes_every_message_within_a_second_and_all_at_the_stop() {
        let dir = tempfile::tempdir().unwrap();
        let store = CountStore::Embedded(std::sync::Arc::new(sqlite::Embedded::open(dir.path()).unwrap()));
        let (tx, rx) = mpsc::unbounded_channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(record(rx, store.clone(), Duration::from_secs(400 * DAY), async {
            let _ = stop_rx.await;
        }));
        let now = crate::clock::unix_now();
        for _ in 0..5 {
            tx.send(counted(now, "support", &["wifi"], Some("a@x.org"))).unwrap();
        }
        let t0 = std::time::Instant::now();
        while sqlite::read_counts(dir.path()).unwrap().messages.iter().map(|(_, n)| n).sum::<u64>() < 5 {
            assert!(t0.elapsed() < Duration::from_secs(10), "not written");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tx.send(counted(now, "support", &[], Some("b@x.org"))).unwrap();
        stop_tx.send(()).unwrap();
        task.await.unwrap();
        let data = sqlite::read_counts(dir.path()).unwrap();
        assert_eq!(data.messages.iter().map(|(_, n)| n).sum::<u64>(), 6, "the last one too, at the stop");
        // Two people this week, one of them about wifi; five messages from one count once.
        let people = |kind: &str, name: &str| {
            data.people.iter().filter(|p| p.kind == kind && p.name == name).map(|p| p.count).sum::<u64>()
        };
        assert_eq!(people("all", ""), 2);
        assert_eq!(people("topic", "wifi"), 1);
        assert_eq!(people("class", "support"), 2);
    }

    #[test]
    fn a_week_that_is_over_keeps_counts_and_no_hash() {
        let dir = tempfile::tempdir().unwrap();
        let store = sqlite::Embedded::open(dir.path()).unwrap();
        // Monday 2026-11-16 (2026-W47), noon.
        let monday =
            u64::from(crate::calendar::day_of_date(crate::calendar::parse_date("2026-11-16").unwrap())) * DAY
                + 12 * 3600;
        let mut batch = Batch::default();
        for (w, t) in [("a@x.org", "wifi"), ("a@x.org", "wifi"), ("b@x.org", "wifi"), ("c@x.org", "mac")] {
            counted(monday, "support", &[t], Some(w)).add_to(&mut batch);
        }
        store.add_counts(&batch, monday, 0).unwrap();
        assert!(!sqlite::dump(dir.path(), "writers").unwrap().is_empty());
        assert_eq!(sqlite::dump(dir.path(), "week_keys").unwrap().len(), 1);
        // The next Monday plus the grace: reduced at the next write.
        let later = monday + 7 * DAY + crate::store::WEEK_GRACE_SECS;
        let r = store.add_counts(&Batch::default(), later, 0).unwrap();
        assert_eq!(r.reduced, 1);
        assert!(sqlite::dump(dir.path(), "writers").unwrap().is_empty(), "no per-person hash left");
        assert!(sqlite::dump(dir.path(), "week_keys").unwrap().is_empty(), "the week's key is gone");
        let data = sqlite::read_counts(dir.path()).unwrap();
        let wifi = data.people.iter().find(|p| p.kind == "topic" && p.name == "wifi").unwrap();
        assert_eq!((wifi.week.as_str(), wifi.count), ("2026-W47", 2));
        assert_eq!(data.messages.iter().map(|(_, n)| n).sum::<u64>(), 4);
    }
}

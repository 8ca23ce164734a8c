//! Where the daemon keeps what it remembers: the senders it answered and when (as keyed hashes,
//! never an address), the replies of the last hour (the caps), and the statistics.
//!
//! - [`keys`]: the HMAC secret, its fingerprint, and the keyed hashes;
//! - [`sqlite`]: the embedded store, one SQLite file per host (the default);
//! - [`postgres`]: the shared store, one PostgreSQL server for every host of one Help Desk;
//! - [`migrate`]: the stores of earlier versions (redb), carried over once.
//!
//! The types below are what every backend reads and writes.

pub mod keys;
mod migrate;
pub mod postgres;
pub mod sqlite;

/// Opens (or creates) the embedded store of `dir`, carrying over the stores of earlier versions.
pub fn open_embedded(dir: &Path) -> Result<sqlite::Embedded, StoreError> {
    let store = sqlite::Embedded::open(dir)?;
    migrate::from_redb(dir, &store)?;
    Ok(store)
}

use crate::calendar::day_of_unix;
use keys::Key;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::Path;
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreError(pub String);

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StoreError {}

impl StoreError {
    pub fn at(what: &str, path: &Path, e: impl fmt::Display) -> StoreError {
        StoreError(format!("{what} {}: {e}", path.display()))
    }
}

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
            day: day_of_unix(unix_time),
            class: class.to_string(),
            topics,
            encrypted,
            decision: decision.to_string(),
        }
    }
}

/// A reply reserved in memory, to be recorded in the store before the reply is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    /// The sender's key.
    pub key: Key,
    /// The key of the sender's domain, for the per-domain cap.
    pub domain: Key,
    /// When the reply was decided (unix seconds): its place in the caps.
    pub at: u64,
    /// The end of the sender's interval.
    pub expiry: u64,
    /// The hot topics this reply points the sender to (for the reply of a new hot topic).
    pub topics: Vec<String>,
    /// The sender's first reply of the interval (not one more for a new topic).
    pub first: bool,
    /// A random number that marks this reply's rows in a shared store, so that [`release`]
    /// undoes exactly them, whichever host made them (0 in the embedded store).
    ///
    /// [`release`]: crate::state::ReplyState::release
    pub id: i64,
}

/// What the reply state starts from: what has not expired yet.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Loaded {
    /// Answered senders and the end of their interval.
    pub answered: Vec<(Key, u64)>,
    /// Replies of the last hour: when, and the key of the recipient's domain.
    pub sent: Vec<(u64, Key)>,
    /// Topics a sender's replies pointed to, and until when that holds.
    pub topics: Vec<(Key, String, u64)>,
}

/// Who wrote a message, as far as counting people goes. Never stored: the writer of the
/// statistics turns it into a keyed hash under the week's own key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Writer {
    /// The canonical envelope sender.
    Sender(String),
    /// A WhisperBack report, by its ID: each report is one writer (its sender is a dummy).
    Report(String),
}

impl Writer {
    /// The bytes hashed under the week's key.
    pub fn hashed_form(&self) -> String {
        match self {
            Writer::Sender(s) => format!("s:{s}"),
            Writer::Report(id) => format!("r:{id}"),
        }
    }
}

/// One batch of counts for the store, gathered by `counts::record`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    /// Messages per (day, class, topics, encryption, decision).
    pub messages: HashMap<Row, u64>,
    /// (week, kind, name, writer): one writer seen in a class (`class`), about a topic
    /// (`topic`), or at all (`all`, name empty), in an ISO week (`2026-W47`).
    pub writers: HashSet<(String, String, String, Writer)>,
    /// WhisperBack report IDs and the day each arrived.
    pub reports: HashMap<String, u32>,
    /// (report ID, topic) tags and the day they came.
    pub tags: HashMap<(String, String), u32>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty() && self.writers.is_empty() && self.reports.is_empty() && self.tags.is_empty()
    }

    /// Adds `other` to this batch (a batch that could not be written is kept for the next try).
    pub fn absorb(&mut self, other: Batch) {
        for (row, n) in other.messages {
            *self.messages.entry(row).or_default() += n;
        }
        self.writers.extend(other.writers);
        for (id, day) in other.reports {
            self.reports.entry(id).or_insert(day);
        }
        for (tag, day) in other.tags {
            self.tags.entry(tag).or_insert(day);
        }
    }

    /// Messages in the batch.
    pub fn message_count(&self) -> u64 {
        self.messages.values().sum()
    }
}

/// What one write of counts did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recorded {
    /// Rows removed because they were older than the retention.
    pub purged: usize,
    /// Weeks whose writers were reduced to counts, their keys deleted.
    pub reduced: usize,
}

/// People counted in one week, in one class, about one topic, or at all.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PeopleRow {
    /// `2026-W47`.
    pub week: String,
    /// `all`, `class` or `topic`.
    pub kind: String,
    pub name: String,
    pub count: u64,
}

/// Everything `stats` reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CountsData {
    pub messages: Vec<(Row, u64)>,
    /// People per week, kind and name: the reduced weeks and the weeks still counting.
    pub people: Vec<PeopleRow>,
    /// WhisperBack reports and the day each arrived.
    pub reports: Vec<(String, u32)>,
    /// Tags: report ID, topic, and the day the report arrived (else the day of the tag).
    pub tags: Vec<(String, String, u32)>,
}

/// How long after the end of an ISO week its writers are kept before they are reduced to
/// counts: late messages of the week (a slow relay, another host's clock) still count once.
pub const WEEK_GRACE_SECS: u64 = 86400;

/// Where the statistics writer puts the counts.
#[derive(Clone)]
pub enum CountStore {
    /// This host's file.
    Embedded(Arc<sqlite::Embedded>),
    /// The server the hosts share.
    Shared(Arc<postgres::Shared>),
}

impl CountStore {
    /// Adds `batch` (see [`sqlite::Embedded::add_counts`]), off the async runtime's threads.
    /// The batch comes back when it could not be written, to be kept for the next try.
    pub async fn add(
        &self,
        batch: Batch,
        now: u64,
        first_day_kept: u32,
    ) -> Result<Recorded, (StoreError, Batch)> {
        match self {
            CountStore::Embedded(store) => {
                let store = store.clone();
                let done = tokio::task::spawn_blocking(move || {
                    let result = store.add_counts(&batch, now, first_day_kept);
                    (result, batch)
                })
                .await;
                match done {
                    Ok((Ok(r), _)) => Ok(r),
                    Ok((Err(e), batch)) => Err((e, batch)),
                    Err(e) => {
                        Err((StoreError(format!("the statistics writer failed: {e}")), Batch::default()))
                    }
                }
            }
            CountStore::Shared(store) => match store.add_counts(&batch, now, first_day_kept).await {
                Ok(r) => Ok(r),
                Err(e) => Err((e, batch)),
            },
        }
    }

    /// Where the counts go, for the log.
    pub fn describe(&self) -> String {
        match self {
            CountStore::Embedded(store) => store.path().display().to_string(),
            CountStore::Shared(store) => store.name().to_string(),
        }
    }
}

/// Everything `stats` reads, from the store the configuration names.
pub fn read_counts(config: &crate::config::StateConfig) -> Result<CountsData, StoreError> {
    match &config.backend {
        crate::config::Backend::Embedded => sqlite::read_counts(&config.directory),
        crate::config::Backend::Postgres { url, password_file } => {
            postgres::read_counts(url, password_file.as_deref())
        }
    }
}

//! The outbox: a durable on-disk queue of auto-replies, and the background task that sends them.
//!
//! The milter decides at end of message that a reply is due; a background task (never a milter
//! callback, because `enqueue` does blocking file I/O and fsyncs) calls [`Outbox::enqueue`] and then
//! `wake.notify_one()`. [`run_sender`] delivers each entry to the relay over SMTP with a null
//! envelope sender and one recipient (`NOTIFY=NEVER` when the relay offers DSN), retries while the
//! relay is down or answers 4xx, drops the entry on a 5xx or when it is older than the lifetime,
//! and sends whatever is left in the directory after a restart.
//!
//! - [`entry`]: one entry and its file format;
//! - [`store`]: the directory (durable writes, scans, quarantine);
//! - [`smtp`]: one delivery attempt;
//! - [`sender`]: the task that delivers, retries and drops;
//! - [`gauges`]: the depth and age gauges of the metrics endpoint.
//!
//! # Entry file format (`<id>.reply`, mode 0600, in a 0700 directory)
//!
//! ```text
//! # helpdesk-milter outbox entry            <- magic line (a TOML comment)
//! format = 1
//! id = "0123456789abcdef0123456789abcdef"  <- must match the file name
//! recipient = "alice@example.com"
//! created = 1741079702                     <- unix seconds
//! attempts = 0
//! next_attempt = 1741079702                <- unix seconds
//! message_len = 1234
//! message_sha256 = "…64 hex digits…"
//!                                          <- one empty line ends the header
//! <message_len raw bytes of the message, any bytes>
//! ```
//!
//! The header is TOML, so it is human-readable; the message is stored raw, so any byte is kept as
//! is. A file whose length or checksum does not match (truncated, corrupt) is never sent: it is
//! moved to `corrupt/`. Files are written to `.tmp-<id>`, fsynced, renamed and the directory is
//! fsynced, so an entry is either fully there or not there at all.

mod entry;
pub mod gauges;
mod sender;
mod smtp;
mod store;

pub use entry::{Entry, decode};
pub use sender::{MAX_RETRY_INTERVAL, run_sender};
pub use smtp::{SendError, SenderConfig, send_one};
pub use store::Outbox;

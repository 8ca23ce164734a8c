//! The outbox: a durable on-disk queue of auto-replies, and the background task that sends them.
//!
//! The milter decides at end of message that a reply is due; a background task (never a milter
//! callback, because `enqueue` does blocking file I/O and fsyncs) calls [`Outbox::enqueue`] and then
//! `wake.notify_one()`. [`run_sender`] delivers each entry to the relay over SMTP with a null
//! envelope sender and one recipient (`NOTIFY=NEVER` when the relay offers DSN), retries while the
//! relay is down or answers 4xx, drops the entry on a 5xx or when it is older than the lifetime,
//! and sends whatever is left in the directory after a restart.
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

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::future::Future;
use std::io::{self, Read, Write};
use std::net::Ipv6Addr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lettre::Address;
use lettre::transport::smtp::client::{AsyncSmtpConnection, AsyncTokioStream};
use lettre::transport::smtp::commands::{Data, Ehlo, Mail, Rcpt};
use lettre::transport::smtp::extension::{
    ClientId, Extension, MailBodyParameter, MailParameter, RcptParameter, ServerInfo,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::net::TcpStream;
use tokio::sync::{Notify, watch};
use tracing::{debug, error, info, warn};

use crate::metrics::{self, Failure as Lost};

/// Default bound (`autoreply.smtp_timeout`) on the TCP connect plus greeting and EHLO, and on each
/// later SMTP command, the message transfer included (RFC 5321 §4.5.3.2 allows longer, but a local
/// relay answers in milliseconds and a long bound would hold up shutdown).
pub const SMTP_TIMEOUT: Duration = Duration::from_secs(60);
/// The retry interval doubles after each temporary failure up to this bound.
pub const MAX_RETRY_INTERVAL: Duration = Duration::from_secs(30 * 60);
/// Temp files older than this are leftovers of a crash during a write.
const STALE_TEMP_AGE: Duration = Duration::from_secs(60 * 60);
/// The sender rescans the directory at least this often, even without a wake-up.
const RESCAN_INTERVAL: Duration = Duration::from_secs(5 * 60);
/// Replies are a few kB; anything much bigger is not ours.
const MAX_MESSAGE_BYTES: usize = 10 * 1024 * 1024;
const FORMAT: u32 = 1;
const MAGIC: &str = "# helpdesk-milter outbox entry\n";
const SUFFIX: &str = ".reply";
const TEMP_PREFIX: &str = ".tmp-";
const CORRUPT_DIR: &str = "corrupt";
/// 16 random bytes, hex.
const ID_LEN: usize = 32;

/// The SMTP relay the replies are handed to (normally the local Postfix).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Relay {
    /// Host name or IP address; an IPv6 address is stored without brackets.
    pub host: String,
    pub port: u16,
}

impl Relay {
    /// Parses `smtp://HOST[:PORT]` (port 25 by default; IPv6 literals in brackets:
    /// `smtp://[::1]:25`).
    pub fn parse(url: &str) -> Result<Relay, String> {
        let bad = |why: &str| Err(format!("invalid relay URL {url:?}: {why}; expected smtp://HOST[:PORT]"));
        let Some((scheme, rest)) = url.split_once("://") else {
            return bad("missing \"smtp://\"");
        };
        if !scheme.eq_ignore_ascii_case("smtp") {
            return bad(&format!("unsupported scheme {scheme:?} (only smtp, without TLS, is supported)"));
        }
        // A single trailing slash is what people type after a host; anything else is not a relay.
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#', '@']) {
            return bad("user info, path, query or fragment are not allowed");
        }
        let (host, port) = if let Some(after) = rest.strip_prefix('[') {
            let Some((v6, tail)) = after.split_once(']') else {
                return bad("missing ']' after an IPv6 address");
            };
            if v6.parse::<Ipv6Addr>().is_err() {
                return bad(&format!("{v6:?} is not an IPv6 address"));
            }
            let port = match tail {
                "" => None,
                _ => match tail.strip_prefix(':') {
                    Some(p) => Some(p),
                    None => return bad("unexpected text after ']'"),
                },
            };
            (v6.to_owned(), port)
        } else {
            let (host, port) = match rest.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (rest, None),
            };
            if host.contains(':') {
                return bad("an IPv6 address must be written in brackets, e.g. smtp://[::1]:25");
            }
            if host.is_empty() {
                return bad("missing host");
            }
            if !host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')) {
                return bad(&format!("{host:?} is not a host name or IP address"));
            }
            (host.to_owned(), port)
        };
        let port = match port {
            None => 25,
            // u16::from_str would accept "+25".
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n != 0 && p.bytes().all(|b| b.is_ascii_digit()) => n,
                _ => return bad(&format!("{p:?} is not a port number (1-65535)")),
            },
        };
        Ok(Relay { host, port })
    }
}

impl fmt::Display for Relay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "smtp://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "smtp://{}:{}", self.host, self.port)
        }
    }
}

/// Settings of the sender.
#[derive(Clone, Debug)]
pub struct OutboxConfig {
    pub relay: Relay,
    /// Delay before the first retry; doubles after each failure, up to 30 minutes.
    pub retry_interval: Duration,
    /// An entry this long after its creation is dropped unsent (warn log).
    pub lifetime: Duration,
    /// Bound on each SMTP step (normally [`SMTP_TIMEOUT`]).
    pub smtp_timeout: Duration,
    /// Our name in EHLO.
    pub helo_name: String,
}

/// One queued reply.
#[derive(Clone, PartialEq, Eq)]
pub struct Entry {
    pub id: String,
    /// The envelope recipient (the sender of the message we reply to).
    pub recipient: String,
    /// Unix seconds.
    pub created: u64,
    pub attempts: u32,
    /// Unix seconds.
    pub next_attempt: u64,
    /// The complete reply message (header and body).
    pub message: Vec<u8>,
}

// Hand-written so that a stray `{:?}` cannot put an address into a log.
impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entry")
            .field("id", &self.id)
            .field("recipient", &"<redacted>")
            .field("created", &self.created)
            .field("attempts", &self.attempts)
            .field("next_attempt", &self.next_attempt)
            .field("message_len", &self.message.len())
            .finish()
    }
}

/// The failure of one delivery attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SendError {
    /// Worth retrying: relay unreachable, timeout, 4xx, or a session setup problem.
    Temporary(String),
    /// Not worth retrying: 5xx to the transaction, invalid recipient, or an unknown outcome after
    /// the message was transmitted (a retry could send it twice).
    Permanent(String),
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Temporary(s) => write!(f, "temporary failure: {s}"),
            SendError::Permanent(s) => write!(f, "permanent failure: {s}"),
        }
    }
}

impl std::error::Error for SendError {}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    format: u32,
    id: String,
    recipient: String,
    created: u64,
    attempts: u32,
    next_attempt: u64,
    message_len: u64,
    message_sha256: String,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn valid_id(id: &str) -> bool {
    id.len() == ID_LEN && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn new_id() -> io::Result<String> {
    let mut buf = [0u8; ID_LEN / 2];
    getrandom::fill(&mut buf)
        .map_err(|e| io::Error::other(format!("no randomness for an outbox id: {e}")))?;
    Ok(hex(&buf))
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Unix seconds rounded up, so that "in 200 ms" is never "now".
fn unix_secs_ceil(t: SystemTime) -> u64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() + u64::from(d.subsec_nanos() > 0),
        Err(_) => 0,
    }
}

/// Encodes an entry in the file format described in the module documentation.
fn encode(entry: &Entry) -> io::Result<Vec<u8>> {
    let header = Header {
        format: FORMAT,
        id: entry.id.clone(),
        recipient: entry.recipient.clone(),
        created: entry.created,
        attempts: entry.attempts,
        next_attempt: entry.next_attempt,
        message_len: entry.message.len() as u64,
        message_sha256: sha256_hex(&entry.message),
    };
    let text =
        toml::to_string(&header).map_err(|e| io::Error::other(format!("encoding an outbox entry: {e}")))?;
    // The empty line ends the header; TOML quoting keeps it out of values, since enqueue refuses
    // control characters in the recipient.
    if text.contains("\n\n") || !text.ends_with('\n') {
        return Err(io::Error::other("encoding an outbox entry: unexpected header layout"));
    }
    let mut out = Vec::with_capacity(MAGIC.len() + text.len() + 1 + entry.message.len());
    out.extend_from_slice(MAGIC.as_bytes());
    out.extend_from_slice(text.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(&entry.message);
    Ok(out)
}

/// Decodes and checks an entry file; the error says why it was refused (never the address).
/// Public so that the fuzz target exercises the parser the directory scan uses.
pub fn decode(bytes: &[u8]) -> Result<Entry, String> {
    let rest = bytes.strip_prefix(MAGIC.as_bytes()).ok_or("not an outbox entry (bad first line)")?;
    let end = rest.windows(2).position(|w| w == b"\n\n").ok_or("truncated: no end of header")?;
    let (head, message) = (&rest[..=end], &rest[end + 2..]);
    let head = std::str::from_utf8(head).map_err(|_| "header is not UTF-8")?;
    let h: Header = toml::from_str(head).map_err(|e| format!("bad header: {}", e.message().trim()))?;
    if h.format != FORMAT {
        return Err(format!("unknown format {}", h.format));
    }
    if !valid_id(&h.id) {
        return Err("bad id in header".into());
    }
    if message.len() as u64 != h.message_len {
        return Err(format!(
            "message is {} bytes, header says {} (truncated?)",
            message.len(),
            h.message_len
        ));
    }
    if sha256_hex(message) != h.message_sha256 {
        return Err("message checksum mismatch".into());
    }
    Ok(Entry {
        id: h.id,
        recipient: h.recipient,
        created: h.created,
        attempts: h.attempts,
        next_attempt: h.next_attempt,
        message: message.to_vec(),
    })
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
                metrics::reply_failed(Lost::Corrupt);
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
            Ok(()) => sync_dir(&self.dir),
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
        Some(now.duration_since(UNIX_EPOCH + Duration::from_secs(oldest)).unwrap_or(Duration::ZERO))
    }
}

fn read_entry_file(path: &Path) -> io::Result<Vec<u8>> {
    let file = File::open(path)?;
    let mut bytes = Vec::new();
    // Bounded, so that a huge stray file cannot exhaust memory.
    file.take((MAX_MESSAGE_BYTES + 64 * 1024) as u64).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// A short, stable tag for an address in debug logs (the reference asks for no plaintext
/// addresses in logs).
fn recipient_tag(recipient: &str) -> String {
    sha256_hex(recipient.to_lowercase().as_bytes())[..12].to_owned()
}

/// Replaces anything that looks like an address in a relay's reply (Postfix echoes the recipient in
/// RCPT rejections), so that warnings can quote the reply.
fn redact(text: &str) -> String {
    text.split(' ').map(|w| if w.contains('@') { "<redacted>" } else { w }).collect::<Vec<_>>().join(" ")
}

/// SMTP requires CRLF line ends; lettre dot-stuffs only after CRLF and appends CRLF.CRLF itself.
fn to_smtp_data(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + message.len() / 40 + 2);
    let mut prev = 0u8;
    for &b in message {
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        prev = b;
    }
    // Without this, a message ending in CRLF would get an extra empty line.
    if out.ends_with(b"\r\n") {
        out.truncate(out.len() - 2);
    }
    out
}

/// Delay before the retry that follows the `attempts`-th failure.
fn retry_delay(retry_interval: Duration, attempts: u32) -> Duration {
    let cap = MAX_RETRY_INTERVAL.max(retry_interval);
    let doublings = attempts.saturating_sub(1).min(31);
    retry_interval.checked_mul(1u32 << doublings).unwrap_or(cap).min(cap)
}

/// Why an internal delivery attempt did not succeed.
#[derive(Debug)]
enum Failure {
    Send(SendError),
    /// Shutdown was requested before the message was transmitted; nothing was sent.
    Stopped,
}

impl From<SendError> for Failure {
    fn from(e: SendError) -> Self {
        Failure::Send(e)
    }
}

enum StepError {
    Smtp(lettre::transport::smtp::Error),
    /// The TCP connection to the relay, opened before lettre takes it over.
    Connect(io::Error),
    Timeout,
    Stopped,
}

impl From<lettre::transport::smtp::Error> for StepError {
    fn from(e: lettre::transport::smtp::Error) -> Self {
        StepError::Smtp(e)
    }
}

impl From<io::Error> for StepError {
    fn from(e: io::Error) -> Self {
        StepError::Connect(e)
    }
}

impl fmt::Display for StepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StepError::Smtp(e) => write!(f, "{}", redact(&e.to_string())),
            StepError::Connect(e) => write!(f, "{e}"),
            StepError::Timeout => f.write_str("timed out"),
            StepError::Stopped => f.write_str("stopped"),
        }
    }
}

/// Runs one SMTP step under the timeout; before the message is transmitted the step is also
/// abandoned on shutdown (nothing has been accepted yet, so dropping it is harmless).
async fn step<T, E: Into<StepError>>(
    limit: Duration,
    stop: Option<&watch::Receiver<bool>>,
    fut: impl Future<Output = Result<T, E>>,
) -> Result<T, StepError> {
    let stopped = async {
        match stop {
            Some(rx) => {
                let mut rx = rx.clone();
                if rx.wait_for(|s| *s).await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        biased;
        () = stopped => Err(StepError::Stopped),
        r = tokio::time::timeout(limit, fut) => match r {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(StepError::Timeout),
        },
    }
}

/// Classifies a failed MAIL/RCPT/DATA command: 5xx is permanent, anything else is worth a retry.
fn command_failure(what: &str, relay: &Relay, e: StepError) -> Failure {
    match e {
        StepError::Stopped => Failure::Stopped,
        StepError::Smtp(ref se) if se.is_permanent() => {
            SendError::Permanent(format!("relay {relay} rejected {what}: {e}")).into()
        }
        _ => SendError::Temporary(format!("relay {relay}: {what} failed: {e}")).into(),
    }
}

/// One delivery attempt. Ok(()) = accepted by the relay.
pub async fn send_one(config: &OutboxConfig, entry: &Entry) -> Result<(), SendError> {
    match deliver(config, entry, config.smtp_timeout, None).await {
        Ok(()) => Ok(()),
        Err(Failure::Send(e)) => Err(e),
        // Cannot happen without a stop signal; kept total rather than panicking.
        Err(Failure::Stopped) => Err(SendError::Temporary("attempt abandoned".into())),
    }
}

async fn deliver(
    config: &OutboxConfig,
    entry: &Entry,
    limit: Duration,
    stop: Option<&watch::Receiver<bool>>,
) -> Result<(), Failure> {
    let relay = &config.relay;
    let rcpt: Address = entry
        .recipient
        .parse()
        .map_err(|e| SendError::Permanent(format!("recipient is not a valid address: {e}")))?;
    let helo = if config.helo_name.is_empty() {
        ClientId::default()
    } else {
        ClientId::Domain(config.helo_name.clone())
    };

    // Problems before the transaction are the relay's (down, misconfigured), not the message's:
    // even a 5xx greeting is retried, within the lifetime.
    let connect = async {
        let tcp = TcpStream::connect((relay.host.as_str(), relay.port)).await?;
        // lettre writes the message and its final dot in two writes: without NODELAY the dot waits
        // for the relay's delayed ACK, 40 ms per reply on loopback.
        tcp.set_nodelay(true)?;
        let stream: Box<dyn AsyncTokioStream> = Box::new(tcp);
        AsyncSmtpConnection::connect_with_transport(stream, &helo).await.map_err(StepError::from)
    };
    let mut conn = match step(limit, stop, connect).await {
        Ok(c) => c,
        Err(StepError::Stopped) => return Err(Failure::Stopped),
        Err(e) => return Err(SendError::Temporary(format!("relay {relay}: connection failed: {e}")).into()),
    };
    let result = transaction(&mut conn, relay, &helo, &rcpt, entry, limit, stop).await;
    match &result {
        Ok(()) => {
            let _ = tokio::time::timeout(limit, conn.quit()).await;
        }
        Err(_) => {
            let _ = tokio::time::timeout(Duration::from_secs(5), conn.abort()).await;
        }
    }
    result
}

async fn transaction(
    conn: &mut AsyncSmtpConnection,
    relay: &Relay,
    helo: &ClientId,
    rcpt: &Address,
    entry: &Entry,
    limit: Duration,
    stop: Option<&watch::Receiver<bool>>,
) -> Result<(), Failure> {
    // lettre has already sent EHLO but keeps no DSN flag, so ask again and read the keywords.
    let ehlo = match step(limit, stop, conn.command(Ehlo::new(helo.clone()))).await {
        Ok(r) => r,
        Err(StepError::Stopped) => return Err(Failure::Stopped),
        Err(e) => return Err(SendError::Temporary(format!("relay {relay}: EHLO failed: {e}")).into()),
    };
    let dsn = ehlo
        .message()
        .skip(1)
        .any(|l| l.split_whitespace().next().is_some_and(|k| k.eq_ignore_ascii_case("DSN")));
    let info = ServerInfo::from_response(&ehlo).unwrap_or_default();

    let mut mail_params = Vec::new();
    if !rcpt.to_string().is_ascii() {
        if !info.supports_feature(Extension::SmtpUtfEight) {
            return Err(SendError::Permanent(format!(
                "recipient is not ASCII and relay {relay} does not offer SMTPUTF8"
            ))
            .into());
        }
        mail_params.push(MailParameter::SmtpUtfEight);
    }
    if !entry.message.is_ascii() && info.supports_feature(Extension::EightBitMime) {
        mail_params.push(MailParameter::Body(MailBodyParameter::EightBitMime));
    }
    // RFC 3834 §3.3: null envelope sender, so that nothing ever answers the reply.
    step(limit, stop, conn.command(Mail::new(None, mail_params)))
        .await
        .map_err(|e| command_failure("MAIL FROM:<>", relay, e))?;
    // RFC 3834 §3.3 / RFC 5230 §5.1: ask for no DSN about the reply.
    let rcpt_params = if dsn {
        vec![RcptParameter::Other { keyword: "NOTIFY".into(), value: Some("NEVER".into()) }]
    } else {
        Vec::new()
    };
    step(limit, stop, conn.command(Rcpt::new(rcpt.clone(), rcpt_params)))
        .await
        .map_err(|e| command_failure("RCPT TO", relay, e))?;
    step(limit, stop, conn.command(Data)).await.map_err(|e| command_failure("DATA", relay, e))?;

    // From here on the transfer is finished even on shutdown: abandoning it after the final dot
    // could leave a message the relay accepted but we would send again.
    let data = to_smtp_data(&entry.message);
    match step(limit, None, conn.message(&data)).await {
        Ok(_) => Ok(()),
        Err(StepError::Smtp(e)) if e.is_permanent() || e.is_transient() => {
            Err(command_failure("the message", relay, StepError::Smtp(e)))
        }
        // No reply to the final dot: the relay may have queued the reply. A lost reply is
        // preferred to a duplicate (reference rule F25), so this is not retried.
        Err(e) => Err(SendError::Permanent(format!(
            "relay {relay}: outcome unknown after the message was transmitted ({e}); not retried to avoid a duplicate"
        ))
        .into()),
    }
}

async fn blocking<T: Send + 'static>(
    outbox: &Arc<Outbox>,
    f: impl FnOnce(&Outbox) -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    let outbox = Arc::clone(outbox);
    tokio::task::spawn_blocking(move || f(&outbox))
        .await
        .unwrap_or_else(|e| Err(io::Error::other(format!("outbox task failed: {e}"))))
}

/// What the sender remembers between passes when the disk could not be updated.
#[derive(Default)]
struct Memory {
    /// Delivered but not removed: never send again in this run; retry the removal.
    delivered: HashSet<String>,
    /// Rescheduled in memory only, because the rewrite failed.
    deferred: HashMap<String, u64>,
}

/// Runs until `shutdown` resolves: sends due entries, sleeps until the next due time or until
/// `wake` is notified (new entry). On shutdown it stops between messages (an entry being sent is
/// finished or left for later; never sent twice on purpose).
pub async fn run_sender(
    outbox: Arc<Outbox>,
    config: OutboxConfig,
    wake: Arc<Notify>,
    shutdown: impl Future<Output = ()>,
) {
    let mut shutdown = pin!(shutdown);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut memory = Memory::default();
    info!("outbox sender started: {} via {}", outbox.dir().display(), config.relay);
    'run: loop {
        // Registered before the scan, so that an entry queued during the pass is not missed.
        let mut notified = pin!(wake.notified());
        notified.as_mut().enable();

        let lifetime = config.lifetime;
        let entries = blocking(&outbox, move |o| {
            o.purge_corrupt(lifetime);
            Ok(o.entries())
        })
        .await
        .unwrap_or_else(|e| {
            error!("{e}");
            Vec::new()
        });
        let present: HashSet<&str> = entries.iter().map(|e| e.id.as_str()).collect();
        memory.delivered.retain(|id| present.contains(id.as_str()));
        memory.deferred.retain(|id, _| present.contains(id.as_str()));

        let now = SystemTime::now();
        let mut queue: Vec<(u64, Entry)> =
            entries.into_iter().map(|e| (due(&config, &memory, &e, now), e)).collect();
        queue.sort_by_key(|(due, e)| (*due, e.created));

        let mut next_due: Option<u64> = None;
        for (due_at, mut entry) in queue {
            // Stop between messages.
            let stopping = tokio::select! {
                biased;
                () = &mut shutdown => true,
                () = std::future::ready(()) => false,
            };
            if stopping {
                break 'run;
            }
            let now = SystemTime::now();
            if due_at > unix_secs(now) {
                next_due = Some(next_due.map_or(due_at, |d| d.min(due_at)));
                continue;
            }
            if memory.delivered.contains(&entry.id) {
                remove_entry(&outbox, &mut memory, &entry.id).await;
                continue;
            }
            let age = now.duration_since(UNIX_EPOCH + Duration::from_secs(entry.created)).unwrap_or_default();
            // Due because expiry is near, but the lifetime is not quite over and no retry is due yet.
            let next = next_attempt(&config, &memory, &entry, now);
            if age < config.lifetime && next > unix_secs(now) {
                let at = next.min(expiry(&config, &entry));
                next_due = Some(next_due.map_or(at, |d| d.min(at)));
                continue;
            }
            if age >= config.lifetime {
                warn!(
                    "reply {} expired unsent after {} attempt(s) ({} old); dropped",
                    entry.id,
                    entry.attempts,
                    humantime::format_duration(Duration::from_secs(age.as_secs()))
                );
                if remove_entry(&outbox, &mut memory, &entry.id).await {
                    metrics::reply_failed(Lost::Expired);
                }
                continue;
            }

            // A reply sent while its entry cannot be removed (disk read-only or failing) would be
            // sent again after a restart: only send when the outbox can be written right now.
            let probe = entry.clone();
            if let Err(e) = blocking(&outbox, move |o| o.reschedule(&probe)).await {
                let next = unix_secs_ceil(now + config.retry_interval);
                warn!(
                    "reply {} not sent for now: the outbox cannot be written, so it could not be marked as sent ({e}); retrying in {}",
                    entry.id,
                    humantime::format_duration(config.retry_interval)
                );
                memory.deferred.insert(entry.id.clone(), next);
                next_due = Some(next_due.map_or(next, |d| d.min(next)));
                continue;
            }
            debug!(id = %entry.id, rcpt = %recipient_tag(&entry.recipient), attempt = entry.attempts + 1, "sending reply");
            let result = {
                let mut send = pin!(deliver(&config, &entry, config.smtp_timeout, Some(&stop_rx)));
                let mut stop_sent = false;
                loop {
                    tokio::select! {
                        biased;
                        r = &mut send => break r,
                        () = &mut shutdown, if !stop_sent => {
                            stop_sent = true;
                            let _ = stop_tx.send(true);
                        }
                    }
                }
            };
            match result {
                Ok(()) => {
                    info!("reply {} delivered to relay {}", entry.id, config.relay);
                    metrics::reply_sent();
                    memory.delivered.insert(entry.id.clone());
                    remove_entry(&outbox, &mut memory, &entry.id).await;
                }
                Err(Failure::Send(SendError::Permanent(why))) => {
                    warn!("reply {} dropped: {why}", entry.id);
                    if remove_entry(&outbox, &mut memory, &entry.id).await {
                        metrics::reply_failed(Lost::Permanent);
                    }
                }
                Err(Failure::Send(SendError::Temporary(why))) => {
                    let now = SystemTime::now();
                    entry.attempts = entry.attempts.saturating_add(1);
                    let delay = retry_delay(config.retry_interval, entry.attempts);
                    entry.next_attempt = unix_secs_ceil(now + delay).max(unix_secs(now) + 1);
                    warn!(
                        "reply {} not delivered (attempt {}), retrying in {}: {why}",
                        entry.id,
                        entry.attempts,
                        humantime::format_duration(delay)
                    );
                    let id = entry.id.clone();
                    let next = entry.next_attempt;
                    if let Err(e) = blocking(&outbox, move |o| o.reschedule(&entry)).await {
                        error!("cannot reschedule outbox entry {id}: {e}");
                        memory.deferred.insert(id, next);
                    }
                    next_due = Some(next_due.map_or(next, |d| d.min(next)));
                }
                Err(Failure::Stopped) => break 'run,
            }
        }
        if *stop_rx.borrow() {
            break;
        }
        metrics::outbox_changed();

        let now = SystemTime::now();
        let sleep = next_due
            .map(|d| (UNIX_EPOCH + Duration::from_secs(d)).duration_since(now).unwrap_or_default())
            .unwrap_or(RESCAN_INTERVAL)
            .min(RESCAN_INTERVAL);
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            () = notified => {}
            () = tokio::time::sleep(sleep) => {}
        }
    }
    info!("outbox sender stopped");
}

/// When an entry is due: its next attempt or its expiry, whichever comes first (unix seconds).
fn due(config: &OutboxConfig, memory: &Memory, entry: &Entry, now: SystemTime) -> u64 {
    next_attempt(config, memory, entry, now).min(expiry(config, entry))
}

/// The next attempt (unix seconds), from memory if the disk could not be updated.
fn next_attempt(config: &OutboxConfig, memory: &Memory, entry: &Entry, now: SystemTime) -> u64 {
    let now_s = unix_secs(now);
    let next = memory.deferred.get(&entry.id).copied().unwrap_or(entry.next_attempt);
    // A next attempt beyond any possible backoff means the clock went back: do not wait for it.
    let horizon = now_s.saturating_add(MAX_RETRY_INTERVAL.max(config.retry_interval).as_secs() + 1);
    if next > horizon { now_s } else { next }
}

/// The first whole second at which the entry is past its lifetime.
fn expiry(config: &OutboxConfig, entry: &Entry) -> u64 {
    let lifetime = config.lifetime;
    entry.created.saturating_add(lifetime.as_secs() + u64::from(lifetime.subsec_nanos() > 0))
}

/// Removes an entry durably; returns whether it is gone.
async fn remove_entry(outbox: &Arc<Outbox>, memory: &mut Memory, id: &str) -> bool {
    let owned = id.to_owned();
    match blocking(outbox, move |o| o.remove(&owned)).await {
        Ok(()) => {
            memory.delivered.remove(id);
            memory.deferred.remove(id);
            metrics::outbox_changed();
            true
        }
        Err(e) => {
            error!("cannot remove outbox entry {id}: {e}");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(message: &[u8]) -> Entry {
        Entry {
            id: "0123456789abcdef0123456789abcdef".into(),
            recipient: "alice@example.com".into(),
            created: 1_741_079_702,
            attempts: 3,
            next_attempt: 1_741_080_000,
            message: message.to_vec(),
        }
    }

    #[test]
    fn relay_parse_accepts() {
        let ok = |u: &str, h: &str, p: u16| {
            assert_eq!(Relay::parse(u), Ok(Relay { host: h.into(), port: p }), "{u}");
        };
        ok("smtp://localhost", "localhost", 25);
        ok("smtp://localhost/", "localhost", 25);
        ok("SMTP://mail.example.org:2525", "mail.example.org", 2525);
        ok("smtp://127.0.0.1:10025", "127.0.0.1", 10025);
        ok("smtp://[::1]:25", "::1", 25);
        ok("smtp://[::1]", "::1", 25);
        ok("smtp://[2001:db8::5]:587", "2001:db8::5", 587);
    }

    #[test]
    fn relay_parse_rejects() {
        for bad in [
            "",
            "localhost:25",
            "smtps://localhost",
            "http://localhost",
            "smtp://",
            "smtp://:25",
            "smtp://host:",
            "smtp://host:0",
            "smtp://host:65536",
            "smtp://host:+25",
            "smtp://host:x",
            "smtp://::1",
            "smtp://[::1",
            "smtp://[not-v6]:25",
            "smtp://[::1]x",
            "smtp://user@host",
            "smtp://host/path",
            "smtp://host?q",
            "smtp://ho st",
        ] {
            let err = Relay::parse(bad).expect_err(bad);
            assert!(err.contains("smtp://HOST[:PORT]"), "{bad}: {err}");
        }
    }

    #[test]
    fn relay_display_round_trips() {
        for u in ["smtp://localhost:25", "smtp://[::1]:2525", "smtp://10.0.0.1:25"] {
            assert_eq!(Relay::parse(u).unwrap().to_string(), u);
        }
    }

    #[test]
    fn format_round_trips_any_bytes() {
        let mut message: Vec<u8> = (0..=255u8).collect();
        message.extend_from_slice(b"\n\n\r\n\r\n.\r\n# helpdesk-milter outbox entry\n\n");
        for m in [&b""[..], b"Subject: x\r\n\r\nbody\r\n", &message] {
            let e = entry(m);
            let bytes = encode(&e).unwrap();
            assert_eq!(decode(&bytes).unwrap(), e);
        }
        let mut odd = entry(b"x");
        odd.recipient = "\"quoted \\\" local\"@example.com".into();
        assert_eq!(decode(&encode(&odd).unwrap()).unwrap(), odd);
    }

    #[test]
    fn format_is_readable_toml_header() {
        let text = String::from_utf8(encode(&entry(b"Hello")).unwrap()).unwrap();
        assert!(text.starts_with(MAGIC), "{text}");
        assert!(text.contains("\nid = \"0123456789abcdef0123456789abcdef\"\n"), "{text}");
        assert!(text.contains("\nmessage_len = 5\n"), "{text}");
        assert!(text.ends_with("\n\nHello"), "{text}");
    }

    #[test]
    fn format_rejects_damage() {
        let good = encode(&entry(b"Subject: x\r\n\r\nbody\r\n")).unwrap();
        // Every truncation is refused.
        for len in 0..good.len() {
            assert!(decode(&good[..len]).is_err(), "truncated to {len}");
        }
        // Extra bytes, a flipped message byte, a changed length.
        let mut longer = good.clone();
        longer.push(b'x');
        assert!(decode(&longer).is_err());
        let mut flipped = good.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert_eq!(decode(&flipped).unwrap_err(), "message checksum mismatch");
        let text = String::from_utf8(good.clone()).unwrap();
        assert!(decode(text.replace("message_len = 20", "message_len = 19").as_bytes()).is_err());
        assert!(decode(text.replace("format = 1", "format = 2").as_bytes()).is_err());
        assert!(decode(text.replace("attempts = 3", "attempts = 3\nextra = 1").as_bytes()).is_err());
        assert!(decode(b"garbage").is_err());
    }

    #[test]
    fn decode_errors_do_not_quote_the_address() {
        let text = String::from_utf8(encode(&entry(b"x")).unwrap()).unwrap();
        let bad = text.replace("recipient = \"alice@example.com\"", "recipient = alice@example.com");
        let err = decode(bad.as_bytes()).unwrap_err();
        assert!(!err.contains("alice"), "{err}");
    }

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

    #[test]
    fn retry_delay_doubles_up_to_the_cap() {
        let s = Duration::from_secs;
        assert_eq!(retry_delay(s(60), 1), s(60));
        assert_eq!(retry_delay(s(60), 2), s(120));
        assert_eq!(retry_delay(s(60), 5), s(960));
        assert_eq!(retry_delay(s(60), 6), MAX_RETRY_INTERVAL);
        assert_eq!(retry_delay(s(60), u32::MAX), MAX_RETRY_INTERVAL);
        assert_eq!(retry_delay(s(7200), 3), s(7200));
    }

    #[test]
    fn smtp_data_has_crlf_and_no_final_line_end() {
        assert_eq!(to_smtp_data(b"a\nb\r\n.c\n"), b"a\r\nb\r\n.c");
        assert_eq!(to_smtp_data(b"a\r\n\r\n"), b"a\r\n");
        assert_eq!(to_smtp_data(b"a"), b"a");
    }

    #[test]
    fn redacts_addresses() {
        assert_eq!(
            redact("5.1.1 <alice@example.com>: Recipient address rejected"),
            "5.1.1 <redacted> Recipient address rejected"
        );
    }

    #[test]
    fn entry_debug_hides_the_address() {
        assert!(!format!("{:?}", entry(b"x")).contains("alice"));
    }

    fn config(port: u16) -> OutboxConfig {
        OutboxConfig {
            relay: Relay { host: "127.0.0.1".into(), port },
            retry_interval: Duration::from_secs(1),
            lifetime: Duration::from_secs(3600),
            smtp_timeout: SMTP_TIMEOUT,
            helo_name: "test.example".into(),
        }
    }

    #[tokio::test]
    async fn silent_relay_times_out_as_temporary() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let _hold = tokio::spawn(async move {
            let (_conn, _) = listener.accept().await.unwrap();
            std::future::pending::<()>().await;
        });
        let r = deliver(&config(port), &entry(b"x"), Duration::from_millis(200), None).await;
        assert!(
            matches!(r, Err(Failure::Send(SendError::Temporary(ref s))) if s.contains("timed out")),
            "{r:?}"
        );
    }

    #[tokio::test]
    async fn invalid_recipient_is_permanent() {
        let mut e = entry(b"x");
        e.recipient = "not an address".into();
        let r = send_one(&config(1), &e).await;
        assert!(matches!(r, Err(SendError::Permanent(_))), "{r:?}");
    }

    #[tokio::test]
    async fn stop_before_data_abandons_the_attempt() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let _hold = tokio::spawn(async move {
            let (_conn, _) = listener.accept().await.unwrap();
            std::future::pending::<()>().await;
        });
        let (tx, rx) = watch::channel(false);
        let cfg = config(port);
        let e = entry(b"x");
        let attempt = deliver(&cfg, &e, Duration::from_secs(30), Some(&rx));
        let stopper = async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            tx.send(true).unwrap();
        };
        let (r, ()) = tokio::time::timeout(Duration::from_secs(5), async { tokio::join!(attempt, stopper) })
            .await
            .expect("the stop signal must end the attempt");
        assert!(matches!(r, Err(Failure::Stopped)), "{r:?}");
    }
}

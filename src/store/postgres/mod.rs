//! The shared store: one PostgreSQL server that every mail host of one Help Desk points at
//! (`[state] backend = "postgresql://..."`), holding what the embedded store holds on one host,
//! with the same keyed hashes, expiry and retention: the answered senders, the replies of the
//! last hour (the caps), the topic replies, and the statistics.
//!
//! - The check-and-set of a reply is one transaction under one advisory lock that every host
//!   takes (`pg_advisory_xact_lock`), so that two hosts deciding for one sender, or near a cap,
//!   at the same moment decide one after the other: the caps are global, and a row lock on the
//!   sender alone would not serialise two senders near the cap. Decisions are only taken for new
//!   support requests, a few a minute, so the lock is never contended for long; and one that
//!   suppresses is settled before, by a read without the lock ([`Shared::peek`]).
//! - The counts are written under another advisory lock, so that two hosts agree on one key per
//!   week and never both reduce a week; the milter's decisions never wait for them.
//! - The server keeps the fingerprint of the HMAC secret (`meta`), never the secret: a host with
//!   another secret is refused (it would answer everyone the other hosts answered).
//! - Nothing here blocks the milter: the caller waits at most `[state] timeout`; the work runs in
//!   a task of its own, which undoes a reservation the caller gave up on (see [`Look`]).
//!
//! The pool (deadpool-postgres) connects lazily: the daemon starts, and mail flows, while the
//! server is down; the schema and the fingerprint are checked at the first connection, and again
//! after each outage.

mod counts;
mod sql;

pub use counts::read_counts;

use super::keys::Key;
use super::{Batch, Recorded, Reservation, StoreError};
use crate::metrics::{self, StoreFailure};
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::time::{Instant, timeout, timeout_at};
use tracing::{error, info, warn};

/// The longest the work behind one call may run on, after its caller gave up: then its
/// connection is dropped. The server's own limits (`SERVER_OPTIONS`) end it there too.
const BACKGROUND_LIMIT: Duration = Duration::from_secs(10);
/// The longest a write of counts, or a purge, may take (off the milter's path).
const WRITE_LIMIT: Duration = Duration::from_secs(10);
/// Connections kept per host: a few decisions and the statistics writer at once.
const POOL_SIZE: usize = 8;
/// Session settings: the server ends a statement, a lock wait or an idle transaction that takes
/// too long, so that a host that hangs (or dies) mid-transaction never holds the lock for long.
const SERVER_OPTIONS: &str =
    "-c statement_timeout=5000 -c lock_timeout=5000 -c idle_in_transaction_session_timeout=10000";

/// What the server says about one sender at one moment, read under the lock.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Seen {
    /// The sender got a first reply whose interval is not over.
    pub answered: bool,
    /// Replies of the last hour, all senders, all hosts.
    pub last_hour: u32,
    /// Replies of the last hour to the sender's domain.
    pub domain_last_hour: u32,
    /// The hot topics asked about that a reply of the interval already led with.
    pub pointed: Vec<String>,
}

/// The shared store of one daemon: a pool of connections to the server.
pub struct Shared {
    /// None when the URL or the password file cannot be used (`setup_error` says why).
    pool: Option<Pool>,
    setup_error: Option<String>,
    /// The fingerprint of this host's secret; None: the secret is unusable, so only the counts
    /// are written (they use no secret) and the reply state stays off.
    fingerprint: Option<String>,
    timeout: Duration,
    /// `host:port/database`, for the log.
    name: String,
    /// Whether the schema and the fingerprint were checked since the last failure.
    verified: AtomicBool,
    /// Why the server refuses this host for good (another secret, another schema).
    refused: Mutex<Option<String>>,
    health: Health,
}

impl Shared {
    /// The store at `url`, with the password in `password_file`. Connects at first use; a URL
    /// or password file that cannot be used gives a store whose every call fails (and says why).
    pub fn new(
        url: &str,
        password_file: Option<&Path>,
        fingerprint: Option<String>,
        timeout: Duration,
    ) -> Shared {
        let name = describe(url);
        let built = pg_config(url, password_file, Duration::from_secs(5)).and_then(|cfg| {
            let manager = Manager::from_config(
                cfg,
                tls()?,
                // No query on recycling: a transaction dropped half way (its caller gave up) is
                // rolled back by tokio-postgres, in order before anyone else's statements on the
                // connection; a closed connection is replaced.
                ManagerConfig { recycling_method: RecyclingMethod::Fast },
            );
            Pool::builder(manager)
                .max_size(POOL_SIZE)
                .runtime(Runtime::Tokio1)
                .wait_timeout(Some(timeout))
                .create_timeout(Some(Duration::from_secs(5)))
                .recycle_timeout(Some(timeout))
                .build()
                .map_err(|e| StoreError(format!("the shared store {name}: {e}")))
        });
        let (pool, setup_error) = match built {
            Ok(p) => (Some(p), None),
            Err(e) => (None, Some(e.0)),
        };
        Shared {
            pool,
            setup_error,
            fingerprint,
            timeout,
            name,
            verified: AtomicBool::new(false),
            refused: Mutex::new(None),
            health: Health::default(),
        }
    }

    /// Connects in the background, so that the first message does not wait for the connection
    /// and the schema's check; a failure here is the outage's first (and only) warning.
    pub fn warm_up(self: &Arc<Self>) {
        let me = self.clone();
        tokio::spawn(async move {
            match timeout(WRITE_LIMIT, me.client()).await {
                Ok(Ok(_)) => me.ok(),
                Ok(Err(e)) => me.failed(StoreFailure::Error, &e.0),
                Err(_) => me.failed(StoreFailure::Timeout, "no connection"),
            }
        });
    }

    /// Where the store is, for the log: `host:port/database`, no user or password.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the reply state may use this store (this host's secret is usable).
    pub fn has_fingerprint(&self) -> bool {
        self.fingerprint.is_some()
    }

    /// A connection, its server checked (schema, fingerprint) once since the last failure.
    async fn client(&self) -> Result<Object, StoreError> {
        if let Some(e) = &self.setup_error {
            return Err(StoreError(e.clone()));
        }
        if let Some(why) = self.refused.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            return Err(StoreError(why));
        }
        let Some(pool) = &self.pool else { return Err(StoreError("no pool".into())) };
        let mut client = pool.get().await.map_err(|e| StoreError(format!("{}: {e}", self.name)))?;
        if !self.verified.load(Ordering::Acquire) {
            match sql::init(&mut client, self.fingerprint.as_deref()).await {
                Ok(()) => self.verified.store(true, Ordering::Release),
                Err(sql::InitError::Refused(why)) => {
                    error!("the shared store {} refuses this host: {why}", self.name);
                    metrics::store_up(false);
                    *self.refused.lock().unwrap_or_else(|p| p.into_inner()) = Some(why.clone());
                    return Err(StoreError(why));
                }
                Err(sql::InitError::Failed(e)) => return Err(StoreError(format!("{}: {e}", self.name))),
            }
        }
        Ok(client)
    }

    /// What the server knows of the sender, read without the lock, within `[state] timeout`: it
    /// settles the decisions that suppress (see `ReplyState::decide_shared`) in one round trip.
    pub async fn peek(&self, key: Key, domain: Key, now: u64, hot: Vec<String>) -> Result<Seen, StoreError> {
        if self.fingerprint.is_none() {
            return Err(StoreError("this host's secret is unusable".into()));
        }
        let ask = Ask { key, domain, now, hot };
        // Dropped on a timeout: a read outside a transaction leaves nothing behind.
        let read = async {
            let client = self.client().await?;
            sql::peek(&client, &ask).await.map_err(|e| self.error(e))
        };
        match timeout(self.timeout, read).await {
            Ok(Ok(seen)) => {
                self.ok();
                Ok(seen)
            }
            Ok(Err(e)) => {
                self.failed(StoreFailure::Error, &e.0);
                Err(e)
            }
            Err(_) => Err(self.timed_out()),
        }
    }

    /// The first half of the check-and-set for one sender: what the server knows of it, read
    /// under the lock, within `[state] timeout` of now. [`Look::reserve`] ends it.
    pub async fn look(
        self: &Arc<Self>,
        key: Key,
        domain: Key,
        now: u64,
        hot: Vec<String>,
    ) -> Result<Look, StoreError> {
        let deadline = Instant::now() + self.timeout;
        if self.fingerprint.is_none() {
            return Err(StoreError("this host's secret is unusable".into()));
        }
        let (seen_tx, seen_rx) = oneshot::channel();
        let (verdict_tx, verdict_rx) = oneshot::channel();
        let (done_tx, done_rx) = oneshot::channel();
        let me = self.clone();
        tokio::spawn(async move {
            let ask = Ask { key, domain, now, hot };
            let work = me.clone().check_and_set(ask, seen_tx, verdict_rx, done_tx);
            // Past the limit the work is dropped: its transaction is rolled back.
            if timeout(BACKGROUND_LIMIT, work).await.is_err() {
                me.failed(StoreFailure::Timeout, "a call ran past its limit in the background");
            }
        });
        let seen = match timeout_at(deadline, seen_rx).await {
            Ok(Ok(Ok(seen))) => seen,
            Ok(Ok(Err(e))) => return Err(e),
            Ok(Err(_)) => return Err(StoreError("the shared store's task ended".into())),
            Err(_) => return Err(self.timed_out()),
        };
        Ok(Look { seen, deadline, verdict: verdict_tx, done: done_rx, store: self.clone() })
    }

    /// The check-and-set on the server; runs in a task of its own (see [`Look`]).
    async fn check_and_set(
        self: Arc<Self>,
        ask: Ask,
        seen_tx: oneshot::Sender<Result<Seen, StoreError>>,
        verdict_rx: oneshot::Receiver<Option<Reservation>>,
        done_tx: oneshot::Sender<Result<(), StoreError>>,
    ) {
        let mut client = match self.client().await {
            Ok(c) => c,
            Err(e) => {
                self.failed(StoreFailure::Error, &e.0);
                let _ = seen_tx.send(Err(e));
                return;
            }
        };
        let reserved = match sql::check_and_set(&mut client, &ask, seen_tx, verdict_rx).await {
            Ok(r) => r,
            Err(sql::StepError { e, before_seen }) => {
                let e = self.error(e);
                self.failed(StoreFailure::Error, &e.0);
                // Told through the channel the caller waits on (one of them is gone already).
                match before_seen {
                    Some(tx) => drop(tx.send(Err(e))),
                    None => drop(done_tx.send(Err(e))),
                }
                return;
            }
        };
        self.ok();
        let Some(r) = reserved else { return };
        if done_tx.send(Ok(())).is_err() {
            // The caller gave up before the commit was known: it sends no reply, so the
            // reservation is undone, lest the sender get none for a whole interval.
            drop(client);
            if let Err(e) = self.release(&r).await {
                warn!("a reservation the milter gave up on could not be undone: {e}");
            }
        }
    }

    /// Undoes a reservation on the server (its reply was not queued after all).
    pub async fn release(&self, r: &Reservation) -> Result<(), StoreError> {
        self.limited(async {
            let mut c = self.client().await?;
            sql::release(&mut c, r).await.map_err(|e| self.error(e))
        })
        .await
    }

    /// Drops what has expired, and the oldest senders past `max_entries`; returns how many
    /// senders went.
    pub async fn purge(&self, now: u64, max_entries: usize) -> Result<usize, StoreError> {
        self.limited(async {
            let mut c = self.client().await?;
            sql::purge(&mut c, now, max_entries).await.map_err(|e| self.error(e))
        })
        .await
    }

    /// Adds one batch of counts, reduces the weeks that are over and purges what is past the
    /// retention, in one transaction (the semantics of `sqlite::Embedded::add_counts`).
    pub async fn add_counts(
        &self,
        batch: &Batch,
        now: u64,
        first_day_kept: u32,
    ) -> Result<Recorded, StoreError> {
        self.limited(async {
            let mut c = self.client().await?;
            counts::add(&mut c, batch, now, first_day_kept).await
        })
        .await
    }

    /// One call off the milter's path, within [`WRITE_LIMIT`]; its outcome tells the health.
    async fn limited<T>(&self, work: impl Future<Output = Result<T, StoreError>>) -> Result<T, StoreError> {
        match timeout(WRITE_LIMIT, work).await {
            Ok(Ok(v)) => {
                self.ok();
                Ok(v)
            }
            Ok(Err(e)) => {
                self.failed(StoreFailure::Error, &e.0);
                Err(e)
            }
            Err(_) => {
                let e = format!("{}: no answer within {WRITE_LIMIT:?}", self.name);
                self.failed(StoreFailure::Timeout, &e);
                Err(StoreError(e))
            }
        }
    }

    fn error(&self, e: tokio_postgres::Error) -> StoreError {
        StoreError(format!("{}: {e}", self.name))
    }

    /// The caller waited `[state] timeout` in vain.
    fn timed_out(&self) -> StoreError {
        let e = format!("{}: no answer within {:?}", self.name, self.timeout);
        self.failed(StoreFailure::Timeout, &e);
        StoreError(e)
    }

    /// A call failed: said once per outage, counted every time.
    fn failed(&self, kind: StoreFailure, why: &str) {
        metrics::store_failure(kind);
        // Checked again at the next connection: the server may have been replaced meanwhile.
        self.verified.store(false, Ordering::Release);
        if self.health.set_down(true) {
            metrics::store_up(false);
            warn!(
                "the shared store {} cannot be used ({why}): until it is back, no auto-reply is sent (suppressed (store)) and the counts wait in memory; mail flows as usual",
                self.name
            );
        }
    }

    /// A call succeeded.
    fn ok(&self) {
        if self.health.set_down(false) || !self.health.seen_up.swap(true, Ordering::AcqRel) {
            metrics::store_up(true);
            info!("the shared store {} is in use", self.name);
        }
    }
}

/// Whether the store works, for saying once when it fails and once when it is back.
#[derive(Default)]
struct Health {
    down: AtomicBool,
    seen_up: AtomicBool,
}

impl Health {
    /// Sets the state; true when it changed.
    fn set_down(&self, down: bool) -> bool {
        self.down.swap(down, Ordering::AcqRel) != down
    }
}

/// One check-and-set, as the task runs it.
pub(super) struct Ask {
    key: Key,
    domain: Key,
    now: u64,
    hot: Vec<String>,
}

/// The check-and-set half way: the server's view of the sender, with the lock held by the task
/// that read it. [`Look::reserve`] tells it what was decided.
///
/// The caller never waits past its deadline. Should it give up before the task has committed,
/// the task either rolls back (the decision never reached it) or, having committed, finds no
/// one to tell and undoes the reservation: either way, no reply and no reservation.
pub struct Look {
    pub seen: Seen,
    deadline: Instant,
    verdict: oneshot::Sender<Option<Reservation>>,
    done: oneshot::Receiver<Result<(), StoreError>>,
    store: Arc<Shared>,
}

impl Look {
    /// Records `reservation` (None: nothing to record, the lock is let go), within the deadline.
    pub async fn reserve(self, reservation: Option<Reservation>) -> Result<(), StoreError> {
        let wanted = reservation.is_some();
        if self.verdict.send(reservation).is_err() {
            return Err(StoreError("the shared store's task ended".into()));
        }
        if !wanted {
            return Ok(());
        }
        let mut done = self.done;
        match timeout_at(self.deadline, &mut done).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(StoreError("the shared store's task ended".into())),
            Err(_) => {
                // Closed first, so that a commit that lands now is either seen here or undone
                // by the task, never both nor neither.
                done.close();
                match done.try_recv() {
                    Ok(r) => r,
                    Err(_) => Err(self.store.timed_out()),
                }
            }
        }
    }
}

/// The connection settings: the URL, the password from its file, the timeouts.
fn pg_config(
    url: &str,
    password_file: Option<&Path>,
    connect_timeout: Duration,
) -> Result<tokio_postgres::Config, StoreError> {
    let mut cfg: tokio_postgres::Config =
        url.parse().map_err(|e| StoreError(format!("state.backend {}: {e}", describe(url))))?;
    if let Some(path) = password_file {
        let text = std::fs::read_to_string(path).map_err(|e| StoreError::at("cannot read", path, e))?;
        cfg.password(text.trim_end_matches(['\n', '\r']));
    }
    cfg.application_name("helpdesk-milter").connect_timeout(connect_timeout).options(SERVER_OPTIONS);
    Ok(cfg)
}

/// Whether `url` is one the daemon can use: for `check`, which must not need the server.
pub fn check_url(url: &str) -> Result<(), String> {
    url.parse::<tokio_postgres::Config>().map(drop).map_err(|e| format!("state.backend: {e}"))
}

/// TLS with the host's certificate authorities (`/etc/ssl/certs`), used when the URL's `sslmode`
/// asks for it (`prefer`, the default, when the server offers it; `require`). The server's
/// certificate and name are always verified.
fn tls() -> Result<tokio_postgres_rustls::MakeRustlsConnect, StoreError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError(format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// `host:port/database` of a URL, without its user.
fn describe(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.split('?').next().unwrap_or(rest);
    rest.rsplit_once('@').map_or(rest, |(_, r)| r).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_names_the_server_and_never_the_user() {
        assert_eq!(
            describe("postgresql://helpdesk@db.example.org:5433/hd?sslmode=require"),
            "db.example.org:5433/hd"
        );
        assert_eq!(describe("postgres://db/hd"), "db/hd");
    }

    #[test]
    fn a_url_is_checked_without_the_server() {
        assert!(check_url("postgresql://helpdesk@db.example.org/helpdesk?sslmode=require").is_ok());
        assert!(check_url("postgresql://helpdesk@db/helpdesk?sslmode=verify-full").is_err());
        assert!(check_url("postgresql://helpdesk@db/helpdesk?nonsense=1").is_err());
    }

    #[test]
    fn the_password_comes_from_its_file_without_the_newline() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "s3cret\n").unwrap();
        let cfg = pg_config("postgresql://hd@db/hd", Some(&file), Duration::from_secs(1)).unwrap();
        assert_eq!(cfg.get_password(), Some(&b"s3cret"[..]));
        let e = pg_config("postgresql://hd@db/hd", Some(&dir.path().join("none")), Duration::from_secs(1));
        assert!(e.unwrap_err().0.contains("cannot read"));
    }

    #[tokio::test]
    async fn a_store_that_cannot_be_set_up_fails_every_call_and_says_why() {
        let s = Arc::new(Shared::new(
            "postgresql://hd@db/hd?sslmode=bogus",
            None,
            Some("f".into()),
            Duration::from_millis(50),
        ));
        let e = s.look([0; 32], [1; 32], 0, vec![]).await.err().unwrap();
        assert!(e.0.contains("state.backend db/hd: invalid"), "{e}");
    }
}

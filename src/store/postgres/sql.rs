//! The reply state on the server: the schema and its check, the check-and-set, release, purge.

use super::{Ask, Seen, StoreError};
use crate::store::Reservation;
use deadpool_postgres::{GenericClient, Object, Transaction};
use tokio::sync::oneshot;
use tokio_postgres::Error;

/// The advisory lock of the reply decisions, taken by every host for each check-and-set.
const DECIDE_LOCK: i64 = 0x6864_6d69_6c74_0001;
/// The advisory lock of the counts (one key per week, one reduction of each week).
pub(super) const COUNTS_LOCK: i64 = 0x6864_6d69_6c74_0002;
/// The advisory lock of the schema's creation and the fingerprint's first write.
const SCHEMA_LOCK: i64 = 0x6864_6d69_6c74_0003;

const HOUR: i64 = 3600;
const SCHEMA_VERSION: &str = "1";

/// Every table, created by the first host that connects. The same rows as the embedded store
/// (`store::sqlite`): keyed hashes, times, counts; never an address, Subject or Message-ID.
/// `reservation` is a random number per reply, so that a reply that was not sent after all is
/// undone exactly, whichever host made it.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS answered (sender BYTEA PRIMARY KEY, expiry BIGINT NOT NULL,
    reservation BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS replies_sent (at BIGINT NOT NULL, domain BYTEA NOT NULL, sender BYTEA NOT NULL,
    reservation BIGINT NOT NULL);
CREATE INDEX IF NOT EXISTS replies_sent_at ON replies_sent (at);
CREATE TABLE IF NOT EXISTS topic_replies (sender BYTEA NOT NULL, topic TEXT NOT NULL,
    expiry BIGINT NOT NULL, reservation BIGINT NOT NULL, PRIMARY KEY (sender, topic));
CREATE TABLE IF NOT EXISTS messages (day INTEGER NOT NULL, class TEXT NOT NULL, topics TEXT NOT NULL,
    encrypted BOOLEAN NOT NULL, decision TEXT NOT NULL, count BIGINT NOT NULL,
    PRIMARY KEY (day, class, topics, encrypted, decision));
CREATE TABLE IF NOT EXISTS week_keys (week TEXT PRIMARY KEY, key BYTEA NOT NULL);
CREATE TABLE IF NOT EXISTS writers (week TEXT NOT NULL, kind TEXT NOT NULL, name TEXT NOT NULL,
    writer BYTEA NOT NULL, PRIMARY KEY (week, kind, name, writer));
CREATE TABLE IF NOT EXISTS people (week TEXT NOT NULL, kind TEXT NOT NULL, name TEXT NOT NULL,
    count BIGINT NOT NULL, PRIMARY KEY (week, kind, name));
CREATE TABLE IF NOT EXISTS reports (id TEXT PRIMARY KEY, day INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS report_topics (id TEXT NOT NULL, topic TEXT NOT NULL, day INTEGER NOT NULL,
    PRIMARY KEY (id, topic));
";

/// What the server says about the sender, under the lock.
const SEEN: &str = "SELECT EXISTS (SELECT 1 FROM answered WHERE sender = $1::bytea AND expiry > $2::int8),
    (SELECT count(*) FROM replies_sent WHERE at > $3::int8),
    (SELECT count(*) FROM replies_sent WHERE at > $3::int8 AND domain = $4::bytea),
    ARRAY(SELECT topic FROM topic_replies WHERE sender = $1::bytea AND expiry > $2::int8 AND topic = ANY($5::text[]))";

/// One reply recorded: the sender (a first reply), its place in the caps, its topics.
const RESERVE: &str = "WITH a AS (
    INSERT INTO answered (sender, expiry, reservation) SELECT $1::bytea, $2::int8, $5::int8 WHERE $6::bool
    ON CONFLICT (sender) DO UPDATE SET expiry = GREATEST(answered.expiry, excluded.expiry),
        reservation = excluded.reservation
), t AS (
    INSERT INTO topic_replies (sender, topic, expiry, reservation)
    SELECT $1::bytea, topic, $2::int8, $5::int8 FROM unnest($7::text[]) AS topic
    ON CONFLICT (sender, topic) DO UPDATE SET expiry = GREATEST(topic_replies.expiry, excluded.expiry),
        reservation = excluded.reservation
)
INSERT INTO replies_sent (at, domain, sender, reservation) VALUES ($3::int8, $4::bytea, $1::bytea, $5::int8)";

const RELEASE: &str = "WITH a AS (DELETE FROM answered WHERE sender = $1::bytea AND reservation = $2::int8),
    t AS (DELETE FROM topic_replies WHERE sender = $1::bytea AND reservation = $2::int8)
DELETE FROM replies_sent WHERE sender = $1::bytea AND reservation = $2::int8";

const PURGE_EXPIRED: &str = "WITH a AS (DELETE FROM answered WHERE expiry <= $1::int8 RETURNING 1),
    t AS (DELETE FROM topic_replies WHERE expiry <= $1::int8),
    r AS (DELETE FROM replies_sent WHERE at <= $1::int8 - 3600)
SELECT count(*) FROM a";

/// The oldest senders past `max_entries`, and their topics.
const PURGE_EXCESS: &str = "WITH old AS (
    SELECT sender FROM answered ORDER BY expiry, sender
    LIMIT GREATEST((SELECT count(*) FROM answered) - $1::int8, 0)
), gone AS (DELETE FROM answered WHERE sender IN (SELECT sender FROM old) RETURNING sender),
    t AS (DELETE FROM topic_replies WHERE sender IN (SELECT sender FROM gone))
SELECT count(*) FROM gone";

pub(super) fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Why the server cannot be used.
pub(super) enum InitError {
    /// For good, until the sysadmin acts: another secret, another schema.
    Refused(String),
    /// For now: the connection or a statement failed.
    Failed(Error),
}

impl From<Error> for InitError {
    fn from(e: Error) -> InitError {
        InitError::Failed(e)
    }
}

/// Creates the schema if it is not there, and checks its version and the secret's fingerprint
/// (stored by the first host; None: the counts only, no check).
pub(super) async fn init(client: &mut Object, fingerprint: Option<&str>) -> Result<(), InitError> {
    // Once the schema is there, one read does (the check is repeated after each outage, while
    // the milter waits).
    let known = "SELECT name, value FROM meta WHERE name IN ('schema', 'fingerprint')";
    if let Ok(rows) = client.query(known, &[]).await {
        let value = |n: &str| rows.iter().find(|r| r.get::<_, &str>(0) == n).map(|r| r.get::<_, String>(1));
        if value("schema").as_deref() == Some(SCHEMA_VERSION)
            && fingerprint.is_none_or(|f| value("fingerprint").as_deref() == Some(f))
        {
            return Ok(());
        }
    }
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK]).await?;
    tx.batch_execute(SCHEMA).await?;
    let version = first_value(&tx, "schema", SCHEMA_VERSION).await?;
    if version != SCHEMA_VERSION {
        return Err(InitError::Refused(format!(
            "its schema is version {version}, this daemon knows {SCHEMA_VERSION}: run the daemon version that wrote it"
        )));
    }
    if let Some(mine) = fingerprint {
        let theirs = first_value(&tx, "fingerprint", mine).await?;
        if theirs != mine {
            return Err(InitError::Refused(format!(
                "this host's secret (fingerprint {mine}) is not the one the other hosts of this store use (fingerprint {theirs}): \
                 copy the file `secret` of the state directory of a host that uses the store to this host's state directory \
                 (mode 0600, owned by the daemon's user), then restart the daemon; until then it sends no auto-reply"
            )));
        }
    }
    tx.commit().await?;
    Ok(())
}

/// The value of `meta.name`, written as `value` if it has none yet.
async fn first_value(tx: &Transaction<'_>, name: &str, value: &str) -> Result<String, Error> {
    tx.execute(
        "INSERT INTO meta (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        &[&name, &value],
    )
    .await?;
    Ok(tx.query_one("SELECT value FROM meta WHERE name = $1", &[&name]).await?.get(0))
}

/// A step of the check-and-set failed; `before_seen` is the caller's channel when it is still
/// waiting for the view.
pub(super) struct StepError {
    pub e: Error,
    pub before_seen: Option<oneshot::Sender<Result<Seen, StoreError>>>,
}

/// The check-and-set: the lock, the view (sent to the caller), the caller's verdict, the record.
/// Returns the reservation committed, if any.
pub(super) async fn check_and_set(
    client: &mut Object,
    ask: &Ask,
    seen_tx: oneshot::Sender<Result<Seen, StoreError>>,
    verdict_rx: oneshot::Receiver<Option<Reservation>>,
) -> Result<Option<Reservation>, StepError> {
    let (tx, seen) = match look(client, ask).await {
        Ok(v) => v,
        Err(e) => return Err(StepError { e, before_seen: Some(seen_tx) }),
    };
    if seen_tx.send(Ok(seen)).is_err() {
        // The caller gave up: the transaction is rolled back as it is dropped.
        return Ok(None);
    }
    let Ok(Some(r)) = verdict_rx.await else {
        // Nothing to record: dropped, the transaction is rolled back without a wait.
        return Ok(None);
    };
    let after = |e| StepError { e, before_seen: None };
    let stmt = tx.prepare_cached(RESERVE).await.map_err(after)?;
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 7] =
        [&&r.key[..], &i64_of(r.expiry), &i64_of(r.at), &&r.domain[..], &r.id, &r.first, &r.topics];
    tx.execute(&stmt, &params).await.map_err(after)?;
    tx.commit().await.map_err(after)?;
    Ok(Some(r))
}

/// Takes the lock and reads the view of the sender.
async fn look<'a>(client: &'a mut Object, ask: &Ask) -> Result<(Transaction<'a>, Seen), Error> {
    let tx = client.transaction().await?;
    let lock = tx.prepare_cached("SELECT pg_advisory_xact_lock($1)").await?;
    // Sent together, one wait: the server runs them in order, so the view's snapshot is taken
    // once the lock is held.
    let ((), seen) =
        tokio::try_join!(async { tx.execute(&lock, &[&DECIDE_LOCK]).await.map(drop) }, read_seen(&tx, ask))?;
    Ok((tx, seen))
}

/// The view of the sender without the lock and outside a transaction: one round trip.
pub(super) async fn peek(client: &Object, ask: &Ask) -> Result<Seen, Error> {
    read_seen(client, ask).await
}

async fn read_seen(c: &impl GenericClient, ask: &Ask) -> Result<Seen, Error> {
    let stmt = c.prepare_cached(SEEN).await?;
    let (now, key, domain) = (i64_of(ask.now), &ask.key[..], &ask.domain[..]);
    let hour_ago = now - HOUR;
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 5] = [&key, &now, &hour_ago, &domain, &ask.hot];
    let row = c.query_one(&stmt, &params).await?;
    let count = |i: usize| u32::try_from(row.get::<_, i64>(i)).unwrap_or(u32::MAX);
    Ok(Seen { answered: row.get(0), last_hour: count(1), domain_last_hour: count(2), pointed: row.get(3) })
}

/// Undoes the rows of one reservation.
pub(super) async fn release(client: &mut Object, r: &Reservation) -> Result<(), Error> {
    let stmt = client.prepare_cached(RELEASE).await?;
    client.execute(&stmt, &[&&r.key[..], &r.id]).await?;
    Ok(())
}

/// Drops expired entries, then the oldest senders past `max_entries`; how many senders went.
pub(super) async fn purge(client: &mut Object, now: u64, max_entries: usize) -> Result<usize, Error> {
    let tx = client.transaction().await?;
    let expired: i64 = tx.query_one(PURGE_EXPIRED, &[&i64_of(now)]).await?.get(0);
    let max = i64::try_from(max_entries).unwrap_or(i64::MAX);
    let dropped: i64 = tx.query_one(PURGE_EXCESS, &[&max]).await?.get(0);
    tx.commit().await?;
    Ok(usize::try_from(expired + dropped).unwrap_or(0))
}

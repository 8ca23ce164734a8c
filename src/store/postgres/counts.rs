//! The statistics on the server: the semantics of `store::sqlite`'s counts, with several hosts
//! writing at once. Each write holds the counts' advisory lock, so that the hosts agree on one
//! key per week, and a week is reduced once.

use super::sql::{COUNTS_LOCK, i64_of};
use super::{StoreError, pg_config, tls};
use crate::store::keys::keyed;
use crate::store::sqlite::{week_ends_before, week_is_over};
use crate::store::{Batch, CountsData, PeopleRow, Recorded, Row};
use deadpool_postgres::{Object, Transaction};
use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;
use tokio_postgres::Error;
use tokio_postgres::types::ToSql;

type Param<'a> = &'a (dyn ToSql + Sync);

fn day(d: u32) -> i32 {
    i32::try_from(d).unwrap_or(i32::MAX)
}

/// Adds one batch, reduces the weeks that are over, purges what is past the retention.
pub(super) async fn add(
    client: &mut Object,
    batch: &Batch,
    now: u64,
    first_day_kept: u32,
) -> Result<Recorded, StoreError> {
    // The keys a week would get if it has none yet, drawn before the transaction.
    let mut fresh = HashMap::new();
    for (week, ..) in &batch.writers {
        if !fresh.contains_key(week) {
            let mut k = vec![0u8; 32];
            getrandom::fill(&mut k).map_err(|e| StoreError(format!("no randomness: {e}")))?;
            fresh.insert(week.clone(), k);
        }
    }
    let run = async {
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&COUNTS_LOCK]).await?;
        add_messages(&tx, batch).await?;
        add_writers(&tx, batch, &fresh).await?;
        add_reports(&tx, batch).await?;
        let reduced = reduce(&tx, now).await?;
        let purged = purge(&tx, first_day_kept).await?;
        tx.commit().await?;
        Ok::<_, Error>(Recorded { purged, reduced })
    };
    run.await.map_err(|e| StoreError(format!("cannot write the statistics: {e}")))
}

async fn add_messages(tx: &Transaction<'_>, batch: &Batch) -> Result<(), Error> {
    if batch.messages.is_empty() {
        return Ok(());
    }
    let (mut days, mut classes, mut topics, mut encrypted, mut decisions, mut counts) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    for (row, n) in &batch.messages {
        days.push(day(row.day));
        classes.push(row.class.as_str());
        topics.push(row.topics.join(","));
        encrypted.push(row.encrypted);
        decisions.push(row.decision.as_str());
        counts.push(i64_of(*n));
    }
    let stmt = tx
        .prepare_cached(
            "INSERT INTO messages (day, class, topics, encrypted, decision, count)
             SELECT * FROM unnest($1::int4[], $2::text[], $3::text[], $4::bool[], $5::text[], $6::int8[])
             ON CONFLICT (day, class, topics, encrypted, decision) DO UPDATE SET count = messages.count + excluded.count",
        )
        .await?;
    let params: [Param<'_>; 6] = [&days, &classes, &topics, &encrypted, &decisions, &counts];
    tx.execute(&stmt, &params).await?;
    Ok(())
}

/// The writers, each as its keyed hash under its week's own key (created once, by whichever
/// host comes first).
async fn add_writers(
    tx: &Transaction<'_>,
    batch: &Batch,
    fresh: &HashMap<String, Vec<u8>>,
) -> Result<(), Error> {
    if batch.writers.is_empty() {
        return Ok(());
    }
    let key_stmt = tx
        .prepare_cached(
            "INSERT INTO week_keys (week, key) VALUES ($1, $2) ON CONFLICT (week) DO UPDATE SET key = week_keys.key RETURNING key",
        )
        .await?;
    let mut keys: HashMap<&str, Vec<u8>> = HashMap::new();
    for (week, fresh_key) in fresh {
        let key: Vec<u8> = tx.query_one(&key_stmt, &[week, fresh_key]).await?.get(0);
        keys.insert(week.as_str(), key);
    }
    let (mut weeks, mut kinds, mut names, mut hashes) = (vec![], vec![], vec![], vec![]);
    for (week, kind, name, writer) in &batch.writers {
        let Some(key) = keys.get(week.as_str()) else { continue };
        weeks.push(week.as_str());
        kinds.push(kind.as_str());
        names.push(name.as_str());
        hashes.push(keyed(key, writer.hashed_form().as_bytes()).to_vec());
    }
    let stmt = tx
        .prepare_cached(
            "INSERT INTO writers (week, kind, name, writer)
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[]) ON CONFLICT DO NOTHING",
        )
        .await?;
    let params: [Param<'_>; 4] = [&weeks, &kinds, &names, &hashes];
    tx.execute(&stmt, &params).await?;
    Ok(())
}

/// WhisperBack report IDs and their tags, each once.
async fn add_reports(tx: &Transaction<'_>, batch: &Batch) -> Result<(), Error> {
    if !batch.reports.is_empty() {
        let (ids, days): (Vec<&str>, Vec<i32>) =
            batch.reports.iter().map(|(id, d)| (id.as_str(), day(*d))).unzip();
        let stmt = tx
            .prepare_cached(
                "INSERT INTO reports (id, day) SELECT * FROM unnest($1::text[], $2::int4[]) ON CONFLICT DO NOTHING",
            )
            .await?;
        tx.execute(&stmt, &[&ids, &days]).await?;
    }
    if !batch.tags.is_empty() {
        let (mut ids, mut topics, mut days) = (vec![], vec![], vec![]);
        for ((id, topic), d) in &batch.tags {
            ids.push(id.as_str());
            topics.push(topic.as_str());
            days.push(day(*d));
        }
        let stmt = tx
            .prepare_cached(
                "INSERT INTO report_topics (id, topic, day)
                 SELECT * FROM unnest($1::text[], $2::text[], $3::int4[]) ON CONFLICT DO NOTHING",
            )
            .await?;
        tx.execute(&stmt, &[&ids, &topics, &days]).await?;
    }
    Ok(())
}

/// Turns the writers of every week that is over into counts, and deletes them and the week's
/// key. Under the lock, so no other host reduces the same week.
async fn reduce(tx: &Transaction<'_>, now: u64) -> Result<usize, Error> {
    let stmt =
        tx.prepare_cached("SELECT week FROM week_keys UNION SELECT DISTINCT week FROM writers").await?;
    let over: Vec<String> = tx
        .query(&stmt, &[])
        .await?
        .iter()
        .map(|r| r.get::<_, String>(0))
        .filter(|w| week_is_over(w, now))
        .collect();
    if over.is_empty() {
        return Ok(0);
    }
    tx.execute(
        "INSERT INTO people (week, kind, name, count)
         SELECT week, kind, name, COUNT(*) FROM writers WHERE week = ANY($1) GROUP BY week, kind, name
         ON CONFLICT (week, kind, name) DO UPDATE SET count = people.count + excluded.count",
        &[&over],
    )
    .await?;
    tx.execute("DELETE FROM writers WHERE week = ANY($1)", &[&over]).await?;
    tx.execute("DELETE FROM week_keys WHERE week = ANY($1)", &[&over]).await?;
    Ok(over.len())
}

/// Removes the counts older than the retention.
async fn purge(tx: &Transaction<'_>, first_day_kept: u32) -> Result<usize, Error> {
    let stmt = tx
        .prepare_cached(
            "WITH m AS (DELETE FROM messages WHERE day < $1 RETURNING 1),
                 r AS (DELETE FROM reports WHERE day < $1 RETURNING 1),
                 t AS (DELETE FROM report_topics WHERE day < $1 RETURNING 1)
             SELECT (SELECT count(*) FROM m) + (SELECT count(*) FROM r) + (SELECT count(*) FROM t)",
        )
        .await?;
    let mut purged: i64 = tx.query_one(&stmt, &[&day(first_day_kept)]).await?.get(0);
    let weeks = tx.prepare_cached("SELECT DISTINCT week FROM people").await?;
    let old: Vec<String> = tx
        .query(&weeks, &[])
        .await?
        .iter()
        .map(|r| r.get::<_, String>(0))
        .filter(|w| week_ends_before(w, first_day_kept))
        .collect();
    if !old.is_empty() {
        purged +=
            i64::try_from(tx.execute("DELETE FROM people WHERE week = ANY($1)", &[&old]).await?).unwrap_or(0);
    }
    Ok(usize::try_from(purged).unwrap_or(0))
}

/// Everything `stats` reads, from the server, in one snapshot. A server that no daemon has
/// written to yet holds nothing.
pub fn read_counts(url: &str, password_file: Option<&Path>) -> Result<CountsData, StoreError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| StoreError(format!("cannot start: {e}")))?;
    let name = super::describe(url);
    runtime.block_on(async {
        let cfg = pg_config(url, password_file, Duration::from_secs(30))?;
        let (mut client, conn) = cfg
            .connect(tls()?)
            .await
            .map_err(|e| StoreError(format!("cannot read the statistics from {name}: {e}")))?;
        tokio::spawn(conn);
        read(&mut client)
            .await
            .map_err(|e| StoreError(format!("cannot read the statistics from {name}: {e}")))
    })
}

async fn read(client: &mut tokio_postgres::Client) -> Result<CountsData, Error> {
    let mut data = CountsData::default();
    let tx = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    let exists: bool = tx.query_one("SELECT to_regclass('messages') IS NOT NULL", &[]).await?.get(0);
    if !exists {
        return Ok(data);
    }
    for r in tx.query("SELECT day, class, topics, encrypted, decision, count FROM messages", &[]).await? {
        let topics: String = r.get(2);
        let row = Row {
            day: u32::try_from(r.get::<_, i32>(0)).unwrap_or(0),
            class: r.get(1),
            topics: topics.split(',').filter(|t| !t.is_empty()).map(str::to_string).collect(),
            encrypted: r.get(3),
            decision: r.get(4),
        };
        data.messages.push((row, u64::try_from(r.get::<_, i64>(5)).unwrap_or(0)));
    }
    let people = "SELECT week, kind, name, count FROM people
        UNION ALL SELECT week, kind, name, COUNT(*) FROM writers GROUP BY week, kind, name";
    for r in tx.query(people, &[]).await? {
        let count = u64::try_from(r.get::<_, i64>(3)).unwrap_or(0);
        data.people.push(PeopleRow { week: r.get(0), kind: r.get(1), name: r.get(2), count });
    }
    for r in tx.query("SELECT id, day FROM reports", &[]).await? {
        data.reports.push((r.get(0), u32::try_from(r.get::<_, i32>(1)).unwrap_or(0)));
    }
    let tags = "SELECT t.id, t.topic, COALESCE(r.day, t.day) FROM report_topics t LEFT JOIN reports r ON r.id = t.id";
    for r in tx.query(tags, &[]).await? {
        data.tags.push((r.get(0), r.get(1), u32::try_from(r.get::<_, i32>(2)).unwrap_or(0)));
    }
    Ok(data)
}

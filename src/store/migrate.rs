//! The stores of version 0.1, carried over once into the embedded store: `state.redb` (the
//! answered senders) and `stats.redb` (the counts per day). Both are read in full, written in one
//! transaction with a mark that they were, then renamed `*.migrated` (kept for a rollback to the
//! old version; remove them when you like). A crash between the transaction and the rename only
//! leaves the rename to the next start, never a second copy of the counts.

use super::StoreError;
use super::sqlite::Embedded;
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use rusqlite::{OptionalExtension, params};
use std::path::Path;
use tracing::info;

const ANSWERED: TableDefinition<&[u8], u64> = TableDefinition::new("answered");
const MESSAGES: TableDefinition<(u32, &str, &str, &str, &str), u64> =
    TableDefinition::new("messages_per_day");

type DayRow = (u32, String, String, bool, String);

/// Migrates the old files of `dir` into `store`, if there are any.
pub(super) fn from_redb(dir: &Path, store: &Embedded) -> Result<(), StoreError> {
    for (file, mark) in [("state.redb", "migrated state.redb"), ("stats.redb", "migrated stats.redb")] {
        let path = dir.join(file);
        if !path.exists() {
            continue;
        }
        let done: bool = store.write("cannot read the store", false, |tx| {
            tx.query_row("SELECT value FROM meta WHERE name = ?1", [mark], |r| r.get::<_, String>(0))
                .optional()
                .map(|v| v.is_some())
        })?;
        if !done {
            let (answered, days) = read(&path, file == "state.redb")?;
            store.write("cannot write the store", true, |tx| {
                for (k, expiry) in &answered {
                    tx.execute(
                        "INSERT OR REPLACE INTO answered (sender, expiry) VALUES (?1, ?2)",
                        params![k, i64::try_from(*expiry).unwrap_or(i64::MAX)],
                    )?;
                }
                for ((day, class, topics, encrypted, decision), n) in &days {
                    tx.execute(
                        "INSERT INTO messages (day, class, topics, encrypted, decision, count)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                         ON CONFLICT (day, class, topics, encrypted, decision) DO UPDATE SET count = count + excluded.count",
                        params![day, class, topics, encrypted, decision, i64::try_from(*n).unwrap_or(i64::MAX)],
                    )?;
                }
                tx.execute("INSERT INTO meta (name, value) VALUES (?1, 'yes')", [mark])?;
                Ok(())
            })?;
            info!(
                "{} carried over into {} ({} answered senders, {} rows of counts)",
                path.display(),
                store.path().display(),
                answered.len(),
                days.len()
            );
        }
        let moved = dir.join(format!("{file}.migrated"));
        std::fs::rename(&path, &moved).map_err(|e| StoreError::at("cannot rename", &path, e))?;
    }
    Ok(())
}

type Read = (Vec<(Vec<u8>, u64)>, Vec<(DayRow, u64)>);

/// Every entry of an old file: the answered senders of `state.redb`, or the counts of
/// `stats.redb`.
fn read(path: &Path, state: bool) -> Result<Read, StoreError> {
    let fail = |e: &dyn std::fmt::Display| StoreError::at("cannot read the old store", path, e);
    let db = redb::ReadOnlyDatabase::open(path).map_err(|e| fail(&e))?;
    let tx = db.begin_read().map_err(|e| fail(&e))?;
    let mut answered = Vec::new();
    let mut days = Vec::new();
    if state {
        match tx.open_table(ANSWERED) {
            Ok(t) => {
                for row in t.iter().map_err(|e| fail(&e))? {
                    let (k, v) = row.map_err(|e| fail(&e))?;
                    answered.push((k.value().to_vec(), v.value()));
                }
            }
            Err(redb::TableError::TableDoesNotExist(_)) => {}
            Err(e) => return Err(fail(&e)),
        }
    } else {
        match tx.open_table(MESSAGES) {
            Ok(t) => {
                for row in t.iter().map_err(|e| fail(&e))? {
                    let (k, v) = row.map_err(|e| fail(&e))?;
                    let (day, class, topics, encrypted, decision) = k.value();
                    let key = (
                        day,
                        class.to_string(),
                        topics.to_string(),
                        encrypted == "yes",
                        decision.to_string(),
                    );
                    days.push((key, v.value()));
                }
            }
            Err(redb::TableError::TableDoesNotExist(_)) => {}
            Err(e) => return Err(fail(&e)),
        }
    }
    Ok((answered, days))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite;

    /// The files as version 0.1 wrote them.
    fn old_files(dir: &Path) {
        let db = redb::Database::create(dir.join("state.redb")).unwrap();
        let tx = db.begin_write().unwrap();
        tx.open_table(ANSWERED).unwrap().insert([7u8; 32].as_slice(), 4_000_000_000).unwrap();
        tx.commit().unwrap();
        let db = redb::Database::create(dir.join("stats.redb")).unwrap();
        let tx = db.begin_write().unwrap();
        {
            let mut t = tx.open_table(MESSAGES).unwrap();
            t.insert((20_000, "support", "wifi-realtek", "no", "queued"), 3).unwrap();
            t.insert((20_001, "whisperback", "", "yes", "suppressed (class)"), 2).unwrap();
        }
        tx.commit().unwrap();
    }

    #[test]
    fn the_old_stores_are_carried_over_once() {
        let dir = tempfile::tempdir().unwrap();
        old_files(dir.path());
        let store = crate::store::open_embedded(dir.path()).unwrap();
        assert!(store.has_answered().unwrap());
        assert_eq!(store.load(1_000).unwrap().answered, vec![([7u8; 32], 4_000_000_000)]);
        let data = sqlite::read_counts(dir.path()).unwrap();
        let mut counts: Vec<(u32, String, u64)> =
            data.messages.iter().map(|(r, n)| (r.day, r.class.clone(), *n)).collect();
        counts.sort();
        assert_eq!(counts, vec![(20_000, "support".into(), 3), (20_001, "whisperback".into(), 2)]);
        assert!(data.messages.iter().any(|(r, _)| r.topics == ["wifi-realtek"] && !r.encrypted));
        assert!(dir.path().join("state.redb.migrated").exists() && !dir.path().join("state.redb").exists());
        drop(store);
        // A second start, with the old files back (a crash before the rename): nothing counts twice.
        std::fs::rename(dir.path().join("stats.redb.migrated"), dir.path().join("stats.redb")).unwrap();
        let _store = crate::store::open_embedded(dir.path()).unwrap();
        let again = sqlite::read_counts(dir.path()).unwrap();
        assert_eq!(again.messages.iter().map(|(_, n)| n).sum::<u64>(), 5);
    }
}

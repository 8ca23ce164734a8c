//! The shared store on a real PostgreSQL server (tests/support/postgres.rs), through the
//! library: the same decisions as the embedded store, atomically across hosts; the counts of
//! several hosts written at once; a host with another secret refused; a server that is frozen
//! or gone gives no reply and leaves no reservation. Needs root and PostgreSQL.

#[path = "support/postgres.rs"]
mod postgres;

use helpdesk_milter::config::Config;
use helpdesk_milter::policy::{Decision, Reason, StateView};
use helpdesk_milter::state::{ReplyState, Topics};
use helpdesk_milter::store::keys::Keys;
use helpdesk_milter::store::postgres::Shared;
use helpdesk_milter::store::{Batch, Row, Writer};
use postgres::Postgres;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

const WEEK: Duration = Duration::from_secs(7 * 86400);
const DAY: u64 = 86400;

/// One host: its own secret directory, the server's store.
fn host(db: &Postgres, secret_dir: &Path, timeout: Duration) -> (Arc<Shared>, Keys) {
    let keys = Keys::load_or_create(secret_dir, false).unwrap();
    let shared = Shared::new(&db.url(), Some(&db.password_file()), Some(keys.fingerprint()), timeout);
    (Arc::new(shared), keys)
}

fn state(db: &Postgres, secret_dir: &Path) -> ReplyState {
    let (shared, keys) = host(db, secret_dir, Duration::from_secs(5));
    ReplyState::shared(shared, keys, 1000)
}

fn rules(max_per_hour: u32, per_domain: u32) -> impl Fn(&StateView) -> Decision + Copy {
    move |v: &StateView| {
        let mut cfg = Config::defaults(Path::new("/x.toml")).policy;
        cfg.max_per_hour = max_per_hour;
        cfg.max_per_domain_per_hour = per_domain;
        helpdesk_milter::policy::state_decision(&cfg, v)
    }
}

fn hot(t: &[&str]) -> Topics {
    Topics { hot_matched: t.iter().map(|t| t.to_string()).collect() }
}

/// The same script of requests, through one state: its decisions.
async fn script(s: &ReplyState) -> Vec<Decision> {
    let r = rules(4, 2);
    let mut out = Vec::new();
    for (who, at, topics) in [
        ("fay@example.org", 100, &["wifi"][..]),
        ("fay@example.org", 200, &["wifi"]),
        ("fay@example.org", 250, &[]),
        ("fay@example.org", 300, &["wifi", "nvidia"]),
        ("fay@example.org", 400, &["nvidia"]),
        ("gus@example.org", 500, &[]),
        ("hal@example.org", 600, &[]),
        ("ida@other.org", 700, &[]),
        ("jo@third.org", 800, &[]),
        ("kim@fourth.org", 3700, &[]),
        ("fay@example.org", 100 + WEEK.as_secs(), &["nvidia"]),
    ] {
        out.push(s.decide(who, at, WEEK, &hot(topics), r).await.0);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shared_store_decides_as_the_embedded_one() {
    let db = Postgres::start();
    let dir = tempfile::tempdir().unwrap();
    let shared = script(&state(&db, dir.path())).await;
    let embedded_dir = tempfile::tempdir().unwrap();
    let store = Arc::new(helpdesk_milter::store::open_embedded(embedded_dir.path()).unwrap());
    let keys = Keys::load_or_create(embedded_dir.path(), false).unwrap();
    let embedded = script(&ReplyState::open(store, keys, 1000, 0).unwrap()).await;
    use Decision::*;
    let want = vec![
        Queued,
        Suppressed(Reason::Interval),
        Suppressed(Reason::Interval),
        QueuedNewTopic,
        Suppressed(Reason::Interval),
        Suppressed(Reason::Cap), // two replies to example.org this hour
        Suppressed(Reason::Cap),
        Queued,
        Queued,
        Queued, // an hour later the caps have forgotten the first replies
        Queued, // after the interval of the first reply
    ];
    assert_eq!(embedded, want, "the embedded store's semantics, for reference");
    assert_eq!(shared, want);
    // Only keyed hashes and times: no address reached the server.
    assert!(!db.dump_all().contains("example.org"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hosts_deciding_at_once_reserve_once() {
    let db = Postgres::start();
    let dir = tempfile::tempdir().unwrap();
    let a = Arc::new(state(&db, dir.path()));
    let b = Arc::new(state(&db, dir.path()));
    let mut tasks = Vec::new();
    for i in 0..16 {
        let s = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            s.decide("bob@example.org", 1000, WEEK, &Topics::default(), rules(100, 100)).await
        }));
    }
    let mut reserved = 0;
    for t in tasks {
        let (d, r) = t.await.unwrap();
        assert!(matches!(d, Decision::Queued | Decision::Suppressed(Reason::Interval)), "{d:?}");
        reserved += usize::from(r.is_some());
    }
    assert_eq!(reserved, 1);
    assert_eq!(db.psql("SELECT count(*) FROM answered").trim(), "1");
    assert_eq!(db.psql("SELECT count(*) FROM replies_sent").trim(), "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_released_reservation_is_undone_on_the_server() {
    let db = Postgres::start();
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(state(&db, dir.path()));
    let (d, r) = s.decide("erin@example.org", 100, WEEK, &hot(&["wifi"]), rules(10, 10)).await;
    assert_eq!(d, Decision::Queued);
    let r = r.unwrap();
    // The reply worker's calls, on a blocking thread: persisting is a no-op, the release undoes it.
    let s2 = s.clone();
    tokio::task::spawn_blocking(move || {
        s2.persist(&r).unwrap();
        s2.release(&r).unwrap();
    })
    .await
    .unwrap();
    assert_eq!(db.psql("SELECT (SELECT count(*) FROM answered) + (SELECT count(*) FROM replies_sent) + (SELECT count(*) FROM topic_replies)").trim(), "0");
    let (d, _) = s.decide("erin@example.org", 101, WEEK, &Topics::default(), rules(10, 10)).await;
    assert_eq!(d, Decision::Queued, "answered at the next message");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_with_another_secret_is_refused() {
    let db = Postgres::start();
    let (one, other) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = state(&db, one.path());
    assert_eq!(
        a.decide("x@example.org", 1, WEEK, &Topics::default(), rules(10, 10)).await.0,
        Decision::Queued
    );
    let b = state(&db, other.path());
    let (d, r) = b.decide("y@example.org", 2, WEEK, &Topics::default(), rules(10, 10)).await;
    assert_eq!((d, r), (Decision::Suppressed(Reason::Store), None));
    // The secret stays on the hosts; the server keeps its fingerprint only.
    let secret = std::fs::read(one.path().join("secret")).unwrap();
    let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    assert!(!db.dump_all().contains(&hex));
    assert_eq!(db.psql("SELECT count(*) FROM meta WHERE name = 'fingerprint'").trim(), "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_or_dead_server_gives_no_reply_and_no_reservation() {
    let mut db = Postgres::start();
    let dir = tempfile::tempdir().unwrap();
    let (shared, keys) = host(&db, dir.path(), Duration::from_millis(200));
    let s = ReplyState::shared(shared, keys, 1000);
    // The first call connects and creates the tables, which may take longer than the timeout.
    assert_eq!(until_answered(&s, "a@example.org", 1).await, Decision::Queued);
    db.pause();
    let (d, r) = s.decide("b@example.org", 2, WEEK, &Topics::default(), rules(10, 10)).await;
    assert_eq!((d, r), (Decision::Suppressed(Reason::Store), None));
    db.resume();
    // The work the milter gave up on did not reserve: b is answered at its next message (not
    // `interval`), once the server answers again.
    assert_eq!(until_answered(&s, "b@example.org", 3).await, Decision::Queued);
    db.kill();
    let (d, r) = s.decide("c@example.org", 4, WEEK, &Topics::default(), rules(10, 10)).await;
    assert_eq!((d, r), (Decision::Suppressed(Reason::Store), None));
    db.start_again();
    // Back without a restart: the pool connects again.
    assert_eq!(until_answered(&s, "c@example.org", 5).await, Decision::Queued);
    assert_eq!(db.psql("SELECT count(*) FROM answered").trim(), "3", "a, b and c");
}

/// The first decision for `who` that is not `suppressed (store)`, asking every 100 ms for up to
/// 10 s while the server comes back.
async fn until_answered(s: &ReplyState, who: &str, at: u64) -> Decision {
    let mut d = Decision::Suppressed(Reason::Store);
    for i in 0..100 {
        d = s.decide(who, at + i, WEEK, &Topics::default(), rules(10, 10)).await.0;
        if d != Decision::Suppressed(Reason::Store) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    d
}

fn batch(day: u32, writers: &[&str]) -> Batch {
    let week = helpdesk_milter::calendar::Week::of_day(day).label();
    let mut b = Batch::default();
    for w in writers {
        *b.messages
            .entry(Row {
                day,
                class: "support".into(),
                topics: vec!["wifi".into()],
                encrypted: false,
                decision: "queued".into(),
            })
            .or_default() += 1;
        for (kind, name) in [("all", ""), ("class", "support"), ("topic", "wifi")] {
            b.writers.insert((week.clone(), kind.into(), name.into(), Writer::Sender(w.to_string())));
        }
    }
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_writing_counts_at_once_share_one_key_per_week_and_reduce_it_once() {
    let db = Postgres::start();
    let dir = tempfile::tempdir().unwrap();
    let (a, _) = host(&db, dir.path(), Duration::from_secs(5));
    let (b, _) = host(&db, dir.path(), Duration::from_secs(5));
    // Monday 2026-11-16 (2026-W47).
    let day =
        helpdesk_milter::calendar::day_of_date(helpdesk_milter::calendar::parse_date("2026-11-16").unwrap());
    let now = u64::from(day) * DAY + 3600;
    let mut tasks = Vec::new();
    for i in 0..20 {
        let s = if i % 2 == 0 { a.clone() } else { b.clone() };
        let who = ["ann@x.org", "ben@x.org", "cat@x.org"][i % 3];
        tasks.push(tokio::spawn(async move { s.add_counts(&batch(day, &[who]), now, 0).await }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(db.psql("SELECT count(*) FROM week_keys").trim(), "1", "one key for the week");
    let read =
        || helpdesk_milter::store::postgres::read_counts(&db.url(), Some(&db.password_file())).unwrap();
    let data = tokio::task::block_in_place(read);
    assert_eq!(data.messages.iter().map(|(_, n)| n).sum::<u64>(), 20);
    let people = |data: &helpdesk_milter::store::CountsData| {
        data.people.iter().filter(|p| p.kind == "all").map(|p| p.count).sum::<u64>()
    };
    assert_eq!(people(&data), 3, "three people, whichever host saw them");
    // A week and its grace later, both hosts write at once: the week is reduced once.
    let later = now + 8 * DAY + 60;
    let empty = Batch::default();
    let (ra, rb) = tokio::join!(a.add_counts(&empty, later, 0), b.add_counts(&empty, later, 0));
    assert_eq!(ra.unwrap().reduced + rb.unwrap().reduced, 1);
    let data = tokio::task::block_in_place(read);
    assert_eq!(people(&data), 3, "not counted twice");
    assert_eq!(
        db.psql("SELECT (SELECT count(*) FROM writers) + (SELECT count(*) FROM week_keys)").trim(),
        "0"
    );
}

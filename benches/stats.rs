//! The statistics' costs, on a store holding a year of a busy Help Desk's rows (365 days of 60
//! distinct rows: classes × topics × decisions):
//! - `write one batch`: what the daemon's writer does once a second while mail arrives: add a
//!   batch of one message and its writer, reduce and purge, commit (WAL, no fsync);
//! - `stats report`: what `helpdesk-milter stats` does (read every row, build the weekly report
//!   of people and messages, the frequent list and the suggestions).
//!
//!   cargo bench --bench stats

use criterion::{Criterion, criterion_group, criterion_main};
use helpdesk_milter::counts::Row;
use helpdesk_milter::stats::{self, Options, ReplyTopics};
use helpdesk_milter::store::sqlite::{self, Embedded};
use helpdesk_milter::store::{Batch, Writer};
use std::time::Duration;

const DAY: u64 = 86400;
const CLASSES: [&str; 6] = ["whisperback", "support", "followup", "team", "automated", "spam"];
const TOPICS: [&str; 5] = ["wifi-realtek", "nvidia-black-screen", "mac", "tor-bridges", ""];

fn a_year(store: &Embedded, today: u64) {
    let mut batch = Batch::default();
    for d in 0..365 {
        for (i, class) in CLASSES.iter().enumerate() {
            for (j, topic) in TOPICS.iter().enumerate() {
                let topics: Vec<String> =
                    topic.split(',').filter(|t| !t.is_empty()).map(str::to_string).collect();
                let decision = if (i + j) % 2 == 0 { "queued" } else { "suppressed (interval)" };
                batch.messages.insert(
                    Row::new((today - d) * DAY, class, &topics, j == 0, decision),
                    1 + (d + j as u64) % 4,
                );
                batch
                    .messages
                    .insert(Row::new((today - d) * DAY, class, &topics, true, "suppressed (class)"), 1);
            }
        }
    }
    store.add_counts(&batch, today * DAY, 0).unwrap();
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = Embedded::open(dir.path()).unwrap();
    let today = helpdesk_milter::clock::unix_now() / DAY;
    a_year(&store, today);
    let rows = sqlite::read_counts(dir.path()).unwrap().messages;
    eprintln!("stats bench: {} rows in {} bytes", rows.len(), std::fs::metadata(store.path()).unwrap().len());
    let mut one = Batch::default();
    one.messages.insert(Row::new(today * DAY, "support", &["mac".to_string()], false, "queued"), 1);
    let week = helpdesk_milter::calendar::Week::of_day(u32::try_from(today).unwrap()).label();
    one.writers.insert((week, "topic".into(), "mac".into(), Writer::Sender("a@example.org".into())));
    let now = today * DAY;
    c.bench_function("write one batch", |b| {
        b.iter(|| store.add_counts(&one, now, (today - 365) as u32).unwrap())
    });
    let opts = Options::new(stats::today(), 8);
    let file = ReplyTopics {
        hot: vec!["mac".into(), "wifi-realtek".into()],
        topics: TOPICS.iter().filter(|t| !t.is_empty()).map(|t| (t.to_string(), true)).collect(),
    };
    c.bench_function("stats report", |b| {
        b.iter(|| stats::report(&sqlite::read_counts(dir.path()).unwrap(), &opts, Ok(&file)).weeks.len())
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(Duration::from_secs(8));
    targets = bench
}
criterion_main!(benches);

//! The report, serialised as the `--format json` output: per ISO week the messages (by class,
//! topic, encryption and reply decision) and the people (at all, by class, by topic), the frequent
//! topics, and the suggested changes to the reply file.

use super::suggest::{ReplyTopics, Suggestion, suggestions};
use super::{CLASS_ORDER, Count, Frequent, Options, Week, Weekly, frequent};
use crate::store::{CountsData, Row};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// Fields may be added; none is renamed or changes meaning.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub weeks: Vec<WeekCounts>,
    pub frequent: Vec<Frequent>,
    pub frequent_rule: FrequentRule,
    /// The day the report was made for (UTC), `2026-11-21`.
    pub today: String,
    /// The topics the report is restricted to (`--topic`); empty for all.
    pub topic_filter: Vec<String>,
    /// What the tables, the frequent rule and the chart count: `people` or `messages`.
    pub count: Count,
    /// Changes to the reply file's hot topics worth making.
    pub suggestions: Vec<Suggestion>,
    /// Why there are no suggestions, when the reply file could not be read.
    pub suggestions_error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WeekCounts {
    /// `2026-W47`.
    pub week: String,
    /// Its Monday, `2026-11-16`.
    pub starts: String,
    /// False for the current week (and any later one): its counts are so far.
    pub complete: bool,
    /// Messages.
    pub total: u64,
    /// Messages of every class, zero included.
    pub classes: BTreeMap<String, u64>,
    /// Messages about every topic counted in the weeks shown (zero in weeks without it).
    pub topics: BTreeMap<String, u64>,
    /// Messages that were OpenPGP-encrypted.
    pub encrypted: u64,
    /// Messages by X-HelpDesk-Autoreply value (`queued`, `suppressed (interval)`, ...).
    pub autoreply: BTreeMap<String, u64>,
    pub people: PeopleCounts,
}

/// The people of one week: each writer once, a WhisperBack report being one writer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PeopleCounts {
    /// People who wrote at all (about the topics of `--topic`: the sum of their counts).
    pub total: u64,
    /// People per class, every class (empty with `--topic`: people are not counted per class
    /// and topic at once). A person who wrote in two classes counts in each.
    pub classes: BTreeMap<String, u64>,
    /// People about each topic of `topics`, tagged WhisperBack reports included.
    pub topics: BTreeMap<String, u64>,
    /// Of those, the WhisperBack reports the Help Desk tagged with the topic.
    pub tagged_reports: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FrequentRule {
    pub min_per_week: u32,
    pub weeks: u32,
    /// What `min_per_week` counts: `people` or `messages`.
    pub count: Count,
}

fn matches_filter(row: &Row, opts: &Options) -> bool {
    opts.topics.is_empty() || row.topics.iter().any(|t| opts.wants(t))
}

/// The topics the tables show: those of `--topic`, and every topic with a count in the weeks
/// shown.
fn topics_shown(weekly: &Weekly, opts: &Options, shown: &[Week]) -> BTreeSet<String> {
    let mut topics: BTreeSet<String> = opts.topics.iter().cloned().collect();
    for t in weekly.topics().into_iter().filter(|t| opts.wants(t)) {
        if shown.iter().any(|w| weekly.topic_messages(t, *w) + weekly.topic_people(t, *w) > 0) {
            topics.insert(t.to_string());
        }
    }
    topics
}

/// An empty week: every class, and every topic shown, at zero.
fn empty_week(week: Week, opts: &Options, topics: &BTreeSet<String>) -> WeekCounts {
    WeekCounts {
        week: week.label(),
        starts: week.monday().to_string(),
        complete: week < Week::of(opts.today),
        total: 0,
        classes: CLASS_ORDER.iter().map(|c| (c.as_str().to_string(), 0)).collect(),
        topics: topics.iter().map(|t| (t.clone(), 0)).collect(),
        encrypted: 0,
        autoreply: BTreeMap::new(),
        people: PeopleCounts {
            total: 0,
            classes: BTreeMap::new(),
            topics: BTreeMap::new(),
            tagged_reports: BTreeMap::new(),
        },
    }
}

/// Adds the messages of `rows` about the filter's topics (all when none) to their weeks.
fn add_messages(weeks: &mut BTreeMap<Week, WeekCounts>, rows: &[(Row, u64)], opts: &Options) {
    for (row, n) in rows.iter().filter(|(r, _)| matches_filter(r, opts)) {
        let Some(w) = weeks.get_mut(&Week::of_day(row.day)) else { continue };
        w.total += n;
        *w.classes.entry(row.class.clone()).or_default() += n;
        if row.encrypted {
            w.encrypted += n;
        }
        if !row.decision.is_empty() {
            *w.autoreply.entry(row.decision.clone()).or_default() += n;
        }
        for t in &row.topics {
            if let Some(count) = w.topics.get_mut(t) {
                *count += n;
            }
        }
    }
}

/// The people of one week.
fn people_counts(weekly: &Weekly, week: Week, opts: &Options, topics: &BTreeSet<String>) -> PeopleCounts {
    let per_topic: BTreeMap<String, u64> =
        topics.iter().map(|t| (t.clone(), weekly.topic_people(t, week))).collect();
    let tagged =
        topics.iter().map(|t| (t.clone(), weekly.tagged_reports(t, week, week).len() as u64)).collect();
    let (total, classes) = if opts.topics.is_empty() {
        let classes = CLASS_ORDER
            .iter()
            .map(|c| (c.as_str().to_string(), weekly.people_in_class(c.as_str(), week)))
            .collect();
        (weekly.people_all(week), classes)
    } else {
        (per_topic.values().sum(), BTreeMap::new())
    };
    PeopleCounts { total, classes, topics: per_topic, tagged_reports: tagged }
}

/// Builds the report from the store's counts and, for the suggestions, the reply file's topics
/// (or why it could not be read).
pub fn report(data: &CountsData, opts: &Options, reply: Result<&ReplyTopics, &str>) -> Report {
    let weekly = Weekly::new(data);
    let shown: Vec<Week> = (0..=opts.first.until(opts.last).max(0)).map(|i| opts.first.plus(i)).collect();
    let topics = topics_shown(&weekly, opts, &shown);
    let mut weeks: BTreeMap<Week, WeekCounts> =
        shown.iter().map(|w| (*w, empty_week(*w, opts, &topics))).collect();
    add_messages(&mut weeks, &data.messages, opts);
    for (week, counts) in &mut weeks {
        counts.people = people_counts(&weekly, *week, opts, &topics);
    }
    let frequent = frequent(&weekly, opts);
    let (suggestions, suggestions_error) = match reply {
        Ok(file) => (suggestions(&weekly, &frequent, file, opts), None),
        Err(e) => (Vec::new(), Some(e.to_string())),
    };
    Report {
        weeks: weeks.into_values().collect(),
        frequent,
        frequent_rule: FrequentRule {
            min_per_week: opts.frequent_min,
            weeks: opts.frequent_weeks,
            count: opts.count,
        },
        today: opts.today.to_string(),
        topic_filter: opts.topics.clone(),
        count: opts.count,
        suggestions,
        suggestions_error,
    }
}

pub fn to_json(report: &Report) -> String {
    // A tree of strings, numbers and maps: serialising it cannot fail.
    serde_json::to_string_pretty(report).unwrap_or_default() + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::test_data::{Counts, d, day};
    use crate::stats::{Change, Week, day_of_date, parse_date};

    fn opts(today: &str, weeks: u32) -> Options {
        Options::new(d(today), weeks)
    }

    fn no_file() -> ReplyTopics {
        ReplyTopics::default()
    }

    #[test]
    fn iso_weeks_follow_the_week_numbering_year() {
        assert_eq!(Week::of(d("2026-11-21")).label(), "2026-W47");
        assert_eq!(Week::of(d("2026-11-16")).label(), "2026-W47", "a Monday starts its week");
        assert_eq!(Week::of(d("2026-11-15")).label(), "2026-W46", "a Sunday ends its week");
        // 2021-01-03 (a Sunday) belongs to 2020-W53; 2024-12-30 (a Monday) to 2025-W01.
        assert_eq!(Week::of(d("2021-01-03")).label(), "2020-W53");
        assert_eq!(Week::of(d("2024-12-30")).label(), "2025-W01");
        assert_eq!(Week::parse("2020-W53").unwrap(), Week::of(d("2020-12-28")));
        assert_eq!(Week::parse("2026W41").unwrap().label(), "2026-W41");
        assert_eq!(Week::parse("2026-10-07").unwrap().label(), "2026-W41");
        assert!(Week::parse("2025-W53").unwrap_err().contains("no week 53"));
        assert_eq!(Week::parse("2026-W53").unwrap().label(), "2026-W53", "2026 has 53 weeks");
        assert!(Week::parse("last week").is_err());
        assert_eq!(Week::of_day(day_of_date(parse_date("2026-11-21").unwrap())).label(), "2026-W47");
    }

    #[test]
    fn weeks_count_messages_by_class_and_topic_with_zeros_filled_in() {
        let c = Counts::default()
            .messages("2026-11-16", "support", &["wifi"], 1)
            .messages("2026-11-20", "support", &["bridges", "wifi"], 1)
            .messages("2026-11-20", "whisperback", &[], 1)
            .messages("2026-11-09", "spam", &[], 1)
            .messages("2026-01-01", "support", &["wifi"], 1); // before the weeks shown
        let r = report(&c.0, &opts("2026-11-21", 2), Ok(&no_file()));
        assert_eq!(r.weeks.len(), 2);
        let (w46, w47) = (&r.weeks[0], &r.weeks[1]);
        assert_eq!((w46.week.as_str(), w46.complete, w46.total), ("2026-W46", true, 1));
        assert_eq!((w47.week.as_str(), w47.complete, w47.total), ("2026-W47", false, 3));
        assert_eq!(w47.classes["support"], 2);
        assert_eq!(w47.classes["whisperback"], 1);
        assert_eq!(w47.classes["team"], 0, "every class is present");
        assert_eq!(w47.topics, BTreeMap::from([("bridges".into(), 1), ("wifi".into(), 2)]));
        assert_eq!(w46.topics, BTreeMap::from([("bridges".into(), 0), ("wifi".into(), 0)]));
        assert_eq!(w47.autoreply["queued"], 3);
        assert_eq!(w46.starts, "2026-11-09");

        // --topic: only the messages about it.
        let o = Options { topics: vec!["bridges".into()], ..opts("2026-11-21", 2) };
        let r = report(&c.0, &o, Ok(&no_file()));
        assert_eq!(r.weeks[1].total, 1);
        assert_eq!(r.weeks[1].classes["support"], 1);
        assert_eq!(r.weeks[1].topics, BTreeMap::from([("bridges".into(), 1)]));
    }

    #[test]
    fn people_are_counted_beside_the_messages() {
        // One person: three requests about wifi and a follow-up in W47, counted once by the
        // daemon; a WhisperBack report tagged wifi; a report not tagged.
        let c = Counts::default()
            .requests("2026-11-16", "wifi", 1, 3)
            .messages("2026-11-17", "followup", &["wifi"], 1)
            .people("2026-11-17", "class", "followup", 1)
            .report("r1", "2026-11-18")
            .tag("r1", "wifi", "2026-11-18")
            .report("r2", "2026-11-19");
        let r = report(&c.0, &opts("2026-11-21", 1), Ok(&no_file()));
        let w = &r.weeks[0];
        assert_eq!((w.total, w.topics["wifi"]), (6, 4), "messages");
        assert_eq!(w.people.total, 3, "the person and the two reports");
        assert_eq!(w.people.classes["support"], 1);
        assert_eq!(w.people.classes["followup"], 1);
        assert_eq!(w.people.classes["whisperback"], 2);
        assert_eq!(w.people.classes.len(), 6, "every class");
        assert_eq!(w.people.topics["wifi"], 2, "the person and the tagged report");
        assert_eq!(w.people.tagged_reports["wifi"], 1);

        // About wifi only: its people, no classes.
        let o = Options { topics: vec!["wifi".into()], ..opts("2026-11-21", 1) };
        let w = &report(&c.0, &o, Ok(&no_file())).weeks[0];
        assert_eq!((w.people.total, w.people.classes.len()), (2, 0));
        // A topic known only from a tag is shown too, with no message.
        let tag_only = Counts::default().report("r3", "2026-11-18").tag("r3", "tor", "2026-11-18");
        let w = &report(&tag_only.0, &opts("2026-11-21", 1), Ok(&no_file())).weeks[0];
        assert_eq!((w.topics["tor"], w.people.topics["tor"]), (0, 1));
        assert_eq!(day("1970-01-02"), 1);
    }

    #[test]
    fn the_reply_file_gives_the_suggestions_or_says_why_not() {
        let c = Counts::default().messages("2026-10-01", "spam", &[], 1);
        let file = ReplyTopics { hot: vec!["wifi".into()], topics: vec![("wifi".into(), true)] };
        let r = report(&c.0, &opts("2026-11-21", 2), Ok(&file));
        assert_eq!((r.suggestions[0].change, r.suggestions_error.as_deref()), (Change::Drop, None));
        let r = report(&c.0, &opts("2026-11-21", 2), Err("the reply file cannot be read: x"));
        assert!(r.suggestions.is_empty());
        assert_eq!(r.suggestions_error.as_deref(), Some("the reply file cannot be read: x"));
    }

    /// Counts that give every field of the JSON a value: a frequent topic, a suggestion.
    fn full() -> (CountsData, Options, ReplyTopics) {
        let c = Counts::default()
            .requests("2026-11-09", "wifi", 2, 2)
            .requests("2026-11-16", "wifi", 3, 3)
            .report("r1", "2026-11-17")
            .tag("r1", "wifi", "2026-11-17");
        let file = ReplyTopics { hot: vec![], topics: vec![("wifi".into(), true)] };
        (c.0, opts("2026-11-23", 2), file)
    }

    #[test]
    fn the_json_keeps_its_documented_shape() {
        let (data, o, file) = full();
        let json: serde_json::Value = serde_json::from_str(&to_json(&report(&data, &o, Ok(&file)))).unwrap();
        let w = &json["weeks"][0];
        assert_eq!(w["week"], "2026-W47");
        assert_eq!(w["classes"]["support"], 3);
        assert_eq!(w["topics"]["wifi"], 3);
        assert_eq!(w["people"]["topics"]["wifi"], 4);
        assert_eq!(w["people"]["tagged_reports"]["wifi"], 1);
        assert_eq!(json["weeks"][1]["week"], "2026-W48");
        let f = &json["frequent"][0];
        assert_eq!((f["topic"].as_str(), f["since"].as_str()), (Some("wifi"), Some("2026-W46")));
        assert_eq!(
            (f["weekly_average"].as_f64(), f["people"].as_u64(), f["reports"].as_u64()),
            (Some(3.0), Some(6), Some(5))
        );
        assert_eq!(
            (json["count"].as_str(), json["frequent_rule"]["count"].as_str()),
            (Some("people"), Some("people"))
        );
        assert_eq!(json["suggestions"][0]["change"], "add");
        assert_eq!(json["suggestions_error"], serde_json::Value::Null);
    }

    /// Every key of the JSON output, nested ones included.
    fn keys(v: &serde_json::Value, out: &mut BTreeSet<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    out.insert(k.clone());
                    keys(v, out);
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| keys(v, out)),
            _ => {}
        }
    }

    #[test]
    fn every_json_field_is_documented_in_the_readme() {
        let readme = include_str!("../../README.md");
        let start = readme.find("**JSON** (`--format json`)").expect("the README documents the JSON");
        let doc = &readme[start..start + readme[start..].find("**CSV**").unwrap()];
        let (data, o, file) = full();
        let mut found = BTreeSet::new();
        for json in [to_json(&report(&data, &o, Ok(&file))), to_json(&report(&data, &o, Err("x")))] {
            keys(&serde_json::from_str(&json).unwrap(), &mut found);
        }
        // Map keys that are data (class names, topic ids, decisions), not field names.
        let data: BTreeSet<String> = CLASS_ORDER
            .iter()
            .map(|c| c.as_str().to_string())
            .chain(["wifi".into(), "queued".into()])
            .collect();
        assert!(found.contains("tagged_reports") && found.contains("suggestions_error"), "{found:?}");
        for k in found.difference(&data) {
            assert!(
                doc.contains(&format!("\"{k}\"")),
                "the JSON field {k:?} is not in the README's JSON section"
            );
        }
    }
}

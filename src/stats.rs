//! The `stats` report: messages per ISO week by class and by topic, and the frequent topics,
//! computed from the statistics store's rows. Pure: the rows and "today" come in, text goes out.
//!
//! A topic is **frequent** when it was reported at least `min_per_week` times in each of the last
//! `weeks` complete ISO weeks (the current week is never complete, so it never counts: a Monday
//! morning would otherwise clear every flag). Its `since` is the first week of the run of
//! consecutive complete weeks, ending last week, that each reached `min_per_week`, and its
//! `weekly_average` is its reports over that run divided by the run's weeks: "reported about 2.5
//! times a week since 2026-W41". Weeks and days are UTC.

use crate::classify::Class;
use crate::counts::Row;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use time::Date;

pub use crate::calendar::{Week, date_of_day, day_of_date, parse_date, today};

/// What to report.
#[derive(Debug, Clone)]
pub struct Options {
    /// First and last week shown (inclusive).
    pub first: Week,
    pub last: Week,
    /// Only messages about one of these topics (all messages when empty).
    pub topics: Vec<String>,
    pub frequent_min: u32,
    pub frequent_weeks: u32,
    pub today: Date,
}

impl Options {
    /// The last `weeks` weeks, this one included.
    pub fn last_weeks(today: Date, weeks: u32) -> (Week, Week) {
        let last = Week::of(today);
        (last.plus(-i64::from(weeks.max(1) - 1)), last)
    }
}

/// The classes, in the order the tables show them.
pub const CLASS_ORDER: [Class; 6] =
    [Class::Whisperback, Class::Support, Class::Followup, Class::Team, Class::Automated, Class::Spam];

/// The report, serialised as the `--format json` output. Fields may be added; none is renamed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub weeks: Vec<WeekCounts>,
    pub frequent: Vec<Frequent>,
    pub frequent_rule: FrequentRule,
    /// The day the report was made for (UTC), `2026-11-21`.
    pub today: String,
    /// The topics the report is restricted to (`--topic`); empty for all messages.
    pub topic_filter: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WeekCounts {
    /// `2026-W47`.
    pub week: String,
    /// Its Monday, `2026-11-16`.
    pub starts: String,
    /// False for the current week (and any later one): its counts are so far.
    pub complete: bool,
    pub total: u64,
    /// Every class, zero included.
    pub classes: BTreeMap<String, u64>,
    /// Every topic reported in the weeks shown (zero in weeks without it).
    pub topics: BTreeMap<String, u64>,
    /// Messages that were OpenPGP-encrypted.
    pub encrypted: u64,
    /// Messages by X-HelpDesk-Autoreply value (`queued`, `suppressed (interval)`, ...).
    pub autoreply: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Frequent {
    pub topic: String,
    /// Reports per week over the run since `since`, to two decimals.
    pub weekly_average: f64,
    /// First week of the run of complete weeks, ending last week, with at least `min_per_week`.
    pub since: String,
    /// Length of that run, in weeks.
    pub weeks: u32,
    /// Reports over that run.
    pub reports: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FrequentRule {
    pub min_per_week: u32,
    pub weeks: u32,
}

fn matches_filter(row: &Row, filter: &[String]) -> bool {
    filter.is_empty() || row.topics.iter().any(|t| filter.contains(t))
}

/// Builds the report from the store's rows.
pub fn report(rows: &[(Row, u64)], opts: &Options) -> Report {
    let current = Week::of(opts.today);
    let shown: Vec<Week> = (0..=opts.first.until(opts.last).max(0)).map(|i| opts.first.plus(i)).collect();
    let mut weeks: BTreeMap<Week, WeekCounts> = shown
        .iter()
        .map(|w| {
            let counts = WeekCounts {
                week: w.label(),
                starts: w.monday().to_string(),
                complete: *w < current,
                total: 0,
                classes: CLASS_ORDER.iter().map(|c| (c.as_str().to_string(), 0)).collect(),
                topics: BTreeMap::new(),
                encrypted: 0,
                autoreply: BTreeMap::new(),
            };
            (*w, counts)
        })
        .collect();
    let mut seen_topics: BTreeSet<String> = opts.topics.iter().cloned().collect();
    for (row, n) in rows.iter().filter(|(r, _)| matches_filter(r, &opts.topics)) {
        let Some(w) = weeks.get_mut(&Week::of_day(row.day)) else { continue };
        w.total += n;
        *w.classes.entry(row.class.clone()).or_default() += n;
        if row.encrypted {
            w.encrypted += n;
        }
        if !row.decision.is_empty() {
            *w.autoreply.entry(row.decision.clone()).or_default() += n;
        }
        for t in row.topics.iter().filter(|t| opts.topics.is_empty() || opts.topics.contains(t)) {
            *w.topics.entry(t.clone()).or_default() += n;
            seen_topics.insert(t.clone());
        }
    }
    for w in weeks.values_mut() {
        for t in &seen_topics {
            w.topics.entry(t.clone()).or_default();
        }
    }
    Report {
        weeks: weeks.into_values().collect(),
        frequent: frequent(rows, opts),
        frequent_rule: FrequentRule { min_per_week: opts.frequent_min, weeks: opts.frequent_weeks },
        today: opts.today.to_string(),
        topic_filter: opts.topics.clone(),
    }
}

/// The frequent topics, most reported first, over every stored week (not only those shown).
pub fn frequent(rows: &[(Row, u64)], opts: &Options) -> Vec<Frequent> {
    let last_complete = Week::of(opts.today).plus(-1);
    let mut per_topic: BTreeMap<&str, BTreeMap<Week, u64>> = BTreeMap::new();
    for (row, n) in rows {
        for t in &row.topics {
            *per_topic.entry(t).or_default().entry(Week::of_day(row.day)).or_default() += n;
        }
    }
    let min = u64::from(opts.frequent_min.max(1));
    let mut out: Vec<Frequent> = per_topic
        .into_iter()
        .filter(|(t, _)| opts.topics.is_empty() || opts.topics.iter().any(|f| f == t))
        .filter_map(|(topic, counts)| {
            let count = |w: &Week| counts.get(w).copied().unwrap_or(0);
            let mut run = 0u32;
            let mut reports = 0u64;
            let mut week = last_complete;
            // Bounded by the data: a week before the first report has no reports.
            while count(&week) >= min {
                reports += count(&week);
                run += 1;
                week = week.plus(-1);
            }
            (run >= opts.frequent_weeks.max(1)).then(|| Frequent {
                topic: topic.to_string(),
                weekly_average: (reports as f64 / f64::from(run) * 100.0).round() / 100.0,
                since: last_complete.plus(-i64::from(run - 1)).label(),
                weeks: run,
                reports,
            })
        })
        .collect();
    out.sort_by(|a, b| b.weekly_average.total_cmp(&a.weekly_average).then(a.topic.cmp(&b.topic)));
    out
}

pub fn to_json(report: &Report) -> String {
    // A tree of strings, numbers and maps: serialising it cannot fail.
    serde_json::to_string_pretty(report).unwrap_or_default() + "\n"
}

/// Long format, one count per line: `week,kind,name,count` where kind is `total`, `class`,
/// `topic`, `encrypted` or `autoreply`. Names are class names, topic ids ([a-z0-9-]) and
/// autoreply values, which hold no comma or quote, so no field needs quoting.
pub fn to_csv(report: &Report) -> String {
    let mut out = String::from("week,kind,name,count\n");
    for w in &report.weeks {
        let _ = writeln!(out, "{},total,,{}", w.week, w.total);
        for c in CLASS_ORDER {
            let _ =
                writeln!(out, "{},class,{},{}", w.week, c.as_str(), w.classes.get(c.as_str()).unwrap_or(&0));
        }
        for (t, n) in &w.topics {
            let _ = writeln!(out, "{},topic,{t},{n}", w.week);
        }
        let _ = writeln!(out, "{},encrypted,,{}", w.week, w.encrypted);
        for (d, n) in &w.autoreply {
            let _ = writeln!(out, "{},autoreply,{d},{n}", w.week);
        }
    }
    out
}

/// Columns of numbers under their headings, the first column left-aligned.
fn columns(out: &mut String, headings: &[String], rows: &[Vec<String>]) {
    let widths: Vec<usize> = (0..headings.len())
        .map(|i| rows.iter().map(|r| r[i].len()).chain([headings[i].len()]).max().unwrap_or(0))
        .collect();
    for line in std::iter::once(headings).chain(rows.iter().map(Vec::as_slice)) {
        let mut text = String::new();
        for (i, cell) in line.iter().enumerate() {
            if i == 0 {
                let _ = write!(text, "{cell:<w$}", w = widths[0]);
            } else {
                let _ = write!(text, "  {cell:>w$}", w = widths[i]);
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    }
}

/// The report for a person: a table of classes per week, one of topics per week, and the
/// frequent topics in words.
pub fn to_table(report: &Report) -> String {
    let mut out = String::new();
    let (Some(first), Some(last)) = (report.weeks.first(), report.weeks.last()) else {
        return "No weeks to show.\n".into();
    };
    let about = if report.topic_filter.is_empty() {
        String::new()
    } else {
        format!(" about {}", report.topic_filter.join(" or "))
    };
    let span =
        if first.week == last.week { first.week.clone() } else { format!("{} to {}", first.week, last.week) };
    let _ = writeln!(
        out,
        "Messages{about} per ISO week, {span} (UTC; weeks not yet over are marked *, counted until {})\n",
        report.today
    );
    let mut headings = vec!["week".to_string(), "total".to_string()];
    headings.extend(CLASS_ORDER.iter().map(|c| c.as_str().to_string()));
    headings.push("encrypted".into());
    let label = |w: &WeekCounts| if w.complete { w.week.clone() } else { format!("{}*", w.week) };
    let rows: Vec<Vec<String>> = report
        .weeks
        .iter()
        .map(|w| {
            let mut r = vec![label(w), w.total.to_string()];
            r.extend(CLASS_ORDER.iter().map(|c| w.classes.get(c.as_str()).unwrap_or(&0).to_string()));
            r.push(w.encrypted.to_string());
            r
        })
        .collect();
    columns(&mut out, &headings, &rows);

    let topics: Vec<&String> = first.topics.keys().collect();
    if topics.is_empty() {
        out.push_str("\nNo topic of the reply file was recognised in these weeks.\n");
    } else {
        out.push_str("\nTopics (from the reply file's keywords, plaintext requests only):\n\n");
        let mut headings = vec!["week".to_string()];
        headings.extend(topics.iter().map(|t| t.to_string()));
        let rows: Vec<Vec<String>> = report
            .weeks
            .iter()
            .map(|w| {
                let mut r = vec![label(w)];
                r.extend(topics.iter().map(|t| w.topics.get(*t).unwrap_or(&0).to_string()));
                r
            })
            .collect();
        columns(&mut out, &headings, &rows);
    }

    let rule = &report.frequent_rule;
    let _ = writeln!(
        out,
        "\nFrequent topics (at least {} reports in each of the last {} complete weeks):",
        rule.min_per_week, rule.weeks
    );
    if report.frequent.is_empty() {
        out.push_str("  none\n");
    }
    let width = report.frequent.iter().map(|f| f.topic.len()).max().unwrap_or(0);
    for f in &report.frequent {
        let _ = writeln!(
            out,
            "  {:<width$}  reported about {} times a week since {} ({} reports in {} weeks)",
            f.topic,
            trim_number(f.weekly_average),
            f.since,
            f.reports,
            f.weeks
        );
    }
    out
}

/// 2.5 → "2.5", 3.0 → "3", 2.33 → "2.3".
fn trim_number(x: f64) -> String {
    let s = format!("{x:.1}");
    s.strip_suffix(".0").map_or(s.clone(), str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Date {
        parse_date(s).unwrap()
    }

    fn row(date: &str, class: &str, topics: &[&str]) -> (Row, u64) {
        let topics: Vec<String> = topics.iter().map(|t| t.to_string()).collect();
        let day = day_of_date(d(date));
        (Row::new(u64::from(day) * 86400 + 43200, class, &topics, false, "queued"), 1)
    }

    fn opts(today: &str, weeks: u32) -> Options {
        let (first, last) = Options::last_weeks(d(today), weeks);
        Options { first, last, topics: Vec::new(), frequent_min: 2, frequent_weeks: 2, today: d(today) }
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
        assert_eq!(Week::of_day(day_of_date(d("2026-11-21"))).label(), "2026-W47");
        assert_eq!(date_of_day(0), d("1970-01-01"));
    }

    #[test]
    fn weeks_count_classes_and_topics_with_zeros_filled_in() {
        let rows = vec![
            row("2026-11-16", "support", &["wifi"]),
            row("2026-11-20", "support", &["wifi", "bridges"]),
            row("2026-11-20", "whisperback", &[]),
            row("2026-11-09", "spam", &[]),
            row("2026-01-01", "support", &["wifi"]), // before the weeks shown
        ];
        let r = report(&rows, &opts("2026-11-21", 2));
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
        let mut o = opts("2026-11-21", 2);
        o.topics = vec!["bridges".into()];
        let r = report(&rows, &o);
        assert_eq!(r.weeks[1].total, 1);
        assert_eq!(r.weeks[1].classes["support"], 1);
        assert_eq!(r.weeks[1].topics, BTreeMap::from([("bridges".into(), 1)]));
    }

    /// `n` reports of `topic` on `date`.
    fn reports(date: &str, topic: &str, n: u64) -> (Row, u64) {
        let (r, _) = row(date, "support", &[topic]);
        (r, n)
    }

    #[test]
    fn frequent_needs_the_minimum_in_each_of_the_last_complete_weeks() {
        // W44: 3, W45: 2, W46: 2 reports of wifi; W46 only: 5 of bridges; W45+W46: 1 and 4 of tor.
        let rows = vec![
            reports("2026-10-26", "wifi", 3),
            reports("2026-11-02", "wifi", 2),
            reports("2026-11-15", "wifi", 2), // Sunday of W46
            reports("2026-11-10", "bridges", 5),
            reports("2026-11-03", "tor", 1),
            reports("2026-11-11", "tor", 4),
        ];
        let f = frequent(&rows, &opts("2026-11-21", 8));
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].topic, "wifi");
        assert_eq!(f[0].since, "2026-W44");
        assert_eq!(f[0].weeks, 3);
        assert_eq!(f[0].reports, 7);
        assert_eq!(f[0].weekly_average, 2.33);

        // The current week does not count, however many reports it has so far.
        let mut more = rows.clone();
        more.push(reports("2026-11-16", "bridges", 9));
        assert!(frequent(&more, &opts("2026-11-21", 8)).iter().all(|f| f.topic != "bridges"));

        // With N = 1 and K = 2, tor (1 then 4) is frequent too; with K = 1 bridges is.
        let mut o = opts("2026-11-21", 8);
        o.frequent_min = 1;
        let names: Vec<String> = frequent(&rows, &o).into_iter().map(|f| f.topic).collect();
        assert_eq!(names, vec!["tor", "wifi"], "most reported first");
        o.frequent_weeks = 1;
        o.frequent_min = 5;
        let f = frequent(&rows, &o);
        assert_eq!(
            (f[0].topic.as_str(), f[0].since.as_str(), f[0].weekly_average),
            ("bridges", "2026-W46", 5.0)
        );
    }

    #[test]
    fn frequent_moves_at_the_week_boundary_and_not_before() {
        // wifi: 2 reports in W45, 2 in W46, 2 in W47 (the last on Sunday 2026-11-22).
        let rows = vec![
            reports("2026-11-03", "wifi", 2),
            reports("2026-11-12", "wifi", 2),
            reports("2026-11-17", "wifi", 1),
            reports("2026-11-22", "wifi", 1),
        ];
        // Sunday of W47: the last complete weeks are W45 and W46.
        let f = frequent(&rows, &opts("2026-11-22", 8));
        assert_eq!((f[0].since.as_str(), f[0].weeks), ("2026-W45", 2));
        // Monday of W48: W46 and W47 now, and the run is three weeks long.
        let f = frequent(&rows, &opts("2026-11-23", 8));
        assert_eq!((f[0].since.as_str(), f[0].weeks, f[0].weekly_average), ("2026-W45", 3, 2.0));
        // Had W47 ended with one report only, the flag would drop on that Monday.
        let fewer = &rows[..3];
        assert_eq!(frequent(fewer, &opts("2026-11-22", 8)).len(), 1);
        assert!(frequent(fewer, &opts("2026-11-23", 8)).is_empty());
        // A week without reports breaks the run: W45 and W46 then nothing in W47.
        assert!(frequent(&rows[..2], &opts("2026-11-30", 8)).is_empty());
    }

    #[test]
    fn the_json_keeps_its_documented_shape() {
        let rows = vec![reports("2026-11-09", "wifi", 2), reports("2026-11-16", "wifi", 3)];
        let mut o = opts("2026-11-23", 2);
        o.frequent_weeks = 2;
        let json: serde_json::Value = serde_json::from_str(&to_json(&report(&rows, &o))).unwrap();
        let w = &json["weeks"][0];
        assert_eq!(w["week"], "2026-W47");
        assert_eq!(w["classes"]["support"], 3);
        assert_eq!(w["topics"]["wifi"], 3);
        assert_eq!(json["weeks"][1]["week"], "2026-W48");
        let f = &json["frequent"][0];
        assert_eq!((f["topic"].as_str(), f["since"].as_str()), (Some("wifi"), Some("2026-W46")));
        assert_eq!(f["weekly_average"].as_f64(), Some(2.5));
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
        let readme = include_str!("../README.md");
        let start = readme.find("**JSON** (`--format json`)").expect("the README documents the JSON");
        let doc = &readme[start..start + readme[start..].find("**CSV**").unwrap()];
        let rows = vec![reports("2026-11-09", "wifi", 2), reports("2026-11-16", "wifi", 3)];
        let json: serde_json::Value =
            serde_json::from_str(&to_json(&report(&rows, &opts("2026-11-23", 2)))).unwrap();
        let mut found = BTreeSet::new();
        keys(&json, &mut found);
        // Map keys that are data (class names, topic ids, decisions), not field names.
        let data: BTreeSet<String> = CLASS_ORDER
            .iter()
            .map(|c| c.as_str().to_string())
            .chain(["wifi".into(), "queued".into()])
            .collect();
        for k in found.difference(&data) {
            assert!(
                doc.contains(&format!("\"{k}\"")),
                "the JSON field {k:?} is not in the README's JSON section"
            );
        }
    }

    #[test]
    fn the_table_and_the_csv_say_the_same() {
        let rows = vec![reports("2026-11-09", "wifi", 2), reports("2026-11-16", "wifi", 3)];
        let r = report(&rows, &opts("2026-11-23", 3));
        let table = to_table(&r);
        assert!(table.contains("2026-W48*"), "{table}");
        assert!(
            table.contains("wifi  reported about 2.5 times a week since 2026-W46 (5 reports in 2 weeks)"),
            "{table}"
        );
        let csv = to_csv(&r);
        assert!(csv.starts_with("week,kind,name,count\n"));
        assert!(
            csv.contains("2026-W47,class,support,3\n") && csv.contains("2026-W47,topic,wifi,3\n"),
            "{csv}"
        );
        assert!(csv.lines().all(|l| l.split(',').count() == 4), "{csv}");
        let empty = to_table(&report(&[], &opts("2026-11-23", 1)));
        assert!(empty.contains("none") && empty.contains("No topic"), "{empty}");
    }
}

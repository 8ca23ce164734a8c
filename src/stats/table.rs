//! The report for a person to read: a table of people (or messages) per week and class, one per
//! week and topic, the frequent topics in words, and the suggested changes to the reply file.

use super::{CLASS_ORDER, Count, Report, WeekCounts, counted, trim_number};
use std::fmt::Write as _;

/// Columns under their headings, the first column left-aligned, the others right-aligned.
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

fn label(w: &WeekCounts) -> String {
    if w.complete { w.week.clone() } else { format!("{}*", w.week) }
}

fn strings(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| w.to_string()).collect()
}

/// The first table: each week's total and its split (classes; or, for people about topics,
/// tagged reports and private requests).
fn weeks_table(out: &mut String, report: &Report) {
    let class = |w: &WeekCounts, c: &str, people: bool| {
        let map = if people { &w.people.classes } else { &w.classes };
        map.get(c).copied().unwrap_or(0).to_string()
    };
    let (headings, rows): (Vec<String>, Vec<Vec<String>>) = match report.count {
        Count::People if !report.topic_filter.is_empty() => (
            strings(&["week", "people", "whisperback reports", "private requests"]),
            report
                .weeks
                .iter()
                .map(|w| {
                    let tagged: u64 = w.people.tagged_reports.values().sum();
                    vec![
                        label(w),
                        w.people.total.to_string(),
                        tagged.to_string(),
                        w.people.total.saturating_sub(tagged).to_string(),
                    ]
                })
                .collect(),
        ),
        count => {
            let people = count == Count::People;
            let mut headings = strings(&["week", if people { "people" } else { "total" }]);
            headings.extend(CLASS_ORDER.iter().map(|c| c.as_str().to_string()));
            if !people {
                headings.push("encrypted".into());
            }
            let rows = report
                .weeks
                .iter()
                .map(|w| {
                    let mut r = vec![label(w), if people { w.people.total } else { w.total }.to_string()];
                    r.extend(CLASS_ORDER.iter().map(|c| class(w, c.as_str(), people)));
                    if !people {
                        r.push(w.encrypted.to_string());
                    }
                    r
                })
                .collect();
            (headings, rows)
        }
    };
    columns(out, &headings, &rows);
}

fn topics_table(out: &mut String, report: &Report, first: &WeekCounts) {
    let topics: Vec<&String> = first.topics.keys().collect();
    if topics.is_empty() {
        out.push_str("\nNo topic of the reply file was recognised in these weeks.\n");
        return;
    }
    out.push_str(match report.count {
        Count::People => {
            "\nPeople per topic (the reply file's keywords in plaintext requests, and WhisperBack reports tagged by the Help Desk):\n\n"
        }
        Count::Messages => "\nMessages per topic (from the reply file's keywords, plaintext requests only):\n\n",
    });
    let mut headings = vec!["week".to_string()];
    headings.extend(topics.iter().map(|t| t.to_string()));
    let rows: Vec<Vec<String>> = report
        .weeks
        .iter()
        .map(|w| {
            let map = if report.count == Count::People { &w.people.topics } else { &w.topics };
            let mut r = vec![label(w)];
            r.extend(topics.iter().map(|t| map.get(*t).unwrap_or(&0).to_string()));
            r
        })
        .collect();
    columns(out, &headings, &rows);
}

fn frequent_list(out: &mut String, report: &Report) {
    let rule = &report.frequent_rule;
    let unit = match rule.count {
        Count::People => counted(u64::from(rule.min_per_week), "person", "people"),
        Count::Messages => counted(u64::from(rule.min_per_week), "report", "reports"),
    };
    let _ = writeln!(
        out,
        "\nFrequent topics (at least {unit} in each of the last {} complete weeks):",
        rule.weeks
    );
    if report.frequent.is_empty() {
        out.push_str("  none\n");
    }
    let width = report.frequent.iter().map(|f| f.topic.len()).max().unwrap_or(0);
    for f in &report.frequent {
        let (average, since, weeks) = (trim_number(f.weekly_average), &f.since, f.weeks);
        let _ = match rule.count {
            Count::People => writeln!(
                out,
                "  {:<width$}  reported by about {average} {} a week since {since} ({} in {weeks} weeks)",
                f.topic,
                if average == "1" { "person" } else { "people" },
                counted(f.people, "person", "people"),
            ),
            Count::Messages => writeln!(
                out,
                "  {:<width$}  reported about {average} times a week since {since} ({} in {weeks} weeks)",
                f.topic,
                counted(f.reports, "report", "reports"),
            ),
        };
    }
}

fn suggestion_list(out: &mut String, report: &Report) {
    if let Some(e) = &report.suggestions_error {
        let _ = writeln!(out, "\nSuggested changes to the reply file: none, {e}");
        return;
    }
    out.push_str("\nSuggested changes to the reply file's hot topics:\n");
    if report.suggestions.is_empty() {
        out.push_str("  none\n");
    }
    let change = report.suggestions.iter().map(|s| s.change.words().len()).max().unwrap_or(0);
    let topic = report.suggestions.iter().map(|s| s.topic.len()).max().unwrap_or(0);
    for s in &report.suggestions {
        let _ = writeln!(out, "  {:<change$}  {:<topic$}  {}", s.change.words(), s.topic, s.why);
    }
}

/// The report as tables and words.
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
    let (what, how) = match report.count {
        Count::People => ("People", "each person once a week, a WhisperBack report being one; "),
        Count::Messages => ("Messages", ""),
    };
    let _ = writeln!(
        out,
        "{what}{about} per ISO week, {span} (UTC; {how}weeks not yet over are marked *, counted until {})\n",
        report.today
    );
    weeks_table(&mut out, report);
    topics_table(&mut out, report, first);
    frequent_list(&mut out, report);
    suggestion_list(&mut out, report);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::test_data::{Counts, d};
    use crate::stats::{Options, ReplyTopics, report, to_csv};

    /// wifi: 2 then 3 people (2 then 3 messages) in W46 and W47, a tagged report in W47; mac
    /// hot but unheard of since W40; unlock without keywords.
    fn counts() -> (Counts, ReplyTopics) {
        let c = Counts::default()
            .messages("2026-10-01", "spam", &[], 1)
            .requests("2026-11-09", "wifi", 2, 2)
            .requests("2026-11-16", "wifi", 3, 3)
            .report("r1", "2026-11-17")
            .tag("r1", "wifi", "2026-11-17");
        let file = ReplyTopics {
            hot: vec!["mac".into()],
            topics: vec![("wifi".into(), true), ("mac".into(), true), ("unlock".into(), false)],
        };
        (c, file)
    }

    #[test]
    fn the_table_says_what_it_counts_and_what_to_change() {
        let (c, file) = counts();
        let table = to_table(&report(&c.0, &Options::new(d("2026-11-23"), 3), Ok(&file)));
        assert!(
            table.starts_with("People per ISO week, 2026-W46 to 2026-W48 (UTC; each person once a week"),
            "{table}"
        );
        assert!(table.contains("week       people  whisperback  support"), "{table}");
        assert!(table.contains("2026-W47        4            1        3"), "{table}");
        assert!(table.contains("2026-W48*"), "{table}");
        assert!(table.contains("People per topic"), "{table}");
        assert!(table.contains("at least 2 people in each of the last 2 complete weeks"), "{table}");
        assert!(
            table.contains("wifi  reported by about 3 people a week since 2026-W46 (6 people in 2 weeks)"),
            "{table}"
        );
        assert!(
            table.contains("  add                              wifi    frequent: about 3 people a week"),
            "{table}"
        );
        assert!(
            table.contains("  drop?                            mac     hot, but no one wrote about it"),
            "{table}"
        );
        assert!(table.contains("  cannot be counted: add keywords  unlock  it has no keywords"), "{table}");

        let messages = Options { count: Count::Messages, ..Options::new(d("2026-11-23"), 3) };
        let table = to_table(&report(&c.0, &messages, Err("the reply file cannot be read: gone")));
        assert!(table.starts_with("Messages per ISO week"), "{table}");
        assert!(
            table.contains(
                "week       total  whisperback  support  followup  team  automated  spam  encrypted"
            ),
            "{table}"
        );
        assert!(
            table.contains("wifi  reported about 2.5 times a week since 2026-W46 (5 reports in 2 weeks)"),
            "{table}"
        );
        assert!(
            table
                .contains("Suggested changes to the reply file: none, the reply file cannot be read: gone\n"),
            "{table}"
        );
    }

    #[test]
    fn about_a_topic_the_people_are_split_into_reports_and_private_requests() {
        let (c, file) = counts();
        let o = Options { topics: vec!["wifi".into()], ..Options::new(d("2026-11-23"), 3) };
        let table = to_table(&report(&c.0, &o, Ok(&file)));
        assert!(table.starts_with("People about wifi per ISO week"), "{table}");
        assert!(table.contains("week       people  whisperback reports  private requests"), "{table}");
        assert!(table.contains("2026-W47        4                    1                 3"), "{table}");
        let empty = to_table(&report(&Default::default(), &Options::new(d("2026-11-23"), 1), Ok(&file)));
        assert!(empty.contains("none") && empty.contains("No topic"), "{empty}");
    }

    #[test]
    fn the_csv_says_what_it_counts_and_agrees_with_the_table() {
        let (c, file) = counts();
        let csv = to_csv(&report(&c.0, &Options::new(d("2026-11-23"), 3), Ok(&file)));
        assert!(csv.starts_with("week,kind,name,people\n"), "{csv}");
        for line in [
            "2026-W47,total,,4\n",
            "2026-W47,class,support,3\n",
            "2026-W47,topic,wifi,4\n",
            "2026-W47,tagged-reports,wifi,1\n",
        ] {
            assert!(csv.contains(line), "{line} not in {csv}");
        }
        let messages = Options { count: Count::Messages, ..Options::new(d("2026-11-23"), 3) };
        let csv = to_csv(&report(&c.0, &messages, Ok(&file)));
        assert!(csv.starts_with("week,kind,name,messages\n"), "{csv}");
        assert!(
            csv.contains("2026-W47,class,support,3\n") && csv.contains("2026-W47,topic,wifi,3\n"),
            "{csv}"
        );
        assert!(csv.lines().all(|l| l.split(',').count() == 4), "{csv}");
    }
}

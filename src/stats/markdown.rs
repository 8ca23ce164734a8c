//! `--format markdown`: for each topic of `--topic`, the paragraph the Help Desk pastes into the
//! topic's GitLab issue, counting people: how many a week and since when when the topic is
//! frequent, how many in the weeks shown when it is not, the split between WhisperBack reports and
//! private requests, and the IDs of those reports, newest first.

use super::{Frequent, Options, Week, Weekly, counted, trim_number};
use std::fmt::Write as _;

/// More report IDs than this are cut to the newest, saying how many there are.
pub const MAX_REPORT_IDS: usize = 20;

/// People about `topic` in the weeks `first..=last`, and the tagged reports among them.
fn people<'a>(weekly: &'a Weekly, topic: &str, first: Week, last: Week) -> (u64, Vec<&'a str>) {
    let n = (0..=first.until(last)).map(|i| weekly.topic_people(topic, first.plus(i))).sum();
    (n, weekly.tagged_reports(topic, first, last))
}

/// "14 WhisperBack reports, 5 private requests".
fn split(people: u64, reports: usize) -> String {
    let reports = reports as u64;
    format!(
        "{}, {}",
        counted(reports, "WhisperBack report", "WhisperBack reports"),
        counted(people.saturating_sub(reports), "private request", "private requests")
    )
}

/// "WhisperBack reports: wb:a, wb:b." (nothing when there are none).
fn report_ids(ids: &[&str]) -> String {
    if ids.is_empty() {
        return String::new();
    }
    let shown: Vec<String> = ids.iter().take(MAX_REPORT_IDS).map(|id| format!("wb:{id}")).collect();
    let which = if ids.len() > MAX_REPORT_IDS {
        format!(" (the {} newest of {})", MAX_REPORT_IDS, ids.len())
    } else {
        String::new()
    };
    format!(" WhisperBack reports{which}: {}.", shown.join(", "))
}

/// The paragraph about one topic.
fn paragraph(weekly: &Weekly, frequent: Option<&Frequent>, topic: &str, opts: &Options) -> String {
    if let Some(f) = frequent {
        let (first, last) = f.run(opts);
        let (n, ids) = people(weekly, topic, first, last);
        let average = trim_number(f.weekly_average);
        let noun = if average == "1" { "person" } else { "people" };
        return format!(
            "Reported by about {average} {noun} a week since {} ({} in {}, to {}: {}).{}",
            f.since,
            counted(n, "person", "people"),
            counted(u64::from(f.weeks), "week", "weeks"),
            last.label(),
            split(n, ids.len()),
            report_ids(&ids),
        );
    }
    let (first, last) = (opts.first, opts.last);
    let weeks = counted(first.until(last).max(0) as u64 + 1, "week", "weeks");
    let running = match (last >= Week::of(opts.today), first == last) {
        (false, _) => "",
        (true, false) => ", the last one so far",
        (true, true) => ", so far",
    };
    let span = if first == last {
        format!("{}{running}", last.label())
    } else {
        format!("{} to {}{running}", first.label(), last.label())
    };
    let (n, ids) = people(weekly, topic, first, last);
    if n == 0 {
        return format!("Not reported in the last {weeks} ({span}).");
    }
    format!(
        "Reported by {} in the last {weeks} ({span}): {}.{}",
        counted(n, "person", "people"),
        split(n, ids.len()),
        report_ids(&ids),
    )
}

/// One paragraph per topic of `opts.topics`, each headed by its id when there are several.
pub fn to_markdown(weekly: &Weekly, frequent: &[Frequent], opts: &Options) -> String {
    let mut out = String::new();
    for topic in &opts.topics {
        if !out.is_empty() {
            out.push('\n');
        }
        let text = paragraph(weekly, frequent.iter().find(|f| f.topic == *topic), topic, opts);
        if opts.topics.len() > 1 {
            let _ = writeln!(out, "**{topic}**: {text}");
        } else {
            let _ = writeln!(out, "{text}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::frequent;
    use crate::stats::test_data::{Counts, d};

    fn markdown(c: &Counts, opts: &Options) -> String {
        let w = Weekly::new(&c.0);
        to_markdown(&w, &frequent(&w, opts), opts)
    }

    fn about(topics: &[&str], today: &str, weeks: u32) -> Options {
        Options { topics: topics.iter().map(|t| t.to_string()).collect(), ..Options::new(d(today), weeks) }
    }

    /// In W45 and W46: `people` private requests about wifi each week, and reports tagged wifi.
    fn frequent_wifi(people: u64, reports: &[(&str, &str)]) -> Counts {
        let mut c = Counts::default().requests("2026-11-03", "wifi", people, people).requests(
            "2026-11-10",
            "wifi",
            people,
            people,
        );
        for (id, date) in reports {
            c = c.report(id, date).tag(id, "wifi", date);
        }
        c
    }

    #[test]
    fn a_frequent_topic_says_how_many_a_week_since_when_with_its_reports() {
        let c = frequent_wifi(2, &[("aaa", "2026-11-04"), ("bbb", "2026-11-12"), ("ccc", "2026-11-18")]);
        assert_eq!(
            markdown(&c, &about(&["wifi"], "2026-11-21", 8)),
            "Reported by about 3 people a week since 2026-W45 (6 people in 2 weeks, to 2026-W46: \
             2 WhisperBack reports, 4 private requests). WhisperBack reports: wb:bbb, wb:aaa.\n",
            "newest first; ccc is of the running week, which the run leaves out"
        );
    }

    #[test]
    fn a_topic_that_is_not_frequent_says_how_many_in_the_weeks_shown() {
        // W45: one private request; W47: a tagged report. Not two people in each week.
        let c = Counts::default().requests("2026-11-03", "wifi", 1, 3).report("r1", "2026-11-18").tag(
            "r1",
            "wifi",
            "2026-11-18",
        );
        assert_eq!(
            markdown(&c, &about(&["wifi"], "2026-11-21", 8)),
            "Reported by 2 people in the last 8 weeks (2026-W40 to 2026-W47, the last one so far): \
             1 WhisperBack report, 1 private request. WhisperBack reports: wb:r1.\n"
        );
        assert_eq!(
            markdown(&c, &about(&["tor"], "2026-11-21", 1)),
            "Not reported in the last 1 week (2026-W47, so far).\n"
        );
        // One person, three messages: one person.
        let one = Counts::default().requests("2026-11-03", "wifi", 1, 3);
        assert!(markdown(&one, &about(&["wifi"], "2026-11-21", 8)).starts_with("Reported by 1 person in"));
    }

    #[test]
    fn many_reports_are_cut_to_the_newest_saying_how_many() {
        let ids: Vec<(String, &str)> = (0..25)
            .map(|i| (format!("id{i:02}"), if i < 12 { "2026-11-04" } else { "2026-11-11" }))
            .collect();
        let ids: Vec<(&str, &str)> = ids.iter().map(|(i, d)| (i.as_str(), *d)).collect();
        let text = markdown(&frequent_wifi(2, &ids), &about(&["wifi"], "2026-11-21", 8));
        assert!(
            text.contains("(29 people in 2 weeks, to 2026-W46: 25 WhisperBack reports, 4 private requests)"),
            "{text}"
        );
        assert!(text.contains("WhisperBack reports (the 20 newest of 25): wb:id24, wb:id23,"), "{text}");
        assert_eq!(text.matches("wb:").count(), MAX_REPORT_IDS);
    }

    #[test]
    fn several_topics_are_each_named() {
        let c = frequent_wifi(2, &[]);
        let text = markdown(&c, &about(&["wifi", "tor"], "2026-11-21", 2));
        let paragraphs: Vec<&str> = text.split("\n\n").collect();
        assert!(
            paragraphs[0].starts_with("**wifi**: Reported by about 2 people a week since 2026-W45"),
            "{text}"
        );
        assert!(paragraphs[1].starts_with("**tor**: Not reported"), "{text}");
    }
}

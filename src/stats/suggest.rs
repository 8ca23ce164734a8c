//! The changes to the reply file's hot topics that the counts suggest, each with why in words:
//! - **add**: a frequent topic that is not hot;
//! - **drop?**: a hot topic that no one wrote about in the last `stale_weeks` complete weeks
//!   (only once the statistics cover those weeks: a new installation has seen nothing yet);
//! - **cannot be counted: add keywords**: a topic with no keywords and no tagged report, which
//!   no count can ever reach.

use super::{Count, Frequent, Options, Weekly, counted, trim_number};
use serde::Serialize;

/// What `stats` needs of the reply file: plain data, read by the command.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplyTopics {
    /// `hot_topics`, in order.
    pub hot: Vec<String>,
    /// Every topic of the file, in file order, and whether it has keywords (in any language).
    pub topics: Vec<(String, bool)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Change {
    Add,
    Drop,
    AddKeywords,
}

impl Change {
    /// What the table says.
    pub fn words(self) -> &'static str {
        match self {
            Change::Add => "add",
            Change::Drop => "drop?",
            Change::AddKeywords => "cannot be counted: add keywords",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Suggestion {
    pub topic: String,
    pub change: Change,
    /// Why, in words.
    pub why: String,
}

/// Frequent topics not in `hot_topics`, most frequent first.
fn to_add(frequent: &[Frequent], file: &ReplyTopics, opts: &Options) -> Vec<Suggestion> {
    let rule = match opts.count {
        Count::People => "people",
        Count::Messages => "messages",
    };
    frequent
        .iter()
        .filter(|f| !file.hot.contains(&f.topic))
        .map(|f| {
            let known = file.topics.iter().any(|(id, _)| *id == f.topic);
            let why = format!(
                "frequent: about {} {rule} a week since {} ({} in {}), and not in hot_topics{}",
                trim_number(f.weekly_average),
                f.since,
                counted(
                    if opts.count == Count::People { f.people } else { f.reports },
                    opts.count.noun(1),
                    rule
                ),
                counted(u64::from(f.weeks), "week", "weeks"),
                if known { "" } else { "; the reply file has no such topic any more: add its section back" },
            );
            Suggestion { topic: f.topic.clone(), change: Change::Add, why }
        })
        .collect()
}

/// Whether no one can ever be counted under `topic`: no keywords, and no report tagged with it.
fn uncountable(weekly: &Weekly, file: &ReplyTopics, topic: &str) -> bool {
    file.topics.iter().any(|(id, keywords)| id == topic && !keywords) && !weekly.ever_tagged(topic)
}

/// Hot topics with no one in the last `stale_weeks` complete weeks, in `hot_topics` order.
fn to_drop(weekly: &Weekly, file: &ReplyTopics, opts: &Options) -> Vec<Suggestion> {
    let last = opts.last_complete();
    let first = last.plus(-i64::from(opts.stale_weeks.max(1) - 1));
    if weekly.first_week().is_none_or(|w| w > first) {
        return Vec::new();
    }
    let span = if first == last { last.label() } else { format!("{} to {}", first.label(), last.label()) };
    file.hot
        .iter()
        .filter(|t| opts.wants(t) && !uncountable(weekly, file, t))
        .filter(|t| {
            (0..=first.until(last))
                .map(|i| first.plus(i))
                .all(|w| weekly.topic_people(t, w) == 0 && weekly.topic_messages(t, w) == 0)
        })
        .map(|t| Suggestion {
            topic: t.clone(),
            change: Change::Drop,
            why: format!(
                "hot, but no one wrote about it in the last {} ({span}): drop it from hot_topics if the problem is solved",
                counted(u64::from(opts.stale_weeks.max(1)), "complete week", "complete weeks"),
            ),
        })
        .collect()
}

/// The suggested changes: add, then drop, then add keywords.
pub fn suggestions(
    weekly: &Weekly,
    frequent: &[Frequent],
    file: &ReplyTopics,
    opts: &Options,
) -> Vec<Suggestion> {
    let mut out = to_add(frequent, file, opts);
    out.extend(to_drop(weekly, file, opts));
    out.extend(file.topics.iter().filter(|(t, _)| opts.wants(t) && uncountable(weekly, file, t)).map(|(t, _)| {
        Suggestion {
            topic: t.clone(),
            change: Change::AddKeywords,
            why: "it has no keywords and no WhisperBack report was ever tagged with it, so no one is counted under it"
                .into(),
        }
    }));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::frequent;
    use crate::stats::test_data::{Counts, d};

    fn file(hot: &[&str], topics: &[(&str, bool)]) -> ReplyTopics {
        ReplyTopics {
            hot: hot.iter().map(|t| t.to_string()).collect(),
            topics: topics.iter().map(|(t, k)| (t.to_string(), *k)).collect(),
        }
    }

    fn suggest(c: &Counts, file: &ReplyTopics, today: &str) -> Vec<(String, Change)> {
        let opts = Options::new(d(today), 8);
        let w = Weekly::new(&c.0);
        suggestions(&w, &frequent(&w, &opts), file, &opts).into_iter().map(|s| (s.topic, s.change)).collect()
    }

    /// Two people a week about `topic` in W45 and W46 of 2026, and a week of nothing much before.
    fn two_weeks_of(topic: &str) -> Counts {
        Counts::default().messages("2026-10-01", "spam", &[], 1).requests("2026-11-03", topic, 2, 3).requests(
            "2026-11-10",
            topic,
            2,
            2,
        )
    }

    #[test]
    fn a_frequent_topic_that_is_not_hot_is_to_be_added() {
        let c = two_weeks_of("tor");
        let f = file(&["wifi", "tor"], &[("wifi", true), ("tor", true)]);
        assert!(suggest(&c, &f, "2026-11-21").iter().all(|(_, c)| *c != Change::Add), "tor is hot already");
        let f = file(&["wifi"], &[("wifi", true), ("tor", true)]);
        let opts = Options::new(d("2026-11-21"), 8);
        let w = Weekly::new(&c.0);
        let s = suggestions(&w, &frequent(&w, &opts), &f, &opts);
        assert_eq!((s[0].topic.as_str(), s[0].change), ("tor", Change::Add));
        assert_eq!(
            s[0].why,
            "frequent: about 2 people a week since 2026-W45 (4 people in 2 weeks), and not in hot_topics"
        );
        // A topic gone from the file says so.
        let gone = file(&["wifi"], &[("wifi", true)]);
        let s = suggestions(&w, &frequent(&w, &opts), &gone, &opts);
        assert!(s[0].why.ends_with("add its section back"), "{}", s[0].why);
    }

    #[test]
    fn a_hot_topic_no_one_wrote_about_for_stale_weeks_may_be_dropped() {
        let f = file(&["wifi", "tor"], &[("wifi", true), ("tor", true)]);
        // wifi: two weeks of people up to W46; tor: nobody. Today is in W47.
        let c = two_weeks_of("wifi");
        assert_eq!(suggest(&c, &f, "2026-11-21"), vec![("tor".into(), Change::Drop)]);
        let opts = Options::new(d("2026-11-21"), 8);
        let w = Weekly::new(&c.0);
        let s = suggestions(&w, &[], &f, &opts);
        assert_eq!(
            s[0].why,
            "hot, but no one wrote about it in the last 4 complete weeks (2026-W43 to 2026-W46): drop it from hot_topics if the problem is solved"
        );
        // Four weeks after the last person, wifi may go too; not three weeks after.
        assert_eq!(suggest(&c, &f, "2026-12-07").len(), 1, "W46 is among the last four complete weeks");
        assert_eq!(
            suggest(&c, &f, "2026-12-14"),
            vec![("wifi".into(), Change::Drop), ("tor".into(), Change::Drop)]
        );
        // A tagged report is someone.
        let tagged = c.clone().report("r1", "2026-11-18").tag("r1", "tor", "2026-11-18");
        assert_eq!(suggest(&tagged, &f, "2026-11-24"), vec![]);
        // Statistics younger than the four weeks: too early to say.
        let young = Counts::default().requests("2026-11-10", "wifi", 2, 2);
        assert_eq!(suggest(&young, &f, "2026-11-21"), vec![]);
        assert_eq!(suggest(&Counts::default(), &f, "2026-11-21"), vec![], "nothing counted at all");
        // stale_weeks = 1: last week only.
        let opts = Options { stale_weeks: 1, ..Options::new(d("2026-11-21"), 8) };
        let s = suggestions(&w, &[], &f, &opts);
        assert!(s[0].why.contains("in the last 1 complete week (2026-W46)"), "{}", s[0].why);
    }

    #[test]
    fn a_topic_without_keywords_or_tags_cannot_be_counted() {
        let f = file(&["unlock"], &[("unlock", false), ("mac", false), ("wifi", true)]);
        let c = two_weeks_of("wifi");
        // The hot topic without keywords is not "drop?": its zero says nothing.
        assert_eq!(
            suggest(&c, &f, "2026-11-21"),
            vec![
                ("wifi".into(), Change::Add),
                ("unlock".into(), Change::AddKeywords),
                ("mac".into(), Change::AddKeywords)
            ]
        );
        // Once a report is tagged with it, it can be counted (and can then be stale).
        let tagged = c.report("r1", "2026-10-01").tag("r1", "unlock", "2026-10-01");
        assert_eq!(
            suggest(&tagged, &f, "2026-11-21"),
            vec![
                ("wifi".into(), Change::Add),
                ("unlock".into(), Change::Drop),
                ("mac".into(), Change::AddKeywords)
            ]
        );
        assert_eq!(Change::AddKeywords.words(), "cannot be counted: add keywords");
    }

    #[test]
    fn the_topic_filter_limits_the_suggestions() {
        let f = file(&["tor"], &[("tor", true), ("mac", false), ("wifi", true)]);
        let c = two_weeks_of("wifi");
        let opts = Options { topics: vec!["mac".into()], ..Options::new(d("2026-11-21"), 8) };
        let w = Weekly::new(&c.0);
        let s = suggestions(&w, &frequent(&w, &opts), &f, &opts);
        assert_eq!(s.iter().map(|s| s.topic.as_str()).collect::<Vec<_>>(), vec!["mac"]);
    }
}

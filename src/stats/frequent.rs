//! The frequent rule. A topic is **frequent** when at least `min_per_week` people (or messages,
//! with `--count messages`) wrote about it in each of the last `weeks` complete ISO weeks (the
//! current week is never complete, so it never counts: a Monday morning would otherwise clear
//! every flag). Its `since` is the first week of the run of consecutive complete weeks, ending
//! last week, that each reached `min_per_week`, and its `weekly_average` is its count over that
//! run divided by the run's weeks: "reported by about 2.5 people a week since 2026-W41".

use super::{Count, Options, Week, Weekly};
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Frequent {
    pub topic: String,
    /// People (or messages, as `frequent_rule.count` says) per week over the run since `since`,
    /// to two decimals.
    pub weekly_average: f64,
    /// First week of the run of complete weeks, ending last week, that reached the minimum.
    pub since: String,
    /// Length of that run, in weeks.
    pub weeks: u32,
    /// Messages about the topic over that run (its keywords matched).
    pub reports: u64,
    /// People about the topic over that run, each once a week, tagged reports included.
    pub people: u64,
}

impl Frequent {
    /// The first and last weeks of the run.
    pub fn run(&self, opts: &Options) -> (Week, Week) {
        let last = opts.last_complete();
        (last.plus(-i64::from(self.weeks.max(1) - 1)), last)
    }
}

/// The frequent topics, highest weekly average first, over every stored week (not only those
/// shown).
pub fn frequent(weekly: &Weekly, opts: &Options) -> Vec<Frequent> {
    let last_complete = opts.last_complete();
    let min = u64::from(opts.frequent_min.max(1));
    let mut out: Vec<Frequent> = weekly
        .topics()
        .into_iter()
        .filter(|t| opts.wants(t))
        .filter_map(|topic| {
            let (mut run, mut counted, mut reports, mut people) = (0u32, 0u64, 0u64, 0u64);
            let mut week = last_complete;
            // Bounded by the data: a week before the first count has none.
            while weekly.topic(opts.count, topic, week) >= min {
                counted += weekly.topic(opts.count, topic, week);
                reports += weekly.topic(Count::Messages, topic, week);
                people += weekly.topic(Count::People, topic, week);
                run += 1;
                week = week.plus(-1);
            }
            (run >= opts.frequent_weeks.max(1)).then(|| Frequent {
                topic: topic.to_string(),
                weekly_average: (counted as f64 / f64::from(run) * 100.0).round() / 100.0,
                since: last_complete.plus(-i64::from(run - 1)).label(),
                weeks: run,
                reports,
                people,
            })
        })
        .collect();
    out.sort_by(|a, b| b.weekly_average.total_cmp(&a.weekly_average).then(a.topic.cmp(&b.topic)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::test_data::{Counts, d};

    fn opts(today: &str, count: Count) -> Options {
        Options { count, ..Options::new(d(today), 8) }
    }

    fn topics(f: &[Frequent]) -> Vec<&str> {
        f.iter().map(|f| f.topic.as_str()).collect()
    }

    #[test]
    fn frequent_needs_the_minimum_in_each_of_the_last_complete_weeks() {
        // People (messages): wifi W44: 3 (4), W45: 2 (2), W46: 2 (5, Sunday); bridges W46 only: 5;
        // tor W45: 1, W46: 4.
        let c = Counts::default()
            .requests("2026-10-26", "wifi", 3, 4)
            .requests("2026-11-02", "wifi", 2, 2)
            .requests("2026-11-15", "wifi", 2, 5)
            .requests("2026-11-10", "bridges", 5, 5)
            .requests("2026-11-03", "tor", 1, 1)
            .requests("2026-11-11", "tor", 4, 4);
        let w = Weekly::new(&c.0);
        let f = frequent(&w, &opts("2026-11-21", Count::People));
        assert_eq!(topics(&f), vec!["wifi"], "{f:?}");
        assert_eq!((f[0].since.as_str(), f[0].weeks, f[0].people, f[0].reports), ("2026-W44", 3, 7, 11));
        assert_eq!(f[0].weekly_average, 2.33, "people a week");
        let f = frequent(&w, &opts("2026-11-21", Count::Messages));
        assert_eq!(f[0].weekly_average, 3.67, "messages a week");

        // The current week does not count, however many it has so far.
        let more = Weekly::new(&c.clone().requests("2026-11-16", "bridges", 9, 9).0);
        assert!(!topics(&frequent(&more, &opts("2026-11-21", Count::People))).contains(&"bridges"));

        // With N = 1 and K = 2, tor (1 then 4) is frequent too; with K = 1 bridges is.
        let mut o = opts("2026-11-21", Count::People);
        o.frequent_min = 1;
        assert_eq!(topics(&frequent(&w, &o)), vec!["tor", "wifi"], "highest average first");
        o.frequent_weeks = 1;
        o.frequent_min = 5;
        let f = frequent(&w, &o);
        assert_eq!(
            (f[0].topic.as_str(), f[0].since.as_str(), f[0].weekly_average),
            ("bridges", "2026-W46", 5.0)
        );
    }

    #[test]
    fn people_not_messages_make_a_topic_frequent() {
        // One person writes about wifi five times a week: frequent in messages, not in people.
        let c = Counts::default().requests("2026-11-03", "wifi", 1, 5).requests("2026-11-10", "wifi", 1, 5);
        let w = Weekly::new(&c.0);
        assert!(frequent(&w, &opts("2026-11-21", Count::People)).is_empty());
        let f = frequent(&w, &opts("2026-11-21", Count::Messages));
        assert_eq!((f[0].weekly_average, f[0].people, f[0].reports), (5.0, 2, 10));
    }

    #[test]
    fn tagged_reports_count_as_people_of_their_topic() {
        // W45: one private request and one tagged report; W46: two tagged reports.
        let c = Counts::default()
            .requests("2026-11-03", "wifi", 1, 1)
            .report("r1", "2026-11-04")
            .tag("r1", "wifi", "2026-11-04")
            .report("r2", "2026-11-10")
            .tag("r2", "wifi", "2026-11-10")
            .report("r3", "2026-11-11")
            .tag("r3", "wifi", "2026-11-11");
        let f = frequent(&Weekly::new(&c.0), &opts("2026-11-21", Count::People));
        assert_eq!(topics(&f), vec!["wifi"]);
        assert_eq!((f[0].people, f[0].reports, f[0].since.as_str()), (4, 1, "2026-W45"));
    }

    #[test]
    fn frequent_moves_at_the_week_boundary_and_not_before() {
        // wifi: 2 people in W45, 2 in W46, 2 in W47 (one on Sunday 2026-11-22).
        let c = Counts::default()
            .requests("2026-11-03", "wifi", 2, 2)
            .requests("2026-11-12", "wifi", 2, 2)
            .requests("2026-11-17", "wifi", 1, 1)
            .requests("2026-11-22", "wifi", 1, 1);
        let w = Weekly::new(&c.0);
        // Sunday of W47: the last complete weeks are W45 and W46.
        let f = frequent(&w, &opts("2026-11-22", Count::People));
        assert_eq!((f[0].since.as_str(), f[0].weeks), ("2026-W45", 2));
        // Monday of W48: W46 and W47 now, and the run is three weeks long.
        let f = frequent(&w, &opts("2026-11-23", Count::People));
        assert_eq!((f[0].since.as_str(), f[0].weeks, f[0].weekly_average), ("2026-W45", 3, 2.0));
        assert_eq!(f[0].run(&opts("2026-11-23", Count::People)).0.label(), "2026-W45");
        // Had W47 ended with one person only, the flag would drop on that Monday.
        let two_weeks =
            Counts::default().requests("2026-11-03", "wifi", 2, 2).requests("2026-11-12", "wifi", 2, 2);
        let w = Weekly::new(&two_weeks.clone().requests("2026-11-17", "wifi", 1, 1).0);
        assert_eq!(frequent(&w, &opts("2026-11-22", Count::People)).len(), 1);
        assert!(frequent(&w, &opts("2026-11-23", Count::People)).is_empty());
        // A week without anyone breaks the run: W45 and W46, then nothing in W47.
        let w = Weekly::new(&two_weeks.0);
        assert!(frequent(&w, &opts("2026-11-30", Count::People)).is_empty());
    }
}

//! The `stats` report, computed from the statistics store's counts: people (by default) or
//! messages per ISO week, by class and by topic; the frequent topics; the paragraph for a GitLab
//! issue; the changes the reply file's hot topics need; the chart. Pure but for the chart's file:
//! the counts, the reply file's topics and "today" come in, text goes out. Weeks and days are UTC.
//!
//! - [`weekly`]: the counts by week, people (tagged reports included) and messages;
//! - [`report`]: the report, which is the `--format json` output;
//! - [`frequent`]: the frequent rule;
//! - [`suggest`]: the suggested changes to the reply file;
//! - [`table`], [`csv`], [`markdown`]: the other formats;
//! - [`chart`]: `stats --plot`.

pub mod chart;
mod csv;
mod frequent;
mod markdown;
mod report;
mod suggest;
mod table;
mod weekly;

pub use crate::calendar::{Week, date_of_day, day_of_date, parse_date, today};
pub use csv::to_csv;
pub use frequent::{Frequent, frequent};
pub use markdown::to_markdown;
pub use report::{FrequentRule, PeopleCounts, Report, WeekCounts, report, to_json};
pub use suggest::{Change, ReplyTopics, Suggestion, suggestions};
pub use table::to_table;
pub use weekly::Weekly;

use crate::classify::Class;
use serde::Serialize;
use time::Date;

/// What the tables, the frequent rule and the chart count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Count {
    /// Distinct writers per week: a person (or a WhisperBack report) once a week.
    People,
    Messages,
}

impl Count {
    /// The noun for `n` of them: "person" or "message" for one, else "people" or "messages".
    pub fn noun(self, n: u64) -> &'static str {
        match (self, n) {
            (Count::People, 1) => "person",
            (Count::People, _) => "people",
            (Count::Messages, 1) => "message",
            (Count::Messages, _) => "messages",
        }
    }
}

/// What to report.
#[derive(Debug, Clone)]
pub struct Options {
    /// First and last week shown (inclusive).
    pub first: Week,
    pub last: Week,
    /// Only what is about one of these topics (everything when empty).
    pub topics: Vec<String>,
    pub count: Count,
    pub frequent_min: u32,
    pub frequent_weeks: u32,
    /// A hot topic no one wrote about in this many last complete weeks is worth a look.
    pub stale_weeks: u32,
    pub today: Date,
}

impl Options {
    /// The last `weeks` weeks, this one included.
    pub fn last_weeks(today: Date, weeks: u32) -> (Week, Week) {
        let last = Week::of(today);
        (last.plus(-i64::from(weeks.max(1) - 1)), last)
    }

    /// The report of the last `weeks` weeks with the default rules, for tests and benches.
    pub fn new(today: Date, weeks: u32) -> Options {
        let (first, last) = Options::last_weeks(today, weeks);
        Options {
            first,
            last,
            topics: Vec::new(),
            count: Count::People,
            frequent_min: 2,
            frequent_weeks: 2,
            stale_weeks: 4,
            today,
        }
    }

    /// The last complete week: the one before today's.
    pub fn last_complete(&self) -> Week {
        Week::of(self.today).plus(-1)
    }

    /// Whether `topic` passes the `--topic` filter.
    pub fn wants(&self, topic: &str) -> bool {
        self.topics.is_empty() || self.topics.iter().any(|t| t == topic)
    }
}

/// The classes, in the order the tables show them.
pub const CLASS_ORDER: [Class; 6] =
    [Class::Whisperback, Class::Support, Class::Followup, Class::Team, Class::Automated, Class::Spam];

/// 2.5 → "2.5", 3.0 → "3", 2.33 → "2.3".
pub(crate) fn trim_number(x: f64) -> String {
    let s = format!("{x:.1}");
    s.strip_suffix(".0").map_or(s.clone(), str::to_string)
}

/// "3 people", "1 WhisperBack report": `n` and the noun, singular for one.
pub(crate) fn counted(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

#[cfg(test)]
pub(crate) mod test_data;

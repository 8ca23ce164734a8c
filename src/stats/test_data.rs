//! Counts written by hand for the tests of the report, as the store would return them.

use crate::calendar::{Week, day_of_date, parse_date};
use crate::store::{CountsData, PeopleRow, Row};
use time::Date;

pub fn d(s: &str) -> Date {
    parse_date(s).unwrap()
}

pub fn day(date: &str) -> u32 {
    day_of_date(d(date))
}

/// A `CountsData` built step by step.
#[derive(Debug, Clone, Default)]
pub struct Counts(pub CountsData);

impl Counts {
    /// `n` messages of `class` on `date` about `topics`, with nobody counted.
    pub fn messages(mut self, date: &str, class: &str, topics: &[&str], n: u64) -> Counts {
        let topics: Vec<String> = topics.iter().map(|t| t.to_string()).collect();
        let at = u64::from(day(date)) * 86400 + 43200;
        self.0.messages.push((Row::new(at, class, &topics, false, "queued"), n));
        self
    }

    /// `n` people counted in the week of `date` under `kind`/`name`.
    pub fn people(mut self, date: &str, kind: &str, name: &str, n: u64) -> Counts {
        let week = Week::of(d(date)).label();
        self.0.people.push(PeopleRow { week, kind: kind.into(), name: name.into(), count: n });
        self
    }

    /// `people` support writers about `topic` sending `messages` messages on `date`: the rows the
    /// daemon writes for them.
    pub fn requests(self, date: &str, topic: &str, people: u64, messages: u64) -> Counts {
        self.messages(date, "support", &[topic], messages)
            .people(date, "all", "", people)
            .people(date, "class", "support", people)
            .people(date, "topic", topic, people)
    }

    /// A WhisperBack report that arrived on `date` (one person, in the whisperback class).
    pub fn report(mut self, id: &str, date: &str) -> Counts {
        self.0.reports.push((id.into(), day(date)));
        self.messages(date, "whisperback", &[], 1).people(date, "all", "", 1).people(
            date,
            "class",
            "whisperback",
            1,
        )
    }

    /// A tag of report `id` with `topic`, the report having arrived on `date`.
    pub fn tag(mut self, id: &str, topic: &str, date: &str) -> Counts {
        self.0.tags.push((id.into(), topic.into(), day(date)));
        self
    }
}

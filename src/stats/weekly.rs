//! The store's counts by ISO week, read once: messages about each topic (its keywords), people
//! per class, per topic and at all, and the reports the Help Desk tagged with a topic.
//!
//! A topic's people in a week are the writers the daemon counted about it (plaintext support
//! requests and follow-ups whose words match its keywords) plus the WhisperBack reports of that
//! week tagged with it: encrypted reports never match keywords, so the two never overlap.

use super::{Count, Week};
use crate::store::CountsData;
use std::collections::{BTreeMap, BTreeSet};

/// Counts of one series, by week.
pub type Series = BTreeMap<Week, u64>;

#[derive(Debug, Clone, Default)]
pub struct Weekly {
    /// Messages about each topic, by week.
    topic_messages: BTreeMap<String, Series>,
    /// People by (kind, name) and week: `all` (name ""), `class`, `topic` (tags included).
    people: BTreeMap<(String, String), Series>,
    /// Tagged reports of each topic: the day of the report and its ID.
    tagged: BTreeMap<String, Vec<(u32, String)>>,
    /// The first week anything was counted in.
    first_week: Option<Week>,
}

impl Weekly {
    pub fn new(data: &CountsData) -> Weekly {
        let mut w = Weekly::default();
        let mut weeks = BTreeSet::new();
        for (row, n) in &data.messages {
            let week = Week::of_day(row.day);
            weeks.insert(week);
            for t in &row.topics {
                *w.topic_messages.entry(t.clone()).or_default().entry(week).or_default() += n;
            }
        }
        for p in &data.people {
            // The store writes the labels itself; a row it cannot have written is left out.
            let Ok(week) = Week::parse(&p.week) else { continue };
            weeks.insert(week);
            *w.people.entry((p.kind.clone(), p.name.clone())).or_default().entry(week).or_default() +=
                p.count;
        }
        for (id, topic, day) in &data.tags {
            let week = Week::of_day(*day);
            *w.people.entry(("topic".into(), topic.clone())).or_default().entry(week).or_default() += 1;
            w.tagged.entry(topic.clone()).or_default().push((*day, id.clone()));
        }
        for ids in w.tagged.values_mut() {
            // Newest first; an ID breaks the tie, so that the order is always the same.
            ids.sort_by(|a, b| b.cmp(a));
        }
        weeks.extend(data.reports.iter().map(|(_, day)| Week::of_day(*day)));
        w.first_week = weeks.first().copied();
        w
    }

    /// The count of `kind`/`name` in `week` (0 when none).
    fn get(map: &BTreeMap<(String, String), Series>, kind: &str, name: &str, week: Week) -> u64 {
        map.get(&(kind.to_string(), name.to_string())).and_then(|s| s.get(&week)).copied().unwrap_or(0)
    }

    /// People who wrote at all in `week`.
    pub fn people_all(&self, week: Week) -> u64 {
        Weekly::get(&self.people, "all", "", week)
    }

    /// People who wrote in `week` at least one message of `class`.
    pub fn people_in_class(&self, class: &str, week: Week) -> u64 {
        Weekly::get(&self.people, "class", class, week)
    }

    /// People about `topic` in `week`, its tagged reports included.
    pub fn topic_people(&self, topic: &str, week: Week) -> u64 {
        Weekly::get(&self.people, "topic", topic, week)
    }

    /// Messages about `topic` in `week` (its keywords matched).
    pub fn topic_messages(&self, topic: &str, week: Week) -> u64 {
        self.topic_messages.get(topic).and_then(|s| s.get(&week)).copied().unwrap_or(0)
    }

    /// People or messages about `topic` in `week`.
    pub fn topic(&self, count: Count, topic: &str, week: Week) -> u64 {
        match count {
            Count::People => self.topic_people(topic, week),
            Count::Messages => self.topic_messages(topic, week),
        }
    }

    /// The reports tagged with `topic` whose day is in the weeks `first..=last`, newest first.
    pub fn tagged_reports(&self, topic: &str, first: Week, last: Week) -> Vec<&str> {
        let ids = self.tagged.get(topic).map(Vec::as_slice).unwrap_or_default();
        ids.iter()
            .filter(|(day, _)| (first..=last).contains(&Week::of_day(*day)))
            .map(|(_, id)| id.as_str())
            .collect()
    }

    /// Whether a report was ever tagged with `topic` (in the days kept).
    pub fn ever_tagged(&self, topic: &str) -> bool {
        self.tagged.contains_key(topic)
    }

    /// Every topic with a message, a person or a tag, in any week.
    pub fn topics(&self) -> BTreeSet<&str> {
        let people = self.people.keys().filter(|(kind, _)| kind == "topic").map(|(_, name)| name.as_str());
        self.topic_messages.keys().map(String::as_str).chain(people).collect()
    }

    /// The first week anything was counted in: the statistics say nothing of the weeks before.
    pub fn first_week(&self) -> Option<Week> {
        self.first_week
    }
}

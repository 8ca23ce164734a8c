//! `--format csv`: one count per line, `week,kind,name,people` (or `...,messages`): the last
//! heading says what is counted.

use super::{CLASS_ORDER, Count, Report};
use std::fmt::Write as _;

/// Long format. Messages: kind `total`, `class`, `topic`, `encrypted` or `autoreply`. People:
/// `total`, `class` (without `--topic`), `topic` and `tagged-reports` (the topic's WhisperBack
/// reports tagged by the Help Desk, among its people). Names are class names, topic ids
/// ([a-z0-9-]) and autoreply values, which hold no comma or quote, so no field needs quoting.
pub fn to_csv(report: &Report) -> String {
    let mut out = String::new();
    let mut line = |week: &str, kind: &str, name: &str, n: u64| {
        let _ = writeln!(out, "{week},{kind},{name},{n}");
    };
    for w in &report.weeks {
        let week = w.week.as_str();
        match report.count {
            Count::Messages => {
                line(week, "total", "", w.total);
                for c in CLASS_ORDER.iter().map(|c| c.as_str()) {
                    line(week, "class", c, w.classes.get(c).copied().unwrap_or(0));
                }
                for (t, n) in &w.topics {
                    line(week, "topic", t, *n);
                }
                line(week, "encrypted", "", w.encrypted);
                for (d, n) in &w.autoreply {
                    line(week, "autoreply", d, *n);
                }
            }
            Count::People => {
                line(week, "total", "", w.people.total);
                for c in CLASS_ORDER.iter().map(|c| c.as_str()) {
                    if let Some(n) = w.people.classes.get(c) {
                        line(week, "class", c, *n);
                    }
                }
                for (t, n) in &w.people.topics {
                    line(week, "topic", t, *n);
                }
                for (t, n) in &w.people.tagged_reports {
                    line(week, "tagged-reports", t, *n);
                }
            }
        }
    }
    let heading = match report.count {
        Count::People => "week,kind,name,people\n",
        Count::Messages => "week,kind,name,messages\n",
    };
    format!("{heading}{out}")
}

//! `stats`: the weekly report from the statistics store.

use crate::config::Config;
use std::path::PathBuf;

/// How `stats` prints its report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatsFormat {
    Table,
    Json,
    Csv,
}

/// What `stats` was asked for; None takes the configuration's setting.
#[derive(Debug, Clone)]
pub struct StatsRequest {
    pub weeks: u32,
    /// `2026-W41` or `2026-10-05`; overrides `weeks`.
    pub since: Option<String>,
    pub topics: Vec<String>,
    pub format: StatsFormat,
    pub plot: Option<PathBuf>,
    pub frequent_min: Option<u32>,
    pub frequent_weeks: Option<u32>,
    /// `2026-11-21`: report as of that day instead of today (UTC).
    pub today: Option<String>,
}

/// `stats`: reads the statistics (read-only, while the daemon runs too), prints the report in the
/// requested format and draws the chart if asked. Errors are one line for the user.
pub fn stats(config: &Config, req: &StatsRequest) -> Result<String, String> {
    use crate::stats::{self, Options, Week};
    let today = match &req.today {
        Some(d) => stats::parse_date(d)?,
        None => stats::today(),
    };
    let (first, last) = match &req.since {
        Some(s) => {
            let first = Week::parse(s)?;
            let last = Week::of(today);
            if first > last {
                return Err(format!("--since {s}: that week has not begun yet"));
            }
            (first, last)
        }
        None if (1..=520).contains(&req.weeks) => Options::last_weeks(today, req.weeks),
        None => return Err(format!("--weeks {}: give a number of weeks from 1 to 520", req.weeks)),
    };
    for t in &req.topics {
        if !crate::reply_file::is_topic_id(t) {
            return Err(format!(
                "--topic {t:?}: a topic id is lowercase letters, digits and '-', as in the reply file"
            ));
        }
    }
    let frequent_min = req.frequent_min.unwrap_or(config.stats.frequent_min);
    let frequent_weeks = req.frequent_weeks.unwrap_or(config.stats.frequent_weeks);
    if frequent_min == 0 || frequent_weeks == 0 {
        return Err("--frequent-min and --frequent-weeks must be at least 1".into());
    }
    let data = crate::store::read_counts(&config.state).map_err(|e| {
        let hint = if e.0.contains("unable to open") || e.0.contains("ermission") {
            " (run it as root or as the daemon's user)"
        } else {
            ""
        };
        format!("{e}{hint}")
    })?;
    let rows = data.messages;
    let opts = Options { first, last, topics: req.topics.clone(), frequent_min, frequent_weeks, today };
    let report = stats::report(&rows, &opts);
    if let Some(path) = &req.plot {
        crate::chart::plot(&report, path)?;
    }
    Ok(match req.format {
        StatsFormat::Table => stats::to_table(&report),
        StatsFormat::Json => stats::to_json(&report),
        StatsFormat::Csv => stats::to_csv(&report),
    })
}

//! `stats`: the weekly report from the statistics store, with the suggestions that the reply file
//! named by the configuration calls for.

use crate::config::Config;
use crate::reply_file::ReplyFile;
use crate::stats::{self, Count, Options, ReplyTopics, Week};
use std::path::PathBuf;

/// How `stats` prints its report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatsFormat {
    Table,
    Json,
    Csv,
    /// The paragraph for the GitLab issue of each `--topic`.
    Markdown,
}

/// What `stats` was asked for; None takes the configuration's setting.
#[derive(Debug, Clone)]
pub struct StatsRequest {
    pub weeks: u32,
    /// `2026-W41` or `2026-10-05`; overrides `weeks`.
    pub since: Option<String>,
    pub topics: Vec<String>,
    pub format: StatsFormat,
    pub count: Count,
    pub plot: Option<PathBuf>,
    pub frequent_min: Option<u32>,
    pub frequent_weeks: Option<u32>,
    pub stale_weeks: Option<u32>,
    /// `2026-11-21`: report as of that day instead of today (UTC).
    pub today: Option<String>,
}

/// The options of the report, every argument checked: errors are one line for the user.
fn options(config: &Config, req: &StatsRequest) -> Result<Options, String> {
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
    if req.format == StatsFormat::Markdown {
        if req.topics.is_empty() {
            return Err("--format markdown writes the paragraph of a topic's GitLab issue: give the topic with --topic ID".into());
        }
        if req.count == Count::Messages {
            return Err("--format markdown counts people: leave out --count messages".into());
        }
    }
    let opts = Options {
        first,
        last,
        topics: req.topics.clone(),
        count: req.count,
        frequent_min: req.frequent_min.unwrap_or(config.stats.frequent_min),
        frequent_weeks: req.frequent_weeks.unwrap_or(config.stats.frequent_weeks),
        stale_weeks: req.stale_weeks.unwrap_or(config.stats.stale_weeks),
        today,
    };
    if opts.frequent_min == 0 || opts.frequent_weeks == 0 || opts.stale_weeks == 0 {
        return Err("--frequent-min, --frequent-weeks and --stale-weeks must be at least 1".into());
    }
    Ok(opts)
}

/// The reply file's topics, or why they cannot be had, in one line.
fn reply_topics(config: &Config) -> Result<ReplyTopics, String> {
    match ReplyFile::load_configured(config) {
        Ok(Some(file)) => Ok(ReplyTopics {
            hot: file.hot_topics.clone(),
            topics: file
                .topics
                .iter()
                .map(|t| (t.id.clone(), !t.keywords.is_empty() || !t.language_keywords.is_empty()))
                .collect(),
        }),
        Ok(None) => {
            Err(format!("no reply file at {} (autoreply is off)", config.autoreply.reply_file.display()))
        }
        Err(d) => {
            let first = d.0.first().map(|d| d.to_string()).unwrap_or_default();
            let more = match d.0.len() {
                0 | 1 => String::new(),
                n => format!(" (and {} more problems: run helpdesk-milter check)", n - 1),
            };
            Err(format!("the reply file cannot be read: {first}{more}"))
        }
    }
}

/// `stats`: reads the statistics (read-only, while the daemon runs too), prints the report in the
/// requested format and draws the chart if asked. Errors are one line for the user.
pub fn stats(config: &Config, req: &StatsRequest) -> Result<String, String> {
    let opts = options(config, req)?;
    let data = crate::store::read_counts(&config.state).map_err(|e| {
        let hint = if e.0.contains("unable to open") || e.0.contains("ermission") {
            " (run it as root or as the daemon's user)"
        } else {
            ""
        };
        format!("{e}{hint}")
    })?;
    let file = reply_topics(config);
    let weekly = stats::Weekly::new(&data);
    if let Ok(f) = &file {
        // A mistyped topic would otherwise read as "not reported", and be pasted as such.
        let counted = weekly.topics();
        if let Some(t) = opts
            .topics
            .iter()
            .find(|t| !f.topics.iter().any(|(id, _)| id == *t) && !counted.contains(t.as_str()))
        {
            return Err(format!(
                "--topic {t}: {} has no such topic, and nothing was ever counted about it",
                config.autoreply.reply_file.display()
            ));
        }
    }
    let report = stats::report(&data, &opts, file.as_ref().map_err(String::as_str));
    if let Some(path) = &req.plot {
        stats::chart::plot(&report, path)?;
    }
    Ok(match req.format {
        StatsFormat::Table => stats::to_table(&report),
        StatsFormat::Json => stats::to_json(&report),
        StatsFormat::Csv => stats::to_csv(&report),
        StatsFormat::Markdown => stats::to_markdown(&weekly, &report.frequent, &opts),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn request(format: StatsFormat, topics: &[&str], count: Count) -> StatsRequest {
        StatsRequest {
            weeks: 8,
            since: None,
            topics: topics.iter().map(|t| t.to_string()).collect(),
            format,
            count,
            plot: None,
            frequent_min: None,
            frequent_weeks: None,
            stale_weeks: Some(6),
            today: Some("2026-11-21".into()),
        }
    }

    #[test]
    fn the_markdown_needs_a_topic_and_counts_people() {
        let config = Config::defaults(Path::new("/etc/hm/test.toml"));
        let e = options(&config, &request(StatsFormat::Markdown, &[], Count::People)).unwrap_err();
        assert!(e.contains("give the topic with --topic ID"), "{e}");
        let e = options(&config, &request(StatsFormat::Markdown, &["wifi"], Count::Messages)).unwrap_err();
        assert!(e.contains("counts people"), "{e}");
        let o = options(&config, &request(StatsFormat::Markdown, &["wifi"], Count::People)).unwrap();
        assert_eq!((o.stale_weeks, o.frequent_min, o.first.label()), (6, 2, "2026-W40".to_string()));
    }

    #[test]
    fn a_reply_file_that_cannot_be_read_is_one_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("helpdesk-milter.toml");
        std::fs::write(dir.path().join("reply.toml"), "hot_topics = [\"x\"]\n[nonsense\n").unwrap();
        std::fs::write(&path, "").unwrap();
        let config = Config::load(&path).unwrap();
        let e = reply_topics(&config).unwrap_err();
        assert!(e.starts_with("the reply file cannot be read: ") && e.contains("reply.toml"), "{e}");
        assert_eq!(e.lines().count(), 1, "{e}");
        std::fs::remove_file(dir.path().join("reply.toml")).unwrap();
        assert!(reply_topics(&config).unwrap_err().contains("cannot read the reply file"));
    }
}

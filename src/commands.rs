//! The bodies of the `check`, `classify`, `preview` and `stats` commands (the binary only parses
//! arguments).

use crate::address;
use crate::classify::Envelope;
use crate::config::Config;
use crate::diagnostic::Diagnostics;
use crate::message::MessageData;
use crate::reply::{self, ReplyRequest};
use crate::reply_file::ReplyFile;
use crate::state::ReplyState;
use crate::triage::{self, Deps, HeaderChange, TriageError};
use mail_parser::{HeaderName, HeaderValue, MessageParser};
use std::path::{Path, PathBuf};

/// `check`: validates the configuration and every file it names.
pub fn check(config_path: &Path) -> Result<(Config, Option<ReplyFile>), Diagnostics> {
    let config = Config::load(config_path)?;
    let reply_file = load_reply_file(&config)?;
    Ok((config, reply_file))
}

/// The configured reply file: required when auto-replies are on; read if present otherwise (its
/// topics still label requests).
pub fn load_reply_file(config: &Config) -> Result<Option<ReplyFile>, Diagnostics> {
    let path = &config.autoreply.reply_file;
    if !config.autoreply.enabled && !path.exists() {
        return Ok(None);
    }
    ReplyFile::load(path).map(Some)
}

/// The envelope `classify` uses: the sender given, else the address in Return-Path, else in From
/// (`<>` is the null sender); the recipients given, else the first Help Desk address.
pub fn default_envelope(config: &Config, raw: &[u8], sender: Option<&str>, rcpts: &[String]) -> Envelope {
    let sender = match sender {
        Some(s) => s.to_string(),
        None => MessageParser::new().parse_headers(raw).map_or_else(String::new, |m| {
            match m.header(HeaderName::ReturnPath) {
                // `Return-Path: <>` parses as empty: the null sender.
                Some(HeaderValue::Text(t)) => t.to_string(),
                Some(HeaderValue::TextList(l)) => l.last().map(|t| t.to_string()).unwrap_or_default(),
                Some(_) => String::new(),
                None => m.return_address().map(str::to_string).unwrap_or_default(),
            }
        }),
    };
    let recipients: Vec<String> = if rcpts.is_empty() {
        config.helpdesk.addresses.iter().take(1).cloned().collect()
    } else {
        rcpts.iter().map(|r| address::normalize(r)).collect()
    };
    Envelope::new(&sender, recipients)
}

/// A whole message as the milter would have kept it, under the configured limits.
fn message_data(config: &Config, raw: &[u8]) -> MessageData {
    let m = &config.milter;
    MessageData::from_rfc5322(raw, &config.helpdesk.header_prefix, m.max_header_bytes, m.max_body_bytes)
}

/// `classify`: the header changes the daemon would make to `raw`, through the same end-of-message
/// code and the same limits as the milter, submitted with the SASL login `sasl_login` if given.
/// Sends nothing and changes no state.
pub fn classify(
    config: &Config,
    reply_file: Option<&ReplyFile>,
    raw: &[u8],
    sender: Option<&str>,
    rcpts: &[String],
    sasl_login: Option<&str>,
) -> Result<Vec<HeaderChange>, TriageError> {
    let envelope = default_envelope(config, raw, sender, rcpts).with_sasl_login(sasl_login);
    let data = message_data(config, raw);
    // A fresh in-memory state: as if nobody had been answered, and nothing is recorded.
    let state = ReplyState::in_memory();
    let deps = Deps { reply_file, state: &state, now: crate::daemon::unix_now() };
    Ok(triage::end_of_message(config, &deps, &envelope, &data)?.changes)
}

/// `preview`: the complete reply message that would answer `message` (or a sample request),
/// in `language` if given, else in the language the daemon would pick.
pub fn preview(config: &Config, file: &ReplyFile, language: Option<&str>, message: Option<&[u8]>) -> Vec<u8> {
    let mut request = match message {
        Some(raw) => {
            let envelope = default_envelope(config, raw, None, &[]);
            let data = message_data(config, raw);
            let kept = data.to_rfc5322();
            let parsed = crate::classify::parse(&kept);
            let text = parsed.as_ref().and_then(|p| p.body_text(0));
            triage::reply_request(&envelope, parsed.as_ref(), text.as_deref())
        }
        None => ReplyRequest { recipient: "someone@example.org".into(), ..ReplyRequest::default() },
    };
    if request.recipient.is_empty() {
        // A message without sender would get no reply; show the text all the same.
        request.recipient = "someone@example.org".into();
    }
    if let Some(lang) = language {
        // The language asked for, and no other.
        request.languages = vec![lang.to_string()];
        request.text_sample.clear();
    }
    reply::build(&config.autoreply, file, &request, crate::daemon::unix_now()).message
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> Config {
        Config::defaults(Path::new("/x.toml"))
    }

    #[test]
    fn sender_defaults_to_return_path_then_from() {
        let c = cfg();
        let rp = b"Return-Path: <Bounce@Example.org>\nFrom: alice@example.org\n\nx";
        assert_eq!(default_envelope(&c, rp, None, &[]).sender, "bounce@example.org");
        let from = b"From: Alice <Alice@Example.org>\n\nx";
        assert_eq!(default_envelope(&c, from, None, &[]).sender, "alice@example.org");
        assert_eq!(default_envelope(&c, b"Return-Path: <>\nFrom: a@b.org\n\nx", None, &[]).sender, "");
        assert_eq!(default_envelope(&c, from, Some("<>"), &[]).sender, "");
        assert_eq!(default_envelope(&c, b"\n\nno headers", None, &[]).sender, "");
    }

    #[test]
    fn recipients_default_to_the_first_helpdesk_address() {
        let c = cfg();
        assert_eq!(default_envelope(&c, b"\n\nx", None, &[]).recipients, vec!["support@tails.net"]);
        let e = default_envelope(&c, b"\n\nx", None, &["<Bob@Example.org>".into()]);
        assert_eq!(e.recipients, vec!["bob@example.org"]);
    }

    #[test]
    fn null_sender_from_the_command_line_is_automated() {
        let out = classify(&cfg(), None, b"From: alice@example.org\n\nhello", Some("<>"), &[], None).unwrap();
        assert_eq!(out[0].to_string(), "X-HelpDesk-Class: automated");
    }

    #[test]
    fn sasl_user_shows_an_authenticated_submission() {
        let raw = b"From: bob@tails.net\nTo: support@tails.net\n\nthe mirror is down";
        let class = |login| classify(&cfg(), None, raw, None, &[], login).unwrap()[0].to_string();
        assert_eq!(class(Some("bob")), "X-HelpDesk-Class: team");
        assert_eq!(class(None), "X-HelpDesk-Class: support");
    }
}

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
    let store = crate::counts::CountStore::new(&config.state.directory);
    let rows = store.read(std::time::Duration::from_secs(10)).map_err(|e| {
        let hint =
            if e.0.contains("ermission denied") { " (run it as root or as the daemon's user)" } else { "" };
        format!("{e}{hint}")
    })?;
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

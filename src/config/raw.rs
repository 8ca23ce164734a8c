//! The configuration file as written: TOML through serde, every value with its position in the
//! file (`toml::Spanned`) so that the validator can point at it. A key left out takes its default
//! from the `Default` impls below, which are the documented defaults of etc/helpdesk-milter.toml;
//! an unknown key is an error.

use super::model::OnError;
use crate::address::DEFAULT_ROLE_SENDERS;
use serde::Deserialize;
use toml::Spanned;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawConfig {
    pub milter: RawMilter,
    pub helpdesk: RawHelpdesk,
    pub autoreply: RawAutoreply,
    pub state: RawState,
    pub log: RawLog,
    pub stats: RawStats,
    pub metrics: RawMetrics,
}

/// A default value: it has no position in the file (the validator then reports the file as a whole).
fn u<T>(v: T) -> Spanned<T> {
    Spanned::new(0..0, v)
}

fn strings(v: &[&str]) -> Vec<Spanned<String>> {
    v.iter().map(|s| u((*s).to_string())).collect()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawMilter {
    pub listen: Spanned<String>,
    pub socket_mode: Spanned<String>,
    pub socket_group: Spanned<String>,
    pub on_error: OnError,
    pub max_connections: Spanned<i64>,
    pub idle_timeout: Spanned<String>,
    pub max_header_bytes: Spanned<i64>,
    pub max_body_bytes: Spanned<i64>,
}

impl Default for RawMilter {
    fn default() -> Self {
        Self {
            listen: u("inet:127.0.0.1:8894".into()),
            socket_mode: u("0660".into()),
            socket_group: u(String::new()),
            on_error: OnError::Accept,
            max_connections: u(100),
            idle_timeout: u("1h".into()),
            max_header_bytes: u(256 * 1024),
            max_body_bytes: u(64 * 1024),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawHelpdesk {
    pub addresses: Spanned<Vec<Spanned<String>>>,
    pub aliases: Vec<Spanned<String>>,
    pub whisperback_senders: Vec<Spanned<String>>,
    pub team_senders: Vec<Spanned<String>>,
    pub header_prefix: Spanned<String>,
    pub subject_tags: Vec<Spanned<String>>,
    pub spam_headers: Vec<Spanned<String>>,
    pub role_senders: Vec<Spanned<String>>,
    pub team_trust: Option<Spanned<Vec<Spanned<String>>>>,
    /// Replaced by team_trust: `true` still means `team_trust = ["dkim"]`, `false` is the default.
    pub team_require_dkim: Option<Spanned<bool>>,
    pub trusted_authserv_ids: Vec<Spanned<String>>,
    pub recipient_delimiter: Spanned<String>,
    pub tag_messages: Spanned<String>,
}

impl Default for RawHelpdesk {
    fn default() -> Self {
        Self {
            addresses: u(strings(&["support@tails.net"])),
            aliases: Vec::new(),
            whisperback_senders: strings(&["devnull@tails.boum.org"]),
            team_senders: strings(&["*@tails.net"]),
            header_prefix: u("X-HelpDesk-".into()),
            subject_tags: strings(&["FT"]),
            spam_headers: strings(&["X-Spam-Flag: YES"]),
            role_senders: strings(DEFAULT_ROLE_SENDERS),
            team_trust: None,
            team_require_dkim: None,
            trusted_authserv_ids: Vec::new(),
            recipient_delimiter: u("+".into()),
            tag_messages: u("deliver".into()),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawAutoreply {
    pub enabled: Spanned<bool>,
    pub reply_file: Spanned<String>,
    pub from: Spanned<String>,
    pub interval: Spanned<String>,
    pub allow_short_interval: Spanned<bool>,
    pub relay: Spanned<String>,
    pub retry_interval: Spanned<String>,
    pub lifetime: Spanned<String>,
    pub smtp_timeout: Spanned<String>,
    pub require_addressed: Spanned<bool>,
    pub system_addresses: Vec<Spanned<String>>,
    pub max_per_hour: Spanned<i64>,
    pub max_per_domain_per_hour: Spanned<i64>,
    pub new_topic_replies: Spanned<bool>,
}

impl Default for RawAutoreply {
    fn default() -> Self {
        Self {
            enabled: u(true),
            reply_file: u("reply.toml".into()),
            from: u("Tails Help Desk <support@tails.net>".into()),
            interval: u("7d".into()),
            allow_short_interval: u(false),
            relay: u("smtp://127.0.0.1:25".into()),
            retry_interval: u("1m".into()),
            lifetime: u("5d".into()),
            smtp_timeout: u("60s".into()),
            require_addressed: u(true),
            system_addresses: Vec::new(),
            max_per_hour: u(100),
            max_per_domain_per_hour: u(20),
            new_topic_replies: u(true),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawState {
    pub directory: Spanned<String>,
    pub max_entries: Spanned<i64>,
    pub backend: Spanned<String>,
    pub password_file: Spanned<String>,
    pub timeout: Spanned<String>,
}

impl Default for RawState {
    fn default() -> Self {
        Self {
            directory: u("/var/lib/helpdesk-milter".into()),
            max_entries: u(100_000),
            backend: u(String::new()),
            password_file: u(String::new()),
            timeout: u("250ms".into()),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawStats {
    pub enabled: Spanned<bool>,
    pub retention: Spanned<String>,
    pub frequent_min: Spanned<i64>,
    pub frequent_weeks: Spanned<i64>,
    pub stale_weeks: Spanned<i64>,
}

impl Default for RawStats {
    fn default() -> Self {
        Self {
            enabled: u(true),
            retention: u("365d".into()),
            frequent_min: u(2),
            frequent_weeks: u(2),
            stale_weeks: u(4),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawMetrics {
    pub listen: Spanned<String>,
}

impl Default for RawMetrics {
    fn default() -> Self {
        Self { listen: u(String::new()) }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawLog {
    pub level: Spanned<String>,
}

impl Default for RawLog {
    fn default() -> Self {
        Self { level: u("info".into()) }
    }
}

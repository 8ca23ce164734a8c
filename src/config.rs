//! The daemon's configuration file (TOML): parsing, defaults and validation.
//!
//! Unknown keys are errors, and every error names its file, line and column, so that a sysadmin
//! can fix the file from `helpdesk-milter check` alone.

use crate::address::{self, SenderPattern};
use crate::diagnostic::{Diagnostic, Diagnostics};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

/// Splits `Display Name <address>` (RFC 5322 mailbox, parsed by mail-parser) into its name and
/// lowercased address.
pub fn parse_mailbox(s: &str) -> Option<(Option<String>, String)> {
    if s.contains(['\r', '\n']) {
        return None;
    }
    let raw = format!("From: {s}\r\n\r\n");
    let msg = mail_parser::MessageParser::new().parse_headers(raw.as_bytes())?;
    let addr = msg.from()?.first()?;
    let address = address::normalize(addr.address()?);
    address::split(&address)?;
    Some((addr.name().map(str::to_string), address))
}

/// Where the daemon looks for its configuration unless told otherwise.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/helpdesk-milter/helpdesk-milter.toml";

/// What Postfix is told when this daemon fails on a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// Accept the message untouched: mail flows even when the daemon is broken.
    Accept,
    /// Ask the client to try again later: nothing passes untriaged, at the cost of delay.
    Tempfail,
}

/// The socket the milter listens on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    Inet { host: String, port: u16 },
    Unix(PathBuf),
}

impl std::fmt::Display for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Listen::Inet { host, port } if host.contains(':') => write!(f, "inet:[{host}]:{port}"),
            Listen::Inet { host, port } => write!(f, "inet:{host}:{port}"),
            Listen::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

impl Listen {
    /// Parses `inet:HOST:PORT`, `inet:[IPV6]:PORT` or `unix:/ABSOLUTE/PATH` (relative paths are
    /// taken relative to `base`).
    pub fn parse(s: &str, base: &Path) -> Result<Self, String> {
        if let Some(rest) = s.strip_prefix("inet:") {
            let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
                let (h, p) = v6.split_once("]:").ok_or("expected inet:[IPV6]:PORT")?;
                (h, p)
            } else {
                rest.rsplit_once(':').ok_or("expected inet:HOST:PORT")?
            };
            if host.is_empty() {
                return Err("the host is empty; use inet:127.0.0.1:PORT".into());
            }
            let port: u16 = port.parse().map_err(|_| format!("invalid port {port:?}"))?;
            Ok(Listen::Inet { host: host.to_string(), port })
        } else if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err("the socket path is empty".into());
            }
            Ok(Listen::Unix(base.join(path)))
        } else {
            Err("expected \"inet:HOST:PORT\" or \"unix:/PATH\"".into())
        }
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    milter: RawMilter,
    #[serde(default)]
    helpdesk: RawHelpdesk,
    #[serde(default)]
    autoreply: RawAutoreply,
    #[serde(default)]
    state: RawState,
    #[serde(default)]
    log: RawLog,
    #[serde(default)]
    stats: RawStats,
    #[serde(default)]
    metrics: RawMetrics,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStats {
    #[serde(default = "default_true")]
    enabled: Spanned<bool>,
    #[serde(default = "default_retention")]
    retention: Spanned<String>,
    #[serde(default = "default_frequent")]
    frequent_min: Spanned<i64>,
    #[serde(default = "default_frequent")]
    frequent_weeks: Spanned<i64>,
}

impl Default for RawStats {
    fn default() -> Self {
        Self {
            enabled: default_true(),
            retention: default_retention(),
            frequent_min: default_frequent(),
            frequent_weeks: default_frequent(),
        }
    }
}

fn default_retention() -> Spanned<String> {
    unspanned("365d".into())
}
fn default_frequent() -> Spanned<i64> {
    unspanned(2)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    #[serde(default = "default_empty")]
    listen: Spanned<String>,
}

impl Default for RawMetrics {
    fn default() -> Self {
        Self { listen: default_empty() }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAutoreply {
    #[serde(default = "default_true")]
    enabled: Spanned<bool>,
    #[serde(default = "default_reply_file")]
    reply_file: Spanned<String>,
    #[serde(default = "default_from")]
    from: Spanned<String>,
    #[serde(default = "default_interval")]
    interval: Spanned<String>,
    #[serde(default = "default_false")]
    allow_short_interval: Spanned<bool>,
    #[serde(default = "default_relay")]
    relay: Spanned<String>,
    #[serde(default = "default_retry_interval")]
    retry_interval: Spanned<String>,
    #[serde(default = "default_lifetime")]
    lifetime: Spanned<String>,
    #[serde(default = "default_smtp_timeout")]
    smtp_timeout: Spanned<String>,
    #[serde(default = "default_true")]
    require_addressed: Spanned<bool>,
    #[serde(default)]
    system_addresses: Vec<Spanned<String>>,
    #[serde(default = "default_max_per_hour")]
    max_per_hour: Spanned<i64>,
    #[serde(default = "default_max_per_domain_per_hour")]
    max_per_domain_per_hour: Spanned<i64>,
}

impl Default for RawAutoreply {
    fn default() -> Self {
        Self {
            enabled: default_true(),
            reply_file: default_reply_file(),
            from: default_from(),
            interval: default_interval(),
            allow_short_interval: default_false(),
            relay: default_relay(),
            retry_interval: default_retry_interval(),
            lifetime: default_lifetime(),
            smtp_timeout: default_smtp_timeout(),
            require_addressed: default_true(),
            system_addresses: Vec::new(),
            max_per_hour: default_max_per_hour(),
            max_per_domain_per_hour: default_max_per_domain_per_hour(),
        }
    }
}

fn default_true() -> Spanned<bool> {
    unspanned(true)
}
fn default_reply_file() -> Spanned<String> {
    unspanned("reply.toml".into())
}
fn default_from() -> Spanned<String> {
    unspanned("Tails Help Desk <support@tails.net>".into())
}
fn default_interval() -> Spanned<String> {
    unspanned("7d".into())
}
fn default_relay() -> Spanned<String> {
    unspanned("smtp://127.0.0.1:25".into())
}
fn default_retry_interval() -> Spanned<String> {
    unspanned("1m".into())
}
fn default_lifetime() -> Spanned<String> {
    unspanned("5d".into())
}
fn default_smtp_timeout() -> Spanned<String> {
    unspanned("60s".into())
}
fn default_max_per_hour() -> Spanned<i64> {
    unspanned(100)
}
fn default_max_per_domain_per_hour() -> Spanned<i64> {
    unspanned(20)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawState {
    #[serde(default = "default_state_directory")]
    directory: Spanned<String>,
    #[serde(default = "default_max_entries")]
    max_entries: Spanned<i64>,
}

impl Default for RawState {
    fn default() -> Self {
        Self { directory: default_state_directory(), max_entries: default_max_entries() }
    }
}

fn default_state_directory() -> Spanned<String> {
    unspanned("/var/lib/helpdesk-milter".into())
}
fn default_max_entries() -> Spanned<i64> {
    unspanned(100_000)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMilter {
    #[serde(default = "default_listen")]
    listen: Spanned<String>,
    #[serde(default = "default_socket_mode")]
    socket_mode: Spanned<String>,
    #[serde(default = "default_empty")]
    socket_group: Spanned<String>,
    #[serde(default = "default_on_error")]
    on_error: OnError,
    #[serde(default = "default_max_connections")]
    max_connections: Spanned<i64>,
    #[serde(default = "default_idle_timeout")]
    idle_timeout: Spanned<String>,
    #[serde(default = "default_max_header_bytes")]
    max_header_bytes: Spanned<i64>,
    #[serde(default = "default_max_body_bytes")]
    max_body_bytes: Spanned<i64>,
}

impl Default for RawMilter {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            socket_mode: default_socket_mode(),
            socket_group: Spanned::new(0..0, String::new()),
            on_error: default_on_error(),
            max_connections: default_max_connections(),
            idle_timeout: default_idle_timeout(),
            max_header_bytes: default_max_header_bytes(),
            max_body_bytes: default_max_body_bytes(),
        }
    }
}

fn unspanned<T>(v: T) -> Spanned<T> {
    Spanned::new(0..0, v)
}
fn default_empty() -> Spanned<String> {
    unspanned(String::new())
}
fn default_false() -> Spanned<bool> {
    unspanned(false)
}
fn default_listen() -> Spanned<String> {
    unspanned("inet:127.0.0.1:8894".into())
}
fn default_socket_mode() -> Spanned<String> {
    unspanned("0660".into())
}
fn default_on_error() -> OnError {
    OnError::Accept
}
fn default_max_connections() -> Spanned<i64> {
    unspanned(100)
}
fn default_idle_timeout() -> Spanned<String> {
    unspanned("1h".into())
}
fn default_max_header_bytes() -> Spanned<i64> {
    unspanned(256 * 1024)
}
fn default_max_body_bytes() -> Spanned<i64> {
    unspanned(64 * 1024)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHelpdesk {
    #[serde(default = "default_addresses")]
    addresses: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    aliases: Vec<Spanned<String>>,
    #[serde(default = "default_whisperback_senders")]
    whisperback_senders: Vec<Spanned<String>>,
    #[serde(default = "default_team_senders")]
    team_senders: Vec<Spanned<String>>,
    #[serde(default = "default_header_prefix")]
    header_prefix: Spanned<String>,
    #[serde(default = "default_subject_tags")]
    subject_tags: Vec<Spanned<String>>,
    #[serde(default = "default_spam_headers")]
    spam_headers: Vec<Spanned<String>>,
    #[serde(default = "default_role_senders")]
    role_senders: Vec<Spanned<String>>,
    #[serde(default)]
    team_trust: Option<Spanned<Vec<Spanned<String>>>>,
    /// Replaced by team_trust: `true` still means `team_trust = ["dkim"]`, `false` is the default.
    #[serde(default)]
    team_require_dkim: Option<Spanned<bool>>,
    #[serde(default)]
    trusted_authserv_ids: Vec<Spanned<String>>,
}

impl Default for RawHelpdesk {
    fn default() -> Self {
        Self {
            addresses: default_addresses(),
            aliases: Vec::new(),
            whisperback_senders: default_whisperback_senders(),
            team_senders: default_team_senders(),
            header_prefix: default_header_prefix(),
            subject_tags: default_subject_tags(),
            spam_headers: default_spam_headers(),
            role_senders: default_role_senders(),
            team_trust: None,
            team_require_dkim: None,
            trusted_authserv_ids: Vec::new(),
        }
    }
}

fn strings(v: &[&str]) -> Vec<Spanned<String>> {
    v.iter().map(|s| unspanned((*s).to_string())).collect()
}
fn default_addresses() -> Spanned<Vec<Spanned<String>>> {
    unspanned(strings(&["support@tails.net"]))
}
fn default_whisperback_senders() -> Vec<Spanned<String>> {
    strings(&["devnull@tails.boum.org"])
}
fn default_team_senders() -> Vec<Spanned<String>> {
    strings(&["*@tails.net"])
}
fn default_header_prefix() -> Spanned<String> {
    unspanned("X-HelpDesk-".into())
}
fn default_subject_tags() -> Vec<Spanned<String>> {
    strings(&["FT"])
}
fn default_spam_headers() -> Vec<Spanned<String>> {
    strings(&["X-Spam-Flag: YES"])
}

/// Local parts of automation and role addresses (RFC 5230 §4.6 and the prior art); `*` is any
/// run of characters.
pub const DEFAULT_ROLE_SENDERS: &[&str] = &[
    "mailer-daemon",
    "postmaster",
    "listserv",
    "majordomo",
    "owner-*",
    "*-owner",
    "*-request",
    "*-bounce",
    "*-bounces",
    "*-bounce+*",
    "*-bounces+*",
    "bounce-*",
    "bounces-*",
    "bounce",
    "bounces",
    "noreply*",
    "no-reply*",
    "no_reply*",
    "do-not-reply*",
    "do_not_reply*",
    "donotreply*",
];

fn default_role_senders() -> Vec<Spanned<String>> {
    strings(DEFAULT_ROLE_SENDERS)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    #[serde(default = "default_log_level")]
    level: Spanned<String>,
}

impl Default for RawLog {
    fn default() -> Self {
        Self { level: default_log_level() }
    }
}

fn default_log_level() -> Spanned<String> {
    unspanned("info".into())
}

/// Settings of the milter socket and protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MilterConfig {
    pub listen: Listen,
    /// Permission bits of a UNIX socket.
    pub socket_mode: u32,
    /// Group that owns a UNIX socket (Postfix's `postfix` group, typically); None keeps ours.
    pub socket_group: Option<String>,
    pub on_error: OnError,
    pub max_connections: usize,
    /// How long a milter connection may wait for the MTA's next command before it is closed, so
    /// that connections that say nothing do not hold the `max_connections` slots for ever.
    pub idle_timeout: Duration,
    /// Header bytes kept per message for classification.
    pub max_header_bytes: usize,
    /// Body bytes kept per message for classification; the rest is skipped.
    pub max_body_bytes: usize,
}

/// A header that marks spam when it has a given value (an upstream scanner's verdict).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderMatch {
    pub name: String,
    pub value: String,
}

/// The signals that make a team sender's mail class `team` (`helpdesk.team_trust`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TeamTrust {
    /// A SASL-authenticated submission on this host (Postfix's `{auth_authen}`).
    pub sasl: bool,
    /// A `dkim=pass` for the From: domain from one of `trusted_authserv_ids`.
    pub dkim: bool,
}

/// The default `team_trust`: only mail submitted with a login on this host.
pub const DEFAULT_TEAM_TRUST: TeamTrust = TeamTrust { sasl: true, dkim: false };

/// What the classifier needs: which mail is for the Help Desk and who is who.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelpdeskConfig {
    /// Lowercased addresses of the Help Desk.
    pub addresses: Vec<String>,
    /// Lowercased other addresses that reach the Help Desk (forwards, old addresses): they count
    /// as ours when deciding a reply, but do not make a message triaged.
    pub aliases: Vec<String>,
    pub whisperback_senders: Vec<SenderPattern>,
    pub team_senders: Vec<SenderPattern>,
    pub header_prefix: String,
    pub subject_tags: Vec<String>,
    pub spam_headers: Vec<HeaderMatch>,
    /// Lowercased local-part patterns of role senders.
    pub role_senders: Vec<String>,
    /// What proves that mail from a team address is the team's.
    pub team_trust: TeamTrust,
    /// Lowercased authserv-ids whose Authentication-Results are trusted.
    pub trusted_authserv_ids: Vec<String>,
}

/// The auto-responder's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AutoreplyConfig {
    pub enabled: bool,
    /// The reply file, resolved against the configuration's directory.
    pub reply_file: PathBuf,
    /// The From: of replies, as written (`Name <address>`).
    pub from: String,
    /// The display name and address of `from`.
    pub from_name: Option<String>,
    pub from_address: String,
    /// One reply per sender per interval.
    pub interval: Duration,
    pub relay: crate::outbox::Relay,
    pub retry_interval: Duration,
    pub lifetime: Duration,
    /// Bound on each step of an SMTP session with the relay.
    pub smtp_timeout: Duration,
    pub require_addressed: bool,
    pub system_addresses: Vec<String>,
    pub max_per_hour: u32,
    pub max_per_domain_per_hour: u32,
}

/// Where the daemon keeps its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateConfig {
    pub directory: PathBuf,
    pub max_entries: usize,
}

/// What is counted for `helpdesk-milter stats`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsConfig {
    /// Count triaged messages (day, class, topics, encryption, reply decision; nothing else).
    pub enabled: bool,
    /// Days older than this are purged from the statistics.
    pub retention: Duration,
    /// A topic is frequent when reported at least `frequent_min` times in each of the last
    /// `frequent_weeks` complete weeks.
    pub frequent_min: u32,
    pub frequent_weeks: u32,
}

/// The Prometheus endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsConfig {
    /// Where `/metrics` is served; None (the default) serves nothing.
    pub listen: Option<std::net::SocketAddr>,
}

/// The validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The file this was read from.
    pub path: PathBuf,
    pub milter: MilterConfig,
    pub helpdesk: HelpdeskConfig,
    pub autoreply: AutoreplyConfig,
    pub state: StateConfig,
    pub stats: StatsConfig,
    pub metrics: MetricsConfig,
    pub log_level: String,
    /// The reply policy's view of the settings above.
    pub policy: crate::policy::PolicyConfig,
}

impl Config {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, Diagnostics> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Diagnostics(vec![Diagnostic::whole_file(path, format!("cannot read configuration: {e}"))])
        })?;
        Config::parse(path, &text)
    }

    /// Parses and validates configuration text; `path` names it in errors and anchors relative paths.
    pub fn parse(path: &Path, text: &str) -> Result<Config, Diagnostics> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            Diagnostics(vec![Diagnostic::at_span(path, text, e.span(), e.message().trim_end())])
        })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let mut v = Validator { path, text, errors: Vec::new() };
        let config = v.build(raw, &base);
        if v.errors.is_empty() { Ok(config) } else { Err(Diagnostics(v.errors)) }
    }

    /// The configuration with every default, as if read from an empty file at `path`.
    pub fn defaults(path: &Path) -> Config {
        // An empty file is valid by construction; the expect documents that invariant.
        Config::parse(path, "").expect("the defaults are valid")
    }

    /// Names of settings that differ between `self` and `new` but only take effect at restart.
    pub fn restart_needed(&self, new: &Config) -> Vec<&'static str> {
        let (a, b) = (&self.milter, &new.milter);
        let mut names = Vec::new();
        if a.listen != b.listen {
            names.push("milter.listen");
        }
        if a.socket_mode != b.socket_mode {
            names.push("milter.socket_mode");
        }
        if a.socket_group != b.socket_group {
            names.push("milter.socket_group");
        }
        if a.max_connections != b.max_connections {
            names.push("milter.max_connections");
        }
        if a.idle_timeout != b.idle_timeout {
            names.push("milter.idle_timeout");
        }
        if self.log_level != new.log_level {
            names.push("log.level");
        }
        if self.state != new.state {
            names.push("state.directory");
        }
        if self.stats.retention != new.stats.retention {
            names.push("stats.retention");
        }
        if self.metrics != new.metrics {
            names.push("metrics.listen");
        }
        let (a, b) = (&self.autoreply, &new.autoreply);
        if a.reply_file != b.reply_file {
            names.push("autoreply.reply_file");
        }
        if (&a.relay, a.retry_interval, a.lifetime, a.smtp_timeout)
            != (&b.relay, b.retry_interval, b.lifetime, b.smtp_timeout)
        {
            names.push("autoreply.relay, retry_interval, lifetime or smtp_timeout");
        }
        names
    }

    /// Whether `addr` (any case, with or without angle brackets) is a Help Desk address.
    pub fn is_helpdesk_address(&self, addr: &str) -> bool {
        let a = address::normalize(addr);
        self.helpdesk.addresses.contains(&a)
    }
}

struct Validator<'a> {
    path: &'a Path,
    text: &'a str,
    errors: Vec<Diagnostic>,
}

impl Validator<'_> {
    fn error<T>(&mut self, at: &Spanned<T>, message: impl Into<String>) {
        let span = at.span();
        let span = if span.is_empty() && span.start == 0 { None } else { Some(span) };
        self.errors.push(Diagnostic::at_span(self.path, self.text, span, message));
    }

    fn positive(&mut self, v: &Spanned<i64>, what: &str, min: i64) -> usize {
        if *v.get_ref() < min {
            self.error(v, format!("{what} must be at least {min}"));
            return min as usize;
        }
        usize::try_from(*v.get_ref()).unwrap_or(usize::MAX)
    }

    fn duration(&mut self, s: &Spanned<String>, what: &str, min: Duration) -> Duration {
        match humantime::parse_duration(s.get_ref().trim()) {
            Ok(d) if d >= min => d,
            Ok(_) => {
                self.error(s, format!("{what} must be at least {}", humantime::format_duration(min)));
                min
            }
            Err(e) => {
                self.error(s, format!("{what}: {e}; write a duration such as \"7d\", \"12h\" or \"1m\""));
                min
            }
        }
    }

    fn address(&mut self, s: &Spanned<String>, what: &str) -> Option<String> {
        let a = address::normalize(s.get_ref());
        if address::split(&a).is_none() {
            self.error(s, format!("{what}: {:?} is not an address like name@example.org", s.get_ref()));
            return None;
        }
        Some(a)
    }

    fn patterns(&mut self, list: &[Spanned<String>], what: &str) -> Vec<SenderPattern> {
        list.iter()
            .filter_map(|s| match SenderPattern::parse(s.get_ref()) {
                Ok(p) => Some(p),
                Err(e) => {
                    self.error(s, format!("{what}: {e}"));
                    None
                }
            })
            .collect()
    }

    fn build(&mut self, raw: RawConfig, base: &Path) -> Config {
        let m = &raw.milter;
        let listen = match Listen::parse(m.listen.get_ref(), base) {
            Ok(l) => l,
            Err(e) => {
                self.error(&m.listen, format!("milter.listen: {e}"));
                Listen::Inet { host: "127.0.0.1".into(), port: 8894 }
            }
        };
        let socket_mode = match u32::from_str_radix(m.socket_mode.get_ref(), 8) {
            Ok(mode) if mode <= 0o777 => mode,
            _ => {
                self.error(
                    &m.socket_mode,
                    "milter.socket_mode must be octal permission bits such as \"0660\"",
                );
                0o660
            }
        };
        let group = m.socket_group.get_ref().trim();
        let socket_group = (!group.is_empty()).then(|| group.to_string());
        let milter = MilterConfig {
            listen,
            socket_mode,
            socket_group,
            on_error: m.on_error,
            max_connections: self.positive(&m.max_connections, "milter.max_connections", 1),
            idle_timeout: self.duration(&m.idle_timeout, "milter.idle_timeout", Duration::from_secs(1)),
            max_header_bytes: self.positive(&m.max_header_bytes, "milter.max_header_bytes", 1024),
            max_body_bytes: self.positive(&m.max_body_bytes, "milter.max_body_bytes", 0),
        };

        let h = &raw.helpdesk;
        if h.addresses.get_ref().is_empty() {
            self.error(&h.addresses, "helpdesk.addresses must name at least one address");
        }
        let addresses =
            h.addresses.get_ref().iter().filter_map(|a| self.address(a, "helpdesk.addresses")).collect();
        let prefix = h.header_prefix.get_ref();
        if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            self.error(
                &h.header_prefix,
                "helpdesk.header_prefix must be letters, digits and '-', such as \"X-HelpDesk-\"",
            );
        }
        let subject_tags = h
            .subject_tags
            .iter()
            .filter_map(|t| {
                let tag = t.get_ref().trim();
                if tag.is_empty() || tag.contains(['[', ']', ',']) || tag.chars().any(char::is_control) {
                    self.error(t, "helpdesk.subject_tags: a tag is the text between the brackets, such as \"FT\" for [FT]");
                    None
                } else {
                    Some(tag.to_string())
                }
            })
            .collect();
        let spam_headers = h
            .spam_headers
            .iter()
            .filter_map(|s| match s.get_ref().split_once(':') {
                Some((n, v)) if !n.trim().is_empty() && !v.trim().is_empty() && !n.contains(' ') => {
                    Some(HeaderMatch { name: n.trim().to_string(), value: v.trim().to_string() })
                }
                _ => {
                    self.error(s, "helpdesk.spam_headers: expected \"Header-Name: value\", such as \"X-Spam-Flag: YES\"");
                    None
                }
            })
            .collect();
        let role_senders = h
            .role_senders
            .iter()
            .filter_map(|r| {
                let p = r.get_ref().trim().to_ascii_lowercase();
                if p.is_empty() || p.contains('@') || p.chars().all(|c| c == '*') {
                    self.error(r, "helpdesk.role_senders: a pattern is a local part such as \"noreply*\" (no '@', not only '*')");
                    None
                } else {
                    Some(p)
                }
            })
            .collect();
        let trusted_authserv_ids: Vec<String> = h
            .trusted_authserv_ids
            .iter()
            .map(|s| s.get_ref().trim().to_ascii_lowercase())
            .filter(|s| !s.is_empty())
            .collect();
        let team_trust = match (&h.team_trust, &h.team_require_dkim) {
            (Some(_), Some(old)) => {
                self.error(old, "helpdesk.team_require_dkim is replaced by helpdesk.team_trust: remove it (team_require_dkim = true is team_trust = [\"dkim\"])");
                DEFAULT_TEAM_TRUST
            }
            (Some(list), None) => {
                let mut trust = TeamTrust::default();
                for t in list.get_ref() {
                    match t.get_ref().trim().to_ascii_lowercase().as_str() {
                        "sasl" => trust.sasl = true,
                        "dkim" => trust.dkim = true,
                        _ => self.error(t, "helpdesk.team_trust: each entry is \"sasl\" (a login on this host) or \"dkim\" (a trusted verifier's DKIM pass)"),
                    }
                }
                if trust.dkim && trusted_authserv_ids.is_empty() {
                    self.error(list, "helpdesk.team_trust = [\"dkim\"] needs helpdesk.trusted_authserv_ids: the authserv-id of the host that verifies DKIM");
                }
                trust
            }
            // The old key: true kept its meaning (DKIM only); false trusted a From: alone, which
            // anyone can forge, and now means the default.
            (None, Some(old)) if *old.get_ref() => {
                if trusted_authserv_ids.is_empty() {
                    self.error(old, "helpdesk.team_require_dkim needs helpdesk.trusted_authserv_ids: the authserv-id of the host that verifies DKIM");
                }
                TeamTrust { sasl: false, dkim: true }
            }
            (None, _) => DEFAULT_TEAM_TRUST,
        };
        let aliases = h.aliases.iter().filter_map(|a| self.address(a, "helpdesk.aliases")).collect();
        let helpdesk = HelpdeskConfig {
            addresses,
            aliases,
            whisperback_senders: self.patterns(&h.whisperback_senders, "helpdesk.whisperback_senders"),
            team_senders: self.patterns(&h.team_senders, "helpdesk.team_senders"),
            header_prefix: prefix.clone(),
            subject_tags,
            spam_headers,
            role_senders,
            team_trust,
            trusted_authserv_ids,
        };

        let autoreply = self.autoreply(&raw.autoreply, base);
        let st = &raw.state;
        if st.directory.get_ref().trim().is_empty() {
            self.error(&st.directory, "state.directory must name a directory");
        }
        let state = StateConfig {
            directory: base.join(st.directory.get_ref()),
            max_entries: self.positive(&st.max_entries, "state.max_entries", 1000),
        };

        let level = raw.log.level.get_ref().to_ascii_lowercase();
        if !["error", "warn", "info", "debug", "trace"].contains(&level.as_str()) {
            self.error(&raw.log.level, "log.level must be one of error, warn, info, debug, trace");
        }
        let policy = crate::policy::PolicyConfig {
            enabled: autoreply.enabled,
            loop_token: autoreply.from_address.clone(),
            own_addresses: helpdesk
                .addresses
                .iter()
                .chain(&helpdesk.aliases)
                .chain(std::iter::once(&autoreply.from_address))
                .cloned()
                .collect(),
            system_addresses: autoreply.system_addresses.clone(),
            require_addressed: autoreply.require_addressed,
            max_per_hour: autoreply.max_per_hour,
            max_per_domain_per_hour: autoreply.max_per_domain_per_hour,
        };
        let stats = self.stats(&raw.stats);
        let listen = raw.metrics.listen.get_ref().trim();
        let metrics = MetricsConfig {
            listen: if listen.is_empty() {
                None
            } else {
                match listen.parse() {
                    Ok(a) => Some(a),
                    Err(_) => {
                        self.error(
                            &raw.metrics.listen,
                            "metrics.listen must be an IP address and port, such as \"127.0.0.1:9894\" (or \"\" for no endpoint)",
                        );
                        None
                    }
                }
            },
        };
        Config {
            path: self.path.to_path_buf(),
            milter,
            helpdesk,
            autoreply,
            state,
            stats,
            metrics,
            log_level: level,
            policy,
        }
    }

    fn stats(&mut self, s: &RawStats) -> StatsConfig {
        const WEEK: Duration = Duration::from_secs(7 * 86400);
        let count = |v: &Spanned<i64>| u32::try_from(*v.get_ref()).unwrap_or(u32::MAX);
        let (min, weeks) = (count(&s.frequent_min), count(&s.frequent_weeks));
        if !(1..=1000).contains(&min) {
            self.error(&s.frequent_min, "stats.frequent_min must be between 1 and 1000 (reports per week)");
        }
        if !(1..=52).contains(&weeks) {
            self.error(&s.frequent_weeks, "stats.frequent_weeks must be between 1 and 52");
        }
        StatsConfig {
            enabled: *s.enabled.get_ref(),
            retention: self.duration(&s.retention, "stats.retention", WEEK),
            frequent_min: min.clamp(1, 1000),
            frequent_weeks: weeks.clamp(1, 52),
        }
    }

    fn autoreply(&mut self, a: &RawAutoreply, base: &Path) -> AutoreplyConfig {
        if a.reply_file.get_ref().trim().is_empty() {
            self.error(&a.reply_file, "autoreply.reply_file must name a file");
        }
        let (from_name, from_address) = match parse_mailbox(a.from.get_ref()) {
            Some(m) => m,
            None => {
                self.error(
                    &a.from,
                    "autoreply.from must be an address, such as \"Tails Help Desk <support@tails.net>\"",
                );
                (None, String::new())
            }
        };
        const DAY: Duration = Duration::from_secs(86400);
        let min_interval = if *a.allow_short_interval.get_ref() { Duration::from_secs(60) } else { DAY };
        let relay = crate::outbox::Relay::parse(a.relay.get_ref().trim()).unwrap_or_else(|e| {
            self.error(&a.relay, format!("autoreply.relay: {e}"));
            crate::outbox::Relay { host: "127.0.0.1".into(), port: 25 }
        });
        let max_per_hour = self.positive(&a.max_per_hour, "autoreply.max_per_hour", 1);
        let max_per_domain =
            self.positive(&a.max_per_domain_per_hour, "autoreply.max_per_domain_per_hour", 1);
        AutoreplyConfig {
            enabled: *a.enabled.get_ref(),
            reply_file: base.join(a.reply_file.get_ref()),
            from: a.from.get_ref().trim().to_string(),
            from_name,
            from_address,
            interval: self.duration(&a.interval, "autoreply.interval", min_interval),
            relay,
            retry_interval: self.duration(
                &a.retry_interval,
                "autoreply.retry_interval",
                Duration::from_secs(1),
            ),
            lifetime: self.duration(&a.lifetime, "autoreply.lifetime", Duration::from_secs(60)),
            smtp_timeout: self.duration(&a.smtp_timeout, "autoreply.smtp_timeout", Duration::from_secs(1)),
            require_addressed: *a.require_addressed.get_ref(),
            system_addresses: a
                .system_addresses
                .iter()
                .filter_map(|s| self.address(s, "autoreply.system_addresses"))
                .collect(),
            max_per_hour: u32::try_from(max_per_hour).unwrap_or(u32::MAX),
            max_per_domain_per_hour: u32::try_from(max_per_domain).unwrap_or(u32::MAX),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, Diagnostics> {
        Config::parse(Path::new("/etc/hm/test.toml"), text)
    }

    #[test]
    fn empty_file_gives_the_documented_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c.milter.listen, Listen::Inet { host: "127.0.0.1".into(), port: 8894 });
        assert_eq!(c.milter.on_error, OnError::Accept);
        assert_eq!(c.milter.max_header_bytes, 262_144);
        assert_eq!(c.milter.max_body_bytes, 65_536);
        assert_eq!(c.helpdesk.addresses, vec!["support@tails.net"]);
        assert_eq!(c.helpdesk.header_prefix, "X-HelpDesk-");
        assert_eq!(
            c.helpdesk.spam_headers,
            vec![HeaderMatch { name: "X-Spam-Flag".into(), value: "YES".into() }]
        );
    }

    #[test]
    fn stats_and_metrics_settings_are_checked() {
        let c = parse("").unwrap();
        assert_eq!(
            c.stats,
            StatsConfig {
                enabled: true,
                retention: Duration::from_secs(365 * 86400),
                frequent_min: 2,
                frequent_weeks: 2
            }
        );
        assert_eq!(c.metrics.listen, None, "no endpoint unless asked");
        let c =
            parse("[stats]\nretention = \"30d\"\nfrequent_min = 3\n[metrics]\nlisten = \"127.0.0.1:9894\"\n")
                .unwrap();
        assert_eq!((c.stats.retention.as_secs(), c.stats.frequent_min), (30 * 86400, 3));
        assert_eq!(c.metrics.listen, Some("127.0.0.1:9894".parse().unwrap()));
        let e = parse(
            "[stats]\nretention = \"1d\"\nfrequent_min = 0\nfrequent_weeks = 99\n[metrics]\nlisten = \"localhost\"\n",
        )
        .unwrap_err();
        let lines: Vec<usize> = e.0.iter().map(|d| d.line).collect();
        assert_eq!(lines, vec![3, 4, 2, 6], "{e}");
        assert!(e.to_string().contains("stats.retention must be at least 7days"), "{e}");
    }

    #[test]
    fn unknown_key_is_an_error_with_its_line() {
        let e = parse("[milter]\nlisten = \"inet:127.0.0.1:1\"\nlisten_on = 3\n").unwrap_err();
        assert_eq!(e.0.len(), 1);
        assert_eq!((e.0[0].line, e.0[0].column), (3, 1));
        assert!(e.0[0].message.contains("listen_on"), "{}", e.0[0].message);
        assert!(e.to_string().starts_with("/etc/hm/test.toml:3:1: "), "{e}");
    }

    #[test]
    fn syntax_error_has_a_position() {
        let e = parse("[milter\n").unwrap_err();
        assert_eq!(e.0[0].line, 1);
    }

    #[test]
    fn semantic_errors_are_all_reported_with_positions() {
        let text = "[milter]\nlisten = \"tcp:1\"\non_error = \"accept\"\nsocket_mode = \"999\"\n[helpdesk]\naddresses = [\"nobody\"]\n";
        let e = parse(text).unwrap_err();
        let lines: Vec<usize> = e.0.iter().map(|d| d.line).collect();
        assert_eq!(lines, vec![2, 4, 6], "{e}");
    }

    #[test]
    fn on_error_takes_only_accept_or_tempfail() {
        assert_eq!(parse("[milter]\non_error = \"tempfail\"").unwrap().milter.on_error, OnError::Tempfail);
        let e = parse("[milter]\non_error = \"reject\"").unwrap_err();
        assert_eq!(e.0[0].line, 2);
    }

    #[test]
    fn unix_socket_paths_are_relative_to_the_config() {
        let c = parse("[milter]\nlisten = \"unix:run/m.sock\"\nsocket_group = \"postfix\"").unwrap();
        assert_eq!(c.milter.listen, Listen::Unix("/etc/hm/run/m.sock".into()));
        assert_eq!(c.milter.socket_group.as_deref(), Some("postfix"));
        assert_eq!(c.milter.listen.to_string(), "unix:/etc/hm/run/m.sock");
    }

    #[test]
    fn inet_listen_forms() {
        let base = Path::new("/");
        assert_eq!(
            Listen::parse("inet:[::1]:25", base).unwrap(),
            Listen::Inet { host: "::1".into(), port: 25 }
        );
        assert!(Listen::parse("inet::25", base).is_err());
        assert!(Listen::parse("inet:localhost:99999", base).is_err());
    }

    #[test]
    fn dkim_requirement_needs_trusted_ids() {
        assert!(parse("[helpdesk]\nteam_require_dkim = true").is_err());
        let c =
            parse("[helpdesk]\nteam_require_dkim = true\ntrusted_authserv_ids = [\"MX.Tails.net\"]").unwrap();
        assert_eq!(c.helpdesk.trusted_authserv_ids, vec!["mx.tails.net"]);
        assert_eq!(c.helpdesk.team_trust, TeamTrust { sasl: false, dkim: true });
        assert!(parse("[helpdesk]\nteam_trust = [\"dkim\"]").is_err());
    }

    #[test]
    fn team_trust_defaults_to_a_login_and_the_old_key_keeps_working() {
        assert_eq!(parse("").unwrap().helpdesk.team_trust, DEFAULT_TEAM_TRUST);
        assert_eq!(DEFAULT_TEAM_TRUST, TeamTrust { sasl: true, dkim: false });
        // The old default, shipped in every example file: no longer trusts a From: alone.
        assert_eq!(
            parse("[helpdesk]\nteam_require_dkim = false").unwrap().helpdesk.team_trust,
            DEFAULT_TEAM_TRUST
        );
        let both =
            parse("[helpdesk]\nteam_trust = [\"sasl\", \"DKIM\"]\ntrusted_authserv_ids = [\"mx.tails.net\"]");
        assert_eq!(both.unwrap().helpdesk.team_trust, TeamTrust { sasl: true, dkim: true });
        assert_eq!(parse("[helpdesk]\nteam_trust = []").unwrap().helpdesk.team_trust, TeamTrust::default());
        let e = parse("[helpdesk]\nteam_trust = [\"from\"]").unwrap_err();
        assert_eq!(e.0[0].line, 2);
        assert!(e.0[0].message.contains("\"sasl\""), "{e}");
        let e = parse("[helpdesk]\nteam_trust = [\"sasl\"]\nteam_require_dkim = false").unwrap_err();
        assert_eq!(e.0[0].line, 3);
        assert!(e.0[0].message.contains("remove it"), "{e}");
    }

    #[test]
    fn durations_and_their_minimums() {
        let e = parse("[autoreply]\ninterval = \"1h\"").unwrap_err();
        assert!(e.0[0].message.contains("at least 1day"), "{e}");
        let c = parse("[autoreply]\ninterval = \"1h\"\nallow_short_interval = true").unwrap();
        assert_eq!(c.autoreply.interval, Duration::from_secs(3600));
        let e = parse("[autoreply]\nlifetime = \"soon\"").unwrap_err();
        assert_eq!(e.0[0].line, 2);
        assert_eq!(parse("").unwrap().autoreply.smtp_timeout, crate::outbox::SMTP_TIMEOUT);
        let c = parse("[autoreply]\nsmtp_timeout = \"5s\"").unwrap();
        assert_eq!(c.autoreply.smtp_timeout, Duration::from_secs(5));
        assert!(parse("[autoreply]\nsmtp_timeout = \"0s\"").is_err());
    }

    #[test]
    fn idle_timeout_has_a_default_and_a_minimum() {
        assert_eq!(parse("").unwrap().milter.idle_timeout, Duration::from_secs(3600));
        assert_eq!(
            parse("[milter]\nidle_timeout = \"5m\"").unwrap().milter.idle_timeout,
            Duration::from_secs(300)
        );
        let e = parse("[milter]\nidle_timeout = \"0s\"").unwrap_err();
        assert!(e.0[0].message.contains("milter.idle_timeout must be at least 1s"), "{e}");
    }

    #[test]
    fn from_must_be_a_mailbox() {
        assert!(parse("[autoreply]\nfrom = \"not an address\"").is_err());
        let c = parse("[autoreply]\nfrom = \"help@example.org\"").unwrap();
        assert_eq!((c.autoreply.from_name, c.autoreply.from_address), (None, "help@example.org".to_string()));
    }

    #[test]
    fn restart_needed_names_socket_changes() {
        let a = parse("").unwrap();
        let b = parse("[milter]\nlisten = \"inet:127.0.0.1:9999\"\non_error = \"tempfail\"").unwrap();
        assert_eq!(a.restart_needed(&b), vec!["milter.listen"]);
    }
}

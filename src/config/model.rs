//! The validated configuration: what the rest of the daemon reads. Every value here has passed
//! [`super::validate`]; the file's own shape is in [`super::raw`].

use crate::address::SenderPattern;
use std::fmt;
use std::net::Ipv6Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What Postfix is told when this daemon fails on a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
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

impl fmt::Display for Listen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
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

/// The SMTP relay the replies are handed to (normally the local Postfix).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Relay {
    /// Host name or IP address; an IPv6 address is stored without brackets.
    pub host: String,
    pub port: u16,
}

impl Relay {
    /// Parses `smtp://HOST[:PORT]` (port 25 by default; IPv6 literals in brackets:
    /// `smtp://[::1]:25`).
    pub fn parse(url: &str) -> Result<Relay, String> {
        let bad = |why: &str| Err(format!("invalid relay URL {url:?}: {why}; expected smtp://HOST[:PORT]"));
        let Some((scheme, rest)) = url.split_once("://") else {
            return bad("missing \"smtp://\"");
        };
        if !scheme.eq_ignore_ascii_case("smtp") {
            return bad(&format!("unsupported scheme {scheme:?} (only smtp, without TLS, is supported)"));
        }
        // A single trailing slash is what people type after a host; anything else is not a relay.
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#', '@']) {
            return bad("user info, path, query or fragment are not allowed");
        }
        let (host, port) = if let Some(after) = rest.strip_prefix('[') {
            let Some((v6, tail)) = after.split_once(']') else {
                return bad("missing ']' after an IPv6 address");
            };
            if v6.parse::<Ipv6Addr>().is_err() {
                return bad(&format!("{v6:?} is not an IPv6 address"));
            }
            let port = match tail {
                "" => None,
                _ => match tail.strip_prefix(':') {
                    Some(p) => Some(p),
                    None => return bad("unexpected text after ']'"),
                },
            };
            (v6.to_owned(), port)
        } else {
            let (host, port) = match rest.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (rest, None),
            };
            if host.contains(':') {
                return bad("an IPv6 address must be written in brackets, e.g. smtp://[::1]:25");
            }
            if host.is_empty() {
                return bad("missing host");
            }
            if !host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')) {
                return bad(&format!("{host:?} is not a host name or IP address"));
            }
            (host.to_owned(), port)
        };
        let port = match port {
            None => 25,
            // u16::from_str would accept "+25".
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n != 0 && p.bytes().all(|b| b.is_ascii_digit()) => n,
                _ => return bad(&format!("{p:?} is not a port number (1-65535)")),
            },
        };
        Ok(Relay { host, port })
    }
}

impl fmt::Display for Relay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "smtp://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "smtp://{}:{}", self.host, self.port)
        }
    }
}

/// Default bound (`autoreply.smtp_timeout`) on the TCP connect plus greeting and EHLO, and on each
/// later SMTP command, the message transfer included (RFC 5321 §4.5.3.2 allows longer, but a local
/// relay answers in milliseconds and a long bound would hold up shutdown).
pub const SMTP_TIMEOUT: Duration = Duration::from_secs(60);

/// Settings of the milter socket and protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MilterConfig {
    pub listen: Listen,
    /// Permission bits of a UNIX socket.
    pub socket_mode: u32,
    /// Group that owns a UNIX socket; None keeps the daemon's own group.
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
    /// Postfix's `recipient_delimiter`: `support+wifi-realtek@` is a Help Desk address whose
    /// detail names a topic. Empty: no subaddresses.
    pub recipient_delimiter: String,
    /// What becomes of a trusted member's message that tags a WhisperBack report.
    pub tag_messages: TagMessages,
}

/// What becomes of a message that tags WhisperBack reports, once the tags are recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagMessages {
    /// Delivered to the Help Desk's mailbox with its triage headers, as any message.
    Deliver,
    /// Discarded: the tag is all it was for.
    Discard,
}

impl HelpdeskConfig {
    /// `addr` normalised, without the detail of a subaddress (`support+x@` -> `support@`).
    pub fn base_address(&self, addr: &str) -> String {
        let a = crate::address::normalize(addr);
        let Some(d) = self.recipient_delimiter.chars().next() else { return a };
        match crate::address::split(&a) {
            Some((local, domain)) if local.contains(d) => {
                format!("{}@{domain}", local.split(d).next().unwrap_or(local))
            }
            _ => a,
        }
    }

    /// Whether `addr` (any case, angle brackets, a subaddress) is a Help Desk address.
    pub fn is_address(&self, addr: &str) -> bool {
        self.addresses.contains(&self.base_address(addr))
    }

    /// The detail of a Help Desk subaddress: `wifi-realtek` for `support+wifi-realtek@`.
    pub fn detail(&self, addr: &str) -> Option<String> {
        let d = self.recipient_delimiter.chars().next()?;
        if !self.is_address(addr) {
            return None;
        }
        let a = crate::address::normalize(addr);
        let (local, _) = crate::address::split(&a)?;
        local.split_once(d).map(|(_, detail)| detail.to_string()).filter(|x| !x.is_empty())
    }
}

/// How replies reach the relay: one group, since the outbox's sender is started with all of it
/// and none of it changes on reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryConfig {
    pub relay: Relay,
    /// Delay before the first retry; doubles after each failure, up to 30 minutes.
    pub retry_interval: Duration,
    /// A reply this long after it was queued is dropped unsent.
    pub lifetime: Duration,
    /// Bound on each step of an SMTP session with the relay.
    pub smtp_timeout: Duration,
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
    pub delivery: DeliveryConfig,
    pub require_addressed: bool,
    pub system_addresses: Vec<String>,
    pub max_per_hour: u32,
    pub max_per_domain_per_hour: u32,
    /// One more reply within the interval for a hot topic no earlier reply pointed to.
    pub new_topic_replies: bool,
}

/// What the reply policy needs from the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyConfig {
    pub enabled: bool,
    /// Our loop token, the address in our replies' `X-Loop` (lowercased).
    pub loop_token: String,
    /// The Help Desk's addresses and aliases and our From: (lowercased): never answered.
    pub own_addresses: Vec<String>,
    /// Other addresses of this system that must never be answered (lowercased).
    pub system_addresses: Vec<String>,
    /// Require a Help Desk address in To/Cc/Bcc/Resent-*.
    pub require_addressed: bool,
    pub max_per_hour: u32,
    pub max_per_domain_per_hour: u32,
    /// One more reply within the interval for a hot topic no earlier reply pointed to.
    pub new_topic_replies: bool,
}

/// Where the daemon keeps its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateConfig {
    pub directory: PathBuf,
    pub max_entries: usize,
    /// Where the state and the statistics are kept: this host's own file, or a server that
    /// several hosts of one Help Desk share.
    pub backend: Backend,
    /// The longest a call to a shared store may take on the milter's path: past it the message
    /// gets no reply (`suppressed (store)`), and is delivered as ever.
    pub timeout: Duration,
}

/// Where the state and the statistics are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// `<directory>/store.sqlite`: one host.
    Embedded,
    /// A PostgreSQL server shared by the hosts of one Help Desk.
    Postgres {
        /// `postgresql://user@host:port/database?sslmode=...`, without a password.
        url: String,
        /// The file holding the password, readable by the daemon's user only.
        password_file: Option<PathBuf>,
    },
}

/// What is counted for `helpdesk-milter stats`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsConfig {
    /// Count triaged messages (day, class, topics, encryption, reply decision; nothing else).
    pub enabled: bool,
    /// Days older than this are purged from the statistics.
    pub retention: Duration,
    /// A topic is frequent when at least `frequent_min` people (or messages, `stats --count`)
    /// wrote about it in each of the last `frequent_weeks` complete weeks.
    pub frequent_min: u32,
    pub frequent_weeks: u32,
    /// `stats` suggests dropping a hot topic that no one wrote about in the last `stale_weeks`
    /// complete weeks.
    pub stale_weeks: u32,
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
    pub policy: PolicyConfig,
}

//! From the file as written ([`super::raw`]) to the validated configuration ([`super::model`]):
//! every problem is collected with its position, so that `helpdesk-milter check` lists them all.

use super::model::*;
use super::raw::*;
use crate::address::{self, SenderPattern};
use crate::diagnostic::Collector;
use std::path::Path;
use std::time::Duration;
use toml::Spanned;

const DAY: Duration = Duration::from_secs(86400);
const WEEK: Duration = Duration::from_secs(7 * 86400);

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

pub(super) struct Validator<'a> {
    pub report: Collector<'a>,
    /// Relative paths in the file are relative to its directory.
    pub base: &'a Path,
}

impl Validator<'_> {
    fn error<T>(&mut self, at: &Spanned<T>, message: impl Into<String>) {
        self.report.error(at, message);
    }

    fn positive(&mut self, v: &Spanned<i64>, what: &str, min: i64) -> usize {
        if *v.get_ref() < min {
            self.error(v, format!("{what} must be at least {min}"));
            return min as usize;
        }
        usize::try_from(*v.get_ref()).unwrap_or(usize::MAX)
    }

    fn count_u32(&mut self, v: &Spanned<i64>, what: &str, min: i64) -> u32 {
        u32::try_from(self.positive(v, what, min)).unwrap_or(u32::MAX)
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

    fn addresses(&mut self, list: &[Spanned<String>], what: &str) -> Vec<String> {
        list.iter().filter_map(|a| self.address(a, what)).collect()
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

    /// Keeps the entries of `list` that `check` accepts (trimmed), reporting the others with `hint`.
    fn entries<T>(
        &mut self,
        list: &[Spanned<String>],
        hint: &str,
        check: impl Fn(&str) -> Option<T>,
    ) -> Vec<T> {
        list.iter()
            .filter_map(|s| {
                let v = check(s.get_ref().trim());
                if v.is_none() {
                    self.error(s, hint);
                }
                v
            })
            .collect()
    }

    pub fn build(&mut self, raw: RawConfig) -> Config {
        let milter = self.milter(&raw.milter);
        let helpdesk = self.helpdesk(&raw.helpdesk);
        let autoreply = self.autoreply(&raw.autoreply);
        let state = self.state(&raw.state);
        let log_level = self.log_level(&raw.log);
        let policy = policy(&helpdesk, &autoreply);
        let stats = self.stats(&raw.stats);
        let metrics = self.metrics(&raw.metrics);
        Config {
            path: self.report.path.to_path_buf(),
            milter,
            helpdesk,
            autoreply,
            state,
            stats,
            metrics,
            log_level,
            policy,
        }
    }

    fn milter(&mut self, m: &RawMilter) -> MilterConfig {
        let listen = Listen::parse(m.listen.get_ref(), self.base).unwrap_or_else(|e| {
            self.error(&m.listen, format!("milter.listen: {e}"));
            Listen::Inet { host: "127.0.0.1".into(), port: 8894 }
        });
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
        MilterConfig {
            listen,
            socket_mode,
            socket_group: (!group.is_empty()).then(|| group.to_string()),
            on_error: m.on_error,
            max_connections: self.positive(&m.max_connections, "milter.max_connections", 1),
            idle_timeout: self.duration(&m.idle_timeout, "milter.idle_timeout", Duration::from_secs(1)),
            max_header_bytes: self.positive(&m.max_header_bytes, "milter.max_header_bytes", 1024),
            max_body_bytes: self.positive(&m.max_body_bytes, "milter.max_body_bytes", 0),
        }
    }

    fn helpdesk(&mut self, h: &RawHelpdesk) -> HelpdeskConfig {
        if h.addresses.get_ref().is_empty() {
            self.error(&h.addresses, "helpdesk.addresses must name at least one address");
        }
        let addresses = self.addresses(h.addresses.get_ref(), "helpdesk.addresses");
        let prefix = h.header_prefix.get_ref();
        if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            self.error(
                &h.header_prefix,
                "helpdesk.header_prefix must be letters, digits and '-', such as \"X-HelpDesk-\"",
            );
        }
        let subject_tags = self.entries(
            &h.subject_tags,
            "helpdesk.subject_tags: a tag is the text between the brackets, such as \"FT\" for [FT]",
            |tag| {
                let bad =
                    tag.is_empty() || tag.contains(['[', ']', ',']) || tag.chars().any(char::is_control);
                (!bad).then(|| tag.to_string())
            },
        );
        let spam_headers = self.entries(
            &h.spam_headers,
            "helpdesk.spam_headers: expected \"Header-Name: value\", such as \"X-Spam-Flag: YES\"",
            |s| match s.split_once(':') {
                Some((n, v)) if !n.trim().is_empty() && !v.trim().is_empty() && !n.contains(' ') => {
                    Some(HeaderMatch { name: n.trim().to_string(), value: v.trim().to_string() })
                }
                _ => None,
            },
        );
        let role_senders = self.entries(
            &h.role_senders,
            "helpdesk.role_senders: a pattern is a local part such as \"noreply*\" (no '@', not only '*')",
            |r| {
                let p = r.to_ascii_lowercase();
                (!p.is_empty() && !p.contains('@') && !p.chars().all(|c| c == '*')).then_some(p)
            },
        );
        let trusted_authserv_ids: Vec<String> = h
            .trusted_authserv_ids
            .iter()
            .map(|s| s.get_ref().trim().to_ascii_lowercase())
            .filter(|s| !s.is_empty())
            .collect();
        let team_trust = self.team_trust(h, &trusted_authserv_ids);
        HelpdeskConfig {
            addresses,
            aliases: self.addresses(&h.aliases, "helpdesk.aliases"),
            whisperback_senders: self.patterns(&h.whisperback_senders, "helpdesk.whisperback_senders"),
            team_senders: self.patterns(&h.team_senders, "helpdesk.team_senders"),
            header_prefix: prefix.clone(),
            subject_tags,
            spam_headers,
            role_senders,
            team_trust,
            trusted_authserv_ids,
            recipient_delimiter: self.delimiter(&h.recipient_delimiter),
            tag_messages: match h.tag_messages.get_ref().trim() {
                "deliver" => TagMessages::Deliver,
                "discard" => TagMessages::Discard,
                _ => {
                    self.error(&h.tag_messages, "helpdesk.tag_messages is \"deliver\" or \"discard\"");
                    TagMessages::Deliver
                }
            },
        }
    }

    /// One character that cannot be part of an address's domain, as Postfix's `recipient_delimiter`.
    fn delimiter(&mut self, d: &Spanned<String>) -> String {
        let v = d.get_ref().trim();
        let ok = v.is_empty() || (v.chars().count() == 1 && !v.contains(['@', '.', '"']) && v.is_ascii());
        if !ok {
            self.error(d, "helpdesk.recipient_delimiter is one character such as \"+\" (Postfix's recipient_delimiter), or \"\"");
            return String::new();
        }
        v.to_string()
    }

    /// `team_trust`, or the key it replaces: `team_require_dkim = true` kept its meaning (DKIM
    /// only); `false` trusted a From: alone, which anyone can forge, and now means the default.
    fn team_trust(&mut self, h: &RawHelpdesk, trusted_authserv_ids: &[String]) -> TeamTrust {
        const NEEDS_IDS: &str =
            "needs helpdesk.trusted_authserv_ids: the authserv-id of the host that verifies DKIM";
        match (&h.team_trust, &h.team_require_dkim) {
            (Some(_), Some(old)) => {
                self.error(
                    old,
                    "helpdesk.team_require_dkim is replaced by helpdesk.team_trust: remove it (team_require_dkim = true is team_trust = [\"dkim\"])",
                );
                DEFAULT_TEAM_TRUST
            }
            (Some(list), None) => {
                let mut trust = TeamTrust::default();
                for t in list.get_ref() {
                    match t.get_ref().trim().to_ascii_lowercase().as_str() {
                        "sasl" => trust.sasl = true,
                        "dkim" => trust.dkim = true,
                        _ => self.error(
                            t,
                            "helpdesk.team_trust: each entry is \"sasl\" (a login on this host) or \"dkim\" (a trusted verifier's DKIM pass)",
                        ),
                    }
                }
                if trust.dkim && trusted_authserv_ids.is_empty() {
                    self.error(list, format!("helpdesk.team_trust = [\"dkim\"] {NEEDS_IDS}"));
                }
                trust
            }
            (None, Some(old)) if *old.get_ref() => {
                if trusted_authserv_ids.is_empty() {
                    self.error(old, format!("helpdesk.team_require_dkim {NEEDS_IDS}"));
                }
                TeamTrust { sasl: false, dkim: true }
            }
            (None, _) => DEFAULT_TEAM_TRUST,
        }
    }

    fn autoreply(&mut self, a: &RawAutoreply) -> AutoreplyConfig {
        if a.reply_file.get_ref().trim().is_empty() {
            self.error(&a.reply_file, "autoreply.reply_file must name a file");
        }
        let (from_name, from_address) = parse_mailbox(a.from.get_ref()).unwrap_or_else(|| {
            self.error(
                &a.from,
                "autoreply.from must be an address, such as \"Tails Help Desk <support@tails.net>\"",
            );
            (None, String::new())
        });
        let min_interval = if *a.allow_short_interval.get_ref() { Duration::from_secs(60) } else { DAY };
        let relay = Relay::parse(a.relay.get_ref().trim()).unwrap_or_else(|e| {
            self.error(&a.relay, format!("autoreply.relay: {e}"));
            Relay { host: "127.0.0.1".into(), port: 25 }
        });
        let max_per_hour = self.count_u32(&a.max_per_hour, "autoreply.max_per_hour", 1);
        let max_per_domain_per_hour =
            self.count_u32(&a.max_per_domain_per_hour, "autoreply.max_per_domain_per_hour", 1);
        AutoreplyConfig {
            enabled: *a.enabled.get_ref(),
            reply_file: self.base.join(a.reply_file.get_ref()),
            from: a.from.get_ref().trim().to_string(),
            from_name,
            from_address,
            interval: self.duration(&a.interval, "autoreply.interval", min_interval),
            delivery: self.delivery(a, relay),
            require_addressed: *a.require_addressed.get_ref(),
            system_addresses: self.addresses(&a.system_addresses, "autoreply.system_addresses"),
            max_per_hour,
            max_per_domain_per_hour,
            new_topic_replies: *a.new_topic_replies.get_ref(),
        }
    }

    fn delivery(&mut self, a: &RawAutoreply, relay: Relay) -> DeliveryConfig {
        let second = Duration::from_secs(1);
        DeliveryConfig {
            relay,
            retry_interval: self.duration(&a.retry_interval, "autoreply.retry_interval", second),
            lifetime: self.duration(&a.lifetime, "autoreply.lifetime", Duration::from_secs(60)),
            smtp_timeout: self.duration(&a.smtp_timeout, "autoreply.smtp_timeout", second),
        }
    }

    fn state(&mut self, st: &RawState) -> StateConfig {
        if st.directory.get_ref().trim().is_empty() {
            self.error(&st.directory, "state.directory must name a directory");
        }
        let timeout = self.duration(&st.timeout, "state.timeout", Duration::from_millis(10));
        if timeout > Duration::from_secs(10) {
            self.error(&st.timeout, "state.timeout must be at most 10s: mail waits for it");
        }
        StateConfig {
            directory: self.base.join(st.directory.get_ref()),
            max_entries: self.positive(&st.max_entries, "state.max_entries", 1000),
            backend: self.backend(st),
            timeout,
        }
    }

    /// `""` (this host's file) or a `postgresql://` URL without a password.
    fn backend(&mut self, st: &RawState) -> Backend {
        let url = st.backend.get_ref().trim();
        let password_file = st.password_file.get_ref().trim();
        if url.is_empty() {
            if !password_file.is_empty() {
                self.error(
                    &st.password_file,
                    "state.password_file is only for a shared backend (state.backend)",
                );
            }
            return Backend::Embedded;
        }
        let Some(rest) = url.strip_prefix("postgresql://").or_else(|| url.strip_prefix("postgres://")) else {
            self.error(
                &st.backend,
                "state.backend must be \"\" (this host's own store) or a PostgreSQL URL such as \"postgresql://helpdesk@db.example.org/helpdesk?sslmode=require\"",
            );
            return Backend::Embedded;
        };
        let authority = rest.split(['/', '?']).next().unwrap_or("");
        if authority.rsplit_once('@').is_some_and(|(user, _)| user.contains(':')) {
            self.error(
                &st.backend,
                "state.backend: no password in the URL (it would be readable by anyone who reads this file): put it in the file state.password_file names",
            );
        }
        if authority.rsplit_once('@').map_or(authority, |(_, host)| host).is_empty() {
            self.error(&st.backend, "state.backend: the URL names no host");
        }
        Backend::Postgres {
            url: url.to_string(),
            password_file: (!password_file.is_empty()).then(|| self.base.join(password_file)),
        }
    }

    fn log_level(&mut self, log: &RawLog) -> String {
        let level = log.level.get_ref().to_ascii_lowercase();
        if !["error", "warn", "info", "debug", "trace"].contains(&level.as_str()) {
            self.error(&log.level, "log.level must be one of error, warn, info, debug, trace");
        }
        level
    }

    fn stats(&mut self, s: &RawStats) -> StatsConfig {
        let count = |v: &Spanned<i64>| u32::try_from(*v.get_ref()).unwrap_or(u32::MAX);
        let (min, weeks, stale) = (count(&s.frequent_min), count(&s.frequent_weeks), count(&s.stale_weeks));
        if !(1..=1000).contains(&min) {
            self.error(&s.frequent_min, "stats.frequent_min must be between 1 and 1000 (people per week)");
        }
        if !(1..=52).contains(&weeks) {
            self.error(&s.frequent_weeks, "stats.frequent_weeks must be between 1 and 52");
        }
        if !(1..=52).contains(&stale) {
            self.error(&s.stale_weeks, "stats.stale_weeks must be between 1 and 52");
        }
        StatsConfig {
            enabled: *s.enabled.get_ref(),
            retention: self.duration(&s.retention, "stats.retention", WEEK),
            frequent_min: min.clamp(1, 1000),
            frequent_weeks: weeks.clamp(1, 52),
            stale_weeks: stale.clamp(1, 52),
        }
    }

    fn metrics(&mut self, m: &RawMetrics) -> MetricsConfig {
        let listen = m.listen.get_ref().trim();
        if listen.is_empty() {
            return MetricsConfig { listen: None };
        }
        let parsed = listen.parse().ok();
        if parsed.is_none() {
            self.error(
                &m.listen,
                "metrics.listen must be an IP address and port, such as \"127.0.0.1:9894\" (or \"\" for no endpoint)",
            );
        }
        MetricsConfig { listen: parsed }
    }
}

/// The reply policy's view of the configuration: which addresses are ours, and the caps.
fn policy(helpdesk: &HelpdeskConfig, autoreply: &AutoreplyConfig) -> PolicyConfig {
    PolicyConfig {
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
        new_topic_replies: autoreply.new_topic_replies,
    }
}

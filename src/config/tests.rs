//! The configuration's parsing and validation, on whole files.

use super::*;
use std::time::Duration;

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
            frequent_weeks: 2,
            stale_weeks: 4
        }
    );
    assert_eq!(c.metrics.listen, None, "no endpoint unless asked");
    let c = parse("[stats]\nretention = \"30d\"\nfrequent_min = 3\n[metrics]\nlisten = \"127.0.0.1:9894\"\n")
        .unwrap();
    assert_eq!((c.stats.retention.as_secs(), c.stats.frequent_min), (30 * 86400, 3));
    assert_eq!(parse("[stats]\nstale_weeks = 8\n").unwrap().stats.stale_weeks, 8);
    assert_eq!(c.metrics.listen, Some("127.0.0.1:9894".parse().unwrap()));
    let e = parse(
        "[stats]\nretention = \"1d\"\nfrequent_min = 0\nfrequent_weeks = 99\nstale_weeks = 0\n[metrics]\nlisten = \"localhost\"\n",
    )
    .unwrap_err();
    let lines: Vec<usize> = e.0.iter().map(|d| d.line).collect();
    assert_eq!(lines, vec![3, 4, 5, 2, 7], "{e}");
    assert!(e.to_string().contains("stats.stale_weeks must be between 1 and 52"), "{e}");
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
    assert_eq!(Listen::parse("inet:[::1]:25", base).unwrap(), Listen::Inet { host: "::1".into(), port: 25 });
    assert!(Listen::parse("inet::25", base).is_err());
    assert!(Listen::parse("inet:localhost:99999", base).is_err());
}

#[test]
fn dkim_requirement_needs_trusted_ids() {
    assert!(parse("[helpdesk]\nteam_require_dkim = true").is_err());
    let c = parse("[helpdesk]\nteam_require_dkim = true\ntrusted_authserv_ids = [\"MX.Tails.net\"]").unwrap();
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
    assert_eq!(parse("").unwrap().autoreply.delivery.smtp_timeout, super::SMTP_TIMEOUT);
    let c = parse("[autoreply]\nsmtp_timeout = \"5s\"").unwrap();
    assert_eq!(c.autoreply.delivery.smtp_timeout, Duration::from_secs(5));
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
fn relay_parse_accepts() {
    let ok = |u: &str, h: &str, p: u16| {
        assert_eq!(Relay::parse(u), Ok(Relay { host: h.into(), port: p }), "{u}");
    };
    ok("smtp://localhost", "localhost", 25);
    ok("smtp://localhost/", "localhost", 25);
    ok("SMTP://mail.example.org:2525", "mail.example.org", 2525);
    ok("smtp://127.0.0.1:10025", "127.0.0.1", 10025);
    ok("smtp://[::1]:25", "::1", 25);
    ok("smtp://[::1]", "::1", 25);
    ok("smtp://[2001:db8::5]:587", "2001:db8::5", 587);
}

#[test]
fn relay_parse_rejects() {
    for bad in [
        "",
        "localhost:25",
        "smtps://localhost",
        "http://localhost",
        "smtp://",
        "smtp://:25",
        "smtp://host:",
        "smtp://host:0",
        "smtp://host:65536",
        "smtp://host:+25",
        "smtp://host:x",
        "smtp://::1",
        "smtp://[::1",
        "smtp://[not-v6]:25",
        "smtp://[::1]x",
        "smtp://user@host",
        "smtp://host/path",
        "smtp://host?q",
        "smtp://ho st",
    ] {
        let err = Relay::parse(bad).expect_err(bad);
        assert!(err.contains("smtp://HOST[:PORT]"), "{bad}: {err}");
    }
}

#[test]
fn relay_display_round_trips() {
    for u in ["smtp://localhost:25", "smtp://[::1]:2525", "smtp://10.0.0.1:25"] {
        assert_eq!(Relay::parse(u).unwrap().to_string(), u);
    }
}

#[test]
fn the_state_backend_is_this_hosts_file_or_a_postgresql_url_without_a_password() {
    let c = parse("").unwrap();
    assert_eq!((c.state.backend, c.state.timeout), (Backend::Embedded, Duration::from_millis(250)));
    let c = parse("[state]\nbackend = \"postgresql://helpdesk@db.example.org/helpdesk?sslmode=require\"\npassword_file = \"db-password\"\ntimeout = \"100ms\"\n").unwrap();
    assert_eq!(
        c.state.backend,
        Backend::Postgres {
            url: "postgresql://helpdesk@db.example.org/helpdesk?sslmode=require".into(),
            password_file: Some("/etc/hm/db-password".into()),
        }
    );
    assert_eq!(c.state.timeout, Duration::from_millis(100));
    for (text, says) in [
        ("backend = \"mysql://db/x\"", "must be \"\""),
        ("backend = \"postgresql://helpdesk:hunter2@db/x\"", "no password in the URL"),
        ("backend = \"postgresql:///x\"", "names no host"),
        ("password_file = \"p\"", "only for a shared backend"),
        ("timeout = \"1h\"", "at most 10s"),
        ("timeout = \"1ms\"", "at least 10ms"),
    ] {
        let e = parse(&format!("[state]\n{text}\n")).unwrap_err();
        assert!(e.to_string().contains(says), "{text}: {e}");
        assert_eq!(e.0[0].line, 2, "{text}");
    }
}

#[test]
fn subaddresses_of_the_help_desk_are_its_own_and_carry_a_detail() {
    let c = parse("").unwrap();
    assert!(c.is_helpdesk_address("<Support+WiFi-Realtek@Tails.net>"));
    assert_eq!(c.helpdesk.detail("support+wifi-realtek@tails.net").as_deref(), Some("wifi-realtek"));
    assert_eq!(c.helpdesk.detail("support@tails.net"), None);
    assert_eq!(c.helpdesk.detail("other+x@tails.net"), None);
    assert_eq!(c.helpdesk.tag_messages, TagMessages::Deliver);
    let c = parse("[helpdesk]\nrecipient_delimiter = \"\"\ntag_messages = \"discard\"").unwrap();
    assert!(!c.is_helpdesk_address("support+x@tails.net"));
    assert_eq!(c.helpdesk.tag_messages, TagMessages::Discard);
    for bad in ["recipient_delimiter = \"++\"", "recipient_delimiter = \"@\"", "tag_messages = \"drop\""] {
        assert_eq!(parse(&format!("[helpdesk]\n{bad}")).unwrap_err().0[0].line, 2, "{bad}");
    }
}

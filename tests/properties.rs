//! Property tests for the five fuzz targets, with the same invariants (tests/support/invariants.rs),
//! so that every `cargo test` exercises them; plus "a valid reply file round-trips through check".
//!
//! The case count is modest by default (48 per property); raise it with PROPTEST_CASES=10000.
//! The committed fuzz seed corpus (fuzz/corpus/, regression inputs included) is replayed too.

#[path = "support/invariants.rs"]
mod invariants;
#[path = "support/milter_stream.rs"]
mod milter_stream;

use helpdesk_milter::classify::{Class, Signals};
use helpdesk_milter::policy::{PolicyConfig, StateView};
use helpdesk_milter::reply_file::ReplyFile;
use invariants::ClassifyCase;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use std::path::Path;

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(48);
    ProptestConfig { cases, ..ProptestConfig::default() }
}

// ---------------------------------------------------------------------------------------------
// classify

/// Header names: ours in any case (forged), the ones the classifier reads, and anything.
fn header_name() -> impl Strategy<Value = String> {
    let prefixed = ("[xX]-[hH][eE][lL][pP][dD][eE][sS][kK]-", "[A-Za-z-]{0,12}").prop_map(|(p, s)| p + &s);
    let small_cfg = "[xX]-[tT][rR][iI][aA][gG][eE]-[A-Za-z]{0,8}";
    prop_oneof![
        3 => prefixed,
        1 => small_cfg.prop_map(String::from),
        4 => prop::sample::select(vec![
            "From", "To", "Cc", "Bcc", "Resent-To", "Subject", "Sender", "Return-Path", "Message-ID",
            "In-Reply-To", "References", "Auto-Submitted", "Precedence", "List-Id", "List-Unsubscribe",
            "X-Auto-Response-Suppress", "X-Loop", "X-Spam-Flag", "X-Autoreply", "Feedback-ID",
            "X-FC-MachineGenerated", "Authentication-Results", "Content-Type", "Content-Language",
            "Content-Transfer-Encoding", "MIME-Version",
        ])
        .prop_map(String::from),
        2 => "[!-9;-~]{1,16}",
    ]
}

/// Header values: addresses, keywords the rules look for, encoded words, and any text with
/// CR, LF, NUL and 8-bit characters.
fn header_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => prop::sample::select(vec![
            "support@tails.net", "<Support@Tails.NET>", "Alice <alice@example.org>", "no", "No (x)",
            "auto-replied", "bulk", "list", "All", "OOF, DR", "yes", "YES", "true", "support@tails.net",
            "<a@b> <c@d>", "Bug report: 4ffd523ac6b83288ba219a6a55f4971b", "help [FT] [ft2]",
            "multipart/report; report-type=delivery-status; boundary=b",
            "multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=e",
            "multipart/mixed; boundary=\"m\"", "text/plain; charset=utf-8", "base64", "de-CH, fr",
            "mx.tails.net; dkim=pass header.d=tails.net", "=?utf-8?b?w7xiZXI=?= =?x?q?=0d=0aBcc:_x?=",
        ])
        .prop_map(|s| s.as_bytes().to_vec()),
        2 => "\\PC{0,60}".prop_map(String::into_bytes),
        2 => prop::collection::vec(any::<u8>(), 0..60),
    ]
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        "[ -~\n]{0,200}".prop_map(String::into_bytes),
        Just(b"--b\r\nContent-Type: text/plain\r\n\r\nnvidia black screen\r\n--b--\r\n".to_vec()),
        Just(b"-----BEGIN PGP MESSAGE-----\nxx\n".to_vec()),
        Just("Bonjour, mon ordinateur ne démarre pas, l'écran reste noir après le démarrage.\n".into()),
        prop::collection::vec(any::<u8>(), 0..300),
    ]
}

fn address() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "alice@example.org",
            "<Alice@Example.ORG>",
            "",
            "<>",
            "MAILER-DAEMON@example.org",
            "noreply@example.com",
            "support@tails.net",
            "devnull@tails.boum.org",
            "bob@tails.net",
            "prvs=1234=alice@example.org",
            "SRS0=H=TT=example.org=alice@fwd.example",
        ])
        .prop_map(String::from),
        "\\PC{0,30}",
    ]
}

fn classify_case() -> impl Strategy<Value = ClassifyCase> {
    let headers = prop::collection::vec((header_name(), header_value()), 0..24);
    let message = prop_oneof![
        4 => (headers, any::<bool>(), body()).prop_map(|(h, crlf, body)| {
            let eol: &[u8] = if crlf { b"\r\n" } else { b"\n" };
            let mut m = Vec::new();
            for (n, v) in h {
                m.extend_from_slice(n.as_bytes());
                m.extend_from_slice(b": ");
                m.extend_from_slice(&v);
                m.extend_from_slice(eol);
            }
            m.extend_from_slice(eol);
            m.extend_from_slice(&body);
            m
        }),
        1 => prop::collection::vec(any::<u8>(), 0..400),
    ];
    let recipients = prop::collection::vec(
        prop_oneof![3 => Just("H0".to_string()), 1 => Just("H1".to_string()), 1 => address()],
        0..3,
    );
    (
        (0usize..3, any::<bool>(), prop::option::of(address()), recipients),
        (message, prop_oneof![Just(65535usize), 1usize..100], any::<bool>(), 0u8..130),
    )
        .prop_map(
            |((config, with_reply_file, sender, recipients), (message, chunk, answered, prior))| {
                ClassifyCase {
                    config,
                    with_reply_file,
                    sender,
                    recipients,
                    message,
                    chunk,
                    now: invariants::T0,
                    answered,
                    prior,
                }
            },
        )
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn classify_invariants(case in classify_case()) {
        let _ = invariants::check_classify(&case);
    }

    #[test]
    fn policy_invariants(
        (enabled, require_addressed, max_per_hour, max_per_domain) in (any::<bool>(), any::<bool>(), 1u32..5, 1u32..5),
        (sender, from, flags, x_loop, class) in (address(), prop::option::of(address()), any::<u32>(),
            prop::collection::vec(prop_oneof![Just("yes".to_string()), Just(" Support@tails.NET ".to_string()), address()], 0..3),
            0usize..6),
        (answered_recently, replies_last_hour, domain_replies_last_hour, unavailable) in (any::<bool>(), 0u32..6, 0u32..6, any::<bool>()),
        (new_topic, new_topic_replies) in (any::<bool>(), any::<bool>()),
        own in prop::collection::vec(address(), 0..3),
    ) {
        let n = helpdesk_milter::address::normalize;
        let cfg = PolicyConfig {
            enabled,
            loop_token: "support@tails.net".into(),
            own_addresses: own.iter().map(|a| n(a)).chain(["support@tails.net".to_string()]).collect(),
            system_addresses: vec!["root@mail.tails.net".into()],
            require_addressed,
            max_per_hour,
            max_per_domain_per_hour: max_per_domain,
            new_topic_replies,
        };
        let sender = n(&sender);
        let bit = |i: u32| flags & (1 << i) != 0;
        // As Signals::extract builds them: most flags off most of the time, so that replies happen.
        let rare = |i: u32| bit(i) && bit(i + 1);
        let s = Signals {
            null_sender: sender.is_empty(),
            sender,
            from: from.map(|f| n(&f)).filter(|f| !f.is_empty()),
            report: rare(0),
            auto_submitted: rare(1),
            precedence_bulk: rare(2),
            list_headers: rare(3),
            autoresponder_headers: rare(4),
            role_sender: rare(5),
            spam: rare(6),
            auto_response_suppress: rare(7),
            undeliverable_sender: rare(11),
            delivery_failure: rare(12),
            abuse_report: rare(13),
            out_of_office: rare(14),
            challenge: rare(15),
            addressed: bit(8) || bit(9),
            in_thread: bit(10),
            x_loop,
            ..Signals::default()
        };
        let view = StateView { answered_recently, replies_last_hour, domain_replies_last_hour, unavailable, new_topic };
        invariants::check_policy(&cfg, &s, Class::ALL[class], &view);
    }

    #[test]
    fn reply_file_any_text(text in "\\PC{0,200}") {
        invariants::check_reply_file(&text);
    }

    #[test]
    fn reply_file_edited(edit in reply_edit()) {
        // A valid file with one line replaced, inserted or removed: mostly invalid, sometimes not.
        invariants::check_reply_file(&edit);
    }

    #[test]
    fn valid_reply_file_round_trips(model in reply_model()) {
        let text = model.to_toml();
        let r = invariants::check_reply_file(&text)
            .unwrap_or_else(|| panic!("a valid reply file is refused: {:?}\n{text}",
                ReplyFile::parse(Path::new(invariants::REPLY_PATH), &text).err()));
        model.assert_same(&r);
    }

    #[test]
    fn config_any_text(text in "\\PC{0,200}") {
        invariants::check_config(&text);
    }

    #[test]
    fn config_from_settings(text in config_text()) {
        invariants::check_config(&text);
    }

    #[test]
    fn milter_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        milter_stream::check(&milter_stream::input(&bytes));
    }

    #[test]
    fn outbox_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let dir = invariants::scratch_dir();
        invariants::check_outbox_bytes(dir.path(), &bytes);
    }

    #[test]
    fn outbox_damaged_entries(
        (rcpt, message, now) in (address(), prop::collection::vec(any::<u8>(), 0..200), any::<u32>()),
        (cut, flip) in (any::<prop::sample::Index>(), any::<prop::sample::Index>()),
    ) {
        let dir = invariants::scratch_dir();
        invariants::check_outbox_round_trip(dir.path(), &rcpt, &message, u64::from(now));
        // The same entry damaged: truncated, or one byte changed.
        let Some(good) = valid_entry(&rcpt, &message) else { return Ok(()) };
        invariants::check_outbox_bytes(dir.path(), &good[..cut.index(good.len())]);
        let mut flipped = good.clone();
        let i = flip.index(flipped.len());
        flipped[i] ^= 0x55;
        invariants::check_outbox_bytes(dir.path(), &flipped);
        if i >= good.len() - message.len() {
            // Damage in the message is always caught.
            prop_assert!(helpdesk_milter::outbox::decode(&flipped).is_err());
        }
    }
}

/// An entry file as `Outbox::enqueue` writes it (None when enqueue refuses the recipient).
fn valid_entry(rcpt: &str, message: &[u8]) -> Option<Vec<u8>> {
    let dir = invariants::scratch_dir();
    let ob = helpdesk_milter::outbox::Outbox::open(dir.path()).unwrap();
    let id = ob.enqueue(rcpt, message, std::time::SystemTime::now()).ok()?;
    Some(std::fs::read(dir.path().join(format!("{id}.reply"))).unwrap())
}

// ---------------------------------------------------------------------------------------------
// reply-file models

#[derive(Debug, Clone)]
struct TopicModel {
    id: String,
    title: String,
    link: String,
    keywords: Vec<String>,
    /// Index into the languages, title.
    translations: Vec<(usize, String)>,
    text: Option<String>,
    sections: Vec<SectionModel>,
}

/// A `[topics.ID.translations.TAG]` section: index into the languages (none of `translations`),
/// title, text, keywords; not all empty.
type SectionModel = (usize, Option<String>, Option<String>, Vec<String>);

#[derive(Debug, Clone)]
struct ReplyModel {
    default_language: usize,
    /// Tag, subject, body.
    languages: Vec<(String, String, String)>,
    topics: Vec<TopicModel>,
    hot_topics: Vec<usize>,
}

/// One line of text without control characters, not blank, without leading or trailing blanks.
fn line_text() -> impl Strategy<Value = String> {
    "[^\\p{C}\u{2028}\u{2029}]{1,30}".prop_filter_map("blank", |s| {
        let t = s.trim();
        (!t.is_empty()).then(|| t.to_string())
    })
}

/// A topic's text: a few lines of text.
fn topic_text() -> impl Strategy<Value = String> {
    prop::collection::vec(line_text(), 1..3).prop_map(|lines| lines.join("\n"))
}

fn reply_model() -> impl Strategy<Value = ReplyModel> {
    let tags = prop::collection::btree_set("[a-z]{2,3}(-[A-Za-z0-9]{1,8}){0,2}", 1..4).prop_filter(
        "distinct without case",
        |s| {
            let lower: std::collections::BTreeSet<String> =
                s.iter().map(|t| t.to_ascii_lowercase()).collect();
            lower.len() == s.len()
        },
    );
    // Bodies: text with line breaks, braces that are not placeholders, and {hot_topics}.
    let body = prop::collection::vec(
        prop_oneof![
            "[^{}\\p{Cc}]{1,40}",
            Just("{hot_topics}".to_string()),
            Just("\n".to_string()),
            Just("\r\n".to_string()),
            Just("a { b\n".to_string()),
            Just("} {\n}".to_string()),
        ],
        1..6,
    )
    .prop_map(|parts| parts.concat())
    .prop_filter("blank", |b| !b.trim().is_empty());
    // Some bodies start with the paragraph of {matched_topics}.
    let body = (any::<bool>(), body).prop_map(|(matched, b)| {
        if matched { format!("You wrote about:\n{{matched_topics}}\n\n{b}") } else { b }
    });
    let keywords = || prop::collection::vec("[^\\p{Cc}]{0,5}[a-zA-Z0-9é][^\\p{Cc}]{0,10}", 0..4);
    let topic = (
        "[a-z0-9][a-z0-9-]{0,12}",
        line_text(),
        "https://[a-z0-9]{1,10}\\.(org|net)(:[0-9]{1,4})?(/[a-z0-9_./?=#-]{0,20})?",
        keywords(),
        prop::collection::vec((0usize..4, line_text()), 0..3),
        prop::option::of(topic_text()),
        prop::collection::vec(
            (0usize..4, prop::option::of(line_text()), prop::option::of(topic_text()), keywords()),
            0..3,
        ),
    );
    (
        tags,
        prop::collection::vec((line_text(), body), 4),
        prop::collection::vec(topic, 0..5),
        0usize..4,
        prop::collection::vec(0usize..5, 0..5),
    )
        .prop_map(|(tags, texts, topics, default_language, hot)| {
            let languages: Vec<(String, String, String)> =
                tags.into_iter().zip(texts).map(|(t, (s, b))| (t, s, b)).collect();
            let n = languages.len();
            let mut seen = std::collections::HashSet::new();
            let topics: Vec<TopicModel> = topics
                .into_iter()
                .filter(|t| seen.insert(t.0.clone()))
                .map(|(id, title, link, keywords, translations, text, sections)| {
                    let mut langs = std::collections::HashSet::new();
                    let translations: Vec<(usize, String)> = translations
                        .into_iter()
                        .map(|(l, t)| (l % n, t))
                        .filter(|(l, _)| langs.insert(*l))
                        .collect();
                    let sections = sections
                        .into_iter()
                        .map(|(l, title, text, k)| (l % n, title, text, k))
                        .filter(|(_, title, text, k)| title.is_some() || text.is_some() || !k.is_empty())
                        .filter(|(l, ..)| langs.insert(*l))
                        .collect();
                    TopicModel { id, title, link, keywords, translations, text, sections }
                })
                .collect();
            let mut hot_topics: Vec<usize> = Vec::new();
            if !topics.is_empty() {
                for h in hot {
                    let h = h % topics.len();
                    if !hot_topics.contains(&h) {
                        hot_topics.push(h);
                    }
                }
            }
            ReplyModel { default_language: default_language % n, languages, topics, hot_topics }
        })
}

/// A TOML basic string, escaped here rather than by the toml crate (an independent writer).
fn quoted(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl ReplyModel {
    fn to_toml(&self) -> String {
        let mut out = format!("default_language = {}\n", quoted(&self.languages[self.default_language].0));
        let hot: Vec<String> = self.hot_topics.iter().map(|&i| quoted(&self.topics[i].id)).collect();
        out += &format!("hot_topics = [{}]\n", hot.join(", "));
        for t in &self.topics {
            let kw: Vec<String> = t.keywords.iter().map(|k| quoted(k)).collect();
            out += &format!(
                "\n[topics.{}]\ntitle = {}\nlink = {}\nkeywords = [{}]\n",
                t.id,
                quoted(&t.title),
                quoted(&t.link),
                kw.join(", ")
            );
            if let Some(text) = &t.text {
                out += &format!("text = {}\n", quoted(text));
            }
            if !t.translations.is_empty() {
                out += &format!("[topics.{}.translations]\n", t.id);
                for (l, title) in &t.translations {
                    out += &format!("{} = {}\n", self.languages[*l].0, quoted(title));
                }
            }
            for (l, title, text, keywords) in &t.sections {
                out += &format!("[topics.{}.translations.{}]\n", t.id, self.languages[*l].0);
                for (name, value) in [("title", title), ("text", text)] {
                    if let Some(v) = value {
                        out += &format!("{name} = {}\n", quoted(v));
                    }
                }
                let kw: Vec<String> = keywords.iter().map(|k| quoted(k)).collect();
                out += &format!("keywords = [{}]\n", kw.join(", "));
            }
        }
        for (tag, subject, body) in &self.languages {
            out += &format!("\n[languages.{tag}]\nsubject = {}\nbody = {}\n", quoted(subject), quoted(body));
        }
        out
    }

    fn assert_same(&self, r: &ReplyFile) {
        assert_eq!(r.default_language, self.languages[self.default_language].0);
        let hot: Vec<&str> = self.hot_topics.iter().map(|&i| self.topics[i].id.as_str()).collect();
        assert_eq!(r.hot_topics, hot);
        assert_eq!(r.topics.len(), self.topics.len());
        for (got, want) in r.topics.iter().zip(&self.topics) {
            assert_eq!(
                (&got.id, &got.title, &got.link, &got.keywords),
                (&want.id, &want.title, &want.link, &want.keywords)
            );
            let tag = |l: &usize| self.languages[*l].0.clone();
            let mut translations: std::collections::BTreeMap<String, String> =
                want.translations.iter().map(|(l, t)| (tag(l), t.clone())).collect();
            let (mut texts, mut keywords) =
                (std::collections::BTreeMap::new(), std::collections::BTreeMap::new());
            for (l, title, text, k) in &want.sections {
                title.iter().for_each(|t| drop(translations.insert(tag(l), t.clone())));
                text.iter().for_each(|t| drop(texts.insert(tag(l), t.clone())));
                if !k.is_empty() {
                    keywords.insert(tag(l), k.clone());
                }
            }
            assert_eq!(got.translations, translations);
            assert_eq!(
                (&got.text, &got.text_translations, &got.language_keywords),
                (&want.text, &texts, &keywords)
            );
        }
        assert_eq!(r.languages.len(), self.languages.len());
        for (tag, subject, body) in &self.languages {
            let l = &r.languages[tag];
            assert_eq!(&l.subject, subject);
            assert_eq!(l.body, body.replace("\r\n", "\n"));
        }
    }
}

/// A valid reply file with one line changed.
fn reply_edit() -> impl Strategy<Value = String> {
    let lines: Vec<String> = invariants::TEST_REPLY.lines().map(String::from).collect();
    let n = lines.len();
    (
        0..n,
        prop_oneof![Just(None), "\\PC{0,40}".prop_map(Some), Just(Some("[topics.mac]".into()))],
        any::<bool>(),
    )
        .prop_map(move |(i, new, insert)| {
            let mut l = lines.clone();
            match (new, insert) {
                (None, _) => {
                    l.remove(i);
                }
                (Some(s), true) => l.insert(i, s),
                (Some(s), false) => l[i] = s,
            }
            l.join("\n")
        })
}

// ---------------------------------------------------------------------------------------------
// config texts

fn config_text() -> impl Strategy<Value = String> {
    let value = prop_oneof![
        Just("\"inet:127.0.0.1:1\"".to_string()),
        Just("\"unix:x.sock\"".to_string()),
        Just("\"0600\"".to_string()),
        Just("\"tempfail\"".to_string()),
        Just("[\"support@tails.net\", \"<Help@X.ORG>\"]".to_string()),
        Just("[\"*@tails.net\"]".to_string()),
        Just("[]".to_string()),
        Just("\"X-Triage-\"".to_string()),
        Just("\"1m\"".to_string()),
        Just("\"8d\"".to_string()),
        Just("\"smtp://[::1]:25\"".to_string()),
        Just("\"Help <h@x.org>\"".to_string()),
        Just("true".to_string()),
        Just("false".to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        (0i64..200_000).prop_map(|n| n.to_string()),
        "\\PC{0,12}".prop_map(|s| quoted(&s)),
    ];
    let key = prop::sample::select(vec![
        ("milter", "listen"),
        ("milter", "socket_mode"),
        ("milter", "on_error"),
        ("milter", "max_connections"),
        ("milter", "max_header_bytes"),
        ("milter", "max_body_bytes"),
        ("helpdesk", "addresses"),
        ("helpdesk", "aliases"),
        ("helpdesk", "team_senders"),
        ("helpdesk", "header_prefix"),
        ("helpdesk", "subject_tags"),
        ("helpdesk", "spam_headers"),
        ("helpdesk", "role_senders"),
        ("helpdesk", "team_require_dkim"),
        ("helpdesk", "trusted_authserv_ids"),
        ("autoreply", "enabled"),
        ("autoreply", "from"),
        ("autoreply", "interval"),
        ("autoreply", "allow_short_interval"),
        ("autoreply", "relay"),
        ("autoreply", "max_per_hour"),
        ("autoreply", "system_addresses"),
        ("state", "max_entries"),
        ("state", "directory"),
        ("log", "level"),
    ]);
    prop::collection::vec((key, value), 0..8).prop_map(|settings| {
        let mut by_section: std::collections::BTreeMap<&str, Vec<String>> = Default::default();
        for ((section, key), value) in settings {
            let lines = by_section.entry(section).or_default();
            if !lines.iter().any(|l| l.starts_with(&format!("{key} ="))) {
                lines.push(format!("{key} = {value}"));
            }
        }
        by_section.iter().map(|(s, lines)| format!("[{s}]\n{}\n", lines.join("\n"))).collect()
    })
}

// ---------------------------------------------------------------------------------------------
// The committed seed corpus, regression inputs included, through the same checks.

fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no seed in {}", dir.display());
    files.into_iter().map(|p| (p.display().to_string(), std::fs::read(&p).unwrap())).collect()
}

/// The milter target's seeds, the crashes it found among them (a forged field deleted under the
/// case it came with: `forged-prefix-other-case.bin`).
#[test]
fn seed_corpus_milter() {
    let seeds = corpus("milter");
    assert!(seeds.len() >= 3, "the milter seeds are missing");
    for (name, data) in seeds {
        let result = std::panic::catch_unwind(|| milter_stream::check(&milter_stream::input(&data)));
        result.unwrap_or_else(|_| panic!("{name}"));
    }
}

#[test]
fn seed_corpus_classify() {
    let mut seen_overflow = false;
    for (name, data) in corpus("classify") {
        let case = ClassifyCase::from_fuzz_input(&data);
        let result = std::panic::catch_unwind(|| invariants::check_classify(&case));
        let r = result.unwrap_or_else(|_| panic!("{name}"));
        seen_overflow |= r.is_err();
    }
    // The overflow seed reaches the documented error, so its branch of the invariant runs.
    assert!(seen_overflow, "no seed reaches TooManyPrefixedHeaders");
}

#[test]
fn seed_corpus_text_targets() {
    for (name, data) in corpus("reply_file") {
        let text = String::from_utf8(data).unwrap();
        assert!(std::panic::catch_unwind(|| invariants::check_reply_file(&text)).is_ok(), "{name}");
    }
    for (name, data) in corpus("config") {
        let text = String::from_utf8(data).unwrap();
        assert!(std::panic::catch_unwind(|| invariants::check_config(&text)).is_ok(), "{name}");
    }
    let dir = invariants::scratch_dir();
    for (name, data) in corpus("outbox") {
        assert!(
            std::panic::catch_unwind(|| invariants::check_outbox_bytes(dir.path(), &data)).is_ok(),
            "{name}"
        );
    }
}

/// The examples are valid; a generated reply file passes the real binary's check.
#[test]
fn shipped_files_and_a_generated_reply_file_pass_check() {
    assert!(invariants::check_config(invariants::ETC_CONFIG).is_some());
    assert!(invariants::check_reply_file(invariants::ETC_REPLY).is_some());
    assert!(invariants::check_reply_file(invariants::TEST_REPLY).is_some());

    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let model = reply_model().new_tree(&mut runner).unwrap().current();
    let dir = invariants::scratch_dir();
    let file = dir.path().join("reply.toml");
    std::fs::write(&file, model.to_toml()).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_helpdesk-milter"))
        .args(["check", "--reply"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "check refused a generated file: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        model.to_toml()
    );
    // And the same file with a topic referenced but not defined is refused.
    std::fs::write(
        &file,
        model.to_toml().replacen("hot_topics = [", "hot_topics = [\"undefined-topic\", ", 1),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_helpdesk-milter"))
        .args(["check", "--reply"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success(), "check accepted an undefined hot topic");
}

/// The harness of `milter_any_bytes` reaches the end of a message: a whole transaction in the
/// structured input form gets the triage headers and an answer, and a damaged copy of it still
/// passes the invariants.
#[test]
fn milter_stream_reaches_the_end_of_message() {
    let mut input = vec![3u8];
    let mut cmd = |code: u8, data: &[u8]| {
        input.push(code);
        input.push(data.len() as u8);
        input.extend_from_slice(data);
    };
    cmd(b'C', b"mx\0" as &[u8]);
    cmd(b'M', b"<alice@example.org>\0");
    cmd(b'R', b"<support@tails.net>\0");
    cmd(b'T', b"");
    cmd(b'L', b"Subject\0Tor does not start\0");
    cmd(b'L', b"X-HelpDesk-Class\0team\0");
    cmd(b'N', b"");
    cmd(b'B', b"Hello, Tor does not start on my laptop.\r\n");
    cmd(b'E', b"");
    cmd(b'Q', b"");
    let out = milter_stream::check(&milter_stream::input(&input));
    let text = String::from_utf8_lossy(&out);
    assert!(text.contains("X-HelpDesk-Class\0support"), "{text:?}");
    assert!(out.windows(5).any(|w| w == [0, 0, 0, 1, b'c']), "continue answers: {text:?}");
    for cut in [3, 20, 40, input.len() - 3] {
        let mut damaged = input.clone();
        damaged[cut] ^= 0x5a;
        milter_stream::check(&milter_stream::input(&damaged));
    }
}

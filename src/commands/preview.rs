//! `preview`: the reply that a message would get.

use super::classify::default_envelope;
use crate::classify::Class;
use crate::config::Config;
use crate::message::MessageData;
use crate::reply::{self, ReplyRequest};
use crate::reply_file::ReplyFile;
use crate::state::ReplyState;
use crate::triage::{self, Deps};
use mail_parser::{HeaderName, MessageParser};

/// The recipient of a previewed reply that has none: the sample request, or a message without
/// a sender.
const SAMPLE_RECIPIENT: &str = "someone@example.org";

/// What `preview` shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preview {
    /// The complete reply message, as it would be sent.
    pub message: Vec<u8>,
    /// The topics it leads with.
    pub topics: Vec<String>,
    /// When the daemon would send no reply to the message: why, as its `Autoreply` header says
    /// (the reply shown is then the one it would get otherwise).
    pub not_sent: Option<String>,
}

/// `preview`: the reply that would answer `message` (or a sample request), in `language` if
/// given, else in the language the daemon would pick. The message goes through the daemon's
/// end of message (`triage::end_of_message`, as `classify` runs it, with a fresh state): its
/// language, its topics and its decision are the daemon's.
pub fn preview(
    config: &Config,
    file: &ReplyFile,
    language: Option<&str>,
    message: Option<&MessageData>,
) -> Preview {
    let (mut request, not_sent) = match message {
        Some(data) => request_for(config, file, data),
        None => (ReplyRequest { recipient: SAMPLE_RECIPIENT.into(), ..ReplyRequest::default() }, None),
    };
    if request.recipient.is_empty() {
        // A message without sender would get no reply; show the text all the same.
        request.recipient = SAMPLE_RECIPIENT.into();
    }
    if let Some(lang) = language {
        // The language asked for, and no other.
        request.languages = vec![lang.to_string()];
        request.text_sample.clear();
    }
    let message = reply::build(&config.autoreply, file, &request, crate::clock::unix_now()).message;
    Preview { message, topics: request.topics, not_sent }
}

/// The reply request the daemon would make for `data`, and why it would send none, if so.
fn request_for(config: &Config, file: &ReplyFile, data: &MessageData) -> (ReplyRequest, Option<String>) {
    let envelope = default_envelope(config, data, None, &[]);
    let state = ReplyState::in_memory();
    let deps = Deps { reply_file: Some(file), state: &state, now: crate::clock::unix_now() };
    let (decision, topics, encrypted) = match triage::end_of_message(config, &deps, &envelope, data) {
        Ok(t) => match t.reply {
            Some((request, _)) => return (request, None),
            None => {
                let d = t.decision.map(|d| d.header_value());
                (d, if t.class == Some(Class::Support) { t.topics } else { Vec::new() }, t.signals.encrypted)
            }
        },
        Err(e) => (Some(e.to_string()), Vec::new(), false),
    };
    // No reply: build the request the same way, for the text the message would get otherwise.
    let kept = data.to_rfc5322();
    let parsed = crate::classify::parse(&kept);
    let text = if encrypted { None } else { parsed.as_ref().and_then(|p| p.body_text(0)) };
    let request = triage::reply_request(&envelope, parsed.as_ref(), text.as_deref(), &topics);
    (request, Some(decision.unwrap_or_else(|| "not for a Help Desk address".into())))
}

/// A reply message for proofreading: its header fields with encoded words decoded, a blank line,
/// and its plain-text body decoded (no quoted-printable), as a mail program shows them.
pub fn as_text(message: &[u8]) -> String {
    let mut out = String::with_capacity(message.len());
    // Every field as unstructured text: encoded words decoded, nothing else interpreted.
    let fields = MessageParser::new().header_text(HeaderName::Subject).default_header_text();
    if let Some(m) = fields.parse_headers(message) {
        for h in m.headers() {
            let value = h.value().as_text().unwrap_or_default();
            out.push_str(&format!("{}: {}\n", h.name(), value.trim()));
        }
    }
    out.push('\n');
    if let Some(body) = crate::classify::parse(message).as_ref().and_then(|m| m.body_text(0)) {
        out.push_str(&body.replace("\r\n", "\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const FILE: &str = r#"default_language = "en"
hot_topics = ["wifi", "nvidia"]
[topics.wifi]
title = "Wi-Fi does not work"
link = "https://tails.net/doc/no-wifi/"
text = "Tell us the model of your adapter."
keywords = ["realtek"]
[topics.wifi.translations.de]
title = "WLAN geht nicht über Realtek"
text = "Nennen Sie uns das Modell Ihres Adapters, bitte. Größe, Maße, Übersicht."
keywords = ["wlan"]
[topics.nvidia]
title = "Black screen"
link = "https://tails.net/doc/black/"
keywords = ["nvidia"]
[languages.en]
subject = "Your message"
body = "Hello\n\n{matched_topics}\n\nKnown:\n{hot_topics}\n"
[languages.de]
subject = "Ihre Nachricht über Tails"
body = "Hallo\n\n{matched_topics}\n\nBekannt:\n{hot_topics}\n"
"#;

    fn setup() -> (Config, ReplyFile) {
        let file = ReplyFile::parse(Path::new("/r.toml"), FILE).unwrap();
        (Config::defaults(Path::new("/x.toml")), file)
    }

    /// A message to the Help Desk from `raw` (header fields, a blank line, the body).
    fn data(config: &Config, raw: &str) -> MessageData {
        let raw = format!("To: support@tails.net\n{raw}");
        super::super::read_message(config, raw.as_bytes()).unwrap()
    }

    fn body(p: &Preview) -> String {
        let text = as_text(&p.message);
        text.split_once("\n\n").unwrap().1.to_string()
    }

    #[test]
    fn a_request_gets_the_reply_that_leads_with_its_topics() {
        let (config, file) = setup();
        let msg = data(&config, "From: Ann <ann@example.org>\nSubject: help\n\nMy Realtek adapter\n");
        let p = preview(&config, &file, None, Some(&msg));
        assert_eq!(p.topics, vec!["wifi"]);
        assert_eq!(p.not_sent, None);
        assert_eq!(
            body(&p),
            "Hello\n\n- Wi-Fi does not work\n  https://tails.net/doc/no-wifi/\n  Tell us the model of your adapter.\n\n\
             Known:\n- Black screen\n  https://tails.net/doc/black/\n"
        );
        // The language the daemon picks (Content-Language here), or the one asked for.
        let de = data(&config, "From: ann@example.org\nContent-Language: de\nSubject: x\n\nkein WLAN\n");
        let p = preview(&config, &file, None, Some(&de));
        assert_eq!(p.topics, vec!["wifi"]);
        assert!(body(&p).starts_with("Hallo\n\n- WLAN geht nicht über Realtek\n"), "{}", body(&p));
        assert!(body(&preview(&config, &file, Some("en"), Some(&de))).starts_with("Hello\n\n- Wi-Fi"));
        // The sample request matches nothing.
        let p = preview(&config, &file, None, None);
        assert!(p.topics.is_empty() && p.not_sent.is_none());
        assert!(body(&p).starts_with("Hello\n\nKnown:\n- Wi-Fi does not work\n"), "{}", body(&p));
    }

    #[test]
    fn a_message_the_daemon_would_not_answer_is_said_so_and_leads_with_nothing_unless_new() {
        let (config, file) = setup();
        let follow_up = data(&config, "From: ann@example.org\nIn-Reply-To: <a@b>\nSubject: x\n\nrealtek\n");
        let p = preview(&config, &file, None, Some(&follow_up));
        assert_eq!(p.not_sent.as_deref(), Some("suppressed (class)"));
        assert!(p.topics.is_empty(), "only a new request's topics count: {:?}", p.topics);
        // A new request the rules stop still shows the reply it would lead with.
        let suppressed =
            data(&config, "From: ann@example.org\nX-Auto-Response-Suppress: All\nSubject: x\n\nrealtek\n");
        let p = preview(&config, &file, None, Some(&suppressed));
        assert_eq!(p.not_sent.as_deref(), Some("suppressed (auto-response-suppress)"));
        assert_eq!(p.topics, vec!["wifi"]);
    }

    #[test]
    fn the_text_form_decodes_the_header_and_the_body() {
        let (config, file) = setup();
        let msg =
            data(&config, "From: \"Jürgen\" <j@example.org>\nContent-Language: de\nSubject: x\n\nWLAN\n");
        let p = preview(&config, &file, None, Some(&msg));
        let raw = String::from_utf8_lossy(&p.message).into_owned();
        // As sent: encoded words and quoted-printable.
        assert!(raw.contains("=?utf-8?") && raw.contains("=C3=9F"), "{raw}");
        let text = as_text(&p.message);
        assert!(text.contains("\nSubject: Ihre Nachricht über Tails\n"), "{text}");
        assert!(text.contains("\nTo: Jürgen <j@example.org>\n"), "{text}");
        assert!(text.contains("\nContent-Language: de\n"), "{text}");
        assert!(
            text.contains("  Nennen Sie uns das Modell Ihres Adapters, bitte. Größe, Maße, Übersicht.\n"),
            "{text}"
        );
        assert!(!text.contains("=C3") && !text.contains("=?utf-8?") && !text.contains("=\n"), "{text}");
        assert!(!text.contains('\r'), "{text:?}");
    }
}

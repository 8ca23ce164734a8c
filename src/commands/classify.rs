//! `classify`: the header changes the daemon would make to one message.

use crate::address;
use crate::classify::Envelope;
use crate::config::Config;
use crate::message::MessageData;
use crate::reply_file::ReplyFile;
use crate::state::ReplyState;
use crate::triage::{self, Deps, HeaderChange, TriageError};
use mail_parser::{HeaderName, HeaderValue, MessageParser};
use std::io::{self, BufRead};

/// The envelope `classify` uses: the sender given, else the address in Return-Path, else in From
/// (`<>` is the null sender); the recipients given, else the first Help Desk address.
pub fn default_envelope(
    config: &Config,
    data: &MessageData,
    sender: Option<&str>,
    rcpts: &[String],
) -> Envelope {
    let sender = match sender {
        Some(s) => s.to_string(),
        None => MessageParser::new().parse_headers(&data.to_rfc5322()).map_or_else(String::new, |m| {
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

/// A message as the milter would have kept it, read as a stream under the configured limits:
/// the memory it takes does not grow with the message (`MessageData::read_from`).
pub fn read_message(config: &Config, input: impl BufRead) -> io::Result<MessageData> {
    let m = &config.milter;
    MessageData::read_from(input, &config.helpdesk.header_prefix, m.max_header_bytes, m.max_body_bytes)
}

/// `classify`: the header changes the daemon would make to a message, through the same
/// end-of-message code and the same limits as the milter, submitted with the SASL login
/// `sasl_login` if given. Sends nothing and changes no state.
pub fn classify(
    config: &Config,
    reply_file: Option<&ReplyFile>,
    data: &MessageData,
    sender: Option<&str>,
    rcpts: &[String],
    sasl_login: Option<&str>,
) -> Result<Vec<HeaderChange>, TriageError> {
    let envelope = default_envelope(config, data, sender, rcpts).with_sasl_login(sasl_login);
    // A fresh in-memory state: as if nobody had been answered, and nothing is recorded.
    let state = ReplyState::in_memory();
    let deps = Deps { reply_file, state: &state, now: crate::clock::unix_now() };
    Ok(triage::end_of_message(config, &deps, &envelope, data)?.changes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn cfg() -> Config {
        Config::defaults(Path::new("/x.toml"))
    }

    fn data(raw: &[u8]) -> MessageData {
        read_message(&cfg(), raw).unwrap()
    }

    #[test]
    fn sender_defaults_to_return_path_then_from() {
        let c = cfg();
        let rp = b"Return-Path: <Bounce@Example.org>\nFrom: alice@example.org\n\nx";
        assert_eq!(default_envelope(&c, &data(rp), None, &[]).sender, "bounce@example.org");
        let from = b"From: Alice <Alice@Example.org>\n\nx";
        assert_eq!(default_envelope(&c, &data(from), None, &[]).sender, "alice@example.org");
        assert_eq!(default_envelope(&c, &data(b"Return-Path: <>\nFrom: a@b.org\n\nx"), None, &[]).sender, "");
        assert_eq!(default_envelope(&c, &data(from), Some("<>"), &[]).sender, "");
        assert_eq!(default_envelope(&c, &data(b"\n\nno headers"), None, &[]).sender, "");
    }

    #[test]
    fn recipients_default_to_the_first_helpdesk_address() {
        let c = cfg();
        assert_eq!(default_envelope(&c, &data(b"\n\nx"), None, &[]).recipients, vec!["support@tails.net"]);
        let e = default_envelope(&c, &data(b"\n\nx"), None, &["<Bob@Example.org>".into()]);
        assert_eq!(e.recipients, vec!["bob@example.org"]);
    }

    #[test]
    fn null_sender_from_the_command_line_is_automated() {
        let out = classify(&cfg(), None, &data(b"From: alice@example.org\n\nhello"), Some("<>"), &[], None)
            .unwrap();
        assert_eq!(out[0].to_string(), "X-HelpDesk-Class: automated");
    }

    #[test]
    fn sasl_user_shows_an_authenticated_submission() {
        let raw = data(b"From: bob@tails.net\nTo: support@tails.net\n\nthe mirror is down");
        let class = |login| classify(&cfg(), None, &raw, None, &[], login).unwrap()[0].to_string();
        assert_eq!(class(Some("bob")), "X-HelpDesk-Class: team");
        assert_eq!(class(None), "X-HelpDesk-Class: support");
    }
}

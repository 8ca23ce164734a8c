//! Tagging WhisperBack reports by mail: a trusted Help Desk member files a report under topics of
//! the reply file, so that the encrypted reports, which keywords cannot read, count under their
//! problem. Pure.
//!
//! A WhisperBack report has no Message-ID; the milter gives it one derived from its report ID
//! ([`report_message_id`]), so that any reply to it names the report in clear in its
//! `In-Reply-To` and `References`, even when the mail client encrypts the Subject (Thunderbird's
//! protected headers send `...` as the outer Subject). A tag names:
//! - the report: a reference to that Message-ID, or `Bug report: <id>` in the Subject;
//! - the topics: a recipient subaddress of the Help Desk (`support+wifi-realtek@`, which
//!   Postfix's `recipient_delimiter` delivers to the same mailbox), or `[topic:wifi-realtek]` in
//!   the Subject.
//!
//! Only a trusted member can tag: a SASL-authenticated submission on this host, or a team sender
//! with a DKIM pass from a trusted verifier ([`crate::classify::Signals::trusted_member`]).

use crate::classify::{Envelope, Signals};
use crate::config::HelpdeskConfig;
use crate::reply_file::ReplyFile;

/// The local part of the Message-ID the milter gives a WhisperBack report, before its ID.
const MESSAGE_ID_PREFIX: &str = "whisperback.";

/// What a message asks of the tags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tagging {
    /// Not a tag: names no report, or no topic.
    None,
    /// A tag, from a sender who is not a trusted member: it changes nothing.
    Untrusted,
    /// Reports and the topics to file them under, each a known topic of the reply file.
    Tag { reports: Vec<String>, topics: Vec<String> },
}

/// The Message-ID given to a WhisperBack report that has none, in the Help Desk's own domain.
pub fn report_message_id(cfg: &HelpdeskConfig, report_id: &str) -> String {
    let domain =
        cfg.addresses.first().and_then(|a| a.rsplit_once('@')).map_or("helpdesk.invalid", |(_, d)| d);
    format!("<{MESSAGE_ID_PREFIX}{report_id}@{domain}>")
}

/// The report ID of a Message-ID that the milter gave a report (without angle brackets).
fn report_of_message_id(id: &str) -> Option<String> {
    let local = id.trim().trim_start_matches('<').split('@').next()?;
    let hex = local.to_ascii_lowercase();
    let hex = hex.strip_prefix(MESSAGE_ID_PREFIX)?;
    is_report_id(hex).then(|| hex.to_string())
}

fn is_report_id(s: &str) -> bool {
    (1..=32).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Every `Bug report: <hex>` of a Subject (a reply's Subject goes on after it, with tags).
fn reports_in_subject(subject: &str) -> Vec<String> {
    const MARK: &str = "bug report: ";
    let lower = subject.to_ascii_lowercase();
    let mut out = Vec::new();
    let mut rest = lower.as_str();
    while let Some(p) = rest.find(MARK) {
        rest = &rest[p + MARK.len()..];
        let id: String = rest.chars().take_while(char::is_ascii_hexdigit).collect();
        if is_report_id(&id) {
            out.push(id);
        }
    }
    out
}

/// Every `[topic:ID]` of a Subject.
fn topics_in_subject(subject: &str) -> Vec<String> {
    const MARK: &str = "[topic:";
    let lower = subject.to_ascii_lowercase();
    let mut out = Vec::new();
    let mut rest = lower.as_str();
    while let Some(p) = rest.find(MARK) {
        rest = &rest[p + MARK.len()..];
        if let Some((id, after)) = rest.split_once(']') {
            out.push(id.trim().to_string());
            rest = after;
        }
    }
    out
}

fn push_new(list: &mut Vec<String>, items: impl IntoIterator<Item = String>) {
    for i in items {
        if !list.contains(&i) {
            list.push(i);
        }
    }
}

/// What `s` asks of the tags, read from its references, Subject and envelope recipients. Topics
/// that the reply file does not know are left out; with none left, it is no tag.
pub fn tagging(cfg: &HelpdeskConfig, reply_file: Option<&ReplyFile>, env: &Envelope, s: &Signals) -> Tagging {
    let mut reports = Vec::new();
    push_new(&mut reports, s.references.iter().filter_map(|r| report_of_message_id(r)));
    let subject = s.subject.as_deref().unwrap_or_default();
    push_new(&mut reports, reports_in_subject(subject));
    let mut topics = Vec::new();
    push_new(&mut topics, env.recipients.iter().filter_map(|r| cfg.detail(r)));
    push_new(&mut topics, topics_in_subject(subject));
    let known = |t: &String| reply_file.is_some_and(|f| f.topics.iter().any(|k| &k.id == t));
    topics.retain(known);
    if reports.is_empty() || topics.is_empty() {
        return Tagging::None;
    }
    if !s.trusted_member(cfg) {
        return Tagging::Untrusted;
    }
    Tagging::Tag { reports, topics }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::path::Path;

    const ID: &str = "4ffd523ac6b83288ba219a6a55f4971b";

    fn file() -> ReplyFile {
        let text = "default_language = \"en\"\nhot_topics = []\n[topics.wifi-realtek]\ntitle = \"W\"\n\
                    link = \"https://tails.net/w\"\n[topics.mac]\ntitle = \"M\"\nlink = \"https://tails.net/m\"\n\
                    [languages.en]\nsubject = \"S\"\nbody = \"B\"\n";
        ReplyFile::parse(Path::new("/r.toml"), text).unwrap()
    }

    fn ask(rcpts: &[&str], subject: &str, refs: &[String], sasl: bool) -> Tagging {
        let cfg = Config::defaults(Path::new("/x.toml")).helpdesk;
        let env = Envelope::new("member@tails.net", rcpts.iter().copied())
            .with_sasl_login(sasl.then_some("member"));
        let s = Signals {
            subject: Some(subject.into()),
            references: refs.to_vec(),
            sasl_authenticated: sasl,
            team_sender: true,
            ..Signals::default()
        };
        tagging(&cfg, Some(&file()), &env, &s)
    }

    #[test]
    fn the_reports_message_id_names_it_in_clear() {
        let cfg = Config::defaults(Path::new("/x.toml")).helpdesk;
        let id = report_message_id(&cfg, ID);
        assert_eq!(id, format!("<whisperback.{ID}@tails.net>"));
        assert_eq!(report_of_message_id(id.trim_matches(['<', '>'])).as_deref(), Some(ID));
        assert_eq!(report_of_message_id("whisperback.xyz@tails.net"), None);
        assert_eq!(report_of_message_id("CAF1234@mail.example"), None);
    }

    #[test]
    fn a_subject_encrypted_reply_tags_by_its_references_and_subaddress() {
        let refs = vec![format!("whisperback.{ID}@tails.net")];
        let t = ask(&["support+wifi-realtek@tails.net"], "...", &refs, true);
        assert_eq!(t, Tagging::Tag { reports: vec![ID.into()], topics: vec!["wifi-realtek".into()] });
    }

    #[test]
    fn a_subject_tags_too_and_unknown_topics_are_left_out() {
        let subject = format!("Re: Bug report: {ID} [topic:mac] [Topic:WiFi-Realtek] [topic:nope]");
        let t = ask(&["support@tails.net"], &subject, &[], true);
        assert_eq!(
            t,
            Tagging::Tag { reports: vec![ID.into()], topics: vec!["mac".into(), "wifi-realtek".into()] }
        );
        assert_eq!(
            ask(&["support@tails.net"], &format!("Bug report: {ID} [topic:nope]"), &[], true),
            Tagging::None
        );
        assert_eq!(ask(&["support+mac@tails.net"], "Re: my question", &[], true), Tagging::None, "no report");
    }

    #[test]
    fn only_a_trusted_member_tags() {
        let subject = format!("Re: Bug report: {ID} [topic:mac]");
        assert_eq!(ask(&["support@tails.net"], &subject, &[], false), Tagging::Untrusted);
    }
}

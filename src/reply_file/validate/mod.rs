//! From the reply file's text to a validated [`ReplyFile`]: every problem is reported at once, in
//! file order, in words a Help Desk member can act on.
//!
//! - this file: the file as a whole, its languages, and the helpers both parts use;
//! - [`topic`]: the topics, their titles, links, texts, keywords and translations.

mod topic;

pub use topic::MAX_TOPIC_ID_CHARS;

use super::raw::{RawLanguage, RawReplyFile, plain_toml_message};
use super::render::{body_without_matched_topics, paragraphs_with};
use super::{HOT_TOPICS_PLACEHOLDER, MATCHED_TOPICS_PLACEHOLDER, ReplyFile, Topic, Translation};
use crate::diagnostic::{Collector, Diagnostic, Diagnostics};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;
use toml::Spanned;

/// The placeholders a body may contain.
const PLACEHOLDERS: [&str; 2] = [MATCHED_TOPICS_PLACEHOLDER, HOT_TOPICS_PLACEHOLDER];

/// Parses and validates reply-file text; `path` names it in errors.
pub(super) fn parse(path: &Path, text: &str) -> Result<ReplyFile, Diagnostics> {
    if text.trim().is_empty() {
        return Err(Diagnostics(vec![Diagnostic::whole_file(
            path,
            "the reply file is empty: start from the example reply.toml, which explains every part",
        )]));
    }
    let raw: RawReplyFile = toml::from_str(text).map_err(|e| {
        Diagnostics(vec![Diagnostic::at_span(path, text, e.span(), plain_toml_message(e.message()))])
    })?;
    let mut v = Validator { report: Collector::new(path, text) };
    let reply = v.build(raw);
    // File order reads best.
    v.report.finish_in_file_order(reply)
}

struct Validator<'a> {
    report: Collector<'a>,
}

impl Validator<'_> {
    fn error_at(&mut self, span: Option<Range<usize>>, message: impl Into<String>) {
        self.report.error_at(span, message);
    }

    fn error<T>(&mut self, at: &Spanned<T>, message: impl Into<String>) {
        self.report.error(at, message);
    }

    fn build(&mut self, raw: RawReplyFile) -> ReplyFile {
        let languages = self.languages(&raw.languages);
        let default_language = self.default_language(raw.default_language.as_ref(), &languages);
        let (topics, matchers) = self.topics(&raw.topics, &languages);
        let hot_topics = self.hot_topics(raw.hot_topics.as_ref(), &topics);
        ReplyFile {
            path: self.report.path.to_path_buf(),
            default_language,
            hot_topics,
            topics,
            languages,
            revision: revision(self.report.text.as_bytes()),
            matchers,
        }
    }

    /// The key of `languages` that `default_language` names.
    fn default_language(
        &mut self,
        raw: Option<&Spanned<String>>,
        languages: &BTreeMap<String, Translation>,
    ) -> String {
        let Some(d) = raw else {
            self.error_at(
                None,
                "default_language is missing: add a line such as default_language = \"en\" at the top of the file",
            );
            return String::new();
        };
        if let Some(k) = languages.keys().find(|k| k.eq_ignore_ascii_case(d.get_ref().trim())) {
            return k.clone();
        }
        let tag = d.get_ref();
        self.error(
            d,
            format!(
                "missing default language: default_language is {tag:?} but there is no [languages.{tag}] section; add one, or set default_language to one of the languages below"
            ),
        );
        tag.clone()
    }

    /// The ids of `hot_topics`, each a topic of the file, once.
    fn hot_topics(&mut self, raw: Option<&Spanned<Vec<Spanned<String>>>>, topics: &[Topic]) -> Vec<String> {
        let Some(list) = raw else {
            self.error_at(
                None,
                "hot_topics is missing: add a line such as hot_topics = [\"wifi-realtek\"], or hot_topics = [] when there are none",
            );
            return Vec::new();
        };
        let mut ids: Vec<String> = Vec::new();
        for h in list.get_ref() {
            let id = h.get_ref();
            if !topics.iter().any(|t| &t.id == id) {
                self.error(
                    h,
                    format!(
                        "topic referenced but not defined: {id:?} is in hot_topics but there is no [topics.{id}] section; add one, or check the spelling"
                    ),
                );
            } else if ids.contains(id) {
                self.error(h, format!("{id:?} is listed twice in hot_topics: remove one"));
            } else {
                ids.push(id.clone());
            }
        }
        ids
    }

    fn languages(
        &mut self,
        raw: &BTreeMap<Spanned<String>, Spanned<RawLanguage>>,
    ) -> BTreeMap<String, Translation> {
        let mut out: BTreeMap<String, Translation> = BTreeMap::new();
        let mut entries: Vec<_> = raw.iter().collect();
        entries.sort_by_key(|(tag, _)| tag.span().start);
        for (tag, lang) in entries {
            let name = tag.get_ref();
            if !is_language_tag(name) {
                self.error(
                    tag,
                    format!(
                        "{name:?} is not a language tag: use a tag such as en, de, pt-BR or zh-Hans (letters and digits separated by '-', starting with a 2 or 3 letter language code)"
                    ),
                );
            }
            if let Some(other) = out.keys().find(|k| k.eq_ignore_ascii_case(name)) {
                self.error(
                    tag,
                    format!(
                        "the language {name:?} is defined twice (also as [languages.{other}]); upper and lower case do not count, so keep only one"
                    ),
                );
                continue;
            }
            let section = format!("[languages.{name}]");
            let subject = self.subject(lang, &section);
            let body = self.body(lang, &section);
            out.insert(name.clone(), Translation { subject, body });
        }
        out
    }

    /// The subject of a language section: one line, not blank.
    fn subject(&mut self, lang: &Spanned<RawLanguage>, section: &str) -> String {
        let Some(s) = &lang.get_ref().subject else {
            self.error_at(
                Some(lang.span()),
                format!("{section} has no subject: add a line such as subject = \"Your message to the Tails Help Desk\""),
            );
            return String::new();
        };
        let v = s.get_ref();
        if v.trim().is_empty() {
            self.error(s, format!("the subject of {section} is empty: write the Subject line of the reply"));
        } else if v.chars().any(is_line_breaking) {
            self.error(
                s,
                format!(
                    "the subject of {section} contains a line break or a control character: write it on a single line"
                ),
            );
        }
        v.trim().to_string()
    }

    /// The body of a language section: not blank, known placeholders only, LF line ends.
    fn body(&mut self, lang: &Spanned<RawLanguage>, section: &str) -> String {
        let Some(b) = &lang.get_ref().body else {
            self.error_at(
                Some(lang.span()),
                format!("{section} has no body: add the text of the reply, body = \"\"\"...\"\"\""),
            );
            return String::new();
        };
        // Web editors on Windows can save CRLF; the mail code expects \n.
        let v = lf_line_ends(b.get_ref());
        if v.trim().is_empty() {
            self.error(b, format!("the body of {section} is empty: write the text of the reply"));
            return v;
        }
        self.unknown_placeholders(b, section);
        self.matched_topics_paragraph(b, &v, section);
        v
    }

    /// Each unknown placeholder of a body, once.
    fn unknown_placeholders(&mut self, b: &Spanned<String>, section: &str) {
        let mut reported: Vec<&str> = Vec::new();
        for p in placeholders(b.get_ref()) {
            if !PLACEHOLDERS.contains(&p) && !reported.contains(&p) {
                reported.push(p);
                let span = self.report.span_within(b, p);
                self.error_at(
                    Some(span),
                    format!(
                        "unknown placeholder {p} in the body of {section}: the only placeholders are {MATCHED_TOPICS_PLACEHOLDER} and {HOT_TOPICS_PLACEHOLDER}; check the spelling, or remove the braces"
                    ),
                );
            }
        }
    }

    /// The paragraph of `{matched_topics}` is left out of replies that match no topic: it must
    /// not hold `{hot_topics}` too, nor be all there is.
    fn matched_topics_paragraph(&mut self, b: &Spanned<String>, body: &str, section: &str) {
        if !body.contains(MATCHED_TOPICS_PLACEHOLDER) {
            return;
        }
        let shared = paragraphs_with(body, MATCHED_TOPICS_PLACEHOLDER)
            .iter()
            .any(|p| p.contains(HOT_TOPICS_PLACEHOLDER));
        if shared {
            let span = self.report.span_within(b, HOT_TOPICS_PLACEHOLDER);
            self.error_at(
                Some(span),
                format!(
                    "{HOT_TOPICS_PLACEHOLDER} is in the same paragraph as {MATCHED_TOPICS_PLACEHOLDER} in the body of {section}: that paragraph is left out when no topic matches, and the hot topics with it; put an empty line between them"
                ),
            );
        }
        if body_without_matched_topics(body).trim().is_empty() {
            self.error(
                b,
                format!(
                    "the body of {section} has nothing but the paragraph of {MATCHED_TOPICS_PLACEHOLDER}, which is left out when no topic matches: the reply would be empty; write the rest of the reply around it"
                ),
            );
        }
    }
}

/// `text` with every line end `\n`: the CRs before each LF are dropped, all of them, so that no
/// CRLF is left ("\r\r\n" included) and a second pass changes nothing.
pub(super) fn lf_line_ends(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut lines = text.split('\n').peekable();
    while let Some(line) = lines.next() {
        if lines.peek().is_some() {
            out.push_str(line.trim_end_matches('\r'));
            out.push('\n');
        } else {
            out.push_str(line);
        }
    }
    out
}

pub(super) fn revision(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().take(6).map(|b| format!("{b:02x}")).collect()
}

/// A character that has no place in a one-line text (a Subject header, a list item).
fn is_line_breaking(c: char) -> bool {
    c.is_control() || c == '\u{2028}' || c == '\u{2029}'
}

/// Like `en`, `pt-BR`, `zh-Hans`: a 2-3 letter primary subtag, then subtags of 1-8 letters or
/// digits. Enough to catch typos, without the whole of BCP 47.
pub(super) fn is_language_tag(s: &str) -> bool {
    let mut parts = s.split('-');
    let primary = parts.next().unwrap_or("");
    (2..=3).contains(&primary.len())
        && primary.bytes().all(|b| b.is_ascii_alphabetic())
        && parts.all(|p| (1..=8).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_alphanumeric()))
}

pub fn is_topic_id(s: &str) -> bool {
    let mut bytes = s.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// `https://HOST[:PORT][/...]`, no white space or control character anywhere.
pub(super) fn is_https_link(s: &str) -> bool {
    let Some(rest) = s.get(..8).filter(|p| p.eq_ignore_ascii_case("https://")).map(|_| &s[8..]) else {
        return false;
    };
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return false;
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = match authority.rsplit_once(':') {
        Some((h, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => authority,
    };
    // No user-info ('@') either: a help page needs none, and it is a classic phishing disguise.
    !host.is_empty()
        && !host.starts_with(['.', '-'])
        && !host.ends_with('-')
        && host.chars().all(|c| c.is_alphanumeric() || c == '.' || c == '-')
}

/// The `{...}` spans of `body` (no brace or line break inside), in order. A lone brace is text.
pub(super) fn placeholders(body: &str) -> Vec<&str> {
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(open) = body[from..].find('{').map(|p| from + p) {
        let after = open + 1;
        match body[after..].find(['{', '}', '\n']).map(|p| after + p) {
            Some(close) if body.as_bytes()[close] == b'}' => {
                found.push(&body[open..=close]);
                from = close + 1;
            }
            // A '{' or a line break first: this brace opens nothing; resume at that character.
            Some(next) => from = next,
            None => break,
        }
    }
    found
}

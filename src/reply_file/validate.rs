//! From the reply file's text to a validated [`ReplyFile`]: every problem is reported at once, in
//! file order, in words a Help Desk member can act on.

use super::matching::normalize_for_matching;
use super::{HOT_TOPICS_PLACEHOLDER, ReplyFile, Topic, Translation};
use crate::diagnostic::{Collector, Diagnostic, Diagnostics};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;
use toml::Spanned;

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

// ---------------------------------------------------------------------------------------------
// The file as written, before validation. Everything a person may forget is an Option, so that
// the validator can report it with the rest instead of serde stopping at the first.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReplyFile {
    default_language: Option<Spanned<String>>,
    hot_topics: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    topics: BTreeMap<Spanned<String>, Spanned<RawTopic>>,
    #[serde(default)]
    languages: BTreeMap<Spanned<String>, Spanned<RawLanguage>>,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a topic section such as [topics.wifi-realtek], with title, link and keywords"
)]
struct RawTopic {
    title: Option<Spanned<String>>,
    link: Option<Spanned<String>>,
    #[serde(default)]
    keywords: Vec<Spanned<String>>,
    #[serde(default)]
    translations: BTreeMap<Spanned<String>, Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a language section such as [languages.de], with subject and body")]
struct RawLanguage {
    subject: Option<Spanned<String>>,
    body: Option<Spanned<String>>,
}

/// toml's message, with a hint where it speaks to programmers.
fn plain_toml_message(message: &str) -> String {
    let m = message.trim_end();
    if m.starts_with("unknown field") {
        format!("{m}; check the spelling, or remove this line")
    } else if m.starts_with("duplicate key") {
        format!("{m}; each name may appear only once, remove one of them")
    } else {
        m.to_string()
    }
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

        let default_language = match &raw.default_language {
            None => {
                self.error_at(
                    None,
                    "default_language is missing: add a line such as default_language = \"en\" at the top of the file",
                );
                String::new()
            }
            Some(d) => match languages.keys().find(|k| k.eq_ignore_ascii_case(d.get_ref().trim())) {
                Some(k) => k.clone(),
                None => {
                    let tag = d.get_ref();
                    self.error(
                        d,
                        format!(
                            "missing default language: default_language is {tag:?} but there is no [languages.{tag}] section; add one, or set default_language to one of the languages below"
                        ),
                    );
                    tag.clone()
                }
            },
        };

        let mut entries: Vec<_> = raw.topics.iter().collect();
        // The map is sorted by id; the reply and match_topics follow the file's order.
        entries.sort_by_key(|(id, _)| id.span().start);
        let mut topics = Vec::new();
        let mut matchers = Vec::new();
        for (id, t) in entries {
            let (topic, matcher) = self.topic(id, t.get_ref(), t.span(), &languages);
            topics.push(topic);
            matchers.push(matcher);
        }

        let hot_topics = match &raw.hot_topics {
            None => {
                self.error_at(
                    None,
                    "hot_topics is missing: add a line such as hot_topics = [\"wifi-realtek\"], or hot_topics = [] when there are none",
                );
                Vec::new()
            }
            Some(list) => {
                let mut ids: Vec<String> = Vec::new();
                for h in list.get_ref() {
                    let id = h.get_ref();
                    if !topics.iter().any(|t: &Topic| &t.id == id) {
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
        };

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
        let v = b.get_ref();
        if v.trim().is_empty() {
            self.error(b, format!("the body of {section} is empty: write the text of the reply"));
        }
        let mut reported: Vec<&str> = Vec::new();
        for p in placeholders(v) {
            if p != HOT_TOPICS_PLACEHOLDER && !reported.contains(&p) {
                reported.push(p);
                let span = self.report.span_within(b, p);
                self.error_at(
                    Some(span),
                    format!(
                        "unknown placeholder {p} in the body of {section}: the only placeholder is {HOT_TOPICS_PLACEHOLDER}; check the spelling, or remove the braces"
                    ),
                );
            }
        }
        // Web editors on Windows can save CRLF; the mail code expects \n.
        lf_line_ends(v)
    }

    fn topic(
        &mut self,
        id: &Spanned<String>,
        t: &RawTopic,
        table: Range<usize>,
        languages: &BTreeMap<String, Translation>,
    ) -> (Topic, Vec<String>) {
        let name = id.get_ref();
        if !is_topic_id(name) {
            self.error(
                id,
                format!(
                    "the topic id {name:?} is not allowed: use only lowercase letters a-z, digits and '-', starting with a letter or a digit, such as \"wifi-realtek\""
                ),
            );
        }
        let title = match &t.title {
            None => {
                self.error_at(
                    Some(table.clone()),
                    format!(
                        "the topic {name:?} has no title: add a line such as title = \"Wi-Fi does not work\""
                    ),
                );
                String::new()
            }
            Some(s) => self.title(s, &format!("the title of the topic {name:?}")),
        };
        let link = self.link(name, t.link.as_ref(), table);
        let (keywords, matcher) = self.keywords(name, &t.keywords);
        let translations = self.translations(name, &t.translations, languages);
        (Topic { id: name.clone(), title, translations, link, keywords }, matcher)
    }

    /// A topic's link: a full https:// address.
    fn link(&mut self, name: &str, link: Option<&Spanned<String>>, table: Range<usize>) -> String {
        let Some(l) = link else {
            self.error_at(
                Some(table),
                format!(
                    "the topic {name:?} has no link: add a line such as link = \"https://tails.net/doc/\""
                ),
            );
            return String::new();
        };
        if !is_https_link(l.get_ref()) {
            self.error(
                l,
                format!(
                    "the link of the topic {name:?} is not a web address: write a full address that starts with https://, such as \"https://tails.net/doc/\", without spaces"
                ),
            );
        }
        l.get_ref().trim().to_string()
    }

    /// A topic's keywords as written, and normalised and padded for matching.
    fn keywords(&mut self, name: &str, list: &[Spanned<String>]) -> (Vec<String>, Vec<String>) {
        let mut keywords = Vec::new();
        let mut matcher = Vec::new();
        for k in list {
            let norm = normalize_for_matching(k.get_ref());
            if norm.is_empty() {
                self.error(
                    k,
                    format!(
                        "the keyword {:?} of the topic {name:?} can never match: a keyword needs at least one letter or digit",
                        k.get_ref()
                    ),
                );
            } else {
                matcher.push(format!(" {norm} "));
            }
            keywords.push(k.get_ref().clone());
        }
        (keywords, matcher)
    }

    /// A topic's titles in other languages, each in a language of the file.
    fn translations(
        &mut self,
        name: &str,
        raw: &BTreeMap<Spanned<String>, Spanned<String>>,
        languages: &BTreeMap<String, Translation>,
    ) -> BTreeMap<String, String> {
        let mut translations = BTreeMap::new();
        let mut entries: Vec<_> = raw.iter().collect();
        entries.sort_by_key(|(lang, _)| lang.span().start);
        for (lang, title) in entries {
            let tag = lang.get_ref();
            let text = self.title(title, &format!("the {tag} title of the topic {name:?}"));
            match languages.keys().find(|k| k.eq_ignore_ascii_case(tag)) {
                Some(k) => {
                    translations.insert(k.clone(), text);
                }
                None => self.error(
                    lang,
                    format!(
                        "the topic {name:?} has a title in {tag:?} but there is no [languages.{tag}] section: add that language, or remove this line"
                    ),
                ),
            }
        }
        translations
    }

    /// A title (default or translated): one line, not blank.
    fn title(&mut self, s: &Spanned<String>, what: &str) -> String {
        let v = s.get_ref();
        if v.trim().is_empty() {
            self.error(s, format!("{what} is empty: write the title shown in the reply"));
        } else if v.chars().any(is_line_breaking) {
            self.error(
                s,
                format!("{what} contains a line break or a control character: write it on a single line"),
            );
        }
        v.trim().to_string()
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

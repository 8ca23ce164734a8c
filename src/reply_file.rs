//! The reply file (TOML): the text of the standard reply and its hot topics.
//!
//! The Help Desk edits it through merge requests and the daemon reloads it live, so every
//! problem is reported at once, with its line and column and in plain words, and an invalid file
//! never replaces a valid one. `helpdesk-milter check --reply FILE` runs the same validation.

use crate::diagnostic::{Diagnostic, Diagnostics};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Read;
use std::ops::Range;
use std::path::{Path, PathBuf};
use toml::Spanned;

/// The only placeholder a body may contain.
pub const HOT_TOPICS_PLACEHOLDER: &str = "{hot_topics}";

/// A validated reply file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyFile {
    /// The file this was read from.
    pub path: PathBuf,
    /// A key of `languages` (spelled as there), used when no wanted language is available.
    pub default_language: String,
    /// Ids of the topics listed in the reply, in this order; each is the id of one of `topics`.
    pub hot_topics: Vec<String>,
    /// Every topic, hot or not, in file order.
    pub topics: Vec<Topic>,
    /// Subject and body by language tag, spelled as in the file.
    pub languages: BTreeMap<String, Translation>,
    /// First 12 hex digits of the SHA-256 of the file: which text was sent.
    pub revision: String,
    /// For each of `topics`, its keywords normalised and padded (" black screen "), computed
    /// once here so that matching a message costs one normalisation of its text.
    matchers: Vec<Vec<String>>,
}

/// A known problem, with the page that explains it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topic {
    /// `[a-z0-9][a-z0-9-]*`, shown in `X-HelpDesk-Topic`.
    pub id: String,
    /// The title in the default language.
    pub title: String,
    /// The title in other languages, keyed like `ReplyFile::languages`.
    pub translations: BTreeMap<String, String>,
    /// An `https://` address.
    pub link: String,
    /// Words or phrases that recognise the topic in a plaintext request (see `normalize_for_matching`).
    pub keywords: Vec<String>,
}

/// The reply in one language.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Translation {
    /// One line, without line breaks or control characters.
    pub subject: String,
    /// Plain text with `\n` line ends; may contain `{hot_topics}`.
    pub body: String,
}

/// A reply ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedReply {
    /// The key of `ReplyFile::languages` that was used.
    pub language: String,
    pub subject: String,
    pub body: String,
}

/// A reply file is a few KiB; a much larger one is a mistake, and must not fill memory.
const MAX_FILE_BYTES: u64 = 1024 * 1024;

impl ReplyFile {
    /// Reads and validates a reply file.
    pub fn load(path: &Path) -> Result<ReplyFile, Diagnostics> {
        let whole = |msg: String| Diagnostics(vec![Diagnostic::whole_file(path, msg)]);
        // read() of a directory fails with a bare "Is a directory" on Linux; say what to do. A FIFO
        // would block the reader (the watcher thread) forever, and a device never ends.
        match std::fs::metadata(path) {
            Ok(m) if m.is_dir() => {
                return Err(whole(
                    "the reply file is a directory, not a file: give the path of the reply file (reply.toml)"
                        .into(),
                ));
            }
            Ok(m) if !m.is_file() => {
                return Err(whole("the reply file is not a regular file (a FIFO, socket or device)".into()));
            }
            _ => {}
        }
        let mut bytes = Vec::new();
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes))
            .map_err(|e| whole(format!("cannot read the reply file: {e}")))?;
        if bytes.len() as u64 > MAX_FILE_BYTES {
            return Err(whole(format!(
                "the reply file is larger than {} KiB: that is not a reply file",
                MAX_FILE_BYTES / 1024
            )));
        }
        match String::from_utf8(bytes) {
            Ok(text) => ReplyFile::parse(path, &text),
            Err(e) => {
                let valid = e.utf8_error().valid_up_to();
                // The prefix is valid UTF-8 by definition; locate the first bad byte in it.
                let prefix = String::from_utf8_lossy(&e.as_bytes()[..valid]);
                Err(Diagnostics(vec![Diagnostic::at_span(
                    path,
                    &prefix,
                    Some(valid..valid),
                    "the reply file is not UTF-8 text: save it with the UTF-8 encoding",
                )]))
            }
        }
    }

    /// Parses and validates reply-file text; `path` names it in errors.
    pub fn parse(path: &Path, text: &str) -> Result<ReplyFile, Diagnostics> {
        if text.trim().is_empty() {
            return Err(Diagnostics(vec![Diagnostic::whole_file(
                path,
                "the reply file is empty: start from the example reply.toml, which explains every part",
            )]));
        }
        let raw: RawReplyFile = toml::from_str(text).map_err(|e| {
            Diagnostics(vec![Diagnostic::at_span(path, text, e.span(), plain_toml_message(e.message()))])
        })?;
        let mut v = Validator { path, text, errors: Vec::new() };
        let reply = v.build(raw);
        if v.errors.is_empty() {
            Ok(reply)
        } else {
            // File order reads best; sort_by_key is stable, so problems at one place keep theirs.
            v.errors.sort_by_key(|d| (d.line, d.column));
            Err(Diagnostics(v.errors))
        }
    }

    /// The key of `languages` for `tag`, compared without regard to case.
    fn language_key(&self, tag: &str) -> Option<&str> {
        let tag = tag.trim();
        self.languages.keys().find(|k| k.eq_ignore_ascii_case(tag)).map(String::as_str)
    }

    /// The first of `wanted` that is available, by its exact tag (any case) or else its primary
    /// subtag ("de-CH" gives "de"); else the default language.
    pub fn pick_language(&self, wanted: &[String]) -> &str {
        for tag in wanted {
            if let Some(k) = self.language_key(tag) {
                return k;
            }
            let primary = tag.trim().split('-').next().unwrap_or("");
            if let Some(k) = self.language_key(primary).filter(|_| !primary.is_empty()) {
                return k;
            }
        }
        &self.default_language
    }

    /// The subject and body in `language` (else the default language), with `{hot_topics}`
    /// replaced by one item per hot topic: its title on one line, its link indented below.
    pub fn render(&self, language: &str) -> RenderedReply {
        let key = self
            .language_key(language)
            .or_else(|| self.language_key(&self.default_language))
            .unwrap_or(&self.default_language)
            .to_string();
        // A ReplyFile from parse() always has its default language; the fallback only keeps a
        // hand-built one from panicking.
        let Some(t) = self.languages.get(&key) else {
            return RenderedReply { language: key, subject: String::new(), body: String::new() };
        };
        let list = self.hot_topics_text(&key);
        RenderedReply {
            subject: t.subject.clone(),
            body: t.body.replace(HOT_TOPICS_PLACEHOLDER, &list),
            language: key,
        }
    }

    /// The `{hot_topics}` expansion. No final line break: the placeholder usually stands on a
    /// line of its own, whose line break then ends the last item.
    fn hot_topics_text(&self, language: &str) -> String {
        let items: Vec<String> = self
            .hot_topics
            .iter()
            .filter_map(|id| self.topics.iter().find(|t| &t.id == id))
            .map(|t| {
                let title = t.translations.get(language).unwrap_or(&t.title);
                format!("- {}\n  {}", title.trim(), t.link.trim())
            })
            .collect();
        items.join("\n")
    }

    /// Ids of all the topics (hot or not, in file order) with a keyword in `text`.
    pub fn match_topics(&self, text: &str) -> Vec<String> {
        let mut padded = String::with_capacity(text.len() + 2);
        padded.push(' ');
        normalize_into(text, &mut padded);
        padded.push(' ');
        self.topics
            .iter()
            .zip(&self.matchers)
            .filter(|(_, keywords)| keywords.iter().any(|k| padded.contains(k.as_str())))
            .map(|(t, _)| t.id.clone())
            .collect()
    }
}

/// Lowercase, every run of non-alphanumeric characters becomes one space, trimmed. Keyword k
/// matches text t when " "+norm(k)+" " occurs in " "+norm(t)+" ".
pub fn normalize_for_matching(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    normalize_into(s, &mut out);
    out
}

/// `normalize_for_matching`, appended to `out` (one allocation per message in `match_topics`).
fn normalize_into(s: &str, out: &mut String) {
    let start = out.len();
    let mut gap = false;
    let mut push = |alnum: bool, out: &mut String| {
        if alnum && gap && out.len() > start {
            out.push(' ');
        }
        gap = !alnum;
        alnum
    };
    // ASCII, most of any message, is handled a byte at a time; the milter's profile showed the
    // general char path as its largest cost.
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b.is_ascii() {
            if push(b.is_ascii_alphanumeric(), out) {
                out.push(char::from(b.to_ascii_lowercase()));
            }
            i += 1;
        } else {
            let Some(c) = s[i..].chars().next() else { break };
            // Classify the original character: lowercasing can yield combining marks (İ -> i̇)
            // that would otherwise split a word.
            if push(c.is_alphanumeric(), out) {
                out.extend(c.to_lowercase());
            }
            i += c.len_utf8();
        }
    }
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
    path: &'a Path,
    text: &'a str,
    errors: Vec<Diagnostic>,
}

impl Validator<'_> {
    fn error_at(&mut self, span: Option<Range<usize>>, message: impl Into<String>) {
        self.errors.push(Diagnostic::at_span(self.path, self.text, span, message));
    }

    fn error<T>(&mut self, at: &Spanned<T>, message: impl Into<String>) {
        self.error_at(Some(at.span()), message);
    }

    /// Where `needle` is written inside the value at `at` (for a placeholder in a long body),
    /// else the value itself. Escapes can make the raw text differ; then the value's start will do.
    fn span_within<T>(&self, at: &Spanned<T>, needle: &str) -> Range<usize> {
        let span = at.span();
        match self.text.get(span.clone()).and_then(|raw| raw.find(needle)) {
            Some(p) => span.start + p..span.start + p + needle.len(),
            None => span,
        }
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
            path: self.path.to_path_buf(),
            default_language,
            hot_topics,
            topics,
            languages,
            revision: revision(self.text.as_bytes()),
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
            let l = lang.get_ref();
            let section = format!("[languages.{name}]");
            let subject = match &l.subject {
                None => {
                    self.error_at(
                        Some(lang.span()),
                        format!(
                            "{section} has no subject: add a line such as subject = \"Your message to the Tails Help Desk\""
                        ),
                    );
                    String::new()
                }
                Some(s) => {
                    let v = s.get_ref();
                    if v.trim().is_empty() {
                        self.error(
                            s,
                            format!("the subject of {section} is empty: write the Subject line of the reply"),
                        );
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
            };
            let body = match &l.body {
                None => {
                    self.error_at(
                        Some(lang.span()),
                        format!("{section} has no body: add the text of the reply, body = \"\"\"...\"\"\""),
                    );
                    String::new()
                }
                Some(b) => {
                    let v = b.get_ref();
                    if v.trim().is_empty() {
                        self.error(b, format!("the body of {section} is empty: write the text of the reply"));
                    }
                    let mut reported: Vec<&str> = Vec::new();
                    for p in placeholders(v) {
                        if p != HOT_TOPICS_PLACEHOLDER && !reported.contains(&p) {
                            reported.push(p);
                            let span = self.span_within(b, p);
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
            };
            out.insert(name.clone(), Translation { subject, body });
        }
        out
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
        let link = match &t.link {
            None => {
                self.error_at(
                    Some(table),
                    format!(
                        "the topic {name:?} has no link: add a line such as link = \"https://tails.net/doc/\""
                    ),
                );
                String::new()
            }
            Some(l) => {
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
        };
        let mut keywords = Vec::new();
        let mut matcher = Vec::new();
        for k in &t.keywords {
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
        let mut translations = BTreeMap::new();
        let mut entries: Vec<_> = t.translations.iter().collect();
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
        (Topic { id: name.clone(), title, translations, link, keywords }, matcher)
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
fn lf_line_ends(text: &str) -> String {
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

fn revision(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().take(6).map(|b| format!("{b:02x}")).collect()
}

/// A character that has no place in a one-line text (a Subject header, a list item).
fn is_line_breaking(c: char) -> bool {
    c.is_control() || c == '\u{2028}' || c == '\u{2029}'
}

/// Like `en`, `pt-BR`, `zh-Hans`: a 2-3 letter primary subtag, then subtags of 1-8 letters or
/// digits. Enough to catch typos, without the whole of BCP 47.
fn is_language_tag(s: &str) -> bool {
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
fn is_https_link(s: &str) -> bool {
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
fn placeholders(body: &str) -> Vec<&str> {
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

#[cfg(test)]
mod tests {
    use super::*;

    const PATH: &str = "/srv/reply/reply.toml";

    fn parse(text: &str) -> Result<ReplyFile, Diagnostics> {
        ReplyFile::parse(Path::new(PATH), text)
    }

    /// A valid file; tests break it in one place.
    const VALID: &str = r#"default_language = "en"
hot_topics = ["nvidia-black-screen", "wifi-realtek"]

[topics.wifi-realtek]
title = "Wi-Fi not working with some Realtek adapters"
link = "https://tails.net/doc/anonymous_internet/no-wifi/"
keywords = ["realtek", "wi-fi"]
[topics.wifi-realtek.translations]
de = "WLAN funktioniert nicht mit manchen Realtek-Adaptern"

[topics.nvidia-black-screen]
title = "Black screen after the Welcome Screen with some NVIDIA graphics cards"
link = "https://gitlab.tails.boum.org/tails/tails/-/issues/20123"
keywords = ["nvidia", "black screen"]

[topics.mac-start]
title = "Starting Tails on a Mac"
link = "https://tails.net/doc/first_steps/start/mac/"
keywords = ["macbook"]

[languages.en]
subject = "Your message to the Tails Help Desk"
body = """
Hello,

Known problems:
{hot_topics}

Bye
"""

[languages.de]
subject = "Ihre Nachricht an den Tails Help Desk"
body = """
Hallo,

{hot_topics}
"""

[languages.pt-BR]
subject = "Sua mensagem"
body = "Olá\n{hot_topics}\n"
"#;

    fn errors(text: &str) -> Vec<Diagnostic> {
        match parse(text) {
            Ok(_) => panic!("expected errors in:\n{text}"),
            Err(e) => e.0,
        }
    }

    /// The single error of `text`, which must contain `needle`.
    fn one_error(text: &str, needle: &str) -> Diagnostic {
        let e = errors(text);
        assert_eq!(e.len(), 1, "{}", Diagnostics(e.clone()));
        assert!(e[0].message.contains(needle), "{:?} lacks {needle:?}", e[0].message);
        e[0].clone()
    }

    /// `VALID` with `from` replaced by `to` (which must occur).
    fn valid_with(from: &str, to: &str) -> String {
        assert!(VALID.contains(from), "{from:?}");
        VALID.replacen(from, to, 1)
    }

    fn line_of(text: &str, needle: &str) -> usize {
        text[..text.find(needle).unwrap()].matches('\n').count() + 1
    }

    #[test]
    fn valid_file_parses_in_file_order() {
        let r = parse(VALID).unwrap();
        assert_eq!(r.path, Path::new(PATH));
        assert_eq!(r.default_language, "en");
        assert_eq!(r.hot_topics, vec!["nvidia-black-screen", "wifi-realtek"]);
        let ids: Vec<&str> = r.topics.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(ids, vec!["wifi-realtek", "nvidia-black-screen", "mac-start"]);
        assert_eq!(r.languages.keys().collect::<Vec<_>>(), vec!["de", "en", "pt-BR"]);
        assert_eq!(r.topics[0].keywords, vec!["realtek", "wi-fi"]);
        assert_eq!(r.topics[0].translations["de"], "WLAN funktioniert nicht mit manchen Realtek-Adaptern");
        assert_eq!(r.languages["en"].subject, "Your message to the Tails Help Desk");
        assert!(r.languages["en"].body.starts_with("Hello,\n"));
    }

    #[test]
    fn revision_is_stable_and_follows_the_bytes() {
        let a = parse(VALID).unwrap().revision;
        assert_eq!(a.len(), 12);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_eq!(a, parse(VALID).unwrap().revision);
        let b = parse(&format!("{VALID}\n# a comment\n")).unwrap().revision;
        assert_ne!(a, b);
        // The SHA-256 of the bytes, not of the parsed content.
        assert_eq!(revision(b"abc"), "ba7816bf8f01");
    }

    #[test]
    fn example_file_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("etc/reply.toml");
        let r = ReplyFile::load(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.default_language, "en");
        for lang in ["en", "de", "fr", "es"] {
            assert!(r.languages.contains_key(lang), "{lang}");
            let out = r.render(lang);
            assert_eq!(out.language, lang);
            assert!(!out.body.contains('{'), "{lang}: {}", out.body);
            assert!(out.body.contains("https://tails.net/doc/"), "{lang}");
            for id in &r.hot_topics {
                let t = r.topics.iter().find(|t| &t.id == id).unwrap();
                assert!(out.body.contains(&t.link), "{lang} lacks {id}");
            }
            // No trailing spaces, nothing a mail client would show as noise.
            assert!(out.body.lines().all(|l| l == l.trim_end()), "{lang}");
        }
        assert!((3..=4).contains(&r.hot_topics.len()));
        assert_eq!(r.match_topics("My NVIDIA card shows a black screen"), vec!["nvidia-black-screen"]);
    }

    // --- load ------------------------------------------------------------------------------

    #[test]
    fn load_reports_unreadable_files_at_the_first_line() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.toml");
        let e = ReplyFile::load(&missing).unwrap_err();
        assert_eq!((e.0[0].line, e.0[0].column), (1, 1));
        assert!(e.0[0].message.starts_with("cannot read the reply file"), "{e}");

        let e = ReplyFile::load(dir.path()).unwrap_err();
        assert!(e.0[0].message.contains("directory"), "{e}");
        assert_eq!(e.0[0].line, 1);

        // Neither blocks nor fills memory: a FIFO with no writer, an endless device, a huge file.
        let fifo = dir.path().join("fifo.toml");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let zero = dir.path().join("zero.toml");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        for p in [&fifo, &zero] {
            let e = ReplyFile::load(p).unwrap_err();
            assert!(e.0[0].message.contains("not a regular file"), "{e}");
        }
        let huge = dir.path().join("huge.toml");
        std::fs::write(&huge, "#".repeat(2 << 20)).unwrap();
        let e = ReplyFile::load(&huge).unwrap_err();
        assert!(e.0[0].message.contains("larger than 1024 KiB"), "{e}");

        let empty = dir.path().join("empty.toml");
        std::fs::write(&empty, "").unwrap();
        let e = ReplyFile::load(&empty).unwrap_err();
        assert_eq!((e.0[0].line, e.0[0].column), (1, 1));
        assert!(e.0[0].message.contains("the reply file is empty"), "{e}");

        let latin1 = dir.path().join("latin1.toml");
        std::fs::write(&latin1, b"default_language = \"en\"\n# caf\xe9\n").unwrap();
        let e = ReplyFile::load(&latin1).unwrap_err();
        assert_eq!((e.0[0].line, e.0[0].column), (2, 6));
        assert!(e.0[0].message.contains("UTF-8"), "{e}");

        let good = dir.path().join("reply.toml");
        std::fs::write(&good, VALID).unwrap();
        let r = ReplyFile::load(&good).unwrap();
        assert_eq!(r.path, good);
        assert_eq!(r.revision, parse(VALID).unwrap().revision);
    }

    // --- validation, one rule at a time ----------------------------------------------------

    #[test]
    fn empty_or_blank_file() {
        for text in ["", "  \n\t\n", "\n\n"] {
            let d = one_error(text, "the reply file is empty");
            assert_eq!((d.line, d.column), (1, 1));
        }
    }

    #[test]
    fn syntax_error_has_its_position() {
        let text = valid_with("[languages.de]", "[languages.de");
        let d = one_error(&text, "");
        assert_eq!(d.line, line_of(&text, "[languages.de"));
        assert!(d.to_string().starts_with(&format!("{PATH}:{}:", d.line)), "{d}");
    }

    #[test]
    fn unknown_fields_are_errors() {
        let text = valid_with("keywords = [\"nvidia\"", "titel = \"x\"\nkeywords = [\"nvidia\"");
        let d = one_error(&text, "unknown field `titel`");
        assert!(d.message.contains("check the spelling"), "{}", d.message);
        assert_eq!(d.line, line_of(&text, "titel"));
        one_error(&valid_with("default_language", "colour = 1\ndefault_language"), "unknown field `colour`");
        one_error(
            &valid_with("subject = \"Sua", "signature = \"x\"\nsubject = \"Sua"),
            "unknown field `signature`",
        );
    }

    #[test]
    fn a_topic_must_be_a_table() {
        one_error(&format!("{VALID}\n[topics]\nbroken = \"x\"\n"), "a topic section such as");
    }

    #[test]
    fn default_language_is_required_and_must_exist() {
        let d = one_error(&valid_with("default_language = \"en\"\n", ""), "default_language is missing");
        assert_eq!((d.line, d.column), (1, 1));
        let text = valid_with("default_language = \"en\"", "default_language = \"fr\"");
        let d = one_error(&text, "missing default language");
        assert!(d.message.contains("[languages.fr]"), "{}", d.message);
        assert_eq!((d.line, d.column), (1, 20));
        // Case does not matter; the key keeps the spelling of its section.
        let r = parse(&valid_with("default_language = \"en\"", "default_language = \"PT-br\"")).unwrap();
        assert_eq!(r.default_language, "pt-BR");
    }

    #[test]
    fn hot_topics_must_be_defined() {
        let text = valid_with("\"wifi-realtek\"]", "\"wifi-realtek\", \"usb-boot\"]");
        let d = one_error(&text, "topic referenced but not defined");
        assert!(d.message.contains("\"usb-boot\""), "{}", d.message);
        assert_eq!(d.line, 2);
        one_error(&valid_with("hot_topics = [", "hot_topics = [\"wifi-realtek\", "), "listed twice");
        one_error(
            &valid_with("hot_topics = [\"nvidia-black-screen\", \"wifi-realtek\"]\n", ""),
            "hot_topics is missing",
        );
        let r = parse(&valid_with("[\"nvidia-black-screen\", \"wifi-realtek\"]", "[]")).unwrap();
        assert!(r.hot_topics.is_empty());
        assert_eq!(r.render("en").body, "Hello,\n\nKnown problems:\n\n\nBye\n");
    }

    #[test]
    fn language_tags() {
        for good in ["en", "de", "pt-BR", "zh-Hans", "ast", "es-419", "sr-Latn-RS"] {
            assert!(is_language_tag(good), "{good}");
        }
        for bad in ["", "e", "english", "en_US", "en-", "-en", "1a", "en--US", "pt-BRAZILIANS", "é"] {
            assert!(!is_language_tag(bad), "{bad}");
        }
        let text = valid_with("[languages.pt-BR]", "[languages.pt_BR]");
        let d = one_error(&text, "\"pt_BR\" is not a language tag");
        assert_eq!((d.line, d.column), (line_of(&text, "[languages.pt_BR]"), 12));
        one_error(&format!("{VALID}\n[languages.DE]\nsubject = \"x\"\nbody = \"y\"\n"), "defined twice");
    }

    #[test]
    fn subject_and_body_are_required_and_not_blank() {
        one_error(&valid_with("subject = \"Sua mensagem\"\n", ""), "[languages.pt-BR] has no subject");
        one_error(&valid_with("body = \"Olá\\n{hot_topics}\\n\"\n", ""), "[languages.pt-BR] has no body");
        let text = valid_with("\"Sua mensagem\"", "\"  \"");
        let d = one_error(&text, "the subject of [languages.pt-BR] is empty");
        assert_eq!(d.line, line_of(&text, "subject = \"  \""));
        one_error(
            &valid_with("\"Olá\\n{hot_topics}\\n\"", "\"\"\"\n\n   \n\"\"\""),
            "the body of [languages.pt-BR] is empty",
        );
    }

    #[test]
    fn subject_is_one_line() {
        for bad in ["Sua\\nmensagem", "Sua\\r", "Sua\\tmensagem", "Sua\\u0000", "a\\u2028b", "a\\u0085"] {
            let text = valid_with("\"Sua mensagem\"", &format!("\"{bad}\""));
            one_error(&text, "line break or a control character");
        }
        let multi = valid_with("\"Sua mensagem\"", "\"\"\"Sua\nmensagem\"\"\"");
        one_error(&multi, "single line");
        // Leading and trailing blanks are trimmed, not errors.
        let r = parse(&valid_with("\"Sua mensagem\"", "\"  Sua mensagem \"")).unwrap();
        assert_eq!(r.languages["pt-BR"].subject, "Sua mensagem");
    }

    #[test]
    fn unknown_placeholders_are_named_and_located() {
        let text = valid_with("Known problems:", "Known problems for {name}:");
        let d = one_error(&text, "unknown placeholder {name}");
        assert_eq!((d.line, d.column), (line_of(&text, "{name}"), 20));
        // Each unknown placeholder once per body, all of them reported.
        let text = valid_with("Bye", "{hot topics} {Hot_Topics} {hot topics}");
        let e = errors(&text);
        assert_eq!(e.len(), 2, "{}", Diagnostics(e.clone()));
        assert!(e[0].message.contains("{hot topics}") && e[1].message.contains("{Hot_Topics}"));
        // Lone braces and braces across lines are text.
        assert!(parse(&valid_with("Bye", "Bye :-} {\nsee {\n}")).is_ok());
        assert_eq!(placeholders("a {b} {{hot_topics}} {x\n} }{"), vec!["{b}", "{hot_topics}"]);
    }

    #[test]
    fn topic_ids() {
        for good in ["a", "0", "wifi-realtek", "tails-7-0", "x-"] {
            assert!(is_topic_id(good), "{good}");
        }
        for bad in ["", "-a", "WiFi", "wifi_realtek", "wifi realtek", "ü", "a.b"] {
            assert!(!is_topic_id(bad), "{bad}");
        }
        let text = valid_with("[topics.mac-start]", "[topics.Mac_Start]");
        let d = one_error(&text, "the topic id \"Mac_Start\" is not allowed");
        assert_eq!((d.line, d.column), (line_of(&text, "[topics.Mac_Start]"), 9));
    }

    #[test]
    fn titles() {
        let text = valid_with("title = \"Starting Tails on a Mac\"", "title = \" \"");
        let d = one_error(&text, "the title of the topic \"mac-start\" is empty");
        assert_eq!(d.line, line_of(&text, "title = \" \""));
        one_error(&valid_with("title = \"Starting Tails on a Mac\"\n", ""), "has no title");
        one_error(&valid_with("\"Starting Tails on a Mac\"", "\"Starting\\nTails\""), "single line");
        one_error(
            &valid_with("de = \"WLAN funktioniert", "de = \"\" #"),
            "the de title of the topic \"wifi-realtek\" is empty",
        );
    }

    #[test]
    fn links() {
        for good in [
            "https://tails.net/doc/",
            "https://tails.net",
            "HTTPS://tails.net/",
            "https://gitlab.tails.boum.org/tails/tails/-/issues/20123#note_1",
            "https://localhost:8443/x?y=z",
        ] {
            assert!(is_https_link(good), "{good}");
        }
        for bad in [
            "",
            "tails.net/doc/",
            "http://tails.net/",
            "https://",
            "https:///doc",
            "https://tails.net/a doc",
            "https://tails.net/\tdoc",
            "https://user@tails.net/",
            "https://.net/",
            "https://tails.net:/",
            "ftp://tails.net/",
            "https:tails.net",
        ] {
            assert!(!is_https_link(bad), "{bad}");
        }
        let text = valid_with(
            "\"https://tails.net/doc/first_steps/start/mac/\"",
            "\"tails.net/doc/first_steps/start/mac/\"",
        );
        let d = one_error(&text, "the link of the topic \"mac-start\" is not a web address");
        assert_eq!((d.line, d.column), (line_of(&text, "link = \"tails.net"), 8));
        one_error(
            &valid_with("link = \"https://tails.net/doc/first_steps/start/mac/\"\n", ""),
            "has no link",
        );
    }

    #[test]
    fn keywords_that_can_never_match() {
        for bad in ["!!!", "", "  ", "-", "…"] {
            let text = valid_with("[\"macbook\"]", &format!("[\"macbook\", {bad:?}]"));
            let d = one_error(&text, "can never match");
            assert_eq!((d.line, d.column), (line_of(&text, "keywords = [\"macbook\","), 24));
        }
        assert!(parse(&valid_with("[\"macbook\"]", "[\"Mac-Book!\", \"2.4 GHz\"]")).is_ok());
    }

    #[test]
    fn translated_titles_need_their_language() {
        let text = valid_with("de = \"WLAN", "fr = \"Wi-Fi\"\nde = \"WLAN");
        let d = one_error(&text, "has a title in \"fr\" but there is no [languages.fr] section");
        assert_eq!((d.line, d.column), (line_of(&text, "fr = "), 1));
        // Matched without regard to case, stored under the language's own spelling.
        let r = parse(&valid_with("de = \"WLAN", "PT-br = \"Wi-Fi\"\nde = \"WLAN")).unwrap();
        assert_eq!(r.topics[0].translations["pt-BR"], "Wi-Fi");
    }

    #[test]
    fn all_problems_are_reported_at_once_in_file_order() {
        let text = r#"default_language = "xx"
hot_topics = ["gone", "ok"]
[topics.ok]
title = ""
link = "http://tails.net"
keywords = ["?"]
[topics.ok.translations]
it = "x"
[languages.en]
subject = "a\nb"
body = "{oops}"
[languages.english]
"#;
        let e = errors(text);
        let lines: Vec<usize> = e.iter().map(|d| d.line).collect();
        assert_eq!(lines, vec![1, 2, 4, 5, 6, 8, 10, 11, 12, 12, 12], "{}", Diagnostics(e.clone()));
        let printed = Diagnostics(e).to_string();
        assert!(printed.starts_with(&format!("{PATH}:1:20: missing default language")), "{printed}");
        assert_eq!(printed.lines().count(), 11);
    }

    // --- rendering ---------------------------------------------------------------------------

    #[test]
    fn render_expands_hot_topics_in_order_with_translated_titles() {
        let r = parse(VALID).unwrap();
        let en = r.render("en");
        assert_eq!(en.language, "en");
        assert_eq!(en.subject, "Your message to the Tails Help Desk");
        assert_eq!(
            en.body,
            "Hello,\n\nKnown problems:\n\
             - Black screen after the Welcome Screen with some NVIDIA graphics cards\n  \
             https://gitlab.tails.boum.org/tails/tails/-/issues/20123\n\
             - Wi-Fi not working with some Realtek adapters\n  \
             https://tails.net/doc/anonymous_internet/no-wifi/\n\nBye\n"
        );
        let de = r.render("de");
        assert_eq!(de.subject, "Ihre Nachricht an den Tails Help Desk");
        // The translated title where there is one, the default title elsewhere.
        assert!(de.body.contains("- WLAN funktioniert nicht mit manchen Realtek-Adaptern\n"), "{}", de.body);
        assert!(de.body.contains("- Black screen after the Welcome Screen"), "{}", de.body);
        assert!(!de.body.contains("Wi-Fi not working"), "{}", de.body);
        // Topics that are not hot are not listed.
        assert!(!de.body.contains("Mac"));
    }

    #[test]
    fn render_falls_back_to_the_default_language() {
        let r = parse(VALID).unwrap();
        assert_eq!(r.render("ja").language, "en");
        assert_eq!(r.render("").language, "en");
        assert_eq!(r.render("ja").body, r.render("en").body);
        assert_eq!(r.render("DE").language, "de");
        assert_eq!(r.render("pt-br").language, "pt-BR");
        let default_de =
            parse(&valid_with("default_language = \"en\"", "default_language = \"de\"")).unwrap();
        assert_eq!(default_de.render("ja").language, "de");
    }

    #[test]
    fn render_expands_every_occurrence_and_normalises_line_ends() {
        let text = valid_with(
            "body = \"Olá\\n{hot_topics}\\n\"",
            "body = \"Olá\\r\\n{hot_topics}\\r\\n{hot_topics}\"",
        );
        let r = parse(&text).unwrap();
        let body = r.render("pt-BR").body;
        assert!(!body.contains('\r') && !body.contains('{'), "{body:?}");
        assert_eq!(body.matches("20123").count(), 2);
    }

    #[test]
    fn every_cr_before_a_line_end_goes() {
        // Found by the round-trip invariant (fuzz/corpus/reply_file/crlf-and-braces.toml): "\r\r\n"
        // left a CRLF in the body, and the file written back did not parse to the same body.
        let text = valid_with("body = \"Olá\\n{hot_topics}\\n\"", "body = \"a\\r\\r\\nb\\rc\\r\\n\"");
        assert_eq!(parse(&text).unwrap().languages["pt-BR"].body, "a\nb\rc\n");
        assert_eq!(lf_line_ends("x\r\r\n\r\ny\r"), "x\n\ny\r");
    }

    // --- pick_language -----------------------------------------------------------------------

    #[test]
    fn pick_language_prefers_the_first_available() {
        let r = parse(VALID).unwrap();
        let pick = |tags: &[&str]| {
            r.pick_language(&tags.iter().map(|s| s.to_string()).collect::<Vec<_>>()).to_string()
        };
        assert_eq!(pick(&[]), "en");
        assert_eq!(pick(&["de"]), "de");
        assert_eq!(pick(&["DE"]), "de");
        assert_eq!(pick(&["de-CH"]), "de");
        assert_eq!(pick(&["ja", "de-AT", "en"]), "de");
        assert_eq!(pick(&["fr", "ja"]), "en");
        assert_eq!(pick(&["pt-br"]), "pt-BR");
        // "pt" alone is not "pt-BR": only the wanted tag is shortened, not the available ones.
        assert_eq!(pick(&["pt"]), "en");
        assert_eq!(pick(&["pt-PT", "de"]), "de");
        assert_eq!(pick(&[" de ", ""]), "de");
        assert_eq!(pick(&["", "-", "-de", "*"]), "en");
    }

    // --- match_topics ------------------------------------------------------------------------

    #[test]
    fn normalisation() {
        assert_eq!(
            normalize_for_matching("  Black-Screen!!  after\r\n\tNVIDIA, "),
            "black screen after nvidia"
        );
        assert_eq!(normalize_for_matching("Wi‑Fi (Realtek RTL8821CE)"), "wi fi realtek rtl8821ce");
        assert_eq!(normalize_for_matching("Über DAS Gerät"), "über das gerät");
        assert_eq!(normalize_for_matching("!!!"), "");
        assert_eq!(normalize_for_matching(""), "");
    }

    #[test]
    fn match_topics_respects_word_boundaries() {
        let r = parse(VALID).unwrap();
        assert_eq!(r.match_topics("My NVIDIA, card"), vec!["nvidia-black-screen"]);
        assert_eq!(r.match_topics("nvidia"), vec!["nvidia-black-screen"]);
        assert!(r.match_topics("realteknology and nvidiacard").is_empty());
        assert!(r.match_topics("myrealtek").is_empty());
        assert!(r.match_topics("").is_empty());
        // Multi-word keywords across line breaks, punctuation and case.
        assert_eq!(
            r.match_topics("the screen is BLACK\r\n  --\nSCREEN after boot"),
            vec!["nvidia-black-screen"]
        );
        assert!(r.match_topics("blackscreen, black screens, black-\n\nscreened").is_empty());
        assert_eq!(r.match_topics("it shows a Black\n> Screen."), vec!["nvidia-black-screen"]);
        // "wi-fi" normalises to "wi fi", and so do "Wi Fi" and "WI-FI".
        assert_eq!(r.match_topics("no WI-FI"), vec!["wifi-realtek"]);
        assert_eq!(r.match_topics("no Wi Fi"), vec!["wifi-realtek"]);
        assert!(r.match_topics("no wifi").is_empty());
    }

    #[test]
    fn match_topics_returns_every_topic_in_file_order() {
        let r = parse(VALID).unwrap();
        assert_eq!(
            r.match_topics("MacBook with nvidia and a realtek adapter"),
            vec!["wifi-realtek", "nvidia-black-screen", "mac-start"]
        );
    }

    // --- robustness --------------------------------------------------------------------------

    #[test]
    fn odd_inputs_do_not_panic() {
        let huge_line = "x".repeat(200_000);
        let huge_string = format!("default_language = \"{}\"\n", "é".repeat(100_000));
        let many_topics: String = (0..2000)
            .map(|i| {
                format!("[topics.t{i}]\ntitle = \"T\"\nlink = \"https://x.org/{i}\"\nkeywords = [\"k{i}\"]\n")
            })
            .collect();
        let deep = format!("x = {}{}", "[".repeat(5000), "]".repeat(5000));
        let texts = [
            String::new(),
            "\u{feff}".into(),
            "\u{feff}default_language = \"en\"".into(),
            "\0\u{1}\u{2}\u{7f}".into(),
            "\u{fffd}\u{fffd}=\u{fffd}".into(),
            "[[[[".into(),
            "default_language = 3".into(),
            "hot_topics = \"x\"".into(),
            "topics = 1".into(),
            "[languages]\nen = 1".into(),
            "[languages.en]\nbody = \"{\"".into(),
            "[languages.en]\nbody = \"}{}{{}}\"".into(),
            "[topics.\"\"]\nlink = \"https://\u{0}\"".into(),
            "[topics.a]\ntranslations = 5".into(),
            "[topics.a.translations]\n\"\" = \"\"".into(),
            huge_line,
            huge_string,
            many_topics,
            deep,
            format!("{VALID}\n[languages.\"\u{202e}\"]\nsubject = \"\u{202e}\"\nbody = \"\u{0}\""),
        ];
        for t in &texts {
            // Either outcome is fine; every error must have a position inside the text.
            if let Err(e) = parse(t) {
                assert!(!e.0.is_empty());
                for d in &e.0 {
                    assert!(d.line >= 1 && d.column >= 1 && d.line <= t.lines().count().max(1) + 1, "{d}");
                }
            }
        }
        let r = parse(VALID).unwrap();
        let big = format!("{} nvidia {}", "\u{0}é!?".repeat(20_000), "x ".repeat(20_000));
        assert_eq!(r.match_topics(&big), vec!["nvidia-black-screen"]);
        let _ = r.render(&"z".repeat(100_000));
        let _ = r.pick_language(&["\u{0}".into(), "-".repeat(1000), "é-é".into()]);
    }

    #[test]
    fn a_hand_built_reply_file_does_not_panic() {
        let mut r = parse(VALID).unwrap();
        r.languages.clear();
        r.topics.clear();
        let out = r.render("de");
        assert_eq!(out.body, "");
        assert!(r.match_topics("nvidia").is_empty());
    }
}

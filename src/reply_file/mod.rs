//! The reply file (TOML): the text of the standard reply and its hot topics.
//!
//! The Help Desk edits it through merge requests and the daemon reloads it live, so every
//! problem is reported at once, with its line and column and in plain words, and an invalid file
//! never replaces a valid one. `helpdesk-milter check --reply FILE` runs the same validation.
//!
//! - this module: the validated file, and what the daemon does with it (render a reply, pick a
//!   language, recognise topics);
//! - [`validate`]: from the text to the validated file, every problem located;
//! - [`matching`]: how keywords are compared with a message.

mod matching;
mod validate;

pub use matching::normalize_for_matching;
pub use validate::is_topic_id;

use crate::config::Config;
use crate::diagnostic::{Diagnostic, Diagnostics};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

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
        validate::parse(path, text)
    }

    /// The reply file a configuration names: required when auto-replies are on; read if present
    /// otherwise (its topics still label requests).
    pub fn load_configured(config: &Config) -> Result<Option<ReplyFile>, Diagnostics> {
        let path = &config.autoreply.reply_file;
        if !config.autoreply.enabled && !path.exists() {
            return Ok(None);
        }
        ReplyFile::load(path).map(Some)
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
        matching::normalize_into(text, &mut padded);
        padded.push(' ');
        self.topics
            .iter()
            .zip(&self.matchers)
            .filter(|(_, keywords)| keywords.iter().any(|k| padded.contains(k.as_str())))
            .map(|(t, _)| t.id.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests;

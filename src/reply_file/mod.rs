//! The reply file (TOML): the text of the standard reply and its hot topics.
//!
//! The Help Desk edits it through merge requests and the daemon reloads it live, so every
//! problem is reported at once, with its line and column and in plain words, and an invalid file
//! never replaces a valid one. `helpdesk-milter check --reply FILE` runs the same validation.
//!
//! - this module: the validated file, and what the daemon does with it (pick a language,
//!   recognise topics);
//! - [`render`]: the reply in one language, leading with the topics of the request;
//! - [`raw`] and [`validate`]: from the text to the validated file, every problem located;
//! - [`matching`]: how keywords are compared with a message.

mod matching;
mod raw;
mod render;
mod validate;

pub use matching::normalize_for_matching;
pub use validate::{MAX_TOPIC_ID_CHARS, is_topic_id};

use crate::config::Config;
use crate::diagnostic::{Diagnostic, Diagnostics};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Placeholder of a body: the hot topics, less those the reply leads with.
pub const HOT_TOPICS_PLACEHOLDER: &str = "{hot_topics}";

/// Placeholder of a body: the topics the reply leads with (those matched in the request); its
/// paragraph is left out when there are none.
pub const MATCHED_TOPICS_PLACEHOLDER: &str = "{matched_topics}";

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
    /// For each of `topics`, its keywords of every language normalised and padded
    /// (" black screen "), computed once here so that matching a message costs one
    /// normalisation of its text.
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
    /// Words or phrases that recognise the topic in a plaintext request (see
    /// `normalize_for_matching`), written in the default language.
    pub keywords: Vec<String>,
    /// A short text shown under the title and link when the reply leads with the topic (what
    /// the Help Desk needs from the writer, say), in the default language: lines without
    /// control characters, no blank line first or last.
    pub text: Option<String>,
    /// The text in other languages, keyed like `ReplyFile::languages`.
    pub text_translations: BTreeMap<String, String>,
    /// Keywords written for other languages, keyed like `ReplyFile::languages`, never empty. They
    /// match any message, as `keywords` do: the language of a request is not known at the end of
    /// message (detecting it costs too much there), and is often mixed.
    pub language_keywords: BTreeMap<String, Vec<String>>,
}

/// The reply in one language.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Translation {
    /// One line, without line breaks or control characters.
    pub subject: String,
    /// Plain text with `\n` line ends; may contain `{matched_topics}` and `{hot_topics}`.
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

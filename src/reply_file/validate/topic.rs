//! The topics of a reply file: id, title, link, text, keywords, and their translations.

use super::{Validator, is_https_link, is_line_breaking, is_topic_id, lf_line_ends};
use crate::reply_file::matching::normalize_for_matching;
use crate::reply_file::raw::{RawTopic, RawTopicSection, RawTopicTranslation};
use crate::reply_file::{Topic, Translation};
use std::collections::BTreeMap;
use std::ops::Range;
use toml::Spanned;

/// The longest topic id. An id names a mail folder (the Sieve script files requests into
/// `Support/ID`, which Maildir stores as one directory name such as `.Support.ID`, at most 255
/// bytes), and it is written into `X-HelpDesk-Topic`, into the statistics and into `stats`
/// tables: 64 is far more than a name needs, and leaves room for the folders above it.
pub const MAX_TOPIC_ID_CHARS: usize = 64;

type Translations = BTreeMap<Spanned<String>, Spanned<RawTopicTranslation>>;

/// What the translations of one topic give, keyed by the spelling of `[languages.xx]`.
#[derive(Default)]
struct Translated {
    titles: BTreeMap<String, String>,
    texts: BTreeMap<String, String>,
    keywords: BTreeMap<String, Vec<String>>,
    /// Their keywords, normalised and padded for matching.
    matcher: Vec<String>,
}

impl Validator<'_> {
    /// Every topic in file order, with its keywords of all languages ready for matching.
    pub(super) fn topics(
        &mut self,
        raw: &BTreeMap<Spanned<String>, Spanned<RawTopic>>,
        languages: &BTreeMap<String, Translation>,
    ) -> (Vec<Topic>, Vec<Vec<String>>) {
        let mut entries: Vec<_> = raw.iter().collect();
        // The map is sorted by id; the reply and match_topics follow the file's order.
        entries.sort_by_key(|(id, _)| id.span().start);
        entries.into_iter().map(|(id, t)| self.topic(id, t.get_ref(), t.span(), languages)).unzip()
    }

    fn topic(
        &mut self,
        id: &Spanned<String>,
        t: &RawTopic,
        table: Range<usize>,
        languages: &BTreeMap<String, Translation>,
    ) -> (Topic, Vec<String>) {
        let name = id.get_ref();
        self.topic_id(id);
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
        let text = t.text.as_ref().map(|s| self.text(s, &format!("the text of the topic {name:?}")));
        let (keywords, mut matcher) = self.keywords(name, "", &t.keywords);
        let translated = self.translations(name, &t.translations, languages);
        matcher.extend(translated.matcher);
        // One matcher per keyword whatever its languages, in an order that does not depend on
        // the order of the sections (a file and its rewrite compare equal).
        matcher.sort();
        matcher.dedup();
        let topic = Topic {
            id: name.clone(),
            title,
            translations: translated.titles,
            link,
            keywords,
            text,
            text_translations: translated.texts,
            language_keywords: translated.keywords,
        };
        (topic, matcher)
    }

    fn topic_id(&mut self, id: &Spanned<String>) {
        let name = id.get_ref();
        if !is_topic_id(name) {
            self.error(
                id,
                format!(
                    "the topic id {name:?} is not allowed: use only lowercase letters a-z, digits and '-', starting with a letter or a digit, such as \"wifi-realtek\""
                ),
            );
        } else if name.len() > MAX_TOPIC_ID_CHARS {
            self.error(
                id,
                format!(
                    "the topic id {name:?} is {} characters long: keep it to {MAX_TOPIC_ID_CHARS} at most, since it names a mail folder and mail servers refuse long folder names",
                    name.len()
                ),
            );
        }
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

    /// Keywords (of the default language when `lang` is empty) as written, and normalised and
    /// padded for matching.
    fn keywords(&mut self, name: &str, lang: &str, list: &[Spanned<String>]) -> (Vec<String>, Vec<String>) {
        let which = if lang.is_empty() { String::new() } else { format!("{lang} ") };
        let mut keywords = Vec::new();
        let mut matcher = Vec::new();
        for k in list {
            let norm = normalize_for_matching(k.get_ref());
            if norm.is_empty() {
                self.error(
                    k,
                    format!(
                        "the {which}keyword {:?} of the topic {name:?} can never match: a keyword needs at least one letter or digit",
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

    /// A topic's translations, each in a language of the file, each language once.
    fn translations(
        &mut self,
        name: &str,
        raw: &Translations,
        languages: &BTreeMap<String, Translation>,
    ) -> Translated {
        let mut out = Translated::default();
        let mut seen: Vec<String> = Vec::new();
        let mut entries: Vec<_> = raw.iter().collect();
        entries.sort_by_key(|(lang, _)| lang.span().start);
        for (lang, value) in entries {
            let tag = lang.get_ref();
            let Some(key) = languages.keys().find(|k| k.eq_ignore_ascii_case(tag)) else {
                self.error(
                    lang,
                    format!(
                        "the topic {name:?} has {} in {tag:?} but there is no [languages.{tag}] section: add that language, or remove this translation",
                        what_is_given(value.get_ref())
                    ),
                );
                continue;
            };
            if seen.contains(key) {
                self.error(
                    lang,
                    format!(
                        "the topic {name:?} has two translations in {tag:?} (upper and lower case do not count): keep only one"
                    ),
                );
                continue;
            }
            seen.push(key.clone());
            self.translation(name, tag, key, value, &mut out);
        }
        out
    }

    /// One translation of a topic, into `out` under the language key `key`.
    fn translation(
        &mut self,
        name: &str,
        tag: &str,
        key: &str,
        value: &Spanned<RawTopicTranslation>,
        out: &mut Translated,
    ) {
        let section = match value.get_ref() {
            RawTopicTranslation::Title(title) => {
                let s = Spanned::new(value.span(), title.clone());
                let title = self.title(&s, &format!("the {tag} title of the topic {name:?}"));
                out.titles.insert(key.to_string(), title);
                return;
            }
            RawTopicTranslation::Section(section) => section,
        };
        let RawTopicSection { title, text, keywords } = section;
        if title.is_none() && text.is_none() && keywords.is_empty() {
            self.error(
                value,
                format!(
                    "the {tag} translation of the topic {name:?} is empty: write its title, text or keywords, or remove it"
                ),
            );
        }
        if let Some(s) = title {
            let title = self.title(s, &format!("the {tag} title of the topic {name:?}"));
            out.titles.insert(key.to_string(), title);
        }
        if let Some(s) = text {
            let text = self.text(s, &format!("the {tag} text of the topic {name:?}"));
            out.texts.insert(key.to_string(), text);
        }
        let (keywords, matcher) = self.keywords(name, tag, keywords);
        if !keywords.is_empty() {
            out.keywords.insert(key.to_string(), keywords);
        }
        out.matcher.extend(matcher);
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

    /// A topic's text (default or translated): not blank, lines of text without control
    /// characters; kept with its line breaks, without blank lines around it or spaces at line
    /// ends (they would only show as odd gaps in the reply).
    fn text(&mut self, s: &Spanned<String>, what: &str) -> String {
        let v = lf_line_ends(s.get_ref());
        if v.trim().is_empty() {
            self.error(
                s,
                format!("{what} is empty: write the text shown under the title, or remove this line"),
            );
        } else if v.chars().any(|c| c != '\n' && is_line_breaking(c)) {
            self.error(
                s,
                format!(
                    "{what} contains a control character (a tab, for example): use only spaces and line breaks"
                ),
            );
        }
        let lines: Vec<&str> = v.lines().map(str::trim_end).collect();
        lines.join("\n").trim_matches('\n').to_string()
    }
}

/// "a title", "a text and keywords", ...: what a translation holds, for an error about it.
fn what_is_given(t: &RawTopicTranslation) -> String {
    let RawTopicTranslation::Section(s) = t else { return "a title".into() };
    let parts: Vec<&str> =
        [(s.title.is_some(), "a title"), (s.text.is_some(), "a text"), (!s.keywords.is_empty(), "keywords")]
            .into_iter()
            .filter_map(|(given, what)| given.then_some(what))
            .collect();
    match parts.as_slice() {
        [] => "a translation".into(),
        [one] => (*one).into(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

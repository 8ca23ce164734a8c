//! The reply in one language: the body with its placeholders expanded, leading with the topics
//! of the request.
//!
//! A body is read as paragraphs, runs of lines that are not blank. The paragraph that holds
//! `{matched_topics}` is left out, with one blank line, when the reply leads with no topic; so is
//! the paragraph of `{hot_topics}` when every hot topic is already shown at the top. A body
//! without `{matched_topics}` renders as it always did: its hot list stays whole.

use super::{HOT_TOPICS_PLACEHOLDER, MATCHED_TOPICS_PLACEHOLDER, RenderedReply, ReplyFile, Topic};
use std::ops::Range;

impl ReplyFile {
    /// The subject and body in `language` (else the default language), leading with no topic:
    /// `{hot_topics}` lists every hot topic.
    pub fn render(&self, language: &str) -> RenderedReply {
        self.render_leading(language, &[])
    }

    /// The subject and body in `language` (else the default language), leading with the topics
    /// `leading` (ids, in this order; unknown ones and repeats skipped): `{matched_topics}`
    /// becomes one item per topic (title, link below it, then its text), and `{hot_topics}` one
    /// item per hot topic not shown there (title, link below it). Titles and texts are those of
    /// the reply's language, else of the default language.
    pub fn render_leading(&self, language: &str, leading: &[String]) -> RenderedReply {
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
        // Topics are shown at the top only where the body has a place for them.
        let shown =
            if t.body.contains(MATCHED_TOPICS_PLACEHOLDER) { self.topics_by_id(leading) } else { vec![] };
        let is_shown = |id: &String| shown.iter().any(|s| &s.id == id);
        let hot: Vec<&Topic> = self
            .hot_topics
            .iter()
            .filter(|id| !is_shown(id))
            .filter_map(|id| self.topics.iter().find(|t| &t.id == id))
            .collect();
        let matched_text: Vec<String> = shown.iter().map(|t| matched_item(t, &key)).collect();
        let hot_text: Vec<String> = hot.iter().map(|t| hot_item(t, &key)).collect();
        let mut left_out = Vec::new();
        if shown.is_empty() {
            left_out.push(MATCHED_TOPICS_PLACEHOLDER);
        }
        if hot.is_empty() && self.hot_topics.iter().any(is_shown) {
            left_out.push(HOT_TOPICS_PLACEHOLDER);
        }
        let values = [
            (MATCHED_TOPICS_PLACEHOLDER, matched_text.join("\n\n")),
            // No final line break: the placeholder usually stands on a line of its own, whose
            // line break then ends the last item.
            (HOT_TOPICS_PLACEHOLDER, hot_text.join("\n")),
        ];
        RenderedReply { subject: t.subject.clone(), body: expand(&t.body, &left_out, &values), language: key }
    }

    /// The topics of `ids` that the file has, in that order, each once.
    fn topics_by_id(&self, ids: &[String]) -> Vec<&Topic> {
        let mut out: Vec<&Topic> = Vec::new();
        for id in ids {
            if let Some(t) = self.topics.iter().find(|t| &t.id == id)
                && !out.iter().any(|o| o.id == t.id)
            {
                out.push(t);
            }
        }
        out
    }
}

/// A hot topic in the list: its title on one line, its link indented below.
fn hot_item(t: &Topic, language: &str) -> String {
    let title = t.translations.get(language).unwrap_or(&t.title);
    format!("- {}\n  {}", title.trim(), t.link.trim())
}

/// A topic the reply leads with: as in the hot list, then its text, indented like the link.
fn matched_item(t: &Topic, language: &str) -> String {
    let mut item = hot_item(t, language);
    if let Some(text) = t.text_translations.get(language).or(t.text.as_ref()) {
        for line in text.lines() {
            item.push('\n');
            if !line.trim().is_empty() {
                item.push_str("  ");
                item.push_str(line);
            }
        }
    }
    item
}

/// `body` without the paragraphs of the placeholders `left_out`, and with each placeholder of
/// `values` replaced by its value, in one pass (a value is never expanded again).
fn expand(body: &str, left_out: &[&str], values: &[(&str, String)]) -> String {
    let lines: Vec<&str> = body.split_inclusive('\n').collect();
    let mut keep = vec![true; lines.len()];
    for placeholder in left_out {
        for p in paragraphs(&lines, placeholder) {
            keep[p.clone()].fill(false);
            // One blank line goes with it, so that no gap is left: the one after it, or at the
            // end of the body the one before.
            if p.end < lines.len() {
                keep[p.end] = false;
            } else if p.start > 0 {
                keep[p.start - 1] = false;
            }
        }
    }
    let mut out = String::with_capacity(body.len() + values.iter().map(|(_, v)| v.len()).sum::<usize>());
    for (line, _) in lines.iter().zip(&keep).filter(|(_, k)| **k) {
        substitute(line, values, &mut out);
    }
    out
}

/// `text` with every placeholder of `values` replaced, appended to `out`.
fn substitute(text: &str, values: &[(&str, String)], out: &mut String) {
    let mut rest = text;
    loop {
        let next = values
            .iter()
            .filter_map(|(p, v)| rest.find(p).map(|at| (at, p.len(), v)))
            .min_by_key(|(at, ..)| *at);
        let Some((at, len, value)) = next else { break };
        out.push_str(&rest[..at]);
        out.push_str(value);
        rest = &rest[at + len..];
    }
    out.push_str(rest);
}

fn is_blank(line: &str) -> bool {
    line.trim().is_empty()
}

/// The line ranges of the paragraphs of `lines` that hold `needle` (which has no line break).
fn paragraphs(lines: &[&str], needle: &str) -> Vec<Range<usize>> {
    let mut found = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if is_blank(lines[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < lines.len() && !is_blank(lines[i]) {
            i += 1;
        }
        if lines[start..i].iter().any(|l| l.contains(needle)) {
            found.push(start..i);
        }
    }
    found
}

/// The text of each paragraph of `body` that holds `needle`.
pub(super) fn paragraphs_with(body: &str, needle: &str) -> Vec<String> {
    let lines: Vec<&str> = body.split_inclusive('\n').collect();
    paragraphs(&lines, needle).into_iter().map(|p| lines[p].concat()).collect()
}

/// `body` as a reply that matched no topic shows it.
pub(super) fn body_without_matched_topics(body: &str) -> String {
    expand(body, &[MATCHED_TOPICS_PLACEHOLDER], &[])
}

//! mail-parser, set up once for the classifier, and the ways the rules read header fields.

use mail_parser::{HeaderName, HeaderValue, Message, MessageParser};
use std::sync::LazyLock;

/// Parses the kept part of a message. mail-parser never panics and returns None only when
/// there is nothing to parse; the empty message stands in then.
pub fn parse(raw: &[u8]) -> Option<Message<'_>> {
    PARSER.parse(raw)
}

/// mail-parser's default field parsers, except that Received fields are kept raw: nothing reads
/// them, and their tokenizer was the parser's largest cost in the milter's profile. Built once.
static PARSER: LazyLock<MessageParser> = LazyLock::new(|| {
    [
        HeaderName::ListArchive,
        HeaderName::ListHelp,
        HeaderName::ListId,
        HeaderName::ListOwner,
        HeaderName::ListPost,
        HeaderName::ListSubscribe,
        HeaderName::ListUnsubscribe,
    ]
    .into_iter()
    .fold(MessageParser::new(), |p, h| p.header_address(h))
    .with_mime_headers()
    .with_date_headers()
    .with_address_headers()
    .with_message_ids()
    .header_id(HeaderName::ReturnPath)
    .header_text(HeaderName::Subject)
    .header_text(HeaderName::Comments)
    .header_comma_separated(HeaderName::Keywords)
    .header_comma_separated(HeaderName::ContentLanguage)
    .header_raw(HeaderName::Received)
});

/// Removes CRLF folds and trims, for header values that mail-parser leaves raw.
pub(super) fn unfold(v: &str) -> String {
    v.replace("\r\n", "").replace('\n', "").trim().to_string()
}

/// Text of every instance of a header, unfolded.
pub(super) fn texts(msg: &Message<'_>, name: &str) -> Vec<String> {
    msg.headers()
        .iter()
        .filter(|h| h.name.as_str().eq_ignore_ascii_case(name))
        .map(|h| match &h.value {
            HeaderValue::Text(t) => unfold(t),
            HeaderValue::TextList(l) => unfold(&l.join(",")),
            HeaderValue::Empty => String::new(),
            // A header mail-parser gave a structured value: the rules read its raw text.
            _ => msg
                .raw_message()
                .get(h.offset_start as usize..h.offset_end as usize)
                .map_or_else(String::new, |raw| unfold(&String::from_utf8_lossy(raw))),
        })
        .collect()
}

pub(super) fn present(msg: &Message<'_>, name: &str) -> bool {
    msg.headers().iter().any(|h| h.name.as_str().eq_ignore_ascii_case(name))
}

/// The keyword of an Auto-Submitted value (RFC 3834 §5): the first token, comments removed,
/// lowercased. Only comments, white space or `;` parameters may follow it; anything else makes
/// the value unparseable, returned as an empty keyword (which counts as automated).
pub fn auto_submitted_keyword(value: &str) -> String {
    let mut keyword = String::new();
    let mut depth = 0usize;
    let mut ended = false;
    for c in value.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            _ if depth > 0 => {}
            ';' => break,
            c if c.is_whitespace() => ended |= !keyword.is_empty(),
            _ if ended => return String::new(),
            c => keyword.push(c),
        }
    }
    keyword.to_ascii_lowercase()
}

//! One message as the milter receives it: header fields and the first bytes of the body, kept
//! within fixed limits so that memory per message is bounded whatever the message's size.
//!
//! The milter callbacks and the `classify` command both fill a [`MessageData`], so that both
//! run the same end-of-message code on the same data.

use std::collections::HashMap;
use std::io::{self, BufRead};

/// Distinct names of prefixed headers remembered for deletion, in bytes, as a multiple of the
/// header limit (4 MiB by default). Past this the message is hostile (hundreds of thousands of
/// forged header names) and is handled as an error.
const PREFIXED_NAME_BYTES_PER_HEADER_BYTE: usize = 16;

/// Header fields and body prefix of one message.
#[derive(Debug, Clone)]
pub struct MessageData {
    prefix_lower: String,
    max_header_bytes: usize,
    max_body_bytes: usize,
    /// (name, value) as the MTA sent them: value without the space after the colon, folds as `\n`.
    headers: Vec<(Vec<u8>, Vec<u8>)>,
    header_bytes: usize,
    headers_truncated: bool,
    /// Headers that carry our prefix: first-seen name and number of instances, per lowercased
    /// name (the MTA counts instances case-insensitively).
    prefixed: Vec<(Vec<u8>, usize)>,
    prefixed_index: HashMap<Vec<u8>, usize>,
    prefixed_bytes: usize,
    prefixed_overflow: bool,
    body: Vec<u8>,
    body_truncated: bool,
}

impl MessageData {
    /// Empty data; headers whose name starts with `header_prefix` (any case) are tracked for deletion.
    pub fn new(header_prefix: &str, max_header_bytes: usize, max_body_bytes: usize) -> Self {
        Self {
            prefix_lower: header_prefix.to_ascii_lowercase(),
            max_header_bytes,
            max_body_bytes,
            headers: Vec::new(),
            header_bytes: 0,
            headers_truncated: false,
            prefixed: Vec::new(),
            prefixed_index: HashMap::new(),
            prefixed_bytes: 0,
            prefixed_overflow: false,
            body: Vec::new(),
            body_truncated: false,
        }
    }

    /// Records one header field.
    pub fn add_header(&mut self, name: &[u8], value: &[u8]) {
        let lower = name.to_ascii_lowercase();
        if lower.starts_with(self.prefix_lower.as_bytes()) {
            self.track_prefixed(&lower, name);
            // Forged triage headers are never classification input.
            return;
        }
        let cost = name.len() + value.len() + 4;
        if self.headers_truncated || self.header_bytes + cost > self.max_header_bytes {
            self.headers_truncated = true;
            return;
        }
        self.header_bytes += cost;
        self.headers.push((name.to_vec(), value.to_vec()));
    }

    fn track_prefixed(&mut self, lower: &[u8], name: &[u8]) {
        if let Some(&i) = self.prefixed_index.get(lower) {
            self.prefixed[i].1 += 1;
            return;
        }
        if self.prefixed_bytes + lower.len()
            > self.max_header_bytes.saturating_mul(PREFIXED_NAME_BYTES_PER_HEADER_BYTE)
        {
            self.prefixed_overflow = true;
            return;
        }
        self.prefixed_bytes += lower.len();
        self.prefixed_index.insert(lower.to_vec(), self.prefixed.len());
        // Kept as bytes: the MTA matches the exact name, which need not be UTF-8.
        self.prefixed.push((name.to_vec(), 1));
    }

    /// Records a body chunk; returns false once the body limit is reached (no more is wanted).
    pub fn add_body(&mut self, chunk: &[u8]) -> bool {
        let room = self.max_body_bytes.saturating_sub(self.body.len());
        if chunk.len() > room {
            self.body.extend_from_slice(&chunk[..room]);
            self.body_truncated = true;
        } else {
            self.body.extend_from_slice(chunk);
        }
        !self.body_truncated && self.body.len() < self.max_body_bytes
    }

    /// Fills the data from a whole RFC 5322 message (LF or CRLF line ends), as the MTA would have
    /// passed it: header fields, then the body. See [`MessageData::read_from`].
    pub fn from_rfc5322(
        raw: &[u8],
        header_prefix: &str,
        max_header_bytes: usize,
        max_body_bytes: usize,
    ) -> Self {
        // Reading from memory cannot fail.
        Self::read_from(raw, header_prefix, max_header_bytes, max_body_bytes)
            .unwrap_or_else(|_| Self::new(header_prefix, max_header_bytes, max_body_bytes))
    }

    /// Fills the data from a message read as a stream, with the memory the milter uses whatever
    /// the message's size: header fields are split as an MTA splits them (a line that starts
    /// with white space continues the field before it; an mbox `From ` line and lines without a
    /// colon are skipped; an empty line ends the header), a line is kept only up to what the
    /// limits could still use, and reading stops once the body limit is reached.
    pub fn read_from(
        mut input: impl BufRead,
        header_prefix: &str,
        max_header_bytes: usize,
        max_body_bytes: usize,
    ) -> io::Result<Self> {
        let mut data = Self::new(header_prefix, max_header_bytes, max_body_bytes);
        // A field longer than this cannot be kept; its name is all that is still needed.
        let cap = max_header_bytes.saturating_add(1024);
        let mut field: Option<Vec<u8>> = None;
        let mut line = Vec::new();
        let mut first = true;
        loop {
            line.clear();
            if read_line_capped(&mut input, &mut line, cap)? == 0 {
                if let Some(f) = field.take() {
                    data.add_field(&f);
                }
                return Ok(data);
            }
            let content = line.strip_suffix(b"\n").unwrap_or(&line);
            let content = content.strip_suffix(b"\r").unwrap_or(content);
            if content.is_empty() && line.ends_with(b"\n") {
                break;
            }
            if matches!(content.first(), Some(b' ' | b'\t')) && field.is_some() {
                if let Some(f) = field.as_mut().filter(|f| f.len() < cap) {
                    f.push(b'\n');
                    f.extend_from_slice(&content[..content.len().min(cap - f.len().min(cap))]);
                }
                continue;
            }
            if let Some(f) = field.take() {
                data.add_field(&f);
            }
            let mbox = first && content.starts_with(b"From ");
            first = false;
            if !mbox && content.contains(&b':') {
                field = Some(content.to_vec());
            }
        }
        if let Some(f) = field.take() {
            data.add_field(&f);
        }
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            let n = input.read(&mut chunk)?;
            if n == 0 || !data.add_body(&chunk[..n]) {
                return Ok(data);
            }
        }
    }

    /// One unfolded field `Name: value` (folds as `\n`), as the MTA passes it.
    fn add_field(&mut self, field: &[u8]) {
        let Some(colon) = field.iter().position(|&b| b == b':') else { return };
        let name = field[..colon].trim_ascii();
        let value = &field[colon + 1..];
        self.add_header(name, value.strip_prefix(b" ").unwrap_or(value));
    }

    /// Prefixed header names and instance counts, in first-seen order.
    pub fn prefixed_headers(&self) -> &[(Vec<u8>, usize)] {
        &self.prefixed
    }

    /// Whether more distinct prefixed header names came than can be tracked.
    pub fn prefixed_overflow(&self) -> bool {
        self.prefixed_overflow
    }

    pub fn headers_truncated(&self) -> bool {
        self.headers_truncated
    }

    pub fn body_truncated(&self) -> bool {
        self.body_truncated
    }

    /// The kept headers (prefixed ones excluded) and body prefix as one RFC 5322 text, for the parser.
    pub fn to_rfc5322(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.header_bytes + self.body.len() + 2);
        for (name, value) in &self.headers {
            out.extend_from_slice(name);
            out.extend_from_slice(b": ");
            for (i, line) in value.split(|&b| b == b'\n').enumerate() {
                if i > 0 {
                    out.extend_from_slice(b"\r\n");
                    // A continuation line must start with white space, or it would become a field.
                    if !line.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
                        out.push(b' ');
                    }
                }
                out.extend_from_slice(line.strip_suffix(b"\r").unwrap_or(line));
            }
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.body);
        out
    }

    /// Raw values of every kept header named `name` (any case), in order.
    pub fn raw_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v.as_slice())
    }
}

/// Reads one line (up to and including `\n`) into `out`, keeping at most `cap` bytes of it and
/// skipping the rest; returns the bytes read (0 at the end of the input).
fn read_line_capped(input: &mut impl BufRead, out: &mut Vec<u8>, cap: usize) -> io::Result<usize> {
    let mut total = 0;
    loop {
        let buf = input.fill_buf()?;
        if buf.is_empty() {
            return Ok(total);
        }
        let (take, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        let room = cap.saturating_sub(out.len());
        out.extend_from_slice(&buf[..take.min(room)]);
        // A line cut short still ends with its line end, so that the header's end is seen.
        if done && take > room {
            out.push(b'\n');
        }
        input.consume(take);
        total += take;
        if done {
            return Ok(total);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_and_body_from_a_crlf_message() {
        let raw = b"From: a@example.org\r\nSubject: hello\r\n  folded\r\nX-HelpDesk-Class: team\r\nx-helpdesk-class: team\r\n\r\nbody\r\n";
        let d = MessageData::from_rfc5322(raw, "X-HelpDesk-", 1 << 20, 1 << 20);
        assert_eq!(d.headers.len(), 2);
        assert_eq!(d.headers[1], (b"Subject".to_vec(), b"hello\n  folded".to_vec()));
        assert_eq!(d.prefixed_headers(), &[(b"X-HelpDesk-Class".to_vec(), 2)]);
        assert_eq!(d.body, b"body\r\n");
        let again = d.to_rfc5322();
        assert!(
            again.starts_with(b"From: a@example.org\r\nSubject: hello\r\n  folded\r\n\r\nbody"),
            "{}",
            String::from_utf8_lossy(&again)
        );
    }

    #[test]
    fn lf_message_gives_the_same_headers() {
        let crlf =
            MessageData::from_rfc5322(b"Subject: a\r\n b\r\nTo: x@y\r\n\r\nhi\r\n", "X-H-", 9999, 9999);
        let lf = MessageData::from_rfc5322(b"Subject: a\n b\nTo: x@y\n\nhi\n", "X-H-", 9999, 9999);
        assert_eq!(crlf.headers, lf.headers);
    }

    #[test]
    fn limits_bound_what_is_kept() {
        let mut d = MessageData::new("X-HelpDesk-", 1024, 10);
        for _ in 0..100 {
            d.add_header(b"Received", &[b'x'; 100]);
        }
        assert!(d.headers_truncated());
        assert!(d.header_bytes <= 1024);
        // Prefixed headers are still tracked past the header limit, so they can be deleted.
        d.add_header(b"X-HELPDESK-Priority", b"high");
        assert_eq!(d.prefixed_headers().len(), 1);
        assert!(d.add_body(b"12345"));
        assert!(!d.add_body(b"67890abc"));
        assert_eq!(d.body, b"1234567890");
        assert!(d.body_truncated());
    }

    #[test]
    fn no_headers_means_all_body() {
        let d = MessageData::from_rfc5322(b"", "X-", 100, 100);
        assert!(d.headers.is_empty());
        let d = MessageData::from_rfc5322(b"\r\njust a body\r\n", "X-", 100, 100);
        assert!(d.headers.is_empty());
    }

    #[test]
    fn a_value_with_a_bare_newline_cannot_inject_a_field() {
        let mut d = MessageData::new("X-HelpDesk-", 1024, 10);
        d.add_header(b"Subject", b"hi\nX-Spam-Flag: YES");
        let raw = d.to_rfc5322();
        assert!(raw.starts_with(b"Subject: hi\r\n X-Spam-Flag: YES\r\n"));
    }
}

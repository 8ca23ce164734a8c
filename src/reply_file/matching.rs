//! How a topic's keywords are compared with a message: both are normalised (lowercase, every run
//! of other characters one space), and a keyword matches where it stands as whole words.

/// Lowercase, every run of non-alphanumeric characters becomes one space, trimmed. Keyword k
/// matches text t when " "+norm(k)+" " occurs in " "+norm(t)+" ".
pub fn normalize_for_matching(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    normalize_into(s, &mut out);
    out
}

/// `normalize_for_matching`, appended to `out` (one allocation per message in `match_topics`).
pub(super) fn normalize_into(s: &str, out: &mut String) {
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

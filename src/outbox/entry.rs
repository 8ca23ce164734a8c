//! One queued reply and its file format (see the module documentation of [`super`]).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;
use std::io;

pub(super) const FORMAT: u32 = 1;
pub(super) const MAGIC: &str = "# helpdesk-milter outbox entry\n";
/// 16 random bytes, hex.
const ID_LEN: usize = 32;

/// One queued reply.
#[derive(Clone, PartialEq, Eq)]
pub struct Entry {
    pub id: String,
    /// The envelope recipient (the sender of the message we reply to).
    pub recipient: String,
    /// Unix seconds.
    pub created: u64,
    pub attempts: u32,
    /// Unix seconds.
    pub next_attempt: u64,
    /// The complete reply message (header and body).
    pub message: Vec<u8>,
}

// Hand-written so that a stray `{:?}` cannot put an address into a log.
impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entry")
            .field("id", &self.id)
            .field("recipient", &"<redacted>")
            .field("created", &self.created)
            .field("attempts", &self.attempts)
            .field("next_attempt", &self.next_attempt)
            .field("message_len", &self.message.len())
            .finish()
    }
}

/// The failure of one delivery attempt.

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    format: u32,
    id: String,
    recipient: String,
    created: u64,
    attempts: u32,
    next_attempt: u64,
    message_len: u64,
    message_sha256: String,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(super) fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

pub(super) fn valid_id(id: &str) -> bool {
    id.len() == ID_LEN && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

pub(super) fn new_id() -> io::Result<String> {
    let mut buf = [0u8; ID_LEN / 2];
    getrandom::fill(&mut buf)
        .map_err(|e| io::Error::other(format!("no randomness for an outbox id: {e}")))?;
    Ok(hex(&buf))
}

/// Encodes an entry in the file format described in the module documentation.
pub(super) fn encode(entry: &Entry) -> io::Result<Vec<u8>> {
    let header = Header {
        format: FORMAT,
        id: entry.id.clone(),
        recipient: entry.recipient.clone(),
        created: entry.created,
        attempts: entry.attempts,
        next_attempt: entry.next_attempt,
        message_len: entry.message.len() as u64,
        message_sha256: sha256_hex(&entry.message),
    };
    let text =
        toml::to_string(&header).map_err(|e| io::Error::other(format!("encoding an outbox entry: {e}")))?;
    // The empty line ends the header; TOML quoting keeps it out of values, since enqueue refuses
    // control characters in the recipient.
    if text.contains("\n\n") || !text.ends_with('\n') {
        return Err(io::Error::other("encoding an outbox entry: unexpected header layout"));
    }
    let mut out = Vec::with_capacity(MAGIC.len() + text.len() + 1 + entry.message.len());
    out.extend_from_slice(MAGIC.as_bytes());
    out.extend_from_slice(text.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(&entry.message);
    Ok(out)
}

/// Decodes and checks an entry file; the error says why it was refused (never the address).
/// Public so that the fuzz target exercises the parser the directory scan uses.
pub fn decode(bytes: &[u8]) -> Result<Entry, String> {
    let rest = bytes.strip_prefix(MAGIC.as_bytes()).ok_or("not an outbox entry (bad first line)")?;
    let end = rest.windows(2).position(|w| w == b"\n\n").ok_or("truncated: no end of header")?;
    let (head, message) = (&rest[..=end], &rest[end + 2..]);
    let head = std::str::from_utf8(head).map_err(|_| "header is not UTF-8")?;
    let h: Header = toml::from_str(head).map_err(|e| format!("bad header: {}", e.message().trim()))?;
    if h.format != FORMAT {
        return Err(format!("unknown format {}", h.format));
    }
    if !valid_id(&h.id) {
        return Err("bad id in header".into());
    }
    if message.len() as u64 != h.message_len {
        return Err(format!(
            "message is {} bytes, header says {} (truncated?)",
            message.len(),
            h.message_len
        ));
    }
    if sha256_hex(message) != h.message_sha256 {
        return Err("message checksum mismatch".into());
    }
    Ok(Entry {
        id: h.id,
        recipient: h.recipient,
        created: h.created,
        attempts: h.attempts,
        next_attempt: h.next_attempt,
        message: message.to_vec(),
    })
}

/// A short, stable tag for an address in debug logs (no plaintext addresses in logs).
pub(super) fn recipient_tag(recipient: &str) -> String {
    sha256_hex(recipient.to_lowercase().as_bytes())[..12].to_owned()
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(crate) fn entry(message: &[u8]) -> Entry {
        Entry {
            id: "0123456789abcdef0123456789abcdef".into(),
            recipient: "alice@example.com".into(),
            created: 1_741_079_702,
            attempts: 3,
            next_attempt: 1_741_080_000,
            message: message.to_vec(),
        }
    }

    #[test]
    fn format_round_trips_any_bytes() {
        let mut message: Vec<u8> = (0..=255u8).collect();
        message.extend_from_slice(b"\n\n\r\n\r\n.\r\n# helpdesk-milter outbox entry\n\n");
        for m in [&b""[..], b"Subject: x\r\n\r\nbody\r\n", &message] {
            let e = entry(m);
            let bytes = encode(&e).unwrap();
            assert_eq!(decode(&bytes).unwrap(), e);
        }
        let mut odd = entry(b"x");
        odd.recipient = "\"quoted \\\" local\"@example.com".into();
        assert_eq!(decode(&encode(&odd).unwrap()).unwrap(), odd);
    }

    #[test]
    fn format_is_readable_toml_header() {
        let text = String::from_utf8(encode(&entry(b"Hello")).unwrap()).unwrap();
        assert!(text.starts_with(MAGIC), "{text}");
        assert!(text.contains("\nid = \"0123456789abcdef0123456789abcdef\"\n"), "{text}");
        assert!(text.contains("\nmessage_len = 5\n"), "{text}");
        assert!(text.ends_with("\n\nHello"), "{text}");
    }

    #[test]
    fn format_rejects_damage() {
        let good = encode(&entry(b"Subject: x\r\n\r\nbody\r\n")).unwrap();
        // Every truncation is refused.
        for len in 0..good.len() {
            assert!(decode(&good[..len]).is_err(), "truncated to {len}");
        }
        // Extra bytes, a flipped message byte, a changed length.
        let mut longer = good.clone();
        longer.push(b'x');
        assert!(decode(&longer).is_err());
        let mut flipped = good.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert_eq!(decode(&flipped).unwrap_err(), "message checksum mismatch");
        let text = String::from_utf8(good.clone()).unwrap();
        assert!(decode(text.replace("message_len = 20", "message_len = 19").as_bytes()).is_err());
        assert!(decode(text.replace("format = 1", "format = 2").as_bytes()).is_err());
        assert!(decode(text.replace("attempts = 3", "attempts = 3\nextra = 1").as_bytes()).is_err());
        assert!(decode(b"garbage").is_err());
    }

    #[test]
    fn decode_errors_do_not_quote_the_address() {
        let text = String::from_utf8(encode(&entry(b"x")).unwrap()).unwrap();
        let bad = text.replace("recipient = \"alice@example.com\"", "recipient = alice@example.com");
        let err = decode(bad.as_bytes()).unwrap_err();
        assert!(!err.contains("alice"), "{err}");
    }

    #[test]
    fn entry_debug_hides_the_address() {
        assert!(!format!("{:?}", entry(b"x")).contains("alice"));
    }
}

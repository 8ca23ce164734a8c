//! The auto-reply message itself (RFC 3834 §3, RFC 5230 §5), built with mail-builder from one
//! version of the reply file.

use crate::config::AutoreplyConfig;
use crate::reply_file::ReplyFile;
use mail_builder::MessageBuilder;
use mail_builder::headers::address::Address;
use mail_builder::headers::message_id::MessageId;
use mail_builder::headers::raw::Raw;

/// At most this many message IDs in References: the first and the last ones (as Exim does).
const MAX_REFERENCES: usize = 12;

/// Who and what a reply answers: taken from the incoming message at end of message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplyRequest {
    /// The exact envelope sender of the incoming message: the one recipient of the reply.
    pub recipient: String,
    /// The display name of a From/Sender/Resent-From whose address is the envelope sender.
    pub to_name: Option<String>,
    /// The incoming Message-ID, without angle brackets.
    pub message_id: Option<String>,
    /// The incoming References (or single In-Reply-To) IDs, without angle brackets.
    pub references: Vec<String>,
    /// Content-Language tags of the request, best first; the language detected in
    /// `text_sample` is tried after them.
    pub languages: Vec<String>,
    /// The beginning of the request's plaintext, for language detection. Detection is the
    /// costliest step of a reply, so it runs when the reply is built, off the milter's path.
    pub text_sample: String,
    /// Ids of the reply file's topics that the reply leads with, in this order: for a new
    /// request, the topics matched in it (file order). Ids the reply file lacks are skipped.
    pub topics: Vec<String>,
}

/// Characters of plaintext kept for language detection: a few hundred tell the language; more
/// only cost time.
pub const SAMPLE_CHARS: usize = 2000;

/// A finished reply: its one recipient and the message bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub recipient: String,
    pub language: String,
    pub message: Vec<u8>,
}

/// The message IDs for References: original References (or In-Reply-To) plus the original
/// Message-ID, bounded to the first and the last ones.
fn references(req: &ReplyRequest) -> Vec<String> {
    let mut ids: Vec<String> = req.references.clone();
    if let Some(id) = &req.message_id
        && !ids.contains(id)
    {
        ids.push(id.clone());
    }
    if ids.len() > MAX_REFERENCES {
        let tail = ids.split_off(ids.len() - (MAX_REFERENCES - 1));
        ids.truncate(1);
        ids.extend(tail);
    }
    ids
}

/// A unique Message-ID in our own domain.
pub fn new_message_id(from_address: &str, now_unix: u64) -> String {
    let domain = from_address.rsplit_once('@').map_or("localhost", |(_, d)| d);
    let mut rnd = [0u8; 12];
    // Without randomness the time and the process ID still make the ID unique enough.
    if getrandom::fill(&mut rnd).is_err() {
        rnd[..4].copy_from_slice(&std::process::id().to_be_bytes());
    }
    let hex: String = rnd.iter().map(|b| format!("{b:02x}")).collect();
    format!("autoreply.{now_unix}.{hex}@{domain}")
}

/// Builds the reply from one version of the reply file, leading with the topics of
/// `req.topics`.
pub fn build(cfg: &AutoreplyConfig, file: &ReplyFile, req: &ReplyRequest, now_unix: u64) -> Reply {
    let mut languages = req.languages.clone();
    languages.extend(detect_language(&req.text_sample).map(str::to_string));
    let language = file.pick_language(&languages).to_string();
    let rendered = file.render_leading(&language, &req.topics);
    let from: Address<'_> = match &cfg.from_name {
        Some(name) => (name.as_str(), cfg.from_address.as_str()).into(),
        None => cfg.from_address.as_str().into(),
    };
    let to: Address<'_> = match &req.to_name {
        Some(name) => (name.as_str(), req.recipient.as_str()).into(),
        None => req.recipient.as_str().into(),
    };
    let mut b = MessageBuilder::new()
        .from(from)
        .to(to)
        .subject(rendered.subject.as_str())
        .date(now_unix)
        .message_id(new_message_id(&cfg.from_address, now_unix));
    if let Some(id) = &req.message_id {
        b = b.in_reply_to(id.as_str());
    }
    let refs = references(req);
    if !refs.is_empty() {
        b = b.references(MessageId::new_list(refs.iter().map(String::as_str)));
    }
    let message = b
        .header("Auto-Submitted", Raw::new("auto-replied"))
        .header("Precedence", Raw::new("bulk"))
        .header("X-Auto-Response-Suppress", Raw::new("All"))
        .header("X-Loop", Raw::new(cfg.from_address.as_str()))
        .header("Content-Language", Raw::new(rendered.language.as_str()))
        // Which version of the reply file was sent: the file's content hash.
        .header("X-Hot-Topics-Revision", Raw::new(file.revision.as_str()))
        .text_body(rendered.body.as_str())
        .write_to_vec()
        .unwrap_or_default();
    Reply { recipient: req.recipient.clone(), language: rendered.language, message }
}

/// ISO 639-1 code of a language detected by whatlang, for matching translation tags.
fn iso639_1(lang: whatlang::Lang) -> Option<&'static str> {
    use whatlang::Lang::*;
    Some(match lang {
        Eng => "en",
        Rus => "ru",
        Cmn => "zh",
        Spa => "es",
        Por => "pt",
        Ita => "it",
        Ben => "bn",
        Fra => "fr",
        Deu => "de",
        Ukr => "uk",
        Kat => "ka",
        Ara => "ar",
        Hin => "hi",
        Jpn => "ja",
        Heb => "he",
        Pol => "pl",
        Kor => "ko",
        Nob => "nb",
        Dan => "da",
        Swe => "sv",
        Fin => "fi",
        Tur => "tr",
        Nld => "nl",
        Hun => "hu",
        Ces => "cs",
        Ell => "el",
        Bul => "bg",
        Bel => "be",
        Ron => "ro",
        Slv => "sl",
        Hrv => "hr",
        Srp => "sr",
        Mkd => "mk",
        Lit => "lt",
        Lav => "lv",
        Est => "et",
        Vie => "vi",
        Urd => "ur",
        Tha => "th",
        Ind => "id",
        Pes => "fa",
        Cat => "ca",
        Slk => "sk",
        Afr => "af",
        Tam => "ta",
        Aze => "az",
        Uzb => "uz",
        Hye => "hy",
        Tgl => "tl",
        Epo => "eo",
        _ => return None,
    })
}

/// The first `SAMPLE_CHARS` characters of `text`, without copying.
pub fn sample(text: &str) -> &str {
    text.char_indices().nth(SAMPLE_CHARS).map_or(text, |(end, _)| &text[..end])
}

/// The language a plaintext is written in, when whatlang can tell it reliably.
pub fn detect_language(text: &str) -> Option<&'static str> {
    let info = whatlang::detect(sample(text))?;
    if info.is_reliable() { iso639_1(info.lang()) } else { None }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_bounded_keeping_first_and_last() {
        let req = ReplyRequest {
            message_id: Some("m@x".into()),
            references: (0..20).map(|i| format!("r{i}@x")).collect(),
            ..Default::default()
        };
        let r = references(&req);
        assert_eq!(r.len(), MAX_REFERENCES);
        assert_eq!(r[0], "r0@x");
        assert_eq!(r[r.len() - 1], "m@x");
        assert_eq!(r[r.len() - 2], "r19@x");
        let single = ReplyRequest { message_id: Some("m@x".into()), ..Default::default() };
        assert_eq!(references(&single), vec!["m@x"]);
    }

    #[test]
    fn language_detection_is_only_trusted_when_reliable() {
        assert_eq!(
            detect_language(
                "Bonjour, mon ordinateur ne démarre plus avec Tails depuis la mise à jour, que faire ?"
            ),
            Some("fr")
        );
        assert_eq!(
            detect_language(
                "Hallo, mein Computer startet Tails seit dem letzten Update nicht mehr. Was kann ich tun?"
            ),
            Some("de")
        );
        assert_eq!(detect_language("ok"), None);
        assert_eq!(detect_language(""), None);
    }

    #[test]
    fn the_reply_language_is_detected_when_built_after_content_language() {
        let cfg = crate::config::Config::defaults(std::path::Path::new("/x.toml")).autoreply;
        // Its own file, not the example the Help Desk edits.
        let text = "default_language = \"en\"\nhot_topics = []\n\
                    [languages.en]\nsubject = \"S\"\nbody = \"Hello\"\n\
                    [languages.de]\nsubject = \"S\"\nbody = \"Hallo\"\n\
                    [languages.fr]\nsubject = \"S\"\nbody = \"Bonjour\"\n";
        let file = crate::reply_file::ReplyFile::parse(std::path::Path::new("/r.toml"), text).unwrap();
        let german =
            "Hallo, mein Computer startet Tails seit dem letzten Update nicht mehr. Was kann ich tun?";
        let mut req = ReplyRequest {
            recipient: "a@example.org".into(),
            text_sample: sample(german).to_string(),
            ..Default::default()
        };
        assert_eq!(build(&cfg, &file, &req, 1).language, "de");
        // A Content-Language tag the file has goes first.
        req.languages = vec!["fr".into()];
        assert_eq!(build(&cfg, &file, &req, 1).language, "fr");
        // Nothing to go on: the file's default.
        let plain = ReplyRequest { recipient: "a@example.org".into(), ..Default::default() };
        assert_eq!(build(&cfg, &file, &plain, 1).language, "en");
    }

    #[test]
    fn the_sample_is_bounded_on_a_character_boundary() {
        let long = "é".repeat(SAMPLE_CHARS + 10);
        assert_eq!(sample(&long).chars().count(), SAMPLE_CHARS);
        assert_eq!(sample("abc"), "abc");
    }

    #[test]
    fn message_ids_are_unique_and_in_our_domain() {
        let a = new_message_id("support@tails.net", 1);
        let b = new_message_id("support@tails.net", 1);
        assert_ne!(a, b);
        assert!(a.ends_with("@tails.net"));
    }
}

//! The reply file's tests: [`validate`] checks each rule of the format, [`render`] what the
//! daemon makes of a valid file. They share the valid file below, which they break in one place.

mod render;
mod topics;
mod validate;

use super::*;
use crate::diagnostic::Diagnostic;

pub(super) const PATH: &str = "/srv/reply/reply.toml";

pub(super) fn parse(text: &str) -> Result<ReplyFile, Diagnostics> {
    ReplyFile::parse(Path::new(PATH), text)
}

/// A valid file; tests break it in one place.
pub(super) const VALID: &str = r#"default_language = "en"
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

pub(super) fn errors(text: &str) -> Vec<Diagnostic> {
    match parse(text) {
        Ok(_) => panic!("expected errors in:\n{text}"),
        Err(e) => e.0,
    }
}

/// The single error of `text`, which must contain `needle`.
pub(super) fn one_error(text: &str, needle: &str) -> Diagnostic {
    let e = errors(text);
    assert_eq!(e.len(), 1, "{}", Diagnostics(e.clone()));
    assert!(e[0].message.contains(needle), "{:?} lacks {needle:?}", e[0].message);
    e[0].clone()
}

/// `VALID` with `from` replaced by `to` (which must occur).
pub(super) fn valid_with(from: &str, to: &str) -> String {
    assert!(VALID.contains(from), "{from:?}");
    VALID.replacen(from, to, 1)
}

pub(super) fn line_of(text: &str, needle: &str) -> usize {
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
    assert_eq!(super::validate::revision(b"abc"), "ba7816bf8f01");
}

/// The example that the README invites the Help Desk to edit: only its validity is tested, so
/// that editing its topics, languages or text never breaks a test (the tests have their own
/// files).
#[test]
fn example_file_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("etc/reply.toml");
    let r = ReplyFile::load(&path).unwrap_or_else(|e| panic!("{e}"));
    for lang in r.languages.keys() {
        let out = r.render(lang);
        assert_eq!(&out.language, lang);
        assert!(!out.body.contains('{'), "{lang}: {}", out.body);
        for id in &r.hot_topics {
            let t = r.topics.iter().find(|t| &t.id == id).unwrap();
            assert!(out.body.contains(&t.link), "{lang} lacks {id}");
        }
        for t in &r.topics {
            let led = r.render_leading(lang, std::slice::from_ref(&t.id));
            assert!(!led.body.contains('{'), "{lang}, {}: {}", t.id, led.body);
        }
    }
}

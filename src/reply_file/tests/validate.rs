//! Each rule of the format, one at a time, with the position of its error.

use super::*;
use crate::reply_file::validate::{is_https_link, is_language_tag, lf_line_ends, placeholders};

// --- load ------------------------------------------------------------------------------

#[test]
fn load_reports_unreadable_files_at_the_first_line() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.toml");
    let e = ReplyFile::load(&missing).unwrap_err();
    assert_eq!((e.0[0].line, e.0[0].column), (1, 1));
    assert!(e.0[0].message.starts_with("cannot read the reply file"), "{e}");

    let e = ReplyFile::load(dir.path()).unwrap_err();
    assert!(e.0[0].message.contains("directory"), "{e}");
    assert_eq!(e.0[0].line, 1);

    // Neither blocks nor fills memory: a FIFO with no writer, an endless device, a huge file.
    let fifo = dir.path().join("fifo.toml");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    let zero = dir.path().join("zero.toml");
    std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
    for p in [&fifo, &zero] {
        let e = ReplyFile::load(p).unwrap_err();
        assert!(e.0[0].message.contains("not a regular file"), "{e}");
    }
    let huge = dir.path().join("huge.toml");
    std::fs::write(&huge, "#".repeat(2 << 20)).unwrap();
    let e = ReplyFile::load(&huge).unwrap_err();
    assert!(e.0[0].message.contains("larger than 1024 KiB"), "{e}");

    let empty = dir.path().join("empty.toml");
    std::fs::write(&empty, "").unwrap();
    let e = ReplyFile::load(&empty).unwrap_err();
    assert_eq!((e.0[0].line, e.0[0].column), (1, 1));
    assert!(e.0[0].message.contains("the reply file is empty"), "{e}");

    let latin1 = dir.path().join("latin1.toml");
    std::fs::write(&latin1, b"default_language = \"en\"\n# caf\xe9\n").unwrap();
    let e = ReplyFile::load(&latin1).unwrap_err();
    assert_eq!((e.0[0].line, e.0[0].column), (2, 6));
    assert!(e.0[0].message.contains("UTF-8"), "{e}");

    let good = dir.path().join("reply.toml");
    std::fs::write(&good, VALID).unwrap();
    let r = ReplyFile::load(&good).unwrap();
    assert_eq!(r.path, good);
    assert_eq!(r.revision, parse(VALID).unwrap().revision);
}

// --- validation, one rule at a time ----------------------------------------------------

#[test]
fn empty_or_blank_file() {
    for text in ["", "  \n\t\n", "\n\n"] {
        let d = one_error(text, "the reply file is empty");
        assert_eq!((d.line, d.column), (1, 1));
    }
}

#[test]
fn syntax_error_has_its_position() {
    let text = valid_with("[languages.de]", "[languages.de");
    let d = one_error(&text, "");
    assert_eq!(d.line, line_of(&text, "[languages.de"));
    assert!(d.to_string().starts_with(&format!("{PATH}:{}:", d.line)), "{d}");
}

#[test]
fn unknown_fields_are_errors() {
    let text = valid_with("keywords = [\"nvidia\"", "titel = \"x\"\nkeywords = [\"nvidia\"");
    let d = one_error(&text, "unknown field `titel`");
    assert!(d.message.contains("check the spelling"), "{}", d.message);
    assert_eq!(d.line, line_of(&text, "titel"));
    one_error(&valid_with("default_language", "colour = 1\ndefault_language"), "unknown field `colour`");
    one_error(
        &valid_with("subject = \"Sua", "signature = \"x\"\nsubject = \"Sua"),
        "unknown field `signature`",
    );
}

#[test]
fn a_topic_must_be_a_table() {
    one_error(&format!("{VALID}\n[topics]\nbroken = \"x\"\n"), "a topic section such as");
}

#[test]
fn default_language_is_required_and_must_exist() {
    let d = one_error(&valid_with("default_language = \"en\"\n", ""), "default_language is missing");
    assert_eq!((d.line, d.column), (1, 1));
    let text = valid_with("default_language = \"en\"", "default_language = \"fr\"");
    let d = one_error(&text, "missing default language");
    assert!(d.message.contains("[languages.fr]"), "{}", d.message);
    assert_eq!((d.line, d.column), (1, 20));
    // Case does not matter; the key keeps the spelling of its section.
    let r = parse(&valid_with("default_language = \"en\"", "default_language = \"PT-br\"")).unwrap();
    assert_eq!(r.default_language, "pt-BR");
}

#[test]
fn hot_topics_must_be_defined() {
    let text = valid_with("\"wifi-realtek\"]", "\"wifi-realtek\", \"usb-boot\"]");
    let d = one_error(&text, "topic referenced but not defined");
    assert!(d.message.contains("\"usb-boot\""), "{}", d.message);
    assert_eq!(d.line, 2);
    one_error(&valid_with("hot_topics = [", "hot_topics = [\"wifi-realtek\", "), "listed twice");
    one_error(
        &valid_with("hot_topics = [\"nvidia-black-screen\", \"wifi-realtek\"]\n", ""),
        "hot_topics is missing",
    );
    let r = parse(&valid_with("[\"nvidia-black-screen\", \"wifi-realtek\"]", "[]")).unwrap();
    assert!(r.hot_topics.is_empty());
    assert_eq!(r.render("en").body, "Hello,\n\nKnown problems:\n\n\nBye\n");
}

#[test]
fn language_tags() {
    for good in ["en", "de", "pt-BR", "zh-Hans", "ast", "es-419", "sr-Latn-RS"] {
        assert!(is_language_tag(good), "{good}");
    }
    for bad in ["", "e", "english", "en_US", "en-", "-en", "1a", "en--US", "pt-BRAZILIANS", "é"] {
        assert!(!is_language_tag(bad), "{bad}");
    }
    let text = valid_with("[languages.pt-BR]", "[languages.pt_BR]");
    let d = one_error(&text, "\"pt_BR\" is not a language tag");
    assert_eq!((d.line, d.column), (line_of(&text, "[languages.pt_BR]"), 12));
    one_error(&format!("{VALID}\n[languages.DE]\nsubject = \"x\"\nbody = \"y\"\n"), "defined twice");
}

#[test]
fn subject_and_body_are_required_and_not_blank() {
    one_error(&valid_with("subject = \"Sua mensagem\"\n", ""), "[languages.pt-BR] has no subject");
    one_error(&valid_with("body = \"Olá\\n{hot_topics}\\n\"\n", ""), "[languages.pt-BR] has no body");
    let text = valid_with("\"Sua mensagem\"", "\"  \"");
    let d = one_error(&text, "the subject of [languages.pt-BR] is empty");
    assert_eq!(d.line, line_of(&text, "subject = \"  \""));
    one_error(
        &valid_with("\"Olá\\n{hot_topics}\\n\"", "\"\"\"\n\n   \n\"\"\""),
        "the body of [languages.pt-BR] is empty",
    );
}

#[test]
fn subject_is_one_line() {
    for bad in ["Sua\\nmensagem", "Sua\\r", "Sua\\tmensagem", "Sua\\u0000", "a\\u2028b", "a\\u0085"] {
        let text = valid_with("\"Sua mensagem\"", &format!("\"{bad}\""));
        one_error(&text, "line break or a control character");
    }
    let multi = valid_with("\"Sua mensagem\"", "\"\"\"Sua\nmensagem\"\"\"");
    one_error(&multi, "single line");
    // Leading and trailing blanks are trimmed, not errors.
    let r = parse(&valid_with("\"Sua mensagem\"", "\"  Sua mensagem \"")).unwrap();
    assert_eq!(r.languages["pt-BR"].subject, "Sua mensagem");
}

#[test]
fn unknown_placeholders_are_named_and_located() {
    let text = valid_with("Known problems:", "Known problems for {name}:");
    let d = one_error(&text, "unknown placeholder {name}");
    assert_eq!((d.line, d.column), (line_of(&text, "{name}"), 20));
    // Each unknown placeholder once per body, all of them reported.
    let text = valid_with("Bye", "{hot topics} {Hot_Topics} {hot topics}");
    let e = errors(&text);
    assert_eq!(e.len(), 2, "{}", Diagnostics(e.clone()));
    assert!(e[0].message.contains("{hot topics}") && e[1].message.contains("{Hot_Topics}"));
    // Lone braces and braces across lines are text.
    assert!(parse(&valid_with("Bye", "Bye :-} {\nsee {\n}")).is_ok());
    assert_eq!(placeholders("a {b} {{hot_topics}} {x\n} }{"), vec!["{b}", "{hot_topics}"]);
}

#[test]
fn topic_ids() {
    for good in ["a", "0", "wifi-realtek", "tails-7-0", "x-"] {
        assert!(is_topic_id(good), "{good}");
    }
    for bad in ["", "-a", "WiFi", "wifi_realtek", "wifi realtek", "ü", "a.b"] {
        assert!(!is_topic_id(bad), "{bad}");
    }
    let text = valid_with("[topics.mac-start]", "[topics.Mac_Start]");
    let d = one_error(&text, "the topic id \"Mac_Start\" is not allowed");
    assert_eq!((d.line, d.column), (line_of(&text, "[topics.Mac_Start]"), 9));
}

#[test]
fn titles() {
    let text = valid_with("title = \"Starting Tails on a Mac\"", "title = \" \"");
    let d = one_error(&text, "the title of the topic \"mac-start\" is empty");
    assert_eq!(d.line, line_of(&text, "title = \" \""));
    one_error(&valid_with("title = \"Starting Tails on a Mac\"\n", ""), "has no title");
    one_error(&valid_with("\"Starting Tails on a Mac\"", "\"Starting\\nTails\""), "single line");
    one_error(
        &valid_with("de = \"WLAN funktioniert", "de = \"\" #"),
        "the de title of the topic \"wifi-realtek\" is empty",
    );
}

#[test]
fn links() {
    for good in [
        "https://tails.net/doc/",
        "https://tails.net",
        "HTTPS://tails.net/",
        "https://gitlab.tails.boum.org/tails/tails/-/issues/20123#note_1",
        "https://localhost:8443/x?y=z",
    ] {
        assert!(is_https_link(good), "{good}");
    }
    for bad in [
        "",
        "tails.net/doc/",
        "http://tails.net/",
        "https://",
        "https:///doc",
        "https://tails.net/a doc",
        "https://tails.net/\tdoc",
        "https://user@tails.net/",
        "https://.net/",
        "https://tails.net:/",
        "ftp://tails.net/",
        "https:tails.net",
    ] {
        assert!(!is_https_link(bad), "{bad}");
    }
    let text = valid_with(
        "\"https://tails.net/doc/first_steps/start/mac/\"",
        "\"tails.net/doc/first_steps/start/mac/\"",
    );
    let d = one_error(&text, "the link of the topic \"mac-start\" is not a web address");
    assert_eq!((d.line, d.column), (line_of(&text, "link = \"tails.net"), 8));
    one_error(&valid_with("link = \"https://tails.net/doc/first_steps/start/mac/\"\n", ""), "has no link");
}

#[test]
fn keywords_that_can_never_match() {
    for bad in ["!!!", "", "  ", "-", "…"] {
        let text = valid_with("[\"macbook\"]", &format!("[\"macbook\", {bad:?}]"));
        let d = one_error(&text, "can never match");
        assert_eq!((d.line, d.column), (line_of(&text, "keywords = [\"macbook\","), 24));
    }
    assert!(parse(&valid_with("[\"macbook\"]", "[\"Mac-Book!\", \"2.4 GHz\"]")).is_ok());
}

#[test]
fn translated_titles_need_their_language() {
    let text = valid_with("de = \"WLAN", "fr = \"Wi-Fi\"\nde = \"WLAN");
    let d = one_error(&text, "has a title in \"fr\" but there is no [languages.fr] section");
    assert_eq!((d.line, d.column), (line_of(&text, "fr = "), 1));
    // Matched without regard to case, stored under the language's own spelling.
    let r = parse(&valid_with("de = \"WLAN", "PT-br = \"Wi-Fi\"\nde = \"WLAN")).unwrap();
    assert_eq!(r.topics[0].translations["pt-BR"], "Wi-Fi");
}

#[test]
fn all_problems_are_reported_at_once_in_file_order() {
    let text = r#"default_language = "xx"
hot_topics = ["gone", "ok"]
[topics.ok]
title = ""
link = "http://tails.net"
keywords = ["?"]
[topics.ok.translations]
it = "x"
[languages.en]
subject = "a\nb"
body = "{oops}"
[languages.english]
"#;
    let e = errors(text);
    let lines: Vec<usize> = e.iter().map(|d| d.line).collect();
    assert_eq!(lines, vec![1, 2, 4, 5, 6, 8, 10, 11, 12, 12, 12], "{}", Diagnostics(e.clone()));
    let printed = Diagnostics(e).to_string();
    assert!(printed.starts_with(&format!("{PATH}:1:20: missing default language")), "{printed}");
    assert_eq!(printed.lines().count(), 11);
}

#[test]
fn every_cr_before_a_line_end_goes() {
    // Found by the round-trip invariant (fuzz/corpus/reply_file/crlf-and-braces.toml): "\r\r\n"
    // left a CRLF in the body, and the file written back did not parse to the same body.
    let text = valid_with("body = \"Olá\\n{hot_topics}\\n\"", "body = \"a\\r\\r\\nb\\rc\\r\\n\"");
    assert_eq!(parse(&text).unwrap().languages["pt-BR"].body, "a\nb\rc\n");
    assert_eq!(lf_line_ends("x\r\r\n\r\ny\r"), "x\n\ny\r");
}

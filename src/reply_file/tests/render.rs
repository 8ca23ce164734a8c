//! What the daemon makes of a valid file: the reply in each language, the language picked, the
//! topics recognised; and odd inputs that must not panic.

use super::*;

// --- rendering ---------------------------------------------------------------------------

#[test]
fn render_expands_hot_topics_in_order_with_translated_titles() {
    let r = parse(VALID).unwrap();
    let en = r.render("en");
    assert_eq!(en.language, "en");
    assert_eq!(en.subject, "Your message to the Tails Help Desk");
    assert_eq!(
        en.body,
        "Hello,\n\nKnown problems:\n\
         - Black screen after the Welcome Screen with some NVIDIA graphics cards\n  \
         https://gitlab.tails.boum.org/tails/tails/-/issues/20123\n\
         - Wi-Fi not working with some Realtek adapters\n  \
         https://tails.net/doc/anonymous_internet/no-wifi/\n\nBye\n"
    );
    let de = r.render("de");
    assert_eq!(de.subject, "Ihre Nachricht an den Tails Help Desk");
    // The translated title where there is one, the default title elsewhere.
    assert!(de.body.contains("- WLAN funktioniert nicht mit manchen Realtek-Adaptern\n"), "{}", de.body);
    assert!(de.body.contains("- Black screen after the Welcome Screen"), "{}", de.body);
    assert!(!de.body.contains("Wi-Fi not working"), "{}", de.body);
    // Topics that are not hot are not listed.
    assert!(!de.body.contains("Mac"));
}

#[test]
fn render_falls_back_to_the_default_language() {
    let r = parse(VALID).unwrap();
    assert_eq!(r.render("ja").language, "en");
    assert_eq!(r.render("").language, "en");
    assert_eq!(r.render("ja").body, r.render("en").body);
    assert_eq!(r.render("DE").language, "de");
    assert_eq!(r.render("pt-br").language, "pt-BR");
    let default_de = parse(&valid_with("default_language = \"en\"", "default_language = \"de\"")).unwrap();
    assert_eq!(default_de.render("ja").language, "de");
}

#[test]
fn render_expands_every_occurrence_and_normalises_line_ends() {
    let text =
        valid_with("body = \"Olá\\n{hot_topics}\\n\"", "body = \"Olá\\r\\n{hot_topics}\\r\\n{hot_topics}\"");
    let r = parse(&text).unwrap();
    let body = r.render("pt-BR").body;
    assert!(!body.contains('\r') && !body.contains('{'), "{body:?}");
    assert_eq!(body.matches("20123").count(), 2);
}

// --- pick_language -----------------------------------------------------------------------

#[test]
fn pick_language_prefers_the_first_available() {
    let r = parse(VALID).unwrap();
    let pick =
        |tags: &[&str]| r.pick_language(&tags.iter().map(|s| s.to_string()).collect::<Vec<_>>()).to_string();
    assert_eq!(pick(&[]), "en");
    assert_eq!(pick(&["de"]), "de");
    assert_eq!(pick(&["DE"]), "de");
    assert_eq!(pick(&["de-CH"]), "de");
    assert_eq!(pick(&["ja", "de-AT", "en"]), "de");
    assert_eq!(pick(&["fr", "ja"]), "en");
    assert_eq!(pick(&["pt-br"]), "pt-BR");
    // "pt" alone is not "pt-BR": only the wanted tag is shortened, not the available ones.
    assert_eq!(pick(&["pt"]), "en");
    assert_eq!(pick(&["pt-PT", "de"]), "de");
    assert_eq!(pick(&[" de ", ""]), "de");
    assert_eq!(pick(&["", "-", "-de", "*"]), "en");
}

// --- match_topics ------------------------------------------------------------------------

#[test]
fn normalisation() {
    assert_eq!(normalize_for_matching("  Black-Screen!!  after\r\n\tNVIDIA, "), "black screen after nvidia");
    assert_eq!(normalize_for_matching("Wi‑Fi (Realtek RTL8821CE)"), "wi fi realtek rtl8821ce");
    assert_eq!(normalize_for_matching("Über DAS Gerät"), "über das gerät");
    assert_eq!(normalize_for_matching("!!!"), "");
    assert_eq!(normalize_for_matching(""), "");
}

#[test]
fn match_topics_respects_word_boundaries() {
    let r = parse(VALID).unwrap();
    assert_eq!(r.match_topics("My NVIDIA, card"), vec!["nvidia-black-screen"]);
    assert_eq!(r.match_topics("nvidia"), vec!["nvidia-black-screen"]);
    assert!(r.match_topics("realteknology and nvidiacard").is_empty());
    assert!(r.match_topics("myrealtek").is_empty());
    assert!(r.match_topics("").is_empty());
    // Multi-word keywords across line breaks, punctuation and case.
    assert_eq!(r.match_topics("the screen is BLACK\r\n  --\nSCREEN after boot"), vec!["nvidia-black-screen"]);
    assert!(r.match_topics("blackscreen, black screens, black-\n\nscreened").is_empty());
    assert_eq!(r.match_topics("it shows a Black\n> Screen."), vec!["nvidia-black-screen"]);
    // "wi-fi" normalises to "wi fi", and so do "Wi Fi" and "WI-FI".
    assert_eq!(r.match_topics("no WI-FI"), vec!["wifi-realtek"]);
    assert_eq!(r.match_topics("no Wi Fi"), vec!["wifi-realtek"]);
    assert!(r.match_topics("no wifi").is_empty());
}

#[test]
fn match_topics_returns_every_topic_in_file_order() {
    let r = parse(VALID).unwrap();
    assert_eq!(
        r.match_topics("MacBook with nvidia and a realtek adapter"),
        vec!["wifi-realtek", "nvidia-black-screen", "mac-start"]
    );
}

// --- robustness --------------------------------------------------------------------------

#[test]
fn odd_inputs_do_not_panic() {
    let huge_line = "x".repeat(200_000);
    let huge_string = format!("default_language = \"{}\"\n", "é".repeat(100_000));
    let many_topics: String = (0..2000)
        .map(|i| {
            format!("[topics.t{i}]\ntitle = \"T\"\nlink = \"https://x.org/{i}\"\nkeywords = [\"k{i}\"]\n")
        })
        .collect();
    let deep = format!("x = {}{}", "[".repeat(5000), "]".repeat(5000));
    let texts = [
        String::new(),
        "\u{feff}".into(),
        "\u{feff}default_language = \"en\"".into(),
        "\0\u{1}\u{2}\u{7f}".into(),
        "\u{fffd}\u{fffd}=\u{fffd}".into(),
        "[[[[".into(),
        "default_language = 3".into(),
        "hot_topics = \"x\"".into(),
        "topics = 1".into(),
        "[languages]\nen = 1".into(),
        "[languages.en]\nbody = \"{\"".into(),
        "[languages.en]\nbody = \"}{}{{}}\"".into(),
        "[topics.\"\"]\nlink = \"https://\u{0}\"".into(),
        "[topics.a]\ntranslations = 5".into(),
        "[topics.a.translations]\n\"\" = \"\"".into(),
        huge_line,
        huge_string,
        many_topics,
        deep,
        format!("{VALID}\n[languages.\"\u{202e}\"]\nsubject = \"\u{202e}\"\nbody = \"\u{0}\""),
    ];
    for t in &texts {
        // Either outcome is fine; every error must have a position inside the text.
        if let Err(e) = parse(t) {
            assert!(!e.0.is_empty());
            for d in &e.0 {
                assert!(d.line >= 1 && d.column >= 1 && d.line <= t.lines().count().max(1) + 1, "{d}");
            }
        }
    }
    let r = parse(VALID).unwrap();
    let big = format!("{} nvidia {}", "\u{0}é!?".repeat(20_000), "x ".repeat(20_000));
    assert_eq!(r.match_topics(&big), vec!["nvidia-black-screen"]);
    let _ = r.render(&"z".repeat(100_000));
    let _ = r.pick_language(&["\u{0}".into(), "-".repeat(1000), "é-é".into()]);
}

#[test]
fn a_hand_built_reply_file_does_not_panic() {
    let mut r = parse(VALID).unwrap();
    r.languages.clear();
    r.topics.clear();
    let out = r.render("de");
    assert_eq!(out.body, "");
    assert!(r.match_topics("nvidia").is_empty());
}

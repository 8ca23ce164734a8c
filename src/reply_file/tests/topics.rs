//! A reply that leads with the topics of the request (`{matched_topics}`), the topics' texts and
//! their keywords per language: rendering and validation.

use super::*;
use crate::reply_file::MAX_TOPIC_ID_CHARS;

/// A valid file with every part of a topic; tests break it in one place.
const TOPICS: &str = r#"default_language = "en"
hot_topics = ["nvidia", "wifi"]

[topics.wifi]
title = "Wi-Fi not working with some Realtek adapters"
link = "https://tails.net/doc/anonymous_internet/no-wifi/"
text = """
Tell us the model of your adapter.

lspci shows it.   """
keywords = ["realtek", "wi-fi"]

[topics.wifi.translations.de]
title = "WLAN funktioniert nicht"
text = "Nennen Sie uns das Modell."
keywords = ["wlan", "drahtlos"]

[topics.nvidia]
title = "Black screen with NVIDIA"
link = "https://gitlab.tails.boum.org/tails/tails/-/issues/1"
keywords = ["nvidia"]

[topics.nvidia.translations]
de = "Schwarzer Bildschirm mit NVIDIA"

[topics.nvidia.translations.fr]
keywords = ["écran noir"]

[topics.mac]
title = "Starting on a Mac"
link = "https://tails.net/doc/first_steps/start/mac/"
text = "Which Mac is it?"
keywords = ["macbook"]

[languages.en]
subject = "Your message"
body = """
Hello,

You wrote about:
{matched_topics}

Known problems:
{hot_topics}

Bye
"""

[languages.de]
subject = "Ihre Nachricht"
body = """
Hallo,

Sie schreiben über:
{matched_topics}

Bekannte Probleme:
{hot_topics}
"""

[languages.fr]
subject = "Votre message"
body = "Bonjour\n"
"#;

fn topics(file: &str) -> ReplyFile {
    parse(file).unwrap_or_else(|e| panic!("{e}"))
}

fn ids(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn topics_with(from: &str, to: &str) -> String {
    assert!(TOPICS.contains(from), "{from:?}");
    TOPICS.replacen(from, to, 1)
}

// --- the model ---------------------------------------------------------------------------

#[test]
fn texts_and_keywords_per_language_are_read() {
    let r = topics(TOPICS);
    let wifi = &r.topics[0];
    // Spaces at line ends and blank lines around the text go; the lines stay.
    assert_eq!(wifi.text.as_deref(), Some("Tell us the model of your adapter.\n\nlspci shows it."));
    assert_eq!(wifi.text_translations["de"], "Nennen Sie uns das Modell.");
    assert_eq!(wifi.translations["de"], "WLAN funktioniert nicht");
    assert_eq!(wifi.keywords, vec!["realtek", "wi-fi"]);
    assert_eq!(wifi.language_keywords["de"], vec!["wlan", "drahtlos"]);
    let nvidia = &r.topics[1];
    // The short form (a title alone) and a section in another language, side by side.
    assert_eq!(nvidia.translations["de"], "Schwarzer Bildschirm mit NVIDIA");
    assert!(!nvidia.translations.contains_key("fr"));
    assert_eq!(nvidia.language_keywords["fr"], vec!["écran noir"]);
    assert_eq!(nvidia.text, None);
}

#[test]
fn keywords_of_every_language_match_any_message() {
    let r = topics(TOPICS);
    assert_eq!(r.match_topics("Tails findet kein WLAN"), vec!["wifi"]);
    // German words in an English message, French ones in a German one: the language of the
    // request is not known when topics are matched.
    assert_eq!(r.match_topics("My wlan is gone"), vec!["wifi"]);
    assert_eq!(r.match_topics("Ich sehe nur ein Écran noir"), vec!["nvidia"]);
    assert_eq!(r.match_topics("drahtlose Verbindung"), Vec::<String>::new(), "whole words only");
}

// --- rendering ---------------------------------------------------------------------------

#[test]
fn the_reply_leads_with_the_matched_topics_and_the_hot_list_leaves_them_out() {
    let r = topics(TOPICS);
    let en = r.render_leading("en", &ids(&["wifi"]));
    assert_eq!(
        en.body,
        "Hello,\n\nYou wrote about:\n\
         - Wi-Fi not working with some Realtek adapters\n  \
         https://tails.net/doc/anonymous_internet/no-wifi/\n  \
         Tell us the model of your adapter.\n\n  \
         lspci shows it.\n\n\
         Known problems:\n\
         - Black screen with NVIDIA\n  \
         https://gitlab.tails.boum.org/tails/tails/-/issues/1\n\nBye\n"
    );
    // In German: the German title and text.
    let de = r.render_leading("de", &ids(&["wifi"]));
    assert!(
        de.body.starts_with(
            "Hallo,\n\nSie schreiben über:\n- WLAN funktioniert nicht\n  \
             https://tails.net/doc/anonymous_internet/no-wifi/\n  Nennen Sie uns das Modell.\n\n"
        ),
        "{}",
        de.body
    );
    assert!(de.body.contains("Bekannte Probleme:\n- Schwarzer Bildschirm mit NVIDIA\n"), "{}", de.body);
    assert!(!de.body.contains("Tell us"), "{}", de.body);
}

#[test]
fn without_a_matched_topic_the_paragraph_is_left_out_without_a_gap() {
    let r = topics(TOPICS);
    let none = r.render("en").body;
    assert_eq!(
        none,
        "Hello,\n\nKnown problems:\n\
         - Black screen with NVIDIA\n  https://gitlab.tails.boum.org/tails/tails/-/issues/1\n\
         - Wi-Fi not working with some Realtek adapters\n  \
         https://tails.net/doc/anonymous_internet/no-wifi/\n\nBye\n"
    );
    // Ids the file does not have (a topic removed since the decision) are no topic.
    assert_eq!(r.render_leading("en", &ids(&["gone"])).body, none);
}

#[test]
fn several_topics_keep_the_order_given_and_each_shows_once() {
    let r = topics(TOPICS);
    let body = r.render_leading("en", &ids(&["mac", "nvidia", "mac", "gone"])).body;
    let mac = body
        .find("- Starting on a Mac\n  https://tails.net/doc/first_steps/start/mac/\n  Which Mac is it?\n\n");
    let nvidia = body
        .find("- Black screen with NVIDIA\n  https://gitlab.tails.boum.org/tails/tails/-/issues/1\n\nKnown");
    assert!(mac.is_some_and(|m| nvidia.is_some_and(|n| m < n)), "{body}");
    assert_eq!(body.matches("Starting on a Mac").count(), 1, "{body}");
    // A topic that is not hot is shown at the top, and the hot list stays as it was but for
    // the shown ones.
    assert_eq!(body.matches("Black screen with NVIDIA").count(), 1, "{body}");
    assert!(body.contains("Known problems:\n- Wi-Fi not working"), "{body}");
}

#[test]
fn a_language_without_a_translation_shows_the_default_title_and_text() {
    let r = topics(&topics_with("body = \"Bonjour\\n\"", "body = \"Bonjour\\n\\n{matched_topics}\\n\""));
    let fr = r.render_leading("fr", &ids(&["wifi"])).body;
    assert_eq!(
        fr,
        "Bonjour\n\n- Wi-Fi not working with some Realtek adapters\n  \
         https://tails.net/doc/anonymous_internet/no-wifi/\n  Tell us the model of your adapter.\n\n  \
         lspci shows it.\n"
    );
    // A body without {matched_topics} is as it always was: nothing at the top, the hot list whole.
    let r = topics(TOPICS);
    assert_eq!(r.render_leading("fr", &ids(&["wifi"])).body, "Bonjour\n");
    let legacy = parse(VALID).unwrap();
    for lang in ["en", "de", "pt-BR"] {
        let led = legacy.render_leading(lang, &ids(&["wifi-realtek", "mac-start"]));
        assert_eq!(led, legacy.render(lang));
    }
}

#[test]
fn when_every_hot_topic_is_shown_the_hot_paragraph_is_left_out() {
    let r = topics(TOPICS);
    let body = r.render_leading("en", &ids(&["wifi", "nvidia"])).body;
    assert!(!body.contains("Known problems"), "{body}");
    assert!(body.ends_with("  https://gitlab.tails.boum.org/tails/tails/-/issues/1\n\nBye\n"), "{body}");
    // With hot_topics = [] nothing was left out for being shown: the body is as before.
    let r = topics(&topics_with("hot_topics = [\"nvidia\", \"wifi\"]", "hot_topics = []"));
    assert!(r.render_leading("en", &ids(&["wifi"])).body.contains("Known problems:\n\n\nBye\n"));
}

#[test]
fn the_paragraph_of_matched_topics_goes_wherever_it_stands() {
    let body = |b: &str| topics(&topics_with("body = \"Bonjour\\n\"", &format!("body = {b:?}")));
    let cases = [
        // At the start, the end, alone, inline, with a blank line of spaces, without a last line end.
        ("{matched_topics}\n\nBonjour\n", "Bonjour\n"),
        ("Bonjour\n\n{matched_topics}\n", "Bonjour\n"),
        ("Bonjour\n\nVoici : {matched_topics}.\nFin\n\nMerci", "Bonjour\n\nMerci"),
        ("Bonjour\n  \n{matched_topics}\n \nMerci\n", "Bonjour\n  \nMerci\n"),
        ("Bonjour\n\n{matched_topics}", "Bonjour\n"),
    ];
    for (b, want) in cases {
        assert_eq!(body(b).render("fr").body, want, "{b:?}");
    }
    // Inline, when a topic matched: replaced where it stands.
    let r = body("Voici : {matched_topics}.\n\nMerci");
    assert_eq!(
        r.render_leading("fr", &ids(&["nvidia"])).body,
        "Voici : - Black screen with NVIDIA\n  https://gitlab.tails.boum.org/tails/tails/-/issues/1.\n\nMerci"
    );
}

#[test]
fn titles_and_texts_are_not_expanded_again() {
    let text = topics_with("title = \"Starting on a Mac\"", "title = \"Mac {hot_topics} {matched_topics}\"");
    let body = topics(&text).render_leading("en", &ids(&["mac"])).body;
    assert!(body.contains("- Mac {hot_topics} {matched_topics}\n"), "{body}");
}

// --- validation --------------------------------------------------------------------------

#[test]
fn the_matched_topics_placeholder_is_known() {
    let text = topics_with("{matched_topics}\n\nKnown", "{matched_topic}\n\nKnown");
    let d = one_error(&text, "unknown placeholder {matched_topic}");
    assert!(d.message.contains("{matched_topics} and {hot_topics}"), "{}", d.message);
    assert_eq!(d.line, line_of(&text, "{matched_topic}"));
}

#[test]
fn texts_and_keywords_need_their_language() {
    let text = topics_with("[topics.wifi.translations.de]", "[topics.wifi.translations.it]");
    let d = one_error(&text, "has a title, a text and keywords in \"it\" but there is no [languages.it]");
    assert_eq!(d.line, line_of(&text, "[topics.wifi.translations.it]"));
    let text = topics_with("[topics.nvidia.translations.fr]", "[topics.nvidia.translations.pt]");
    one_error(&text, "the topic \"nvidia\" has keywords in \"pt\" but there is no [languages.pt] section");
    // Matched without regard to case, kept under the spelling of the language's section.
    let r = topics(&topics_with("[topics.wifi.translations.de]", "[topics.wifi.translations.DE]"));
    assert_eq!(r.topics[0].text_translations["de"], "Nennen Sie uns das Modell.");
    assert_eq!(r.match_topics("wlan"), vec!["wifi"]);
}

#[test]
fn texts_are_not_empty_and_have_no_control_characters() {
    let text = topics_with("text = \"Which Mac is it?\"", "text = \"  \\n \"");
    let d = one_error(&text, "the text of the topic \"mac\" is empty");
    assert_eq!(d.line, line_of(&text, "text = \"  "));
    one_error(
        &topics_with("\"Nennen Sie uns das Modell.\"", "\"\""),
        "the de text of the topic \"wifi\" is empty",
    );
    for bad in ["a\\tb", "a\\u0000", "a\\rb", "a\\u2028b", "a\\u001bb"] {
        let text = topics_with("\"Which Mac is it?\"", &format!("\"{bad}\""));
        one_error(&text, "contains a control character");
    }
    // CRLF line ends are line ends.
    let r = topics(&topics_with("\"Which Mac is it?\"", "\"Which\\r\\nMac?\""));
    assert_eq!(r.topics[2].text.as_deref(), Some("Which\nMac?"));
}

#[test]
fn translations_are_not_empty_nor_given_twice() {
    let text = topics_with(
        "[topics.nvidia.translations.fr]\nkeywords = [\"écran noir\"]",
        "[topics.nvidia.translations.fr]",
    );
    one_error(&text, "the fr translation of the topic \"nvidia\" is empty");
    let text = topics_with("de = \"Schwarzer", "DE = \"x\"\nde = \"Schwarzer");
    one_error(&text, "has two translations in \"de\"");
    let text = topics_with("text = \"Nennen", "titel = \"x\"\ntext = \"Nennen");
    let d = one_error(&text, "unknown field `titel`");
    assert_eq!(d.line, line_of(&text, "titel"));
    let text = topics_with("keywords = [\"wlan\", ", "keywords = [\"--\", \"wlan\", ");
    one_error(&text, "the de keyword \"--\" of the topic \"wifi\" can never match");
    one_error(
        &topics_with("de = \"Schwarzer Bildschirm mit NVIDIA\"", "de = 3"),
        "a translated title such as",
    );
}

#[test]
fn topic_ids_are_capped() {
    let long = "a".repeat(MAX_TOPIC_ID_CHARS);
    let r = topics(&TOPICS.replace("[topics.mac]", &format!("[topics.{long}]")));
    assert_eq!(r.topics[2].id, long);
    let text = TOPICS.replace("[topics.mac]", &format!("[topics.{long}b]"));
    let d = one_error(&text, "is 65 characters long: keep it to 64 at most");
    assert_eq!((d.line, d.column), (line_of(&text, "[topics.aaa"), 9));
}

#[test]
fn the_paragraph_of_matched_topics_must_not_hold_the_hot_list_nor_be_all() {
    let text = topics_with("{matched_topics}\n\nKnown problems:\n", "{matched_topics}\nKnown problems:\n");
    let d = one_error(&text, "{hot_topics} is in the same paragraph as {matched_topics}");
    assert_eq!(d.line, line_of(&text, "{hot_topics}"));
    let text = topics_with("body = \"Bonjour\\n\"", "body = \"\\n{matched_topics}\\n\\n\"");
    one_error(&text, "the body of [languages.fr] has nothing but the paragraph of {matched_topics}");
}

#[test]
fn all_new_problems_are_reported_at_once() {
    let text = TOPICS
        .replace("[topics.wifi.translations.de]", "[topics.wifi.translations.it]")
        .replace("text = \"Which Mac is it?\"", "text = \"\\t\"")
        .replace("{matched_topics}\n\nKnown", "{matched}\n\nKnown");
    let e = errors(&text);
    assert_eq!(e.len(), 3, "{}", Diagnostics(e.clone()));
    let lines: Vec<usize> = e.iter().map(|d| d.line).collect();
    assert_eq!(
        lines,
        vec![line_of(&text, "translations.it]"), line_of(&text, "text = \"\\t"), line_of(&text, "{matched}")]
    );
}

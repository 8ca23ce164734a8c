//! `helpdesk-milter preview`, as the Help Desk runs it: the reply a saved message would get, as
//! sent (encoded) and, with `--text`, decoded for proofreading.

use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_helpdesk-milter");
const REPLY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/reply.toml");

fn preview(args: &[&str], message: &str) -> Output {
    preview_with(REPLY, args, message)
}

fn preview_with(reply: &str, args: &[&str], message: &str) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("request.eml");
    std::fs::write(&path, message).unwrap();
    let out = Command::new(BIN).args(["preview", "--reply", reply]).args(args).arg(&path).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

const GERMAN: &str = "From: Jörg <joerg@example.org>\nTo: support@tails.net\nSubject: WLAN\n\
                      Content-Language: de\n\nTails findet kein WLAN.\n";

#[test]
fn preview_text_shows_the_reply_decoded_and_leading_with_the_topic() {
    let out = stdout(&preview(&["--text"], GERMAN));
    let (head, body) = out.split_once("\n\n").unwrap();
    assert!(head.lines().any(|l| l == "To: Jörg <joerg@example.org>"), "{head}");
    assert!(head.lines().any(|l| l == "Content-Language: de"), "{head}");
    assert_eq!(
        body,
        "Ihre Nachricht betrifft:\n- WLAN funktioniert nicht mit Realtek\n  \
         https://tails.net/doc/anonymous_internet/no-wifi/\n  Tell us the model of your Wi-Fi adapter:\n  \
         the command lspci shows it.\n\nDies ist eine automatische Antwort. Bekannte Probleme:\n\n\
         - Schwarzer Bildschirm mit NVIDIA-Grafik\n  https://gitlab.tails.boum.org/tails/tails/-/issues/1\n"
    );
    // --lang picks the language, the topics stay those of the message.
    let en = stdout(&preview(&["--text", "--lang", "en"], GERMAN));
    assert!(en.contains("\n\nYour message is about:\n- Wi-Fi not working with Realtek\n"), "{en}");
}

#[test]
fn preview_without_text_prints_the_message_as_sent() {
    // A text with letters outside ASCII, which travels in quoted-printable.
    let dir = tempfile::tempdir().unwrap();
    let reply = dir.path().join("reply.toml");
    let file = std::fs::read_to_string(REPLY).unwrap().replace(
        "text = \"Nennen Sie uns das Modell Ihrer Grafikkarte.\"",
        "text = \"Nennen Sie uns die Größe Ihres Bildschirms.\"",
    );
    std::fs::write(&reply, file).unwrap();
    let reply = reply.to_str().unwrap();
    let black = GERMAN.replace("kein WLAN", "nur einen schwarzen Bildschirm, NVIDIA");
    let out = stdout(&preview_with(reply, &[], &black));
    assert!(out.contains("\r\n"), "CRLF line ends, as sent");
    assert!(out.contains("Content-Transfer-Encoding: quoted-printable\r\n"), "{out}");
    assert!(out.contains("To: =?utf-8?") && out.contains("Gr=C3=B6=C3=9Fe"), "{out}");
    let text = stdout(&preview_with(reply, &["--text"], &black));
    assert!(text.contains("\n  Nennen Sie uns die Größe Ihres Bildschirms.\n"), "{text}");
    assert!(!text.contains('\r') && !text.contains("=C3"), "{text}");
}

#[test]
fn preview_says_when_the_daemon_would_not_answer() {
    let follow_up = "From: a@example.org\nTo: support@tails.net\nSubject: Re: WLAN\nIn-Reply-To: <x@example.org>\n\nkein WLAN\n";
    let out = preview(&["--text"], follow_up);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("would send no reply") && err.contains("X-HelpDesk-Autoreply: suppressed (class)"),
        "{err}"
    );
    // A follow-up's topics lead nothing.
    let body = stdout(&out);
    assert!(
        body.contains("\n\nDies ist eine automatische Antwort") || body.contains("\n\nThis is"),
        "{body}"
    );
    assert!(!body.contains("betrifft") && !body.contains("is about"), "{body}");
}

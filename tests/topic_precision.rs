//! Keyword precision: requests as the Help Desk's users write them, in English and German, about
//! one problem each, go through the daemon's end of message (`triage::end_of_message`) with the
//! test reply file and with the example one. Each must be recognised as its own topic and never
//! as another: a topic matched by mistake would lead the reply with a problem the writer does
//! not have. The requests were written for these tests, in the words of people who are not
//! technical, some with the details that people add (hardware, versions, quoted errors).

use helpdesk_milter::classify::Envelope;
use helpdesk_milter::commands;
use helpdesk_milter::config::Config;
use helpdesk_milter::reply_file::ReplyFile;
use helpdesk_milter::state::ReplyState;
use helpdesk_milter::triage::{self, Deps};
use std::path::Path;

/// The problems the requests are about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum About {
    BlackScreen,
    Wifi,
    PersistentStorage,
    Mac,
    /// Something no topic is about.
    Other,
}

use About::*;

/// (about, subject, body). German ones say so in their subject or body only: the language of a
/// request plays no part in matching.
const REQUESTS: &[(About, &str, &str)] = &[
    (
        BlackScreen,
        "Black screen after Welcome Screen",
        "Hi, when I click Start Tails the screen goes black and nothing happens. Only the mouse \
         pointer is visible. My laptop is a Lenovo Legion with a GeForce RTX 3060. I tried twice.",
    ),
    (
        BlackScreen,
        "tails doesnt start",
        "hello i have a problem, after the welcome screen i only get a black screen. i have nvidia \
         graphics i think. what can i do??",
    ),
    (
        BlackScreen,
        "Bildschirm bleibt schwarz",
        "Hallo, nach dem Begrüßungsbildschirm bleibt bei mir alles dunkel, der Bildschirm ist \
         schwarz. Mein Computer hat eine Grafikkarte von NVIDIA. Vielen Dank für Ihre Hilfe.",
    ),
    (
        BlackScreen,
        "Problem beim Start",
        "Guten Tag, wenn ich auf Tails starten klicke, bleibt der Bildschirm schwarz. Ich kann \
         nichts mehr machen außer den Computer auszuschalten. Was soll ich tun?",
    ),
    (
        Wifi,
        "No Wi-Fi networks",
        "Tails does not show any Wi-Fi network on my laptop, on Windows it works fine. lspci says: \
         Network controller: Realtek Semiconductor Co., Ltd. RTL8821CE 802.11ac PCIe Adapter.",
    ),
    (
        Wifi,
        "cant connect to internet",
        "I can't connect to the internet with Tails, my wifi is not detected at all. I only have \
         wifi, no cable. Please help.",
    ),
    (
        Wifi,
        "Kein WLAN",
        "Hallo, Tails findet kein WLAN. Unter Windows funktioniert es. In meinem Laptop steckt ein \
         Realtek-Adapter. Gibt es eine Lösung?",
    ),
    (
        Wifi,
        "Keine Verbindung",
        "Guten Tag, ich kann mich mit Tails nicht mit dem Internet verbinden, es wird kein \
         WLAN-Netz angezeigt. Ein Kabel habe ich nicht.",
    ),
    (
        PersistentStorage,
        "Persistent Storage does not unlock",
        "Since I upgraded to the latest version, the Welcome Screen says it cannot unlock my \
         Persistent Storage, but I am sure my passphrase is correct. I have important files on it.",
    ),
    (
        PersistentStorage,
        "lost my files?",
        "After the update my persistence doesn't open anymore. It says error unlocking. Are my \
         files gone?",
    ),
    (
        PersistentStorage,
        "Beständiger Speicher",
        "Hallo, seit dem Upgrade kann ich meinen Beständigen Speicher nicht mehr entsperren, \
         obwohl die Passphrase stimmt. Sind meine Daten verloren?",
    ),
    (
        PersistentStorage,
        "Upgrade Problem",
        "Guten Tag, nach dem letzten Upgrade lässt sich der persistente Speicher nicht öffnen: \
         Fehler beim Entsperren. Was kann ich tun?",
    ),
    (
        Mac,
        "Tails on Mac",
        "I'm trying to start Tails from a USB stick on my MacBook Air (2017). When I hold the \
         Option key, the USB stick does not show up, only Macintosh HD.",
    ),
    (
        Mac,
        "start on imac",
        "Hello, does Tails work on an iMac with the M1 chip? I can not select the USB when \
         starting.",
    ),
    (
        Mac,
        "Tails auf dem Mac",
        "Hallo, ich möchte Tails auf meinem MacBook Pro starten, aber beim Einschalten wird der \
         USB-Stick nicht angezeigt. Das Gerät ist von 2019.",
    ),
    (
        Other,
        "Verify download",
        "How do I verify the Tails image I downloaded? The browser extension is gone.",
    ),
    (
        Other,
        "Tor does not connect",
        "Tor Browser says the connection to the Tor network failed. I am in a country where Tor is \
         blocked. Which bridges should I use?",
    ),
    (
        Other,
        "Installation",
        "Hallo, wie kann ich Tails von Windows aus auf einen USB-Stick installieren? Ich habe \
         die Anleitung nicht verstanden.",
    ),
    (
        Other,
        "Passwort vergessen",
        "Guten Tag, ich habe das Administrationspasswort vergessen, das ich im Begrüßungsbildschirm \
         festgelegt habe. Wie kann ich es zurücksetzen?",
    ),
];

fn load(path: &str) -> ReplyFile {
    ReplyFile::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap_or_else(|e| panic!("{e}"))
}

/// The topics the daemon recognises in a request: its end of message, as the milter runs it.
fn topics(file: &ReplyFile, subject: &str, body: &str) -> Vec<String> {
    let config = Config::defaults(Path::new("/x.toml"));
    let raw = format!(
        "From: Someone <someone@example.org>\r\nTo: support@tails.net\r\nSubject: {subject}\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n"
    );
    let data = commands::read_message(&config, raw.as_bytes()).unwrap();
    let state = ReplyState::in_memory();
    let deps = Deps { reply_file: Some(file), state: &state, now: 1_800_000_000 };
    let env = Envelope::new("someone@example.org", ["support@tails.net"]);
    let t = triage::end_of_message(&config, &deps, &env, &data).unwrap();
    assert_eq!(t.class.map(|c| c.as_str()), Some("support"), "{subject}");
    // What leads the reply is what was matched.
    let (request, _) = t.reply.expect("a new request is answered");
    assert_eq!(request.topics, t.topics);
    t.topics
}

#[test]
fn each_request_matches_its_own_topic_in_the_test_reply_file_and_no_other() {
    let file = load("tests/data/reply.toml");
    let id = |about: About| match about {
        BlackScreen => Some("nvidia-black-screen"),
        Wifi => Some("wifi-realtek"),
        Mac => Some("mac"),
        PersistentStorage | Other => None,
    };
    for (about, subject, body) in REQUESTS {
        let want: Vec<String> = id(*about).into_iter().map(String::from).collect();
        assert_eq!(topics(&file, subject, body), want, "{about:?}: {subject:?}");
    }
}

#[test]
fn the_example_topics_do_not_match_each_others_requests() {
    // Only what the example's topics are about is assumed: the Help Desk edits its keywords,
    // and may remove a topic (its requests must then match nothing).
    let file = load("etc/reply.toml");
    let own = |about: About| match about {
        BlackScreen => Some("nvidia-black-screen"),
        Wifi => Some("wifi-realtek"),
        PersistentStorage => Some("persistent-storage-unlock"),
        Mac => Some("start-on-mac"),
        Other => None,
    };
    for (about, subject, body) in REQUESTS {
        for got in topics(&file, subject, body) {
            assert_eq!(Some(got.as_str()), own(*about), "{about:?}: {subject:?} matches another topic");
        }
    }
}

#[test]
fn german_keywords_are_written_apart_and_match_any_request() {
    let file = load("tests/data/reply.toml");
    let wifi = file.topics.iter().find(|t| t.id == "wifi-realtek").unwrap();
    assert_eq!(wifi.keywords, vec!["realtek", "wifi", "wi-fi"]);
    assert_eq!(wifi.language_keywords["de"], vec!["wlan"]);
    // Found by its German keyword alone, in a German request and in an English one.
    assert_eq!(topics(&file, "Kein WLAN", "Tails findet kein Netz."), vec!["wifi-realtek"]);
    assert_eq!(topics(&file, "help", "my WLAN does not work"), vec!["wifi-realtek"]);
    // And the English keyword in a German request.
    assert_eq!(topics(&file, "Hilfe", "Mein Realtek-Adapter geht nicht."), vec!["wifi-realtek"]);
}

//! Load and fault helpers: a raw SMTP client that can keep a session open or drop it in the
//! middle of DATA (lettre cannot), the message classes of the Help Desk's mail, and samples of a
//! process's memory and open files from /proc.
//!
//! Use from a test file with `#[path = "support/load.rs"] mod load;`.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

pub const HELPDESK: &str = "support@tails.net";

/// One SMTP session over plain TCP, one command at a time (no pipelining).
pub struct Smtp {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Smtp {
    /// Connects, reads the greeting and says EHLO. `Err` holds the server's answer.
    pub fn connect(port: u16) -> Result<Smtp, String> {
        let stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
        // Only guards against a hang; Postfix answers in milliseconds unless a milter stalls.
        stream.set_read_timeout(Some(Duration::from_secs(120))).map_err(|e| e.to_string())?;
        let writer = stream.try_clone().map_err(|e| e.to_string())?;
        let mut s = Smtp { reader: BufReader::new(stream), writer };
        s.expect(2)?;
        s.command("EHLO client.example", 2)?;
        Ok(s)
    }

    /// Reads one (possibly multi-line) reply; `Err` unless its code starts with `class`.
    fn expect(&mut self, class: u8) -> Result<String, String> {
        let mut text = String::new();
        loop {
            let mut line = String::new();
            let n = self.reader.read_line(&mut line).map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Err(format!("connection closed after {text:?}"));
            }
            text.push_str(&line);
            // "250-" continues, "250 " ends a reply.
            if line.len() < 4 || line.as_bytes()[3] != b'-' {
                break;
            }
        }
        if text.as_bytes().first() == Some(&(b'0' + class)) { Ok(text) } else { Err(text.trim().to_owned()) }
    }

    fn command(&mut self, line: &str, class: u8) -> Result<String, String> {
        self.writer.write_all(format!("{line}\r\n").as_bytes()).map_err(|e| format!("write: {e}"))?;
        self.expect(class)
    }

    /// MAIL, RCPT and DATA up to the 354; `sender` "" is the null sender.
    pub fn begin(&mut self, sender: &str, rcpt: &str) -> Result<(), String> {
        self.command(&format!("MAIL FROM:<{sender}>"), 2)?;
        self.command(&format!("RCPT TO:<{rcpt}>"), 2)?;
        self.command("DATA", 3).map(drop)
    }

    /// Writes raw message bytes (CRLF lines, not yet dot-stuffed) without ending the message.
    pub fn write_data(&mut self, data: &[u8]) -> Result<(), String> {
        let mut stuffed = Vec::with_capacity(data.len() + 16);
        for line in data.split_inclusive(|&b| b == b'\n') {
            if line.first() == Some(&b'.') {
                stuffed.push(b'.');
            }
            stuffed.extend_from_slice(line);
        }
        self.writer.write_all(&stuffed).map_err(|e| format!("write: {e}"))
    }

    /// One whole transaction; `Err` holds the first answer that was not a success.
    pub fn send(&mut self, sender: &str, rcpt: &str, message: &[u8]) -> Result<(), String> {
        self.begin(sender, rcpt)?;
        self.write_data(message)?;
        let end: &[u8] = if message.ends_with(b"\r\n") { b".\r\n" } else { b"\r\n.\r\n" };
        self.writer.write_all(end).map_err(|e| format!("write: {e}"))?;
        self.expect(2).map(drop)
    }

    pub fn quit(mut self) {
        let _ = self.command("QUIT", 2);
    }
}

/// What a test message is, and so what the daemon must decide for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    WhisperBack,
    /// A new support request (a reply is due if the sender was not answered yet).
    Support,
    Followup,
    Team,
    /// A bounce: null sender, `multipart/report`.
    Bounce,
    /// Mailing-list mail (`List-Id`).
    List,
    /// `Auto-Submitted: auto-generated`.
    AutoSubmitted,
    Spam,
}

impl Kind {
    pub const ALL: [Kind; 8] = [
        Kind::WhisperBack,
        Kind::Support,
        Kind::Followup,
        Kind::Team,
        Kind::Bounce,
        Kind::List,
        Kind::AutoSubmitted,
        Kind::Spam,
    ];

    /// The `X-HelpDesk-Class` the daemon must add.
    pub fn class(self) -> &'static str {
        match self {
            Kind::WhisperBack => "whisperback",
            Kind::Support => "support",
            Kind::Followup => "followup",
            Kind::Team => "team",
            Kind::Bounce | Kind::List | Kind::AutoSubmitted => "automated",
            Kind::Spam => "spam",
        }
    }
}

/// The Authentication-Results of team mail, and the daemon settings that trust it.
pub const AUTH_RESULTS: &str = "Authentication-Results: mx.tails.net; dkim=pass header.d=tails.net\n";
pub const TEAM_BY_DKIM: &str =
    "[helpdesk]\nteam_trust = [\"dkim\"]\ntrusted_authserv_ids = [\"mx.tails.net\"]\n";

/// A message of `kind` with Message-ID `<id>`, and its envelope sender ("" = null sender).
/// `sender` is the writer's address (ignored for WhisperBack, bounces and team mail, whose
/// senders are fixed by their kind).
/// The report ID of the WhisperBack report `message` makes for `id`: one per ID (digits stay
/// digits, the dots become `e`).
pub fn report_id(id: &str) -> String {
    id.bytes().map(|b| format!("{:x}", b % 16)).take(32).collect()
}

/// The Message-ID that message `id` of `kind` has once delivered: a WhisperBack report's is
/// replaced by the one derived from its report ID (see src/tagging.rs), any other is kept.
pub fn delivered_message_id(kind: Kind, id: &str) -> String {
    match kind {
        Kind::WhisperBack => format!("<whisperback.{}@tails.net>", report_id(id)),
        _ => format!("<{id}>"),
    }
}

pub fn message(kind: Kind, id: &str, sender: &str) -> (String, Vec<u8>) {
    let common = format!("To: {HELPDESK}\nMessage-ID: <{id}>\nDate: Sat, 21 Nov 2026 10:00:00 +0000\n");
    let (envelope, text) = match kind {
        Kind::WhisperBack => {
            let sample = std::fs::read_to_string(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/data/whisperback-sample.eml"
            ))
            .expect("tests/data/whisperback-sample.eml");
            // The sample has no Message-ID (WhisperBack sets none; the relay before us would).
            let sample = sample.replace(
                "Subject: Bug report: 4ffd523ac6b83288ba219a6a55f4971b",
                &format!("Subject: Bug report: {}\nMessage-ID: <{id}>", report_id(id)),
            );
            ("devnull@tails.boum.org".to_owned(), sample)
        }
        Kind::Support => (
            sender.to_owned(),
            format!(
                "From: {sender}\n{common}Subject: Tails does not start\n\n\
                 Hello, my laptop shows a black screen after the boot menu. What can I do?\n"
            ),
        ),
        Kind::Followup => (
            sender.to_owned(),
            format!(
                "From: {sender}\n{common}Subject: Re: Tails does not start\n\
                 In-Reply-To: <answer.{id}@tails.net>\nReferences: <answer.{id}@tails.net>\n\n\
                 Thanks, that worked.\n"
            ),
        ),
        Kind::Team => (
            "sysadmin@tails.net".to_owned(),
            // Trusted by a DKIM pass (the daemon's configuration says whose): the rig has no SASL.
            format!(
                "{AUTH_RESULTS}From: sysadmin@tails.net\n{common}Subject: [FT] look at this report\n\nSee wb:1234.\n"
            ),
        ),
        Kind::Bounce => (
            String::new(),
            format!(
                "From: MAILER-DAEMON@mx.example\n{common}Subject: Undelivered Mail Returned to Sender\n\
                 MIME-Version: 1.0\nContent-Type: multipart/report; report-type=delivery-status; \
                 boundary=\"b1\"\n\n--b1\nContent-Type: text/plain\n\nYour message could not be \
                 delivered.\n--b1\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; \
                 mx.example\n\nFinal-Recipient: rfc822; someone@example.org\nAction: failed\n\
                 Status: 5.1.1\n--b1--\n"
            ),
        ),
        Kind::List => (
            sender.to_owned(),
            format!(
                "From: {sender}\n{common}Subject: [tails-dev] weekly notes\n\
                 List-Id: <tails-dev.boum.org>\nPrecedence: list\n\nNotes of the week.\n"
            ),
        ),
        Kind::AutoSubmitted => (
            sender.to_owned(),
            format!(
                "From: {sender}\n{common}Subject: Build report\nAuto-Submitted: auto-generated\n\n\
                 Nightly build passed.\n"
            ),
        ),
        Kind::Spam => (
            sender.to_owned(),
            format!("From: {sender}\n{common}Subject: Cheap pills\nX-Spam-Flag: YES\n\nBuy now.\n"),
        ),
    };
    (envelope, crlf(&text))
}

pub fn crlf(s: &str) -> Vec<u8> {
    s.replace("\r\n", "\n").replace('\n', "\r\n").into_bytes()
}

/// Waits until `pid` has at most `n` open files; returns the last count seen.
pub fn wait_fds_at_most(pid: u32, n: usize, timeout: Duration) -> usize {
    let t0 = std::time::Instant::now();
    loop {
        let now = crate::daemon::fd_count(pid);
        if now <= n || t0.elapsed() > timeout {
            return now;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

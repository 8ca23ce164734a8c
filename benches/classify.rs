//! Classifier micro-benchmark: the work the milter does for one message, on one core.
//!
//! For each message of a corpus generated here (WhisperBack report, plaintext and PGP/MIME
//! requests, follow-up, bounce, list mail; 2 KiB to 1 MiB), one iteration is what the milter's
//! callbacks do between MAIL FROM and the end of message, minus the milter protocol itself:
//! the envelope, a `MessageData` filled one header field at a time and with body chunks of at
//! most 65535 bytes as Postfix sends them (stopping when the body limit is reached, as the milter
//! then asks Postfix to skip the rest), and `triage::end_of_message` with the repository's
//! configuration and reply file. Splitting the raw message into fields and body is the MTA's work
//! and happens once, outside the timed loop.
//!
//!     cargo bench --bench classify                    # criterion's default 3 s + 5 s per message
//!     cargo bench --bench classify -- --quick         # short runs
//!     cargo bench --bench classify -- --warm-up-time 1 --measurement-time 2
//!     cargo bench --bench classify -- plaintext       # a subset (criterion filter)
//!
//! After criterion's runs it prints a table (messages/s on one core, allocations and bytes
//! allocated per message) and writes it to target/bench-results/classify.tsv. Messages/s is
//! 1e9 / criterion's estimate of the time per message, the one it prints (the slope, else the
//! mean, from target/criterion/triage/<id>/new/estimates.json), or, for a message criterion did
//! not measure in this run, 1e9 / the mean of a timed loop of our own; the `timing` column says
//! which. Timings need an otherwise idle machine; allocation counts do not.

use criterion::{Criterion, Throughput};
use helpdesk_milter::address;
use helpdesk_milter::classify::{Class, Envelope};
use helpdesk_milter::config::Config;
use helpdesk_milter::message::MessageData;
use helpdesk_milter::reply_file::ReplyFile;
use helpdesk_milter::state::ReplyState;
use helpdesk_milter::triage::{self, Deps, Triage};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::fmt::Write as _;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

// ---------------------------------------------------------------------------------------------
// Counting allocator

/// The system allocator, counting allocator calls and requested bytes while `COUNTING` is set.
/// Counting is off during criterion's runs, which then pay one relaxed load per call.
struct CountingAlloc;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

fn count(bytes: usize) {
    if COUNTING.load(Ordering::Relaxed) {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(bytes as u64, Ordering::Relaxed);
    }
}

// SAFETY: every call is forwarded unchanged to `System`, which upholds the GlobalAlloc contract.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: same layout as given to us.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: same layout as given to us.
        unsafe { System.alloc_zeroed(layout) }
    }

    /// A realloc counts as one allocation of the new size (what a grow costs the allocator).
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size);
        // SAFETY: the caller's guarantees for `ptr`, `layout` and `new_size` carry over.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

// ---------------------------------------------------------------------------------------------
// Corpus

const KIB: usize = 1024;
/// Postfix's milter body chunk (MILTER_CHUNK_SIZE).
const BODY_CHUNK: usize = 65535;
const HELPDESK: &str = "support@tails.net";
const WHISPERBACK_SENDER: &str = "devnull@tails.boum.org";

/// One corpus message, pre-split as the MTA hands it to the milter.
#[derive(Clone)]
struct Sample {
    id: String,
    /// Envelope sender as in MAIL FROM (empty: the null sender).
    sender: String,
    raw_len: usize,
    /// (name, value) per header field: value without the space after the colon, folds as `\n`.
    headers: Vec<(Vec<u8>, Vec<u8>)>,
    /// The body with CRLF line ends, as Postfix sends it.
    body: Vec<u8>,
    expect: Class,
}

/// Deterministic pseudo-random numbers (SplitMix64), for ids, hashes and ciphertext.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn base64(&mut self, n: usize) -> String {
        const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        (0..n).map(|_| B64[self.below(64) as usize] as char).collect()
    }

    fn alnum(&mut self, n: usize) -> String {
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        (0..n).map(|_| A[self.below(A.len() as u64) as usize] as char).collect()
    }

    fn hex(&mut self, n: usize) -> String {
        (0..n).map(|_| char::from_digit(self.below(16) as u32, 16).unwrap_or('0')).collect()
    }

    fn uuid(&mut self) -> String {
        format!("{}-{}-{}-{}-{}", self.hex(8), self.hex(4), self.hex(4), self.hex(4), self.hex(12))
    }
}

/// `Received:` added by our Postfix for mail from `helo` at `ip`, over TLS.
fn received_here(rng: &mut Rng, helo: &str, ip: &str, date: &str) -> String {
    format!(
        "Received: from {helo} ({helo} [{ip}])\n\
         \t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)\n\
         \t key-exchange X25519 server-signature RSA-PSS (2048 bits) server-digest SHA256)\n\
         \t(No client certificate requested)\n\
         \tby mail.tails.net (Postfix) with ESMTPS id 4Zk{}\n\
         \tfor <{HELPDESK}>; {date}\n",
        rng.alnum(10)
    )
}

/// `Received:` of a submission server for an authenticated user.
fn received_submission(rng: &mut Rng, by: &str, user: &str, rcpt: &str, date: &str) -> String {
    format!(
        "Received: from [192.168.1.23] (unknown [203.0.113.{}])\n\
         \t(Authenticated sender: {user})\n\
         \tby {by} (Postfix) with ESMTPSA id 4Zk{}\n\
         \tfor <{rcpt}>; {date}\n",
        rng.below(250) + 2,
        rng.alnum(10)
    )
}

/// An rsa-sha256 DKIM-Signature (2048-bit key: 344 base64 characters), folded as signers do.
fn dkim(rng: &mut Rng, domain: &str, selector: &str, fields: &str) -> String {
    let mut s = format!(
        "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d={domain};\n\
         \ts={selector}; t=1776157961;\n\tbh={}=;\n\th={fields};\n\tb=",
        rng.base64(43)
    );
    let b = format!("{}==", rng.base64(342));
    for (i, chunk) in b.as_bytes().chunks(70).enumerate() {
        if i > 0 {
            s.push_str("\n\t ");
        }
        s.push_str(std::str::from_utf8(chunk).unwrap_or_default());
    }
    s.push('\n');
    s
}

fn auth_results(rng: &mut Rng, domain: &str, selector: &str) -> String {
    format!(
        "Authentication-Results: mail.tails.net;\n\
         \tdkim=pass (2048-bit key; unprotected) header.d={domain} header.i=@{domain}\n\
         \t header.a=rsa-sha256 header.s={selector} header.b={};\n\
         \tdkim-atps=neutral\n",
        rng.alnum(8)
    )
}

/// An ASCII-armored OpenPGP message of about `len` bytes, in lines of `width` characters.
fn armor(rng: &mut Rng, len: usize, width: usize) -> String {
    let mut s = String::from("-----BEGIN PGP MESSAGE-----\n\n");
    let lines = len.saturating_sub(60) / (width + 1);
    for _ in 0..lines.max(1) {
        s.push_str(&rng.base64(width));
        s.push('\n');
    }
    s.push_str(&format!("={}\n-----END PGP MESSAGE-----\n", rng.base64(4)));
    s
}

const PROSE: &[&str] = &[
    "I have been using Tails for about two years on my old laptop without any problem, but since I \
     upgraded to Tails 7.6.2 last week the Wi-Fi does not work anymore.",
    "The laptop is a Lenovo IdeaPad with a Realtek RTL8821CE wireless card.",
    "When I click on the network icon in the top right corner, there is no list of networks, only \
     the wired connection, which I cannot use where I live.",
    "I tried to restart several times and to install Tails again on another USB stick, but the \
     result is the same.",
    "With Tails 7.5 on the same computer everything worked, so I think that it is a regression.",
    "I also noticed that it now takes a long time before the Welcome Screen appears, maybe two \
     minutes.",
    "My Persistent Storage still unlocks fine, and my files and the additional software are there.",
    "I read the page about known issues but I did not find my card there.",
    "Is there a workaround, or should I go back to the previous version until this is fixed?",
    "I can send a report with WhisperBack if it helps, but I need the network for that.",
    "Thank you very much for your work \u{2014} Tails is very important for me and for my friends.",
];

/// Sentences from `PROSE`, cycled, as paragraphs wrapped at 72 columns.
fn prose_lines(start: usize) -> impl Iterator<Item = String> {
    (start..).flat_map(|i| {
        let mut lines = Vec::new();
        let mut line = String::new();
        for sentence in [PROSE[i % PROSE.len()], PROSE[(i + 3) % PROSE.len()]] {
            for word in sentence.split(' ') {
                if !line.is_empty() && line.len() + 1 + word.len() > 72 {
                    lines.push(std::mem::take(&mut line));
                }
                if !line.is_empty() {
                    line.push(' ');
                }
                line.push_str(word);
            }
        }
        lines.push(line);
        lines.push(String::new());
        lines
    })
}

/// journalctl output pasted into a request.
fn journal_lines() -> impl Iterator<Item = String> {
    const MSGS: &[&str] = &[
        "kernel: rtw_8821ce 0000:02:00.0: failed to download firmware",
        "kernel: rtw_8821ce 0000:02:00.0: failed to setup chip efuse info",
        "NetworkManager[1523]: <info>  [1776157961.2231] device (wlan0): state change: unavailable -> unmanaged",
        "tails-persistent-storage[2211]: Unlocking Persistent Storage on /dev/sdb2",
        "systemd[1]: Started tor@default.service - Anonymizing overlay network for TCP.",
        "tor[2567]: Bootstrapped 14% (handshake): Handshaking with a relay",
        "gnome-shell[2034]: JS ERROR: TypeError: this._network is null",
        "kernel: usb 2-1: new high-speed USB device number 3 using xhci_hcd",
    ];
    (0u64..).map(|i| {
        format!(
            "Apr 14 09:{:02}:{:02}.{:06} amnesia {}",
            (i / 60) % 60,
            i % 60,
            (i * 7919) % 1_000_000,
            MSGS[(i % MSGS.len() as u64) as usize]
        )
    })
}

/// Appends lines from `lines` until the message (header block of `header_len` bytes, blank
/// line, body, all with CRLF) is `total` bytes long; the last line is cut to fit.
fn fill(body: &mut String, header_len: usize, total: usize, lines: impl Iterator<Item = String>) {
    let crlf_len = |s: &str| s.len() + s.matches('\n').count();
    let target = total.checked_sub(header_len + 2).expect("the header alone exceeds the target size");
    for line in lines {
        let have = crlf_len(body);
        if have + line.len() + 2 >= target {
            let room = target.saturating_sub(have + 2);
            let mut cut = room.min(line.len());
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            body.push_str(&line[..cut]);
            body.push('\n');
            break;
        }
        body.push_str(&line);
        body.push('\n');
    }
}

fn plaintext_headers(rng: &mut Rng, subject: &str, thread: Option<(&str, &str)>) -> String {
    let mut h =
        received_here(rng, "mail-out.example.org", "198.51.100.23", "Tue, 14 Apr 2026 09:12:43 +0000 (UTC)");
    h += &auth_results(rng, "example.org", "mail2024");
    let signed = if thread.is_some() {
        "Date:From:To:Subject:In-Reply-To:References:From"
    } else {
        "Date:From:To:Subject:From"
    };
    h += &dkim(rng, "example.org", "mail2024", signed);
    h += &received_submission(
        rng,
        "mail-out.example.org",
        "alex.m",
        HELPDESK,
        "Tue, 14 Apr 2026 11:12:41 +0200 (CEST)",
    );
    h += &format!("Message-ID: <{}@example.org>\n", rng.uuid());
    h += "Date: Tue, 14 Apr 2026 11:12:40 +0200\nMIME-Version: 1.0\nUser-Agent: Mozilla Thunderbird\n";
    h += "Content-Language: en-US\n";
    if let Some((in_reply_to, references)) = thread {
        h += &format!("In-Reply-To: <{in_reply_to}>\nReferences: <{references}>\n <{in_reply_to}>\n");
    }
    h += &format!("To: {HELPDESK}\nFrom: Alex Martin <alex.martin@example.org>\nSubject: {subject}\n");
    h += "Content-Type: text/plain; charset=UTF-8; format=flowed\nContent-Transfer-Encoding: 8bit\n";
    // What the upstream content filter says (amavis); checked against helpdesk.spam_headers.
    h += "X-Spam-Flag: NO\n";
    h
}

/// A plaintext request from a mail client, `total` bytes: prose, then a pasted log when large.
fn plaintext(rng: &mut Rng, total: usize) -> String {
    let h = plaintext_headers(rng, "Wi-Fi not working after upgrade to Tails 7.6.2", None);
    let mut body = String::from("Hello,\n\n");
    let header_len = h.len() + h.matches('\n').count();
    if total <= 8 * KIB {
        fill(&mut body, header_len, total, prose_lines(0));
    } else {
        fill(&mut body, header_len, header_len + 2 + 2 * KIB, prose_lines(0));
        body += "\nHere is what journalctl says:\n\n";
        fill(&mut body, header_len, total, journal_lines());
    }
    format!("{h}\n{body}")
}

/// A follow-up to the Help Desk's auto-reply, quoting it.
fn followup(rng: &mut Rng, total: usize) -> String {
    let reply_id = format!("{}@tails.net", rng.uuid());
    let first_id = format!("{}@example.org", rng.uuid());
    let h = plaintext_headers(
        rng,
        "Re: Wi-Fi not working after upgrade to Tails 7.6.2",
        Some((&reply_id, &first_id)),
    );
    let mut body = String::from(
        "Hello again,\n\nI tried the workaround from the page you linked, but it did not help: the\n\
         card is still not listed. More details below.\n\n",
    );
    let header_len = h.len() + h.matches('\n').count();
    fill(&mut body, header_len, header_len + 2 + total / 3, prose_lines(4));
    body += "On 14/04/2026 11:13, Tails Help Desk wrote:\n";
    let quoted = prose_lines(7).map(|l| if l.is_empty() { ">".to_string() } else { format!("> {l}") });
    fill(&mut body, header_len, total, quoted);
    format!("{h}\n{body}")
}

/// A WhisperBack report as the relay hands it on: PGP/MIME from Python's email package.
fn whisperback(rng: &mut Rng, total: usize) -> String {
    let boundary = format!("==============={}==", 2_056_232_011_560_678_892u64 + rng.below(1 << 40));
    let mut h =
        received_here(rng, "whisperback.tails.net", "204.13.164.63", "Tue, 14 Apr 2026 09:20:11 +0000 (UTC)");
    h += &format!(
        "Received: from [127.0.0.1] (localhost [127.0.0.1])\n\
         \tby whisperback.tails.net (Postfix) with SMTP id 4Zk{}\n\
         \tfor <{HELPDESK}>; Tue, 14 Apr 2026 09:20:10 +0000 (UTC)\n",
        rng.alnum(10)
    );
    h += &format!(
        "Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=\"{boundary}\"\n\
         MIME-Version: 1.0\nContent-Disposition: inline\nSubject: Bug report: {}\n\
         From: {WHISPERBACK_SENDER}\nTo: {HELPDESK}\n",
        rng.hex(32)
    );
    let head = format!(
        "--{boundary}\nMIME-Version: 1.0\nContent-Transfer-Encoding: 7bit\n\
         Content-Type: application/pgp-encrypted; charset=\"us-ascii\"\n\nVersion: 1\n\n--{boundary}\n\
         MIME-Version: 1.0\nContent-Transfer-Encoding: 7bit\nContent-Description: OpenPGP encrypted message\n\
         Content-Type: application/octet-stream; name=\"encrypted.asc\"; charset=\"us-ascii\"\n\n"
    );
    let tail = format!("\n--{boundary}--\n");
    let fixed = h.len() + 1 + head.len() + tail.len();
    let fixed_crlf = fixed + (h.clone() + &head + &tail).matches('\n').count() + 1;
    let armored = armor(rng, total.saturating_sub(fixed_crlf) * 64 / 65, 64);
    format!("{h}\n{head}{armored}{tail}")
}

/// A PGP/MIME request from Thunderbird (protected headers: the Subject is "...").
fn pgp_mime_request(rng: &mut Rng, total: usize) -> String {
    let boundary = format!("------------{}", rng.alnum(24));
    let mut h =
        received_here(rng, "mail-out.example.org", "198.51.100.23", "Tue, 14 Apr 2026 09:40:02 +0000 (UTC)");
    h += &auth_results(rng, "example.org", "mail2024");
    h += &dkim(rng, "example.org", "mail2024", "Date:From:To:Subject:From");
    h += &received_submission(
        rng,
        "mail-out.example.org",
        "kim",
        HELPDESK,
        "Tue, 14 Apr 2026 11:40:00 +0200 (CEST)",
    );
    h += &format!("Message-ID: <{}@example.org>\n", rng.uuid());
    h += "Date: Tue, 14 Apr 2026 11:39:58 +0200\nMIME-Version: 1.0\nUser-Agent: Mozilla Thunderbird\n";
    h += "Content-Language: en-US\nTo: support@tails.net\nFrom: Kim <kim@example.org>\n";
    h += "Autocrypt: addr=kim@example.org; keydata=\n";
    for _ in 0..8 {
        h += &format!(" {}\n", rng.base64(76));
    }
    h += "Subject: ...\n";
    h += &format!(
        "Content-Type: multipart/encrypted;\n protocol=\"application/pgp-encrypted\";\n boundary=\"{boundary}\"\n"
    );
    let head = format!(
        "This is an OpenPGP/MIME encrypted message (RFC 4880 and 3156)\n--{boundary}\n\
         Content-Type: application/pgp-encrypted\nContent-Description: PGP/MIME version identification\n\n\
         Version: 1\n\n--{boundary}\nContent-Type: application/octet-stream; name=\"encrypted.asc\"\n\
         Content-Description: OpenPGP encrypted message\nContent-Disposition: inline; filename=\"encrypted.asc\"\n\n"
    );
    let tail = format!("\n--{boundary}--\n");
    let all = h.clone() + "\n" + &head + &tail;
    let fixed_crlf = all.len() + all.matches('\n').count();
    let armored = armor(rng, total.saturating_sub(fixed_crlf) * 76 / 77, 76);
    format!("{h}\n{head}{armored}{tail}")
}

/// A Postfix delivery status notification for a reply a Help Desk member sent by hand.
fn bounce(rng: &mut Rng, total: usize) -> String {
    let qid = format!("4Zk{}", rng.alnum(10));
    let boundary = format!("{qid}.1776159002/mx1.example.com");
    let mut h = received_here(rng, "mx1.example.com", "192.0.2.10", "Tue, 14 Apr 2026 09:30:03 +0000 (UTC)");
    h += &format!(
        "Received: by mx1.example.com (Postfix)\n\tid {qid}; Tue, 14 Apr 2026 09:30:02 +0000 (UTC)\n"
    );
    h += "Date: Tue, 14 Apr 2026 09:30:02 +0000 (UTC)\n\
          From: MAILER-DAEMON@mx1.example.com (Mail Delivery System)\n\
          Subject: Undelivered Mail Returned to Sender\nTo: support@tails.net\nAuto-Submitted: auto-replied\n\
          MIME-Version: 1.0\n";
    h += &format!(
        "Content-Type: multipart/report; report-type=delivery-status;\n\tboundary=\"{boundary}\"\n\
         Content-Transfer-Encoding: 8bit\nMessage-Id: <20260414093002.{qid}@mx1.example.com>\n"
    );
    let mut body = format!(
        "This is a MIME-encapsulated message.\n\n--{boundary}\nContent-Description: Notification\n\
         Content-Type: text/plain; charset=us-ascii\n\n\
         This is the mail system at host mx1.example.com.\n\n\
         I'm sorry to have to inform you that your message could not\n\
         be delivered to one or more recipients. It's attached below.\n\n\
         For further assistance, please send mail to postmaster.\n\n\
         If you do so, please include this problem report. You can\n\
         delete your own text from the attached returned message.\n\n\
         \x20                  The mail system\n\n\
         <sam.doe@example.com>: host mx2.example.com[192.0.2.11] said: 550 5.1.1\n\
         \x20   <sam.doe@example.com>: Recipient address rejected: User unknown in virtual\n\
         \x20   mailbox table (in reply to RCPT TO command)\n\n\
         --{boundary}\nContent-Description: Delivery report\nContent-Type: message/delivery-status\n\n\
         Reporting-MTA: dns; mx1.example.com\nX-Postfix-Queue-ID: {qid}\n\
         X-Postfix-Sender: rfc822; support@tails.net\nArrival-Date: Tue, 14 Apr 2026 09:30:01 +0000 (UTC)\n\n\
         Final-Recipient: rfc822; sam.doe@example.com\nOriginal-Recipient: rfc822;sam.doe@example.com\n\
         Action: failed\nStatus: 5.1.1\nRemote-MTA: dns; mx2.example.com\n\
         Diagnostic-Code: smtp; 550 5.1.1 <sam.doe@example.com>: Recipient address\n\
         \x20   rejected: User unknown in virtual mailbox table\n\n\
         --{boundary}\nContent-Description: Undelivered Message\nContent-Type: message/rfc822\n\
         Content-Transfer-Encoding: 8bit\n\n"
    );
    body += &dkim(rng, "tails.net", "2024", "Date:From:To:Subject:In-Reply-To:References:From");
    body += &format!(
        "Received: from [10.0.0.5] (localhost [127.0.0.1])\n\tby mail.tails.net (Postfix) with ESMTPSA id {qid}\n\
         \tfor <sam.doe@example.com>; Tue, 14 Apr 2026 09:30:00 +0000 (UTC)\n\
         Message-ID: <{}@tails.net>\nDate: Tue, 14 Apr 2026 09:29:58 +0000\nMIME-Version: 1.0\n\
         From: Tails Help Desk <support@tails.net>\nTo: Sam Doe <sam.doe@example.com>\n\
         Subject: Re: Tails does not start on my MacBook\nIn-Reply-To: <{}@example.com>\n\
         Content-Type: text/plain; charset=UTF-8\nContent-Transfer-Encoding: 7bit\n\nHello,\n\n",
        rng.uuid(),
        rng.uuid()
    );
    let end = format!("\n--{boundary}--\n");
    let header_len = h.len() + h.matches('\n').count();
    let end_len = end.len() + end.matches('\n').count();
    fill(&mut body, header_len, total - end_len, prose_lines(2).map(|l| format!("> {l}")));
    format!("{h}\n{body}{end}")
}

/// A mailing-list message (Mailman) to a list the Help Desk address is subscribed to.
fn list_mail(rng: &mut Rng, total: usize) -> String {
    let list = "tails-dev@lists.example.net";
    let mut h =
        received_here(rng, "lists.example.net", "192.0.2.40", "Tue, 14 Apr 2026 10:02:17 +0000 (UTC)");
    h += &format!(
        "Received: from lists.example.net (localhost [127.0.0.1])\n\tby lists.example.net (Postfix) with ESMTP id 4Zk{}\n\
         \tfor <{HELPDESK}>; Tue, 14 Apr 2026 10:02:16 +0000 (UTC)\n",
        rng.alnum(10)
    );
    h += &auth_results(rng, "example.com", "s1");
    h += &dkim(rng, "example.com", "s1", "Date:From:To:Subject:Message-ID:From");
    h += &format!(
        "Message-ID: <{}@example.com>\nDate: Tue, 14 Apr 2026 12:02:10 +0200\nMIME-Version: 1.0\n\
         From: Sam Doe <sam@example.com>\nTo: {list}\nSubject: [Tails-dev] Release schedule for Tails 7.7\n\
         Content-Type: text/plain; charset=\"us-ascii\"\nContent-Transfer-Encoding: 7bit\n\
         X-BeenThere: {list}\nX-Mailman-Version: 2.1.39\nPrecedence: list\n\
         List-Id: Tails development discussion <tails-dev.lists.example.net>\n\
         List-Unsubscribe: <https://lists.example.net/mailman/options/tails-dev>,\n\
         \t<mailto:tails-dev-request@lists.example.net?subject=unsubscribe>\n\
         List-Archive: <https://lists.example.net/pipermail/tails-dev/>\nList-Post: <mailto:{list}>\n\
         List-Help: <mailto:tails-dev-request@lists.example.net?subject=help>\n\
         List-Subscribe: <https://lists.example.net/mailman/listinfo/tails-dev>,\n\
         \t<mailto:tails-dev-request@lists.example.net?subject=subscribe>\n\
         Errors-To: tails-dev-bounces@lists.example.net\n\
         Sender: \"Tails-dev\" <tails-dev-bounces@lists.example.net>\n",
        rng.uuid()
    );
    let footer = "\n_______________________________________________\nTails-dev mailing list\n\
                  tails-dev@lists.example.net\nhttps://lists.example.net/mailman/listinfo/tails-dev\n";
    let mut body = String::from("Hi all,\n\n");
    let header_len = h.len() + h.matches('\n').count();
    let footer_len = footer.len() + footer.matches('\n').count();
    fill(&mut body, header_len, total - footer_len, prose_lines(5));
    format!("{h}\n{body}{footer}")
}

/// Splits a generated message (LF line ends) as Postfix passes it to the milter.
fn sample(id: &str, sender: &str, expect: Class, text: &str) -> Sample {
    let raw = text.replace('\n', "\r\n");
    let (head, body) = raw.split_once("\r\n\r\n").expect("a header and a body");
    let mut headers: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    for line in head.split("\r\n") {
        if line.starts_with([' ', '\t']) {
            let (_, value) = headers.last_mut().expect("a continuation line follows a field");
            value.push(b'\n');
            value.extend_from_slice(line.as_bytes());
        } else {
            let (name, value) = line.split_once(':').expect("a header field");
            let value = value.strip_prefix(' ').unwrap_or(value);
            headers.push((name.as_bytes().to_vec(), value.as_bytes().to_vec()));
        }
    }
    Sample {
        id: id.to_string(),
        sender: sender.to_string(),
        raw_len: raw.len(),
        headers,
        body: body.as_bytes().to_vec(),
        expect,
    }
}

fn corpus() -> Vec<Sample> {
    let mut rng = Rng(0x7a11_5e1f);
    let alex = "alex.martin@example.org";
    let mut v = vec![
        sample("whisperback-32KiB", WHISPERBACK_SENDER, Class::Whisperback, &whisperback(&mut rng, 32 * KIB)),
        sample("plaintext-2KiB", alex, Class::Support, &plaintext(&mut rng, 2 * KIB)),
        sample("plaintext-4KiB", alex, Class::Support, &plaintext(&mut rng, 4 * KIB)),
        sample("plaintext-64KiB", alex, Class::Support, &plaintext(&mut rng, 64 * KIB)),
        sample("plaintext-1MiB", alex, Class::Support, &plaintext(&mut rng, 1024 * KIB)),
        sample("pgp-mime-8KiB", "kim@example.org", Class::Support, &pgp_mime_request(&mut rng, 8 * KIB)),
        sample("followup-6KiB", alex, Class::Followup, &followup(&mut rng, 6 * KIB)),
        sample("bounce-6KiB", "", Class::Automated, &bounce(&mut rng, 6 * KIB)),
        sample(
            "list-5KiB",
            "tails-dev-bounces+support=tails.net@lists.example.net",
            Class::Automated,
            &list_mail(&mut rng, 5 * KIB),
        ),
    ];
    // The same 4 KiB request from a sender answered less than `interval` ago: no reply is built.
    let mut answered = v[2].clone();
    answered.id = "plaintext-4KiB-answered".into();
    v.push(answered);
    v
}

// ---------------------------------------------------------------------------------------------
// The work per message

struct Ctx {
    cfg: Config,
    reply_file: ReplyFile,
    state: ReplyState,
    /// The time (Unix seconds) of the last message, shared by every benchmark so that it never
    /// goes back: the state's entries and hourly counts must stay in its past.
    clock: Cell<u64>,
}

impl Ctx {
    /// Advances the clock by `step` seconds and returns the new time.
    fn tick(&self, step: u64) -> u64 {
        let now = self.clock.get() + step;
        self.clock.set(now);
        now
    }
}

fn context() -> Ctx {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("etc");
    let path = dir.join("helpdesk-milter.toml");
    let text = std::fs::read_to_string(&path).expect("etc/helpdesk-milter.toml");
    let cfg = Config::parse(&path, &text).unwrap_or_else(|d| panic!("{d:?}"));
    assert!(cfg.autoreply.enabled, "the benchmark runs with auto-replies on");
    let reply_file = ReplyFile::load(&cfg.autoreply.reply_file).unwrap_or_else(|d| panic!("{d:?}"));
    Ctx { cfg, reply_file, state: ReplyState::in_memory(), clock: Cell::new(T0) }
}

/// Time step between iterations. The state remembers a sender once answered, and a fixed clock
/// would turn every repetition of a request into "suppressed (interval)" (the `-answered` case).
/// Moving the clock past the reply interval and the hourly caps each time makes every iteration
/// a first request, which builds the reply request (language detection included), with the state
/// holding one entry whatever the number of iterations.
fn clock_step(ctx: &Ctx, s: &Sample) -> u64 {
    if s.id.ends_with("-answered") { 0 } else { ctx.cfg.autoreply.interval.as_secs() + 3601 }
}

/// What the milter does for one message, MAIL FROM to end of message, minus the protocol.
#[inline(never)]
fn triage_one(ctx: &Ctx, s: &Sample, now: u64) -> Triage {
    let m = &ctx.cfg.milter;
    let mut env = Envelope::new(&s.sender, std::iter::empty::<&str>());
    env.recipients.push(address::normalize(HELPDESK));
    let mut data = MessageData::new(&ctx.cfg.helpdesk.header_prefix, m.max_header_bytes, m.max_body_bytes);
    for (name, value) in &s.headers {
        data.add_header(name, value);
    }
    for chunk in s.body.chunks(BODY_CHUNK) {
        if !data.add_body(chunk) {
            // The milter answers Skip: Postfix sends no more of the body.
            break;
        }
    }
    let deps = Deps { reply_file: Some(&ctx.reply_file), state: &ctx.state, now };
    triage::end_of_message(&ctx.cfg, &deps, &env, &data).expect("the corpus triages without error")
}

const T0: u64 = 1_776_157_961;

/// Runs `iterations` messages, advancing the clock by `step` before each.
fn run(ctx: &Ctx, s: &Sample, step: u64, iterations: u64) {
    for _ in 0..iterations {
        black_box(triage_one(ctx, black_box(s), ctx.tick(step)));
    }
}

struct Row {
    id: String,
    bytes: usize,
    class: String,
    autoreply: String,
    ns_per_msg: f64,
    timing: &'static str,
    allocs: f64,
    alloc_bytes: f64,
}

/// Allocator calls and bytes per message, averaged over a few messages after a warm-up.
fn allocations(ctx: &Ctx, s: &Sample) -> (f64, f64) {
    const N: u64 = 20;
    let step = clock_step(ctx, s);
    run(ctx, s, step, 3);
    ALLOCS.store(0, Ordering::Relaxed);
    BYTES.store(0, Ordering::Relaxed);
    COUNTING.store(true, Ordering::SeqCst);
    run(ctx, s, step, N);
    COUNTING.store(false, Ordering::SeqCst);
    (ALLOCS.load(Ordering::Relaxed) as f64 / N as f64, BYTES.load(Ordering::Relaxed) as f64 / N as f64)
}

/// Mean ns per message of our own timed loop (used when criterion did not measure the message).
fn own_timing(ctx: &Ctx, s: &Sample, budget: Duration) -> f64 {
    let step = clock_step(ctx, s);
    run(ctx, s, step, 10);
    let (start, mut n) = (Instant::now(), 0u64);
    while start.elapsed() < budget {
        run(ctx, s, step, 16);
        n += 16;
    }
    start.elapsed().as_nanos() as f64 / n as f64
}

/// Where criterion keeps its results (it asks `cargo metadata`; the usual answers are tried).
fn criterion_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        dirs.push(PathBuf::from(home));
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        dirs.push(PathBuf::from(target).join("criterion"));
    }
    // target/<profile>/deps/classify-<hash>
    if let Ok(exe) = std::env::current_exe() {
        dirs.extend(exe.ancestors().nth(3).map(|t| t.join("criterion")));
    }
    dirs.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("target/criterion"));
    dirs
}

/// `point_estimate` of the estimate `key` in criterion's estimates.json (None when null).
fn point_estimate(json: &str, key: &str) -> Option<f64> {
    let field = format!("\"{key}\":");
    let rest = json[json.find(&field)? + field.len()..].trim_start();
    if !rest.starts_with('{') {
        return None;
    }
    let value = &rest[rest.find("\"point_estimate\":")? + "\"point_estimate\":".len()..];
    value[..value.find([',', '}'])?].trim().parse().ok()
}

/// Criterion's time per iteration for `id` (ns), if written by this run: the estimate criterion
/// prints (the slope of its linear sampling, else the mean).
fn criterion_ns(id: &str, since: SystemTime) -> Option<f64> {
    criterion_dirs().into_iter().find_map(|dir| {
        let file = dir.join("triage").join(id).join("new/estimates.json");
        let modified = std::fs::metadata(&file).and_then(|m| m.modified()).ok()?;
        if modified < since {
            return None;
        }
        let json = std::fs::read_to_string(&file).ok()?;
        point_estimate(&json, "slope").or_else(|| point_estimate(&json, "mean"))
    })
}

fn human_size(bytes: usize) -> String {
    if bytes >= 1024 * KIB {
        format!("{:.2} MiB", bytes as f64 / (1024 * KIB) as f64)
    } else {
        format!("{:.1} KiB", bytes as f64 / KIB as f64)
    }
}

fn main() {
    let started = SystemTime::now();
    let args: Vec<String> = std::env::args().collect();
    let has = |flag: &str| args.iter().any(|a| a == flag);
    // As criterion decides: `cargo bench` passes --bench; without it (cargo test --benches) or
    // with --test, each benchmark runs once; --list only lists.
    let benchmarking =
        has("--bench") && !has("--test") && !has("--list") && !args.iter().any(|a| a == "--profile-time");
    let quick = has("--quick");

    let ctx = context();
    let corpus = corpus();
    // The corpus is what it claims to be: each message gets its intended class, and the clock
    // steps make requests first requests (queued) except in the `-answered` case.
    let mut decisions = Vec::new();
    for s in &corpus {
        let step = clock_step(&ctx, s);
        triage_one(&ctx, s, ctx.tick(step));
        let t = triage_one(&ctx, s, ctx.tick(step));
        assert_eq!(t.class, Some(s.expect), "{}: unexpected class", s.id);
        let autoreply = t.decision.map(|d| d.header_value()).unwrap_or_default();
        if s.expect == Class::Support {
            let want = if step == 0 { "suppressed (interval)" } else { "queued" };
            assert_eq!(autoreply, want, "{}: unexpected auto-reply decision", s.id);
        }
        decisions.push((t.class.map(|c| c.to_string()).unwrap_or_default(), autoreply));
    }

    let mut c = Criterion::default().configure_from_args();
    {
        let mut group = c.benchmark_group("triage");
        group.throughput(Throughput::Elements(1));
        for s in &corpus {
            let step = clock_step(&ctx, s);
            group
                .bench_function(s.id.as_str(), |b| b.iter(|| triage_one(&ctx, black_box(s), ctx.tick(step))));
        }
        group.finish();
    }
    c.final_summary();
    if !benchmarking {
        return;
    }

    let mut rows = Vec::new();
    for (s, (class, autoreply)) in corpus.iter().zip(decisions) {
        let (allocs, alloc_bytes) = allocations(&ctx, s);
        let (ns_per_msg, timing) = match criterion_ns(&s.id, started) {
            Some(ns) => (ns, "criterion"),
            None => {
                let budget = Duration::from_millis(if quick { 200 } else { 1000 });
                (own_timing(&ctx, s, budget), "own-loop")
            }
        };
        rows.push(Row {
            id: s.id.clone(),
            bytes: s.raw_len,
            class,
            autoreply,
            ns_per_msg,
            timing,
            allocs,
            alloc_bytes,
        });
    }

    let mut out =
        String::from("\nclassify: one message through the milter's end-of-message path, one core\n");
    let _ = writeln!(
        out,
        "{:<24} {:>10} {:<12} {:<24} {:>10} {:>9} {:>10} {:>13}  timing",
        "message", "size", "class", "autoreply", "msg/s", "us/msg", "allocs/msg", "bytes/msg"
    );
    let mut tsv = String::from(
        "message\tbytes\tclass\tautoreply\tmsgs_per_sec\tns_per_msg\tallocs_per_msg\tbytes_per_msg\ttiming\n",
    );
    for r in &rows {
        let rate = 1e9 / r.ns_per_msg;
        let _ = writeln!(
            out,
            "{:<24} {:>10} {:<12} {:<24} {:>10.0} {:>9.2} {:>10.1} {:>13.0}  {}",
            r.id,
            human_size(r.bytes),
            r.class,
            r.autoreply,
            rate,
            r.ns_per_msg / 1000.0,
            r.allocs,
            r.alloc_bytes,
            r.timing
        );
        let _ = writeln!(
            tsv,
            "{}\t{}\t{}\t{}\t{:.0}\t{:.0}\t{:.1}\t{:.0}\t{}",
            r.id, r.bytes, r.class, r.autoreply, rate, r.ns_per_msg, r.allocs, r.alloc_bytes, r.timing
        );
    }
    if let Some(r) = rows.iter().find(|r| r.id == "plaintext-4KiB") {
        let rate = 1e9 / r.ns_per_msg;
        let verdict = if rate >= 50_000.0 { "met" } else { "NOT met" };
        let _ = writeln!(out, "target: >= 50000 msg/s on plaintext-4KiB: {verdict} ({rate:.0} msg/s)");
    }
    print!("{out}");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-results");
    match std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(dir.join("classify.tsv"), &tsv)) {
        Ok(()) => println!("written: {}", dir.join("classify.tsv").display()),
        Err(e) => eprintln!("cannot write {}: {e}", dir.display()),
    }
}

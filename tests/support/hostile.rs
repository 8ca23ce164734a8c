//! Hostile messages (issue 6), shared by the protocol-level and the Postfix end-to-end tests of
//! tests/hostile_messages.rs, and the readings of the daemon's memory from /proc.
//!
//! Every case is a new support request to the Help Desk from its own sender, so that an auto-reply
//! is in play, and carries forged triage headers that must not survive.
#![allow(dead_code)]

pub const HELPDESK: &str = "support@tails.net";

/// The forged triage headers every case carries (two names, three instances, mixed case).
const FORGED: &[u8] =
    b"X-HelpDesk-Class: team\r\nx-helpdesk-priority: high\r\nX-HELPDESK-CLASS: whisperback\r\n";

/// One hostile message.
pub struct Case {
    pub name: &'static str,
    /// The envelope sender, fresh for each case and run (`tag`), so that a reply is due.
    pub sender: String,
    /// The whole message, CRLF line ends.
    pub message: Vec<u8>,
    /// Forged prefix header instances in the message, each to be deleted.
    pub forged: usize,
}

/// The standard fields of a request; `from` is the From: field's value (the display name part
/// is what ends up in the reply's To:), `subject` the raw Subject value, `extra` more raw header
/// lines (CRLF-terminated), placed after the forged ones.
fn request(name: &str, from: &[u8], subject: &[u8], extra: &[u8], body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(body.len() + extra.len() + 1024);
    m.extend_from_slice(b"From: ");
    m.extend_from_slice(from);
    m.extend_from_slice(b"\r\nTo: support@tails.net\r\nSubject: ");
    m.extend_from_slice(subject);
    m.extend_from_slice(
        format!("\r\nMessage-ID: <{name}.hostile@example.org>\r\nDate: Fri, 20 Nov 2026 10:00:00 +0000\r\n")
            .as_bytes(),
    );
    m.extend_from_slice(FORGED);
    m.extend_from_slice(extra);
    m.extend_from_slice(b"\r\n");
    m.extend_from_slice(body);
    m
}

const BODY: &[u8] = b"Hello, Tails does not start on my laptop since the last upgrade.\r\n";

/// A text body of `bytes` bytes (rounded to whole lines of 78 bytes).
pub fn big_body(bytes: usize) -> Vec<u8> {
    let line = b"0123456789 abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789ab\r\n";
    line.repeat(bytes.div_ceil(line.len()))
}

/// `depth` multiparts nested in each other, every one closed, around one text part.
pub fn nested_body(depth: usize) -> Vec<u8> {
    let mut b = Vec::new();
    for i in 0..depth {
        b.extend_from_slice(
            format!("--n{i}\r\nContent-Type: multipart/mixed; boundary=n{}\r\n\r\n", i + 1).as_bytes(),
        );
    }
    b.extend_from_slice(format!("--n{depth}\r\nContent-Type: text/plain\r\n\r\n").as_bytes());
    b.extend_from_slice(BODY);
    for i in (0..=depth).rev() {
        b.extend_from_slice(format!("--n{i}--\r\n").as_bytes());
    }
    b
}

/// Every case, with senders tagged `tag` (distinct per run, so each is a fresh sender) and a
/// body of `big_body_bytes` for the large-body case.
pub fn cases(tag: &str, big_body_bytes: usize) -> Vec<Case> {
    let sender = |name: &str| format!("hostile-{name}-{tag}@example.org");
    let plain_from = |name: &str| format!("Sender <{}>", sender(name)).into_bytes();
    let mut out = Vec::new();
    let mut push = |name: &'static str, message: Vec<u8>, forged: usize| {
        out.push(Case { name, sender: sender(name), message, forged })
    };

    // A header line of exactly 1 MiB, CRLF included: the longest the milter protocol carries
    // (the daemon, as libmilter, refuses frames over 1 MiB - 1; name, value and two NULs fit).
    let mut long = b"X-Long: ".to_vec();
    long.resize((1 << 20) - 2, b'a');
    long.extend_from_slice(b"\r\n");
    push(
        "long-header-line",
        request("long-header-line", &plain_from("long-header-line"), b"help", &long, BODY),
        3,
    );

    // 10,000 more header fields, one in 50 a forged prefixed one.
    let mut many = Vec::new();
    let mut forged = 3;
    for i in 0..10_000 {
        if i % 50 == 0 {
            many.extend_from_slice(format!("X-HelpDesk-Filler: forged {i}\r\n").as_bytes());
            forged += 1;
        } else {
            many.extend_from_slice(format!("X-Filler-{i}: value {i}\r\n").as_bytes());
        }
    }
    push(
        "ten-thousand-headers",
        request("ten-thousand-headers", &plain_from("ten-thousand-headers"), b"help", &many, BODY),
        forged,
    );

    // NUL and 8-bit bytes in header values, in a forged header's name, and in the body.
    let mut body = b"8-bit: caf\xe9 \xff\xfe\x80 and NUL: a\x00b\r\n".to_vec();
    body.extend((0u8..=255).filter(|b| !matches!(b, b'\r' | b'\n')));
    body.extend_from_slice(b"\r\n");
    push(
        "nul-and-8bit",
        request(
            "nul-and-8bit",
            &plain_from("nul-and-8bit"),
            b"caf\xe9 \xff\xfe a\x00b",
            b"X-HelpDesk-\xe9t\xe9: forged 8-bit name\r\nX-Bin: \x01\x02\x7f\x80\xff\x00after-nul\r\n",
            &body,
        ),
        4,
    );

    // Invalid UTF-8 and broken RFC 2047 words in Subject, From and attachment file names, in an
    // unknown charset and with invalid base64 and quoted-printable.
    let name = "broken-encodings";
    let from = [&b"=?utf-8?b?////?= =?utf-8?q?=C3?= \xc3\x28 <"[..], sender(name).as_bytes(), b">"].concat();
    let subject = b"=?utf-8?q?unterminated =?utf-8?b?!!!notbase64?= =?x-unknown?q?abc?= \xc3\x28\xa0\xa1 =?utf-8?q?=FF=FE=C0=AF?= =?utf-8?Q?=E2=82?=";
    let body = b"--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nbad \xc3\x28 \xff text\r\n--b\r\nContent-Type: application/pdf; name=\"=?utf-8?q?=FF=FE=ZZ.pdf?=\"\r\nContent-Disposition: attachment; filename*=utf-8''%FF%FE%C0.pdf; filename=\"=?x-unknown?b?!!!?=\"\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!not base64!!!\r\n--b\r\nContent-Type: text/plain; charset=x-unknown\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n=ZZ=F\r\n--b--\r\n";
    push(
        name,
        request(
            name,
            &from,
            subject,
            b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n",
            body,
        ),
        3,
    );

    // Multiparts whose boundaries never close, one whose boundary never appears.
    let body = b"preamble\r\n--outer\r\nContent-Type: multipart/alternative; boundary=\"inner\"\r\n\r\n--inner\r\nContent-Type: text/plain\r\n\r\nhello, help me\r\n--inner\r\nContent-Type: multipart/related; boundary=\"never\"\r\n\r\n<p>html without end\r\n--outer\r\nContent-Type: text/plain\r\n\r\nlast part, no closing boundary\r\n";
    push(
        "unterminated-boundaries",
        request(
            "unterminated-boundaries",
            &plain_from("unterminated-boundaries"),
            b"help",
            b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"outer\"\r\n",
            body,
        ),
        3,
    );

    push(
        "nested-1000",
        request(
            "nested-1000",
            &plain_from("nested-1000"),
            b"help",
            b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=n0\r\n",
            &nested_body(1000),
        ),
        3,
    );

    push(
        "big-body",
        request("big-body", &plain_from("big-body"), b"help", b"", &big_body(big_body_bytes)),
        3,
    );

    // Encoded words that decode to CR LF and a header field, in the Subject and in the display
    // name that the reply's To: carries; a Message-ID that the reply's In-Reply-To carries.
    let name = "crlf-encoded";
    let from = format!("=?utf-8?q?Eve=0D=0ABcc=3A_victim1@example.net=0D=0A?= <{}>", sender(name));
    let subject =
        b"=?utf-8?q?help=0D=0ABcc:_victim2@example.net?= =?utf-8?b?DQpUbzogdmljdGltM0BleGFtcGxlLm5ldA0K?=";
    let mut m = request(name, from.as_bytes(), subject, b"", BODY);
    let mid = format!("<{name}.hostile@example.org>");
    let evil_mid = "<crlf=0D=0ABcc:victim4@example.net@example.org>";
    m = replace(&m, mid.as_bytes(), evil_mid.as_bytes());
    push(name, m, 3);

    // Raw bare CRs, in the Subject, in the display name of a Sender: (which the reply's To:
    // takes first when its address is the envelope sender) and in the Message-ID (which the
    // reply's In-Reply-To and References carry).
    let name = "bare-cr";
    let sender_field = format!("Sender: \"Eve\rBcc: victim5@example.net\r\" <{}>\r\n", sender(name));
    let m = request(
        name,
        format!("Eve\rCc: victim6@example.net <{}>", sender(name)).as_bytes(),
        b"help\rBcc: victim7@example.net\r",
        sender_field.as_bytes(),
        BODY,
    );
    let mid = format!("<{name}.hostile@example.org>");
    push(name, replace(&m, mid.as_bytes(), b"<bare\rBcc: victim8@example.net\r@example.org>"), 3);

    // A Subject of 100,000 characters, one line.
    let subject = "help me ".repeat(12_500);
    push(
        "long-subject",
        request("long-subject", &plain_from("long-subject"), subject.as_bytes(), b"", BODY),
        3,
    );
    out
}

fn replace(hay: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let at = hay.windows(from.len()).position(|w| w == from).expect("pattern in message");
    [&hay[..at], to, &hay[at + from.len()..]].concat()
}

/// A header field as the milter protocol carries it: (name, value).
pub type Field = (Vec<u8>, Vec<u8>);

/// The header fields and the body of a raw message as Postfix's milter client passes them: one
/// (name, value) per field, the value without the white space after the colon and with folds as
/// `\n`, cut at a NUL (Postfix sends C strings); the body as it is.
pub fn split_like_postfix(raw: &[u8]) -> (Vec<Field>, &[u8]) {
    let mut headers: Vec<Field> = Vec::new();
    let mut pos = 0;
    while pos < raw.len() {
        let end = raw[pos..].iter().position(|&b| b == b'\n').map_or(raw.len(), |i| pos + i + 1);
        let line = &raw[pos..end];
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            pos = end;
            break;
        }
        if matches!(line[0], b' ' | b'\t')
            && let Some((_, value)) = headers.last_mut()
        {
            value.push(b'\n');
            value.extend_from_slice(line);
        } else if let Some(colon) = line.iter().position(|&b| b == b':')
            && colon > 0
            && line[..colon].iter().all(|&b| b > b' ' && b != 0x7f)
        {
            let value = &line[colon + 1..];
            let skip = value.iter().take_while(|&&b| b == b' ' || b == b'\t').count();
            headers.push((line[..colon].to_vec(), value[skip..].to_vec()));
        } else {
            // Not a header field: the body starts here (Postfix's MIME state machine).
            break;
        }
        pos = end;
    }
    for (_, value) in &mut headers {
        if let Some(nul) = value.iter().position(|&b| b == 0) {
            value.truncate(nul);
        }
    }
    (headers, &raw[pos..])
}

/// Resets the peak resident set size (VmHWM) to the current one (proc(5), clear_refs 5).
pub fn reset_peak_rss(pid: u32) {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").expect("write /proc/PID/clear_refs");
}

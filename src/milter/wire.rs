//! The milter protocol on the wire, version 6, as Postfix's milter8 client speaks it (libmilter's
//! protocol: Sendmail's `include/libmilter/mfdef.h` names the codes and flags). Pure: frames in,
//! commands out; replies and actions in, bytes out. Nothing here does I/O.
//!
//! A frame is a 32-bit big-endian length, then that many bytes: a one-byte code and its data.
//! Strings in the data end with a NUL.

/// The protocol version this milter speaks.
pub const VERSION: u32 = 6;

/// The largest frame taken, code included. Postfix never sends one near it (its cleanup cuts a
/// header field at 60,000 bytes for milters; body chunks are at most 64 KiB); a peer that does is
/// not an MTA, and loses its connection.
pub const MAX_FRAME: usize = (1 << 20) - 1;

/// The SMFIP_* protocol options: stages the milter does not want, stages it will not answer.
pub mod opt {
    pub const NO_CONNECT: u32 = 0x1;
    pub const NO_HELO: u32 = 0x2;
    pub const NO_MAIL: u32 = 0x4;
    pub const NO_RCPT: u32 = 0x8;
    pub const NO_BODY: u32 = 0x10;
    pub const NO_HEADER: u32 = 0x20;
    pub const NO_EOH: u32 = 0x40;
    pub const NOREPLY_HEADER: u32 = 0x80;
    pub const NO_UNKNOWN: u32 = 0x100;
    pub const NO_DATA: u32 = 0x200;
    pub const SKIP: u32 = 0x400;
    pub const NOREPLY_CONNECT: u32 = 0x1000;
    pub const NOREPLY_HELO: u32 = 0x2000;
    pub const NOREPLY_MAIL: u32 = 0x4000;
    pub const NOREPLY_RCPT: u32 = 0x8000;
    pub const NOREPLY_DATA: u32 = 0x10000;
    pub const NOREPLY_UNKNOWN: u32 = 0x20000;
    pub const NOREPLY_EOH: u32 = 0x40000;
    pub const NOREPLY_BODY: u32 = 0x80000;
}

/// The SMFIF_* actions.
pub mod action {
    pub const ADD_HEADER: u32 = 0x1;
    pub const CHANGE_HEADER: u32 = 0x10;
}

/// The stages of macros, in the order the MTA reaches them. `wire_code` is the SMFIM_* number a
/// milter names them by in its negotiation reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Connect,
    Helo,
    Mail,
    Rcpt,
    Data,
    Eoh,
    Eom,
}

impl Stage {
    pub const COUNT: usize = 7;

    /// The stage whose command has this code, for a macro command.
    pub fn of_command(code: u8) -> Option<Stage> {
        Some(match code {
            b'C' => Stage::Connect,
            b'H' => Stage::Helo,
            b'M' => Stage::Mail,
            b'R' => Stage::Rcpt,
            b'T' => Stage::Data,
            b'N' => Stage::Eoh,
            b'E' => Stage::Eom,
            _ => return None,
        })
    }

    pub fn index(self) -> usize {
        self as usize
    }

    pub fn wire_code(self) -> u32 {
        match self {
            Stage::Connect => 0,
            Stage::Helo => 1,
            Stage::Mail => 2,
            Stage::Rcpt => 3,
            Stage::Data => 4,
            Stage::Eom => 5,
            Stage::Eoh => 6,
        }
    }
}

/// One command of the MTA, its strings borrowed from the frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Command<'a> {
    OptNeg {
        version: u32,
        actions: u32,
        opts: u32,
    },
    /// Macros for the stage of the command that follows; unknown stages are kept as None.
    Macros {
        stage: Option<Stage>,
        pairs: Vec<(&'a [u8], &'a [u8])>,
    },
    Connect,
    Helo,
    /// MAIL FROM: the address, then ESMTP arguments.
    Mail(Vec<&'a [u8]>),
    /// RCPT TO: the address, then ESMTP arguments.
    Rcpt(Vec<&'a [u8]>),
    Data,
    Header {
        name: &'a [u8],
        value: &'a [u8],
    },
    Eoh,
    Body(&'a [u8]),
    /// End of message, with a last body chunk if the MTA sent one along.
    Eom(&'a [u8]),
    Abort,
    Quit,
    /// Quit this message stream, but keep the connection for a new one.
    QuitNewConnection,
    Unknown,
}

/// Why the connection cannot go on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireError {
    EmptyFrame,
    TooLarge(usize),
    UnknownCommand(u8),
    Malformed(&'static str),
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WireError::EmptyFrame => write!(f, "an empty frame"),
            WireError::TooLarge(n) => write!(f, "a frame of {n} bytes, over the limit of {MAX_FRAME}"),
            WireError::UnknownCommand(c) => write!(f, "an unknown command 0x{c:02x}"),
            WireError::Malformed(what) => write!(f, "a malformed {what}"),
        }
    }
}

/// One frame of the MTA: its command code and data, borrowed from the input buffer.
#[derive(Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    pub code: u8,
    pub data: &'a [u8],
    /// The bytes it takes in the buffer, length field included.
    pub len: usize,
}

/// The first complete frame of `buf`. None: more bytes are needed.
pub fn frame(buf: &[u8]) -> Result<Option<Frame<'_>>, WireError> {
    let Some(head) = buf.first_chunk::<4>() else { return Ok(None) };
    let len = u32::from_be_bytes(*head) as usize;
    if len == 0 {
        return Err(WireError::EmptyFrame);
    }
    if len > MAX_FRAME {
        return Err(WireError::TooLarge(len));
    }
    Ok(buf.get(4..4 + len).map(|f| Frame { code: f[0], data: &f[1..], len: 4 + len }))
}

/// The NUL-terminated strings of `data`; a last one without its NUL is taken as it is.
fn strings(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let data = data.strip_suffix(&[0]).unwrap_or(data);
    data.split(|&b| b == 0).filter(|_| !data.is_empty())
}

fn be_u32(data: &[u8], at: usize) -> Option<u32> {
    data.get(at..at + 4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// The command of one frame.
pub fn command(code: u8, data: &[u8]) -> Result<Command<'_>, WireError> {
    Ok(match code {
        b'O' => {
            let field = |at| be_u32(data, at).ok_or(WireError::Malformed("negotiation"));
            Command::OptNeg { version: field(0)?, actions: field(4)?, opts: field(8)? }
        }
        b'D' => {
            let (&stage, rest) = data.split_first().ok_or(WireError::Malformed("macro command"))?;
            let mut it = strings(rest);
            let mut pairs = Vec::new();
            while let Some(name) = it.next() {
                pairs.push((name, it.next().unwrap_or_default()));
            }
            Command::Macros { stage: Stage::of_command(stage), pairs }
        }
        b'C' => Command::Connect,
        b'H' => Command::Helo,
        b'M' | b'R' => {
            let args: Vec<&[u8]> = strings(data).collect();
            if args.is_empty() {
                return Err(WireError::Malformed("envelope address"));
            }
            if code == b'M' { Command::Mail(args) } else { Command::Rcpt(args) }
        }
        b'T' => Command::Data,
        b'L' => {
            let mut it = strings(data);
            let name = it.next().filter(|n| !n.is_empty()).ok_or(WireError::Malformed("header"))?;
            Command::Header { name, value: it.next().unwrap_or_default() }
        }
        b'N' => Command::Eoh,
        b'B' => Command::Body(data),
        b'E' => Command::Eom(data),
        b'A' => Command::Abort,
        b'Q' => Command::Quit,
        b'K' => Command::QuitNewConnection,
        b'U' => Command::Unknown,
        other => return Err(WireError::UnknownCommand(other)),
    })
}

/// A reply that ends a stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    Continue,
    Accept,
    Reject,
    Tempfail,
    Discard,
    Skip,
}

impl Reply {
    fn code(self) -> u8 {
        match self {
            Reply::Continue => b'c',
            Reply::Accept => b'a',
            Reply::Reject => b'r',
            Reply::Tempfail => b't',
            Reply::Discard => b'd',
            Reply::Skip => b's',
        }
    }
}

/// Appends one frame.
fn put(out: &mut Vec<u8>, code: u8, parts: &[&[u8]]) {
    let len = 1 + parts.iter().map(|p| p.len()).sum::<usize>();
    out.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
    out.push(code);
    for p in parts {
        out.extend_from_slice(p);
    }
}

/// A string as the protocol carries it: NULs inside would end it early, so they are dropped.
fn cstr(s: &[u8]) -> Vec<u8> {
    let mut v: Vec<u8> = s.iter().copied().filter(|&b| b != 0).collect();
    v.push(0);
    v
}

pub fn put_reply(out: &mut Vec<u8>, reply: Reply) {
    put(out, reply.code(), &[]);
}

/// The negotiation reply: the version, the actions and options taken, the macros wanted.
pub fn put_optneg(out: &mut Vec<u8>, actions: u32, opts: u32, macros: &[(Stage, &str)]) {
    let mut data = Vec::with_capacity(12 + 32);
    for v in [VERSION, actions, opts] {
        data.extend_from_slice(&v.to_be_bytes());
    }
    for (stage, names) in macros {
        data.extend_from_slice(&stage.wire_code().to_be_bytes());
        data.extend_from_slice(&cstr(names.as_bytes()));
    }
    put(out, b'O', &[&data]);
}

pub fn put_add_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    put(out, b'h', &[&cstr(name), &cstr(value)]);
}

/// Deletes the `index`-th (from 1) field of that name: a change to an empty value.
pub fn put_delete_header(out: &mut Vec<u8>, name: &[u8], index: u32) {
    put(out, b'm', &[&index.to_be_bytes(), &cstr(name), &[0]]);
}

/// A reject or tempfail with the SMTP reply the MTA gives its client, such as `550 5.7.1 text`.
pub fn put_reply_code(out: &mut Vec<u8>, text: &str) {
    // One line of printable text: CR and LF would end the SMTP reply, and `%` is a format
    // character for libmilter-era MTAs.
    let line: String =
        text.chars().filter(|c| !c.is_control()).map(|c| if c == '%' { ' ' } else { c }).collect();
    put(out, b'y', &[&cstr(line.as_bytes())]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(code: u8, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        put(&mut out, code, &[data]);
        out
    }

    #[test]
    fn frames_need_their_whole_length_and_keep_the_rest() {
        let mut buf = framed(b'T', b"");
        buf.extend(framed(b'L', b"Subject\0hi\0"));
        assert_eq!(frame(&buf[..3]).unwrap(), None);
        assert_eq!(frame(&buf[..4]).unwrap(), None);
        let Frame { code, data, len: used } = frame(&buf).unwrap().unwrap();
        assert_eq!((code, data, used), (b'T', &b""[..], 5));
        let Frame { code, data, .. } = frame(&buf[used..]).unwrap().unwrap();
        assert_eq!(command(code, data).unwrap(), Command::Header { name: b"Subject", value: b"hi" });
    }

    #[test]
    fn empty_and_oversized_frames_are_errors() {
        assert_eq!(frame(&[0, 0, 0, 0]), Err(WireError::EmptyFrame));
        let big = ((MAX_FRAME + 1) as u32).to_be_bytes();
        assert_eq!(frame(&big), Err(WireError::TooLarge(MAX_FRAME + 1)));
        // The limit itself is taken: only its bytes are awaited.
        assert_eq!(frame(&(MAX_FRAME as u32).to_be_bytes()), Ok(None));
    }

    #[test]
    fn commands_are_read_as_postfix_writes_them() {
        let neg = [0, 0, 0, 6, 0, 0, 1, 0xff, 0, 0x1f, 0xff, 0xff];
        assert_eq!(
            command(b'O', &neg).unwrap(),
            Command::OptNeg { version: 6, actions: 0x1ff, opts: 0x1fffff }
        );
        assert_eq!(
            command(b'D', b"Mi\0ABC123\0{auth_authen}\0alice\0").unwrap(),
            Command::Macros {
                stage: Some(Stage::Mail),
                pairs: vec![(&b"i"[..], &b"ABC123"[..]), (b"{auth_authen}", b"alice")]
            }
        );
        assert_eq!(command(b'D', b"E").unwrap(), Command::Macros { stage: Some(Stage::Eom), pairs: vec![] });
        assert_eq!(
            command(b'M', b"<a@example.org>\0SIZE=4096\0").unwrap(),
            Command::Mail(vec![&b"<a@example.org>"[..], b"SIZE=4096"])
        );
        assert_eq!(command(b'R', b"<>\0").unwrap(), Command::Rcpt(vec![&b"<>"[..]]));
        assert_eq!(command(b'L', b"X-Empty\0\0").unwrap(), Command::Header { name: b"X-Empty", value: b"" });
        assert_eq!(command(b'B', b"a\0b").unwrap(), Command::Body(b"a\0b"));
        assert_eq!(command(b'E', b"").unwrap(), Command::Eom(b""));
        for (code, c) in
            [(b'T', Command::Data), (b'N', Command::Eoh), (b'A', Command::Abort), (b'Q', Command::Quit)]
        {
            assert_eq!(command(code, b"").unwrap(), c);
        }
    }

    #[test]
    fn malformed_commands_are_errors_not_panics() {
        assert!(command(b'O', &[0, 0, 0, 6]).is_err());
        assert!(command(b'D', b"").is_err());
        assert!(command(b'M', b"").is_err());
        assert!(command(b'L', b"\0value\0").is_err());
        assert_eq!(command(b'Z', b""), Err(WireError::UnknownCommand(b'Z')));
        // Every code and a few payloads: never a panic.
        for code in 0..=255u8 {
            for data in [&b""[..], b"\0", b"x", b"\0\0\0", &[0xff; 13]] {
                let _ = command(code, data);
            }
        }
    }

    #[test]
    fn replies_and_actions_are_written_as_libmilter_does() {
        let mut out = Vec::new();
        put_reply(&mut out, Reply::Accept);
        assert_eq!(out, [0, 0, 0, 1, b'a']);
        out.clear();
        put_add_header(&mut out, b"X-HelpDesk-Class", b"support");
        assert_eq!(out, framed(b'h', b"X-HelpDesk-Class\0support\0"));
        out.clear();
        put_delete_header(&mut out, b"X-HelpDesk-Class", 2);
        assert_eq!(out, framed(b'm', b"\0\0\0\x02X-HelpDesk-Class\0\0"));
        out.clear();
        put_optneg(
            &mut out,
            action::ADD_HEADER,
            opt::SKIP,
            &[(Stage::Mail, "{auth_authen}"), (Stage::Eom, "i")],
        );
        let mut want = vec![0, 0, 0, 6, 0, 0, 0, 1, 0, 0, 4, 0, 0, 0, 0, 2];
        want.extend(b"{auth_authen}\0");
        want.extend([0, 0, 0, 5]);
        want.extend(b"i\0");
        assert_eq!(out, framed(b'O', &want));
        out.clear();
        put_reply_code(&mut out, "550 5.7.1 100% refused\r\nInjected: yes");
        assert_eq!(out, framed(b'y', b"550 5.7.1 100  refusedInjected: yes\0"));
        out.clear();
        put_add_header(&mut out, b"X-A\0B", b"v\0w");
        assert_eq!(out, framed(b'h', b"X-AB\0vw\0"));
    }
}

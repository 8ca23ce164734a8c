//! The MTA side of the milter protocol, driven the way Postfix drives it.
//!
//! indymilter-test flushes every command as it goes; Postfix's milter8 client buffers them and
//! flushes when it next awaits an answer, so that commands the milter need not answer (macros,
//! and stages negotiated with NOREPLY_*) travel with the next one. Over TCP the difference
//! matters: a lone unanswered segment waits for a delayed ACK (40 ms). This client behaves like
//! Postfix, for the stall guard test and the load benchmark (benches/milter_load.rs).
#![allow(dead_code)]

use bytes::Bytes;
use indymilter::message::command::{Command, EnvAddrPayload, HeaderPayload, MacroPayload, OptNegPayload};
use indymilter::message::reply::Reply;
use indymilter::message::{self, PROTOCOL_VERSION};
use indymilter::{Actions, MacroStage, ProtoOpts};
use std::ffi::CString;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};

/// The MTA side of the milter protocol, as Postfix's milter8 client does it: commands are
/// buffered and the buffer is flushed only when a reply is awaited (Postfix's VSTREAM flushes on
/// read), so that macros travel in the same segment as the command after them. Messages are
/// encoded and decoded by indymilter's own protocol module.
pub struct MtaConn {
    stream: BufReader<Box<dyn Io>>,
    out: Vec<u8>,
    opts: ProtoOpts,
    /// The milter accepted the current message before its end (at DATA: it is not for the Help
    /// Desk): as Postfix, send nothing more of it.
    accepted: bool,
}

pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

impl MtaConn {
    /// Connects over TCP, without TCP_NODELAY (Postfix does not set it either), and negotiates.
    pub async fn tcp(addr: impl tokio::net::ToSocketAddrs, offered: ProtoOpts) -> MtaConn {
        let stream = tokio::net::TcpStream::connect(addr).await.expect("connect to the milter");
        MtaConn::open(Box::new(stream), offered).await
    }

    /// Connects over a UNIX socket and negotiates.
    pub async fn unix(path: impl AsRef<std::path::Path>, offered: ProtoOpts) -> MtaConn {
        let stream = tokio::net::UnixStream::connect(path).await.expect("connect to the milter");
        MtaConn::open(Box::new(stream), offered).await
    }

    /// Negotiates protocol version 6 and every action, offering `offered`.
    pub async fn open(stream: Box<dyn Io>, offered: ProtoOpts) -> MtaConn {
        let mut c = MtaConn {
            stream: BufReader::new(stream),
            out: Vec::new(),
            opts: ProtoOpts::empty(),
            accepted: false,
        };
        c.send(Command::OptNeg(OptNegPayload {
            version: PROTOCOL_VERSION,
            actions: Actions::all(),
            opts: offered,
        }))
        .await;
        match c.reply().await {
            Reply::OptNeg { opts, .. } => c.opts = opts,
            r => panic!("negotiation answered {r:?}"),
        }
        c
    }

    async fn send(&mut self, cmd: Command) {
        message::write(&mut self.out, cmd.into_message()).await.expect("encode command");
    }

    pub async fn reply(&mut self) -> Reply {
        if !self.out.is_empty() {
            self.stream.write_all(&self.out).await.expect("write to milter");
            self.out.clear();
        }
        let msg = message::read(&mut self.stream).await.expect("read from milter");
        Reply::parse_reply(msg).expect("valid reply")
    }

    /// Sends a command unless the milter skipped its stage; awaits the reply unless the milter
    /// asked for none. Returns the reply, if any.
    async fn step(&mut self, cmd: Command, skipped: ProtoOpts, noreply: ProtoOpts) -> Option<Reply> {
        if self.opts.contains(skipped) {
            return None;
        }
        self.send(cmd).await;
        if self.opts.contains(noreply) { None } else { Some(self.reply().await) }
    }

    pub async fn macros(&mut self, stage: MacroStage, pairs: &[(&str, &str)]) {
        let macros = pairs.iter().flat_map(|(k, v)| [cstr(k), cstr(v)]).collect();
        self.send(Command::DefMacros(MacroPayload { stage, macros })).await;
    }

    /// MAIL, RCPT, DATA and the header fields, up to and including EOH.
    pub async fn envelope_and_header(
        &mut self,
        qid: &str,
        sender: &str,
        rcpt: &str,
        headers: &[(String, String)],
    ) {
        self.envelope(qid, sender, rcpt).await;
        for (k, v) in headers {
            // Postfix passes the value with its leading space unless LEADING_SPACE was negotiated.
            let value =
                if self.opts.contains(ProtoOpts::LEADING_SPACE) { format!(" {v}") } else { v.clone() };
            self.header_bytes(k.as_bytes(), value.as_bytes()).await;
        }
        self.eoh().await;
    }

    /// MAIL, RCPT and DATA.
    pub async fn envelope(&mut self, qid: &str, sender: &str, rcpt: &str) {
        self.macros(MacroStage::Mail, &[("i", qid), ("{mail_addr}", sender)]).await;
        let mail = EnvAddrPayload { args: vec![cstr(&format!("<{sender}>")), cstr("SIZE=4096")] };
        expect_continue(self.step(Command::Mail(mail), ProtoOpts::NO_MAIL, ProtoOpts::NOREPLY_MAIL).await);
        self.macros(MacroStage::Rcpt, &[("{rcpt_addr}", rcpt)]).await;
        let rcpt = EnvAddrPayload { args: vec![cstr(&format!("<{rcpt}>"))] };
        expect_continue(self.step(Command::Rcpt(rcpt), ProtoOpts::NO_RCPT, ProtoOpts::NOREPLY_RCPT).await);
        match self.step(Command::Data, ProtoOpts::NO_DATA, ProtoOpts::NOREPLY_DATA).await {
            Some(Reply::Accept) => self.accepted = true,
            r => expect_continue(r),
        }
    }

    /// Whether the milter accepted the current message at DATA (nothing more is sent of it).
    pub fn accepted_early(&self) -> bool {
        self.accepted
    }

    /// One header field as raw bytes (any bytes but NUL: Postfix sends C strings), value as sent.
    pub async fn header_bytes(&mut self, name: &[u8], value: &[u8]) {
        if self.accepted {
            return;
        }
        let c = |b: &[u8]| CString::new(b).expect("no NUL in a header field sent over the milter protocol");
        let h = Command::Header(HeaderPayload { name: c(name), value: c(value) });
        expect_continue(self.step(h, ProtoOpts::NO_HEADER, ProtoOpts::NOREPLY_HEADER).await);
    }

    /// End of header.
    pub async fn eoh(&mut self) {
        if self.accepted {
            return;
        }
        expect_continue(self.step(Command::Eoh, ProtoOpts::NO_EOH, ProtoOpts::NOREPLY_EOH).await);
    }

    /// Body chunks of at most 65535 bytes, as Postfix sends them; stops when the milter says
    /// Skip. Returns whether it did.
    pub async fn body(&mut self, body: &[u8]) -> bool {
        if self.accepted {
            return false;
        }
        for chunk in body.chunks(65535) {
            let cmd = Command::BodyChunk(Bytes::copy_from_slice(chunk));
            match self.step(cmd, ProtoOpts::NO_BODY, ProtoOpts::NOREPLY_BODY).await {
                Some(Reply::Skip) => return true,
                r => expect_continue(r),
            }
        }
        false
    }

    /// End of message: the header changes asked for and the final reply.
    pub async fn eom(&mut self, qid: &str) -> (Vec<Reply>, Reply) {
        if std::mem::take(&mut self.accepted) {
            return (Vec::new(), Reply::Accept);
        }
        self.macros(MacroStage::Eom, &[("i", qid)]).await;
        self.send(Command::BodyEnd(Bytes::new())).await;
        let mut actions = Vec::new();
        loop {
            match self.reply().await {
                r @ (Reply::AddHeader { .. } | Reply::ChangeHeader { .. } | Reply::InsertHeader { .. }) => {
                    actions.push(r)
                }
                Reply::Progress => {}
                r => return (actions, r),
            }
        }
    }

    pub async fn quit(mut self) {
        self.send(Command::Quit).await;
        let _ = self.stream.write_all(&self.out).await;
    }
}

pub fn cstr(s: &str) -> CString {
    CString::new(s).expect("no NUL in benchmark strings")
}

pub fn expect_continue(r: Option<Reply>) {
    assert!(matches!(r, None | Some(Reply::Continue)), "unexpected reply {r:?}");
}

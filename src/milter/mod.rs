//! The milter: one [`Session`] per MTA connection collects a message's envelope, headers and body
//! prefix, and at end of message runs the triage and answers with its header changes.
//!
//! Nothing here blocks or waits on the network: the stages only fill memory within fixed limits,
//! and the decision is a pure function (the state's check-and-set is in memory, or bounded by
//! `[state] timeout` on a shared store). What a session shares with the rest of the daemon is in
//! [`crate::live`]. The protocol itself is in [`wire`] (the bytes) and `server` (the sockets).

mod eom;
mod server;
pub mod wire;

pub use server::{connection, serve};

use crate::classify::Envelope;
use crate::config::{Config, OnError};
use crate::live::Live;
use crate::message::MessageData;
use crate::metrics::{self, MilterError};
use std::sync::Arc;
use tracing::error;
use wire::{Stage, action, opt};

/// The actions this milter uses: add our headers, delete forged ones.
pub const ACTIONS: u32 = action::ADD_HEADER | action::CHANGE_HEADER;

/// Stages the milter never needs: the MTA need not send them.
const UNUSED: u32 = opt::NO_CONNECT | opt::NO_HELO | opt::NO_UNKNOWN;

/// Stages whose answer is always "continue": when the MTA offers it, it need not wait for one.
/// Postfix then sends MAIL, RCPT and all the header fields without a round trip each (it flushes
/// its buffer when it next awaits an answer, at DATA and at the body), which is most of the
/// milter's cost per message. Body chunks are still answered, for Skip, and DATA too: its answer
/// carries the ACK that would otherwise wait 40 ms behind the macros Postfix sends unanswered.
const NOREPLY: u32 = opt::NOREPLY_MAIL | opt::NOREPLY_RCPT | opt::NOREPLY_HEADER | opt::NOREPLY_EOH;

/// The macros asked for: the SASL login of an authenticated submission at MAIL FROM (a trust
/// signal for team mail), the queue ID at end of message (for log lines).
const MACROS: &[(Stage, &str)] = &[(Stage::Mail, "{auth_authen}"), (Stage::Eom, "i")];

/// How a stage ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Continue,
    /// No answer: the MTA agreed not to wait for one at this stage.
    Noreply,
    Accept,
    Reject,
    Tempfail,
    Discard,
    Skip,
}

/// What was agreed with the MTA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    pub actions: u32,
    pub opts: u32,
}

/// The macros the MTA sent, per stage; a stage's macros replace that stage's and clear the later
/// ones, as the MTA sends them again for each message.
#[derive(Debug, Default)]
pub struct Macros([Vec<(Vec<u8>, Vec<u8>)>; Stage::COUNT]);

impl Macros {
    pub fn set(&mut self, stage: Stage, pairs: &[(&[u8], &[u8])]) {
        for later in &mut self.0[stage.index()..] {
            later.clear();
        }
        self.0[stage.index()] = pairs.iter().map(|(n, v)| (n.to_vec(), v.to_vec())).collect();
    }

    /// A macro's value, the newest stage first; `i` and `{i}` are the same name.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        let want = bare(name.as_bytes());
        self.0.iter().rev().flatten().find(|(n, _)| bare(n) == want).map(|(_, v)| v.as_slice())
    }

    fn get_string(&self, name: &str) -> Option<String> {
        self.get(name).map(|v| String::from_utf8_lossy(v).into_owned())
    }

    /// Forgets the macros of a message's stages, at its end.
    pub fn end_message(&mut self) {
        for stage in &mut self.0[Stage::Mail.index()..] {
            stage.clear();
        }
    }
}

/// A macro name without its braces: `{i}` is `i`.
fn bare(name: &[u8]) -> &[u8] {
    name.strip_prefix(b"{").and_then(|n| n.strip_suffix(b"}")).unwrap_or(name)
}

/// Per-connection state.
pub struct Session {
    live: Arc<Live>,
    /// Whether the MTA accepts `Skip` (stop sending the body).
    skip_ok: bool,
    /// The NOREPLY_* options the MTA agreed to.
    noreply: u32,
    pub macros: Macros,
    /// The SMTP reply of a reject, such as `550 5.7.1 ...`.
    pub reply_text: Option<String>,
    txn: Option<Transaction>,
}

/// Per-message state, from MAIL FROM to end of message.
struct Transaction {
    /// The configuration in force when the message began: one message, one configuration.
    config: Arc<Config>,
    envelope: Envelope,
    data: MessageData,
}

fn status_for(on_error: OnError) -> Status {
    match on_error {
        OnError::Accept => Status::Accept,
        OnError::Tempfail => Status::Tempfail,
    }
}

fn envelope_address(args: &[&[u8]]) -> String {
    args.first().map(|a| String::from_utf8_lossy(a).into_owned()).unwrap_or_default()
}

impl Session {
    pub fn new(live: Arc<Live>) -> Session {
        Session { live, skip_ok: false, noreply: 0, macros: Macros::default(), reply_text: None, txn: None }
    }

    /// The answer to a stage that always continues: none if the MTA does not await one.
    fn proceed(&self, stage: u32) -> Status {
        if self.noreply & stage != 0 { Status::Noreply } else { Status::Continue }
    }

    /// Whether a message is under way (between MAIL FROM and its end or abort).
    pub fn in_message(&self) -> bool {
        self.txn.is_some()
    }

    /// What to take of what the MTA offers; an error says why the MTA cannot be served.
    pub fn negotiate(&mut self, version: u32, mta_actions: u32, mta_opts: u32) -> Result<Negotiated, String> {
        if version < wire::VERSION {
            return Err(format!("the MTA speaks milter protocol version {version}; version 6 is needed"));
        }
        if mta_actions & ACTIONS != ACTIONS {
            // The MTA then applies its milter_default_action; nothing we can do about the message.
            error!("the MTA does not offer the add-header and change-header actions; cannot triage");
            metrics::milter_error(MilterError::Negotiation);
            return Err("the MTA does not offer the add-header and change-header actions".into());
        }
        self.skip_ok = mta_opts & opt::SKIP != 0;
        self.noreply = mta_opts & NOREPLY;
        Ok(Negotiated { actions: ACTIONS, opts: mta_opts & (UNUSED | NOREPLY | opt::SKIP) })
    }

    pub fn macro_requests(&self) -> &'static [(Stage, &'static str)] {
        MACROS
    }

    pub fn mail(&mut self, args: &[&[u8]]) -> Status {
        let config = self.live.config();
        let data = MessageData::new(
            &config.helpdesk.header_prefix,
            config.milter.max_header_bytes,
            config.milter.max_body_bytes,
        );
        let login = self.macros.get_string("{auth_authen}");
        let envelope = Envelope::new(&envelope_address(args), std::iter::empty::<&str>())
            .with_sasl_login(login.as_deref());
        self.reply_text = None;
        self.txn = Some(Transaction { config, envelope, data });
        self.proceed(opt::NOREPLY_MAIL)
    }

    pub fn rcpt(&mut self, args: &[&[u8]]) -> Status {
        if let Some(txn) = self.txn.as_mut() {
            txn.envelope.recipients.push(crate::address::normalize(&envelope_address(args)));
        }
        self.proceed(opt::NOREPLY_RCPT)
    }

    /// At DATA every recipient is known: mail that is not for the Help Desk is accepted now, and
    /// the MTA sends nothing more of it (no header, no body, no end of message), so the rest of
    /// the host's mail costs the daemon almost nothing.
    pub fn data(&mut self) -> Status {
        let ours = self
            .txn
            .as_ref()
            .is_some_and(|t| t.envelope.recipients.iter().any(|r| t.config.is_helpdesk_address(r)));
        if ours {
            return Status::Continue;
        }
        self.txn = None;
        self.macros.end_message();
        Status::Accept
    }

    pub fn header(&mut self, name: &[u8], value: &[u8]) -> Status {
        if let Some(txn) = self.txn.as_mut() {
            txn.data.add_header(name, value);
        }
        self.proceed(opt::NOREPLY_HEADER)
    }

    pub fn eoh(&self) -> Status {
        self.proceed(opt::NOREPLY_EOH)
    }

    pub fn body(&mut self, chunk: &[u8]) -> Status {
        let wants_more = self.txn.as_mut().is_none_or(|txn| txn.data.add_body(chunk));
        // Enough for classification: the rest of a large message is not read at all.
        if !wants_more && self.skip_ok { Status::Skip } else { Status::Continue }
    }

    pub fn abort(&mut self) {
        self.txn = None;
        self.macros.end_message();
    }

    /// A new message stream on the same connection (the MTA's QUIT_NC): nothing carries over.
    pub fn restart(&mut self) {
        self.txn = None;
        self.macros = Macros::default();
    }

    fn on_error(&self) -> OnError {
        self.live.config().milter.on_error
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macros_are_found_newest_stage_first_with_or_without_braces() {
        let mut m = Macros::default();
        m.set(Stage::Connect, &[(b"j", b"mx.example.org")]);
        m.set(Stage::Mail, &[(b"{auth_authen}", b"alice"), (b"i", b"OLD")]);
        m.set(Stage::Eom, &[(b"{i}", b"NEW")]);
        assert_eq!(m.get("i"), Some(&b"NEW"[..]));
        assert_eq!(m.get("{auth_authen}"), Some(&b"alice"[..]));
        assert_eq!(m.get("auth_authen"), Some(&b"alice"[..]));
        // A new message's MAIL macros clear the last one's later stages.
        m.set(Stage::Mail, &[(b"i", b"NEXT")]);
        assert_eq!(m.get("i"), Some(&b"NEXT"[..]));
        assert_eq!(m.get("auth_authen"), None);
        m.end_message();
        assert_eq!(m.get("i"), None);
        assert_eq!(m.get("j"), Some(&b"mx.example.org"[..]));
    }
}

//! The milter callbacks: collect one message's envelope, headers and body prefix, then at end of
//! message run the triage and apply its header changes.
//!
//! Nothing here blocks or waits on the network: the callbacks only fill memory within fixed
//! limits, and the decision is a pure function. What they share with the rest of the daemon is
//! in [`crate::live`].

use crate::classify::Class;
use crate::classify::Envelope;
use crate::config::{Config, OnError};
use crate::counts::{Counted, Row};
use crate::listener::MilterListener;
use crate::live::{Live, ReplyJob};
use crate::message::MessageData;
use crate::metrics::{self, LostReply, MilterError};
use crate::policy::Decision;
use crate::reply_file::ReplyFile;
use crate::store::Writer;
use crate::tagging::Tagging;
use crate::triage::{self, Assessment, HeaderChange, Triage, TriageError};
use bytes::Bytes;
use indymilter::{
    Actions, Callbacks, Context, ContextActions, EomContext, MacroStage, NegotiateContext, ProtoOpts,
    SetErrorReply, Status,
};
use std::ffi::{CStr, CString};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use tracing::{debug, error, info, warn};

/// The actions this milter uses: add our headers, delete forged ones.
pub const ACTIONS: Actions = Actions::ADD_HEADER.union(Actions::CHANGE_HEADER);

/// Stages whose answer is always "continue": when the MTA offers it, it need not wait for one.
/// Postfix then sends MAIL, RCPT and all the header fields without a round trip each (it flushes
/// its buffer when it next awaits an answer, at DATA and at the body), which is most of the
/// milter's cost per message. Body chunks are still answered, for Skip.
const NOREPLY: ProtoOpts = ProtoOpts::NOREPLY_MAIL
    .union(ProtoOpts::NOREPLY_RCPT)
    .union(ProtoOpts::NOREPLY_HEADER)
    .union(ProtoOpts::NOREPLY_EOH);

/// Serves milter connections until `shutdown` completes; transactions in flight then finish.
pub async fn serve(listener: MilterListener, live: Arc<Live>, shutdown: impl Future) -> std::io::Result<()> {
    let config = live.config();
    let milter_config = indymilter::Config {
        max_connections: config.milter.max_connections,
        // indymilter's default is libmilter's two hours: a peer that connects and says nothing
        // would hold one of the max_connections slots that long.
        connection_timeout: config.milter.idle_timeout,
        ..Default::default()
    };
    indymilter::run(listener, callbacks(live), milter_config, shutdown).await
}

/// Per-connection state.
pub struct Session {
    /// Whether the MTA accepts `Skip` (stop sending the body).
    skip_ok: bool,
    /// The stages of NOREPLY that the MTA agreed to send without awaiting an answer.
    noreply: ProtoOpts,
    txn: Option<Transaction>,
}

impl Session {
    /// The answer to a stage that always continues: none if the MTA does not await one.
    fn proceed(&self, stage: ProtoOpts) -> Status {
        if self.noreply.contains(stage) { Status::Noreply } else { Status::Continue }
    }
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

fn queue_id(macros: &indymilter::Macros) -> String {
    macros.get(c"i").map_or_else(|| "NOQUEUE".to_string(), |v| v.to_string_lossy().into_owned())
}

fn envelope_address(args: &[CString]) -> String {
    args.first().map(|a| a.to_string_lossy().into_owned()).unwrap_or_default()
}

/// The callbacks, sharing the live configuration.
pub fn callbacks(live: Arc<Live>) -> Callbacks<Session> {
    let for_mail = live.clone();
    Callbacks::new()
        .on_negotiate(|cx, actions, opts| Box::pin(negotiate(cx, actions, opts)))
        .on_mail(move |cx, args| Box::pin(mail(for_mail.clone(), cx, args)))
        .on_rcpt(|cx, args| Box::pin(rcpt(cx, args)))
        // Answering DATA makes Postfix wait for our reply, which carries the ACK that would
        // otherwise be delayed 40 ms behind the macros Postfix sends without awaiting an answer.
        .on_data(|cx| Box::pin(data(cx)))
        .on_header(|cx, name, value| Box::pin(header(cx, name, value)))
        .on_eoh(|cx| {
            Box::pin(async {
                cx.data.as_ref().map_or(Status::Continue, |s| s.proceed(ProtoOpts::NOREPLY_EOH))
            })
        })
        .on_body(|cx, chunk| Box::pin(body(cx, chunk)))
        .on_eom(move |cx| Box::pin(eom(live.clone(), cx)))
        .on_abort(|cx| Box::pin(abort(cx)))
}

async fn negotiate(cx: &mut NegotiateContext<Session>, mta_actions: Actions, mta_opts: ProtoOpts) -> Status {
    if !mta_actions.contains(ACTIONS) {
        // The MTA then applies its milter_default_action; nothing we can do about the message.
        error!("the MTA does not offer the add-header and change-header actions; cannot triage");
        metrics::milter_error(MilterError::Negotiation);
        return Status::Reject;
    }
    cx.requested_actions = ACTIONS;
    let skip_ok = mta_opts.contains(ProtoOpts::SKIP);
    if skip_ok {
        cx.requested_opts |= ProtoOpts::SKIP;
    }
    let noreply = mta_opts & NOREPLY;
    cx.requested_opts |= noreply;
    // The queue ID, for log lines.
    cx.requested_macros.insert(MacroStage::Eom, c"i".into());
    // The SASL login of an authenticated submission: a trust signal for team mail.
    cx.requested_macros.insert(MacroStage::Mail, c"{auth_authen}".into());
    cx.data = Some(Session { skip_ok, noreply, txn: None });
    Status::Continue
}

async fn mail(live: Arc<Live>, cx: &mut Context<Session>, args: Vec<CString>) -> Status {
    let config = live.config();
    let Some(session) = cx.data.as_mut() else {
        error!("no session at MAIL FROM");
        metrics::milter_error(MilterError::NoSession);
        return status_for(config.milter.on_error);
    };
    let data = MessageData::new(
        &config.helpdesk.header_prefix,
        config.milter.max_header_bytes,
        config.milter.max_body_bytes,
    );
    let login = cx.macros.get(c"{auth_authen}").map(|v| v.to_string_lossy().into_owned());
    let envelope =
        Envelope::new(&envelope_address(&args), std::iter::empty::<&str>()).with_sasl_login(login.as_deref());
    session.txn = Some(Transaction { config, envelope, data });
    session.proceed(ProtoOpts::NOREPLY_MAIL)
}

async fn rcpt(cx: &mut Context<Session>, args: Vec<CString>) -> Status {
    let Some(session) = cx.data.as_mut() else { return Status::Continue };
    if let Some(txn) = session.txn.as_mut() {
        txn.envelope.recipients.push(crate::address::normalize(&envelope_address(&args)));
    }
    session.proceed(ProtoOpts::NOREPLY_RCPT)
}

/// At DATA every recipient is known: mail that is not for the Help Desk is accepted now, and
/// Postfix sends nothing more of it (no header, no body, no end of message), so the rest of the
/// host's mail costs the daemon almost nothing.
async fn data(cx: &mut Context<Session>) -> Status {
    let Some(session) = cx.data.as_mut() else { return Status::Continue };
    let ours = session
        .txn
        .as_ref()
        .is_some_and(|t| t.envelope.recipients.iter().any(|r| t.config.is_helpdesk_address(r)));
    if ours {
        return Status::Continue;
    }
    session.txn = None;
    Status::Accept
}

async fn header(cx: &mut Context<Session>, name: CString, value: CString) -> Status {
    let Some(session) = cx.data.as_mut() else { return Status::Continue };
    if let Some(txn) = session.txn.as_mut() {
        txn.data.add_header(name.as_bytes(), value.as_bytes());
    }
    session.proceed(ProtoOpts::NOREPLY_HEADER)
}

async fn body(cx: &mut Context<Session>, chunk: Bytes) -> Status {
    let Some(session) = cx.data.as_mut() else { return Status::Continue };
    let skip_ok = session.skip_ok;
    let wants_more = session.txn.as_mut().is_none_or(|txn| txn.data.add_body(&chunk));
    // Enough for classification: the rest of a large message is not read at all.
    if !wants_more && skip_ok { Status::Skip } else { Status::Continue }
}

async fn abort(cx: &mut Context<Session>) -> Status {
    if let Some(s) = cx.data.as_mut() {
        s.txn = None;
    }
    Status::Continue
}

async fn eom(live: Arc<Live>, cx: &mut EomContext<Session>) -> Status {
    let qid = queue_id(&cx.macros);
    let Some(txn) = cx.data.as_mut().and_then(|s| s.txn.take()) else {
        let on_error = live.config().milter.on_error;
        error!(queue_id = %qid, "end of message without a transaction; applying on_error = {on_error:?}");
        metrics::milter_error(MilterError::NoTransaction);
        return status_for(on_error);
    };
    let on_error = txn.config.milter.on_error;
    let reply_file = live.reply_file();
    let now = crate::clock::unix_now();
    // The decisions are pure and tested not to panic; should one ever, the message still
    // follows the configured policy instead of the connection dying.
    let assessed = std::panic::catch_unwind(AssertUnwindSafe(|| {
        triage::assess(&txn.config, reply_file.as_deref(), &txn.envelope, &txn.data)
    }));
    let assessed = match assessed {
        Ok(Ok(Assessment::Ours(a))) => a,
        Ok(Ok(Assessment::NotOurs)) => {
            debug!(queue_id = %qid, "not for the help desk; untouched");
            return Status::Accept;
        }
        Ok(Err(e @ TriageError::TooManyPrefixedHeaders)) => {
            // Its forged triage headers cannot all be removed, so passing it on (on_error =
            // accept) would hand a forged class to the Help Desk's filters. No mail client writes
            // hundreds of thousands of X-HelpDesk- fields: refuse it, and the sender is told.
            warn!(queue_id = %qid, "rejected: {e}");
            metrics::milter_error(MilterError::ForgedHeaders);
            let _ = cx.reply.set_error_reply("550", Some("5.7.1"), [format!("message refused: {e}")]);
            return Status::Reject;
        }
        Err(_) => {
            error!(queue_id = %qid, "internal error while triaging; applying on_error = {on_error:?}");
            metrics::milter_error(MilterError::Internal);
            return status_for(on_error);
        }
    };
    let state = match &assessed.pending {
        Some(p) => {
            let (config, interval) = (&txn.config, txn.config.autoreply.interval);
            let rules = |v: &_| triage::state_decision(config, v);
            Some(live.state.decide(&p.canonical_sender, now, interval, &p.topics, rules).await)
        }
        None => None,
    };
    let Ok(triage) = std::panic::catch_unwind(AssertUnwindSafe(|| assessed.finish(state))) else {
        error!(queue_id = %qid, "internal error while triaging; applying on_error = {on_error:?}");
        metrics::milter_error(MilterError::Internal);
        return status_for(on_error);
    };
    if let Err(e) = apply(&cx.actions, &triage.changes).await {
        error!(queue_id = %qid, "cannot change headers: {e}; applying on_error = {on_error:?}");
        metrics::milter_error(MilterError::HeaderChange);
        return status_for(on_error);
    }
    let discard = matches!(triage.tagging, Tagging::Tag { .. })
        && txn.config.helpdesk.tag_messages == crate::config::TagMessages::Discard;
    hand_off(&live, &qid, txn.config, reply_file, triage, now);
    // A tag is all such a message is for, when the Help Desk wants it so.
    if discard { Status::Discard } else { Status::Accept }
}

/// After the header changes: the log line, the counts, the metrics and the reply job. Only
/// memory and channel sends: the worker records, writes and sends the reply after this transaction.
fn hand_off(
    live: &Live,
    qid: &str,
    config: Arc<Config>,
    reply_file: Option<Arc<ReplyFile>>,
    triage: Triage,
    now: u64,
) {
    log_outcome(qid, &triage);
    count(live, &config, &triage, now);
    if let Some(class) = triage.class {
        metrics::triaged(class, triage.decision);
    }
    // The reply is built from the reply file the decision was taken with.
    let (Some((request, reservation)), Some(reply_file), Some(jobs)) =
        (triage.reply, reply_file, &live.replies)
    else {
        return;
    };
    let job = ReplyJob { queue_id: qid.to_string(), config, reply_file, request, reservation };
    if jobs.send(job).is_err() {
        error!(queue_id = %qid, "the reply worker is gone; reply not sent");
        metrics::reply_failed(LostReply::NotQueued);
    }
}

/// Hands a triaged message's row to the statistics writer: a send on a channel, no I/O here.
/// A message that tags reports is counted as its tags only: it is a Help Desk member's.
fn count(live: &Live, config: &Config, t: &Triage, now: u64) {
    let (Some(class), Some(counts)) = (t.class, &live.counts) else { return };
    if !config.stats.enabled {
        return;
    }
    let counted = match &t.tagging {
        Tagging::Tag { reports, topics } => Counted {
            day: crate::calendar::day_of_unix(now),
            row: None,
            writer: None,
            report: None,
            tags: reports.iter().flat_map(|r| topics.iter().map(move |t| (r.clone(), t.clone()))).collect(),
        },
        _ => {
            let decision = t.decision.map(|d| d.header_value()).unwrap_or_default();
            let row = Row::new(now, class.as_str(), &t.topics, t.signals.encrypted, &decision);
            // A report is one writer (its sender is a dummy); a null sender is nobody to count.
            let report = t.signals.report_id.clone().filter(|_| class == Class::Whisperback);
            let writer = match &report {
                Some(id) => Some(Writer::Report(id.clone())),
                None if t.signals.null_sender => None,
                None => Some(Writer::Sender(crate::address::canonical_sender(&t.signals.sender))),
            };
            Counted::message(row, writer, report)
        }
    };
    // A closed channel means the daemon is stopping; the count is then lost, the mail is not.
    let _ = counts.send(counted);
}

/// Applies the header changes in order.
pub async fn apply(
    actions: &impl ContextActions,
    changes: &[HeaderChange],
) -> Result<(), indymilter::ActionError> {
    for change in changes {
        match change {
            HeaderChange::Delete { name, index } => {
                let name = CString::new(name.clone()).unwrap_or_else(|e| {
                    // Names come from the MTA as C strings, so this cannot happen; stay total anyway.
                    let mut v = e.into_vec();
                    v.retain(|&b| b != 0);
                    CString::new(v).unwrap_or_default()
                });
                let index = i32::try_from(*index).unwrap_or(i32::MAX);
                actions.change_header(name, index, None::<&CStr>).await?;
            }
            HeaderChange::Add { name, value } => actions.add_header(name.as_str(), value.as_str()).await?,
        }
    }
    Ok(())
}

/// One line per message at info level: queue ID, class and decisions; never an address or Subject.
fn log_outcome(qid: &str, t: &Triage) {
    let Some(class) = t.class else {
        debug!(queue_id = %qid, "not for the help desk; untouched");
        return;
    };
    // Every value one token, written alike, so that the fields read (and parse) the same way.
    let yes_no = |b: bool| if b { "yes" } else { "no" };
    let (autoreply, reason) = match t.decision {
        Some(Decision::Queued) => ("queued", "-"),
        Some(Decision::QueuedNewTopic) => ("queued", "new-topic"),
        Some(Decision::Suppressed(r)) => ("suppressed", r.as_str()),
        None => ("-", "-"),
    };
    let topics = if t.topics.is_empty() { "-".to_string() } else { t.topics.join(",") };
    info!(
        queue_id = %qid,
        class = %class,
        priority = %class.priority().as_str(),
        encrypted = %yes_no(t.signals.encrypted),
        subject_tags = %t.signals.tags.len(),
        topics = %topics,
        autoreply = %autoreply,
        reason = %reason,
        forged_removed = %t.removed(),
        truncated = %yes_no(t.signals.truncated),
        "triaged"
    );
    match &t.tagging {
        Tagging::Tag { reports, topics } => {
            info!(queue_id = %qid, reports = %reports.len(), topics = %topics.join(","), "reports tagged")
        }
        Tagging::Untrusted => info!(queue_id = %qid, "tag ignored: the sender is not a trusted member"),
        Tagging::None => {}
    }
}

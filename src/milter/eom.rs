//! End of message: the triage, the state's decision, the header changes; then, off the
//! connection's way, the log line, the counts, the metrics and the reply job.

use super::{Session, Status, status_for};
use crate::classify::Class;
use crate::config::Config;
use crate::counts::{Counted, Row};
use crate::live::{Live, ReplyJob};
use crate::metrics::{self, LostReply, MilterError};
use crate::policy::Decision;
use crate::reply_file::ReplyFile;
use crate::store::Writer;
use crate::tagging::Tagging;
use crate::triage::{self, Assessment, HeaderChange, Triage, TriageError};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use tracing::{debug, error, info, warn};

impl Session {
    /// The header changes to make, how the message ends, and what to do once the MTA has them.
    pub async fn eom(&mut self) -> (Vec<HeaderChange>, Status, Option<HandOff>) {
        let qid = self.macros.get_string("i").unwrap_or_else(|| "NOQUEUE".to_string());
        let Some(txn) = self.txn.take() else {
            let on_error = self.on_error();
            error!(queue_id = %qid, "end of message without a transaction; applying on_error = {on_error:?}");
            metrics::milter_error(MilterError::NoTransaction);
            return (Vec::new(), status_for(on_error), None);
        };
        self.macros.end_message();
        let on_error = txn.config.milter.on_error;
        let failed = |why: &str| {
            error!(queue_id = %qid, "{why}; applying on_error = {on_error:?}");
            metrics::milter_error(MilterError::Internal);
            (Vec::new(), status_for(on_error), None)
        };
        let reply_file = self.live.reply_file();
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
                return (Vec::new(), Status::Accept, None);
            }
            Ok(Err(e @ TriageError::TooManyPrefixedHeaders)) => {
                // Its forged triage headers cannot all be removed, so passing it on (on_error =
                // accept) would hand a forged class to the Help Desk's filters. No mail client
                // writes hundreds of thousands of X-HelpDesk- fields: refuse it, and say why.
                warn!(queue_id = %qid, "rejected: {e}");
                metrics::milter_error(MilterError::ForgedHeaders);
                self.reply_text = Some(format!("550 5.7.1 message refused: {e}"));
                return (Vec::new(), Status::Reject, None);
            }
            Err(_) => return failed("internal error while triaging"),
        };
        let state = match &assessed.pending {
            Some(p) => {
                let (config, interval) = (&txn.config, txn.config.autoreply.interval);
                let rules = |v: &_| triage::state_decision(config, v);
                Some(self.live.state.decide(&p.canonical_sender, now, interval, &p.topics, rules).await)
            }
            None => None,
        };
        let Ok(mut triage) = std::panic::catch_unwind(AssertUnwindSafe(|| assessed.finish(state))) else {
            return failed("internal error while triaging");
        };
        let discard = matches!(triage.tagging, Tagging::Tag { .. })
            && txn.config.helpdesk.tag_messages == crate::config::TagMessages::Discard;
        let changes = std::mem::take(&mut triage.changes);
        let removed = changes.iter().filter(|c| matches!(c, HeaderChange::Delete { .. })).count();
        let after =
            HandOff { live: self.live.clone(), qid, config: txn.config, reply_file, triage, removed, now };
        // A tag is all such a message is for, when the Help Desk wants it so.
        (changes, if discard { Status::Discard } else { Status::Accept }, Some(after))
    }
}

/// What follows a triaged message once the MTA has its header changes: the log line, the counts,
/// the metrics and the reply job. Only memory and channel sends: the worker records, writes and
/// sends the reply after this transaction. Should the MTA not take the changes, none of it
/// happens, as the message was not triaged.
pub struct HandOff {
    live: Arc<Live>,
    qid: String,
    config: Arc<Config>,
    reply_file: Option<Arc<ReplyFile>>,
    triage: Triage,
    removed: usize,
    now: u64,
}

impl HandOff {
    pub fn complete(self) {
        let HandOff { live, qid, config, reply_file, triage, removed, now } = self;
        log_outcome(&qid, &triage, removed);
        count(&live, &config, &triage, now);
        if let Some(class) = triage.class {
            metrics::triaged(class, triage.decision);
        }
        // The reply is built from the reply file the decision was taken with.
        let (Some((request, reservation)), Some(reply_file), Some(jobs)) =
            (triage.reply, reply_file, &live.replies)
        else {
            return;
        };
        let job = ReplyJob { queue_id: qid.clone(), config, reply_file, request, reservation };
        if jobs.send(job).is_err() {
            error!(queue_id = %qid, "the reply worker is gone; reply not sent");
            metrics::reply_failed(LostReply::NotQueued);
        }
    }

    pub fn queue_id(&self) -> &str {
        &self.qid
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

/// One line per message at info level: queue ID, class and decisions; never an address or Subject.
fn log_outcome(qid: &str, t: &Triage, removed: usize) {
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
        forged_removed = %removed,
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

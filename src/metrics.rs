//! The optional Prometheus endpoint (`[metrics] listen`): the daemon's health for sysadmins.
//!
//! One place names every metric, describes it and says what its labels may hold; the rest of the
//! daemon calls the small functions below. They use the `metrics` crate's macros, which only
//! touch memory (atomic counters in the exporter's registry) and do nothing at all when no
//! recorder is installed, so the milter's callbacks can call them. The outbox sets its two gauges
//! from its own task (`outbox::gauges`), off the milter's path.
//!
//! Label values come from closed sets (classes, reasons, kinds), all registered at 0 when the
//! endpoint starts, so that a dashboard or an alert sees every series before its first event.
//! Nothing that identifies a person is ever a label: no address, Subject, Message-ID, queue ID
//! or report ID.

use crate::classify::Class;
use crate::policy::{Decision, Reason};
use ::metrics::{counter, describe_counter, describe_gauge, gauge};
use metrics_exporter_prometheus::PrometheusBuilder;
use std::net::SocketAddr;
use std::time::Duration;
use tracing::error;

/// Every metric the endpoint serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// Messages triaged (for the Help Desk), by `class`.
    Messages,
    /// Replies written to the outbox.
    RepliesQueued,
    /// Replies the relay accepted.
    RepliesSent,
    /// Messages that got no reply, by `reason` (the token of `X-HelpDesk-Autoreply: suppressed`).
    RepliesSuppressed,
    /// Replies decided but never delivered, by `reason` ([`LostReply`]).
    RepliesFailed,
    /// New reply-file versions put in use (by the watcher or on SIGHUP).
    ReplyFileReloads,
    /// Invalid reply files refused, the running version kept.
    ReplyFileRefusals,
    /// Configuration reloads on SIGHUP.
    ConfigReloads,
    /// Invalid configurations refused on SIGHUP, the running one kept.
    ConfigRefusals,
    /// Entries waiting in the outbox (a gauge).
    OutboxDepth,
    /// Age of the oldest outbox entry, 0 when it is empty (a gauge).
    OutboxOldestAge,
    /// Messages (or, for `negotiation`, connections) the milter could not handle normally, by
    /// `kind` ([`MilterError`]).
    MilterErrors,
    /// Whether the state store can be used (a gauge, 1 or 0).
    StoreUp,
    /// Calls to the shared store that failed or took longer than `[state] timeout`, by `kind`
    /// ([`StoreFailure`]).
    StoreFailures,
}

impl Metric {
    pub const ALL: [Metric; 14] = [
        Metric::Messages,
        Metric::RepliesQueued,
        Metric::RepliesSent,
        Metric::RepliesSuppressed,
        Metric::RepliesFailed,
        Metric::ReplyFileReloads,
        Metric::ReplyFileRefusals,
        Metric::ConfigReloads,
        Metric::ConfigRefusals,
        Metric::OutboxDepth,
        Metric::OutboxOldestAge,
        Metric::MilterErrors,
        Metric::StoreUp,
        Metric::StoreFailures,
    ];

    /// The name served; counters end in `_total`.
    pub fn name(self) -> &'static str {
        match self {
            Metric::Messages => "helpdesk_milter_messages_total",
            Metric::RepliesQueued => "helpdesk_milter_replies_queued_total",
            Metric::RepliesSent => "helpdesk_milter_replies_sent_total",
            Metric::RepliesSuppressed => "helpdesk_milter_replies_suppressed_total",
            Metric::RepliesFailed => "helpdesk_milter_replies_failed_total",
            Metric::ReplyFileReloads => "helpdesk_milter_reply_file_reloads_total",
            Metric::ReplyFileRefusals => "helpdesk_milter_reply_file_refusals_total",
            Metric::ConfigReloads => "helpdesk_milter_config_reloads_total",
            Metric::ConfigRefusals => "helpdesk_milter_config_refusals_total",
            Metric::OutboxDepth => "helpdesk_milter_outbox_depth",
            Metric::OutboxOldestAge => "helpdesk_milter_outbox_oldest_age_seconds",
            Metric::MilterErrors => "helpdesk_milter_errors_total",
            Metric::StoreUp => "helpdesk_milter_store_up",
            Metric::StoreFailures => "helpdesk_milter_store_failures_total",
        }
    }

    /// The HELP line.
    fn help(self) -> &'static str {
        match self {
            Metric::Messages => "Messages for the Help Desk triaged, by class (X-HelpDesk-Class).",
            Metric::RepliesQueued => "Auto-replies written to the outbox.",
            Metric::RepliesSent => "Auto-replies accepted by the relay.",
            Metric::RepliesSuppressed => {
                "Messages that get no auto-reply, by reason (X-HelpDesk-Autoreply: suppressed (reason))."
            }
            Metric::RepliesFailed => "Auto-replies decided but never delivered, by reason.",
            Metric::ReplyFileReloads => "New versions of the reply file put in use.",
            Metric::ReplyFileRefusals => "Invalid reply files refused; the running version was kept.",
            Metric::ConfigReloads => "Configuration reloads (SIGHUP).",
            Metric::ConfigRefusals => "Invalid configurations refused on SIGHUP; the running one was kept.",
            Metric::OutboxDepth => "Auto-replies waiting in the outbox.",
            Metric::OutboxOldestAge => "Age in seconds of the oldest auto-reply in the outbox; 0 when empty.",
            Metric::MilterErrors => {
                "Milter errors, by kind: on_error applied, or the message or connection refused."
            }
            Metric::StoreUp => "1 while the state store can be used, 0 while no auto-reply can be decided.",
            Metric::StoreFailures => {
                "Calls to the shared state store that failed or took longer than state.timeout, by kind."
            }
        }
    }

    fn is_gauge(self) -> bool {
        matches!(self, Metric::OutboxDepth | Metric::OutboxOldestAge | Metric::StoreUp)
    }

    /// The label of a labelled metric, and every value it can take.
    fn label(self) -> Option<(&'static str, Vec<&'static str>)> {
        match self {
            Metric::Messages => Some(("class", Class::ALL.map(Class::as_str).to_vec())),
            Metric::RepliesSuppressed => Some(("reason", Reason::ALL.map(Reason::as_str).to_vec())),
            Metric::RepliesFailed => Some(("reason", LostReply::ALL.map(LostReply::as_str).to_vec())),
            Metric::MilterErrors => Some(("kind", MilterError::ALL.map(MilterError::as_str).to_vec())),
            Metric::StoreFailures => Some(("kind", StoreFailure::ALL.map(StoreFailure::as_str).to_vec())),
            _ => None,
        }
    }
}

/// Why a reply that was decided never reached the relay (label `reason` of [`Metric::RepliesFailed`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LostReply {
    /// Still undelivered at the end of `autoreply.lifetime`.
    Expired,
    /// A permanent failure: the relay refused it (5xx), its recipient cannot be sent to, or the
    /// outcome after transmission is unknown (not retried, to avoid a duplicate).
    Permanent,
    /// It could not be recorded or written to the outbox.
    NotQueued,
    /// Its outbox entry was unreadable or damaged and was moved to `corrupt/`.
    Corrupt,
}

impl LostReply {
    pub const ALL: [LostReply; 4] =
        [LostReply::Expired, LostReply::Permanent, LostReply::NotQueued, LostReply::Corrupt];

    pub fn as_str(self) -> &'static str {
        match self {
            LostReply::Expired => "expired",
            LostReply::Permanent => "permanent",
            LostReply::NotQueued => "not-queued",
            LostReply::Corrupt => "corrupt",
        }
    }
}

/// What went wrong with a message in the milter (label `kind` of [`Metric::MilterErrors`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MilterError {
    /// The triage failed unexpectedly; `on_error` was applied.
    Internal,
    /// The connection failed while the header changes were written: the MTA's own default action
    /// applies to the message (nothing is counted or answered).
    HeaderChange,
    /// Rejected: more forged X-HelpDesk- fields than can be removed.
    ForgedHeaders,
    /// End of message without MAIL FROM (an MTA out of step); `on_error` was applied.
    NoTransaction,
    /// A command before the negotiation (an MTA out of step): the connection is closed, and the
    /// MTA's own default action applies.
    NoSession,
    /// The MTA does not offer the header actions: its `milter_default_action` applies.
    Negotiation,
}

impl MilterError {
    pub const ALL: [MilterError; 6] = [
        MilterError::Internal,
        MilterError::HeaderChange,
        MilterError::ForgedHeaders,
        MilterError::NoTransaction,
        MilterError::NoSession,
        MilterError::Negotiation,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MilterError::Internal => "internal",
            MilterError::HeaderChange => "header-change",
            MilterError::ForgedHeaders => "forged-headers",
            MilterError::NoTransaction => "no-transaction",
            MilterError::NoSession => "no-session",
            MilterError::Negotiation => "negotiation",
        }
    }
}

/// Why a call to the shared store did not succeed (label `kind` of [`Metric::StoreFailures`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreFailure {
    /// No answer within its limit (`[state] timeout` on the milter's path).
    Timeout,
    /// The server could not be reached, refused the call or this host.
    Error,
}

impl StoreFailure {
    pub const ALL: [StoreFailure; 2] = [StoreFailure::Timeout, StoreFailure::Error];

    pub fn as_str(self) -> &'static str {
        match self {
            StoreFailure::Timeout => "timeout",
            StoreFailure::Error => "error",
        }
    }
}

/// A message for the Help Desk was triaged, with the reply decision in its header.
pub fn triaged(class: Class, decision: Option<Decision>) {
    counter!(Metric::Messages.name(), "class" => class.as_str()).increment(1);
    if let Some(Decision::Suppressed(reason)) = decision {
        counter!(Metric::RepliesSuppressed.name(), "reason" => reason.as_str()).increment(1);
    }
}

/// A reply was written to the outbox.
pub fn reply_queued() {
    counter!(Metric::RepliesQueued.name()).increment(1);
}

/// The relay accepted a reply.
pub fn reply_sent() {
    counter!(Metric::RepliesSent.name()).increment(1);
}

/// A decided reply will never be delivered.
pub fn reply_failed(why: LostReply) {
    counter!(Metric::RepliesFailed.name(), "reason" => why.as_str()).increment(1);
}

/// A new version of the reply file is in use.
pub fn reply_file_reloaded() {
    counter!(Metric::ReplyFileReloads.name()).increment(1);
}

/// An invalid reply file was refused; the running version stays.
pub fn reply_file_refused() {
    counter!(Metric::ReplyFileRefusals.name()).increment(1);
}

/// The configuration was reloaded (SIGHUP).
pub fn config_reloaded() {
    counter!(Metric::ConfigReloads.name()).increment(1);
}

/// An invalid configuration was refused on SIGHUP; the running one stays.
pub fn config_refused() {
    counter!(Metric::ConfigRefusals.name()).increment(1);
}

/// The milter met a message it could not handle normally.
pub fn milter_error(kind: MilterError) {
    counter!(Metric::MilterErrors.name(), "kind" => kind.as_str()).increment(1);
}

/// The outbox's depth and the age of its oldest entry (None: empty).
pub fn outbox_gauges(depth: usize, oldest: Option<Duration>) {
    gauge!(Metric::OutboxDepth.name()).set(depth as f64);
    gauge!(Metric::OutboxOldestAge.name()).set(oldest.map_or(0.0, |age| age.as_secs() as f64));
}

/// Whether the state store can be used.
pub fn store_up(up: bool) {
    gauge!(Metric::StoreUp.name()).set(if up { 1.0 } else { 0.0 });
}

/// A call to the shared store failed or timed out.
pub fn store_failure(kind: StoreFailure) {
    counter!(Metric::StoreFailures.name(), "kind" => kind.as_str()).increment(1);
}

/// Serves the metrics on `addr` (http://ADDR/metrics) from now on. Binds at once and fails if it
/// cannot; must run inside the tokio runtime, which then serves the endpoint. Once per process.
pub fn install(addr: SocketAddr) -> Result<(), String> {
    let (recorder, exporter) =
        PrometheusBuilder::new().with_http_listener(addr).build().map_err(|e| e.to_string())?;
    ::metrics::set_global_recorder(recorder).map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        if let Err(e) = exporter.await {
            error!("the metrics endpoint on {addr} stopped: {e:?}");
        }
    });
    describe_and_register();
    Ok(())
}

/// Every metric described, and every series registered at 0, so that it is there before its
/// first event.
fn describe_and_register() {
    for m in Metric::ALL {
        if m.is_gauge() {
            describe_gauge!(m.name(), m.help());
            gauge!(m.name()).set(0.0);
            continue;
        }
        describe_counter!(m.name(), m.help());
        match m.label() {
            None => counter!(m.name()).increment(0),
            Some((label, values)) => {
                for value in values {
                    counter!(m.name(), label => value).increment(0);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn names_are_ours_unique_and_only_counters_end_in_total() {
        let names: HashSet<&str> = Metric::ALL.iter().map(|m| m.name()).collect();
        assert_eq!(names.len(), Metric::ALL.len());
        for m in Metric::ALL {
            let name = m.name();
            assert!(name.starts_with("helpdesk_milter_"), "{name}");
            assert!(name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'), "{name}");
            assert_eq!(name.ends_with("_total"), !m.is_gauge(), "{name}");
            assert!(m.help().ends_with('.') && !m.help().contains('\n'), "{name}");
            assert!(!m.is_gauge() || m.label().is_none(), "{name}: gauges have no label");
        }
    }

    #[test]
    fn label_values_are_short_tokens() {
        for (label, values) in Metric::ALL.iter().filter_map(|m| m.label()) {
            assert!(!values.is_empty(), "{label}");
            for v in values {
                assert!(v.bytes().all(|b| b.is_ascii_lowercase() || b == b'-'), "{label}={v}");
            }
        }
    }
}

//! helpdesk-milter: a milter that triages the mail sent to a Help Desk address.
//!
//! All logic lives in this library so that it can be tested; `src/main.rs` is the command line.
//! The library API serves the binary and the tests; it makes no stability promise.

pub mod address;
pub mod auth_results;
pub mod calendar;
pub mod classify;
pub mod clock;
pub mod commands;
pub mod config;
pub mod counts;
pub mod daemon;
pub mod diagnostic;
pub mod listener;
pub mod live;
pub mod message;
pub mod metrics;
pub mod milter;
pub mod outbox;
pub mod policy;
pub mod reply;
pub mod reply_file;
pub mod state;
pub mod stats;
pub mod store;
pub mod tagging;
pub mod triage;
pub mod watch;

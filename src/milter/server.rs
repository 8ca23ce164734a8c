//! The milter's sockets: accept connections up to `max_connections`, read the MTA's commands,
//! hand them to a [`Session`], and write its answers.
//!
//! Written here rather than taken from indymilter because the CPU per message under Postfix
//! showed the cost of its design (README, "Performance"): here one task per connection calls the
//! session directly, reads every command the MTA sent together with one read, and writes the
//! answers to them, the header changes of an end of message included, with one write.

use super::wire::{self, Command, Reply, Stage};
use super::{Session, Status};
use crate::listener::{Accepted, MilterListener};
use crate::live::Live;
use crate::metrics::{self, MilterError};
use crate::triage::HeaderChange;
use bytes::{Buf, BytesMut};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tracing::{debug, warn};

/// How long, once the daemon is asked to stop, the messages in flight may take to finish.
const STOP_GRACE: Duration = Duration::from_secs(30);

/// Serves milter connections until `shutdown` completes; the messages in flight then finish
/// (within [`STOP_GRACE`]), and every connection is closed between two messages.
pub async fn serve(
    mut listener: MilterListener,
    live: Arc<Live>,
    shutdown: impl Future,
) -> std::io::Result<()> {
    let (max, idle) = {
        let c = live.config();
        (c.milter.max_connections, c.milter.idle_timeout)
    };
    let slots = Arc::new(Semaphore::new(max.max(1)));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        // A connection is accepted only with a free slot, so that a flood waits in the backlog.
        let slot = tokio::select! {
            _ = &mut shutdown => break,
            s = slots.clone().acquire_owned() => s.expect("the semaphore is never closed"),
        };
        let stream = tokio::select! {
            _ = &mut shutdown => break,
            s = listener.accept() => s,
        };
        while connections.try_join_next().is_some() {}
        let (live, stop) = (live.clone(), stop_rx.clone());
        match stream {
            Accepted::Tcp(s) => connections.spawn(async move {
                connection(s, live, idle, stop).await;
                drop(slot);
            }),
            Accepted::Unix(s) => connections.spawn(async move {
                connection(s, live, idle, stop).await;
                drop(slot);
            }),
        };
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let finished =
        tokio::time::timeout(STOP_GRACE, async { while connections.join_next().await.is_some() {} });
    if finished.await.is_err() {
        warn!("messages still in flight after {} s; closing their connections", STOP_GRACE.as_secs());
        connections.shutdown().await;
    }
    Ok(())
}

/// One MTA connection, until it quits, fails, idles past `idle` or the daemon stops (public for
/// the fuzz target, which drives it over an in-memory stream).
pub async fn connection<S: AsyncRead + AsyncWrite + Unpin>(
    mut io: S,
    live: Arc<Live>,
    idle: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut conn = Connection {
        session: Session::new(live),
        negotiated: false,
        out: Vec::with_capacity(512),
        hand_off: None,
    };
    let mut input = BytesMut::with_capacity(8192);
    loop {
        // Every command already read, in order; the answers are gathered in `out`.
        loop {
            let wire::Frame { code, data, len: used } = match wire::frame(&input) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => return debug!("milter connection closed: the MTA sent {e}"),
            };
            let step = match wire::command(code, data) {
                Ok(command) => conn.handle(command).await,
                Err(e) => Step::Close(format!("the MTA sent {e}")),
            };
            input.advance(used);
            match step {
                Step::Next => {}
                Step::Close(why) => {
                    let _ = write(&mut io, &conn.out, idle).await;
                    return debug!("milter connection closed: {why}");
                }
                Step::Written => {
                    let ok = write(&mut io, &conn.out, idle).await;
                    conn.out.clear();
                    match (ok, conn.hand_off.take()) {
                        (true, Some(after)) => after.complete(),
                        (false, Some(after)) => {
                            warn!(queue_id = %after.queue_id(), "the MTA did not take the header changes");
                            metrics::milter_error(MilterError::HeaderChange);
                        }
                        _ => {}
                    }
                }
            }
        }
        if !conn.out.is_empty() {
            if !write(&mut io, &conn.out, idle).await {
                return;
            }
            conn.out.clear();
        }
        // Stopping: close between two messages; a message under way is finished first.
        if *stop.borrow() && !conn.session.in_message() {
            return;
        }
        input.reserve(8192);
        let read = tokio::select! {
            r = tokio::time::timeout(idle, io.read_buf(&mut input)) => r,
            _ = stop.changed(), if !*stop.borrow() => continue,
        };
        match read {
            Ok(Ok(0)) => return,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return debug!("milter connection closed: {e}"),
            Err(_) => {
                return debug!("milter connection closed: nothing from the MTA for {} s", idle.as_secs());
            }
        }
    }
}

/// Writes the answers gathered; false if the MTA cannot take them.
async fn write<S: AsyncWrite + Unpin>(io: &mut S, out: &[u8], idle: Duration) -> bool {
    if out.is_empty() {
        return true;
    }
    match tokio::time::timeout(idle, io.write_all(out)).await {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            debug!("milter connection closed while answering: {e}");
            false
        }
        Err(_) => {
            debug!("milter connection closed: the MTA took no answer for {} s", idle.as_secs());
            false
        }
    }
}

/// What the connection does after a command.
enum Step {
    Next,
    /// The answers must go out now, and then the hand-off of an end of message (if any) happens.
    Written,
    Close(String),
}

struct Connection {
    session: Session,
    negotiated: bool,
    out: Vec<u8>,
    /// What an end of message does once its answer is written.
    hand_off: Option<super::eom::HandOff>,
}

impl Connection {
    async fn handle(&mut self, command: Command<'_>) -> Step {
        if !self.negotiated && !matches!(command, Command::OptNeg { .. }) {
            metrics::milter_error(MilterError::NoSession);
            return Step::Close("the MTA did not negotiate first".into());
        }
        let s = &mut self.session;
        let status = match command {
            Command::OptNeg { version, actions, opts } => return self.negotiate(version, actions, opts),
            Command::Macros { stage, pairs } => {
                if let Some(stage) = stage {
                    s.macros.set(stage, &pairs);
                }
                return Step::Next;
            }
            // Not asked for (the MTA may send them all the same): nothing to do but go on.
            Command::Connect | Command::Helo | Command::Unknown => Status::Continue,
            Command::Mail(args) => s.mail(&args),
            Command::Rcpt(args) => s.rcpt(&args),
            Command::Data => s.data(),
            Command::Header { name, value } => s.header(name, value),
            Command::Eoh => s.eoh(),
            Command::Body(chunk) => s.body(chunk),
            Command::Eom(chunk) => {
                if !chunk.is_empty() {
                    s.body(chunk);
                }
                let (changes, status, after) = s.eom().await;
                put_changes(&mut self.out, &changes);
                self.put_status(status);
                self.hand_off = after;
                return Step::Written;
            }
            Command::Abort => {
                s.abort();
                return Step::Next;
            }
            Command::QuitNewConnection => {
                s.restart();
                return Step::Next;
            }
            Command::Quit => return Step::Close("the MTA quit".into()),
        };
        self.put_status(status);
        Step::Next
    }

    fn negotiate(&mut self, version: u32, actions: u32, opts: u32) -> Step {
        match self.session.negotiate(version, actions, opts) {
            Ok(n) => {
                self.negotiated = true;
                let macros: &[(Stage, &str)] = self.session.macro_requests();
                wire::put_optneg(&mut self.out, n.actions, n.opts, macros);
                Step::Next
            }
            Err(why) => Step::Close(why),
        }
    }

    fn put_status(&mut self, status: Status) {
        let reply = match status {
            Status::Noreply => return,
            Status::Continue => Reply::Continue,
            Status::Accept => Reply::Accept,
            Status::Discard => Reply::Discard,
            Status::Skip => Reply::Skip,
            Status::Tempfail => Reply::Tempfail,
            Status::Reject => match self.session.reply_text.take() {
                Some(text) => return wire::put_reply_code(&mut self.out, &text),
                None => Reply::Reject,
            },
        };
        wire::put_reply(&mut self.out, reply);
    }
}

/// The header changes of an end of message, in order.
fn put_changes(out: &mut Vec<u8>, changes: &[HeaderChange]) {
    for change in changes {
        match change {
            HeaderChange::Delete { name, index } => {
                wire::put_delete_header(out, name, u32::try_from(*index).unwrap_or(u32::MAX))
            }
            HeaderChange::Add { name, value } => wire::put_add_header(out, name.as_bytes(), value.as_bytes()),
        }
    }
}

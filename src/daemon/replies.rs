//! The replies, off the milter's path: the state store, the worker that records and writes each
//! reply the milter decided, the outbox and its sender, and the hourly purge of the state.

use super::Opened;
use super::shutdown::{StopSignal, Task};
use crate::clock::unix_now;
use crate::config::Config;
use crate::live::ReplyJob;
use crate::metrics::{self, LostReply};
use crate::outbox::{self, Outbox, SenderConfig};
use crate::reply;
use crate::state::ReplyState;
use crate::store::keys::Keys;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::{Notify, mpsc};
use tracing::{debug, error, info};

/// The parts of the reply pipeline, once started.
pub(super) struct Replies {
    pub state: Arc<ReplyState>,
    /// None when the outbox cannot be used: no reply is then decided at all.
    pub jobs: Option<mpsc::UnboundedSender<ReplyJob>>,
    pub outbox: Option<Arc<Outbox>>,
    pub worker: Option<Task>,
    pub sender: Option<Task>,
    pub purge: Task,
}

/// Opens the state and the outbox and starts the worker, the sender and the purge. A store or an
/// outbox that cannot be used is logged and replaced by a state that never queues a reply (fail
/// closed), so that mail still flows.
pub(super) fn start(config: &Config, store: &Opened) -> Replies {
    let outbox_dir = config.state.directory.join("outbox");
    let mut state = open_state(config, store);
    let outbox = match Outbox::open(&outbox_dir) {
        Ok(o) => Some(Arc::new(o)),
        Err(e) => {
            error!("cannot open the outbox {}: {e}; no auto-reply will be sent", outbox_dir.display());
            state = Arc::new(ReplyState::unavailable(format!("outbox unusable: {e}")));
            None
        }
    };
    let purge = Task::spawn("state purge", {
        let state = state.clone();
        |stop| purge_periodically(state, stop)
    });
    let Some(outbox) = outbox else {
        return Replies { state, jobs: None, outbox: None, worker: None, sender: None, purge };
    };
    let (jobs, jobs_rx) = mpsc::unbounded_channel();
    let wake = Arc::new(Notify::new());
    let worker = Task::spawn("reply worker", {
        let (state, outbox, wake) = (state.clone(), outbox.clone(), wake.clone());
        |stop| reply_worker(jobs_rx, state, outbox, wake, stop)
    });
    let sender_config = SenderConfig {
        delivery: config.autoreply.delivery.clone(),
        helo_name: nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "localhost".into()),
    };
    let sender = Task::spawn("outbox sender", {
        let outbox = outbox.clone();
        |stop| outbox::run_sender(outbox, sender_config, wake, stop.requested())
    });
    Replies {
        state,
        jobs: Some(jobs),
        outbox: Some(outbox),
        worker: Some(worker),
        sender: Some(sender),
        purge,
    }
}

/// The reply state kept in `store`; without a usable store (or secret), one that never queues a
/// reply (fail closed), so that mail still flows. A shared store is used from its first
/// successful connection on.
fn open_state(config: &Config, store: &Opened) -> Arc<ReplyState> {
    let store = match store {
        Opened::Embedded(Some(store)) => store,
        Opened::Embedded(None) => return unavailable("the store cannot be opened".into()),
        Opened::Shared(shared, Some(keys)) => {
            return Arc::new(ReplyState::shared(shared.clone(), keys.clone(), config.state.max_entries));
        }
        Opened::Shared(_, None) => return unavailable("the secret cannot be used".into()),
    };
    let dir = &config.state.directory;
    let opened = store
        .has_answered()
        .and_then(|has| Keys::load_or_create(dir, has))
        .and_then(|keys| ReplyState::open(store.clone(), keys, config.state.max_entries, unix_now()));
    match opened {
        Ok(s) => {
            metrics::store_up(true);
            Arc::new(s)
        }
        Err(e) => {
            error!("the reply state cannot be used, so no auto-reply will be sent until it is fixed: {e}");
            unavailable(e.to_string())
        }
    }
}

fn unavailable(why: String) -> Arc<ReplyState> {
    metrics::store_up(false);
    Arc::new(ReplyState::unavailable(why))
}

/// Records each queued reply in the state store, builds it from the reply file version it was
/// decided with, and writes it to the outbox; then wakes the sender. On stop, it writes the
/// replies already decided, then ends.
pub async fn reply_worker(
    mut jobs: mpsc::UnboundedReceiver<ReplyJob>,
    state: Arc<ReplyState>,
    outbox: Arc<Outbox>,
    wake: Arc<Notify>,
    stop: StopSignal,
) {
    let mut stop = std::pin::pin!(stop.requested());
    loop {
        tokio::select! {
            biased;
            job = jobs.recv() => match job {
                Some(job) => write_reply(job, &state, &outbox, &wake).await,
                None => break,
            },
            () = &mut stop => break,
        }
    }
    // The milter has stopped before this: nothing new comes, and what is queued is written.
    jobs.close();
    while let Some(job) = jobs.recv().await {
        write_reply(job, &state, &outbox, &wake).await;
    }
    debug!("reply worker stopped");
}

async fn write_reply(job: ReplyJob, state: &Arc<ReplyState>, outbox: &Arc<Outbox>, wake: &Notify) {
    let (state, outbox) = (state.clone(), outbox.clone());
    let qid = job.queue_id.clone();
    let done = tokio::task::spawn_blocking(move || {
        // Not queued: forget the reservation too, so that the sender's next message is
        // answered once the disk is usable again instead of never within the interval.
        let not_sent = |why: String| match state.release(&job.reservation) {
            Ok(()) => why,
            Err(e) => format!("{why}; {e}, so this sender gets no reply until its entry expires"),
        };
        // Recorded before it is written, so that a crash never leads to a second reply
        // (doc/reply-rules.md, "a lost reply rather than a second one").
        state.persist(&job.reservation).map_err(|e| {
            // Nothing was recorded: there is nothing in the store to undo.
            state.forget(&job.reservation);
            format!("cannot record the reply, so it is not sent: {e}")
        })?;
        let r = reply::build(&job.config.autoreply, &job.reply_file, &job.request, unix_now());
        let id = outbox.enqueue(&r.recipient, &r.message, SystemTime::now()).map_err(|e| {
            not_sent(format!(
                "cannot write the reply to the outbox {}, so it is not sent: {e}",
                outbox.dir().display()
            ))
        })?;
        Ok::<_, String>((id, r.language))
    })
    .await;
    match done {
        Ok(Ok((id, language))) => {
            info!(queue_id = %qid, reply_id = %id, language = %language, "reply queued");
            metrics::reply_queued();
            wake.notify_one();
        }
        Ok(Err(e)) => {
            error!(queue_id = %qid, "{e}");
            metrics::reply_failed(LostReply::NotQueued);
        }
        Err(e) => {
            error!(queue_id = %qid, "reply worker failed: {e}");
            metrics::reply_failed(LostReply::NotQueued);
        }
    }
}

/// Purges expired senders from the state store every hour until stopped.
async fn purge_periodically(state: Arc<ReplyState>, stop: StopSignal) {
    let mut stop = std::pin::pin!(stop.requested());
    loop {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(3600)) => {}
            () = &mut stop => break,
        }
        let s = state.clone();
        match tokio::task::spawn_blocking(move || s.purge(unix_now())).await {
            Ok(Ok(n)) if n > 0 => debug!("purged {n} expired senders from the state store"),
            Ok(Err(e)) => error!("{e}"),
            _ => {}
        }
    }
}

//! The running daemon: serve the milter socket, reload the configuration on request, and, off
//! the milter's path, record and send the replies it decided.

use crate::commands;
use crate::config::Config;
use crate::listener::MilterListener;
use crate::metrics::{self, Failure};
use crate::milter::{self, ReplyJob, SharedConfig};
use crate::outbox::Outbox;
use crate::reply;
use crate::state::ReplyState;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::{Notify, mpsc};
use tracing::{debug, error, info, warn};

/// Serves milter connections until `shutdown` completes; transactions in flight then finish.
pub async fn serve(listener: MilterListener, shared: SharedConfig, shutdown: impl Future) -> io::Result<()> {
    let config = milter::current(&shared);
    let milter_config = indymilter::Config {
        max_connections: config.milter.max_connections,
        // indymilter's default is libmilter's two hours: a peer that connects and says nothing
        // would hold one of the max_connections slots that long.
        connection_timeout: config.milter.idle_timeout,
        ..Default::default()
    };
    indymilter::run(listener, milter::callbacks(shared), milter_config, shutdown).await
}

pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Opens the reply state; a store that cannot be used is logged and replaced by one that never
/// queues a reply (fail closed), so that mail still flows.
pub fn open_state(config: &Config) -> Arc<ReplyState> {
    match ReplyState::open(&config.state.directory, config.state.max_entries, unix_now()) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            error!("the reply state cannot be used, so no auto-reply will be sent until it is fixed: {e}");
            Arc::new(ReplyState::unavailable(e.to_string()))
        }
    }
}

/// Re-reads the configuration file and the reply file. An invalid file is logged and the
/// running version kept; settings that only take effect at restart are logged and keep their
/// running values. Returns whether the new configuration is in effect.
pub fn reload(shared: &SharedConfig) -> bool {
    let old = milter::current(shared);
    let mut new = match Config::load(&old.path) {
        Ok(c) => c,
        Err(d) => {
            error!("configuration not reloaded, the running one is kept:\n{d}");
            metrics::config_refused();
            return false;
        }
    };
    for name in old.restart_needed(&new) {
        warn!("setting {name} changed: it takes effect at restart, not on reload");
    }
    new.milter.listen = old.milter.listen.clone();
    new.milter.socket_mode = old.milter.socket_mode;
    new.milter.socket_group = old.milter.socket_group.clone();
    new.milter.max_connections = old.milter.max_connections;
    new.milter.idle_timeout = old.milter.idle_timeout;
    new.log_level = old.log_level.clone();
    new.state = old.state.clone();
    new.autoreply.reply_file = old.autoreply.reply_file.clone();
    new.autoreply.relay = old.autoreply.relay.clone();
    new.autoreply.retry_interval = old.autoreply.retry_interval;
    new.autoreply.lifetime = old.autoreply.lifetime;
    new.autoreply.smtp_timeout = old.autoreply.smtp_timeout;
    let reply_file = commands::load_reply_file(&new);
    shared.set_config(new);
    info!("configuration reloaded from {}", old.path.display());
    metrics::config_reloaded();
    match reply_file {
        Ok(Some(f)) => {
            shared.set_reply_file(f);
            metrics::reply_file_reloaded();
        }
        Ok(None) => {}
        Err(d) => {
            error!("reply file not reloaded, the running version is kept:\n{d}");
            metrics::reply_file_refused();
        }
    }
    true
}

/// Records each queued reply in the state store, builds it from the reply file version it was
/// decided with, and writes it to the outbox; then wakes the sender. Runs until the channel closes.
pub async fn reply_worker(
    mut jobs: mpsc::UnboundedReceiver<ReplyJob>,
    state: Arc<ReplyState>,
    outbox: Arc<Outbox>,
    wake: Arc<Notify>,
) {
    while let Some(job) = jobs.recv().await {
        let (state, outbox) = (state.clone(), outbox.clone());
        let qid = job.queue_id.clone();
        let done = tokio::task::spawn_blocking(move || {
            // Not queued: forget the reservation too, so that the sender's next message is
            // answered once the disk is usable again instead of never within the interval.
            let not_sent = |why: String| match state.release(&job.reservation) {
                Ok(()) => why,
                Err(e) => format!("{why}; {e}, so this sender gets no reply until its entry expires"),
            };
            // Recorded before it is written, so that a crash never leads to a second reply (F25).
            state
                .persist(&job.reservation)
                .map_err(|e| not_sent(format!("cannot record the reply, so it is not sent: {e}")))?;
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
                metrics::reply_failed(Failure::NotQueued);
            }
            Err(e) => {
                error!(queue_id = %qid, "reply worker failed: {e}");
                metrics::reply_failed(Failure::NotQueued);
            }
        }
    }
    debug!("reply worker stopped");
}

/// Purges expired senders from the state store every hour until `stop` turns true.
pub async fn purge_periodically(state: Arc<ReplyState>, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs(3600)) => {}
            _ = stop.wait_for(|s| *s) => break,
        }
        let s = state.clone();
        match tokio::task::spawn_blocking(move || s.purge(unix_now())).await {
            Ok(Ok(n)) if n > 0 => debug!("purged {n} expired senders from the state store"),
            Ok(Err(e)) => error!("{e}"),
            _ => {}
        }
    }
}

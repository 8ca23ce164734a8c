//! The running daemon: starts its parts, serves the milter socket, reloads on request, and stops
//! its parts in order. `main.rs` turns the signals into [`Signal`]s and the result into an exit code.
//!
//! # The parts, and the order in which they stop
//!
//! The milter's callbacks decide at end of message and hand the slow work to tasks over channels
//! (`live::Live`): replies to the reply worker, counts to the statistics writer. On SIGTERM or
//! SIGINT every task is told to stop by the same means ([`shutdown`]), in this order, each once
//! the one before has finished:
//!
//! 1. **the milter**: it accepts no new connection; the transactions in flight finish, and may
//!    still decide replies and counts;
//! 2. **the reply-file watcher**;
//! 3. **the reply worker**: it records and writes to the outbox every reply already decided;
//! 4. **the statistics writer**: it writes the counts still pending;
//! 5. **the outbox sender**: it stops between two replies (one being transmitted is finished or
//!    left for later, never sent twice), so the outbox is left consistent;
//! 6. **the outbox gauges and the state purge**, which only look.

mod reload;
mod replies;
pub mod shutdown;

pub use reload::reload;
pub use replies::reply_worker;

use crate::config::Backend;
use crate::config::Config;
use crate::counts;
use crate::listener::MilterListener;
use crate::live::Live;
use crate::reply_file::ReplyFile;
use crate::store::keys::Keys;
use crate::store::postgres::Shared;
use crate::store::sqlite::Embedded;
use crate::store::{CountStore, StoreError};
use crate::{metrics, milter, outbox, watch};
use sd_notify::NotifyState;
use shutdown::{Task, stop_signal};
use std::sync::Arc;
use tokio::sync::mpsc;
use tracing::{error, info};

/// What the daemon is asked to do while it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGHUP: read the configuration and the reply file again.
    Reload,
    /// SIGTERM, SIGINT: finish what is in flight and stop; the name is for the log.
    Stop(&'static str),
}

/// The tasks started beside the milter, stopped in the order of the module documentation.
struct Tasks {
    watcher: Option<watch::WatchHandle>,
    worker: Option<Task>,
    counts: Task,
    sender: Option<Task>,
    lookers: Vec<Task>,
}

impl Tasks {
    async fn stop_in_order(self) {
        drop(self.watcher);
        if let Some(t) = self.worker {
            t.stop().await;
        }
        self.counts.stop().await;
        if let Some(t) = self.sender {
            t.stop().await;
        }
        for t in self.lookers {
            t.stop().await;
        }
    }
}

/// Runs the daemon until a [`Signal::Stop`] (or the end of `signals`); then stops everything in
/// order. An error is a setup failure (the socket) or the milter socket failing.
pub async fn run(
    config: Config,
    reply_file: Option<ReplyFile>,
    mut signals: mpsc::Receiver<Signal>,
) -> Result<(), String> {
    // Metrics first, so that the store's gauges are served from its opening; the store before
    // the socket, so that a `stats` run as soon as the daemon listens finds its tables.
    let metrics_on = start_metrics(&config);
    let store = open_store(&config);
    let listener = MilterListener::bind(&config.milter)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.milter.listen))?;
    let replies = replies::start(&config, &store);
    let (counts_tx, counts_rx) = mpsc::unbounded_channel();
    let counts = Task::spawn("statistics writer", {
        let store = match store {
            // Without the store at start, the writer keeps the counts and opens it at each try.
            Opened::Embedded(store) => CountStore::Embedded(
                store.unwrap_or_else(|| Arc::new(Embedded::lazy(&config.state.directory))),
            ),
            Opened::Shared(shared, _) => CountStore::Shared(shared),
        };
        let retention = config.stats.retention;
        move |stop| counts::record(counts_rx, store, retention, stop.requested())
    });
    let mut lookers = vec![replies.purge];
    if metrics_on && let Some(outbox) = &replies.outbox {
        let outbox = outbox.clone();
        lookers.push(Task::spawn("outbox gauges", |stop| outbox::gauges::watch(outbox, stop.requested())));
    }
    let reply_path = config.autoreply.reply_file.clone();
    if let Some(f) = &reply_file {
        info!("reply file {} loaded (revision {})", reply_path.display(), f.revision);
    }
    let watch_reply = reply_file.is_some();
    let listen = listener.local_addr();
    let config_path = config.path.clone();
    let live = Live::new(config, reply_file, replies.state, replies.jobs, Some(counts_tx));
    let watcher =
        watch_reply.then(|| watch::watch_reply_file(live.clone(), reply_path.clone())).and_then(|w| {
            w.map_err(|e| error!("cannot watch {}: {e}; send SIGHUP to reload it", reply_path.display())).ok()
        });
    let tasks = Tasks { watcher, worker: replies.worker, counts, sender: replies.sender, lookers };
    info!(
        "helpdesk-milter {} listening on {listen} (configuration {})",
        env!("CARGO_PKG_VERSION"),
        config_path.display()
    );
    // Ready: the socket is bound and the reply file loaded.
    notify(&[NotifyState::Ready, NotifyState::Status(&format!("listening on {listen}"))]);
    let (stop_milter, milter_stop) = stop_signal();
    let control = async {
        handle_signals(&live, &mut signals).await;
        notify(&[NotifyState::Stopping]);
        stop_milter.request();
    };
    let serve = milter::serve(listener, live.clone(), milter_stop.requested());
    tokio::pin!(serve);
    let result = tokio::select! {
        // The socket failed: stop the rest all the same.
        r = &mut serve => r,
        () = control => serve.await,
    };
    tasks.stop_in_order().await;
    result.map_err(|e| format!("the milter socket failed: {e}"))?;
    info!("stopped");
    Ok(())
}

/// Reloads on each [`Signal::Reload`]; returns at the first [`Signal::Stop`].
async fn handle_signals(live: &Live, signals: &mut mpsc::Receiver<Signal>) {
    while let Some(signal) = signals.recv().await {
        match signal {
            Signal::Reload => {
                let mut states = vec![NotifyState::Reloading];
                // systemd 253 and later require the monotonic time with RELOADING=1.
                states.extend(NotifyState::monotonic_usec_now().ok());
                notify(&states);
                reload(live);
                notify(&[NotifyState::Ready]);
            }
            Signal::Stop(name) => {
                info!("{name}: finishing transactions in flight, then stopping");
                return;
            }
        }
    }
}

/// The store the configuration names, opened.
pub(super) enum Opened {
    /// This host's file; None when it cannot be used.
    Embedded(Option<Arc<Embedded>>),
    /// The server the hosts share (it connects at its first use), and this host's secret (None
    /// when it cannot be used).
    Shared(Arc<Shared>, Option<Keys>),
}

/// Opens (or creates) the embedded store, or sets up the shared one, which connects later; a
/// store that cannot be used is logged, and the daemon runs on without replies, so that mail
/// still flows.
fn open_store(config: &Config) -> Opened {
    let cannot = |e: StoreError| {
        error!("the reply state cannot be used, so no auto-reply will be sent until it is fixed: {e}");
    };
    match &config.state.backend {
        Backend::Embedded => Opened::Embedded(
            crate::store::open_embedded(&config.state.directory).map(Arc::new).map_err(cannot).ok(),
        ),
        Backend::Postgres { url, password_file } => {
            let dir = &config.state.directory;
            // The secret stays on the host (the outbox too); the server keeps its fingerprint.
            let keys =
                std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
                    .create(dir)
                    .map_err(|e| StoreError::at("cannot create the state directory", dir, e))
                    .and_then(|()| Keys::load_or_create(dir, false))
                    .map_err(cannot)
                    .ok();
            let fingerprint = keys.as_ref().map(Keys::fingerprint);
            let shared = Shared::new(url, password_file.as_deref(), fingerprint, config.state.timeout);
            info!(
                "state and statistics kept on the shared store {}, checked at the first connection",
                shared.name()
            );
            let shared = Arc::new(shared);
            shared.warm_up();
            Opened::Shared(shared, keys)
        }
    }
}

/// Starts the metrics endpoint if configured. Optional: mail flows on without it.
fn start_metrics(config: &Config) -> bool {
    let Some(addr) = config.metrics.listen else { return false };
    match metrics::install(addr) {
        Ok(()) => {
            info!("metrics served on http://{addr}/metrics");
            true
        }
        Err(e) => {
            error!("cannot serve metrics on {addr}: {e}; running without metrics");
            false
        }
    }
}

/// Tells systemd (Type=notify) about the daemon's state; a no-op outside systemd.
fn notify(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!("cannot notify systemd: {e}");
    }
}

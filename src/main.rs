//! helpdesk-milter command line: argument parsing, logging, signals and exit codes.
//! All logic is in the library.

use clap::{Parser, Subcommand};
use helpdesk_milter::commands::{StatsFormat, StatsRequest};
use helpdesk_milter::config::{Config, DEFAULT_CONFIG_PATH};
use helpdesk_milter::counts::{self, CountStore};
use helpdesk_milter::diagnostic::Diagnostics;
use helpdesk_milter::listener::MilterListener;
use helpdesk_milter::milter::Shared;
use helpdesk_milter::outbox::{Outbox, OutboxConfig};
use helpdesk_milter::reply_file::ReplyFile;
use helpdesk_milter::state::ReplyState;
use helpdesk_milter::{commands, daemon, metrics, watch};
use sd_notify::NotifyState;
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{Notify, mpsc};
use tracing::{error, info};

#[derive(Parser)]
#[command(
    name = "helpdesk-milter",
    version,
    about = "Triage the mail sent to a Help Desk address, inside Postfix"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the milter daemon in the foreground (logs to stderr; SIGHUP reloads, SIGTERM stops).
    Run {
        /// Configuration file.
        #[arg(long, short, value_name = "PATH", default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
    },
    /// Validate the configuration and every file it names, or one reply file on its own;
    /// print FILE:LINE:COLUMN: message lines.
    Check {
        /// Configuration file.
        #[arg(long, short, value_name = "PATH", default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
        /// Check only this reply file (no daemon configuration needed), as a merge-request CI job does.
        #[arg(long, value_name = "FILE")]
        reply: Option<PathBuf>,
    },
    /// Print the complete reply message (headers and encoded body) that would answer MESSAGE.
    Preview {
        /// The reply file.
        #[arg(long, value_name = "FILE")]
        reply: PathBuf,
        /// Language of the reply (default: the one the daemon would pick for MESSAGE).
        #[arg(long, value_name = "TAG")]
        lang: Option<String>,
        /// Configuration for From: and the like (default: built-in defaults).
        #[arg(long, short, value_name = "PATH")]
        config: Option<PathBuf>,
        /// The message to answer (RFC 5322); default: a sample request.
        #[arg(value_name = "MESSAGE")]
        message: Option<PathBuf>,
    },
    /// Print the header changes the daemon would make to one message (sends nothing, stores nothing).
    Classify {
        /// Configuration file.
        #[arg(long, short, value_name = "PATH", default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
        /// Envelope sender (MAIL FROM); '<>' is the null sender. Default: Return-Path:, else From:.
        #[arg(long, value_name = "ADDR")]
        sender: Option<String>,
        /// Envelope recipient (RCPT TO), repeatable. Default: the first Help Desk address.
        #[arg(long, value_name = "ADDR")]
        rcpt: Vec<String>,
        /// As if submitted with this SASL login on this host (Postfix's {auth_authen}).
        #[arg(long, value_name = "NAME")]
        sasl_user: Option<String>,
        /// The message (RFC 5322, LF or CRLF line ends); '-' or nothing reads standard input.
        #[arg(value_name = "FILE|-")]
        file: Option<PathBuf>,
    },
    /// Print the messages counted per ISO week, by class and topic, and the frequent topics
    /// (reads the statistics; safe while the daemon runs).
    Stats {
        /// Configuration file (for the state directory and the frequent rule).
        #[arg(long, short, value_name = "PATH", default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
        /// Show the last N weeks, the current one included.
        #[arg(long, value_name = "N", default_value_t = 8)]
        weeks: u32,
        /// Show the weeks from this one (2026-W41, or the week of a date such as 2026-10-05) to now.
        #[arg(long, value_name = "WEEK|DATE", conflicts_with = "weeks")]
        since: Option<String>,
        /// Only the messages about this topic id (repeatable: about any of them).
        #[arg(long, value_name = "ID")]
        topic: Vec<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        /// Also draw the weekly counts per class and per topic as an SVG chart in FILE.
        #[arg(long, value_name = "FILE.svg")]
        plot: Option<PathBuf>,
        /// Frequent: at least this many reports a week (default: stats.frequent_min).
        #[arg(long, value_name = "N")]
        frequent_min: Option<u32>,
        /// ... in each of this many last complete weeks (default: stats.frequent_weeks).
        #[arg(long, value_name = "K")]
        frequent_weeks: Option<u32>,
        /// Report as of this day (UTC, such as 2026-11-21) instead of today.
        #[arg(long, value_name = "DATE")]
        today: Option<String>,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Format {
    Table,
    Json,
    Csv,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config } => run(config),
        Command::Check { reply: Some(reply), .. } => report(ReplyFile::load(&reply).map(|_| ()), &reply),
        Command::Check { config, reply: None } => report(commands::check(&config).map(|_| ()), &config),
        Command::Classify { config, sender, rcpt, sasl_user, file } => {
            classify(config, sender, rcpt, sasl_user, file)
        }
        Command::Preview { reply, lang, config, message } => preview(reply, lang, config, message),
        Command::Stats { config, weeks, since, topic, format, plot, frequent_min, frequent_weeks, today } => {
            let format = match format {
                Format::Table => StatsFormat::Table,
                Format::Json => StatsFormat::Json,
                Format::Csv => StatsFormat::Csv,
            };
            let req = StatsRequest {
                weeks,
                since,
                topics: topic,
                format,
                plot,
                frequent_min,
                frequent_weeks,
                today,
            };
            stats(config, &req)
        }
    }
}

fn stats(config: PathBuf, req: &StatsRequest) -> ExitCode {
    let config = match Config::load(&config) {
        Ok(c) => c,
        Err(d) => {
            eprintln!("{d}");
            return ExitCode::FAILURE;
        }
    };
    match commands::stats(&config, req) {
        Ok(out) => {
            print!("{out}");
            let store = CountStore::new(&config.state.directory);
            if !store.path().exists() {
                // Zeros are then no news: say why, in case the configuration is not the daemon's.
                eprintln!(
                    "helpdesk-milter stats: no statistics at {} yet (nothing counted so far, or not the daemon's state.directory)",
                    store.path().display()
                );
            }
            if let Some(p) = &req.plot {
                eprintln!("chart written to {}", p.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("helpdesk-milter stats: {e}");
            ExitCode::FAILURE
        }
    }
}

fn report(result: Result<(), Diagnostics>, path: &Path) -> ExitCode {
    match result {
        Ok(()) => {
            println!("{}: OK", path.display());
            ExitCode::SUCCESS
        }
        Err(d) => {
            println!("{d}");
            ExitCode::FAILURE
        }
    }
}

fn read_input(file: Option<&Path>) -> std::io::Result<Vec<u8>> {
    let mut raw = Vec::new();
    match file {
        None => std::io::stdin().read_to_end(&mut raw).map(drop)?,
        Some(p) if p.as_os_str() == "-" => std::io::stdin().read_to_end(&mut raw).map(drop)?,
        Some(p) => raw = std::fs::read(p)?,
    }
    Ok(raw)
}

fn preview(
    reply: PathBuf,
    lang: Option<String>,
    config: Option<PathBuf>,
    message: Option<PathBuf>,
) -> ExitCode {
    let file = match ReplyFile::load(&reply) {
        Ok(f) => f,
        Err(d) => {
            eprintln!("{d}");
            return ExitCode::FAILURE;
        }
    };
    let config = match config {
        Some(p) => match Config::load(&p) {
            Ok(c) => c,
            Err(d) => {
                eprintln!("{d}");
                return ExitCode::FAILURE;
            }
        },
        None => Config::defaults(Path::new(DEFAULT_CONFIG_PATH)),
    };
    let raw = match message.as_deref().map(|m| read_input(Some(m))).transpose() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("helpdesk-milter: cannot read the message: {e}");
            return ExitCode::FAILURE;
        }
    };
    let out = commands::preview(&config, &file, lang.as_deref(), raw.as_deref());
    let _ = std::io::stdout().write_all(&out);
    ExitCode::SUCCESS
}

fn classify(
    config: PathBuf,
    sender: Option<String>,
    rcpt: Vec<String>,
    sasl_user: Option<String>,
    file: Option<PathBuf>,
) -> ExitCode {
    let (config, reply_file) = match commands::check(&config) {
        Ok(c) => c,
        Err(d) => {
            eprintln!("{d}");
            return ExitCode::FAILURE;
        }
    };
    let raw = match read_input(file.as_deref()) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("helpdesk-milter: cannot read the message: {e}");
            return ExitCode::FAILURE;
        }
    };
    match commands::classify(
        &config,
        reply_file.as_ref(),
        &raw,
        sender.as_deref(),
        &rcpt,
        sasl_user.as_deref(),
    ) {
        Ok(changes) => {
            for c in changes {
                println!("{c}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!(
                "helpdesk-milter: {e} (the daemon would apply on_error = {:?})",
                config.milter.on_error
            );
            ExitCode::FAILURE
        }
    }
}

fn init_logging(level: &str) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    // HELPDESK_MILTER_LOG (tracing filter syntax) overrides the configured level, for debugging.
    let filter = tracing_subscriber::EnvFilter::try_from_env("HELPDESK_MILTER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    // Under systemd, stderr is a journal stream: log to the journal directly instead, so that the
    // fields (queue ID, class, decision) are journal fields that journalctl can select on.
    let journald = std::env::var_os("JOURNAL_STREAM").and_then(|_| tracing_journald::layer().ok());
    let stderr = journald.is_none().then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .with_target(false)
    });
    tracing_subscriber::registry().with(filter).with(journald).with(stderr).init();
}

/// Tells systemd (Type=notify) about the daemon's state; a no-op outside systemd.
fn notify(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!("cannot notify systemd: {e}");
    }
}

fn run(config_path: PathBuf) -> ExitCode {
    let (config, reply_file) = match commands::check(&config_path) {
        Ok(c) => c,
        Err(d) => {
            eprintln!("{d}");
            return ExitCode::FAILURE;
        }
    };
    init_logging(&config.log_level);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            error!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(serve(config_path, config, reply_file))
}

async fn serve(config_path: PathBuf, config: Config, reply_file: Option<ReplyFile>) -> ExitCode {
    let listener = match MilterListener::bind(&config.milter).await {
        Ok(l) => l,
        Err(e) => {
            error!("cannot listen on {}: {e}", config.milter.listen);
            return ExitCode::FAILURE;
        }
    };
    let (mut hup, mut term, mut int) = match (
        signal(SignalKind::hangup()),
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(h), Ok(t), Ok(i)) => (h, t, i),
        _ => {
            error!("cannot install signal handlers");
            return ExitCode::FAILURE;
        }
    };

    // Metrics are optional: mail flows on without them.
    let metrics_on = match config.metrics.listen {
        None => false,
        Some(addr) => match metrics::install(addr) {
            Ok(()) => {
                info!("metrics served on http://{addr}/metrics");
                true
            }
            Err(e) => {
                error!("cannot serve metrics on {addr}: {e}; running without metrics");
                false
            }
        },
    };

    // Replies: state, outbox, the worker that writes them and the sender that delivers them.
    let outbox_dir = config.state.directory.join("outbox");
    let mut state = daemon::open_state(&config);
    let outbox = match Outbox::open(&outbox_dir) {
        Ok(o) => Some(Arc::new(o)),
        Err(e) => {
            error!("cannot open the outbox {}: {e}; no auto-reply will be sent", outbox_dir.display());
            state = Arc::new(ReplyState::unavailable(format!("outbox unusable: {e}")));
            None
        }
    };
    let (jobs_tx, jobs_rx) = mpsc::unbounded_channel();
    let wake = Arc::new(Notify::new());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    if let Some(outbox) = &outbox {
        tasks.push(tokio::spawn(daemon::reply_worker(jobs_rx, state.clone(), outbox.clone(), wake.clone())));
        let sender_config = OutboxConfig {
            relay: config.autoreply.relay.clone(),
            retry_interval: config.autoreply.retry_interval,
            lifetime: config.autoreply.lifetime,
            smtp_timeout: config.autoreply.smtp_timeout,
            helo_name: nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_else(|| "localhost".into()),
        };
        let mut rx = stop_rx.clone();
        let stopped = async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        tasks.push(tokio::spawn(helpdesk_milter::outbox::run_sender(
            outbox.clone(),
            sender_config,
            wake.clone(),
            stopped,
        )));
    }
    tasks.push(tokio::spawn(daemon::purge_periodically(state.clone(), stop_rx.clone())));
    // Statistics: written by their own task, after the transactions they count.
    let (counts_tx, counts_rx) = mpsc::unbounded_channel();
    let count_store = CountStore::new(&config.state.directory);
    tasks.push(tokio::spawn(counts::record(counts_rx, count_store, config.stats.retention)));
    if metrics_on && let Some(outbox) = &outbox {
        tasks.push(tokio::spawn(metrics::watch_outbox(outbox.clone(), stop_rx.clone())));
    }

    let reply_path = config.autoreply.reply_file.clone();
    if let Some(f) = &reply_file {
        info!("reply file {} loaded (revision {})", reply_path.display(), f.revision);
    }
    let watch_reply = reply_file.is_some();
    let listen = listener.local_addr();
    let shared = Shared::new(config, reply_file, state, Some(jobs_tx), Some(counts_tx));
    let _watcher = if watch_reply {
        match watch::watch_reply_file(shared.clone(), reply_path.clone()) {
            Ok(w) => Some(w),
            Err(e) => {
                error!("cannot watch {}: {e}; send SIGHUP to reload it", reply_path.display());
                None
            }
        }
    } else {
        None
    };
    info!(
        "helpdesk-milter {} listening on {listen} (configuration {})",
        env!("CARGO_PKG_VERSION"),
        config_path.display()
    );
    // Ready: the socket is bound and the reply file loaded.
    notify(&[NotifyState::Ready, NotifyState::Status(&format!("listening on {listen}"))]);
    let reloader = shared.clone();
    let shutdown = async move {
        loop {
            tokio::select! {
                _ = hup.recv() => {
                    let mut states = vec![NotifyState::Reloading];
                    // systemd 253 and later require the monotonic time with RELOADING=1.
                    states.extend(NotifyState::monotonic_usec_now().ok());
                    notify(&states);
                    daemon::reload(&reloader);
                    notify(&[NotifyState::Ready]);
                }
                _ = term.recv() => { info!("SIGTERM: finishing transactions in flight, then stopping"); break; }
                _ = int.recv() => { info!("SIGINT: finishing transactions in flight, then stopping"); break; }
            }
        }
        notify(&[NotifyState::Stopping]);
    };
    let result = daemon::serve(listener, shared, shutdown).await;
    // The callbacks are gone; with the watcher's handle, the last sender of reply jobs goes, so
    // the worker drains the replies already decided and ends; then everything else stops.
    drop(_watcher);
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    match result {
        Ok(()) => {
            info!("stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            error!("the milter socket failed: {e}");
            ExitCode::FAILURE
        }
    }
}

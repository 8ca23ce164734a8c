//! helpdesk-milter command line: argument parsing, logging, signals and exit codes.
//! All logic is in the library.

use clap::{Parser, Subcommand};
use helpdesk_milter::commands::{self, StatsFormat, StatsRequest};
use helpdesk_milter::config::{Config, DEFAULT_CONFIG_PATH};
use helpdesk_milter::daemon::{self, Signal};
use helpdesk_milter::diagnostic::Diagnostics;
use helpdesk_milter::message::MessageData;
use helpdesk_milter::reply_file::ReplyFile;
use helpdesk_milter::stats::Count;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tracing::error;

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
    /// Print the complete reply message (headers and encoded body) that would answer MESSAGE,
    /// leading with the topics matched in it.
    Preview {
        /// The reply file.
        #[arg(long, value_name = "FILE")]
        reply: PathBuf,
        /// Language of the reply (default: the one the daemon would pick for MESSAGE).
        #[arg(long, value_name = "TAG")]
        lang: Option<String>,
        /// Print the header fields and the body decoded, for proofreading (no quoted-printable).
        #[arg(long)]
        text: bool,
        /// Configuration: From:, Help Desk addresses, policy, limits (default: built-in defaults).
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
    /// Print the people (or messages) counted per ISO week, by class and topic, the frequent
    /// topics and the changes the reply file's hot topics need, or the paragraph for a topic's
    /// GitLab issue (reads the statistics; safe while the daemon runs).
    Stats(StatsArgs),
}

#[derive(clap::Args)]
struct StatsArgs {
    /// Configuration file (for the state directory, the reply file and the rules).
    #[arg(long, short, value_name = "PATH", default_value = DEFAULT_CONFIG_PATH)]
    config: PathBuf,
    /// Show the last N weeks, the current one included.
    #[arg(long, value_name = "N", default_value_t = 8)]
    weeks: u32,
    /// Show the weeks from this one (2026-W41, or the week of a date such as 2026-10-05) to now.
    #[arg(long, value_name = "WEEK|DATE", conflicts_with = "weeks")]
    since: Option<String>,
    /// Only what is about this topic id (repeatable: about any of them).
    #[arg(long, value_name = "ID")]
    topic: Vec<String>,
    /// Output format; markdown: the paragraph for the GitLab issue of each --topic.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
    /// What the tables, the frequent rule, the CSV and the chart count: people (each writer
    /// once a week) or messages.
    #[arg(long, value_enum, default_value_t = CountArg::People)]
    count: CountArg,
    /// Also draw the weekly counts per topic and per class as an SVG chart in FILE.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
    /// Frequent: at least this many people a week (default: stats.frequent_min).
    #[arg(long, value_name = "N")]
    frequent_min: Option<u32>,
    /// ... in each of this many last complete weeks (default: stats.frequent_weeks).
    #[arg(long, value_name = "K")]
    frequent_weeks: Option<u32>,
    /// Suggest dropping a hot topic no one wrote about in this many last complete weeks
    /// (default: stats.stale_weeks).
    #[arg(long, value_name = "N")]
    stale_weeks: Option<u32>,
    /// Report as of this day (UTC, such as 2026-11-21) instead of today.
    #[arg(long, value_name = "DATE")]
    today: Option<String>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Format {
    Table,
    Json,
    Csv,
    Markdown,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum CountArg {
    People,
    Messages,
}

impl StatsArgs {
    fn request(self) -> StatsRequest {
        StatsRequest {
            weeks: self.weeks,
            since: self.since,
            topics: self.topic,
            format: match self.format {
                Format::Table => StatsFormat::Table,
                Format::Json => StatsFormat::Json,
                Format::Csv => StatsFormat::Csv,
                Format::Markdown => StatsFormat::Markdown,
            },
            count: match self.count {
                CountArg::People => Count::People,
                CountArg::Messages => Count::Messages,
            },
            plot: self.plot,
            frequent_min: self.frequent_min,
            frequent_weeks: self.frequent_weeks,
            stale_weeks: self.stale_weeks,
            today: self.today,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config } => run(config),
        Command::Check { reply: Some(reply), .. } => report(ReplyFile::load(&reply).map(|_| ()), &reply),
        Command::Check { config, reply: None } => {
            report(commands::check(&config).and_then(|(c, _)| commands::check_host(&c)), &config)
        }
        Command::Classify { config, sender, rcpt, sasl_user, file } => {
            classify(config, sender, rcpt, sasl_user, file)
        }
        Command::Preview { reply, lang, text, config, message } => {
            preview(reply, lang, text, config, message)
        }
        Command::Stats(args) => {
            let config = args.config.clone();
            stats(config, &args.request())
        }
    }
}

fn stats(config: PathBuf, req: &StatsRequest) -> ExitCode {
    if config == Path::new(DEFAULT_CONFIG_PATH) && !config.exists() {
        // Run from a source tree, say, where only the example configuration is.
        eprintln!(
            "helpdesk-milter stats: no configuration at {DEFAULT_CONFIG_PATH}: give the daemon's with --config PATH (in a source tree: --config etc/helpdesk-milter.toml)"
        );
        return ExitCode::FAILURE;
    }
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
            let store = config.state.directory.join(helpdesk_milter::store::sqlite::STORE_FILE);
            if !store.exists() {
                // Zeros are then no news: say why, in case the configuration is not the daemon's.
                eprintln!(
                    "helpdesk-milter stats: no statistics at {} yet (nothing counted so far, or not the daemon's state.directory)",
                    store.display()
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

/// Reads the message of `classify` or `preview` as a stream, keeping what the milter keeps: the
/// memory does not grow with the message. Standard input is read to its end (the rest thrown
/// away), so that a program writing into the pipe is not cut off.
fn read_message(config: &Config, file: Option<&Path>) -> std::io::Result<MessageData> {
    match file {
        Some(p) if p.as_os_str() != "-" => {
            commands::read_message(config, std::io::BufReader::new(std::fs::File::open(p)?))
        }
        _ => {
            let mut stdin = std::io::stdin().lock();
            let data = commands::read_message(config, &mut stdin)?;
            std::io::copy(&mut stdin, &mut std::io::sink())?;
            Ok(data)
        }
    }
}

fn preview(
    reply: PathBuf,
    lang: Option<String>,
    text: bool,
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
    let data = match message.as_deref().map(|m| read_message(&config, Some(m))).transpose() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("helpdesk-milter: cannot read the message: {e}");
            return ExitCode::FAILURE;
        }
    };
    let out = commands::preview(&config, &file, lang.as_deref(), data.as_ref());
    if let Some(why) = &out.not_sent {
        eprintln!(
            "helpdesk-milter preview: the daemon would send no reply to this message ({}Autoreply: {why}); this is the reply it would get otherwise",
            config.helpdesk.header_prefix
        );
    }
    let _ = if text {
        std::io::stdout().write_all(commands::preview_text(&out.message).as_bytes())
    } else {
        std::io::stdout().write_all(&out.message)
    };
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
    let data = match read_message(&config, file.as_deref()) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("helpdesk-milter: cannot read the message: {e}");
            return ExitCode::FAILURE;
        }
    };
    match commands::classify(
        &config,
        reply_file.as_ref(),
        &data,
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

fn run(config_path: PathBuf) -> ExitCode {
    let (config, reply_file) = match commands::check(&config_path) {
        Ok(c) => c,
        Err(d) => {
            eprintln!("{d}");
            return ExitCode::FAILURE;
        }
    };
    init_logging(&config.log_level);
    // Everything the daemon creates (state directory, secret, stores, outbox) is its own alone,
    // whoever runs it and whatever umask it inherits: the systemd unit says UMask=0077, a run by
    // hand must not leave 0755 and 0644 behind. The socket's mode is set from socket_mode.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    // One thread for the milter and its tasks: a milter callback is a few microseconds of work
    // between socket events, and waking other worker threads for it cost more than the work
    // (CPU per message under Postfix, README "Performance"). Disk and database work runs on
    // tokio's blocking pool, never on this thread.
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            error!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let Some(signals) = signals() else {
            error!("cannot install signal handlers");
            return ExitCode::FAILURE;
        };
        match daemon::run(config, reply_file, signals).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                error!("{e}");
                ExitCode::FAILURE
            }
        }
    })
}

/// SIGHUP, SIGTERM and SIGINT as the daemon's signals.
fn signals() -> Option<mpsc::Receiver<Signal>> {
    let mut hup = signal(SignalKind::hangup()).ok()?;
    let mut term = signal(SignalKind::terminate()).ok()?;
    let mut int = signal(SignalKind::interrupt()).ok()?;
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        loop {
            let s = tokio::select! {
                _ = hup.recv() => Signal::Reload,
                _ = term.recv() => Signal::Stop("SIGTERM"),
                _ = int.recv() => Signal::Stop("SIGINT"),
            };
            if tx.send(s).await.is_err() {
                break;
            }
        }
    });
    Some(rx)
}

//! helpdesk-milter command line: argument parsing, logging, signals and exit codes.
//! All logic is in the library.

use clap::{Parser, Subcommand};
use helpdesk_milter::config::{Config, DEFAULT_CONFIG_PATH};
use helpdesk_milter::listener::MilterListener;
use helpdesk_milter::{commands, daemon};
use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::process::ExitCode;
use tokio::signal::unix::{SignalKind, signal};
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
    /// Validate the configuration and every file it names; print FILE:LINE:COLUMN: message lines.
    Check {
        /// Configuration file.
        #[arg(long, short, value_name = "PATH", default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
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
        /// The message (RFC 5322, LF or CRLF line ends); '-' or nothing reads standard input.
        #[arg(value_name = "FILE|-")]
        file: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config } => run(config),
        Command::Check { config } => match commands::check(&config) {
            Ok(_) => {
                println!("{}: OK", config.display());
                ExitCode::SUCCESS
            }
            Err(d) => {
                println!("{d}");
                ExitCode::FAILURE
            }
        },
        Command::Classify { config, sender, rcpt, file } => classify(config, sender, rcpt, file),
    }
}

fn classify(config: PathBuf, sender: Option<String>, rcpt: Vec<String>, file: Option<PathBuf>) -> ExitCode {
    let config = match Config::load(&config) {
        Ok(c) => c,
        Err(d) => {
            eprintln!("{d}");
            return ExitCode::FAILURE;
        }
    };
    let mut raw = Vec::new();
    let read = match file.as_deref() {
        None => std::io::stdin().read_to_end(&mut raw).map(drop),
        Some(p) if p.as_os_str() == "-" => std::io::stdin().read_to_end(&mut raw).map(drop),
        Some(p) => std::fs::read(p).map(|v| raw = v),
    };
    if let Err(e) = read {
        eprintln!("helpdesk-milter: cannot read the message: {e}");
        return ExitCode::FAILURE;
    }
    match commands::classify(&config, &raw, sender.as_deref(), &rcpt) {
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
    // HELPDESK_MILTER_LOG (tracing filter syntax) overrides the configured level, for debugging.
    let filter = tracing_subscriber::EnvFilter::try_from_env("HELPDESK_MILTER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
}

fn run(config_path: PathBuf) -> ExitCode {
    let config = match Config::load(&config_path) {
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
    runtime.block_on(async move {
        let listener = match MilterListener::bind(&config.milter).await {
            Ok(l) => l,
            Err(e) => {
                error!("cannot listen on {}: {e}", config.milter.listen);
                return ExitCode::FAILURE;
            }
        };
        let (mut hup, mut term, mut int) =
            match (signal(SignalKind::hangup()), signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
                (Ok(h), Ok(t), Ok(i)) => (h, t, i),
                _ => {
                    error!("cannot install signal handlers");
                    return ExitCode::FAILURE;
                }
            };
        info!(
            "helpdesk-milter {} listening on {} (configuration {})",
            env!("CARGO_PKG_VERSION"),
            listener.local_addr(),
            config_path.display()
        );
        let shared = daemon::shared(config);
        let reloader = shared.clone();
        let shutdown = async move {
            loop {
                tokio::select! {
                    _ = hup.recv() => { daemon::reload(&reloader); }
                    _ = term.recv() => { info!("SIGTERM: finishing transactions in flight, then stopping"); break; }
                    _ = int.recv() => { info!("SIGINT: finishing transactions in flight, then stopping"); break; }
                }
            }
        };
        match daemon::serve(listener, shared, shutdown).await {
            Ok(()) => {
                info!("stopped");
                ExitCode::SUCCESS
            }
            Err(e) => {
                error!("the milter socket failed: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

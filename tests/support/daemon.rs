//! Runs the real `helpdesk-milter` binary for end-to-end tests.
#![allow(dead_code)]

use std::io::Read;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_helpdesk-milter");

pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub port: u16,
    /// The UNIX socket it listens on instead of the port, if any.
    pub socket: Option<PathBuf>,
    /// Extra environment for the daemon process.
    pub env: Vec<(String, String)>,
    /// Uid and gid to run the daemon as, instead of the test's (root ignores file modes).
    pub user: Option<(u32, u32)>,
    child: Option<Child>,
    log: PathBuf,
}

impl Daemon {
    /// Starts the daemon on a free loopback port with the default configuration plus `extra` TOML
    /// (appended to the `[milter]` table's file; start it with a table header).
    pub fn start(extra: &str) -> Daemon {
        Daemon::start_on(free_port(), extra)
    }

    /// Starts the daemon on a given loopback port. Its state directory and its reply file (a copy
    /// of tests/data/reply.toml) are in its own temporary directory; `extra` may add any table but
    /// `[milter]` and `[state]`.
    pub fn start_on(port: u16, extra: &str) -> Daemon {
        Daemon::launch(port, "", extra, &[])
    }

    /// Like `start_on`, with extra environment variables for the daemon.
    pub fn start_with_env(extra: &str, env: &[(&str, &str)]) -> Daemon {
        Daemon::launch(free_port(), "", extra, env)
    }

    /// Like `start_on`, with `milter` added to the `[milter]` table (e.g. `max_connections = 400`).
    pub fn start_on_with_milter(port: u16, milter: &str, extra: &str) -> Daemon {
        Daemon::launch(port, milter, extra, &[])
    }

    fn launch(port: u16, milter: &str, extra: &str, env: &[(&str, &str)]) -> Daemon {
        let mut d = Daemon::configure(port, milter, extra, env);
        d.spawn();
        d
    }

    /// Like `start_on` but does not start it: the caller may prepare the state directory, then
    /// call `spawn`.
    pub fn configure_on(port: u16, extra: &str, env: &[(&str, &str)]) -> Daemon {
        Daemon::configure(port, "", extra, env)
    }

    fn configure(port: u16, milter: &str, extra: &str, env: &[(&str, &str)]) -> Daemon {
        let dir = Daemon::dir_with_reply_file();
        let config = dir.path().join("helpdesk-milter.toml");
        std::fs::write(
            &config,
            format!(
                "[milter]\nlisten = \"inet:127.0.0.1:{port}\"\n{milter}\n[state]\ndirectory = \"state\"\n{extra}\n"
            ),
        )
        .unwrap();
        let log = dir.path().join("daemon.log");
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Daemon { dir, config, port, socket: None, env, user: None, child: None, log }
    }

    fn dir_with_reply_file() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(
            concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/reply.toml"),
            dir.path().join("reply.toml"),
        )
        .unwrap();
        dir
    }

    pub fn reply_file(&self) -> PathBuf {
        self.dir.path().join("reply.toml")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// `helpdesk-milter stats --format json ARGS` on this daemon's configuration.
    pub fn stats(&self, args: &[&str]) -> serde_json::Value {
        let out = Command::new(BIN)
            .args(["stats", "--format", "json", "-c"])
            .arg(&self.config)
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "stats failed: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// `helpdesk-milter stats ARGS` on this daemon's configuration: what it prints.
    pub fn stats_text(&self, args: &[&str]) -> String {
        let out = Command::new(BIN).args(["stats", "-c"]).arg(&self.config).args(args).output().unwrap();
        assert!(out.status.success(), "stats {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    /// Waits until `stats` counts at least `n` messages (the counts are written off the milter's
    /// path, a moment after the message), and returns its JSON.
    pub fn wait_stats(&self, n: u64) -> serde_json::Value {
        let t0 = Instant::now();
        loop {
            let json = self.stats(&[]);
            if stats_total(&json) >= n || t0.elapsed() > Duration::from_secs(30) {
                return json;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Restarts the daemon with the same configuration and state.
    pub fn restart(&mut self) {
        assert_eq!(self.stop(), Some(0), "{}", self.log());
        self.spawn();
    }

    /// Waits until the log contains `needle` (`count` times).
    pub fn wait_log(&self, needle: &str, count: usize) {
        let t0 = Instant::now();
        while self.log().matches(needle).count() < count {
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "no {needle:?} x{count} in the log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the daemon on a UNIX socket (group postfix, mode 0660) plus `extra` TOML.
    pub fn start_unix(socket: &Path, extra: &str) -> Daemon {
        let dir = Daemon::dir_with_reply_file();
        let config = dir.path().join("helpdesk-milter.toml");
        std::fs::write(
            &config,
            format!(
                "[milter]\nlisten = \"unix:{}\"\nsocket_group = \"postfix\"\nsocket_mode = \"0660\"\n[state]\ndirectory = \"state\"\n{extra}\n",
                socket.display()
            ),
        )
        .unwrap();
        let log = dir.path().join("daemon.log");
        let mut d = Daemon {
            dir,
            config,
            port: 0,
            socket: Some(socket.to_path_buf()),
            env: Vec::new(),
            user: None,
            child: None,
            log,
        };
        d.spawn();
        d
    }

    fn ready(&self) -> bool {
        match &self.socket {
            Some(p) => std::os::unix::net::UnixStream::connect(p).is_ok(),
            None => TcpStream::connect(("127.0.0.1", self.port)).is_ok(),
        }
    }

    /// Starts the daemon (again, after `stop` or `kill9`) and waits until it listens.
    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let mut cmd = Command::new(BIN);
        if let Some((uid, gid)) = self.user {
            std::os::unix::process::CommandExt::uid(&mut cmd, uid);
            std::os::unix::process::CommandExt::gid(&mut cmd, gid);
        }
        let child = cmd
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .args(["run", "--config"])
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let t0 = Instant::now();
        while !self.ready() {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("helpdesk-milter exited with {status}:\n{}", self.log());
            }
            assert!(t0.elapsed() < Duration::from_secs(20), "daemon did not listen:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The address Postfix's smtpd_milters takes.
    pub fn milter_address(&self) -> String {
        match &self.socket {
            Some(p) => format!("unix:{}", p.display()),
            None => format!("inet:127.0.0.1:{}", self.port),
        }
    }

    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    pub fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().unwrap().id().to_string();
        assert!(Command::new("kill").args(["-s", sig, &pid]).status().unwrap().success());
    }

    /// Kills the daemon with SIGKILL (no chance to clean up) and reaps it.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            // Already killed by `signal("KILL")` is fine: it is reaped here.
            let _ = c.kill();
            c.wait().unwrap();
        }
    }

    /// The process ID of the running daemon, for /proc readings (memory, file descriptors).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the daemon is running").id()
    }

    /// Stops with SIGTERM and returns the exit code.
    pub fn stop(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill").args(["-s", "TERM", &child.id().to_string()]).status();
        let t0 = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status.code();
            }
            if t0.elapsed() > Duration::from_secs(10) {
                let _ = child.kill();
                let _ = child.wait();
                panic!("daemon did not stop on SIGTERM:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs `helpdesk-milter classify` on a message with this daemon's configuration.
    pub fn classify(&self, message: &[u8], sender: &str, rcpts: &[&str]) -> Vec<String> {
        classify(&self.config, message, sender, rcpts)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn classify(config: &Path, message: &[u8], sender: &str, rcpts: &[&str]) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("message.eml");
    std::fs::write(&file, message).unwrap();
    let mut cmd = Command::new(BIN);
    cmd.args(["classify", "--config"]).arg(config).arg("--sender").arg(if sender.is_empty() {
        "<>"
    } else {
        sender
    });
    for r in rcpts {
        cmd.arg("--rcpt").arg(r);
    }
    let out = cmd.arg(&file).output().unwrap();
    assert!(out.status.success(), "classify failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().lines().map(str::to_string).collect()
}

/// Messages counted in every week of a `stats` JSON.
pub fn stats_total(json: &serde_json::Value) -> u64 {
    json["weeks"].as_array().unwrap().iter().map(|w| w["total"].as_u64().unwrap()).sum()
}

/// One map of a `stats` JSON ("classes", "topics", "autoreply") summed over its weeks, without
/// the zeros.
pub fn stats_sums(json: &serde_json::Value, field: &str) -> std::collections::BTreeMap<String, u64> {
    let mut out = std::collections::BTreeMap::new();
    for w in json["weeks"].as_array().unwrap() {
        for (k, v) in w[field].as_object().unwrap() {
            *out.entry(k.clone()).or_default() += v.as_u64().unwrap();
        }
    }
    out.retain(|_, n| *n > 0);
    out
}

/// The people of a `stats` JSON, summed over its weeks, without the zeros.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsPeople {
    pub total: u64,
    pub classes: std::collections::BTreeMap<String, u64>,
    pub topics: std::collections::BTreeMap<String, u64>,
    pub tagged_reports: std::collections::BTreeMap<String, u64>,
}

pub fn stats_people(json: &serde_json::Value) -> StatsPeople {
    let weeks = json["weeks"].as_array().unwrap();
    let people: Vec<serde_json::Value> = weeks.iter().map(|w| w["people"].clone()).collect();
    let wrapped = serde_json::json!({ "weeks": people });
    StatsPeople {
        total: people.iter().map(|p| p["total"].as_u64().unwrap()).sum(),
        classes: stats_sums(&wrapped, "classes"),
        topics: stats_sums(&wrapped, "topics"),
        tagged_reports: stats_sums(&wrapped, "tagged_reports"),
    }
}

/// Checks the counts of a `stats --format markdown` paragraph: `people` in all, the WhisperBack
/// reports `reports` (their IDs, newest first) and the rest as private requests.
pub fn assert_paragraph(text: &str, people: u64, reports: &[&str]) {
    let plural = |n: u64, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    let split = format!(
        "{}, {}",
        plural(reports.len() as u64, "WhisperBack report", "WhisperBack reports"),
        plural(people - reports.len() as u64, "private request", "private requests")
    );
    assert!(text.contains(&plural(people, "person", "people")), "not {people} people: {text}");
    assert!(text.contains(&split), "not {split:?}: {text}");
    if reports.is_empty() {
        assert!(!text.contains("wb:"), "{text}");
    } else {
        let ids: Vec<String> = reports.iter().map(|id| format!("wb:{id}")).collect();
        assert!(text.contains(&format!("WhisperBack reports: {}.", ids.join(", "))), "{text}");
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A relay that takes connections and never says a word, so that replies stay in the outbox. It
/// holds its port for as long as it lives: a port that was only free when picked could be taken by
/// another test's relay, which would then receive this test's replies.
pub struct SilentRelay(std::net::TcpListener);

impl SilentRelay {
    pub fn new() -> SilentRelay {
        SilentRelay(std::net::TcpListener::bind("127.0.0.1:0").unwrap())
    }

    pub fn url(&self) -> String {
        format!("smtp://{}", self.0.local_addr().unwrap())
    }
}

/// A field of /proc/PID/status in KiB (`VmRSS`, `VmHWM`); 0 once the process is gone.
pub fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Resident memory of `pid` in KiB; 0 once the process is gone.
pub fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS")
}

/// Number of open file descriptors of `pid`.
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

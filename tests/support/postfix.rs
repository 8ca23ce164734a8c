//! A private, throw-away **real Postfix on loopback** for end-to-end tests.
//!
//! ```text
//! client --SMTP--> 127.0.0.1:smtpd_port    smtpd (+ smtpd_milters = RigOptions::milter)
//!                  127.0.0.1:reinject_port smtpd (no milter; for re-injected auto-replies)
//!                    -> queue -> smtp client -> 127.0.0.1:sink_port smtp-sink
//!                                               (one dump file per message in DIR/sink/)
//! ```
//!
//! Its main.cf and master.cf come from `tests/rig/`, which benches/postfix-e2e.sh reads too:
//! a change to the rig is made there, once, for the tests and the benchmark.
//!
//! Every rig has its own temp dir under /tmp and its own ports, so tests in one binary
//! may run rigs in parallel. Needs root (the Postfix master starts as root) and the
//! `postfix` package (which also ships `smtp-sink`). Linux only: readiness and
//! process clean-up are read from /proc.
//!
//! Set `HELPDESK_KEEP_RIG=1` to keep the rig dir (config, maillog, dumps) after the test.
//!
//! Use from a test file with `#[path = "support/postfix.rs"] mod postfix;`.

// Each test binary uses a different subset of this module.
#![allow(dead_code)]

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs;
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::thread::sleep;
use std::time::{Duration, Instant, SystemTime};

use lettre::address::{Address, Envelope};
use lettre::{SmtpTransport, Transport};

const INSTALL_HINT: &str = "run .ci/run, or apt-get install postfix";
const KEEP_ENV: &str = "HELPDESK_KEEP_RIG";
/// Generous: a loaded CI box with several rigs starting at once is slow.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(25);

/// How to configure the rig's Postfix.
#[derive(Clone, Debug)]
pub struct RigOptions {
    /// `smtpd_milters` of the main smtpd: `"inet:127.0.0.1:PORT"` or `"unix:/path"`
    /// (`"127.0.0.1:PORT"` is accepted as shorthand for `inet:`). `None`: no milter.
    pub milter: Option<String>,
    /// `milter_default_action`. Defaults to `"tempfail"` so a dead milter is a visible
    /// failure (451) instead of mail silently passing untriaged.
    pub default_action: String,
    /// Extra or overriding `main.cf` parameters (e.g. `message_size_limit`), applied last.
    pub extra_main_cf: Vec<(String, String)>,
}

impl Default for RigOptions {
    fn default() -> Self {
        RigOptions { milter: None, default_action: "tempfail".to_owned(), extra_main_cf: Vec::new() }
    }
}

impl RigOptions {
    /// Options with `smtpd_milters = milter` and the defaults otherwise.
    pub fn with_milter(milter: impl Into<String>) -> Self {
        RigOptions { milter: Some(milter.into()), ..RigOptions::default() }
    }
}

/// A running Postfix + smtp-sink pair. Dropping it stops both and removes the dir.
pub struct PostfixRig {
    /// `None` once kept or removed.
    tmp: Option<tempfile::TempDir>,
    /// Canonical rig dir (compared with /proc fd links, which are canonical).
    dir: PathBuf,
    conf: PathBuf,
    tools: Tools,
    smtpd_port: u16,
    reinject_port: u16,
    sink_port: u16,
    sink: Option<Child>,
    /// Set before `postfix start` so that a half-done start is still stopped.
    postfix_started: bool,
}

impl PostfixRig {
    /// Starts smtp-sink and Postfix in a fresh temp dir with fresh ports.
    ///
    /// Panics with a clear message if not root, if Postfix is not installed, or if
    /// anything fails to come up (with Postfix's own error text and the maillog tail).
    pub fn start(opts: RigOptions) -> PostfixRig {
        let tools = Tools::find();
        check_root();
        let postfix_uid =
            user_uid("postfix").unwrap_or_else(|| panic!("postfix-rig: no user 'postfix' ({INSTALL_HINT})"));
        let mut last_err = String::new();
        // A port found free may be grabbed by someone else (e.g. as the source port of
        // an outgoing connection) before Postfix binds it: retry with new ports then.
        for _ in 0..3 {
            match Self::try_start(&opts, &tools, postfix_uid) {
                Ok(rig) => return rig,
                Err(e) if e.contains("Address already in use") => last_err = e,
                Err(e) => panic!("postfix-rig: {e}"),
            }
        }
        panic!("postfix-rig: ports kept colliding: {last_err}");
    }

    fn try_start(opts: &RigOptions, tools: &Tools, postfix_uid: u32) -> Result<PostfixRig, String> {
        let tmp = tempfile::Builder::new()
            .prefix("helpdesk-pfrig.")
            .tempdir_in("/tmp")
            .map_err(|e| format!("cannot create a temp dir in /tmp: {e}"))?;
        let dir =
            tmp.path().canonicalize().map_err(|e| format!("canonicalize {}: {e}", tmp.path().display()))?;
        // From here on, an early return drops `rig`, which cleans up whatever started.
        let mut rig = PostfixRig {
            tmp: Some(tmp),
            conf: dir.join("etc"),
            dir,
            tools: tools.clone(),
            smtpd_port: free_port(),
            reinject_port: free_port(),
            sink_port: free_port(),
            sink: None,
            postfix_started: false,
        };
        rig.make_dirs(postfix_uid)?;
        rig.write_config(opts)?;
        // Sink first, so that the first deliveries are not deferred.
        rig.start_sink()?;
        // `check` runs post-install, which creates the queue subdirs with their owners.
        rig.postfix(&["check"])?;
        rig.postfix_started = true;
        rig.postfix(&["start"])?;
        // `postfix start` runs `master -w`, which returns once the master has bound its
        // sockets; this check only guards against surprises.
        for port in [rig.smtpd_port, rig.reinject_port] {
            rig.wait_listening(port, "Postfix smtpd")?;
        }
        Ok(rig)
    }

    /// Port of the smtpd with `smtpd_milters = RigOptions::milter`.
    pub fn smtpd_port(&self) -> u16 {
        self.smtpd_port
    }

    /// Port of the second smtpd, which has no milter (for re-injected auto-replies).
    pub fn reinject_port(&self) -> u16 {
        self.reinject_port
    }

    /// Port of the smtp-sink that is Postfix's relayhost.
    pub fn sink_port(&self) -> u16 {
        self.sink_port
    }

    /// The rig dir: `etc/` (main.cf, master.cf), `spool/`, `data/`, `log/maillog`,
    /// `log/sink.out`, `sink/` (dumps).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Submits `message` over SMTP to [`smtpd_port`](Self::smtpd_port). `sender` `None`
    /// (or `Some("")`) is the null sender `<>`. `Err` holds the SMTP error text, e.g.
    /// `transient error (451): 4.7.1 Service unavailable - try again later`.
    pub fn send(&self, sender: Option<&str>, rcpts: &[&str], message: &[u8]) -> Result<(), String> {
        self.send_to(self.smtpd_port, sender, rcpts, message)
    }

    /// Like [`send`](Self::send), to any port (e.g. [`reinject_port`](Self::reinject_port)).
    pub fn send_to(
        &self,
        port: u16,
        sender: Option<&str>,
        rcpts: &[&str],
        message: &[u8],
    ) -> Result<(), String> {
        let parse = |a: &str| a.parse::<Address>().map_err(|e| format!("bad address {a:?}: {e}"));
        let from = match sender {
            None | Some("") => None,
            Some(s) => Some(parse(s)?),
        };
        let to = rcpts.iter().map(|r| parse(r)).collect::<Result<Vec<_>, _>>()?;
        let envelope = Envelope::new(from, to).map_err(|e| format!("bad envelope: {e}"))?;
        // lettre always sends "\r\n.\r\n" after the data, which would add an empty
        // line to a message that already ends with a line break.
        let message =
            message.strip_suffix(b"\r\n").or_else(|| message.strip_suffix(b"\n")).unwrap_or(message);
        // A fresh transport per call: no connection outlives the message.
        let transport = SmtpTransport::builder_dangerous("127.0.0.1")
            .port(port)
            .timeout(Some(Duration::from_secs(60)))
            .build();
        transport.send_raw(&envelope, message).map(drop).map_err(|e| e.to_string())
    }

    /// Every message smtp-sink has completely received so far, oldest first.
    ///
    /// Files the sink still holds open (transaction in progress) are left out, so a
    /// message is never seen half-written.
    pub fn messages(&self) -> Vec<SinkMessage> {
        let mut files = Vec::new();
        walk_files(&self.dir.join("sink"), &mut files);
        let open = self.sink.as_ref().map(|c| open_files(c.id())).unwrap_or_default();
        let mut found: Vec<(SystemTime, SinkMessage)> = files
            .into_iter()
            .filter(|p| !open.contains(p))
            .filter_map(|path| {
                let mtime = fs::metadata(&path).and_then(|m| m.modified()).ok()?;
                let raw = fs::read(&path).ok()?;
                Some((mtime, SinkMessage { path, raw }))
            })
            .collect();
        // Names are DIR/%Y%m%d/%H%M%S.<random hex>: ordered only to the second, so the
        // completion time (mtime) comes first.
        found.sort_by(|a, b| (a.0, &a.1.path).cmp(&(b.0, &b.1.path)));
        found.into_iter().map(|(_, m)| m).collect()
    }

    /// Polls until at least `n` messages have reached the sink and returns them all.
    /// Panics with the maillog tail on timeout.
    pub fn wait_for_messages(&self, n: usize, timeout: Duration) -> Vec<SinkMessage> {
        let deadline = Instant::now() + timeout;
        loop {
            let msgs = self.messages();
            if msgs.len() >= n {
                return msgs;
            }
            if Instant::now() >= deadline {
                panic!(
                    "postfix-rig: {} of {n} message(s) reached the sink within {timeout:?} \
                     (rig {}); maillog tail:\n{}",
                    msgs.len(),
                    self.dir.display(),
                    self.maillog_tail(40)
                );
            }
            sleep(POLL);
        }
    }

    /// The whole Postfix log (`maillog_file`); empty if there is none yet.
    pub fn maillog(&self) -> String {
        read_lossy(&self.dir.join("log/maillog"))
    }

    /// Sets a `main.cf` parameter, reloads Postfix and waits until the reload took
    /// effect: the master logged it and every process of the old generation is gone,
    /// so the next SMTP session gets an smtpd with the new setting.
    pub fn set_main_cf(&self, key: &str, value: &str) {
        check_param(key, value).unwrap_or_else(|e| panic!("postfix-rig: {e}"));
        let mut postconf = Command::new(&self.tools.postconf);
        postconf.arg("-c").arg(&self.conf).arg("-e").arg(format!("{key} = {value}"));
        run_checked(&mut postconf).unwrap_or_else(|e| panic!("postfix-rig: {e}"));
        backdate(&self.conf.join("main.cf")).unwrap_or_else(|e| panic!("postfix-rig: {e}"));
        let master = self
            .master_pid()
            .unwrap_or_else(|| panic!("postfix-rig: master not running in {}", self.dir.display()));
        let old = descendants(master);
        let reloads = |log: &str| log.matches("]: reload -- version").count();
        let before = reloads(&self.maillog());
        self.postfix(&["reload"]).unwrap_or_else(|e| panic!("postfix-rig: {e}"));
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            let logged = reloads(&self.maillog()) > before;
            let lingering: Vec<u32> = old.iter().copied().filter(|&p| alive(p)).collect();
            if logged && lingering.is_empty() {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "postfix-rig: reload for `{key} = {value}` not done after \
                     {STARTUP_TIMEOUT:?} (reload logged: {logged}, old processes left: \
                     {lingering:?}); maillog tail:\n{}",
                    self.maillog_tail(20)
                );
            }
            sleep(POLL);
        }
    }

    /// Runs `postfix -c DIR/etc ARGS` (e.g. `["stop"]`, `["start"]`, `["reload"]`, `["flush"]`).
    pub fn run_postfix(&self, args: &[&str]) -> Result<(), String> {
        self.postfix(args)
    }

    /// The live smtpd processes of this rig (both smtpd services).
    pub fn smtpd_pids(&self) -> Vec<u32> {
        let comm = |p: u32| fs::read_to_string(format!("/proc/{p}/comm")).unwrap_or_default();
        self.master_pid()
            .map(descendants)
            .unwrap_or_default()
            .into_iter()
            .filter(|&p| comm(p).trim() == "smtpd")
            .collect()
    }

    /// Stops everything and removes the dir (unless `HELPDESK_KEEP_RIG=1`). Unlike a
    /// plain drop, panics if a process could not be stopped.
    pub fn stop(mut self) {
        let problems = self.shutdown();
        assert!(problems.is_empty(), "postfix-rig: stop: {}", problems.join("; "));
    }

    fn make_dirs(&self, postfix_uid: u32) -> Result<(), String> {
        for sub in ["etc", "spool", "data", "log", "sink"] {
            let d = self.dir.join(sub);
            fs::create_dir_all(&d).map_err(|e| format!("mkdir {}: {e}", d.display()))?;
        }
        // tempfile makes the dir 0700; Postfix daemons and the sink run as `postfix`
        // and need to traverse it.
        for d in [self.dir.clone(), self.dir.join("log")] {
            fs::set_permissions(&d, fs::Permissions::from_mode(0o755))
                .map_err(|e| format!("chmod {}: {e}", d.display()))?;
        }
        // data_directory must belong to postfix; the sink writes its dumps as postfix.
        for sub in ["data", "sink"] {
            let d = self.dir.join(sub);
            std::os::unix::fs::chown(&d, Some(postfix_uid), None)
                .map_err(|e| format!("chown postfix {}: {e}", d.display()))?;
        }
        Ok(())
    }

    fn write_config(&self, opts: &RigOptions) -> Result<(), String> {
        let milter = match opts.milter.as_deref().map(str::trim) {
            None | Some("") => String::new(),
            Some(m) if ["inet:", "unix:", "local:"].iter().any(|p| m.starts_with(p)) => m.to_owned(),
            Some(m) => format!("inet:{m}"),
        };
        let dir = self.dir.display().to_string();
        let (smtpd, reinject, sink) =
            (self.smtpd_port.to_string(), self.reinject_port.to_string(), self.sink_port.to_string());
        let fill = |template: &str| {
            render_rig_template(
                template,
                &[
                    ("RIG_DIR", dir.as_str()),
                    ("SMTPD_PORT", smtpd.as_str()),
                    ("REINJECT_PORT", reinject.as_str()),
                    ("SINK_PORT", sink.as_str()),
                ],
            )
        };
        let mut params = parse_main_cf(&fill(RIG_MAIN_CF)?)?;
        let ours = [
            ("smtpd_milters".to_owned(), milter),
            ("milter_default_action".to_owned(), opts.default_action.clone()),
        ];
        for (k, v) in ours.iter().chain(&opts.extra_main_cf) {
            check_param(k, v)?;
            // Replace in place rather than append a duplicate definition.
            match params.iter_mut().find(|(pk, _)| pk == k) {
                Some(slot) => slot.1 = v.clone(),
                None => params.push((k.clone(), v.clone())),
            }
        }
        let mut main_cf = String::from("# generated by tests/support/postfix.rs from tests/rig/main.cf\n");
        for (k, v) in &params {
            main_cf.push_str(&format!("{k} = {v}\n"));
        }
        let master_cf = fill(RIG_MASTER_CF)?;

        for (name, text) in [("main.cf", main_cf), ("master.cf", master_cf)] {
            let p = self.conf.join(name);
            fs::write(&p, text).map_err(|e| format!("write {}: {e}", p.display()))?;
            backdate(&p)?;
        }
        Ok(())
    }

    fn start_sink(&mut self) -> Result<(), String> {
        let out_path = self.dir.join("log/sink.out");
        let out = fs::File::create(&out_path).map_err(|e| format!("create {}: {e}", out_path.display()))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        // -u: it must not keep root; -c: counters to sink.out (never `-M N`, which
        // cuts sessions and makes Postfix defer); -d: one dump file per transaction.
        let child = Command::new(&self.tools.smtp_sink)
            .current_dir(&self.dir)
            .args(["-u", "postfix", "-c", "-d"])
            .arg(format!("{}/sink/%Y%m%d/%H%M%S.", self.dir.display()))
            .arg(format!("127.0.0.1:{}", self.sink_port))
            .arg("1024")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", self.tools.smtp_sink.display()))?;
        self.sink = Some(child);
        self.wait_listening(self.sink_port, "smtp-sink")
    }

    /// Waits until something listens on 127.0.0.1:`port`, without connecting to it
    /// (a probe connection would start an smtpd session, and a milter session).
    fn wait_listening(&mut self, port: u16, what: &str) -> Result<(), String> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if is_listening(port) {
                return Ok(());
            }
            if let Some(Ok(Some(status))) = self.sink.as_mut().map(Child::try_wait) {
                return Err(format!(
                    "smtp-sink exited ({status}) while waiting for {what} on port {port}: {}",
                    read_lossy(&self.dir.join("log/sink.out")).replace('\r', "\n").trim()
                ));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{what} not listening on 127.0.0.1:{port} after {STARTUP_TIMEOUT:?}; \
                     sink.out: {}; maillog tail:\n{}",
                    read_lossy(&self.dir.join("log/sink.out")).replace('\r', "\n").trim(),
                    self.maillog_tail(20)
                ));
            }
            sleep(POLL);
        }
    }

    /// Runs `postfix -c DIR/etc <args>`; on failure the error includes Postfix's own
    /// message (recovered with script(1)) and the maillog tail.
    fn postfix(&self, args: &[&str]) -> Result<(), String> {
        let mut cmd = Command::new(&self.tools.postfix);
        cmd.arg("-c").arg(&self.conf).args(args);
        run_checked(&mut cmd).map_err(|e| format!("{e}\nmaillog tail:\n{}", self.maillog_tail(20)))
    }

    fn master_pid(&self) -> Option<u32> {
        let text = fs::read_to_string(self.dir.join("spool/pid/master.pid")).ok()?;
        let pid = text.trim().parse().ok()?;
        alive(pid).then_some(pid)
    }

    fn maillog_tail(&self, n: usize) -> String {
        let log = self.maillog();
        let lines: Vec<&str> = log.lines().collect();
        if lines.is_empty() {
            return "(maillog is empty)".to_owned();
        }
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Idempotent clean-up shared by `stop` and `Drop`; returns what went wrong.
    fn shutdown(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        if std::mem::take(&mut self.postfix_started) {
            // Collect the master's children first: they may outlive it briefly.
            let master = self.master_pid();
            let mut pids: Vec<u32> = master.map(descendants).unwrap_or_default();
            pids.extend(master);
            let _ = Command::new(&self.tools.postfix)
                .arg("-c")
                .arg(&self.conf)
                .arg("stop")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            if let Err(left) = wait_dead(&pids, Duration::from_secs(5)) {
                for pid in &left {
                    let _ =
                        Command::new("kill").args(["-KILL", &pid.to_string()]).stderr(Stdio::null()).status();
                }
                if let Err(still) = wait_dead(&left, Duration::from_secs(2)) {
                    problems.push(format!("Postfix processes survived SIGKILL: {still:?}"));
                }
            }
        }
        if let Some(mut sink) = self.sink.take() {
            // Nothing to flush: a finished dump file is already closed.
            let _ = sink.kill();
            if let Err(e) = sink.wait() {
                problems.push(format!("wait for smtp-sink: {e}"));
            }
        }
        if let Some(tmp) = self.tmp.take() {
            if std::env::var(KEEP_ENV).is_ok_and(|v| v == "1") {
                eprintln!("postfix-rig: kept {}", tmp.keep().display());
            } else if let Err(e) = tmp.close() {
                problems.push(format!("remove {}: {e}", self.dir.display()));
            }
        }
        problems
    }
}

impl Drop for PostfixRig {
    fn drop(&mut self) {
        // Never panic here: this also runs while a failed test unwinds.
        for p in self.shutdown() {
            eprintln!("postfix-rig: {p}");
        }
    }
}

/// One file smtp-sink dumped: one SMTP transaction.
///
/// Layout (LF line ends; see `smtp-sink(1)`, DUMP FILE FORMAT): `X-Client-Addr:`,
/// `X-Client-Proto:`, `X-Helo-Args:`, `X-Mail-Args:`, one `X-Rcpt-Args:` per RCPT, a
/// three-line `Received: ... (smtp-sink) ...` header, the message as Postfix relayed
/// it, and one empty line.
#[derive(Clone, Debug)]
pub struct SinkMessage {
    pub path: PathBuf,
    pub raw: Vec<u8>,
}

impl SinkMessage {
    /// The MAIL FROM address as Postfix sent it, e.g. `"<>"` or `"<a@b>"` (without the
    /// ESMTP parameters such as `SIZE=`).
    pub fn mail_from(&self) -> String {
        self.sink_fields("X-Mail-Args").first().map(|v| first_word(v)).unwrap_or_default()
    }

    /// The RCPT TO addresses, e.g. `["<b@c>"]` (without `ORCPT=` etc.).
    pub fn rcpts(&self) -> Vec<String> {
        self.sink_fields("X-Rcpt-Args").iter().map(|v| first_word(v)).collect()
    }

    /// The message as Postfix relayed it (with LF line ends, as smtp-sink stores it):
    /// without smtp-sink's own lines in front and without the empty line it appends.
    pub fn message(&self) -> &[u8] {
        let (start, end) = self.message_range();
        &self.raw[start..end]
    }

    /// Unfolded header fields of [`message`](Self::message), in order. Values lose the
    /// whitespace after the colon and the line breaks of folds (the fold's leading
    /// whitespace stays, as RFC 5322 unfolding says).
    pub fn headers(&self) -> Vec<(String, String)> {
        let msg = self.message();
        let head = &msg[..msg.len() - self.body().len()];
        let mut out: Vec<(String, String)> = Vec::new();
        for line in lines(head) {
            let line = String::from_utf8_lossy(line);
            if line.is_empty() {
                break;
            }
            if line.starts_with([' ', '\t']) {
                if let Some((_, v)) = out.last_mut() {
                    v.push_str(&line);
                }
                continue;
            }
            let (name, value) = line.split_once(':').unwrap_or((&line, ""));
            out.push((name.trim_end().to_owned(), value.trim_start().to_owned()));
        }
        // A field that was empty up to its first fold must not start with the fold's
        // whitespace either.
        for (_, v) in &mut out {
            *v = v.trim_start().to_owned();
        }
        out
    }

    /// The values of every header field called `name` (case-insensitive), in order.
    pub fn header(&self, name: &str) -> Vec<String> {
        self.headers().into_iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v).collect()
    }

    /// The body: what follows the first empty line of [`message`](Self::message).
    pub fn body(&self) -> &[u8] {
        let msg = self.message();
        let mut pos = 0;
        for (line, len) in line_spans(msg) {
            pos += len;
            if line.is_empty() {
                return &msg[pos..];
            }
        }
        &msg[msg.len()..]
    }

    /// `(start, end)` of the relayed message inside `raw`.
    fn message_range(&self) -> (usize, usize) {
        let raw = &self.raw;
        // The empty line smtp-sink appends after the message.
        let end = if raw.ends_with(b"\n\n") { raw.len() - 1 } else { raw.len() };
        let mut pos = 0;
        let mut spans = line_spans(raw).peekable();
        while let Some(&(line, len)) = spans.peek()
            && SINK_RECORDS.iter().any(|r| starts_with_field(line, r))
        {
            pos += len;
            spans.next();
        }
        // Then smtp-sink's Received header: "from HELO ([addr])", folded "by HOST
        // (smtp-sink) with PROTO id ID;" and the date. The marker is on a fold.
        if let Some(&(line, len)) = spans.peek()
            && starts_with_field(line, b"Received")
        {
            let mut header = line.to_vec();
            let mut header_len = len;
            spans.next();
            while let Some(&(line, len)) = spans.peek()
                && line.first().is_some_and(|c| matches!(c, b' ' | b'\t'))
            {
                header.extend_from_slice(line);
                header_len += len;
                spans.next();
            }
            if contains(&header, b"(smtp-sink)") {
                pos += header_len;
            }
        }
        (pos.min(end), end)
    }

    /// Values of smtp-sink's own `name:` records (before the message).
    fn sink_fields(&self, name: &str) -> Vec<String> {
        let (start, _) = self.message_range();
        lines(&self.raw[..start])
            .filter(|l| starts_with_field(l, name.as_bytes()))
            .map(|l| String::from_utf8_lossy(&l[name.len() + 1..]).trim().to_owned())
            .collect()
    }
}

/// A port that was free on 127.0.0.1 just now. Never returns the same port twice in
/// one process, so parallel rigs in one test binary cannot pick the same one.
pub fn free_port() -> u16 {
    static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local_addr").port();
        drop(listener);
        let mut seen = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
        if seen.insert(port) {
            return port;
        }
    }
}

/// smtp-sink's records in front of the message, in the order it writes them.
const SINK_RECORDS: [&[u8]; 5] =
    [b"X-Client-Addr", b"X-Client-Proto", b"X-Helo-Args", b"X-Mail-Args", b"X-Rcpt-Args"];

/// The rig's Postfix configuration, shared with benches/postfix-e2e.sh: one description, so that
/// a change to the rig is made once (read at compile time; cargo rebuilds on a change).
const RIG_MAIN_CF: &str = include_str!("../rig/main.cf");
const RIG_MASTER_CF: &str = include_str!("../rig/master.cf");

/// Replaces each `{{NAME}}` of a rig template; a placeholder left over is an error, so that a
/// template and its readers cannot drift apart silently.
fn render_rig_template(template: &str, values: &[(&str, &str)]) -> Result<String, String> {
    let mut out = template.to_owned();
    for (name, value) in values {
        out = out.replace(&format!("{{{{{name}}}}}"), value);
    }
    match out.find("{{") {
        Some(at) => Err(format!(
            "tests/rig: unknown placeholder in {:?}",
            out[at..].lines().next().unwrap_or_default()
        )),
        None => Ok(out),
    }
}

/// The `name = value` lines of a main.cf, in order; comments and empty lines skipped.
fn parse_main_cf(text: &str) -> Result<Vec<(String, String)>, String> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l
                .split_once('=')
                .filter(|_| !l.starts_with([' ', '\t']))
                .ok_or_else(|| format!("tests/rig/main.cf: not a `name = value` line: {l:?}"))?;
            Ok((k.trim().to_owned(), v.trim().to_owned()))
        })
        .collect()
}

/// Absolute paths of the Postfix tools (found in PATH or the usual sbin dirs, since
/// a non-login PATH often lacks /usr/sbin).
#[derive(Clone, Debug)]
struct Tools {
    postfix: PathBuf,
    postconf: PathBuf,
    smtp_sink: PathBuf,
}

impl Tools {
    fn find() -> Tools {
        let find = |name: &str| {
            let path = std::env::var_os("PATH").unwrap_or_default();
            std::env::split_paths(&path)
                .chain(["/usr/sbin", "/usr/local/sbin", "/sbin", "/usr/bin"].map(PathBuf::from))
                .map(|d| d.join(name))
                .find(|p| p.is_file())
                .unwrap_or_else(|| {
                    panic!("postfix-rig: `{name}` not found: Postfix is not installed ({INSTALL_HINT})")
                })
        };
        Tools { postfix: find("postfix"), postconf: find("postconf"), smtp_sink: find("smtp-sink") }
    }
}

fn check_root() {
    let euid = fs::read_to_string("/proc/self/status").ok().and_then(|s| {
        let line = s.lines().find(|l| l.starts_with("Uid:"))?.to_owned();
        line.split_whitespace().nth(2)?.parse::<u32>().ok()
    });
    assert!(
        euid == Some(0),
        "postfix-rig: must run as root, since the Postfix master starts as root (euid is \
         {euid:?}); run the tests as root, e.g. with .ci/run"
    );
}

fn user_uid(user: &str) -> Option<u32> {
    let out = Command::new("id").args(["-u", user]).output().ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

/// Postfix tools print errors only to a TTY (otherwise to syslog, which does not exist
/// here), so on failure re-run the command under script(1) to capture them.
fn run_checked(cmd: &mut Command) -> Result<(), String> {
    let shown = shell_line(cmd);
    // Not piped: `postfix reload` leaves a `postsuper &` behind that would hold a
    // pipe open, and with no TTY these tools print nothing anyway.
    let status = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| format!("cannot run `{shown}`: {e}"))?;
    if status.success() {
        return Ok(());
    }
    let mut msg = format!("`{shown}` failed ({status})");
    match Command::new("script").args(["-qec", &shown, "/dev/null"]).stdin(Stdio::null()).output() {
        Ok(tty) => msg.push_str(&format!("\nunder script(1):{}", output_text(&tty))),
        Err(e) => msg.push_str(&format!("\n(script(1) unavailable to show its error: {e})")),
    }
    Err(msg)
}

fn output_text(out: &Output) -> String {
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
        .replace('\r', "");
    let text = text.trim();
    if text.is_empty() { " (no output)".to_owned() } else { format!("\n{text}") }
}

fn shell_line(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| {
            let a = a.to_string_lossy();
            if a.bytes().all(|b| b.is_ascii_alphanumeric() || b"/._-:=".contains(&b)) {
                a.into_owned()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Sets the mtime of a config file we just wrote into the past. Postfix programs will
/// not read a main.cf modified within the last second or so (it may be half-edited):
/// they poll every 300 ms until it is older, which costs ~1.5 s in `postfix check`
/// and again in `postfix reload` and in every daemon started right after.
fn backdate(path: &Path) -> Result<(), String> {
    fs::File::options()
        .write(true)
        .open(path)
        .and_then(|f| f.set_modified(SystemTime::now() - Duration::from_secs(10)))
        .map_err(|e| format!("backdate mtime of {}: {e}", path.display()))
}

fn check_param(key: &str, value: &str) -> Result<(), String> {
    let ok_key = !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !ok_key || value.contains('\n') {
        return Err(format!("bad main.cf parameter {key:?} = {value:?}"));
    }
    Ok(())
}

fn read_lossy(path: &Path) -> String {
    fs::read(path).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
}

fn walk_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        match entry.file_type() {
            Ok(t) if t.is_dir() => walk_files(&entry.path(), out),
            Ok(t) if t.is_file() => out.push(entry.path()),
            _ => {}
        }
    }
}

/// Files process `pid` has open (empty if it is gone).
fn open_files(pid: u32) -> HashSet<PathBuf> {
    let Ok(entries) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return HashSet::new();
    };
    entries.flatten().filter_map(|e| fs::read_link(e.path()).ok()).collect()
}

/// Whether a TCP socket listens on 127.0.0.1:`port` (or 0.0.0.0), from /proc/net/tcp.
fn is_listening(port: u16) -> bool {
    let Ok(table) = fs::read_to_string("/proc/net/tcp") else {
        // No procfs: fall back to connecting.
        return TcpStream::connect(("127.0.0.1", port)).is_ok();
    };
    let wanted = [format!("0100007F:{port:04X}"), format!("00000000:{port:04X}")];
    table.lines().skip(1).any(|l| {
        let mut f = l.split_whitespace();
        let local = f.nth(1).unwrap_or_default();
        let state = f.nth(1).unwrap_or_default();
        state == "0A" && wanted.iter().any(|w| w == local)
    })
}

/// (ppid, state) of `pid` from /proc/PID/stat.
fn proc_stat(pid: u32) -> Option<(u32, char)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // comm (in parentheses) may contain spaces: parse after the last ')'.
    let mut rest = stat[stat.rfind(')')? + 1..].split_whitespace();
    let state = rest.next()?.chars().next()?;
    let ppid = rest.next()?.parse().ok()?;
    Some((ppid, state))
}

/// Zombies count as dead: orphans re-parented to a container's PID 1 may never be reaped.
fn alive(pid: u32) -> bool {
    proc_stat(pid).is_some_and(|(_, state)| state != 'Z' && state != 'X')
}

/// All live descendants of `root`.
fn descendants(root: u32) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if let Some((ppid, state)) = proc_stat(pid)
            && state != 'Z'
        {
            children.entry(ppid).or_default().push(pid);
        }
    }
    let mut out = Vec::new();
    let mut todo = vec![root];
    while let Some(p) = todo.pop() {
        for &c in children.get(&p).map(Vec::as_slice).unwrap_or_default() {
            out.push(c);
            todo.push(c);
        }
    }
    out
}

/// Waits until none of `pids` is alive; `Err` holds the survivors.
fn wait_dead(pids: &[u32], timeout: Duration) -> Result<(), Vec<u32>> {
    let deadline = Instant::now() + timeout;
    loop {
        let left: Vec<u32> = pids.iter().copied().filter(|&p| alive(p)).collect();
        if left.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(left);
        }
        sleep(POLL);
    }
}

fn first_word(s: &str) -> String {
    s.split_whitespace().next().unwrap_or_default().to_owned()
}

/// Lines of `buf` as (line without its `\n` or `\r\n`, length including the line end).
fn line_spans(buf: &[u8]) -> impl Iterator<Item = (&[u8], usize)> {
    let mut rest = buf;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let len = rest.iter().position(|&b| b == b'\n').map_or(rest.len(), |i| i + 1);
        let (line, tail) = rest.split_at(len);
        rest = tail;
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        Some((line.strip_suffix(b"\r").unwrap_or(line), len))
    })
}

/// Lines of `buf` without their line ends.
fn lines(buf: &[u8]) -> impl Iterator<Item = &[u8]> {
    line_spans(buf).map(|(line, _)| line)
}

fn starts_with_field(line: &[u8], name: &[u8]) -> bool {
    line.len() > name.len() && line[..name.len()].eq_ignore_ascii_case(name) && line[name.len()] == b':'
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

//! The daemon process: systemd readiness and reload notifications, start-up errors.

#[path = "support/daemon.rs"]
mod daemon;
#[path = "support/mta.rs"]
mod mta;

use daemon::{BIN, Daemon};
use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::Duration;

fn recv(sock: &UnixDatagram) -> String {
    let mut buf = [0u8; 4096];
    let n = sock.recv(&mut buf).expect("a notification from the daemon");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn notifies_systemd_ready_reloading_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut d = Daemon::start_with_env("", &[("NOTIFY_SOCKET", path.to_str().unwrap())]);
    let ready = recv(&sock);
    assert!(ready.contains("READY=1"), "{ready}");
    assert!(ready.contains("STATUS=listening on inet:127.0.0.1:"), "{ready}");

    d.signal("HUP");
    let reloading = recv(&sock);
    assert!(reloading.contains("RELOADING=1") && reloading.contains("MONOTONIC_USEC="), "{reloading}");
    assert!(recv(&sock).contains("READY=1"));

    assert_eq!(d.stop(), Some(0));
    assert!(recv(&sock).contains("STOPPING=1"));
}

#[test]
fn a_missing_reply_file_is_an_error_of_check_and_of_run() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("helpdesk-milter.toml");
    std::fs::write(&config, "[state]\ndirectory = \"state\"\n").unwrap();
    for cmd in ["check", "run"] {
        let out = Command::new(BIN).args([cmd, "--config"]).arg(&config).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{cmd}");
        let text = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
        assert!(text.contains("reply.toml:1:1: "), "{cmd}: {text}");
    }
}

#[test]
fn check_reply_reports_every_problem_with_its_position() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("reply.toml");
    std::fs::write(
        &file,
        "default_language = \"en\"\nhot_topics = [\"nope\"]\n[topics.a]\ntitle = \"A\"\nlink = \"http://x.org\"\n[languages.en]\nsubject = \"S\"\nbody = \"\"\n",
    )
    .unwrap();
    let out = Command::new(BIN).args(["check", "--reply"]).arg(&file).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    let at = |n: usize| format!("{}:{n}:", file.display());
    assert!(lines[0].starts_with(&at(2)), "{text}");
    assert!(lines[1].starts_with(&at(5)), "{text}");
    assert!(lines[2].starts_with(&at(8)), "{text}");
    let ok = Command::new(BIN)
        .args(["check", "--reply", concat!(env!("CARGO_MANIFEST_DIR"), "/etc/reply.toml")])
        .output();
    assert!(ok.unwrap().status.success());
}

#[test]
fn classify_needs_no_state_directory_and_creates_none() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("helpdesk-milter.toml");
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/reply.toml"),
        dir.path().join("reply.toml"),
    )
    .unwrap();
    std::fs::write(&config, "[state]\ndirectory = \"does/not/exist\"\n").unwrap();
    let msg = dir.path().join("m.eml");
    std::fs::write(&msg, "From: a@example.org\nTo: support@tails.net\nSubject: realtek wifi\n\nhello\n")
        .unwrap();
    for _ in 0..2 {
        let out = Command::new(BIN).args(["classify", "--config"]).arg(&config).arg(&msg).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8_lossy(&out.stdout);
        // Decided as if nobody had been answered, both times: classify records nothing.
        assert!(text.contains("X-HelpDesk-Autoreply: queued"), "{text}");
        assert!(text.contains("X-HelpDesk-Topic: wifi-realtek"), "{text}");
    }
    assert!(!dir.path().join("does").exists());
}

#[test]
fn the_state_is_private_whatever_umask_the_daemon_inherits() {
    use std::os::unix::fs::PermissionsExt;
    // The test runner's umask (022 as a rule) would give 0755 and 0644.
    let mut d = Daemon::start("");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let state = d.state_dir();
    let port: u16 = d.milter_address().rsplit(':').next().unwrap().parse().unwrap();
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let mut c = mta::MtaConn::tcp(("127.0.0.1", port), indymilter::ProtoOpts::all()).await;
        let headers = [("From", "alice@example.org"), ("To", "support@tails.net"), ("Subject", "hello")]
            .map(|(k, v)| (k.to_string(), v.to_string()));
        c.envelope_and_header("Q1", "alice@example.org", "support@tails.net", &headers).await;
        c.body(b"Tails does not start.\r\n").await;
        c.eom("Q1").await;
        c.quit().await;
    });
    d.wait_log("reply queued", 1);
    d.stop();
    assert_eq!(mode(&state), 0o700, "{}", state.display());
    let mut seen = 0;
    for e in walk(&state) {
        let want = if e.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(mode(&e), want, "{}", e.display());
        seen += 1;
    }
    assert!(seen >= 4, "secret, stores and outbox: {seen} entries");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        }
        out.push(p);
    }
    out
}

/// What `run` would fail on, `check` reports, as the daemon's user (here nobody, as systemd's
/// ExecStartPre runs it as User=): a socket group it may not give, and state files left by root.
#[test]
fn check_catches_a_socket_group_and_state_files_the_daemons_user_cannot_use() {
    use std::os::unix::fs::PermissionsExt;
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "this test runs commands as user nobody: run it as root"
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    let owned = |p: &std::path::Path| std::os::unix::fs::chown(p, Some(nobody.uid.as_raw()), None).unwrap();
    let (run, state) = (dir.path().join("run"), dir.path().join("state"));
    for d in [&run, &state] {
        std::fs::create_dir(d).unwrap();
        owned(d);
    }
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/reply.toml"),
        dir.path().join("reply.toml"),
    )
    .unwrap();
    let config = dir.path().join("helpdesk-milter.toml");
    let write = |group: &str| {
        std::fs::write(
            &config,
            format!("[milter]\nlisten = \"unix:run/milter.sock\"\nsocket_group = \"{group}\"\n[state]\ndirectory = \"state\"\n"),
        )
        .unwrap();
        for f in [&config, &dir.path().join("reply.toml")] {
            std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
    };
    let check = || {
        let out = Command::new("runuser")
            .args(["-u", "nobody", "--", BIN, "check", "--config"])
            .arg(&config)
            .output();
        let out = out.expect("runuser (util-linux)");
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    write("");
    assert_eq!(check(), (Some(0), format!("{}: OK\n", config.display())));
    // A group nobody is not a member of: chown is refused to it, as it would be to the daemon.
    write("root");
    let (code, text) = check();
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("cannot give its socket to group root"), "{text}");
    // A file a run as root left in the state directory.
    write("");
    std::fs::write(state.join("secret"), [0u8; 32]).unwrap();
    let (code, text) = check();
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("secret cannot be read and written") && text.contains("chown -R"), "{text}");
    // Root running check sees it too, by the owner.
    let out = Command::new(BIN).args(["check", "--config"]).arg(&config).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("belongs to uid 0"), "{out:?}");
    owned(&state.join("secret"));
    assert_eq!(check().0, Some(0));
}

/// `classify` reads its input as a stream with the milter's limits: on a 100 MiB message its
/// memory stays that of a small one (it was 107 MiB when it read the whole input), and it still
/// prints exactly the header changes that the daemon makes to the same message.
#[test]
fn classify_reads_a_huge_message_in_bounded_memory_and_agrees_with_the_daemon() {
    use std::io::Write;
    const MIB: usize = 1 << 20;
    let mut d = Daemon::start("");
    let head = "From: Huge <huge@example.org>\r\nTo: support@tails.net\r\nSubject: realtek wifi\r\n\
                X-HelpDesk-Class: team\r\n\r\n";
    let line = "All work and no play makes a big message. ".repeat(24) + "\r\n";
    let body: Vec<u8> = line.as_bytes().iter().copied().cycle().take(100 * MIB).collect();

    let mut child = Command::new(BIN)
        .args(["classify", "--config"])
        .arg(&d.config)
        .args(["--sender", "huge@example.org", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(head.as_bytes()).unwrap();
    stdin.write_all(&body).unwrap();
    // Everything is read by now (a pipe holds 64 KiB): the peak is that of the whole input.
    let peak = daemon::status_kib(pid, "VmHWM");
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let printed: Vec<String> = String::from_utf8(out.stdout).unwrap().lines().map(str::to_string).collect();
    assert!(peak < 30 * 1024, "classify used {peak} KiB for a 100 MiB message");

    let port: u16 = d.milter_address().rsplit(':').next().unwrap().parse().unwrap();
    let added = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let mut c = mta::MtaConn::tcp(("127.0.0.1", port), indymilter::ProtoOpts::all()).await;
        let headers = [
            ("From", "Huge <huge@example.org>"),
            ("To", "support@tails.net"),
            ("Subject", "realtek wifi"),
            ("X-HelpDesk-Class", "team"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        c.envelope_and_header("Q1", "huge@example.org", "support@tails.net", &headers).await;
        assert!(c.body(&body).await, "the daemon skips the rest of the body");
        let (actions, _) = c.eom("Q1").await;
        c.quit().await;
        actions
    });
    let daemon_lines: Vec<String> = added
        .iter()
        .map(|a| match a {
            indymilter::message::reply::Reply::AddHeader { name, value } => {
                format!("{}: {}", name.to_string_lossy(), value.to_string_lossy().trim())
            }
            indymilter::message::reply::Reply::ChangeHeader { name, .. } => {
                format!("-{}", name.to_string_lossy())
            }
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(printed, daemon_lines);
    assert!(printed.contains(&"X-HelpDesk-Topic: wifi-realtek".to_string()), "{printed:?}");
    d.stop();
}

//! The outbox against a real SMTP server: Postfix's smtp-sink (which dumps each message with its
//! envelope) and, where a scripted reply is needed, a small fake relay.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use helpdesk_milter::config::{DeliveryConfig, Relay, SMTP_TIMEOUT};
use helpdesk_milter::outbox::{Outbox, SenderConfig, run_sender};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;

const SMTP_SINK: &str = "/usr/sbin/smtp-sink";

fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "helpdesk_milter=debug".into()),
        )
        .try_init();
}

/// A port nobody listens on right now (bind to port 0, then let it go).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// One message as dumped by smtp-sink.
#[derive(Debug)]
struct Dumped {
    mail_args: String,
    rcpt_args: Vec<String>,
    text: String,
}

/// smtp-sink on 127.0.0.1:port, killed on drop.
struct Sink {
    child: Child,
    dump: PathBuf,
    _dir: tempfile::TempDir,
}

impl Sink {
    fn start(port: u16, extra: &[&str]) -> Sink {
        assert!(Path::new(SMTP_SINK).exists(), "{SMTP_SINK} is needed for this test (package postfix)");
        let dir = tempfile::tempdir().unwrap();
        // smtp-sink drops privileges to postfix, which must reach the dump directory.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let dump = dir.path().join("dump");
        fs::create_dir(&dump).unwrap();
        let root = nix::unistd::geteuid().is_root();
        if root {
            let postfix = nix::unistd::User::from_name("postfix").unwrap().expect("user postfix");
            nix::unistd::chown(&dump, Some(postfix.uid), Some(postfix.gid)).unwrap();
        }
        let mut cmd = Command::new(SMTP_SINK);
        if root {
            cmd.args(["-u", "postfix"]);
        }
        let template = format!("{}/%Y%m%d/%H%M%S.", dump.display());
        cmd.args(extra)
            .args(["-c", "-d", &template, &format!("127.0.0.1:{port}"), "100"])
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        let child = cmd.spawn().expect("start smtp-sink");
        let sink = Sink { child, dump, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "smtp-sink did not start listening on port {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        sink
    }

    fn messages(&self) -> Vec<Dumped> {
        let mut files = Vec::new();
        collect_files(&self.dump, &mut files);
        files.sort();
        files
            .iter()
            .map(|f| {
                let text = fs::read_to_string(f).unwrap();
                let header = |name: &str| -> Vec<String> {
                    text.lines().filter_map(|l| l.strip_prefix(name)).map(str::to_owned).collect()
                };
                let mail = header("X-Mail-Args: ");
                assert_eq!(mail.len(), 1, "one MAIL FROM per dump: {text}");
                Dumped { mail_args: mail[0].clone(), rcpt_args: header("X-Rcpt-Args: "), text }
            })
            .collect()
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for item in fs::read_dir(dir).unwrap() {
        let path = item.unwrap().path();
        if path.is_dir() {
            collect_files(&path, out);
        } else {
            out.push(path);
        }
    }
}

/// A scripted relay: answers EHLO with `extensions`, RCPT with `rcpt_reply`, accepts the rest, and
/// records every command line.
struct FakeRelay {
    port: u16,
    lines: Arc<Mutex<Vec<String>>>,
    connections: Arc<Mutex<usize>>,
    task: JoinHandle<()>,
}

impl FakeRelay {
    async fn start(extensions: &'static [&'static str], rcpt_reply: &'static str) -> FakeRelay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(Mutex::new(0));
        let (l, c) = (lines.clone(), connections.clone());
        let task = tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                *c.lock().unwrap() += 1;
                let lines = l.clone();
                tokio::spawn(async move {
                    let _ = serve(stream, extensions, rcpt_reply, lines).await;
                });
            }
        });
        FakeRelay { port, lines, connections, task }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    fn connections(&self) -> usize {
        *self.connections.lock().unwrap()
    }
}

impl Drop for FakeRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(
    stream: tokio::net::TcpStream,
    extensions: &[&str],
    rcpt_reply: &str,
    lines: Arc<Mutex<Vec<String>>>,
) -> io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    write.write_all(b"220 fake ESMTP\r\n").await?;
    let mut in_data = false;
    loop {
        let mut line = String::new();
        if read.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let line = line.trim_end().to_owned();
        if in_data {
            if line == "." {
                in_data = false;
                write.write_all(b"250 2.0.0 queued\r\n").await?;
            }
            continue;
        }
        lines.lock().unwrap().push(line.clone());
        let verb = line.split([' ', ':']).next().unwrap_or("").to_ascii_uppercase();
        let reply = match verb.as_str() {
            "EHLO" => {
                let mut r = String::from("250-fake\r\n");
                for e in extensions {
                    r.push_str(&format!("250-{e}\r\n"));
                }
                r.push_str("250 HELP\r\n");
                r
            }
            "MAIL" => "250 2.1.0 Ok\r\n".into(),
            "RCPT" => format!("{rcpt_reply}\r\n"),
            "DATA" => {
                in_data = true;
                "354 go ahead\r\n".into()
            }
            "QUIT" => {
                write.write_all(b"221 bye\r\n").await?;
                return Ok(());
            }
            _ => "250 Ok\r\n".into(),
        };
        write.write_all(reply.as_bytes()).await?;
    }
}

fn config(port: u16) -> SenderConfig {
    SenderConfig {
        delivery: DeliveryConfig {
            relay: Relay::parse(&format!("smtp://127.0.0.1:{port}")).unwrap(),
            retry_interval: Duration::from_millis(200),
            lifetime: Duration::from_secs(3600),
            smtp_timeout: SMTP_TIMEOUT,
        },
        helo_name: "helpdesk.test".into(),
    }
}

struct Sender {
    wake: Arc<Notify>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Sender {
    fn start(outbox: &Arc<Outbox>, config: SenderConfig) -> Sender {
        let wake = Arc::new(Notify::new());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(run_sender(outbox.clone(), config, wake.clone(), async {
            let _ = stopped.await;
        }));
        Sender { wake, stop: Some(stop), task }
    }

    /// Shuts the sender down and checks that it ends promptly.
    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(3), &mut self.task)
            .await
            .expect("run_sender must end on shutdown")
            .unwrap();
    }
}

async fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(6);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn reply(subject: &str) -> Vec<u8> {
    // A line starting with a dot checks the transparency round trip.
    format!(
        "From: helpdesk@example.org\r\nTo: someone\r\nSubject: {subject}\r\nAuto-Submitted: auto-replied\r\n\r\nHello.\r\n.dotted line\r\n"
    )
    .into_bytes()
}

#[tokio::test]
async fn delivers_once_with_null_sender_and_notify_never() {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let outbox = Arc::new(Outbox::open(&dir.path().join("outbox")).unwrap());
    let port = free_port();
    let sink = Sink::start(port, &[]);
    let sender = Sender::start(&outbox, config(port));

    // Queued after the sender went to sleep: the wake-up gets it sent.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let id = outbox.enqueue("alice@example.com", &reply("Auto: first"), SystemTime::now()).unwrap();
    sender.wake.notify_one();

    wait_for("delivery", || outbox.depth() == 0 && !sink.messages().is_empty()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let messages = sink.messages();
    assert_eq!(messages.len(), 1, "{messages:?}");
    let m = &messages[0];
    assert_eq!(m.mail_args, "<>");
    assert_eq!(m.rcpt_args, vec!["<alice@example.com> NOTIFY=NEVER".to_owned()]);
    assert!(m.text.contains("X-Helo-Args: helpdesk.test"), "{}", m.text);
    assert!(m.text.contains("Subject: Auto: first\n"), "{}", m.text);
    assert!(m.text.contains("\n.dotted line\n"), "{}", m.text);
    assert!(outbox.entries().is_empty(), "entry {id} must be removed");
    sender.stop().await;
}

#[tokio::test]
async fn relay_down_then_up_delivers_after_retry() {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let outbox = Arc::new(Outbox::open(&dir.path().join("outbox")).unwrap());
    let port = free_port();
    let before = SystemTime::now();
    outbox.enqueue("bob@example.net", &reply("Auto: retry"), before).unwrap();
    let sender = Sender::start(&outbox, config(port));

    wait_for("a failed attempt", || outbox.entries().first().is_some_and(|e| e.attempts >= 1)).await;
    let e = &outbox.entries()[0];
    assert!(e.next_attempt > e.created, "{e:?}");

    let sink = Sink::start(port, &[]);
    wait_for("delivery after the relay came up", || outbox.depth() == 0).await;
    let messages = sink.messages();
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert_eq!(messages[0].mail_args, "<>");
    assert_eq!(messages[0].rcpt_args, vec!["<bob@example.net> NOTIFY=NEVER".to_owned()]);
    sender.stop().await;
}

#[tokio::test]
async fn temporary_rejection_keeps_the_entry() {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let outbox = Arc::new(Outbox::open(&dir.path().join("outbox")).unwrap());
    let port = free_port();
    let sink = Sink::start(port, &["-r", "RCPT"]);
    outbox.enqueue("carol@example.com", &reply("Auto: 4xx"), SystemTime::now()).unwrap();
    let sender = Sender::start(&outbox, config(port));

    wait_for("a 4xx attempt", || outbox.entries().first().is_some_and(|e| e.attempts >= 1)).await;
    sender.stop().await;
    assert_eq!(outbox.depth(), 1);
    assert!(sink.messages().is_empty());
}

#[tokio::test]
async fn permanent_rejection_removes_without_retry() {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let outbox = Arc::new(Outbox::open(&dir.path().join("outbox")).unwrap());
    let relay =
        FakeRelay::start(&["PIPELINING", "DSN"], "550 5.1.1 <dave@example.com>: Recipient address rejected")
            .await;
    outbox.enqueue("dave@example.com", &reply("Auto: 5xx"), SystemTime::now()).unwrap();
    let sender = Sender::start(&outbox, config(relay.port));

    wait_for("removal after 5xx", || outbox.depth() == 0).await;
    // Longer than the first retry interval (rounded up to a second): no second attempt.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    sender.stop().await;
    assert_eq!(relay.connections(), 1);
    let rcpts: Vec<_> = relay.lines().into_iter().filter(|l| l.starts_with("RCPT")).collect();
    assert_eq!(rcpts, vec!["RCPT TO:<dave@example.com> NOTIFY=NEVER".to_owned()]);
    assert!(dir.path().join("outbox").read_dir().unwrap().next().is_none(), "nothing left behind");
}

#[tokio::test]
async fn no_notify_parameter_without_dsn() {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let outbox = Arc::new(Outbox::open(&dir.path().join("outbox")).unwrap());
    let relay = FakeRelay::start(&["PIPELINING", "8BITMIME"], "250 2.1.5 Ok").await;
    outbox.enqueue("erin@example.com", &reply("Auto: no dsn"), SystemTime::now()).unwrap();
    let sender = Sender::start(&outbox, config(relay.port));

    wait_for("delivery", || outbox.depth() == 0).await;
    sender.stop().await;
    let lines = relay.lines();
    assert!(lines.contains(&"MAIL FROM:<>".to_owned()), "{lines:?}");
    assert!(lines.contains(&"RCPT TO:<erin@example.com>".to_owned()), "{lines:?}");
    assert_eq!(lines.iter().filter(|l| l.starts_with("RCPT")).count(), 1);
}

#[tokio::test]
async fn expired_entry_is_dropped_unsent() {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let outbox = Arc::new(Outbox::open(&dir.path().join("outbox")).unwrap());
    let port = free_port();
    let sink = Sink::start(port, &[]);
    let two_hours_ago = SystemTime::now() - Duration::from_secs(2 * 3600);
    outbox.enqueue("frank@example.com", &reply("Auto: old"), two_hours_ago).unwrap();
    let fresh = outbox.enqueue("grace@example.com", &reply("Auto: fresh"), SystemTime::now()).unwrap();
    assert_eq!(outbox.oldest_age(SystemTime::now()).map(|a| a.as_secs() / 60), Some(120));
    let sender = Sender::start(&outbox, config(port));

    wait_for("both entries handled", || outbox.depth() == 0).await;
    wait_for("the fresh reply delivered", || sink.messages().len() == 1).await;
    sender.stop().await;
    let messages = sink.messages();
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert_eq!(messages[0].rcpt_args, vec!["<grace@example.com> NOTIFY=NEVER".to_owned()], "{fresh}");
}

#[tokio::test]
async fn entries_survive_a_restart() {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox");
    let port = free_port();
    {
        let outbox = Arc::new(Outbox::open(&path).unwrap());
        outbox.enqueue("heidi@example.com", &reply("Auto: one"), SystemTime::now()).unwrap();
        outbox.enqueue("ivan@example.com", &reply("Auto: two"), SystemTime::now()).unwrap();
        // First run: relay down, so the entries stay, with an attempt recorded.
        let sender = Sender::start(&outbox, config(port));
        wait_for("failed attempts", || outbox.entries().iter().all(|e| e.attempts >= 1)).await;
        sender.stop().await;
    }

    let outbox = Arc::new(Outbox::open(&path).unwrap());
    let entries = outbox.entries();
    assert_eq!(entries.len(), 2);
    assert!(entries.iter().all(|e| e.attempts >= 1));
    let sink = Sink::start(port, &[]);
    let sender = Sender::start(&outbox, config(port));
    wait_for("delivery after restart", || outbox.depth() == 0).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    sender.stop().await;
    let mut rcpts: Vec<_> = sink.messages().into_iter().flat_map(|m| m.rcpt_args).collect();
    rcpts.sort();
    assert_eq!(
        rcpts,
        vec!["<heidi@example.com> NOTIFY=NEVER".to_owned(), "<ivan@example.com> NOTIFY=NEVER".to_owned()]
    );
}

#[tokio::test]
async fn corrupt_and_truncated_files_are_quarantined() {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox");
    let outbox = Arc::new(Outbox::open(&path).unwrap());
    let now = SystemTime::now();
    outbox.enqueue("judy@example.com", &reply("Auto: good"), now).unwrap();

    let file = |id: &str| path.join(format!("{id}.reply"));
    let truncated = outbox.enqueue("mallory@example.com", &reply("Auto: truncated"), now).unwrap();
    let bytes = fs::read(file(&truncated)).unwrap();
    fs::write(file(&truncated), &bytes[..bytes.len() - 10]).unwrap();
    let flipped = outbox.enqueue("mallory@example.com", &reply("Auto: flipped"), now).unwrap();
    let mut bytes = fs::read(file(&flipped)).unwrap();
    *bytes.last_mut().unwrap() ^= 0x20;
    fs::write(file(&flipped), &bytes).unwrap();
    let garbage = "00000000000000000000000000000000";
    fs::write(file(garbage), b"\x00\xffnot an entry").unwrap();
    // A valid entry under another entry's name.
    let renamed = "11111111111111111111111111111111";
    fs::copy(file(&flipped), file(renamed)).unwrap();
    let expected: Vec<(String, Vec<u8>)> = [&truncated, &flipped, garbage, renamed]
        .iter()
        .map(|id| (format!("{id}.reply"), fs::read(file(id)).unwrap()))
        .collect();

    // Temp files: an old leftover goes, a fresh one (a write in progress) stays.
    let stale = path.join(".tmp-22222222222222222222222222222222");
    fs::write(&stale, b"partial").unwrap();
    fs::File::options()
        .write(true)
        .open(&stale)
        .unwrap()
        .set_modified(SystemTime::now() - Duration::from_secs(2 * 3600))
        .unwrap();
    let in_progress = path.join(".tmp-33333333333333333333333333333333");
    fs::write(&in_progress, b"partial").unwrap();

    let entries = outbox.entries();
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0].recipient, "judy@example.com");
    for (name, content) in &expected {
        assert!(!path.join(name).exists(), "{name} must be moved away");
        assert_eq!(
            &fs::read(path.join("corrupt").join(name)).unwrap(),
            content,
            "{name} must be kept intact"
        );
    }
    assert!(!stale.exists());
    assert!(in_progress.exists());

    let port = free_port();
    let sink = Sink::start(port, &[]);
    let sender = Sender::start(&outbox, config(port));
    wait_for("delivery", || outbox.depth() == 0).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    sender.stop().await;
    let messages = sink.messages();
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert_eq!(messages[0].rcpt_args, vec!["<judy@example.com> NOTIFY=NEVER".to_owned()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_enqueues_get_distinct_ids() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = Arc::new(Outbox::open(&dir.path().join("outbox")).unwrap());
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let outbox = outbox.clone();
            tokio::task::spawn_blocking(move || {
                let id = outbox
                    .enqueue(
                        &format!("user{i}@example.com"),
                        &reply(&format!("Auto: {i}")),
                        SystemTime::now(),
                    )
                    .unwrap();
                (i, id)
            })
        })
        .collect();
    let mut ids = HashSet::new();
    let mut by_id = std::collections::HashMap::new();
    for t in tasks {
        let (i, id) = t.await.unwrap();
        assert!(ids.insert(id.clone()), "duplicate id {id}");
        by_id.insert(id, i);
    }
    assert_eq!(outbox.depth(), 64);
    let entries = outbox.entries();
    assert_eq!(entries.len(), 64);
    for e in entries {
        let i = by_id[&e.id];
        assert_eq!(e.recipient, format!("user{i}@example.com"));
        assert_eq!(e.message, reply(&format!("Auto: {i}")));
    }
}

//! Fault injection for end-to-end tests: a relay whose behaviour the test scripts (accept, refuse,
//! say nothing, stall after the message, be down), and a small tmpfs to fill or make read-only.
//!
//! Use from a test file with `#[path = "support/faults.rs"] mod faults;`.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How the relay treats the next connections (each connection keeps the mode it started with).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// A well-behaved relay: every message is accepted and recorded.
    Accept,
    /// Answers RCPT TO with this reply line, e.g. `"550 5.1.1 ..."` or `"451 4.3.0 ..."`.
    RefuseRcpt(String),
    /// Accepts the TCP connection and never says a word.
    Silent,
    /// Everything as usual up to the end of the message, then no answer to the final dot.
    StallAfterData,
    /// Not listening: connections are refused.
    Down,
}

/// One message the relay accepted (answered 250 to its final dot).
#[derive(Clone, Debug)]
pub struct Delivered {
    /// The MAIL FROM command line, parameters included.
    pub mail: String,
    /// The RCPT TO command lines, parameters included.
    pub rcpts: Vec<String>,
    pub data: Vec<u8>,
}

impl Delivered {
    /// The addresses of the RCPT TO lines, without the brackets.
    pub fn rcpt_addresses(&self) -> Vec<String> {
        self.rcpts.iter().map(|l| bracketed(l)).collect()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.data).into_owned()
    }
}

fn bracketed(line: &str) -> String {
    let start = line.find('<').map_or(0, |i| i + 1);
    let end = line[start..].find('>').map_or(line.len(), |i| start + i);
    line[start..end].to_owned()
}

#[derive(Default)]
struct Shared {
    mode: Mutex<Option<Mode>>,
    listener: Mutex<Option<TcpListener>>,
    delivered: Mutex<Vec<Delivered>>,
    connections: AtomicUsize,
    /// Messages received in full but, by design of the mode, never acknowledged.
    stalled: AtomicUsize,
    stop: AtomicBool,
}

/// A scriptable SMTP relay on 127.0.0.1; stops on drop.
pub struct FakeRelay {
    pub port: u16,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl FakeRelay {
    pub fn start(mode: Mode) -> FakeRelay {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let shared = Arc::new(Shared::default());
        let relay_shared = shared.clone();
        let thread = std::thread::spawn(move || accept_loop(&relay_shared));
        let relay = FakeRelay { port, shared, thread: Some(thread) };
        relay.set_mode(mode);
        relay
    }

    /// The relay URL for the daemon's configuration.
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Switches the mode for new connections; `Down` closes the listening socket, any other mode
    /// opens it again on the same port.
    pub fn set_mode(&self, mode: Mode) {
        let mut listener = self.shared.listener.lock().unwrap();
        if mode == Mode::Down {
            *listener = None;
        } else if listener.is_none() {
            let t0 = Instant::now();
            let l = loop {
                match TcpListener::bind(("127.0.0.1", self.port)) {
                    Ok(l) => break l,
                    Err(e) => {
                        assert!(t0.elapsed() < Duration::from_secs(10), "cannot bind the relay again: {e}");
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
            };
            l.set_nonblocking(true).unwrap();
            *listener = Some(l);
        }
        *self.shared.mode.lock().unwrap() = Some(mode);
    }

    pub fn delivered(&self) -> Vec<Delivered> {
        self.shared.delivered.lock().unwrap().clone()
    }

    /// How many accepted messages had `rcpt` among their recipients.
    pub fn count_for(&self, rcpt: &str) -> usize {
        self.delivered().iter().filter(|d| d.rcpt_addresses().iter().any(|r| r == rcpt)).count()
    }

    /// Connections accepted so far (each delivery attempt of the daemon is one).
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    pub fn stalled(&self) -> usize {
        self.shared.stalled.load(Ordering::SeqCst)
    }

    /// Waits until `n` messages were accepted; `what` goes in the panic message.
    pub fn wait_delivered(&self, n: usize, timeout: Duration, what: &dyn Fn() -> String) -> Vec<Delivered> {
        wait_until(timeout, || self.delivered().len() >= n, &|| {
            format!("{} of {n} replies reached the relay\n{}", self.delivered().len(), what())
        });
        self.delivered()
    }
}

impl Drop for FakeRelay {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn accept_loop(shared: &Arc<Shared>) {
    let mut sessions = Vec::new();
    while !shared.stop.load(Ordering::SeqCst) {
        let accepted = shared.listener.lock().unwrap().as_ref().map(TcpListener::accept);
        match accepted {
            Some(Ok((stream, _))) => {
                let mode = shared.mode.lock().unwrap().clone().unwrap_or(Mode::Accept);
                shared.connections.fetch_add(1, Ordering::SeqCst);
                let shared = shared.clone();
                sessions.push(std::thread::spawn(move || {
                    let _ = session(stream, &mode, &shared);
                }));
            }
            Some(Err(e)) if e.kind() != ErrorKind::WouldBlock => panic!("relay accept: {e}"),
            _ => std::thread::sleep(Duration::from_millis(10)),
        }
    }
    for s in sessions {
        let _ = s.join();
    }
}

/// Reads one line (CRLF or LF), waiting while the peer is quiet; None at end of stream or stop.
fn read_line(reader: &mut BufReader<TcpStream>, shared: &Shared) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    loop {
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) => return None,
            Ok(_) if buf.ends_with(b"\n") => return Some(buf),
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if shared.stop.load(Ordering::SeqCst) {
                    return None;
                }
            }
            Err(_) => return None,
        }
    }
}

/// Holds the connection open without a word until the peer goes or the relay stops.
fn hold(reader: &mut BufReader<TcpStream>, shared: &Shared) {
    while read_line(reader, shared).is_some() {}
}

fn session(stream: TcpStream, mode: &Mode, shared: &Shared) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_millis(100)))?;
    let mut out = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    if *mode == Mode::Silent {
        hold(&mut reader, shared);
        return Ok(());
    }
    out.write_all(b"220 fake.relay ESMTP\r\n")?;
    let (mut mail, mut rcpts) = (String::new(), Vec::new());
    while let Some(line) = read_line(&mut reader, shared) {
        let line = String::from_utf8_lossy(&line).trim_end().to_owned();
        let verb = line.split([' ', ':']).next().unwrap_or("").to_ascii_uppercase();
        let reply = match verb.as_str() {
            "EHLO" => "250-fake.relay\r\n250-8BITMIME\r\n250 DSN\r\n".to_owned(),
            "HELO" | "NOOP" => "250 ok\r\n".to_owned(),
            "RSET" => {
                (mail, rcpts) = (String::new(), Vec::new());
                "250 ok\r\n".to_owned()
            }
            "MAIL" => {
                mail = line.clone();
                "250 2.1.0 ok\r\n".to_owned()
            }
            "RCPT" => match mode {
                Mode::RefuseRcpt(r) => format!("{r}\r\n"),
                _ => {
                    rcpts.push(line.clone());
                    "250 2.1.5 ok\r\n".to_owned()
                }
            },
            "DATA" => {
                out.write_all(b"354 go ahead\r\n")?;
                let mut data = Vec::new();
                loop {
                    let Some(l) = read_line(&mut reader, shared) else { return Ok(()) };
                    if l == b".\r\n" || l == b".\n" {
                        break;
                    }
                    data.extend_from_slice(l.strip_prefix(b".").unwrap_or(&l));
                }
                if *mode == Mode::StallAfterData {
                    shared.stalled.fetch_add(1, Ordering::SeqCst);
                    hold(&mut reader, shared);
                    return Ok(());
                }
                let rcpts = std::mem::take(&mut rcpts);
                shared.delivered.lock().unwrap().push(Delivered { mail: mail.clone(), rcpts, data });
                "250 2.0.0 queued\r\n".to_owned()
            }
            "QUIT" => {
                out.write_all(b"221 bye\r\n")?;
                return Ok(());
            }
            _ => "502 5.5.2 unknown command\r\n".to_owned(),
        };
        out.write_all(reply.as_bytes())?;
    }
    Ok(())
}

/// Polls `done` every 50 ms; panics with `what()` after `timeout` (a guard against hangs only).
pub fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool, what: &dyn Fn() -> String) {
    let t0 = Instant::now();
    while !done() {
        assert!(t0.elapsed() < timeout, "timed out after {timeout:?}: {}", what());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A tmpfs mounted on a directory for the test's lifetime; unmounted on drop.
pub struct Tmpfs {
    pub path: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (mount's syntax, e.g. "2m") on `path`, created if missing.
    pub fn mount(path: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(path).unwrap();
        run("mount", &["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs", &path_str(path)]);
        Tmpfs { path: path.to_owned() }
    }

    pub fn read_only(&self, ro: bool) {
        let opt = if ro { "remount,ro" } else { "remount,rw" };
        run("mount", &["-o", opt, &path_str(&self.path)]);
    }

    fn filler(&self) -> PathBuf {
        self.path.join("filler")
    }

    /// Fills the file system to the last byte.
    pub fn fill(&self) {
        let mut f = std::fs::File::create(self.filler()).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        loop {
            match f.write(&chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(28) => break,
                Err(e) => panic!("filling {}: {e}", self.path.display()),
            }
        }
        // Down to the last byte: small writes use up a partly filled page.
        while f.write(&[0]).is_ok_and(|n| n == 1) {}
    }

    /// Frees the space that `fill` took.
    pub fn unfill(&self) {
        std::fs::remove_file(self.filler()).unwrap();
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy, so that a daemon still holding a file there cannot keep it mounted.
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

fn path_str(p: &Path) -> String {
    p.to_str().unwrap().to_owned()
}

fn run(program: &str, args: &[&str]) {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

//! Milter protocol load generator: the daemon's own ceiling, without Postfix.
//!
//! Starts the release `helpdesk-milter` binary on a temporary configuration and plays Postfix's
//! side of the milter protocol against it (negotiate, macros, MAIL, RCPT, DATA, headers, EOH, body,
//! EOM) over concurrent connections, each sending many messages. Reports messages per second and
//! EOM latency (p50/p99/max), over TCP and over a UNIX socket; then the daemon's peak RSS with 500
//! connections held in the middle of a message, and while it receives a 50 MiB message.
//!
//!     cargo bench --bench milter_load                      # everything, default sizes
//!     cargo bench --bench milter_load -- --quick           # short runs, to try it out
//!     cargo bench --bench milter_load -- throughput --transport unix --connections 20 --messages 2000
//!     cargo bench --bench milter_load -- memory
//!     cargo bench --bench milter_load -- throughput --per-connection 1   # a connection per message
//!
//! Figures also go to target/bench-results/milter_load.tsv for benches/run.

#[path = "../tests/support/mta.rs"]
mod mta;

use indymilter::ProtoOpts;
use indymilter::message::reply::Reply;
use mta::MtaConn;
use std::fmt::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_helpdesk-milter");
const HELPDESK: &str = "helpdesk@example.org";
const MIB: usize = 1024 * 1024;

#[derive(Clone, Copy, PartialEq, Debug)]
enum Transport {
    Tcp,
    Unix,
}

struct Args {
    what: Vec<String>,
    transports: Vec<Transport>,
    connections: usize,
    messages: usize,
    hold: usize,
    big_mib: usize,
    /// Messages per milter connection before it is closed and another opened.
    reuse: usize,
}

fn parse_args() -> Args {
    let mut a = Args {
        what: Vec::new(),
        transports: vec![Transport::Tcp, Transport::Unix],
        connections: 20,
        messages: 3000,
        hold: 500,
        big_mib: 50,
        reuse: usize::MAX,
    };
    let mut it = std::env::args().skip(1);
    let num = |v: Option<String>, flag: &str| -> usize {
        v.and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("{flag} needs a number"))
    };
    while let Some(arg) = it.next() {
        match arg.as_str() {
            // Passed by `cargo bench` to every bench target.
            "--bench" => {}
            "--quick" => a.messages = 300,
            "--connections" => a.connections = num(it.next(), "--connections"),
            "--messages" => a.messages = num(it.next(), "--messages"),
            "--hold" => a.hold = num(it.next(), "--hold"),
            "--big-mib" => a.big_mib = num(it.next(), "--big-mib"),
            "--per-connection" => a.reuse = num(it.next(), "--per-connection").max(1),
            "--transport" => {
                a.transports = match it.next().as_deref() {
                    Some("tcp") => vec![Transport::Tcp],
                    Some("unix") => vec![Transport::Unix],
                    Some("both") => vec![Transport::Tcp, Transport::Unix],
                    _ => panic!("--transport tcp|unix|both"),
                }
            }
            "throughput" | "memory" => a.what.push(arg),
            other => panic!("unknown argument {other:?} (see the top of benches/milter_load.rs)"),
        }
    }
    if a.what.is_empty() {
        a.what = vec!["throughput".into(), "memory".into()];
    }
    a
}

/// The daemon under test, on its own temporary directory.
struct Daemon {
    dir: tempfile::TempDir,
    child: Child,
    transport: Transport,
    port: u16,
}

impl Daemon {
    fn start(transport: Transport, max_connections: usize) -> Daemon {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let listen = match transport {
            Transport::Tcp => format!("inet:127.0.0.1:{port}"),
            Transport::Unix => format!("unix:{}", dir.path().join("milter.sock").display()),
        };
        // The reply file in a directory of its own, as in /etc: the daemon watches that directory,
        // and the log and state written beside it would wake the watcher for nothing.
        std::fs::create_dir(dir.path().join("reply")).expect("mkdir");
        std::fs::copy(
            concat!(env!("CARGO_MANIFEST_DIR"), "/etc/reply.toml"),
            dir.path().join("reply/reply.toml"),
        )
        .expect("copy etc/reply.toml");
        // Replies go to a closed port: they wait in the outbox, off the measured path, as they
        // would while the relay is slow.
        let config = format!(
            "[milter]\nlisten = \"{listen}\"\nmax_connections = {max_connections}\n\
             [helpdesk]\naddresses = [\"{HELPDESK}\"]\n\
             [autoreply]\nreply_file = \"reply/reply.toml\"\nfrom = \"Help Desk <{HELPDESK}>\"\n\
             relay = \"smtp://127.0.0.1:{}\"\n\
             [state]\ndirectory = \"state\"\n",
            free_port()
        );
        let cfg = dir.path().join("helpdesk-milter.toml");
        std::fs::write(&cfg, config).expect("write config");
        let log = std::fs::File::create(dir.path().join("daemon.log")).expect("log file");
        let child = std::process::Command::new(BIN)
            .args(["run", "--config"])
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start helpdesk-milter (cargo bench builds it)");
        let d = Daemon { dir, child, transport, port };
        d.wait_ready();
        d
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("milter.sock")
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            let up = match self.transport {
                Transport::Tcp => std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok(),
                Transport::Unix => std::os::unix::net::UnixStream::connect(self.socket()).is_ok(),
            };
            if up {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("the daemon did not start: {}", self.log());
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    /// A milter connection as Postfix opens it (Postfix does not set TCP_NODELAY either).
    async fn connect(&self, skip: bool) -> MtaConn {
        let offered = if skip { ProtoOpts::all() } else { ProtoOpts::all() - ProtoOpts::SKIP };
        match self.transport {
            Transport::Tcp => MtaConn::tcp(("127.0.0.1", self.port), offered).await,
            Transport::Unix => MtaConn::unix(self.socket(), offered).await,
        }
    }

    /// CPU time the daemon has used so far (user + system).
    fn cpu(&self) -> Duration {
        cpu_time(&format!("/proc/{}/stat", self.child.id()))
    }

    /// (current RSS, peak RSS) in KiB, from /proc.
    fn rss_kib(&self) -> (u64, u64) {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).expect("proc status");
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// utime + stime of a /proc/PID/stat file (clock ticks of 10 ms on Linux).
fn cpu_time(stat: &str) -> Duration {
    let text = std::fs::read_to_string(stat).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = text.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): utime and stime are fields 14 and 15.
    let field = |n: usize| f.get(n - 3).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let ticks = field(14) + field(15);
    Duration::from_millis(ticks * 10)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port()
}

/// A 4 KiB plaintext support request with 15 header fields, as Postfix passes it to a milter.
struct Message {
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

fn message(conn: usize, n: usize, body_bytes: usize) -> Message {
    let sender = format!("writer{conn}@example.net");
    let headers: Vec<(String, String)> = [
        ("Return-Path", format!("<{sender}>")),
        (
            "Received",
            "from mail.example.net (mail.example.net [192.0.2.10])\n\tby mx.example.org (Postfix) with ESMTPS \
             id 4Xyz1234\n\tfor <helpdesk@example.org>; Sat, 21 Nov 2026 10:00:00 +0000 (UTC)"
                .to_string(),
        ),
        (
            "Received",
            "from [10.0.0.2] (unknown [198.51.100.7])\n\tby mail.example.net (Postfix) with ESMTPSA id \
             0A1B2C3D\n\tfor <helpdesk@example.org>; Sat, 21 Nov 2026 10:59:58 +0100 (CET)"
                .to_string(),
        ),
        (
            "DKIM-Signature",
            "v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.net; s=mail;\n\tt=1795255198; \
             bh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=;\n\th=From:To:Subject:Date:Message-ID;\n\t\
             b=dGhpcyBpcyBub3QgYSByZWFsIHNpZ25hdHVyZSBidXQgaXQgaXMgYXMgbG9uZyBhcyBvbmUgdGhhdCB3b3VsZCBi\n\t \
             ZSBpbiBwcm9kdWN0aW9uIG1haWwgZnJvbSBhIHNtYWxsIHByb3ZpZGVyIHdpdGggYSAyMDQ4IGJpdCBrZXk="
                .to_string(),
        ),
        ("Authentication-Results", "mx.example.org; dkim=pass header.d=example.net; spf=pass".to_string()),
        ("From", format!("Writer {conn} <{sender}>")),
        ("To", format!("Help Desk <{HELPDESK}>")),
        ("Subject", format!("Tor Browser does not start after upgrade ({n})")),
        ("Date", "Sat, 21 Nov 2026 10:59:58 +0100".to_string()),
        ("Message-ID", format!("<{conn}.{n}.bench@example.net>")),
        ("MIME-Version", "1.0".to_string()),
        ("Content-Type", "text/plain; charset=UTF-8; format=flowed".to_string()),
        ("Content-Transfer-Encoding", "8bit".to_string()),
        ("Content-Language", "en-US".to_string()),
        ("User-Agent", "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Thunderbird/128.5.0".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let header_len: usize = headers.iter().map(|(k, v)| k.len() + v.len() + 4).sum();
    let line = "Hello, since the last upgrade Tor Browser does not start any more: the window opens \
                and closes at once. I tried to restart Tails twice.\r\n";
    let mut body = Vec::with_capacity(body_bytes);
    while body.len() + line.len() <= body_bytes.saturating_sub(header_len).max(line.len()) {
        body.extend_from_slice(line.as_bytes());
    }
    Message { headers, body }
}

fn assert_triaged(actions: &[Reply], last: &Reply) {
    assert_eq!(*last, Reply::Accept);
    assert!(
        actions.iter().any(|a| matches!(a, Reply::AddHeader { name, value }
            if name.as_bytes() == b"X-HelpDesk-Class" && value.as_bytes() == b"support")),
        "not triaged: {actions:?}"
    );
}

/// One transaction, as Postfix's smtpd drives it. Returns the EOM latency.
async fn transaction(conn: &mut MtaConn, id: usize, n: usize, msg: &Message) -> Duration {
    let qid = format!("Q{id:04X}{n:06X}");
    let sender = format!("writer{id}@example.net");
    conn.envelope_and_header(&qid, &sender, HELPDESK, &msg.headers).await;
    conn.body(&msg.body).await;
    let t = Instant::now();
    let (actions, last) = conn.eom(&qid).await;
    let elapsed = t.elapsed();
    assert_triaged(&actions, &last);
    elapsed
}

struct Throughput {
    transport: Transport,
    connections: usize,
    messages: usize,
    secs: f64,
    p50: Duration,
    p99: Duration,
    max: Duration,
    rss_peak_kib: u64,
    /// CPU time per message, of the daemon and of this load generator.
    daemon_cpu: Duration,
    client_cpu: Duration,
}

fn throughput(
    rt: &tokio::runtime::Runtime,
    transport: Transport,
    connections: usize,
    per_conn: usize,
    reuse: usize,
) -> Throughput {
    let daemon = Daemon::start(transport, connections.max(100));
    let daemon = std::sync::Arc::new(daemon);
    let run = |per_conn: usize| {
        let daemon = daemon.clone();
        rt.block_on(async move {
            let start = Instant::now();
            let tasks: Vec<_> = (0..connections)
                .map(|id| {
                    let daemon = daemon.clone();
                    tokio::spawn(async move {
                        let msg = message(id, 0, 4096);
                        let mut conn = daemon.connect(true).await;
                        let mut lat = Vec::with_capacity(per_conn);
                        for n in 0..per_conn {
                            if n > 0 && n % reuse == 0 {
                                conn.quit().await;
                                conn = daemon.connect(true).await;
                            }
                            lat.push(transaction(&mut conn, id, n, &msg).await);
                        }
                        conn.quit().await;
                        lat
                    })
                })
                .collect();
            let mut all = Vec::new();
            for t in tasks {
                all.extend(t.await.expect("connection task"));
            }
            (start.elapsed(), all)
        })
    };
    // Warm-up: the first message of each sender is answered (state, outbox); steady state is not.
    run(5.min(per_conn));
    let (d0, c0) = (daemon.cpu(), cpu_time("/proc/self/stat"));
    let (elapsed, mut lat) = run(per_conn);
    let n = lat.len().max(1) as u32;
    let (daemon_cpu, client_cpu) = ((daemon.cpu() - d0) / n, (cpu_time("/proc/self/stat") - c0) / n);
    lat.sort_unstable();
    let pct = |p: f64| lat[((lat.len() as f64 * p).ceil() as usize).saturating_sub(1).min(lat.len() - 1)];
    Throughput {
        transport,
        connections,
        messages: lat.len(),
        secs: elapsed.as_secs_f64(),
        p50: pct(0.50),
        p99: pct(0.99),
        max: *lat.last().expect("latencies"),
        rss_peak_kib: daemon.rss_kib().1,
        daemon_cpu,
        client_cpu,
    }
}

struct Memory {
    idle_kib: u64,
    held: usize,
    held_peak_kib: u64,
    big_mib: usize,
    before_big_kib: u64,
    big_skip_peak_kib: u64,
    big_noskip_peak_kib: u64,
}

/// Peak RSS with `hold` connections each stopped in the middle of a message, then with one
/// message of `big_mib` MiB, first as Postfix sends it (the daemon answers Skip once it has its
/// prefix), then with Skip not offered, so that every byte reaches the daemon.
fn memory(rt: &tokio::runtime::Runtime, transport: Transport, hold: usize, big_mib: usize) -> Memory {
    let daemon = std::sync::Arc::new(Daemon::start(transport, hold + 10));
    let idle_kib = daemon.rss_kib().1;
    let held_peak_kib = rt.block_on({
        let daemon = daemon.clone();
        async move {
            let msg = message(0, 0, 4096);
            let half = msg.body.len() / 2;
            let mut conns = Vec::with_capacity(hold);
            for id in 0..hold {
                let mut c = daemon.connect(true).await;
                let qid = format!("H{id:06X}");
                c.envelope_and_header(&qid, &format!("writer{id}@example.net"), HELPDESK, &msg.headers).await;
                c.body(&msg.body[..half]).await;
                conns.push((qid, c));
            }
            // Every connection is open and mid-message: this is the peak.
            tokio::time::sleep(Duration::from_millis(200)).await;
            let peak = daemon.rss_kib().1;
            for (qid, mut c) in conns {
                c.body(&msg.body[half..]).await;
                let (actions, last) = c.eom(&qid).await;
                assert_triaged(&actions, &last);
                c.quit().await;
            }
            peak
        }
    });
    // A fresh daemon for the large message, warmed up with ordinary traffic first, so that the
    // difference is what the large message costs.
    drop(daemon);
    let daemon = Daemon::start(transport, 100);
    let (before_big_kib, big_skip_peak_kib, big_noskip_peak_kib) = rt.block_on(async {
        let msg = message(1, 0, 4096);
        let mut c = daemon.connect(true).await;
        for n in 0..200 {
            transaction(&mut c, 1, n, &msg).await;
        }
        let before = daemon.rss_kib().1;
        let mut big = message(2, 0, 4096);
        big.body = big.body.repeat(big_mib * MIB / big.body.len() + 1);
        big.body.truncate(big_mib * MIB);
        let skip_peak = {
            let mut c = daemon.connect(true).await;
            transaction(&mut c, 2, 0, &big).await;
            daemon.rss_kib().1
        };
        let noskip_peak = {
            let mut c = daemon.connect(false).await;
            transaction(&mut c, 2, 0, &big).await;
            daemon.rss_kib().1
        };
        (before, skip_peak, noskip_peak)
    });
    Memory {
        idle_kib,
        held: hold,
        held_peak_kib,
        big_mib,
        before_big_kib,
        big_skip_peak_kib,
        big_noskip_peak_kib,
    }
}

fn main() {
    let args = parse_args();
    // The client gets one thread: the daemon, on the other core, is what is measured.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let mut tsv = String::new();
    let mut out = String::new();
    if args.what.iter().any(|w| w == "throughput") {
        out.push_str(
            "\nmilter protocol load (4 KiB messages, 15 header fields, no Postfix)\n\
             transport  conns  messages    msg/s   EOM p50   EOM p99   EOM max  peak RSS  CPU/msg: daemon  client\n",
        );
        for &t in &args.transports {
            let r = throughput(&rt, t, args.connections, args.messages / args.connections.max(1), args.reuse);
            let rate = r.messages as f64 / r.secs;
            let name = format!("{:?}", r.transport).to_lowercase();
            let _ = writeln!(
                out,
                "{name:<9} {:>6} {:>9} {:>8.0} {:>7.3}ms {:>7.3}ms {:>7.3}ms  {:>4.1} MiB  {:>9.1}µs {:>5.1}µs",
                r.connections,
                r.messages,
                rate,
                ms(r.p50),
                ms(r.p99),
                ms(r.max),
                r.rss_peak_kib as f64 / 1024.0,
                r.daemon_cpu.as_secs_f64() * 1e6,
                r.client_cpu.as_secs_f64() * 1e6,
            );
            let _ = writeln!(tsv, "load-{name}\tmsg_per_s\t{rate:.0}");
            let _ = writeln!(tsv, "load-{name}\teom_p50_ms\t{:.3}", ms(r.p50));
            let _ = writeln!(tsv, "load-{name}\teom_p99_ms\t{:.3}", ms(r.p99));
            let _ = writeln!(tsv, "load-{name}\teom_max_ms\t{:.3}", ms(r.max));
            let _ = writeln!(tsv, "load-{name}\tconnections\t{}", r.connections);
            let _ = writeln!(tsv, "load-{name}\tdaemon_cpu_us\t{:.1}", r.daemon_cpu.as_secs_f64() * 1e6);
        }
    }
    if args.what.iter().any(|w| w == "memory") {
        let t = args.transports[0];
        let m = memory(&rt, t, args.hold, args.big_mib);
        let mib = |k: u64| k as f64 / 1024.0;
        let _ = writeln!(
            out,
            "\ndaemon memory (peak RSS, {:?})\n\
             idle after start                              {:>7.1} MiB\n\
             {} connections, each in the middle of a message {:>7.1} MiB\n\
             after 200 messages, before a large one        {:>7.1} MiB\n\
             + one {} MiB message (Skip offered, as Postfix does)  {:>7.1} MiB  (+{:.2} MiB)\n\
             + the same, Skip not offered (all bytes read)  {:>7.1} MiB  (+{:.2} MiB)",
            t,
            mib(m.idle_kib),
            m.held,
            mib(m.held_peak_kib),
            mib(m.before_big_kib),
            m.big_mib,
            mib(m.big_skip_peak_kib),
            mib(m.big_skip_peak_kib.saturating_sub(m.before_big_kib)),
            mib(m.big_noskip_peak_kib),
            mib(m.big_noskip_peak_kib.saturating_sub(m.before_big_kib)),
        );
        let _ = writeln!(tsv, "memory\tidle_mib\t{:.1}", mib(m.idle_kib));
        let _ = writeln!(tsv, "memory\tpeak_{}_conns_mib\t{:.1}", m.held, mib(m.held_peak_kib));
        let _ = writeln!(
            tsv,
            "memory\tbig_{}mib_added_mib\t{:.2}",
            m.big_mib,
            mib(m.big_noskip_peak_kib.saturating_sub(m.before_big_kib))
        );
    }
    println!("{out}");
    write_results(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/target/bench-results")), &tsv);
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn write_results(dir: &Path, tsv: &str) {
    if std::fs::create_dir_all(dir).is_ok() {
        let _ = std::fs::write(dir.join("milter_load.tsv"), tsv);
    }
}

//! Faults on Postfix's side (issue 6, requirement 3): Postfix restarts and killed smtpd
//! processes while milter connections are open, clients that vanish in the middle of a message
//! (over SMTP and at the milter protocol level), a daemon that stops answering (Postfix's milter
//! timeouts and milter_default_action), and connections that say nothing at the connection cap.
//! Each asserts what is delivered, what is replied, and that the daemon serves the next message
//! with no connection left behind. Needs root and Postfix.

#[path = "support/daemon.rs"]
mod daemon;
#[path = "support/load.rs"]
mod load;
#[path = "support/mta.rs"]
mod mta;
#[path = "support/postfix.rs"]
mod postfix;

use daemon::Daemon;
use daemon::fd_count;
use indymilter::ProtoOpts;
use indymilter::message::reply::Reply;
use load::{HELPDESK, Kind, Smtp, wait_fds_at_most};
use postfix::{PostfixRig, RigOptions, SinkMessage, free_port};
use std::io::Read;
use std::time::{Duration, Instant};

/// Generous: only guards against hangs on a loaded machine.
const PATIENCE: Duration = Duration::from_secs(60);

fn is_reply(m: &SinkMessage) -> bool {
    m.header("Auto-Submitted") == vec!["auto-replied"]
}

/// A rig with the daemon as milter (`extra_main_cf` added to its main.cf) and the daemon's
/// replies going to the rig's milter-free smtpd, hence to the same sink.
fn rig_and_daemon(default_action: &str, main_cf: &[(&str, &str)], milter: &str) -> (PostfixRig, Daemon) {
    let milter_port = free_port();
    let rig = PostfixRig::start(RigOptions {
        milter: Some(format!("inet:127.0.0.1:{milter_port}")),
        default_action: default_action.into(),
        extra_main_cf: main_cf.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
    });
    let daemon = Daemon::start_on_with_milter(
        milter_port,
        milter,
        &format!(
            "[autoreply]\nrelay = \"smtp://127.0.0.1:{}\"\nretry_interval = \"1s\"",
            rig.reinject_port()
        ),
    );
    (rig, daemon)
}

/// Sends a new request from `sender` with Message-ID `<id>` and waits until it is at the sink.
fn request(rig: &PostfixRig, id: &str, sender: &str) -> SinkMessage {
    let (envelope, message) = load::message(Kind::Support, id, sender);
    rig.send(Some(&envelope), &[HELPDESK], &message).expect("Postfix accepts the request");
    wait_for(rig, |m| m.header("Message-ID") == vec![format!("<{id}>")])
}

/// Waits until a message matching `want` is at the sink and returns it.
fn wait_for(rig: &PostfixRig, want: impl Fn(&SinkMessage) -> bool) -> SinkMessage {
    let t0 = Instant::now();
    loop {
        if let Some(m) = rig.messages().into_iter().find(&want) {
            return m;
        }
        assert!(t0.elapsed() < PATIENCE, "not at the sink; maillog:\n{}", rig.maillog());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The replies at the sink, by recipient (without the angle brackets).
fn replies_to(rig: &PostfixRig, rcpt: &str) -> usize {
    let rcpt = format!("<{rcpt}>");
    rig.messages().iter().filter(|m| is_reply(m) && m.rcpts().contains(&rcpt)).count()
}

/// Waits for the one reply to `rcpt`, then a little more for a second one that must not come.
fn assert_one_reply(rig: &PostfixRig, rcpt: &str) {
    wait_for(rig, |m| is_reply(m) && m.rcpts() == vec![format!("<{rcpt}>")]);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(replies_to(rig, rcpt), 1, "exactly one reply to {rcpt}");
}

/// One message end to end, then the daemon's open files once it is idle again.
fn warm_up(rig: &PostfixRig, daemon: &Daemon) -> usize {
    let m = request(rig, "warm-up@client.example", "warm@up.example");
    assert_eq!(m.header("X-HelpDesk-Class"), vec!["support"]);
    assert_one_reply(rig, "warm@up.example");
    let fds = fd_count(daemon.pid());
    std::thread::sleep(Duration::from_millis(500));
    fd_count(daemon.pid()).min(fds)
}

/// Opens `n` SMTP sessions, each stopped in the middle of DATA of a new request from
/// `aborted{i}@example.org`, and waits until the daemon holds a milter connection for each.
fn sessions_in_the_middle_of_data(rig: &PostfixRig, daemon: &Daemon, idle: usize, n: usize) -> Vec<Smtp> {
    let sessions: Vec<Smtp> = (0..n)
        .map(|i| {
            let mut s = Smtp::connect(rig.smtpd_port()).expect("connect");
            let sender = format!("aborted{i}@example.org");
            let (_, message) = load::message(Kind::Support, &format!("aborted.{i}@client.example"), &sender);
            s.begin(&sender, HELPDESK).expect("MAIL, RCPT, DATA");
            s.write_data(&message[..message.len() / 2]).expect("half the message");
            s
        })
        .collect();
    let t0 = Instant::now();
    while fd_count(daemon.pid()) < idle + n {
        assert!(t0.elapsed() < PATIENCE, "{n} milter connections never opened: {}", fd_count(daemon.pid()));
        std::thread::sleep(Duration::from_millis(50));
    }
    sessions
}

/// The connections of the sessions Postfix dropped are freed, none of their messages was
/// delivered or answered, and the next requests, including one from a sender whose message was
/// cut, are triaged and answered once.
fn assert_recovered(rig: &PostfixRig, daemon: &Daemon, idle: usize, n: usize, round: &str) {
    let left = wait_fds_at_most(daemon.pid(), idle, PATIENCE);
    assert_eq!(left, idle, "{round}: the daemon freed the milter connections of the dead sessions");
    let m = request(rig, &format!("{round}.next@client.example"), &format!("{round}@example.org"));
    assert_eq!(m.header("X-HelpDesk-Class"), vec!["support"], "{round}: triaged");
    assert_eq!(m.header("X-HelpDesk-Autoreply"), vec!["queued"]);
    assert_one_reply(rig, &format!("{round}@example.org"));
    // A cut message leaves nothing behind: its sender is still a new requester.
    let m = request(rig, &format!("{round}.again@client.example"), "aborted0@example.org");
    assert_eq!(m.header("X-HelpDesk-Autoreply"), vec!["queued"], "{round}");
    assert_one_reply(rig, "aborted0@example.org");
    for i in 1..n {
        assert_eq!(
            replies_to(rig, &format!("aborted{i}@example.org")),
            0,
            "{round}: no reply to a cut message"
        );
    }
    assert_nothing_cut_delivered(rig, round);
}

fn assert_nothing_cut_delivered(rig: &PostfixRig, round: &str) {
    let cut = rig
        .messages()
        .iter()
        .filter(|m| m.header("Message-ID").first().is_some_and(|id| id.starts_with("<aborted.")))
        .count();
    assert_eq!(cut, 0, "{round}: a message Postfix never accepted is not delivered");
}

#[test]
fn postfix_stopped_restarted_or_its_smtpd_killed_with_sessions_open() {
    let (rig, daemon) = rig_and_daemon("tempfail", &[], "");
    let idle = warm_up(&rig, &daemon);

    // `postfix stop` ends the smtpd processes in the middle of their sessions; then start again.
    let open = sessions_in_the_middle_of_data(&rig, &daemon, idle, 8);
    rig.run_postfix(&["stop"]).expect("postfix stop");
    drop(open);
    rig.run_postfix(&["start"]).expect("postfix start");
    assert_recovered(&rig, &daemon, idle, 8, "restart");

    // The smtpd processes die at once (SIGKILL): no QUIT, no ABORT, the sockets just close.
    let open = sessions_in_the_middle_of_data(&rig, &daemon, idle, 8);
    let pids = rig.smtpd_pids();
    assert!(!pids.is_empty());
    for pid in pids {
        let _ = std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status();
    }
    drop(open);
    // Not assert_recovered: aborted0 got its reply in the first round.
    let left = wait_fds_at_most(daemon.pid(), idle, PATIENCE);
    assert_eq!(left, idle, "the daemon freed the milter connections of the killed smtpd");
    let m = request(&rig, "kill.next@client.example", "kill@example.org");
    assert_eq!(m.header("X-HelpDesk-Autoreply"), vec!["queued"]);
    assert_one_reply(&rig, "kill@example.org");
    for i in 1..8 {
        assert_eq!(replies_to(&rig, &format!("aborted{i}@example.org")), 0, "no reply to a cut message");
    }
    assert_nothing_cut_delivered(&rig, "kill");
}

#[test]
fn a_client_that_drops_in_the_middle_of_data_leaves_nothing_behind() {
    let (rig, daemon) = rig_and_daemon("tempfail", &[], "");
    let idle = warm_up(&rig, &daemon);
    // Each client vanishes after half its message: Postfix aborts the transaction.
    let open = sessions_in_the_middle_of_data(&rig, &daemon, idle, 20);
    drop(open);
    assert_recovered(&rig, &daemon, idle, 20, "dropped");
}

#[test]
fn a_milter_client_that_disconnects_in_the_middle_of_a_message() {
    let daemon = Daemon::start_on(free_port(), "[autoreply]\nrelay = \"smtp://127.0.0.1:9\"");
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let addr = ("127.0.0.1", daemon.port);
    let headers = |sender: &str| {
        [("From", sender), ("To", HELPDESK), ("Subject", "help"), ("Message-ID", "<cut@client.example>")]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
    };
    // Settle the readiness probe's connection first.
    std::thread::sleep(Duration::from_millis(500));
    let idle = fd_count(daemon.pid());
    rt.block_on(async {
        // Cut at every stage: after the envelope, after the header, in the body.
        for (i, stage) in ["envelope", "header", "body"].into_iter().enumerate() {
            let mut c = mta::MtaConn::tcp(addr, ProtoOpts::all()).await;
            let sender = format!("cut{i}@example.org");
            c.envelope_and_header(
                &format!("Q{i}"),
                &sender,
                HELPDESK,
                &if stage == "envelope" { Vec::new() } else { headers(&sender).to_vec() },
            )
            .await;
            if stage == "body" {
                c.body(b"half a body").await;
            }
            drop(c);
        }
    });
    assert_eq!(wait_fds_at_most(daemon.pid(), idle, PATIENCE), idle, "every cut connection freed");
    // The daemon serves the next connection, and the cut messages reserved nothing: a full
    // message from the same sender is a new request.
    let (actions, last) = rt.block_on(async {
        let mut c = mta::MtaConn::tcp(addr, ProtoOpts::all()).await;
        c.envelope_and_header("Q9", "cut2@example.org", HELPDESK, &headers("cut2@example.org")).await;
        c.body(b"a whole body").await;
        let r = c.eom("Q9").await;
        c.quit().await;
        r
    });
    assert!(matches!(last, Reply::Accept), "{last:?}");
    let added: Vec<String> = actions
        .iter()
        .filter_map(|a| match a {
            Reply::AddHeader { name, value } => {
                Some(format!("{}: {}", name.to_string_lossy(), value.to_string_lossy()))
            }
            _ => None,
        })
        .collect();
    assert!(added.contains(&"X-HelpDesk-Autoreply: queued".to_owned()), "{added:?}");
    daemon.wait_log("reply queued", 1);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(daemon.log().matches("reply queued").count(), 1, "only the whole message is answered");
    assert!(!daemon.log().contains("panicked"), "{}", daemon.log());
}

/// Postfix's milter timeouts, short, so that a stopped daemon is given up on quickly.
const SHORT_MILTER_TIMEOUTS: [(&str, &str); 3] =
    [("milter_connect_timeout", "2s"), ("milter_command_timeout", "2s"), ("milter_content_timeout", "2s")];

#[test]
fn a_stopped_daemon_times_out_and_accept_delivers_untriaged() {
    let (rig, daemon) = rig_and_daemon("accept", &SHORT_MILTER_TIMEOUTS, "");
    let idle = warm_up(&rig, &daemon);
    daemon.signal("STOP");
    let m = request(&rig, "while-stopped@client.example", "stopped@example.org");
    assert!(m.header("X-HelpDesk-Class").is_empty(), "delivered untriaged: {:?}", m.headers());
    assert!(rig.maillog().contains("milter"), "{}", rig.maillog());
    daemon.signal("CONT");
    // The daemon then finds the connection Postfix gave up on, and serves the next message.
    let m = request(&rig, "after@client.example", "after@example.org");
    assert_eq!(m.header("X-HelpDesk-Class"), vec!["support"]);
    assert_one_reply(&rig, "after@example.org");
    assert_eq!(replies_to(&rig, "stopped@example.org"), 0, "the untriaged message is not answered");
    assert_eq!(wait_fds_at_most(daemon.pid(), idle, PATIENCE), idle, "no connection left behind");
}

#[test]
fn a_stopped_daemon_times_out_and_tempfail_defers_until_it_is_back() {
    let (server, daemon) = rig_and_daemon("tempfail", &SHORT_MILTER_TIMEOUTS, "");
    let idle = warm_up(&server, &daemon);
    // The sending side is a second Postfix that queues the message and retries every second or
    // so, as the Internet's servers do (more slowly) after a 4xx.
    let relayhost = format!("[127.0.0.1]:{}", server.smtpd_port());
    let client = PostfixRig::start(RigOptions {
        milter: None,
        default_action: "tempfail".into(),
        extra_main_cf: [
            ("relayhost", relayhost.as_str()),
            ("queue_run_delay", "1s"),
            ("minimal_backoff_time", "1s"),
            ("maximal_backoff_time", "2s"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .into(),
    });
    daemon.signal("STOP");
    let (envelope, message) = load::message(Kind::Support, "deferred@client.example", "deferred@example.org");
    client.send(Some(&envelope), &[HELPDESK], &message).expect("the sending server queues it");
    let t0 = Instant::now();
    while !client.maillog().contains("status=deferred") {
        assert!(t0.elapsed() < PATIENCE, "never deferred:\n{}", client.maillog());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(server.messages().iter().all(|m| m.header("Message-ID") != vec!["<deferred@client.example>"]));
    daemon.signal("CONT");
    // Retried, then delivered triaged, once, and answered once.
    let m = wait_for(&server, |m| m.header("Message-ID") == vec!["<deferred@client.example>"]);
    assert_eq!(m.header("X-HelpDesk-Class"), vec!["support"]);
    assert_eq!(m.header("X-HelpDesk-Autoreply"), vec!["queued"]);
    assert_one_reply(&server, "deferred@example.org");
    let copies = server
        .messages()
        .iter()
        .filter(|m| m.header("Message-ID") == vec!["<deferred@client.example>"])
        .count();
    assert_eq!(copies, 1, "delivered once");
    assert_eq!(wait_fds_at_most(daemon.pid(), idle, PATIENCE), idle, "no connection left behind");
}

#[test]
fn connections_that_say_nothing_do_not_hold_the_connection_cap() {
    // Postfix's own milter timeouts are left at their defaults (30 s and more): the message must
    // get through because the daemon closes the silent connections, not because Postfix gave up.
    let (rig, daemon) = rig_and_daemon("tempfail", &[], "max_connections = 3\nidle_timeout = \"2s\"");
    let idle = warm_up(&rig, &daemon);
    let mut silent: Vec<std::net::TcpStream> =
        (0..3).map(|_| std::net::TcpStream::connect(("127.0.0.1", daemon.port)).unwrap()).collect();
    let m = request(&rig, "at-the-cap@client.example", "cap@example.org");
    assert_eq!(m.header("X-HelpDesk-Class"), vec!["support"], "triaged, not passed by default action");
    assert_one_reply(&rig, "cap@example.org");
    for s in &mut silent {
        s.set_read_timeout(Some(PATIENCE)).unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(s.read(&mut buf).unwrap_or(0), 0, "the daemon closed the silent connection");
    }
    drop(silent);
    assert_eq!(wait_fds_at_most(daemon.pid(), idle, PATIENCE), idle);
}

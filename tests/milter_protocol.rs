//! The milter at the protocol level, driven by indymilter-test as Postfix would drive it.

use helpdesk_milter::config::Config;
use helpdesk_milter::listener::MilterListener;
use helpdesk_milter::live::{Live, ReplyJob};
use helpdesk_milter::milter;
use helpdesk_milter::reply_file::ReplyFile;
use helpdesk_milter::state::ReplyState;
use indymilter::{Actions, MacroStage, ProtoOpts};
use indymilter_test::{EomAction, Status, TestConnection};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

#[path = "support/mta.rs"]
mod mta;
use mta::MtaConn;

const NOREPLY_ALL: ProtoOpts = ProtoOpts::NOREPLY_CONNECT
    .union(ProtoOpts::NOREPLY_HELO)
    .union(ProtoOpts::NOREPLY_MAIL)
    .union(ProtoOpts::NOREPLY_RCPT)
    .union(ProtoOpts::NOREPLY_DATA)
    .union(ProtoOpts::NOREPLY_HEADER)
    .union(ProtoOpts::NOREPLY_EOH)
    .union(ProtoOpts::NOREPLY_BODY)
    .union(ProtoOpts::NOREPLY_UNKNOWN);

struct Milter {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
    /// The replies the milter decided to send.
    jobs: mpsc::UnboundedReceiver<ReplyJob>,
}

impl Milter {
    async fn start(config_text: &str) -> Milter {
        let config = Config::parse(Path::new("/test/helpdesk-milter.toml"), config_text).unwrap();
        let reply_file =
            ReplyFile::load(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/reply.toml")));
        let (jobs_tx, jobs) = mpsc::unbounded_channel();
        let live = Live::new(
            config,
            Some(reply_file.unwrap()),
            Arc::new(ReplyState::in_memory()),
            Some(jobs_tx),
            None,
        );
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (stop, rx) = oneshot::channel();
        let task = tokio::spawn(milter::serve(MilterListener::from_tcp(l), live, rx));
        Milter { addr, stop, task, jobs }
    }

    /// The replies queued so far.
    fn replies(&mut self) -> Vec<ReplyJob> {
        let mut out = Vec::new();
        while let Ok(j) = self.jobs.try_recv() {
            out.push(j);
        }
        out
    }

    /// A test connection that does not offer the NOREPLY_* options: indymilter-test flushes
    /// every command on its own, so an unanswered one would wait for our delayed ACK (40 ms),
    /// which Postfix, which buffers them, never does (see `postfix_like` for that path).
    async fn connect(&self) -> TestConnection {
        TestConnection::configure()
            .read_timeout(Duration::from_secs(10))
            .available_opts(ProtoOpts::all() - NOREPLY_ALL)
            .open_tcp(self.addr)
            .await
            .unwrap()
    }

    /// A connection that drives the milter as Postfix does, offering every option.
    async fn postfix_like(&self) -> MtaConn {
        MtaConn::tcp(self.addr, ProtoOpts::all()).await
    }

    async fn stop(self) {
        self.stop.send(()).unwrap();
        self.task.await.unwrap().unwrap();
    }
}

/// Sends one message as Postfix does and returns the end-of-message actions and status.
async fn transaction(
    conn: &mut TestConnection,
    sender: &str,
    rcpts: &[&str],
    headers: &[(&str, &str)],
    body: &[u8],
) -> (Vec<EomAction>, Status) {
    // Postfix sends the queue ID among the macros before end of message.
    conn.macros(MacroStage::Eom, [("i", "4XQID1")]).await.unwrap();
    transaction_no_macros(conn, sender, rcpts, headers, body).await
}

/// The commands alone; a macro command (which has no reply) before a command would make the
/// test client's Nagle wait for our delayed ACK.
async fn transaction_no_macros(
    conn: &mut TestConnection,
    sender: &str,
    rcpts: &[&str],
    headers: &[(&str, &str)],
    body: &[u8],
) -> (Vec<EomAction>, Status) {
    // Stages the MTA agreed to send without awaiting an answer get none.
    let proceed = |conn: &TestConnection, stage: ProtoOpts| {
        if conn.negotiated_opts().contains(stage) { Status::Noreply } else { Status::Continue }
    };
    assert_eq!(conn.mail([sender]).await.unwrap(), proceed(conn, ProtoOpts::NOREPLY_MAIL));
    for r in rcpts {
        assert_eq!(conn.rcpt([*r]).await.unwrap(), proceed(conn, ProtoOpts::NOREPLY_RCPT));
    }
    let data = conn.data().await.unwrap();
    if data == Status::Accept {
        // Not for the Help Desk: accepted at DATA, and the MTA sends nothing more of it.
        return (Vec::new(), Status::Accept);
    }
    assert_eq!(data, Status::Continue);
    for (n, v) in headers {
        assert_eq!(conn.header(*n, *v).await.unwrap(), proceed(conn, ProtoOpts::NOREPLY_HEADER));
    }
    assert_eq!(conn.eoh().await.unwrap(), proceed(conn, ProtoOpts::NOREPLY_EOH));
    let mut skipped = false;
    for chunk in body.chunks(65535) {
        if skipped {
            break;
        }
        match conn.body(chunk.to_vec()).await.unwrap() {
            Status::Continue => {}
            Status::Skip => skipped = true,
            s => panic!("unexpected body status {s:?}"),
        }
    }
    let (actions, status) = conn.eom().await.unwrap();
    (actions.actions, status)
}

fn add(name: &str, value: &str) -> EomAction {
    EomAction::AddHeader {
        name: std::ffi::CString::new(name).unwrap(),
        value: std::ffi::CString::new(value).unwrap(),
    }
}

fn delete(name: &str, index: i32) -> EomAction {
    EomAction::DeleteHeader { name: std::ffi::CString::new(name).unwrap(), index }
}

#[tokio::test]
async fn negotiates_only_what_it_uses() {
    let m = Milter::start("").await;
    let conn = m.connect().await;
    assert_eq!(conn.negotiated_actions(), Actions::ADD_HEADER | Actions::CHANGE_HEADER);
    let opts = conn.negotiated_opts();
    assert!(opts.contains(ProtoOpts::SKIP));
    // Stages it does not need are switched off, so the MTA does not send them.
    assert!(opts.contains(ProtoOpts::NO_CONNECT | ProtoOpts::NO_HELO | ProtoOpts::NO_UNKNOWN));
    // The DATA stage is answered (the loopback stall fix) and so are headers and body.
    assert!(
        !opts.intersects(ProtoOpts::NO_DATA | ProtoOpts::NO_HEADER | ProtoOpts::NO_BODY | ProtoOpts::NO_RCPT)
    );
    assert_eq!(conn.requested_macros().get(&MacroStage::Eom).map(|c| c.to_str().unwrap()), Some("i"));
    // The SASL login, at MAIL FROM: the trust signal of team mail.
    assert_eq!(
        conn.requested_macros().get(&MacroStage::Mail).map(|c| c.to_str().unwrap()),
        Some("{auth_authen}")
    );
    // Not offered, not taken.
    assert!(!opts.intersects(NOREPLY_ALL));
    conn.close().await.unwrap();
    // Offered (as Postfix does): the stages that always continue go unanswered, so that Postfix
    // sends MAIL, RCPT and the header without a round trip each; body chunks are still answered
    // (Skip), and DATA too (the loopback stall fix).
    let all = TestConnection::configure().open_tcp(m.addr).await.unwrap();
    let opts = all.negotiated_opts();
    let noreply = ProtoOpts::NOREPLY_MAIL
        | ProtoOpts::NOREPLY_RCPT
        | ProtoOpts::NOREPLY_HEADER
        | ProtoOpts::NOREPLY_EOH;
    assert_eq!(opts & NOREPLY_ALL, noreply);
    all.close().await.unwrap();
    m.stop().await;
}

#[tokio::test]
async fn support_request_gets_the_triage_headers() {
    let mut m = Milter::start("").await;
    let mut conn = m.connect().await;
    let headers = [
        ("From", "Alice <alice@example.org>"),
        ("To", "support@tails.net"),
        ("Subject", "=?utf-8?q?Tails_ne_d=C3=A9marre_pas?= [FT]"),
        ("Message-ID", "<1@example.org>"),
    ];
    let (actions, status) =
        transaction(&mut conn, "<alice@example.org>", &["<support@tails.net>"], &headers, b"Hello\r\n").await;
    assert_eq!(status, Status::Accept);
    assert_eq!(
        actions,
        vec![
            add("X-HelpDesk-Class", "support"),
            add("X-HelpDesk-Priority", "normal"),
            add("X-HelpDesk-Encrypted", "no"),
            add("X-HelpDesk-Tags", "FT"),
            add("X-HelpDesk-Autoreply", "queued"),
        ]
    );
    let replies = m.replies();
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0].request.recipient, "alice@example.org");
    assert_eq!(replies[0].request.message_id.as_deref(), Some("1@example.org"));
    conn.close().await.unwrap();
    m.stop().await;
}

#[tokio::test]
async fn forged_headers_are_deleted_then_ours_added() {
    let m = Milter::start("").await;
    let mut conn = m.connect().await;
    let headers = [
        ("X-HelpDesk-Class", "team"),
        ("From", "mallory@example.org"),
        ("x-helpdesk-priority", "high"),
        ("X-HELPDESK-CLASS", "team"),
        ("X-HelpDesk-Autoreply", "queued"),
    ];
    let (actions, _) =
        transaction(&mut conn, "<mallory@example.org>", &["<support@tails.net>"], &headers, b"x\r\n").await;
    assert_eq!(
        actions,
        vec![
            delete("X-HelpDesk-Class", 2),
            delete("X-HelpDesk-Class", 1),
            delete("x-helpdesk-priority", 1),
            delete("X-HelpDesk-Autoreply", 1),
            add("X-HelpDesk-Class", "support"),
            add("X-HelpDesk-Priority", "normal"),
            add("X-HelpDesk-Encrypted", "no"),
            add("X-HelpDesk-Autoreply", "suppressed (not-addressed)"),
        ]
    );
    m.stop().await;
}

#[tokio::test]
async fn mail_for_others_is_untouched_even_with_forged_headers() {
    let m = Milter::start("").await;
    let mut conn = m.connect().await;
    let headers = [("X-HelpDesk-Class", "team"), ("From", "a@example.org")];
    let (actions, status) =
        transaction(&mut conn, "<a@example.org>", &["<bob@example.org>"], &headers, b"x\r\n").await;
    assert_eq!(status, Status::Accept);
    assert!(actions.is_empty(), "{actions:?}");
    m.stop().await;
}

/// Once the recipients show that a message is not for the Help Desk, the milter says so at DATA:
/// the MTA then sends nothing more of it (issue 16, point 2). Mail with a Help Desk address among
/// its recipients goes on as before.
#[tokio::test]
async fn mail_for_others_is_accepted_at_data() {
    let m = Milter::start("").await;
    let mut conn = m.connect().await;
    let proceed = |conn: &TestConnection, stage: ProtoOpts| {
        if conn.negotiated_opts().contains(stage) { Status::Noreply } else { Status::Continue }
    };
    for (rcpts, at_data) in [
        (&["<bob@example.org>", "<carol@example.net>"][..], Status::Accept),
        (&["<bob@example.org>", "<Support@Tails.net>"][..], Status::Continue),
    ] {
        assert_eq!(conn.mail(["<a@example.org>"]).await.unwrap(), proceed(&conn, ProtoOpts::NOREPLY_MAIL));
        for r in rcpts {
            assert_eq!(conn.rcpt([*r]).await.unwrap(), proceed(&conn, ProtoOpts::NOREPLY_RCPT));
        }
        assert_eq!(conn.data().await.unwrap(), at_data, "{rcpts:?}");
        if at_data == Status::Continue {
            conn.abort().await.unwrap();
        }
    }
    m.stop().await;
}

#[tokio::test]
async fn whisperback_report_over_the_protocol() {
    let mut m = Milter::start("").await;
    let mut conn = m.connect().await;
    let raw = include_bytes!("data/whisperback-sample.eml");
    let split = raw.windows(2).position(|w| w == b"\n\n").unwrap();
    let mut headers = Vec::new();
    for line in std::str::from_utf8(&raw[..split]).unwrap().lines() {
        let (n, v) = line.split_once(": ").unwrap();
        headers.push((n, v));
    }
    let body = raw[split + 2..].to_vec();
    let (actions, _) =
        transaction(&mut conn, "<devnull@tails.boum.org>", &["<support@tails.net>"], &headers, &body).await;
    assert_eq!(
        actions,
        vec![
            add("X-HelpDesk-Class", "whisperback"),
            add("X-HelpDesk-Priority", "normal"),
            add("X-HelpDesk-Report-Id", "wb:4ffd523ac6b83288ba219a6a55f4971b"),
            add("X-HelpDesk-Encrypted", "yes"),
            add("X-HelpDesk-Autoreply", "suppressed (class)"),
            // WhisperBack sends none: replies to the report name it by this one.
            add("Message-ID", "<whisperback.4ffd523ac6b83288ba219a6a55f4971b@tails.net>"),
        ]
    );
    assert!(m.replies().is_empty(), "never a reply to WhisperBack");
    m.stop().await;
}

/// Issue 13, point 4: with a login on this host ({auth_authen}), a reply to a report sent to
/// `support+TOPIC@` files it under the topic; without one, the same message is an ordinary one.
#[tokio::test]
async fn a_logged_in_member_tags_a_report_by_mail() {
    let m = Milter::start("").await;
    let mut conn = m.connect().await;
    let reference = "<whisperback.4ffd523ac6b83288ba219a6a55f4971b@tails.net>";
    let headers = [
        ("From", "Member <member@tails.net>"),
        ("To", "support+wifi-realtek@tails.net"),
        ("Subject", "..."),
        ("In-Reply-To", reference),
        ("References", reference),
    ];
    let rcpt = ["<support+wifi-realtek@tails.net>"];
    let (untrusted, _) = transaction(&mut conn, "<member@tails.net>", &rcpt, &headers, b"x").await;
    assert!(
        !untrusted.iter().any(
            |a| matches!(a, EomAction::AddHeader { name, .. } if name.to_str() == Ok("X-HelpDesk-Tagged"))
        )
    );
    conn.macros(MacroStage::Mail, [("{auth_authen}", "member")]).await.unwrap();
    let (tagged, _) = transaction(&mut conn, "<member@tails.net>", &rcpt, &headers, b"x").await;
    assert!(
        tagged.contains(&add("X-HelpDesk-Tagged", "wb:4ffd523ac6b83288ba219a6a55f4971b wifi-realtek")),
        "{tagged:?}"
    );
    assert!(tagged.contains(&add("X-HelpDesk-Autoreply", "suppressed (tag)")), "{tagged:?}");
    conn.close().await.unwrap();
    m.stop().await;
}

#[tokio::test]
async fn large_body_is_skipped_after_the_limit() {
    let m = Milter::start("[milter]\nmax_body_bytes = 1000").await;
    let mut conn = m.connect().await;
    conn.mail(["<a@example.org>"]).await.unwrap();
    conn.rcpt(["<support@tails.net>"]).await.unwrap();
    conn.data().await.unwrap();
    conn.header("Subject", "big").await.unwrap();
    conn.eoh().await.unwrap();
    assert_eq!(conn.body(vec![b'a'; 600]).await.unwrap(), Status::Continue);
    assert_eq!(conn.body(vec![b'a'; 600]).await.unwrap(), Status::Skip);
    let (actions, status) = conn.eom().await.unwrap();
    assert_eq!(status, Status::Accept);
    assert!(actions.has_add_header("X-HelpDesk-Class", "support"));
    m.stop().await;
}

#[tokio::test]
async fn state_does_not_leak_between_messages_of_one_connection() {
    let m = Milter::start("").await;
    let mut conn = m.connect().await;
    // First message aborted after headers that would make it a follow-up from a team member.
    conn.mail(["<bob@tails.net>"]).await.unwrap();
    conn.rcpt(["<support@tails.net>"]).await.unwrap();
    conn.data().await.unwrap();
    conn.header("In-Reply-To", "<x@y>").await.unwrap();
    conn.abort().await.unwrap();
    let (actions, _) =
        transaction(&mut conn, "<alice@example.org>", &["<support@tails.net>"], &[("Subject", "hi")], b"x")
            .await;
    assert_eq!(actions[0], add("X-HelpDesk-Class", "support"));
    let (actions, _) =
        transaction(&mut conn, "<>", &["<support@tails.net>"], &[("Subject", "hi")], b"x").await;
    assert_eq!(actions[0], add("X-HelpDesk-Class", "automated"));
    m.stop().await;
}

#[tokio::test]
async fn hostile_flood_of_forged_names_is_rejected_whatever_on_error_says() {
    // 1 KiB of headers kept: room for 16 KiB of distinct forged names. Past that the forged
    // fields cannot all be removed, and passing them on would hand the Help Desk's filters a
    // forged class: the message is refused, under either on_error policy.
    for policy in ["accept", "tempfail"] {
        let m = Milter::start(&format!("[milter]\nmax_header_bytes = 1024\non_error = \"{policy}\"")).await;
        let mut conn = m.connect().await;
        let names: Vec<String> = (0..2000).map(|i| format!("X-HelpDesk-Forged-{i}")).collect();
        let headers: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "x")).collect();
        let (actions, status) =
            transaction(&mut conn, "<a@example.org>", &["<support@tails.net>"], &headers, b"x").await;
        assert!(actions.is_empty());
        let Status::Reject { message: Some(text) } = status else { panic!("{policy}: {status:?}") };
        let text = text.to_string_lossy();
        assert!(text.starts_with("550 5.7.1 ") && text.contains("prefixed header"), "{text}");
        m.stop().await;
    }
}

#[tokio::test]
async fn team_mail_needs_a_login() {
    // Issue 12, point 5: From: a team address alone is any sender's claim.
    let m = Milter::start("").await;
    let mut conn = m.connect().await;
    let headers = [("From", "Bob <bob@tails.net>"), ("To", "support@tails.net"), ("Subject", "[FT] mirror")];
    let (forged, _) =
        transaction(&mut conn, "<bob@tails.net>", &["<support@tails.net>"], &headers, b"x").await;
    assert_eq!(forged[0], add("X-HelpDesk-Class", "support"));
    assert_eq!(forged[1], add("X-HelpDesk-Priority", "normal"));
    // Postfix sends {auth_authen} with MAIL FROM for a SASL-authenticated submission.
    conn.macros(MacroStage::Mail, [("{auth_authen}", "bob")]).await.unwrap();
    let (team, _) = transaction(&mut conn, "<bob@tails.net>", &["<support@tails.net>"], &headers, b"x").await;
    assert_eq!(team[0], add("X-HelpDesk-Class", "team"));
    assert_eq!(team[1], add("X-HelpDesk-Priority", "high"));
    conn.close().await.unwrap();
    m.stop().await;
}

#[tokio::test]
async fn many_concurrent_connections() {
    let m = Milter::start("").await;
    let mut tasks = Vec::new();
    for i in 0..50 {
        let addr = m.addr;
        tasks.push(tokio::spawn(async move {
            let mut conn = TestConnection::open(addr).await.unwrap();
            let sender = if i % 2 == 0 { "<alice@example.org>" } else { "<bob@tails.net>" };
            if i % 2 == 1 {
                // Team mail comes with a login on this host.
                conn.macros(MacroStage::Mail, [("{auth_authen}", "bob")]).await.unwrap();
            }
            let (actions, _) = transaction(
                &mut conn,
                sender,
                &["<support@tails.net>"],
                &[("From", &sender[1..sender.len() - 1])],
                b"x",
            )
            .await;
            conn.close().await.unwrap();
            (i, actions)
        }));
    }
    for t in tasks {
        let (i, actions) = t.await.unwrap();
        let class = if i % 2 == 0 { "support" } else { "team" };
        assert_eq!(actions[0], add("X-HelpDesk-Class", class), "connection {i}");
    }
    m.stop().await;
}

#[tokio::test]
async fn sequential_transactions_do_not_stall() {
    // Guards against the loopback Nagle/delayed-ACK stall class (40 ms per message): 200
    // transactions would take 8 s or more with it; this only checks they complete well under that.
    // Each connection behaves like Postfix's: buffered commands, every option offered (NOREPLY_*
    // included), TCP without NODELAY, macros before the commands.
    let m = Milter::start("").await;
    let headers = [("From".to_string(), "a@example.org".to_string()), ("Subject".into(), "x".into())];
    let t0 = std::time::Instant::now();
    for n in 0..200 {
        let mut conn = m.postfix_like().await;
        let qid = format!("Q{n}");
        conn.envelope_and_header(&qid, "a@example.org", "support@tails.net", &headers).await;
        conn.body(b"x").await;
        let (actions, last) = conn.eom(&qid).await;
        assert_eq!(last, indymilter::message::reply::Reply::Accept);
        assert!(!actions.is_empty(), "not triaged");
        conn.quit().await;
    }
    let elapsed = t0.elapsed();
    assert!(
        elapsed < Duration::from_secs(4),
        "200 transactions took {elapsed:?}: the delayed-ACK stall is back"
    );
    m.stop().await;
}

#[tokio::test]
async fn one_reply_per_sender_per_interval_and_per_message() {
    let mut m = Milter::start("").await;
    let mut conn = m.connect().await;
    let headers = [("From", "Dana <dana@example.org>"), ("To", "support@tails.net, help@tails.net")];
    // Two Help Desk recipients, one reply.
    let (actions, _) = transaction(
        &mut conn,
        "<Dana@Example.org>",
        &["<support@tails.net>", "<support@tails.net>"],
        &headers,
        b"x",
    )
    .await;
    assert!(actions.contains(&add("X-HelpDesk-Autoreply", "queued")));
    // The same person again, through a forwarder's SRS address: within the interval.
    let (actions, _) = transaction(
        &mut conn,
        "<SRS0=abc=TT=example.org=dana@fwd.example>",
        &["<support@tails.net>"],
        &headers,
        b"x",
    )
    .await;
    assert!(actions.contains(&add("X-HelpDesk-Autoreply", "suppressed (interval)")), "{actions:?}");
    let replies = m.replies();
    assert_eq!(replies.len(), 1);
    // The reply goes to the exact envelope sender.
    assert_eq!(replies[0].request.recipient, "Dana@Example.org");
    m.stop().await;
}

#[tokio::test]
async fn concurrent_messages_from_one_sender_get_one_reply() {
    let mut m = Milter::start("").await;
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let addr = m.addr;
        tasks.push(tokio::spawn(async move {
            let mut conn = TestConnection::open(addr).await.unwrap();
            let headers = [("From", "erin@example.org"), ("To", "support@tails.net")];
            let (actions, _) =
                transaction(&mut conn, "<erin@example.org>", &["<support@tails.net>"], &headers, b"x").await;
            actions
        }));
    }
    let mut queued = 0;
    for t in tasks {
        if t.await.unwrap().contains(&add("X-HelpDesk-Autoreply", "queued")) {
            queued += 1;
        }
    }
    assert_eq!(queued, 1);
    assert_eq!(m.replies().len(), 1);
    m.stop().await;
}

#[tokio::test]
async fn a_reply_coming_back_through_the_milter_is_not_answered() {
    let mut m = Milter::start("").await;
    let mut conn = m.connect().await;
    // What our own reply looks like if it reaches a Help Desk address.
    let headers = [
        ("From", "Tails Help Desk <support@tails.net>"),
        ("To", "support@tails.net"),
        ("Auto-Submitted", "auto-replied"),
        ("Precedence", "bulk"),
        ("X-Loop", "support@tails.net"),
    ];
    let (actions, _) = transaction(&mut conn, "<>", &["<support@tails.net>"], &headers, b"x").await;
    assert!(actions.contains(&add("X-HelpDesk-Autoreply", "suppressed (null-sender)")), "{actions:?}");
    // Even with a non-null envelope sender, the loop marker and our own address stop it.
    let (actions, _) =
        transaction(&mut conn, "<relay@example.org>", &["<support@tails.net>"], &headers, b"x").await;
    assert!(actions.contains(&add("X-HelpDesk-Autoreply", "suppressed (auto-submitted)")), "{actions:?}");
    assert!(m.replies().is_empty());
    m.stop().await;
}

//! How fast the outbox drains: N queued replies sent to Postfix's smtp-sink on loopback, one SMTP
//! session each, as the daemon's sender does. Prints the time and the time per reply.
//!
//!   cargo bench --bench outbox_drain [-- --replies N]
//!
//! Needs root and Postfix's smtp-sink (package postfix).

use helpdesk_milter::config::{DeliveryConfig, Relay, SMTP_TIMEOUT};
use helpdesk_milter::outbox::{Outbox, SenderConfig, run_sender};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{Notify, oneshot};

const SMTP_SINK: &str = "/usr/sbin/smtp-sink";

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let replies: usize =
        args.iter().position(|a| a == "--replies").and_then(|i| args.get(i + 1)?.parse().ok()).unwrap_or(200);
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    // No dump (-d): only the SMTP dialogue is measured.
    let mut sink = Command::new(SMTP_SINK)
        .args(["-u", "postfix", "-c", &format!("127.0.0.1:{port}"), "100"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{SMTP_SINK} (package postfix, run as root): {e}"));
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        std::thread::sleep(Duration::from_millis(20));
    }

    let dir = tempfile::tempdir().unwrap();
    let outbox = Arc::new(Outbox::open(&dir.path().join("outbox")).unwrap());
    let message = b"From: support@tails.net\r\nTo: someone\r\nSubject: reply\r\n\r\nHello.\r\n";
    for i in 0..replies {
        outbox.enqueue(&format!("user{i}@example.org"), message, SystemTime::now()).unwrap();
    }
    let config = SenderConfig {
        delivery: DeliveryConfig {
            relay: Relay::parse(&format!("smtp://127.0.0.1:{port}")).unwrap(),
            retry_interval: Duration::from_secs(60),
            lifetime: Duration::from_secs(3600),
            smtp_timeout: SMTP_TIMEOUT,
        },
        helo_name: "bench.example".into(),
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let t0 = Instant::now();
    let sender = tokio::spawn(run_sender(outbox.clone(), config, Arc::new(Notify::new()), async {
        let _ = stopped.await;
    }));
    while outbox.depth() > 0 {
        assert!(t0.elapsed() < Duration::from_secs(600), "{} replies left after 10 minutes", outbox.depth());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let took = t0.elapsed();
    let _ = stop.send(());
    let _ = sender.await;
    let _ = sink.kill();
    let _ = sink.wait();
    println!(
        "outbox drain: {replies} replies in {:.2} s, {:.2} ms per reply",
        took.as_secs_f64(),
        took.as_secs_f64() * 1000.0 / replies as f64
    );
}

//! One delivery attempt: an SMTP transaction with the relay, with a null envelope sender and
//! `NOTIFY=NEVER`, each step under a timeout.

use super::entry::Entry;
use crate::config::{DeliveryConfig, Relay};
use lettre::Address;
use lettre::transport::smtp::client::{AsyncSmtpConnection, AsyncTokioStream};
use lettre::transport::smtp::commands::{Data, Ehlo, Mail, Rcpt};
use lettre::transport::smtp::extension::{
    ClientId, Extension, MailBodyParameter, MailParameter, RcptParameter, ServerInfo,
};
use std::fmt;
use std::future::Future;
use std::io;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::watch;

/// What the sender is started with.
#[derive(Clone, Debug)]
pub struct SenderConfig {
    /// The relay and the retry rules, as configured.
    pub delivery: DeliveryConfig,
    /// Our name in EHLO.
    pub helo_name: String,
}

/// The failure of one delivery attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SendError {
    /// Worth retrying: relay unreachable, timeout, 4xx, or a session setup problem.
    Temporary(String),
    /// Not worth retrying: 5xx to the transaction, invalid recipient, or an unknown outcome after
    /// the message was transmitted (a retry could send it twice).
    Permanent(String),
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Temporary(s) => write!(f, "temporary failure: {s}"),
            SendError::Permanent(s) => write!(f, "permanent failure: {s}"),
        }
    }
}

impl std::error::Error for SendError {}

/// Replaces anything that looks like an address in a relay's reply (Postfix echoes the recipient in
/// RCPT rejections), so that warnings can quote the reply.
fn redact(text: &str) -> String {
    text.split(' ').map(|w| if w.contains('@') { "<redacted>" } else { w }).collect::<Vec<_>>().join(" ")
}

/// SMTP requires CRLF line ends; lettre dot-stuffs only after CRLF and appends CRLF.CRLF itself.
fn to_smtp_data(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + message.len() / 40 + 2);
    let mut prev = 0u8;
    for &b in message {
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        prev = b;
    }
    // Without this, a message ending in CRLF would get an extra empty line.
    if out.ends_with(b"\r\n") {
        out.truncate(out.len() - 2);
    }
    out
}

/// Why a delivery attempt did not succeed.
#[derive(Debug)]
pub(super) enum AttemptError {
    Send(SendError),
    /// Shutdown was requested before the message was transmitted; nothing was sent.
    Stopped,
}

impl From<SendError> for AttemptError {
    fn from(e: SendError) -> Self {
        AttemptError::Send(e)
    }
}

enum StepError {
    Smtp(lettre::transport::smtp::Error),
    /// The TCP connection to the relay, opened before lettre takes it over.
    Connect(io::Error),
    Timeout,
    Stopped,
}

impl From<lettre::transport::smtp::Error> for StepError {
    fn from(e: lettre::transport::smtp::Error) -> Self {
        StepError::Smtp(e)
    }
}

impl From<io::Error> for StepError {
    fn from(e: io::Error) -> Self {
        StepError::Connect(e)
    }
}

impl fmt::Display for StepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StepError::Smtp(e) => write!(f, "{}", redact(&e.to_string())),
            StepError::Connect(e) => write!(f, "{e}"),
            StepError::Timeout => f.write_str("timed out"),
            StepError::Stopped => f.write_str("stopped"),
        }
    }
}

/// Runs one SMTP step under the timeout; before the message is transmitted the step is also
/// abandoned on shutdown (nothing has been accepted yet, so dropping it is harmless).
async fn step<T, E: Into<StepError>>(
    limit: Duration,
    stop: Option<&watch::Receiver<bool>>,
    fut: impl Future<Output = Result<T, E>>,
) -> Result<T, StepError> {
    let stopped = async {
        match stop {
            Some(rx) => {
                let mut rx = rx.clone();
                if rx.wait_for(|s| *s).await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        biased;
        () = stopped => Err(StepError::Stopped),
        r = tokio::time::timeout(limit, fut) => match r {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(StepError::Timeout),
        },
    }
}

/// Classifies a failed MAIL/RCPT/DATA command: 5xx is permanent, anything else is worth a retry.
fn command_failure(what: &str, relay: &Relay, e: StepError) -> AttemptError {
    match e {
        StepError::Stopped => AttemptError::Stopped,
        StepError::Smtp(ref se) if se.is_permanent() => {
            SendError::Permanent(format!("relay {relay} rejected {what}: {e}")).into()
        }
        _ => SendError::Temporary(format!("relay {relay}: {what} failed: {e}")).into(),
    }
}

/// One delivery attempt. Ok(()) = accepted by the relay.
pub async fn send_one(config: &SenderConfig, entry: &Entry) -> Result<(), SendError> {
    match deliver(config, entry, config.delivery.smtp_timeout, None).await {
        Ok(()) => Ok(()),
        Err(AttemptError::Send(e)) => Err(e),
        // Cannot happen without a stop signal; kept total rather than panicking.
        Err(AttemptError::Stopped) => Err(SendError::Temporary("attempt abandoned".into())),
    }
}

pub(super) async fn deliver(
    config: &SenderConfig,
    entry: &Entry,
    limit: Duration,
    stop: Option<&watch::Receiver<bool>>,
) -> Result<(), AttemptError> {
    let relay = &config.delivery.relay;
    let rcpt: Address = entry
        .recipient
        .parse()
        .map_err(|e| SendError::Permanent(format!("recipient is not a valid address: {e}")))?;
    let helo = if config.helo_name.is_empty() {
        ClientId::default()
    } else {
        ClientId::Domain(config.helo_name.clone())
    };

    // Problems before the transaction are the relay's (down, misconfigured), not the message's:
    // even a 5xx greeting is retried, within the lifetime.
    let connect = async {
        let tcp = TcpStream::connect((relay.host.as_str(), relay.port)).await?;
        // lettre writes the message and its final dot in two writes: without NODELAY the dot waits
        // for the relay's delayed ACK, 40 ms per reply on loopback.
        tcp.set_nodelay(true)?;
        let stream: Box<dyn AsyncTokioStream> = Box::new(tcp);
        AsyncSmtpConnection::connect_with_transport(stream, &helo).await.map_err(StepError::from)
    };
    let mut conn = match step(limit, stop, connect).await {
        Ok(c) => c,
        Err(StepError::Stopped) => return Err(AttemptError::Stopped),
        Err(e) => return Err(SendError::Temporary(format!("relay {relay}: connection failed: {e}")).into()),
    };
    let result = transaction(&mut conn, relay, &helo, &rcpt, entry, limit, stop).await;
    match &result {
        Ok(()) => {
            let _ = tokio::time::timeout(limit, conn.quit()).await;
        }
        Err(_) => {
            let _ = tokio::time::timeout(Duration::from_secs(5), conn.abort()).await;
        }
    }
    result
}

async fn transaction(
    conn: &mut AsyncSmtpConnection,
    relay: &Relay,
    helo: &ClientId,
    rcpt: &Address,
    entry: &Entry,
    limit: Duration,
    stop: Option<&watch::Receiver<bool>>,
) -> Result<(), AttemptError> {
    // lettre has already sent EHLO but keeps no DSN flag, so ask again and read the keywords.
    let ehlo = match step(limit, stop, conn.command(Ehlo::new(helo.clone()))).await {
        Ok(r) => r,
        Err(StepError::Stopped) => return Err(AttemptError::Stopped),
        Err(e) => return Err(SendError::Temporary(format!("relay {relay}: EHLO failed: {e}")).into()),
    };
    let dsn = ehlo
        .message()
        .skip(1)
        .any(|l| l.split_whitespace().next().is_some_and(|k| k.eq_ignore_ascii_case("DSN")));
    let info = ServerInfo::from_response(&ehlo).unwrap_or_default();

    let mut mail_params = Vec::new();
    if !rcpt.to_string().is_ascii() {
        if !info.supports_feature(Extension::SmtpUtfEight) {
            return Err(SendError::Permanent(format!(
                "recipient is not ASCII and relay {relay} does not offer SMTPUTF8"
            ))
            .into());
        }
        mail_params.push(MailParameter::SmtpUtfEight);
    }
    if !entry.message.is_ascii() && info.supports_feature(Extension::EightBitMime) {
        mail_params.push(MailParameter::Body(MailBodyParameter::EightBitMime));
    }
    // RFC 3834 §3.3: null envelope sender, so that nothing ever answers the reply.
    step(limit, stop, conn.command(Mail::new(None, mail_params)))
        .await
        .map_err(|e| command_failure("MAIL FROM:<>", relay, e))?;
    // RFC 3834 §3.3 / RFC 5230 §5.1: ask for no DSN about the reply.
    let rcpt_params = if dsn {
        vec![RcptParameter::Other { keyword: "NOTIFY".into(), value: Some("NEVER".into()) }]
    } else {
        Vec::new()
    };
    step(limit, stop, conn.command(Rcpt::new(rcpt.clone(), rcpt_params)))
        .await
        .map_err(|e| command_failure("RCPT TO", relay, e))?;
    step(limit, stop, conn.command(Data)).await.map_err(|e| command_failure("DATA", relay, e))?;

    // From here on the transfer is finished even on shutdown: abandoning it after the final dot
    // could leave a message the relay accepted but we would send again.
    let data = to_smtp_data(&entry.message);
    match step(limit, None, conn.message(&data)).await {
        Ok(_) => Ok(()),
        Err(StepError::Smtp(e)) if e.is_permanent() || e.is_transient() => {
            Err(command_failure("the message", relay, StepError::Smtp(e)))
        }
        // No reply to the final dot: the relay may have queued the reply. A lost reply is
        // preferred to a duplicate (doc/reply-rules.md, "When something fails"): not retried.
        Err(e) => Err(SendError::Permanent(format!(
            "relay {relay}: outcome unknown after the message was transmitted ({e}); not retried to avoid a duplicate"
        ))
        .into()),
    }
}

#[cfg(test)]
mod tests {
    use super::super::entry::tests::entry;
    use super::*;
    use crate::config::SMTP_TIMEOUT;

    #[test]
    fn smtp_data_has_crlf_and_no_final_line_end() {
        assert_eq!(to_smtp_data(b"a\nb\r\n.c\n"), b"a\r\nb\r\n.c");
        assert_eq!(to_smtp_data(b"a\r\n\r\n"), b"a\r\n");
        assert_eq!(to_smtp_data(b"a"), b"a");
    }

    #[test]
    fn redacts_addresses() {
        assert_eq!(
            redact("5.1.1 <alice@example.com>: Recipient address rejected"),
            "5.1.1 <redacted> Recipient address rejected"
        );
    }

    fn config(port: u16) -> SenderConfig {
        SenderConfig {
            delivery: crate::config::DeliveryConfig {
                relay: Relay { host: "127.0.0.1".into(), port },
                retry_interval: Duration::from_secs(1),
                lifetime: Duration::from_secs(3600),
                smtp_timeout: SMTP_TIMEOUT,
            },
            helo_name: "test.example".into(),
        }
    }

    #[tokio::test]
    async fn silent_relay_times_out_as_temporary() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let _hold = tokio::spawn(async move {
            let (_conn, _) = listener.accept().await.unwrap();
            std::future::pending::<()>().await;
        });
        let r = deliver(&config(port), &entry(b"x"), Duration::from_millis(200), None).await;
        assert!(
            matches!(r, Err(AttemptError::Send(SendError::Temporary(ref s))) if s.contains("timed out")),
            "{r:?}"
        );
    }

    #[tokio::test]
    async fn invalid_recipient_is_permanent() {
        let mut e = entry(b"x");
        e.recipient = "not an address".into();
        let r = send_one(&config(1), &e).await;
        assert!(matches!(r, Err(SendError::Permanent(_))), "{r:?}");
    }

    #[tokio::test]
    async fn stop_before_data_abandons_the_attempt() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let _hold = tokio::spawn(async move {
            let (_conn, _) = listener.accept().await.unwrap();
            std::future::pending::<()>().await;
        });
        let (tx, rx) = watch::channel(false);
        let cfg = config(port);
        let e = entry(b"x");
        let attempt = deliver(&cfg, &e, Duration::from_secs(30), Some(&rx));
        let stopper = async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            tx.send(true).unwrap();
        };
        let (r, ()) = tokio::time::timeout(Duration::from_secs(5), async { tokio::join!(attempt, stopper) })
            .await
            .expect("the stop signal must end the attempt");
        assert!(matches!(r, Err(AttemptError::Stopped)), "{r:?}");
    }
}

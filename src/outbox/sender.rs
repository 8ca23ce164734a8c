//! The sender: delivers the outbox's entries to the relay, retries with back-off, drops what
//! expired or was refused, and leaves nothing half-done at shutdown.

use super::entry::{Entry, recipient_tag};
use super::smtp::{AttemptError, SendError, SenderConfig, deliver};
use super::store::Outbox;
use crate::clock::{from_unix, unix_secs, unix_secs_ceil};
use crate::metrics::{self, LostReply};
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::io;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::{Notify, watch};
use tracing::{debug, error, info, warn};

/// The retry interval doubles after each temporary failure up to this bound.
pub const MAX_RETRY_INTERVAL: Duration = Duration::from_secs(30 * 60);
/// The sender rescans the directory at least this often, even without a wake-up.
const RESCAN_INTERVAL: Duration = Duration::from_secs(5 * 60);

/// Delay before the retry that follows the `attempts`-th failure.
fn retry_delay(retry_interval: Duration, attempts: u32) -> Duration {
    let cap = MAX_RETRY_INTERVAL.max(retry_interval);
    let doublings = attempts.saturating_sub(1).min(31);
    retry_interval.checked_mul(1u32 << doublings).unwrap_or(cap).min(cap)
}

async fn blocking<T: Send + 'static>(
    outbox: &Arc<Outbox>,
    f: impl FnOnce(&Outbox) -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    let outbox = Arc::clone(outbox);
    tokio::task::spawn_blocking(move || f(&outbox))
        .await
        .unwrap_or_else(|e| Err(io::Error::other(format!("outbox task failed: {e}"))))
}

/// What the sender remembers between passes when the disk could not be updated.
#[derive(Default)]
struct Memory {
    /// Delivered but not removed: never send again in this run; retry the removal.
    delivered: HashSet<String>,
    /// Rescheduled in memory only, because the rewrite failed.
    deferred: HashMap<String, u64>,
}

/// What became of one entry in a pass.
enum Outcome {
    /// Done with it for this pass (sent, dropped, or its removal retried).
    Handled,
    /// Not due yet: look again at this time (unix seconds).
    DueAt(u64),
    /// Shutdown: stop the pass and the sender.
    Stop,
}

type Shutdown<'a> = Pin<&'a mut (dyn Future<Output = ()> + Send)>;

struct Sender {
    outbox: Arc<Outbox>,
    config: SenderConfig,
    memory: Memory,
    /// Turned true to abandon an attempt that has not transmitted its message yet.
    stop_tx: watch::Sender<bool>,
    stop_rx: watch::Receiver<bool>,
}

/// Runs until `shutdown` resolves: sends due entries, sleeps until the next due time or until
/// `wake` is notified (new entry). On shutdown it stops between messages (an entry being sent is
/// finished or left for later; never sent twice on purpose).
pub async fn run_sender(
    outbox: Arc<Outbox>,
    config: SenderConfig,
    wake: Arc<Notify>,
    shutdown: impl Future<Output = ()> + Send,
) {
    let mut shutdown = pin!(shutdown);
    let mut shutdown: Shutdown<'_> = shutdown.as_mut();
    let (stop_tx, stop_rx) = watch::channel(false);
    info!("outbox sender started: {} via {}", outbox.dir().display(), config.delivery.relay);
    let mut s = Sender { outbox, config, memory: Memory::default(), stop_tx, stop_rx };
    loop {
        // Registered before the scan, so that an entry queued during the pass is not missed.
        let mut notified = pin!(wake.notified());
        notified.as_mut().enable();
        let Some(next_due) = s.pass(&mut shutdown).await else { break };
        let sleep = next_due
            .map(|d| from_unix(d).duration_since(SystemTime::now()).unwrap_or_default())
            .unwrap_or(RESCAN_INTERVAL)
            .min(RESCAN_INTERVAL);
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            () = notified => {}
            () = tokio::time::sleep(sleep) => {}
        }
    }
    info!("outbox sender stopped");
}

impl Sender {
    /// One pass over the outbox, entries in due order. Returns when the next one is due, or None
    /// to stop.
    async fn pass(&mut self, shutdown: &mut Shutdown<'_>) -> Option<Option<u64>> {
        let lifetime = self.config.delivery.lifetime;
        let entries = blocking(&self.outbox, move |o| {
            o.purge_corrupt(lifetime);
            Ok(o.entries())
        })
        .await
        .unwrap_or_else(|e| {
            error!("{e}");
            Vec::new()
        });
        let present: HashSet<&str> = entries.iter().map(|e| e.id.as_str()).collect();
        self.memory.delivered.retain(|id| present.contains(id.as_str()));
        self.memory.deferred.retain(|id, _| present.contains(id.as_str()));
        let now = SystemTime::now();
        let mut queue: Vec<(u64, Entry)> = entries.into_iter().map(|e| (self.due(&e, now), e)).collect();
        queue.sort_by_key(|(due, e)| (*due, e.created));

        let mut next_due: Option<u64> = None;
        for (due_at, entry) in queue {
            // Stop between messages.
            let stopping = tokio::select! {
                biased;
                () = &mut *shutdown => true,
                () = std::future::ready(()) => false,
            };
            if stopping {
                return None;
            }
            match self.handle(due_at, entry, shutdown).await {
                Outcome::Handled => {}
                Outcome::DueAt(at) => next_due = Some(next_due.map_or(at, |d| d.min(at))),
                Outcome::Stop => return None,
            }
        }
        (!*self.stop_rx.borrow()).then_some(next_due)
    }

    /// Sends one entry if it is due, or drops it if it expired.
    async fn handle(&mut self, due_at: u64, entry: Entry, shutdown: &mut Shutdown<'_>) -> Outcome {
        let now = SystemTime::now();
        if due_at > unix_secs(now) {
            return Outcome::DueAt(due_at);
        }
        if self.memory.delivered.contains(&entry.id) {
            self.remove(&entry.id).await;
            return Outcome::Handled;
        }
        let age = now.duration_since(from_unix(entry.created)).unwrap_or_default();
        let lifetime = self.config.delivery.lifetime;
        // Due because expiry is near, but the lifetime is not quite over and no retry is due yet.
        let next = self.next_attempt(&entry, now);
        if age < lifetime && next > unix_secs(now) {
            return Outcome::DueAt(next.min(self.expiry(&entry)));
        }
        if age >= lifetime {
            warn!(
                "reply {} expired unsent after {} attempt(s) ({} old); dropped",
                entry.id,
                entry.attempts,
                humantime::format_duration(Duration::from_secs(age.as_secs()))
            );
            if self.remove(&entry.id).await {
                metrics::reply_failed(LostReply::Expired);
            }
            return Outcome::Handled;
        }
        // A reply sent while its entry cannot be removed (disk read-only or failing) would be
        // sent again after a restart: only send when the outbox can be written right now.
        let probe = entry.clone();
        if let Err(e) = blocking(&self.outbox, move |o| o.reschedule(&probe)).await {
            let retry = self.config.delivery.retry_interval;
            let next = unix_secs_ceil(now + retry);
            warn!(
                "reply {} not sent for now: the outbox cannot be written, so it could not be marked as sent ({e}); retrying in {}",
                entry.id,
                humantime::format_duration(retry)
            );
            self.memory.deferred.insert(entry.id.clone(), next);
            return Outcome::DueAt(next);
        }
        self.send(entry, shutdown).await
    }

    /// One attempt; a shutdown meanwhile abandons it if the message is not transmitted yet.
    async fn send(&mut self, mut entry: Entry, shutdown: &mut Shutdown<'_>) -> Outcome {
        let rcpt = recipient_tag(&entry.recipient);
        debug!(id = %entry.id, rcpt = %rcpt, attempt = entry.attempts + 1, "sending reply");
        let result = {
            let timeout = self.config.delivery.smtp_timeout;
            let mut send = pin!(deliver(&self.config, &entry, timeout, Some(&self.stop_rx)));
            let mut stop_sent = false;
            loop {
                tokio::select! {
                    biased;
                    r = &mut send => break r,
                    () = &mut *shutdown, if !stop_sent => {
                        stop_sent = true;
                        let _ = self.stop_tx.send(true);
                    }
                }
            }
        };
        match result {
            Ok(()) => {
                info!("reply {} delivered to relay {}", entry.id, self.config.delivery.relay);
                metrics::reply_sent();
                self.memory.delivered.insert(entry.id.clone());
                self.remove(&entry.id).await;
                Outcome::Handled
            }
            Err(AttemptError::Send(SendError::Permanent(why))) => {
                warn!("reply {} dropped: {why}", entry.id);
                if self.remove(&entry.id).await {
                    metrics::reply_failed(LostReply::Permanent);
                }
                Outcome::Handled
            }
            Err(AttemptError::Send(SendError::Temporary(why))) => {
                let now = SystemTime::now();
                entry.attempts = entry.attempts.saturating_add(1);
                let delay = retry_delay(self.config.delivery.retry_interval, entry.attempts);
                entry.next_attempt = unix_secs_ceil(now + delay).max(unix_secs(now) + 1);
                warn!(
                    "reply {} not delivered (attempt {}), retrying in {}: {why}",
                    entry.id,
                    entry.attempts,
                    humantime::format_duration(delay)
                );
                let (id, next) = (entry.id.clone(), entry.next_attempt);
                if let Err(e) = blocking(&self.outbox, move |o| o.reschedule(&entry)).await {
                    error!("cannot reschedule outbox entry {id}: {e}");
                    self.memory.deferred.insert(id, next);
                }
                Outcome::DueAt(next)
            }
            Err(AttemptError::Stopped) => Outcome::Stop,
        }
    }

    /// When an entry is due: its next attempt or its expiry, whichever comes first (unix seconds).
    fn due(&self, entry: &Entry, now: SystemTime) -> u64 {
        self.next_attempt(entry, now).min(self.expiry(entry))
    }

    /// The next attempt (unix seconds), from memory if the disk could not be updated.
    fn next_attempt(&self, entry: &Entry, now: SystemTime) -> u64 {
        let now_s = unix_secs(now);
        let next = self.memory.deferred.get(&entry.id).copied().unwrap_or(entry.next_attempt);
        // A next attempt beyond any possible backoff means the clock went back: do not wait for it.
        let backoff = MAX_RETRY_INTERVAL.max(self.config.delivery.retry_interval);
        let horizon = now_s.saturating_add(backoff.as_secs() + 1);
        if next > horizon { now_s } else { next }
    }

    /// The first whole second at which the entry is past its lifetime.
    fn expiry(&self, entry: &Entry) -> u64 {
        let lifetime = self.config.delivery.lifetime;
        entry.created.saturating_add(lifetime.as_secs() + u64::from(lifetime.subsec_nanos() > 0))
    }

    /// Removes an entry durably; returns whether it is gone.
    async fn remove(&mut self, id: &str) -> bool {
        let owned = id.to_owned();
        match blocking(&self.outbox, move |o| o.remove(&owned)).await {
            Ok(()) => {
                self.memory.delivered.remove(id);
                self.memory.deferred.remove(id);
                true
            }
            Err(e) => {
                error!("cannot remove outbox entry {id}: {e}");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delay_doubles_up_to_the_cap() {
        let s = Duration::from_secs;
        assert_eq!(retry_delay(s(60), 1), s(60));
        assert_eq!(retry_delay(s(60), 2), s(120));
        assert_eq!(retry_delay(s(60), 5), s(960));
        assert_eq!(retry_delay(s(60), 6), MAX_RETRY_INTERVAL);
        assert_eq!(retry_delay(s(60), u32::MAX), MAX_RETRY_INTERVAL);
        assert_eq!(retry_delay(s(7200), 3), s(7200));
    }
}

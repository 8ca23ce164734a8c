//! The reply state: which senders were answered and when, and the replies of the last hour (the
//! caps), kept as keyed hashes with an expiry.
//!
//! No address is stored: the key is HMAC-SHA256(secret, canonical sender) (`store::keys`).
//! With the embedded store, decisions are taken in memory under one lock (an atomic
//! check-and-set, no disk I/O on the milter's path); the reply worker then records each
//! reservation in the store, durably, before the reply is written (`store::sqlite`). With a
//! shared store, the check-and-set is one transaction on the server, for every host at once,
//! within `[state] timeout` (`store::postgres`). The caps are part of it, so a restart, even a
//! loop of them, does not start them again at zero.

use crate::policy::{Decision, Reason, StateView};
pub use crate::store::Reservation;
use crate::store::StoreError;
use crate::store::keys::{Key, Keys};
use crate::store::postgres::{Seen, Shared};
use crate::store::sqlite::Embedded;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

const HOUR: u64 = 3600;

/// The topics of one request, as the state needs them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Topics {
    /// The hot topics the request matched, which its reply leads with: a later request about one
    /// that no reply of the interval led with brings one more reply, which leads with it.
    pub hot_matched: Vec<String>,
}

#[derive(Default)]
struct Inner {
    answered: HashMap<Key, u64>,
    /// Time and domain key of each reply decided in the last hour, oldest first.
    recent: VecDeque<(u64, Key)>,
    /// Topics a sender's replies pointed to, until the end of their interval.
    topics: HashMap<(Key, String), u64>,
}

/// Where the decisions are kept.
enum Store {
    /// Nowhere: a state in memory only.
    Memory,
    /// In memory, recorded in this host's file.
    Embedded(Arc<Embedded>),
    /// On the server that the hosts share, where they are also taken.
    Shared(Arc<Shared>),
}

/// What the state knows of one sender and the last hour, wherever it keeps it.
#[derive(Default)]
struct Known {
    answered: bool,
    last_hour: u32,
    domain_last_hour: u32,
    /// The hot topics of the request that no reply of the interval led with.
    new: Vec<String>,
}

/// The state of the auto-responder.
pub struct ReplyState {
    keys: Keys,
    inner: Mutex<Inner>,
    store: Store,
    /// Why the store cannot be used; every decision is then "suppressed (store)".
    unavailable: Option<String>,
    max_entries: usize,
}

impl ReplyState {
    /// The state kept in `store`, as it is at `now`: the senders whose interval is not over, the
    /// replies of the last hour.
    pub fn open(
        store: Arc<Embedded>,
        keys: Keys,
        max_entries: usize,
        now: u64,
    ) -> Result<ReplyState, StoreError> {
        let loaded = store.load(now)?;
        let inner = Inner {
            answered: loaded.answered.into_iter().collect(),
            recent: loaded.sent.into_iter().collect(),
            topics: loaded.topics.into_iter().map(|(k, t, e)| ((k, t), e)).collect(),
        };
        let state = ReplyState {
            keys,
            inner: Mutex::new(inner),
            store: Store::Embedded(store),
            unavailable: None,
            max_entries,
        };
        state.purge(now)?;
        Ok(state)
    }

    /// The state kept on a server that several hosts share: nothing is loaded, every decision
    /// is taken there.
    pub fn shared(store: Arc<Shared>, keys: Keys, max_entries: usize) -> ReplyState {
        ReplyState {
            keys,
            inner: Mutex::new(Inner::default()),
            store: Store::Shared(store),
            unavailable: None,
            max_entries,
        }
    }

    /// A state that remembers nothing on disk, for `classify`: as if nobody had been answered.
    pub fn in_memory() -> ReplyState {
        ReplyState {
            keys: Keys::random(),
            inner: Mutex::new(Inner::default()),
            store: Store::Memory,
            unavailable: None,
            max_entries: usize::MAX,
        }
    }

    /// A state that cannot be used: no reply is ever queued (fail closed), mail flows as usual.
    pub fn unavailable(why: String) -> ReplyState {
        ReplyState { unavailable: Some(why), ..ReplyState::in_memory() }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The maps stay consistent across a panic (each update is a single insert or push).
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The keyed hash of a canonical address or domain.
    pub fn key(&self, canonical: &str) -> Key {
        self.keys.key(canonical)
    }

    /// Atomic check-and-set: builds the state view for this sender, lets `decide` (the pure
    /// policy) choose, and if it queues a reply, reserves it before anyone else can decide.
    pub fn decide_and_reserve(
        &self,
        canonical_sender: &str,
        now: u64,
        interval: Duration,
        decide: impl FnOnce(&StateView) -> Decision,
    ) -> (Decision, Option<Reservation>) {
        self.decide_with_topics(canonical_sender, now, interval, &Topics::default(), decide)
    }

    /// The check-and-set with the request's hot topics: within the interval, a hot topic that no
    /// reply pointed the sender to may bring one more reply (`Decision::QueuedNewTopic`).
    pub fn decide_with_topics(
        &self,
        canonical_sender: &str,
        now: u64,
        interval: Duration,
        topics: &Topics,
        decide: impl FnOnce(&StateView) -> Decision,
    ) -> (Decision, Option<Reservation>) {
        let (key, domain) = self.keys.sender_and_domain(canonical_sender);
        let mut inner = self.lock();
        while inner.recent.front().is_some_and(|(t, _)| *t + HOUR <= now) {
            inner.recent.pop_front();
        }
        let pointed = |t: &String| inner.topics.get(&(key, t.clone())).is_some_and(|&e| e > now);
        let known = Known {
            answered: inner.answered.get(&key).is_some_and(|&expiry| expiry > now),
            last_hour: u32::try_from(inner.recent.len()).unwrap_or(u32::MAX),
            domain_last_hour: u32::try_from(inner.recent.iter().filter(|(_, d)| *d == domain).count())
                .unwrap_or(u32::MAX),
            new: topics.hot_matched.iter().filter(|t| !pointed(t)).cloned().collect(),
        };
        let (decision, r) =
            conclude((key, domain), now, interval, topics, known, self.unavailable.is_some(), decide);
        if let Some(r) = &r {
            if r.first {
                inner.answered.insert(key, r.expiry);
            }
            for t in &r.topics {
                inner.topics.insert((key, t.clone()), r.expiry);
            }
            inner.recent.push_back((now, domain));
        }
        (decision, r)
    }

    /// The decision for one sender on the milter's path: the same check-and-set, asked the way
    /// the store wants (in memory at once, or on the shared server within its timeout).
    pub async fn decide(
        &self,
        canonical_sender: &str,
        now: u64,
        interval: Duration,
        topics: &Topics,
        decide: impl Fn(&StateView) -> Decision + Send,
    ) -> (Decision, Option<Reservation>) {
        match &self.store {
            Store::Shared(shared) if self.unavailable.is_none() => {
                self.decide_shared(shared, canonical_sender, now, interval, topics, decide).await
            }
            _ => self.decide_with_topics(canonical_sender, now, interval, topics, decide),
        }
    }

    /// The check-and-set on the shared server, within its timeout; on a timeout or an error, no
    /// reply and no reservation (the store logs it, once per outage).
    async fn decide_shared(
        &self,
        shared: &Arc<Shared>,
        canonical_sender: &str,
        now: u64,
        interval: Duration,
        topics: &Topics,
        decide: impl Fn(&StateView) -> Decision + Send,
    ) -> (Decision, Option<Reservation>) {
        let (key, domain) = self.keys.sender_and_domain(canonical_sender);
        let known = |seen: &Seen| Known {
            answered: seen.answered,
            last_hour: seen.last_hour,
            domain_last_hour: seen.domain_last_hour,
            new: topics.hot_matched.iter().filter(|t| !seen.pointed.contains(t)).cloned().collect(),
        };
        let failed = || conclude((key, domain), now, interval, topics, Known::default(), true, &decide);
        // Most decisions suppress (a sender answered within the interval, a cap reached), and a
        // read without the lock settles those in one round trip: between it and a locked read,
        // the state moves only toward suppression (replies recorded), but for expiry, purge and
        // a reply undone, where a suppression is the safe side. Only a reply takes the lock.
        match shared.peek(key, domain, now, topics.hot_matched.clone()).await {
            Ok(seen) => {
                let (decision, r) =
                    conclude((key, domain), now, interval, topics, known(&seen), false, &decide);
                if r.is_none() {
                    return (decision, None);
                }
            }
            Err(_) => return failed(),
        }
        let look = match shared.look(key, domain, now, topics.hot_matched.clone()).await {
            Ok(look) => look,
            Err(_) => return failed(),
        };
        let (decision, mut r) =
            conclude((key, domain), now, interval, topics, known(&look.seen), false, &decide);
        if let Some(r) = &mut r {
            // Random, so that it names no one; should randomness fail, any value undoes the
            // reply's rows all the same, with the sender's key beside it.
            r.id = getrandom::u64().map_or(1, |v| v as i64);
        }
        match look.reserve(r.clone()).await {
            Ok(()) => (decision, r),
            Err(_) => (Decision::Suppressed(Reason::Store), None),
        }
    }

    /// Records a reservation in the store (blocking: call it off the milter's path). A failure
    /// means the reply must not be sent, since a restart would forget it was. A shared store
    /// recorded it already, as it decided.
    pub fn persist(&self, r: &Reservation) -> Result<(), StoreError> {
        match &self.store {
            Store::Embedded(disk) => disk.record(r),
            Store::Memory | Store::Shared(_) => Ok(()),
        }
    }

    /// Forgets a reservation whose reply was not queued (the store or the outbox could not be
    /// written), in memory and, best effort, in the store: otherwise the sender would get no
    /// reply for a whole interval although none was sent. Never call it for a reply that may be
    /// queued.
    pub fn release(&self, r: &Reservation) -> Result<(), StoreError> {
        self.forget(r);
        match &self.store {
            Store::Embedded(disk) => disk.release(r),
            Store::Shared(shared) => blocking(shared.release(r)),
            Store::Memory => Ok(()),
        }
    }

    /// Forgets a reservation in memory only: for one that could not be recorded, so that there
    /// is nothing in the store to undo.
    pub fn forget(&self, r: &Reservation) {
        {
            let mut inner = self.lock();
            if r.first && inner.answered.get(&r.key) == Some(&r.expiry) {
                inner.answered.remove(&r.key);
            }
            if let Some(i) = inner.recent.iter().position(|e| *e == (r.at, r.domain)) {
                inner.recent.remove(i);
            }
            for t in &r.topics {
                inner.topics.remove(&(r.key, t.clone()));
            }
        }
    }

    /// Drops expired entries, and the oldest ones past `max_entries` (RFC 5230: bounded, oldest
    /// first), in memory and in the store.
    pub fn purge(&self, now: u64) -> Result<usize, StoreError> {
        let (expired, dropped) = {
            let mut inner = self.lock();
            let before = inner.answered.len();
            inner.answered.retain(|_, e| *e > now);
            inner.topics.retain(|_, e| *e > now);
            let expired = before - inner.answered.len();
            let mut dropped = Vec::new();
            if inner.answered.len() > self.max_entries {
                let mut by_expiry: Vec<(u64, Key)> = inner.answered.iter().map(|(k, e)| (*e, *k)).collect();
                by_expiry.sort_unstable();
                let excess = inner.answered.len() - self.max_entries;
                for (_, k) in by_expiry.into_iter().take(excess) {
                    inner.answered.remove(&k);
                    inner.topics.retain(|(tk, _), _| *tk != k);
                    dropped.push(k);
                }
            }
            (expired, dropped)
        };
        match &self.store {
            Store::Embedded(disk) => disk.purge(now, &dropped)?,
            Store::Shared(shared) => return blocking(shared.purge(now, self.max_entries)),
            Store::Memory => {}
        }
        Ok(expired + dropped.len())
    }

    /// Number of senders currently remembered.
    pub fn len(&self) -> usize {
        self.lock().answered.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The policy's decision on what the state knows, and the reservation of a reply it queues: a
/// first reply points the sender to all the hot topics it leads with, one more to the new ones.
fn conclude(
    (key, domain): (Key, Key),
    now: u64,
    interval: Duration,
    topics: &Topics,
    known: Known,
    unavailable: bool,
    decide: impl FnOnce(&StateView) -> Decision,
) -> (Decision, Option<Reservation>) {
    let view = StateView {
        answered_recently: known.answered,
        replies_last_hour: known.last_hour,
        domain_replies_last_hour: known.domain_last_hour,
        unavailable,
        new_topic: !known.new.is_empty(),
    };
    let decision = decide(&view);
    let first = match decision {
        Decision::Queued => true,
        Decision::QueuedNewTopic => false,
        Decision::Suppressed(_) => return (decision, None),
    };
    let topics = if first { topics.hot_matched.clone() } else { known.new };
    let expiry = now.saturating_add(interval.as_secs());
    (decision, Some(Reservation { key, domain, at: now, expiry, topics, first, id: 0 }))
}

/// Runs a call to the shared store from a blocking thread of the runtime (the reply worker's
/// and the purge's `spawn_blocking`).
fn blocking<T>(call: impl std::future::Future<Output = Result<T, StoreError>>) -> Result<T, StoreError> {
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => runtime.block_on(call),
        Err(e) => Err(StoreError(format!("the shared store needs the daemon's runtime: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::keys::SECRET_FILE;
    use crate::store::sqlite::STORE_FILE;

    const WEEK: Duration = Duration::from_secs(7 * 86400);

    fn queue(_: &StateView) -> Decision {
        Decision::Queued
    }

    fn open(dir: &std::path::Path, max_entries: usize, now: u64) -> Result<ReplyState, StoreError> {
        let store = Arc::new(crate::store::open_embedded(dir)?);
        let keys = Keys::load_or_create(dir, store.has_answered()?)?;
        ReplyState::open(store, keys, max_entries, now)
    }

    #[test]
    fn second_message_within_the_interval_sees_the_first() {
        let s = ReplyState::in_memory();
        let (d, r) = s.decide_and_reserve("alice@example.org", 1000, WEEK, queue);
        assert_eq!(d, Decision::Queued);
        assert!(r.is_some());
        let (_, r2) = s.decide_and_reserve("alice@example.org", 2000, WEEK, |v| {
            assert!(v.answered_recently);
            assert_eq!(v.replies_last_hour, 1);
            assert_eq!(v.domain_replies_last_hour, 1);
            Decision::Suppressed(crate::policy::Reason::Interval)
        });
        assert!(r2.is_none());
        // After the interval the sender is answered again.
        s.decide_and_reserve("alice@example.org", 1000 + WEEK.as_secs(), WEEK, |v| {
            assert!(!v.answered_recently);
            assert_eq!(v.replies_last_hour, 0, "the hour window slides");
            Decision::Queued
        });
    }

    #[test]
    fn one_more_reply_per_new_hot_topic_per_interval() {
        let s = ReplyState::in_memory();
        let hot = |t: &[&str]| Topics { hot_matched: t.iter().map(|t| t.to_string()).collect() };
        let rules = |v: &StateView| {
            let cfg = crate::config::Config::defaults(std::path::Path::new("/x.toml"));
            crate::policy::state_decision(&cfg.policy, v)
        };
        let ask = |at: u64, t: &[&str]| s.decide_with_topics("fay@example.org", at, WEEK, &hot(t), rules);
        let (d, r) = ask(100, &["wifi"]);
        assert_eq!(
            (d, r.as_ref().map(|r| (r.first, r.topics.clone()))),
            (Decision::Queued, Some((true, vec!["wifi".into()])))
        );
        // The same topic again, or none: the interval holds.
        assert_eq!(ask(200, &["wifi"]).0, Decision::Suppressed(crate::policy::Reason::Interval));
        assert_eq!(ask(250, &[]).0, Decision::Suppressed(crate::policy::Reason::Interval));
        // Another hot topic: one more reply, leading with it only.
        let (d, r) = ask(300, &["wifi", "nvidia"]);
        let r = r.unwrap();
        assert_eq!((d, r.first, r.topics.clone()), (Decision::QueuedNewTopic, false, vec!["nvidia".into()]));
        assert_eq!(ask(400, &["nvidia"]).0, Decision::Suppressed(crate::policy::Reason::Interval));
        // The interval of the first reply is not extended by the one more.
        assert_eq!(ask(100 + WEEK.as_secs(), &["nvidia"]).0, Decision::Queued);
    }

    #[test]
    fn concurrent_decisions_for_one_sender_reserve_once() {
        let s = Arc::new(ReplyState::in_memory());
        let handles: Vec<_> = (0..16)
            .map(|_| {
                let s = s.clone();
                std::thread::spawn(move || {
                    s.decide_and_reserve("bob@example.org", 10, WEEK, |v| {
                        if v.answered_recently {
                            Decision::Suppressed(crate::policy::Reason::Interval)
                        } else {
                            Decision::Queued
                        }
                    })
                    .1
                    .is_some()
                })
            })
            .collect();
        let reserved = handles.into_iter().map(|h| h.join().unwrap()).filter(|r| *r).count();
        assert_eq!(reserved, 1);
    }

    #[test]
    fn reservations_and_caps_survive_a_restart_and_store_no_address() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = open(dir.path(), 1000, 100).unwrap();
            let (_, r) = s.decide_and_reserve("carol@example.org", 100, WEEK, queue);
            s.persist(&r.unwrap()).unwrap();
        }
        let secret = dir.path().join(SECRET_FILE);
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&secret).unwrap().permissions())
                & 0o777,
            0o600
        );
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            assert!(!bytes.windows(5).any(|w| w == b"carol"), "an address in clear");
        }
        let s = open(dir.path(), 1000, 200).unwrap();
        assert_eq!(s.len(), 1);
        s.decide_and_reserve("dan@example.org", 200, WEEK, |v| {
            // The caps remember the reply of the first run (issue 12, point 6).
            assert_eq!((v.replies_last_hour, v.domain_replies_last_hour), (1, 1));
            Decision::Suppressed(crate::policy::Reason::Cap)
        });
        s.decide_and_reserve("carol@example.org", 200, WEEK, |v| {
            assert!(v.answered_recently);
            Decision::Suppressed(crate::policy::Reason::Interval)
        });
        drop(s);
        // An hour later the caps have forgotten it; after the interval, so has the state.
        let s = open(dir.path(), 1000, 100 + HOUR).unwrap();
        s.decide_and_reserve("dan@example.org", 100 + HOUR, WEEK, |v| {
            assert_eq!(v.replies_last_hour, 0);
            Decision::Suppressed(crate::policy::Reason::Class)
        });
        drop(s);
        let s = open(dir.path(), 1000, 100 + WEEK.as_secs() + 1).unwrap();
        assert!(s.is_empty());
    }

    #[test]
    fn a_released_reservation_is_forgotten_in_the_caps_too() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path(), 1000, 100).unwrap();
        let (_, r) = s.decide_and_reserve("erin@example.org", 100, WEEK, queue);
        let r = r.unwrap();
        s.persist(&r).unwrap();
        s.release(&r).unwrap();
        drop(s);
        let s = open(dir.path(), 1000, 101).unwrap();
        s.decide_and_reserve("erin@example.org", 101, WEEK, |v| {
            assert!(!v.answered_recently);
            assert_eq!(v.replies_last_hour, 0);
            Decision::Queued
        });
    }

    #[test]
    fn missing_secret_with_entries_is_an_error_not_a_new_secret() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = open(dir.path(), 1000, 100).unwrap();
            let (_, r) = s.decide_and_reserve("dave@example.org", 100, WEEK, queue);
            s.persist(&r.unwrap()).unwrap();
        }
        std::fs::remove_file(dir.path().join(SECRET_FILE)).unwrap();
        let e = open(dir.path(), 1000, 100).err().unwrap();
        assert!(e.0.contains("missing"), "{e}");
    }

    #[test]
    fn corrupt_store_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(STORE_FILE), vec![0x42; 4096]).unwrap();
        assert!(open(dir.path(), 1000, 100).is_err());
    }

    #[test]
    fn bounded_size_drops_the_oldest() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path(), 3, 0).unwrap();
        for (i, who) in ["a", "b", "c", "d", "e"].iter().enumerate() {
            let (_, r) = s.decide_and_reserve(&format!("{who}@x.org"), i as u64 * 10_000, WEEK, queue);
            s.persist(&r.unwrap()).unwrap();
        }
        assert_eq!(s.purge(50_000).unwrap(), 2);
        assert_eq!(s.len(), 3);
        s.decide_and_reserve("a@x.org", 50_000, WEEK, |v| {
            assert!(!v.answered_recently, "the oldest was dropped");
            Decision::Suppressed(crate::policy::Reason::Class)
        });
        drop(s);
        let s = open(dir.path(), 3, 50_000).unwrap();
        assert_eq!(s.len(), 3, "dropped in the store too");
    }

    #[test]
    fn unavailable_store_never_queues() {
        let s = ReplyState::unavailable("disk full".into());
        s.decide_and_reserve("x@y.org", 1, WEEK, |v| {
            assert!(v.unavailable);
            Decision::Suppressed(crate::policy::Reason::Store)
        });
    }
}

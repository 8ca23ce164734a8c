//! Live reload of the reply file.
//!
//! Editors and `git pull` replace the file by rename, and deployments may swap a symlink to it
//! or to a directory above it. The watcher therefore watches the directories (not the file) with
//! notify, debounced, and also compares a cheap fingerprint once a second, which catches any
//! replacement notify cannot see. A valid new version replaces the old one atomically; an
//! invalid, empty, half-written or missing one is refused with an error naming file, line and
//! problem, and the last good version stays in use (`Live::install_reply_file`, which SIGHUP
//! uses too).

use crate::live::Live;
use crate::reply_file::ReplyFile;
use notify::RecursiveMode;
use notify_debouncer_full::{DebounceEventResult, new_debouncer};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};
use std::time::Duration;
use tracing::warn;

/// Editors write in several steps; wait this long for quiet before reading.
const DEBOUNCE: Duration = Duration::from_millis(250);
/// The fallback check; with the debounce it keeps a change live within 2 seconds.
const POLL: Duration = Duration::from_secs(1);

/// What identifies one version of the file without reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fingerprint {
    resolved: PathBuf,
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
    /// Changed by chmod and chown too, which can make the file unreadable (and a restart fail).
    ctime_ns: i128,
}

fn fingerprint(path: &Path) -> Option<Fingerprint> {
    let resolved = std::fs::canonicalize(path).ok()?;
    let m = std::fs::metadata(&resolved).ok()?;
    Some(Fingerprint {
        resolved,
        dev: m.dev(),
        ino: m.ino(),
        size: m.size(),
        mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        ctime_ns: i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec()),
    })
}

/// Stops the watcher when dropped.
pub struct WatchHandle {
    stop: mpsc::Sender<()>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for WatchHandle {
    fn drop(&mut self) {
        let _ = self.stop.send(());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Watcher {
    live: Arc<Live>,
    path: PathBuf,
    /// The version last looked at, loaded or refused, so that each is logged once.
    seen: Option<Fingerprint>,
    /// A missing file was reported; report it again only after it came back.
    missing_logged: bool,
    watched: Vec<PathBuf>,
}

impl Watcher {
    /// The directories whose changes can replace the file: its own, and that of the file it
    /// resolves to through symlinks.
    fn dirs(&self) -> Vec<PathBuf> {
        let mut dirs = Vec::new();
        if let Some(p) = self.path.parent() {
            dirs.push(if p.as_os_str().is_empty() { PathBuf::from(".") } else { p.to_path_buf() });
        }
        if let Some(p) =
            std::fs::canonicalize(&self.path).ok().and_then(|r| r.parent().map(Path::to_path_buf))
            && !dirs.contains(&p)
        {
            dirs.push(p);
        }
        dirs
    }

    /// Loads the file if it changed since it was last looked at.
    fn check(&mut self) {
        let fp = fingerprint(&self.path);
        if fp.is_some() && fp == self.seen {
            return;
        }
        if fp.is_none() && self.missing_logged {
            return;
        }
        self.missing_logged = fp.is_none();
        self.seen = fp;
        // The same door as SIGHUP's: an unchanged revision is no new version.
        self.live.install_reply_file(&self.path, ReplyFile::load(&self.path));
    }
}

/// Starts watching `path` and replacing the shared reply file when a valid new version appears.
pub fn watch_reply_file(live: Arc<Live>, path: PathBuf) -> std::io::Result<WatchHandle> {
    let (events_tx, events_rx) = mpsc::channel::<DebounceEventResult>();
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let mut debouncer = new_debouncer(DEBOUNCE, None, events_tx).map_err(std::io::Error::other)?;
    // No fingerprint yet: the first check reads the file and compares its revision with the one
    // in use, so that an edit made between the daemon's first load and this watch is not missed.
    let mut w = Watcher { live, seen: None, missing_logged: false, path, watched: Vec::new() };
    let rewatch = |w: &mut Watcher, debouncer: &mut notify_debouncer_full::Debouncer<_, _>| {
        let dirs = w.dirs();
        if dirs == w.watched {
            return;
        }
        for d in &w.watched {
            let _ = debouncer.unwatch(d);
        }
        w.watched.clear();
        for d in dirs {
            match debouncer.watch(&d, RecursiveMode::NonRecursive) {
                Ok(()) => w.watched.push(d),
                // The poll still sees changes; say why events do not.
                Err(e) => warn!("cannot watch {}: {e}; checking it every second instead", d.display()),
            }
        }
    };
    rewatch(&mut w, &mut debouncer);
    let thread = std::thread::Builder::new().name("reply-file-watch".into()).spawn(move || {
        loop {
            if stop_rx.try_recv().is_ok() {
                break;
            }
            match events_rx.recv_timeout(POLL) {
                Ok(Ok(events)) if events.is_empty() => continue,
                Ok(Err(errors)) => {
                    for e in errors {
                        warn!("watching the reply file: {e}");
                    }
                }
                Ok(Ok(_)) | Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
            w.check();
            rewatch(&mut w, &mut debouncer);
        }
        drop(debouncer);
    })?;
    Ok(WatchHandle { stop: stop_tx, thread: Some(thread) })
}

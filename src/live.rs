//! What the milter's callbacks share with the rest of the running daemon: the configuration and
//! the reply file in force (each replaced whole on reload, each message reading them once), the
//! reply state, and the queues that take work off the milter's path (replies to write and send,
//! messages to count).
//!
//! [`Live::install_reply_file`] is the one way a new reply file comes into use, whether the
//! watcher saw it change or a SIGHUP asked for it: the same rules, the same log lines, the same
//! metrics.

use crate::config::Config;
use crate::counts::Counted;
use crate::diagnostic::Diagnostics;
use crate::metrics;
use crate::reply::ReplyRequest;
use crate::reply_file::ReplyFile;
use crate::state::{ReplyState, Reservation};
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use tokio::sync::mpsc;
use tracing::{debug, error, info};

/// A reply decided at end of message, for the background worker to record and send.
pub struct ReplyJob {
    pub queue_id: String,
    pub config: Arc<Config>,
    /// The reply file version in force at end of message: the reply is built wholly from it.
    pub reply_file: Arc<ReplyFile>,
    pub request: ReplyRequest,
    pub reservation: Reservation,
}

/// The daemon's live settings, its reply state and its queues.
pub struct Live {
    config: RwLock<Arc<Config>>,
    reply_file: RwLock<Option<Arc<ReplyFile>>>,
    /// Whether the last version offered was refused: the next good one says it replaces it.
    refused: Mutex<bool>,
    pub state: Arc<ReplyState>,
    /// Where queued replies go; None drops them (tests of the milter alone).
    pub replies: Option<mpsc::UnboundedSender<ReplyJob>>,
    /// Where each triaged message is counted (`[stats]`); None counts nothing.
    pub counts: Option<mpsc::UnboundedSender<Counted>>,
}

/// What [`Live::install_reply_file`] did with a version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Installed {
    /// A new revision is in use.
    New,
    /// The same revision as the one in use: nothing changed.
    Unchanged,
    /// Invalid: the version in use stays.
    Refused,
}

impl Live {
    pub fn new(
        config: Config,
        reply_file: Option<ReplyFile>,
        state: Arc<ReplyState>,
        replies: Option<mpsc::UnboundedSender<ReplyJob>>,
        counts: Option<mpsc::UnboundedSender<Counted>>,
    ) -> Arc<Live> {
        Arc::new(Live {
            config: RwLock::new(Arc::new(config)),
            reply_file: RwLock::new(reply_file.map(Arc::new)),
            refused: Mutex::new(false),
            state,
            replies,
            counts,
        })
    }

    /// The configuration in force. A poisoned lock still holds a valid configuration (it is only
    /// ever replaced whole), so it is used rather than failing the message.
    pub fn config(&self) -> Arc<Config> {
        match self.config.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    pub fn set_config(&self, config: Config) {
        let config = Arc::new(config);
        match self.config.write() {
            Ok(mut g) => *g = config,
            Err(p) => *p.into_inner() = config,
        }
    }

    /// The reply file in force, if any.
    pub fn reply_file(&self) -> Option<Arc<ReplyFile>> {
        match self.reply_file.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    fn revision_in_use(&self) -> String {
        self.reply_file().map_or_else(|| "none".into(), |f| f.revision.clone())
    }

    /// Puts a newly read version of the reply file at `path` in use if it is valid and differs
    /// from the one in use; logs what happened and counts it in the metrics.
    pub fn install_reply_file(&self, path: &Path, loaded: Result<ReplyFile, Diagnostics>) -> Installed {
        let mut refused = self.refused.lock().unwrap_or_else(|p| p.into_inner());
        let file = match loaded {
            Ok(f) => f,
            Err(d) => {
                // The diagnostics name the file.
                error!("reply file refused, revision {} stays in use:\n{d}", self.revision_in_use());
                metrics::reply_file_refused();
                *refused = true;
                return Installed::Refused;
            }
        };
        let replaced_refused = std::mem::take(&mut *refused);
        if self.reply_file().is_some_and(|f| f.revision == file.revision) {
            if replaced_refused {
                info!(
                    "reply file {} is valid again: revision {} stays in use (the refused version is gone)",
                    path.display(),
                    file.revision
                );
            } else {
                debug!("reply file {} unchanged (revision {})", path.display(), file.revision);
            }
            return Installed::Unchanged;
        }
        let revision = file.revision.clone();
        let file = Some(Arc::new(file));
        match self.reply_file.write() {
            Ok(mut g) => *g = file,
            Err(p) => *p.into_inner() = file,
        }
        if replaced_refused {
            info!(
                "reply file {} reloaded (revision {}): a valid version replaces the refused one",
                path.display(),
                revision
            );
        } else {
            info!("reply file {} reloaded (revision {revision})", path.display());
        }
        metrics::reply_file_reloaded();
        Installed::New
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str =
        "default_language = \"en\"\nhot_topics = []\n[languages.en]\nsubject = \"S\"\nbody = \"B\"\n";

    fn live() -> Arc<Live> {
        let config = Config::defaults(Path::new("/x.toml"));
        Live::new(config, None, Arc::new(ReplyState::in_memory()), None, None)
    }

    fn parse(text: &str) -> Result<ReplyFile, Diagnostics> {
        ReplyFile::parse(Path::new("/r.toml"), text)
    }

    #[test]
    fn a_version_is_installed_once_and_a_refusal_keeps_the_one_in_use() {
        let l = live();
        let p = Path::new("/r.toml");
        assert_eq!(l.install_reply_file(p, parse(VALID)), Installed::New);
        let first = l.reply_file().unwrap().revision.clone();
        assert_eq!(l.install_reply_file(p, parse(VALID)), Installed::Unchanged);
        assert_eq!(l.install_reply_file(p, parse("nonsense")), Installed::Refused);
        assert_eq!(l.reply_file().unwrap().revision, first, "the refused version is not used");
        // The same good version again after a refusal: still unchanged, and no longer refused.
        assert_eq!(l.install_reply_file(p, parse(VALID)), Installed::Unchanged);
        assert!(!*l.refused.lock().unwrap());
        let second = format!("{VALID}# edited\n");
        assert_eq!(l.install_reply_file(p, parse(&second)), Installed::New);
        assert_ne!(l.reply_file().unwrap().revision, first);
    }
}

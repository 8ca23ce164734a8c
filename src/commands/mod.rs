//! The bodies of the commands other than `run`: `check`, `classify`, `preview` and `stats`. The
//! binary only parses arguments and prints what these return.

mod classify;
mod host;
mod preview;
mod stats;

pub use classify::{classify, default_envelope, read_message};
pub use host::check_host;
pub use preview::{Preview, as_text as preview_text, preview};
pub use stats::{StatsFormat, StatsRequest, stats};

use crate::config::Config;
use crate::diagnostic::Diagnostics;
use crate::reply_file::ReplyFile;
use std::path::Path;

/// `check`: validates the configuration and every file it names.
pub fn check(config_path: &Path) -> Result<(Config, Option<ReplyFile>), Diagnostics> {
    let config = Config::load(config_path)?;
    let reply_file = ReplyFile::load_configured(&config)?;
    Ok((config, reply_file))
}

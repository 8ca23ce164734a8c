//! SIGHUP: read the configuration file and the reply file again.

use crate::config::Config;
use crate::live::Live;
use crate::metrics;
use crate::reply_file::ReplyFile;
use tracing::{error, info, warn};

/// Re-reads the configuration file and the reply file. An invalid configuration is logged and the
/// running one kept; the settings that only take effect at restart keep their running values and
/// are logged as such (`Config::for_reload`). The reply file goes through the same door as the
/// watcher's (`Live::install_reply_file`). Returns whether the new configuration is in effect.
pub fn reload(live: &Live) -> bool {
    let old = live.config();
    let new = match Config::load(&old.path) {
        Ok(c) => c,
        Err(d) => {
            error!("configuration not reloaded, the running one is kept:\n{d}");
            metrics::config_refused();
            return false;
        }
    };
    let (new, kept) = old.for_reload(new);
    for name in kept {
        warn!("setting {name} changed: it takes effect at restart, not on reload");
    }
    let reply_file = ReplyFile::load_configured(&new);
    let reply_path = new.autoreply.reply_file.clone();
    live.set_config(new);
    info!("configuration reloaded from {}", old.path.display());
    metrics::config_reloaded();
    if let Some(loaded) = reply_file.transpose() {
        live.install_reply_file(&reply_path, loaded);
    }
    true
}

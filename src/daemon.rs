//! The running daemon: serve the milter socket, reload the configuration on request.

use crate::config::Config;
use crate::listener::MilterListener;
use crate::milter::{self, SharedConfig};
use std::future::Future;
use std::io;
use std::sync::{Arc, RwLock};
use tracing::{error, info, warn};

/// Wraps a configuration for sharing between the callbacks and the reload handler.
pub fn shared(config: Config) -> SharedConfig {
    Arc::new(RwLock::new(Arc::new(config)))
}

/// Serves milter connections until `shutdown` completes; transactions in flight then finish.
pub async fn serve(listener: MilterListener, config: SharedConfig, shutdown: impl Future) -> io::Result<()> {
    let max_connections = milter::current(&config).milter.max_connections;
    let milter_config = indymilter::Config { max_connections, ..Default::default() };
    indymilter::run(listener, milter::callbacks(config), milter_config, shutdown).await
}

/// Re-reads the configuration file. An invalid file is logged and the running configuration is
/// kept; settings that only take effect at restart are logged and keep their running values.
/// Returns whether the new configuration is in effect.
pub fn reload(config: &SharedConfig) -> bool {
    let old = milter::current(config);
    let mut new = match Config::load(&old.path) {
        Ok(c) => c,
        Err(d) => {
            error!("configuration not reloaded, the running one is kept:\n{d}");
            return false;
        }
    };
    for name in old.restart_needed(&new) {
        warn!("setting {name} changed: it takes effect at restart, not on reload");
    }
    new.milter.listen = old.milter.listen.clone();
    new.milter.socket_mode = old.milter.socket_mode;
    new.milter.socket_group = old.milter.socket_group.clone();
    new.milter.max_connections = old.milter.max_connections;
    new.log_level = old.log_level.clone();
    match config.write() {
        Ok(mut g) => *g = Arc::new(new),
        Err(p) => *p.into_inner() = Arc::new(new),
    }
    info!("configuration reloaded from {}", old.path.display());
    true
}

//! What a reload (SIGHUP) may change. Most settings apply to the next message; the ones below are
//! held by parts of the daemon that are set up once (the socket, the stores, the outbox's sender,
//! the metrics endpoint, the logger), so a reload keeps their running values and says so. This
//! list is the code that keeps them: there is no other list to keep in step with it.

use super::model::Config;

impl Config {
    /// The configuration a reload puts in force: `new`, except that every setting that only takes
    /// effect at restart keeps its running value. Also returns the names of those that `new`
    /// changed, for the log.
    pub fn for_reload(&self, mut new: Config) -> (Config, Vec<&'static str>) {
        let mut kept = Vec::new();
        macro_rules! restart_only {
            ($($field:ident).+ as $name:literal) => {
                if new.$($field).+ != self.$($field).+ {
                    kept.push($name);
                    new.$($field).+ = self.$($field).+.clone();
                }
            };
        }
        restart_only!(milter.listen as "milter.listen");
        restart_only!(milter.socket_mode as "milter.socket_mode");
        restart_only!(milter.socket_group as "milter.socket_group");
        restart_only!(milter.max_connections as "milter.max_connections");
        restart_only!(milter.idle_timeout as "milter.idle_timeout");
        restart_only!(log_level as "log.level");
        restart_only!(state.directory as "state.directory");
        restart_only!(state.max_entries as "state.max_entries");
        restart_only!(state.backend as "state.backend or state.password_file");
        restart_only!(state.timeout as "state.timeout");
        restart_only!(stats.retention as "stats.retention");
        restart_only!(metrics.listen as "metrics.listen");
        restart_only!(autoreply.reply_file as "autoreply.reply_file");
        restart_only!(autoreply.delivery.relay as "autoreply.relay");
        restart_only!(autoreply.delivery.retry_interval as "autoreply.retry_interval");
        restart_only!(autoreply.delivery.lifetime as "autoreply.lifetime");
        restart_only!(autoreply.delivery.smtp_timeout as "autoreply.smtp_timeout");
        (new, kept)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn parse(text: &str) -> Config {
        Config::parse(Path::new("/etc/hm/test.toml"), text).unwrap()
    }

    #[test]
    fn restart_only_settings_keep_their_running_values_and_are_named() {
        let running = parse("");
        let new = parse(
            "[milter]\nlisten = \"inet:127.0.0.1:9999\"\non_error = \"tempfail\"\n\
             [autoreply]\nrelay = \"smtp://[::1]:26\"\nmax_per_hour = 5\n[state]\nmax_entries = 5000\n",
        );
        let (applied, kept) = running.for_reload(new);
        assert_eq!(kept, vec!["milter.listen", "state.max_entries", "autoreply.relay"]);
        assert_eq!(applied.milter.listen, running.milter.listen);
        assert_eq!(applied.autoreply.delivery, running.autoreply.delivery);
        assert_eq!(applied.state, running.state);
        // What a reload may change, it changes.
        assert_eq!(applied.milter.on_error, crate::config::OnError::Tempfail);
        assert_eq!(applied.autoreply.max_per_hour, 5);
        assert_eq!(running.for_reload(running.clone()), (running.clone(), vec![]));
    }
}

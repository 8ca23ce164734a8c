//! The mail host of the end-to-end tests: a Postfix rig whose milter is a daemon that submits
//! its replies back through the rig's milter-enabled smtpd, the path a reply takes on the mail
//! host. Include it beside `support/daemon.rs` and `support/postfix.rs`, as `mod daemon` and
//! `mod postfix`.

use crate::daemon::Daemon;
use crate::postfix::{PostfixRig, RigOptions, free_port};

/// The rig and its daemon; `extra` is TOML appended after the `[autoreply]` relay settings (it
/// may open other tables).
pub fn rig_and_daemon(extra: &str) -> (PostfixRig, Daemon) {
    let milter_port = free_port();
    let rig = PostfixRig::start(RigOptions {
        milter: Some(format!("inet:127.0.0.1:{milter_port}")),
        default_action: "tempfail".into(),
        ..Default::default()
    });
    let daemon = Daemon::start_on(
        milter_port,
        &format!(
            "[autoreply]\nrelay = \"smtp://127.0.0.1:{}\"\nretry_interval = \"1s\"\n{extra}",
            rig.smtpd_port()
        ),
    );
    (rig, daemon)
}

//! The daemon's configuration file (TOML): parsing, defaults and validation.
//!
//! Unknown keys are errors, and every error names its file, line and column, so that a sysadmin
//! can fix the file from `helpdesk-milter check` alone.
//!
//! - [`raw`]: the file as written, with the defaults;
//! - [`validate`]: from that to the validated configuration, every problem located;
//! - [`model`]: the validated configuration, which the rest of the daemon reads;
//! - [`reload`]: which settings a reload keeps at their running values.

mod model;
mod raw;
mod reload;
mod validate;

pub use crate::address::DEFAULT_ROLE_SENDERS;
pub use model::*;
pub use validate::parse_mailbox;

use crate::diagnostic::{Collector, Diagnostic, Diagnostics};
use std::path::Path;

/// Where the daemon looks for its configuration unless told otherwise.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/helpdesk-milter/helpdesk-milter.toml";

impl Config {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, Diagnostics> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Diagnostics(vec![Diagnostic::whole_file(path, format!("cannot read configuration: {e}"))])
        })?;
        Config::parse(path, &text)
    }

    /// Parses and validates configuration text; `path` names it in errors and anchors relative paths.
    pub fn parse(path: &Path, text: &str) -> Result<Config, Diagnostics> {
        let raw: raw::RawConfig = toml::from_str(text).map_err(|e| {
            Diagnostics(vec![Diagnostic::at_span(path, text, e.span(), e.message().trim_end())])
        })?;
        let base = path.parent().unwrap_or(Path::new(""));
        let mut v = validate::Validator { report: Collector::new(path, text), base };
        let config = v.build(raw);
        v.report.finish(config)
    }

    /// The configuration with every default, as if read from an empty file at `path`.
    pub fn defaults(path: &Path) -> Config {
        // An empty file is valid by construction; the expect documents that invariant.
        Config::parse(path, "").expect("the defaults are valid")
    }

    /// Whether `addr` (any case, with or without angle brackets, a subaddress such as
    /// `support+wifi-realtek@`) is a Help Desk address.
    pub fn is_helpdesk_address(&self, addr: &str) -> bool {
        self.helpdesk.is_address(addr)
    }
}

#[cfg(test)]
mod tests;

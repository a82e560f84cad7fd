//! Logging setup shared by the binaries.

use crate::config::LogFormat;
use tracing_subscriber::EnvFilter;

/// Installs a global `tracing` subscriber writing to stderr, human or JSON.
/// The level comes from `RUST_LOG`, else `default_level` (`info` for
/// services, `warn` for command-line tools). Calling it twice is harmless.
///
/// Without `RUST_LOG`, lapin's warning for each message the broker returns
/// is left out: celeriac publishes with `mandatory` and reports a returned
/// message itself (an unroutable-task error to the caller, or the worker's
/// own log line), while lapin's line would copy the whole message, its
/// task arguments included, into the log. sea-orm-migration's lines (a
/// few per migration on a first start) are left out too: the result
/// backend logs one line naming the migrations it applied.
///
/// Command-line tools (`warn`) also leave out the rest of lapin's lines:
/// they report every failure in one line of their own, and lapin's lines
/// about the connection it gave up would come around it.
pub fn init(format: LogFormat, default_level: &str) {
    use std::io::IsTerminal;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        let lapin = if default_level == "warn" {
            ",lapin=off"
        } else {
            ""
        };
        EnvFilter::new(format!(
            "{default_level}{lapin},lapin::returned_messages=error,sea_orm_migration=warn"
        ))
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

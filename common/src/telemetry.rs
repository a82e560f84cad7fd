//! Logging setup shared by the binaries.

use crate::config::LogFormat;
use tracing_subscriber::EnvFilter;

/// Installs a global `tracing` subscriber writing to stderr, human or JSON.
/// The level comes from `RUST_LOG` (default `info`). Calling it twice is harmless.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

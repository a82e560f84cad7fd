//! The one wait for a stop request that every long-running command uses.

/// Which signal asked the process to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopSignal {
    /// SIGTERM (a service manager, `kill`, `docker stop`).
    Term,
    /// SIGINT (Ctrl-C).
    Int,
}

impl std::fmt::Display for StopSignal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StopSignal::Term => "SIGTERM",
            StopSignal::Int => "SIGINT",
        })
    }
}

/// Resolves at the first SIGTERM or SIGINT. Where SIGTERM cannot be
/// watched (no signal driver), waits for SIGINT alone.
pub async fn stop_signal() -> StopSignal {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => tokio::select! {
            _ = term.recv() => StopSignal::Term,
            _ = tokio::signal::ctrl_c() => StopSignal::Int,
        },
        Err(e) => {
            tracing::debug!(error = %e, "cannot watch SIGTERM; waiting for SIGINT only");
            let _ = tokio::signal::ctrl_c().await;
            StopSignal::Int
        }
    }
}

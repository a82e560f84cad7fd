//! Results expire: every worker with a result backend deletes what is
//! older than `result_expires_secs` (Celery's `result_expires`, which its
//! beat runs as `celery.backend_cleanup`), so that result and chord rows do
//! not pile up. What goes, and what stays, is in
//! `celeriac_common::backend::expiry`.
//!
//! Each worker purges once per period (the expiry time, at most an hour),
//! starting at a random point of its first period, so that workers
//! started together do not purge together. Several workers purging at once
//! is harmless: a row is deleted once, the others find it gone.

use celeriac_common::backend::ResultBackend;
use celeriac_common::backend::expiry::cutoff;
use celeriac_common::backoff::{Backoff, Jitter};
use std::time::Duration;

/// The longest time between two purges.
const MAX_PERIOD: Duration = Duration::from_secs(3600);

/// How often a worker purges when results expire after `expires`.
pub(crate) fn period(expires: Duration) -> Duration {
    expires.clamp(Duration::from_secs(1), MAX_PERIOD)
}

/// Purges what expired, once per [`period`], for ever (the worker aborts
/// it at shutdown). A failed purge is logged and tried again next period.
pub(crate) async fn run(backend: ResultBackend, expires: Duration) {
    let every = period(expires);
    // Uniform in [0, every]: the first purge of this worker.
    let first = Backoff::new(every, every).jitter(Jitter::Full).delay_for(0);
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + first, every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        // An age before the calendar's start: nothing ever expires.
        let Some(cutoff) = cutoff(expires) else {
            return;
        };
        match backend.purge_expired(cutoff).await {
            Ok(p) if !p.is_empty() => tracing::info!(
                tasks = p.tasks,
                chords = p.chords,
                "expired results deleted (older than result_expires_secs)"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(
                error = %e,
                source = ?std::error::Error::source(&e),
                "cannot delete expired results; trying again in {every:?}"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_period_is_the_expiry_time_at_most_an_hour() {
        assert_eq!(period(Duration::from_secs(86_400)), MAX_PERIOD);
        assert_eq!(period(Duration::from_secs(120)), Duration::from_secs(120));
        assert_eq!(period(Duration::ZERO), Duration::from_secs(1));
    }
}

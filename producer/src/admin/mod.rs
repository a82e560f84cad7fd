//! The admin commands that talk to running workers over the broker, as
//! Celery's do, so they work against celeriac and Python Celery workers
//! alike: `celeriac inspect` and `celeriac control` (remote control over
//! the `celery.pidbox` fanout, see [`celeriac::mailbox`]) and `celeriac events`
//! (Celery's events read from `celeryev`).

pub(crate) mod events;
pub(crate) mod inspect;

use celeriac_common::broker::BrokerError;

/// Why an admin command could not do its work.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AdminError {
    /// The broker could not be reached, or refused or did not answer a step.
    #[error(transparent)]
    Broker(#[from] BrokerError),
    /// Output could not be written as JSON.
    #[error("cannot print JSON")]
    Json(#[source] serde_json::Error),
    /// The broker ended the events consumer (connection lost, queue deleted).
    #[error("the broker ended the events stream: {0}")]
    EventsEnded(String),
}

/// Seconds from the command line: a finite, non-negative number.
pub(crate) fn parse_secs(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(s) if s.is_finite() && s >= 0.0 => Ok(s),
        _ => Err(format!("{text:?} is not a non-negative number of seconds")),
    }
}

//! Reaching the broker at startup, as Celery's
//! `broker_connection_retry_on_startup`: a worker or beat started before
//! the broker (a host booting, a cluster restarting) waits for it.

use crate::backoff::{Backoff, Jitter};
use crate::cli::one_line;
use crate::config::Config;
use std::future::Future;
use std::time::Duration;

/// Between attempts at startup: 1 s doubling to 30 s, jittered so that
/// many processes started together do not knock at the same instant.
const STARTUP_BACKOFF: Backoff =
    Backoff::new(Duration::from_secs(1), Duration::from_secs(30)).jitter(Jitter::Equal);

/// Runs `attempt` (connecting to the broker) until it succeeds. With
/// `broker_connection_retry_on_startup` (the default), an error that
/// `transient` says may pass is logged in one line with the delay before
/// the next attempt, and the attempt repeated for as long as it takes;
/// without it, or for any other error, the error is returned at once.
pub async fn retry_on_startup<T, E, F, Fut>(
    config: &Config,
    transient: impl Fn(&E) -> bool,
    attempt: F,
) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: std::error::Error + 'static,
{
    retry_with(config, STARTUP_BACKOFF, transient, attempt).await
}

async fn retry_with<T, E, F, Fut>(
    config: &Config,
    mut backoff: Backoff,
    transient: impl Fn(&E) -> bool,
    mut attempt: F,
) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: std::error::Error + 'static,
{
    loop {
        match attempt().await {
            Ok(value) => {
                if backoff.failures() > 0 {
                    tracing::info!(
                        "reached the broker after {} failed attempts",
                        backoff.failures()
                    );
                }
                return Ok(value);
            }
            Err(e) if !config.broker_connection_retry_on_startup || !transient(&e) => {
                return Err(e);
            }
            Err(e) => {
                let wait = backoff.next_delay();
                tracing::warn!(
                    "{}; retrying in {:.1}s (attempt {} failed; \
                     broker_connection_retry_on_startup = false exits instead)",
                    one_line(&e),
                    wait.as_secs_f64(),
                    backoff.failures(),
                );
                tokio::time::sleep(wait).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[derive(Debug, thiserror::Error)]
    #[error("down (permanent: {0})")]
    struct Down(bool);

    const FAST: Backoff = Backoff::new(Duration::from_millis(1), Duration::from_millis(1));

    #[tokio::test]
    async fn retries_transient_errors_until_success_unless_told_not_to() {
        let config = Config::default();
        let calls = Cell::new(0);
        let got = retry_with(
            &config,
            FAST,
            |e: &Down| !e.0,
            || {
                calls.set(calls.get() + 1);
                let n = calls.get();
                async move { if n < 4 { Err(Down(false)) } else { Ok(n) } }
            },
        )
        .await;
        assert_eq!(got.expect("succeeds"), 4);

        calls.set(0);
        let permanent = retry_with(
            &config,
            FAST,
            |e: &Down| !e.0,
            || {
                calls.set(calls.get() + 1);
                async { Err::<(), _>(Down(true)) }
            },
        );
        assert!(permanent.await.is_err());
        assert_eq!(calls.get(), 1, "a permanent error is not retried");

        let fail_fast = Config {
            broker_connection_retry_on_startup: false,
            ..Config::default()
        };
        calls.set(0);
        let once = retry_with(
            &fail_fast,
            FAST,
            |e: &Down| !e.0,
            || {
                calls.set(calls.get() + 1);
                async { Err::<(), _>(Down(false)) }
            },
        );
        assert!(once.await.is_err());
        assert_eq!(calls.get(), 1, "retry on startup switched off");
    }
}

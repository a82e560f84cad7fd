//! Time limits on broker round trips: nothing waits for ever on the network.

use super::BrokerError;
use futures_util::TryFutureExt;
use lapin::Connection;
use std::future::Future;
use std::time::Duration;

/// Waits at most `limit` for a broker operation `op` (for example
/// `"channel.open"`); its error, or its silence, becomes a [`BrokerError`].
/// Every broker round trip outside of publishing goes through here or
/// [`within`].
pub async fn bounded<T>(
    op: &'static str,
    limit: Duration,
    fut: impl Future<Output = lapin::Result<T>>,
) -> Result<T, BrokerError> {
    within(
        op,
        limit,
        fut.map_err(|source| BrokerError::Channel { op, source }),
    )
    .await
}

/// Like [`bounded`], for an operation whose errors are already mapped
/// (declares name what they declare).
pub async fn within<T>(
    op: &'static str,
    limit: Duration,
    fut: impl Future<Output = Result<T, BrokerError>>,
) -> Result<T, BrokerError> {
    tokio::time::timeout(limit, fut)
        .await
        .unwrap_or(Err(BrokerError::Timeout { op, after: limit }))
}

/// Closes `connection`, waiting at most `limit` for the broker's answer
/// (when it does not come, the socket is dropped all the same).
pub async fn close(connection: &Connection, limit: Duration, reason: &str) {
    let _ = bounded(
        "connection.close",
        limit,
        connection.close(200, reason.into()),
    )
    .await;
}

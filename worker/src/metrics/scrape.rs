//! Serving the worker's metrics: the values read at each scrape (tasks
//! running, deliveries held, the queues' lengths from the broker).

use super::Metrics;
use crate::session::Session;
use crate::shared::Shared;
use celeriac_common::broker;
use celeriac_common::http::{Exporter, HttpError, HttpServer, Refresh};
use lapin::options::QueueDeclareOptions;
use prometheus_client::registry::Registry;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError, Weak};
use std::time::Duration;
use tokio::net::TcpListener;

/// How long a scrape waits for each broker round trip.
const BROKER_LIMIT: Duration = Duration::from_millis(500);

/// Serves `/metrics` (`registry`) and `/health` of the worker sharing
/// `shared` on `listener`, if both are set. The server holds no strong
/// reference to `shared`.
pub(crate) fn serve(
    listener: Option<TcpListener>,
    registry: Option<Registry>,
    shared: &Arc<Shared>,
) -> Result<Option<HttpServer>, HttpError> {
    let (Some(listener), Some(registry), Some(metrics)) = (listener, registry, &shared.metrics)
    else {
        return Ok(None);
    };
    let weak = Arc::downgrade(shared);
    let refresh: Refresh = Arc::new(move || Box::pin(refresh(weak.clone())));
    let exporter = Exporter::new(registry, metrics.health.clone()).with_refresh(refresh);
    let addr = shared.config.worker_http_addr.clone().unwrap_or_default();
    HttpServer::serve(listener, exporter)
        .map(Some)
        .map_err(|source| HttpError { addr, source })
}

/// Sets the worker's health (nothing without metrics).
pub(crate) fn health(metrics: Option<&Metrics>, ok: bool, detail: String) {
    match metrics {
        Some(m) if ok => m.health.ok(detail),
        Some(m) => m.health.unavailable(detail),
        None => {}
    }
}

/// A broker session was opened: scrapes read it from now on, and each
/// after the first is a reconnection.
pub(crate) fn session_opened(metrics: Option<&Metrics>, session: &Session) {
    if let Some(m) = metrics {
        let earlier = m
            .session
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .replace(session.view());
        if earlier.is_some() {
            m.reconnects.inc();
        }
    }
}

/// The health detail of a worker consuming: "consuming 2 queues".
pub(crate) fn consuming(shared: &Shared) -> String {
    let n = shared.queues.lock().map_or(0, |q| q.len());
    format!("consuming {n} queue{}", if n == 1 { "" } else { "s" })
}

async fn refresh(shared: Weak<Shared>) {
    let Some(shared) = shared.upgrade() else {
        return;
    };
    let Some(m) = &shared.metrics else {
        return;
    };
    let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
    m.up.set(i64::from(m.health.is_ok()));
    m.active.set(gauge(shared.running.load(Ordering::Relaxed)));
    m.prefetch_limit.set(i64::from(shared.config.prefetch()));
    let (connection, held) = {
        let session = m.session.lock().unwrap_or_else(PoisonError::into_inner);
        match session.as_ref() {
            Some(s) => (Some(s.connection.clone()), s.window.unsettled()),
            None => (None, 0),
        }
    };
    m.prefetch_in_use.set(gauge(held));
    let Some(connection) = connection.filter(|c| c.status().connected()) else {
        return;
    };
    let queues = shared
        .queues
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let Ok(channel) =
        broker::bounded("channel.open", BROKER_LIMIT, connection.create_channel()).await
    else {
        return;
    };
    for queue in &queues {
        let passive = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let declare = channel.queue_declare(queue.as_str().into(), passive, Default::default());
        match broker::bounded("queue.declare", BROKER_LIMIT, declare).await {
            Ok(q) => m.queue(queue, q.message_count(), q.consumer_count()),
            // A missing queue closes the channel: the rest wait for the next scrape.
            Err(e) => {
                tracing::debug!(queue, error = %e, "cannot read the queue's length");
                break;
            }
        }
    }
    let close = channel.close(200, "metrics read".into());
    let _ = broker::bounded("channel.close", BROKER_LIMIT, close).await;
}

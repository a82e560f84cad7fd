//! The small HTTP server of `celeriac-worker` and `celeriac-beat` (feature
//! `http`): `GET /metrics` in the Prometheus text format (version 0.0.4)
//! and `GET /health`, 200 while the process does its job and 503 when it
//! cannot, with a JSON body saying why:
//! `{"status": "ok", "detail": "consuming 1 queue"}`,
//! `{"status": "unavailable", "detail": "lost the broker: ..."}`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), celeriac_common::http::HttpError> {
//! use celeriac_common::http::{Exporter, Health, HttpServer};
//! use prometheus_client::registry::Registry;
//!
//! let health = Health::new("starting");
//! let exporter = Exporter::new(Registry::default(), health.clone());
//! let server = HttpServer::start("127.0.0.1:9808", exporter).await?;
//! health.ok("running");
//! // ...
//! server.stop().await;
//! # Ok(()) }
//! ```

mod health;
mod histogram;

pub use health::{Health, HealthStatus};
pub use histogram::{AtomicHistogram, DEFAULT_BUCKETS, WAIT_BUCKETS};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::future::BoxFuture;
use prometheus_client::encoding::prometheus_text;
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Run before each scrape, to bring values read from elsewhere up to date
/// (a queue's length from the broker, the deliveries held).
pub type Refresh = Arc<dyn Fn() -> BoxFuture<'static, ()> + Send + Sync>;

/// How long a scrape waits for [`Refresh`] before answering with what it has.
pub const REFRESH_LIMIT: Duration = Duration::from_secs(2);

/// The HTTP server could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot serve /metrics and /health on {addr} (expected HOST:PORT, e.g. 127.0.0.1:9808)")]
pub struct HttpError {
    /// The address asked for.
    pub addr: String,
    /// Why.
    #[source]
    pub source: std::io::Error,
}

/// What the server serves: the metrics, the health, and what to refresh
/// before a scrape.
pub struct Exporter {
    registry: Registry,
    health: Health,
    refresh: Option<Refresh>,
}

impl Exporter {
    /// Serves `registry` and `health`.
    pub fn new(registry: Registry, health: Health) -> Exporter {
        Exporter {
            registry,
            health,
            refresh: None,
        }
    }

    /// Runs `refresh` (for at most [`REFRESH_LIMIT`]) before each scrape.
    pub fn with_refresh(mut self, refresh: Refresh) -> Exporter {
        self.refresh = Some(refresh);
        self
    }
}

/// A running server; stops when [`HttpServer::stop`] is called or it is dropped.
#[derive(Debug)]
pub struct HttpServer {
    local: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl HttpServer {
    /// Listens on `addr` (`HOST:PORT`; port 0 picks a free one).
    pub async fn bind(addr: &str) -> Result<TcpListener, HttpError> {
        let error = |source| HttpError {
            addr: addr.to_owned(),
            source,
        };
        TcpListener::bind(addr).await.map_err(error)
    }

    /// Binds `addr` and serves `exporter` there.
    pub async fn start(addr: &str, exporter: Exporter) -> Result<HttpServer, HttpError> {
        let listener = Self::bind(addr).await?;
        Self::serve(listener, exporter).map_err(|source| HttpError {
            addr: addr.to_owned(),
            source,
        })
    }

    /// Serves `exporter` on a listener bound with [`HttpServer::bind`].
    pub fn serve(listener: TcpListener, exporter: Exporter) -> std::io::Result<HttpServer> {
        let local = listener.local_addr()?;
        let app = Router::new()
            .route("/metrics", get(metrics))
            .route("/health", get(health))
            .with_state(Arc::new(exporter));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
            if let Err(e) = served {
                tracing::warn!(error = %e, "the /metrics and /health server stopped");
            }
        });
        tracing::info!(%local, "serving /metrics and /health");
        Ok(HttpServer {
            local,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Stops listening; waits (a second at most) for answers being written.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let abort = task.abort_handle();
            if tokio::time::timeout(Duration::from_secs(1), task)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

async fn metrics(State(exporter): State<Arc<Exporter>>) -> Response {
    if let Some(refresh) = &exporter.refresh
        && tokio::time::timeout(REFRESH_LIMIT, refresh())
            .await
            .is_err()
    {
        tracing::debug!("metrics refresh timed out; answering with the last values");
    }
    let mut text = String::with_capacity(16 * 1024);
    match prometheus_text::encode(&mut text, &exporter.registry) {
        Ok(()) => (
            [(header::CONTENT_TYPE, prometheus_text::CONTENT_TYPE)],
            text,
        )
            .into_response(),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "cannot encode the metrics\n",
        )
            .into_response(),
    }
}

async fn health(State(exporter): State<Arc<Exporter>>) -> Response {
    let status = exporter.health.status();
    let (code, word) = if status.ok {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
    };
    let body = serde_json::json!({"status": word, "detail": status.detail});
    (code, axum::Json(body)).into_response()
}

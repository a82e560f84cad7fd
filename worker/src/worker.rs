//! `Worker`: builder, run loop, reconnection and warm shutdown.

use crate::context::{TaskContext, TaskFailure};
use crate::events::{self, Events};
use crate::heartbeat;
use crate::inflight::Inflight;
use crate::metrics::{self, Metrics};
use crate::options::TaskOptions;
use crate::recorder;
use crate::registry::Registry;
use crate::session::Session;
use crate::shared::Shared;
use celeriac_common::backend::workers::WorkerInfo;
use celeriac_common::backend::{BackendError, ResultBackend};
use celeriac_common::backoff::{Backoff, Jitter};
use celeriac_common::broker::{self, BrokerError};
use celeriac_common::http::HttpServer;
use celeriac_common::{Config, TaskDef, mask_url};
use serde_json::{Map, Value};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, Semaphore, mpsc, watch};

/// Why a worker could not start.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The broker is unreachable or refused a declaration.
    #[error(transparent)]
    Broker(#[from] BrokerError),
    /// The result backend could not be opened or migrated.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// The configuration is unusable.
    #[error("invalid worker configuration: {0}")]
    Config(String),
    /// The `/metrics` and `/health` address cannot be listened on.
    #[error(transparent)]
    Http(#[from] celeriac_common::http::HttpError),
}

/// Collects task handlers, then builds a [`Worker`].
pub struct WorkerBuilder {
    config: Config,
    registry: Registry,
}

impl WorkerBuilder {
    /// Registers an async handler for task `T`.
    pub fn register<T, F, Fut, E>(mut self, handler: F) -> Self
    where
        T: TaskDef,
        F: Fn(TaskContext, T::Args) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T::Output, E>> + Send + 'static,
        E: Into<TaskFailure>,
    {
        self.registry.insert_async::<T, F, Fut, E>(handler);
        self
    }

    /// Registers a blocking handler for task `T`; it runs on tokio's blocking
    /// thread pool, never on the async threads.
    pub fn register_blocking<T, F, E>(mut self, handler: F) -> Self
    where
        T: TaskDef,
        F: Fn(TaskContext, T::Args) -> Result<T::Output, E> + Send + Sync + 'static,
        E: Into<TaskFailure>,
    {
        self.registry.insert_blocking::<T, F, E>(handler);
        self
    }

    /// Registers an untyped async handler under `name`, taking Celery's raw
    /// `args` and `kwargs`.
    pub fn register_raw<F, Fut, E>(mut self, name: &str, handler: F) -> Self
    where
        F: Fn(TaskContext, Vec<Value>, Map<String, Value>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Value, E>> + Send + 'static,
        E: Into<TaskFailure>,
    {
        self.registry.insert_raw(name, handler);
        self
    }

    /// Sets the retry policy, time limits and rate limit of the task called
    /// `name` (defaults: `TaskOptions::default()`).
    pub fn options(self, name: &str, options: TaskOptions) -> Self {
        self.registry.set_options(name, options);
        self
    }

    /// Checks the configuration, opens (and migrates) the result backend and
    /// checks that the broker is reachable: with
    /// `broker_connection_retry_on_startup` (the default) waits for it,
    /// logging each failed attempt, else returns the error at once.
    pub async fn build(self) -> Result<Worker, WorkerError> {
        let config = self.config;
        if config.queues.is_empty() {
            return Err(WorkerError::Config(
                "no queues to consume (set --queues)".into(),
            ));
        }
        if config.concurrency == 0 {
            return Err(WorkerError::Config("concurrency must be at least 1".into()));
        }
        if config.worker_heartbeat_secs == 0 {
            return Err(WorkerError::Config(
                "worker_heartbeat_secs must be at least 1".into(),
            ));
        }
        // Flags, and a configuration built in code, come after `load`'s check.
        config.check("worker configuration").map_err(|e| {
            WorkerError::Config(match e {
                celeriac_common::ConfigError::Invalid { message, .. } => message,
                other => other.to_string(),
            })
        })?;
        let backend = if config.results_enabled() && !config.rpc_results() {
            let backend = ResultBackend::connect(&config.result_backend)
                .await?
                .with_call_timeout(config.result_timeout());
            if config.migrate_on_start {
                backend.migrate().await?;
            }
            Some(backend)
        } else {
            None
        };
        // Wait for the broker (`broker_connection_retry_on_startup`), or
        // fail fast with a clear error if it is unreachable.
        let probe = broker::retry_on_startup(&config, BrokerError::is_transient, || {
            broker::connect_config(&config, &config.hostname)
        })
        .await?;
        broker::close(&probe, config.connect_timeout(), "reachable").await;
        let http = match &config.worker_http_addr {
            Some(addr) => Some(HttpServer::bind(addr).await?),
            None => None,
        };
        Ok(Worker {
            config,
            registry: Arc::new(self.registry),
            backend,
            http,
        })
    }
}

/// A configured worker, ready to run.
pub struct Worker {
    config: Config,
    registry: Arc<Registry>,
    backend: Option<ResultBackend>,
    /// Where `/metrics` and `/health` are served (`worker_http_addr`).
    http: Option<tokio::net::TcpListener>,
}

const RECONNECT_START: Duration = Duration::from_millis(200);
const RECONNECT_MAX: Duration = Duration::from_secs(5);
/// A session that ends sooner than this is followed by a backoff, so a
/// consumer cancelled again and again does not make the worker spin.
const SHORT_SESSION: Duration = Duration::from_secs(10);

impl Worker {
    /// Starts building a worker with `config`.
    pub fn builder(config: Config) -> WorkerBuilder {
        WorkerBuilder {
            config,
            registry: Registry::default(),
        }
    }

    /// The address `/metrics` and `/health` are served on, if any (with
    /// port 0 in `worker_http_addr`, the one picked).
    pub fn http_addr(&self) -> Option<std::net::SocketAddr> {
        self.http.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Runs until SIGTERM or SIGINT, then shuts down warmly.
    pub async fn run(self) -> Result<(), WorkerError> {
        let mut stop = Box::pin(celeriac_common::shutdown::stop_signal());
        // Polled once now, so that its handlers are in place before the
        // worker starts: a signal during startup is not lost.
        let early = futures_util::FutureExt::now_or_never(&mut stop);
        self.run_until(async move {
            let signal = match early {
                Some(signal) => signal,
                None => stop.await,
            };
            tracing::info!("{signal} received: warm shutdown");
        })
        .await
    }

    /// Runs until `shutdown` completes: consumes, reconnecting with backoff
    /// whenever the broker goes away; then stops consuming, lets running
    /// tasks finish within the grace period, returns unstarted messages to
    /// their queues, and flushes outcomes.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> Result<(), WorkerError> {
        let config = Arc::new(self.config);
        let (rec_tx, rec_rx) = mpsc::channel(usize::from(config.prefetch()) * 2 + 16);
        let recorder = tokio::spawn(recorder::run(
            self.backend.clone(),
            rec_rx,
            config.prefetch(),
        ));
        let revocations = crate::revoke::Revocations::default();
        let me = WorkerInfo::this_process(&config.hostname);
        let beat_every = Duration::from_secs(config.worker_heartbeat_secs);
        let (beat_stop_tx, beat_stop_rx) = watch::channel(false);
        let heartbeats = match &self.backend {
            Some(backend) => {
                heartbeat::announce(backend, &me, beat_every).await;
                Some(tokio::spawn(heartbeat::run(
                    backend.clone(),
                    me.clone(),
                    beat_every,
                    beat_stop_rx,
                )))
            }
            None => None,
        };
        let backend = self.backend.clone();
        let (events, events_rx) = Events::new(&config.hostname, config.worker_send_events);
        let inflight = Arc::new(Inflight::default());
        let (events_stop_tx, events_stop_rx) = watch::channel(false);
        let flusher = tokio::spawn(events::run(
            events.clone(),
            events_rx,
            events_stop_rx.clone(),
        ));
        let event_beats = tokio::spawn(events::heartbeats(
            events.clone(),
            inflight.clone(),
            beat_every,
            events_stop_rx,
        ));
        let remote_stop = Arc::new(Notify::new());
        let (metrics, prom) =
            Metrics::prepare(self.http.is_some(), &config, &self.registry, &events);
        let shared = Arc::new(Shared {
            revocations,
            registry: self.registry,
            backend: self.backend,
            permits: Semaphore::new(config.concurrency),
            running: AtomicUsize::new(0),
            idle: Notify::new(),
            recorder: rec_tx,
            config: config.clone(),
            worker_id: me.id.clone(),
            claims: Arc::default(),
            inflight: inflight.clone(),
            events: events.clone(),
            queues: std::sync::Mutex::new(config.queues.clone()),
            started: Instant::now(),
            remote_stop: remote_stop.clone(),
            metrics: metrics.clone(),
        });
        let http = metrics::serve(self.http, prom, &shared)?;
        // Results expire (0: never).
        let expiry = shared
            .backend
            .clone()
            .filter(|_| config.result_expires_secs > 0)
            .map(|backend| {
                let expires = Duration::from_secs(config.result_expires_secs);
                tokio::spawn(crate::expiry::run(backend, expires))
            });
        let health = |ok, detail: String| metrics::health(metrics.as_deref(), ok, detail);
        health(false, "connecting to the broker".into());
        tracing::info!(
            hostname = %config.hostname,
            worker.id = %me.id,
            broker = %mask_url(&config.broker_url),
            results = %mask_url(&config.result_backend),
            queues = ?config.queues,
            concurrency = config.concurrency,
            prefetch = config.prefetch(),
            tasks = ?shared.registry.names(),
            "worker starting"
        );
        let shutdown = async move {
            tokio::select! {
                _ = shutdown => {}
                _ = remote_stop.notified() => {}
            }
        };
        tokio::pin!(shutdown);
        let mut backoff = Backoff::new(RECONNECT_START, RECONNECT_MAX).jitter(Jitter::Equal);
        let mut session = None;
        let mut retired = tokio::task::JoinSet::new();
        loop {
            let opened = tokio::select! {
                _ = &mut shutdown => break,
                s = Session::open(&shared) => s,
            };
            let s = match opened {
                Ok(s) => s,
                Err(e) => {
                    health(false, format!("cannot reach the broker: {e}"));
                    let wait = backoff.next_delay();
                    tracing::warn!(
                        error = %e,
                        source = ?std::error::Error::source(&e),
                        "cannot consume; reconnecting in {wait:?}"
                    );
                    tokio::select! {
                        _ = &mut shutdown => break,
                        _ = tokio::time::sleep(wait) => {}
                    }
                    continue;
                }
            };
            let began = Instant::now();
            metrics::session_opened(metrics.as_deref(), &s);
            // Revokes broadcast while this worker was not connected are in
            // the result backend: load them at every (re)connection.
            load_revocations(&shared).await;
            events.worker("worker-online", &inflight, beat_every);
            tracing::info!(hostname = %config.hostname, "worker ready, consuming");
            health(true, metrics::consuming(&shared));
            let keep = tokio::select! {
                _ = &mut shutdown => true,
                reason = s.consume(shared.clone()) => {
                    tracing::warn!(%reason, "stopped consuming; reconnecting");
                    health(false, format!("stopped consuming: {reason}"));
                    false
                }
            };
            if keep {
                session = Some(s);
                break;
            }
            // The session may still be connected (the broker cancelled one
            // consumer: its queue was deleted); it stops in the background.
            let (prefetch, grace) = (
                config.prefetch(),
                Duration::from_secs(config.shutdown_grace_secs),
            );
            while retired.try_join_next().is_some() {}
            retired.spawn(s.retire(prefetch, grace));
            if began.elapsed() < SHORT_SESSION {
                // Ended again right away: back off as for a failed connect.
                tokio::select! {
                    _ = &mut shutdown => break,
                    _ = tokio::time::sleep(backoff.next_delay()) => {}
                }
            } else {
                backoff.reset();
            }
        }
        health(false, "shutting down".into());
        // No purge competes with the flush of the last outcomes.
        if let Some(expiry) = expiry {
            expiry.abort();
        }
        if let Some(s) = &session {
            s.cancel().await;
            s.give_back_waiting();
            s.return_unhandled(config.prefetch()).await;
        }
        let grace = Duration::from_secs(config.shutdown_grace_secs);
        let drained = tokio::time::timeout(grace, shared.wait_idle())
            .await
            .is_ok();
        if !drained {
            tracing::warn!(
                running = shared.running.load(Ordering::SeqCst),
                "grace period of {grace:?} over; unfinished tasks return to the queue"
            );
        }
        drop(shared);
        if tokio::time::timeout(Duration::from_secs(5), recorder)
            .await
            .is_err()
        {
            tracing::warn!(
                "outcomes not yet stored are left unacknowledged; \
                 their messages will be redelivered"
            );
        }
        // Sessions retired earlier close once their last acks are out.
        if tokio::time::timeout(Duration::from_secs(5), retired.join_all())
            .await
            .is_err()
        {
            tracing::warn!("a retired broker session did not close in time");
        }
        // worker-offline goes out before the connection closes.
        events.worker("worker-offline", &inflight, beat_every);
        let _ = events_stop_tx.send(true);
        event_beats.abort();
        if tokio::time::timeout(Duration::from_secs(2), flusher)
            .await
            .is_err()
        {
            tracing::debug!("the last events were not published in time");
        }
        if let Some(s) = session {
            s.close().await;
        }
        // Heartbeats last until every outcome is stored: tasks still running
        // in the grace period are not taken for lost ones.
        // Bounded, so an unreachable database does not hold up the exit.
        let _ = beat_stop_tx.send(true);
        if let Some(h) = heartbeats {
            let abort = h.abort_handle();
            if tokio::time::timeout(Duration::from_secs(2), h)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
        if let Some(backend) = backend {
            match tokio::time::timeout(Duration::from_secs(5), backend.worker_stopped(&me.id)).await
            {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(
                        error = %e,
                        "cannot remove the worker's heartbeat row; it expires by itself"
                    )
                }
                Err(_) => tracing::warn!(
                    "removing the worker's heartbeat row timed out; it expires by itself"
                ),
            }
        }
        if let Some(http) = http {
            http.stop().await;
        }
        tracing::info!(hostname = %config.hostname, "worker stopped");
        Ok(())
    }
}

async fn load_revocations(shared: &Shared) {
    let Some(backend) = &shared.backend else {
        return;
    };
    // Revocations are kept as long as results (0: for ever).
    let since = match shared.config.result_expires_secs {
        0 => None,
        secs => celeriac_common::backend::expiry::cutoff(Duration::from_secs(secs)),
    };
    match recorder::bounded(backend, backend.revoked_since(since)).await {
        Ok(ids) => ids.iter().for_each(|id| shared.revocations.revoke(id)),
        Err(e) => tracing::warn!(error = %e, "cannot load revoked task ids"),
    }
}

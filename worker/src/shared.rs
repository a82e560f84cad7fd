//! The state every delivery of a worker shares.

use crate::claims::Claims;
use crate::events::Events;
use crate::inflight::Inflight;
use crate::metrics::Metrics;
use crate::recorder::RecorderTx;
use crate::registry::Registry;
use crate::revoke::Revocations;
use celeriac_common::Config;
use celeriac_common::backend::ResultBackend;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::{Notify, Semaphore};

/// State shared by every delivery of a worker.
pub(crate) struct Shared {
    pub(crate) revocations: Revocations,
    pub(crate) config: Arc<Config>,
    pub(crate) registry: Arc<Registry>,
    pub(crate) backend: Option<ResultBackend>,
    pub(crate) permits: Semaphore,
    pub(crate) running: AtomicUsize,
    pub(crate) idle: Notify,
    pub(crate) recorder: RecorderTx,
    /// This worker process's id in `celeriac_workers` and on STARTED rows.
    pub(crate) worker_id: String,
    /// The rows of chord callbacks and beat runs this process holds.
    pub(crate) claims: Arc<Claims>,
    /// The deliveries held (remote control's `active`, `reserved`, ...).
    pub(crate) inflight: Arc<Inflight>,
    /// Celery's events.
    pub(crate) events: Arc<Events>,
    /// The queues consumed; remote control's `add_consumer` and
    /// `cancel_consumer` change them, and the next session keeps them.
    pub(crate) queues: Mutex<Vec<String>>,
    /// When the worker started (`stats.uptime`).
    pub(crate) started: Instant,
    /// Notified by remote control's `shutdown`: a warm shutdown.
    pub(crate) remote_stop: Arc<Notify>,
    /// Metrics and health, when served (`--http`); nothing is counted without.
    pub(crate) metrics: Option<Arc<Metrics>>,
}

impl Shared {
    /// Resolves once no task is running.
    pub(crate) async fn wait_idle(&self) {
        loop {
            let notified = self.idle.notified();
            if self.running.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }

    /// One more task is running.
    pub(crate) fn task_started(&self) {
        self.running.fetch_add(1, Ordering::SeqCst);
    }

    /// A running task ended; wakes [`Shared::wait_idle`] after the last.
    pub(crate) fn task_ended(&self) {
        if self.running.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.idle.notify_waiters();
        }
    }
}

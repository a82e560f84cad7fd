//! Results by Celery's `rpc://` backend (`result_backend = "rpc://"`): the
//! client declares one reply queue of its own (a uuid, as Celery's
//! per-app `oid`), sets it as `reply_to` on every task it sends, and
//! consumes it on a connection of its own; workers (celeriac or Python)
//! publish each state of the task there. The latest state of each task is
//! kept in memory until [`AsyncResult::forget`](crate::AsyncResult::forget).
//!
//! As with Celery, a result is only for the client that sent the task,
//! and the queue is auto-deleted when its consumer goes: states published
//! while the consumer is reconnecting are lost, and a task sent by another
//! process cannot be read this way.

use celeriac_common::backoff::Backoff;
use celeriac_common::broker::{self, BrokerError};
use celeriac_common::{Config, TaskRecord, rpc};
use futures_util::StreamExt;
use lapin::Connection;
use lapin::options::BasicConsumeOptions;
use lapin::types::FieldTable;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;
use tokio::sync::{Notify, watch};

/// Between attempts to reconnect the reply consumer.
const RECONNECT: Backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));

/// The client's reply queue and the states read from it.
pub(crate) struct RpcResults {
    /// The reply queue (the `reply_to` of every task this client sends).
    pub(crate) queue: String,
    states: Mutex<HashMap<String, TaskRecord>>,
    changed: Notify,
    /// Dropped with this: the reader then closes its connection and ends.
    _stop: watch::Sender<()>,
}

impl RpcResults {
    /// Declares the reply queue and starts consuming it; fails if the
    /// broker cannot be reached now.
    pub(crate) async fn start(config: &Config) -> Result<Arc<RpcResults>, BrokerError> {
        let queue = uuid::Uuid::new_v4().to_string();
        let (conn, consumer) = consume(config, &queue).await?;
        let (stop, stopped) = watch::channel(());
        let results = Arc::new(RpcResults {
            queue: queue.clone(),
            states: Mutex::new(HashMap::new()),
            changed: Notify::new(),
            _stop: stop,
        });
        let link = Reader {
            me: Arc::downgrade(&results),
            config: config.clone(),
            queue,
            stopped,
        };
        tokio::spawn(link.read(conn, consumer));
        Ok(results)
    }

    /// The latest state read for `id`.
    pub(crate) fn get(&self, id: &str) -> Option<TaskRecord> {
        self.lock().get(id).cloned()
    }

    /// Forgets `id`; returns whether a state was held.
    pub(crate) fn forget(&self, id: &str) -> bool {
        self.lock().remove(id).is_some()
    }

    /// Waits until a new state arrives (for any task) or `limit` passes.
    pub(crate) async fn changed(&self, limit: Duration, check: impl Fn(&Self) -> bool) {
        let notified = self.changed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if check(self) {
            return;
        }
        let _ = tokio::time::timeout(limit, notified).await;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, TaskRecord>> {
        self.states.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keeps `record` unless a final state is held already (a late
    /// STARTED never hides a SUCCESS).
    fn keep(&self, record: TaskRecord) {
        let mut states = self.lock();
        let held_ready = states
            .get(&record.task_id)
            .is_some_and(|r| r.state.is_ready());
        if !held_ready || record.state.is_ready() {
            states.insert(record.task_id.clone(), record);
        }
        drop(states);
        self.changed.notify_waiters();
    }
}

/// A connection of its own, the reply queue declared and consumed
/// (auto-ack, as Celery's result consumer).
async fn consume(
    config: &Config,
    queue: &str,
) -> Result<(Connection, lapin::Consumer), BrokerError> {
    let limit = config.connect_timeout();
    let conn = broker::connect_config(config, "celeriac-rpc-results").await?;
    let set_up = async {
        let channel = broker::bounded("channel.open", limit, conn.create_channel()).await?;
        let expires = Duration::from_secs(config.result_expires_secs.max(1));
        rpc::declare_reply_queue(&channel, queue, expires, limit).await?;
        let opts = BasicConsumeOptions {
            no_ack: true,
            ..Default::default()
        };
        let consume = channel.basic_consume(queue.into(), "".into(), opts, FieldTable::default());
        broker::bounded("basic.consume", limit, consume).await
    };
    match set_up.await {
        Ok(consumer) => Ok((conn, consumer)),
        Err(e) => {
            broker::close(&conn, limit, "setup failed").await;
            Err(e)
        }
    }
}

/// What the background reader holds.
struct Reader {
    me: Weak<RpcResults>,
    config: Config,
    queue: String,
    stopped: watch::Receiver<()>,
}

impl Reader {
    /// Reads replies until [`RpcResults`] is dropped; reconnects (declaring
    /// the same queue again) when the connection is lost.
    async fn read(mut self, mut conn: Connection, mut consumer: lapin::Consumer) {
        let limit = self.config.connect_timeout();
        let mut backoff = RECONNECT;
        loop {
            loop {
                let next = tokio::select! {
                    next = consumer.next() => next,
                    _ = self.stopped.changed() => {
                        broker::close(&conn, limit, "client dropped").await;
                        return;
                    }
                };
                let Some(Ok(delivery)) = next else { break };
                let Some(results) = self.me.upgrade() else {
                    broker::close(&conn, limit, "client dropped").await;
                    return;
                };
                let correlation = delivery.properties.correlation_id().as_ref();
                match rpc::record_from_reply(&delivery.data, correlation.map(|c| c.as_str())) {
                    Ok(record) => results.keep(record),
                    Err(e) => tracing::warn!(error = %e, "unreadable rpc reply dropped"),
                }
            }
            broker::close(&conn, limit, "reconnecting").await;
            tracing::warn!(queue = %self.queue, "rpc reply consumer lost; reconnecting");
            (conn, consumer) = match self.reconnect(&mut backoff).await {
                Some(pair) => pair,
                None => return,
            };
        }
    }

    /// Connects again with backoff; `None` once the results are dropped.
    async fn reconnect(&mut self, backoff: &mut Backoff) -> Option<(Connection, lapin::Consumer)> {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(backoff.next_delay()) => {}
                _ = self.stopped.changed() => return None,
            }
            match consume(&self.config, &self.queue).await {
                Ok(pair) => {
                    backoff.reset();
                    return Some(pair);
                }
                Err(e) => tracing::warn!(error = %e, "cannot reconnect the rpc reply consumer"),
            }
        }
    }
}

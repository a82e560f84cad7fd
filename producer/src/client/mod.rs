//! The producer: one connection, one confirm-mode channel shared by every
//! caller, reconnected with backoff when the broker goes away.

mod link;
mod publish;
pub(crate) mod rpc;
mod sent;

use crate::options::{ApplyOptions, OptionsError};
use crate::result::AsyncResult;
use celeriac_common::backend::{BackendError, ResultBackend, TaskError, TaskOutcome};
use celeriac_common::broker::{self, BrokerError};
use celeriac_common::delay::DelayTooLong;
use celeriac_common::pidbox;
use celeriac_common::protocol::ProtocolError;
use celeriac_common::task::{ArgsError, split_args};
use celeriac_common::{Config, TaskDef};
use chrono::Utc;
use lapin::options::{BasicPublishOptions, QueuePurgeOptions};
use link::Link;
use serde_json::{Map, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Mutex, OnceCell, RwLock};

/// A call that could not be completed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Connecting to or declaring on the broker failed.
    #[error(transparent)]
    Broker(#[from] BrokerError),
    /// The broker stayed unreachable for the whole publish timeout; the message was not sent.
    #[error("broker unreachable for {waited:?}; task {task_id} was not sent ({last})")]
    Unavailable {
        /// How long the call waited.
        waited: Duration,
        /// The task that was not sent.
        task_id: String,
        /// The last error seen.
        last: String,
    },
    /// The broker could not be reached moments ago (by another call of
    /// this client) and is not tried again so soon.
    #[error("broker unreachable ({last})")]
    StillUnreachable {
        /// What the last attempt said.
        last: String,
    },
    /// The broker refused the message (negative confirm) every time it was
    /// sent again for `publish_timeout_secs` (a quorum queue refuses while
    /// it elects a leader: that passes).
    #[error("broker refused task {0} (negative publisher confirm)")]
    Nacked(String),
    /// No queue is bound for the exchange and routing key.
    #[error(
        "task {task_id} is unroutable: no queue bound to exchange {exchange:?} with routing key {routing_key:?}"
    )]
    Unroutable {
        /// The task.
        task_id: String,
        /// Exchange published to.
        exchange: String,
        /// Routing key used.
        routing_key: String,
    },
    /// Arguments could not be encoded for the task.
    #[error(transparent)]
    Args(#[from] ArgsError),
    /// The options contradict each other.
    #[error(transparent)]
    Options(#[from] OptionsError),
    /// The message could not be encoded.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// The result backend failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// The eta is further away than delayed delivery supports.
    #[error(transparent)]
    TooFar(#[from] DelayTooLong),
    /// Results are disabled (`result_backend = "none"`).
    #[error("results are disabled (result_backend = \"none\")")]
    ResultsDisabled,
    /// The call needs a database result backend, and results go by `rpc://`.
    #[error(
        "result_backend is rpc://: outcomes go to this client's reply queue only; \
         this needs a database result backend"
    )]
    NoDatabase,
}

/// Where a message goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Route {
    exchange: String,
    routing_key: String,
    /// The queue the message is for, declared (and bound to the delay
    /// queues when `delayed`) once per connection before the first publish.
    declare: String,
    /// Into the delay queues (which must be declared and bound to `declare`).
    delayed: bool,
}

struct Inner {
    config: Config,
    link: RwLock<Option<Arc<Link>>>,
    /// Held while connecting again; the last failed attempt (when, why).
    reconnecting: Mutex<Option<(std::time::Instant, String)>>,
    backend: OnceCell<ResultBackend>,
    /// The reply queue and the states read from it, with `rpc://`.
    rpc: Option<Arc<rpc::RpcResults>>,
    origin: String,
}

/// A handle to the broker (and, lazily, the result backend). Cheap to clone;
/// share one per process across threads and tasks.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field(
                "broker",
                &celeriac_common::mask_url(&self.inner.config.broker_url),
            )
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Connects to the broker now (failing fast with a clear error if it is
    /// unreachable); the result backend is opened on first use.
    pub async fn connect(config: Config) -> Result<Client, ClientError> {
        let origin = format!(
            "gen{}@{}",
            std::process::id(),
            celeriac_common::config::host_name()
        );
        let rpc = match config.rpc_results() {
            true => Some(rpc::RpcResults::start(&config).await?),
            false => None,
        };
        let client = Client {
            inner: Arc::new(Inner {
                config,
                link: RwLock::new(None),
                reconnecting: Mutex::new(None),
                backend: OnceCell::new(),
                rpc,
                origin,
            }),
        };
        let link = client.open_link().await?;
        *client.inner.link.write().await = Some(link);
        Ok(client)
    }

    /// The configuration this client was made with.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The `origin` header of this client's messages (`gen<pid>@<host>`).
    pub(crate) fn origin(&self) -> &str {
        &self.inner.origin
    }

    /// The rpc results, with `result_backend = "rpc://"`.
    pub(crate) fn rpc(&self) -> Option<&rpc::RpcResults> {
        self.inner.rpc.as_deref()
    }

    /// The `reply_to` of this client's messages: its rpc reply queue.
    pub(crate) fn reply_to(&self) -> Option<String> {
        self.rpc().map(|r| r.queue.clone())
    }

    /// Calls task `T` now with `args`. Returns once the broker holds the message.
    pub async fn delay<T: TaskDef>(
        &self,
        args: T::Args,
    ) -> Result<AsyncResult<T::Output>, ClientError> {
        self.apply_async::<T>(args, ApplyOptions::default()).await
    }

    /// Calls task `T` to run at `when`.
    pub async fn apply_at<T: TaskDef>(
        &self,
        when: chrono::DateTime<Utc>,
        args: T::Args,
    ) -> Result<AsyncResult<T::Output>, ClientError> {
        self.apply_async::<T>(args, ApplyOptions::default().eta(when))
            .await
    }

    /// Calls task `T` with options.
    pub async fn apply_async<T: TaskDef>(
        &self,
        args: T::Args,
        options: ApplyOptions,
    ) -> Result<AsyncResult<T::Output>, ClientError> {
        let (args, kwargs) = split_args(&args)?;
        let id = self.send(T::NAME, args, kwargs, options).await?;
        Ok(AsyncResult::new(self.clone(), id))
    }

    /// Calls a task by name with untyped arguments (for tasks defined
    /// elsewhere, for example in Python).
    pub async fn send_task(
        &self,
        name: &str,
        args: Vec<Value>,
        kwargs: Map<String, Value>,
        options: ApplyOptions,
    ) -> Result<AsyncResult<Value>, ClientError> {
        let id = self.send(name, args, kwargs, options).await?;
        Ok(AsyncResult::new(self.clone(), id))
    }

    /// A handle on an existing task id.
    pub fn async_result<R: serde::de::DeserializeOwned>(
        &self,
        id: impl Into<String>,
    ) -> AsyncResult<R> {
        AsyncResult::new(self.clone(), id.into())
    }

    /// Deletes every ready message in `queue`; returns how many.
    pub async fn purge(&self, queue: &str) -> Result<u32, ClientError> {
        broker::check_name("queue name", queue, broker::MAX_NAME_BYTES)?;
        let link = self.link().await?;
        let purge = link
            .channel
            .queue_purge(queue.into(), QueuePurgeOptions::default());
        let limit = self.inner.config.connect_timeout();
        match broker::bounded("queue.purge", limit, purge).await {
            Ok(n) => Ok(n),
            Err(e) => {
                self.reset_link().await;
                Err(e.into())
            }
        }
    }

    /// The result backend, opened (and migrated, unless `migrate_on_start` is
    /// off) on first use.
    pub async fn backend(&self) -> Result<&ResultBackend, ClientError> {
        let config = &self.inner.config;
        if !config.results_enabled() {
            return Err(ClientError::ResultsDisabled);
        }
        if config.rpc_results() {
            return Err(ClientError::NoDatabase);
        }
        self.inner
            .backend
            .get_or_try_init(|| async {
                let backend = ResultBackend::connect(&config.result_backend).await?;
                if config.migrate_on_start {
                    backend.migrate().await?;
                }
                Ok(backend)
            })
            .await
    }

    /// Revokes a task by id: no worker will start it. The revoke is
    /// broadcast to every running worker (Celery's `celery.pidbox`, so Python
    /// workers honour it too) and recorded as REVOKED in the result backend,
    /// from which workers that start later load it; it also covers messages
    /// waiting in the delay queues. A task that already finished keeps its
    /// outcome: returns false then.
    pub async fn revoke(&self, task_id: &str) -> Result<bool, ClientError> {
        self.revoke_with(task_id, false).await
    }

    /// Like [`Client::revoke`]; with `terminate`, a worker running the task
    /// (an async one: blocking tasks cannot be stopped) also stops it.
    pub async fn revoke_with(&self, task_id: &str, terminate: bool) -> Result<bool, ClientError> {
        crate::options::check_task_id(task_id)?;
        if self.config().results_enabled() && !self.config().rpc_results() {
            let backend = self.backend().await?;
            if backend
                .get(task_id)
                .await?
                .is_some_and(|r| r.state.is_ready())
            {
                return Ok(false);
            }
            let mut outcome =
                TaskOutcome::new(task_id, String::new(), celeriac_common::TaskState::Revoked);
            outcome.error = Some(TaskError {
                kind: "TaskRevoked".to_owned(),
                message: "revoked before it ran".to_owned(),
                traceback: None,
            });
            outcome.done_at = Some(Utc::now());
            // A worker may store the task's outcome between the look above
            // and this write: that outcome stays.
            backend.store_unless_ready(outcome).await?;
        }
        self.broadcast_revoke(&[task_id.to_owned()], terminate)
            .await?;
        Ok(true)
    }

    async fn broadcast_revoke(&self, ids: &[String], terminate: bool) -> Result<(), ClientError> {
        let link = self.link().await?;
        let config = &self.inner.config;
        if !link.knows(pidbox::EXCHANGE) {
            pidbox::declare_exchange(&link.channel, config.connect_timeout()).await?;
            link.remember(pidbox::EXCHANGE);
        }
        let (body, headers) = pidbox::revoke_message(ids, terminate);
        let props = lapin::BasicProperties::default()
            .with_content_type("application/json".into())
            .with_content_encoding("utf-8".into())
            .with_headers(headers);
        let publish = async {
            link.publish(
                pidbox::EXCHANGE,
                "",
                BasicPublishOptions::default(),
                &body,
                props,
            )
            .await?
            .await
        };
        broker::bounded("basic.publish", config.publish_timeout(), publish).await?;
        Ok(())
    }

    /// Closes the broker connection.
    pub async fn close(&self) {
        self.reset_link().await;
    }
}

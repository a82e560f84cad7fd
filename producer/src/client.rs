//! The producer: one connection, one confirm-mode channel shared by every
//! caller, reconnected with backoff when the broker goes away.

use crate::options::{ApplyOptions, OptionsError};
use crate::result::AsyncResult;
use celeriac_common::backend::{BackendError, ResultBackend, TaskError, TaskOutcome};
use celeriac_common::backoff::{Backoff, Jitter};
use celeriac_common::broker::{self, BrokerError};
use celeriac_common::delay::{self, DelayTooLong};
use celeriac_common::pidbox;
use celeriac_common::protocol::{ProtocolError, TaskMessage};
use celeriac_common::task::{ArgsError, split_args};
use celeriac_common::{Config, TaskDef};
use chrono::Utc;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueuePurgeOptions};
use lapin::{Channel, Confirmation, Connection};
use serde_json::{Map, Value};
use std::collections::HashSet;
use std::sync::{Arc, Mutex as SyncMutex};
use std::time::Duration;
use tokio::sync::{Mutex, OnceCell, RwLock};
use tokio::time::Instant;

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
    /// The broker refused the message (negative confirm).
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
}

/// Where a message goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Route {
    exchange: String,
    routing_key: String,
    declare: Option<String>,
    /// Into the delay queues (which must be declared and bound to `declare`).
    delayed: bool,
}

struct Link {
    connection: Connection,
    channel: Channel,
    declared: SyncMutex<HashSet<String>>,
    /// Held while declaring, so concurrent first publishes to a queue wait
    /// for one declaration instead of each sending their own (the delay
    /// topology alone is ~600 round trips).
    declaring: Mutex<()>,
}

impl Link {
    /// Whether this connection already declared `what`.
    fn knows(&self, what: &str) -> bool {
        self.declared
            .lock()
            .map(|d| d.contains(what))
            .unwrap_or(false)
    }

    fn remember(&self, what: &str) {
        if let Ok(mut d) = self.declared.lock() {
            d.insert(what.to_owned());
        }
    }
}

struct Inner {
    config: Config,
    link: RwLock<Option<Arc<Link>>>,
    reconnecting: Mutex<()>,
    backend: OnceCell<ResultBackend>,
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

/// Between publish attempts while the broker is unreachable: 100 ms
/// doubling to 5 s, jittered so that many clients that lost the broker
/// together do not all come back at the same instant.
const PUBLISH_BACKOFF: Backoff =
    Backoff::new(Duration::from_millis(100), Duration::from_secs(5)).jitter(Jitter::Equal);

impl Client {
    /// Connects to the broker now (failing fast with a clear error if it is
    /// unreachable); the result backend is opened on first use.
    pub async fn connect(config: Config) -> Result<Client, ClientError> {
        let origin = format!(
            "gen{}@{}",
            std::process::id(),
            celeriac_common::config::host_name()
        );
        let client = Client {
            inner: Arc::new(Inner {
                config,
                link: RwLock::new(None),
                reconnecting: Mutex::new(()),
                backend: OnceCell::new(),
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

    async fn send(
        &self,
        name: &str,
        args: Vec<Value>,
        kwargs: Map<String, Value>,
        options: ApplyOptions,
    ) -> Result<String, ClientError> {
        options.validate()?;
        let now = Utc::now();
        let mut msg = TaskMessage::new(name, args, kwargs);
        if let Some(id) = options.task_id {
            msg = msg.with_id(id);
        }
        let after = |d: Duration| {
            chrono::Duration::from_std(d)
                .ok()
                .and_then(|d| now.checked_add_signed(d))
        };
        msg.eta = options
            .eta
            .or_else(|| options.countdown.and_then(after))
            .map(|t| t.fixed_offset());
        msg.expires = options
            .expires
            .or_else(|| options.expires_in.and_then(after))
            .map(|t| t.fixed_offset());
        msg.priority = options.priority;
        msg.extra_headers = options.headers;
        msg.timelimit = (options.time_limit, options.soft_time_limit);
        msg.ignore_result = options.ignore_result;
        msg.origin = Some(self.inner.origin.clone());
        if !options.link.is_empty() {
            msg.embed.callbacks = Some(options.link);
        }
        if !options.link_error.is_empty() {
            msg.embed.errbacks = Some(options.link_error);
        }
        let config = &self.inner.config;
        let queue = options
            .queue
            .unwrap_or_else(|| config.default_queue.clone());
        let id = msg.id.clone();
        if options.exchange.is_none() && options.routing_key.is_none() {
            self.send_message(&msg, &queue).await?;
        } else {
            let route = Route {
                exchange: options.exchange.unwrap_or_else(|| queue.clone()),
                routing_key: options.routing_key.unwrap_or_else(|| queue.clone()),
                declare: Some(queue),
                delayed: false,
            };
            self.publish(&msg, &route).await?;
        }
        Ok(id)
    }

    /// Sends a ready message to `queue`: straight in if it is due (or due
    /// within one delay unit, 64 ms), else through the durable delay queues until its eta.
    /// Used by workers (retries, callbacks, chains) and beat.
    pub async fn send_message(&self, msg: &TaskMessage, queue: &str) -> Result<(), ClientError> {
        let wait = msg
            .eta
            .and_then(|eta| delay::remaining(eta.with_timezone(&Utc), Utc::now()));
        let route = if let Some(wait) = wait {
            let key = delay::routing_key(wait, queue)?;
            Route {
                exchange: delay::entry_exchange(&self.inner.config),
                routing_key: key,
                declare: Some(queue.to_owned()),
                delayed: true,
            }
        } else {
            Route {
                exchange: String::new(),
                routing_key: queue.to_owned(),
                declare: Some(queue.to_owned()),
                delayed: false,
            }
        };
        self.publish(msg, &route).await
    }

    /// Publishes a ready message straight to `queue` (declaring it as Celery
    /// does), whatever its eta: as a Celery client would.
    pub async fn publish_to_queue(
        &self,
        msg: &TaskMessage,
        queue: &str,
    ) -> Result<(), ClientError> {
        let route = Route {
            exchange: String::new(),
            routing_key: queue.to_owned(),
            declare: Some(queue.to_owned()),
            delayed: false,
        };
        self.publish(msg, &route).await
    }

    /// Publishes with publisher confirms; while the broker is unreachable,
    /// waits (reconnecting with backoff) up to `publish_timeout_secs`.
    pub(crate) async fn publish(
        &self,
        msg: &TaskMessage,
        route: &Route,
    ) -> Result<(), ClientError> {
        let body = msg.encode_body()?;
        // Built once; rebuilt only for a retry (the header table is the
        // costliest part of a publish to copy).
        let mut props = Some(msg.properties());
        let timeout = self.inner.config.publish_timeout();
        let started = Instant::now();
        let mut backoff = PUBLISH_BACKOFF;
        loop {
            let props = props.take().unwrap_or_else(|| msg.properties());
            let attempt = async {
                let link = self.link().await?;
                let res = self.publish_on(&link, msg, route, &body, props).await;
                if res.is_err() && !link.connection.status().connected() {
                    self.drop_link(&link).await;
                }
                res
            };
            // A confirm from a connection that died may never come: bound each attempt.
            let left = timeout
                .saturating_sub(started.elapsed())
                .max(Duration::from_secs(1));
            let res = match tokio::time::timeout(left, attempt).await {
                Ok(res) => res,
                Err(_) => {
                    self.reset_link().await;
                    Err(ClientError::Unavailable {
                        waited: started.elapsed(),
                        task_id: msg.id.clone(),
                        last: "no publisher confirm".to_owned(),
                    })
                }
            };
            let err = match res {
                Ok(()) => return Ok(()),
                Err(e @ (ClientError::Nacked(_) | ClientError::Unroutable { .. })) => {
                    return Err(e);
                }
                Err(e) => e,
            };
            let broker_alive = self
                .inner
                .link
                .read()
                .await
                .as_ref()
                .is_some_and(|l| l.connection.status().connected());
            if broker_alive && matches!(err, ClientError::Broker(BrokerError::Declare { .. })) {
                // The broker answered (e.g. PRECONDITION_FAILED): retrying will not help.
                self.reset_link().await;
                return Err(err);
            }
            if started.elapsed() >= timeout {
                return Err(ClientError::Unavailable {
                    waited: started.elapsed(),
                    task_id: msg.id.clone(),
                    last: err.to_string(),
                });
            }
            let delay = backoff.next_delay();
            tracing::warn!(task.id = %msg.id, error = %err, "publish failed; retrying after {delay:?}");
            tokio::time::sleep(delay.min(timeout.saturating_sub(started.elapsed()))).await;
        }
    }

    async fn publish_on(
        &self,
        link: &Link,
        msg: &TaskMessage,
        route: &Route,
        body: &[u8],
        props: lapin::BasicProperties,
    ) -> Result<(), ClientError> {
        if let Some(queue) = &route.declare {
            let bound = route
                .delayed
                .then(|| format!("{}:{queue}", delay::delivery_exchange(&self.inner.config)));
            let ready = link.knows(queue) && bound.as_ref().is_none_or(|b| link.knows(b));
            if !ready {
                // Once per queue and link: boxed, so the publish future
                // every task's send copies stays small.
                Box::pin(self.declare_route(link, route, queue, bound)).await?;
            }
        }
        let channel_err = |source| {
            ClientError::Broker(BrokerError::Channel {
                op: "basic.publish",
                source,
            })
        };
        let confirm = link
            .channel
            .basic_publish(
                route.exchange.as_str().into(),
                route.routing_key.as_str().into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                body,
                props,
            )
            .await
            .map_err(channel_err)?
            .await
            .map_err(channel_err)?;
        match confirm {
            Confirmation::Ack(None) | Confirmation::NotRequested => Ok(()),
            Confirmation::Ack(Some(_)) => Err(ClientError::Unroutable {
                task_id: msg.id.clone(),
                exchange: route.exchange.clone(),
                routing_key: route.routing_key.clone(),
            }),
            Confirmation::Nack(_) => Err(ClientError::Nacked(msg.id.clone())),
        }
    }

    /// Declares `queue` (and, for a delayed route, the delay topology and
    /// the queue's binding to it) on `link`, unless it already did.
    async fn declare_route(
        &self,
        link: &Link,
        route: &Route,
        queue: &str,
        bound: Option<String>,
    ) -> Result<(), ClientError> {
        let _declaring = link.declaring.lock().await;
        let config = &self.inner.config;
        if !link.knows(queue) {
            broker::declare_task_queue(&link.channel, queue, config).await?;
            link.remember(queue);
        }
        if let Some(bound) = bound {
            if !link.knows(&route.exchange) {
                delay::declare_topology(&link.channel, config).await?;
                link.remember(&route.exchange);
            }
            if !link.knows(&bound) {
                delay::bind_queue(&link.channel, config, queue).await?;
                link.remember(&bound);
            }
        }
        Ok(())
    }

    async fn link(&self) -> Result<Arc<Link>, ClientError> {
        if let Some(link) = self.live_link().await {
            return Ok(link);
        }
        // Boxed: a connection is made rarely, and this future is part of
        // every publish.
        Box::pin(self.reconnect()).await
    }

    async fn reconnect(&self) -> Result<Arc<Link>, ClientError> {
        let _guard = self.inner.reconnecting.lock().await;
        // Another caller may have reconnected while this one waited.
        if let Some(link) = self.live_link().await {
            return Ok(link);
        }
        let link = self.open_link().await?;
        tracing::info!(broker = %celeriac_common::mask_url(&self.inner.config.broker_url), "producer connected");
        *self.inner.link.write().await = Some(link.clone());
        Ok(link)
    }

    async fn live_link(&self) -> Option<Arc<Link>> {
        let slot = self.inner.link.read().await;
        slot.as_ref()
            .filter(|l| l.connection.status().connected() && l.channel.status().connected())
            .cloned()
    }

    async fn drop_link(&self, dead: &Arc<Link>) {
        let mut slot = self.inner.link.write().await;
        if slot.as_ref().is_some_and(|l| Arc::ptr_eq(l, dead)) {
            *slot = None;
        }
    }

    async fn reset_link(&self) {
        if let Some(link) = self.inner.link.write().await.take() {
            let limit = self.inner.config.connect_timeout();
            broker::close(&link.connection, limit, "reset").await;
        }
    }

    /// Connects, within `broker_connect_timeout_secs` for the handshake and
    /// again for each round trip after it.
    async fn open_link(&self) -> Result<Arc<Link>, ClientError> {
        let config = &self.inner.config;
        let limit = config.connect_timeout();
        let connection = broker::connect_config(config, "celeriac-producer").await?;
        let channel = broker::bounded("channel.open", limit, connection.create_channel()).await;
        let confirmed = match channel {
            Ok(channel) => {
                let select = channel.confirm_select(ConfirmSelectOptions::default());
                broker::bounded("confirm.select", limit, select)
                    .await
                    .map(|()| channel)
            }
            Err(e) => Err(e),
        };
        let channel = match confirmed {
            Ok(channel) => channel,
            Err(e) => {
                broker::close(&connection, limit, "setup failed").await;
                return Err(e.into());
            }
        };
        Ok(Arc::new(Link {
            connection,
            channel,
            declared: SyncMutex::new(HashSet::new()),
            declaring: Mutex::new(()),
        }))
    }

    /// A new channel on the current connection, for work that needs its own
    /// (listing a queue, replaying messages).
    pub(crate) async fn open_channel(&self) -> Result<Channel, ClientError> {
        let link = self.link().await?;
        let limit = self.inner.config.connect_timeout();
        Ok(broker::bounded("channel.open", limit, link.connection.create_channel()).await?)
    }

    /// Deletes every ready message in `queue`; returns how many.
    pub async fn purge(&self, queue: &str) -> Result<u32, ClientError> {
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
        if self.config().results_enabled() {
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
            backend.store(vec![outcome]).await?;
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
            link.channel
                .basic_publish(
                    pidbox::EXCHANGE.into(),
                    "".into(),
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

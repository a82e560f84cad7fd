//! One broker session (connection, channel, consumers) and the handling of
//! each delivery, from decoding to its single ack, dead-letter or requeue.

use crate::context::TaskFailure;
use crate::recorder::{AckWindow, Finished, RecorderTx};
use crate::registry::Registry;
use crate::{execute, followup};
use celeriac_common::backend::{ResultBackend, TaskError, TaskOutcome};
use celeriac_common::broker::{self, BrokerError};
use celeriac_common::protocol::TaskMessage;
use celeriac_common::{Config, TaskState};
use celeriac_common::{delay, pidbox};
use chrono::Utc;
use futures_util::future::Either;
use futures_util::{FutureExt, StreamExt};
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions,
    BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, Connection};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{Notify, Semaphore};
use tracing::Instrument;

/// State shared by every delivery of a worker.
pub(crate) struct Shared {
    pub(crate) revocations: crate::revoke::Revocations,
    pub(crate) client: celeriac::Client,
    pub(crate) config: Arc<Config>,
    pub(crate) registry: Arc<Registry>,
    pub(crate) backend: Option<ResultBackend>,
    pub(crate) permits: Semaphore,
    pub(crate) running: AtomicUsize,
    pub(crate) idle: Notify,
    pub(crate) recorder: RecorderTx,
    /// This worker process's id in `celeriac_workers` and on STARTED rows.
    pub(crate) worker_id: String,
}

impl Shared {
    pub(crate) async fn wait_idle(&self) {
        loop {
            let notified = self.idle.notified();
            if self.running.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// A connection with one consuming channel and one channel (in confirm mode)
/// for dead letters.
pub(crate) struct Session {
    connection: Connection,
    channel: Channel,
    publisher: Channel,
    consumers: Vec<(String, lapin::Consumer)>,
    control: lapin::Consumer,
    window: Arc<AckWindow>,
}

impl Session {
    pub(crate) async fn open(shared: &Shared) -> Result<Session, BrokerError> {
        let config = &shared.config;
        let connection = broker::connect_config(config, &config.hostname).await?;
        // Every round trip below waits at most this long.
        let limit = config.connect_timeout();
        let channel = broker::bounded("channel.open", limit, connection.create_channel()).await?;
        // Per-consumer prefetch (global = false): recent RabbitMQ rejects global QoS.
        let qos = channel.basic_qos(config.prefetch(), BasicQosOptions { global: false });
        broker::bounded("basic.qos", limit, qos).await?;
        let publisher = broker::bounded("channel.open", limit, connection.create_channel()).await?;
        let select = publisher.confirm_select(ConfirmSelectOptions::default());
        broker::bounded("confirm.select", limit, select).await?;
        broker::declare_dead_letter_queue(&publisher, &config.dead_letter_queue, limit).await?;
        let mut consumers = Vec::new();
        delay::declare_topology(&channel, config).await?;
        for queue in &config.queues {
            broker::declare_task_queue(&channel, queue, config).await?;
            delay::bind_queue(&channel, config, queue).await?;
            let tag = format!(
                "{}.{}.{}",
                config.hostname,
                queue,
                uuid::Uuid::new_v4().simple()
            );
            let consume = channel.basic_consume(
                queue.as_str().into(),
                tag.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            );
            let consumer = broker::bounded("basic.consume", limit, consume).await?;
            consumers.push((queue.clone(), consumer));
        }
        // Remote control (revoke): a queue of our own on the pidbox fanout.
        let control_queue = pidbox::declare_worker_queue(
            &publisher,
            &format!("{}.{}", config.hostname, uuid::Uuid::new_v4().simple()),
            limit,
        )
        .await?;
        let consume = publisher.basic_consume(
            control_queue.as_str().into(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        );
        let control = broker::bounded("basic.consume", limit, consume).await?;
        Ok(Session {
            connection,
            channel,
            publisher,
            consumers,
            control,
            window: Arc::new(AckWindow::default()),
        })
    }

    /// Handles deliveries until the connection is lost; returns why.
    pub(crate) async fn consume(&self, shared: Arc<Shared>) -> String {
        // `select_all` drops a stream that ends and goes on with the rest, so
        // each consumer ends with an item saying so: a queue deleted under
        // the worker (the broker cancels its consumer) ends the session, and
        // the next one declares the queue again.
        let tasks = self.consumers.iter().map(|(queue, consumer)| {
            let (queue, ended) = (queue.clone(), queue.clone());
            consumer
                .clone()
                .map(move |d| Event::Task(queue.clone(), d))
                .chain(futures_util::stream::once(async move {
                    Event::Ended(format!("of queue {ended}"))
                }))
                .boxed()
        });
        let control_stream = self
            .control
            .clone()
            .map(Event::Control)
            .chain(futures_util::stream::once(async {
                Event::Ended("of remote control".to_owned())
            }))
            .boxed();
        let mut all =
            futures_util::stream::select_all(tasks.chain(std::iter::once(control_stream)));
        // Belt and braces: also notice a dead connection whose consumer
        // streams stay silent.
        let mut check = tokio::time::interval(Duration::from_secs(1));
        loop {
            let next = tokio::select! {
                next = all.next() => next,
                _ = check.tick() => {
                    if self.connected() {
                        continue;
                    }
                    return "connection or channel closed".to_owned();
                }
            };
            match next {
                Some(Event::Control(Ok(delivery))) => control(&shared, &delivery.data),
                Some(Event::Task(queue, Ok(delivery))) => {
                    let shared = shared.clone();
                    let publisher = self.publisher.clone();
                    self.window.received(delivery.delivery_tag);
                    let window = self.window.clone();
                    // Decoded in the task (a large body, or a panic, stays
                    // there), not in this loop.
                    let task = futures_util::future::lazy(move |_| {
                        handle(shared, publisher, queue, delivery, window)
                    });
                    tokio::spawn(task.flatten());
                }
                Some(Event::Task(_, Err(e)) | Event::Control(Err(e))) => return e.to_string(),
                Some(Event::Ended(_)) if !self.connected() => {
                    return "connection or channel closed".to_owned();
                }
                Some(Event::Ended(what)) => {
                    return format!("the broker cancelled the consumer {what}");
                }
                None => return "no consumer left".to_owned(),
            }
        }
    }

    /// Stops consuming: the broker sends nothing more.
    pub(crate) async fn cancel(&self) {
        for (queue, consumer) in &self.consumers {
            if let Err(e) = self
                .channel
                .basic_cancel(consumer.tag(), BasicCancelOptions::default())
                .await
            {
                tracing::debug!(queue, error = %e, "basic.cancel failed");
            }
        }
    }

    /// After [`Session::cancel`]: deliveries the broker sent before it
    /// stopped that no task was handed yet go back to their queues
    /// uncounted ([`give_back`]), rather than coming back flagged redelivered
    /// when the connection closes.
    /// Bounded: the broker cannot have more than `prefetch` deliveries out
    /// to a consumer, and a copy given back never reaches this cancelled one.
    pub(crate) async fn return_unhandled(&self, prefetch: u16) {
        for (queue, consumer) in &self.consumers {
            let mut stream = consumer.clone();
            for _ in 0..prefetch {
                let Ok(Some(Ok(delivery))) =
                    tokio::time::timeout(UNHANDLED_WAIT, stream.next()).await
                else {
                    break;
                };
                self.window.received(delivery.delivery_tag);
                give_back(&self.publisher, queue, delivery, &self.window).await;
            }
        }
    }

    /// Whether its connection and both its channels are still open.
    pub(crate) fn connected(&self) -> bool {
        self.connection.status().connected()
            && self.channel.status().connected()
            && self.publisher.status().connected()
    }

    /// Retires a session that stopped consuming while still connected:
    /// its consumers (remote control too) are cancelled, deliveries not yet
    /// running go back to their queues, and the tasks running get up to
    /// `grace` to finish and ack before the connection closes.
    pub(crate) async fn retire(self, prefetch: u16, grace: Duration) {
        // Also when the connection is gone: a delivery of it that waits for
        // a slot would run although its ack can no longer reach the broker,
        // which redelivers it anyway.
        self.give_back_waiting();
        if self.connected() {
            self.cancel().await;
            if let Err(e) = self
                .publisher
                .basic_cancel(self.control.tag(), BasicCancelOptions::default())
                .await
            {
                tracing::debug!(error = %e, "basic.cancel of remote control failed");
            }
            self.return_unhandled(prefetch).await;
            let deadline = Instant::now() + grace;
            while !self.window.is_empty() && Instant::now() < deadline && self.connected() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        self.close().await;
    }

    /// Its deliveries that wait for a slot, the rate limiter or their eta
    /// give themselves back to their queues ([`give_back`]) instead of
    /// running: at shutdown, or when the session is retired.
    pub(crate) fn give_back_waiting(&self) {
        self.window.retire();
    }

    /// Closes the connection; unacknowledged messages return to their queues.
    pub(crate) async fn close(self) {
        broker::close(&self.connection, BROKER_TIMEOUT, "worker shutdown").await;
    }
}

/// How long a cancelled consumer is polled for deliveries still on their way.
const UNHANDLED_WAIT: Duration = Duration::from_millis(100);

/// Header beat puts on the runs it sends (their ids are deterministic).
const BEAT_ENTRY_HEADER: &str = "beat_entry";

/// Header counting deliveries that did not finish (classic queues, which
/// keep no count of their own).
const DELIVERIES_HEADER: &str = "x-celeriac-deliveries";

/// The count a quorum queue keeps itself: earlier deliveries of this message
/// that ended without an ack.
const BROKER_DELIVERIES_HEADER: &str = "x-delivery-count";

fn count_header(props: &lapin::BasicProperties, name: &str) -> Option<u32> {
    match props.headers().as_ref()?.inner().get(name)? {
        AMQPValue::LongLongInt(n) => u32::try_from(*n).ok(),
        AMQPValue::LongInt(n) => u32::try_from(*n).ok(),
        AMQPValue::ShortInt(n) => u32::try_from(*n).ok(),
        AMQPValue::ShortShortInt(n) => u32::try_from(*n).ok(),
        AMQPValue::LongUInt(n) => Some(*n),
        AMQPValue::ShortUInt(n) => Some(u32::from(*n)),
        AMQPValue::ShortShortUInt(n) => Some(u32::from(*n)),
        _ => None,
    }
}

/// Earlier deliveries of this message that did not finish, and whether the
/// broker counts them itself (a quorum queue's `x-delivery-count`, added to
/// what earlier copies carried in celeriac's header) or only celeriac's
/// header does.
fn earlier_deliveries(delivery: &Delivery) -> (u32, bool) {
    let props = &delivery.properties;
    let own = count_header(props, DELIVERIES_HEADER).unwrap_or(0);
    match count_header(props, BROKER_DELIVERIES_HEADER) {
        Some(n) if delivery.redelivered => (own.saturating_add(n), true),
        _ => (own + u32::from(delivery.redelivered), false),
    }
}

/// The properties for a copy of a message published again: a new message
/// to the broker, so it carries the count of earlier unfinished deliveries
/// in celeriac's header, not the broker's.
fn counted_copy(props: &lapin::BasicProperties, earlier: u32) -> lapin::BasicProperties {
    let mut map = props
        .headers()
        .as_ref()
        .map(|h| h.inner().clone())
        .unwrap_or_default();
    map.remove(BROKER_DELIVERIES_HEADER);
    let mut headers = FieldTable::from(map);
    if earlier > 0 {
        headers.insert(
            DELIVERIES_HEADER.into(),
            AMQPValue::LongLongInt(i64::from(earlier)),
        );
    }
    props.clone().with_headers(headers)
}

/// Acts on a remote-control message (only `revoke`; others are ignored).
fn control(shared: &Shared, body: &[u8]) {
    if let Some(pidbox::Control::Revoke { ids, terminate }) =
        pidbox::parse(body, &shared.config.hostname)
    {
        for id in ids {
            shared.revocations.revoke(&id);
            let stopped = terminate && shared.revocations.terminate(&id);
            tracing::info!(task.id = %id, terminated = stopped, "revoked");
        }
    }
}

/// What the session's merged consumer streams yield.
enum Event {
    Task(String, Result<Delivery, lapin::Error>),
    Control(Result<Delivery, lapin::Error>),
    /// A consumer ended: "of queue NAME" or "of remote control".
    Ended(String),
}

/// The work for one delivery: decodes it, and returns a future that holds
/// only what the delivery's path needs while it waits (its rare paths are
/// boxed), because tokio copies a task's whole future when it spawns it
/// and again when it finishes.
fn handle(
    shared: Arc<Shared>,
    publisher: Channel,
    queue: String,
    delivery: Delivery,
    window: Arc<AckWindow>,
) -> impl Future<Output = ()> + Send + 'static {
    let received = Utc::now();
    let msg = match TaskMessage::decode(
        &delivery.properties,
        &delivery.data,
        shared.config.max_message_bytes,
    ) {
        Ok(m) => m,
        Err(e) => {
            let reason = e.to_string();
            return Either::Left(Box::pin(async move {
                dead_letter(
                    &shared, &publisher, &queue, delivery, &window, &reason, None,
                )
                .await;
            }));
        }
    };
    let span = tracing::info_span!("task", task.id = %msg.id, task.name = %msg.display_name(), queue = %queue, attempt = msg.retries);
    let task = async move {
        let mut outcome = outcome_for(&shared, &msg, &queue);
        if shared.revocations.is_revoked(&msg.id) {
            tracing::info!("revoked: not running it");
            mark_revoked(&mut outcome, "revoked before it ran");
            return finish(&shared, &msg, delivery, &window, Some(outcome)).await;
        }
        if msg.is_expired(received) {
            tracing::info!("expired before it ran: REVOKED");
            outcome.state = TaskState::Revoked;
            outcome.error = Some(task_error(TaskFailure::new("TaskExpired", format!("task expired at {}", msg.expires.map(|e| e.to_rfc3339()).unwrap_or_default()))));
            return finish(&shared, &msg, delivery, &window, Some(outcome)).await;
        }
        if let Some(wait) = msg.eta.and_then(|eta| delay::remaining(eta.with_timezone(&Utc), received)) {
            // Not due yet: back into the delay queues, not into this worker's memory.
            return Box::pin(redelay(&shared, &publisher, &queue, &msg, delivery, &window, wait)).await;
        }
        let Some(handler) = shared.registry.get(&msg.task) else {
            tracing::warn!("task not registered: {}", msg.task);
            outcome.state = TaskState::Failure;
            outcome.error = Some(task_error(TaskFailure::new("NotRegistered", format!("task not registered: {}", msg.task))));
            return finish(&shared, &msg, delivery, &window, Some(outcome)).await;
        };
        if let Some(eta) = msg.eta {
            let wait = (eta.with_timezone(&Utc) - Utc::now()).to_std().unwrap_or_default();
            if !wait.is_zero() {
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = window.retired() => return Box::pin(give_back(&publisher, &queue, delivery, &window)).await,
                }
            }
        }
        // Revokes of delayed tasks arrive by broadcast, or are loaded at each connection.
        if shared.revocations.is_revoked(&msg.id) {
            tracing::info!("revoked while it waited: not running it");
            mark_revoked(&mut outcome, "revoked before it ran");
            return finish(&shared, &msg, delivery, &window, Some(outcome)).await;
        }
        // A redelivered message may have run already; a beat run may be a
        // second copy of one that already finished (beat's dedupe: the same
        // task id sent twice by two beats in a split brain).
        let beat_run = msg.extra_headers.contains_key(BEAT_ENTRY_HEADER);
        if (delivery.redelivered || beat_run) && Box::pin(already_done(&shared, &msg.id)).await {
            tracing::info!("already finished or revoked; not running it");
            return finish(&shared, &msg, delivery, &window, None).await;
        }
        let (attempts, counted_by_broker) = earlier_deliveries(&delivery);
        if delivery.redelivered {
            // A worker died (or lost its connection) while holding this
            // message. Count it, so a message that kills every worker that
            // runs it is dead-lettered instead of looping forever.
            if attempts >= shared.config.max_deliveries {
                let reason = format!("delivered {attempts} times without finishing (poison message)");
                outcome.state = TaskState::Failure;
                outcome.error = Some(task_error(TaskFailure::new("PoisonMessage", reason.clone())));
                outcome.done_at = Some(Utc::now());
                return Box::pin(dead_letter(&shared, &publisher, &queue, delivery, &window, &reason, Some(outcome))).await;
            }
            if !counted_by_broker {
                // A classic queue keeps no count: the copy carries it.
                let props = counted_copy(&delivery.properties, attempts);
                return match Box::pin(publish_confirmed(&publisher, "", &queue, &delivery.data, props)).await {
                    Ok(()) => finish(&shared, &msg, delivery, &window, None).await,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot count the redelivery; returning the message to its queue");
                        Box::pin(requeue(delivery, &window)).await
                    }
                };
            }
        }
        if let Some(limiter) = shared.registry.limiter(&msg.task) {
            tokio::select! {
                _ = limiter.wait() => {}
                _ = window.retired() => return Box::pin(give_back(&publisher, &queue, delivery, &window)).await,
            }
        }
        let permit = tokio::select! {
            p = shared.permits.acquire() => p,
            _ = window.retired() => return Box::pin(give_back(&publisher, &queue, delivery, &window)).await,
        };
        if shared.revocations.is_revoked(&msg.id) {
            drop(permit);
            tracing::info!("revoked while waiting: not running it");
            mark_revoked(&mut outcome, "revoked before it ran");
            return finish(&shared, &msg, delivery, &window, Some(outcome)).await;
        }
        shared.running.fetch_add(1, Ordering::SeqCst);
        outcome.started_at = Some(Utc::now());
        // An ignored result leaves no row at all (a STARTED one would stay).
        if shared.config.track_started && !msg.ignore_result {
            Box::pin(mark_started(&shared, &outcome)).await;
        }
        let options = shared.registry.options(&msg.task);
        let (hard, soft) = execute::limits(&msg, options);
        let ctx = execute::task_context(&shared, &msg, &queue, attempts, soft);
        let clock = Instant::now();
        let result = execute::run(&shared, handler, ctx, &msg, hard).await;
        drop(permit);
        outcome.done_at = Some(Utc::now());
        let ms = clock.elapsed().as_secs_f64() * 1e3;
        let recorded = match result {
            Ok(value) => {
                tracing::info!(duration_ms = ms, "succeeded");
                followup::on_success(&shared.client, &msg, &value, &queue).await;
                outcome.state = TaskState::Success;
                outcome.result = Some(value);
                true
            }
            Err(failure) if failure.kind == "Cancelled" && shared.revocations.is_revoked(&msg.id) => {
                tracing::info!(duration_ms = ms, "terminated by revoke");
                mark_revoked(&mut outcome, "terminated while running");
                true
            }
            Err(failure) => {
                tracing::warn!(duration_ms = ms, kind = %failure.kind, "failed: {}", failure.message);
                Box::pin(execute::conclude_failure(&shared, &msg, &queue, options, failure, &mut outcome)).await
            }
        };
        if recorded {
            finish(&shared, &msg, delivery, &window, Some(outcome)).await;
        } else {
            Box::pin(requeue(delivery, &window)).await;
        }
        if shared.running.fetch_sub(1, Ordering::SeqCst) == 1 {
            shared.idle.notify_waiters();
        }
    }
    .instrument(span);
    Either::Right(task)
}

fn outcome_for(shared: &Shared, msg: &TaskMessage, queue: &str) -> TaskOutcome {
    let mut o = TaskOutcome::new(msg.id.clone(), msg.task.clone(), TaskState::Received);
    o.worker = Some(shared.config.hostname.clone());
    o.worker_id = Some(shared.worker_id.clone());
    o.retries = msg.retries;
    o.queue = Some(queue.to_owned());
    o.parent_id = msg.parent_id.clone();
    o.root_id = msg.root_id.clone();
    o.group_id = msg.group.clone();
    if shared.config.store_args {
        o.args = Some(serde_json::Value::Array(msg.args.clone()));
        o.kwargs = Some(serde_json::Value::Object(msg.kwargs.clone()));
    }
    o
}

fn mark_revoked(outcome: &mut TaskOutcome, message: &str) {
    outcome.state = TaskState::Revoked;
    outcome.error = Some(task_error(TaskFailure::new("TaskRevoked", message)));
}

pub(crate) fn task_error(f: TaskFailure) -> TaskError {
    let traceback = f.traceback();
    TaskError {
        kind: f.kind,
        message: f.message,
        traceback,
    }
}

async fn already_done(shared: &Shared, id: &str) -> bool {
    let Some(backend) = &shared.backend else {
        return false;
    };
    matches!(backend.get(id).await, Ok(Some(r)) if r.state.is_ready())
}

async fn mark_started(shared: &Shared, outcome: &TaskOutcome) {
    if let Some(backend) = &shared.backend {
        let mut started = outcome.clone();
        started.state = TaskState::Started;
        if let Err(e) = backend.store_progress(started).await {
            tracing::warn!(error = %e, "cannot record STARTED; running anyway");
        }
    }
}

/// Hands the delivery to the recorder: store the outcome (unless results are
/// off or ignored), then ack. Like [`record`], it hands it over when called.
fn finish<'a>(
    shared: &'a Shared,
    msg: &TaskMessage,
    delivery: Delivery,
    window: &Arc<AckWindow>,
    outcome: Option<TaskOutcome>,
) -> impl Future<Output = ()> + Send + use<'a> {
    let outcome = outcome.filter(|_| shared.backend.is_some() && !msg.ignore_result);
    let done = Finished {
        outcome,
        tag: delivery.delivery_tag,
        acker: delivery.acker,
        window: window.clone(),
        task_id: msg.id.clone(),
    };
    record(shared, done)
}

/// Hands a finished delivery to the recorder, which stores its outcome and
/// then acks it. It is handed over when this is called: the recorder's queue
/// has room for twice the prefetch window (and 16 more), so the returned
/// future waits for room only rarely (the result backend down, or the
/// windows of several queues finishing at once). That wait is boxed, so its
/// kilobyte is not part of every delivery's task.
fn record(shared: &Shared, done: Finished) -> impl Future<Output = ()> + Send + '_ {
    let waiting = match shared.recorder.try_send(done) {
        Ok(()) => None,
        Err(TrySendError::Full(done)) => Some(Box::pin(shared.recorder.send(done))),
        Err(TrySendError::Closed(_)) => {
            tracing::warn!("recorder stopped; the message will be redelivered");
            None
        }
    };
    async move {
        if let Some(send) = waiting
            && send.await.is_err()
        {
            tracing::warn!("recorder stopped; the message will be redelivered");
        }
    }
}

/// Publishes a message that is not due yet into the delay queues (with
/// confirms), then acks it; if that fails, returns it to its queue.
async fn redelay(
    shared: &Shared,
    publisher: &Channel,
    queue: &str,
    msg: &TaskMessage,
    delivery: Delivery,
    window: &Arc<AckWindow>,
    wait: Duration,
) {
    let key = match delay::routing_key(wait, queue) {
        Ok(k) => k,
        Err(e) => {
            return dead_letter(
                shared,
                publisher,
                queue,
                delivery,
                window,
                &e.to_string(),
                None,
            )
            .await;
        }
    };
    let exchange = delay::entry_exchange(&shared.config);
    let confirmed = publish_confirmed(
        publisher,
        &exchange,
        &key,
        &delivery.data,
        delivery.properties.clone(),
    )
    .await;
    match confirmed {
        Ok(()) => {
            tracing::debug!(
                wait_ms = wait.as_millis(),
                "not due yet; moved to the delay queues"
            );
            finish(shared, msg, delivery, window, None).await;
        }
        other => {
            tracing::warn!(result = ?other, "could not move the message to the delay queues; returning it to its queue");
            requeue(delivery, window).await;
        }
    }
}

/// How long a worker waits for the broker to confirm a publish or take a nack.
const BROKER_TIMEOUT: Duration = Duration::from_secs(10);

/// Publishes (mandatory, so an unroutable message counts as a failure) and
/// waits for the broker's confirm, bounded by `BROKER_TIMEOUT`.
async fn publish_confirmed(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    props: lapin::BasicProperties,
) -> Result<(), String> {
    let publish = async {
        channel
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                body,
                props,
            )
            .await?
            .await
    };
    match tokio::time::timeout(BROKER_TIMEOUT, publish).await {
        Ok(Ok(lapin::Confirmation::Ack(None))) => Ok(()),
        Ok(Ok(other)) => Err(format!("broker did not take it: {other:?}")),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no confirm within {BROKER_TIMEOUT:?}")),
    }
}

/// Returns a message that did not start to its queue at a warm shutdown:
/// published again (same body, properties and headers, with confirms),
/// then acked. Unlike a nack, the copy is not flagged redelivered, so a
/// clean shutdown does not count toward `max_deliveries` (nor toward a
/// quorum queue's delivery limit). It goes to the back of the queue. If the
/// publish is not confirmed, the message is nacked back instead; if the ack
/// fails after the publish, the broker holds two copies (at-least-once).
async fn give_back(publisher: &Channel, queue: &str, delivery: Delivery, window: &AckWindow) {
    if !delivery.acker.usable() {
        return; // the channel is gone: the broker requeues it by itself
    }
    let (earlier, _) = earlier_deliveries(&delivery);
    let props = counted_copy(&delivery.properties, earlier);
    if let Err(e) = publish_confirmed(publisher, "", queue, &delivery.data, props).await {
        tracing::debug!(error = %e, "cannot publish the message back; returning it with a nack");
        return requeue(delivery, window).await;
    }
    match tokio::time::timeout(
        BROKER_TIMEOUT,
        delivery.acker.ack(BasicAckOptions::default()),
    )
    .await
    {
        Ok(Ok(_)) => {
            window.settled(delivery.delivery_tag);
            tracing::debug!("returned to its queue");
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "ack after publishing the message back failed; it may run twice")
        }
        Err(_) => {
            tracing::warn!("ack after publishing the message back timed out; it may run twice")
        }
    }
}

/// Returns the message to its queue. Its tag leaves the ack window only once
/// the nack is sent, so no multiple-ack can cover it first.
async fn requeue(delivery: Delivery, window: &AckWindow) {
    if !delivery.acker.usable() {
        return; // the channel is gone: the broker requeues it by itself
    }
    let opts = BasicNackOptions {
        requeue: true,
        multiple: false,
    };
    match tokio::time::timeout(BROKER_TIMEOUT, delivery.acker.nack(opts)).await {
        Ok(Ok(_)) => window.settled(delivery.delivery_tag),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "requeue failed; the broker will redeliver on disconnect")
        }
        Err(_) => tracing::warn!("requeue timed out; the broker will redeliver on disconnect"),
    }
}

/// Moves an undecodable message to the dead-letter queue with the reason in
/// its headers, then acks it. If the dead-letter publish is not confirmed,
/// the message is returned to its queue instead, so nothing is lost.
async fn dead_letter(
    shared: &Shared,
    channel: &Channel,
    queue: &str,
    delivery: Delivery,
    window: &Arc<AckWindow>,
    reason: &str,
    outcome: Option<TaskOutcome>,
) {
    let id = delivery
        .properties
        .correlation_id()
        .as_ref()
        .map(|c| c.to_string())
        .unwrap_or_else(|| "<none>".to_owned());
    tracing::error!(task.id = %id, queue, reason, "message moved to the dead-letter queue {}", shared.config.dead_letter_queue);
    let mut headers = delivery.properties.headers().clone().unwrap_or_default();
    let text = |s: &str| AMQPValue::LongString(LongString::from(s.as_bytes()));
    headers.insert("x-celeriac-error".into(), text(reason));
    headers.insert("x-celeriac-queue".into(), text(queue));
    headers.insert(
        "x-celeriac-failed-at".into(),
        text(&Utc::now().to_rfc3339()),
    );
    let props = delivery.properties.clone().with_headers(headers);
    let queue_name = shared.config.dead_letter_queue.as_str();
    let confirmed = publish_confirmed(channel, "", queue_name, &delivery.data, props).await;
    match confirmed {
        Ok(()) => {
            let done = Finished {
                outcome: outcome.filter(|_| shared.backend.is_some()),
                tag: delivery.delivery_tag,
                acker: delivery.acker,
                window: window.clone(),
                task_id: id,
            };
            record(shared, done).await;
        }
        other => {
            tracing::warn!(task.id = %id, result = ?other.err(), "dead-letter publish not confirmed; returning the message to its queue");
            requeue(delivery, window).await;
        }
    }
}

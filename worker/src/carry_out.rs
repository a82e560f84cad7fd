//! Acting on what was decided for a delivery: its single ack (after its
//! outcome is recorded), requeue, give-back or dead-letter.

use crate::chord::{self, Later};
use crate::context::TaskFailure;
use crate::disposition::{BROKER_DELIVERIES_HEADER, DELIVERIES_HEADER, End, Stage};
use crate::publish::{BROKER_TIMEOUT, Publisher};
use crate::recorder::{AckWindow, Finished};
use crate::shared::Shared;
use celeriac_common::TaskState;
use celeriac_common::backend::{TaskError, TaskOutcome};
use celeriac_common::delay;
use celeriac_common::protocol::TaskMessage;
use chrono::Utc;
use lapin::BasicProperties;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc::error::TrySendError;

/// What handling a delivery needs besides the delivery itself.
pub(crate) struct Handling {
    pub(crate) shared: Arc<Shared>,
    pub(crate) publisher: Arc<Publisher>,
    pub(crate) queue: String,
    pub(crate) window: Arc<AckWindow>,
}

impl Handling {
    /// Carries out how a delivery ends without running.
    pub(crate) async fn carry_out(&self, end: End, msg: &TaskMessage, delivery: Delivery) {
        let record = |state, kind, message: String| {
            let mut o = self.outcome(msg, state);
            o.error = Some(task_error(TaskFailure::new(kind, message)));
            Some(o)
        };
        let outcome = match end {
            End::Revoked(stage) => {
                tracing::info!("{}", revoked_log(stage));
                self.shared.events.revoked(&msg.id, false, false);
                let before = "revoked before it ran".to_owned();
                record(TaskState::Revoked, "TaskRevoked", before)
            }
            End::Expired => {
                tracing::info!("expired before it ran: REVOKED");
                self.shared.events.revoked(&msg.id, false, true);
                let at = msg.expires.map(|e| e.to_rfc3339()).unwrap_or_default();
                let message = format!("task expired at {at}");
                record(TaskState::Revoked, "TaskExpired", message)
            }
            End::UnknownTask => {
                tracing::warn!("task not registered: {}", msg.task);
                self.shared
                    .events
                    .failed(&msg.id, "NotRegistered", &msg.task, false);
                let message = format!("task not registered: {}", msg.task);
                record(TaskState::Failure, "NotRegistered", message)
            }
            End::AlreadyDone => {
                tracing::info!("already finished or revoked; not running it");
                return Box::pin(self.already_done(msg, delivery)).await;
            }
            End::Redelay { wait, routing_key } => {
                return Box::pin(self.redelay(msg, delivery, wait, &routing_key)).await;
            }
            End::CountRedelivery { earlier } => {
                return Box::pin(self.count_redelivery(msg, delivery, earlier)).await;
            }
            End::Poison { earlier } => {
                let reason =
                    format!("delivered {earlier} times without finishing (poison message)");
                self.shared.events.rejected(&msg.id, false);
                let mut o = record(TaskState::Failure, "PoisonMessage", reason.clone());
                let mut later = None;
                if let Some(o) = &mut o {
                    o.done_at = Some(Utc::now());
                    later = self.later(msg, o.state, o.error.as_ref());
                }
                return Box::pin(self.dead_letter_then(delivery, &reason, o, later)).await;
            }
            End::DeadLetter(reason) => {
                return Box::pin(self.dead_letter(delivery, &reason, None)).await;
            }
        };
        self.finish(msg, delivery, outcome).await
    }

    /// The outcome of `msg` in `state`, with what every outcome carries.
    pub(crate) fn outcome(&self, msg: &TaskMessage, state: TaskState) -> TaskOutcome {
        let config = &self.shared.config;
        let mut o = TaskOutcome::new(msg.id.clone(), msg.task.clone(), state);
        o.worker = Some(config.hostname.clone());
        o.worker_id = Some(self.shared.worker_id.clone());
        o.retries = msg.retries;
        o.queue = Some(self.queue.clone());
        o.parent_id = msg.parent_id.clone();
        o.root_id = msg.root_id.clone();
        o.group_id = msg.group.clone();
        if config.store_args {
            o.args = Some(serde_json::Value::Array(msg.args.clone()));
            o.kwargs = Some(serde_json::Value::Object(msg.kwargs.clone()));
        }
        o
    }

    /// Hands the delivery to the recorder: store the outcome (unless results
    /// are off or ignored), then ack. Like [`Handling::record`], it hands it
    /// over when called.
    pub(crate) fn finish<'a>(
        &'a self,
        msg: &TaskMessage,
        delivery: Delivery,
        outcome: Option<TaskOutcome>,
    ) -> impl Future<Output = ()> + Send + use<'a> {
        let shared = &self.shared;
        let later = outcome
            .as_ref()
            .and_then(|o| self.later(msg, o.state, o.error.as_ref()));
        let outcome = outcome.filter(|_| shared.backend.is_some() && !msg.ignore_result);
        let done = Finished {
            outcome,
            later,
            tag: delivery.delivery_tag,
            acker: delivery.acker,
            window: self.window.clone(),
            task_id: msg.id.clone(),
        };
        self.record(done)
    }

    /// What `msg` ending in `state` leaves to do once stored: its report
    /// to its chord, the rest of its chain marked not run (see
    /// [`chord`](crate::chord)); `None` for most tasks, and without a
    /// result backend.
    fn later(
        &self,
        msg: &TaskMessage,
        state: TaskState,
        error: Option<&TaskError>,
    ) -> Option<Box<Later>> {
        if self.shared.backend.is_none() || (msg.embed.chord.is_none() && msg.embed.chain.is_none())
        {
            return None;
        }
        let (reports, aborted) = chord::consequences(msg, state, error);
        if reports.is_empty() && aborted.is_empty() {
            return None;
        }
        Some(Box::new(Later {
            reports,
            aborted,
            publisher: self.publisher.clone(),
            queue: self.queue.clone(),
        }))
    }

    /// Acks a delivery whose id already has a final outcome. A chord
    /// member (or a chain step that failed) is reported again from its
    /// stored outcome: its worker may have died after storing it and
    /// before reporting it.
    async fn already_done(&self, msg: &TaskMessage, delivery: Delivery) {
        let mut later = None;
        if let Some(backend) = &self.shared.backend
            && (msg.embed.chord.is_some() || msg.embed.chain.is_some())
        {
            match backend.get(&msg.id).await {
                Ok(Some(r)) if r.state.is_ready() => {
                    later = self.later(msg, r.state, r.error.as_ref());
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the stored outcome; returning the message to its queue");
                    return self.requeue(delivery).await;
                }
            }
        }
        let done = Finished {
            outcome: None,
            later,
            tag: delivery.delivery_tag,
            acker: delivery.acker,
            window: self.window.clone(),
            task_id: msg.id.clone(),
        };
        self.record(done).await;
    }

    /// Hands a finished delivery to the recorder, which stores its outcome
    /// and then acks it. It is handed over when this is called: the
    /// recorder's queue has room for twice the prefetch window (and 16
    /// more), so the returned future waits for room only rarely (the result
    /// backend down, or the windows of several queues finishing at once).
    /// That wait is boxed, so its kilobyte is not part of every delivery's
    /// task.
    fn record(&self, done: Finished) -> impl Future<Output = ()> + Send + '_ {
        let recorder = &self.shared.recorder;
        let waiting = match recorder.try_send(done) {
            Ok(()) => None,
            Err(TrySendError::Full(done)) => Some(Box::pin(recorder.send(done))),
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

    /// Publishes a message that is not due yet into the delay queues, then
    /// acks it; if that fails, returns it to its queue.
    async fn redelay(&self, msg: &TaskMessage, delivery: Delivery, wait: Duration, key: &str) {
        let exchange = delay::entry_exchange(&self.shared.config);
        let props = delivery.properties.clone();
        let confirmed = self
            .publisher
            .publish(&exchange, key, &delivery.data, props)
            .await;
        match confirmed {
            Ok(()) => {
                tracing::debug!(
                    wait_ms = wait.as_millis(),
                    "not due yet; moved to the delay queues"
                );
                self.finish(msg, delivery, None).await;
            }
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    "could not move the message to the delay queues; returning it to its queue"
                );
                self.requeue(delivery).await;
            }
        }
    }

    /// Publishes a redelivered message of a classic queue again, carrying
    /// the count of its earlier deliveries, then acks it.
    async fn count_redelivery(&self, msg: &TaskMessage, delivery: Delivery, earlier: u32) {
        let props = counted_copy(&delivery.properties, earlier);
        let published = self
            .publisher
            .publish("", &self.queue, &delivery.data, props)
            .await;
        match published {
            Ok(()) => self.finish(msg, delivery, None).await,
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    "cannot count the redelivery; returning the message to its queue"
                );
                self.requeue(delivery).await;
            }
        }
    }

    /// Returns a message that did not start to its queue at a warm
    /// shutdown: published again (same body, properties and headers, with
    /// confirms), then acked. Unlike a nack, the copy is not flagged
    /// redelivered, so a clean shutdown does not count toward
    /// `max_deliveries` (nor toward a quorum queue's delivery limit). It goes
    /// to the back of the queue. If the publish is not confirmed, the
    /// message is nacked back instead; if the ack fails after the publish,
    /// the broker holds two copies (at-least-once).
    pub(crate) async fn give_back(&self, delivery: Delivery) {
        give_back(&self.publisher, &self.queue, delivery, &self.window).await;
    }

    /// Returns the message to its queue (see [`requeue`]).
    pub(crate) async fn requeue(&self, delivery: Delivery) {
        requeue(delivery, &self.window).await;
    }

    /// Moves a message to the dead-letter queue with the reason in its
    /// headers, then acks it (recording `outcome`, if any). If the
    /// dead-letter publish is not confirmed, the message is returned to its
    /// queue instead, so nothing is lost.
    pub(crate) async fn dead_letter(
        &self,
        delivery: Delivery,
        reason: &str,
        outcome: Option<TaskOutcome>,
    ) {
        self.dead_letter_then(delivery, reason, outcome, None).await;
    }

    /// [`Handling::dead_letter`], then what the outcome leaves to do.
    async fn dead_letter_then(
        &self,
        delivery: Delivery,
        reason: &str,
        outcome: Option<TaskOutcome>,
        later: Option<Box<Later>>,
    ) {
        let (shared, queue) = (&self.shared, self.queue.as_str());
        let id = delivery
            .properties
            .correlation_id()
            .as_ref()
            .map(|c| c.to_string())
            .unwrap_or_else(|| "<none>".to_owned());
        let dead_letters = shared.config.dead_letter_queue.as_str();
        tracing::error!(
            task.id = %id,
            queue,
            reason,
            "message moved to the dead-letter queue {dead_letters}"
        );
        let mut headers = delivery.properties.headers().clone().unwrap_or_default();
        let text = |s: &str| AMQPValue::LongString(LongString::from(s.as_bytes()));
        headers.insert("x-celeriac-error".into(), text(reason));
        headers.insert("x-celeriac-queue".into(), text(queue));
        let failed_at = text(&Utc::now().to_rfc3339());
        headers.insert("x-celeriac-failed-at".into(), failed_at);
        let props = delivery.properties.clone().with_headers(headers);
        let published = self
            .publisher
            .publish("", dead_letters, &delivery.data, props)
            .await;
        match published {
            Ok(()) => {
                let done = Finished {
                    outcome: outcome.filter(|_| shared.backend.is_some()),
                    later,
                    tag: delivery.delivery_tag,
                    acker: delivery.acker,
                    window: self.window.clone(),
                    task_id: id,
                };
                self.record(done).await;
            }
            Err(e) => {
                tracing::warn!(
                    task.id = %id,
                    error = %e,
                    "dead-letter publish not confirmed; returning the message to its queue"
                );
                self.requeue(delivery).await;
            }
        }
    }
}

/// What is logged for a delivery revoked at `stage`.
fn revoked_log(stage: Stage) -> &'static str {
    match stage {
        Stage::Received => "revoked: not running it",
        Stage::Due => "revoked while it waited: not running it",
        Stage::Admitted => "revoked while waiting: not running it",
    }
}

/// A task's failure as it is recorded.
pub(crate) fn task_error(f: TaskFailure) -> TaskError {
    let traceback = f.traceback();
    TaskError {
        kind: f.kind,
        message: f.message,
        traceback,
    }
}

/// See [`Handling::give_back`]; also for deliveries no task was handed yet.
pub(crate) async fn give_back(
    publisher: &Publisher,
    queue: &str,
    delivery: Delivery,
    window: &AckWindow,
) {
    if !delivery.acker.usable() {
        return; // the channel is gone: the broker requeues it by itself
    }
    let (earlier, _) =
        crate::disposition::earlier_deliveries(&delivery.properties, delivery.redelivered);
    let props = counted_copy(&delivery.properties, earlier);
    if let Err(e) = publisher.publish("", queue, &delivery.data, props).await {
        tracing::debug!(error = %e, "cannot publish the message back; returning it with a nack");
        return requeue(delivery, window).await;
    }
    let ack = delivery.acker.ack(BasicAckOptions::default());
    match tokio::time::timeout(BROKER_TIMEOUT, ack).await {
        Ok(Ok(_)) => {
            window.settled(delivery.delivery_tag);
            tracing::debug!("returned to its queue");
        }
        Ok(Err(e)) => {
            tracing::warn!(
                error = %e,
                "ack after publishing the message back failed; it may run twice"
            )
        }
        Err(_) => {
            tracing::warn!("ack after publishing the message back timed out; it may run twice")
        }
    }
}

/// Returns the message to its queue. Its tag leaves the ack window only
/// once the nack is sent, so no multiple-ack can cover it first.
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

/// The properties for a copy of a message published again: a new message
/// to the broker, so it carries the count of earlier unfinished deliveries
/// in celeriac's header, not the broker's.
fn counted_copy(props: &BasicProperties, earlier: u32) -> BasicProperties {
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

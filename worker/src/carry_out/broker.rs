//! The broker's side of how a delivery ends: redelay, count a redelivery,
//! give back, requeue and dead-letter.

use super::Handling;
use crate::chord::Later;
use crate::disposition::{BROKER_DELIVERIES_HEADER, DELIVERIES_HEADER};
use crate::publish::{BROKER_TIMEOUT, Publisher};
use crate::recorder::{AckWindow, Finished};
use celeriac_common::backend::TaskOutcome;
use celeriac_common::delay;
use celeriac_common::protocol::TaskMessage;
use chrono::Utc;
use lapin::BasicProperties;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use std::time::Duration;

impl Handling {
    /// Publishes a message that is not due yet into the delay queues, then
    /// acks it; if that fails, returns it to its queue.
    pub(super) async fn redelay(
        &self,
        msg: &TaskMessage,
        delivery: Delivery,
        wait: Duration,
        key: &str,
    ) {
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
                self.finish(msg, delivery, None, &[], None).await;
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
    pub(super) async fn count_redelivery(
        &self,
        msg: &TaskMessage,
        delivery: Delivery,
        earlier: u32,
    ) {
        let props = counted_copy(&delivery.properties, earlier);
        let published = self
            .publisher
            .publish("", &self.queue, &delivery.data, props)
            .await;
        match published {
            Ok(()) => self.finish(msg, delivery, None, &[], None).await,
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
    pub(super) async fn dead_letter_then(
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
                    claim: None,
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

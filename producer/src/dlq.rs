//! The dead-letter queue, for operators: see what was dead-lettered and why,
//! send messages back to their queue, or drop them.

use crate::client::{Client, ClientError};
use celeriac_common::broker::{self, bounded};
use futures_util::TryFutureExt;
use lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions,
    QueueDeclareOptions,
};
use lapin::types::AMQPValue;
use lapin::{BasicProperties, Channel};
use serde::Serialize;
use std::time::Duration;

/// One dead-lettered message, as listed.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DeadLetter {
    /// Its task id (`correlation_id`), if it has one.
    pub id: Option<String>,
    /// Its task name (`task` header), if it has one.
    pub task: Option<String>,
    /// Why it was dead-lettered.
    pub reason: Option<String>,
    /// The queue it came from.
    pub queue: Option<String>,
    /// When it was dead-lettered.
    pub failed_at: Option<String>,
    /// Body size in bytes.
    pub bytes: usize,
}

fn header(props: &BasicProperties, name: &str) -> Option<String> {
    match props.headers().as_ref()?.inner().get(name)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.to_string()),
        _ => None,
    }
}

fn describe(props: &BasicProperties, body: &[u8]) -> DeadLetter {
    DeadLetter {
        id: props.correlation_id().as_ref().map(|c| c.to_string()),
        task: header(props, "task"),
        reason: header(props, "x-celeriac-error"),
        queue: header(props, "x-celeriac-queue"),
        failed_at: header(props, "x-celeriac-failed-at"),
        bytes: body.len(),
    }
}

impl Client {
    /// How long one broker round trip here may take.
    fn limit(&self) -> Duration {
        self.config().connect_timeout()
    }

    async fn dlq_channel(&self) -> Result<(Channel, u32), ClientError> {
        let channel = self.open_channel().await?;
        let config = self.config();
        let queue = &config.dead_letter_queue;
        broker::check_name("queue name", queue, broker::MAX_NAME_BYTES)?;
        let declare = channel
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                broker::type_arguments(config),
            )
            .map_err(|e| broker::declare_error(config, queue, e));
        let q = broker::within("queue.declare", self.limit(), declare).await?;
        Ok((channel, q.message_count()))
    }

    /// Closes a channel of the dead-letter queue; unacked messages return to it.
    async fn close_channel(&self, channel: &Channel, reason: &str) {
        let _ = bounded(
            "channel.close",
            self.limit(),
            channel.close(200, reason.into()),
        )
        .await;
    }

    /// Lists up to `limit` dead-lettered messages without removing them.
    pub async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, ClientError> {
        let (channel, count) = self.dlq_channel().await?;
        let mut out = Vec::new();
        let queue = self.config().dead_letter_queue.clone();
        for _ in 0..(count as usize).min(limit) {
            let get = channel.basic_get(queue.as_str().into(), BasicGetOptions { no_ack: false });
            match bounded("basic.get", self.limit(), get).await? {
                Some(m) => out.push(describe(&m.delivery.properties, &m.delivery.data)),
                None => break,
            }
        }
        // Closing the channel returns every message we looked at, unchanged.
        self.close_channel(&channel, "listed").await;
        Ok(out)
    }

    /// Sends dead-lettered messages back to the queue they came from (the
    /// ones whose id is in `ids`, or all when `ids` is empty); returns how
    /// many. Each is acked from the dead-letter queue only after the broker
    /// confirmed the re-publish. Messages with no known origin go to the
    /// default queue.
    pub async fn replay_dead_letters(&self, ids: &[String]) -> Result<usize, ClientError> {
        let (channel, count) = self.dlq_channel().await?;
        let select = channel.confirm_select(ConfirmSelectOptions::default());
        bounded("confirm.select", self.limit(), select).await?;
        let dlq = self.config().dead_letter_queue.clone();
        let mut replayed = 0;
        for _ in 0..count {
            let get = channel.basic_get(dlq.as_str().into(), BasicGetOptions { no_ack: false });
            let Some(m) = bounded("basic.get", self.limit(), get).await? else {
                break;
            };
            let d = m.delivery;
            let info = describe(&d.properties, &d.data);
            if !ids.is_empty() && !info.id.as_ref().is_some_and(|id| ids.contains(id)) {
                continue; // left unacked: returned when the channel closes
            }
            let mut props = d.properties.clone();
            if let Some(h) = props.headers().clone() {
                let mut kept = lapin::types::FieldTable::default();
                for (k, v) in h.inner() {
                    if !k.as_str().starts_with("x-celeriac-") {
                        kept.insert(k.clone(), v.clone());
                    }
                }
                props = props.with_headers(kept);
            }
            let target = info
                .queue
                .filter(|q| q.len() <= broker::MAX_NAME_BYTES)
                .unwrap_or_else(|| self.config().default_queue.clone());
            let publish = async {
                channel
                    .basic_publish(
                        "".into(),
                        target.as_str().into(),
                        BasicPublishOptions {
                            mandatory: true,
                            ..Default::default()
                        },
                        &d.data,
                        props,
                    )
                    .await?
                    .await
            };
            let confirm =
                bounded("basic.publish", self.config().publish_timeout(), publish).await?;
            if matches!(confirm, lapin::Confirmation::Ack(None)) {
                let ack = d.acker.ack(BasicAckOptions::default());
                bounded("basic.ack", self.limit(), ack).await?;
                replayed += 1;
            }
        }
        self.close_channel(&channel, "replayed").await;
        Ok(replayed)
    }

    /// Deletes every dead-lettered message; returns how many.
    pub async fn purge_dead_letters(&self) -> Result<u32, ClientError> {
        let queue = self.config().dead_letter_queue.clone();
        self.purge(&queue).await
    }
}

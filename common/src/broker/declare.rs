//! Topology: task and dead-letter queues declared exactly as Celery declares
//! them.

use super::{BrokerError, within};
use crate::config::{Config, QueueType};
use futures_util::TryFutureExt;
use lapin::Channel;
use lapin::ExchangeKind;
use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use std::time::Duration;

/// The arguments Celery declares a task queue with for this configuration.
pub fn queue_arguments(config: &Config) -> FieldTable {
    let mut args = FieldTable::default();
    if config.queue_type == QueueType::Quorum {
        args.insert(
            "x-queue-type".into(),
            AMQPValue::LongString(LongString::from("quorum")),
        );
    }
    if let Some(max) = config.queue_max_priority {
        args.insert("x-max-priority".into(), AMQPValue::LongInt(i32::from(max)));
    }
    args
}

/// Declares `queue` as Celery does: durable, not exclusive, not auto-deleted,
/// with `queue_arguments`, bound to a durable direct exchange of the same name
/// with the queue's name as routing key. Each round trip waits at most
/// `broker_connect_timeout_secs`.
pub async fn declare_task_queue(
    channel: &Channel,
    queue: &str,
    config: &Config,
) -> Result<(), BrokerError> {
    let limit = config.connect_timeout();
    let err = |what: &'static str| {
        move |source| BrokerError::Declare {
            what,
            name: queue.to_owned(),
            source,
        }
    };
    let exchange = channel.exchange_declare(
        queue.into(),
        ExchangeKind::Direct,
        ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    );
    within("exchange.declare", limit, exchange.map_err(err("exchange"))).await?;
    let declare = channel.queue_declare(
        queue.into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        queue_arguments(config),
    );
    within("queue.declare", limit, declare.map_err(err("queue"))).await?;
    let bind = channel.queue_bind(
        queue.into(),
        queue.into(),
        queue.into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    );
    within("queue.bind", limit, bind.map_err(err("queue binding"))).await
}

/// Declares the dead-letter queue: a durable classic queue. Waits at most
/// `limit` for the broker's answer.
pub async fn declare_dead_letter_queue(
    channel: &Channel,
    queue: &str,
    limit: Duration,
) -> Result<(), BrokerError> {
    let declare = channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .map_ok(|_| ())
        .map_err(|source| BrokerError::Declare {
            what: "queue",
            name: queue.to_owned(),
            source,
        });
    within("queue.declare", limit, declare).await
}

//! Topology: task and dead-letter queues declared exactly as Celery declares
//! them, and what to do when a queue already exists with other arguments.

use super::{BrokerError, within};
use crate::config::{Config, QueueType};
use futures_util::TryFutureExt;
use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, ErrorKind, ExchangeKind};

/// The arguments Celery declares a task queue with for this configuration.
pub fn queue_arguments(config: &Config) -> FieldTable {
    let mut args = type_arguments(config);
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
    super::check_queue(queue)?;
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
    let declare = declare.map_err(|source| declare_error(config, queue, source));
    within("queue.declare", limit, declare).await?;
    let bind = channel.queue_bind(
        queue.into(),
        queue.into(),
        queue.into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    );
    within("queue.bind", limit, bind.map_err(err("queue binding"))).await
}

/// `x-queue-type: quorum` for a quorum configuration, else nothing (a
/// classic queue, declared as Celery declares it).
pub fn type_arguments(config: &Config) -> FieldTable {
    let mut args = FieldTable::default();
    if config.queue_type == QueueType::Quorum {
        args.insert(
            "x-queue-type".into(),
            AMQPValue::LongString(LongString::from("quorum")),
        );
    }
    args
}

/// Declares the dead-letter queue: durable, of `queue_type`. Each round
/// trip waits at most `broker_connect_timeout_secs`.
pub async fn declare_dead_letter_queue(
    channel: &Channel,
    queue: &str,
    config: &Config,
) -> Result<(), BrokerError> {
    super::check_name("queue name", queue, super::MAX_NAME_BYTES)?;
    let declare = channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            type_arguments(config),
        )
        .map_ok(|_| ())
        .map_err(|source| declare_error(config, queue, source));
    within("queue.declare", config.connect_timeout(), declare).await
}

/// The error for a failed `queue.declare` of `queue`: when RabbitMQ refused
/// it because the queue exists with other arguments (PRECONDITION_FAILED,
/// "inequivalent arg"), [`BrokerError::QueueMismatch`] with what to do.
pub fn declare_error(config: &Config, queue: &str, source: lapin::Error) -> BrokerError {
    let detail = match source.kind() {
        ErrorKind::ProtocolError(e)
            if matches!(
                e.kind(),
                AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED)
            ) && e.get_message().as_str().contains("inequivalent arg") =>
        {
            e.get_message().to_string()
        }
        _ => {
            return BrokerError::Declare {
                what: "queue",
                name: queue.to_owned(),
                source,
            };
        }
    };
    let hint = mismatch_hint(config, queue, &detail);
    BrokerError::QueueMismatch {
        name: queue.to_owned(),
        detail,
        hint,
    }
}

/// What to do about a queue that exists with other arguments.
fn mismatch_hint(config: &Config, queue: &str, detail: &str) -> String {
    let wanted = match config.queue_type {
        QueueType::Classic => "classic",
        QueueType::Quorum => "quorum",
    };
    let delay = queue.starts_with(&format!("{}.", config.delay_prefix));
    if delay {
        // They hold delayed tasks: never advise deleting them.
        format!(
            "RabbitMQ cannot change a queue's type or arguments; to move delayed tasks to \
             {wanted} delay queues set delay_prefix (CELERIAC_DELAY_PREFIX) to a new name: \
             the old delay queues keep delivering what they hold, delete them once empty"
        )
    } else if detail.contains("'x-queue-type'") {
        format!(
            "RabbitMQ cannot change a queue's type; either set queue_type (CELERIAC_QUEUE_TYPE, \
             --queue-type) to what the queue is, or let workers drain it and delete it \
             (rabbitmqctl delete_queue {queue}) so that it is declared again as {wanted}"
        )
    } else {
        format!(
            "RabbitMQ cannot change a queue's arguments; either set the configuration back to \
             what declared the queue, or let workers drain it and delete it (rabbitmqctl \
             delete_queue {queue}) so that it is declared again"
        )
    }
}

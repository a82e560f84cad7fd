//! Durable delayed delivery on a stock RabbitMQ: 28 levels of delay queues
//! with fixed TTLs in powers of two (level L holds a message 2^L seconds),
//! chained by dead-letter routing, so a message waits only in the levels whose
//! bit is set in its delay, then reaches its task queue. This is the scheme
//! NServiceBus and kombu's "native delayed delivery" use; celeriac uses its
//! own names (`<prefix>.<L>`, `<prefix>.delivery`, with `delay_prefix`
//! defaulting to `celeriac.delay`) so it never collides with Celery's quorum
//! `celery_delayed_*` queues.
//!
//! The routing key carries the delay: 28 bits, most significant first, then
//! the destination queue: `0.0.….1.0.1.celery`. Level L's exchange sends a
//! message into level L's queue when bit L is 1, or on to level L-1's exchange
//! when it is 0. After its TTL a message is dead-lettered to level L-1's
//! exchange with the same routing key; level 0 dead-letters into the delivery
//! exchange, to which every task queue is bound with
//! `*.*.(28 times).<queue>`. Resolution is one second; the worker holds the
//! last sub-second in memory. The longest delay is 2^28-1 s (about 8.5 years).
//! Messages keep their `eta` header, so a worker never runs one early.

use crate::broker::BrokerError;
use crate::config::{Config, QueueType};
use lapin::options::{
    ExchangeBindOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, ExchangeKind};

/// Number of delay levels (bits).
pub const LEVELS: u32 = 28;
/// The longest delay, in seconds.
pub const MAX_DELAY_SECS: u64 = (1 << LEVELS) - 1;

/// A delay too long for the levels.
#[derive(Debug, thiserror::Error)]
#[error(
    "delay of {0} s exceeds the longest supported delay of {MAX_DELAY_SECS} s (about 8.5 years)"
)]
pub struct DelayTooLong(pub u64);

/// The name of level `level`'s exchange and queue.
pub fn level_name(config: &Config, level: u32) -> String {
    format!("{}.{level}", config.delay_prefix)
}

/// The exchange delayed messages are published to (the highest level).
pub fn entry_exchange(config: &Config) -> String {
    level_name(config, LEVELS - 1)
}

/// Where level 0 delivers due messages.
pub fn delivery_exchange(config: &Config) -> String {
    format!("{}.delivery", config.delay_prefix)
}

/// `"*.*.…"` with `n` words.
fn stars(n: u32) -> String {
    "*.".repeat(n as usize)
}

/// The routing key for a message to reach `queue` after `delay_secs` seconds.
pub fn routing_key(delay_secs: u64, queue: &str) -> Result<String, DelayTooLong> {
    if delay_secs > MAX_DELAY_SECS {
        return Err(DelayTooLong(delay_secs));
    }
    let mut key = String::with_capacity(2 * LEVELS as usize + queue.len());
    for level in (0..LEVELS).rev() {
        key.push(if delay_secs >> level & 1 == 1 {
            '1'
        } else {
            '0'
        });
        key.push('.');
    }
    key.push_str(queue);
    Ok(key)
}

/// Declares the level exchanges and queues and their bindings. Idempotent.
pub async fn declare_topology(channel: &Channel, config: &Config) -> Result<(), BrokerError> {
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    let err = |what: &'static str, name: &str| {
        let name = name.to_owned();
        move |source| BrokerError::Declare { what, name, source }
    };
    let delivery = delivery_exchange(config);
    channel
        .exchange_declare(
            delivery.as_str().into(),
            ExchangeKind::Topic,
            durable,
            FieldTable::default(),
        )
        .await
        .map_err(err("exchange", &delivery))?;
    for level in 0..LEVELS {
        let name = level_name(config, level);
        channel
            .exchange_declare(
                name.as_str().into(),
                ExchangeKind::Topic,
                durable,
                FieldTable::default(),
            )
            .await
            .map_err(err("exchange", &name))?;
    }
    for level in (0..LEVELS).rev() {
        let name = level_name(config, level);
        let next = if level > 0 {
            level_name(config, level - 1)
        } else {
            delivery.clone()
        };
        let mut args = FieldTable::default();
        args.insert(
            "x-message-ttl".into(),
            AMQPValue::LongLongInt(1000 << level),
        );
        args.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString(LongString::from(next.as_bytes())),
        );
        if config.queue_type == QueueType::Quorum {
            args.insert(
                "x-queue-type".into(),
                AMQPValue::LongString(LongString::from("quorum")),
            );
            args.insert(
                "x-overflow".into(),
                AMQPValue::LongString(LongString::from("reject-publish")),
            );
            args.insert(
                "x-dead-letter-strategy".into(),
                AMQPValue::LongString(LongString::from("at-least-once")),
            );
        }
        channel
            .queue_declare(
                name.as_str().into(),
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                args,
            )
            .await
            .map_err(err("queue", &name))?;
        let above = LEVELS - 1 - level;
        let bit_set = format!("{}1.#", stars(above));
        channel
            .queue_bind(
                name.as_str().into(),
                name.as_str().into(),
                bit_set.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(err("queue binding", &name))?;
        let bit_clear = format!("{}0.#", stars(above));
        channel
            .exchange_bind(
                next.as_str().into(),
                name.as_str().into(),
                bit_clear.as_str().into(),
                ExchangeBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(err("exchange binding", &name))?;
    }
    Ok(())
}

/// Binds `queue` to the delivery exchange so due messages reach it.
pub async fn bind_queue(
    channel: &Channel,
    config: &Config,
    queue: &str,
) -> Result<(), BrokerError> {
    let key = format!("{}{queue}", stars(LEVELS));
    channel
        .queue_bind(
            queue.into(),
            delivery_exchange(config).as_str().into(),
            key.as_str().into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|source| BrokerError::Declare {
            what: "queue binding",
            name: queue.to_owned(),
            source,
        })
}

/// Deletes the delay exchanges and queues (for tests with their own prefix).
pub async fn delete_topology(channel: &Channel, config: &Config) {
    for level in 0..LEVELS {
        let name = level_name(config, level);
        let _ = channel
            .queue_delete(name.as_str().into(), Default::default())
            .await;
        let _ = channel
            .exchange_delete(name.as_str().into(), Default::default())
            .await;
    }
    let _ = channel
        .exchange_delete(
            delivery_exchange(config).as_str().into(),
            Default::default(),
        )
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_keys_carry_the_delay_bits() {
        let k = routing_key(5, "celery").expect("key");
        assert_eq!(k.split('.').count(), 29);
        assert!(k.ends_with(".1.0.1.celery"));
        assert!(k.starts_with("0.0.0."));
        assert_eq!(
            routing_key(0, "q.x").expect("key"),
            format!("{}q.x", "0.".repeat(28))
        );
        assert!(
            routing_key(MAX_DELAY_SECS, "q")
                .expect("max")
                .starts_with("1.1.")
        );
        assert!(routing_key(MAX_DELAY_SECS + 1, "q").is_err());
    }
}

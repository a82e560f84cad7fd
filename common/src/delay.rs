//! Durable delayed delivery on a stock RabbitMQ: delay queues with fixed
//! TTLs, chained by dead-letter routing, through which a message descends
//! until it is due, then reaches its task queue. The delay, in units of
//! 64 ms, is written in base 16: 8 digit positions ("levels"), and for each
//! level L and digit d = 1..15 a queue `<prefix>.<L>.<d>` holding a message
//! d × 16^L units. A message waits once per non-zero digit of its delay,
//! most significant first, so a delay of minutes takes about 3 hops, and the
//! longest, 64 ms × (16^8 − 1) (about 8.7 years), at most 8. This is the
//! scheme NServiceBus and kombu's "native delayed delivery" use with binary
//! digits; celeriac uses its own names (`delay_prefix`, default
//! `celeriac.delay`) so it never collides with Celery's `celery_delayed_*`.
//!
//! The routing key carries the digits, most significant first, then the
//! destination queue: `0.0.0.0.0.a.f.c.celery`. A message is published to
//! level 7's exchange `<prefix>.7`; each level L's exchange (topic) routes it
//! straight to the queue of the highest non-zero digit at or below L, or,
//! when digits L..0 are all 0, straight to its task queue. When a level queue
//! dead-letters the message (its TTL is over), it goes to the exchange one
//! level down with the same routing key and is routed again: one topic match
//! per hop. (Exchange-to-exchange bindings would be simpler but cost RabbitMQ
//! about 3 ms per hop: measured 370 publishes/s against 5,000/s with direct
//! bindings.)
//!
//! Why base 16 and 64 ms, measured on a 2-core machine with RabbitMQ 3.10:
//! every hop is a persistent re-publish inside the broker, and with binary
//! digits (about 6 hops for a few minutes) the broker could not keep up with
//! ~500 tasks/s coming due; base 16 halves the hops for the price of 120
//! idle queues. A message leaves the queues up to one unit (64 ms) before
//! its eta and the worker holds it in memory for that remainder: a held
//! message occupies a prefetch slot, so the unit bounds what a worker holds
//! to about (due tasks/s × 32 ms); with the first design's one-second unit a
//! worker at prefetch 64 could take at most ~130 due tasks/s.
//! Messages keep their `eta` header, so a worker never runs one early.

use crate::broker::{BrokerError, within};
use crate::config::{Config, QueueType};
use chrono::{DateTime, Utc};
use futures_util::TryFutureExt;
use futures_util::future::{self, Either};
use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, ExchangeKind};
use std::task::Poll;
use std::time::Duration;

/// Number of digit positions (levels).
pub const LEVELS: u32 = 8;
/// The base of the digits: each level has queues for digits 1..BASE.
pub const BASE: u64 = 16;
/// The resolution of the delay queues, in milliseconds.
pub const UNIT_MS: u64 = 64;
/// The longest delay, in units.
const MAX_UNITS: u64 = (1 << (4 * LEVELS)) - 1;
/// The resolution of the delay queues: a delay shorter than this is waited
/// out by the worker, in memory.
pub const UNIT: Duration = Duration::from_millis(UNIT_MS);
/// The longest delay the queues can hold (about 8.7 years).
pub const MAX_DELAY: Duration = Duration::from_millis(UNIT_MS * MAX_UNITS);

/// A delay too long for the levels.
#[derive(Debug, thiserror::Error)]
#[error(
    "delay of {} s exceeds the longest supported delay of {} s (about 8.7 years)",
    .0.as_secs(),
    MAX_DELAY.as_secs()
)]
pub struct DelayTooLong(pub Duration);

/// How long a message with this `eta` still has to wait at `now`, if that is
/// at least one unit (worth a trip through the delay queues).
pub fn remaining(eta: DateTime<Utc>, now: DateTime<Utc>) -> Option<Duration> {
    (eta - now).to_std().ok().filter(|d| *d >= UNIT)
}

/// Level `level`'s exchange.
fn level_exchange(config: &Config, level: u32) -> String {
    format!("{}.{level}", config.delay_prefix)
}

/// The queue holding a message `digit` × 16^`level` units.
pub fn queue_name(config: &Config, level: u32, digit: u64) -> String {
    format!("{}.{level}.{digit:x}", config.delay_prefix)
}

/// Every delay exchange's name: the levels', then the delivery exchange.
pub fn exchange_names(config: &Config) -> impl Iterator<Item = String> + '_ {
    (0..LEVELS)
        .map(|l| level_exchange(config, l))
        .chain(std::iter::once(delivery_exchange(config)))
}

/// Every delay queue's name.
pub fn queue_names(config: &Config) -> Vec<String> {
    (0..LEVELS)
        .flat_map(|level| (1..BASE).map(move |digit| (level, digit)))
        .map(|(level, digit)| queue_name(config, level, digit))
        .collect()
}

/// The queue a message delayed by `delay` waits in first.
pub fn first_queue(config: &Config, delay: Duration) -> Option<String> {
    let units = units(delay)?;
    (0..LEVELS)
        .rev()
        .map(|level| (level, digit(units, level)))
        .find(|(_, d)| *d != 0)
        .map(|(level, d)| queue_name(config, level, d))
}

/// The exchange delayed messages are published to (the highest level).
pub fn entry_exchange(config: &Config) -> String {
    level_exchange(config, LEVELS - 1)
}

/// Where level 0 delivers due messages.
pub fn delivery_exchange(config: &Config) -> String {
    format!("{}.delivery", config.delay_prefix)
}

/// `"*.*.…"` with `n` words.
fn stars(n: u32) -> String {
    "*.".repeat(n as usize)
}

fn units(delay: Duration) -> Option<u64> {
    let units = u64::try_from(delay.as_millis() / u128::from(UNIT_MS)).ok()?;
    (units <= MAX_UNITS).then_some(units)
}

fn digit(units: u64, level: u32) -> u64 {
    (units >> (4 * level)) & (BASE - 1)
}

/// The bytes of a delayed message's routing key before its queue's name:
/// a digit and a dot per level.
pub const KEY_DIGITS_BYTES: usize = 2 * LEVELS as usize;

/// The routing key for a message to reach `queue` after `delay` (rounded
/// down to whole units, so it never arrives late on account of rounding).
pub fn routing_key(delay: Duration, queue: &str) -> Result<String, DelayTooLong> {
    let units = units(delay).ok_or(DelayTooLong(delay))?;
    let mut key = String::with_capacity(KEY_DIGITS_BYTES + queue.len());
    for level in (0..LEVELS).rev() {
        let d = u32::try_from(digit(units, level)).unwrap_or(0);
        key.push(char::from_digit(d, 16).unwrap_or('0'));
        key.push('.');
    }
    key.push_str(queue);
    Ok(key)
}

/// Declares the level exchanges and queues and their bindings. Idempotent.
/// The 669 declarations go out at once ([`pipelined`]).
pub async fn declare_topology(channel: &Channel, config: &Config) -> Result<(), BrokerError> {
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    let mut steps: Vec<Step<'_>> = Vec::new();
    for name in exchange_names(config) {
        let declare = channel
            .exchange_declare(
                name.as_str().into(),
                ExchangeKind::Topic,
                durable,
                FieldTable::default(),
            )
            .map_err({
                let name = name.clone();
                move |source| BrokerError::Declare {
                    what: "exchange",
                    name,
                    source,
                }
            });
        steps.push((name, Box::pin(declare)));
    }
    let delivery = delivery_exchange(config);
    for level in 0..LEVELS {
        let next = if level > 0 {
            level_exchange(config, level - 1)
        } else {
            delivery.clone()
        };
        for digit in 1..BASE {
            let name = queue_name(config, level, digit);
            let ttl = (UNIT_MS * digit) << (4 * level);
            let mut args = crate::broker::type_arguments(config);
            args.insert(
                "x-message-ttl".into(),
                AMQPValue::LongLongInt(i64::try_from(ttl).unwrap_or(i64::MAX)),
            );
            args.insert(
                "x-dead-letter-exchange".into(),
                AMQPValue::LongString(LongString::from(next.as_bytes())),
            );
            if config.queue_type == QueueType::Quorum {
                // Quorum queues dead-letter at least once only when they
                // refuse publishes past a length limit instead of dropping
                // from the head (RabbitMQ's rule; celeriac sets no limit).
                args.insert(
                    "x-overflow".into(),
                    AMQPValue::LongString(LongString::from("reject-publish")),
                );
                args.insert(
                    "x-dead-letter-strategy".into(),
                    AMQPValue::LongString(LongString::from("at-least-once")),
                );
            }
            let declare = channel
                .queue_declare(
                    name.as_str().into(),
                    QueueDeclareOptions {
                        durable: true,
                        ..Default::default()
                    },
                    args,
                )
                .map_ok(|_| ())
                .map_err({
                    let name = name.clone();
                    move |e| crate::broker::declare_error(config, &name, e)
                });
            steps.push((name, Box::pin(declare)));
        }
    }
    for (exchange, pattern, queue) in level_bindings(config) {
        steps.push(bind(channel, queue, exchange, pattern));
    }
    pipelined(config.connect_timeout(), steps).await
}

/// One declaration of a [`pipelined`] batch, with the name it declares.
type Step<'a> = (
    String,
    std::pin::Pin<Box<dyn Future<Output = Result<(), BrokerError>> + Send + 'a>>,
);

/// Sends every step's request at once, in order, and waits for the
/// answers, which RabbitMQ gives in order: about one round trip for the
/// whole batch instead of one each (the delay topology over a link of
/// 50 ms took over a minute one by one, longer than `apply_at` waits).
/// Waits at most `limit` for every hundred steps. A refused step closes
/// the channel and fails the ones after it too: the error reported is the
/// one that names its own step, else the first.
async fn pipelined(limit: Duration, steps: Vec<Step<'_>>) -> Result<(), BrokerError> {
    let bound = limit.saturating_mul(u32::try_from(steps.len().div_ceil(100)).unwrap_or(u32::MAX));
    let all = async {
        let mut sent = Vec::with_capacity(steps.len());
        for (name, mut step) in steps {
            // The first poll queues the request's frame: one step at a
            // time, so the broker receives them in this order.
            let answer = match futures_util::poll!(step.as_mut()) {
                Poll::Ready(done) => Either::Left(future::ready(done)),
                Poll::Pending => Either::Right(step),
            };
            sent.push((name, answer));
        }
        let (names, answers): (Vec<String>, Vec<_>) = sent.into_iter().unzip();
        let results = future::join_all(answers).await;
        let mut first = None;
        for (name, result) in names.iter().zip(results) {
            if let Err(e) = result {
                if names_its_step(&e, name) {
                    return Err(e);
                }
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    };
    within("declarations", bound, all).await
}

/// Whether `err` (a broker's refusal) names `name` as what it refused.
fn names_its_step(err: &BrokerError, name: &str) -> bool {
    crate::cli::one_line(err).contains(&format!("'{name}'"))
}

/// One `queue.bind`, as a [`pipelined`] step.
fn bind<'a>(channel: &'a Channel, queue: String, exchange: String, pattern: String) -> Step<'a> {
    let bind = channel
        .queue_bind(
            queue.as_str().into(),
            exchange.as_str().into(),
            pattern.as_str().into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .map_err({
            let queue = queue.clone();
            move |source| BrokerError::Declare {
                what: "queue binding",
                name: queue,
                source,
            }
        });
    (queue, Box::pin(bind))
}

/// The level queues' bindings, as (exchange, pattern, queue): from exchange
/// `level`, a message whose highest non-zero digit at or below `level` is
/// digit `d` at `target` goes straight into that queue.
fn level_bindings(config: &Config) -> impl Iterator<Item = (String, String, String)> + '_ {
    (0..LEVELS).flat_map(move |level| {
        (0..=level).flat_map(move |target| {
            (1..BASE).map(move |digit| {
                let pattern = format!(
                    "{}{}{digit:x}.#",
                    stars(LEVELS - 1 - level),
                    "0.".repeat((level - target) as usize)
                );
                (
                    level_exchange(config, level),
                    pattern,
                    queue_name(config, target, digit),
                )
            })
        })
    })
}

/// A task queue's bindings, as (exchange, pattern): on every level's
/// exchange for a message whose remaining digits are all 0, and on the
/// delivery exchange.
fn queue_bindings(config: &Config, queue: &str) -> Vec<(String, String)> {
    (0..LEVELS)
        .map(|level| {
            let pattern = format!(
                "{}{}{queue}",
                stars(LEVELS - 1 - level),
                "0.".repeat(level as usize + 1)
            );
            (level_exchange(config, level), pattern)
        })
        .chain(std::iter::once((
            delivery_exchange(config),
            format!("{}{queue}", stars(LEVELS)),
        )))
        .collect()
}

/// Binds `queue` so due messages reach it ([`queue_bindings`]), the
/// bindings [`pipelined`].
pub async fn bind_queue(
    channel: &Channel,
    config: &Config,
    queue: &str,
) -> Result<(), BrokerError> {
    crate::broker::check_queue(queue)?;
    let steps = queue_bindings(config, queue)
        .into_iter()
        .map(|(exchange, pattern)| bind(channel, queue.to_owned(), exchange, pattern))
        .collect();
    pipelined(config.connect_timeout(), steps).await
}

/// Deletes the delay exchanges and queues (for tests with their own prefix).
pub async fn delete_topology(channel: &Channel, config: &Config) {
    for name in queue_names(config) {
        let _ = channel
            .queue_delete(name.as_str().into(), Default::default())
            .await;
    }
    for name in exchange_names(config) {
        let _ = channel
            .exchange_delete(name.as_str().into(), Default::default())
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_keys_carry_the_delay_digits() {
        // 0x1a3 units = 419 × 64 ms = 26.816 s (and anything up to one unit more).
        for ms in [26_816, 26_879] {
            let k = routing_key(Duration::from_millis(ms), "celery").expect("key");
            assert_eq!(k, "0.0.0.0.0.1.a.3.celery");
        }
        assert_eq!(
            routing_key(Duration::from_millis(63), "q.x").expect("key"),
            format!("{}q.x", "0.".repeat(8))
        );
        assert_eq!(
            routing_key(MAX_DELAY, "q").expect("max"),
            "f.f.f.f.f.f.f.f.q"
        );
        let err = routing_key(MAX_DELAY + UNIT, "q").expect_err("too far");
        assert!(err.to_string().contains("8.7 years"), "{err}");
    }

    /// RabbitMQ's topic match: `*` is one word, `#` zero or more.
    fn topic_match(pattern: &[&str], key: &[&str]) -> bool {
        match (pattern.split_first(), key.split_first()) {
            (None, None) => true,
            (Some((&"#", rest)), _) => {
                topic_match(rest, key)
                    || key
                        .split_first()
                        .is_some_and(|(_, k)| topic_match(pattern, k))
            }
            (Some((p, rest)), Some((k, krest))) => {
                (*p == "*" || p == k) && topic_match(rest, krest)
            }
            _ => false,
        }
    }

    /// Follows messages through the bindings as RabbitMQ routes them: from
    /// the entry exchange, into exactly one queue per hop, each level queue
    /// waiting its TTL and dead-lettering to the exchange a level down.
    #[test]
    fn every_delay_descends_its_digits_highest_first_and_reaches_its_queue() {
        let config = Config::default();
        let task_queue = "tasks.q";
        let mut bindings: Vec<(String, String, String)> = level_bindings(&config).collect();
        bindings.extend(
            queue_bindings(&config, task_queue)
                .into_iter()
                .map(|(e, p)| (e, p, task_queue.to_owned())),
        );
        for units in [
            0u64,
            1,
            15,
            16,
            0x1a3,
            0x6ddd,
            0x10000,
            0x149970,
            0x0f0f_0f0f,
            0x8000_0001,
            MAX_UNITS,
        ] {
            let key = routing_key(Duration::from_millis(units * UNIT_MS), task_queue).expect("key");
            let words: Vec<&str> = key.split('.').collect();
            let (mut exchange, mut waited, mut levels) = (entry_exchange(&config), 0, Vec::new());
            loop {
                let matched: Vec<&str> = bindings
                    .iter()
                    .filter(|(e, p, _)| {
                        *e == exchange && topic_match(&p.split('.').collect::<Vec<_>>(), &words)
                    })
                    .map(|(_, _, q)| q.as_str())
                    .collect();
                assert_eq!(matched.len(), 1, "{units:#x} at {exchange}: {matched:?}");
                if matched[0] == task_queue {
                    break;
                }
                let mut parts = matched[0].rsplit('.');
                let digit = u64::from_str_radix(parts.next().expect("digit"), 16).expect("hex");
                let level: u32 = parts.next().expect("level").parse().expect("level");
                assert_eq!(matched[0], queue_name(&config, level, digit));
                waited += digit << (4 * level);
                levels.push(level);
                exchange = if level > 0 {
                    level_exchange(&config, level - 1)
                } else {
                    delivery_exchange(&config)
                };
            }
            assert_eq!(waited, units, "{units:#x} waited {waited:#x}");
            assert!(
                levels.windows(2).all(|w| w[0] > w[1]),
                "{units:#x}: {levels:?}"
            );
            let nonzero = (0..LEVELS).filter(|l| digit(units, *l) != 0).count();
            assert_eq!(
                levels.len(),
                nonzero,
                "{units:#x}: one hop per non-zero digit"
            );
        }
    }

    #[test]
    fn a_message_waits_first_in_its_highest_digit_queue() {
        let config = Config::default();
        let day = Duration::from_secs(86_400); // 1,350,000 units = 0x149970
        assert_eq!(
            first_queue(&config, day).as_deref(),
            Some("celeriac.delay.5.1")
        );
        assert_eq!(first_queue(&config, Duration::from_millis(10)), None);
        assert_eq!(queue_names(&config).len(), 120);
    }

    #[test]
    fn only_waits_of_a_unit_or_more_go_through_the_queues() {
        let now = Utc::now();
        let ms = chrono::Duration::milliseconds;
        assert_eq!(remaining(now + ms(63), now), None);
        assert_eq!(remaining(now - ms(5), now), None);
        assert_eq!(remaining(now + ms(64), now), Some(UNIT));
        assert_eq!(
            remaining(now + ms(90_000), now),
            Some(Duration::from_secs(90))
        );
    }
}

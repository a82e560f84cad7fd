//! Listening to Celery's events as a monitor does (`celery events`,
//! Flower): a queue of one's own bound to the `celeryev` topic exchange
//! with routing key `#` (`celeriacev.<uuid>`, exclusive, auto-deleted,
//! message TTL 5 s, deleted 60 s after its last consumer), and the
//! bodies read alike whether they hold one event or a list of them
//! (`<group>.multi`).

use crate::broker::{self, BrokerError};
use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, ExchangeKind};
use serde_json::{Map, Value};
use std::time::Duration;

/// The events exchange.
pub const EXCHANGE: &str = "celeryev";
/// Celery's `event_queue_ttl`.
const MESSAGE_TTL_MS: i64 = 5_000;
/// Celery's `event_queue_expires`.
const EXPIRES_MS: i64 = 60_000;

/// Declares `celeryev` (as Celery does: topic, durable) and a queue of
/// this monitor's own bound to every event; returns the queue's name.
/// Each broker call is bounded by `limit`.
pub async fn subscribe(channel: &Channel, limit: Duration) -> Result<String, BrokerError> {
    let opts = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    let declare = channel.exchange_declare(
        EXCHANGE.into(),
        ExchangeKind::Topic,
        opts,
        FieldTable::default(),
    );
    broker::bounded("exchange.declare", limit, declare).await?;
    let name = format!("celeriacev.{}", uuid::Uuid::new_v4());
    let mut args = FieldTable::default();
    args.insert(
        "x-message-ttl".into(),
        AMQPValue::LongLongInt(MESSAGE_TTL_MS),
    );
    args.insert("x-expires".into(), AMQPValue::LongLongInt(EXPIRES_MS));
    let opts = QueueDeclareOptions {
        exclusive: true,
        auto_delete: true,
        ..Default::default()
    };
    let declare = channel.queue_declare(name.as_str().into(), opts, args);
    broker::bounded("queue.declare", limit, declare).await?;
    let bind = channel.queue_bind(
        name.as_str().into(),
        EXCHANGE.into(),
        "#".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    );
    broker::bounded("queue.bind", limit, bind).await?;
    Ok(name)
}

/// The events in a message body: one object, or a list of them. An
/// unreadable body gives none (logged at debug).
pub fn decode(body: &[u8]) -> Vec<Map<String, Value>> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(one)) => vec![one],
        Ok(Value::Array(many)) => many
            .into_iter()
            .filter_map(|v| match v {
                Value::Object(m) => Some(m),
                _ => None,
            })
            .collect(),
        _ => {
            tracing::debug!("unreadable event ignored");
            Vec::new()
        }
    }
}

/// An event's `timestamp`: seconds since the Unix epoch.
pub fn timestamp() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// An event's `utcoffset`, as Python's `time.timezone // 3600`: hours west
/// of UTC (UTC+2 sends -2).
pub fn utcoffset() -> i64 {
    let east = chrono::Local::now().offset().local_minus_utc();
    i64::from(-east).div_euclid(3600)
}

#[cfg(test)]
mod tests {
    use super::decode;

    #[test]
    fn decodes_one_event_a_list_and_garbage() {
        assert_eq!(decode(br#"{"type":"task-sent"}"#).len(), 1);
        assert_eq!(decode(br#"[{"type":"a"},3,{"type":"b"}]"#).len(), 2);
        assert!(decode(b"not json").is_empty());
    }
}

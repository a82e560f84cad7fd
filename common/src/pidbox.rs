//! Celery's remote-control "pidbox": a fanout exchange `celery.pidbox`
//! (not durable) to which every worker binds its own exclusive queue
//! `<hostname>.celery.pidbox`. celeriac uses it for `revoke`, so revokes sent
//! by Python's `app.control.revoke(id)` reach Rust workers too, and the other
//! way round, and for `celeriac inspect` / `celeriac control`, whose replies
//! come back on the direct exchange `reply.celery.pidbox` to a queue of the
//! asking client's own.

use crate::broker::{BrokerError, within};
use futures_util::TryFutureExt;
use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, ExchangeKind};
use serde::Deserialize;
use serde_json::{Value, json};
use std::time::Duration;

/// The broadcast exchange.
pub const EXCHANGE: &str = "celery.pidbox";
/// The exchange workers reply on (direct, not durable), as kombu names it.
pub const REPLY_EXCHANGE: &str = "reply.celery.pidbox";
/// kombu's `reply_queue_expires`: an unused reply queue is deleted after 10 s.
const REPLY_QUEUE_EXPIRES_MS: i64 = 10_000;
/// Celery's defaults for a worker's control queue: messages live 300 s, an
/// unused queue is deleted after 10 s.
const QUEUE_MESSAGE_TTL_MS: i64 = 300_000;
const QUEUE_EXPIRES_MS: i64 = 10_000;

/// Declares the exchange as kombu does (fanout, not durable, not
/// auto-deleted), waiting at most `limit` for the broker's answer.
pub async fn declare_exchange(channel: &Channel, limit: Duration) -> Result<(), BrokerError> {
    let declare = channel
        .exchange_declare(
            EXCHANGE.into(),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        )
        .map_err(|source| BrokerError::Declare {
            what: "exchange",
            name: EXCHANGE.to_owned(),
            source,
        });
    within("exchange.declare", limit, declare).await
}

/// Declares and binds this worker's control queue; returns its name. Each
/// round trip waits at most `limit`.
pub async fn declare_worker_queue(
    channel: &Channel,
    hostname: &str,
    limit: Duration,
) -> Result<String, BrokerError> {
    declare_exchange(channel, limit).await?;
    let name = format!("{hostname}.celery.pidbox");
    crate::broker::check_name("queue name", &name, crate::broker::MAX_NAME_BYTES)?;
    let mut args = FieldTable::default();
    args.insert(
        "x-message-ttl".into(),
        AMQPValue::LongLongInt(QUEUE_MESSAGE_TTL_MS),
    );
    args.insert("x-expires".into(), AMQPValue::LongLongInt(QUEUE_EXPIRES_MS));
    let opts = QueueDeclareOptions {
        exclusive: true,
        auto_delete: true,
        ..Default::default()
    };
    let err = |source| BrokerError::Declare {
        what: "queue",
        name: name.clone(),
        source,
    };
    let declare = channel.queue_declare(name.as_str().into(), opts, args);
    within("queue.declare", limit, declare.map_err(err)).await?;
    let bind = channel.queue_bind(
        name.as_str().into(),
        EXCHANGE.into(),
        "".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    );
    within("queue.bind", limit, bind.map_err(err)).await?;
    Ok(name)
}

/// Declares the reply exchange as kombu does (direct, not durable) and a
/// private queue (exclusive, auto-deleted) bound to it with `routing_key`,
/// where the replies to a request sent with that `reply_to` arrive; returns
/// the queue's name. Each round trip waits at most `limit`.
pub async fn declare_reply_queue(
    channel: &Channel,
    routing_key: &str,
    limit: Duration,
) -> Result<String, BrokerError> {
    let opts = ExchangeDeclareOptions {
        durable: false,
        ..Default::default()
    };
    let declare = channel
        .exchange_declare(
            REPLY_EXCHANGE.into(),
            ExchangeKind::Direct,
            opts,
            FieldTable::default(),
        )
        .map_err(|source| BrokerError::Declare {
            what: "exchange",
            name: REPLY_EXCHANGE.to_owned(),
            source,
        });
    within("exchange.declare", limit, declare).await?;
    let name = format!("{routing_key}.{REPLY_EXCHANGE}");
    let mut args = FieldTable::default();
    args.insert(
        "x-expires".into(),
        AMQPValue::LongLongInt(REPLY_QUEUE_EXPIRES_MS),
    );
    let opts = QueueDeclareOptions {
        exclusive: true,
        auto_delete: true,
        ..Default::default()
    };
    let err = |source| BrokerError::Declare {
        what: "queue",
        name: name.clone(),
        source,
    };
    let declare = channel.queue_declare(name.as_str().into(), opts, args);
    within("queue.declare", limit, declare.map_err(err)).await?;
    let bind = channel.queue_bind(
        name.as_str().into(),
        REPLY_EXCHANGE.into(),
        routing_key.into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    );
    within("queue.bind", limit, bind.map_err(err)).await?;
    Ok(name)
}

/// A request broadcast to the workers, as Celery's `Mailbox` sends one.
#[derive(Debug, Clone, PartialEq)]
pub struct Broadcast {
    /// The command (`ping`, `stats`, `rate_limit`, ...).
    pub method: String,
    /// Its keyword arguments (a JSON object).
    pub arguments: Value,
    /// The workers (host names) that act on it; empty for all.
    pub destination: Vec<String>,
    /// Where replies go: a ticket and a routing key on [`REPLY_EXCHANGE`];
    /// `None` when no reply is wanted.
    pub reply: Option<(String, String)>,
    /// Unix time after which workers drop it; `None` for never.
    pub expires: Option<f64>,
}

impl Broadcast {
    /// The body and headers (`clock`, `expires`) to publish to [`EXCHANGE`].
    pub fn message(&self) -> (Vec<u8>, FieldTable) {
        let destination = match self.destination.as_slice() {
            [] => Value::Null,
            hosts => json!(hosts),
        };
        let mut body = json!({
            "method": self.method,
            "arguments": self.arguments,
            "destination": destination, "pattern": null, "matcher": null,
        });
        if let (Some((ticket, routing_key)), Value::Object(map)) = (&self.reply, &mut body) {
            map.insert("ticket".into(), json!(ticket));
            let to = json!({"exchange": REPLY_EXCHANGE, "routing_key": routing_key});
            map.insert("reply_to".into(), to);
        }
        let mut headers = FieldTable::default();
        headers.insert("clock".into(), AMQPValue::LongLongInt(0));
        let expires = match self.expires {
            Some(at) => AMQPValue::Double(at),
            None => AMQPValue::LongLongInt(0),
        };
        headers.insert("expires".into(), expires);
        (body.to_string().into_bytes(), headers)
    }
}

/// A control command a worker acts on.
#[derive(Debug, Clone, PartialEq)]
pub enum Control {
    /// Never start these tasks; with `terminate`, also stop them if running.
    Revoke {
        /// Task ids.
        ids: Vec<String>,
        /// Stop running ones too.
        terminate: bool,
    },
    /// Anything else (ping, stats, ...), ignored.
    Other(String),
}

#[derive(Deserialize)]
struct Request {
    method: String,
    #[serde(default)]
    arguments: Value,
    #[serde(default)]
    destination: Option<Vec<String>>,
}

/// Reads a control message. `None` if it is not for `hostname` or not JSON.
pub fn parse(body: &[u8], hostname: &str) -> Option<Control> {
    let req: Request = serde_json::from_slice(body).ok()?;
    if req
        .destination
        .as_ref()
        .is_some_and(|d| !d.iter().any(|h| h == hostname))
    {
        return None;
    }
    Some(match req.method.as_str() {
        "revoke" => {
            let ids = match req.arguments.get("task_id") {
                Some(Value::String(id)) => vec![id.clone()],
                Some(Value::Array(ids)) => ids
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect(),
                _ => Vec::new(),
            };
            let terminate = req
                .arguments
                .get("terminate")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            Control::Revoke { ids, terminate }
        }
        other => Control::Other(other.to_owned()),
    })
}

/// The body and headers of a `revoke` broadcast, as Celery's client sends it.
pub fn revoke_message(ids: &[String], terminate: bool) -> (Vec<u8>, FieldTable) {
    Broadcast {
        method: "revoke".into(),
        arguments: json!({"task_id": ids, "terminate": terminate, "signal": "SIGTERM"}),
        destination: Vec::new(),
        reply: None,
        expires: None,
    }
    .message()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revoke_round_trips_and_respects_destination() {
        let (body, _) = revoke_message(&["a".into(), "b".into()], true);
        assert_eq!(
            parse(&body, "w1"),
            Some(Control::Revoke {
                ids: vec!["a".into(), "b".into()],
                terminate: true
            })
        );
        let single = br#"{"method":"revoke","arguments":{"task_id":"x"},"destination":["w2"]}"#;
        assert_eq!(parse(single, "w1"), None);
        assert_eq!(
            parse(single, "w2"),
            Some(Control::Revoke {
                ids: vec!["x".into()],
                terminate: false
            })
        );
        assert_eq!(
            parse(br#"{"method":"ping"}"#, "w1"),
            Some(Control::Other("ping".into()))
        );
        assert_eq!(parse(b"nope", "w1"), None);
    }

    #[test]
    fn broadcasts_are_built_as_celery_sends_them() {
        let request = Broadcast {
            method: "ping".into(),
            arguments: json!({}),
            destination: vec!["w1".into()],
            reply: Some(("t-1".into(), "key".into())),
            expires: Some(12.5),
        };
        let (body, headers) = request.message();
        let body: Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(
            body,
            json!({"method": "ping", "arguments": {}, "destination": ["w1"],
                   "pattern": null, "matcher": null, "ticket": "t-1",
                   "reply_to": {"exchange": "reply.celery.pidbox", "routing_key": "key"}})
        );
        assert_eq!(
            headers.inner().get("expires"),
            Some(&AMQPValue::Double(12.5))
        );
        let (body, _) = revoke_message(&["a".into()], false);
        let body: Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(body["destination"], Value::Null);
        assert!(body.get("reply_to").is_none());
    }
}

//! The asking side of Celery's pidbox: broadcast one request to the
//! workers, as Celery's `Mailbox` does, and collect their replies from a
//! private queue bound to `reply.celery.pidbox` until a deadline.

use celeriac_common::Config;
use celeriac_common::broker::{self, BrokerError};
use celeriac_common::pidbox::{self, Broadcast};
use futures_util::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicPublishOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection};
use serde_json::Value;
use std::time::Duration;

/// One worker's reply: its host name and what it answered.
pub type Reply = (String, Value);

/// What to ask and whom.
#[derive(Debug, Clone)]
pub struct Ask {
    /// The command (`ping`, `rate_limit`, ...).
    pub method: String,
    /// Its keyword arguments (a JSON object).
    pub arguments: Value,
    /// The workers that answer; empty for all.
    pub destination: Vec<String>,
    /// How long replies are collected.
    pub timeout: Duration,
}

/// Broadcasts `ask` and returns the replies that came within its timeout,
/// one per worker, in their order of arrival. Returns early once every
/// worker named in its destination replied.
pub async fn ask(config: &Config, ask: &Ask) -> Result<Vec<Reply>, BrokerError> {
    let connection = broker::connect_config(config, "celeriac-admin").await?;
    let replies = ask_on(&connection, config.connect_timeout(), ask).await;
    broker::close(&connection, config.connect_timeout(), "done").await;
    replies
}

async fn ask_on(
    connection: &Connection,
    limit: Duration,
    ask: &Ask,
) -> Result<Vec<Reply>, BrokerError> {
    let channel = broker::bounded("channel.open", limit, connection.create_channel()).await?;
    pidbox::declare_exchange(&channel, limit).await?;
    let routing_key = uuid::Uuid::new_v4().to_string();
    let queue = pidbox::declare_reply_queue(&channel, &routing_key, limit).await?;
    let consume = channel.basic_consume(
        queue.as_str().into(),
        "".into(),
        BasicConsumeOptions {
            no_ack: true,
            ..Default::default()
        },
        FieldTable::default(),
    );
    let mut replies = broker::bounded("basic.consume", limit, consume).await?;
    let ticket = uuid::Uuid::new_v4().to_string();
    let request = Broadcast {
        method: ask.method.clone(),
        arguments: ask.arguments.clone(),
        destination: ask.destination.clone(),
        reply: Some((ticket.clone(), routing_key)),
        expires: Some(unix_now() + ask.timeout.as_secs_f64()),
    };
    let (body, headers) = request.message();
    let props = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_content_encoding("utf-8".into())
        .with_delivery_mode(1)
        .with_headers(headers);
    let publish = channel.basic_publish(
        pidbox::EXCHANGE.into(),
        "".into(),
        BasicPublishOptions::default(),
        &body,
        props,
    );
    broker::bounded("basic.publish", limit, publish).await?;

    let deadline = tokio::time::Instant::now() + ask.timeout;
    let mut got: Vec<Reply> = Vec::new();
    while !all_replied(&ask.destination, &got) {
        let delivery = match tokio::time::timeout_at(deadline, replies.next()).await {
            Err(_) | Ok(None) => break,
            Ok(Some(Err(source))) => {
                return Err(BrokerError::Channel {
                    op: "basic.consume",
                    source,
                });
            }
            Ok(Some(Ok(delivery))) => delivery,
        };
        if !same_ticket(delivery.properties.headers().as_ref(), &ticket) {
            continue;
        }
        for (host, reply) in read_reply(&delivery.data) {
            if !got.iter().any(|(h, _)| *h == host) {
                got.push((host, reply));
            }
        }
    }
    Ok(got)
}

/// Whether every worker of a non-empty `destination` replied.
fn all_replied(destination: &[String], got: &[Reply]) -> bool {
    !destination.is_empty() && destination.iter().all(|d| got.iter().any(|(h, _)| h == d))
}

/// A reply without a ticket header is taken (older senders); one with
/// another ticket answers another request.
fn same_ticket(headers: Option<&FieldTable>, ticket: &str) -> bool {
    match headers.and_then(|h| h.inner().get("ticket")) {
        Some(AMQPValue::LongString(t)) => t.as_bytes() == ticket.as_bytes(),
        Some(AMQPValue::ShortString(t)) => t.as_str() == ticket,
        _ => true,
    }
}

/// `{hostname: reply}` as workers send it; anything else gives nothing.
fn read_reply(body: &[u8]) -> Vec<Reply> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => map.into_iter().collect(),
        _ => {
            tracing::debug!("unreadable control reply ignored");
            Vec::new()
        }
    }
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::LongString;
    use serde_json::json;

    #[test]
    fn replies_are_matched_and_counted() {
        let mut h = FieldTable::default();
        h.insert(
            "ticket".into(),
            AMQPValue::LongString(LongString::from("t")),
        );
        assert!(same_ticket(Some(&h), "t"));
        assert!(!same_ticket(Some(&h), "u"));
        assert!(same_ticket(None, "t"));
        let got = read_reply(br#"{"w1": {"ok": "pong"}}"#);
        assert_eq!(got, vec![("w1".to_owned(), json!({"ok": "pong"}))]);
        assert!(read_reply(b"[1]").is_empty());
        assert!(all_replied(&["w1".into()], &got));
        assert!(!all_replied(&["w1".into(), "w2".into()], &got));
        assert!(!all_replied(&[], &got));
    }
}

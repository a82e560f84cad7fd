//! Celery's `task-sent` event, sent after each task the broker took when
//! `task_send_sent_event` is on (off by default, as in Celery): to the
//! `celeryev` topic exchange, routing key `task.sent`, with Celery's
//! fields (`uuid`, `root_id`, `parent_id`, `name`, `args`, `kwargs` as the
//! message's `argsrepr`/`kwargsrepr`, `retries`, `eta`, `expires`,
//! `queue`, `exchange`, `routing_key`) and those of every event (`type`,
//! `hostname` = the client's `gen<pid>@<host>`, `timestamp`, `utcoffset`,
//! `pid`, `clock`).
//!
//! The event goes out on the client's channel after the task's own
//! confirm; an event the broker does not take is logged (once at warn
//! level) and never fails the call.

use super::link::Link;
use super::{Client, Route};
use celeriac_common::broker;
use celeriac_common::protocol::TaskMessage;
use chrono::SecondsFormat;
use lapin::options::{BasicPublishOptions, ExchangeDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, ExchangeKind};
use serde_json::{Value, json};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// The events exchange.
const EXCHANGE: &str = "celeryev";

/// The client's Lamport clock for its events.
static CLOCK: AtomicU64 = AtomicU64::new(0);
/// Set once an event that could not be sent was logged at warn level.
static WARNED: AtomicBool = AtomicBool::new(false);

/// The `task-sent` event of `msg` sent by `hostname` along `route`.
pub(super) fn event(msg: &TaskMessage, route: &Route, hostname: &str) -> Value {
    let (args, kwargs) = msg.reprs();
    let time = |t: Option<chrono::DateTime<chrono::FixedOffset>>| {
        t.map(|t| t.to_rfc3339_opts(SecondsFormat::Micros, false))
    };
    let queue = route.declare.as_str();
    json!({
        "type": "task-sent",
        "uuid": msg.id,
        "root_id": msg.root_id.as_deref().unwrap_or(&msg.id),
        "parent_id": msg.parent_id,
        "name": msg.task,
        "args": args,
        "kwargs": kwargs,
        "retries": msg.retries,
        "eta": time(msg.eta),
        "expires": time(msg.expires),
        "queue": queue,
        "exchange": route.exchange,
        "routing_key": route.routing_key,
        "hostname": hostname,
        "timestamp": celeriac_common::monitor::timestamp(),
        "utcoffset": celeriac_common::monitor::utcoffset(),
        "pid": std::process::id(),
        "clock": CLOCK.fetch_add(1, Ordering::Relaxed) + 1,
    })
}

impl Client {
    /// Sends `msg`'s `task-sent` event if the setting asks for it.
    pub(super) async fn task_sent(&self, link: &Link, msg: &TaskMessage, route: &Route) {
        if !self.inner.config.task_send_sent_event {
            return;
        }
        if let Err(e) = self.send_event(link, msg, route).await {
            if WARNED.swap(true, Ordering::Relaxed) {
                tracing::debug!(task.id = %msg.id, error = %e, "task-sent event not sent");
            } else {
                tracing::warn!(
                    task.id = %msg.id, error = %e,
                    "task-sent event not sent; the task was (further ones at debug level)"
                );
            }
        }
    }

    async fn send_event(
        &self,
        link: &Link,
        msg: &TaskMessage,
        route: &Route,
    ) -> Result<(), broker::BrokerError> {
        let limit = self.inner.config.connect_timeout();
        if !link.knows(EXCHANGE) {
            let opts = ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            };
            let declare = link.channel.exchange_declare(
                EXCHANGE.into(),
                ExchangeKind::Topic,
                opts,
                FieldTable::default(),
            );
            broker::bounded("exchange.declare", limit, declare).await?;
            link.remember(EXCHANGE);
        }
        let hostname = self.origin();
        let body = event(msg, route, hostname).to_string();
        let mut headers = FieldTable::default();
        headers.insert(
            "hostname".into(),
            AMQPValue::LongString(LongString::from(hostname.as_bytes())),
        );
        let props = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_content_encoding("utf-8".into())
            .with_delivery_mode(1)
            .with_headers(headers);
        let publish = async {
            link.publish(
                EXCHANGE,
                "task.sent",
                BasicPublishOptions::default(),
                body.as_bytes(),
                props,
            )
            .await?
            .await
        };
        broker::bounded("basic.publish", limit, publish).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_sent_has_celerys_fields() {
        let mut msg = TaskMessage::new("tasks.add", vec![json!(1), json!(2)], Default::default());
        msg.retries = 1;
        let route = Route {
            exchange: String::new(),
            routing_key: "q".into(),
            declare: "q".into(),
            delayed: false,
        };
        let ev = event(&msg, &route, "gen1@h");
        assert_eq!(ev["type"], "task-sent");
        assert_eq!(ev["uuid"], msg.id.as_str());
        assert_eq!(ev["root_id"], msg.id.as_str());
        assert_eq!(ev["name"], "tasks.add");
        assert_eq!(ev["args"], "[1,2]");
        assert_eq!(ev["kwargs"], "{}");
        assert_eq!(ev["retries"], 1);
        assert_eq!(ev["queue"], "q");
        assert_eq!(ev["exchange"], "");
        assert_eq!(ev["routing_key"], "q");
        assert_eq!(ev["hostname"], "gen1@h");
        assert!(ev["eta"].is_null() && ev["parent_id"].is_null());
        assert!(ev["timestamp"].is_f64() && ev["clock"].is_u64() && ev["pid"].is_u64());
    }
}

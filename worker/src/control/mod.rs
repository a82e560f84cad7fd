//! Remote control over Celery's pidbox: reads a request as Celery's client
//! sends it (`method`, `arguments`, `destination`, `ticket`, `reply_to`,
//! header `expires`), acts, and answers to `reply.celery.pidbox` with
//! Celery's reply shapes, so `celery inspect`/`celery control`, Flower and
//! `celeriac inspect`/`control` all work against a celeriac worker.
//!
//! A request that cannot be read is logged (once at warn level) and
//! dropped; an unknown command, bad arguments or one a Rust worker cannot
//! carry out get Celery's `{"error": ...}` reply. Nothing here can stop
//! the consume loop: each request is handled in a task of its own.

mod args;
mod commands;
mod inspect;
mod matcher;

use crate::consumers::Live;
use crate::events;
use crate::inflight::Phase;
use crate::publish::BROKER_TIMEOUT;
use crate::shared::Shared;
use args::{arg, error, missing, ok};
use celeriac_common::broker;
use lapin::options::{BasicPublishOptions, ExchangeDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, ExchangeKind};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Where a reply goes.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub(crate) struct ReplyTo {
    pub(crate) exchange: String,
    pub(crate) routing_key: String,
}

impl ReplyTo {
    /// Refuses names AMQP cannot carry (they come from the request).
    fn fits(&self) -> Result<(), broker::BrokerError> {
        broker::check_name("exchange name", &self.exchange, broker::MAX_NAME_BYTES)?;
        broker::check_name("routing key", &self.routing_key, broker::MAX_NAME_BYTES)
    }
}

/// A control request, as Celery's `Mailbox` sends it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub(crate) struct Request {
    pub(crate) method: String,
    #[serde(default)]
    pub(crate) arguments: Option<Map<String, Value>>,
    #[serde(default)]
    pub(crate) destination: Option<Vec<String>>,
    /// With `matcher` (`glob` or `pcre`), selects workers by hostname when
    /// `destination` is empty.
    #[serde(default)]
    pub(crate) pattern: Option<String>,
    #[serde(default)]
    pub(crate) matcher: Option<String>,
    #[serde(default)]
    pub(crate) ticket: Option<String>,
    #[serde(default)]
    pub(crate) reply_to: Option<ReplyTo>,
}

/// What a control message is to this worker.
#[derive(Debug, PartialEq)]
pub(crate) enum Parsed {
    /// A request to act on.
    ForUs(Request),
    /// Addressed to other workers.
    NotForUs,
    /// Its `expires` header is past.
    Expired,
    /// Not a request at all.
    Malformed(String),
}

/// Reads a control message for the worker called `hostname` at Unix time `now`.
pub(crate) fn parse(body: &[u8], headers: Option<&FieldTable>, hostname: &str, now: f64) -> Parsed {
    let req: Request = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => return Parsed::Malformed(e.to_string()),
    };
    if let Some(expires) = headers.and_then(|h| number(h.inner().get("expires")))
        && expires > 0.0
        && now > expires
    {
        return Parsed::Expired;
    }
    // kombu's order: a destination list, else a pattern with its matcher,
    // else every worker.
    let for_us = match (&req.destination, &req.pattern, &req.matcher) {
        (Some(d), _, _) if !d.is_empty() => d.iter().any(|h| h == hostname),
        (_, Some(p), Some(m)) if !p.is_empty() && !m.is_empty() => matcher::matches(hostname, p, m),
        _ => true,
    };
    if for_us {
        Parsed::ForUs(req)
    } else {
        Parsed::NotForUs
    }
}

fn number(v: Option<&AMQPValue>) -> Option<f64> {
    match v? {
        AMQPValue::Double(d) => Some(*d),
        AMQPValue::Float(f) => Some(f64::from(*f)),
        AMQPValue::LongLongInt(i) => Some(*i as f64),
        AMQPValue::LongInt(i) => Some(f64::from(*i)),
        AMQPValue::LongUInt(i) => Some(f64::from(*i)),
        AMQPValue::ShortInt(i) => Some(f64::from(*i)),
        _ => None,
    }
}

/// Set once a malformed request was logged at warn level.
static WARNED: AtomicBool = AtomicBool::new(false);

/// Handles one control message: acts and replies.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    live: Arc<Live>,
    body: Vec<u8>,
    headers: Option<FieldTable>,
) {
    let hostname = shared.config.hostname.clone();
    let req = match parse(&body, headers.as_ref(), &hostname, events::now()) {
        Parsed::ForUs(req) => req,
        Parsed::NotForUs => return,
        Parsed::Expired => {
            tracing::debug!("expired control request dropped");
            return;
        }
        Parsed::Malformed(why) => {
            if WARNED.swap(true, Ordering::Relaxed) {
                tracing::debug!(%why, "unreadable control message dropped");
            } else {
                tracing::warn!(
                    %why,
                    "unreadable control message dropped (further ones are logged at debug level)"
                );
            }
            return;
        }
    };
    tracing::debug!(method = %req.method, "remote control");
    let args = req.arguments.clone().unwrap_or_default();
    let reply = answer(&shared, &live, &req.method, &args).await;
    if let Some(to) = &req.reply_to {
        let ticket = req.ticket.as_deref().unwrap_or("");
        let body = json!({ hostname: reply });
        let sent = match to.fits() {
            Ok(()) => {
                let reply = send_reply(&shared, &live, to, ticket, &body);
                match tokio::time::timeout(BROKER_TIMEOUT, reply).await {
                    Ok(sent) => sent.map_err(|e| e.to_string()),
                    Err(_) => Err(format!("no answer from the broker in {BROKER_TIMEOUT:?}")),
                }
            }
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = sent {
            tracing::info!(error = %e, method = %req.method, "cannot send the control reply");
        }
    }
}

/// Publishes a reply on a channel of its own: a reply exchange the broker
/// refuses closes that channel, not the session's.
async fn send_reply(
    shared: &Shared,
    live: &Live,
    to: &ReplyTo,
    ticket: &str,
    body: &Value,
) -> Result<(), lapin::Error> {
    let channel = live.connection.create_channel().await?;
    let sent = async {
        let opts = ExchangeDeclareOptions {
            durable: false,
            ..Default::default()
        };
        channel
            .exchange_declare(
                to.exchange.as_str().into(),
                ExchangeKind::Direct,
                opts,
                FieldTable::default(),
            )
            .await?;
        let mut headers = FieldTable::default();
        headers.insert(
            "ticket".into(),
            AMQPValue::LongString(LongString::from(ticket.as_bytes())),
        );
        let clock = i64::try_from(shared.events.tick()).unwrap_or(i64::MAX);
        headers.insert("clock".into(), AMQPValue::LongLongInt(clock));
        let props = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_content_encoding("utf-8".into())
            .with_delivery_mode(1)
            .with_headers(headers);
        let body = body.to_string();
        channel
            .basic_publish(
                to.exchange.as_str().into(),
                to.routing_key.as_str().into(),
                BasicPublishOptions::default(),
                body.as_bytes(),
                props,
            )
            .await?;
        Ok(())
    };
    let result = tokio::time::timeout(Duration::from_secs(5), sent)
        .await
        .unwrap_or(Ok(()));
    let _ = channel.close(200, "replied".into()).await;
    result
}

/// The reply to `method` with `args`, as Celery's worker gives it.
async fn answer(shared: &Shared, live: &Live, method: &str, args: &Map<String, Value>) -> Value {
    match method {
        "ping" => ok("pong"),
        "stats" => inspect::stats(shared),
        "active" => inspect::requests(shared, |p| matches!(p, Phase::Active(_))),
        "reserved" => inspect::requests(shared, |p| p == Phase::Reserved),
        "scheduled" => inspect::scheduled(shared),
        "registered" => json!(shared.registry.names()),
        "revoked" => json!(shared.revocations.ids()),
        "active_queues" => Value::Array(
            live.queues()
                .iter()
                .map(|q| inspect::queue_info(q))
                .collect(),
        ),
        "conf" => inspect::conf(shared),
        "query_task" => inspect::query_task(shared, args),
        "rate_limit" => commands::rate_limit(shared, args),
        "time_limit" => commands::time_limit(shared, args),
        "add_consumer" => match arg(args, "queue").and_then(Value::as_str) {
            Some(queue) => live.add_consumer(shared, queue).await,
            None => missing(method, "queue"),
        },
        "cancel_consumer" => match arg(args, "queue").and_then(Value::as_str) {
            Some(queue) => live.cancel_consumer(shared, queue).await,
            None => missing(method, "queue"),
        },
        "shutdown" => {
            tracing::warn!("Got shutdown from remote");
            shared.remote_stop.notify_one();
            ok("shutting down")
        }
        "heartbeat" => {
            shared
                .events
                .worker("worker-heartbeat", &shared.inflight, heartbeat_freq(shared));
            Value::Null
        }
        "enable_events" => match shared.events.set_task_events(true) {
            false => {
                tracing::info!("Events of group {{task}} enabled by remote.");
                ok("task events enabled")
            }
            true => ok("task events already enabled"),
        },
        "disable_events" => match shared.events.set_task_events(false) {
            true => {
                tracing::info!("Events of group {{task}} disabled by remote.");
                ok("task events disabled")
            }
            false => ok("task events already disabled"),
        },
        "revoke" => commands::revoke(shared, args),
        "pool_grow"
        | "pool_shrink"
        | "autoscale"
        | "pool_restart"
        | "memdump"
        | "memsample"
        | "objgraph"
        | "dump_tasks"
        | "election"
        | "terminate_job"
        | "revoke_by_stamped_headers" => error(format!(
            "NotImplementedError('{method} is not supported by celeriac: a Rust worker runs tasks \
             on an async runtime with a concurrency fixed at start')"
        )),
        other => error(format!("KeyError('{other}')")),
    }
}

pub(crate) fn heartbeat_freq(shared: &Shared) -> Duration {
    Duration::from_secs(shared.config.worker_heartbeat_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(expires: f64) -> FieldTable {
        let mut h = FieldTable::default();
        h.insert("expires".into(), AMQPValue::Double(expires));
        h
    }

    #[test]
    fn a_reply_to_amqp_cannot_carry_is_not_sent() {
        let to = |exchange: usize, routing_key: usize| ReplyTo {
            exchange: "x".repeat(exchange),
            routing_key: "k".repeat(routing_key),
        };
        assert!(to(255, 255).fits().is_ok());
        assert!(to(256, 1).fits().is_err());
        assert!(to(1, 256).fits().is_err());
    }

    #[test]
    fn requests_are_read_as_celery_sends_them() {
        let body = br#"{"method": "ping", "arguments": {}, "destination": null, "pattern": null,
            "matcher": null, "ticket": "t-1",
            "reply_to": {"exchange": "reply.celery.pidbox", "routing_key": "abc"}}"#;
        let Parsed::ForUs(req) = parse(body, Some(&headers(100.0)), "w1", 50.0) else {
            panic!("not for us");
        };
        assert_eq!(req.method, "ping");
        assert_eq!(req.ticket.as_deref(), Some("t-1"));
        let to = req.reply_to.expect("reply_to");
        assert_eq!(to.exchange, "reply.celery.pidbox");
        assert_eq!(to.routing_key, "abc");
        assert_eq!(
            parse(body, Some(&headers(100.0)), "w1", 150.0),
            Parsed::Expired
        );
        assert!(matches!(parse(body, None, "w1", 150.0), Parsed::ForUs(_)));
    }

    #[test]
    fn destination_names_who_acts() {
        let to = |d: &str| format!(r#"{{"method": "stats", "destination": {d}}}"#);
        assert!(matches!(
            parse(to(r#"["w1", "w2"]"#).as_bytes(), None, "w2", 0.0),
            Parsed::ForUs(_)
        ));
        assert_eq!(
            parse(to(r#"["nobody"]"#).as_bytes(), None, "w2", 0.0),
            Parsed::NotForUs
        );
        assert!(matches!(
            parse(to("[]").as_bytes(), None, "w2", 0.0),
            Parsed::ForUs(_)
        ));
    }

    #[test]
    fn a_pattern_selects_by_hostname_when_there_is_no_destination() {
        let req = |d: &str, p: &str, m: &str| {
            format!(
                r#"{{"method": "shutdown", "destination": {d}, "pattern": {p}, "matcher": {m}}}"#
            )
        };
        let to = |body: String, host: &str| parse(body.as_bytes(), None, host, 0.0);
        let py = req("null", r#""py-*""#, r#""glob""#);
        assert_eq!(to(py.clone(), "rs-1"), Parsed::NotForUs);
        assert!(matches!(to(py, "py-1"), Parsed::ForUs(_)));
        let pcre = req("null", r#""rs-\\d""#, r#""pcre""#);
        assert!(matches!(to(pcre.clone(), "rs-1"), Parsed::ForUs(_)));
        assert_eq!(to(pcre, "py-1"), Parsed::NotForUs);
        // A destination list wins over a pattern, as in kombu...
        let both = req(r#"["rs-1"]"#, r#""py-*""#, r#""glob""#);
        assert!(matches!(to(both, "rs-1"), Parsed::ForUs(_)));
        // ...and a pattern without a matcher, or an empty one, is ignored.
        assert!(matches!(
            to(req("[]", r#""py-*""#, "null"), "rs-1"),
            Parsed::ForUs(_)
        ));
        assert!(matches!(
            to(req("null", r#""""#, r#""glob""#), "rs-1"),
            Parsed::ForUs(_)
        ));
        assert_eq!(
            to(req("null", r#""rs-*""#, r#""nosuch""#), "rs-1"),
            Parsed::NotForUs
        );
    }

    #[test]
    fn malformed_requests_are_named() {
        assert!(matches!(
            parse(b"not json", None, "w", 0.0),
            Parsed::Malformed(_)
        ));
        assert!(matches!(
            parse(br#"{"arguments": {}}"#, None, "w", 0.0),
            Parsed::Malformed(_)
        ));
        assert!(matches!(
            parse(br#"{"method": 3}"#, None, "w", 0.0),
            Parsed::Malformed(_)
        ));
    }
}

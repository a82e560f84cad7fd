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

use crate::events;
use crate::inflight::Phase;
use crate::options::RateLimit;
use crate::session::Live;
use crate::shared::Shared;
use celeriac_common::mask_url;
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

/// A control request, as Celery's `Mailbox` sends it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub(crate) struct Request {
    pub(crate) method: String,
    #[serde(default)]
    pub(crate) arguments: Option<Map<String, Value>>,
    #[serde(default)]
    pub(crate) destination: Option<Vec<String>>,
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
    match &req.destination {
        Some(d) if !d.is_empty() && !d.iter().any(|h| h == hostname) => Parsed::NotForUs,
        _ => Parsed::ForUs(req),
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
                tracing::warn!(%why, "unreadable control message dropped (further ones are logged at debug level)");
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
        if let Err(e) = send_reply(&shared, &live, to, ticket, &body).await {
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

fn ok(message: impl Into<String>) -> Value {
    json!({"ok": message.into()})
}

fn error(message: impl Into<String>) -> Value {
    json!({"error": message.into()})
}

fn arg<'a>(args: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    args.get(name).filter(|v| !v.is_null())
}

fn missing(method: &str, name: &str) -> Value {
    error(format!(
        "TypeError(\"{method}() missing 1 required positional argument: '{name}'\")"
    ))
}

/// A string or a list of strings.
fn strings(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

/// Seconds from a JSON number or numeric string; `None` for null or absent.
fn seconds(v: Option<&Value>) -> Result<Option<Duration>, String> {
    let Some(v) = v else { return Ok(None) };
    let secs = match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.parse::<f64>().ok(),
        _ => None,
    };
    match secs {
        Some(s) if s.is_finite() && s > 0.0 => Ok(Some(Duration::from_secs_f64(s))),
        Some(0.0) => Ok(None),
        _ => Err(format!("ValueError('invalid time limit: {v}')")),
    }
}

/// The reply to `method` with `args`, as Celery's worker gives it.
async fn answer(shared: &Shared, live: &Live, method: &str, args: &Map<String, Value>) -> Value {
    let host = &shared.config.hostname;
    match method {
        "ping" => ok("pong"),
        "stats" => stats(shared),
        "active" => requests(shared, |p| matches!(p, Phase::Active(_))),
        "reserved" => requests(shared, |p| p == Phase::Reserved),
        "scheduled" => Value::Array(
            shared
                .inflight
                .requests(host, |p| p == Phase::Scheduled)
                .into_iter()
                .map(|(_, eta, priority, request)| json!({"eta": eta, "priority": priority, "request": request}))
                .collect(),
        ),
        "registered" => json!(shared.registry.names()),
        "revoked" => json!(shared.revocations.ids()),
        "active_queues" => Value::Array(live.queues().iter().map(|q| queue_info(q)).collect()),
        "conf" => conf(shared),
        "query_task" => query_task(shared, args),
        "rate_limit" => rate_limit(shared, args),
        "time_limit" => time_limit(shared, args),
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
            shared.events.worker("worker-heartbeat", &shared.inflight, heartbeat_freq(shared));
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
        "revoke" => revoke(shared, args),
        "pool_grow" | "pool_shrink" | "autoscale" | "pool_restart" | "memdump" | "memsample"
        | "objgraph" | "dump_tasks" | "election" | "terminate_job" | "revoke_by_stamped_headers" => error(format!(
            "NotImplementedError('{method} is not supported by celeriac: a Rust worker runs tasks \
             on an async runtime with a concurrency fixed at start')"
        )),
        other => error(format!("KeyError('{other}')")),
    }
}

pub(crate) fn heartbeat_freq(shared: &Shared) -> Duration {
    Duration::from_secs(shared.config.worker_heartbeat_secs)
}

fn requests(shared: &Shared, pick: impl Fn(Phase) -> bool) -> Value {
    let host = &shared.config.hostname;
    Value::Array(
        shared
            .inflight
            .requests(host, pick)
            .into_iter()
            .map(|(.., r)| r)
            .collect(),
    )
}

fn stats(shared: &Shared) -> Value {
    let config = &shared.config;
    let broker = url::Url::parse(&config.broker_url).ok();
    let broker = json!({
        "hostname": broker.as_ref().and_then(|u| u.host_str().map(str::to_owned)),
        "userid": broker.as_ref().map(|u| u.username().to_owned()),
        "virtual_host": broker.as_ref().map(|u| {
            let path = u.path().trim_start_matches('/');
            if path.is_empty() { "/".to_owned() } else { path.replace("%2f", "/").replace("%2F", "/") }
        }),
        "port": broker.as_ref().and_then(url::Url::port_or_known_default),
        "insist": false,
        "ssl": broker.as_ref().is_some_and(|u| u.scheme() == "amqps"),
        "transport": "amqp",
        "connect_timeout": config.broker_connect_timeout_secs,
        "transport_options": {},
        "login_method": "PLAIN",
        "uri_prefix": null,
        "heartbeat": f64::from(config.broker_heartbeat_secs),
        "failover_strategy": "round-robin",
        "alternates": [],
    });
    json!({
        "total": shared.inflight.processed_by_name(),
        "pid": std::process::id(),
        "clock": shared.events.tick().to_string(),
        "uptime": shared.started.elapsed().as_secs(),
        "pool": {
            "implementation": "celeriac:tokio",
            "max-concurrency": config.concurrency,
            "processes": [std::process::id()],
            "max-tasks-per-child": null,
            "put-guarded-by-semaphore": false,
            "timeouts": [0, 0],
        },
        "broker": broker,
        "prefetch_count": config.prefetch(),
        "rusage": rusage(),
        "events_dropped": shared.events.dropped(),
        "sw_ident": "celeriac",
        "sw_ver": env!("CARGO_PKG_VERSION"),
    })
}

/// The parts of `getrusage` Celery reports, from `/proc` (zeros elsewhere).
fn rusage() -> Value {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 100.0
    };
    let count = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let maxrss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    // stat fields (1-based, from state = 3): minflt 10, majflt 12, utime 14, stime 15.
    json!({
        "utime": ticks(11), "stime": ticks(12), "maxrss": maxrss,
        "ixrss": 0, "idrss": 0, "isrss": 0,
        "minflt": count(7), "majflt": count(9), "nswap": 0,
        "inblock": 0, "oublock": 0, "msgsnd": 0, "msgrcv": 0,
        "nsignals": 0, "nvcsw": 0, "nivcsw": 0,
    })
}

/// A consumed queue as kombu's `Queue.as_dict(recurse=True)` shows it.
fn queue_info(name: &str) -> Value {
    json!({
        "name": name,
        "exchange": {
            "name": name, "type": "direct", "arguments": null, "durable": true,
            "passive": false, "auto_delete": false, "delivery_mode": null, "no_declare": false,
        },
        "routing_key": name,
        "queue_arguments": null, "binding_arguments": null, "consumer_arguments": null,
        "durable": true, "exclusive": false, "auto_delete": false, "no_ack": false,
        "alias": null, "bindings": [], "no_declare": null, "expires": null,
        "message_ttl": null, "max_length": null, "max_length_bytes": null, "max_priority": null,
    })
}

/// The worker's settings under Celery's names, secrets masked.
fn conf(shared: &Shared) -> Value {
    let c = &shared.config;
    json!({
        "broker_url": mask_url(&c.broker_url),
        "result_backend": mask_url(&c.result_backend),
        "task_default_queue": c.default_queue,
        "worker_concurrency": c.concurrency,
        "worker_prefetch_multiplier": c.prefetch_multiplier,
        "task_track_started": c.track_started,
        "result_expires": c.result_expires_secs,
        "worker_send_task_events": shared.events.task_events(),
        "broker_heartbeat": c.broker_heartbeat_secs,
        "broker_connection_timeout": c.broker_connect_timeout_secs,
        "task_queues": *shared.queues.lock().unwrap_or_else(std::sync::PoisonError::into_inner),
        "enable_utc": true,
        "timezone": "UTC",
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
    })
}

fn query_task(shared: &Shared, args: &Map<String, Value>) -> Value {
    let host = &shared.config.hostname;
    let ids = strings(arg(args, "ids").or_else(|| arg(args, "task_id")));
    let mut out = Map::new();
    for (phase, _, _, request) in shared.inflight.requests(host, |_| true) {
        let Some(id) = request.get("id").and_then(Value::as_str) else {
            continue;
        };
        if !ids.iter().any(|i| i == id) {
            continue;
        }
        let state = match phase {
            Phase::Active(_) => "active",
            Phase::Reserved => "reserved",
            Phase::Scheduled => "ready",
        };
        out.insert(id.to_owned(), json!([state, request]));
    }
    Value::Object(out)
}

fn rate_limit(shared: &Shared, args: &Map<String, Value>) -> Value {
    let Some(name) = arg(args, "task_name").and_then(Value::as_str) else {
        return missing("rate_limit", "task_name");
    };
    if !shared.registry.contains(name) {
        tracing::error!("Rate limit attempt for unknown task {name}");
        return error("unknown task");
    }
    let rate = match arg(args, "rate_limit") {
        None => None,
        Some(Value::Number(n)) if n.as_f64() == Some(0.0) => None,
        Some(Value::String(s)) if s.trim().is_empty() || s.trim() == "0" => None,
        Some(v) => {
            let text = v
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| v.to_string());
            match text.parse::<RateLimit>() {
                Ok(r) => Some(r),
                Err(e) => return error(format!("Invalid rate limit string: {e}")),
            }
        }
    };
    shared
        .registry
        .update_options(name, |o| o.rate_limit = rate);
    tracing::info!(task = name, rate = ?rate, "rate limit changed by remote");
    match rate {
        Some(_) => ok("new rate limit set successfully"),
        None => ok("rate limit disabled successfully"),
    }
}

fn time_limit(shared: &Shared, args: &Map<String, Value>) -> Value {
    let Some(name) = arg(args, "task_name").and_then(Value::as_str) else {
        return missing("time_limit", "task_name");
    };
    if !shared.registry.contains(name) {
        tracing::error!("Change time limit attempt for unknown task {name}");
        return error("unknown task");
    }
    let (soft, hard) = match (seconds(arg(args, "soft")), seconds(arg(args, "hard"))) {
        (Ok(s), Ok(h)) => (s, h),
        (Err(e), _) | (_, Err(e)) => return error(e),
    };
    shared.registry.update_options(name, |o| {
        o.soft_time_limit = soft;
        o.time_limit = hard;
    });
    tracing::info!(task = name, ?soft, ?hard, "time limits changed by remote");
    ok("time limits set successfully")
}

fn revoke(shared: &Shared, args: &Map<String, Value>) -> Value {
    let ids = strings(arg(args, "task_id"));
    let terminate = arg(args, "terminate")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    for id in &ids {
        shared.revocations.revoke(id);
        let stopped = terminate && shared.revocations.terminate(id);
        tracing::info!(task.id = %id, terminated = stopped, "revoked");
    }
    let list = ids.join(", ");
    if terminate {
        ok(format!("terminate: tasks {list} flagged as revoked"))
    } else {
        ok(format!("tasks {list} flagged as revoked"))
    }
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

    #[test]
    fn arguments_are_read_leniently() {
        assert_eq!(strings(Some(&json!("a"))), vec!["a"]);
        assert_eq!(strings(Some(&json!(["a", "b", 3]))), vec!["a", "b"]);
        assert_eq!(
            seconds(Some(&json!(1.5))),
            Ok(Some(Duration::from_millis(1500)))
        );
        assert_eq!(seconds(Some(&json!("2"))), Ok(Some(Duration::from_secs(2))));
        assert_eq!(seconds(None), Ok(None));
        assert!(seconds(Some(&json!(-1))).is_err());
    }
}

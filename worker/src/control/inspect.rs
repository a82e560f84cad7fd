//! The inspect replies: what the worker runs, holds and is set to.

use super::args::{arg, strings};
use crate::inflight::Phase;
use crate::shared::Shared;
use celeriac_common::mask_url;
use serde_json::{Map, Value, json};

pub(super) fn requests(shared: &Shared, pick: impl Fn(Phase) -> bool) -> Value {
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

/// The tasks waiting for their eta, with Celery's `eta`/`priority`/`request`.
pub(super) fn scheduled(shared: &Shared) -> Value {
    let host = &shared.config.hostname;
    Value::Array(
        shared
            .inflight
            .requests(host, |p| p == Phase::Scheduled)
            .into_iter()
            .map(|(_, eta, priority, request)| {
                json!({"eta": eta, "priority": priority, "request": request})
            })
            .collect(),
    )
}

pub(super) fn stats(shared: &Shared) -> Value {
    let config = &shared.config;
    // The first node of several (`amqp://a;amqp://b`), as Celery reports.
    let broker = config
        .broker_urls()
        .first()
        .and_then(|u| url::Url::parse(u).ok());
    let broker = json!({
        "hostname": broker.as_ref().and_then(|u| u.host_str().map(str::to_owned)),
        "userid": broker.as_ref().map(|u| u.username().to_owned()),
        "virtual_host": broker.as_ref().map(virtual_host),
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

/// The vhost of a broker URL as kombu names it (`/` for none).
fn virtual_host(url: &url::Url) -> String {
    let path = url.path().trim_start_matches('/');
    if path.is_empty() {
        "/".to_owned()
    } else {
        path.replace("%2f", "/").replace("%2F", "/")
    }
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
pub(super) fn queue_info(name: &str) -> Value {
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
pub(super) fn conf(shared: &Shared) -> Value {
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

pub(super) fn query_task(shared: &Shared, args: &Map<String, Value>) -> Value {
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

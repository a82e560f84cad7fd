//! Every decision beat makes is logged (with the entry's name) and emitted
//! as an event: in process on a broadcast channel ([`Events::subscribe`]),
//! and on RabbitMQ by [`publish_to_broker`].
//!
//! On the broker, events go to the topic exchange `celeriac.beat` (durable;
//! messages are transient JSON, as Celery's events are) with routing key
//! `beat.<kind>` (`beat.fired`, `beat.missed`, ...). Bind a queue with key
//! `beat.#` to watch them. The body follows Celery's event shape:
//!
//! ```json
//! {"type": "beat-fired", "hostname": "beat@host", "timestamp": 1714554000.004,
//!  "utcoffset": 0, "pid": 4242, "clock": 17, "entry": "nightly-report",
//!  "task": "tasks.report", "uuid": "6b3f...", "scheduled_at": "2024-05-01T09:00:00Z",
//!  "lateness_ms": 3.9}
//! ```
//!
//! | type | when | extra keys |
//! | --- | --- | --- |
//! | `beat-fired` | a run was sent (confirmed by the broker) | `uuid`, `scheduled_at`, `lateness_ms` |
//! | `beat-resent` | a run interrupted by a crash or failover was sent again, same id | `uuid`, `scheduled_at` |
//! | `beat-run-now` | a `schedule run-now` run was sent | `uuid`, `scheduled_at` (request time) |
//! | `beat-missed` | runs later than `misfire_grace_time` were skipped | `count`, `scheduled_at` (the last), `detail` |
//! | `beat-coalesced` | a backlog of runs was sent as one | `count` (runs folded), `scheduled_at` (the one sent) |
//! | `beat-held` | a run was skipped: `max_instances` unfinished runs | `scheduled_at`, `count` (unfinished) |
//! | `beat-send-failed` | publishing failed; it is retried with the same id | `uuid`, `scheduled_at`, `detail` |
//! | `beat-done` | an entry has no further fire time (a date trigger fired, an end date passed) | |
//! | `beat-leading` / `beat-standby` | this beat took / lost the lease | `detail` |
//! | `beat-loaded` | the leader loaded the schedule | `count` (entries), `detail` |
//!
//! Events are best effort: when the broker is unreachable they are dropped
//! (the log keeps them).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use celeriac_common::Config;
use chrono::{DateTime, Utc};
use lapin::options::{BasicPublishOptions, ExchangeDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, ExchangeKind};
use serde::Serialize;
use serde_json::json;
use tokio::sync::{broadcast, watch};
use tokio::time::{Duration, Instant};
use uuid::Uuid;

use crate::clock::format_instant;

/// The exchange events are published to.
pub const EVENT_EXCHANGE: &str = "celeriac.beat";

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// A run was sent.
    Fired,
    /// A run interrupted by a crash or failover was sent again.
    Resent,
    /// A run-now request was served.
    RunNow,
    /// Runs were skipped as too late.
    Missed,
    /// A backlog of runs was sent as one.
    Coalesced,
    /// A run was skipped because of `max_instances`.
    Held,
    /// A run could not be sent (it will be retried).
    SendFailed,
    /// An entry has no further fire time.
    Done,
    /// This beat took the lease.
    Leading,
    /// The leader loaded the schedule.
    Loaded,
    /// This beat lost or gave up the lease.
    Standby,
}

impl EventKind {
    /// The event's `type`, e.g. `beat-fired`.
    pub fn type_name(self) -> &'static str {
        match self {
            EventKind::Fired => "beat-fired",
            EventKind::Resent => "beat-resent",
            EventKind::RunNow => "beat-run-now",
            EventKind::Missed => "beat-missed",
            EventKind::Coalesced => "beat-coalesced",
            EventKind::Held => "beat-held",
            EventKind::SendFailed => "beat-send-failed",
            EventKind::Done => "beat-done",
            EventKind::Leading => "beat-leading",
            EventKind::Loaded => "beat-loaded",
            EventKind::Standby => "beat-standby",
        }
    }
}

/// One decision.
#[derive(Clone, Debug, PartialEq)]
pub struct BeatEvent {
    /// What happened.
    pub kind: EventKind,
    /// The entry, if about one.
    pub entry: Option<String>,
    /// Its task name.
    pub task: Option<String>,
    /// The run's task id.
    pub task_id: Option<Uuid>,
    /// The run's scheduled fire time.
    pub scheduled_at: Option<DateTime<Utc>>,
    /// How many runs (missed, coalesced) or unfinished instances (held).
    pub count: Option<u64>,
    /// How late the run was sent, in milliseconds (sent - due).
    pub lateness_ms: Option<f64>,
    /// Anything else, in words.
    pub detail: Option<String>,
    /// When it happened.
    pub at: DateTime<Utc>,
}

impl BeatEvent {
    /// An event of `kind` about nothing in particular yet.
    pub fn new(kind: EventKind, at: DateTime<Utc>) -> BeatEvent {
        BeatEvent {
            kind,
            entry: None,
            task: None,
            task_id: None,
            scheduled_at: None,
            count: None,
            lateness_ms: None,
            detail: None,
            at,
        }
    }

    /// This event about `entry` (running `task`).
    pub fn entry(mut self, entry: &str, task: &str) -> Self {
        self.entry = Some(entry.to_owned());
        self.task = Some(task.to_owned());
        self
    }

    fn log(&self) {
        let entry = self.entry.as_deref().unwrap_or("");
        let id = self.task_id.map(|i| i.to_string()).unwrap_or_default();
        let at = self.scheduled_at.map(format_instant).unwrap_or_default();
        let count = self.count.unwrap_or(0);
        let detail = self.detail.as_deref().unwrap_or("");
        match self.kind {
            EventKind::Fired => {
                let lateness_ms = self.lateness_ms.unwrap_or(0.0);
                tracing::info!(entry, task.id = %id, scheduled_at = %at, lateness_ms, "fired")
            }
            EventKind::Resent => {
                tracing::warn!(
                    entry,
                    task.id = %id,
                    scheduled_at = %at,
                    "re-sent a run interrupted by a crash or failover (same task id)"
                )
            }
            EventKind::RunNow => {
                tracing::info!(entry, task.id = %id, requested_at = %at, "ran now on request")
            }
            EventKind::Missed => {
                tracing::warn!(entry, count, last = %at, "skipped as missed: {detail}")
            }
            EventKind::Coalesced => {
                tracing::info!(
                    entry,
                    count,
                    scheduled_at = %at,
                    "coalesced {count} earlier runs into one"
                )
            }
            EventKind::Held => {
                tracing::warn!(
                    entry,
                    running = count,
                    scheduled_at = %at,
                    "held by max_instances: not sent"
                )
            }
            EventKind::SendFailed => {
                tracing::warn!(
                    entry,
                    task.id = %id,
                    scheduled_at = %at,
                    "send failed, will retry with the same id: {detail}"
                )
            }
            EventKind::Done => tracing::info!(entry, "no further runs"),
            EventKind::Leading => tracing::info!("leading: {detail}"),
            EventKind::Loaded => tracing::info!(entries = count, "schedule loaded: {detail}"),
            EventKind::Standby => tracing::info!("standing by: {detail}"),
        }
    }
}

/// The event bus: log and broadcast. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Events {
    tx: broadcast::Sender<BeatEvent>,
}

impl Default for Events {
    fn default() -> Self {
        Events::new()
    }
}

impl Events {
    /// A bus keeping up to 4,096 events for slow subscribers.
    pub fn new() -> Events {
        Events {
            tx: broadcast::channel(4096).0,
        }
    }

    /// Receives every event emitted from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<BeatEvent> {
        self.tx.subscribe()
    }

    /// Logs `event` and hands it to subscribers.
    pub fn emit(&self, event: BeatEvent) {
        event.log();
        let _ = self.tx.send(event);
    }
}

#[derive(Serialize)]
struct Wire<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    hostname: &'a str,
    timestamp: f64,
    utcoffset: i32,
    pid: u32,
    clock: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    entry: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    task: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    uuid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scheduled_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    count: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lateness_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<&'a str>,
}

/// Publishes events to [`EVENT_EXCHANGE`] until `shutdown` turns true,
/// reconnecting as needed; events that arrive while the broker is away are
/// dropped.
pub async fn publish_to_broker(
    config: Config,
    mut rx: broadcast::Receiver<BeatEvent>,
    mut shutdown: watch::Receiver<bool>,
) {
    let clock = Arc::new(AtomicU64::new(0));
    let mut channel: Option<(lapin::Connection, lapin::Channel)> = None;
    // While the broker is away, try to reconnect at most every five seconds.
    let mut retry_at: Option<Instant> = None;
    loop {
        let event = tokio::select! {
            e = rx.recv() => e,
            _ = shutdown.wait_for(|s| *s) => break,
        };
        let event = match event {
            Ok(e) => e,
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::debug!(dropped = n, "beat events dropped: publisher too slow");
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => break,
        };
        let dead = channel
            .as_ref()
            .is_none_or(|(c, ch)| !c.status().connected() || !ch.status().connected());
        if dead && retry_at.is_none_or(|at| Instant::now() >= at) {
            channel = open(&config).await;
            retry_at = channel
                .is_none()
                .then(|| Instant::now() + Duration::from_secs(5));
        }
        let Some((_, ch)) = &channel else { continue };
        let body = json!(Wire {
            kind: event.kind.type_name(),
            hostname: &config.hostname,
            timestamp: event.at.timestamp_micros() as f64 / 1e6,
            utcoffset: 0,
            pid: std::process::id(),
            clock: clock.fetch_add(1, Ordering::Relaxed) + 1,
            entry: event.entry.as_deref(),
            task: event.task.as_deref(),
            uuid: event.task_id.map(|i| i.to_string()),
            scheduled_at: event.scheduled_at.map(format_instant),
            count: event.count,
            lateness_ms: event.lateness_ms,
            detail: event.detail.as_deref(),
        });
        let key = event.kind.type_name().replace('-', ".");
        let props = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_content_encoding("utf-8".into())
            .with_delivery_mode(1);
        let sent = ch
            .basic_publish(
                EVENT_EXCHANGE.into(),
                key.as_str().into(),
                BasicPublishOptions::default(),
                body.to_string().as_bytes(),
                props,
            )
            .await;
        if let Err(e) = sent {
            tracing::debug!(error = %e, "beat event not published");
            channel = None;
        }
    }
    if let Some((c, _)) = channel {
        celeriac_common::broker::close(&c, config.connect_timeout(), "bye").await;
    }
}

async fn open(config: &Config) -> Option<(lapin::Connection, lapin::Channel)> {
    let conn = celeriac_common::broker::connect_config(config, "celeriac-beat-events")
        .await
        .map_err(|e| tracing::debug!(error = %e, "beat events: no broker"))
        .ok()?;
    let limit = config.connect_timeout();
    let ch = celeriac_common::broker::bounded("channel.open", limit, conn.create_channel())
        .await
        .ok()?;
    let declare = ch.exchange_declare(
        EVENT_EXCHANGE.into(),
        ExchangeKind::Topic,
        ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    );
    celeriac_common::broker::bounded("exchange.declare", limit, declare)
        .await
        .map_err(|e| tracing::warn!(error = %e, "cannot declare the {EVENT_EXCHANGE} exchange"))
        .ok()?;
    Some((conn, ch))
}

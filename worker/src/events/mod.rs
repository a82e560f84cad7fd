//! Celery's events on the `celeryev` topic exchange, as `celery events` and
//! Flower read them.
//!
//! Worker events (`worker-online`, `worker-heartbeat`, `worker-offline`)
//! are always sent, as Celery's worker does; task events (`task-received`,
//! `-started`, `-succeeded`, `-failed`, `-retried`, `-revoked`, `-rejected`)
//! only when switched on (`worker_send_events`, `--events`, or remote
//! control's `enable_events`), as Celery's `-E`.
//!
//! Sending never waits: an event goes into a bounded buffer with
//! `try_send`, and one background task publishes what is buffered every
//! [`FLUSH_EVERY`] (several events of one group as one message, a list
//! under `<group>.multi`, as Celery's buffered dispatcher does). When the
//! buffer is full, the broker channel is gone or the broker does not take a
//! publish within [`PUBLISH_LIMIT`], events are dropped and counted
//! (`inspect stats` shows the count); tasks are never slowed.

mod fields;

use crate::inflight::Inflight;
use lapin::options::{BasicPublishOptions, ExchangeDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, ExchangeKind};
use serde_json::{Map, Value, json};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// The events exchange.
pub(crate) const EXCHANGE: &str = "celeryev";
/// Events buffered before new ones are dropped.
const BUFFER: usize = 8192;
/// How often buffered events are published.
const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// Most events published in one flush.
const MAX_BATCH: usize = 512;
/// How long one publish may wait for the broker before its events are dropped.
const PUBLISH_LIMIT: Duration = Duration::from_secs(1);

/// One event: a JSON object.
pub(crate) type Event = Map<String, Value>;

/// The sending side, shared by every delivery.
pub(crate) struct Events {
    task_events: AtomicBool,
    tx: mpsc::Sender<Event>,
    dropped: AtomicU64,
    warned: AtomicBool,
    clock: AtomicU64,
    hostname: String,
    utcoffset: i64,
    pid: u32,
    channel: Mutex<Option<Channel>>,
}

impl Events {
    /// The sender and the receiving end for [`run`].
    pub(crate) fn new(hostname: &str, task_events: bool) -> (Arc<Events>, mpsc::Receiver<Event>) {
        let (tx, rx) = mpsc::channel(BUFFER);
        let events = Events {
            task_events: AtomicBool::new(task_events),
            tx,
            dropped: AtomicU64::new(0),
            warned: AtomicBool::new(false),
            clock: AtomicU64::new(0),
            hostname: hostname.to_owned(),
            utcoffset: utcoffset(),
            pid: std::process::id(),
            channel: Mutex::new(None),
        };
        (Arc::new(events), rx)
    }

    /// Whether task events are sent.
    pub(crate) fn task_events(&self) -> bool {
        self.task_events.load(Ordering::Relaxed)
    }

    /// Switches task events on or off; returns whether they were on.
    pub(crate) fn set_task_events(&self, on: bool) -> bool {
        self.task_events.swap(on, Ordering::Relaxed)
    }

    /// Events dropped since the worker started.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// The channel events are published on from now on (one per session,
    /// the exchange declared on it).
    pub(crate) fn attach(&self, channel: Channel) {
        *self.channel.lock().unwrap_or_else(PoisonError::into_inner) = Some(channel);
    }

    /// The Lamport clock's next value (events and control replies share it).
    pub(crate) fn tick(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Buffers an event of `kind` with `fields` (an object) and the fields
    /// every event carries; never waits.
    fn send(&self, kind: &str, fields: Value) {
        let mut event = match fields {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        event.insert("type".into(), json!(kind));
        event.insert("hostname".into(), json!(self.hostname));
        event.insert("timestamp".into(), json!(now()));
        event.insert("utcoffset".into(), json!(self.utcoffset));
        event.insert("pid".into(), json!(self.pid));
        event.insert("clock".into(), json!(self.tick()));
        if self.tx.try_send(event).is_err() {
            self.lost(1, "the event buffer is full");
        }
    }

    fn lost(&self, n: u64, why: &str) {
        self.dropped.fetch_add(n, Ordering::Relaxed);
        if !self.warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "events dropped ({why}); tasks are not affected, \
                 the count shows in `inspect stats` as events_dropped"
            );
        }
    }

    /// Publishes `batch` (and empties it): each group's events as one
    /// message. Events that cannot be published are dropped and counted.
    async fn flush(&self, batch: &mut Vec<Event>) {
        let channel = self
            .channel
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let Some(channel) = channel.filter(|c| c.status().connected()) else {
            self.lost(batch.len() as u64, "no broker channel");
            batch.clear();
            return;
        };
        for (group, events) in by_group(std::mem::take(batch)) {
            let n = events.len() as u64;
            let (routing_key, body) = match <[Event; 1]>::try_from(events) {
                Ok([one]) => (routing_key(&one), Value::Object(one)),
                Err(many) => (
                    format!("{group}.multi"),
                    Value::Array(many.into_iter().map(Value::Object).collect()),
                ),
            };
            let body = body.to_string();
            let publish = channel.basic_publish(
                EXCHANGE.into(),
                routing_key.as_str().into(),
                BasicPublishOptions::default(),
                body.as_bytes(),
                self.properties(),
            );
            match tokio::time::timeout(PUBLISH_LIMIT, publish).await {
                Ok(Ok(_)) => self.warned.store(false, Ordering::Relaxed),
                Ok(Err(e)) => self.lost(n, &format!("the broker refused them: {e}")),
                Err(_) => self.lost(n, "the broker did not take them in time"),
            }
        }
    }

    fn properties(&self) -> BasicProperties {
        let mut headers = FieldTable::default();
        headers.insert(
            "hostname".into(),
            AMQPValue::LongString(LongString::from(self.hostname.as_bytes())),
        );
        BasicProperties::default()
            .with_content_type("application/json".into())
            .with_content_encoding("utf-8".into())
            .with_delivery_mode(1)
            .with_headers(headers)
    }
}

/// Declares `celeryev` as Celery does (topic, durable); the broker closes
/// the channel if it holds the exchange with other settings.
pub(crate) async fn declare(channel: &Channel) -> Result<(), lapin::Error> {
    let opts = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    channel
        .exchange_declare(
            EXCHANGE.into(),
            ExchangeKind::Topic,
            opts,
            FieldTable::default(),
        )
        .await
}

/// Publishes buffered events until `stop`; then publishes what is left.
pub(crate) async fn run(
    events: Arc<Events>,
    mut rx: mpsc::Receiver<Event>,
    mut stop: watch::Receiver<bool>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        let got = tokio::select! {
            n = rx.recv_many(&mut batch, MAX_BATCH) => n,
            _ = stop.wait_for(|s| *s) => 0,
        };
        let stopping = got == 0;
        if !stopping {
            tokio::select! {
                _ = tokio::time::sleep(FLUSH_EVERY) => {}
                _ = stop.wait_for(|s| *s) => {}
            }
        }
        let limit = if stopping { BUFFER } else { MAX_BATCH };
        while batch.len() < limit {
            match rx.try_recv() {
                Ok(e) => batch.push(e),
                Err(_) => break,
            }
        }
        events.flush(&mut batch).await;
        if stopping {
            return;
        }
    }
}

/// Sends `worker-heartbeat` every `freq` until `stop`.
pub(crate) async fn heartbeats(
    events: Arc<Events>,
    inflight: Arc<Inflight>,
    freq: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + freq, freq);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => events.worker("worker-heartbeat", &inflight, freq),
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// The events of `batch` by group (`task`, `worker`), in order.
fn by_group(batch: Vec<Event>) -> Vec<(String, Vec<Event>)> {
    let mut groups: Vec<(String, Vec<Event>)> = Vec::new();
    for event in batch {
        let kind = event.get("type").and_then(Value::as_str).unwrap_or("");
        let group = kind.split('-').next().unwrap_or("").to_owned();
        match groups.iter_mut().find(|(g, _)| *g == group) {
            Some((_, events)) => events.push(event),
            None => groups.push((group, vec![event])),
        }
    }
    groups
}

/// `task-succeeded` goes out under `task.succeeded`.
fn routing_key(event: &Event) -> String {
    event
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("")
        .replace('-', ".")
}

/// Seconds since the Unix epoch.
pub(crate) fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Python's `time.timezone // 3600`: hours west of UTC (UTC+2 sends -2).
fn utcoffset() -> i64 {
    let east = chrono::Local::now().offset().local_minus_utc();
    i64::from(-east).div_euclid(3600)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_group_by_kind() {
        let ev = |t: &str| {
            let mut m = Map::new();
            m.insert("type".into(), json!(t));
            m
        };
        let groups = by_group(vec![
            ev("task-received"),
            ev("worker-heartbeat"),
            ev("task-started"),
        ]);
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].0, "task");
        assert_eq!(groups[0].1.len(), 2);
        assert_eq!(routing_key(&ev("task-succeeded")), "task.succeeded");
    }
}

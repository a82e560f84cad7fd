//! Celery's events on the `celeryev` topic exchange, as `celery events` and
//! Flower read them.
//!
//! Worker events (`worker-online`, `worker-heartbeat`, `worker-offline`)
//! are always sent, as Celery's worker does; task events (`task-received`,
//! `-started`, `-succeeded`, `-failed`, `-retried`, `-revoked`, `-rejected`)
//! only when switched on (`worker_send_events`, `--events`, or remote
//! control's `enable_events`), as Celery's `-E`.
//!
//! Sending never waits: an event is written to its JSON text at once
//! (see `encode`) and goes into a bounded buffer with `try_send`, and one
//! background task publishes what is buffered every [`FLUSH_EVERY`], or at
//! once when [`MAX_BATCH`] are waiting. Task events buffered together go
//! as one message, a list under `task.multi`, as Celery's worker does with
//! its buffered `task` group (one alone goes as itself); worker events
//! each go as their own message, as Celery sends them. When the buffer is
//! full, the broker channel is gone or the broker does not take a publish
//! within [`PUBLISH_LIMIT`], events are dropped and counted (`inspect
//! stats` shows the count); tasks are never slowed.

mod encode;
mod fields;

use crate::inflight::Inflight;
use encode::Obj;
use lapin::options::{BasicPublishOptions, ExchangeDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, ExchangeKind};
use prometheus_client::metrics::counter::Counter;
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

/// One event, written: its type and its JSON object.
pub(crate) struct Event {
    kind: &'static str,
    json: Vec<u8>,
}

/// The sending side, shared by every delivery.
pub(crate) struct Events {
    task_events: AtomicBool,
    tx: mpsc::Sender<Event>,
    /// Events dropped (also `celeriac_worker_events_dropped_total`).
    dropped: Counter,
    warned: AtomicBool,
    clock: AtomicU64,
    /// `,"hostname":...,"utcoffset":...,"pid":...`, written once.
    shared_fields: Vec<u8>,
    properties: BasicProperties,
    channel: Mutex<Option<Channel>>,
}

impl Events {
    /// The sender and the receiving end for [`run`].
    pub(crate) fn new(hostname: &str, task_events: bool) -> (Arc<Events>, mpsc::Receiver<Event>) {
        let (tx, rx) = mpsc::channel(BUFFER);
        let mut headers = FieldTable::default();
        headers.insert(
            "hostname".into(),
            AMQPValue::LongString(LongString::from(hostname.as_bytes())),
        );
        let properties = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_content_encoding("utf-8".into())
            .with_delivery_mode(1)
            .with_headers(headers);
        let events = Events {
            task_events: AtomicBool::new(task_events),
            tx,
            dropped: Counter::default(),
            warned: AtomicBool::new(false),
            clock: AtomicU64::new(0),
            shared_fields: encode::shared_fields(hostname, utcoffset(), std::process::id()),
            properties,
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
        self.dropped.get()
    }

    /// The count of events dropped, shared, for the metrics.
    pub(crate) fn dropped_counter(&self) -> Counter {
        self.dropped.clone()
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

    /// Buffers the event `obj` (of type `kind`, its own fields written)
    /// with the fields every event carries; never waits.
    fn send(&self, kind: &'static str, obj: Obj) {
        let json = obj
            .field("timestamp", &now())
            .field("clock", &self.tick())
            .finish(&self.shared_fields);
        if self.tx.try_send(Event { kind, json }).is_err() {
            self.lost(1, "the event buffer is full");
        }
    }

    fn lost(&self, n: u64, why: &str) {
        self.dropped.inc_by(n);
        if !self.warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "events dropped ({why}); tasks are not affected, \
                 the count shows in `inspect stats` as events_dropped"
            );
        }
    }

    /// Publishes `batch` (and empties it), see [`messages`]. Events that
    /// cannot be published are dropped and counted.
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
        for message in messages(batch) {
            let publish = channel.basic_publish(
                EXCHANGE.into(),
                message.routing_key.as_str().into(),
                BasicPublishOptions::default(),
                &message.body,
                self.properties.clone(),
            );
            let n = message.events;
            match tokio::time::timeout(PUBLISH_LIMIT, publish).await {
                Ok(Ok(_)) => self.warned.store(false, Ordering::Relaxed),
                Ok(Err(e)) => self.lost(n, &format!("the broker refused them: {e}")),
                Err(_) => self.lost(n, "the broker did not take them in time"),
            }
        }
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
        // A full batch goes at once: at 3 events a task, a fixed pace of
        // one batch a flush would cap events at 5,120/s and drop the rest.
        if !stopping && batch.len() < MAX_BATCH {
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

/// One message to publish on `celeryev`.
struct Message {
    routing_key: String,
    body: Vec<u8>,
    /// Events in it (counted as dropped if it cannot be published).
    events: u64,
}

/// The messages of `batch` (emptied), in its order: each run of task events
/// as one list under `task.multi` (a run of one as the event itself), each
/// worker event on its own under its type (`worker-heartbeat` goes under
/// `worker.heartbeat`), as Celery's worker buffers only its `task` group.
fn messages(batch: &mut Vec<Event>) -> Vec<Message> {
    let mut out = Vec::new();
    let mut run: Vec<Event> = Vec::new();
    for event in batch.drain(..) {
        if event.kind.starts_with("task-") {
            run.push(event);
        } else {
            out.extend(task_run(&mut run));
            out.push(single(event));
        }
    }
    out.extend(task_run(&mut run));
    out
}

/// The task events of `run` (emptied) as one message, if any.
fn task_run(run: &mut Vec<Event>) -> Option<Message> {
    match run.len() {
        0 => None,
        1 => run.pop().map(single),
        n => {
            let size = run.iter().map(|e| e.json.len() + 1).sum::<usize>() + 1;
            let mut body = Vec::with_capacity(size);
            for (i, event) in run.drain(..).enumerate() {
                body.push(if i == 0 { b'[' } else { b',' });
                body.extend_from_slice(&event.json);
            }
            body.push(b']');
            Some(Message {
                routing_key: "task.multi".to_owned(),
                body,
                events: n as u64,
            })
        }
    }
}

/// `event` as a message of its own, under its type with `-` as `.`.
fn single(event: Event) -> Message {
    Message {
        routing_key: event.kind.replace('-', "."),
        body: event.json,
        events: 1,
    }
}

pub(crate) use celeriac_common::monitor::{timestamp as now, utcoffset};

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    #[test]
    fn task_events_go_as_lists_worker_events_alone_in_order() {
        let ev = |kind: &'static str| Event {
            kind,
            json: format!(r#"{{"type":"{kind}"}}"#).into_bytes(),
        };
        let mut batch = vec![
            ev("task-received"),
            ev("task-started"),
            ev("worker-heartbeat"),
            ev("task-succeeded"),
            ev("worker-offline"),
        ];
        let out = messages(&mut batch);
        assert!(batch.is_empty());
        let keys: Vec<&str> = out.iter().map(|m| m.routing_key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "task.multi",
                "worker.heartbeat",
                "task.succeeded",
                "worker.offline"
            ]
        );
        let list: Value = serde_json::from_slice(&out[0].body).expect("list body");
        assert_eq!(
            list,
            json!([{"type": "task-received"}, {"type": "task-started"}])
        );
        assert_eq!(out[0].events, 2);
        let one: Value = serde_json::from_slice(&out[2].body).expect("one body");
        assert_eq!(one, json!({"type": "task-succeeded"}));
        assert!(messages(&mut Vec::new()).is_empty());
    }
}

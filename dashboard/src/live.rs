//! The live view: a monitor on Celery's events stream (`celeryev`) that
//! keeps what the database does not (worker processes' active and
//! processed counts, load, Celery workers without a heartbeat row, queue
//! wait from `task-sent`/`task-received` to `task-started`), and
//! `/api/events`, which passes events on to the pages as server-sent
//! events, with a `tick` every few seconds so that pages refresh even when
//! the workers send no events.

use crate::state::AppState;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use celeriac_common::backoff::{Backoff, Jitter};
use celeriac_common::{broker, monitor};
use futures_util::{Stream, StreamExt};
use lapin::options::BasicConsumeOptions;
use lapin::types::FieldTable;
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{broadcast, watch};

/// How often pages are told to refresh without an event.
const TICK: Duration = Duration::from_secs(5);
/// Task ids whose send or receipt time is kept, waiting for their start.
const PENDING_KEPT: usize = 20_000;
/// Queue-wait samples kept per minute, and minutes kept.
const WAITS_PER_MINUTE: usize = 5_000;
const MINUTES_KEPT: usize = 60;
/// Reconnecting to the broker: 500 ms doubling to 10 s.
const RECONNECT: Backoff =
    Backoff::new(Duration::from_millis(500), Duration::from_secs(10)).jitter(Jitter::Equal);

/// A worker as its events describe it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct SeenWorker {
    pub(crate) hostname: String,
    pub(crate) pid: Option<u64>,
    /// Heartbeat interval, seconds.
    pub(crate) freq: f64,
    /// When its last event arrived (this host's clock, seconds since the epoch).
    pub(crate) last_seen: f64,
    pub(crate) active: Option<u64>,
    pub(crate) processed: Option<u64>,
    pub(crate) loadavg: Vec<f64>,
    pub(crate) sw_ident: Option<String>,
    pub(crate) sw_ver: Option<String>,
    /// It said `worker-offline`.
    pub(crate) offline: bool,
}

impl SeenWorker {
    /// Alive for a monitor: no `worker-offline`, and its last event
    /// within two heartbeat intervals (as Celery's monitors judge).
    pub(crate) fn alive(&self, now: f64) -> bool {
        !self.offline && now < self.last_seen + 2.0 * self.freq.max(1.0)
    }
}

#[derive(Default)]
struct Seen {
    connected: bool,
    workers: HashMap<String, SeenWorker>,
    /// Task id → when it was sent (or received, without `task-sent`).
    queued_at: HashMap<String, f64>,
    queued_order: VecDeque<String>,
    /// (minute since the epoch, queue waits in seconds).
    waits: VecDeque<(i64, Vec<f64>)>,
}

/// The live view, shared by the handlers.
pub(crate) struct Live {
    tx: broadcast::Sender<Arc<str>>,
    /// Set when the server stops: every events stream then ends, or a
    /// graceful shutdown would wait for open browser tabs for ever.
    closing: watch::Sender<bool>,
    seen: Mutex<Seen>,
    /// What the workers answer over remote control.
    pub(crate) facts: crate::facts::Facts,
}

fn now_secs() -> f64 {
    chrono::Utc::now().timestamp_micros() as f64 / 1e6
}

impl Live {
    pub(crate) fn new() -> Live {
        Live {
            tx: broadcast::channel(1024).0,
            closing: watch::channel(false).0,
            seen: Mutex::new(Seen::default()),
            facts: crate::facts::Facts::default(),
        }
    }

    /// Ends every events stream, now and for those opened later.
    pub(crate) fn close(&self) {
        self.closing.send_replace(true);
    }

    /// Completes once [`Live::close`] was called.
    pub(crate) fn closed(&self) -> impl Future<Output = ()> + use<> {
        let mut rx = self.closing.subscribe();
        async move {
            let _ = rx.wait_for(|closing| *closing).await;
        }
    }

    fn seen(&self) -> MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the events stream is being listened to.
    pub(crate) fn connected(&self) -> bool {
        self.seen().connected
    }

    /// Workers seen in events.
    pub(crate) fn workers(&self) -> Vec<SeenWorker> {
        self.seen().workers.values().cloned().collect()
    }

    /// Queue waits (seconds) by minute since the epoch, from `from` on.
    pub(crate) fn waits_since(&self, from_minute: i64) -> Vec<(i64, Vec<f64>)> {
        let seen = self.seen();
        seen.waits
            .iter()
            .filter(|(m, _)| *m >= from_minute)
            .cloned()
            .collect()
    }

    /// Takes in one event and passes it on to the pages.
    pub(crate) fn take(&self, event: &Map<String, Value>) {
        let kind = text(event, "type");
        let now = now_secs();
        {
            let mut seen = self.seen();
            if kind.starts_with("worker-") {
                seen.worker_event(kind, event, now);
            } else {
                seen.task_event(kind, event);
            }
        }
        // Only what a page needs to decide what to refresh: never
        // arguments, results or tracebacks.
        let mut brief = Map::new();
        for key in ["type", "uuid", "name", "hostname", "timestamp", "active"] {
            if let Some(v) = event.get(key) {
                brief.insert(key.to_owned(), v.clone());
            }
        }
        let _ = self.tx.send(Value::Object(brief).to_string().into());
    }
}

impl Seen {
    fn worker_event(&mut self, kind: &str, event: &Map<String, Value>, now: f64) {
        let host = text(event, "hostname").to_owned();
        if host.is_empty() {
            return;
        }
        let w = self.workers.entry(host.clone()).or_insert(SeenWorker {
            hostname: host,
            pid: None,
            freq: 2.0,
            last_seen: now,
            active: None,
            processed: None,
            loadavg: Vec::new(),
            sw_ident: None,
            sw_ver: None,
            offline: false,
        });
        w.last_seen = now;
        w.offline = kind == "worker-offline";
        w.pid = event.get("pid").and_then(Value::as_u64).or(w.pid);
        w.freq = event.get("freq").and_then(Value::as_f64).unwrap_or(w.freq);
        w.active = event.get("active").and_then(Value::as_u64).or(w.active);
        w.processed = event
            .get("processed")
            .and_then(Value::as_u64)
            .or(w.processed);
        if let Some(l) = event.get("loadavg").and_then(Value::as_array) {
            w.loadavg = l.iter().filter_map(Value::as_f64).collect();
        }
        for (key, slot) in [("sw_ident", &mut w.sw_ident), ("sw_ver", &mut w.sw_ver)] {
            if let Some(v) = event.get(key).and_then(Value::as_str) {
                *slot = Some(v.to_owned());
            }
        }
    }

    fn task_event(&mut self, kind: &str, event: &Map<String, Value>) {
        let id = text(event, "uuid");
        let at = event.get("timestamp").and_then(Value::as_f64);
        let (Some(at), false) = (at, id.is_empty()) else {
            return;
        };
        match kind {
            "task-sent" | "task-received" if !self.queued_at.contains_key(id) => {
                self.queued_at.insert(id.to_owned(), at);
                self.queued_order.push_back(id.to_owned());
                if self.queued_order.len() > PENDING_KEPT
                    && let Some(old) = self.queued_order.pop_front()
                {
                    self.queued_at.remove(&old);
                }
            }
            "task-started" => {
                if let Some(queued) = self.queued_at.remove(id) {
                    self.add_wait(at, (at - queued).max(0.0));
                }
            }
            _ => {}
        }
    }

    fn add_wait(&mut self, at: f64, wait: f64) {
        let minute = (at / 60.0).floor() as i64;
        match self.waits.back_mut() {
            Some((m, samples)) if *m == minute => {
                if samples.len() < WAITS_PER_MINUTE {
                    samples.push(wait);
                }
            }
            _ => {
                self.waits.push_back((minute, vec![wait]));
                while self.waits.len() > MINUTES_KEPT {
                    self.waits.pop_front();
                }
            }
        }
    }
}

fn text<'a>(event: &'a Map<String, Value>, key: &str) -> &'a str {
    event.get(key).and_then(Value::as_str).unwrap_or("")
}

/// Listens to the events stream for as long as the dashboard runs,
/// reconnecting (with backoff) when the broker goes away.
pub(crate) async fn listen(state: Arc<AppState>) {
    let mut backoff = RECONNECT;
    loop {
        match listen_once(&state, &mut backoff).await {
            Ok(()) => tracing::warn!("events stream ended; reconnecting"),
            Err(e) => tracing::warn!(
                error = %celeriac_common::cli::one_line(&e),
                "cannot listen to events; retrying"
            ),
        }
        state.live.seen().connected = false;
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

async fn listen_once(
    state: &AppState,
    backoff: &mut Backoff,
) -> Result<(), celeriac_common::broker::BrokerError> {
    let limit = state.config.connect_timeout();
    let connection = broker::connect_config(&state.config, "celeriac-dashboard").await?;
    let channel = broker::bounded("channel.open", limit, connection.create_channel()).await?;
    let queue = monitor::subscribe(&channel, limit).await?;
    let opts = BasicConsumeOptions {
        no_ack: true,
        exclusive: true,
        ..Default::default()
    };
    let consume = channel.basic_consume(
        queue.as_str().into(),
        "".into(),
        opts,
        FieldTable::default(),
    );
    let mut deliveries = broker::bounded("basic.consume", limit, consume).await?;
    state.live.seen().connected = true;
    backoff.reset();
    while let Some(Ok(delivery)) = deliveries.next().await {
        for event in monitor::decode(&delivery.data) {
            state.live.take(&event);
        }
    }
    Ok(())
}

/// `GET /api/events`: events as they arrive (`event: celery`, data: the
/// event's type, uuid, name, hostname, timestamp), a `tick` every 5 s, and
/// `lagged` when this client fell behind and missed some.
pub(crate) async fn sse(
    State(state): State<Arc<AppState>>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let rx = state.live.tx.subscribe();
    let tick = tokio::time::interval(TICK);
    let closed = Box::pin(state.live.closed());
    let start = (rx, tick, closed);
    let stream = futures_util::stream::unfold(start, |(mut rx, mut tick, mut closed)| async move {
        let event = tokio::select! {
            _ = &mut closed => return None,
            _ = tick.tick() => Event::default().event("tick").data("{}"),
            got = rx.recv() => match got {
                Ok(data) => Event::default().event("celery").data(&*data),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    Event::default().event("lagged").data(n.to_string())
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            },
        };
        Some((Ok(event), (rx, tick, closed)))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

#[cfg(test)]
mod tests {
    use super::Live;
    use serde_json::{Map, Value, json};

    fn ev(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    #[test]
    fn workers_and_queue_waits_from_events() {
        let live = Live::new();
        let mut rx = live.tx.subscribe();
        live.take(&ev(
            json!({"type": "worker-heartbeat", "hostname": "w1", "pid": 7,
            "freq": 2.0, "active": 3, "processed": 10, "loadavg": [0.5, 0.1, 0.0]}),
        ));
        live.take(&ev(
            json!({"type": "task-received", "uuid": "a", "timestamp": 600.0}),
        ));
        live.take(&ev(
            json!({"type": "task-started", "uuid": "a", "timestamp": 601.5}),
        ));
        // Started without a receipt seen: no sample.
        live.take(&ev(
            json!({"type": "task-started", "uuid": "b", "timestamp": 602.0}),
        ));
        let workers = live.workers();
        assert_eq!(workers.len(), 1);
        assert_eq!(
            (workers[0].active, workers[0].processed, workers[0].pid),
            (Some(3), Some(10), Some(7))
        );
        assert!(workers[0].alive(workers[0].last_seen + 3.0));
        assert!(!workers[0].alive(workers[0].last_seen + 5.0));
        assert_eq!(live.waits_since(0), vec![(10, vec![1.5])]);
        let first: Value = serde_json::from_str(&rx.try_recv().expect("passed on")).expect("json");
        assert_eq!(first["type"], "worker-heartbeat");
        assert!(first.get("loadavg").is_none());
        live.take(&ev(json!({"type": "worker-offline", "hostname": "w1"})));
        assert!(!live.workers()[0].alive(0.0));
    }
}

//! The deliveries a worker holds, for remote control's `active`, `reserved`
//! and `scheduled` and for the events' `active` count: one map entry per
//! delivery, added when it is decoded and removed (by a guard) however it
//! ends. One mutex-guarded insert and remove per task.

use celeriac_common::protocol::TaskMessage;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// Where a delivery is in its life.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Phase {
    /// Received, waiting for its rate limiter or a slot.
    Reserved,
    /// Held in memory until its eta (within one delay unit of it).
    Scheduled,
    /// Running since this Unix time (seconds).
    Active(f64),
}

/// What remote control reports about one delivery.
#[derive(Debug, Clone)]
struct Entry {
    name: String,
    args: Vec<Value>,
    kwargs: serde_json::Map<String, Value>,
    queue: String,
    redelivered: bool,
    eta: Option<String>,
    priority: Option<u8>,
    phase: Phase,
}

/// The deliveries held, by task id.
#[derive(Default)]
pub(crate) struct Inflight {
    entries: Mutex<HashMap<String, Entry>>,
    /// Tasks started since the worker started, by name (Celery's
    /// `total_count`: one per attempt).
    processed: Mutex<HashMap<String, u64>>,
    total: AtomicU64,
}

/// Removes its delivery from [`Inflight`] when dropped.
pub(crate) struct Tracked {
    inflight: Arc<Inflight>,
    id: String,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.inflight.lock().remove(&self.id);
    }
}

impl Tracked {
    /// The delivery moved on to `phase`.
    pub(crate) fn set(&self, phase: Phase) {
        if let Some(e) = self.inflight.lock().get_mut(&self.id) {
            e.phase = phase;
        }
    }
}

impl Inflight {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts tracking a delivery of `msg` from `queue`, reserved.
    pub(crate) fn track(
        self: &Arc<Self>,
        msg: &TaskMessage,
        queue: &str,
        redelivered: bool,
    ) -> Tracked {
        let entry = Entry {
            name: msg.task.clone(),
            args: msg.args.clone(),
            kwargs: msg.kwargs.clone(),
            queue: queue.to_owned(),
            redelivered,
            eta: msg.eta.map(|e| e.to_rfc3339()),
            priority: msg.priority,
            phase: Phase::Reserved,
        };
        self.lock().insert(msg.id.clone(), entry);
        Tracked {
            inflight: self.clone(),
            id: msg.id.clone(),
        }
    }

    /// A task of `name` started (Celery counts a task when it accepts it).
    pub(crate) fn processed(&self, name: &str) {
        self.total.fetch_add(1, Ordering::Relaxed);
        let mut counts = self
            .processed
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match counts.get_mut(name) {
            Some(n) => *n += 1,
            None => {
                counts.insert(name.to_owned(), 1);
            }
        }
    }

    /// Tasks started, in all (the heartbeat's `processed`).
    pub(crate) fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// Tasks started, by name (Celery's `stats.total`).
    pub(crate) fn processed_by_name(&self) -> Value {
        let counts = self
            .processed
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        json!(*counts)
    }

    /// How many tasks are running.
    pub(crate) fn active_count(&self) -> usize {
        self.lock()
            .values()
            .filter(|e| matches!(e.phase, Phase::Active(_)))
            .count()
    }

    /// Whether `id` is held, and in which phase.
    #[cfg(test)]
    pub(crate) fn phase(&self, id: &str) -> Option<Phase> {
        self.lock().get(id).map(|e| e.phase)
    }

    /// Celery's request dicts of the deliveries in phases `pick` selects.
    pub(crate) fn requests(
        &self,
        hostname: &str,
        pick: impl Fn(Phase) -> bool,
    ) -> Vec<(Phase, Option<String>, Option<u8>, Value)> {
        let pid = std::process::id();
        self.lock()
            .iter()
            .filter(|(_, e)| pick(e.phase))
            .map(|(id, e)| {
                let time_start = match e.phase {
                    Phase::Active(t) => json!(t),
                    _ => Value::Null,
                };
                let request = json!({
                    "id": id,
                    "name": e.name,
                    "args": e.args,
                    "kwargs": e.kwargs,
                    "type": e.name,
                    "hostname": hostname,
                    "time_start": time_start,
                    "acknowledged": false,
                    "delivery_info": {
                        "exchange": "",
                        "routing_key": e.queue,
                        "priority": e.priority,
                        "redelivered": e.redelivered,
                    },
                    "worker_pid": pid,
                });
                (e.phase, e.eta.clone(), e.priority, request)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(id: &str) -> TaskMessage {
        let mut m = TaskMessage::new("t.add", vec![json!(1), json!(2)], serde_json::Map::new());
        m.id = id.to_owned();
        m
    }

    #[test]
    fn entries_follow_their_delivery_and_go_when_dropped() {
        let inflight = Arc::new(Inflight::default());
        let a = inflight.track(&msg("a"), "q", false);
        let b = inflight.track(&msg("b"), "q", true);
        b.set(Phase::Active(1.5));
        assert_eq!(inflight.active_count(), 1);
        assert_eq!(inflight.phase("a"), Some(Phase::Reserved));
        let active = inflight.requests("w@h", |p| matches!(p, Phase::Active(_)));
        assert_eq!(active.len(), 1);
        let req = &active[0].3;
        assert_eq!(req["id"], "b");
        assert_eq!(req["time_start"], 1.5);
        assert_eq!(req["args"], json!([1, 2]));
        assert_eq!(req["delivery_info"]["redelivered"], true);
        drop(b);
        drop(a);
        assert_eq!(inflight.phase("a"), None);
        inflight.processed("t.add");
        inflight.processed("t.add");
        assert_eq!(inflight.processed_by_name(), json!({"t.add": 2}));
        assert_eq!(inflight.total(), 2);
    }
}

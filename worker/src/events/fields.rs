//! Each event's fields, as Celery's worker fills them: the worker events
//! (`worker-online`, `-heartbeat`, `-offline`) and the task events
//! (`task-received`, `-started`, `-succeeded`, `-failed`, `-retried`,
//! `-revoked`, `-rejected`; only while task events are on).

use super::Events;
use super::encode::Obj;
use crate::inflight::Inflight;
use crate::pyrepr;
use celeriac_common::protocol::TaskMessage;
use serde_json::Value;
use std::time::Duration;

/// What identifies this software in worker events (Celery sends `py-celery`).
const SW_IDENT: &str = "celeriac";

impl Events {
    /// `worker-online`, `worker-heartbeat` or `worker-offline`.
    pub(crate) fn worker(&self, kind: &'static str, inflight: &Inflight, freq: Duration) {
        let obj = Obj::new(kind, 160)
            .field("freq", &freq.as_secs_f64())
            .field("active", &inflight.active_count())
            .field("processed", &inflight.total())
            .field("loadavg", &loadavg())
            .field("sw_ident", SW_IDENT)
            .field("sw_ver", env!("CARGO_PKG_VERSION"))
            .field("sw_sys", sw_sys());
        self.send(kind, obj);
    }

    /// `task-received`.
    pub(crate) fn received(&self, msg: &TaskMessage, queue: &str) {
        if !self.task_events() {
            return;
        }
        let args_made;
        let args = match &msg.argsrepr {
            Some(repr) => repr.as_str(),
            None => {
                args_made = pyrepr::repr_list(&msg.args);
                args_made.as_str()
            }
        };
        let kwargs_made;
        let kwargs = match &msg.kwargsrepr {
            Some(repr) => repr.as_str(),
            None => {
                kwargs_made = pyrepr::repr_map(&msg.kwargs);
                kwargs_made.as_str()
            }
        };
        let room = msg.id.len() + msg.task.len() + args.len() + kwargs.len() + queue.len();
        let obj = Obj::new("task-received", room + 200)
            .field("uuid", &msg.id)
            .field("name", &msg.task)
            .field("args", args)
            .field("kwargs", kwargs)
            .field("root_id", &msg.root_id)
            .field("parent_id", &msg.parent_id)
            .field("retries", &msg.retries)
            .field("eta", &msg.eta.map(|e| e.to_rfc3339()))
            .field("expires", &msg.expires.map(|e| e.to_rfc3339()))
            .field("queue", queue);
        self.send("task-received", obj);
    }

    /// `task-started`.
    pub(crate) fn started(&self, id: &str) {
        if self.task_events() {
            self.send(
                "task-started",
                Obj::new("task-started", 60).field("uuid", id),
            );
        }
    }

    /// `task-succeeded`, with the result's repr and the run time in seconds.
    pub(crate) fn succeeded(&self, id: &str, result: &Value, runtime: f64) {
        if self.task_events() {
            let result = pyrepr::repr(result);
            let obj = Obj::new("task-succeeded", 100 + result.len())
                .field("uuid", id)
                .field("result", &result)
                .field("runtime", &runtime);
            self.send("task-succeeded", obj);
        }
    }

    /// `task-failed` (or, with `retried`, `task-retried`): the exception as
    /// Python would repr it, and a traceback text.
    pub(crate) fn failed(&self, id: &str, kind: &str, message: &str, retried: bool) {
        if !self.task_events() {
            return;
        }
        let exception = format!("{kind}({})", pyrepr::repr_str(message));
        let traceback = format!("{kind}: {message}\n");
        let event = if retried {
            "task-retried"
        } else {
            "task-failed"
        };
        let obj = Obj::new(event, 100 + exception.len() + traceback.len())
            .field("uuid", id)
            .field("exception", &exception)
            .field("traceback", &traceback);
        self.send(event, obj);
    }

    /// `task-revoked`.
    pub(crate) fn revoked(&self, id: &str, terminated: bool, expired: bool) {
        if self.task_events() {
            let signum = terminated.then_some("SIGTERM");
            let obj = Obj::new("task-revoked", 120)
                .field("uuid", id)
                .field("terminated", &terminated)
                .field("signum", &signum)
                .field("expired", &expired);
            self.send("task-revoked", obj);
        }
    }

    /// `task-rejected`.
    pub(crate) fn rejected(&self, id: &str, requeue: bool) {
        if self.task_events() {
            let obj = Obj::new("task-rejected", 80)
                .field("uuid", id)
                .field("requeue", &requeue);
            self.send("task-rejected", obj);
        }
    }
}

/// The 1, 5 and 15 minute load averages, as Celery sends them.
pub(crate) fn loadavg() -> Vec<f64> {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut out: Vec<f64> = text
        .split_whitespace()
        .take(3)
        .filter_map(|s| s.parse::<f64>().ok())
        .map(|l| (l * 100.0).round() / 100.0)
        .collect();
    out.resize(3, 0.0);
    out
}

/// Python's `platform.system()`.
fn sw_sys() -> &'static str {
    match std::env::consts::OS {
        "linux" => "Linux",
        "macos" => "Darwin",
        "windows" => "Windows",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::super::{BUFFER, Event};
    use serde_json::{Map, json};
    use tokio::sync::mpsc::Receiver;

    /// The next buffered event, read back.
    fn next(rx: &mut Receiver<Event>) -> Map<String, Value> {
        let event = rx.try_recv().expect("an event");
        let map: Map<String, Value> = serde_json::from_slice(&event.json).expect("JSON object");
        assert_eq!(map["type"], event.kind);
        map
    }

    #[test]
    fn events_carry_celerys_fields_and_drop_when_full() {
        let (events, mut rx) = Events::new("celeriac@h", false);
        let inflight = Inflight::default();
        events.worker("worker-online", &inflight, Duration::from_secs(2));
        events.started("t1"); // task events off: nothing
        events.set_task_events(true);
        events.succeeded("t1", &json!([1, "a"]), 0.25);
        events.failed("t2", "ValueError", "bad 'x'", false);
        let online = next(&mut rx);
        assert_eq!(online["type"], "worker-online");
        assert_eq!(online["hostname"], "celeriac@h");
        assert_eq!(online["freq"], 2.0);
        assert_eq!(online["sw_ident"], "celeriac");
        assert!(online["timestamp"].is_f64());
        assert!(online["clock"].is_u64());
        assert_eq!(online["loadavg"].as_array().map(Vec::len), Some(3));
        let ok = next(&mut rx);
        assert_eq!(ok["type"], "task-succeeded");
        assert_eq!(ok["result"], "[1, 'a']");
        assert_eq!(ok["runtime"], 0.25);
        let failed = next(&mut rx);
        assert_eq!(failed["exception"], "ValueError(\"bad 'x'\")");
        assert!(rx.try_recv().is_err());
        for _ in 0..BUFFER + 5 {
            events.started("t3");
        }
        assert_eq!(events.dropped(), 5);
    }
}

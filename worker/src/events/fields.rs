//! Each event's fields, as Celery's worker fills them: the worker events
//! (`worker-online`, `-heartbeat`, `-offline`) and the task events
//! (`task-received`, `-started`, `-succeeded`, `-failed`, `-retried`,
//! `-revoked`, `-rejected`; only while task events are on).

use super::Events;
use crate::inflight::Inflight;
use crate::pyrepr;
use celeriac_common::protocol::TaskMessage;
use serde_json::{Value, json};
use std::time::Duration;

/// What identifies this software in worker events (Celery sends `py-celery`).
const SW_IDENT: &str = "celeriac";

impl Events {
    /// `worker-online`, `worker-heartbeat` or `worker-offline`.
    pub(crate) fn worker(&self, kind: &str, inflight: &Inflight, freq: Duration) {
        self.send(
            kind,
            json!({
                "freq": freq.as_secs_f64(),
                "active": inflight.active_count(),
                "processed": inflight.total(),
                "loadavg": loadavg(),
                "sw_ident": SW_IDENT,
                "sw_ver": env!("CARGO_PKG_VERSION"),
                "sw_sys": sw_sys(),
            }),
        );
    }

    /// `task-received`.
    pub(crate) fn received(&self, msg: &TaskMessage, queue: &str) {
        if !self.task_events() {
            return;
        }
        let args = msg
            .argsrepr
            .clone()
            .unwrap_or_else(|| pyrepr::repr_list(&msg.args));
        let kwargs = msg
            .kwargsrepr
            .clone()
            .unwrap_or_else(|| pyrepr::repr(&Value::Object(msg.kwargs.clone())));
        self.send(
            "task-received",
            json!({
                "uuid": msg.id,
                "name": msg.task,
                "args": args,
                "kwargs": kwargs,
                "root_id": msg.root_id,
                "parent_id": msg.parent_id,
                "retries": msg.retries,
                "eta": msg.eta.map(|e| e.to_rfc3339()),
                "expires": msg.expires.map(|e| e.to_rfc3339()),
                "queue": queue,
            }),
        );
    }

    /// `task-started`.
    pub(crate) fn started(&self, id: &str) {
        if self.task_events() {
            self.send("task-started", json!({"uuid": id}));
        }
    }

    /// `task-succeeded`, with the result's repr and the run time in seconds.
    pub(crate) fn succeeded(&self, id: &str, result: &Value, runtime: f64) {
        if self.task_events() {
            let result = pyrepr::repr(result);
            let fields = json!({"uuid": id, "result": result, "runtime": runtime});
            self.send("task-succeeded", fields);
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
        let fields = json!({"uuid": id, "exception": exception, "traceback": traceback});
        self.send(event, fields);
    }

    /// `task-revoked`.
    pub(crate) fn revoked(&self, id: &str, terminated: bool, expired: bool) {
        if self.task_events() {
            let signum = terminated.then_some("SIGTERM");
            let fields = json!({
                "uuid": id, "terminated": terminated, "signum": signum, "expired": expired,
            });
            self.send("task-revoked", fields);
        }
    }

    /// `task-rejected`.
    pub(crate) fn rejected(&self, id: &str, requeue: bool) {
        if self.task_events() {
            self.send("task-rejected", json!({"uuid": id, "requeue": requeue}));
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

    use super::super::BUFFER;

    #[test]
    fn events_carry_celerys_fields_and_drop_when_full() {
        let (events, mut rx) = Events::new("celeriac@h", false);
        let inflight = Inflight::default();
        events.worker("worker-online", &inflight, Duration::from_secs(2));
        events.started("t1"); // task events off: nothing
        events.set_task_events(true);
        events.succeeded("t1", &json!([1, "a"]), 0.25);
        events.failed("t2", "ValueError", "bad 'x'", false);
        let online = rx.try_recv().expect("online");
        assert_eq!(online["type"], "worker-online");
        assert_eq!(online["hostname"], "celeriac@h");
        assert_eq!(online["freq"], 2.0);
        assert_eq!(online["sw_ident"], "celeriac");
        assert!(online["timestamp"].is_f64());
        assert!(online["clock"].is_u64());
        assert_eq!(online["loadavg"].as_array().map(Vec::len), Some(3));
        let ok = rx.try_recv().expect("succeeded");
        assert_eq!(ok["type"], "task-succeeded");
        assert_eq!(ok["result"], "[1, 'a']");
        assert_eq!(ok["runtime"], 0.25);
        let failed = rx.try_recv().expect("failed");
        assert_eq!(failed["exception"], "ValueError(\"bad 'x'\")");
        assert!(rx.try_recv().is_err());
        for _ in 0..BUFFER + 5 {
            events.started("t3");
        }
        assert_eq!(events.dropped(), 5);
    }
}

//! `celeriac events`: Celery's events as they happen, tail -f style, from
//! a queue of its own bound to `celeryev` as Celery's monitors bind one
//! (`celeriacev.<uuid>`, exclusive, auto-deleted, routing key `#`, message
//! TTL 5 s, deleted 60 s after its last consumer). Single events and lists
//! (`<group>.multi`) are read alike. Runs until SIGINT/SIGTERM.

use super::AdminError;
use celeriac_common::Config;
use celeriac_common::broker;
use celeriac_common::monitor::{self, EXCHANGE};
use futures_util::{FutureExt, StreamExt};
use lapin::options::BasicConsumeOptions;
use lapin::types::FieldTable;
use serde_json::{Map, Value};
use std::collections::{HashMap, VecDeque};
use std::process::ExitCode;

/// Task names remembered by id (only `task-received`/`-sent` carry the name).
const NAMES_KEPT: usize = 10_000;
/// The event types' endings that `--state` takes.
const KINDS: [&str; 8] = [
    "sent",
    "received",
    "started",
    "succeeded",
    "failed",
    "retried",
    "revoked",
    "rejected",
];

/// `celeriac events`.
#[derive(Debug, clap::Args)]
pub(crate) struct EventsArgs {
    /// Only the events of tasks of this name.
    #[arg(long)]
    task: Option<String>,
    /// Only task events of this state: a Celery state (SUCCESS, FAILURE,
    /// STARTED, RECEIVED, RETRY, REVOKED, REJECTED, PENDING) or an event
    /// type (succeeded, task-failed, ...).
    #[arg(long, value_parser = parse_state)]
    state: Option<String>,
    /// Only the events of this worker (host name).
    #[arg(long)]
    worker: Option<String>,
    /// One JSON object a line: each event as the worker sent it.
    #[arg(long)]
    json: bool,
}

/// `--state` as the ending of an event type (`SUCCESS` → `succeeded`).
fn parse_state(text: &str) -> Result<String, String> {
    let lower = text.to_ascii_lowercase();
    let kind = match lower.trim_start_matches("task-") {
        "success" => "succeeded",
        "failure" => "failed",
        "retry" => "retried",
        "pending" => "sent",
        other => other,
    };
    match KINDS.iter().find(|k| **k == kind) {
        Some(k) => Ok((*k).to_owned()),
        None => Err(format!(
            "unknown state {text:?}; use a Celery state (SUCCESS, FAILURE, STARTED, RECEIVED, \
             RETRY, REVOKED, REJECTED, PENDING) or an event type ({})",
            KINDS.join(", ")
        )),
    }
}

impl EventsArgs {
    /// Prints events until SIGINT/SIGTERM (exit 0) or until the broker
    /// ends the stream (an error).
    pub(crate) async fn run(self, config: &Config) -> Result<ExitCode, AdminError> {
        let limit = config.connect_timeout();
        let connection = broker::connect_config(config, "celeriac-events").await?;
        let channel = broker::bounded("channel.open", limit, connection.create_channel()).await?;
        let queue = monitor::subscribe(&channel, limit).await?;
        let consume = channel.basic_consume(
            queue.as_str().into(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        );
        let mut stream = broker::bounded("basic.consume", limit, consume).await?;
        eprintln!("celeriac: listening for events on {EXCHANGE} (Ctrl-C to stop)");
        let stop = celeriac_common::shutdown::stop_signal().fuse();
        tokio::pin!(stop);
        let mut names = Names::default();
        let outcome = loop {
            let delivery = tokio::select! {
                _ = &mut stop => break Ok(ExitCode::SUCCESS),
                next = stream.next() => next,
            };
            let delivery = match delivery {
                Some(Ok(d)) => d,
                Some(Err(e)) => break Err(AdminError::EventsEnded(e.to_string())),
                None => break Err(AdminError::EventsEnded("consumer cancelled".into())),
            };
            for event in monitor::decode(&delivery.data) {
                let name = names.see(&event);
                if self.keeps(&event, name.as_deref()) {
                    self.print(&event, name.as_deref())?;
                }
            }
        };
        broker::close(&connection, limit, "events stopped").await;
        outcome
    }

    /// Whether the filters let `event` (of task `name`, if known) through.
    fn keeps(&self, event: &Map<String, Value>, name: Option<&str>) -> bool {
        let kind = text(event, "type");
        let is_task = kind.starts_with("task-");
        if let Some(w) = &self.worker
            && text(event, "hostname") != w
        {
            return false;
        }
        if let Some(t) = &self.task
            && (!is_task || name != Some(t.as_str()))
        {
            return false;
        }
        match &self.state {
            Some(s) => is_task && kind.strip_prefix("task-") == Some(s.as_str()),
            None => true,
        }
    }

    fn print(&self, event: &Map<String, Value>, name: Option<&str>) -> Result<(), AdminError> {
        if self.json {
            let line = serde_json::to_string(event).map_err(AdminError::Json)?;
            celeriac_common::outln!("{line}");
        } else {
            celeriac_common::outln!("{}", line(event, name));
        }
        Ok(())
    }
}

/// Declares `celeryev` as Celery's workers do (topic, durable) and a queue
/// of our own bound to every event; returns its name.
fn text<'a>(event: &'a Map<String, Value>, key: &str) -> &'a str {
    event.get(key).and_then(Value::as_str).unwrap_or("")
}

/// Task names by id, from the events that carry them; the oldest are
/// forgotten past [`NAMES_KEPT`].
#[derive(Default)]
struct Names {
    by_id: HashMap<String, String>,
    order: VecDeque<String>,
}

impl Names {
    /// Remembers `event`'s task name if it carries one; returns its task's name.
    fn see(&mut self, event: &Map<String, Value>) -> Option<String> {
        let id = text(event, "uuid");
        if id.is_empty() {
            return None;
        }
        let name = text(event, "name");
        if !name.is_empty() {
            if self.by_id.insert(id.to_owned(), name.to_owned()).is_none() {
                self.order.push_back(id.to_owned());
            }
            if self.order.len() > NAMES_KEPT
                && let Some(old) = self.order.pop_front()
            {
                self.by_id.remove(&old);
            }
            return Some(name.to_owned());
        }
        self.by_id.get(id).cloned()
    }
}

/// Keys every event has, or that the line shows in its own columns.
const COMMON: [&str; 9] = [
    "type",
    "hostname",
    "timestamp",
    "utcoffset",
    "pid",
    "clock",
    "uuid",
    "name",
    "local_received",
];

/// `TIME HOSTNAME TYPE [UUID NAME] key=value...` (values as JSON).
fn line(event: &Map<String, Value>, name: Option<&str>) -> String {
    let time = event
        .get("timestamp")
        .and_then(Value::as_f64)
        .and_then(|t| chrono::DateTime::from_timestamp_micros((t * 1e6) as i64))
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_else(|| "-".to_owned());
    let mut parts = vec![
        time,
        text(event, "hostname").to_owned(),
        text(event, "type").to_owned(),
    ];
    let id = text(event, "uuid");
    if !id.is_empty() {
        parts.push(id.to_owned());
        parts.push(name.unwrap_or("-").to_owned());
    }
    let mut rest: Vec<(&String, &Value)> = event
        .iter()
        .filter(|(k, _)| !COMMON.contains(&k.as_str()))
        .collect();
    rest.sort_by(|a, b| a.0.cmp(b.0));
    parts.extend(rest.into_iter().map(|(k, v)| format!("{k}={v}")));
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ev(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    fn args(task: Option<&str>, state: Option<&str>, worker: Option<&str>) -> EventsArgs {
        EventsArgs {
            task: task.map(str::to_owned),
            state: state.map(|s| parse_state(s).expect("state")),
            worker: worker.map(str::to_owned),
            json: false,
        }
    }

    #[test]
    fn states_are_celerys_or_event_types() {
        assert_eq!(parse_state("SUCCESS").as_deref(), Ok("succeeded"));
        assert_eq!(parse_state("task-failed").as_deref(), Ok("failed"));
        assert_eq!(parse_state("retry").as_deref(), Ok("retried"));
        assert_eq!(parse_state("PENDING").as_deref(), Ok("sent"));
        assert!(parse_state("done").is_err());
    }

    #[test]
    fn filters_follow_a_task_by_its_id() {
        let mut names = Names::default();
        let received =
            ev(json!({"type": "task-received", "uuid": "u1", "name": "t.add", "hostname": "w1"}));
        let done = ev(json!({"type": "task-succeeded", "uuid": "u1", "hostname": "w1"}));
        let beat = ev(json!({"type": "worker-heartbeat", "hostname": "w1"}));
        assert_eq!(names.see(&received).as_deref(), Some("t.add"));
        assert_eq!(names.see(&done).as_deref(), Some("t.add"));
        assert_eq!(names.see(&beat), None);
        let by_task = args(Some("t.add"), None, None);
        assert!(by_task.keeps(&done, Some("t.add")));
        assert!(!by_task.keeps(&beat, None));
        assert!(!args(Some("t.mul"), None, None).keeps(&done, Some("t.add")));
        let by_state = args(None, Some("SUCCESS"), None);
        assert!(by_state.keeps(&done, None));
        assert!(!by_state.keeps(&received, None));
        assert!(!by_state.keeps(&beat, None));
        assert!(args(None, None, Some("w1")).keeps(&beat, None));
        assert!(!args(None, None, Some("w2")).keeps(&beat, None));
    }

    #[test]
    fn lines_show_time_host_type_task_and_fields() {
        let event = ev(
            json!({"type": "task-succeeded", "uuid": "u1", "hostname": "w1",
            "timestamp": 1_700_000_000.25, "clock": 3, "pid": 9, "utcoffset": 0,
            "runtime": 0.5, "result": "3"}),
        );
        assert_eq!(
            line(&event, Some("t.add")),
            "2023-11-14T22:13:20.250Z w1 task-succeeded u1 t.add result=\"3\" runtime=0.5"
        );
    }
}

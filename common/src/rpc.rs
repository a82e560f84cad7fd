//! Celery's `rpc://` result backend on the wire: the worker publishes each
//! state of a task to the default exchange with routing key = the task
//! message's `reply_to` and `correlation_id` = the task id; the caller
//! reads them from its own reply queue.
//!
//! The body is Celery's result meta (`celery.backends.rpc`):
//! `{task_id, status, result, traceback, children, date_done}`, plus
//! `group_id`/`parent_id` when set. A failure's `result` is the exception
//! as Celery's JSON serializer writes it: `{exc_type, exc_message (a list),
//! exc_module}`. Properties: `content_type` `application/json`,
//! `content_encoding` `utf-8`, `delivery_mode` 1 (Celery's
//! `result_persistent` is off by default).

use crate::backend::{TaskError, TaskOutcome, TaskRecord};
use crate::broker::{self, BrokerError};
use crate::state::TaskState;
use chrono::{DateTime, Utc};
use lapin::options::QueueDeclareOptions;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel};
use serde_json::{Map, Value, json};
use std::time::Duration;

/// The `result_backend` value that selects the rpc backend (Celery's own).
pub const SCHEME: &str = "rpc://";

/// Whether `url` names the rpc backend (`rpc://`, or `rpc://` with a
/// vhost-like tail, which Celery ignores as well).
pub fn is_rpc(url: &str) -> bool {
    url.get(..SCHEME.len())
        .is_some_and(|s| s.eq_ignore_ascii_case(SCHEME))
}

/// Python's built-in exceptions, which Celery rebuilds as themselves
/// (`exc_module` `builtins`); any other kind is rebuilt as a class of
/// that name in `celery.exceptions` (which holds `NotRegistered`,
/// `TaskRevokedError`, ... and makes up the others).
const BUILTINS: &[&str] = &[
    "Exception",
    "ArithmeticError",
    "AssertionError",
    "AttributeError",
    "IndexError",
    "KeyError",
    "LookupError",
    "MemoryError",
    "NotImplementedError",
    "OSError",
    "OverflowError",
    "RuntimeError",
    "TimeoutError",
    "TypeError",
    "ValueError",
    "ZeroDivisionError",
];

/// The reply message body for `outcome`, as Celery's rpc backend sends it.
pub fn reply_body(outcome: &TaskOutcome) -> Value {
    let exceptional = matches!(
        outcome.state,
        TaskState::Failure | TaskState::Retry | TaskState::Revoked
    );
    let (result, traceback) = match (&outcome.error, exceptional) {
        (Some(e), true) => {
            let module = if BUILTINS.contains(&e.kind.as_str()) {
                "builtins"
            } else {
                "celery.exceptions"
            };
            let exc = json!({
                "exc_type": e.kind, "exc_message": [e.message], "exc_module": module,
            });
            let tb = e
                .traceback
                .clone()
                .unwrap_or_else(|| format!("{}: {}\n", e.kind, e.message));
            (exc, Value::String(tb))
        }
        _ => (outcome.result.clone().unwrap_or(Value::Null), Value::Null),
    };
    let date_done = outcome
        .state
        .is_ready()
        .then(|| outcome.done_at.unwrap_or_else(Utc::now).to_rfc3339());
    let mut body = Map::new();
    body.insert("status".into(), json!(outcome.state.as_str()));
    body.insert("result".into(), result);
    body.insert("traceback".into(), traceback);
    body.insert("children".into(), json!([]));
    body.insert("date_done".into(), json!(date_done));
    if let Some(g) = &outcome.group_id {
        body.insert("group_id".into(), json!(g));
    }
    if let Some(p) = &outcome.parent_id {
        body.insert("parent_id".into(), json!(p));
    }
    body.insert("task_id".into(), json!(outcome.task_id));
    Value::Object(body)
}

/// The reply message's properties (`correlation_id` = the task message's
/// own, which Celery sets to the task id).
pub fn reply_properties(correlation_id: &str) -> BasicProperties {
    BasicProperties::default()
        .with_content_type(crate::protocol::CONTENT_TYPE_JSON.into())
        .with_content_encoding("utf-8".into())
        .with_correlation_id(correlation_id.into())
        .with_delivery_mode(1)
}

/// A reply that cannot be read as Celery's result meta.
#[derive(Debug, thiserror::Error)]
pub enum ReplyError {
    /// The body is not a JSON object.
    #[error("reply body is not a JSON object: {0}")]
    NotJson(String),
    /// `status` is missing or not a Celery state.
    #[error("reply has no valid status: {0}")]
    Status(String),
    /// No task id in the body nor in `correlation_id`.
    #[error("reply names no task id")]
    NoTaskId,
}

/// Reads a reply (from a Celery or a celeriac worker) as a [`TaskRecord`].
pub fn record_from_reply(
    body: &[u8],
    correlation_id: Option<&str>,
) -> Result<TaskRecord, ReplyError> {
    let meta: Map<String, Value> =
        serde_json::from_slice(body).map_err(|e| ReplyError::NotJson(e.to_string()))?;
    let text = |k: &str| meta.get(k).and_then(Value::as_str).map(str::to_owned);
    let status = text("status").unwrap_or_default();
    let state: TaskState = status
        .parse()
        .map_err(|_| ReplyError::Status(status.clone()))?;
    let task_id = correlation_id
        .filter(|c| !c.is_empty())
        .map(str::to_owned)
        .or_else(|| text("task_id"))
        .ok_or(ReplyError::NoTaskId)?;
    let result = meta.get("result").cloned().unwrap_or(Value::Null);
    let traceback = text("traceback");
    let exceptional = matches!(
        state,
        TaskState::Failure | TaskState::Retry | TaskState::Revoked
    );
    let (result, error) = if exceptional {
        (None, Some(error_from(&result, traceback)))
    } else {
        (Some(result), None)
    };
    let done_at = text("date_done").and_then(|d| parse_date(&d));
    Ok(TaskRecord {
        task_id,
        task_name: text("name"),
        state,
        result,
        error,
        args: meta.get("args").cloned(),
        kwargs: meta.get("kwargs").cloned(),
        worker: text("worker"),
        retries: meta
            .get("retries")
            .and_then(Value::as_u64)
            .and_then(|r| u32::try_from(r).ok())
            .unwrap_or(0),
        queue: text("queue"),
        parent_id: text("parent_id"),
        root_id: None,
        group_id: text("group_id"),
        group_index: meta
            .get("group_index")
            .and_then(Value::as_u64)
            .and_then(|i| u32::try_from(i).ok()),
        meta: None,
        created_at: Utc::now(),
        started_at: None,
        done_at,
    })
}

/// Celery's serialized exception (or whatever stands in its place) as a
/// [`TaskError`].
fn error_from(result: &Value, traceback: Option<String>) -> TaskError {
    let kind = result
        .get("exc_type")
        .and_then(Value::as_str)
        .unwrap_or("Exception")
        .to_owned();
    let message = match result.get("exc_message") {
        Some(Value::Array(parts)) => parts
            .iter()
            .map(|p| p.as_str().map_or_else(|| p.to_string(), str::to_owned))
            .collect::<Vec<_>>()
            .join(", "),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None if result.is_null() => String::new(),
        None => result.to_string(),
    };
    TaskError {
        kind,
        message,
        traceback,
    }
}

/// Python's `datetime.isoformat()` (with or without an offset; naive
/// times are UTC, as Celery's `app.now()` gives them).
fn parse_date(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .map(|d| d.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
                .ok()
                .map(|n| n.and_utc())
        })
}

/// Declares a caller's reply queue as Celery's rpc backend does: durable,
/// auto-deleted once its consumer goes, `x-expires` = `expires` (Celery's
/// `result_expires`) so an abandoned queue goes too.
pub async fn declare_reply_queue(
    channel: &Channel,
    name: &str,
    expires: Duration,
    limit: Duration,
) -> Result<(), BrokerError> {
    let mut args = FieldTable::default();
    let ms = i64::try_from(expires.as_millis())
        .unwrap_or(i64::MAX)
        .max(1);
    args.insert("x-expires".into(), AMQPValue::LongLongInt(ms));
    let opts = QueueDeclareOptions {
        durable: true,
        auto_delete: true,
        ..Default::default()
    };
    let declare = channel.queue_declare(name.into(), opts, args);
    broker::bounded("queue.declare", limit, declare).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn success_and_failure_replies_are_celerys_meta_and_read_back() {
        let mut ok = TaskOutcome::new("t-1", "tasks.add", TaskState::Success);
        ok.result = Some(json!(5));
        ok.parent_id = Some("p".into());
        let body = reply_body(&ok);
        assert_eq!(body["status"], "SUCCESS");
        assert_eq!(body["result"], 5);
        assert_eq!(body["children"], json!([]));
        assert_eq!(body["parent_id"], "p");
        assert!(body["date_done"].is_string());
        assert!(body["traceback"].is_null());
        let back = record_from_reply(body.to_string().as_bytes(), Some("t-1")).expect("read");
        assert_eq!(back.state, TaskState::Success);
        assert_eq!(back.result, Some(json!(5)));

        let mut failed = TaskOutcome::new("t-2", "tasks.div", TaskState::Failure);
        failed.error = Some(TaskError {
            kind: "ZeroDivisionError".into(),
            message: "division by zero".into(),
            traceback: None,
        });
        let body = reply_body(&failed);
        assert_eq!(
            body["result"],
            json!({"exc_type": "ZeroDivisionError", "exc_message": ["division by zero"],
                   "exc_module": "builtins"})
        );
        assert_eq!(body["traceback"], "ZeroDivisionError: division by zero\n");
        let back = record_from_reply(body.to_string().as_bytes(), None).expect("read");
        assert_eq!(back.task_id, "t-2");
        let error = back.error.expect("error");
        assert_eq!(error.kind, "ZeroDivisionError");
        assert_eq!(error.message, "division by zero");
        assert!(back.result.is_none());
    }

    #[test]
    fn python_replies_and_bad_ones() {
        let py = br#"{"status": "FAILURE", "result": {"exc_type": "ValueError",
            "exc_message": ["bad", 3], "exc_module": "builtins"}, "traceback": "Traceback...",
            "children": [], "date_done": "2026-01-02T03:04:05.123456+00:00", "task_id": "x"}"#;
        let r = record_from_reply(py, Some("x")).expect("read");
        assert_eq!(r.state, TaskState::Failure);
        let e = r.error.expect("error");
        assert_eq!(
            (e.kind.as_str(), e.message.as_str()),
            ("ValueError", "bad, 3")
        );
        assert!(r.done_at.is_some());
        let naive = br#"{"status": "STARTED", "result": {"pid": 1}, "task_id": "y",
            "date_done": null}"#;
        assert_eq!(
            record_from_reply(naive, None).expect("read").state,
            TaskState::Started
        );
        assert!(parse_date("2026-01-02T03:04:05.5").is_some());
        assert!(matches!(
            record_from_reply(b"[1]", None),
            Err(ReplyError::NotJson(_))
        ));
        assert!(matches!(
            record_from_reply(br#"{"status": "WHAT"}"#, Some("z")),
            Err(ReplyError::Status(_))
        ));
        assert!(matches!(
            record_from_reply(br#"{"status": "SUCCESS"}"#, None),
            Err(ReplyError::NoTaskId)
        ));
        assert!(is_rpc("rpc://") && is_rpc("RPC://x") && !is_rpc("rpc:"));
    }
}

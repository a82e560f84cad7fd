//! The JSON API: one file per page's data, plus its actions.

pub(crate) mod overview;
pub(crate) mod queues;
pub(crate) mod schedules;
mod task_tree;
pub(crate) mod tasks;
pub(crate) mod workers;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;

/// An instant as the API writes it: RFC 3339, UTC, milliseconds.
pub(crate) fn instant(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// A stored JSON text read back (`null` for none, the text itself if it is
/// not JSON).
pub(crate) fn json_text(text: Option<&str>) -> Value {
    match text {
        None => Value::Null,
        Some(t) => serde_json::from_str(t).unwrap_or_else(|_| Value::String(t.to_owned())),
    }
}

/// What a PROGRESS row reports: `{done, total, ...}`, stored in its result
/// (Celery's custom-state form, as `ctx.progress` writes it), or in its
/// meta column by other writers.
pub(crate) fn progress(state: &str, result: Option<&str>, meta: Option<&str>) -> Value {
    if state != "PROGRESS" {
        return Value::Null;
    }
    [result, meta]
        .into_iter()
        .map(json_text)
        .find(|v| v.get("total").is_some())
        .unwrap_or(Value::Null)
}

//! The control commands that change the worker: rate and time limits,
//! revocations.

use super::args::{arg, error, missing, ok, seconds, strings};
use crate::options::RateLimit;
use crate::shared::Shared;
use serde_json::{Map, Value};

pub(super) fn rate_limit(shared: &Shared, args: &Map<String, Value>) -> Value {
    let Some(name) = arg(args, "task_name").and_then(Value::as_str) else {
        return missing("rate_limit", "task_name");
    };
    if !shared.registry.contains(name) {
        tracing::error!("Rate limit attempt for unknown task {name}");
        return error("unknown task");
    }
    let rate = match arg(args, "rate_limit") {
        None => None,
        Some(Value::Number(n)) if n.as_f64() == Some(0.0) => None,
        Some(Value::String(s)) if s.trim().is_empty() || s.trim() == "0" => None,
        Some(v) => {
            let text = v
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| v.to_string());
            match text.parse::<RateLimit>() {
                Ok(r) => Some(r),
                Err(e) => return error(format!("Invalid rate limit string: {e}")),
            }
        }
    };
    shared
        .registry
        .update_options(name, |o| o.rate_limit = rate);
    tracing::info!(task = name, rate = ?rate, "rate limit changed by remote");
    match rate {
        Some(_) => ok("new rate limit set successfully"),
        None => ok("rate limit disabled successfully"),
    }
}

pub(super) fn time_limit(shared: &Shared, args: &Map<String, Value>) -> Value {
    let Some(name) = arg(args, "task_name").and_then(Value::as_str) else {
        return missing("time_limit", "task_name");
    };
    if !shared.registry.contains(name) {
        tracing::error!("Change time limit attempt for unknown task {name}");
        return error("unknown task");
    }
    let (soft, hard) = match (seconds(arg(args, "soft")), seconds(arg(args, "hard"))) {
        (Ok(s), Ok(h)) => (s, h),
        (Err(e), _) | (_, Err(e)) => return error(e),
    };
    shared.registry.update_options(name, |o| {
        o.soft_time_limit = soft;
        o.time_limit = hard;
    });
    tracing::info!(task = name, ?soft, ?hard, "time limits changed by remote");
    ok("time limits set successfully")
}

pub(super) fn revoke(shared: &Shared, args: &Map<String, Value>) -> Value {
    let ids = strings(arg(args, "task_id"));
    let terminate = arg(args, "terminate")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    for id in &ids {
        shared.revocations.revoke(id);
        let stopped = terminate && shared.revocations.terminate(id);
        tracing::info!(task.id = %id, terminated = stopped, "revoked");
    }
    let list = ids.join(", ");
    if terminate {
        ok(format!("terminate: tasks {list} flagged as revoked"))
    } else {
        ok(format!("tasks {list} flagged as revoked"))
    }
}

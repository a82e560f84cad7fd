//! The message for one frozen task signature.

use crate::canvas::send::CanvasError;
use celeriac_common::Signature;
use celeriac_common::broker;
use celeriac_common::protocol::{TaskMessage, parse_time};
use chrono::{DateTime, Utc};
use serde_json::Value;

/// The message for one (frozen) task signature, options applied as
/// Celery's `apply_async` applies them; the queue it names, if any.
pub(crate) fn message(sig: &Signature) -> Result<(TaskMessage, Option<String>), CanvasError> {
    let opt = |k: &str| sig.options.get(k).filter(|v| !v.is_null());
    let bad = |name: &str, v: &Value| CanvasError::BadOption {
        task: sig.task.clone(),
        name: name.to_owned(),
        value: v.to_string(),
    };
    let mut msg = TaskMessage::new(sig.task.clone(), sig.args.clone(), sig.kwargs.clone());
    if let Some(v) = opt("task_id") {
        let id = v.as_str().ok_or_else(|| bad("task_id", v))?;
        celeriac_common::protocol::check_task_id(id).map_err(|_| bad("task_id", v))?;
        msg = msg.with_id(id);
    }
    let text = |k: &str| -> Result<Option<String>, CanvasError> {
        opt(k)
            .map(|v| v.as_str().map(str::to_owned).ok_or_else(|| bad(k, v)))
            .transpose()
    };
    msg.group = text("group_id")?;
    msg.group_index = opt("group_index")
        .map(|v| v.as_i64().ok_or_else(|| bad("group_index", v)))
        .transpose()?;
    if let Some(root) = text("root_id")? {
        msg.root_id = Some(root);
    }
    msg.parent_id = text("parent_id")?;
    msg.priority = opt("priority")
        .map(|v| {
            v.as_u64()
                .and_then(|p| u8::try_from(p).ok())
                .ok_or_else(|| bad("priority", v))
        })
        .transpose()?;
    let now = Utc::now();
    let instant = |k: &str| -> Result<Option<DateTime<Utc>>, CanvasError> {
        match opt(k) {
            None => Ok(None),
            Some(Value::String(t)) => parse_time(t)
                .map(|t| t.with_timezone(&Utc))
                .filter(celeriac_common::protocol::fits_the_wire)
                .map(Some)
                .ok_or_else(|| bad(k, &Value::String(t.clone()))),
            Some(v) => v
                .as_f64()
                .filter(|s| s.is_finite() && *s >= 0.0)
                .and_then(|s| chrono::Duration::try_milliseconds((s * 1000.0) as i64))
                .and_then(|d| now.checked_add_signed(d))
                .filter(celeriac_common::protocol::fits_the_wire)
                .map(Some)
                .ok_or_else(|| bad(k, v)),
        }
    };
    let eta = instant("eta")?;
    let countdown = match opt("countdown") {
        Some(v @ Value::String(_)) => return Err(bad("countdown", v)),
        _ => instant("countdown")?,
    };
    msg.eta = eta.or(countdown).map(|t| t.fixed_offset());
    msg.expires = instant("expires")?.map(|t| t.fixed_offset());
    let limit = |k: &str| -> Result<Option<f64>, CanvasError> {
        opt(k)
            .map(|v| {
                v.as_f64()
                    .filter(|s| s.is_finite() && *s > 0.0)
                    .ok_or_else(|| bad(k, v))
            })
            .transpose()
    };
    msg.timelimit = (limit("time_limit")?, limit("soft_time_limit")?);
    msg.ignore_result = opt("ignore_result")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let sigs = |k: &str| -> Result<Option<Vec<Signature>>, CanvasError> {
        match opt(k) {
            None => Ok(None),
            Some(v @ Value::Object(_)) => serde_json::from_value(v.clone())
                .map(|s| Some(vec![s]))
                .map_err(|_| bad(k, v)),
            Some(v) => serde_json::from_value(v.clone())
                .map(Some)
                .map_err(|_| bad(k, v)),
        }
    };
    // Celery's `headers` option: extra message headers (the protocol's own
    // are not overridden).
    if let Some(v) = opt("headers") {
        let headers = v.as_object().ok_or_else(|| bad("headers", v))?;
        for (k, h) in headers {
            if !celeriac_common::protocol::is_reserved_header(k) {
                msg.extra_headers.insert(k.clone(), h.clone());
            }
        }
    }
    msg.embed.callbacks = sigs("link")?;
    msg.embed.errbacks = sigs("link_error")?;
    msg.embed.chord = match opt("chord") {
        Some(v) => Some(serde_json::from_value(v.clone()).map_err(|_| bad("chord", v))?),
        None => None,
    };
    let queue = match text("queue")? {
        Some(q) => Some(q),
        None => text("routing_key")?,
    };
    // Also a delayed message's routing key: refused here, not by lapin.
    if let Some(q) = queue.as_ref().filter(|q| q.len() > broker::MAX_QUEUE_BYTES) {
        return Err(bad("queue", &Value::String(q.clone())));
    }
    Ok((msg, queue))
}

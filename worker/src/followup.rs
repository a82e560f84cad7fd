//! What runs after a task, as Celery's embed says: `callbacks` (link) and
//! the next `chain` step on success, `errbacks` (link_error) on failure.
//! A follow-up that cannot be sent is logged; it never changes the outcome
//! of the task that finished.

use crate::publish::Publisher;
use celeriac_common::protocol::{Embed, Signature, TaskMessage, parse_time};
use chrono::Utc;
use serde_json::Value;

/// Builds the message for `sig`, called by `parent`; `first_arg` (the
/// parent's result, or its id for errbacks) is prepended unless the
/// signature is immutable.
fn message_for(
    sig: &Signature,
    parent: &TaskMessage,
    first_arg: Option<&Value>,
) -> (TaskMessage, Option<String>) {
    let mut args = Vec::with_capacity(sig.args.len() + 1);
    if let Some(v) = first_arg.filter(|_| !sig.immutable) {
        args.push(v.clone());
    }
    args.extend(sig.args.iter().cloned());
    let mut msg = TaskMessage::new(sig.task.clone(), args, sig.kwargs.clone());
    let opt = |k: &str| sig.options.get(k).filter(|v| !v.is_null());
    if let Some(id) = opt("task_id").and_then(Value::as_str) {
        msg = msg.with_id(id);
    }
    msg.parent_id = Some(parent.id.clone());
    msg.root_id = parent.root_id.clone().or_else(|| Some(parent.id.clone()));
    msg.group = opt("group_id").and_then(Value::as_str).map(str::to_owned);
    msg.group_index = opt("group_index").and_then(Value::as_i64);
    msg.priority = opt("priority")
        .and_then(Value::as_u64)
        .and_then(|p| u8::try_from(p).ok());
    let now = Utc::now();
    msg.eta = match (opt("eta"), opt("countdown")) {
        (Some(Value::String(t)), _) => parse_time(t),
        (_, Some(c)) => c
            .as_f64()
            .and_then(|s| chrono::Duration::try_milliseconds((s * 1000.0) as i64))
            .map(|d| (now + d).fixed_offset()),
        _ => None,
    };
    msg.expires = match opt("expires") {
        Some(Value::String(t)) => parse_time(t),
        Some(v) => v
            .as_f64()
            .and_then(|s| chrono::Duration::try_milliseconds((s * 1000.0) as i64))
            .map(|d| (now + d).fixed_offset()),
        None => None,
    };
    let sigs = |k: &str| -> Option<Vec<Signature>> {
        match opt(k)? {
            v @ Value::Object(_) => serde_json::from_value(v.clone()).ok().map(|s| vec![s]),
            v @ Value::Array(_) => serde_json::from_value(v.clone()).ok(),
            _ => None,
        }
    };
    msg.embed = Embed {
        callbacks: sigs("link"),
        errbacks: sigs("link_error"),
        chain: None,
        chord: None,
    };
    let queue = opt("queue")
        .or_else(|| opt("routing_key"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    (msg, queue)
}

async fn send(
    publisher: &Publisher,
    msg: &TaskMessage,
    queue: Option<String>,
    default_queue: &str,
    what: &str,
) {
    let queue = queue.unwrap_or_else(|| default_queue.to_owned());
    match publisher.send(msg, &queue).await {
        Ok(()) => tracing::info!(next.id = %msg.id, next.name = %msg.task, "{what} sent"),
        Err(e) => {
            tracing::error!(next.id = %msg.id, next.name = %msg.task, error = %e, "{what} could not be sent")
        }
    }
}

/// Sends the callbacks and the next chain step with the task's result.
/// Their sending is boxed: most tasks have none, and this future is part
/// of every delivery's task.
pub(crate) async fn on_success(
    publisher: &Publisher,
    parent: &TaskMessage,
    result: &Value,
    default_queue: &str,
) {
    let embed = &parent.embed;
    let none = |v: &Option<Vec<Signature>>| v.as_ref().is_none_or(Vec::is_empty);
    if none(&embed.callbacks) && none(&embed.chain) {
        return;
    }
    Box::pin(send_on_success(publisher, parent, result, default_queue)).await;
}

async fn send_on_success(
    publisher: &Publisher,
    parent: &TaskMessage,
    result: &Value,
    default_queue: &str,
) {
    for sig in parent.embed.callbacks.iter().flatten() {
        let (msg, queue) = message_for(sig, parent, Some(result));
        send(publisher, &msg, queue, default_queue, "callback").await;
    }
    if let Some(chain) = parent.embed.chain.as_ref().filter(|c| !c.is_empty()) {
        let mut rest = chain.clone();
        if let Some(next) = rest.pop() {
            let (mut msg, queue) = message_for(&next, parent, Some(result));
            if !rest.is_empty() {
                msg.embed.chain = Some(rest);
            }
            send(publisher, &msg, queue, default_queue, "chain step").await;
        }
    }
}

/// Sends the errbacks, each called with the failed task's id (Celery's
/// form for errbacks that run in another process).
pub(crate) async fn on_failure(publisher: &Publisher, parent: &TaskMessage, default_queue: &str) {
    let id = Value::String(parent.id.clone());
    for sig in parent.embed.errbacks.iter().flatten() {
        let (msg, queue) = message_for(sig, parent, Some(&id));
        send(publisher, &msg, queue, default_queue, "errback").await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn signatures_become_messages() {
        let parent = TaskMessage::new("a", vec![], Default::default()).with_id("p");
        let mut sig = Signature::new("tasks.mul", vec![json!(3)]);
        sig.options.insert("task_id".into(), json!("child"));
        sig.options.insert("queue".into(), json!("math"));
        sig.options.insert("countdown".into(), json!(5));
        let (msg, queue) = message_for(&sig, &parent, Some(&json!(7)));
        assert_eq!(
            (msg.id.as_str(), msg.args.clone()),
            ("child", vec![json!(7), json!(3)])
        );
        assert_eq!(queue.as_deref(), Some("math"));
        assert_eq!(msg.parent_id.as_deref(), Some("p"));
        assert_eq!(msg.root_id.as_deref(), Some("p"));
        assert!(msg.eta.is_some());
        sig.immutable = true;
        assert_eq!(
            message_for(&sig, &parent, Some(&json!(7))).0.args,
            vec![json!(3)]
        );
    }
}

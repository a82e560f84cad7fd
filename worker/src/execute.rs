//! Running one task: its context, time limits, panics, and what a failure
//! turns into (a retry or a final FAILURE).

use crate::context::{RetryAt, TaskContext, TaskFailure};
use crate::followup;
use crate::options::TaskOptions;
use crate::publish::Publisher;
use crate::registry::Handler;
use crate::shared::Shared;
use celeriac_common::TaskState;
use celeriac_common::protocol::TaskMessage;
use chrono::Utc;
use std::time::Duration;

/// `(hard, soft)` time limits: the message's `timelimit` header, else the task's options.
pub(crate) fn limits(
    msg: &TaskMessage,
    options: &TaskOptions,
) -> (Option<Duration>, Option<Duration>) {
    let secs = |s: Option<f64>| {
        s.filter(|s| s.is_finite() && *s > 0.0)
            .and_then(celeriac_common::seconds::capped)
    };
    (
        secs(msg.timelimit.0).or(options.time_limit),
        secs(msg.timelimit.1).or(options.soft_time_limit),
    )
}

pub(crate) fn task_context(
    shared: &Shared,
    msg: &TaskMessage,
    queue: &str,
    earlier_deliveries: u32,
    soft: Option<Duration>,
    progress: crate::progress::Progress,
) -> TaskContext {
    TaskContext {
        id: msg.id.clone(),
        name: msg.task.clone(),
        retries: msg.retries,
        redelivered: earlier_deliveries > 0,
        earlier_deliveries,
        hostname: shared.config.hostname.clone(),
        queue: queue.to_owned(),
        eta: msg.eta,
        parent_id: msg.parent_id.clone(),
        root_id: msg.root_id.clone(),
        headers: msg.extra_headers.clone(),
        soft_deadline: soft.map(|s| tokio::time::Instant::now() + s),
        progress,
    }
}

fn time_limit_exceeded(limit: Duration) -> TaskFailure {
    TaskFailure::new(
        "TimeLimitExceeded",
        format!("hard time limit ({}s) exceeded", limit.as_secs_f64()),
    )
}

/// Runs the handler: async tasks on the runtime (aborted at the hard limit),
/// blocking ones on the blocking pool. A blocking task cannot be stopped from
/// outside: at its hard limit it is recorded as FAILURE and its thread is
/// left to finish in the background, its result discarded.
pub(crate) async fn run(
    shared: &Shared,
    handler: &Handler,
    ctx: TaskContext,
    msg: &TaskMessage,
    hard: Option<Duration>,
) -> Result<serde_json::Value, TaskFailure> {
    let result = run_inner(shared, handler, ctx, msg, hard).await;
    shared.revocations.finished(&msg.id);
    result
}

async fn run_inner(
    shared: &Shared,
    handler: &Handler,
    ctx: TaskContext,
    msg: &TaskMessage,
    hard: Option<Duration>,
) -> Result<serde_json::Value, TaskFailure> {
    let args_error =
        |e: celeriac_common::ArgsError| TaskFailure::new("ArgumentError", e.to_string());
    let task = match handler {
        Handler::Async(h) => tokio::spawn(h(ctx, &msg.args, &msg.kwargs).map_err(args_error)?),
        Handler::Blocking(h) => {
            tokio::task::spawn_blocking(h(ctx, &msg.args, &msg.kwargs).map_err(args_error)?)
        }
    };
    let abort = task.abort_handle();
    if matches!(handler, Handler::Async(_)) {
        shared.revocations.started(&msg.id, abort.clone());
    }
    let joined = match hard {
        Some(limit) => match tokio::time::timeout(limit, task).await {
            Ok(joined) => joined,
            Err(_) => {
                abort.abort();
                return Err(time_limit_exceeded(limit));
            }
        },
        None => task.await,
    };
    match joined {
        Ok(result) => result,
        Err(e) if e.is_panic() => {
            let payload = e.into_panic();
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panic with a non-string payload".to_owned());
            Err(TaskFailure::new("Panic", message))
        }
        Err(_) => Err(TaskFailure::new("Cancelled", "task was cancelled")),
    }
}

/// Turns a failure into a retry (a new message, same id, `retries + 1`,
/// through the delay queues; RETRY recorded) while retries remain, else a
/// final FAILURE (errbacks sent): returns the state to record and the
/// failure. Returns `None` if the retry or an errback could not be published: the caller
/// then returns the message to its queue, so it is neither lost nor
/// recorded.
pub(crate) async fn conclude_failure(
    publisher: &Publisher,
    msg: &TaskMessage,
    queue: &str,
    options: &TaskOptions,
    mut failure: TaskFailure,
) -> Option<(TaskState, TaskFailure)> {
    let wanted = failure.retry.or_else(|| {
        options
            .autoretry_for
            .contains(&failure.kind)
            .then_some(RetryAt::Policy)
    });
    if let Some(at) = wanted {
        if options.max_retries.is_none_or(|max| msg.retries < max) {
            let now = Utc::now();
            let eta = match at {
                RetryAt::Policy => now + options.policy_delay(msg.retries),
                RetryAt::In(d) => now + d,
                RetryAt::At(t) => t,
            };
            let mut next = msg.clone();
            next.retries += 1;
            next.eta = Some(eta.fixed_offset());
            if let Err(e) = publisher.send(&next, queue).await {
                tracing::error!(
                    error = %e,
                    "cannot publish the retry; returning the message to the queue"
                );
                return None;
            }
            tracing::info!(retry = next.retries, eta = %eta.to_rfc3339(), "retry scheduled");
            return Some((TaskState::Retry, failure));
        }
        failure
            .causes
            .push(format!("gave up after {} retries", msg.retries));
    }
    if !followup::on_failure(publisher, msg, queue).await {
        return None;
    }
    Some((TaskState::Failure, failure))
}

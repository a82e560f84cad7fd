//! What a running task can see, and how it reports failure.

use crate::progress::Progress;
use chrono::{DateTime, FixedOffset};
use serde_json::Value;
use std::collections::BTreeMap;

/// Facts about the message being run, passed to every task.
#[derive(Debug, Clone)]
pub struct TaskContext {
    /// Task id.
    pub id: String,
    /// Task name.
    pub name: String,
    /// How many times it was retried before this run.
    pub retries: u32,
    /// Whether an earlier delivery of this message did not finish (a worker
    /// died or lost its connection while holding it): the task may have run
    /// before, in part or in full.
    pub redelivered: bool,
    /// How many earlier deliveries of this message did not finish (a quorum
    /// queue's own count, or celeriac's `x-celeriac-deliveries` header on a
    /// classic queue). At `max_deliveries` the message is dead-lettered.
    pub earlier_deliveries: u32,
    /// The hostname of this worker.
    pub hostname: String,
    /// The queue the message came from.
    pub queue: String,
    /// The `eta` the message carried.
    pub eta: Option<DateTime<FixedOffset>>,
    /// Parent task id.
    pub parent_id: Option<String>,
    /// Root task id.
    pub root_id: Option<String>,
    /// Headers the caller added.
    pub headers: BTreeMap<String, Value>,
    /// When the soft time limit runs out, if the task has one.
    pub soft_deadline: Option<tokio::time::Instant>,
    /// Where [`TaskContext::progress`] reports (`Progress::default()`
    /// records nothing).
    pub progress: Progress,
}

impl TaskContext {
    /// Resolves when the soft time limit is reached (never, without one).
    /// A task that can clean up selects on it:
    /// `tokio::select! { r = work() => r, _ = ctx.soft_time_limit() => Err(...) }`.
    /// The hard limit, if any, stops the task regardless.
    pub async fn soft_time_limit(&self) {
        match self.soft_deadline {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    }

    /// Reports progress: `done` out of `total`, with `meta` (a JSON object
    /// whose keys are stored beside them, or `Value::Null`). Stored as state
    /// PROGRESS with result `{"done", "total", ...meta}`, as Celery's
    /// `update_state(state="PROGRESS", meta=...)`; at most one write per
    /// 250 ms, the last value always written before the outcome, which no
    /// progress ever overwrites. Never waits: call it as often as you like,
    /// from async or blocking tasks.
    ///
    /// ```no_run
    /// # fn demo(ctx: celeriac_worker::TaskContext) {
    /// for (i, _file) in ["a", "b"].iter().enumerate() {
    ///     ctx.progress(i as u64 + 1, 2, serde_json::json!({"file": _file}));
    /// }
    /// # }
    /// ```
    pub fn progress(&self, done: u64, total: u64, meta: Value) {
        self.progress.report(done, total, meta);
    }

    /// Whether the soft time limit has passed.
    pub fn soft_time_limit_exceeded(&self) -> bool {
        self.soft_deadline
            .is_some_and(|at| tokio::time::Instant::now() >= at)
    }
}

/// When a task asked to be retried.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RetryAt {
    /// After the task's retry policy's delay (`retry_delay`, or backoff).
    Policy,
    /// After this long.
    In(std::time::Duration),
    /// At this instant.
    At(chrono::DateTime<chrono::Utc>),
}

/// A task's failure, as recorded: a kind (the error's type name), a message,
/// and the chain of causes. Any `std::error::Error` converts into it, so a
/// task can return its own error type.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskFailure {
    /// The error kind, e.g. `ParseIntError`.
    pub kind: String,
    /// The error's message.
    pub message: String,
    /// The causes, outermost first.
    pub causes: Vec<String>,
    /// Set when the task asks to run again (Celery's `self.retry()`).
    pub retry: Option<RetryAt>,
}

impl TaskFailure {
    /// A failure with a chosen kind and message.
    pub fn new(kind: impl Into<String>, message: impl Into<String>) -> Self {
        TaskFailure {
            kind: kind.into(),
            message: message.into(),
            causes: Vec::new(),
            retry: None,
        }
    }

    /// Asks for a retry after the task's policy delay; once `max_retries`
    /// is used up the task fails with this error.
    pub fn retry(mut self) -> Self {
        self.retry = Some(RetryAt::Policy);
        self
    }

    /// Asks for a retry after `countdown`.
    pub fn retry_in(mut self, countdown: std::time::Duration) -> Self {
        self.retry = Some(RetryAt::In(countdown));
        self
    }

    /// Asks for a retry at `eta`.
    pub fn retry_at(mut self, eta: chrono::DateTime<chrono::Utc>) -> Self {
        self.retry = Some(RetryAt::At(eta));
        self
    }

    /// The causes as traceback text: one `caused by: ...` line each.
    pub fn traceback(&self) -> Option<String> {
        (!self.causes.is_empty()).then(|| {
            self.causes
                .iter()
                .map(|c| format!("caused by: {c}"))
                .collect::<Vec<_>>()
                .join("\n")
        })
    }
}

impl<E: std::error::Error + 'static> From<E> for TaskFailure {
    fn from(err: E) -> Self {
        let mut causes = Vec::new();
        let mut source = err.source();
        while let Some(s) = source {
            causes.push(s.to_string());
            source = s.source();
        }
        TaskFailure {
            kind: short_type_name::<E>().to_owned(),
            message: err.to_string(),
            causes,
            retry: None,
        }
    }
}

/// `std::io::Error` from `std::io::error::Error`, `MyError` from `app::MyError<T>`.
fn short_type_name<E>() -> &'static str {
    let full = std::any::type_name::<E>();
    let base = full.split('<').next().unwrap_or(full);
    base.rsplit("::").next().unwrap_or(base)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer failed")]
    struct Outer(#[source] std::num::ParseIntError);

    #[test]
    fn errors_keep_kind_message_and_causes() {
        let inner = "x".parse::<i32>().expect_err("not a number");
        let f = TaskFailure::from(Outer(inner));
        assert_eq!(f.kind, "Outer");
        assert_eq!(f.message, "outer failed");
        assert_eq!(f.causes, vec!["invalid digit found in string".to_owned()]);
        assert_eq!(
            f.traceback().as_deref(),
            Some("caused by: invalid digit found in string")
        );
    }
}

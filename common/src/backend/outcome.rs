//! What a worker records for a task ([`TaskOutcome`]) and what a reader gets
//! back ([`TaskRecord`]).

use super::BackendError;
use super::entity::{self, ActiveModel, ID_LEN, NAME_LEN, WORKER_ID_LEN};
use crate::state::TaskState;
use chrono::{DateTime, Utc};
use sea_orm::ActiveValue::Set;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Why a task failed, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskError {
    /// The error's type, e.g. `TimeoutError`, `panic`, `NotRegistered`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The error's message.
    pub message: String,
    /// The chain of causes (and panic location), one per line.
    pub traceback: Option<String>,
}

/// The outcome (or progress) of one task, as a worker records it.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskOutcome {
    /// Task id.
    pub task_id: String,
    /// Task name.
    pub task_name: String,
    /// The state to record.
    pub state: TaskState,
    /// The result value (on SUCCESS).
    pub result: Option<Value>,
    /// The error (on FAILURE, RETRY, REVOKED).
    pub error: Option<TaskError>,
    /// Positional arguments, when `store_args` is on.
    pub args: Option<Value>,
    /// Keyword arguments, when `store_args` is on.
    pub kwargs: Option<Value>,
    /// The worker's hostname.
    pub worker: Option<String>,
    /// The worker process's id (its heartbeat row in `celeriac_workers`).
    pub worker_id: Option<String>,
    /// The `retries` header.
    pub retries: u32,
    /// The queue it came from.
    pub queue: Option<String>,
    /// Parent task id.
    pub parent_id: Option<String>,
    /// Root task id.
    pub root_id: Option<String>,
    /// Group id.
    pub group_id: Option<String>,
    /// Its position in the group (the `group_index` header).
    pub group_index: Option<u32>,
    /// Progress or custom metadata.
    pub meta: Option<Value>,
    /// When it started running.
    pub started_at: Option<DateTime<Utc>>,
    /// When it finished.
    pub done_at: Option<DateTime<Utc>>,
    /// Recorded only where the task has no final outcome yet: a row made
    /// up for a task that did not run (a chain step not run after a
    /// failure, a step that cannot be sent), which must not overwrite what
    /// the task itself stored if a copy of it ran after all.
    pub unless_ready: bool,
}

impl TaskOutcome {
    /// An outcome with only the identifying fields set.
    pub fn new(task_id: impl Into<String>, task_name: impl Into<String>, state: TaskState) -> Self {
        TaskOutcome {
            task_id: task_id.into(),
            task_name: task_name.into(),
            state,
            result: None,
            error: None,
            args: None,
            kwargs: None,
            worker: None,
            worker_id: None,
            retries: 0,
            queue: None,
            parent_id: None,
            root_id: None,
            group_id: None,
            group_index: None,
            meta: None,
            started_at: None,
            done_at: None,
            unless_ready: false,
        }
    }

    pub(super) fn into_active(self, now: DateTime<Utc>) -> ActiveModel {
        let text = |v: Option<Value>| v.map(|v| v.to_string());
        let (error_type, error_message, traceback) = match self.error {
            Some(e) => (Some(e.kind), Some(e.message), e.traceback),
            None => (None, None, None),
        };
        // Strings go in as they fit their columns: a value the database
        // refuses would hold the whole batch (and its acks) back for ever.
        let fit_opt = |v: Option<String>, max| v.map(|v| fit(v, max));
        ActiveModel {
            task_id: Set(self.task_id),
            task_name: Set(Some(fit(self.task_name, NAME_LEN))),
            state: Set(self.state.as_str().to_owned()),
            result: Set(text(self.result)),
            content_type: Set(crate::protocol::CONTENT_TYPE_JSON.to_owned()),
            error_type: Set(fit_opt(error_type, NAME_LEN)),
            error_message: Set(error_message.map(without_nul)),
            traceback: Set(traceback.map(without_nul)),
            args: Set(text(self.args)),
            kwargs: Set(text(self.kwargs)),
            worker: Set(fit_opt(self.worker, NAME_LEN)),
            worker_id: Set(fit_opt(self.worker_id, WORKER_ID_LEN)),
            retries: Set(i32::try_from(self.retries).unwrap_or(i32::MAX)),
            queue: Set(fit_opt(self.queue, NAME_LEN)),
            parent_id: Set(fit_opt(self.parent_id, ID_LEN)),
            root_id: Set(fit_opt(self.root_id, ID_LEN)),
            group_id: Set(fit_opt(self.group_id, ID_LEN)),
            group_index: Set(self
                .group_index
                .map(|i| i32::try_from(i).unwrap_or(i32::MAX))),
            meta: Set(text(self.meta)),
            created_at: Set(now),
            started_at: Set(self.started_at),
            done_at: Set(self.done_at),
        }
    }
}

/// A task's record as read back from the backend.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskRecord {
    /// Task id.
    pub task_id: String,
    /// Task name, if known.
    pub task_name: Option<String>,
    /// Current state.
    pub state: TaskState,
    /// The result value, on SUCCESS.
    pub result: Option<Value>,
    /// The error, on FAILURE / REVOKED.
    pub error: Option<TaskError>,
    /// Stored positional arguments.
    pub args: Option<Value>,
    /// Stored keyword arguments.
    pub kwargs: Option<Value>,
    /// Hostname of the worker that recorded it.
    pub worker: Option<String>,
    /// Retry count.
    pub retries: u32,
    /// Queue.
    pub queue: Option<String>,
    /// Parent task id.
    pub parent_id: Option<String>,
    /// Root task id.
    pub root_id: Option<String>,
    /// Group id.
    pub group_id: Option<String>,
    /// Its position in the group, when recorded (rows written before
    /// migration m0007 have none).
    pub group_index: Option<u32>,
    /// Progress or custom metadata.
    pub meta: Option<Value>,
    /// When the row was first written.
    pub created_at: DateTime<Utc>,
    /// When it started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it finished.
    pub done_at: Option<DateTime<Utc>>,
}

impl TryFrom<entity::Model> for TaskRecord {
    type Error = BackendError;
    fn try_from(m: entity::Model) -> Result<Self, BackendError> {
        let id = m.task_id.clone();
        let corrupt = |reason: String| BackendError::Corrupt {
            task_id: id.clone(),
            reason,
        };
        let json = |t: Option<String>, what: &str| -> Result<Option<Value>, BackendError> {
            t.map(|t| serde_json::from_str(&t).map_err(|e| corrupt(format!("{what}: {e}"))))
                .transpose()
        };
        let error = m.error_type.map(|kind| TaskError {
            kind,
            message: m.error_message.unwrap_or_default(),
            traceback: m.traceback,
        });
        Ok(TaskRecord {
            state: m
                .state
                .parse()
                .map_err(|e: crate::state::UnknownState| corrupt(e.to_string()))?,
            result: json(m.result, "result")?,
            args: json(m.args, "args")?,
            kwargs: json(m.kwargs, "kwargs")?,
            meta: json(m.meta, "meta")?,
            error,
            task_name: m.task_name,
            worker: m.worker,
            retries: u32::try_from(m.retries).unwrap_or(0),
            queue: m.queue,
            parent_id: m.parent_id,
            root_id: m.root_id,
            group_id: m.group_id,
            group_index: m.group_index.and_then(|i| u32::try_from(i).ok()),
            created_at: m.created_at,
            started_at: m.started_at,
            done_at: m.done_at,
            task_id: m.task_id,
        })
    }
}
/// `s` without NUL characters (PostgreSQL refuses them in text).
fn without_nul(s: String) -> String {
    if s.contains('\0') {
        s.replace('\0', "")
    } else {
        s
    }
}

/// `s` without NUL characters and cut to `max` characters (a column's
/// length, which PostgreSQL and MySQL count in characters).
fn fit(s: String, max: u32) -> String {
    let s = without_nul(s);
    match s.char_indices().nth(max as usize) {
        Some((end, _)) => s[..end].to_owned(),
        None => s,
    }
}

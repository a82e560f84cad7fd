//! Task states, named as Celery names them.
//!
//! ```text
//! PENDING ─► RECEIVED ─► STARTED ─┬─► SUCCESS
//!                       (PROGRESS)│
//!                                 ├─► FAILURE
//!                                 ├─► RETRY ─► (RECEIVED ...)
//!                                 └─► REVOKED
//! ```
//! `PENDING` is never stored: it is what an unknown id reports.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The state of one task id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum TaskState {
    /// Unknown to the backend: not sent, not yet received, or forgotten.
    Pending,
    /// A worker has the message.
    Received,
    /// A worker started running it (recorded when `track_started` is on).
    Started,
    /// Running, and it reported progress (`TaskContext::progress`): Celery's
    /// custom-state form, the result holding `{"done", "total", ...meta}`.
    Progress,
    /// Finished and returned a value.
    Success,
    /// Finished with an error, or could not run (unknown task, bad arguments).
    Failure,
    /// Failed and was re-published to run again.
    Retry,
    /// Revoked or expired before it ran.
    Revoked,
    /// Rejected to the dead-letter queue.
    Rejected,
}

impl TaskState {
    /// The state's name as stored and as Celery spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Pending => "PENDING",
            TaskState::Received => "RECEIVED",
            TaskState::Started => "STARTED",
            TaskState::Progress => "PROGRESS",
            TaskState::Success => "SUCCESS",
            TaskState::Failure => "FAILURE",
            TaskState::Retry => "RETRY",
            TaskState::Revoked => "REVOKED",
            TaskState::Rejected => "REJECTED",
        }
    }

    /// The final states: once a task is in one, no further transition
    /// happens (Celery's `READY_STATES`).
    pub const READY: [TaskState; 4] = [
        TaskState::Success,
        TaskState::Failure,
        TaskState::Revoked,
        TaskState::Rejected,
    ];

    /// The stored names of the [`TaskState::READY`] states, for queries
    /// over the `state` column.
    pub fn ready_names() -> [&'static str; 4] {
        Self::READY.map(TaskState::as_str)
    }

    /// Whether no further transition will happen (one of [`TaskState::READY`]).
    pub fn is_ready(self) -> bool {
        Self::READY.contains(&self)
    }
}

impl fmt::Display for TaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A stored state name that celeriac does not know.
#[derive(Debug, thiserror::Error)]
#[error("unknown task state {0:?}")]
pub struct UnknownState(pub String);

impl FromStr for TaskState {
    type Err = UnknownState;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "PENDING" => TaskState::Pending,
            "RECEIVED" => TaskState::Received,
            "STARTED" => TaskState::Started,
            "PROGRESS" => TaskState::Progress,
            "SUCCESS" => TaskState::Success,
            "FAILURE" => TaskState::Failure,
            "RETRY" => TaskState::Retry,
            "REVOKED" => TaskState::Revoked,
            "REJECTED" => TaskState::Rejected,
            other => return Err(UnknownState(other.to_owned())),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_states_and_their_names() {
        assert_eq!(
            TaskState::ready_names(),
            ["SUCCESS", "FAILURE", "REVOKED", "REJECTED"]
        );
        for name in TaskState::ready_names() {
            let state: TaskState = name.parse().expect("known state");
            assert!(state.is_ready(), "{state}");
        }
        for state in [
            TaskState::Pending,
            TaskState::Received,
            TaskState::Started,
            TaskState::Progress,
            TaskState::Retry,
        ] {
            assert!(!state.is_ready(), "{state}");
        }
    }
}

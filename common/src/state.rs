//! Task states, named as Celery names them.
//!
//! ```text
//! PENDING ─► RECEIVED ─► STARTED ─┬─► SUCCESS
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
            TaskState::Success => "SUCCESS",
            TaskState::Failure => "FAILURE",
            TaskState::Retry => "RETRY",
            TaskState::Revoked => "REVOKED",
            TaskState::Rejected => "REJECTED",
        }
    }

    /// Whether no further transition will happen.
    pub fn is_ready(self) -> bool {
        matches!(
            self,
            TaskState::Success | TaskState::Failure | TaskState::Revoked | TaskState::Rejected
        )
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
            "SUCCESS" => TaskState::Success,
            "FAILURE" => TaskState::Failure,
            "RETRY" => TaskState::Retry,
            "REVOKED" => TaskState::Revoked,
            "REJECTED" => TaskState::Rejected,
            other => return Err(UnknownState(other.to_owned())),
        })
    }
}

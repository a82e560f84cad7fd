//! `AsyncResult`: a handle on a task's outcome in the result backend.

use crate::client::{Client, ClientError};
use celeriac_common::TaskState;
use celeriac_common::backend::{TaskError, TaskRecord};
use serde::de::DeserializeOwned;
use std::marker::PhantomData;
use std::time::Duration;
use tokio::time::Instant;

/// Why `get` did not produce a value.
#[derive(Debug, thiserror::Error)]
pub enum ResultError {
    /// The task failed; its recorded error.
    #[error("task {task_id} failed: {}: {}", error.kind, error.message)]
    Failed {
        /// The task.
        task_id: String,
        /// What it failed with.
        error: TaskError,
    },
    /// The task was revoked or expired.
    #[error("task {task_id} was {state}")]
    NotRun {
        /// The task.
        task_id: String,
        /// REVOKED or REJECTED.
        state: TaskState,
    },
    /// No outcome within the timeout.
    #[error("no result for task {task_id} within {waited:?} (state {state})")]
    Timeout {
        /// The task.
        task_id: String,
        /// How long `get` waited.
        waited: Duration,
        /// The state when it gave up.
        state: TaskState,
    },
    /// The stored result does not have the expected type.
    #[error("result of task {task_id} does not match the expected type: {source}")]
    Decode {
        /// The task.
        task_id: String,
        /// The JSON error.
        source: serde_json::Error,
    },
    /// The backend could not be read.
    #[error(transparent)]
    Client(#[from] ClientError),
}

/// The first poll comes after this long; each next one waits 1.5× longer.
const POLL_START: Duration = Duration::from_millis(5);
/// Polls are never further apart than this.
const POLL_MAX: Duration = Duration::from_millis(500);

/// A task's id plus a way to read its outcome. `R` is the task's output type
/// (`serde_json::Value` for untyped calls).
pub struct AsyncResult<R> {
    client: Client,
    id: String,
    _output: PhantomData<fn() -> R>,
}

impl<R> std::fmt::Debug for AsyncResult<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncResult").field("id", &self.id).finish()
    }
}

impl<R> Clone for AsyncResult<R> {
    fn clone(&self) -> Self {
        AsyncResult {
            client: self.client.clone(),
            id: self.id.clone(),
            _output: PhantomData,
        }
    }
}

impl<R: DeserializeOwned> AsyncResult<R> {
    pub(crate) fn new(client: Client, id: String) -> Self {
        AsyncResult {
            client,
            id,
            _output: PhantomData,
        }
    }

    /// The task id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The stored record, or `None` while PENDING. With `rpc://`, the
    /// latest state a worker sent to this client's reply queue.
    pub async fn record(&self) -> Result<Option<TaskRecord>, ClientError> {
        if let Some(rpc) = self.client.rpc() {
            return Ok(rpc.get(&self.id));
        }
        Ok(self.client.backend().await?.get(&self.id).await?)
    }

    /// The current state (PENDING when nothing is recorded).
    pub async fn state(&self) -> Result<TaskState, ClientError> {
        Ok(self.record().await?.map_or(TaskState::Pending, |r| r.state))
    }

    /// Waits up to `timeout` for a final state and returns the value, polling
    /// the backend with a growing interval (5 ms up to 500 ms); with
    /// `rpc://`, woken by each reply.
    pub async fn get(&self, timeout: Duration) -> Result<R, ResultError> {
        let record = self.wait(timeout).await?;
        match record.state {
            TaskState::Success => {
                let value = record.result.unwrap_or(serde_json::Value::Null);
                serde_json::from_value(value).map_err(|source| ResultError::Decode {
                    task_id: self.id.clone(),
                    source,
                })
            }
            TaskState::Failure => Err(ResultError::Failed {
                task_id: self.id.clone(),
                error: record.error.unwrap_or_else(|| TaskError {
                    kind: "Unknown".into(),
                    message: "no error recorded".into(),
                    traceback: None,
                }),
            }),
            state => Err(ResultError::NotRun {
                task_id: self.id.clone(),
                state,
            }),
        }
    }

    /// Waits up to `timeout` for a final state and returns the whole record.
    /// The reads count: a database that does not answer (a held lock, a
    /// silent host) ends the wait at `timeout` too, or after a second for a
    /// shorter one, so that even a zero timeout gets one read. (Connecting
    /// on a client's first use is bounded by the connect timeouts.)
    pub async fn wait(&self, timeout: Duration) -> Result<TaskRecord, ResultError> {
        let started = Instant::now();
        let mut interval = POLL_START;
        let mut state = TaskState::Pending;
        if self.client.rpc().is_none() {
            // Connected (and migrated) once, outside the timed reads.
            self.client.backend().await?;
        }
        loop {
            let allowed = timeout
                .saturating_sub(started.elapsed())
                .max(Duration::from_secs(1));
            let Ok(record) = tokio::time::timeout(allowed, self.record()).await else {
                return Err(ResultError::Timeout {
                    task_id: self.id.clone(),
                    waited: started.elapsed(),
                    state,
                });
            };
            let record = record?;
            state = record.as_ref().map_or(TaskState::Pending, |r| r.state);
            if let Some(r) = record.filter(|r| r.state.is_ready()) {
                return Ok(r);
            }
            let left = timeout.saturating_sub(started.elapsed());
            if left.is_zero() {
                return Err(ResultError::Timeout {
                    task_id: self.id.clone(),
                    waited: started.elapsed(),
                    state,
                });
            }
            match self.client.rpc() {
                // Woken by the next reply (or the timeout).
                Some(rpc) => {
                    rpc.changed(left, |r| {
                        r.get(&self.id).is_some_and(|r| r.state.is_ready())
                    })
                    .await
                }
                None => {
                    tokio::time::sleep(interval.min(left)).await;
                    interval = interval.mul_f32(1.5).min(POLL_MAX);
                }
            }
        }
    }

    /// Deletes the stored result; returns whether there was one. With
    /// `rpc://`, drops the state held in memory.
    pub async fn forget(&self) -> Result<bool, ClientError> {
        if let Some(rpc) = self.client.rpc() {
            return Ok(rpc.forget(&self.id));
        }
        Ok(self.client.backend().await?.forget(&self.id).await?)
    }
}

//! A sent workflow's results: [`WorkflowResult`] (a task's or a group's,
//! with the chain's earlier steps as parents) and [`GroupResult`].

use super::plan::ResultNode;
use crate::client::{Client, ClientError};
use crate::result::{AsyncResult, ResultError};
use celeriac_common::TaskState;
use celeriac_common::backend::{TaskError, TaskRecord};
use serde_json::Value;
use std::time::Duration;
use tokio::time::Instant;

/// The first poll of a group comes after this long; each next one waits 1.5× longer.
const POLL_START: Duration = Duration::from_millis(10);
/// Polls are never further apart than this.
const POLL_MAX: Duration = Duration::from_millis(500);

/// The result of a sent workflow: a task's (a chain's last step, a chord's
/// callback) or a group's. [`WorkflowResult::parent`] walks back through a
/// chain (to a chord's header, for a chord's callback).
#[derive(Debug, Clone)]
pub enum WorkflowResult {
    /// A task's result.
    Task {
        /// The task.
        result: AsyncResult<Value>,
        /// The step before it.
        parent: Option<Box<WorkflowResult>>,
    },
    /// A group's results.
    Group(GroupResult),
}

/// A group's results, in the order of its members. Counts and `get` read
/// every member in one query.
#[derive(Debug, Clone)]
pub struct GroupResult {
    client: Client,
    id: String,
    members: Vec<WorkflowResult>,
    parent: Option<Box<WorkflowResult>>,
}

/// How many members of a group are where.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GroupCounts {
    /// Members.
    pub total: usize,
    /// In a final state (SUCCESS, FAILURE, REVOKED, REJECTED).
    pub finished: usize,
    /// SUCCESS.
    pub succeeded: usize,
    /// FAILURE, REVOKED or REJECTED.
    pub failed: usize,
}

impl WorkflowResult {
    pub(crate) fn new(client: Client, node: ResultNode) -> WorkflowResult {
        match node {
            ResultNode::Task { id, parent } => WorkflowResult::Task {
                result: client.async_result(id),
                parent: parent.map(|p| Box::new(WorkflowResult::new(client, *p))),
            },
            ResultNode::Group {
                id,
                members,
                parent,
            } => WorkflowResult::Group(GroupResult {
                members: members
                    .into_iter()
                    .map(|m| WorkflowResult::new(client.clone(), m))
                    .collect(),
                parent: parent.map(|p| Box::new(WorkflowResult::new(client.clone(), *p))),
                client,
                id,
            }),
        }
    }

    /// The task id, or the group id.
    pub fn id(&self) -> &str {
        match self {
            WorkflowResult::Task { result, .. } => result.id(),
            WorkflowResult::Group(g) => &g.id,
        }
    }

    /// The previous step of the chain this result ends, if any (for a
    /// chord's callback: the header's [`GroupResult`]).
    pub fn parent(&self) -> Option<&WorkflowResult> {
        match self {
            WorkflowResult::Task { parent, .. } => parent.as_deref(),
            WorkflowResult::Group(g) => g.parent.as_deref(),
        }
    }

    /// The task's handle, if this is a task's result.
    pub fn as_task(&self) -> Option<&AsyncResult<Value>> {
        match self {
            WorkflowResult::Task { result, .. } => Some(result),
            WorkflowResult::Group(_) => None,
        }
    }

    /// The group, if this is a group's result.
    pub fn as_group(&self) -> Option<&GroupResult> {
        match self {
            WorkflowResult::Group(g) => Some(g),
            WorkflowResult::Task { .. } => None,
        }
    }

    /// Waits up to `timeout` for the value: a task's result, or a group's
    /// results as a JSON list in member order.
    pub async fn get(&self, timeout: Duration) -> Result<Value, ResultError> {
        // Boxed: the backend's futures nest deep enough that the release
        // build's layout computation hits rustc's query depth limit otherwise.
        match self {
            WorkflowResult::Task { result, .. } => Box::pin(result.get(timeout)).await,
            WorkflowResult::Group(g) => Box::pin(g.get(timeout)).await.map(Value::Array),
        }
    }

    /// The ids whose outcome this result is: a task's id, a group's
    /// members' (recursively), in order.
    fn leaf_ids(&self, out: &mut Vec<String>) {
        match self {
            WorkflowResult::Task { result, .. } => out.push(result.id().to_owned()),
            WorkflowResult::Group(g) => g.members.iter().for_each(|m| m.leaf_ids(out)),
        }
    }
}

impl GroupResult {
    /// The group id (each member's `group` header and `group_id` column).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The step before the group in a chain (a chord's header: the step
    /// before the chord), if any.
    pub fn parent(&self) -> Option<&WorkflowResult> {
        self.parent.as_deref()
    }

    /// The members' results, in order.
    pub fn results(&self) -> &[WorkflowResult] {
        &self.members
    }

    /// The members' task ids, in order (a nested group's members in its place).
    pub fn ids(&self) -> Vec<String> {
        let mut ids = Vec::with_capacity(self.members.len());
        self.members.iter().for_each(|m| m.leaf_ids(&mut ids));
        ids
    }

    async fn records(&self) -> Result<Vec<Option<TaskRecord>>, ClientError> {
        let backend = self.client.backend().await?;
        Ok(backend.get_many(&self.ids()).await?)
    }

    /// How many members finished, succeeded and failed (one query).
    pub async fn counts(&self) -> Result<GroupCounts, ClientError> {
        let records = self.records().await?;
        let mut c = GroupCounts {
            total: records.len(),
            ..GroupCounts::default()
        };
        for state in records.iter().flatten().map(|r| r.state) {
            if state.is_ready() {
                c.finished += 1;
                if state == TaskState::Success {
                    c.succeeded += 1;
                } else {
                    c.failed += 1;
                }
            }
        }
        Ok(c)
    }

    /// Whether every member finished.
    pub async fn ready(&self) -> Result<bool, ClientError> {
        let c = self.counts().await?;
        Ok(c.finished == c.total)
    }

    /// Waits up to `timeout` for every member to finish (polling the
    /// backend, one query per poll, 10 ms growing to 500 ms apart) and
    /// returns their values in order, or the first failed member's error.
    pub async fn get(&self, timeout: Duration) -> Result<Vec<Value>, ResultError> {
        let records = self.wait(timeout).await?;
        records
            .into_iter()
            .map(|r| match r.state {
                TaskState::Success => Ok(r.result.unwrap_or(Value::Null)),
                TaskState::Failure => Err(ResultError::Failed {
                    error: r.error.unwrap_or_else(|| TaskError {
                        kind: "Unknown".into(),
                        message: "no error recorded".into(),
                        traceback: None,
                    }),
                    task_id: r.task_id,
                }),
                state => Err(ResultError::NotRun {
                    task_id: r.task_id,
                    state,
                }),
            })
            .collect()
    }

    /// Waits up to `timeout` for every member's final record.
    pub async fn wait(&self, timeout: Duration) -> Result<Vec<TaskRecord>, ResultError> {
        let started = Instant::now();
        let mut interval = POLL_START;
        let ids = self.ids();
        loop {
            let backend = self.client.backend().await?;
            let records = backend
                .get_many(&ids)
                .await
                .map_err(|e| ResultError::Client(e.into()))?;
            let pending = records
                .iter()
                .position(|r| !r.as_ref().is_some_and(|r| r.state.is_ready()));
            let Some(pending) = pending else {
                return Ok(records.into_iter().flatten().collect());
            };
            let left = timeout.saturating_sub(started.elapsed());
            if left.is_zero() {
                return Err(ResultError::Timeout {
                    task_id: ids[pending].clone(),
                    waited: started.elapsed(),
                    state: records[pending]
                        .as_ref()
                        .map_or(TaskState::Pending, |r| r.state),
                });
            }
            tokio::time::sleep(interval.min(left)).await;
            interval = interval.mul_f32(1.5).min(POLL_MAX);
        }
    }
}

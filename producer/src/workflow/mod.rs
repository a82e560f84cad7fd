//! A workflow read back from the result backend, as a tree: what
//! `celeriac workflow ID` prints and `celeriac result ID` adds.
//!
//! Nothing is stored for the tree itself: it is rebuilt from what the
//! workers record for every task (`root_id`, `parent_id`, `group_id`,
//! `group_index`) and from the chord table (size, count, callback id). One
//! indexed query reads every row with the workflow's `root_id`, one reads
//! the chords among their groups (by primary key); see
//! `docs/workflows.md`, "Inspecting a workflow".
//!
//! The tree is a list of [`Sequence`]s: steps that ran one after another
//! (a chain; a chord's callback is the step after its header). A task with
//! several followers (links, or a chain step and links) ends its sequence
//! with [`TaskNode::branches`]; a group's members are sequences of their own.
//!
//! ```no_run
//! # async fn run(backend: celeriac::backend::ResultBackend) -> Result<(), celeriac::backend::BackendError> {
//! if let Some(tree) = celeriac::workflow::load(&backend, "a-task-id").await? {
//!     print!("{}", tree.render(celeriac::workflow::RenderOptions::default()));
//! }
//! # Ok(()) }
//! ```

mod build;
mod render;

use celeriac_common::TaskState;
use celeriac_common::backend::{BackendError, ResultBackend, TaskRecord};
use serde::Serialize;
use std::collections::BTreeSet;

pub use render::RenderOptions;

/// Steps that ran one after another.
pub type Sequence = Vec<Node>;

/// A workflow as stored: every task and group reachable from its root.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkflowTree {
    /// The id that was asked for (a task's or a group's).
    pub asked: String,
    /// The workflow's root task id.
    pub root_id: String,
    /// The top-level sequences (one, unless the stored rows are incomplete).
    pub steps: Vec<Sequence>,
    /// Tasks in the tree, by state name.
    pub counts: std::collections::BTreeMap<String, usize>,
    /// Whether the workflow has more rows than one read returns
    /// ([`celeriac_common::backend::workflow::WORKFLOW_ROWS_MAX`]).
    pub truncated: bool,
}

/// One step of a sequence.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Node {
    /// A task.
    Task(TaskNode),
    /// A group, or a chord's header.
    Group(GroupNode),
}

/// A task and its state.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskNode {
    /// Task id.
    pub id: String,
    /// Task name, if known.
    pub name: Option<String>,
    /// PENDING when it has no row yet.
    pub state: TaskState,
    /// Its place in its group, if it is a member.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group_index: Option<u32>,
    /// `Kind: message` (first line) when it failed or was revoked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Whether it is a chord's callback.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub callback: bool,
    /// What follows it when more than one thing does (each a sequence).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub branches: Vec<Sequence>,
}

/// A group (or a chord's header) and its members.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupNode {
    /// The group id.
    pub id: String,
    /// The chord it is the header of, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chord: Option<ChordInfo>,
    /// Members known so far (those with a row), by `group_index`.
    pub members: Vec<Sequence>,
    /// The members' states.
    pub counts: GroupCounts,
}

/// The chord a group is the header of.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChordInfo {
    /// Members that must finish.
    pub size: u64,
    /// Distinct members finished.
    pub done: u64,
    /// PENDING, COMPLETE or FAILED.
    pub state: &'static str,
    /// The callback's task id.
    pub callback_id: String,
}

/// How a group's members stand.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct GroupCounts {
    /// Members (a chord's size, or the members seen).
    pub total: usize,
    /// Members in a final state.
    pub finished: usize,
    /// Members that succeeded.
    pub succeeded: usize,
    /// Members that failed (FAILURE, REVOKED, REJECTED).
    pub failed: usize,
}

/// The workflow `id` (a task id or a group id) belongs to, or `None` when
/// the backend has no row for it (PENDING, or unknown). Every query is
/// indexed: the task's row (primary key), the rows of its workflow
/// (`root_id`), a group's rows (`group_id`), the chords (primary key).
pub async fn load(backend: &ResultBackend, id: &str) -> Result<Option<WorkflowTree>, BackendError> {
    let root = match backend.get(id).await? {
        Some(row) => row.root_id.unwrap_or_else(|| id.to_owned()),
        None => match backend.group_rows(id).await?.into_iter().next() {
            Some(member) => member.root_id.unwrap_or(member.task_id),
            None => return Ok(None),
        },
    };
    let mut rows = backend.workflow_rows(&root).await?;
    let truncated = rows.len() as u64 >= celeriac_common::backend::workflow::WORKFLOW_ROWS_MAX;
    let groups: Vec<String> = rows
        .iter()
        .filter_map(|r| r.group_id.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let chords = backend.chords(&groups).await?;
    // A callback sent with another root id (a chord applied by a worker
    // for a client that gave none): read it by its id.
    let known: BTreeSet<&str> = rows.iter().map(|r| r.task_id.as_str()).collect();
    let missing: Vec<String> = chords
        .iter()
        .map(|c| c.callback_id.clone())
        .filter(|c| !known.contains(c.as_str()))
        .collect();
    let extra: Vec<TaskRecord> = backend
        .get_many(&missing)
        .await?
        .into_iter()
        .flatten()
        .collect();
    rows.extend(extra);
    let mut tree = build::build(id, &root, rows, &chords);
    tree.truncated = truncated;
    Ok(Some(tree))
}

impl WorkflowTree {
    /// Whether it is more than one task (a chain, group, chord, or a task
    /// with links).
    pub fn is_workflow(&self) -> bool {
        match self.steps.as_slice() {
            [only] => match only.as_slice() {
                [Node::Task(t)] => !t.branches.is_empty(),
                _ => true,
            },
            _ => true,
        }
    }
}

/// Whether `state` counts as failed in a group's counts.
fn is_failed(state: TaskState) -> bool {
    matches!(
        state,
        TaskState::Failure | TaskState::Revoked | TaskState::Rejected
    )
}

#[cfg(test)]
mod tests;

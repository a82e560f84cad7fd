//! Reading a workflow back from its rows: every task of one workflow (same
//! `root_id`), every member of one group (same `group_id`), and the chords
//! among them. Each query uses an index (the primary keys, and the
//! `root_id` / `group_id` indexes of migration m0007), never a full scan;
//! the `celeriac` crate builds the tree from what they return.

use super::entity::{Column, Entity};
use super::{BackendError, ResultBackend, TaskRecord};
use crate::backend::chord::ChordRecord;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

/// Most rows one workflow read returns (a fan-out of 100,000 is read in
/// full; beyond that the tree says it is cut).
pub const WORKFLOW_ROWS_MAX: u64 = 200_000;

/// Most group ids in one chord lookup.
const IDS_PER_QUERY: usize = 1_000;

impl ResultBackend {
    /// Every row whose `root_id` is `root_id`, plus the root's own row
    /// (which Celery's clients may store without a `root_id`), at most
    /// [`WORKFLOW_ROWS_MAX`], ordered by task id.
    pub async fn workflow_rows(&self, root_id: &str) -> Result<Vec<TaskRecord>, BackendError> {
        let mut rows = self.rows_where(Column::RootId, root_id).await?;
        if !rows.iter().any(|r| r.task_id == root_id)
            && let Some(root) = self.get(root_id).await?
        {
            rows.push(root);
        }
        Ok(rows)
    }

    /// The rows of a group's members (same `group_id`), at most
    /// [`WORKFLOW_ROWS_MAX`].
    pub async fn group_rows(&self, group_id: &str) -> Result<Vec<TaskRecord>, BackendError> {
        self.rows_where(Column::GroupId, group_id).await
    }

    /// The rows whose `column` is `value`, at most [`WORKFLOW_ROWS_MAX`],
    /// ordered by task id.
    async fn rows_where(
        &self,
        column: Column,
        value: &str,
    ) -> Result<Vec<TaskRecord>, BackendError> {
        Entity::find()
            .filter(column.eq(value))
            .order_by_asc(Column::TaskId)
            .limit(WORKFLOW_ROWS_MAX)
            .all(self.connection())
            .await?
            .into_iter()
            .map(TaskRecord::try_from)
            .collect()
    }

    /// The chords recorded under any of `group_ids` (by primary key).
    pub async fn chords(&self, group_ids: &[String]) -> Result<Vec<ChordRecord>, BackendError> {
        let mut out = Vec::new();
        for chunk in group_ids.chunks(IDS_PER_QUERY) {
            out.extend(self.chords_in(chunk).await?);
        }
        Ok(out)
    }
}

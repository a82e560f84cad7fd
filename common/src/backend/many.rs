//! Reading many tasks' records in one query (a group's members).

use super::entity::{Column, Entity};
use super::{BackendError, ResultBackend, TaskRecord};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use std::collections::HashMap;

/// Most ids in one `IN (...)` list (SQLite's default limit on bound
/// parameters is 32,766; MySQL and PostgreSQL take 65,535).
const IDS_PER_QUERY: usize = 1_000;

impl ResultBackend {
    /// The records of `ids`, in the order given, `None` for an id with no
    /// row (PENDING). One query per thousand ids.
    pub async fn get_many(&self, ids: &[String]) -> Result<Vec<Option<TaskRecord>>, BackendError> {
        let mut found = HashMap::with_capacity(ids.len());
        for chunk in ids.chunks(IDS_PER_QUERY) {
            let rows = Entity::find()
                .filter(Column::TaskId.is_in(chunk.iter().cloned()))
                .all(self.connection())
                .await?;
            for row in rows {
                found.insert(row.task_id.clone(), TaskRecord::try_from(row)?);
            }
        }
        Ok(ids.iter().map(|id| found.get(id).cloned()).collect())
    }
}

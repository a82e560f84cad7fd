//! Indexes for searching and listing tasks newest first (the dashboard's
//! task search, workflow trees and overview), so that each query reads an
//! index range, never the whole table:
//!
//! | index | serves |
//! | --- | --- |
//! | `(created_at, task_id)` | every task, newest first, a page after a key |
//! | `(task_name, created_at, task_id)` | by name |
//! | `(state, created_at, task_id)` | by state |
//! | `(worker, created_at, task_id)` | by worker host name |
//! | `(parent_id)` | a task's children (`root_id` and `group_id` have theirs from m0008) |
//!
//! On a large existing table, building them takes a while (about 10 s per
//! index per million rows on PostgreSQL) and holds writes back meanwhile:
//! run `celeriac migrate` at a quiet time.

use sea_orm::DbErr;
use sea_orm_migration::prelude::*;

/// The indexes: name and columns.
const INDEXES: [(&str, &[&str]); 5] = [
    ("idx_taskmeta_created", &["created_at", "task_id"]),
    (
        "idx_taskmeta_name_created",
        &["task_name", "created_at", "task_id"],
    ),
    (
        "idx_taskmeta_state_created",
        &["state", "created_at", "task_id"],
    ),
    (
        "idx_taskmeta_worker_created",
        &["worker", "created_at", "task_id"],
    ),
    ("idx_taskmeta_parent", &["parent_id"]),
];

pub(super) struct CreateSearchIndexes;

impl MigrationName for CreateSearchIndexes {
    fn name(&self) -> &str {
        "m0009_taskmeta_search_indexes"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateSearchIndexes {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for (name, columns) in INDEXES {
            let mut index = Index::create();
            index
                .name(name)
                .table(super::entity::Entity)
                .if_not_exists();
            for column in columns {
                index.col(Alias::new(*column));
            }
            match manager.create_index(index).await {
                // MySQL has no CREATE INDEX IF NOT EXISTS: a re-run finds it there.
                Err(e) if e.to_string().contains("Duplicate key name") => {}
                other => other?,
            }
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for (name, _) in INDEXES {
            let drop = Index::drop()
                .name(name)
                .table(super::entity::Entity)
                .to_owned();
            manager.drop_index(drop).await?;
        }
        Ok(())
    }
}

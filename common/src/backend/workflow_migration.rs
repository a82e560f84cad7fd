//! The migration that lets a workflow be read back from its rows:
//! `celeriac_taskmeta.group_index` (a member's place in its group) and
//! indexes on `root_id` and `group_id`, so the rows of one workflow or one
//! group are found without a full scan (see [`super::workflow`]); and
//! `celeriac_chord_members.result`, so a chord's callback reads its
//! arguments from the member rows alone.

use sea_orm::{ConnectionTrait, DbErr};
use sea_orm_migration::prelude::*;

/// Adds `group_index`, the `root_id` / `group_id` indexes and the chord
/// members' `result`.
pub(super) struct WorkflowIndexes;

impl MigrationName for WorkflowIndexes {
    fn name(&self) -> &str {
        "m0008_workflow_indexes"
    }
}

/// The indexes made, by name and column.
const INDEXES: [(&str, &str); 2] = [
    ("idx_celeriac_taskmeta_root_id", "root_id"),
    ("idx_celeriac_taskmeta_group_id", "group_id"),
];

#[async_trait::async_trait]
impl MigrationTrait for WorkflowIndexes {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        // A database made by m0001 since the column joined the entity has it.
        if !manager
            .has_column("celeriac_taskmeta", "group_index")
            .await?
        {
            manager
                .alter_table(
                    Table::alter()
                        .table("celeriac_taskmeta")
                        .add_column(ColumnDef::new("group_index").integer().null())
                        .to_owned(),
                )
                .await?;
        }
        if !manager
            .has_column("celeriac_chord_members", "result")
            .await?
        {
            manager
                .alter_table(
                    Table::alter()
                        .table("celeriac_chord_members")
                        .add_column(ColumnDef::new("result").text().null())
                        .to_owned(),
                )
                .await?;
        }
        if db.get_database_backend() == sea_orm::DbBackend::MySql {
            // TEXT holds 64 KB there.
            db.execute_unprepared("ALTER TABLE celeriac_chord_members MODIFY result LONGTEXT NULL")
                .await?;
        }
        for (name, column) in INDEXES {
            let index = Index::create()
                .name(name)
                .table("celeriac_taskmeta")
                .col(column)
                .if_not_exists()
                .to_owned();
            match db.execute(&index).await {
                // MySQL has no CREATE INDEX IF NOT EXISTS: a re-run finds it there.
                Err(e) if e.to_string().contains("Duplicate key name") => {}
                other => {
                    other?;
                }
            }
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for (name, _) in INDEXES {
            manager
                .drop_index(
                    Index::drop()
                        .name(name)
                        .table("celeriac_taskmeta")
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}

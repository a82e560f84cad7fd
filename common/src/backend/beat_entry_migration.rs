//! The migration that gives beat's database entries a workflow and tags
//! (`celeriac_beat_entries.workflow`, `.tags`; see [`super::beat::entry`]).

use sea_orm::{ConnectionTrait, DbErr};
use sea_orm_migration::prelude::*;

/// Adds `workflow` and `tags` to `celeriac_beat_entries`.
pub(super) struct BeatEntryWorkflowTags;

impl MigrationName for BeatEntryWorkflowTags {
    fn name(&self) -> &str {
        "m0007_beat_entry_workflow_tags"
    }
}

const TABLE: &str = "celeriac_beat_entries";

#[async_trait::async_trait]
impl MigrationTrait for BeatEntryWorkflowTags {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // A database made by m0002 since the columns joined the entity has them already.
        for column in ["workflow", "tags"] {
            if !manager.has_column(TABLE, column).await? {
                manager
                    .alter_table(
                        Table::alter()
                            .table(Alias::new(TABLE))
                            .add_column(ColumnDef::new(Alias::new(column)).text().null())
                            .to_owned(),
                    )
                    .await?;
            }
        }
        let db = manager.get_connection();
        if db.get_database_backend() == sea_orm::DbBackend::MySql {
            // A fan-out of thousands of tasks is larger than TEXT's 64 KB.
            db.execute_unprepared(&format!(
                "ALTER TABLE {TABLE} MODIFY workflow LONGTEXT NULL"
            ))
            .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in ["workflow", "tags"] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Alias::new(TABLE))
                        .drop_column(Alias::new(column))
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}

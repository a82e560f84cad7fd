//! The migration that adds `celeriac_chord_parts` (see
//! `backend::chord::parts`): a chord's members' results, a row per report.

use sea_orm::{ConnectionTrait, DbErr};
use sea_orm_migration::prelude::*;

/// Creates `celeriac_chord_parts`.
pub(super) struct CreateChordParts;

impl MigrationName for CreateChordParts {
    fn name(&self) -> &str {
        "m0010_create_chord_parts"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateChordParts {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("celeriac_chord_parts")
                    .if_not_exists()
                    .col(ColumnDef::new("group_id").string_len(191).not_null())
                    .col(ColumnDef::new("part").string_len(191).not_null())
                    .col(ColumnDef::new("body").text().not_null())
                    .primary_key(Index::create().col("group_id").col("part"))
                    .to_owned(),
            )
            .await?;
        let db = manager.get_connection();
        if db.get_database_backend() == sea_orm::DbBackend::MySql {
            // TEXT holds 64 KB there (no part is written on MySQL today).
            db.execute_unprepared("ALTER TABLE celeriac_chord_parts MODIFY body LONGTEXT NOT NULL")
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table("celeriac_chord_parts").to_owned())
            .await
    }
}

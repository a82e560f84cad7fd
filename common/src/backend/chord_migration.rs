//! The migration that creates the chord tables (`celeriac_chords`,
//! `celeriac_chord_members`; see [`super::chord`]).

use sea_orm::{ConnectionTrait, DbErr, Schema};
use sea_orm_migration::prelude::*;

/// Creates `celeriac_chords` and `celeriac_chord_members`.
pub(super) struct CreateChords;

impl MigrationName for CreateChords {
    fn name(&self) -> &str {
        "m0005_create_chords"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateChords {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use super::chord::{chord_entity, member_entity};
        let db = manager.get_connection();
        let schema = Schema::new(db.get_database_backend());
        let tables = [
            schema.create_table_from_entity(chord_entity::Entity),
            schema.create_table_from_entity(member_entity::Entity),
        ];
        for mut table in tables {
            db.execute(&*table.if_not_exists()).await?;
        }
        if db.get_database_backend() == sea_orm::DbBackend::MySql {
            // Microsecond times (as the other tables), and a body signature
            // larger than TEXT's 64 KB.
            db.execute_unprepared(
                "ALTER TABLE celeriac_chords MODIFY callback LONGTEXT NOT NULL, \
                 MODIFY fired_at DATETIME(6) NULL, MODIFY callback_sent_at DATETIME(6) NULL, \
                 MODIFY created_at DATETIME(6) NOT NULL",
            )
            .await?;
            db.execute_unprepared(
                "ALTER TABLE celeriac_chord_members MODIFY done_at DATETIME(6) NOT NULL",
            )
            .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use super::chord::{chord_entity, member_entity};
        manager
            .drop_table(Table::drop().table(member_entity::Entity).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(chord_entity::Entity).to_owned())
            .await
    }
}

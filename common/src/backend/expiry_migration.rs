//! The migration that lets expired chords be found without a scan: an
//! index on `celeriac_chords.callback_sent_at` (see [`super::expiry`]).

use sea_orm::{ConnectionTrait, DbErr};
use sea_orm_migration::prelude::*;

/// Adds the index.
pub(super) struct ChordExpiryIndex;

impl MigrationName for ChordExpiryIndex {
    fn name(&self) -> &str {
        "m0011_chord_expiry_index"
    }
}

const NAME: &str = "idx_celeriac_chords_callback_sent_at";

#[async_trait::async_trait]
impl MigrationTrait for ChordExpiryIndex {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let index = Index::create()
            .name(NAME)
            .table("celeriac_chords")
            .col("callback_sent_at")
            .if_not_exists()
            .to_owned();
        match manager.get_connection().execute(&index).await {
            // MySQL has no CREATE INDEX IF NOT EXISTS: a re-run finds it there.
            Err(e) if e.to_string().contains("Duplicate key name") => Ok(()),
            other => other.map(|_| ()),
        }
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(Index::drop().name(NAME).table("celeriac_chords").to_owned())
            .await
    }
}

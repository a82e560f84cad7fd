//! Schema migrations for every table celeriac uses (results and beat).

use sea_orm::{ConnectionTrait, DbErr, Schema};
use sea_orm_migration::prelude::*;

/// All of celeriac's migrations, in order.
pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(CreateTaskMeta),
            Box::new(CreateBeatTables),
            Box::new(CreateWorkers),
            Box::new(LongTextOnMysql),
            Box::new(super::chord_migration::CreateChords),
            Box::new(CreateBeatCalendars),
            Box::new(super::beat_entry_migration::BeatEntryWorkflowTags),
            Box::new(super::workflow_migration::WorkflowIndexes),
            Box::new(super::search_migration::CreateSearchIndexes),
            Box::new(super::chord_parts_migration::CreateChordParts),
            Box::new(super::expiry_migration::ChordExpiryIndex),
        ]
    }

    fn migration_table_name() -> sea_orm::DynIden {
        "celeriac_migrations".into_iden()
    }
}

/// Applies the pending migrations and logs one line saying how many
/// (nothing when none was pending). sea-orm-migration's own lines, a few
/// per migration, are left out of the default log filter
/// (`telemetry::init`); `RUST_LOG=sea_orm_migration=info` shows them.
pub(crate) async fn apply(db: &sea_orm::DatabaseConnection) -> Result<(), DbErr> {
    let pending: Vec<String> = Migrator::get_pending_migrations(db)
        .await?
        .iter()
        .map(|m| m.name().to_owned())
        .collect();
    Migrator::up(db, None).await?;
    if !pending.is_empty() {
        tracing::info!(
            migrations = %pending.join(","),
            "result backend: applied {} migrations",
            pending.len()
        );
    }
    Ok(())
}

struct CreateTaskMeta;

impl MigrationName for CreateTaskMeta {
    fn name(&self) -> &str {
        "m0001_create_taskmeta"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateTaskMeta {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        let schema = Schema::new(db.get_database_backend());
        let mut table = schema.create_table_from_entity(super::entity::Entity);
        db.execute(&*table.if_not_exists()).await?;
        for mut index in schema.create_index_from_entity(super::entity::Entity) {
            db.execute(&*index.if_not_exists()).await?;
        }
        if db.get_database_backend() == sea_orm::DbBackend::MySql {
            // MySQL's TIMESTAMP keeps whole seconds and ends in 2038; keep
            // microseconds (stored as UTC) instead.
            db.execute_unprepared(
                "ALTER TABLE celeriac_taskmeta MODIFY created_at DATETIME(6) NOT NULL, \
                 MODIFY started_at DATETIME(6) NULL, MODIFY done_at DATETIME(6) NULL",
            )
            .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(super::entity::Entity).to_owned())
            .await
    }
}

struct CreateBeatTables;

impl MigrationName for CreateBeatTables {
    fn name(&self) -> &str {
        "m0002_create_beat_tables"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateBeatTables {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use super::beat::{entry, lease, meta, state};
        let db = manager.get_connection();
        let schema = Schema::new(db.get_database_backend());
        let tables = [
            schema.create_table_from_entity(entry::Entity),
            schema.create_table_from_entity(state::Entity),
            schema.create_table_from_entity(lease::Entity),
            schema.create_table_from_entity(meta::Entity),
        ];
        for mut table in tables {
            db.execute(&*table.if_not_exists()).await?;
        }
        let indexes = [
            schema.create_index_from_entity(entry::Entity),
            schema.create_index_from_entity(state::Entity),
        ];
        for mut index in indexes.into_iter().flatten() {
            match db.execute(&*index.if_not_exists()).await {
                // MySQL has no CREATE INDEX IF NOT EXISTS: a re-run finds it there.
                Err(e) if e.to_string().contains("Duplicate key name") => {}
                other => {
                    other?;
                }
            }
        }
        // The schedule version row, which every schedule change bumps.
        let mut version = Query::insert();
        version
            .into_table(meta::Entity)
            .columns([meta::Column::Id, meta::Column::Version])
            .values([1.into(), 0i64.into()])
            .map_err(|e| DbErr::Custom(e.to_string()))?
            .on_conflict(
                OnConflict::column(meta::Column::Id)
                    .do_nothing_on([meta::Column::Id])
                    .to_owned(),
            );
        db.execute(&version).await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use super::beat::{entry, lease, meta, state};
        manager
            .drop_table(Table::drop().table(meta::Entity).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(lease::Entity).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(state::Entity).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(entry::Entity).to_owned())
            .await
    }
}

/// Worker heartbeats (`celeriac_workers`) and `celeriac_taskmeta.worker_id`,
/// the worker process that started a task.
struct CreateWorkers;

impl MigrationName for CreateWorkers {
    fn name(&self) -> &str {
        "m0003_create_workers"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateWorkers {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use super::workers::entity;
        let db = manager.get_connection();
        let schema = Schema::new(db.get_database_backend());
        db.execute(
            &*schema
                .create_table_from_entity(entity::Entity)
                .if_not_exists(),
        )
        .await?;
        for mut index in schema.create_index_from_entity(entity::Entity) {
            match db.execute(&*index.if_not_exists()).await {
                // MySQL has no CREATE INDEX IF NOT EXISTS: a re-run finds it there.
                Err(e) if e.to_string().contains("Duplicate key name") => {}
                other => {
                    other?;
                }
            }
        }
        if db.get_database_backend() == sea_orm::DbBackend::MySql {
            db.execute_unprepared(
                "ALTER TABLE celeriac_workers MODIFY started_at DATETIME(6) NOT NULL",
            )
            .await?;
        }
        // A database made by m0001 since the column joined the entity has it already.
        if !manager.has_column("celeriac_taskmeta", "worker_id").await? {
            manager
                .alter_table(
                    Table::alter()
                        .table(super::entity::Entity)
                        .add_column(ColumnDef::new("worker_id").string_len(64).null())
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(
                Table::drop()
                    .table(super::workers::entity::Entity)
                    .to_owned(),
            )
            .await
    }
}

/// MySQL's TEXT holds 64 KB: a larger result, traceback or argument list
/// would be refused (and its outcome could never be stored). LONGTEXT there;
/// PostgreSQL's and SQLite's text has no such limit.
struct LongTextOnMysql;

impl MigrationName for LongTextOnMysql {
    fn name(&self) -> &str {
        "m0004_long_text_on_mysql"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for LongTextOnMysql {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        if db.get_database_backend() == sea_orm::DbBackend::MySql {
            db.execute_unprepared(
                "ALTER TABLE celeriac_taskmeta MODIFY result LONGTEXT NULL, \
                 MODIFY error_message LONGTEXT NULL, MODIFY traceback LONGTEXT NULL, \
                 MODIFY args LONGTEXT NULL, MODIFY kwargs LONGTEXT NULL, MODIFY meta LONGTEXT NULL",
            )
            .await?;
        }
        Ok(())
    }

    async fn down(&self, _manager: &SchemaManager) -> Result<(), DbErr> {
        Ok(())
    }
}

/// Beat's exclusion calendars (`celeriac_beat_calendars`).
struct CreateBeatCalendars;

impl MigrationName for CreateBeatCalendars {
    fn name(&self) -> &str {
        "m0006_create_beat_calendars"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateBeatCalendars {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use super::beat::calendar;
        let db = manager.get_connection();
        let schema = Schema::new(db.get_database_backend());
        db.execute(
            &*schema
                .create_table_from_entity(calendar::Entity)
                .if_not_exists(),
        )
        .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(
                Table::drop()
                    .table(super::beat::calendar::Entity)
                    .to_owned(),
            )
            .await
    }
}

//! Schema migrations for every table celeriac uses (results and beat).

use sea_orm::{ConnectionTrait, DbErr, Schema};
use sea_orm_migration::prelude::*;

/// All of celeriac's migrations, in order.
pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(CreateTaskMeta)]
    }

    fn migration_table_name() -> sea_orm::DynIden {
        "celeriac_migrations".into_iden()
    }
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
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(super::entity::Entity).to_owned())
            .await
    }
}

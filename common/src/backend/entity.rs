//! The `celeriac_taskmeta` table: one row per task id.

use sea_orm::entity::prelude::*;

/// One task's record. JSON values are stored as text with `content_type`
/// saying how to read them, as django-celery-results does.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "celeriac_taskmeta")]
#[allow(missing_docs)]
pub struct Model {
    #[sea_orm(
        primary_key,
        auto_increment = false,
        column_type = "String(StringLen::N(191))"
    )]
    pub task_id: String,
    #[sea_orm(column_type = "String(StringLen::N(255))", nullable)]
    pub task_name: Option<String>,
    #[sea_orm(column_type = "String(StringLen::N(16))", indexed)]
    pub state: String,
    #[sea_orm(column_type = "Text", nullable)]
    pub result: Option<String>,
    #[sea_orm(column_type = "String(StringLen::N(64))")]
    pub content_type: String,
    #[sea_orm(column_type = "String(StringLen::N(255))", nullable)]
    pub error_type: Option<String>,
    #[sea_orm(column_type = "Text", nullable)]
    pub error_message: Option<String>,
    #[sea_orm(column_type = "Text", nullable)]
    pub traceback: Option<String>,
    #[sea_orm(column_type = "Text", nullable)]
    pub args: Option<String>,
    #[sea_orm(column_type = "Text", nullable)]
    pub kwargs: Option<String>,
    #[sea_orm(column_type = "String(StringLen::N(255))", nullable)]
    pub worker: Option<String>,
    /// The id of the worker process that recorded it (see `backend::workers`).
    #[sea_orm(column_type = "String(StringLen::N(64))", nullable)]
    pub worker_id: Option<String>,
    pub retries: i32,
    #[sea_orm(column_type = "String(StringLen::N(255))", nullable)]
    pub queue: Option<String>,
    #[sea_orm(column_type = "String(StringLen::N(191))", nullable)]
    pub parent_id: Option<String>,
    #[sea_orm(column_type = "String(StringLen::N(191))", nullable)]
    pub root_id: Option<String>,
    #[sea_orm(column_type = "String(StringLen::N(191))", nullable)]
    pub group_id: Option<String>,
    #[sea_orm(column_type = "Text", nullable)]
    pub meta: Option<String>,
    pub created_at: DateTimeUtc,
    #[sea_orm(nullable)]
    pub started_at: Option<DateTimeUtc>,
    #[sea_orm(nullable, indexed)]
    pub done_at: Option<DateTimeUtc>,
}

/// No relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

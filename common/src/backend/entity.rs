//! The `celeriac_taskmeta` table: one row per task id.

use sea_orm::entity::prelude::*;

/// Longest task id (and parent, root and group id) a row holds: 191
/// characters, the longest a utf8mb4 key MySQL can index (767 bytes).
pub const ID_LEN: u32 = 191;
/// Longest task name, error type, worker hostname or queue name a row holds.
pub const NAME_LEN: u32 = 255;
/// Longest state name (`RECEIVED`, `REJECTED`, ...).
pub const STATE_LEN: u32 = 16;
/// Longest content type (`application/json`).
pub const CONTENT_TYPE_LEN: u32 = 64;
/// Longest worker process id (see `backend::workers`).
pub const WORKER_ID_LEN: u32 = 64;

/// One task's record. JSON values are stored as text with `content_type`
/// saying how to read them, as django-celery-results does.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "celeriac_taskmeta")]
#[allow(missing_docs)]
pub struct Model {
    #[sea_orm(
        primary_key,
        auto_increment = false,
        column_type = "String(StringLen::N(ID_LEN))"
    )]
    pub task_id: String,
    #[sea_orm(column_type = "String(StringLen::N(NAME_LEN))", nullable)]
    pub task_name: Option<String>,
    #[sea_orm(column_type = "String(StringLen::N(STATE_LEN))", indexed)]
    pub state: String,
    #[sea_orm(column_type = "Text", nullable)]
    pub result: Option<String>,
    #[sea_orm(column_type = "String(StringLen::N(CONTENT_TYPE_LEN))")]
    pub content_type: String,
    #[sea_orm(column_type = "String(StringLen::N(NAME_LEN))", nullable)]
    pub error_type: Option<String>,
    #[sea_orm(column_type = "Text", nullable)]
    pub error_message: Option<String>,
    #[sea_orm(column_type = "Text", nullable)]
    pub traceback: Option<String>,
    #[sea_orm(column_type = "Text", nullable)]
    pub args: Option<String>,
    #[sea_orm(column_type = "Text", nullable)]
    pub kwargs: Option<String>,
    #[sea_orm(column_type = "String(StringLen::N(NAME_LEN))", nullable)]
    pub worker: Option<String>,
    /// The id of the worker process that recorded it (see `backend::workers`).
    #[sea_orm(column_type = "String(StringLen::N(WORKER_ID_LEN))", nullable)]
    pub worker_id: Option<String>,
    pub retries: i32,
    #[sea_orm(column_type = "String(StringLen::N(NAME_LEN))", nullable)]
    pub queue: Option<String>,
    #[sea_orm(column_type = "String(StringLen::N(ID_LEN))", nullable)]
    pub parent_id: Option<String>,
    #[sea_orm(column_type = "String(StringLen::N(ID_LEN))", nullable)]
    pub root_id: Option<String>,
    #[sea_orm(column_type = "String(StringLen::N(ID_LEN))", nullable)]
    pub group_id: Option<String>,
    /// The task's position in its group (the `group_index` header).
    #[sea_orm(nullable)]
    pub group_index: Option<i32>,
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

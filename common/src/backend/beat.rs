//! Beat's tables (created by migrations `m0002_create_beat_tables` and
//! `m0006_create_beat_calendars`; `m0007_beat_entry_workflow_tags` adds an
//! entry's workflow and tags).
//!
//! | table | one row per | written by |
//! | --- | --- | --- |
//! | `celeriac_beat_entries` | database schedule entry (removed ones kept as tombstones) | `celeriac-beat schedule ...` |
//! | `celeriac_beat_state` | entry with run state (file and database entries) | the leading beat; `run_now_at` by the CLI |
//! | `celeriac_beat_lease` | leader lease (one row, `name = "default"`) | every beat |
//! | `celeriac_beat_meta` | the schedule version (one row, `id = 1`) | `celeriac-beat schedule ...` and `calendar ...` |
//! | `celeriac_beat_calendars` | excluded date or date range of an exclusion calendar | `celeriac-beat calendar ...` |
//!
//! Instants are RFC 3339 text in UTC (`2024-05-01T09:00:00Z`, exact to the
//! nanosecond, the same on every database); the lease keeps milliseconds
//! since the Unix epoch on the database's own clock.

/// `celeriac_beat_entries`: the dynamic schedule. Every change sets
/// `revision` to the new schedule version, so a running beat reads only
/// what changed since the version it last saw.
pub mod entry {
    use sea_orm::entity::prelude::*;

    /// One database entry.
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "celeriac_beat_entries")]
    #[allow(missing_docs)]
    pub struct Model {
        #[sea_orm(
            primary_key,
            auto_increment = false,
            column_type = "String(StringLen::N(191))"
        )]
        pub name: String,
        #[sea_orm(column_type = "String(StringLen::N(255))")]
        pub task: String,
        /// Positional arguments, a JSON array.
        #[sea_orm(column_type = "Text")]
        pub args: String,
        /// Keyword arguments, a JSON object.
        #[sea_orm(column_type = "Text")]
        pub kwargs: String,
        /// The trigger, JSON with a `"type"` tag.
        #[sea_orm(column_type = "Text")]
        pub trigger: String,
        /// Message options (queue, exchange, routing key, priority, expires), JSON.
        #[sea_orm(column_type = "Text")]
        pub options: String,
        /// The workflow sent instead of `task` (Celery's canvas dict form,
        /// JSON), or null for a single task.
        #[sea_orm(column_type = "Text", nullable)]
        pub workflow: Option<String>,
        /// Tags, a JSON array of strings; null for none.
        #[sea_orm(column_type = "Text", nullable)]
        pub tags: Option<String>,
        /// Seconds; null = the configured default; negative = unlimited.
        #[sea_orm(nullable)]
        pub misfire_grace_secs: Option<f64>,
        /// Null = the configured default.
        #[sea_orm(nullable)]
        pub coalesce: Option<bool>,
        /// Null = the configured default; 0 = unlimited.
        #[sea_orm(nullable)]
        pub max_instances: Option<i32>,
        pub enabled: bool,
        /// A removed entry, kept so that running beats notice the removal.
        pub deleted: bool,
        /// Interval anchor (RFC 3339): creation time, or when the trigger last changed.
        #[sea_orm(column_type = "String(StringLen::N(40))")]
        pub anchor_at: String,
        #[sea_orm(indexed)]
        pub revision: i64,
        #[sea_orm(column_type = "String(StringLen::N(40))")]
        pub created_at: String,
        #[sea_orm(column_type = "String(StringLen::N(40))")]
        pub updated_at: String,
    }

    /// No relations.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `celeriac_beat_state`: run state of every entry the leader has seen.
pub mod state {
    use sea_orm::entity::prelude::*;

    /// One entry's run state.
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "celeriac_beat_state")]
    #[allow(missing_docs)]
    pub struct Model {
        #[sea_orm(
            primary_key,
            auto_increment = false,
            column_type = "String(StringLen::N(191))"
        )]
        pub name: String,
        /// The last scheduled fire time decided (sent, missed, coalesced or held).
        #[sea_orm(column_type = "String(StringLen::N(40))", nullable)]
        pub cursor_at: Option<String>,
        /// A fire time being sent: set before publishing, cleared after the confirm.
        #[sea_orm(column_type = "String(StringLen::N(40))", nullable)]
        pub sending_at: Option<String>,
        /// Scheduled fire time of the last run sent.
        #[sea_orm(column_type = "String(StringLen::N(40))", nullable)]
        pub last_run_at: Option<String>,
        /// When the last run was sent (wall clock).
        #[sea_orm(column_type = "String(StringLen::N(40))", nullable)]
        pub last_sent_at: Option<String>,
        #[sea_orm(column_type = "String(StringLen::N(191))", nullable)]
        pub last_task_id: Option<String>,
        /// The next fire time as of the last write (for listings).
        #[sea_orm(column_type = "String(StringLen::N(40))", nullable)]
        pub next_run_at: Option<String>,
        pub total_runs: i64,
        /// Fire times of recent runs (JSON array), for `max_instances`.
        #[sea_orm(column_type = "Text", nullable)]
        pub recent: Option<String>,
        /// A `schedule run-now` request not yet served.
        #[sea_orm(column_type = "String(StringLen::N(40))", nullable, indexed)]
        pub run_now_at: Option<String>,
        #[sea_orm(column_type = "String(StringLen::N(40))")]
        pub updated_at: String,
    }

    /// No relations.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `celeriac_beat_lease`: who leads. Taken with a conditional update
/// (`WHERE holder = me OR expires_at_ms < now`); `token` grows by one each
/// time the holder changes and fences every state write.
pub mod lease {
    use sea_orm::entity::prelude::*;

    /// The lease row.
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "celeriac_beat_lease")]
    #[allow(missing_docs)]
    pub struct Model {
        #[sea_orm(
            primary_key,
            auto_increment = false,
            column_type = "String(StringLen::N(64))"
        )]
        pub name: String,
        #[sea_orm(column_type = "String(StringLen::N(255))")]
        pub holder: String,
        pub token: i64,
        pub expires_at_ms: i64,
        pub acquired_at_ms: i64,
        pub renewed_at_ms: i64,
    }

    /// No relations.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// The name of the leader lease's row that every beat shares.
pub const LEASE_NAME: &str = "default";

impl super::ResultBackend {
    /// Who holds the leader lease `name`, if it is held (not expired on the
    /// database's clock), and how many milliseconds ago it was renewed.
    pub async fn lease_holder(
        &self,
        name: &str,
    ) -> Result<Option<(String, i64)>, super::BackendError> {
        use sea_orm::ConnectionTrait;
        use sea_orm::sea_query::{Alias, Expr, ExprTrait, Query};
        let db = self.connection();
        let now = super::db_clock_ms(db.get_database_backend());
        let query = Query::select()
            .column(lease::Column::Holder)
            .expr_as(
                Expr::cust(now).sub(Expr::col(lease::Column::RenewedAtMs)),
                Alias::new("age_ms"),
            )
            .from(lease::Entity)
            .and_where(Expr::col(lease::Column::Name).eq(name))
            .and_where(Expr::col(lease::Column::ExpiresAtMs).gt(Expr::cust(now)))
            .to_owned();
        match db.query_one(&query).await? {
            Some(row) => Ok(Some((
                row.try_get("", "holder")?,
                row.try_get("", "age_ms")?,
            ))),
            None => Ok(None),
        }
    }
}

/// `celeriac_beat_meta`: one row holding the schedule version, bumped in
/// the same transaction as every schedule change.
pub mod meta {
    use sea_orm::entity::prelude::*;

    /// The version row (`id = 1`).
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "celeriac_beat_meta")]
    #[allow(missing_docs)]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: i32,
        pub version: i64,
    }

    /// No relations.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `celeriac_beat_calendars`: exclusion calendars, one row per excluded
/// date or inclusive date range (`YYYY-MM-DD` local dates, no times). A
/// calendar exists while it has rows; every change bumps the schedule version.
pub mod calendar {
    use sea_orm::entity::prelude::*;

    /// One excluded date or date range.
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "celeriac_beat_calendars")]
    #[allow(missing_docs)]
    pub struct Model {
        /// The calendar's name.
        #[sea_orm(
            primary_key,
            auto_increment = false,
            column_type = "String(StringLen::N(191))"
        )]
        pub name: String,
        /// First excluded date, `YYYY-MM-DD`.
        #[sea_orm(
            primary_key,
            auto_increment = false,
            column_type = "String(StringLen::N(10))"
        )]
        pub date_from: String,
        /// Last excluded date (inclusive), `YYYY-MM-DD`.
        #[sea_orm(
            primary_key,
            auto_increment = false,
            column_type = "String(StringLen::N(10))"
        )]
        pub date_to: String,
        /// What the date is, e.g. `Christmas Day`.
        #[sea_orm(column_type = "String(StringLen::N(255))", nullable)]
        pub label: Option<String>,
        #[sea_orm(column_type = "String(StringLen::N(40))")]
        pub created_at: String,
    }

    /// No relations.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

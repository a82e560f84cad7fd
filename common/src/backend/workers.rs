//! Worker heartbeats and the recovery of tasks left STARTED by a worker
//! that died.
//!
//! Every worker process has a row in `celeriac_workers`, keyed by an id of
//! its own (host names are not unique: several workers on one host share
//! the default `celeriac@<host>`). It renews the row every
//! `worker_heartbeat_secs`, setting `expires_at_ms` to three intervals
//! ahead on the database's clock, and deletes it at a clean shutdown. A
//! task's STARTED row names the worker id that runs it (`worker_id`).
//!
//! [`ResultBackend::recover_lost_tasks`], run by every worker every few
//! heartbeats, moves STARTED rows whose worker has no live row (expired or
//! gone) to RETRY with a `WorkerLostError`: RETRY is not final, so
//! `AsyncResult::get` keeps waiting, and the message, unacknowledged by
//! the dead worker, runs again when the broker redelivers it (overwriting
//! the row), or is dead-lettered (FAILURE `PoisonMessage`). The update is
//! conditional (`state = 'STARTED'` and the worker still not alive), so a
//! row that moved on meanwhile is left alone.

use super::entity::{Column as TaskColumn, Entity as TaskEntity};
use super::{BackendError, ResultBackend, TaskOutcome};
use crate::state::TaskState;
use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict, Query};
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter, QuerySelect, Value,
};
use std::time::Duration;

/// `celeriac_workers`: one row per running worker process.
pub mod entity {
    use crate::backend::entity::{NAME_LEN, WORKER_ID_LEN};
    use sea_orm::entity::prelude::*;

    /// A worker's heartbeat row.
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "celeriac_workers")]
    #[allow(missing_docs)]
    pub struct Model {
        #[sea_orm(
            primary_key,
            auto_increment = false,
            column_type = "String(StringLen::N(WORKER_ID_LEN))"
        )]
        pub id: String,
        #[sea_orm(column_type = "String(StringLen::N(NAME_LEN))")]
        pub hostname: String,
        pub pid: i64,
        pub started_at: DateTimeUtc,
        /// The last heartbeat, milliseconds since the epoch (database clock).
        pub heartbeat_at_ms: i64,
        /// Considered gone after this (database clock).
        #[sea_orm(indexed)]
        pub expires_at_ms: i64,
    }

    /// No relations.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

use entity::{Column, Entity};

/// Heartbeats missed before a worker counts as gone.
pub const MISSED_HEARTBEATS: u32 = 3;

/// The error type recorded on a task whose worker died (Celery's name).
pub const WORKER_LOST: &str = "WorkerLostError";

/// Who a worker process is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerInfo {
    /// Unique per process (a UUID).
    pub id: String,
    /// The configured host name (`celeriac@<host>`).
    pub hostname: String,
    /// The process id.
    pub pid: u32,
    /// When it started.
    pub started_at: DateTime<Utc>,
}

impl WorkerInfo {
    /// This process, under `hostname`, with a fresh id.
    pub fn this_process(hostname: &str) -> WorkerInfo {
        WorkerInfo {
            id: uuid::Uuid::new_v4().simple().to_string(),
            hostname: hostname.to_owned(),
            pid: std::process::id(),
            started_at: Utc::now(),
        }
    }
}

/// A task moved from STARTED to RETRY because its worker is gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LostTask {
    /// The task id.
    pub task_id: String,
    /// The worker id that had started it.
    pub worker_id: String,
}

/// What [`ResultBackend::claim_run`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The row is this worker's now (STARTED, its worker id): run it.
    Taken,
    /// The row is final (the task ran already), or this copy is stale:
    /// its attempt already retried, or a later attempt has the row.
    Done,
    /// Another copy runs: a live worker (this id) holds the row.
    Held(String),
}

/// The ids of the workers alive at `now` (an SQL expression of the
/// database's clock, in milliseconds).
fn alive_workers(now: &'static str) -> sea_orm::sea_query::SelectStatement {
    Query::select()
        .column(Column::Id)
        .from(Entity)
        .and_where(Expr::col(Column::ExpiresAtMs).gt(Expr::cust(now)))
        .to_owned()
}

/// How long dead workers' rows are kept (for operators) before deletion.
const KEEP_GONE_MS: i64 = 3_600_000;

impl ResultBackend {
    /// Writes this worker's heartbeat: alive for `MISSED_HEARTBEATS ×
    /// interval` from now (database clock). Creates the row if missing.
    pub async fn worker_heartbeat(
        &self,
        worker: &WorkerInfo,
        interval: Duration,
    ) -> Result<(), BackendError> {
        let db = self.connection();
        let now = super::db_clock_ms(db.get_database_backend());
        let ttl = i64::try_from(
            interval
                .as_millis()
                .saturating_mul(MISSED_HEARTBEATS.into()),
        )
        .unwrap_or(i64::MAX / 4);
        let expires = || Expr::cust(format!("{now} + {ttl}"));
        let mut insert = Query::insert();
        insert
            .into_table(Entity)
            .columns([
                Column::Id,
                Column::Hostname,
                Column::Pid,
                Column::StartedAt,
                Column::HeartbeatAtMs,
                Column::ExpiresAtMs,
            ])
            .values([
                worker.id.clone().into(),
                worker.hostname.clone().into(),
                i64::from(worker.pid).into(),
                worker.started_at.into(),
                Expr::cust(now),
                expires(),
            ])
            .map_err(|e| BackendError::Query(sea_orm::DbErr::Custom(e.to_string())))?
            .on_conflict(
                OnConflict::column(Column::Id)
                    .value(Column::HeartbeatAtMs, Expr::cust(now))
                    .value(Column::ExpiresAtMs, expires())
                    .to_owned(),
            );
        db.execute(&insert).await?;
        Ok(())
    }

    /// Takes the row of the task `started` (STARTED, with this worker's
    /// id and attempt) before it runs, so that two copies of one task id
    /// never run at once (a chord callback published twice after a crash,
    /// a beat run sent by two beats). Taken when there is no row, or its
    /// row is not final, not at a later attempt, and free:
    /// - STARTED or PROGRESS under no live worker but this one (a row under
    ///   this worker's own id is taken again: the caller knows whether a
    ///   copy of its own still holds it, as after a claim whose answer it
    ///   never got);
    /// - RETRY given back (no worker), left by a lost worker
    ///   (`WorkerLostError`), or an earlier attempt's (this copy is its
    ///   retry).
    ///
    /// Otherwise `Held` by a live worker running this attempt or an
    /// earlier one, or `Done`: final, or this copy is stale (its attempt
    /// already retried, or a later attempt has the row). One conditional
    /// statement decides, so of two workers claiming at once one takes it.
    /// A worker whose own heartbeat is not live (others may count it gone,
    /// and take its rows) takes nothing: `Held` by itself.
    pub async fn claim_run(&self, started: TaskOutcome) -> Result<Claim, BackendError> {
        let db = self.connection();
        let backend = db.get_database_backend();
        let now = super::db_clock_ms(backend);
        let id = started.task_id.clone();
        let me = started.worker_id.clone().unwrap_or_default();
        let alive = || alive_workers(now);
        let live = Entity::find()
            .filter(Column::Id.eq(me.as_str()))
            .filter(Expr::col(Column::ExpiresAtMs).gt(Expr::cust(now)))
            .count(db)
            .await?;
        if live == 0 {
            return Ok(Claim::Held(me));
        }
        let (worker, at, retries) = (started.worker.clone(), started.started_at, started.retries);
        let mut row = started.into_active(Utc::now());
        row.done_at = sea_orm::ActiveValue::NotSet;
        if Self::insert_new(db, row).await? {
            return Ok(Claim::Taken);
        }
        use sea_orm::Condition;
        let attempt = i32::try_from(retries).unwrap_or(i32::MAX);
        let running = [TaskState::Started.as_str(), TaskState::Progress.as_str()];
        let retry = TaskState::Retry.as_str();
        let free = Condition::any()
            .add(
                Condition::all().add(TaskColumn::State.is_in(running)).add(
                    Condition::any()
                        .add(TaskColumn::WorkerId.is_null())
                        .add(TaskColumn::WorkerId.eq(me.as_str()))
                        .add(TaskColumn::WorkerId.not_in_subquery(alive())),
                ),
            )
            .add(
                Condition::all().add(TaskColumn::State.eq(retry)).add(
                    Condition::any()
                        .add(TaskColumn::WorkerId.is_null())
                        .add(TaskColumn::ErrorType.eq(WORKER_LOST))
                        .add(TaskColumn::Retries.lt(attempt)),
                ),
            )
            .add(TaskColumn::State.is_not_in([running[0], running[1], retry]));
        let none = || Expr::value(Value::String(None));
        let taken = TaskEntity::update_many()
            .col_expr(TaskColumn::State, Expr::value(TaskState::Started.as_str()))
            .col_expr(TaskColumn::Worker, Expr::value(worker))
            .col_expr(TaskColumn::WorkerId, Expr::value(me.as_str()))
            .col_expr(TaskColumn::StartedAt, Expr::value(at))
            // This attempt's, so its RETRY is stored (never a later one's:
            // see the filter).
            .col_expr(TaskColumn::Retries, Expr::value(attempt))
            .col_expr(TaskColumn::ErrorType, none())
            .col_expr(TaskColumn::ErrorMessage, none())
            .col_expr(TaskColumn::Traceback, none())
            .filter(TaskColumn::TaskId.eq(id.as_str()))
            .filter(TaskColumn::State.is_not_in(TaskState::ready_names()))
            .filter(TaskColumn::Retries.lte(attempt))
            .filter(free)
            .exec(db)
            .await?;
        if taken.rows_affected > 0 {
            return Ok(Claim::Taken);
        }
        let found: Option<(String, Option<String>, i32)> = TaskEntity::find_by_id(id)
            .select_only()
            .column(TaskColumn::State)
            .column(TaskColumn::WorkerId)
            .column(TaskColumn::Retries)
            .into_tuple()
            .one(db)
            .await?;
        Ok(match found {
            Some((state, holder, at_attempt))
                if running.contains(&state.as_str()) && at_attempt <= attempt =>
            {
                Claim::Held(holder.unwrap_or_default())
            }
            // Final, or this copy is stale.
            Some(_) => Claim::Done,
            // Deleted in between (expired results purged): nothing ran it
            // to the end; the caller asks again.
            None => Claim::Held(String::new()),
        })
    }

    /// Inserts `row` unless its task id has one; whether it did.
    async fn insert_new<C: ConnectionTrait>(
        db: &C,
        row: super::entity::ActiveModel,
    ) -> Result<bool, BackendError> {
        if db.get_database_backend() != sea_orm::DbBackend::MySql {
            let inserted = TaskEntity::insert(row)
                .on_conflict_do_nothing_on([TaskColumn::TaskId])
                .exec_without_returning(db)
                .await?;
            // The rows inserted (not a driver's guess at an id).
            return Ok(matches!(inserted, sea_orm::TryInsertResult::Inserted(n) if n > 0));
        }
        // MySQL counts a duplicate that does nothing as a row (sqlx asks
        // for rows found): a plain insert, its duplicate key told apart.
        match TaskEntity::insert(row).exec_without_returning(db).await {
            Ok(_) => Ok(true),
            Err(e)
                if matches!(
                    e.sql_err(),
                    Some(sea_orm::SqlErr::UniqueConstraintViolation(_))
                ) =>
            {
                Ok(false)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Gives back the row [`ResultBackend::claim_run`] took for
    /// `worker_id`, when the task goes back to its queue without an
    /// outcome: RETRY (it runs again), with no worker, so the next copy
    /// takes it at once.
    pub async fn release_run(&self, task_id: &str, worker_id: &str) -> Result<(), BackendError> {
        let running = [TaskState::Started.as_str(), TaskState::Progress.as_str()];
        TaskEntity::update_many()
            .col_expr(TaskColumn::State, Expr::value(TaskState::Retry.as_str()))
            .col_expr(TaskColumn::WorkerId, Expr::value(Value::String(None)))
            .filter(TaskColumn::TaskId.eq(task_id))
            .filter(TaskColumn::WorkerId.eq(worker_id))
            .filter(TaskColumn::State.is_in(running))
            .exec(self.connection())
            .await?;
        Ok(())
    }

    /// The freshest live heartbeat of a worker named `hostname` (its row
    /// not expired on the database's clock): its pid and the heartbeat's
    /// age in milliseconds, or `None` when no such worker is alive.
    pub async fn worker_liveness(
        &self,
        hostname: &str,
    ) -> Result<Option<(i64, i64)>, BackendError> {
        let db = self.connection();
        let now = super::db_clock_ms(db.get_database_backend());
        let query = Query::select()
            .column(Column::Pid)
            .expr_as(
                Expr::cust(now).sub(Expr::col(Column::HeartbeatAtMs)),
                sea_orm::sea_query::Alias::new("age_ms"),
            )
            .from(Entity)
            .and_where(Expr::col(Column::Hostname).eq(hostname))
            .and_where(Expr::col(Column::ExpiresAtMs).gt(Expr::cust(now)))
            .order_by(Column::HeartbeatAtMs, sea_orm::Order::Desc)
            .limit(1)
            .to_owned();
        match db.query_one(&query).await? {
            Some(row) => Ok(Some((row.try_get("", "pid")?, row.try_get("", "age_ms")?))),
            None => Ok(None),
        }
    }

    /// Removes this worker's row (clean shutdown). Tasks it left STARTED
    /// are then recovered by the next sweep of any worker.
    pub async fn worker_stopped(&self, worker_id: &str) -> Result<(), BackendError> {
        Entity::delete_by_id(worker_id.to_owned())
            .exec(self.connection())
            .await?;
        Ok(())
    }

    /// Moves tasks left STARTED by workers that are gone (no heartbeat for
    /// `MISSED_HEARTBEATS` intervals, or no row) to RETRY with a
    /// `WorkerLostError`, and returns those this call moved (each lost task
    /// is returned by one sweep only, when several run at once); deletes
    /// workers' rows an hour after they expired. Tasks started by workers
    /// that predate heartbeats (no `worker_id`) are left alone.
    pub async fn recover_lost_tasks(&self) -> Result<Vec<LostTask>, BackendError> {
        let db = self.connection();
        let now = super::db_clock_ms(db.get_database_backend());
        let alive = || alive_workers(now);
        let lost_filter = || {
            sea_orm::Condition::all()
                .add(TaskColumn::State.eq(TaskState::Started.as_str()))
                .add(TaskColumn::WorkerId.is_not_null())
                .add(TaskColumn::WorkerId.not_in_subquery(alive()))
        };
        let lost: Vec<(String, Option<String>)> = TaskEntity::find()
            .select_only()
            .column(TaskColumn::TaskId)
            .column(TaskColumn::WorkerId)
            .filter(lost_filter())
            .limit(1_000)
            .into_tuple()
            .all(db)
            .await?;
        // One row at a time, so what is returned (and logged) is what this
        // sweep moved: another worker's sweep may take a row first, or the
        // task may finish in between. Lost tasks are few.
        let mut moved = Vec::with_capacity(lost.len());
        for (task_id, worker_id) in lost {
            let updated = TaskEntity::update_many()
                .col_expr(TaskColumn::State, Expr::value(TaskState::Retry.as_str()))
                .col_expr(TaskColumn::ErrorType, Expr::value(WORKER_LOST))
                .col_expr(
                    TaskColumn::ErrorMessage,
                    Expr::value(
                        "the worker stopped while running this task (no heartbeat); \
                         it runs again when the broker redelivers its message",
                    ),
                )
                .col_expr(TaskColumn::Traceback, Expr::value(Value::String(None)))
                .filter(lost_filter())
                .filter(TaskColumn::TaskId.eq(task_id.as_str()))
                .exec(db)
                .await;
            // Stop at an error, but report the rows already moved (no later
            // sweep sees them again); the rest, and deleting old workers'
            // rows, wait for the next sweep.
            let updated = match updated {
                Ok(u) => u,
                Err(e) if moved.is_empty() => return Err(e.into()),
                Err(e) => {
                    tracing::warn!(error = %e, "sweep for lost tasks stopped early");
                    return Ok(moved);
                }
            };
            if updated.rows_affected > 0 {
                moved.push(LostTask {
                    task_id,
                    worker_id: worker_id.unwrap_or_default(),
                });
            }
        }
        Entity::delete_many()
            .filter(
                Expr::col(Column::ExpiresAtMs).lt(Expr::cust(format!("{now} - {KEEP_GONE_MS}"))),
            )
            .exec(db)
            .await?;
        Ok(moved)
    }
}

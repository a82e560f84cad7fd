//! Writing outcomes: the batched upsert of final outcomes and the progress
//! update.

use super::chord::{ChordMember, ChordProgress};
use super::entity::{ActiveModel, Column, Entity};
use super::{BackendError, ResultBackend, TaskOutcome};
use crate::state::TaskState;
use chrono::Utc;
use sea_orm::ActiveValue::NotSet;
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, IdenStatic, QueryFilter, TransactionTrait,
};
use serde_json::Value;

/// The last outcome given for each task id, ordered by task id (so
/// concurrent writers take row locks in the same order); an outcome the
/// task stored itself wins over one made up for it
/// ([`TaskOutcome::unless_ready`]) in the same batch.
fn last_per_task(mut outcomes: Vec<TaskOutcome>) -> Vec<TaskOutcome> {
    // Reversed, a stable sort puts each id's last outcome first among its own.
    outcomes.reverse();
    outcomes.sort_by(|a, b| (&a.task_id, a.unless_ready).cmp(&(&b.task_id, b.unless_ready)));
    outcomes.dedup_by(|later, kept| later.task_id == kept.task_id);
    outcomes
}

/// Most rows written by one statement. Chosen when sqlx 0.9.0 left
/// `TCP_NODELAY` off and a statement sent in two writes waited ~40 ms for
/// the second (the server's delayed ACK); sqlx 0.9.1, now the minimum, sets
/// it again. Kept because one size lets the driver reuse one prepared
/// statement for every full chunk (at most 32 statement texts in all).
const STORE_CHUNK: usize = 32;

impl ResultBackend {
    /// Records final outcomes (or RETRY) for many tasks; a row already
    /// present for an id is overwritten (unless the outcome is made up and
    /// the row final: [`TaskOutcome::unless_ready`]). Of several outcomes
    /// for one id (two copies of a message finished together) the last one
    /// given is kept: PostgreSQL refuses an upsert that touches a row
    /// twice.
    pub async fn store(&self, outcomes: Vec<TaskOutcome>) -> Result<(), BackendError> {
        if outcomes.is_empty() {
            return Ok(());
        }
        let now = Utc::now();
        // A RETRY never overwrites a later attempt's outcome: the retry's
        // message goes out before this worker stores RETRY, so another
        // worker may already have stored the retried run's SUCCESS.
        let (retries, outcomes): (Vec<_>, Vec<_>) = last_per_task(outcomes)
            .into_iter()
            .partition(|o| o.state == TaskState::Retry);
        for outcome in retries {
            self.store_retry(outcome, now).await?;
        }
        if outcomes.is_empty() {
            return Ok(());
        }
        let made_up = outcomes.iter().filter(|o| o.unless_ready).count();
        let one_statement =
            outcomes.len() <= STORE_CHUNK && (made_up == 0 || made_up == outcomes.len());
        // MySQL locks index ranges for an upsert; several statements in one
        // transaction there make deadlocks between workers likely, so each
        // statement commits by itself.
        if one_statement || self.db.get_database_backend() == DbBackend::MySql {
            return Self::store_all(&self.db, outcomes, now).await;
        }
        // Several statements, one transaction: one commit (one flush of the
        // database's log) for the whole batch.
        let txn = self.db.begin().await?;
        Self::store_all(&txn, outcomes, now).await?;
        txn.commit().await?;
        Ok(())
    }

    /// Upserts `outcomes` (one per task id): those made up for tasks that
    /// did not run ([`TaskOutcome::unless_ready`]) only over rows that are
    /// not final.
    async fn store_all<C: ConnectionTrait>(
        db: &C,
        outcomes: Vec<TaskOutcome>,
        now: chrono::DateTime<Utc>,
    ) -> Result<(), BackendError> {
        // Two runs, each in task-id order: a row made up for a task may be
        // locked after one stored by its task (two writers meeting so on
        // PostgreSQL deadlock, and the batch is written again).
        let (made_up, outcomes): (Vec<_>, Vec<_>) =
            outcomes.into_iter().partition(|o| o.unless_ready);
        let rows = |o: Vec<TaskOutcome>| o.into_iter().map(move |o| o.into_active(now));
        Self::store_chunks(db, rows(outcomes), false).await?;
        Self::store_chunks(db, rows(made_up), true).await
    }

    /// Stores final outcomes and reports chord members in one transaction:
    /// one commit (one flush of the database's log) where
    /// [`ResultBackend::store`] and [`ResultBackend::members_done`] take
    /// two. `None` when they must go apart: on MySQL (its upserts commit one
    /// by one, see `store`) and when a RETRY is among the outcomes.
    pub async fn store_and_report(
        &self,
        outcomes: &[TaskOutcome],
        members: &[ChordMember],
    ) -> Result<Option<Vec<Option<ChordProgress>>>, BackendError> {
        let retry = outcomes.iter().any(|o| o.state == TaskState::Retry);
        if retry || self.db.get_database_backend() == DbBackend::MySql {
            return Ok(None);
        }
        let txn = self.db.begin().await?;
        Self::store_all(&txn, last_per_task(outcomes.to_vec()), Utc::now()).await?;
        let answers = Self::members_done_in(&txn, members).await?;
        txn.commit().await?;
        Ok(Some(answers))
    }

    /// Records a RETRY unless the task already has a final outcome or a
    /// RETRY of a later attempt: inserted if the row is new, else updated
    /// under that condition (two statements; retries are rare).
    async fn store_retry(
        &self,
        outcome: TaskOutcome,
        now: chrono::DateTime<Utc>,
    ) -> Result<(), BackendError> {
        let attempt = i32::try_from(outcome.retries).unwrap_or(i32::MAX);
        let id = outcome.task_id.clone();
        let row = outcome.into_active(now);
        self.store_unless(id, row.clone(), row, Some(attempt)).await
    }

    /// Records `outcome` unless the task already has a final outcome: a
    /// REVOKED a caller records never overwrites the SUCCESS a worker
    /// stored a moment before (each of the two statements is atomic, and
    /// neither touches a final row). A row that is there keeps what the
    /// caller does not know (the task's name, worker, arguments, retries,
    /// workflow ids): only the state, result, error and `done_at` change.
    pub async fn store_unless_ready(&self, outcome: TaskOutcome) -> Result<(), BackendError> {
        let id = outcome.task_id.clone();
        let row = outcome.into_active(Utc::now());
        let ending = ActiveModel {
            state: row.state.clone(),
            result: row.result.clone(),
            error_type: row.error_type.clone(),
            error_message: row.error_message.clone(),
            traceback: row.traceback.clone(),
            done_at: row.done_at.clone(),
            ..Default::default()
        };
        self.store_unless(id, row, ending, None).await
    }

    /// Inserts `row`, or updates the row there with `update` unless it
    /// holds a final outcome (or, with `attempt`, a later attempt's).
    async fn store_unless(
        &self,
        id: String,
        row: ActiveModel,
        update: ActiveModel,
        attempt: Option<i32>,
    ) -> Result<(), BackendError> {
        // A no-op update, not `DO NOTHING`: MySQL has no such clause.
        let keep = OnConflict::column(Column::TaskId)
            .update_column(Column::TaskId)
            .to_owned();
        Entity::insert(row)
            .on_conflict(keep)
            .exec_without_returning(&self.db)
            .await?;
        let mut update = Entity::update_many()
            .set(update)
            .filter(Column::TaskId.eq(id))
            .filter(Column::State.is_not_in(TaskState::ready_names()));
        if let Some(attempt) = attempt {
            update = update.filter(Column::Retries.lte(attempt));
        }
        update.exec(&self.db).await?;
        Ok(())
    }

    /// Upserts `rows` in statements of [`STORE_CHUNK`]; with `unless_ready`,
    /// a row already there is updated only if it is not final.
    async fn store_chunks<C: ConnectionTrait>(
        db: &C,
        rows: impl Iterator<Item = ActiveModel>,
        unless_ready: bool,
    ) -> Result<(), BackendError> {
        let mut rows = rows.peekable();
        while rows.peek().is_some() {
            let chunk = rows.by_ref().take(STORE_CHUNK).collect();
            Self::store_rows(db, chunk, unless_ready).await?;
        }
        Ok(())
    }

    async fn store_rows<C: ConnectionTrait>(
        db: &C,
        rows: Vec<ActiveModel>,
        unless_ready: bool,
    ) -> Result<(), BackendError> {
        // `state` last: MySQL's conditional form below reads it as it was.
        let columns = [
            Column::TaskName,
            Column::Result,
            Column::ContentType,
            Column::ErrorType,
            Column::ErrorMessage,
            Column::Traceback,
            Column::Args,
            Column::Kwargs,
            Column::Worker,
            Column::WorkerId,
            Column::Retries,
            Column::Queue,
            Column::ParentId,
            Column::RootId,
            Column::GroupId,
            Column::GroupIndex,
            Column::Meta,
            Column::StartedAt,
            Column::DoneAt,
            Column::State,
        ];
        let mut update = OnConflict::column(Column::TaskId);
        match (unless_ready, db.get_database_backend()) {
            (false, _) => {
                update.update_columns(columns);
            }
            // MySQL has no condition on an upsert's update: each column
            // keeps its value where the row is final (MySQL assigns in
            // order, so `state`, last, is read unchanged by the others).
            (true, DbBackend::MySql) => {
                let ready = TaskState::ready_names()
                    .map(|s| format!("'{s}'"))
                    .join(", ");
                update.values(columns.map(|c| {
                    let n = c.as_str();
                    (
                        c,
                        Expr::cust(format!("IF(`state` IN ({ready}), `{n}`, VALUES(`{n}`))")),
                    )
                }));
            }
            (true, _) => {
                update.update_columns(columns).action_and_where(
                    Expr::col((Entity, Column::State)).is_not_in(TaskState::ready_names()),
                );
            }
        }
        let update = update.to_owned();
        Entity::insert_many(rows)
            .on_conflict(update)
            .exec_without_returning(db)
            .await?;
        Ok(())
    }

    /// Records a non-final state (RECEIVED, STARTED, PROGRESS) unless the
    /// task already has a final one, so a late or redelivered message (or a
    /// late progress report) never moves a finished task backwards. The
    /// outcome's `result`, if set, is written too (PROGRESS's `{"done",
    /// "total", ...}`).
    pub async fn store_progress(&self, outcome: TaskOutcome) -> Result<(), BackendError> {
        let id = outcome.task_id.clone();
        let state = outcome.state.as_str().to_owned();
        let started_at = outcome.started_at;
        let worker = outcome.worker.clone();
        let worker_id = outcome.worker_id.clone();
        let meta = outcome.meta.as_ref().map(Value::to_string);
        let result = outcome.result.as_ref().map(Value::to_string);
        let mut row = outcome.into_active(Utc::now());
        row.done_at = NotSet;
        Entity::insert(row)
            .on_conflict_do_nothing_on([Column::TaskId])
            .exec_without_returning(&self.db)
            .await?;
        let mut update = Entity::update_many()
            .col_expr(Column::State, Expr::value(state))
            .col_expr(Column::Worker, Expr::value(worker))
            .col_expr(Column::WorkerId, Expr::value(worker_id))
            .filter(Column::TaskId.eq(id))
            .filter(Column::State.is_not_in(TaskState::ready_names()));
        if let Some(at) = started_at {
            update = update.col_expr(Column::StartedAt, Expr::value(at));
        }
        if let Some(meta) = meta {
            update = update.col_expr(Column::Meta, Expr::value(meta));
        }
        if let Some(result) = result {
            update = update.col_expr(Column::Result, Expr::value(result));
        }
        update.exec(&self.db).await?;
        Ok(())
    }
}

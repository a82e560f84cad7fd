//! The SQL result backend (sea-orm): SQLite by default, PostgreSQL and
//! MySQL/MariaDB by URL. One row per task id; every write is idempotent.

pub mod beat;
pub mod chord;
mod chord_migration;
pub mod entity;
mod many;
pub mod migration;
pub mod workers;

use crate::backoff::{Backoff, Jitter};
use crate::config::mask_url;
use crate::state::TaskState;
use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ActiveValue::{NotSet, Set},
    ColumnTrait, ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, DbErr,
    EntityTrait, QueryFilter, RuntimeErr, TransactionTrait,
};
use sea_orm_migration::MigratorTrait;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::time::Duration;

use entity::{ActiveModel, Column, Entity, ID_LEN, NAME_LEN, WORKER_ID_LEN};

/// A result-backend operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The database could not be opened or reached.
    #[error(
        "cannot open result backend {url} ({source}); check --result-backend / CELERIAC_RESULT_BACKEND, that the server is up, and for SQLite that the directory exists and is writable"
    )]
    Connect {
        /// The URL, password masked.
        url: String,
        /// The driver's error.
        source: DbErr,
    },
    /// Migrations failed.
    #[error("cannot migrate the result backend")]
    Migrate(#[source] DbErr),
    /// A query failed.
    #[error("result backend query failed")]
    Query(#[from] DbErr),
    /// A stored row could not be read back.
    #[error("stored result for {task_id} is unreadable: {reason}")]
    Corrupt {
        /// The task id.
        task_id: String,
        /// What is wrong.
        reason: String,
    },
}

impl BackendError {
    /// Whether the database answered and refused the statement for what it
    /// holds (a value it cannot take, a constraint): sending the same rows
    /// again will not help, unlike after a lost connection, a lock or a
    /// deadlock.
    pub fn is_refused(&self) -> bool {
        let BackendError::Query(
            DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e)),
        ) = self
        else {
            return false;
        };
        let sea_orm::sqlx::Error::Database(db) = e.as_ref() else {
            return false;
        };
        let Some(code) = db.code() else {
            return false;
        };
        match code.parse::<u32>() {
            // SQLite's (extended) result codes, at most 4 digits: TOOBIG,
            // CONSTRAINT, MISMATCH.
            Ok(sqlite) if code.len() < 5 => matches!(sqlite & 0xff, 18..=20),
            // SQLSTATE (PostgreSQL, MySQL): data exception, integrity constraint.
            _ => code.len() == 5 && (code.starts_with("22") || code.starts_with("23")),
        }
    }
}

/// Why a task failed, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskError {
    /// The error's type, e.g. `TimeoutError`, `panic`, `NotRegistered`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The error's message.
    pub message: String,
    /// The chain of causes (and panic location), one per line.
    pub traceback: Option<String>,
}

/// The outcome (or progress) of one task, as a worker records it.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskOutcome {
    /// Task id.
    pub task_id: String,
    /// Task name.
    pub task_name: String,
    /// The state to record.
    pub state: TaskState,
    /// The result value (on SUCCESS).
    pub result: Option<Value>,
    /// The error (on FAILURE, RETRY, REVOKED).
    pub error: Option<TaskError>,
    /// Positional arguments, when `store_args` is on.
    pub args: Option<Value>,
    /// Keyword arguments, when `store_args` is on.
    pub kwargs: Option<Value>,
    /// The worker's hostname.
    pub worker: Option<String>,
    /// The worker process's id (its heartbeat row in `celeriac_workers`).
    pub worker_id: Option<String>,
    /// The `retries` header.
    pub retries: u32,
    /// The queue it came from.
    pub queue: Option<String>,
    /// Parent task id.
    pub parent_id: Option<String>,
    /// Root task id.
    pub root_id: Option<String>,
    /// Group id.
    pub group_id: Option<String>,
    /// Progress or custom metadata.
    pub meta: Option<Value>,
    /// When it started running.
    pub started_at: Option<DateTime<Utc>>,
    /// When it finished.
    pub done_at: Option<DateTime<Utc>>,
}

impl TaskOutcome {
    /// An outcome with only the identifying fields set.
    pub fn new(task_id: impl Into<String>, task_name: impl Into<String>, state: TaskState) -> Self {
        TaskOutcome {
            task_id: task_id.into(),
            task_name: task_name.into(),
            state,
            result: None,
            error: None,
            args: None,
            kwargs: None,
            worker: None,
            worker_id: None,
            retries: 0,
            queue: None,
            parent_id: None,
            root_id: None,
            group_id: None,
            meta: None,
            started_at: None,
            done_at: None,
        }
    }

    fn into_active(self, now: DateTime<Utc>) -> ActiveModel {
        let text = |v: Option<Value>| v.map(|v| v.to_string());
        let (error_type, error_message, traceback) = match self.error {
            Some(e) => (Some(e.kind), Some(e.message), e.traceback),
            None => (None, None, None),
        };
        // Strings go in as they fit their columns: a value the database
        // refuses would hold the whole batch (and its acks) back for ever.
        let fit_opt = |v: Option<String>, max| v.map(|v| fit(v, max));
        ActiveModel {
            task_id: Set(self.task_id),
            task_name: Set(Some(fit(self.task_name, NAME_LEN))),
            state: Set(self.state.as_str().to_owned()),
            result: Set(text(self.result)),
            content_type: Set(crate::protocol::CONTENT_TYPE_JSON.to_owned()),
            error_type: Set(fit_opt(error_type, NAME_LEN)),
            error_message: Set(error_message.map(without_nul)),
            traceback: Set(traceback.map(without_nul)),
            args: Set(text(self.args)),
            kwargs: Set(text(self.kwargs)),
            worker: Set(fit_opt(self.worker, NAME_LEN)),
            worker_id: Set(fit_opt(self.worker_id, WORKER_ID_LEN)),
            retries: Set(i32::try_from(self.retries).unwrap_or(i32::MAX)),
            queue: Set(fit_opt(self.queue, NAME_LEN)),
            parent_id: Set(fit_opt(self.parent_id, ID_LEN)),
            root_id: Set(fit_opt(self.root_id, ID_LEN)),
            group_id: Set(fit_opt(self.group_id, ID_LEN)),
            meta: Set(text(self.meta)),
            created_at: Set(now),
            started_at: Set(self.started_at),
            done_at: Set(self.done_at),
        }
    }
}

/// A task's record as read back from the backend.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskRecord {
    /// Task id.
    pub task_id: String,
    /// Task name, if known.
    pub task_name: Option<String>,
    /// Current state.
    pub state: TaskState,
    /// The result value, on SUCCESS.
    pub result: Option<Value>,
    /// The error, on FAILURE / REVOKED.
    pub error: Option<TaskError>,
    /// Stored positional arguments.
    pub args: Option<Value>,
    /// Stored keyword arguments.
    pub kwargs: Option<Value>,
    /// Hostname of the worker that recorded it.
    pub worker: Option<String>,
    /// Retry count.
    pub retries: u32,
    /// Queue.
    pub queue: Option<String>,
    /// Parent task id.
    pub parent_id: Option<String>,
    /// Root task id.
    pub root_id: Option<String>,
    /// Group id.
    pub group_id: Option<String>,
    /// Progress or custom metadata.
    pub meta: Option<Value>,
    /// When the row was first written.
    pub created_at: DateTime<Utc>,
    /// When it started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it finished.
    pub done_at: Option<DateTime<Utc>>,
}

impl TryFrom<entity::Model> for TaskRecord {
    type Error = BackendError;
    fn try_from(m: entity::Model) -> Result<Self, BackendError> {
        let id = m.task_id.clone();
        let corrupt = |reason: String| BackendError::Corrupt {
            task_id: id.clone(),
            reason,
        };
        let json = |t: Option<String>, what: &str| -> Result<Option<Value>, BackendError> {
            t.map(|t| serde_json::from_str(&t).map_err(|e| corrupt(format!("{what}: {e}"))))
                .transpose()
        };
        let error = m.error_type.map(|kind| TaskError {
            kind,
            message: m.error_message.unwrap_or_default(),
            traceback: m.traceback,
        });
        Ok(TaskRecord {
            state: m
                .state
                .parse()
                .map_err(|e: crate::state::UnknownState| corrupt(e.to_string()))?,
            result: json(m.result, "result")?,
            args: json(m.args, "args")?,
            kwargs: json(m.kwargs, "kwargs")?,
            meta: json(m.meta, "meta")?,
            error,
            task_name: m.task_name,
            worker: m.worker,
            retries: u32::try_from(m.retries).unwrap_or(0),
            queue: m.queue,
            parent_id: m.parent_id,
            root_id: m.root_id,
            group_id: m.group_id,
            created_at: m.created_at,
            started_at: m.started_at,
            done_at: m.done_at,
            task_id: m.task_id,
        })
    }
}

/// The database server's clock in milliseconds since the Unix epoch, as an
/// SQL expression. Worker heartbeats and beat's lease use it, not the
/// hosts' clocks, so hosts with skewed clocks agree on who is alive and when
/// a lease expires.
pub fn db_clock_ms(backend: DbBackend) -> &'static str {
    match backend {
        DbBackend::Postgres => "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
        DbBackend::MySql => "CAST(UNIX_TIMESTAMP(NOW(3)) * 1000 AS SIGNED)",
        _ => "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)",
    }
}

/// `s` without NUL characters (PostgreSQL refuses them in text).
fn without_nul(s: String) -> String {
    if s.contains('\0') {
        s.replace('\0', "")
    } else {
        s
    }
}

/// `s` without NUL characters and cut to `max` characters (a column's
/// length, which PostgreSQL and MySQL count in characters).
fn fit(s: String, max: u32) -> String {
    let s = without_nul(s);
    match s.char_indices().nth(max as usize) {
        Some((end, _)) => s[..end].to_owned(),
        None => s,
    }
}

/// The last outcome given for each task id, ordered by task id (so
/// concurrent writers take row locks in the same order).
fn last_per_task(mut outcomes: Vec<TaskOutcome>) -> Vec<TaskOutcome> {
    // Reversed, a stable sort puts each id's last outcome first among its own.
    outcomes.reverse();
    outcomes.sort_by(|a, b| a.task_id.cmp(&b.task_id));
    outcomes.dedup_by(|later, kept| later.task_id == kept.task_id);
    outcomes
}

/// Most rows written by one statement. Small statements leave the client
/// in one write (one TLS record), which keeps a batch from meeting the
/// server's delayed ACK: sqlx 0.9 does not set `TCP_NODELAY`, and a statement
/// sent in two writes waited ~40 ms for the second. One size also lets the
/// driver reuse one prepared statement for every full chunk.
const STORE_CHUNK: usize = 32;

/// Between attempts at migrating (another process may be migrating the
/// same database): 100 ms doubling to 1 s, jittered so that racing
/// processes do not retry in step.
const MIGRATE_BACKOFF: Backoff =
    Backoff::new(Duration::from_millis(100), Duration::from_secs(1)).jitter(Jitter::Equal);

/// A connection to the result database.
#[derive(Debug, Clone)]
pub struct ResultBackend {
    db: DatabaseConnection,
}

impl ResultBackend {
    /// Opens the database at `url` (`sqlite://...`, `postgres://...`, `mysql://...`).
    pub async fn connect(url: &str) -> Result<Self, BackendError> {
        let mut opts = ConnectOptions::new(url.to_owned());
        // SQLite takes one writer at a time anyway, and a connection drops
        // its whole page cache when another one has committed since its last
        // use: a pool of several, handed out in turn, re-read the index
        // pages on every batch (77 reads per commit, not 20). One connection
        // per process; other processes still share the file. A multi-row
        // upsert opens a statement journal: in memory, not a new temp file
        // per batch (set on every connection the pool opens).
        let sqlite = url.starts_with("sqlite");
        opts.sqlx_logging(false)
            .connect_timeout(Duration::from_secs(5))
            .acquire_timeout(Duration::from_secs(10))
            .max_connections(if sqlite { 1 } else { 10 })
            .min_connections(1)
            .map_sqlx_sqlite_opts(|o| o.pragma("temp_store", "MEMORY"));
        let db = Database::connect(opts)
            .await
            .map_err(|source| BackendError::Connect {
                url: mask_url(url),
                source,
            })?;
        if sqlite {
            // WAL lets several worker processes share one file; it persists in the file.
            db.execute_unprepared("PRAGMA journal_mode=WAL")
                .await
                .map_err(|source| BackendError::Connect {
                    url: mask_url(url),
                    source,
                })?;
        }
        Ok(ResultBackend { db })
    }

    /// Wraps an existing connection (for tests and for apps that own their pool).
    pub fn from_connection(db: DatabaseConnection) -> Self {
        ResultBackend { db }
    }

    /// The underlying connection.
    pub fn connection(&self) -> &DatabaseConnection {
        &self.db
    }

    /// Creates or upgrades every celeriac table. Safe to run from several
    /// processes at once: a process that loses the race re-checks and succeeds.
    pub async fn migrate(&self) -> Result<(), BackendError> {
        let mut last = None;
        let mut backoff = MIGRATE_BACKOFF;
        for _ in 0..5 {
            match migration::apply(&self.db).await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    if matches!(migration::Migrator::get_pending_migrations(&self.db).await, Ok(p) if p.is_empty())
                    {
                        return Ok(());
                    }
                    last = Some(e);
                    tokio::time::sleep(backoff.next_delay()).await;
                }
            }
        }
        Err(BackendError::Migrate(last.unwrap_or_else(|| {
            DbErr::Custom("migration failed".into())
        })))
    }

    /// Records final outcomes (or RETRY) for many tasks; a row already
    /// present for an id is overwritten. Of several outcomes for one id (two
    /// copies of a message finished together) the last one given is kept:
    /// PostgreSQL refuses an upsert that touches a row twice.
    pub async fn store(&self, outcomes: Vec<TaskOutcome>) -> Result<(), BackendError> {
        if outcomes.is_empty() {
            return Ok(());
        }
        let outcomes = last_per_task(outcomes);
        let now = Utc::now();
        let one_statement = outcomes.len() <= STORE_CHUNK;
        let rows = outcomes.into_iter().map(|o| o.into_active(now));
        // MySQL locks index ranges for an upsert; several statements in one
        // transaction there make deadlocks between workers likely, so each
        // statement commits by itself.
        if one_statement || self.db.get_database_backend() == DbBackend::MySql {
            return Self::store_chunks(&self.db, rows).await;
        }
        // Several statements, one transaction: one commit (one flush of the
        // database's log) for the whole batch.
        let txn = self.db.begin().await?;
        Self::store_chunks(&txn, rows).await?;
        txn.commit().await?;
        Ok(())
    }

    /// Writes `rows` in statements of at most [`STORE_CHUNK`] rows.
    async fn store_chunks<C: ConnectionTrait>(
        db: &C,
        rows: impl Iterator<Item = ActiveModel>,
    ) -> Result<(), BackendError> {
        let mut rows = rows.peekable();
        while rows.peek().is_some() {
            Self::store_rows(db, rows.by_ref().take(STORE_CHUNK).collect()).await?;
        }
        Ok(())
    }

    async fn store_rows<C: ConnectionTrait>(
        db: &C,
        rows: Vec<ActiveModel>,
    ) -> Result<(), BackendError> {
        let update = OnConflict::column(Column::TaskId)
            .update_columns([
                Column::TaskName,
                Column::State,
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
                Column::Meta,
                Column::StartedAt,
                Column::DoneAt,
            ])
            .to_owned();
        Entity::insert_many(rows)
            .on_conflict(update)
            .exec_without_returning(db)
            .await?;
        Ok(())
    }

    /// Records a non-final state (RECEIVED, STARTED, progress) unless the task
    /// already has a final one, so a late or redelivered message never moves
    /// a finished task backwards.
    pub async fn store_progress(&self, outcome: TaskOutcome) -> Result<(), BackendError> {
        let id = outcome.task_id.clone();
        let state = outcome.state.as_str().to_owned();
        let started_at = outcome.started_at;
        let worker = outcome.worker.clone();
        let worker_id = outcome.worker_id.clone();
        let meta = outcome.meta.as_ref().map(Value::to_string);
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
        update.exec(&self.db).await?;
        Ok(())
    }

    /// The record for `task_id`, or `None` (PENDING) if there is none.
    pub async fn get(&self, task_id: &str) -> Result<Option<TaskRecord>, BackendError> {
        Entity::find_by_id(task_id.to_owned())
            .one(&self.db)
            .await?
            .map(TaskRecord::try_from)
            .transpose()
    }

    /// Ids revoked (REVOKED and never started) since `since`.
    pub async fn revoked_since(&self, since: DateTime<Utc>) -> Result<Vec<String>, BackendError> {
        use sea_orm::QuerySelect;
        let ids = Entity::find()
            .select_only()
            .column(Column::TaskId)
            .filter(Column::State.eq(TaskState::Revoked.as_str()))
            .filter(Column::StartedAt.is_null())
            .filter(Column::DoneAt.gte(since))
            .into_tuple::<String>()
            .all(&self.db)
            .await?;
        Ok(ids)
    }

    /// Deletes the record for `task_id`; returns whether there was one.
    pub async fn forget(&self, task_id: &str) -> Result<bool, BackendError> {
        let res = Entity::delete_by_id(task_id.to_owned())
            .exec(&self.db)
            .await?;
        Ok(res.rows_affected > 0)
    }

    /// Deletes finished records done before `before`; returns how many.
    pub async fn purge_finished_before(&self, before: DateTime<Utc>) -> Result<u64, BackendError> {
        let res = Entity::delete_many()
            .filter(Column::DoneAt.lt(before))
            .filter(Column::State.is_in(TaskState::ready_names()))
            .exec(&self.db)
            .await?;
        Ok(res.rows_affected)
    }
}

//! The SQL result backend (sea-orm): SQLite by default, PostgreSQL and
//! MySQL/MariaDB by URL. One row per task id; every write is idempotent.

pub mod beat;
mod beat_entry_migration;
pub mod chord;
mod chord_migration;
mod chord_parts_migration;
pub mod entity;
pub mod expiry;
mod expiry_migration;
mod many;
pub mod migration;
mod outcome;
mod search_migration;
mod sql;
mod store;
pub mod workers;
pub mod workflow;
mod workflow_migration;

use crate::backoff::{Backoff, Jitter};
use crate::config::mask_url;
use crate::state::TaskState;
use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, DbErr,
    EntityTrait, QueryFilter, RuntimeErr,
};
use sea_orm_migration::MigratorTrait;
use std::time::Duration;

use entity::{Column, Entity};
pub use outcome::{TaskError, TaskOutcome, TaskRecord};
pub use sql::statement;

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
    /// The database did not answer in time (a socket gone silent, a lock
    /// held for a long time); the call was given up.
    #[error("the result database did not answer within {after:?}")]
    NoAnswer {
        /// How long the answer was waited for.
        after: Duration,
    },
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
    /// The driver's error behind a failed query, if there is one.
    fn driver_error(&self) -> Option<&sea_orm::sqlx::Error> {
        match self {
            BackendError::Query(
                DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e)),
            ) => Some(e.as_ref()),
            _ => None,
        }
    }

    /// Whether the database answered and refused the statement for what it
    /// holds (a value it cannot take, a constraint): sending the same rows
    /// again will not help, unlike after a lost connection, a lock or a
    /// deadlock.
    pub fn is_refused(&self) -> bool {
        let Some(sea_orm::sqlx::Error::Database(db)) = self.driver_error() else {
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

    /// Whether the statement cost its connection or was too large for the
    /// server (the connection dropped; MySQL's `max_allowed_packet`;
    /// PostgreSQL's program limit, 54000), as opposed to the database
    /// saying no for a while (read-only, disk full, a lock, a deadlock),
    /// after which the same statement may well succeed.
    pub fn cost_the_connection(&self) -> bool {
        let Some(e) = self.driver_error() else {
            return false;
        };
        match e {
            sea_orm::sqlx::Error::Io(_) | sea_orm::sqlx::Error::Protocol(_) => true,
            sea_orm::sqlx::Error::Database(db) => {
                db.code().as_deref() == Some("54000") || db.message().contains("max_allowed_packet")
            }
            _ => false,
        }
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

/// Between attempts at migrating (another process may be migrating the
/// same database): 100 ms doubling to 1 s, jittered so that racing
/// processes do not retry in step.
const MIGRATE_BACKOFF: Backoff =
    Backoff::new(Duration::from_millis(100), Duration::from_secs(1)).jitter(Jitter::Equal);

/// A connection to the result database.
#[derive(Debug, Clone)]
pub struct ResultBackend {
    db: DatabaseConnection,
    /// How long a caller that must go on waits for one call (see
    /// [`ResultBackend::call_timeout`]).
    call_timeout: Duration,
}

/// Default of [`ResultBackend::call_timeout`] (`result_timeout_secs`).
pub const CALL_TIMEOUT_DEFAULT: Duration = Duration::from_secs(60);

impl ResultBackend {
    /// Opens the database at `url` (`sqlite://...`, `postgres://...`, `mysql://...`).
    pub fn connect(url: &str) -> impl Future<Output = Result<Self, BackendError>> + Send + '_ {
        // Not an `async fn` around the other: one level of future less for
        // callers whose futures are already deep (the dashboard's handlers).
        Self::connect_with_page_cache(url, None)
    }

    /// [`ResultBackend::connect`], with SQLite's page cache held to
    /// `cache_kib` KiB (SQLite's default is 2,000) on every connection; no
    /// effect on other databases. For a process that reads a large table
    /// once and then touches a few pages at a time (beat).
    pub async fn connect_with_page_cache(
        url: &str,
        cache_kib: Option<u32>,
    ) -> Result<Self, BackendError> {
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
            .map_sqlx_sqlite_opts(move |o| {
                let o = o.pragma("temp_store", "MEMORY");
                match cache_kib {
                    Some(kib) => o.pragma("cache_size", format!("-{kib}")),
                    None => o,
                }
            });
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
        Ok(ResultBackend::from_connection(db))
    }

    /// Wraps an existing connection (for tests and for apps that own their pool).
    pub fn from_connection(db: DatabaseConnection) -> Self {
        ResultBackend {
            db,
            call_timeout: CALL_TIMEOUT_DEFAULT,
        }
    }

    /// With `timeout` as [`ResultBackend::call_timeout`].
    pub fn with_call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = timeout;
        self
    }

    /// How long a worker waits for one call to the database on a path that
    /// must go on (storing outcomes, STARTED, heartbeats, chord reports)
    /// before it gives the call up and makes it again on a fresh
    /// connection: a socket whose peer went silent (a host that died without
    /// a reset, a stalled proxy) or a lock held for minutes would otherwise
    /// hold it for ever (`result_timeout_secs`, default 60 s).
    pub fn call_timeout(&self) -> Duration {
        self.call_timeout
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

    /// The record for `task_id`, or `None` (PENDING) if there is none.
    pub async fn get(&self, task_id: &str) -> Result<Option<TaskRecord>, BackendError> {
        Entity::find_by_id(task_id.to_owned())
            .one(&self.db)
            .await?
            .map(TaskRecord::try_from)
            .transpose()
    }

    /// Ids revoked (REVOKED and never started) since `since` (`None`: ever).
    pub async fn revoked_since(
        &self,
        since: Option<DateTime<Utc>>,
    ) -> Result<Vec<String>, BackendError> {
        use sea_orm::QuerySelect;
        let mut query = Entity::find()
            .select_only()
            .column(Column::TaskId)
            .filter(Column::State.eq(TaskState::Revoked.as_str()))
            .filter(Column::StartedAt.is_null());
        if let Some(since) = since {
            query = query.filter(Column::DoneAt.gte(since));
        }
        let ids = query.into_tuple::<String>().all(&self.db).await?;
        Ok(ids)
    }

    /// Deletes the record for `task_id`; returns whether there was one.
    pub async fn forget(&self, task_id: &str) -> Result<bool, BackendError> {
        let res = Entity::delete_by_id(task_id.to_owned())
            .exec(&self.db)
            .await?;
        Ok(res.rows_affected > 0)
    }
}

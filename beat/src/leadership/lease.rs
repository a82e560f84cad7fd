//! The leader lease: any number of beats share one database, exactly one
//! leads.
//!
//! One row in `celeriac_beat_lease` says who holds the lease and until when
//! (milliseconds on the *database's* clock, so hosts need not agree on the
//! time). A beat takes or renews it with one conditional update that only
//! matches when it already holds the lease or the lease has expired:
//!
//! ```sql
//! UPDATE celeriac_beat_lease
//!    SET token = CASE WHEN holder = :me THEN token ELSE token + 1 END, ...,
//!        holder = :me, expires_at_ms = <db now> + :ttl_ms
//!  WHERE name = 'default' AND (holder = :me OR expires_at_ms < <db now>)
//! ```
//!
//! and reads the row back to see whether it won. `token` grows by one each
//! time the lease changes hands; it is the fencing token. Every write of run
//! state happens in a transaction that first touches the lease row with
//! `WHERE holder = :me AND token = :token AND expires_at_ms > <db now>` (see
//! [`check_fence`]), so a beat that lost the lease (paused, partitioned)
//! can no longer record anything, and on PostgreSQL and MySQL the row lock
//! it takes orders it strictly before or after a takeover.
//!
//! [`keeper`](crate::leadership::keeper) takes and renews the lease in the
//! background.

use std::time::Duration;

use sea_orm::{ConnectionTrait, DatabaseConnection, DbErr};

use celeriac_common::backend::db_clock_ms as now_ms;
use celeriac_common::backend::statement;

/// The lease row's name (one lease per database).
pub use celeriac_common::backend::beat::LEASE_NAME;

/// Proof of leadership, checked by every write of run state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fence {
    /// The lease row.
    pub name: String,
    /// This process's holder id.
    pub holder: String,
    /// The fencing token: grows each time the lease changes hands.
    pub token: i64,
}

/// The outcome of an attempt to take or renew the lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseStatus {
    /// This process leads.
    Held(Fence),
    /// Another process leads.
    HeldBy {
        /// Its holder id.
        holder: String,
        /// Its token.
        token: i64,
        /// How long until its lease expires, by the database's clock.
        expires_in: Duration,
    },
}

/// A handle on the lease for one process (one holder id).
#[derive(Debug, Clone)]
pub struct Lease {
    db: DatabaseConnection,
    name: String,
    holder: String,
    ttl: Duration,
}

impl Lease {
    /// The lease `LEASE_NAME` for `holder` (unique per process, e.g.
    /// `host:pid:random`), held for `ttl` after each renewal.
    pub fn new(db: DatabaseConnection, holder: impl Into<String>, ttl: Duration) -> Lease {
        Lease {
            db,
            name: LEASE_NAME.to_owned(),
            holder: holder.into(),
            ttl: ttl.max(Duration::from_millis(100)),
        }
    }

    /// A fresh holder id for this process: `host:pid:random`.
    pub fn holder_id() -> String {
        let random = uuid::Uuid::new_v4().simple().to_string();
        format!(
            "{}:{}:{}",
            celeriac_common::config::host_name(),
            std::process::id(),
            &random[..8]
        )
    }

    /// This process's holder id.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// The lease time.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Takes the lease if it is free or expired, renews it if this process
    /// holds it; says who holds it otherwise.
    pub async fn try_acquire(&self) -> Result<LeaseStatus, DbErr> {
        let backend = self.db.get_database_backend();
        let now = now_ms(backend);
        let insert = "INSERT INTO celeriac_beat_lease \
             (name, holder, token, expires_at_ms, acquired_at_ms, renewed_at_ms) \
             VALUES (?, '', 0, 0, 0, 0)";
        let exists = self.read().await?.is_some();
        if !exists {
            // Another beat may insert it at the same moment; either way it exists after this.
            let _ = self
                .db
                .execute_raw(statement(backend, insert, vec![self.name.clone().into()]))
                .await;
        }
        let ttl_ms = i64::try_from(self.ttl.as_millis()).unwrap_or(i64::MAX / 2);
        // MySQL evaluates SET left to right with updated values: `holder` goes last.
        let update = format!(
            "UPDATE celeriac_beat_lease SET \
               token = CASE WHEN holder = ? THEN token ELSE token + 1 END, \
               acquired_at_ms = CASE WHEN holder = ? THEN acquired_at_ms ELSE {now} END, \
               expires_at_ms = {now} + ?, \
               renewed_at_ms = {now}, \
               holder = ? \
             WHERE name = ? AND (holder = ? OR expires_at_ms < {now})"
        );
        let me = || sea_orm::Value::from(self.holder.clone());
        self.db
            .execute_raw(statement(
                backend,
                &update,
                vec![
                    me(),
                    me(),
                    ttl_ms.into(),
                    me(),
                    self.name.clone().into(),
                    me(),
                ],
            ))
            .await?;
        let Some(row) = self.read().await? else {
            return Err(DbErr::RecordNotFound("celeriac_beat_lease row".into()));
        };
        if row.holder == self.holder && row.expires_in > Duration::ZERO {
            Ok(LeaseStatus::Held(Fence {
                name: self.name.clone(),
                holder: self.holder.clone(),
                token: row.token,
            }))
        } else {
            Ok(LeaseStatus::HeldBy {
                holder: row.holder,
                token: row.token,
                expires_in: row.expires_in,
            })
        }
    }

    /// Gives the lease up (if held), so a standby takes over at once.
    pub async fn release(&self) -> Result<bool, DbErr> {
        let backend = self.db.get_database_backend();
        let res = self
            .db
            .execute_raw(statement(
                backend,
                "UPDATE celeriac_beat_lease SET expires_at_ms = 0 WHERE name = ? AND holder = ?",
                vec![self.name.clone().into(), self.holder.clone().into()],
            ))
            .await?;
        Ok(res.rows_affected() > 0)
    }

    /// The lease row as it stands, if it exists.
    pub async fn read(&self) -> Result<Option<LeaseRow>, DbErr> {
        read_lease(&self.db, &self.name).await
    }
}

/// The lease row, with its remaining time by the database's clock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseRow {
    /// Holder id (empty before anyone took it).
    pub holder: String,
    /// Fencing token.
    pub token: i64,
    /// Time left (zero if expired).
    pub expires_in: Duration,
}

/// Reads the lease row `name`.
pub async fn read_lease<C: ConnectionTrait>(db: &C, name: &str) -> Result<Option<LeaseRow>, DbErr> {
    let backend = db.get_database_backend();
    let sql = format!(
        "SELECT holder, token, expires_at_ms - {} FROM celeriac_beat_lease WHERE name = ?",
        now_ms(backend)
    );
    let row = db
        .query_one_raw(statement(backend, &sql, vec![name.into()]))
        .await?;
    row.map(|r| {
        let left: i64 = r.try_get_by_index(2)?;
        Ok(LeaseRow {
            holder: r.try_get_by_index(0)?,
            token: r.try_get_by_index(1)?,
            expires_in: Duration::from_millis(u64::try_from(left).unwrap_or(0)),
        })
    })
    .transpose()
}

/// Inside a transaction, before writing run state: checks that `fence`
/// still holds an unexpired lease, locking the lease row until the
/// transaction ends. `false` means leadership was lost: roll back.
pub async fn check_fence<C: ConnectionTrait>(conn: &C, fence: &Fence) -> Result<bool, DbErr> {
    let backend = conn.get_database_backend();
    let sql = format!(
        "UPDATE celeriac_beat_lease SET token = token \
         WHERE name = ? AND holder = ? AND token = ? AND expires_at_ms > {}",
        now_ms(backend)
    );
    let res = conn
        .execute_raw(statement(
            backend,
            &sql,
            vec![
                fence.name.clone().into(),
                fence.holder.clone().into(),
                fence.token.into(),
            ],
        ))
        .await?;
    Ok(res.rows_affected() == 1)
}

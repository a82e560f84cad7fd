//! Each entry's run state, persisted in `celeriac_beat_state` so that a
//! restart or a failover neither repeats a run nor loses one.
//!
//! Protocol for one run at scheduled time `T` (see the crate docs):
//! 1. in one fenced transaction: `cursor_at = T`, `sending_at = T`;
//! 2. publish with task id `uuid5(entry, T)` and wait for the broker's confirm;
//! 3. in one fenced transaction: `sending_at = NULL`, `last_run_at = T`,
//!    `total_runs + 1`.
//!
//! A beat that finds `sending_at` set (the previous leader died between 1
//! and 3) sends `T` again with the same task id, which workers recognise.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DbBackend, DbErr, EntityTrait, IdenStatic,
    QueryFilter, TransactionSession, TransactionTrait,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use celeriac_common::backend::beat::state::{ActiveModel, Column, Entity, Model};

use crate::clock::{format_instant, parse_instant};
use crate::error::BeatError;
use crate::leadership::lease::{Fence, check_fence};
use celeriac_common::backend::statement;

/// How many recent runs are remembered for `max_instances` (its largest value).
pub const RECENT_MAX: usize = celeriac_common::config::BEAT_MAX_INSTANCES as usize;

/// Names per query when reading many states.
const READ_CHUNK: usize = 400;

/// Rows per statement when writing many states: small statements stay in
/// each connection's prepared-statement cache (PostgreSQL writes 1,000
/// states in about 25 ms this way, 220 ms in statements of 400 rows).
const WRITE_CHUNK: usize = 50;

/// One run sent for an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecentRun {
    /// Its scheduled fire time (or the run-now request time).
    pub at: DateTime<Utc>,
    /// Its task id.
    pub id: Uuid,
}

/// An entry's run state.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunState {
    /// The last scheduled fire time decided (sent, missed, coalesced or held).
    pub cursor_at: Option<DateTime<Utc>>,
    /// A fire time being sent (set before publishing, cleared after the confirm).
    pub sending_at: Option<DateTime<Utc>>,
    /// Scheduled time of the last run sent.
    pub last_run_at: Option<DateTime<Utc>>,
    /// When the last run was sent.
    pub last_sent_at: Option<DateTime<Utc>>,
    /// The last run's task id.
    pub last_task_id: Option<Uuid>,
    /// The next fire time, as of the last write.
    pub next_run_at: Option<DateTime<Utc>>,
    /// Runs sent so far.
    pub total_runs: i64,
    /// Recent runs not known to be finished (for `max_instances`).
    pub recent: Vec<RecentRun>,
    /// A pending `schedule run-now` request (written by the command line).
    pub run_now_at: Option<DateTime<Utc>>,
}

impl RunState {
    pub(crate) fn from_model(m: Model) -> RunState {
        let at = |s: Option<String>| s.as_deref().and_then(parse_instant);
        RunState {
            cursor_at: at(m.cursor_at),
            sending_at: at(m.sending_at),
            last_run_at: at(m.last_run_at),
            last_sent_at: at(m.last_sent_at),
            last_task_id: m
                .last_task_id
                .as_deref()
                .and_then(|s| Uuid::parse_str(s).ok()),
            next_run_at: at(m.next_run_at),
            total_runs: m.total_runs,
            recent: m
                .recent
                .as_deref()
                .and_then(|s| serde_json::from_str(s).ok())
                .unwrap_or_default(),
            run_now_at: at(m.run_now_at),
        }
    }

    fn to_active(&self, name: &str, now: DateTime<Utc>) -> ActiveModel {
        let at = |t: Option<DateTime<Utc>>| t.map(format_instant);
        ActiveModel {
            name: Set(name.to_owned()),
            cursor_at: Set(at(self.cursor_at)),
            sending_at: Set(at(self.sending_at)),
            last_run_at: Set(at(self.last_run_at)),
            last_sent_at: Set(at(self.last_sent_at)),
            last_task_id: Set(self.last_task_id.map(|id| id.to_string())),
            next_run_at: Set(at(self.next_run_at)),
            total_runs: Set(self.total_runs),
            recent: Set(if self.recent.is_empty() {
                None
            } else {
                serde_json::to_string(&self.recent).ok()
            }),
            run_now_at: Set(at(self.run_now_at)),
            updated_at: Set(format_instant(now)),
        }
    }
}

/// Every stored run state, by entry name.
pub async fn load_all<C: ConnectionTrait>(db: &C) -> Result<HashMap<String, RunState>, DbErr> {
    Ok(Entity::find()
        .all(db)
        .await?
        .into_iter()
        .map(|m| (m.name.clone(), RunState::from_model(m)))
        .collect())
}

/// The stored run states of the entries named after `after` (all, if
/// `None`) up to `last` included: one range of the key, for a page of
/// entries read in name order.
pub async fn load_range<C: ConnectionTrait>(
    db: &C,
    after: Option<&str>,
    last: &str,
) -> Result<HashMap<String, RunState>, DbErr> {
    let mut query = Entity::find().filter(Column::Name.lte(last));
    if let Some(after) = after {
        query = query.filter(Column::Name.gt(after));
    }
    Ok(query
        .all(db)
        .await?
        .into_iter()
        .map(|m| (m.name.clone(), RunState::from_model(m)))
        .collect())
}

/// The stored run states of `names` (those that have one).
pub async fn load_some<C: ConnectionTrait>(
    db: &C,
    names: &[String],
) -> Result<HashMap<String, RunState>, DbErr> {
    let mut out = HashMap::new();
    for chunk in names.chunks(READ_CHUNK) {
        for m in Entity::find()
            .filter(Column::Name.is_in(chunk.iter().cloned()))
            .all(db)
            .await?
        {
            out.insert(m.name.clone(), RunState::from_model(m));
        }
    }
    Ok(out)
}

/// The run state of one entry, if stored.
pub async fn load_one<C: ConnectionTrait>(db: &C, name: &str) -> Result<Option<RunState>, DbErr> {
    Ok(Entity::find_by_id(name.to_owned())
        .one(db)
        .await?
        .map(RunState::from_model))
}

/// Pending `schedule run-now` requests: entry name and request time.
pub async fn run_now_requests<C: ConnectionTrait>(
    db: &C,
) -> Result<Vec<(String, DateTime<Utc>)>, DbErr> {
    Ok(Entity::find()
        .filter(Column::RunNowAt.is_not_null())
        .all(db)
        .await?
        .into_iter()
        .filter_map(|m| Some((m.name, m.run_now_at.as_deref().and_then(parse_instant)?)))
        .collect())
}

/// Why a fenced write did not happen.
#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    /// The lease is no longer this process's: nothing was written.
    #[error("lost the beat lease; run state not written")]
    LostLease,
    /// The database failed.
    #[error("cannot write beat run state")]
    Db(#[from] DbErr),
}

impl From<SaveError> for BeatError {
    fn from(e: SaveError) -> Self {
        match e {
            SaveError::LostLease => BeatError::LostLease,
            SaveError::Db(e) => BeatError::Db(e),
        }
    }
}

/// One fenced write: the states of `states` (every column but `run_now_at`,
/// which belongs to the command line), and the run-now requests in
/// `served` cleared if they still hold the value served. All or nothing.
///
/// `last_run_at`, `last_sent_at` and `last_task_id` describe the last run:
/// a state that leaves them `None` keeps what the row holds (the scheduler
/// keeps them in memory only until the run's state is written), unless its
/// `total_runs` is 0: an entry that has not run (or was made again) has no
/// last run.
pub async fn save<C: TransactionTrait>(
    db: &C,
    fence: &Fence,
    states: &[(&str, &RunState)],
    served: &[(&str, DateTime<Utc>)],
    now: DateTime<Utc>,
) -> Result<(), SaveError> {
    let txn = db.begin().await?;
    if !check_fence(&txn, fence).await? {
        txn.rollback().await?;
        return Err(SaveError::LostLease);
    }
    let mut update = OnConflict::column(Column::Name);
    update.update_columns([
        Column::CursorAt,
        Column::SendingAt,
        Column::NextRunAt,
        Column::TotalRuns,
        Column::Recent,
        Column::UpdatedAt,
    ]);
    let mysql = txn.get_database_backend() == DbBackend::MySql;
    update.values(
        [Column::LastRunAt, Column::LastSentAt, Column::LastTaskId].map(|c| {
            let n = c.as_str();
            let kept = if mysql {
                format!("IF(VALUES(`total_runs`) = 0, NULL, COALESCE(VALUES(`{n}`), `{n}`))")
            } else {
                format!(
                    "CASE WHEN excluded.total_runs = 0 THEN NULL \
                     ELSE COALESCE(excluded.{n}, celeriac_beat_state.{n}) END"
                )
            };
            (c, Expr::cust(kept))
        }),
    );
    for chunk in states.chunks(WRITE_CHUNK) {
        let rows = chunk.iter().map(|(name, s)| s.to_active(name, now));
        Entity::insert_many(rows)
            .on_conflict(update.clone())
            .exec_without_returning(&txn)
            .await?;
    }
    let backend = txn.get_database_backend();
    for (name, at) in served {
        txn.execute_raw(statement(
            backend,
            "UPDATE celeriac_beat_state SET run_now_at = NULL WHERE name = ? AND run_now_at = ?",
            vec![(*name).into(), format_instant(*at).into()],
        ))
        .await?;
    }
    txn.commit().await?;
    Ok(())
}

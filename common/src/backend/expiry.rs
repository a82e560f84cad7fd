//! Results expire: what `result_expires_secs` deletes, in short batches so
//! that a purge of a large backlog never holds the database's writers up
//! for long (on SQLite, workers record outcomes between two batches).
//!
//! - a task row in a final state (SUCCESS, FAILURE, REVOKED, REJECTED)
//!   done before the cutoff, found by the `done_at` index;
//! - a chord whose callback (or errbacks) was sent before the cutoff and
//!   whose members have all reported, with its member rows and parts,
//!   found by the `callback_sent_at` index. A chord still waiting for
//!   members stays, however old: a member may yet come (a retry, a far
//!   `eta`), and so does a failed chord whose other members are still to
//!   report: each of them still finds its chord. (A chord one of whose
//!   members never reports, its message purged, is never deleted.)
//!
//! Rows still running, waiting or retrying are never deleted. A revoked
//! task's row goes with the rest, which is also the window in which
//! workers starting up learn of revocations (`result_expires_secs`).

use super::{BackendError, ResultBackend, statement};
use crate::state::TaskState;
use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DbBackend, TransactionTrait, Value};
use std::time::{Duration, Instant};

/// Task rows deleted per statement (about 15 ms on SQLite).
const TASK_BATCH: u64 = 1_000;
/// Chords deleted per transaction, at most...
const CHORD_BATCH: u64 = 50;
/// ...and members of theirs, at most (but always one chord).
const MEMBER_BATCH: u64 = 10_000;
/// SQLite's busy handler (what another process waiting for the write
/// lock runs) sleeps up to this long between two tries.
const SQLITE_BUSY_SLEEP: Duration = Duration::from_millis(100);

/// How long to wait after a batch that took `took`: as long again, so that
/// a purge holds the database at most half the time; on SQLite at least
/// [`SQLITE_BUSY_SLEEP`], so that a writer of another process, polling for
/// the lock, always finds it free before the next batch (with shorter
/// pauses a polling writer missed them for seconds).
fn pause(backend: DbBackend, took: Duration) -> Duration {
    if backend == DbBackend::Sqlite {
        took.max(SQLITE_BUSY_SLEEP)
    } else {
        took
    }
}

/// What one purge deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    /// Task rows.
    pub tasks: u64,
    /// Chords (their member rows and parts not counted).
    pub chords: u64,
}

impl Purged {
    /// Whether it deleted nothing.
    pub fn is_empty(&self) -> bool {
        *self == Purged::default()
    }
}

/// The statement that deletes one batch of expired task rows: found in
/// `done_at` order by its index, then deleted by task id. The filter is
/// repeated outside the subquery so that a row rewritten meanwhile (a task
/// id reused) is not deleted.
fn task_batch_sql(backend: DbBackend) -> String {
    let states = TaskState::ready_names()
        .map(|s| format!("'{s}'"))
        .join(", ");
    match backend {
        // No LIMIT in an IN subquery there, but DELETE ... ORDER BY ...
        // LIMIT (in a total order, so that statement-based replication
        // deletes the same rows on replicas).
        DbBackend::MySql => format!(
            "DELETE FROM celeriac_taskmeta WHERE done_at < ? AND state IN ({states}) \
             ORDER BY done_at, task_id LIMIT {TASK_BATCH}"
        ),
        // `+` keeps SQLite from answering a filter with an index: without
        // it, the outer one read every final row through the state index
        // for every batch (a million rows purged at 800 a second).
        DbBackend::Sqlite => format!(
            "DELETE FROM celeriac_taskmeta WHERE task_id IN (SELECT task_id FROM \
             celeriac_taskmeta WHERE done_at < ? AND +state IN ({states}) \
             ORDER BY done_at LIMIT {TASK_BATCH}) AND +done_at < ? AND +state IN ({states})"
        ),
        _ => format!(
            "DELETE FROM celeriac_taskmeta WHERE task_id IN (SELECT task_id FROM \
             celeriac_taskmeta WHERE done_at < ? AND state IN ({states}) \
             ORDER BY done_at LIMIT {TASK_BATCH}) AND done_at < ? AND state IN ({states})"
        ),
    }
}

/// The query that finds expired chords (the `callback_sent_at` index).
const EXPIRED_CHORDS: &str = "SELECT group_id, size FROM celeriac_chords \
     WHERE callback_sent_at < ? AND done >= size ORDER BY callback_sent_at";

/// The instant `age` ago: what finished before it has expired. `None`
/// when that is before the calendar's start (nothing expires).
pub fn cutoff(age: Duration) -> Option<DateTime<Utc>> {
    let age = chrono::Duration::from_std(age).ok()?;
    Utc::now().checked_sub_signed(age)
}

impl ResultBackend {
    /// Deletes what expired before `before` (see the module docs), batch
    /// by batch until nothing is left.
    pub async fn purge_expired(&self, before: DateTime<Utc>) -> Result<Purged, BackendError> {
        let tasks = self
            .paced(move || async move {
                let n = self.purge_tasks_batch(before).await?;
                Ok((n == TASK_BATCH, n))
            })
            .await?;
        let chords = self.paced(move || self.purge_chords_batch(before)).await?;
        Ok(Purged { tasks, chords })
    }

    /// Runs `batch` until it says nothing is left (each run: whether to go
    /// on, and how many it deleted), with a [`pause`] after each batch that
    /// left more; returns how many it deleted in all.
    async fn paced<F, Fut>(&self, mut batch: F) -> Result<u64, BackendError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<(bool, u64), BackendError>>,
    {
        let backend = self.connection().get_database_backend();
        let mut total = 0;
        loop {
            let began = Instant::now();
            let (more, deleted) = batch().await?;
            total += deleted;
            if !more {
                return Ok(total);
            }
            tokio::time::sleep(pause(backend, began.elapsed())).await;
        }
    }

    /// Deletes up to [`TASK_BATCH`] finished task rows done before `before`.
    async fn purge_tasks_batch(&self, before: DateTime<Utc>) -> Result<u64, BackendError> {
        let db = self.connection();
        let backend = db.get_database_backend();
        let sql = task_batch_sql(backend);
        let cutoffs = vec![before.into(); sql.matches('?').count()];
        let res = db.execute_raw(statement(backend, &sql, cutoffs)).await?;
        Ok(res.rows_affected())
    }

    /// Deletes a batch of chords whose callback was sent before `before`
    /// and whose members all reported, with their member rows and parts:
    /// up to [`CHORD_BATCH`] chords and [`MEMBER_BATCH`] members in one
    /// transaction, or one larger chord, its members a batch at a time
    /// first. Returns whether it found any, and how many chords it deleted
    /// (fewer when another process got there first).
    async fn purge_chords_batch(&self, before: DateTime<Utc>) -> Result<(bool, u64), BackendError> {
        let db = self.connection();
        let backend = db.get_database_backend();
        let rows = db
            .query_all_raw(statement(
                backend,
                &format!("{EXPIRED_CHORDS} LIMIT {CHORD_BATCH}"),
                vec![before.into()],
            ))
            .await?;
        let mut ids = Vec::new();
        let mut members = 0u64;
        for row in &rows {
            let size: i64 = row.try_get("", "size")?;
            let size = u64::try_from(size).unwrap_or(0);
            if !ids.is_empty() && members + size > MEMBER_BATCH {
                break;
            }
            members += size;
            ids.push(row.try_get::<String>("", "group_id")?);
        }
        let [first, ..] = ids.as_slice() else {
            return Ok((false, 0));
        };
        if members > MEMBER_BATCH {
            self.purge_members_of(first).await?;
        }
        let marks = vec!["?"; ids.len()].join(", ");
        let values: Vec<Value> = ids.iter().map(|g| g.as_str().into()).collect();
        let delete = |table: &str| {
            statement(
                backend,
                &format!("DELETE FROM {table} WHERE group_id IN ({marks})"),
                values.clone(),
            )
        };
        // Members, then the chord, then its parts: the order in which
        // `members_done` takes its locks.
        let txn = db.begin().await?;
        txn.execute_raw(delete("celeriac_chord_members")).await?;
        let chords = txn.execute_raw(delete("celeriac_chords")).await?;
        txn.execute_raw(delete("celeriac_chord_parts")).await?;
        txn.commit().await?;
        Ok((true, chords.rows_affected()))
    }

    /// Deletes the member rows of chord `group`, [`MEMBER_BATCH`] per
    /// statement, paced as the other batches.
    async fn purge_members_of(&self, group: &str) -> Result<(), BackendError> {
        let db = self.connection();
        let backend = db.get_database_backend();
        let (sql, values): (String, Vec<Value>) = match backend {
            DbBackend::MySql => (
                format!(
                    "DELETE FROM celeriac_chord_members WHERE group_id = ? \
                     ORDER BY task_id LIMIT {MEMBER_BATCH}"
                ),
                vec![group.into()],
            ),
            _ => (
                format!(
                    "DELETE FROM celeriac_chord_members WHERE group_id = ? AND task_id IN \
                     (SELECT task_id FROM celeriac_chord_members WHERE group_id = ? \
                     ORDER BY task_id LIMIT {MEMBER_BATCH})"
                ),
                vec![group.into(), group.into()],
            ),
        };
        self.paced(|| async {
            let res = db
                .execute_raw(statement(backend, &sql, values.clone()))
                .await?;
            Ok((res.rows_affected() == MEMBER_BATCH, res.rows_affected()))
        })
        .await
        .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sea_orm::Statement;

    /// SQLite finds a batch of expired rows by the `done_at` index and
    /// deletes each by its key, and finds expired chords by
    /// `callback_sent_at`: it never reads rows that are not purged.
    #[tokio::test]
    async fn sqlite_reads_the_indexes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("r.db").display());
        let backend = ResultBackend::connect(&url).await.expect("connect");
        backend.migrate().await.expect("migrate");
        let db = backend.connection();
        for (query, index) in [
            (task_batch_sql(DbBackend::Sqlite).as_str(), "done_at"),
            (EXPIRED_CHORDS, "callback_sent_at"),
        ] {
            let plan: Vec<String> = db
                .query_all_raw(Statement::from_string(
                    DbBackend::Sqlite,
                    format!("EXPLAIN QUERY PLAN {}", query.replace('?', "'2026-01-01'")),
                ))
                .await
                .expect("explain")
                .iter()
                .map(|r| r.try_get::<String>("", "detail").expect("detail"))
                .collect();
            let plan = plan.join("; ");
            assert!(plan.contains(&format!("({index}<")), "{query}: {plan}");
            assert!(
                !plan.contains("SCAN") && !plan.contains("(state="),
                "{plan}"
            );
            if index == "done_at" {
                assert!(plan.contains("(task_id=?)"), "each row by its key: {plan}");
            }
        }
    }
}

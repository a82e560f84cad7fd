//! Results expire: what `result_expires_secs` deletes, in short batches so
//! that a purge of a large backlog never holds the database's writers up
//! for long (on SQLite, workers record outcomes between two batches).
//!
//! - a task row in a final state (SUCCESS, FAILURE, REVOKED, REJECTED)
//!   done before the cutoff (the `done_at` index);
//! - a chord whose callback (or errbacks) was sent before the cutoff,
//!   with its member rows and parts. A chord still waiting for members
//!   stays, however old: a member may yet come (a retry, a far `eta`);
//! - member rows of a group no chord row names (a chord recorded
//!   elsewhere, or removed by hand), done before the cutoff, and parts of
//!   a group that has neither a chord nor member rows.
//!
//! Rows still running, waiting or retrying are never deleted. A revoked
//! task's row goes with the rest, which is also the window in which
//! workers starting up learn of revocations (`result_expires_secs`).

use super::{BackendError, ResultBackend, statement};
use crate::state::TaskState;
use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DbBackend, TransactionTrait, Value};
use std::time::Duration;

/// Task rows deleted per statement.
const TASK_BATCH: u64 = 1_000;
/// Chords deleted per transaction (each with all its members: a chord of
/// 10,000 members is 10,000 rows).
const CHORD_BATCH: u64 = 50;
/// A pause between two batches, so that other writers get their turn.
const PAUSE: Duration = Duration::from_millis(20);

/// What one purge deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    /// Task rows.
    pub tasks: u64,
    /// Chords (their member rows and parts not counted).
    pub chords: u64,
    /// Member rows and parts of groups without a chord row.
    pub orphans: u64,
}

impl Purged {
    /// Whether it deleted nothing.
    pub fn is_empty(&self) -> bool {
        *self == Purged::default()
    }
}

impl ResultBackend {
    /// Deletes what expired before `before` (see the module docs), batch
    /// by batch until nothing is left.
    pub async fn purge_expired(&self, before: DateTime<Utc>) -> Result<Purged, BackendError> {
        let mut purged = Purged::default();
        loop {
            let n = self.purge_tasks_batch(before).await?;
            purged.tasks += n;
            if n < TASK_BATCH {
                break;
            }
            tokio::time::sleep(PAUSE).await;
        }
        loop {
            let n = self.purge_chords_batch(before).await?;
            purged.chords += n;
            if n < CHORD_BATCH {
                break;
            }
            tokio::time::sleep(PAUSE).await;
        }
        purged.orphans = self.purge_orphans(before).await?;
        Ok(purged)
    }

    /// Deletes up to [`TASK_BATCH`] finished task rows done before `before`.
    async fn purge_tasks_batch(&self, before: DateTime<Utc>) -> Result<u64, BackendError> {
        let db = self.connection();
        let backend = db.get_database_backend();
        let states = TaskState::ready_names()
            .map(|s| format!("'{s}'"))
            .join(", ");
        let filter = format!("done_at < ? AND state IN ({states})");
        // MySQL takes no LIMIT in an IN subquery, but has DELETE ... LIMIT.
        let sql = match backend {
            DbBackend::MySql => {
                format!("DELETE FROM celeriac_taskmeta WHERE {filter} LIMIT {TASK_BATCH}")
            }
            _ => format!(
                "DELETE FROM celeriac_taskmeta WHERE task_id IN \
                 (SELECT task_id FROM celeriac_taskmeta WHERE {filter} LIMIT {TASK_BATCH})"
            ),
        };
        let res = db
            .execute_raw(statement(backend, &sql, vec![before.into()]))
            .await?;
        Ok(res.rows_affected())
    }

    /// Deletes up to [`CHORD_BATCH`] chords whose callback was sent before
    /// `before`, with their member rows and parts, in one transaction.
    async fn purge_chords_batch(&self, before: DateTime<Utc>) -> Result<u64, BackendError> {
        let db = self.connection();
        let backend = db.get_database_backend();
        let rows = db
            .query_all_raw(statement(
                backend,
                &format!(
                    "SELECT group_id FROM celeriac_chords WHERE callback_sent_at < ? \
                     LIMIT {CHORD_BATCH}"
                ),
                vec![before.into()],
            ))
            .await?;
        let ids = rows
            .iter()
            .map(|r| r.try_get::<String>("", "group_id"))
            .collect::<Result<Vec<_>, _>>()?;
        if ids.is_empty() {
            return Ok(0);
        }
        let marks = vec!["?"; ids.len()].join(", ");
        let values: Vec<Value> = ids.iter().map(|g| g.as_str().into()).collect();
        let txn = db.begin().await?;
        for table in [
            "celeriac_chord_members",
            "celeriac_chord_parts",
            "celeriac_chords",
        ] {
            txn.execute_raw(statement(
                backend,
                &format!("DELETE FROM {table} WHERE group_id IN ({marks})"),
                values.clone(),
            ))
            .await?;
        }
        txn.commit().await?;
        Ok(u64::try_from(ids.len()).unwrap_or(u64::MAX))
    }

    /// Deletes member rows done before `before` whose group has no chord
    /// row, then parts whose group has neither a chord nor member rows.
    async fn purge_orphans(&self, before: DateTime<Utc>) -> Result<u64, BackendError> {
        let db = self.connection();
        let backend = db.get_database_backend();
        let members = db
            .execute_raw(statement(
                backend,
                "DELETE FROM celeriac_chord_members WHERE done_at < ? AND NOT EXISTS \
                 (SELECT 1 FROM celeriac_chords c WHERE c.group_id = celeriac_chord_members.group_id)",
                vec![before.into()],
            ))
            .await?;
        let parts = db
            .execute_raw(statement(
                backend,
                "DELETE FROM celeriac_chord_parts WHERE NOT EXISTS \
                 (SELECT 1 FROM celeriac_chords c WHERE c.group_id = celeriac_chord_parts.group_id) \
                 AND NOT EXISTS (SELECT 1 FROM celeriac_chord_members m \
                 WHERE m.group_id = celeriac_chord_parts.group_id)",
                vec![],
            ))
            .await?;
        Ok(members.rows_affected() + parts.rows_affected())
    }
}

//! SQL helpers for chord accounting: reading a chord row, and the
//! statement that counts finished members.

use super::{ChordMember, ChordRecord, ChordState};
use crate::backend::BackendError;
pub(super) use crate::backend::statement;
use chrono::{DateTime, Utc};
use sea_orm::DatabaseTransaction;
use sea_orm::{ConnectionTrait, DbBackend, Value as DbValue};

/// `INSERT` that does nothing when the key exists, in each dialect.
pub(super) fn insert_ignore(backend: DbBackend, rest: &str) -> String {
    match backend {
        DbBackend::MySql => format!("INSERT IGNORE INTO {rest}"),
        _ => format!("INSERT INTO {rest} ON CONFLICT DO NOTHING"),
    }
}

pub(super) const SELECT_CHORD: &str = "SELECT group_id, size, done, state, callback, callback_id, fired_by, \
     fired_at, callback_sent_at FROM celeriac_chords WHERE group_id = ?";

pub(super) fn read_chord(row: &sea_orm::QueryResult) -> Result<ChordRecord, BackendError> {
    let group_id: String = row.try_get("", "group_id")?;
    let corrupt = |reason: String| BackendError::Corrupt {
        task_id: group_id.clone(),
        reason,
    };
    let state: String = row.try_get("", "state")?;
    let callback: String = row.try_get("", "callback")?;
    let count = |v: i64| u64::try_from(v).unwrap_or(0);
    Ok(ChordRecord {
        size: count(row.try_get("", "size")?),
        done: count(row.try_get("", "done")?),
        state: ChordState::parse(&state)
            .ok_or_else(|| corrupt(format!("unknown chord state {state:?}")))?,
        callback: serde_json::from_str(&callback).map_err(|e| corrupt(format!("callback: {e}")))?,
        callback_id: row.try_get("", "callback_id")?,
        fired_by: row.try_get("", "fired_by")?,
        fired_at: row.try_get("", "fired_at")?,
        callback_sent_at: row.try_get("", "callback_sent_at")?,
        group_id: group_id.clone(),
    })
}
/// Adds `new` distinct members to a chord's count and, if it is PENDING,
/// fails it (a new member failed: `failed` claims it) or completes it (the
/// count reaches the size: `last` claims it). One statement: the row's
/// lock makes concurrent reports of one chord take turns, and each sees
/// the count the previous one left.
pub(super) async fn count_members<C: ConnectionTrait>(
    db: &C,
    group_id: &str,
    new: usize,
    failed: Option<&String>,
    last: &ChordMember,
    now: DateTime<Utc>,
) -> Result<(), BackendError> {
    let backend = db.get_database_backend();
    let new = i64::try_from(new).unwrap_or(i64::MAX);
    // Every assignment reads the old values on PostgreSQL and SQLite;
    // MySQL reads the ones already assigned, so `done` comes last and the
    // others do not read each other.
    let (sql, values): (&str, Vec<DbValue>) = match failed {
        Some(claimant) => (
            "UPDATE celeriac_chords SET \
             fired_by = CASE WHEN state = 'PENDING' THEN ? ELSE fired_by END, \
             fired_at = CASE WHEN state = 'PENDING' THEN ? ELSE fired_at END, \
             state = CASE WHEN state = 'PENDING' THEN 'FAILED' ELSE state END, \
             done = done + ? WHERE group_id = ?",
            vec![
                claimant.clone().into(),
                now.into(),
                new.into(),
                group_id.into(),
            ],
        ),
        None => (
            "UPDATE celeriac_chords SET \
             fired_by = CASE WHEN state = 'PENDING' AND done + ? >= size THEN ? ELSE fired_by END, \
             fired_at = CASE WHEN state = 'PENDING' AND done + ? >= size THEN ? ELSE fired_at END, \
             state = CASE WHEN state = 'PENDING' AND done + ? >= size THEN 'COMPLETE' ELSE state END, \
             done = done + ? WHERE group_id = ?",
            vec![
                new.into(),
                last.task_id.clone().into(),
                new.into(),
                now.into(),
                new.into(),
                new.into(),
                group_id.into(),
            ],
        ),
    };
    db.execute_raw(statement(backend, sql, values)).await?;
    Ok(())
}

/// Most member rows in one `INSERT` (six parameters each, well under
/// SQLite's limit of 32,766).
const MEMBERS_PER_INSERT: usize = 1_000;

/// What inserting one chord's member rows did.
pub(super) struct Inserted<'a> {
    /// How many rows were new.
    pub(super) added: usize,
    /// The first new member that failed.
    pub(super) failed: Option<&'a String>,
    /// The new members that succeeded, where the database says which rows
    /// it inserted (`RETURNING`: PostgreSQL and SQLite); `None` on MySQL.
    pub(super) new_successes: Option<Vec<&'a ChordMember>>,
}

/// Inserts the member rows of one chord that are not there yet, `members`
/// sorted by task id (the lock order) and without repeats. Successes go in
/// multi-row statements; a failure goes alone, so that a failed copy of a
/// member already counted as a success does not fail the chord.
pub(super) async fn insert_members<'a>(
    txn: &DatabaseTransaction,
    members: &[&'a ChordMember],
    now: DateTime<Utc>,
) -> Result<Inserted<'a>, BackendError> {
    let returning = txn.get_database_backend() != DbBackend::MySql;
    let mut out = Inserted {
        added: 0,
        failed: None,
        new_successes: returning.then(Vec::new),
    };
    for run in members.chunk_by(|a, b| a.ok && b.ok) {
        for rows in run.chunks(MEMBERS_PER_INSERT) {
            let (new, ids) = insert_rows(txn, rows, now, returning).await?;
            if new > 0 && out.failed.is_none() && !rows[0].ok {
                out.failed = Some(&rows[0].task_id);
            }
            if let (Some(ids), Some(successes)) = (ids, &mut out.new_successes) {
                let ids: std::collections::HashSet<String> = ids.into_iter().collect();
                successes.extend(rows.iter().filter(|m| m.ok && ids.contains(&m.task_id)));
            }
            out.added += new;
        }
    }
    Ok(out)
}

/// Inserts `rows` where absent; returns how many were new and, with
/// `returning`, their task ids.
async fn insert_rows(
    txn: &DatabaseTransaction,
    rows: &[&ChordMember],
    now: DateTime<Utc>,
    returning: bool,
) -> Result<(usize, Option<Vec<String>>), BackendError> {
    let backend = txn.get_database_backend();
    let marks = vec!["(?, ?, ?, ?, ?, ?)"; rows.len()].join(", ");
    let mut sql = insert_ignore(
        backend,
        &format!(
            "celeriac_chord_members (group_id, task_id, idx, ok, done_at, result) VALUES {marks}"
        ),
    );
    if returning {
        sql.push_str(" RETURNING task_id");
    }
    let mut values: Vec<DbValue> = Vec::with_capacity(rows.len() * 6);
    for m in rows {
        values.extend([
            m.group_id.clone().into(),
            m.task_id.clone().into(),
            i32::try_from(m.index).unwrap_or(i32::MAX).into(),
            m.ok.into(),
            now.into(),
            m.result.clone().into(),
        ]);
    }
    if returning {
        let ids = txn
            .query_all_raw(statement(backend, &sql, values))
            .await?
            .iter()
            .map(|r| r.try_get::<String>("", "task_id"))
            .collect::<Result<Vec<_>, _>>()?;
        return Ok((ids.len(), Some(ids)));
    }
    let res = txn.execute_raw(statement(backend, &sql, values)).await?;
    Ok((
        usize::try_from(res.rows_affected()).unwrap_or(usize::MAX),
        None,
    ))
}

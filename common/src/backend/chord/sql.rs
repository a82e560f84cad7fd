//! SQL helpers for chord accounting: reading a chord row, and the
//! statement that counts finished members.

use super::{ChordMember, ChordRecord, ChordState};
use crate::backend::BackendError;
pub(super) use crate::backend::statement;
use chrono::{DateTime, Utc};
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

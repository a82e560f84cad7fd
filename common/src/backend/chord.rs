//! Chord accounting: which members of a chord's header have finished, and
//! which one call completed (or failed) the chord, exactly once.
//!
//! `celeriac_chords` holds one row per chord (its group id, size, the body
//! signature to call, and the callback's task id, fixed when the chord is
//! created); `celeriac_chord_members` one row per finished member, keyed by
//! `(group_id, task_id)`. [`ResultBackend::members_done`] inserts each
//! member's row if absent and, only for rows it inserted, adds to the
//! chord's `done` count and moves it from PENDING to COMPLETE (count reached
//! its size) or FAILED (a member failed) in one conditional UPDATE, under
//! the chord row's lock, in one transaction. So:
//!
//! - a member that finishes twice (redelivery, a retry) counts once: its
//!   second insert finds the row and changes nothing;
//! - the count never decreases and counts distinct members only, so it never
//!   reaches the size early;
//! - the move out of PENDING happens once; the member whose call made it is
//!   recorded in `fired_by`, and that member (in that call, or in any later
//!   call for the same member, after a crash) is told it is the claimant.
//!
//! See `docs/workflows.md` for how a worker uses it.

use super::{BackendError, ResultBackend};
use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DbBackend, Statement, TransactionTrait, Value as DbValue};
use serde_json::Value;

/// `celeriac_chords`: one row per chord.
pub mod chord_entity {
    use sea_orm::entity::prelude::*;

    /// A chord: its header's group id, size, progress and callback.
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "celeriac_chords")]
    #[allow(missing_docs)]
    pub struct Model {
        #[sea_orm(
            primary_key,
            auto_increment = false,
            column_type = "String(StringLen::N(191))"
        )]
        pub group_id: String,
        /// How many members must finish.
        pub size: i64,
        /// How many distinct members have finished.
        pub done: i64,
        /// PENDING, COMPLETE or FAILED.
        #[sea_orm(column_type = "String(StringLen::N(16))")]
        pub state: String,
        /// The body signature (Celery's dict form), JSON.
        #[sea_orm(column_type = "Text")]
        pub callback: String,
        /// The task id the callback is sent with.
        #[sea_orm(column_type = "String(StringLen::N(191))")]
        pub callback_id: String,
        /// The member whose outcome completed or failed the chord.
        #[sea_orm(column_type = "String(StringLen::N(191))", nullable)]
        pub fired_by: Option<String>,
        #[sea_orm(nullable)]
        pub fired_at: Option<DateTimeUtc>,
        /// When the claimant reported the callback (or errbacks) sent.
        #[sea_orm(nullable)]
        pub callback_sent_at: Option<DateTimeUtc>,
        pub created_at: DateTimeUtc,
    }

    /// No relations.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `celeriac_chord_members`: one row per finished header member.
pub mod member_entity {
    use sea_orm::entity::prelude::*;

    /// A finished member of a chord's header.
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "celeriac_chord_members")]
    #[allow(missing_docs)]
    pub struct Model {
        #[sea_orm(
            primary_key,
            auto_increment = false,
            column_type = "String(StringLen::N(191))"
        )]
        pub group_id: String,
        #[sea_orm(
            primary_key,
            auto_increment = false,
            column_type = "String(StringLen::N(191))"
        )]
        pub task_id: String,
        /// The member's position in the header (its `group_index`).
        pub idx: i32,
        /// Whether it succeeded.
        pub ok: bool,
        pub done_at: DateTimeUtc,
    }

    /// No relations.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// A chord to record before its header's members are sent.
#[derive(Debug, Clone, PartialEq)]
pub struct NewChord {
    /// The header's group id (every member's `group` header).
    pub group_id: String,
    /// How many members must finish (Celery's `chord_size`); at least 1.
    pub size: u64,
    /// The body signature, in Celery's dict form.
    pub callback: Value,
    /// The task id the body is sent with (its `options.task_id`).
    pub callback_id: String,
}

/// A header member that reached a final state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChordMember {
    /// The chord's group id (the member's `group` header).
    pub group_id: String,
    /// The member's task id.
    pub task_id: String,
    /// Its `group_index`.
    pub index: u32,
    /// SUCCESS (true) or a final FAILURE / REVOKED / REJECTED (false).
    /// RETRY is not final: do not report it.
    pub ok: bool,
}

/// Where a chord stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChordState {
    /// Members are still running.
    Pending,
    /// Every member succeeded: the callback is (to be) sent.
    Complete,
    /// A member failed: the callback's errbacks are (to be) called.
    Failed,
}

impl ChordState {
    fn as_str(self) -> &'static str {
        match self {
            ChordState::Pending => "PENDING",
            ChordState::Complete => "COMPLETE",
            ChordState::Failed => "FAILED",
        }
    }

    fn parse(s: &str) -> Option<ChordState> {
        [
            ChordState::Pending,
            ChordState::Complete,
            ChordState::Failed,
        ]
        .into_iter()
        .find(|c| c.as_str() == s)
    }
}

/// A chord's row, as read back.
#[derive(Debug, Clone, PartialEq)]
pub struct ChordRecord {
    /// The header's group id.
    pub group_id: String,
    /// Members to finish.
    pub size: u64,
    /// Distinct members finished.
    pub done: u64,
    /// PENDING, COMPLETE or FAILED.
    pub state: ChordState,
    /// The body signature (Celery's dict form).
    pub callback: Value,
    /// The body's task id.
    pub callback_id: String,
    /// The member that completed or failed it.
    pub fired_by: Option<String>,
    /// When.
    pub fired_at: Option<DateTime<Utc>>,
    /// When the claimant reported the callback or errbacks sent.
    pub callback_sent_at: Option<DateTime<Utc>>,
}

/// What one member's report did to its chord.
#[derive(Debug, Clone, PartialEq)]
pub struct ChordProgress {
    /// The chord after the report.
    pub chord: ChordRecord,
    /// Whether this member is the one whose outcome completed or failed
    /// the chord (now, or in an earlier call for the same member).
    pub claimed: bool,
}

/// What the caller must do after reporting a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChordAction {
    /// Nothing: members are running, or another member claimed the chord,
    /// or the claimant already sent what it had to.
    Nothing,
    /// Send the callback (task id `callback_id`) with the members' results
    /// in order, then call [`ResultBackend::mark_callback_sent`].
    SendCallback,
    /// Fail the callback (a member failed) and call its errbacks, then
    /// call [`ResultBackend::mark_callback_sent`].
    FailCallback,
}

impl ChordProgress {
    /// What the reporting member must do now.
    pub fn action(&self) -> ChordAction {
        if !self.claimed || self.chord.callback_sent_at.is_some() {
            return ChordAction::Nothing;
        }
        match self.chord.state {
            ChordState::Pending => ChordAction::Nothing,
            ChordState::Complete => ChordAction::SendCallback,
            ChordState::Failed => ChordAction::FailCallback,
        }
    }
}

/// A chord that cannot be recorded as given.
#[derive(Debug, thiserror::Error)]
pub enum ChordError {
    /// A chord needs at least one member.
    #[error("chord {0} has an empty header")]
    EmptyHeader(String),
    /// The database failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
}

/// `sql` with `?` placeholders as the backend wants them (`$1`.. on PostgreSQL).
fn placeholders(backend: DbBackend, sql: &str) -> String {
    if backend != DbBackend::Postgres {
        return sql.to_owned();
    }
    let mut out = String::with_capacity(sql.len() + 8);
    let mut n = 0;
    for c in sql.chars() {
        if c == '?' {
            n += 1;
            out.push('$');
            out.push_str(&n.to_string());
        } else {
            out.push(c);
        }
    }
    out
}

fn statement(backend: DbBackend, sql: &str, values: Vec<DbValue>) -> Statement {
    Statement::from_sql_and_values(backend, placeholders(backend, sql), values)
}

/// `INSERT` that does nothing when the key exists, in each dialect.
fn insert_ignore(backend: DbBackend, rest: &str) -> String {
    match backend {
        DbBackend::MySql => format!("INSERT IGNORE INTO {rest}"),
        _ => format!("INSERT INTO {rest} ON CONFLICT DO NOTHING"),
    }
}

const SELECT_CHORD: &str = "SELECT group_id, size, done, state, callback, callback_id, fired_by, \
     fired_at, callback_sent_at FROM celeriac_chords WHERE group_id = ?";

fn read_chord(row: &sea_orm::QueryResult) -> Result<ChordRecord, BackendError> {
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

impl ResultBackend {
    /// Records a chord before its members are sent. Idempotent: a chord
    /// already recorded under `group_id` is left as it is (returns false).
    pub async fn create_chord(&self, chord: &NewChord) -> Result<bool, ChordError> {
        if chord.size == 0 {
            return Err(ChordError::EmptyHeader(chord.group_id.clone()));
        }
        let db = self.connection();
        let backend = db.get_database_backend();
        let sql = insert_ignore(
            backend,
            "celeriac_chords (group_id, size, done, state, callback, callback_id, created_at) \
             VALUES (?, ?, 0, 'PENDING', ?, ?, ?)",
        );
        let size = i64::try_from(chord.size).unwrap_or(i64::MAX);
        let res = db
            .execute_raw(statement(
                backend,
                &sql,
                vec![
                    chord.group_id.clone().into(),
                    size.into(),
                    chord.callback.to_string().into(),
                    chord.callback_id.clone().into(),
                    Utc::now().into(),
                ],
            ))
            .await
            .map_err(BackendError::from)?;
        Ok(res.rows_affected() == 1)
    }

    /// The chord recorded under `group_id`.
    pub async fn chord(&self, group_id: &str) -> Result<Option<ChordRecord>, BackendError> {
        let db = self.connection();
        let backend = db.get_database_backend();
        db.query_one_raw(statement(backend, SELECT_CHORD, vec![group_id.into()]))
            .await?
            .map(|row| read_chord(&row))
            .transpose()
    }

    /// The finished members of a chord as `(index, task_id, ok)`, by index:
    /// the order in which the callback receives their results.
    pub async fn chord_members(
        &self,
        group_id: &str,
    ) -> Result<Vec<(u32, String, bool)>, BackendError> {
        let db = self.connection();
        let backend = db.get_database_backend();
        let rows = db
            .query_all_raw(statement(
                backend,
                "SELECT idx, task_id, ok FROM celeriac_chord_members WHERE group_id = ? \
                 ORDER BY idx, task_id",
                vec![group_id.into()],
            ))
            .await?;
        rows.iter()
            .map(|r| {
                let idx: i32 = r.try_get("", "idx")?;
                Ok((
                    u32::try_from(idx).unwrap_or(0),
                    r.try_get("", "task_id")?,
                    r.try_get("", "ok")?,
                ))
            })
            .collect()
    }

    /// Reports one finished member; see [`ResultBackend::members_done`].
    pub async fn member_done(
        &self,
        member: ChordMember,
    ) -> Result<Option<ChordProgress>, BackendError> {
        Ok(self.members_done(vec![member]).await?.pop().flatten())
    }

    /// Reports finished members (of one chord or several) in one
    /// transaction, and returns, for each member in the order given, its
    /// chord's progress, or `None` when no chord is recorded under its group
    /// id. A member already reported changes nothing; the first report of a
    /// failed member fails a PENDING chord; the report that brings the count
    /// of distinct members to the size completes it. Exactly one member ever
    /// gets `claimed` for a chord (and gets it again if reported again).
    pub async fn members_done(
        &self,
        members: Vec<ChordMember>,
    ) -> Result<Vec<Option<ChordProgress>>, BackendError> {
        if members.is_empty() {
            return Ok(Vec::new());
        }
        // Rows are locked in one order, (group, task), by every caller, each
        // chord's member rows before the chord's row: concurrent batches
        // wait for each other but cannot deadlock.
        let mut order: Vec<usize> = (0..members.len()).collect();
        order.sort_by(|&a, &b| {
            (&members[a].group_id, &members[a].task_id)
                .cmp(&(&members[b].group_id, &members[b].task_id))
        });
        let txn = self.connection().begin().await?;
        let backend = txn.get_database_backend();
        let insert = insert_ignore(
            backend,
            "celeriac_chord_members (group_id, task_id, idx, ok, done_at) VALUES (?, ?, ?, ?, ?)",
        );
        let now = Utc::now();
        let mut chords = std::collections::HashMap::new();
        let mut start = 0;
        while start < order.len() {
            let group = &members[order[start]].group_id;
            let end = order[start..]
                .iter()
                .position(|&i| members[i].group_id != *group)
                .map_or(order.len(), |n| start + n);
            let mut new = Vec::new();
            for &i in &order[start..end] {
                let m = &members[i];
                let res = txn
                    .execute_raw(statement(
                        backend,
                        &insert,
                        vec![
                            m.group_id.clone().into(),
                            m.task_id.clone().into(),
                            i32::try_from(m.index).unwrap_or(i32::MAX).into(),
                            m.ok.into(),
                            now.into(),
                        ],
                    ))
                    .await?;
                if res.rows_affected() == 1 {
                    new.push(m);
                }
            }
            if let Some(last) = new.last() {
                let failed = new.iter().find(|m| !m.ok);
                count_members(
                    &txn,
                    group,
                    new.len(),
                    failed.map(|m| &m.task_id),
                    last,
                    now,
                )
                .await?;
            }
            let row = txn
                .query_one_raw(statement(backend, SELECT_CHORD, vec![group.clone().into()]))
                .await?;
            chords.insert(group.clone(), row.map(|r| read_chord(&r)).transpose()?);
            start = end;
        }
        txn.commit().await?;
        Ok(members
            .iter()
            .map(|m| {
                chords.get(&m.group_id).cloned().flatten().map(|chord| {
                    let claimed = chord.fired_by.as_deref() == Some(m.task_id.as_str());
                    ChordProgress { chord, claimed }
                })
            })
            .collect())
    }

    /// Records that the claimant sent the callback (or failed it and called
    /// its errbacks), so a later report of the same member does not send it
    /// again. Returns whether this call recorded it.
    pub async fn mark_callback_sent(&self, group_id: &str) -> Result<bool, BackendError> {
        let db = self.connection();
        let backend = db.get_database_backend();
        let res = db
            .execute_raw(statement(
                backend,
                "UPDATE celeriac_chords SET callback_sent_at = ? \
                 WHERE group_id = ? AND state <> 'PENDING' AND callback_sent_at IS NULL",
                vec![Utc::now().into(), group_id.into()],
            ))
            .await?;
        Ok(res.rows_affected() == 1)
    }

    /// Deletes chords (and their members) created before `before`; returns
    /// how many chords.
    pub async fn purge_chords_before(&self, before: DateTime<Utc>) -> Result<u64, BackendError> {
        let db = self.connection();
        let backend = db.get_database_backend();
        db.execute_raw(statement(
            backend,
            "DELETE FROM celeriac_chord_members WHERE group_id IN \
             (SELECT group_id FROM celeriac_chords WHERE created_at < ?)",
            vec![before.into()],
        ))
        .await?;
        let res = db
            .execute_raw(statement(
                backend,
                "DELETE FROM celeriac_chords WHERE created_at < ?",
                vec![before.into()],
            ))
            .await?;
        Ok(res.rows_affected())
    }
}

/// Adds `new` distinct members to a chord's count and, if it is PENDING,
/// fails it (a new member failed: `failed` claims it) or completes it (the
/// count reaches the size: `last` claims it). One statement: the row's
/// lock makes concurrent reports of one chord take turns, and each sees
/// the count the previous one left.
async fn count_members<C: ConnectionTrait>(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_placeholders_are_numbered() {
        assert_eq!(
            placeholders(DbBackend::Postgres, "a = ? AND b = ?"),
            "a = $1 AND b = $2"
        );
        assert_eq!(placeholders(DbBackend::MySql, "a = ?"), "a = ?");
    }

    #[test]
    fn only_the_claimant_acts_and_only_once() {
        let chord = ChordRecord {
            group_id: "g".into(),
            size: 2,
            done: 2,
            state: ChordState::Complete,
            callback: Value::Null,
            callback_id: "cb".into(),
            fired_by: Some("t2".into()),
            fired_at: None,
            callback_sent_at: None,
        };
        let progress = |claimed, chord: &ChordRecord| ChordProgress {
            chord: chord.clone(),
            claimed,
        };
        assert_eq!(progress(true, &chord).action(), ChordAction::SendCallback);
        assert_eq!(progress(false, &chord).action(), ChordAction::Nothing);
        let failed = ChordRecord {
            state: ChordState::Failed,
            ..chord.clone()
        };
        assert_eq!(progress(true, &failed).action(), ChordAction::FailCallback);
        let sent = ChordRecord {
            callback_sent_at: Some(Utc::now()),
            ..chord
        };
        assert_eq!(progress(true, &sent).action(), ChordAction::Nothing);
    }
}

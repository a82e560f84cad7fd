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

mod members;
mod parts;
mod sql;

use super::{BackendError, ResultBackend};
use chrono::{DateTime, Utc};
use sea_orm::ConnectionTrait;
use serde_json::Value;
use sql::{SELECT_CHORD, insert_ignore, read_chord, statement};

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
        /// Its result (JSON text), when it was reported with it.
        #[sea_orm(column_type = "Text", nullable)]
        pub result: Option<String>,
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
    /// Its result as JSON text, kept with the member so the callback's
    /// arguments are read from one table ([`ResultBackend::chord_results`]);
    /// `None`: read from the member's task row instead.
    pub result: Option<String>,
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

    /// The chords recorded under `group_ids` (one query; keep the list
    /// short enough for the database's bound-parameter limit).
    pub(in crate::backend) async fn chords_in(
        &self,
        group_ids: &[String],
    ) -> Result<Vec<ChordRecord>, BackendError> {
        if group_ids.is_empty() {
            return Ok(Vec::new());
        }
        let db = self.connection();
        let backend = db.get_database_backend();
        let marks = vec!["?"; group_ids.len()].join(", ");
        let sql = SELECT_CHORD.replace("group_id = ?", &format!("group_id IN ({marks})"));
        let values = group_ids.iter().map(|g| g.as_str().into()).collect();
        db.query_all_raw(statement(backend, &sql, values))
            .await?
            .iter()
            .map(read_chord)
            .collect()
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
}

#[cfg(test)]
mod tests;

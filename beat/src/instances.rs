//! `max_instances`: how many of an entry's runs are unfinished, as the
//! result backend records them.
//!
//! Beat remembers the task ids of each entry's recent runs (they are
//! deterministic, see [`crate::dispatch`]); before sending a run it looks
//! those ids up in `celeriac_taskmeta`. A run counts as unfinished until its
//! row has a final state (SUCCESS, FAILURE, REVOKED, REJECTED), or until its
//! `expires` has passed: a worker revokes an expired message rather than
//! running it, so a run whose message was lost or purged never blocks an
//! entry that has `expires`. Without `expires`, such a run blocks the entry
//! until its row is written (for instance by `celeriac revoke ID`).

use std::collections::HashSet;

use chrono::{DateTime, TimeDelta, Utc};
use sea_orm::{ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QuerySelect};
use uuid::Uuid;

use celeriac_common::backend::entity::{Column, Entity};

use crate::run_state::RecentRun;

const FINAL_STATES: [&str; 4] = ["SUCCESS", "FAILURE", "REVOKED", "REJECTED"];

/// Of `ids`, those the result backend records as finished.
pub async fn finished<C: ConnectionTrait>(db: &C, ids: &[Uuid]) -> Result<HashSet<Uuid>, DbErr> {
    let mut out = HashSet::new();
    for chunk in ids.chunks(500) {
        let rows: Vec<String> = Entity::find()
            .select_only()
            .column(Column::TaskId)
            .filter(Column::TaskId.is_in(chunk.iter().map(Uuid::to_string)))
            .filter(Column::State.is_in(FINAL_STATES))
            .into_tuple()
            .all(db)
            .await?;
        out.extend(rows.iter().filter_map(|id| Uuid::parse_str(id).ok()));
    }
    Ok(out)
}

/// How many of `recent` still count against `max_instances` at `now`:
/// not finished, and not expired (`expires_secs` after their fire time).
pub fn running(
    recent: &[RecentRun],
    finished: &HashSet<Uuid>,
    expires_secs: Option<f64>,
    now: DateTime<Utc>,
) -> usize {
    let expiry =
        expires_secs.and_then(|s| TimeDelta::from_std(std::time::Duration::from_secs_f64(s)).ok());
    recent
        .iter()
        .filter(|r| !finished.contains(&r.id))
        .filter(|r| expiry.is_none_or(|e| r.at + e > now))
        .count()
}

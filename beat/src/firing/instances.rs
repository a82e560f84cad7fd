//! `max_instances`: how many of an entry's runs are unfinished, as the
//! result backend records them.
//!
//! Beat remembers the task ids of each entry's recent runs (they are
//! deterministic, see [`crate::firing::dispatch`]); before sending a run it looks
//! those ids up in `celeriac_taskmeta`. A run counts as unfinished until its
//! row has a final state (SUCCESS, FAILURE, REVOKED, REJECTED), or until its
//! `expires` has passed: a worker revokes an expired message rather than
//! running it, so a run whose message was lost or purged never blocks an
//! entry that has `expires`. Without `expires`, such a run blocks the entry
//! until its row is written (for instance by `celeriac revoke ID`).

use std::collections::HashSet;

use chrono::{DateTime, TimeDelta, Utc};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QuerySelect,
};
use uuid::Uuid;

use celeriac_common::TaskState;
use celeriac_common::backend::entity::{Column, Entity};

use crate::events::{BeatEvent, EventKind, Events};
use crate::firing::plan::Planned;
use crate::firing::run_state::{RECENT_MAX, RecentRun};
use crate::firing::scheduler::Scheduler;

/// Of `ids`, those the result backend records as finished.
pub async fn finished<C: ConnectionTrait>(db: &C, ids: &[Uuid]) -> Result<HashSet<Uuid>, DbErr> {
    let mut out = HashSet::new();
    for chunk in ids.chunks(500) {
        let rows: Vec<String> = Entity::find()
            .select_only()
            .column(Column::TaskId)
            .filter(Column::TaskId.is_in(chunk.iter().map(Uuid::to_string)))
            .filter(Column::State.is_in(TaskState::ready_names()))
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
    let expiry = expires_secs
        .and_then(celeriac_common::seconds::capped)
        .and_then(|s| TimeDelta::from_std(s).ok());
    recent
        .iter()
        .filter(|r| !finished.contains(&r.id))
        .filter(|r| expiry.is_none_or(|e| r.at.checked_add_signed(e).is_none_or(|t| t > now)))
        .count()
}

/// Holds planned runs of entries that have `max_instances` unfinished
/// runs. A failed lookup holds nothing (the run is sent).
pub(crate) async fn hold_busy(
    scheduler: &mut Scheduler,
    db: &DatabaseConnection,
    events: &Events,
    planned: &mut [Planned],
    now: DateTime<Utc>,
) -> usize {
    let mut ids: Vec<Uuid> = Vec::new();
    for p in planned.iter() {
        let limited = scheduler
            .firing(&p.name)
            .is_some_and(|f| f.max_instances > 0);
        if limited && p.fire.is_some_and(|f| !f.resend) {
            ids.extend(scheduler.recent(&p.name).iter().map(|r| r.id));
        }
    }
    if ids.is_empty() {
        return 0;
    }
    let finished = match finished(db, &ids).await {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(
                error = %e,
                "cannot read the result backend for max_instances; not holding runs"
            );
            return 0;
        }
    };
    let mut held = 0;
    for p in planned.iter_mut() {
        let (Some(fire), Some(firing), Some(entry)) =
            (p.fire, scheduler.firing(&p.name), scheduler.entry(&p.name))
        else {
            continue;
        };
        if firing.max_instances == 0 || fire.resend {
            continue;
        }
        let recent = scheduler.recent(&p.name);
        let running = running(recent, &finished, entry.expires_secs(), now);
        let unfinished: HashSet<Uuid> = recent
            .iter()
            .map(|r| r.id)
            .filter(|id| !finished.contains(id))
            .collect();
        let (name, task) = (p.name.to_string(), entry.task.to_string());
        scheduler.set_unfinished(&p.name, &unfinished);
        // A row edited by hand past the largest value acts as that value.
        if running >= (firing.max_instances as usize).min(RECENT_MAX) {
            scheduler.hold(&p.name);
            p.fire = None;
            held += 1;
            let mut ev = BeatEvent::new(EventKind::Held, now).entry(&name, &task);
            ev.scheduled_at = Some(fire.at);
            ev.count = Some(running as u64);
            events.emit(ev);
        }
    }
    held
}

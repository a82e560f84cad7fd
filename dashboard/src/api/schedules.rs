//! Schedules: beat's entries (the schedule file's, when the dashboard is
//! given it, and the database's) with their trigger, next five fire times,
//! run state, last outcome and a grid of recent runs; the beat that leads;
//! pause, resume and run-now, written to the database as
//! `celeriac-beat schedule pause|resume|run-now` writes them.
//!
//! A run's task id is derived from the entry's name and its fire time
//! (`celeriac_beat::firing::dispatch::task_id`), so the recent runs are
//! found by primary key: the trigger's fire times before now, their ids,
//! one `IN (...)` lookup.

use super::instant;
use crate::auth::Authorized;
use crate::error::ApiError;
use crate::state::AppState;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use celeriac_beat::firing::dispatch::{run_now_task_id, task_id};
use celeriac_beat::firing::run_state::{self, RunState};
use celeriac_beat::leadership::lease::read_lease;
use celeriac_beat::schedule::entry::Entry;
use celeriac_beat::schedule::file_source;
use celeriac_beat::schedule::trigger_input::describe;
use celeriac_beat::trigger::{Calendars, Schedule, Trigger, preview};
use celeriac_common::backend::entity::{Column, Entity};
use chrono::{DateTime, TimeDelta, Utc};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QuerySelect};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;

/// Fire times previewed, and recent runs shown, per entry.
const NEXT_FIRES: usize = 5;
const RECENT_RUNS: usize = 24;
/// Fire times walked at most per look-back window.
const WALK_MAX: usize = 5_000;
/// Primary keys per `IN (...)` lookup.
const IDS_PER_QUERY: usize = 500;

fn text_error(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("schedule file: {e}"),
    )
}

/// The last `n` fire times at or before `now`: walked forward from an hour
/// ago, a day, a week, a month or a year ago, the first window that holds
/// `n` (or the year).
fn recent_fires(trigger: &Trigger, now: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
    let mut fires = Vec::new();
    for days in [0, 1, 7, 31, 366] {
        let span = if days == 0 {
            TimeDelta::hours(1)
        } else {
            TimeDelta::days(days)
        };
        fires.clear();
        let mut from = now - span;
        while let Some(t) = trigger.next_after(from) {
            if t > now || fires.len() >= WALK_MAX {
                break;
            }
            fires.push(t);
            from = t;
        }
        if fires.len() >= n {
            break;
        }
    }
    let skip = fires.len().saturating_sub(n);
    fires.split_off(skip)
}

/// States of the given task ids (by primary key).
async fn states_of(
    state: &AppState,
    ids: Vec<String>,
) -> Result<HashMap<String, String>, ApiError> {
    let mut out = HashMap::new();
    for chunk in ids.chunks(IDS_PER_QUERY) {
        let rows: Vec<(String, String)> = Entity::find()
            .select_only()
            .columns([Column::TaskId, Column::State])
            .filter(Column::TaskId.is_in(chunk.iter().cloned()))
            .into_tuple()
            .all(state.backend.connection())
            .await?;
        out.extend(rows);
    }
    Ok(out)
}

struct Listed {
    entry: Option<Entry>,
    name: String,
    run: RunState,
    compiled: Option<Trigger>,
    recent: Vec<(DateTime<Utc>, String)>,
}

/// `GET /api/schedules`.
pub(crate) async fn list(State(state): State<Arc<AppState>>) -> Result<Json<Value>, ApiError> {
    let file = file_source::load_or_empty(state.schedule_file.as_deref()).map_err(text_error)?;
    let calendars: Calendars = state.store.calendars().await?.overlaid(&file.calendars());
    let (_, db_entries) = state.store.load().await?;
    let mut runs = run_state::load_all(state.store.db()).await?;
    let mut entries: Vec<Entry> = file.entries;
    let in_file: Vec<String> = entries.iter().map(|e| e.name.clone()).collect();
    entries.extend(
        db_entries
            .into_iter()
            .filter(|e| !in_file.contains(&e.name)),
    );
    let now = Utc::now();
    let mut listed: Vec<Listed> = entries
        .into_iter()
        .map(|e| {
            let compiled = e.compile_lenient(&calendars).ok().map(|(t, _)| t);
            let run = runs.remove(&e.name).unwrap_or_default();
            let recent = compiled
                .as_ref()
                .map(|t| recent_fires(t, now, RECENT_RUNS))
                .unwrap_or_default()
                .into_iter()
                .filter(|t| e.created_at.is_none_or(|c| *t >= c))
                .map(|t| (t, task_id(&e.name, t).to_string()))
                .collect();
            Listed {
                name: e.name.clone(),
                entry: Some(e),
                run,
                compiled,
                recent,
            }
        })
        .collect();
    // Run state of entries this dashboard does not see the definition of
    // (a schedule file it was not given).
    listed.extend(runs.into_iter().map(|(name, run)| Listed {
        entry: None,
        name,
        run,
        compiled: None,
        recent: Vec::new(),
    }));
    listed.sort_by(|a, b| a.name.cmp(&b.name));
    let mut ids: Vec<String> = listed
        .iter()
        .flat_map(|l| l.recent.iter().map(|(_, id)| id.clone()))
        .collect();
    ids.extend(
        listed
            .iter()
            .filter_map(|l| l.run.last_task_id.map(|u| u.to_string())),
    );
    let states = states_of(&state, ids).await?;
    let schedules: Vec<Value> = listed.iter().map(|l| row(l, &states, now)).collect();
    let lease = read_lease(state.store.db(), "default").await?;
    let leader = lease.filter(|l| !l.expires_in.is_zero()).map(|l| {
        json!({"holder": l.holder, "token": l.token, "expires_in_secs": l.expires_in.as_secs_f64()})
    });
    Ok(Json(json!({ "schedules": schedules, "leader": leader })))
}

fn row(l: &Listed, states: &HashMap<String, String>, now: DateTime<Utc>) -> Value {
    let at = |t: Option<DateTime<Utc>>| t.map(instant);
    let enabled = l.entry.as_ref().is_none_or(|e| e.enabled);
    let next: Vec<String> = match (&l.compiled, enabled) {
        (Some(t), true) => {
            let from = l
                .run
                .cursor_at
                .unwrap_or(now)
                .max(now - TimeDelta::seconds(1));
            preview(t, from, NEXT_FIRES)
                .iter()
                .map(|t| t.to_rfc3339())
                .collect()
        }
        _ => Vec::new(),
    };
    let last_id = l.run.last_task_id.map(|u| u.to_string());
    let runs: Vec<Value> = l
        .recent
        .iter()
        .map(|(t, id)| json!({"at": instant(*t), "id": id, "state": states.get(id)}))
        .collect();
    json!({
        "name": l.name,
        "source": l.entry.as_ref().map_or("file (not loaded here)", |e| e.source.as_str()),
        "task": l.entry.as_ref().map(|e| e.task.clone()),
        "trigger": l.entry.as_ref().map(|e| describe(&e.trigger)),
        "enabled": enabled,
        "paused": !enabled,
        "next": next,
        "last_run_at": at(l.run.last_run_at),
        "last_sent_at": at(l.run.last_sent_at),
        "last_task_id": last_id,
        "last_state": last_id.as_ref().and_then(|i| states.get(i)),
        "total_runs": l.run.total_runs,
        "run_now_pending": l.run.run_now_at.is_some(),
        "description": l.entry.as_ref().and_then(|e| e.description.clone()),
        "runs": runs,
    })
}

/// `POST /api/schedules/{name}/pause|resume|run`.
pub(crate) async fn act(
    _: Authorized,
    State(state): State<Arc<AppState>>,
    Path((name, action)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let file = file_source::load_or_empty(state.schedule_file.as_deref()).map_err(text_error)?;
    let in_file = file.entries.iter().any(|e| e.name == name);
    let in_db = state.store.get(&name).await?.is_some();
    let now = Utc::now();
    let store_err = |e: celeriac_beat::schedule::store::StoreError| match e {
        celeriac_beat::schedule::store::StoreError::Unknown(n) => {
            ApiError::not_found(format!("unknown schedule entry \"{n}\""))
        }
        other => ApiError::unavailable("schedule database", &other),
    };
    match action.as_str() {
        "pause" | "resume" if !in_db && in_file => Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("entry \"{name}\" is defined in the schedule file; edit the file to pause it"),
        )),
        "pause" | "resume" => {
            let enabled = action == "resume";
            state
                .store
                .set_enabled(&name, enabled, now)
                .await
                .map_err(store_err)?;
            Ok(Json(json!({ "name": name, "paused": !enabled })))
        }
        "run" => {
            let known = in_db
                || in_file
                || run_state::load_all(state.store.db())
                    .await?
                    .contains_key(&name);
            if !known {
                return Err(ApiError::not_found(format!(
                    "unknown schedule entry \"{name}\""
                )));
            }
            state
                .store
                .request_run_now(&name, now)
                .await
                .map_err(store_err)?;
            Ok(Json(
                json!({ "name": name, "task_id": run_now_task_id(&name, now).to_string() }),
            ))
        }
        other => Err(ApiError::not_found(format!(
            "no action \"{other}\" (pause, resume or run)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::recent_fires;
    use celeriac_beat::schedule::entry::Entry;
    use celeriac_beat::trigger::TriggerSpec;
    use chrono::{TimeZone, Utc};

    #[test]
    fn recent_fires_are_the_last_ones_up_to_now() {
        let spec: TriggerSpec = serde_json::from_value(serde_json::json!(
            {"type": "interval", "minutes": 10}
        ))
        .expect("spec");
        let mut entry = Entry::new("e", "t", spec);
        entry.anchor = Utc
            .with_ymd_and_hms(2024, 1, 1, 0, 0, 0)
            .single()
            .expect("t");
        let trigger = entry.compile().expect("compiles");
        let now = Utc
            .with_ymd_and_hms(2024, 5, 1, 12, 5, 0)
            .single()
            .expect("t");
        let fires = recent_fires(&trigger, now, 3);
        let want: Vec<_> = [11, 11, 12]
            .iter()
            .zip([40, 50, 0])
            .map(|(h, m)| {
                Utc.with_ymd_and_hms(2024, 5, 1, *h, m, 0)
                    .single()
                    .expect("t")
            })
            .collect();
        assert_eq!(fires, want);
    }
}

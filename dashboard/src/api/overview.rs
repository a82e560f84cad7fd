//! The overview: over the last hour, minute by minute, tasks finished per
//! second by outcome and run-time percentiles (from the result table,
//! read through the `done_at` index), queue-wait percentiles (from the
//! events stream: sent or received to started); how many tasks are
//! waiting or running now; how many workers are online.

use super::instant;
use crate::error::ApiError;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use celeriac_common::backend::entity::{Column, Entity};
use celeriac_common::backend::{db_clock_ms, statement};
use celeriac_common::stats::Samples;
use chrono::{DateTime, TimeDelta, Utc};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use serde_json::{Value, json};
use std::sync::Arc;

/// Minutes shown.
const MINUTES: i64 = 60;
/// Finished rows read at most (newest first); beyond, the charts cover
/// less than the hour and say so.
const ROWS_MAX: u64 = 50_000;
/// Unfinished rows counted per state at most (`1000+` beyond).
const COUNT_CAP: i64 = 1_000;
/// The states of work not finished.
const OPEN_STATES: [&str; 4] = ["RECEIVED", "STARTED", "RETRY", "PROGRESS"];

/// A finished row: state, started, done.
type Finished = (String, Option<DateTime<Utc>>, Option<DateTime<Utc>>);

#[derive(Default)]
struct Minute {
    succeeded: u64,
    failed: u64,
    retried: u64,
    revoked: u64,
    runtimes: Vec<f64>,
}

fn percentiles(samples: Vec<f64>) -> Value {
    let s = Samples::new(samples);
    json!({"p50": s.percentile(50.0), "p95": s.percentile(95.0), "p99": s.percentile(99.0)})
}

async fn count_capped(
    state: &AppState,
    sql: &str,
    values: Vec<sea_orm::Value>,
) -> Result<i64, ApiError> {
    let db = state.backend.connection();
    let row = db
        .query_one_raw(statement(db.get_database_backend(), sql, values))
        .await?;
    Ok(row
        .and_then(|r| r.try_get::<i64>("", "n").ok())
        .unwrap_or(0))
}

/// `GET /api/overview`.
pub(crate) async fn get(State(state): State<Arc<AppState>>) -> Result<Json<Value>, ApiError> {
    let now = Utc::now();
    let start_minute = now.timestamp().div_euclid(60) - (MINUTES - 1);
    let from = DateTime::from_timestamp(start_minute * 60, 0).unwrap_or(now - TimeDelta::hours(1));
    let rows: Vec<Finished> = Entity::find()
        .select_only()
        .columns([Column::State, Column::StartedAt, Column::DoneAt])
        .filter(Column::DoneAt.gte(from))
        .order_by_desc(Column::DoneAt)
        .limit(ROWS_MAX)
        .into_tuple()
        .all(state.backend.connection())
        .await?;
    let sampled = rows.len() as u64 >= ROWS_MAX;
    let covered_from = if sampled {
        rows.last().and_then(|r| r.2)
    } else {
        Some(from)
    };
    let mut minutes: Vec<Minute> = (0..MINUTES).map(|_| Minute::default()).collect();
    for (st, started, done) in &rows {
        let Some(done) = done else { continue };
        let i = done.timestamp().div_euclid(60) - start_minute;
        let Some(m) = usize::try_from(i).ok().and_then(|i| minutes.get_mut(i)) else {
            continue;
        };
        match st.as_str() {
            "SUCCESS" => m.succeeded += 1,
            "FAILURE" => m.failed += 1,
            "RETRY" => m.retried += 1,
            "REVOKED" => m.revoked += 1,
            _ => {}
        }
        if let Some(s) = started
            && st != "RETRY"
        {
            m.runtimes
                .push((*done - *s).num_microseconds().unwrap_or(0) as f64 / 1e6);
        }
    }
    let mut waits = state.live.waits_since(start_minute);
    let totals = json!({
        "succeeded": minutes.iter().map(|m| m.succeeded).sum::<u64>(),
        "failed": minutes.iter().map(|m| m.failed).sum::<u64>(),
        "retried": minutes.iter().map(|m| m.retried).sum::<u64>(),
        "revoked": minutes.iter().map(|m| m.revoked).sum::<u64>(),
    });
    let series: Vec<Value> = minutes
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            let minute = start_minute + i as i64;
            let wait = waits
                .iter()
                .position(|(w, _)| *w == minute)
                .map(|p| waits.swap_remove(p).1)
                .unwrap_or_default();
            json!({
                "at": DateTime::from_timestamp(minute * 60, 0).map(instant),
                "succeeded": m.succeeded as f64 / 60.0,
                "failed": m.failed as f64 / 60.0,
                "retried": m.retried as f64 / 60.0,
                "runtime": percentiles(m.runtimes),
                "wait": percentiles(wait),
            })
        })
        .collect();
    let mut open = serde_json::Map::new();
    for s in OPEN_STATES {
        let sql = format!(
            "SELECT COUNT(*) AS n FROM (SELECT 1 AS one FROM celeriac_taskmeta \
             WHERE state = ? LIMIT {}) capped",
            COUNT_CAP + 1
        );
        let n = count_capped(&state, &sql, vec![s.into()]).await?;
        open.insert(s.to_owned(), json!(n.min(COUNT_CAP + 1)));
    }
    let backend = state.backend.connection().get_database_backend();
    let online_sql = format!(
        "SELECT COUNT(*) AS n FROM celeriac_workers WHERE expires_at_ms > {}",
        db_clock_ms(backend)
    );
    let db_online = count_capped(&state, &online_sql, vec![]).await?;
    let seen = state.live.workers();
    let t = now.timestamp_micros() as f64 / 1e6;
    let events_online = seen.iter().filter(|w| w.alive(t)).count();
    Ok(Json(json!({
        "minutes": series,
        "last_hour": totals,
        "open": open,
        "open_cap": COUNT_CAP,
        "covered_from": covered_from.map(instant),
        "sampled": sampled,
        "workers_online": db_online.max(events_online as i64),
        "events": state.live.connected(),
    })))
}

//! Workers: every process with a heartbeat row (celeriac workers), merged
//! with what the events stream says about it (active and processed
//! counts, load), and workers known from events only (Celery's). A
//! worker whose row expired, or whose events stopped, is listed as dead.

use super::instant;
use crate::error::ApiError;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use celeriac_common::backend::workers::entity::Entity as WorkerEntity;
use celeriac_common::backend::{db_clock_ms, statement};
use sea_orm::{ConnectionTrait, EntityTrait};
use serde_json::{Value, json};
use std::sync::Arc;

/// `GET /api/workers`.
pub(crate) async fn list(State(state): State<Arc<AppState>>) -> Result<Json<Value>, ApiError> {
    let db = state.backend.connection();
    let backend = db.get_database_backend();
    let now_ms: i64 = db
        .query_one_raw(statement(
            backend,
            &format!("SELECT {} AS now_ms", db_clock_ms(backend)),
            vec![],
        ))
        .await?
        .and_then(|r| r.try_get::<i64>("", "now_ms").ok())
        .unwrap_or_else(|| chrono::Utc::now().timestamp_millis());
    let rows = WorkerEntity::find().all(db).await?;
    let mut seen = state.live.workers();
    let now = chrono::Utc::now().timestamp_micros() as f64 / 1e6;
    let mut workers: Vec<Value> = rows
        .iter()
        .map(|r| {
            // Its events, if any: by host name and pid.
            let ev = seen
                .iter()
                .position(|w| w.hostname == r.hostname && w.pid.is_none_or(|p| p as i64 == r.pid))
                .map(|i| seen.swap_remove(i));
            let facts = state
                .live
                .facts
                .of(&r.hostname, Some(r.pid))
                .unwrap_or_default();
            json!({
                "id": r.id,
                "hostname": r.hostname,
                "pid": r.pid,
                "started_at": instant(r.started_at),
                "heartbeat_age_secs": (now_ms - r.heartbeat_at_ms) as f64 / 1e3,
                "alive": r.expires_at_ms > now_ms,
                "active": ev.as_ref().and_then(|e| e.active),
                "processed": ev.as_ref().and_then(|e| e.processed),
                "loadavg": ev.as_ref().map(|e| e.loadavg.clone()),
                "software": ev.as_ref().and_then(|e| e.sw_ident.clone()),
                "concurrency": facts["concurrency"],
                "queues": facts["queues"],
                "rss_kb": facts["rss_kb"],
                "source": "heartbeat",
            })
        })
        .collect();
    workers.extend(seen.into_iter().map(|e| {
        let pid = e.pid.and_then(|p| i64::try_from(p).ok());
        let facts = state.live.facts.of(&e.hostname, pid).unwrap_or_default();
        json!({
            "id": null,
            "hostname": e.hostname,
            "pid": e.pid,
            "started_at": null,
            "heartbeat_age_secs": (now - e.last_seen).max(0.0),
            "alive": e.alive(now),
            "active": e.active,
            "processed": e.processed,
            "loadavg": e.loadavg,
            "software": e.sw_ident.map(|i| format!("{i} {}", e.sw_ver.unwrap_or_default())),
            "concurrency": facts["concurrency"],
            "queues": facts["queues"],
            "rss_kb": facts["rss_kb"],
            "source": "events",
        })
    }));
    // The living first, then by host name and pid.
    workers.sort_by_key(|w| {
        (
            w["alive"] != true,
            w["hostname"].as_str().map(str::to_owned),
            w["pid"].as_i64(),
        )
    });
    let online = workers.iter().filter(|w| w["alive"] == true).count();
    Ok(Json(json!({
        "workers": workers,
        "online": online,
        "events": state.live.connected(),
    })))
}

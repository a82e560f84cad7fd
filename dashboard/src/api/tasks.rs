//! Tasks: search newest first, one task's page, revoke and retry.
//!
//! The search reads one index range: `(created_at, task_id)`, or with a
//! filter the index that starts with its column (`task_name`, `state`,
//! `worker`), newest first, and pages by key: `before` is the `next` of
//! the previous page (`<created_at in µs>.<task id>`), never an offset.

use super::{instant, json_text, progress};
use crate::auth::Authorized;
use crate::error::ApiError;
use crate::state::AppState;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use celeriac::ApplyOptions;
use celeriac_common::backend::entity::{Column, Entity, Model};
use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::sync::Arc;

/// Rows a page holds unless `limit` says otherwise, and at most.
const LIMIT_DEFAULT: u64 = 50;
const LIMIT_MAX: u64 = 500;

/// `GET /api/tasks` query.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Search {
    id: Option<String>,
    name: Option<String>,
    state: Option<String>,
    worker: Option<String>,
    /// Created at or after (RFC 3339).
    since: Option<String>,
    /// Created before (RFC 3339).
    until: Option<String>,
    /// The previous page's `next`.
    before: Option<String>,
    limit: Option<u64>,
}

type Listed = (
    String,
    Option<String>,
    String,
    Option<String>,
    Option<String>,
    i32,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
);

fn given(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

fn parse_instant(field: &str, text: &str) -> Result<DateTime<Utc>, ApiError> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| ApiError::bad_request(format!("{field} must be an RFC 3339 instant")))
}

/// A page key: `<µs since the epoch>.<task id>`.
fn parse_key(text: &str) -> Result<(DateTime<Utc>, String), ApiError> {
    let bad = || ApiError::bad_request("before must be a previous page's next key");
    let (micros, id) = text.split_once('.').ok_or_else(bad)?;
    let micros: i64 = micros.parse().map_err(|_| bad())?;
    let at = DateTime::from_timestamp_micros(micros).ok_or_else(bad)?;
    Ok((at, id.to_owned()))
}

fn key(at: DateTime<Utc>, id: &str) -> String {
    format!("{}.{id}", at.timestamp_micros())
}

/// `GET /api/tasks?id=&name=&state=&worker=&since=&until=&before=&limit=`.
pub(crate) async fn search(
    State(state): State<Arc<AppState>>,
    Query(q): Query<Search>,
) -> Result<Json<Value>, ApiError> {
    let limit = q.limit.unwrap_or(LIMIT_DEFAULT).clamp(1, LIMIT_MAX);
    let mut find = Entity::find().select_only().columns([
        Column::TaskId,
        Column::TaskName,
        Column::State,
        Column::Worker,
        Column::Queue,
        Column::Retries,
        Column::CreatedAt,
        Column::StartedAt,
        Column::DoneAt,
    ]);
    if let Some(id) = given(&q.id) {
        find = find.filter(Column::TaskId.eq(id));
    }
    if let Some(name) = given(&q.name) {
        find = find.filter(Column::TaskName.eq(name));
    }
    if let Some(s) = given(&q.state) {
        find = find.filter(Column::State.eq(s.to_ascii_uppercase()));
    }
    if let Some(w) = given(&q.worker) {
        find = find.filter(Column::Worker.eq(w));
    }
    if let Some(t) = given(&q.since) {
        find = find.filter(Column::CreatedAt.gte(parse_instant("since", t)?));
    }
    if let Some(t) = given(&q.until) {
        find = find.filter(Column::CreatedAt.lt(parse_instant("until", t)?));
    }
    if let Some(k) = given(&q.before) {
        let (at, id) = parse_key(k)?;
        // created_at <= t bounds the index range; the rest breaks ties.
        find = find.filter(Column::CreatedAt.lte(at)).filter(
            Expr::col(Column::CreatedAt)
                .lt(at)
                .or(Expr::col(Column::TaskId).lt(id)),
        );
    }
    let rows: Vec<Listed> = find
        .order_by_desc(Column::CreatedAt)
        .order_by_desc(Column::TaskId)
        .limit(limit + 1)
        .into_tuple()
        .all(state.backend.connection())
        .await?;
    let more = rows.len() as u64 > limit;
    let rows = &rows[..rows.len().min(limit as usize)];
    let progress = progress_of(&state, rows).await?;
    let next = more.then(|| rows.last().map(|r| key(r.6, &r.0))).flatten();
    let tasks: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({
                "id": r.0,
                "name": r.1,
                "state": r.2,
                "worker": r.3,
                "queue": r.4,
                "retries": r.5,
                "created_at": instant(r.6),
                "started_at": r.7.map(instant),
                "done_at": r.8.map(instant),
                "runtime": runtime(r.7, r.8),
                "progress": progress.get(&r.0).cloned().unwrap_or(Value::Null),
            })
        })
        .collect();
    Ok(Json(json!({ "tasks": tasks, "next": next })))
}

fn runtime(started: Option<DateTime<Utc>>, done: Option<DateTime<Utc>>) -> Value {
    match (started, done) {
        (Some(s), Some(d)) => json!((d - s).num_microseconds().unwrap_or(0) as f64 / 1e6),
        _ => Value::Null,
    }
}

/// The progress of the page's PROGRESS rows (by primary key), by task id.
async fn progress_of(state: &AppState, rows: &[Listed]) -> Result<Map<String, Value>, ApiError> {
    let ids: Vec<&str> = rows
        .iter()
        .filter(|r| r.2 == "PROGRESS")
        .map(|r| r.0.as_str())
        .collect();
    if ids.is_empty() {
        return Ok(Map::new());
    }
    let metas: Vec<(String, Option<String>, Option<String>)> = Entity::find()
        .select_only()
        .columns([Column::TaskId, Column::Result, Column::Meta])
        .filter(Column::TaskId.is_in(ids))
        .into_tuple()
        .all(state.backend.connection())
        .await?;
    Ok(metas
        .into_iter()
        .map(|(id, result, meta)| {
            let p = progress("PROGRESS", result.as_deref(), meta.as_deref());
            (id, p)
        })
        .collect())
}

/// `GET /api/tasks/{id}`: everything the row holds, and its workflow.
pub(crate) async fn one(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let row = Entity::find_by_id(id.clone())
        .one(state.backend.connection())
        .await?
        .ok_or_else(|| {
            ApiError::not_found(format!("no record of task {id} (PENDING or unknown)"))
        })?;
    let workflow = super::task_tree::workflow(&state, &row).await?;
    Ok(Json(json!({
        "id": row.task_id,
        "name": row.task_name,
        "state": row.state,
        "args": json_text(row.args.as_deref()),
        "kwargs": json_text(row.kwargs.as_deref()),
        "result": json_text(row.result.as_deref()),
        "error": row.error_type.as_ref().map(|t| json!({
            "type": t,
            "message": row.error_message,
            "traceback": row.traceback,
        })),
        "progress": progress(&row.state, row.result.as_deref(), row.meta.as_deref()),
        "meta": json_text(row.meta.as_deref()),
        "retries": row.retries,
        "worker": row.worker,
        "worker_id": row.worker_id,
        "queue": row.queue,
        "parent_id": row.parent_id,
        "root_id": row.root_id,
        "group_id": row.group_id,
        "created_at": instant(row.created_at),
        "started_at": row.started_at.map(instant),
        "done_at": row.done_at.map(instant),
        "runtime": runtime(row.started_at, row.done_at),
        "workflow": workflow,
    })))
}

/// `POST /api/tasks/{id}/revoke`: as `celeriac revoke` (recorded, and sent
/// to every worker).
pub(crate) async fn revoke(
    _: Authorized,
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let revoked = state.client().await?.revoke(&id).await?;
    Ok(Json(json!({ "id": id, "revoked": revoked })))
}

/// `POST /api/tasks/{id}/retry`: sends a finished task again, same name,
/// arguments and queue, under a new id (the old row keeps its history).
pub(crate) async fn retry(
    _: Authorized,
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let row = Entity::find_by_id(id.clone())
        .one(state.backend.connection())
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no record of task {id}")))?;
    let (name, args, kwargs) = retry_call(&row)?;
    let mut options = ApplyOptions::new();
    if let Some(q) = &row.queue {
        options = options.queue(q.clone());
    }
    let sent = state
        .client()
        .await?
        .send_task(&name, args, kwargs, options)
        .await?;
    Ok(Json(json!({ "id": id, "retried_as": sent.id() })))
}

/// A task call: name, positional and keyword arguments.
type Call = (String, Vec<Value>, Map<String, Value>);

/// What a retry sends: only a finished, unsuccessful task whose name and
/// arguments were recorded.
fn retry_call(row: &Model) -> Result<Call, ApiError> {
    if !matches!(row.state.as_str(), "FAILURE" | "REVOKED" | "REJECTED") {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "only a FAILURE, REVOKED or REJECTED task is retried; this one is {}",
                row.state
            ),
        ));
    }
    let missing = || {
        ApiError::new(
            StatusCode::CONFLICT,
            "its name or arguments were not recorded",
        )
    };
    let name = row.task_name.clone().ok_or_else(missing)?;
    let args = match json_text(row.args.as_deref()) {
        Value::Array(a) => a,
        Value::Null => Vec::new(),
        _ => return Err(missing()),
    };
    let kwargs = match json_text(row.kwargs.as_deref()) {
        Value::Object(k) => k,
        Value::Null => Map::new(),
        _ => return Err(missing()),
    };
    Ok((name, args, kwargs))
}

#[cfg(test)]
mod tests {
    use super::{key, parse_key};

    #[test]
    fn page_keys_round_trip_and_bad_ones_are_refused() {
        let at = chrono::DateTime::from_timestamp_micros(1_700_000_000_123_456).expect("t");
        let k = key(at, "a.b-c");
        assert_eq!(parse_key(&k).expect("parses"), (at, "a.b-c".to_owned()));
        assert!(parse_key("nope").is_err());
        assert!(parse_key("12x.id").is_err());
    }
}

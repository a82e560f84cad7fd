//! The latency phase: tasks at a fixed rate, timed to their stored start.

use super::database::Results;
use super::report::Latency;
use crate::error::{BenchError, err};
use crate::stats::Samples;
use celeriac::{ApplyOptions, Client};
use celeriac_common::backend::ResultBackend;
use celeriac_common::backend::entity::{Column, Entity};
use chrono::{DateTime, Utc};
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use serde_json::{Map, Value};
use std::time::{Duration, Instant};

pub(super) async fn measure_latency(
    client: &Client,
    backend: &ResultBackend,
    queue: &str,
    n: u64,
    rate: f64,
    task_args: &[Value],
    timeout: Duration,
) -> Result<Latency, BenchError> {
    let interval = Duration::from_secs_f64(1.0 / rate);
    let mut sent: Vec<(String, DateTime<Utc>)> = Vec::with_capacity(n as usize);
    let start = tokio::time::Instant::now();
    for i in 0..n {
        tokio::time::sleep_until(start + interval.mul_f64(i as f64)).await;
        let id = uuid::Uuid::new_v4().to_string();
        let at = Utc::now();
        client
            .send_task(
                "celeriac.noop",
                task_args.to_vec(),
                Map::new(),
                ApplyOptions::new().queue(queue.to_owned()).task_id(&id),
            )
            .await
            .map_err(err("publish failed"))?;
        sent.push((id, at));
    }
    let db = backend.connection();
    let deadline = Instant::now() + timeout;
    loop {
        let done = Entity::find()
            .filter(Column::Queue.eq(queue))
            .filter(Column::State.eq("SUCCESS"))
            .count(db)
            .await
            .map_err(err("cannot count stored outcomes"))?;
        if done >= n {
            break;
        }
        if Instant::now() >= deadline {
            return Err(BenchError::new(format!(
                "latency run: {done} of {n} tasks done after {timeout:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rows = Entity::find()
        .filter(Column::Queue.eq(queue))
        .all(db)
        .await
        .map_err(err("cannot read stored outcomes"))?;
    let started: std::collections::HashMap<String, DateTime<Utc>> = rows
        .into_iter()
        .filter_map(|m| m.started_at.map(|s| (m.task_id, s)))
        .collect();
    let ms: Vec<f64> = sent
        .iter()
        .filter_map(|(id, at)| started.get(id).map(|s| *s - *at))
        .map(|d| d.num_nanoseconds().map_or(f64::MAX, |n| n as f64 / 1e6))
        .collect();
    if ms.len() as u64 != n {
        return Err(BenchError::new(format!(
            "latency run: started_at known for {} of {n} tasks",
            ms.len()
        )));
    }
    let ms = Samples::new(ms);
    let figure = |v: Option<f64>| v.unwrap_or(f64::NAN);
    Ok(Latency {
        tasks: ms.len(),
        rate,
        backend: Results::None,
        p50_ms: figure(ms.percentile(50.0)),
        p99_ms: figure(ms.percentile(99.0)),
        max_ms: figure(ms.max()),
        mean_ms: figure(ms.mean()),
    })
}

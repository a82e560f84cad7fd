//! Queues: from RabbitMQ's management API when it answers (depth, ready,
//! unacknowledged, consumers, rates in and out), else from passive
//! declares of the queues celeriac knows (depth and consumers only). The
//! delay queues are summed into one line; the dead-letter queue's
//! messages are listed (without taking them) with a replay action.

use crate::auth::Authorized;
use crate::error::ApiError;
use crate::state::{AppState, Management};
use axum::Json;
use axum::extract::{Path, State};
use celeriac_common::{Config, broker, delay};
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use serde_json::{Value, json};
use std::sync::Arc;

/// Dead-lettered messages listed at most.
const DLQ_LISTED: usize = 50;

/// What kind of queue a name is, to the page.
fn kind(config: &Config, name: &str) -> &'static str {
    if name == config.dead_letter_queue {
        "dead-letter"
    } else if name.starts_with(&format!("{}.", config.delay_prefix)) {
        "delay"
    } else {
        "task"
    }
}

/// Queues of monitors and remote control: not work, not listed.
fn internal(name: &str) -> bool {
    name.starts_with("celeryev.")
        || name.starts_with("celeriacev.")
        || name.contains(".pidbox")
        || name.starts_with("amq.")
}

fn rate(stats: &Value, key: &str) -> Value {
    stats[key]["rate"].as_f64().map_or(Value::Null, Value::from)
}

async fn from_management(state: &AppState, m: &Management) -> Result<Vec<Value>, String> {
    let vhost: String = url::form_urlencoded::byte_serialize(m.vhost.as_bytes()).collect();
    let url = format!("{}/api/queues/{}", m.base, vhost.replace('+', "%20"));
    let answer = state
        .http
        .get(&url)
        .basic_auth(&m.user, Some(&m.password))
        .send()
        .await
        .map_err(|e| format!("management API at {}: {e}", m.base))?;
    if !answer.status().is_success() {
        return Err(format!(
            "management API at {}: HTTP {}",
            m.base,
            answer.status()
        ));
    }
    let list: Vec<Value> = answer
        .json()
        .await
        .map_err(|e| format!("management API at {}: {e}", m.base))?;
    Ok(list
        .into_iter()
        .filter_map(|q| {
            let name = q["name"].as_str()?.to_owned();
            if internal(&name) {
                return None;
            }
            let stats = &q["message_stats"];
            Some(json!({
                "name": name,
                "kind": kind(&state.config, &name),
                "messages": q["messages"].as_u64().unwrap_or(0),
                "ready": q["messages_ready"].as_u64().unwrap_or(0),
                "unacked": q["messages_unacknowledged"].as_u64().unwrap_or(0),
                "consumers": q["consumers"].as_u64().unwrap_or(0),
                "rate_in": rate(stats, "publish_details"),
                "rate_out": rate(stats, "deliver_get_details"),
            }))
        })
        .collect())
}

/// Depth and consumers of each queue celeriac knows, by passive declare
/// (a queue that does not exist is left out).
async fn from_declares(config: &Config) -> Result<Vec<Value>, ApiError> {
    let limit = config.connect_timeout();
    let broker_err = |e: broker::BrokerError| ApiError::unavailable("broker", &e);
    let connection = broker::connect_config(config, "celeriac-dashboard-queues")
        .await
        .map_err(broker_err)?;
    let mut names: Vec<String> = std::iter::once(config.default_queue.clone())
        .chain(config.queues.iter().cloned())
        .chain([config.dead_letter_queue.clone()])
        .chain(delay::queue_names(config))
        .collect();
    names.dedup();
    let mut channel = None;
    let mut out = Vec::new();
    for name in names {
        let ch = match channel.take() {
            Some(c) => c,
            None => broker::bounded("channel.open", limit, connection.create_channel())
                .await
                .map_err(broker_err)?,
        };
        let opts = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let declare = ch.queue_declare(name.as_str().into(), opts, FieldTable::default());
        // A missing queue closes the channel: open another for the next.
        if let Ok(q) = broker::bounded("queue.declare", limit, declare).await {
            out.push(json!({
                "name": name,
                "kind": kind(config, &name),
                "messages": q.message_count(),
                "ready": q.message_count(),
                "unacked": null,
                "consumers": q.consumer_count(),
                "rate_in": null,
                "rate_out": null,
            }));
            channel = Some(ch);
        }
    }
    broker::close(&connection, limit, "queues listed").await;
    Ok(out)
}

/// `GET /api/queues`.
pub(crate) async fn list(State(state): State<Arc<AppState>>) -> Result<Json<Value>, ApiError> {
    let (source, listed, note) = match &state.management {
        Some(m) => match from_management(&state, m).await {
            Ok(q) => ("management", q, None),
            Err(e) => ("passive", from_declares(&state.config).await?, Some(e)),
        },
        None => ("passive", from_declares(&state.config).await?, None),
    };
    let (delays, mut queues): (Vec<Value>, Vec<Value>) =
        listed.into_iter().partition(|q| q["kind"] == "delay");
    queues.sort_by_key(|q| q["name"].as_str().map(str::to_owned));
    let delayed: u64 = delays.iter().filter_map(|q| q["messages"].as_u64()).sum();
    let dlq_name = &state.config.dead_letter_queue;
    let dlq_depth = queues
        .iter()
        .find(|q| q["name"] == dlq_name.as_str())
        .and_then(|q| q["messages"].as_u64());
    let letters = match dlq_depth {
        Some(0) | None => Vec::new(),
        Some(_) => state.client().await?.dead_letters(DLQ_LISTED).await?,
    };
    Ok(Json(json!({
        "source": source,
        "note": note,
        "queues": queues,
        "delayed": {"queues": delays.len(), "messages": delayed},
        "dead_letters": {"queue": dlq_name, "messages": dlq_depth, "listed": letters},
    })))
}

/// `POST /api/dlq/{id}/replay`: sends that dead-lettered message back to
/// the queue it came from.
pub(crate) async fn replay(
    _: Authorized,
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let n = state
        .client()
        .await?
        .replay_dead_letters(std::slice::from_ref(&id))
        .await?;
    if n == 0 {
        return Err(ApiError::not_found(format!(
            "no dead-lettered message with id {id}"
        )));
    }
    Ok(Json(json!({ "id": id, "replayed": n })))
}

//! Sending a run: the deterministic task id and the message.
//!
//! A run's task id is `uuid5(NAMESPACE, "<entry>@<fire time RFC 3339>")`
//! (`"<entry>@run-now@<request time>"` for `schedule run-now`), so every
//! beat computes the same id for the same run. Each message also carries
//! `eta` = the scheduled fire time (already past when it is sent, so it is
//! delivered at once). A celeriac worker checks the result backend before
//! running any message with an `eta`, and acks without running one whose id
//! already has a final state; a double send of a run (a beat that died
//! between publishing and recording it, or a split brain) is thereby run
//! once, as long as the first copy finished before the second is taken.
//! Two copies taken by two workers at the same instant can both run: the
//! lease and the fenced run state make such a double send all but
//! impossible, the id makes it recognisable.
//!
//! Headers `beat_entry` and `beat_scheduled_at` name the entry and the
//! scheduled fire time.

use std::future::Future;
use std::sync::Arc;

use celeriac::canvas::Canvas;
use celeriac::{ApplyOptions, Client, ClientError};
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::clock::format_instant;
use crate::firing::entry_def::EntryDef;
use crate::schedule::entry::Entry;

/// Namespace of run task ids (a fixed random UUID).
pub const TASK_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6c1f_3c2e_9b7a_4d0e_8f51_2a9d_c4e7_b013);

/// The task id of the run of `entry` scheduled at `fire_at`.
pub fn task_id(entry: &str, fire_at: DateTime<Utc>) -> Uuid {
    Uuid::new_v5(
        &TASK_ID_NAMESPACE,
        format!("{entry}@{}", format_instant(fire_at)).as_bytes(),
    )
}

/// The task id of a `schedule run-now` run requested at `requested_at`.
pub fn run_now_task_id(entry: &str, requested_at: DateTime<Utc>) -> Uuid {
    Uuid::new_v5(
        &TASK_ID_NAMESPACE,
        format!("{entry}@run-now@{}", format_instant(requested_at)).as_bytes(),
    )
}

/// One run to publish.
#[derive(Clone, Debug, PartialEq)]
pub struct RunMessage {
    /// Entry name.
    pub entry: String,
    /// Task name.
    pub task: String,
    /// Positional arguments.
    pub args: Vec<Value>,
    /// Keyword arguments.
    pub kwargs: Map<String, Value>,
    /// A workflow sent instead of `task`: see [`crate::firing::workflow_run`]
    /// (the run's task id is its final task's).
    pub workflow: Option<Arc<Canvas>>,
    /// Task id (see [`task_id`]).
    pub task_id: Uuid,
    /// Scheduled fire time (or run-now request time): the message's `eta`.
    pub fire_at: DateTime<Utc>,
    /// Queue, or `None` for the configured default queue.
    pub queue: Option<String>,
    /// Exchange, if not the queue's own.
    pub exchange: Option<String>,
    /// Routing key, if not the queue's name.
    pub routing_key: Option<String>,
    /// Message priority.
    pub priority: Option<u8>,
    /// When a worker revokes it instead of running it.
    pub expires: Option<DateTime<Utc>>,
}

impl RunMessage {
    /// The message for `entry`'s run at `fire_at` with id `task_id`.
    pub fn new(entry: &Entry, fire_at: DateTime<Utc>, task_id: Uuid) -> RunMessage {
        RunMessage::from_def(&entry.name, &EntryDef::new(entry), fire_at, task_id)
    }

    /// The message for the run at `fire_at` of the entry `name` defined by `def`.
    pub fn from_def(
        name: &str,
        def: &EntryDef,
        fire_at: DateTime<Utc>,
        task_id: Uuid,
    ) -> RunMessage {
        let options = def.options();
        let expires = options.expires_secs.and_then(|secs| {
            let delta = TimeDelta::from_std(celeriac_common::seconds::capped(secs)?).ok()?;
            fire_at.checked_add_signed(delta)
        });
        RunMessage {
            entry: name.to_owned(),
            task: def.task.to_string(),
            args: def.args().to_vec(),
            kwargs: def.kwargs(),
            workflow: def.workflow().cloned(),
            task_id,
            fire_at,
            queue: options.queue,
            exchange: options.exchange,
            routing_key: options.routing_key,
            priority: options.priority,
            expires,
        }
    }

    /// The producer options for this message.
    pub fn apply_options(&self) -> ApplyOptions {
        let mut o = ApplyOptions::new()
            .task_id(self.task_id.to_string())
            .eta(self.fire_at)
            .header("beat_entry", json!(self.entry))
            .header("beat_scheduled_at", json!(format_instant(self.fire_at)));
        if let Some(q) = &self.queue {
            o = o.queue(q.clone());
        }
        if let Some(x) = &self.exchange {
            o = o.exchange(x.clone());
        }
        if let Some(k) = &self.routing_key {
            o = o.routing_key(k.clone());
        }
        if let Some(p) = self.priority {
            o = o.priority(p);
        }
        if let Some(at) = self.expires {
            o = o.expires(at);
        }
        o
    }
}

/// Why a run was not sent.
#[derive(Debug, thiserror::Error)]
#[error("cannot send {task_id} for entry \"{entry}\"")]
pub struct DispatchError {
    /// Entry name.
    pub entry: String,
    /// Task id.
    pub task_id: Uuid,
    /// The producer's error.
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

/// Where runs go: the producer [`Client`] in production, a recorder in tests.
pub trait Publisher: Send + Sync + 'static {
    /// Publishes one run; returns once the broker has confirmed it.
    fn publish(&self, run: &RunMessage) -> impl Future<Output = Result<(), DispatchError>> + Send;
}

impl Publisher for Client {
    async fn publish(&self, run: &RunMessage) -> Result<(), DispatchError> {
        let failed = |source: Box<dyn std::error::Error + Send + Sync>| DispatchError {
            entry: run.entry.clone(),
            task_id: run.task_id,
            source,
        };
        if let Some(workflow) = &run.workflow {
            let canvas = crate::firing::workflow_run::instantiate(workflow, run);
            // Boxed: inline, this rare branch set the size of every run's
            // future (a crowd of 1,000 holds 128 of them at once).
            return Box::pin(self.send_workflow(&canvas))
                .await
                .map(|_| ())
                .map_err(|e| failed(Box::new(e)));
        }
        self.send_task(
            &run.task,
            run.args.clone(),
            run.kwargs.clone(),
            run.apply_options(),
        )
        .await
        .map(|_| ())
        .map_err(|e: ClientError| failed(Box::new(e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_deterministic_and_distinct() {
        let t: DateTime<Utc> = "2024-05-01T09:00:00Z".parse().expect("time");
        let u: DateTime<Utc> = "2024-05-01T09:00:01Z".parse().expect("time");
        assert_eq!(task_id("a", t), task_id("a", t));
        assert_ne!(task_id("a", t), task_id("a", u));
        assert_ne!(task_id("a", t), task_id("b", t));
        assert_ne!(task_id("a", t), run_now_task_id("a", t));
        assert_eq!(task_id("a", t).get_version_num(), 5);
    }
}

//! Workflow entries against the real RabbitMQ and databases: a beat process
//! fires a chain → chord workflow (one entry from the schedule file, one
//! added on the command line) and a worker runs it to the callback, each
//! run with its own ids; a run sent twice runs once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use celeriac::Client;
use celeriac_beat::firing::dispatch::{Publisher, RunMessage, task_id};
use celeriac_beat::schedule::entry::Entry;
use celeriac_beat::schedule::workflow;
use celeriac_beat::trigger::TriggerSpec;
use celeriac_common::testing::process::spawn_beat;
use celeriac_common::testing::{self, DbKind, TestDatabase, unique};
use celeriac_common::{Config, ResultBackend, TaskState};
use celeriac_worker::{TaskFailure, Worker};
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Value, json};
use support::{BEAT, ok, schedule_file};

/// Which task ran with which id, and what each callback received.
#[derive(Clone, Default)]
struct Ran {
    /// (task name, task id) of every run.
    tasks: Arc<Mutex<Vec<(String, String)>>>,
    /// Callback id → the members' results it was called with.
    callbacks: Arc<Mutex<HashMap<String, Value>>>,
}

impl Ran {
    fn count(&self, name: &str) -> usize {
        let tasks = self.tasks.lock().unwrap();
        tasks.iter().filter(|(n, _)| n == name).count()
    }
}

/// A worker with `wf.start(n) = n`, `wf.add(x, n) = x + n` and
/// `wf.sum(results) = their sum`, recording every run in `ran`.
async fn start_worker(config: &Config, ran: &Ran) -> tokio::sync::oneshot::Sender<()> {
    let (a, b, c) = (ran.clone(), ran.clone(), ran.clone());
    let worker = Worker::builder(config.clone())
        .register_raw("wf.start", move |ctx, args, _| {
            a.tasks.lock().unwrap().push((ctx.name, ctx.id));
            async move { Ok::<Value, TaskFailure>(args[0].clone()) }
        })
        .register_raw("wf.add", move |ctx, args, _| {
            b.tasks.lock().unwrap().push((ctx.name, ctx.id));
            let sum = args.iter().filter_map(Value::as_i64).sum::<i64>();
            async move { Ok::<Value, TaskFailure>(json!(sum)) }
        })
        .register_raw("wf.sum", move |ctx, args, _| {
            c.tasks.lock().unwrap().push((ctx.name, ctx.id.clone()));
            c.callbacks.lock().unwrap().insert(ctx.id, args[0].clone());
            let sum: i64 = args[0]
                .as_array()
                .map_or(0, |r| r.iter().filter_map(Value::as_i64).sum());
            async move { Ok::<Value, TaskFailure>(json!(sum)) }
        })
        .build()
        .await
        .unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(worker.run_until(async {
        let _ = stop_rx.await;
    }));
    stop_tx
}

/// start(1) → (add(1, 10), add(1, 20)) → sum = 32, in the short form.
const FILE: &str = r#"
[entries.etl-file]
every = "2s"
tags = ["etl"]
workflow = { chain = [
  { task = "wf.start", args = [1] },
  { group = [{ task = "wf.add", args = [10] }, { task = "wf.add", args = [20] }] },
  "wf.sum",
] }
"#;

/// The same workflow in Celery's canvas dict form.
fn celery_form() -> String {
    let flow = workflow::parse(&json!({"chain": [
        {"task": "wf.start", "args": [1]},
        {"chord": [{"task": "wf.add", "args": [10]}, {"task": "wf.add", "args": [20]}],
         "body": "wf.sum"},
    ]}))
    .unwrap();
    serde_json::to_string(&flow).unwrap()
}

/// The entry's runs so far, from `schedule list --json`: (last run, total).
fn last_run(config: &Config, file: &str, entry: &str) -> Option<(DateTime<Utc>, i64)> {
    let out = ok(config, &["schedule", "list", "--json", "--schedule", file]);
    let rows: Vec<Value> = serde_json::from_str(&out).unwrap();
    let row = rows.into_iter().find(|r| r["name"] == entry)?;
    let at = row["last_run_at"].as_str()?.parse().ok()?;
    Some((at, row["total_runs"].as_i64()?))
}

async fn wait_success(backend: &ResultBackend, id: &str) -> Value {
    let started = Instant::now();
    loop {
        if let Some(r) = backend.get(id).await.unwrap()
            && r.state == TaskState::Success
        {
            return r.result.unwrap_or(Value::Null);
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{id} never succeeded"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn scheduled_workflows_run_to_the_callback(kind: DbKind) {
    let db = TestDatabase::create(kind).await.unwrap();
    let mut config = testing::config(&db.url, &unique("beat-wf"));
    config.beat_lease_secs = 2;
    let dir = tempfile::tempdir().unwrap();
    let file = schedule_file(dir.path(), FILE);
    let file = file.to_str().unwrap();
    let flow = celery_form();
    ok(
        &config,
        &[
            "schedule",
            "add",
            "etl-cli",
            "--workflow",
            &flow,
            "--every",
            "2s",
        ],
    );
    let ran = Ran::default();
    let stop = start_worker(&config, &ran).await;
    let backend = ResultBackend::connect(&db.url).await.unwrap();
    let beat = spawn_beat(BEAT, &config, &["--schedule", file]);
    for entry in ["etl-file", "etl-cli"] {
        // Two runs of each: the callback of each is the run's id, with 32.
        let started = Instant::now();
        let (at, total) = loop {
            match last_run(&config, file, entry) {
                Some((at, total)) if total >= 2 => break (at, total),
                _ => {
                    assert!(
                        started.elapsed() < Duration::from_secs(20),
                        "{entry}: no 2 runs"
                    );
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        };
        let previous = at - TimeDelta::seconds(2);
        for t in [previous, at] {
            let id = task_id(entry, t).to_string();
            assert_eq!(
                wait_success(&backend, &id).await,
                json!(32),
                "{entry} at {t}"
            );
            let got = ran.callbacks.lock().unwrap().get(&id).cloned();
            assert_eq!(
                got,
                Some(json!([11, 21])),
                "{entry} at {t}: callback arguments"
            );
        }
        assert!(total >= 2);
    }
    // run-now: one more run, whose printed id is its callback's.
    let id = ok(&config, &["schedule", "run-now", "etl-cli"]);
    assert_eq!(wait_success(&backend, id.trim()).await, json!(32));
    assert_eq!(beat.terminate(), Some(0));
    // Every task of every run had an id of its own.
    let tasks = ran.tasks.lock().unwrap().clone();
    let mut ids: Vec<&str> = tasks.iter().map(|(_, id)| id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), tasks.len(), "an id ran twice: {tasks:?}");
    assert!(
        ran.count("wf.add") >= 8 && ran.count("wf.sum") >= 4,
        "{tasks:?}"
    );
    let _ = stop.send(());
    testing::cleanup(&config).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_workflows_run_to_the_callback_sqlite() {
    scheduled_workflows_run_to_the_callback(DbKind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_workflows_run_to_the_callback_postgres() {
    scheduled_workflows_run_to_the_callback(DbKind::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workflow_run_sent_twice_runs_once() {
    let db = TestDatabase::create(DbKind::Sqlite).await.unwrap();
    let config = testing::config(&db.url, &unique("beat-wf-twice"));
    let ran = Ran::default();
    let stop = start_worker(&config, &ran).await;
    let client = Client::connect(config.clone()).await.unwrap();
    let backend = ResultBackend::connect(&db.url).await.unwrap();
    let flow = workflow::parse_json(&celery_form()).unwrap();
    let trigger = TriggerSpec::from_json(&json!({"type": "interval", "every": "1s"})).unwrap();
    let entry = Entry::with_workflow("twice", flow, trigger);
    let at = Utc::now() - TimeDelta::seconds(1);
    let run = RunMessage::new(&entry, at, task_id("twice", at));
    client.publish(&run).await.unwrap();
    let id = run.task_id.to_string();
    assert_eq!(wait_success(&backend, &id).await, json!(32));
    // A beat that died before recording the run sends it again: same ids.
    client.publish(&run).await.unwrap();
    let next_at = at + TimeDelta::seconds(1);
    let next = RunMessage::new(&entry, next_at, task_id("twice", next_at));
    client.publish(&next).await.unwrap();
    assert_eq!(
        wait_success(&backend, &next.task_id.to_string()).await,
        json!(32)
    );
    // Give a wrongly re-run copy's chain the time to reach its callback.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(ran.count("wf.start"), 2, "{:?}", ran.tasks.lock().unwrap());
    assert_eq!(ran.count("wf.sum"), 2, "{:?}", ran.tasks.lock().unwrap());
    let _ = stop.send(());
    client.close().await;
    testing::cleanup(&config).await;
}

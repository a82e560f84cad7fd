//! A run sent twice under its deterministic id (a beat that died between
//! publishing and recording, or a split brain) runs once: the worker sees
//! the `beat_entry` header beat sets, finds the id finished in the result
//! backend, and acks the copy without running it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use celeriac::Client;
use celeriac_beat::firing::dispatch::{Publisher, RunMessage, task_id};
use celeriac_beat::schedule::entry::Entry;
use celeriac_beat::trigger::TriggerSpec;
use celeriac_common::testing::{self, DbKind, TestDatabase, unique};
use celeriac_common::{ResultBackend, TaskState};
use celeriac_worker::{TaskFailure, Worker};
use chrono::{TimeDelta, Utc};
use serde_json::{Value, json};

async fn wait_success(backend: &ResultBackend, id: &str) {
    let started = std::time::Instant::now();
    loop {
        if let Some(r) = backend.get(id).await.unwrap()
            && r.state == TaskState::Success
        {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{id} never succeeded"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_sent_twice_runs_once() {
    let db = TestDatabase::create(DbKind::Sqlite).await.unwrap();
    let mut config = testing::config(&db.url, &unique("beat-dedupe"));
    config.concurrency = 1;
    let runs = Arc::new(AtomicUsize::new(0));
    let counter = runs.clone();
    let worker = Worker::builder(config.clone())
        .register_raw("beat.test.count", move |_ctx, _args, _kwargs| {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                Ok::<Value, TaskFailure>(json!(null))
            }
        })
        .build()
        .await
        .unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(worker.run_until(async {
        let _ = stop_rx.await;
    }));
    let client = Client::connect(config.clone()).await.unwrap();
    let backend = ResultBackend::connect(&db.url).await.unwrap();
    let trigger = TriggerSpec::from_json(&json!({"type": "interval", "every": "1s"})).unwrap();
    let entry = Entry::new("twice", "beat.test.count", trigger);

    let at = Utc::now() - TimeDelta::seconds(1);
    let run = RunMessage::new(&entry, at, task_id("twice", at));
    client.publish(&run).await.unwrap();
    wait_success(&backend, &run.task_id.to_string()).await;
    // The same run again, then the next run: FIFO, one task at a time.
    client.publish(&run).await.unwrap();
    let next_at = at + TimeDelta::seconds(1);
    let next = RunMessage::new(&entry, next_at, task_id("twice", next_at));
    client.publish(&next).await.unwrap();
    wait_success(&backend, &next.task_id.to_string()).await;
    assert_eq!(
        runs.load(Ordering::SeqCst),
        2,
        "the copy of the first run ran again"
    );
    let _ = stop_tx.send(());
    running.await.unwrap().unwrap();
    client.close().await;
    testing::cleanup(&config).await;
}

//! A worker deletes expired results by itself (`result_expires_secs`),
//! again and again, while it runs tasks; a purge that fails is logged and
//! tried again, and the worker goes on.

mod support;

use celeriac::{ApplyOptions, Client};
use celeriac_common::TaskState;
use celeriac_common::backend::{ResultBackend, TaskOutcome};
use celeriac_common::diagnostics::ECHO;
use celeriac_common::testing::process::{LoggedProcess, command};
use celeriac_common::testing::{self, DbKind, TestDatabase, unique};
use sea_orm::ConnectionTrait;
use serde_json::{Map, json};
use std::time::{Duration, Instant};
use support::WORKER;

fn old_success(id: &str) -> TaskOutcome {
    let mut o = TaskOutcome::new(id, "tasks.t", TaskState::Success);
    o.done_at = Some(chrono::Utc::now() - chrono::Duration::hours(2));
    o
}

async fn wait_gone(backend: &ResultBackend, id: &str, within: Duration) {
    let until = Instant::now() + within;
    while backend.get(id).await.expect("read").is_some() {
        assert!(Instant::now() < until, "{id} still there after {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_deletes_expired_results_and_goes_on_when_it_cannot() {
    let db = TestDatabase::create(DbKind::Sqlite)
        .await
        .expect("test database");
    let queue = unique("expiry");
    let config = testing::config(&db.url, &queue);
    let backend = db.migrated_backend().await.expect("migrated backend");
    backend
        .store(vec![old_success("old-1")])
        .await
        .expect("store");

    let mut cmd = command(WORKER, &config);
    cmd.env("CELERIAC_HOSTNAME", "expiry@test")
        .env("CELERIAC_LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .env("CELERIAC_RESULT_EXPIRES_SECS", "2");
    let worker = LoggedProcess::spawn(cmd, "worker", "worker ready");

    // Purged within a period (2 s) and its random start.
    wait_gone(&backend, "old-1", Duration::from_secs(10)).await;
    worker.wait_log("expired results deleted", Duration::from_secs(5));

    // A task's result is there when it is done, and expires in its turn.
    let client = Client::connect(config.clone()).await.expect("connect");
    let sent = client
        .send_task(ECHO, vec![json!(1)], Map::new(), ApplyOptions::new())
        .await
        .expect("send");
    let record = sent.wait(Duration::from_secs(20)).await.expect("result");
    assert_eq!(record.state, TaskState::Success);
    wait_gone(&backend, sent.id(), Duration::from_secs(10)).await;

    // A table the purge needs is gone: the purge fails with a warning and
    // is tried again; tasks still run, and other rows still expire.
    backend
        .connection()
        .execute_unprepared("DROP TABLE celeriac_chord_parts")
        .await
        .expect("drop table");
    backend
        .store(vec![old_success("old-2")])
        .await
        .expect("store");
    worker.wait_log("cannot delete expired results", Duration::from_secs(10));
    let again = client
        .send_task(ECHO, vec![json!(2)], Map::new(), ApplyOptions::new())
        .await
        .expect("send");
    let record = again.wait(Duration::from_secs(20)).await.expect("result");
    assert_eq!(record.state, TaskState::Success);
    wait_gone(&backend, "old-2", Duration::from_secs(10)).await;

    assert_eq!(worker.terminate(), Some(0), "a warm shutdown");
    drop(client);
    testing::cleanup(&config).await;
}

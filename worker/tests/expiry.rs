//! A worker deletes expired results by itself (`result_expires_secs`),
//! again and again, while it runs tasks; a purge that fails is logged and
//! tried again until it succeeds, and the worker goes on meanwhile.

use crate::support;

use celeriac::{ApplyOptions, Client};
use celeriac_common::TaskState;
use celeriac_common::backend::chord::ChordMember;
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

    // A table the purge needs is gone: every purge fails at the chord
    // it cannot delete, with a warning, and is tried again next period;
    // tasks still run, task rows still expire. Once the table is back, the
    // chord goes too.
    let chord = testing::new_chord(1);
    backend.create_chord(&chord).await.expect("create");
    backend
        .member_done(ChordMember {
            group_id: chord.group_id.clone(),
            task_id: unique("m"),
            index: 0,
            ok: true,
            result: Some("1".into()),
        })
        .await
        .expect("report");
    assert!(
        backend
            .mark_callback_sent(&chord.group_id)
            .await
            .expect("mark")
    );
    let db = backend.connection();
    db.execute_unprepared("DROP TABLE celeriac_chord_parts")
        .await
        .expect("drop table");
    backend
        .store(vec![old_success("old-2")])
        .await
        .expect("store");
    let failed = "cannot delete expired results";
    let until = Instant::now() + Duration::from_secs(15);
    while worker.log_text().matches(failed).count() < 2 {
        assert!(
            Instant::now() < until,
            "no second failed purge:\n{}",
            worker.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let again = client
        .send_task(ECHO, vec![json!(2)], Map::new(), ApplyOptions::new())
        .await
        .expect("send");
    let record = again.wait(Duration::from_secs(20)).await.expect("result");
    assert_eq!(record.state, TaskState::Success);
    wait_gone(&backend, "old-2", Duration::from_secs(10)).await;
    assert!(
        backend
            .chord(&chord.group_id)
            .await
            .expect("read")
            .is_some()
    );
    db.execute_unprepared(
        "CREATE TABLE celeriac_chord_parts (group_id VARCHAR(191) NOT NULL, \
         part VARCHAR(191) NOT NULL, body TEXT NOT NULL, PRIMARY KEY (group_id, part))",
    )
    .await
    .expect("create table");
    let until = Instant::now() + Duration::from_secs(10);
    while backend
        .chord(&chord.group_id)
        .await
        .expect("read")
        .is_some()
    {
        assert!(Instant::now() < until, "the chord did not expire");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    assert_eq!(worker.terminate(), Some(0), "a warm shutdown");
    drop(client);
    testing::cleanup(&config).await;
}

//! End to end against the real RabbitMQ and each result database: 10,000
//! tasks from 4 concurrent producers through 2 worker processes.

mod support;

use celeriac::{ApplyOptions, Client};
use celeriac_common::backend::ResultBackend;
use celeriac_common::backend::entity::Entity;
use celeriac_common::diagnostics::ECHO;
use celeriac_common::testing::{self, DbKind, TestDatabase, unique};
use futures_util::{StreamExt, TryStreamExt};
use sea_orm::EntityTrait;
use serde_json::{Map, json};
use std::collections::{HashMap, HashSet};
use std::time::Duration;
use support::{WorkerProcess, wait_for_state};

const PRODUCERS: usize = 4;
const PER_PRODUCER: usize = 2_500;

async fn ten_thousand_tasks(kind: DbKind) {
    let db = TestDatabase::create(kind)
        .await
        .expect("create test database");
    let queue = unique("e2e");
    let config = testing::config(&db.url, &queue);
    let backend = ResultBackend::connect(&db.url).await.expect("backend");
    backend.migrate().await.expect("migrate");
    let w1 = WorkerProcess::spawn(&config, "w1@test", &[]);
    let w2 = WorkerProcess::spawn(&config, "w2@test", &[]);

    let producers = (0..PRODUCERS).map(|p| {
        let config = config.clone();
        tokio::spawn(async move {
            let client = Client::connect(config).await.expect("connect");
            futures_util::stream::iter(0..PER_PRODUCER)
                .map(|i| {
                    let client = client.clone();
                    async move {
                        let r = client
                            .send_task(
                                ECHO,
                                vec![json!(p), json!(i)],
                                Map::new(),
                                ApplyOptions::new(),
                            )
                            .await?;
                        Ok::<_, celeriac::ClientError>((r.id().to_owned(), (p, i)))
                    }
                })
                .buffer_unordered(32)
                .try_collect::<Vec<_>>()
                .await
        })
    });
    let mut expected = HashMap::new();
    for p in producers {
        expected.extend(p.await.expect("producer task").expect("publish"));
    }
    let total = PRODUCERS * PER_PRODUCER;
    assert_eq!(expected.len(), total, "task ids are unique");

    let done = wait_for_state(&backend, "SUCCESS", total as u64, Duration::from_secs(300)).await;
    assert_eq!(done, total as u64, "every task succeeded");
    let rows = Entity::find()
        .all(backend.connection())
        .await
        .expect("rows");
    assert_eq!(rows.len(), total, "exactly one row per task");
    let mut workers = HashSet::new();
    for row in rows {
        let (p, i) = expected
            .remove(&row.task_id)
            .expect("row for a task we sent");
        let result: serde_json::Value =
            serde_json::from_str(row.result.as_deref().expect("result")).expect("json");
        assert_eq!(result, json!({"args": [p, i], "kwargs": {}}));
        workers.insert(row.worker.expect("worker recorded"));
    }
    assert!(expected.is_empty());
    assert_eq!(
        workers,
        HashSet::from(["w1@test".to_owned(), "w2@test".to_owned()]),
        "both workers served"
    );

    assert_eq!(w1.terminate(), Some(0));
    assert_eq!(w2.terminate(), Some(0));
    testing::cleanup(&config).await;
    db.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_tasks_sqlite() {
    ten_thousand_tasks(DbKind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_tasks_postgres() {
    ten_thousand_tasks(DbKind::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_tasks_mysql() {
    ten_thousand_tasks(DbKind::Mysql).await;
}

/// A batch of outcomes (more than one statement's worth) in which one task
/// id appears twice, as when two copies of a message finish together: the
/// last outcome given is stored, and the batch is not refused (PostgreSQL
/// rejects an upsert that touches a row twice).
async fn a_batch_with_one_id_twice(kind: DbKind) {
    use celeriac::TaskState;
    use celeriac_common::backend::TaskOutcome;
    let db = TestDatabase::create(kind).await.expect("db");
    let backend = ResultBackend::connect(&db.url).await.expect("backend");
    backend.migrate().await.expect("migrate");
    let mut batch: Vec<TaskOutcome> = (0..40)
        .map(|i| TaskOutcome::new(format!("t{i}"), "tasks.x", TaskState::Success))
        .collect();
    batch.insert(3, TaskOutcome::new("t20", "tasks.x", TaskState::Failure));
    batch.push(TaskOutcome::new("t5", "tasks.x", TaskState::Retry));
    backend.store(batch).await.expect("store");
    let rows = Entity::find()
        .all(backend.connection())
        .await
        .expect("rows");
    assert_eq!(rows.len(), 40, "{kind:?}");
    let state = |id: &str| {
        rows.iter()
            .find(|r| r.task_id == id)
            .map(|r| r.state.clone())
            .expect("row")
    };
    assert_eq!(state("t20"), "SUCCESS", "{kind:?}: the later outcome");
    assert_eq!(state("t5"), "RETRY", "{kind:?}: the later outcome");
    db.drop_database().await;
}

#[tokio::test]
async fn a_batch_with_one_id_twice_sqlite() {
    a_batch_with_one_id_twice(DbKind::Sqlite).await;
}

#[tokio::test]
async fn a_batch_with_one_id_twice_postgres() {
    a_batch_with_one_id_twice(DbKind::Postgres).await;
}

#[tokio::test]
async fn a_batch_with_one_id_twice_mysql() {
    a_batch_with_one_id_twice(DbKind::Mysql).await;
}

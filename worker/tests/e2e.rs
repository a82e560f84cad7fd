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

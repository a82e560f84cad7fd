//! End to end against the real RabbitMQ and each result database: 10,000
//! tasks from 4 concurrent producers through 2 worker processes.

use crate::support;

use celeriac::{ApplyOptions, Client};
use celeriac_common::backend::ResultBackend;
use celeriac_common::backend::entity::Entity;
use celeriac_common::diagnostics::ECHO;
use celeriac_common::testing::process::spawn_worker;
use celeriac_common::testing::{self, DbKind, TestDatabase, unique};
use futures_util::{StreamExt, TryStreamExt};
use sea_orm::EntityTrait;
use serde_json::{Map, json};
use std::collections::{HashMap, HashSet};
use std::time::Duration;
use support::{WORKER, wait_for_state};

const PRODUCERS: usize = 4;
const PER_PRODUCER: usize = 2_500;

async fn ten_thousand_tasks(kind: DbKind) {
    let db = TestDatabase::create(kind)
        .await
        .expect("create test database");
    let queue = unique("e2e");
    let config = testing::config(&db.url, &queue);
    let backend = db.migrated_backend().await.expect("migrated backend");
    let w1 = spawn_worker(WORKER, &config, "w1@test", &[]);
    let w2 = spawn_worker(WORKER, &config, "w2@test", &[]);

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

/// Awkward batches are stored, never refused (a refused batch would hold
/// its messages' acks back): more than one statement's worth with one task
/// id twice, as when two copies of a message finish together (the last
/// outcome given is kept; PostgreSQL rejects an upsert that touches a row
/// twice), NUL characters, names longer than their columns, and a result
/// beyond MySQL's 64 KB TEXT. A row the database does refuse (an id longer
/// than the key column) is reported as refused, not as an outage.
async fn awkward_batches_are_stored(kind: DbKind) {
    use celeriac::TaskState;
    use celeriac_common::backend::{TaskError, TaskOutcome};
    let db = TestDatabase::create(kind).await.expect("db");
    let backend = db.migrated_backend().await.expect("migrated backend");
    let mut batch: Vec<TaskOutcome> = (0..40)
        .map(|i| TaskOutcome::new(format!("t{i}"), "tasks.x", TaskState::Success))
        .collect();
    batch.insert(3, TaskOutcome::new("t20", "tasks.x", TaskState::Failure));
    batch.push(TaskOutcome::new("t5", "tasks.x", TaskState::Retry));
    let mut odd = TaskOutcome::new("odd", "n".repeat(300), TaskState::Failure);
    odd.worker = Some("w".repeat(300));
    odd.queue = Some("q".repeat(300));
    odd.error = Some(TaskError {
        kind: "Bad\0Kind".to_owned(),
        message: "a\0b".to_owned(),
        traceback: Some("t\0b".to_owned()),
    });
    batch.push(odd);
    let mut big = TaskOutcome::new("big", "tasks.x", TaskState::Success);
    big.result = Some(json!("r".repeat(100_000)));
    batch.push(big);
    backend.store(batch).await.expect("store");
    let rows = Entity::find()
        .all(backend.connection())
        .await
        .expect("rows");
    assert_eq!(rows.len(), 42, "{kind:?}");
    let row = |id: &str| rows.iter().find(|r| r.task_id == id).expect("row");
    assert_eq!(row("t20").state, "SUCCESS", "{kind:?}: the later outcome");
    assert_eq!(row("t5").state, "RETRY", "{kind:?}: the later outcome");
    let odd = row("odd");
    assert_eq!(odd.task_name.as_deref().map(str::len), Some(255));
    assert_eq!(odd.error_message.as_deref(), Some("ab"));
    let big = backend.get("big").await.expect("get").expect("row");
    assert_eq!(big.result, Some(json!("r".repeat(100_000))), "{kind:?}");

    let long_id = TaskOutcome::new("i".repeat(200), "tasks.x", TaskState::Success);
    match (kind, backend.store(vec![long_id]).await) {
        // SQLite does not enforce lengths.
        (DbKind::Sqlite, result) => assert!(result.is_ok(), "{result:?}"),
        (_, Err(e)) => assert!(e.is_refused(), "{kind:?}: {e:?}"),
        (_, Ok(())) => panic!("{kind:?} stored a 200-character key"),
    }
    db.drop_database().await;
}

#[tokio::test]
async fn awkward_batches_are_stored_sqlite() {
    awkward_batches_are_stored(DbKind::Sqlite).await;
}

/// Every SQLite connection the backend opens writes WAL (so several
/// workers share the file) and keeps SQLite's temporary B-trees (a multi-row
/// upsert's statement journal) in memory instead of a temp file per batch.
#[tokio::test]
async fn sqlite_connections_use_wal_and_in_memory_temp_store() {
    use sea_orm::{ConnectionTrait, DbBackend, Statement};
    let db = TestDatabase::create(DbKind::Sqlite).await.expect("db");
    let backend = ResultBackend::connect(&db.url).await.expect("backend");
    let pragma = |name: &str| {
        let conn = backend.connection().clone();
        let sql = format!("PRAGMA {name}");
        async move {
            let row = conn
                .query_one_raw(Statement::from_string(DbBackend::Sqlite, sql))
                .await
                .expect("pragma")
                .expect("a row");
            row.try_get_by_index::<String>(0)
                .or_else(|_| row.try_get_by_index::<i64>(0).map(|v| v.to_string()))
                .expect("value")
        }
    };
    assert_eq!(pragma("journal_mode").await, "wal");
    // 2 = MEMORY.
    assert_eq!(pragma("temp_store").await, "2");
    db.drop_database().await;
}

#[tokio::test]
async fn awkward_batches_are_stored_postgres() {
    awkward_batches_are_stored(DbKind::Postgres).await;
}

#[tokio::test]
async fn awkward_batches_are_stored_mysql() {
    awkward_batches_are_stored(DbKind::Mysql).await;
}

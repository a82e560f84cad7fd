//! Tasks left STARTED by a worker that died: worker heartbeats in the
//! result backend, the sweep that moves such tasks to RETRY
//! (`WorkerLostError`), and the redelivery that finishes them.

use crate::support;

use celeriac::{Client, TaskState};
use celeriac_common::backend::entity::{Column as TaskColumn, Entity as TaskEntity};
use celeriac_common::backend::workers::{Claim, WORKER_LOST, WorkerInfo, entity as workers};
use celeriac_common::backend::{ResultBackend, TaskOutcome};
use celeriac_common::diagnostics::Sleep;
use celeriac_common::testing::process::spawn_worker;
use celeriac_common::testing::{self, DbKind, TestDatabase, unique};
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use std::time::{Duration, Instant};
use support::WORKER;

fn started(id: &str, worker_id: Option<&str>) -> TaskOutcome {
    let mut o = TaskOutcome::new(id, "tasks.slow", TaskState::Started);
    o.worker = Some("w@test".into());
    o.worker_id = worker_id.map(str::to_owned);
    o
}

/// One sweep, driven directly, on each database.
async fn sweep_moves_only_tasks_of_gone_workers(kind: DbKind) {
    let db = TestDatabase::create(kind).await.expect("db");
    let backend = db.migrated_backend().await.expect("migrated backend");
    let alive = WorkerInfo::this_process("alive@test");
    let dead = WorkerInfo::this_process("dead@test");
    let stopped = WorkerInfo::this_process("stopped@test");
    let second = Duration::from_secs(1);
    for w in [&alive, &dead, &stopped] {
        backend
            .worker_heartbeat(w, second)
            .await
            .expect("heartbeat");
    }
    // A second heartbeat renews the row rather than failing on the key.
    backend
        .worker_heartbeat(&alive, Duration::from_secs(60))
        .await
        .expect("renew");
    backend.worker_stopped(&stopped.id).await.expect("stopped");
    for (id, worker) in [
        ("t-alive", Some(alive.id.as_str())),
        ("t-dead", Some(dead.id.as_str())),
        ("t-stopped", Some(stopped.id.as_str())),
        ("t-unknown", Some("no-such-worker")),
        ("t-legacy", None),
    ] {
        backend
            .store_progress(started(id, worker))
            .await
            .expect("store STARTED");
    }
    let mut done = TaskOutcome::new("t-done", "tasks.slow", TaskState::Success);
    done.worker_id = Some(dead.id.clone());
    backend.store(vec![done]).await.expect("store SUCCESS");

    // The dead worker's row has not expired yet (3 × 1 s).
    let first = backend.recover_lost_tasks().await.expect("sweep");
    let mut ids: Vec<_> = first.iter().map(|t| t.task_id.as_str()).collect();
    ids.sort_unstable();
    assert_eq!(ids, ["t-stopped", "t-unknown"], "{kind:?}");

    tokio::time::sleep(Duration::from_millis(3_300)).await;
    let lost = backend.recover_lost_tasks().await.expect("sweep");
    let ids: Vec<_> = lost.iter().map(|t| t.task_id.as_str()).collect();
    assert_eq!(ids, ["t-dead"], "{kind:?}");
    assert_eq!(lost[0].worker_id, dead.id);

    let state = |id: &'static str| {
        let backend = backend.clone();
        async move { backend.get(id).await.expect("get").expect("row") }
    };
    for id in ["t-dead", "t-stopped", "t-unknown"] {
        let r = state(id).await;
        assert_eq!(r.state, TaskState::Retry, "{id} on {kind:?}");
        let err = r.error.expect("error");
        assert_eq!(err.kind, WORKER_LOST);
        assert!(err.message.contains("redelivers"), "{}", err.message);
    }
    assert_eq!(state("t-alive").await.state, TaskState::Started, "{kind:?}");
    assert_eq!(
        state("t-legacy").await.state,
        TaskState::Started,
        "{kind:?}"
    );
    assert_eq!(state("t-done").await.state, TaskState::Success, "{kind:?}");
    assert!(
        backend
            .recover_lost_tasks()
            .await
            .expect("sweep")
            .is_empty(),
        "nothing left to recover on {kind:?}"
    );

    // Rows of workers gone for over an hour are deleted.
    let count = |id: String| {
        let backend = backend.clone();
        async move {
            workers::Entity::find()
                .filter(workers::Column::Id.eq(id))
                .count(backend.connection())
                .await
                .expect("count")
        }
    };
    assert_eq!(count(dead.id.clone()).await, 1);
    workers::Entity::update_many()
        .col_expr(
            workers::Column::ExpiresAtMs,
            Expr::value(chrono::Utc::now().timestamp_millis() - 7_200_000),
        )
        .filter(workers::Column::Id.eq(dead.id.clone()))
        .exec(backend.connection())
        .await
        .expect("age the row");
    backend.recover_lost_tasks().await.expect("sweep");
    assert_eq!(count(dead.id.clone()).await, 0, "{kind:?}");
    assert_eq!(count(alive.id.clone()).await, 1, "{kind:?}");
    db.drop_database().await;
}

/// Sweeps of several workers at once: each lost task is reported (and
/// logged) by exactly one of them.
async fn concurrent_sweeps_report_each_task_once(kind: DbKind) {
    const TASKS: usize = 60;
    const SWEEPERS: usize = 4;
    let db = TestDatabase::create(kind).await.expect("db");
    let backend = db.migrated_backend().await.expect("migrated backend");
    let ids: Vec<String> = (0..TASKS).map(|i| format!("t-lost-{i}")).collect();
    for id in &ids {
        backend
            .store_progress(started(id, Some("no-such-worker")))
            .await
            .expect("store STARTED");
    }
    // One pool per sweeper, as each worker has its own.
    let mut sweepers = Vec::new();
    for _ in 0..SWEEPERS {
        sweepers.push(ResultBackend::connect(&db.url).await.expect("backend"));
    }
    let sweeps = sweepers.iter().map(|b| b.recover_lost_tasks());
    let mut reported: Vec<String> = futures_util::future::join_all(sweeps)
        .await
        .into_iter()
        .flat_map(|r| r.expect("sweep"))
        .map(|t| t.task_id)
        .collect();
    reported.sort_unstable();
    let mut want = ids.clone();
    want.sort_unstable();
    assert_eq!(reported, want, "each lost task once, on {kind:?}");
    for id in &ids {
        let r = backend.get(id).await.expect("get").expect("row");
        assert_eq!(r.state, TaskState::Retry, "{id} on {kind:?}");
    }
    db.drop_database().await;
}

#[tokio::test]
async fn concurrent_sweeps_on_sqlite() {
    concurrent_sweeps_report_each_task_once(DbKind::Sqlite).await;
}

#[tokio::test]
async fn concurrent_sweeps_on_postgres() {
    concurrent_sweeps_report_each_task_once(DbKind::Postgres).await;
}

#[tokio::test]
async fn concurrent_sweeps_on_mysql() {
    concurrent_sweeps_report_each_task_once(DbKind::Mysql).await;
}

#[tokio::test]
async fn sweep_on_sqlite() {
    sweep_moves_only_tasks_of_gone_workers(DbKind::Sqlite).await;
}

#[tokio::test]
async fn sweep_on_postgres() {
    sweep_moves_only_tasks_of_gone_workers(DbKind::Postgres).await;
}

#[tokio::test]
async fn sweep_on_mysql() {
    sweep_moves_only_tasks_of_gone_workers(DbKind::Mysql).await;
}

/// A task's row claimed before it runs (chord callbacks, beat runs): one
/// copy takes it, a copy on another worker waits while a live worker holds
/// it; a row under the claimant's own id is taken again (the worker knows
/// whether a copy of its own holds it); a dead or stopped holder's row is
/// taken over; a row given back is taken at once; a final row says done;
/// a worker whose heartbeat is not live takes nothing. Of several workers
/// claiming one id at once, new or given back, exactly one takes it.
async fn claims_on(kind: DbKind) {
    let db = TestDatabase::create(kind).await.expect("db");
    let backend = db.migrated_backend().await.expect("migrated backend");
    let [a, b, c] = ["a@test", "b@test", "c@test"].map(WorkerInfo::this_process);
    for w in [&a, &b, &c] {
        backend
            .worker_heartbeat(w, Duration::from_secs(60))
            .await
            .expect("heartbeat");
    }
    let claim = |id: &str, w: &WorkerInfo| {
        let backend = backend.clone();
        let row = started(id, Some(&w.id));
        async move { backend.claim_run(row).await.expect("claim") }
    };
    let holder = |id: &'static str| {
        let backend = backend.clone();
        async move {
            TaskEntity::find_by_id(id)
                .one(backend.connection())
                .await
                .expect("read")
                .expect("row")
                .worker_id
        }
    };

    assert_eq!(claim("t", &a).await, Claim::Taken, "{kind:?}");
    let row = backend.get("t").await.expect("get").expect("row");
    assert_eq!(row.state, TaskState::Started);
    assert_eq!(claim("t", &b).await, Claim::Held(a.id.clone()), "{kind:?}");
    assert_eq!(claim("t", &a).await, Claim::Taken, "{kind:?}");

    // Released by someone else: nothing changes; by its holder: RETRY,
    // and the next copy takes it at once.
    backend.release_run("t", &b.id).await.expect("release");
    assert_eq!(holder("t").await, Some(a.id.clone()));
    backend.release_run("t", &a.id).await.expect("release");
    let row = backend.get("t").await.expect("get").expect("row");
    assert_eq!(row.state, TaskState::Retry, "{kind:?}");
    assert_eq!(claim("t", &b).await, Claim::Taken, "{kind:?}");
    assert_eq!(holder("t").await, Some(b.id.clone()));

    // Its holder stops (or its heartbeat expires): taken over.
    backend.worker_stopped(&b.id).await.expect("stopped");
    assert_eq!(claim("t", &c).await, Claim::Taken, "{kind:?}");
    assert_eq!(holder("t").await, Some(c.id.clone()));

    // Final: done, for every copy, and the row is left as it is.
    let mut done = TaskOutcome::new("t", "tasks.slow", TaskState::Success);
    done.result = Some(serde_json::json!(7));
    backend.store(vec![done]).await.expect("store SUCCESS");
    assert_eq!(claim("t", &a).await, Claim::Done, "{kind:?}");
    let row = backend.get("t").await.expect("get").expect("row");
    assert_eq!(row.state, TaskState::Success);
    assert_eq!(row.result, Some(serde_json::json!(7)));

    // Left STARTED by a worker that predates heartbeats, or turned RETRY
    // by the sweep: taken.
    backend
        .store_progress(started("legacy", None))
        .await
        .expect("store STARTED");
    assert_eq!(claim("legacy", &a).await, Claim::Taken, "{kind:?}");

    // Retries. A task's own RETRY at attempt 1: a stale copy of attempt 1
    // is done (its retry carries on), the retry (attempt 2) takes the row,
    // records its attempt, and its own RETRY is then stored.
    let attempt = |id: &str, w: &WorkerInfo, n: u32| {
        let mut o = started(id, Some(&w.id));
        o.retries = n;
        let backend = backend.clone();
        async move { backend.claim_run(o).await.expect("claim") }
    };
    let mut retry = TaskOutcome::new("r", "tasks.slow", TaskState::Retry);
    (retry.retries, retry.worker_id) = (1, Some(a.id.clone()));
    backend
        .store(vec![retry.clone()])
        .await
        .expect("store RETRY");
    assert_eq!(attempt("r", &c, 1).await, Claim::Done, "{kind:?}");
    assert_eq!(attempt("r", &c, 2).await, Claim::Taken, "{kind:?}");
    // A copy of an earlier attempt never takes a later one's row.
    assert_eq!(attempt("r", &a, 1).await, Claim::Done, "{kind:?}");
    assert_eq!(attempt("r", &a, 2).await, Claim::Held(c.id.clone()));
    retry.retries = 2;
    backend.store(vec![retry]).await.expect("store RETRY");
    let row = backend.get("r").await.expect("get").expect("row");
    assert_eq!((row.state, row.retries), (TaskState::Retry, 2), "{kind:?}");
    // Left by a lost worker: the redelivered copy of that attempt takes it,
    // and the row no longer shows the loss.
    let mut lost = TaskOutcome::new("lost", "tasks.slow", TaskState::Retry);
    lost.worker_id = Some("gone".into());
    lost.error = Some(celeriac_common::backend::TaskError {
        kind: WORKER_LOST.into(),
        message: "lost".into(),
        traceback: None,
    });
    backend.store(vec![lost]).await.expect("store RETRY");
    assert_eq!(attempt("lost", &a, 0).await, Claim::Taken, "{kind:?}");
    let row = backend.get("lost").await.expect("get").expect("row");
    assert_eq!(
        (row.state, row.error),
        (TaskState::Started, None),
        "{kind:?}"
    );

    // A worker without a live heartbeat takes nothing.
    let silent = WorkerInfo::this_process("silent@test");
    assert_eq!(
        claim("t-silent", &silent).await,
        Claim::Held(silent.id.clone()),
        "{kind:?}"
    );
    assert!(backend.get("t-silent").await.expect("get").is_none());

    // Eight workers (each its own pool) claim one id at the same moment:
    // a new one (the insert decides) and one given back (the update does).
    let mut freed = TaskOutcome::new("raced-freed", "tasks.slow", TaskState::Retry);
    freed.worker_id = None;
    backend.store(vec![freed]).await.expect("store RETRY");
    let mut claimants = Vec::new();
    for n in 0..8 {
        let w = WorkerInfo::this_process(&format!("w{n}@test"));
        let pool = ResultBackend::connect(&db.url).await.expect("backend");
        pool.worker_heartbeat(&w, Duration::from_secs(60))
            .await
            .expect("heartbeat");
        claimants.push((pool, w));
    }
    for id in ["raced-new", "raced-freed"] {
        let claims = claimants
            .iter()
            .map(|(pool, w)| pool.claim_run(started(id, Some(&w.id))));
        let found: Vec<Claim> = futures_util::future::join_all(claims)
            .await
            .into_iter()
            .map(|r| r.expect("claim"))
            .collect();
        let taken = found.iter().filter(|c| **c == Claim::Taken).count();
        assert_eq!(taken, 1, "{id}: one of {found:?} on {kind:?}");
    }
    db.drop_database().await;
}

celeriac_common::on_each_database!(claims_on);

/// A worker SIGKILLed while a task sleeps: with no worker on its queue,
/// the message waits in the broker, and a worker on another queue (same
/// database) moves the row from STARTED to RETRY within the bound. Then a
/// worker on the queue gets the redelivered message and runs it to SUCCESS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_workers_started_task_becomes_retry_then_runs_again() {
    let db = TestDatabase::create(DbKind::Postgres).await.expect("db");
    let config = testing::config(&db.url, &unique("orphan"));
    let other = testing::config(&db.url, &unique("orphan-other"));
    let backend = db.migrated_backend().await.expect("migrated backend");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("celeriac.toml");
    std::fs::write(&file, "worker_heartbeat_secs = 1\ntrack_started = true\n").expect("config");
    let file = file.display().to_string();
    let flags = ["--config", file.as_str()];

    let doomed = spawn_worker(WORKER, &config, "doomed@test", &flags);
    let watcher = spawn_worker(WORKER, &other, "watcher@test", &flags);
    let client = Client::connect(config.clone()).await.expect("client");
    let task = client.delay::<Sleep>((8.0,)).await.expect("send");
    let start = Instant::now();
    while task.state().await.expect("state") != TaskState::Started {
        assert!(start.elapsed() < Duration::from_secs(20), "never STARTED");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Alive and heartbeating: the watcher's sweeps leave the task alone.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(task.state().await.expect("state"), TaskState::Started);

    doomed.kill();
    let killed = Instant::now();
    loop {
        let record = task.record().await.expect("record").expect("row");
        if record.state == TaskState::Retry {
            let err = record.error.expect("error");
            assert_eq!(err.kind, WORKER_LOST);
            break;
        }
        assert_eq!(record.state, TaskState::Started);
        // Expiry after 3 missed heartbeats (3 s) plus a sweep every 2 s.
        assert!(
            killed.elapsed() < Duration::from_secs(10),
            "still STARTED {:?} after the kill",
            killed.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    watcher.wait_log("WorkerLostError", Duration::from_secs(5));
    // RETRY is not final: a waiting caller keeps waiting.
    assert!(task.get(Duration::from_millis(300)).await.is_err());

    let rescuer = spawn_worker(WORKER, &config, "rescuer@test", &flags);
    let record = task.wait(Duration::from_secs(30)).await.expect("finished");
    assert_eq!(record.state, TaskState::Success);
    assert_eq!(record.worker.as_deref(), Some("rescuer@test"));
    assert_eq!(record.error, None);

    // A clean shutdown removes the worker's heartbeat row; the killed one's stays until it ages out.
    assert_eq!(rescuer.terminate(), Some(0));
    assert_eq!(watcher.terminate(), Some(0));
    let rows = |host: &'static str| {
        let backend = backend.clone();
        async move {
            workers::Entity::find()
                .filter(workers::Column::Hostname.eq(host))
                .count(backend.connection())
                .await
                .expect("count")
        }
    };
    assert_eq!(rows("rescuer@test").await, 0);
    assert_eq!(rows("watcher@test").await, 0);
    assert_eq!(rows("doomed@test").await, 1);
    let started = TaskEntity::find()
        .filter(TaskColumn::State.eq("STARTED"))
        .count(backend.connection())
        .await
        .expect("count");
    assert_eq!(started, 0);
    testing::cleanup(&config).await;
    testing::cleanup(&other).await;
    db.drop_database().await;
}

/// A database made before heartbeats existed (no `worker_id`, no m0003)
/// is upgraded in place.
#[tokio::test]
async fn migration_adds_worker_id_to_an_older_taskmeta() {
    use sea_orm::ConnectionTrait;
    for kind in [DbKind::Sqlite, DbKind::Postgres, DbKind::Mysql] {
        let db = TestDatabase::create(kind).await.expect("db");
        let backend = db.migrated_backend().await.expect("migrated backend");
        let conn = backend.connection();
        for sql in [
            "ALTER TABLE celeriac_taskmeta DROP COLUMN worker_id",
            "DROP TABLE celeriac_workers",
            "DELETE FROM celeriac_migrations WHERE version = 'm0003_create_workers'",
        ] {
            conn.execute_unprepared(sql).await.expect(sql);
        }
        backend
            .store_progress(started("old", None))
            .await
            .expect_err("no worker_id column yet");
        backend.migrate().await.expect("upgrade");
        backend
            .store_progress(started("new", Some("w1")))
            .await
            .expect("worker_id column added");
        let w = WorkerInfo::this_process("w@test");
        backend
            .worker_heartbeat(&w, Duration::from_secs(5))
            .await
            .expect("workers table added");
        db.drop_database().await;
    }
}

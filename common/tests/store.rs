//! Storing outcomes on SQLite, PostgreSQL and MariaDB: a REVOKED recorded
//! by a caller (`Client::revoke`) never overwrites a final outcome a worker
//! stored between the caller's look and its write, and keeps what a started
//! task's row says that the caller does not know.

use celeriac_common::TaskState;
use celeriac_common::backend::TaskOutcome;
use celeriac_common::testing::{DbKind, TestDatabase, unique};

async fn revoked_never_overwrites_a_final_outcome(kind: DbKind) {
    let db = TestDatabase::create(kind).await.expect("test database");
    let backend = db.migrated_backend().await.expect("migrated backend");
    let revoked = |id: &str| {
        let mut o = TaskOutcome::new(id, "", TaskState::Revoked);
        o.done_at = Some(chrono::Utc::now());
        o
    };
    let state = |id: String| {
        let backend = backend.clone();
        async move { backend.get(&id).await.expect("read").map(|r| r.state) }
    };
    let (done, running, absent) = (unique("done"), unique("running"), unique("absent"));
    backend
        .store(vec![TaskOutcome::new(
            done.as_str(),
            "tasks.t",
            TaskState::Success,
        )])
        .await
        .expect("store");
    let mut started = TaskOutcome::new(running.as_str(), "tasks.t", TaskState::Started);
    started.worker = Some("w1@host".to_owned());
    started.retries = 2;
    backend.store_progress(started).await.expect("started");
    for id in [&done, &running, &absent] {
        backend
            .store_unless_ready(revoked(id))
            .await
            .expect("revoke");
    }
    assert_eq!(state(done).await, Some(TaskState::Success));
    // What the caller does not know stays.
    let row = backend.get(&running).await.expect("read").expect("row");
    assert_eq!(row.state, TaskState::Revoked);
    assert_eq!(row.task_name.as_deref(), Some("tasks.t"));
    assert_eq!(row.worker.as_deref(), Some("w1@host"));
    assert_eq!(row.retries, 2);
    assert!(row.done_at.is_some(), "{row:?}");
    assert_eq!(state(absent).await, Some(TaskState::Revoked));
    drop(backend);
    db.drop_database().await;
}

celeriac_common::on_each_database!(revoked_never_overwrites_a_final_outcome);

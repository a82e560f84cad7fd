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

/// Rows made up for tasks that did not run (a chain step not run, a step
/// that cannot be sent) never overwrite a final outcome a copy of the task
/// stored after all; elsewhere they are written as any outcome, in a batch
/// with ordinary outcomes, in one statement or several, and with chord
/// reports.
async fn made_up_rows_never_overwrite_a_final_outcome(kind: DbKind) {
    let db = TestDatabase::create(kind).await.expect("test database");
    let backend = db.migrated_backend().await.expect("migrated backend");
    let made_up = |id: &str| {
        let mut o = TaskOutcome::new(id, "tasks.step", TaskState::Revoked);
        o.error = Some(celeriac_common::backend::TaskError {
            kind: "ChainAborted".into(),
            message: "not run".into(),
            traceback: None,
        });
        o.done_at = Some(chrono::Utc::now());
        o.unless_ready = true;
        o
    };
    // 40 steps that ran (SUCCESS), 40 running (STARTED), 40 with no row.
    let ids = |what: &str| {
        (0..40)
            .map(|i| format!("{}-{i}", unique(what)))
            .collect::<Vec<_>>()
    };
    let (ran, running, absent) = (ids("ran"), ids("running"), ids("absent"));
    let mut first: Vec<TaskOutcome> = ran
        .iter()
        .map(|id| {
            let mut o = TaskOutcome::new(id.as_str(), "tasks.step", TaskState::Success);
            o.result = Some(serde_json::json!(1));
            o
        })
        .collect();
    first.extend(
        running
            .iter()
            .map(|id| TaskOutcome::new(id.as_str(), "tasks.step", TaskState::Started)),
    );
    backend.store(first).await.expect("store");
    // With an ordinary outcome in the same batch, which is written as ever.
    let plain = unique("plain");
    let mut batch = vec![TaskOutcome::new(
        plain.as_str(),
        "tasks.t",
        TaskState::Failure,
    )];
    batch.extend(
        ran.iter()
            .chain(&running)
            .chain(&absent)
            .map(|id| made_up(id)),
    );
    backend.store(batch).await.expect("store made-up rows");
    for id in &ran {
        let row = backend.get(id).await.expect("read").expect("row");
        assert_eq!(
            (row.state, row.result, row.error),
            (TaskState::Success, Some(serde_json::json!(1)), None),
            "{id} on {kind:?}"
        );
    }
    for id in running.iter().chain(&absent) {
        let row = backend.get(id).await.expect("read").expect("row");
        assert_eq!(row.state, TaskState::Revoked, "{id} on {kind:?}");
        assert_eq!(row.error.map(|e| e.kind).as_deref(), Some("ChainAborted"));
        assert_eq!(row.task_name.as_deref(), Some("tasks.step"));
    }
    let row = backend.get(&plain).await.expect("read").expect("row");
    assert_eq!(row.state, TaskState::Failure, "{kind:?}");
    // In one batch, a task's own outcome wins over a row made up for it,
    // whichever comes last.
    let both = unique("both");
    let own = TaskOutcome::new(both.as_str(), "tasks.step", TaskState::Success);
    backend
        .store(vec![own, made_up(&both)])
        .await
        .expect("store");
    let row = backend.get(&both).await.expect("read").expect("row");
    assert_eq!(row.state, TaskState::Success, "{kind:?}");
    // Stored with chord reports, in one transaction.
    let one = unique("ran-one");
    backend
        .store(vec![TaskOutcome::new(
            one.as_str(),
            "tasks.step",
            TaskState::Success,
        )])
        .await
        .expect("store");
    let stored = backend
        .store_and_report(&[made_up(&one)], &[])
        .await
        .expect("store and report");
    if stored.is_some() {
        let row = backend.get(&one).await.expect("read").expect("row");
        assert_eq!(row.state, TaskState::Success, "{kind:?}");
    }
    drop(backend);
    db.drop_database().await;
}

celeriac_common::on_each_database!(
    revoked_never_overwrites_a_final_outcome,
    made_up_rows_never_overwrite_a_final_outcome
);

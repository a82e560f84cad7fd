//! Storing outcomes on SQLite, PostgreSQL and MariaDB: a REVOKED recorded
//! by a caller (`Client::revoke`) never overwrites a final outcome a worker
//! stored between the caller's look and its write.

use celeriac_common::TaskState;
use celeriac_common::backend::TaskOutcome;
use celeriac_common::testing::{DbKind, TestDatabase, unique};

async fn revoked_never_overwrites_a_final_outcome(kind: DbKind) {
    let db = TestDatabase::create(kind).await.expect("test database");
    let backend = db.migrated_backend().await.expect("migrated backend");
    let revoked = |id: &str| TaskOutcome::new(id, "", TaskState::Revoked);
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
    backend
        .store_progress(TaskOutcome::new(
            running.as_str(),
            "tasks.t",
            TaskState::Started,
        ))
        .await
        .expect("started");
    for id in [&done, &running, &absent] {
        backend
            .store_unless_ready(revoked(id))
            .await
            .expect("revoke");
    }
    assert_eq!(state(done).await, Some(TaskState::Success));
    assert_eq!(state(running).await, Some(TaskState::Revoked));
    assert_eq!(state(absent).await, Some(TaskState::Revoked));
    drop(backend);
    db.drop_database().await;
}

celeriac_common::on_each_database!(revoked_never_overwrites_a_final_outcome);

//! A warm shutdown returns messages that did not start without counting
//! them as deliveries: they come back unflagged, so `max_deliveries`
//! (poison-loop protection) only counts deliveries that really failed.

use crate::support;

use celeriac::{Client, TaskState};
use celeriac_common::diagnostics::{Noop, Sleep};
use celeriac_common::testing::process::spawn_worker;
use celeriac_common::testing::{self, DbKind, TestDatabase, unique};
use std::time::Duration;
use support::WORKER;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_returned_at_warm_shutdown_do_not_count_as_deliveries() {
    let db = TestDatabase::create(DbKind::Sqlite).await.expect("db");
    let config = testing::config(&db.url, &unique("warm"));
    let dir = tempfile::tempdir().expect("tempdir");
    // With max_deliveries = 1 any redelivered message is dead-lettered as
    // poison: only a copy that is not flagged redelivered can run.
    let file = dir.path().join("celeriac.toml");
    std::fs::write(&file, "max_deliveries = 1\ntrack_started = true\n").expect("config");
    let file = file.display().to_string();
    let flags = ["--config", file.as_str(), "--concurrency", "1"];

    let first = spawn_worker(WORKER, &config, "first@test", &flags);
    let client = Client::connect(config.clone()).await.expect("client");
    let slow = client.delay::<Sleep>((1.5,)).await.expect("send");
    let mut rest = Vec::new();
    for _ in 0..3 {
        rest.push(client.delay::<Noop>(()).await.expect("send"));
    }
    for _ in 0..500 {
        if slow.state().await.expect("state") == TaskState::Started {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(slow.state().await.expect("state"), TaskState::Started);
    assert_eq!(first.terminate(), Some(0));
    assert_eq!(slow.state().await.expect("state"), TaskState::Success);
    for r in &rest {
        assert_eq!(r.state().await.expect("state"), TaskState::Pending);
    }

    let second = spawn_worker(WORKER, &config, "second@test", &flags);
    for r in &rest {
        let record = r.wait(Duration::from_secs(20)).await.expect("finished");
        assert_eq!(
            (record.state, record.error.map(|e| e.kind)),
            (TaskState::Success, None),
            "returned at shutdown, then run: not poison"
        );
        assert_eq!(record.worker.as_deref(), Some("second@test"));
    }
    assert_eq!(second.terminate(), Some(0));
    testing::cleanup(&config).await;
}

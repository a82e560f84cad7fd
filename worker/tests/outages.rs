//! Broker restarts while producers publish and workers consume. These stop
//! the shared RabbitMQ, so they are `#[ignore]`d and run by scripts/test.sh
//! in its serial step (`--run-ignored only --test-threads 1`). They always
//! start RabbitMQ again, even when they fail.

mod support;

use celeriac::{ApplyOptions, Client, TaskState};
use celeriac_common::diagnostics::ECHO;
use celeriac_common::testing::{self, DbKind, TestDatabase, unique};
use serde_json::{Map, json};
use std::process::Command;
use std::time::Duration;
use support::WorkerProcess;

fn rabbitmqctl(args: &[&str]) {
    let status = Command::new("rabbitmqctl")
        .args(args)
        .status()
        .expect("rabbitmqctl");
    assert!(status.success(), "rabbitmqctl {args:?} failed");
}

/// Starts the RabbitMQ app again when dropped, so a failing test cannot
/// leave the broker down for the tests after it.
struct RestartGuard;
impl Drop for RestartGuard {
    fn drop(&mut self) {
        let _ = Command::new("rabbitmqctl").arg("start_app").status();
        let _ = Command::new("rabbitmqctl").args(["await_startup"]).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "restarts the shared RabbitMQ; run serially by scripts/test.sh"]
async fn broker_restart_loses_no_confirmed_task() {
    let db = TestDatabase::create(DbKind::Sqlite).await.expect("db");
    let mut config = testing::config(&db.url, &unique("outage"));
    config.publish_timeout_secs = 60;
    let worker = WorkerProcess::spawn(&config, "survivor@test", &[]);
    let client = Client::connect(config.clone()).await.expect("client");

    let publisher = {
        let client = client.clone();
        tokio::spawn(async move {
            let mut sent = Vec::new();
            for i in 0..300 {
                let r = client
                    .send_task(ECHO, vec![json!(i)], Map::new(), ApplyOptions::new())
                    .await;
                sent.push(
                    r.expect("publish waits out the outage and succeeds")
                        .id()
                        .to_owned(),
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            sent
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let guard = RestartGuard;
    rabbitmqctl(&["stop_app"]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    drop(guard); // start_app + await_startup
    let sent = publisher.await.expect("publisher");
    for id in &sent {
        let r = client.async_result::<serde_json::Value>(id.clone());
        let rec = match r.wait(Duration::from_secs(60)).await {
            Ok(rec) => rec,
            Err(e) => panic!(
                "task {id} did not finish: {e}\nworker log:\n{}",
                worker.log_text()
            ),
        };
        assert_eq!(rec.state, TaskState::Success);
    }
    let log = worker.log_text();
    assert!(log.contains("reconnecting"), "worker noticed the outage");
    assert_eq!(
        worker.terminate(),
        Some(0),
        "worker survived and stops cleanly"
    );
    testing::cleanup(&config).await;
}

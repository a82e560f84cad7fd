//! `celeriac result ID --follow` with its output not a terminal: one plain
//! line per state or progress change, then the outcome as JSON; the exit
//! code says whether the task succeeded.

use celeriac_common::TaskState;
use celeriac_common::backend::{ResultBackend, TaskError, TaskOutcome};
use celeriac_common::testing::{DbKind, TestDatabase, unique};
use serde_json::json;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};

fn follow(db: &str, id: &str) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_celeriac"))
        .args([
            "result",
            id,
            "--follow",
            "--wait",
            "20",
            "--result-backend",
            db,
        ])
        .env_remove("CELERIAC_CONFIG")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run celeriac")
}

async fn progress(backend: &ResultBackend, id: &str, done: u64) {
    let mut o = TaskOutcome::new(id, "t.steps", TaskState::Progress);
    o.result = Some(json!({"done": done, "total": 3, "file": format!("f{done}")}));
    backend.store_progress(o).await.expect("progress");
    // Longer than the command's 200 ms poll: each value is seen.
    tokio::time::sleep(Duration::from_millis(500)).await;
}

#[tokio::test]
async fn follow_prints_plain_progress_lines_then_the_outcome() {
    let db = TestDatabase::create(DbKind::Sqlite).await.expect("db");
    let backend = db.migrated_backend().await.expect("migrated backend");

    let id = unique("follow-ok");
    let mut child = follow(&db.url, &id);
    // Its first line says it is watching: only then does the task move.
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let first = lines.next_line().await.expect("read");
    assert_eq!(first.as_deref(), Some("PENDING"));
    for done in 1..=2 {
        progress(&backend, &id, done).await;
    }
    let mut ok = TaskOutcome::new(&id, "t.steps", TaskState::Success);
    ok.result = Some(json!("all done"));
    backend.store(vec![ok]).await.expect("store");
    let mut rest = Vec::new();
    while let Some(line) = lines.next_line().await.expect("read") {
        rest.push(line);
    }
    let status = child.wait().await.expect("ran");
    assert_eq!(
        rest,
        [
            r#"PROGRESS 1/3 {"done":1,"file":"f1","total":3}"#,
            r#"PROGRESS 2/3 {"done":2,"file":"f2","total":3}"#,
            format!(r#"{{"id":"{id}","state":"SUCCESS","result":"all done","error":null}}"#)
                .as_str(),
        ],
    );
    assert!(status.success());

    // A failure: the outcome's line, and exit code 1.
    let id = unique("follow-fail");
    let child = follow(&db.url, &id);
    progress(&backend, &id, 1).await;
    let mut failed = TaskOutcome::new(&id, "t.steps", TaskState::Failure);
    failed.error = Some(TaskError {
        kind: "ValueError".into(),
        message: "bad file".into(),
        traceback: None,
    });
    backend.store(vec![failed]).await.expect("store");
    let out = child.wait_with_output().await.expect("ran");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.contains("PROGRESS 1/3"), "{text}");
    assert!(
        text.lines()
            .last()
            .is_some_and(|l| l.contains(r#""state":"FAILURE""#)),
        "{text}"
    );
    assert_eq!(out.status.code(), Some(1), "{text}");
    db.drop_database().await;
}

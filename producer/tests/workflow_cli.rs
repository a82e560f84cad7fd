//! `celeriac workflow ID` and the `workflow` key of `celeriac result ID`,
//! on rows stored as a worker stores them for T1 → (T2, T3) → T4 with T3
//! failed (SQLite; the worker-side run is in the worker's tests).

use celeriac_common::TaskState;
use celeriac_common::backend::chord::NewChord;
use celeriac_common::backend::{ResultBackend, TaskError, TaskOutcome};
use serde_json::{Value, json};
use std::process::{Command, Output};

fn celeriac(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_celeriac"))
        .args(args)
        .env_remove("CELERIAC_CONFIG")
        .env_remove("NO_COLOR")
        .output()
        .expect("run celeriac")
}

fn outcome(id: &str, state: TaskState, parent: Option<&str>, group: Option<u32>) -> TaskOutcome {
    let mut o = TaskOutcome::new(id, format!("tasks.{id}"), state);
    o.root_id = Some("t1".to_owned());
    o.parent_id = parent.map(str::to_owned);
    o.group_id = group.map(|_| "g1".to_owned());
    o.group_index = group;
    o
}

#[tokio::test]
async fn workflow_draws_the_tree_and_result_carries_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("r.db").display());
    let backend = ResultBackend::connect(&url).await.expect("connect");
    backend.migrate().await.expect("migrate");
    let mut failed = outcome("t3", TaskState::Failure, Some("t1"), Some(1));
    failed.error = Some(TaskError {
        kind: "ValueError".to_owned(),
        message: "bad input\nsecond line".to_owned(),
        traceback: None,
    });
    let lone = TaskOutcome::new("lone", "tasks.lone", TaskState::Success);
    backend
        .store(vec![
            outcome("t1", TaskState::Success, None, None),
            outcome("t2", TaskState::Success, Some("t1"), Some(0)),
            failed,
            lone,
        ])
        .await
        .expect("store");
    backend
        .create_chord(&NewChord {
            group_id: "g1".to_owned(),
            size: 2,
            callback: json!({"task": "tasks.t4", "args": [], "kwargs": {}}),
            callback_id: "t4".to_owned(),
        })
        .await
        .expect("chord");

    let out = celeriac(&["workflow", "t3", "--result-backend", &url]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let expected = "\
workflow t1: 4 tasks (1 FAILURE, 1 PENDING, 2 SUCCESS)
├── tasks.t1  SUCCESS  t1
├── chord g1  2/2 done: 1 succeeded, 1 failed; chord PENDING (0/2 counted)
│   ├── [0] tasks.t2  SUCCESS  t2
│   └── [1] tasks.t3  FAILURE  t3  ValueError: bad input  ◀
└── tasks.t4  PENDING  t4  (chord callback)
";
    assert_eq!(String::from_utf8_lossy(&out.stdout), expected);

    let out = celeriac(&[
        "workflow",
        "g1",
        "--color",
        "always",
        "--result-backend",
        &url,
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("\u{1b}[") && text.contains("chord g1"),
        "{text}"
    );

    let out = celeriac(&["workflow", "t1", "--json", "--result-backend", &url]);
    let tree: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(tree["root_id"], "t1");
    assert_eq!(tree["steps"][0][1]["members"][1][0]["state"], "FAILURE");
    assert_eq!(tree["steps"][0][2]["id"], "t4");

    let out = celeriac(&["result", "t2", "--result-backend", &url]);
    let record: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(record["state"], "SUCCESS");
    assert_eq!(record["workflow"]["steps"][0][1]["id"], "g1");
    let out = celeriac(&["result", "lone", "--result-backend", &url]);
    let record: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert!(record.get("workflow").is_none(), "a lone task: {record}");

    let out = celeriac(&["workflow", "nope", "--result-backend", &url]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no task or group nope"), "{err}");
}

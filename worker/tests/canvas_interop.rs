//! Canvases across the Python border, with the real Celery from PyPI
//! (`.venv`, made by `scripts/python-env.sh`) and the local RabbitMQ:
//!
//! - Python → Rust: a chain, a group and a chord sent by Celery's client
//!   (`scripts/celery_canvas_send.py`) run on a celeriac worker; the chain
//!   and the group complete with Celery's semantics; the chord, which
//!   Celery's client does not record in celeriac's backend, fails its
//!   callback with a `ChordError` instead of hanging.
//! - Rust → Python: a chain, a group and a chord built by celeriac whose
//!   tasks run partly on a Celery worker (`scripts/celery_interop_check.py`):
//!   a Python chain step hands the next step to the celeriac queue, a
//!   group's members run on both, a chord counted by celeriac calls back a
//!   Python task with the results in order.
//!
//! See docs/workflows.md, "Across the Python border", for the table.

use celeriac::Client;
use celeriac::canvas::{TaskSig, chord, group};
use celeriac_common::TaskState;
use celeriac_common::backend::{ResultBackend, TaskRecord};
use celeriac_common::diagnostics::ECHO;
use celeriac_common::testing::process::{self, LoggedProcess};
use celeriac_common::testing::{self, DbKind, TestDatabase, unique};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(60);

fn echo(args: Value) -> TaskSig {
    let Value::Array(args) = args else {
        panic!("args must be a list")
    };
    TaskSig::by_name(ECHO, args)
}

/// Runs a script of `scripts/` with the venv's python; its stdout's JSON
/// lines (the run must succeed within `limit`).
async fn python(script: &str, args: &[&str], limit: Duration) -> Vec<Value> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let env = std::process::Command::new(root.join("scripts/python-env.sh"))
        .output()
        .expect("python-env.sh");
    assert!(env.status.success(), "python-env.sh: {env:?}");
    let py = String::from_utf8_lossy(&env.stdout).trim().to_owned();
    let run = tokio::process::Command::new(py)
        .arg(root.join("scripts").join(script))
        .args(args)
        .current_dir(&root)
        .env("CELERIAC_BROKER_URL", testing::broker_url())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(limit, run)
        .await
        .unwrap_or_else(|_| panic!("{script} ran over {limit:?}"))
        .expect("run python");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{script}: {stdout}\n{stderr}");
    stdout
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

struct Rust {
    db: TestDatabase,
    config: celeriac::Config,
    backend: ResultBackend,
    process: LoggedProcess,
}

/// A `celeriac-worker` process on `queue` (its built-in tasks include
/// `celeriac.echo`), results in a fresh SQLite file.
async fn rust_worker(queue: &str) -> Rust {
    let db = TestDatabase::create(DbKind::Sqlite).await.expect("db");
    let config = testing::config(&db.url, queue);
    let backend = db.migrated_backend().await.expect("migrated backend");
    let process = process::spawn_worker(
        env!("CARGO_BIN_EXE_celeriac-worker"),
        &config,
        "canvas-interop@test",
        &[],
    );
    Rust {
        db,
        config,
        backend,
        process,
    }
}

impl Rust {
    async fn done(&self, id: &str) -> TaskRecord {
        let start = Instant::now();
        loop {
            if let Some(r) = self.backend.get(id).await.expect("read")
                && r.state.is_ready()
            {
                return r;
            }
            assert!(
                start.elapsed() < WAIT,
                "{id} never finished:\n{}",
                self.process.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn finish(self, extra_queues: &[String]) {
        let _ = self.process.terminate();
        testing::cleanup(&self.config).await;
        let names: Vec<&str> = extra_queues.iter().map(String::as_str).collect();
        testing::delete_queues(&names).await;
        self.db.drop_database().await;
    }
}

fn ids(v: &Value) -> Vec<String> {
    v.as_array()
        .expect("ids")
        .iter()
        .map(|i| i.as_str().expect("id").to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn celery_canvases_run_on_celeriac() {
    let queue = unique("canvas-p2r");
    // Celery declares the queue as it publishes; the worker declares it again.
    let sent = python("celery_canvas_send.py", &["--queue", &queue], WAIT).await;
    let sent = &sent[0];
    let rust = rust_worker(&queue).await;

    // chain: each step gets the previous result prepended.
    let steps = ids(&sent["chain"]);
    let last = rust.done(&steps[2]).await;
    let r1 = json!({"args": [1], "kwargs": {}});
    let r2 = json!({"args": [r1, 2], "kwargs": {}});
    assert_eq!(last.result, Some(json!({"args": [r2, 3], "kwargs": {}})));
    assert_eq!(last.parent_id.as_deref(), Some(steps[1].as_str()));
    assert_eq!(last.root_id.as_deref(), Some(steps[0].as_str()));

    // group: every member, in order, with the group id.
    let gid = sent["group"]["id"].as_str().expect("gid");
    for (i, id) in ids(&sent["group"]["members"]).iter().enumerate() {
        let r = rust.done(id).await;
        assert_eq!(r.state, TaskState::Success);
        assert_eq!(r.group_id.as_deref(), Some(gid));
        assert_eq!(r.group_index, Some(i as u32));
        assert_eq!(r.result, Some(json!({"args": [10 + i], "kwargs": {}})));
    }

    // chord: the members run; the callback, whose chord Celery's client
    // did not record here, fails once with a ChordError (never hangs).
    for id in ids(&sent["chord"]["members"]) {
        assert_eq!(rust.done(&id).await.state, TaskState::Success);
    }
    let callback = sent["chord"]["callback"].as_str().expect("callback");
    let r = rust.done(callback).await;
    assert_eq!(r.state, TaskState::Failure);
    let err = r.error.expect("error");
    assert_eq!(err.kind, "ChordError");
    assert!(err.message.contains("not recorded"), "{}", err.message);
    rust.finish(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn celeriac_canvases_run_partly_on_celery() {
    let rust_q = unique("canvas-r2p");
    let py_q = format!("{rust_q}.py");
    let rust = rust_worker(&rust_q).await;
    let client = Client::connect(rust.config.clone()).await.expect("client");
    let on_py = |s: TaskSig| s.queue(py_q.clone());
    let on_rust = |s: TaskSig| s.queue(rust_q.clone());

    // Python runs step 1 and sends step 2 to the celeriac queue.
    let chain = on_py(echo(json!([1]))) | on_rust(echo(json!([2])));
    let chain = client.send_workflow(&chain).await.expect("chain");
    // One member on each side.
    let both = group([on_py(echo(json!([10]))), on_rust(echo(json!([11])))]);
    let both = client.send_workflow(&both).await.expect("group");
    // Counted by celeriac, called back on Python.
    let header = [on_rust(echo(json!([20]))), on_rust(echo(json!([21])))];
    let fan = client
        .send_workflow(&chord(header, on_py(echo(json!(["cb"])))))
        .await
        .expect("chord");

    let count = "3"; // chain step 1, group member 10, chord callback
    let lines = python(
        "celery_interop_check.py",
        &["--queue", &py_q, "--count", count, "--timeout", "45"],
        Duration::from_secs(120),
    )
    .await;
    let line = |id: &str| {
        lines
            .iter()
            .find(|l| l["id"] == json!(id) && l["extra"] != json!(true))
            .unwrap_or_else(|| panic!("{id} did not run on Python: {lines:?}"))
            .clone()
    };
    let step1 = chain.parent().expect("step 1").id().to_owned();
    assert_eq!(line(&step1)["result"], json!([[1], {}]));
    let step2 = rust.done(chain.id()).await;
    assert_eq!(
        step2.result,
        Some(json!({"args": [[[1], {}], 2], "kwargs": {}})),
        "Python's result prepended"
    );
    assert_eq!(step2.parent_id.as_deref(), Some(step1.as_str()));

    let members = both.as_group().expect("group").ids();
    assert_eq!(line(&members[0])["result"], json!([[10], {}]));
    assert_eq!(rust.done(&members[1]).await.state, TaskState::Success);

    let cb = line(fan.id());
    let r = |i: i64| json!({"args": [i], "kwargs": {}});
    assert_eq!(
        cb["args"],
        json!([[r(20), r(21)], "cb"]),
        "results in order"
    );
    assert_eq!(cb["result"], json!([[[r(20), r(21)], "cb"], {}]));
    rust.finish(&[py_q]).await;
}

//! Results across the border by Celery's `rpc://` backend, over the real
//! RabbitMQ, against Celery 5 from the project's virtualenv: a Python app
//! reads what a celeriac worker ran, and celeriac's `AsyncResult` reads
//! what a Python worker ran (and what a celeriac worker ran).

use crate::support;

use celeriac::{ApplyOptions, Client, ResultError};
use celeriac_common::TaskState;
use celeriac_common::testing::process::LoggedProcess;
use celeriac_common::testing::{self, unique};
use celeriac_worker::Worker;
use serde_json::{Map, Value, json};
use std::process::Command;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

/// Runs a Python program with `args`, bounded; its stdout as JSON.
async fn python(code: &str, args: &[&str]) -> Value {
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(support::venv_bin("python"))
            .arg("-c")
            .arg(code)
            .args(args)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("python finishes in 60 s")
    .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "python failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

/// A Celery app with `result_backend='rpc://'` sending two tasks to a
/// celeriac worker and reading their outcomes.
const PY_CALLER: &str = r#"
import json, sys, celery
broker, queue = sys.argv[1], sys.argv[2]
app = celery.Celery(broker=broker, backend='rpc://')
# A reply queue that does not exist: the worker goes on all the same.
app.send_task('celeriac.noop', queue=queue, reply_to='gone-' + queue)
ok = app.send_task('celeriac.echo', args=[1, 'a'], kwargs={'k': True}, queue=queue)
bad = app.send_task('celeriac.fail', args=['boom'], queue=queue)
out = {'ok': ok.get(timeout=20), 'ok_state': ok.state}
try:
    bad.get(timeout=20)
    out['bad'] = None
except Exception as e:
    out['bad'] = [type(e).__name__, str(e)]
out['bad_state'] = bad.state
out['bad_traceback'] = bad.traceback
print(json.dumps(out))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_and_celeriac_read_celeriac_results_over_rpc() {
    let mut config = testing::config("rpc://", &unique("rpc-rs"));
    config.track_started = true;
    let worker = Worker::builder(config.clone())
        .with_diagnostics()
        .build()
        .await
        .expect("build worker");
    let running = support::InProcess::spawn(worker);

    let out = python(PY_CALLER, &[&config.broker_url, &config.default_queue]).await;
    assert_eq!(out["ok"], json!({"args": [1, "a"], "kwargs": {"k": true}}));
    assert_eq!(out["ok_state"], "SUCCESS");
    assert_eq!(out["bad"], json!(["TaskFailed", "boom"]), "{out:#}");
    assert_eq!(out["bad_state"], "FAILURE");
    assert!(
        out["bad_traceback"]
            .as_str()
            .is_some_and(|t| t.contains("boom")),
        "{out:#}"
    );

    // celeriac's own client with rpc:// reads the same way.
    let client = Client::connect(config.clone()).await.expect("client");
    let ok = client
        .send_task(
            "celeriac.echo",
            vec![json!(2)],
            Map::new(),
            ApplyOptions::default(),
        )
        .await
        .expect("send");
    assert_eq!(
        ok.get(WAIT).await.expect("echo"),
        json!({"args": [2], "kwargs": {}})
    );
    assert_eq!(ok.state().await.expect("state"), TaskState::Success);
    assert!(ok.forget().await.expect("forget"));
    assert_eq!(ok.state().await.expect("state"), TaskState::Pending);
    // Groups and chords need a database, as with Celery's rpc backend.
    assert!(client.backend().await.is_err());

    client.close().await;
    running.stop(WAIT).await.expect("worker ran");
    // Every message was acked, the one whose reply had nowhere to go too.
    assert_eq!(support::ready_messages(&config.default_queue).await, 0);
    testing::cleanup(&config).await;
}

/// The Python worker's tasks, with the rpc backend.
const PY_TASKS: &str = r#"
import os, celery
app = celery.Celery('pytasks', broker=os.environ['BROKER'], backend='rpc://')
app.conf.task_track_started = True

@app.task(name='pytasks.add')
def add(x, y):
    return x + y

@app.task(name='pytasks.fail')
def fail(message):
    raise ValueError(message)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn celeriac_reads_python_results_over_rpc() {
    let config = testing::config("rpc://", &unique("rpc-py"));
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("pytasks.py"), PY_TASKS).expect("write tasks");
    let host = format!("{}@test", unique("py"));
    let mut cmd = Command::new(support::venv_bin("celery"));
    cmd.current_dir(dir.path())
        .args(["-A", "pytasks", "worker", "-Q", &config.default_queue])
        .args(["-n", &host, "-P", "solo", "-l", "info"])
        .args([
            "--without-mingle",
            "--without-gossip",
            "--without-heartbeat",
        ])
        .env("BROKER", &config.broker_url)
        .env("PYTHONDONTWRITEBYTECODE", "1");
    let celery = LoggedProcess::spawn(cmd, "celery worker", " ready.");

    let client = Client::connect(config.clone()).await.expect("client");
    let send = |name: &'static str, args: Vec<Value>| {
        let client = client.clone();
        async move {
            client
                .send_task(name, args, Map::new(), ApplyOptions::default())
                .await
                .expect("send")
        }
    };
    let add = send("pytasks.add", vec![json!(2), json!(3)]).await;
    assert_eq!(add.get(WAIT).await.expect("add"), json!(5));
    assert_eq!(add.state().await.expect("state"), TaskState::Success);
    let record = add.record().await.expect("record").expect("held");
    assert!(record.done_at.is_some(), "{record:?}");

    let fail = send("pytasks.fail", vec![json!("nope")]).await;
    match fail.get(WAIT).await {
        Err(ResultError::Failed { error, .. }) => {
            assert_eq!(error.kind, "ValueError");
            assert_eq!(error.message, "nope");
            assert!(
                error
                    .traceback
                    .is_some_and(|t| t.contains("ValueError: nope")),
                "traceback"
            );
        }
        other => panic!("expected a failure, got {other:?}\n{}", celery.log_text()),
    }
    client.close().await;
    drop(celery);
    testing::delete_queues(&[&config.default_queue]).await;
}

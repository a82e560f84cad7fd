//! `celeriac inspect`, `celeriac control` and `celeriac events` (the admin
//! binary, built beside the worker by a workspace build) against a celeriac
//! worker process and a Python Celery worker from the project's virtualenv
//! (`scripts/python-env.sh`), over the real RabbitMQ.
//!
//! Every subprocess and every wait is bounded; a failure shows the output.

use crate::support;

use celeriac::{ApplyOptions, Client};
use celeriac_common::testing::process::{self, LoggedProcess, sibling_bin, spawn_worker};
use celeriac_common::testing::{self, DbKind, TestDatabase, unique};
use serde_json::{Map, Value, json};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use support::WORKER;

const WAIT: Duration = Duration::from_secs(30);

/// What a `celeriac` run gave.
struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Out {
    fn report(&self) -> String {
        format!(
            "exit {:?}\nstdout:\n{}\nstderr:\n{}",
            self.code, self.stdout, self.stderr
        )
    }

    /// The `--json` output: `{hostname: reply}`.
    fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", self.report()))
    }
}

/// `celeriac ARGS` with the test's broker, bounded to 60 s.
async fn celeriac(config: &celeriac::Config, args: &[&str]) -> Out {
    let mut cmd = tokio::process::Command::from(process::command(sibling_bin("celeriac"), config));
    cmd.args(args).kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("celeriac {args:?} did not finish in 60 s"))
        .expect("run celeriac");
    Out {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `celeriac inspect|control ... -d host --timeout 10 --json`: `host`'s reply.
async fn ask(config: &celeriac::Config, host: &str, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["-d", host, "--timeout", "10", "--json"]);
    let out = celeriac(config, &all).await;
    assert_eq!(out.code, Some(0), "celeriac {all:?}:\n{}", out.report());
    out.json()
        .get(host)
        .cloned()
        .unwrap_or_else(|| panic!("no reply from {host}:\n{}", out.report()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_and_control_a_celeriac_worker() {
    let db = TestDatabase::create(DbKind::Sqlite).await.expect("db");
    let config = testing::config(&db.url, &unique("admin"));
    let host = format!("{}@test", unique("admin"));
    let worker = spawn_worker(WORKER, &config, &host, &[]);

    let started = Instant::now();
    assert_eq!(
        ask(&config, &host, &["inspect", "ping"]).await,
        json!({"ok": "pong"})
    );
    // The one destination replied: no wait for the 10 s timeout.
    assert!(started.elapsed() < Duration::from_secs(8));
    let human = celeriac(&config, &["inspect", "ping", "-d", &host]).await;
    assert!(
        human
            .stdout
            .starts_with(&format!("-> {host}: OK\n    pong\n")),
        "{}",
        human.report()
    );
    let registered = ask(&config, &host, &["inspect", "registered"]).await;
    assert!(
        registered
            .as_array()
            .is_some_and(|names| names.contains(&json!("celeriac.noop"))),
        "{registered}"
    );
    let stats = ask(&config, &host, &["inspect", "stats"]).await;
    assert_eq!(stats["pid"], json!(worker.pid()), "{stats}");
    assert_eq!(stats["sw_ident"], "celeriac", "{stats}");

    let rate = ask(
        &config,
        &host,
        &["control", "rate-limit", "celeriac.noop", "10/s"],
    )
    .await;
    assert_eq!(rate, json!({"ok": "new rate limit set successfully"}));
    let limits = ask(
        &config,
        &host,
        &["control", "time-limit", "celeriac.noop", "5", "10"],
    )
    .await;
    assert_eq!(limits, json!({"ok": "time limits set successfully"}));

    // A queue added by remote control is consumed.
    let extra = unique("admin-extra");
    let added = ask(&config, &host, &["control", "add-consumer", &extra]).await;
    assert_eq!(added, json!({"ok": format!("add consumer {extra}")}));
    let client = Client::connect(config.clone()).await.expect("client");
    let sent = client
        .send_task(
            "celeriac.echo",
            vec![json!("via the added queue")],
            Map::new(),
            ApplyOptions::new().queue(extra.clone()),
        )
        .await
        .expect("send");
    let record = sent.wait(WAIT).await.expect("the task ran");
    assert_eq!(record.state, celeriac::TaskState::Success);
    let cancelled = ask(&config, &host, &["control", "cancel-consumer", &extra]).await;
    assert_eq!(
        cancelled,
        json!({"ok": format!("no longer consuming from {extra}")})
    );

    assert_eq!(worker.terminate(), Some(0));
    testing::delete_queues(&[&extra]).await;
    testing::cleanup(&config).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nobody_replying_is_an_error() {
    let config = testing::config("none", &unique("admin-nobody"));
    let nobody = format!("{}@nowhere", unique("nobody"));
    let out = celeriac(
        &config,
        &["inspect", "ping", "-d", &nobody, "--timeout", "0.5"],
    )
    .await;
    assert_eq!(out.code, Some(1), "{}", out.report());
    assert!(
        out.stderr
            .contains(&format!("no reply from {nobody} within 0.5s")),
        "{}",
        out.report()
    );
    assert!(out.stdout.is_empty(), "{}", out.report());
    let bad = celeriac(&config, &["inspect", "ping", "--timeout=-1"]).await;
    assert_eq!(bad.code, Some(2), "{}", bad.report());
}

/// `celeriac events ARGS` running, its stdout lines sent on a channel.
struct Tail {
    child: std::process::Child,
    lines: mpsc::Receiver<String>,
}

impl Tail {
    fn start(config: &celeriac::Config, args: &[&str]) -> Tail {
        let mut child = process::command(sibling_bin("celeriac"), config)
            .arg("events")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start celeriac events");
        let (tx, lines) = mpsc::channel();
        let (err_tx, err_rx) = mpsc::channel();
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = err_tx.send(line);
            }
        });
        let ready = err_rx.recv_timeout(WAIT).expect("events never listened");
        assert!(ready.contains("listening for events"), "{ready}");
        Tail { child, lines }
    }

    /// The events printed until one of type `last` came (bounded).
    fn until(&self, last: &str) -> Vec<Value> {
        let deadline = Instant::now() + WAIT;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no {last} event; saw {seen:?}"));
            let event: Value = serde_json::from_str(&line).expect("a JSON line");
            let done = event["type"] == last;
            seen.push(event);
            if done {
                return seen;
            }
        }
    }
}

impl Drop for Tail {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_follow_a_task_from_a_celeriac_worker() {
    let db = TestDatabase::create(DbKind::Sqlite).await.expect("db");
    let config = testing::config(&db.url, &unique("admin-events"));
    let host = format!("{}@test", unique("events"));
    let worker = spawn_worker(WORKER, &config, &host, &["-E"]);
    let tail = Tail::start(
        &config,
        &["--json", "--worker", &host, "--task", "celeriac.echo"],
    );
    let client = Client::connect(config.clone()).await.expect("client");
    let sent = client
        .send_task(
            "celeriac.echo",
            vec![json!(7)],
            Map::new(),
            ApplyOptions::new(),
        )
        .await
        .expect("send");
    let seen = tail.until("task-succeeded");
    let kinds: Vec<&str> = seen.iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(
        kinds,
        ["task-received", "task-started", "task-succeeded"],
        "{seen:?}"
    );
    assert!(
        seen.iter()
            .all(|e| e["uuid"] == sent.id() && e["hostname"] == host.as_str())
    );
    assert_eq!(seen[0]["name"], "celeriac.echo");
    drop(tail);
    assert_eq!(worker.terminate(), Some(0));
    testing::cleanup(&config).await;
}

/// The virtualenv's `celery` (made on first use).
fn celery_bin() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new(root.join("scripts/python-env.sh"))
        .stderr(Stdio::inherit())
        .output()
        .expect("run python-env.sh");
    assert!(out.status.success(), "python-env.sh failed");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).with_file_name("celery")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_and_control_a_python_celery_worker() {
    let config = testing::config("none", &unique("admin-py"));
    let host = format!("{}@test", unique("py"));
    let mut cmd = Command::new(celery_bin());
    cmd.args(["-b", &testing::broker_url(), "worker", "-Q"])
        .arg(&config.default_queue)
        .args(["-n", &host, "-P", "solo", "-l", "info"])
        .args(["--without-mingle", "--without-gossip"])
        .env("PYTHONDONTWRITEBYTECODE", "1");
    let celery = LoggedProcess::spawn(cmd, "celery worker", " ready.");
    assert_eq!(
        ask(&config, &host, &["inspect", "ping"]).await,
        json!({"ok": "pong"})
    );
    // Celery's worker stops without replying: the command says so and succeeds.
    let out = celeriac(&config, &["control", "shutdown", "-d", &host]).await;
    assert_eq!(out.code, Some(0), "{}", out.report());
    assert!(out.stderr.contains("no worker replied"), "{}", out.report());
    celery.wait_log("Got shutdown from remote", WAIT);
    drop(celery);
    testing::delete_queues(&[&config.default_queue]).await;
}

//! Python Celery and celeriac interoperate over the real RabbitMQ, both ways:
//!
//! - celeriac's producer feeds a real Celery 5 worker
//!   (`scripts/celery_interop_check.py`: Celery's own consumer, Request and
//!   tracer), which must run every task with the arguments Rust sent;
//! - the real Celery client (`scripts/celery_send.py`: `send_task`,
//!   `apply_async`, `delay`, with real `datetime` / `UUID` / `Decimal`
//!   arguments) feeds an in-process celeriac worker, whose results are read
//!   from the result backend;
//! - both declare and share one quorum queue.
//!
//! The Python side runs from the project's virtualenv (`scripts/python-env.sh`).
//! Every subprocess and every wait is bounded; a failure shows the Python output.

use celeriac::{ApplyOptions, Client, ClientError, Signature, TaskDef, TaskMessage};
use celeriac_common::broker::{self, BrokerError};
use celeriac_common::config::QueueType;
use celeriac_common::protocol::kombu;
use celeriac_common::testing::{self, DbKind, TestDatabase, unique};
use celeriac_worker::{TaskContext, TaskFailure, Worker, WorkerError};
use chrono::{DateTime, SubsecRound, Utc};
use futures_util::FutureExt;
use lapin::options::{ExchangeDeclareOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

/// How long a celeriac result may take.
const WAIT: Duration = Duration::from_secs(90);
/// How long the Celery worker may take for all its messages (its `--timeout`).
const CELERY_WORKER_SECS: u64 = 60;

// ---------------------------------------------------------------------------
// Tasks, as both sides know them.

/// `tasks.add(x, y)`: the Celery checker has it, and so does the celeriac worker below.
struct Add;
impl TaskDef for Add {
    const NAME: &'static str = "tasks.add";
    type Args = (i64, i64);
    type Output = i64;
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct MulArgs {
    x: i64,
    y: i64,
}

/// `tasks.mul(x, y)` with a struct argument: travels as kwargs.
struct Mul;
impl TaskDef for Mul {
    const NAME: &'static str = "tasks.mul";
    type Args = MulArgs;
    type Output = i64;
}

/// What Python sends as real `datetime`, `UUID` and `Decimal` objects.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Stamp {
    at: DateTime<Utc>,
    id: uuid::Uuid,
    amount: String,
    label: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Stamped {
    at: DateTime<Utc>,
    next_day: DateTime<Utc>,
    id: uuid::Uuid,
    id_version: usize,
    amount: String,
    label: String,
}

/// `interop.stamp(at=datetime, id=UUID, amount=Decimal, label=str)`.
struct StampTask;
impl TaskDef for StampTask {
    const NAME: &'static str = "interop.stamp";
    type Args = Stamp;
    type Output = Stamped;
}

/// `interop.inspect(*args, **kwargs)`: returns what the celeriac worker saw.
const INSPECT: &str = "interop.inspect";

// ---------------------------------------------------------------------------
// Running the Python side.

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// What a subprocess did.
struct Run {
    what: String,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn report(&self) -> String {
        format!(
            "{}\nexit code: {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.what, self.code, self.stdout, self.stderr
        )
    }

    fn assert_success(&self) {
        assert_eq!(self.code, Some(0), "failed:\n{}", self.report());
    }

    /// Every non-empty stdout line, parsed as JSON.
    fn json_lines(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}\n{}", self.report()))
            })
            .collect()
    }
}

fn read_all(
    pipe: Option<impl AsyncRead + Unpin + Send + 'static>,
) -> tokio::task::JoinHandle<String> {
    tokio::spawn(async move {
        let mut buf = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut buf).await;
        }
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// Runs `program args` from the repository root with the test broker in
/// `CELERIAC_BROKER_URL`, killed after `timeout` (the panic then shows what it printed).
async fn run(program: &str, args: &[&str], stdin: Option<&str>, timeout: Duration) -> Run {
    let what = format!("{program} {}", args.join(" "));
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .current_dir(repo_root())
        .env("CELERIAC_BROKER_URL", testing::broker_url())
        .env("PYTHONUNBUFFERED", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .await
            .unwrap_or_else(|e| panic!("cannot write to {what}: {e}"));
    }
    let stdout = read_all(child.stdout.take());
    let stderr = read_all(child.stderr.take());
    let status = tokio::time::timeout(timeout, child.wait()).await;
    if status.is_err() {
        let _ = child.kill().await;
    }
    let grab = |h: tokio::task::JoinHandle<String>| async move {
        tokio::time::timeout(Duration::from_secs(5), h)
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default()
    };
    let run = Run {
        what,
        code: status.as_ref().ok().and_then(|s| s.as_ref().ok()?.code()),
        stdout: grab(stdout).await,
        stderr: grab(stderr).await,
    };
    match status {
        Ok(Ok(_)) => run,
        Ok(Err(e)) => panic!("waiting for it failed ({e}):\n{}", run.report()),
        Err(_) => panic!("killed after {timeout:?}:\n{}", run.report()),
    }
}

/// The virtualenv's python (made on first use by `scripts/python-env.sh`).
async fn python() -> String {
    let script = repo_root().join("scripts/python-env.sh");
    let r = run(
        &script.to_string_lossy(),
        &[],
        None,
        Duration::from_secs(600),
    )
    .await;
    r.assert_success();
    let path = r.stdout.trim().to_owned();
    assert!(
        !path.is_empty(),
        "python-env.sh printed nothing:\n{}",
        r.report()
    );
    path
}

/// Runs a real Celery worker on `queue` for `count` messages; asserts that
/// every one ran successfully and returns the lines by task id.
async fn celery_worker(queue: &str, count: usize, extra: &[&str]) -> (Run, HashMap<String, Value>) {
    let py = python().await;
    let count_s = count.to_string();
    let timeout_s = CELERY_WORKER_SECS.to_string();
    let mut args = vec![
        "scripts/celery_interop_check.py",
        "--queue",
        queue,
        "--count",
        &count_s,
        "--timeout",
        &timeout_s,
    ];
    args.extend_from_slice(extra);
    // The checker's own watchdog fires at timeout + shutdown (10 s) + 30 s.
    let r = run(
        &py,
        &args,
        None,
        Duration::from_secs(CELERY_WORKER_SECS + 60),
    )
    .await;
    r.assert_success();
    let mut by_id = HashMap::new();
    for line in r.json_lines() {
        assert_eq!(line["ok"], json!(true), "not ok: {line}\n{}", r.report());
        if line["extra"] == json!(true) {
            continue;
        }
        let id = line["id"]
            .as_str()
            .unwrap_or_else(|| panic!("line without id: {line}\n{}", r.report()))
            .to_owned();
        by_id.insert(id, line);
    }
    assert_eq!(by_id.len(), count, "lines per task id:\n{}", r.report());
    (r, by_id)
}

/// One message as Python sent it.
#[derive(Debug, Deserialize)]
struct Sent {
    id: String,
    name: String,
    arg_types: Vec<String>,
    kwarg_types: HashMap<String, String>,
}

/// Publishes `calls` with the real Celery client (see `scripts/celery_send.py`).
async fn celery_send(queue: &str, queue_type: &str, calls: &Value) -> Vec<Sent> {
    let py = python().await;
    let text = calls.to_string();
    let r = run(
        &py,
        &[
            "scripts/celery_send.py",
            "--queue",
            queue,
            "--queue-type",
            queue_type,
            "--calls",
            "-",
        ],
        Some(&text),
        Duration::from_secs(60),
    )
    .await;
    r.assert_success();
    let lines = r.json_lines();
    assert_eq!(lines.len(), 1, "one JSON object expected:\n{}", r.report());
    let sent: Vec<Sent> = serde_json::from_value(lines[0]["sent"].clone())
        .unwrap_or_else(|e| panic!("bad output ({e}):\n{}", r.report()));
    let n = calls.as_array().map_or(0, Vec::len);
    assert_eq!(sent.len(), n, "{}", r.report());
    sent
}

// ---------------------------------------------------------------------------
// The celeriac side.

/// An in-process celeriac worker with the interop tasks.
struct RustWorker {
    stop: Option<oneshot::Sender<()>>,
    handle: tokio::task::JoinHandle<Result<(), WorkerError>>,
}

async fn start_worker(config: &celeriac::Config) -> RustWorker {
    let worker = Worker::builder(config.clone())
        .with_diagnostics()
        .register::<Add, _, _, _>(
            |_: TaskContext, (x, y)| async move { Ok::<_, TaskFailure>(x + y) },
        )
        .register::<StampTask, _, _, _>(|_, s: Stamp| async move {
            Ok::<_, TaskFailure>(Stamped {
                next_day: s.at + chrono::Duration::days(1),
                id_version: s.id.get_version_num(),
                at: s.at,
                id: s.id,
                amount: s.amount,
                label: s.label,
            })
        })
        .register_raw(INSPECT, |ctx: TaskContext, args, kwargs| async move {
            Ok::<_, TaskFailure>(json!({
                "name": ctx.name,
                "args": args,
                "kwargs": kwargs,
                "eta": ctx.eta.map(|e| e.to_rfc3339()),
                "headers": ctx.headers,
                "root_id": ctx.root_id,
                "parent_id": ctx.parent_id,
                "retries": ctx.retries,
            }))
        })
        .build()
        .await
        .expect("build worker");
    let (tx, rx) = oneshot::channel();
    let handle = tokio::spawn(worker.run_until(async move {
        let _ = rx.await;
    }));
    RustWorker {
        stop: Some(tx),
        handle,
    }
}

impl RustWorker {
    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        tokio::time::timeout(Duration::from_secs(30), self.handle)
            .await
            .expect("worker stops within 30 s")
            .expect("join")
            .expect("worker ran");
    }
}

/// Whether a queue (or an exchange) of that name exists, by passive declare.
async fn exists(conn: &lapin::Connection, queue: bool, name: &str) -> bool {
    let ch = conn.create_channel().await.expect("channel");
    let found = if queue {
        let opts = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        ch.queue_declare(name.into(), opts, FieldTable::default())
            .await
            .is_ok()
    } else {
        let opts = ExchangeDeclareOptions {
            passive: true,
            ..Default::default()
        };
        ch.exchange_declare(
            name.into(),
            lapin::ExchangeKind::Direct,
            opts,
            FieldTable::default(),
        )
        .await
        .is_ok()
    };
    if found {
        let _ = ch.close(200, "ok".into()).await;
    }
    found
}

/// The queues and the exchanges named `name` or `name.<anything>` (a test
/// config's dead-letter queue and delay topology are named so), as
/// `rabbitmqctl` lists them; `None` when it cannot tell (no rabbitmqctl, or
/// the test broker is not local).
async fn entities_named(name: &str) -> Option<(Vec<String>, Vec<String>)> {
    let uri: lapin::uri::AMQPUri = testing::broker_url().parse().ok()?;
    if !["127.0.0.1", "localhost", "::1"].contains(&uri.authority.host.as_str()) {
        return None;
    }
    let mut lists = Vec::new();
    for what in ["list_queues", "list_exchanges"] {
        let out = tokio::time::timeout(
            Duration::from_secs(60),
            tokio::process::Command::new("rabbitmqctl")
                .args(["-q", what, "-p", &uri.vhost, "name"])
                .kill_on_drop(true)
                .output(),
        )
        .await;
        let out = match out {
            Ok(Ok(out)) if out.status.success() => out,
            other => {
                eprintln!("rabbitmqctl {what} unusable ({other:?}); checking known names only");
                return None;
            }
        };
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let prefix = format!("{name}.");
        lists.push(
            text.lines()
                .map(|l| l.split('\t').next().unwrap_or_default().to_owned())
                .filter(|n| n == name || n.starts_with(&prefix))
                .collect::<Vec<_>>(),
        );
    }
    let exchanges = lists.pop()?;
    Some((lists.pop()?, exchanges))
}

/// Deletes every queue and exchange the test made under the name `queue`
/// (the queue, its exchange, `queue.dlq`, the delay topology...); with
/// `check`, asserts that none is left.
async fn clean_up(queue: &str, check: bool) {
    let config = testing::config("none", queue);
    testing::cleanup(&config).await;
    // Anything else named after the queue (rabbitmqctl knows), and a check.
    let (mut queues, mut exchanges) = entities_named(queue).await.unwrap_or_default();
    queues.extend([queue.to_owned(), config.dead_letter_queue.clone()]);
    exchanges.extend([
        queue.to_owned(),
        format!("{}.delivery", config.delay_prefix),
    ]);
    let conn = broker::connect(&testing::broker_url(), "interop-cleanup")
        .await
        .expect("connect");
    let ch = conn.create_channel().await.expect("channel");
    for name in &queues {
        let _ = ch
            .queue_delete(name.as_str().into(), Default::default())
            .await;
    }
    for name in &exchanges {
        let _ = ch
            .exchange_delete(name.as_str().into(), Default::default())
            .await;
    }
    for name in queues.iter().filter(|_| check) {
        assert!(!exists(&conn, true, name).await, "queue {name} left behind");
    }
    for name in exchanges.iter().filter(|_| check) {
        assert!(
            !exists(&conn, false, name).await,
            "exchange {name} left behind"
        );
    }
    let _ = conn.close(200, "done".into()).await;
}

/// The task queue's and the delay queues' counts from `rabbitmqctl`, for
/// those that hold a message: ready, unacked (held by a consumer, or by
/// RabbitMQ's dead-letter worker), and in all. A quorum queue counts in
/// `messages` the ones it has dead-lettered whose new queue has not
/// confirmed them yet, which are neither ready nor unacked.
fn waiting(config: &celeriac::Config) -> String {
    let mut names: BTreeSet<String> = celeriac_common::delay::queue_names(config)
        .into_iter()
        .collect();
    names.insert(config.default_queue.clone());
    let listed = match testing::vhost::rabbitmqctl(&[
        "list_queues",
        "-q",
        "--no-table-headers",
        "name",
        "messages_ready",
        "messages_unacknowledged",
        "messages",
    ]) {
        Ok(listed) => listed,
        Err(e) => return format!("({e})"),
    };
    let found: Vec<String> = listed
        .lines()
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let [name, ready, unacked, all] = cols[..] else {
                return None;
            };
            (names.contains(name) && all != "0")
                .then(|| format!("{name}: {ready} ready, {unacked} unacked, {all} in all"))
        })
        .collect();
    if found.is_empty() {
        "none".into()
    } else {
        found.join("; ")
    }
}

/// Runs a test's `body`, then deletes what it made under the name `queue`,
/// also when it failed (then without checking, and the failure goes on).
async fn guarded(queue: &str, body: impl Future<Output = ()>) {
    let outcome = AssertUnwindSafe(body).catch_unwind().await;
    if outcome.is_err() {
        // Let a dropped in-process worker stop before its queues go.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    clean_up(queue, outcome.is_ok()).await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// The `celery_delayed_*` queues and exchanges that exist now (a Celery
/// worker on a quorum queue declares them).
async fn celery_delayed_topology() -> BTreeSet<String> {
    let conn = broker::connect(&testing::broker_url(), "interop-check")
        .await
        .expect("connect");
    let mut found = BTreeSet::new();
    for level in 0..28 {
        let name = format!("celery_delayed_{level}");
        if exists(&conn, true, &name).await {
            found.insert(format!("queue {name}"));
        }
        if exists(&conn, false, &name).await {
            found.insert(format!("exchange {name}"));
        }
    }
    if exists(&conn, false, "celery_delayed_delivery").await {
        found.insert("exchange celery_delayed_delivery".to_owned());
    }
    let _ = conn.close(200, "done".into()).await;
    found
}

fn parse_time(v: &Value) -> DateTime<Utc> {
    let text = v.as_str().unwrap_or_else(|| panic!("not a time: {v}"));
    DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|e| panic!("bad time {text}: {e}"))
        .with_timezone(&Utc)
}

// ---------------------------------------------------------------------------
// Rust -> Python

/// What a Rust call sent and what Celery must have run.
struct Expect {
    id: String,
    task: &'static str,
    args: Vec<Value>,
    kwargs: Map<String, Value>,
    result: Value,
}

fn last_id(sent: &[Expect]) -> String {
    sent.last().expect("something sent").id.clone()
}

fn kw(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        other => panic!("not an object: {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn celery_worker_runs_what_celeriac_sends() {
    let queue = unique("interop-r2p");
    guarded(&queue, rust_to_python(queue.clone())).await;
}

async fn rust_to_python(queue: String) {
    let config = testing::config("none", &queue);
    let client = Client::connect(config.clone()).await.expect("client");
    let mut expect: Vec<Expect> = Vec::new();

    macro_rules! untyped {
        ($task:expr, $args:expr, $kwargs:expr, $opts:expr, $result:expr) => {{
            let (args, kwargs): (Vec<Value>, Map<String, Value>) = ($args, kw($kwargs));
            let r = client
                .send_task($task, args.clone(), kwargs.clone(), $opts)
                .await
                .expect("send");
            expect.push(Expect {
                id: r.id().to_owned(),
                task: $task,
                args,
                kwargs,
                result: $result,
            });
        }};
    }

    // Positional and keyword arguments.
    untyped!(
        "tasks.add",
        vec![json!(2), json!(3)],
        json!({}),
        ApplyOptions::new(),
        json!(5)
    );
    untyped!(
        "tasks.add",
        vec![],
        json!({"x": 4, "y": 5}),
        ApplyOptions::new(),
        json!(9)
    );
    untyped!(
        "tasks.add",
        vec![json!(1)],
        json!({"y": 10}),
        ApplyOptions::new(),
        json!(11)
    );
    // kombu's markers reach the Python task as datetime, UUID and Decimal objects.
    let at = Utc::now().trunc_subsecs(6);
    let uid = uuid::Uuid::new_v4();
    let decimal = json!({"__type__": "decimal", "__value__": "12.50"});
    untyped!(
        "tasks.typeof",
        vec![
            kombu::datetime(at),
            kombu::uuid(uid),
            decimal.clone(),
            json!("s"),
            json!(1.5),
            json!(null),
            json!([1]),
            json!({"a": 1})
        ],
        json!({"when": kombu::datetime(at), "id": kombu::uuid(uid), "amount": decimal}),
        ApplyOptions::new(),
        json!({
            "args": ["datetime", "UUID", "Decimal", "str", "float", "NoneType", "list", "dict"],
            "kwargs": {"when": "datetime", "id": "UUID", "amount": "Decimal"},
        })
    );
    // Non-ASCII text and large numbers survive, and the result echoes them.
    let text_args = vec![
        json!("héllo wörld ✓ 日本語 🎉"),
        json!(9_007_199_254_740_993_i64),
        json!(-0.25),
    ];
    untyped!(
        "celeriac.echo",
        text_args.clone(),
        json!({"ñandú": true, "nested": {"list": [1, "two", null]}}),
        ApplyOptions::new(),
        json!([text_args, {"ñandú": true, "nested": {"list": [1, "two", null]}}])
    );
    // Priority, custom headers and time limits.
    untyped!(
        "tasks.mul",
        vec![json!(3), json!(4)],
        json!({}),
        ApplyOptions::new().priority(5),
        json!(12)
    );
    let prio = last_id(&expect);
    let headers = json!({"x-trace-id": "abc-123", "tenant": 42, "flags": [true, null, "x"], "meta": {"k": "v", "n": 1.5}});
    let mut opts = ApplyOptions::new();
    for (k, v) in kw(headers.clone()) {
        opts = opts.header(k, v);
    }
    untyped!(
        "tasks.add",
        vec![json!(1), json!(2)],
        json!({}),
        opts,
        json!(3)
    );
    let with_headers = last_id(&expect);
    untyped!(
        "tasks.add",
        vec![json!(20), json!(22)],
        json!({}),
        ApplyOptions::new().time_limit(60.0).soft_time_limit(50.0),
        json!(42)
    );
    let limited = last_id(&expect);

    // Typed calls: a tuple travels as args, a struct as kwargs.
    macro_rules! typed {
        ($r:expr, $task:ty, $args:expr, $kwargs:expr, $result:expr) => {{
            let r = $r.await.expect("send");
            expect.push(Expect {
                id: r.id().to_owned(),
                task: <$task>::NAME,
                args: $args,
                kwargs: kw($kwargs),
                result: $result,
            });
        }};
    }
    typed!(
        client.delay::<Add>((2, 40)),
        Add,
        vec![json!(2), json!(40)],
        json!({}),
        json!(42)
    );
    typed!(
        client.delay::<Mul>(MulArgs { x: 6, y: 7 }),
        Mul,
        vec![],
        json!({"x": 6, "y": 7}),
        json!(42)
    );
    // eta / countdown: due when Celery gets them (celeriac's delay queues
    // hold them) or held by Celery until due; expires in the future: they run.
    let before = Utc::now();
    typed!(
        client.apply_async::<Add>(
            (6, 7),
            ApplyOptions::new().countdown(Duration::from_secs(1))
        ),
        Add,
        vec![json!(6), json!(7)],
        json!({}),
        json!(13)
    );
    let countdown = last_id(&expect);
    let after = Utc::now();
    let eta = (Utc::now() + chrono::Duration::seconds(2)).trunc_subsecs(6);
    typed!(
        client.apply_at::<Add>(eta, (1, 1)),
        Add,
        vec![json!(1), json!(1)],
        json!({}),
        json!(2)
    );
    let at_eta = last_id(&expect);
    let expires = (Utc::now() + chrono::Duration::minutes(10)).trunc_subsecs(6);
    typed!(
        client.apply_async::<Add>((10, 20), ApplyOptions::new().expires(expires)),
        Add,
        vec![json!(10), json!(20)],
        json!({}),
        json!(30)
    );
    let expiring = last_id(&expect);

    // A link callback: Celery runs add(2, 3), then add(5, 10) as a new task.
    let mut linked = TaskMessage::new("tasks.add", vec![json!(2), json!(3)], Map::new());
    linked.embed.callbacks = Some(vec![Signature::new("tasks.add", vec![json!(10)])]);
    client
        .publish_to_queue(&linked, &queue)
        .await
        .expect("publish linked");
    expect.push(Expect {
        id: linked.id.clone(),
        task: "tasks.add",
        args: vec![json!(2), json!(3)],
        kwargs: Map::new(),
        result: json!(5),
    });
    client.close().await;

    let (run, lines) = celery_worker(&queue, expect.len() + 1, &[]).await;
    let report = run.report();
    for e in &expect {
        let line = lines
            .get(&e.id)
            .unwrap_or_else(|| panic!("Celery never ran {} ({})\n{report}", e.id, e.task));
        let ctx = || format!("task {} ({}):\n{line}\n{report}", e.id, e.task);
        assert_eq!(line["outcome"], json!("success"), "{}", ctx());
        assert_eq!(line["task"], json!(e.task), "{}", ctx());
        assert_eq!(line["args"], Value::Array(e.args.clone()), "{}", ctx());
        assert_eq!(line["kwargs"], Value::Object(e.kwargs.clone()), "{}", ctx());
        assert_eq!(line["result"], e.result, "{}", ctx());
        assert_eq!(line["root_id"], json!(e.id), "{}", ctx());
        assert_eq!(line["correlation_id"], json!(e.id), "{}", ctx());
        if e.id != prio {
            assert_eq!(line["priority"], json!(0), "{}", ctx());
        }
    }
    assert_eq!(lines[&prio]["priority"], json!(5), "{report}");

    let custom = lines[&with_headers]["custom_headers"]
        .as_object()
        .unwrap_or_else(|| panic!("no custom headers\n{report}"));
    for (k, v) in kw(headers) {
        assert_eq!(custom.get(&k), Some(&v), "header {k}\n{report}");
    }
    let limits: Vec<Option<f64>> =
        serde_json::from_value(lines[&limited]["timelimit"].clone()).expect("timelimit");
    assert_eq!(
        limits,
        vec![Some(60.0), Some(50.0)],
        "[hard, soft]\n{report}"
    );

    let seen = parse_time(&lines[&countdown]["eta"]);
    assert!(
        seen >= before + chrono::Duration::seconds(1)
            && seen <= after + chrono::Duration::seconds(1),
        "countdown eta {seen} not within [{before}, {after}] + 1 s\n{report}"
    );
    assert_eq!(parse_time(&lines[&at_eta]["eta"]), eta, "{report}");
    assert_eq!(
        parse_time(&lines[&expiring]["expires"]),
        expires,
        "{report}"
    );
    assert_eq!(lines[&expiring]["eta"], json!(null), "{report}");

    // The callback: a new task whose parent is the linked one.
    let callback = lines
        .values()
        .find(|l| l["parent_id"] == json!(linked.id))
        .unwrap_or_else(|| panic!("the link callback did not run\n{report}"));
    assert_eq!(callback["task"], json!("tasks.add"), "{report}");
    assert_eq!(callback["args"], json!([5, 10]), "{report}");
    assert_eq!(callback["result"], json!(15), "{report}");
    assert_eq!(callback["root_id"], json!(linked.id), "{report}");
}

// ---------------------------------------------------------------------------
// Python -> Rust

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn celeriac_worker_runs_what_celery_sends() {
    let queue = unique("interop-p2r");
    guarded(&queue, python_to_rust(queue.clone())).await;
}

async fn python_to_rust(queue: String) {
    let db = TestDatabase::create(DbKind::Sqlite).await.expect("db");
    let config = testing::config(&db.url, &queue);

    let at = "2026-05-06T07:08:09.123456+00:00";
    let uid = "12345678-1234-4678-9234-567812345678";
    let dt = |v: &str| json!({"__type__": "datetime", "__value__": v});
    let uu = |v: &str| json!({"__type__": "uuid", "__value__": {"hex": v.replace('-', "")}});
    let dec = |v: &str| json!({"__type__": "decimal", "__value__": v});
    let naive_eta = (Utc::now() + chrono::Duration::seconds(2)).trunc_subsecs(6);
    let calls = json!([
        {"method": "send_task", "name": "tasks.add", "args": [2, 3]},
        {"method": "delay", "name": "tasks.add", "args": [7, 8]},
        {"method": "apply_async", "name": "tasks.add", "args": [40, 2], "countdown": 1},
        {"method": "apply_async", "name": "tasks.add", "args": [5, 6], "expires": 300},
        {"method": "apply_async", "name": "tasks.add", "args": [1, 1],
         "eta": dt("2020-01-01T00:00:00+00:00")},
        {"method": "apply_async", "name": "interop.stamp",
         "kwargs": {"at": dt(at), "id": uu(uid), "amount": dec("12.50"), "label": "héllo ✓"}},
        {"method": "send_task", "name": "interop.stamp",
         "args": [dt(at), uu(uid), dec("-0.5"), "positional"]},
        {"method": "apply_async", "name": "interop.inspect",
         "args": [dt(at), uu(uid), dec("1.10"), {"__type__": "date", "__value__": "2026-05-06"}],
         "kwargs": {"n": 1},
         "countdown": 1, "priority": 3,
         "headers": {"x-tenant": "acme", "n": 7, "flags": [true, null]}},
        // A naive eta (no offset on the wire) means UTC, as in Celery.
        {"method": "apply_async", "name": "interop.inspect", "args": ["naive"],
         "eta": dt(&naive_eta.format("%Y-%m-%dT%H:%M:%S%.6f").to_string())},
    ]);
    let before = Utc::now();
    // Celery declares the queue itself when it publishes; the celeriac worker
    // then declares the same queue again.
    let sent = celery_send(&queue, "classic", &calls).await;
    // Python passed real datetime, UUID and Decimal objects.
    let types = |s: &Sent| (s.arg_types.clone(), s.kwarg_types.clone());
    let map = |v: Value| serde_json::from_value::<HashMap<String, String>>(v).expect("map");
    assert_eq!(
        types(&sent[5]),
        (
            vec![],
            map(json!({"at": "datetime", "id": "UUID", "amount": "Decimal", "label": "str"}))
        )
    );
    assert_eq!(sent[6].arg_types, ["datetime", "UUID", "Decimal", "str"]);
    assert_eq!(sent[7].arg_types, ["datetime", "UUID", "Decimal", "date"]);
    let worker = start_worker(&config).await;
    let client = Client::connect(config.clone()).await.expect("client");

    let sums = [5, 15, 42, 11, 2];
    for (s, want) in sent.iter().zip(sums) {
        assert_eq!(s.name, Add::NAME);
        let got = client.async_result::<i64>(&s.id).get(WAIT).await;
        assert_eq!(got.expect(&s.id), want, "{s:?}");
    }
    let countdown = client
        .async_result::<i64>(&sent[2].id)
        .record()
        .await
        .expect("record")
        .expect("stored");
    let done = countdown.done_at.expect("done_at");
    assert!(
        done >= before + chrono::Duration::seconds(1),
        "countdown=1 ran at {done}, before its eta (sent after {before})"
    );

    let at: DateTime<Utc> = at.parse().expect("at");
    let uid: uuid::Uuid = uid.parse().expect("uid");
    for (s, amount, label) in [
        (&sent[5], "12.50", "héllo ✓"),
        (&sent[6], "-0.5", "positional"),
    ] {
        let got = client
            .async_result::<Stamped>(&s.id)
            .get(WAIT)
            .await
            .expect(&s.id);
        assert_eq!(
            got,
            Stamped {
                at,
                next_day: at + chrono::Duration::days(1),
                id: uid,
                id_version: 4,
                amount: amount.to_owned(),
                label: label.to_owned(),
            }
        );
    }

    // The raw task sees the markers as Python sent them, the eta and the headers.
    let seen = client
        .async_result::<Value>(&sent[7].id)
        .get(WAIT)
        .await
        .expect("inspect");
    assert_eq!(seen["name"], json!(INSPECT));
    assert_eq!(seen["args"], calls[7]["args"], "{seen}");
    assert_eq!(seen["kwargs"], json!({"n": 1}), "{seen}");
    assert_eq!(seen["root_id"], json!(sent[7].id), "{seen}");
    assert_eq!(seen["retries"], json!(0), "{seen}");
    let eta = parse_time(&seen["eta"]);
    assert!(eta >= before + chrono::Duration::seconds(1), "eta {eta}");
    for (k, v) in kw(calls[7]["headers"].clone()) {
        assert_eq!(seen["headers"].get(&k), Some(&v), "header {k}: {seen}");
    }
    let naive = client.async_result::<Value>(&sent[8].id);
    let seen = naive.get(WAIT).await.expect("naive eta");
    assert_eq!(seen["args"], json!(["naive"]), "{seen}");
    assert_eq!(parse_time(&seen["eta"]), naive_eta, "{seen}");
    let done = naive.record().await.expect("record").expect("stored");
    assert!(
        done.done_at.expect("done_at") >= naive_eta,
        "ran before its naive eta {naive_eta}: {done:?}"
    );

    worker.stop().await;
    client.close().await;
    db.drop_database().await;
}

// ---------------------------------------------------------------------------
// Quorum queues

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn celery_and_celeriac_share_a_quorum_queue() {
    let queue = unique("interop-quorum");
    guarded(&queue, quorum_queue(queue.clone())).await;
}

async fn quorum_queue(queue: String) {
    let db = TestDatabase::create(DbKind::Sqlite).await.expect("db");
    let mut config = testing::config(&db.url, &queue);
    config.queue_type = QueueType::Quorum;
    let delayed_before = celery_delayed_topology().await;

    // celeriac declares the quorum queue first and publishes...
    let client = Client::connect(config.clone()).await.expect("client");
    let first = client.delay::<Add>((1, 2)).await.expect("send");
    // ...a Celery worker declares it again (quorum) and runs the task...
    let (run, lines) = celery_worker(&queue, 1, &["--queue-type", "quorum"]).await;
    let line = lines
        .get(first.id())
        .unwrap_or_else(|| panic!("Celery did not run {}\n{}", first.id(), run.report()));
    assert_eq!(line["result"], json!(3), "{}", run.report());
    // ...Celery's client declares it once more and publishes...
    // (with a countdown too: Celery cannot use its native delayed delivery
    // with a direct exchange, so the eta travels in the header only)...
    let before = Utc::now();
    let sent = celery_send(
        &queue,
        "quorum",
        &json!([
            {"name": "tasks.add", "args": [20, 22]},
            {"name": "tasks.add", "args": [2, 2], "countdown": 1},
        ]),
    )
    .await;
    // ...and a celeriac worker with queue_type = quorum runs them.
    let worker = start_worker(&config).await;
    for (s, want) in sent.iter().zip([42, 4]) {
        let sum = match client.async_result::<i64>(&s.id).get(WAIT).await {
            Ok(sum) => sum,
            Err(e) => {
                // RabbitMQ's dead-letter worker sends a hop of a quorum
                // queue whose confirm it lost again only after its confirm
                // timeout (3 min by default, counted from the hop, a second
                // after the send): the task is late, not lost. Waited for
                // first, and within the run's limit of 300 s a test; the
                // queues are listed only if it never comes (slow with
                // hundreds of queues).
                let more = Instant::now();
                match client
                    .async_result::<i64>(&s.id)
                    .get(Duration::from_secs(150))
                    .await
                {
                    Ok(sum) => {
                        eprintln!(
                            "Celery's task {} ran {:.0?} after {WAIT:?} (RabbitMQ's \
                             dead-letter resend)",
                            s.id,
                            more.elapsed()
                        );
                        sum
                    }
                    Err(_) => panic!(
                        "celeriac did not run Celery's task {} (the one giving {want}) in \
                         {WAIT:?} nor {:.0?} later: {e:?}; queues holding messages: {}",
                        s.id,
                        more.elapsed(),
                        waiting(&config)
                    ),
                }
            }
        };
        assert_eq!(sum, want);
    }
    let delayed = client
        .async_result::<i64>(&sent[1].id)
        .record()
        .await
        .expect("record")
        .expect("stored");
    let done = delayed.done_at.expect("done_at");
    assert!(
        done >= before + chrono::Duration::seconds(1),
        "countdown=1 ran at {done}, before its eta (sent after {before})"
    );
    worker.stop().await;

    // It is a quorum queue: declaring it classic is refused.
    let mut classic = config.clone();
    classic.queue_type = QueueType::Classic;
    let classic = Client::connect(classic).await.expect("client");
    let err = classic
        .delay::<Add>((0, 0))
        .await
        .expect_err("a classic declaration of a quorum queue must fail");
    assert!(
        matches!(&err, ClientError::Broker(BrokerError::QueueMismatch { name, .. }) if *name == queue),
        "{err:?}"
    );
    assert!(
        format!("{err:?}").contains("PRECONDITION_FAILED"),
        "{err:?}"
    );
    classic.close().await;
    client.close().await;

    assert_eq!(
        celery_delayed_topology().await,
        delayed_before,
        "celery_delayed_* topology left behind by the Celery worker"
    );
    db.drop_database().await;
}

//! Celery's own tools against a celeriac worker, over the real RabbitMQ:
//! the `celery inspect` / `celery control` commands of Celery 5 from the
//! project's virtualenv (`scripts/python-env.sh`), and Celery's events read
//! from a queue bound to `celeryev` as monitors bind one.
//!
//! Every subprocess and every wait is bounded; a failure shows the output.

use celeriac::{ApplyOptions, Client};
use celeriac_common::broker;
use celeriac_common::testing::{self, DbKind, TestDatabase, unique};
use celeriac_worker::{Worker, WorkerError};
use futures_util::StreamExt;
use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use serde_json::{Map, Value, json};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::sync::oneshot;

const WAIT: Duration = Duration::from_secs(30);

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The virtualenv's `celery` (the virtualenv is made on first use).
async fn celery_bin() -> PathBuf {
    let out = tokio::process::Command::new(repo_root().join("scripts/python-env.sh"))
        .stderr(Stdio::inherit())
        .output()
        .await
        .expect("run python-env.sh");
    assert!(out.status.success(), "python-env.sh failed");
    let python = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    python.with_file_name("celery")
}

/// Runs `celery -b BROKER args...`, bounded; returns (exit code, stdout, stderr).
async fn celery(args: &[&str]) -> (Option<i32>, String, String) {
    let bin = celery_bin().await;
    let mut cmd = tokio::process::Command::new(&bin);
    cmd.arg("-b")
        .arg(testing::broker_url())
        .args(args)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("celery {args:?} did not finish in 60 s"))
        .expect("run celery");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `celery inspect|control CMD ... -d HOST --timeout 5 --json`: the one reply of `host`.
async fn ask(host: &str, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["-d", host, "--timeout", "5", "--json"]);
    let (code, out, err) = celery(&all).await;
    let replies: Value = serde_json::from_str(out.trim())
        .unwrap_or_else(|e| panic!("celery {all:?}: not JSON ({e}), code {code:?}:\n{out}\n{err}"));
    // `inspect` prints {host: reply}; `control` a list of {host: reply}.
    let replies = match replies {
        Value::Array(list) => list
            .into_iter()
            .find(|r| r.get(host).is_some())
            .unwrap_or_default(),
        one => one,
    };
    replies
        .get(host)
        .cloned()
        .unwrap_or_else(|| panic!("celery {all:?}: no reply from {host}: {replies}\n{err}"))
}

/// Runs a Python snippet with Celery's `app` (broker set) in scope; its stdout.
async fn python(code: &str) -> String {
    let python = celery_bin().await.with_file_name("python");
    let script = format!(
        "import json, celery\napp = celery.Celery(broker={:?})\n{code}",
        testing::broker_url()
    );
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(python)
            .arg("-c")
            .arg(script)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("python finishes in 60 s")
    .expect("run python");
    assert!(
        out.status.success(),
        "python failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

struct Running {
    stop: Option<oneshot::Sender<()>>,
    handle: tokio::task::JoinHandle<Result<(), WorkerError>>,
    config: celeriac::Config,
    _db: TestDatabase,
}

async fn start(events: bool) -> Running {
    let db = TestDatabase::create(DbKind::Sqlite).await.expect("db");
    let mut config = testing::config(&db.url, &unique("tools"));
    config.hostname = format!("{}@test", unique("celeriac"));
    config.worker_send_events = events;
    config.concurrency = 4;
    config.worker_heartbeat_secs = 1;
    let worker = Worker::builder(config.clone())
        .with_diagnostics()
        .build()
        .await
        .expect("build worker");
    let (tx, rx) = oneshot::channel();
    let handle = tokio::spawn(worker.run_until(async move {
        let _ = rx.await;
    }));
    Running {
        stop: Some(tx),
        handle,
        config,
        _db: db,
    }
}

impl Running {
    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        tokio::time::timeout(WAIT, &mut self.handle)
            .await
            .expect("worker stops")
            .expect("join")
            .expect("worker ran");
        testing::cleanup(&self.config).await;
    }
}

/// Waits until `celery inspect ping` gets the worker's pong.
async fn wait_ready(host: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (_, out, _) =
            celery(&["inspect", "ping", "-d", host, "--timeout", "2", "--json"]).await;
        if out.contains("pong") {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no pong from {host}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn celery_inspect_and_control_answered_by_celeriac() {
    let w = start(false).await;
    let host = w.config.hostname.clone();
    let queue = w.config.queues[0].clone();
    wait_ready(&host).await;

    assert_eq!(
        ask(&host, &["inspect", "ping"]).await,
        json!({"ok": "pong"})
    );
    let stats = ask(&host, &["inspect", "stats"]).await;
    assert_eq!(stats["pool"]["max-concurrency"], 4, "{stats}");
    assert!(
        stats["total"].is_object() && stats["rusage"].is_object(),
        "{stats}"
    );
    assert_eq!(stats["broker"]["transport"], "amqp");
    let registered = ask(&host, &["inspect", "registered"]).await;
    assert!(
        registered
            .as_array()
            .is_some_and(|r| r.contains(&json!("celeriac.sleep"))),
        "{registered}"
    );
    let queues = ask(&host, &["inspect", "active_queues"]).await;
    assert_eq!(queues[0]["name"], queue.as_str(), "{queues}");
    let conf = ask(&host, &["inspect", "conf"]).await;
    assert_eq!(conf["worker_concurrency"], 4, "{conf}");

    // A running task shows in active and query_task: long enough for two
    // Celery CLI round trips on a busy machine.
    let client = Client::connect(w.config.clone()).await.expect("client");
    let sleeping = client
        .send_task(
            "celeriac.sleep",
            vec![json!(10)],
            Map::new(),
            ApplyOptions::default(),
        )
        .await
        .expect("send");
    let id = sleeping.id().to_owned();
    let deadline = tokio::time::Instant::now() + WAIT;
    let active = loop {
        let active = ask(&host, &["inspect", "active"]).await;
        if active.as_array().is_some_and(|a| !a.is_empty()) {
            break active;
        }
        assert!(tokio::time::Instant::now() < deadline, "task never active");
    };
    assert_eq!(active[0]["id"], id.as_str(), "{active}");
    assert_eq!(active[0]["name"], "celeriac.sleep");
    assert_eq!(active[0]["hostname"], host.as_str());
    assert!(active[0]["time_start"].is_f64(), "{active}");
    let queried = ask(&host, &["inspect", "query_task", &id]).await;
    assert_eq!(queried[&id][0], "active", "{queried}");
    for empty in ["reserved", "scheduled"] {
        assert!(ask(&host, &["inspect", empty]).await.is_array());
    }

    // Revoke, then revoked lists it.
    let revoked = ask(&host, &["control", "revoke", "no-such-task"]).await;
    assert!(
        revoked["ok"]
            .as_str()
            .is_some_and(|s| s.contains("flagged as revoked")),
        "{revoked}"
    );
    let list = ask(&host, &["inspect", "revoked"]).await;
    assert!(
        list.as_array()
            .is_some_and(|l| l.contains(&json!("no-such-task"))),
        "{list}"
    );

    // Task options at run time.
    let rate = ask(&host, &["control", "rate_limit", "celeriac.noop", "10/s"]).await;
    assert_eq!(rate, json!({"ok": "new rate limit set successfully"}));
    let unknown = ask(&host, &["control", "rate_limit", "no.such.task", "1/s"]).await;
    assert_eq!(unknown, json!({"error": "unknown task"}));
    let limits = ask(&host, &["control", "time_limit", "celeriac.noop", "1", "2"]).await;
    assert_eq!(limits, json!({"ok": "time limits set successfully"}));

    // Consumers at run time.
    let extra = unique("tools-extra");
    let added = ask(&host, &["control", "add_consumer", &extra]).await;
    assert_eq!(added, json!({"ok": format!("add consumer {extra}")}));
    let queues = ask(&host, &["inspect", "active_queues"]).await;
    assert!(queues.to_string().contains(&extra), "{queues}");
    let noop = client
        .send_task(
            "celeriac.noop",
            vec![],
            Map::new(),
            ApplyOptions::new().queue(extra.clone()),
        )
        .await
        .expect("send to the added queue");
    noop.wait(WAIT).await.expect("runs from the added queue");
    let cancelled = ask(&host, &["control", "cancel_consumer", &extra]).await;
    assert_eq!(
        cancelled,
        json!({"ok": format!("no longer consuming from {extra}")})
    );
    // A name AMQP (with a delayed message's routing key) cannot carry: an
    // error reply, and the worker goes on.
    let long = "q".repeat(240);
    let refused = ask(&host, &["control", "add_consumer", &long]).await;
    assert!(
        refused["error"]
            .as_str()
            .is_some_and(|e| e.contains("at most 239 bytes")),
        "{refused}"
    );
    assert_eq!(
        ask(&host, &["inspect", "ping"]).await,
        json!({"ok": "pong"}),
        "still serving"
    );

    // Events on and off.
    assert_eq!(
        ask(&host, &["control", "enable_events"]).await,
        json!({"ok": "task events enabled"})
    );
    assert_eq!(
        ask(&host, &["control", "disable_events"]).await,
        json!({"ok": "task events disabled"})
    );

    // Unknown and unsupported commands get Celery's error replies; a
    // broadcast with a pattern reaches the workers whose name it matches.
    let name = host.trim_end_matches("@test");
    let (glob, pcre, other) = (
        format!("{name}@*"),
        format!("{name}@t"),
        format!("{name}@nowhere*"),
    );
    let out = python(&format!(
        "print(json.dumps(app.control.broadcast('nosuch', reply=True, timeout=5, destination=[{host:?}])))\n\
         print(json.dumps(app.control.broadcast('pool_grow', arguments={{'n': 1}}, reply=True, timeout=5, destination=[{host:?}])))\n\
         print(json.dumps(app.control.broadcast('ping', reply=True, timeout=2, destination=['nobody@nowhere'])))\n\
         print(json.dumps(app.control.broadcast('ping', reply=True, timeout=2, pattern={glob:?}, matcher='glob')))\n\
         print(json.dumps(app.control.broadcast('ping', reply=True, timeout=2, pattern={pcre:?}, matcher='pcre')))\n\
         print(json.dumps(app.control.broadcast('ping', reply=True, timeout=2, pattern={other:?}, matcher='glob')))"
    ))
    .await;
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(
        lines[0],
        json!([{ host.as_str(): {"error": "KeyError('nosuch')"} }]),
        "{out}"
    );
    assert!(
        lines[1][0][&host]["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("NotImplementedError(")),
        "{out}"
    );
    assert_eq!(lines[2], json!([]), "{out}");
    let pong = json!([{ host.as_str(): {"ok": "pong"} }]);
    assert_eq!(lines[3], pong, "glob {glob}: {out}");
    assert_eq!(lines[4], pong, "pcre {pcre}: {out}");
    assert_eq!(lines[5], json!([]), "glob {other}: {out}");

    sleeping
        .wait(WAIT)
        .await
        .expect("the sleeping task finished");
    drop(client);

    // Shutdown by remote control: a warm shutdown.
    let bye = ask(&host, &["control", "shutdown"]).await;
    assert_eq!(bye, json!({"ok": "shutting down"}));
    let mut w = w;
    tokio::time::timeout(WAIT, &mut w.handle)
        .await
        .expect("stops after remote shutdown")
        .expect("join")
        .expect("ran");
    testing::cleanup(&w.config).await;
    testing::delete_queues(&[extra.as_str()]).await;
}

/// Binds a queue to `celeryev` with `#`, as monitors do.
async fn monitor() -> (lapin::Connection, lapin::Consumer) {
    let conn = broker::connect(&testing::broker_url(), "events-monitor")
        .await
        .expect("connect");
    let ch = conn.create_channel().await.expect("channel");
    ch.exchange_declare(
        "celeryev".into(),
        lapin::ExchangeKind::Topic,
        lapin::options::ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .expect("declare celeryev");
    let q = ch
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("queue");
    ch.queue_bind(
        q.name().as_str().into(),
        "celeryev".into(),
        "#".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("bind");
    let consumer = ch
        .basic_consume(
            q.name().as_str().into(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("consume");
    (conn, consumer)
}

/// Events of `host` until `done` says the list is complete.
async fn collect(
    consumer: &mut lapin::Consumer,
    host: &str,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while !done(&seen) {
        let next = tokio::time::timeout_at(deadline, consumer.next())
            .await
            .unwrap_or_else(|_| panic!("events so far: {seen:#?}"));
        let delivery = next.expect("stream").expect("delivery");
        let body: Value = serde_json::from_slice(&delivery.data).expect("json event");
        let events = match body {
            Value::Array(list) => list,
            one => vec![one],
        };
        seen.extend(events.into_iter().filter(|e| e["hostname"] == host));
    }
    seen
}

fn of<'a>(events: &'a [Value], kind: &str, id: &str) -> Option<&'a Value> {
    events.iter().find(|e| e["type"] == kind && e["uuid"] == id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn celery_events_of_a_task_life() {
    let (_conn, mut consumer) = monitor().await;
    let w = start(true).await;
    let host = w.config.hostname.clone();
    let online = collect(&mut consumer, &host, |s| {
        s.iter().any(|e| e["type"] == "worker-online")
    })
    .await;
    let ev = online
        .iter()
        .find(|e| e["type"] == "worker-online")
        .expect("online");
    for field in ["timestamp", "freq"] {
        assert!(ev[field].is_f64(), "{field}: {ev}");
    }
    for field in ["utcoffset", "pid", "clock", "active", "processed"] {
        assert!(ev[field].is_i64() || ev[field].is_u64(), "{field}: {ev}");
    }
    assert_eq!(ev["sw_ident"], "celeriac");
    assert_eq!(ev["loadavg"].as_array().map(Vec::len), Some(3));

    let client = Client::connect(w.config.clone()).await.expect("client");
    let ok = client
        .send_task(
            "celeriac.echo",
            vec![json!(1), json!("a")],
            Map::new(),
            ApplyOptions::default(),
        )
        .await
        .expect("send");
    let failing = client
        .send_task(
            "celeriac.fail",
            vec![json!("boom")],
            Map::new(),
            ApplyOptions::default(),
        )
        .await
        .expect("send");
    let (ok_id, fail_id) = (ok.id().to_owned(), failing.id().to_owned());
    let events = collect(&mut consumer, &host, |s| {
        of(s, "task-succeeded", &ok_id).is_some()
            && of(s, "task-failed", &fail_id).is_some()
            && s.iter().any(|e| e["type"] == "worker-heartbeat")
    })
    .await;
    let received = of(&events, "task-received", &ok_id).expect("task-received");
    assert_eq!(received["name"], "celeriac.echo");
    assert!(received["args"].is_string(), "{received}");
    assert_eq!(received["retries"], 0);
    assert!(of(&events, "task-started", &ok_id).is_some());
    let succeeded = of(&events, "task-succeeded", &ok_id).expect("succeeded");
    assert!(
        succeeded["result"].is_string() && succeeded["runtime"].is_f64(),
        "{succeeded}"
    );
    let failed = of(&events, "task-failed", &fail_id).expect("failed");
    assert!(
        failed["exception"]
            .as_str()
            .is_some_and(|e| e.contains("boom")),
        "{failed}"
    );
    assert!(failed["traceback"].is_string());
    let beat = events
        .iter()
        .find(|e| e["type"] == "worker-heartbeat")
        .expect("heartbeat");
    assert_eq!(beat["freq"], 1.0);
    // A heartbeat after both tasks ended counts each once (by Lamport clock).
    let clock = |e: &Value| e["clock"].as_u64().unwrap_or(0);
    let last = clock(of(&events, "task-failed", &fail_id).expect("failed")).max(clock(succeeded));
    let after = collect(&mut consumer, &host, |s| {
        s.iter()
            .any(|e| e["type"] == "worker-heartbeat" && clock(e) > last)
    })
    .await;
    let after = after
        .iter()
        .find(|e| e["type"] == "worker-heartbeat" && clock(e) > last)
        .expect("heartbeat after the tasks");
    assert_eq!(after["processed"], 2, "{after}");
    assert_eq!(after["active"], 0, "{after}");

    // Switched off by remote control: no task events, the task runs all the same.
    assert_eq!(
        ask(&host, &["control", "disable_events"]).await,
        json!({"ok": "task events disabled"})
    );
    let quiet = client
        .send_task("celeriac.noop", vec![], Map::new(), ApplyOptions::default())
        .await
        .expect("send");
    let quiet_id = quiet.id().to_owned();
    quiet.wait(WAIT).await.expect("runs without events");
    drop(client);

    let w_host = host.clone();
    w.stop().await;
    let tail = collect(&mut consumer, &w_host, |s| {
        s.iter().any(|e| e["type"] == "worker-offline")
    })
    .await;
    assert!(
        !tail.iter().any(|e| e["uuid"] == quiet_id.as_str()),
        "task events while disabled: {tail:#?}"
    );
}

/// Celery's own `EventReceiver` (a subclass that notes which message bodies
/// are lists, then hands each to Celery's `_receive`), capturing the events
/// of worker `argv[1]` until it has seen `argv[2]` `task-succeeded`; prints
/// `ready` once its queue is bound, then one JSON line: the task events and
/// how many list bodies (`task.multi`) of that worker it read, the largest.
const RECEIVER: &str = r#"
import json, sys, celery
from celery.events import EventReceiver
app = celery.Celery(broker=sys.argv[3])
host, want = sys.argv[1], int(sys.argv[2])
seen, lists = [], []

class Receiver(EventReceiver):
    def on_consume_ready(self, *args, **kwargs):
        print('ready', flush=True)

    def _receive(self, body, message, *args, **kwargs):
        if isinstance(body, list) and all(e.get('hostname') == host for e in body):
            lists.append(len(body))
        return super()._receive(body, message, *args, **kwargs)

def on_event(event):
    if event.get('hostname') != host or not event['type'].startswith('task-'):
        return
    seen.append(event)
    if sum(e['type'] == 'task-succeeded' for e in seen) >= want:
        receiver.should_stop = True

with app.connection() as conn:
    receiver = Receiver(conn, handlers={'*': on_event}, app=app)
    receiver.capture(limit=None, timeout=None, wakeup=False)
print(json.dumps({'events': seen, 'lists': len(lists), 'largest': max(lists, default=0)}))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn celerys_event_receiver_reads_every_event_of_a_batch() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    const TASKS: usize = 40;
    let w = start(true).await;
    let host = w.config.hostname.clone();
    let python = celery_bin().await.with_file_name("python");
    let mut receiver = tokio::process::Command::new(python)
        .args(["-c", RECEIVER, &host, &TASKS.to_string()])
        .arg(testing::broker_url())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run python");
    let mut lines = BufReader::new(receiver.stdout.take().expect("stdout")).lines();
    let first = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .expect("the receiver starts in time")
        .expect("read stdout");
    assert_eq!(first.as_deref(), Some("ready"));

    // Sent at once, their events go out in a few flushes: lists.
    let client = Client::connect(w.config.clone()).await.expect("client");
    let mut ids = Vec::new();
    for i in 0..TASKS {
        let sent = client
            .send_task(
                "celeriac.echo",
                vec![json!(i)],
                Map::new(),
                ApplyOptions::default(),
            )
            .await
            .expect("send");
        ids.push(sent.id().to_owned());
    }
    let last = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .expect("the receiver sees every task succeed in time")
        .expect("read stdout")
        .expect("a summary line");
    let summary: Value = serde_json::from_str(&last).expect("JSON summary");
    let events = summary["events"].as_array().expect("events");
    for id in &ids {
        for kind in ["task-received", "task-started", "task-succeeded"] {
            let n = events
                .iter()
                .filter(|e| e["type"] == kind && e["uuid"] == id.as_str())
                .count();
            assert_eq!(n, 1, "{kind} of {id}: {n} times in {summary:#}");
        }
    }
    assert_eq!(events.len(), 3 * TASKS, "{summary:#}");
    assert!(
        summary["lists"].as_u64() >= Some(1),
        "no list body: {summary}"
    );
    assert!(summary["largest"].as_u64() >= Some(2), "{summary}");
    let received = events
        .iter()
        .find(|e| e["type"] == "task-received")
        .expect("a task-received");
    assert_eq!(received["name"], "celeriac.echo");
    tokio::time::timeout(WAIT, receiver.wait())
        .await
        .expect("the receiver exits")
        .expect("wait");
    drop(client);
    w.stop().await;
}

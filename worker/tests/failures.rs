//! Each failure path ends as documented, and the worker keeps serving:
//! errors, panics, unknown names, bad arguments, expired and undecodable
//! messages, eta, STARTED tracking and forget.

use crate::support;

use celeriac::{ApplyOptions, Client, ResultError, TaskState};
use celeriac_common::TaskDef;
use celeriac_common::backend::ResultBackend;
use celeriac_common::broker;
use celeriac_common::diagnostics::{Noop, Sleep};
use celeriac_common::testing::{self, DbKind, TestDatabase, unique};
use celeriac_worker::{TaskContext, TaskFailure, Worker};
use lapin::BasicProperties;
use lapin::options::{BasicGetOptions, BasicPublishOptions, QueueDeleteOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::sync::oneshot;

struct Div;
impl TaskDef for Div {
    const NAME: &'static str = "test.div";
    type Args = (i64, i64);
    type Output = i64;
}

struct Explode;
impl TaskDef for Explode {
    const NAME: &'static str = "test.explode";
    type Args = ();
    type Output = ();
}

struct Digest;
impl TaskDef for Digest {
    const NAME: &'static str = "test.digest";
    type Args = (String,);
    type Output = u64;
}

#[derive(Debug, thiserror::Error)]
#[error("cannot divide {0} by zero")]
struct DivByZero(i64, #[source] std::io::Error);

const WAIT: Duration = Duration::from_secs(20);

struct Harness {
    client: Client,
    config: celeriac::Config,
    stop: Option<oneshot::Sender<()>>,
    worker: tokio::task::JoinHandle<Result<(), celeriac_worker::WorkerError>>,
    db: TestDatabase,
}

async fn start(track_started: bool) -> Harness {
    start_with(|c| c.track_started = track_started).await
}

/// Runs of `test.count`, by task id.
static COUNTED: std::sync::Mutex<BTreeMap<String, u32>> = std::sync::Mutex::new(BTreeMap::new());

struct Count;
impl TaskDef for Count {
    const NAME: &'static str = "test.count";
    type Args = ();
    type Output = ();
}

async fn start_with(edit: impl FnOnce(&mut celeriac::Config)) -> Harness {
    start_on(DbKind::Sqlite, edit).await
}

async fn start_on(kind: DbKind, edit: impl FnOnce(&mut celeriac::Config)) -> Harness {
    let db = TestDatabase::create(kind).await.expect("db");
    let mut config = testing::config(&db.url, &unique("fail"));
    edit(&mut config);
    let worker = Worker::builder(config.clone())
        .with_diagnostics()
        .register::<Div, _, _, _>(|_ctx: TaskContext, (x, y)| async move {
            if y == 0 {
                return Err(DivByZero(x, std::io::Error::other("denominator was zero")));
            }
            Ok(x / y)
        })
        .register::<Explode, _, _, _>(|_, ()| async move {
            if Some(1).is_some() {
                panic!("kaboom");
            }
            Ok::<_, TaskFailure>(())
        })
        .register::<Count, _, _, _>(|ctx: TaskContext, ()| async move {
            *COUNTED
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .entry(ctx.id)
                .or_default() += 1;
            Ok::<_, TaskFailure>(())
        })
        .register::<Big, _, _, _>(|_, (n,)| async move { Ok::<_, TaskFailure>("x".repeat(n)) })
        .register_blocking::<Digest, _, _>(|_, (text,)| {
            std::thread::sleep(Duration::from_millis(50));
            Ok::<_, TaskFailure>(text.bytes().map(u64::from).sum())
        })
        .build()
        .await
        .expect("build worker");
    let (tx, rx) = oneshot::channel();
    let worker = tokio::spawn(worker.run_until(async move {
        let _ = rx.await;
    }));
    let client = Client::connect(config.clone()).await.expect("client");
    Harness {
        client,
        config,
        stop: Some(tx),
        worker,
        db,
    }
}

impl Harness {
    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        tokio::time::timeout(Duration::from_secs(60), &mut self.worker)
            .await
            .expect("the worker stops within a minute")
            .expect("join")
            .expect("worker ran");
        testing::cleanup(&self.config).await;
        self.db.drop_database().await;
    }

    async fn call(
        &self,
        name: &str,
        args: Vec<Value>,
        opts: ApplyOptions,
    ) -> celeriac_common::backend::TaskRecord {
        let r = self
            .client
            .send_task(name, args, Map::new(), opts)
            .await
            .expect("send");
        r.wait(WAIT).await.expect("final state")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_recorded_and_the_worker_goes_on() {
    let h = start(false).await;
    let ok = h.client.delay::<Div>((7, 2)).await.expect("send");
    assert_eq!(ok.get(WAIT).await.expect("success"), 3);

    let err = h
        .client
        .delay::<Div>((1, 0))
        .await
        .expect("send")
        .get(WAIT)
        .await
        .expect_err("fails");
    let ResultError::Failed { error, .. } = err else {
        panic!("expected failure, got {err:?}")
    };
    assert_eq!(error.kind, "DivByZero");
    assert_eq!(error.message, "cannot divide 1 by zero");
    assert_eq!(
        error.traceback.as_deref(),
        Some("caused by: denominator was zero")
    );

    let r = h.call(Explode::NAME, vec![], ApplyOptions::new()).await;
    assert_eq!(r.state, TaskState::Failure);
    let e = r.error.expect("error");
    assert_eq!((e.kind.as_str(), e.message.as_str()), ("Panic", "kaboom"));

    let r = h.call("no.such.task", vec![], ApplyOptions::new()).await;
    assert_eq!(r.state, TaskState::Failure);
    assert_eq!(
        r.error.expect("error").message,
        "task not registered: no.such.task"
    );

    let r = h
        .call(Div::NAME, vec![json!("x")], ApplyOptions::new())
        .await;
    assert_eq!(r.state, TaskState::Failure);
    assert_eq!(r.error.expect("error").kind, "ArgumentError");

    let r = h
        .call(
            Noop::NAME,
            vec![],
            ApplyOptions::new().expires(chrono::Utc::now() - chrono::Duration::seconds(1)),
        )
        .await;
    assert_eq!(r.state, TaskState::Revoked);
    assert_eq!(r.error.expect("error").kind, "TaskExpired");

    let digest = h
        .client
        .delay::<Digest>(("ab".to_owned(),))
        .await
        .expect("send");
    assert_eq!(digest.get(WAIT).await.expect("blocking task"), 97 + 98);

    // Still serving after all of that.
    let r = h.call(Noop::NAME, vec![], ApplyOptions::new()).await;
    assert_eq!(r.state, TaskState::Success);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_messages_go_to_the_dead_letter_queue() {
    let h = start(false).await;
    let conn = broker::connect(&h.config.broker_url, "test")
        .await
        .expect("connect");
    let ch = conn.create_channel().await.expect("channel");
    // The worker may not have declared its queue yet; a message published to
    // a missing queue would be dropped.
    broker::declare_task_queue(&ch, &h.config.default_queue, &h.config)
        .await
        .expect("declare");
    let headers = |task: Option<&str>| {
        let mut t = FieldTable::default();
        t.insert(
            "id".into(),
            AMQPValue::LongString(LongString::from("bad-1")),
        );
        if let Some(task) = task {
            t.insert("task".into(), AMQPValue::LongString(LongString::from(task)));
        }
        t
    };
    let json_props = BasicProperties::default().with_content_type("application/json".into());
    let cases: Vec<(&[u8], BasicProperties, &str)> = vec![
        (
            b"{not json",
            json_props
                .clone()
                .with_headers(headers(Some("celeriac.noop"))),
            "not valid JSON",
        ),
        (
            b"[[], {}, {}]",
            json_props.clone().with_headers(headers(None)),
            "missing header \"task\"",
        ),
        (
            b"\x80\x04K\x01.",
            json_props
                .clone()
                .with_content_type("application/x-python-serialize".into())
                .with_headers(headers(Some("x"))),
            "unsupported content type",
        ),
        (
            b"{\"a\": 1}",
            json_props.with_headers(headers(Some("celeriac.noop"))),
            "wrong shape",
        ),
    ];
    for (body, props, _) in &cases {
        ch.basic_publish(
            "".into(),
            h.config.default_queue.as_str().into(),
            BasicPublishOptions::default(),
            body,
            props.clone(),
        )
        .await
        .expect("publish")
        .await
        .expect("confirm");
    }
    // The worker goes on: a good task after the bad ones succeeds.
    let r = h.call(Noop::NAME, vec![], ApplyOptions::new()).await;
    assert_eq!(r.state, TaskState::Success);
    let mut reasons = Vec::new();
    for _ in 0..200 {
        if let Some(m) = ch
            .basic_get(
                h.config.dead_letter_queue.as_str().into(),
                BasicGetOptions { no_ack: true },
            )
            .await
            .expect("get")
        {
            let headers = m.delivery.properties.headers().clone().expect("headers");
            let Some(AMQPValue::LongString(reason)) = headers.inner().get("x-celeriac-error")
            else {
                panic!("no reason header")
            };
            reasons.push(String::from_utf8_lossy(reason.as_bytes()).into_owned());
            if reasons.len() == cases.len() {
                break;
            }
        } else {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert_eq!(
        reasons.len(),
        cases.len(),
        "every bad message dead-lettered: {reasons:?}"
    );
    for (_, _, want) in &cases {
        assert!(
            reasons.iter().any(|r| r.contains(want)),
            "{want:?} not among {reasons:?}"
        );
    }
    let _ = conn.close(200, "done".into()).await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eta_started_state_and_forget() {
    let h = start(true).await;
    let eta = chrono::Utc::now() + chrono::Duration::milliseconds(1500);
    let r = h.client.apply_at::<Noop>(eta, ()).await.expect("send");
    let rec = r.wait(WAIT).await.expect("done");
    assert_eq!(rec.state, TaskState::Success);
    assert!(
        rec.started_at.expect("started_at") >= eta,
        "ran before its eta"
    );

    let sleeper = h.client.delay::<Sleep>((1.0,)).await.expect("send");
    let mut seen_started = false;
    for _ in 0..100 {
        if sleeper.state().await.expect("state") == TaskState::Started {
            seen_started = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(seen_started, "STARTED recorded while running");
    assert_eq!(sleeper.get(WAIT).await.expect("slept"), 1.0);
    assert!(sleeper.forget().await.expect("forget"));
    assert_eq!(sleeper.state().await.expect("state"), TaskState::Pending);

    // An ignored result leaves no row, not even STARTED while it runs (a
    // STARTED row would stay for ever, then be taken for a lost task's).
    let ignored = h
        .client
        .apply_async::<Sleep>((0.3,), ApplyOptions::new().ignore_result(true))
        .await
        .expect("send");
    for _ in 0..40 {
        assert_eq!(ignored.state().await.expect("state"), TaskState::Pending);
        tokio::time::sleep(Duration::from_millis(25)).await;
    }

    // Nobody consumes this queue: get() gives up with a timeout error.
    let other = unique("nobody");
    let lonely = h
        .client
        .apply_async::<Noop>((), ApplyOptions::new().queue(other.clone()))
        .await
        .expect("send");
    let err = lonely
        .get(Duration::from_millis(300))
        .await
        .expect_err("times out");
    assert!(
        matches!(
            err,
            ResultError::Timeout {
                state: TaskState::Pending,
                ..
            }
        ),
        "{err:?}"
    );
    testing::delete_queues(&[&other]).await;
    h.stop().await;
}

#[tokio::test]
async fn bad_options_are_refused_before_sending() {
    let db = TestDatabase::create(DbKind::Sqlite).await.expect("db");
    let config = testing::config(&db.url, &unique("opts"));
    let client = Client::connect(config.clone()).await.expect("client");
    let both = ApplyOptions::new()
        .countdown(Duration::from_secs(1))
        .eta(chrono::Utc::now());
    assert!(client.apply_async::<Noop>((), both).await.is_err());
    let reserved = ApplyOptions::new().header("task", json!("evil"));
    assert!(client.apply_async::<Noop>((), reserved).await.is_err());
    let limit = ApplyOptions::new().time_limit(-1.0);
    assert!(client.apply_async::<Noop>((), limit).await.is_err());
    // Each of these passed before and then panicked, or sent a message
    // no worker takes (leaving the task PENDING for ever).
    let refused = |opts: ApplyOptions| {
        let client = &client;
        async move {
            let err = client
                .apply_async::<Noop>((), opts)
                .await
                .expect_err("refused before sending");
            err.to_string()
        }
    };
    let err = refused(ApplyOptions::new().expires(chrono::DateTime::<chrono::Utc>::MAX_UTC)).await;
    assert!(err.contains("expires is out of range"), "{err}");
    let err = refused(ApplyOptions::new().countdown(Duration::MAX)).await;
    assert!(err.contains("countdown is out of range"), "{err}");
    let err = refused(ApplyOptions::new().expires_in(Duration::from_secs(1 << 40))).await;
    assert!(err.contains("expires_in is out of range"), "{err}");
    let err = refused(ApplyOptions::new().task_id("€".repeat(100))).await;
    assert!(err.contains("255 bytes"), "{err}");
    let err = refused(ApplyOptions::new().header("h".repeat(256), json!(1))).await;
    assert!(err.contains("at most 255 bytes"), "{err}");
    let err = refused(ApplyOptions::new().header("h", json!({"k".repeat(256): 1}))).await;
    assert!(err.contains("at most 255 bytes"), "{err}");
    // AMQP names (lapin panicked on them); a queue's name also goes in a
    // delayed message's routing key, after 16 bytes of delay digits.
    let err = refused(ApplyOptions::new().queue("q".repeat(240))).await;
    assert!(err.contains("at most 239 bytes"), "{err}");
    let err = refused(
        ApplyOptions::new()
            .queue("€".repeat(80))
            .countdown(Duration::from_secs(9)),
    )
    .await;
    assert!(err.contains("queue name"), "{err}");
    let err = refused(ApplyOptions::new().exchange("x".repeat(256))).await;
    assert!(err.contains("exchange name"), "{err}");
    let err = refused(ApplyOptions::new().routing_key("k".repeat(256))).await;
    assert!(err.contains("routing key \""), "{err}");
    let err = client.purge(&"q".repeat(256)).await.expect_err("purge");
    assert!(err.to_string().contains("at most 255 bytes"), "{err}");
    let big = "x".repeat(config.max_message_bytes);
    let err = client
        .send_task("tasks.x", vec![json!(big)], Map::new(), ApplyOptions::new())
        .await
        .expect_err("larger than workers take");
    assert!(err.to_string().contains("exceeds the limit"), "{err}");
    let _ = ResultBackend::connect(&db.url).await.expect("backend");
    testing::cleanup(&config).await;
}

/// The broker cancels the consumer of a queue deleted under the worker; the
/// worker notices (its other consumers are still fine), reconnects, declares
/// the queue again and serves both queues.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_deleted_under_the_worker_is_declared_again() {
    let other = unique("fail-other");
    let more = other.clone();
    let h = start_with(|c| c.queues.push(more)).await;
    assert_eq!(
        h.call(Noop::NAME, vec![], ApplyOptions::new().queue(&other))
            .await
            .state,
        TaskState::Success
    );
    let conn = broker::connect(&h.config.broker_url, "test")
        .await
        .expect("connect");
    let limit = Duration::from_secs(10);
    let ch = broker::bounded("channel.open", limit, conn.create_channel())
        .await
        .expect("channel");
    let delete = ch.queue_delete(other.as_str().into(), QueueDeleteOptions::default());
    broker::bounded("queue.delete", limit, delete)
        .await
        .expect("delete");
    // Back, with a consumer: the worker declared it again.
    support::wait_consumed(&other).await;
    for queue in [other.as_str(), h.config.default_queue.as_str()] {
        let done = h
            .call(Noop::NAME, vec![], ApplyOptions::new().queue(queue))
            .await;
        assert_eq!(done.state, TaskState::Success, "task on {queue}");
    }
    broker::close(&conn, limit, "done").await;
    testing::delete_queues(&[&other]).await;
    h.stop().await;
}

/// Deliveries of a retired session that wait for a free slot go back to
/// their queue at once: each task runs once, although the one running
/// outlasts the grace period (and no stored result could tell a
/// redelivered copy that it already ran: results are off).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retired_session_gives_back_what_waits() {
    let other = unique("fail-other");
    let more = other.clone();
    let h = start_with(|c| {
        c.queues.push(more);
        c.concurrency = 1;
        c.shutdown_grace_secs = 1;
        c.result_backend = "none".into();
    })
    .await;
    let send = |name: &'static str, args: Vec<Value>| {
        h.client
            .send_task(name, args, Map::new(), ApplyOptions::new())
    };
    support::wait_consumed(&other).await;
    send(Sleep::NAME, vec![json!(3.0)]).await.expect("send");
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(
            send(Count::NAME, vec![])
                .await
                .expect("send")
                .id()
                .to_owned(),
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    testing::delete_queues(&[&other]).await;
    let runs = |id: &str| {
        COUNTED
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(id)
            .copied()
            .unwrap_or(0)
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    while ids.iter().any(|id| runs(id) == 0) {
        assert!(tokio::time::Instant::now() < deadline, "not every task ran");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A second run would follow within the sleeper's remaining time.
    tokio::time::sleep(Duration::from_secs(4)).await;
    for id in &ids {
        assert_eq!(runs(id), 1, "runs of {id}");
    }
    testing::delete_queues(&[&other]).await;
    h.stop().await;
}

struct Big;
impl TaskDef for Big {
    const NAME: &'static str = "test.big";
    type Args = (usize,);
    type Output = String;
}

/// MariaDB drops the connection of a statement over `max_allowed_packet`
/// (16 MiB here): a result larger than that is not a database outage. The
/// outcomes beside it are stored, and it ends FAILURE `ResultNotStored`
/// instead of holding every later outcome and ack for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_the_database_cannot_take_holds_nothing_back() {
    let h = start_on(DbKind::Mysql, |_| {}).await;
    let client = &h.client;
    let big = client.delay::<Big>((17 << 20,)).await.expect("send");
    let mut small = Vec::new();
    for _ in 0..5 {
        small.push(client.delay::<Big>((10,)).await.expect("send"));
    }
    for r in &small {
        let got = r.get(Duration::from_secs(60)).await.expect("stored");
        assert_eq!(got, "x".repeat(10));
    }
    let rec = big
        .wait(Duration::from_secs(90))
        .await
        .expect("a final state for the big one");
    assert_eq!(rec.state, TaskState::Failure, "{rec:?}");
    let error = rec.error.expect("error");
    assert_eq!(error.kind, "ResultNotStored", "{error:?}");
    assert!(error.message.contains("SUCCESS"), "{error:?}");
    h.stop().await;
}

/// The same result as a chord member: its report cannot be stored either
/// (it carries the result), so it is reported failed without it. The chord
/// fails naming it, and the worker's later outcomes are stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chord_member_result_the_database_cannot_take_fails_its_chord() {
    use celeriac::canvas::{TaskSig, TaskSignatures, chord};
    let h = start_on(DbKind::Mysql, |_| {}).await;
    let client = &h.client;
    let flow = chord(
        [Big::s((17 << 20,)), Big::s((10,))],
        TaskSig::by_name(celeriac_common::diagnostics::ECHO, vec![]),
    );
    let sent = client.send_workflow(&flow).await.expect("send");
    let mut small = Vec::new();
    for _ in 0..3 {
        small.push(client.delay::<Big>((10,)).await.expect("send"));
    }
    for r in &small {
        let got = r.get(Duration::from_secs(90)).await.expect("stored");
        assert_eq!(got, "x".repeat(10));
    }
    let err = sent
        .get(Duration::from_secs(120))
        .await
        .expect_err("the chord fails");
    assert!(err.to_string().contains("ChordError"), "{err}");
    h.stop().await;
}

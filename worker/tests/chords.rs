//! Chords (and the chains around them) run by workers, against the real
//! RabbitMQ and each of SQLite, PostgreSQL and MariaDB: the callback runs
//! exactly once with the members' results in order (counted by a side
//! effect of the callback itself), with two workers taking members at once,
//! a member retried, a member failing (the chord fails naming it, the
//! callback's errback runs once), nested in a chain (T1 → (T2, T3) → T4),
//! a failed chain's later steps marked not run, a worker SIGKILLed in the
//! middle of a chord, and a callback the broker refuses for a while.

use crate::support;
use celeriac::canvas::{Canvas, TaskSig, TaskSignatures, chord, group};
use celeriac::{ApplyOptions, Client};
use celeriac_common::backend::ResultBackend;
use celeriac_common::backend::chord::ChordState;
use celeriac_common::diagnostics::{ECHO, Sleep};
use celeriac_common::testing::process::{self, LoggedProcess};
use celeriac_common::testing::{self, DbKind, TestDatabase, unique};
use celeriac_common::{Config, TaskDef, TaskState};
use celeriac_worker::{TaskContext, TaskFailure, TaskOptions, Worker};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

const WAIT: Duration = Duration::from_secs(60);

/// `test.collect(results)`: returns its argument; counts its runs by id.
struct Collect;
impl TaskDef for Collect {
    const NAME: &'static str = "test.collect";
    type Args = (Value,);
    type Output = Value;
}

/// `test.tally(key)`: counts its runs by key.
struct Tally;
impl TaskDef for Tally {
    const NAME: &'static str = "test.tally";
    type Args = (String,);
    type Output = ();
}

/// `test.flaky(key)`: fails (autoretried) on its first run per key, then
/// returns the key.
struct Flaky;
impl TaskDef for Flaky {
    const NAME: &'static str = "test.flaky";
    type Args = (String,);
    type Output = String;
}

/// `test.hold(key, ms)`: counts its runs by key, then sleeps `ms`.
struct Hold;
impl TaskDef for Hold {
    const NAME: &'static str = "test.hold";
    type Args = (String, u64);
    type Output = String;
}

/// `test.first_attempt_fails(key)`: counts its runs by key; fails
/// (autoretried) on every run of its first attempt.
struct FirstAttemptFails;
impl TaskDef for FirstAttemptFails {
    const NAME: &'static str = "test.first_attempt_fails";
    type Args = (String,);
    type Output = String;
}

static RUNS: Mutex<BTreeMap<String, u32>> = Mutex::new(BTreeMap::new());

fn bump(key: &str) -> u32 {
    let mut runs = RUNS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let n = runs.entry(key.to_owned()).or_default();
    *n += 1;
    *n
}

fn runs(key: &str) -> u32 {
    RUNS.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(key)
        .copied()
        .unwrap_or(0)
}

fn echo(args: Value) -> TaskSig {
    let Value::Array(args) = args else {
        panic!("args must be a list")
    };
    TaskSig::by_name(ECHO, args)
}

fn echoed(args: Value) -> Value {
    json!({"args": args, "kwargs": {}})
}

struct Harness {
    db: TestDatabase,
    config: Config,
    client: Client,
    backend: ResultBackend,
    stops: Vec<oneshot::Sender<()>>,
    workers: Vec<tokio::task::JoinHandle<Result<(), celeriac_worker::WorkerError>>>,
}

/// Two in-process workers on one queue, so members of one chord finish on
/// both, often at the same instant.
async fn start(kind: DbKind) -> Harness {
    start_workers(kind, 2).await
}

/// `count` in-process workers on one queue.
async fn start_workers(kind: DbKind, count: usize) -> Harness {
    let db = TestDatabase::create(kind).await.expect("db");
    let config = testing::config(&db.url, &unique("chords"));
    let (mut stops, mut workers) = (Vec::new(), Vec::new());
    for n in 0..count {
        let mut config = config.clone();
        config.hostname = format!("chords-{n}@test");
        let flaky = TaskOptions {
            autoretry_for: vec!["Flaky".to_owned()],
            retry_delay: Duration::from_millis(50),
            max_retries: Some(3),
            ..TaskOptions::default()
        };
        let worker = Worker::builder(config)
            .with_diagnostics()
            .register::<Collect, _, _, _>(|ctx: TaskContext, (results,)| async move {
                bump(&ctx.id);
                Ok::<_, TaskFailure>(results)
            })
            .register::<Tally, _, _, _>(|_, (key,)| async move {
                bump(&key);
                Ok::<_, TaskFailure>(())
            })
            .register::<Hold, _, _, _>(|_, (key, ms)| async move {
                bump(&key);
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Ok::<_, TaskFailure>(key)
            })
            .register::<Flaky, _, _, _>(|_, (key,)| async move {
                if bump(&format!("flaky-{key}")) == 1 {
                    return Err(TaskFailure::new("Flaky", "first run fails"));
                }
                Ok(key)
            })
            .register::<FirstAttemptFails, _, _, _>(|ctx: TaskContext, (key,)| async move {
                bump(&key);
                if ctx.retries == 0 {
                    return Err(TaskFailure::new("Flaky", "the first attempt fails"));
                }
                Ok(key)
            })
            // Retried after the waiting copy has looked again.
            .options(
                FirstAttemptFails::NAME,
                TaskOptions {
                    retry_delay: Duration::from_secs(3),
                    ..flaky.clone()
                },
            )
            .options(Flaky::NAME, flaky)
            .build()
            .await
            .expect("build worker");
        let (tx, rx) = oneshot::channel();
        workers.push(tokio::spawn(worker.run_until(async move {
            let _ = rx.await;
        })));
        stops.push(tx);
    }
    let backend = ResultBackend::connect(&db.url).await.expect("backend");
    let client = Client::connect(config.clone()).await.expect("client");
    Harness {
        db,
        config,
        client,
        backend,
        stops,
        workers,
    }
}

impl Harness {
    async fn stop(self) {
        for tx in self.stops {
            let _ = tx.send(());
        }
        for w in self.workers {
            w.await.expect("join").expect("worker ran");
        }
        testing::cleanup(&self.config).await;
        self.db.drop_database().await;
    }

    /// Waits until `id` has a final outcome, and returns its row.
    async fn final_row(&self, id: &str) -> celeriac_common::backend::TaskRecord {
        let start = Instant::now();
        loop {
            if let Some(r) = self.backend.get(id).await.expect("read")
                && r.state.is_ready()
            {
                return r;
            }
            assert!(start.elapsed() < WAIT, "{id} never finished");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Asserts `key` ran exactly once, also a moment later.
async fn once(key: &str, what: &str) {
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(runs(key), 1, "{what} ran {} times", runs(key));
}

/// Every chord primitive on one database.
async fn chords_on(kind: DbKind) {
    let h = start(kind).await;
    let collect = || Collect::partial(());

    // A chord of 24 members: the callback once, with the results in order.
    let n = 24;
    let fan = chord((0..n).map(|i| echo(json!([i]))), collect());
    let res = h.client.send_workflow(&fan).await.expect("send chord");
    let value = res.get(WAIT).await.expect("callback result");
    let expected: Vec<Value> = (0..n).map(|i| echoed(json!([i]))).collect();
    assert_eq!(value, Value::Array(expected), "results in header order");
    once(res.id(), "the callback").await;
    let header = res.parent().and_then(|p| p.as_group()).expect("header");
    let row = h
        .backend
        .chord(header.id())
        .await
        .expect("read")
        .expect("chord");
    assert_eq!((row.state, row.done), (ChordState::Complete, n as u64));
    assert!(row.callback_sent_at.is_some(), "marked sent");
    let cb = h.backend.get(res.id()).await.expect("read").expect("row");
    assert_eq!(
        cb.parent_id.as_deref(),
        row.fired_by.as_deref(),
        "the callback's parent is the member that completed the chord"
    );

    // T1 → (T2, T3) → T4, as one expression.
    let diamond = echo(json!([1])) | group([echo(json!([2])), echo(json!([3]))]) | collect();
    let res = h
        .client
        .send_workflow(&diamond)
        .await
        .expect("send diamond");
    let t1 = echoed(json!([1]));
    assert_eq!(
        res.get(WAIT).await.expect("T4"),
        json!([echoed(json!([t1, 2])), echoed(json!([t1, 3]))])
    );
    once(res.id(), "T4").await;

    // A member retried (autoretry) counts once.
    let key = unique("k");
    let retried = chord(
        [
            Flaky::s((format!("{key}-a"),)),
            echo(json!([1])),
            Flaky::s((format!("{key}-b"),)),
        ],
        collect(),
    );
    let res = h.client.send_workflow(&retried).await.expect("send");
    assert_eq!(
        res.get(WAIT).await.expect("callback after retries"),
        json!([format!("{key}-a"), echoed(json!([1])), format!("{key}-b")])
    );
    assert_eq!(runs(&format!("flaky-{key}-a")), 2, "retried once");
    once(res.id(), "the callback after retries").await;

    // A failed member fails the chord, naming it; the errback runs once.
    let tag = unique("errback");
    let failing = chord(
        [
            echo(json!([0])),
            TaskSig::by_name("celeriac.fail", vec![json!("boom")]),
            echo(json!([2])),
        ],
        Canvas::from(collect()).link_error(Tally::si((tag.clone(),))),
    );
    let res = h.client.send_workflow(&failing).await.expect("send");
    let row = h.final_row(res.id()).await;
    assert_eq!(row.state, TaskState::Failure);
    let err = row.error.expect("error");
    let header = res.parent().and_then(|p| p.as_group()).expect("header");
    let failed_id = &header.ids()[1];
    assert_eq!(err.kind, "ChordError");
    assert!(
        err.message.contains(failed_id.as_str()) && err.message.contains("boom"),
        "names the failed member: {}",
        err.message
    );
    wait_for(|| runs(&tag) >= 1).await;
    once(&tag, "the errback").await;
    assert_eq!(runs(res.id()), 0, "the callback never ran");

    // A failed chain step: the later steps are marked not run.
    let stopped = echo(json!([1]))
        | TaskSig::by_name("celeriac.fail", vec![json!("x")]).immutable()
        | echo(json!([3]))
        | echo(json!([4]));
    let res = h.client.send_workflow(&stopped).await.expect("send");
    let last = h.final_row(res.id()).await;
    assert_eq!(last.state, TaskState::Revoked);
    let why = last.error.expect("why");
    assert_eq!(why.kind, "ChainAborted");
    let step2 = res.parent().and_then(|p| p.parent()).expect("step 2");
    assert!(why.message.contains(step2.id()), "{}", why.message);
    let step3 = res.parent().expect("step 3");
    assert_eq!(h.final_row(step3.id()).await.state, TaskState::Revoked);

    h.stop().await;
}

async fn wait_for(cond: impl Fn() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < WAIT, "condition never met");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn chords_on_sqlite() {
    chords_on(DbKind::Sqlite).await;
}

#[tokio::test]
async fn chords_on_postgres() {
    chords_on(DbKind::Postgres).await;
}

#[tokio::test]
async fn chords_on_mariadb() {
    chords_on(DbKind::Mysql).await;
}

/// A callback that cannot be sent (its queue exists with other arguments,
/// so the broker refuses the worker's declaration) is not lost and not
/// sent twice: the claimant's message goes back to its queue and reports
/// again until the queue can be declared, then the callback goes out once.
#[tokio::test]
async fn a_refused_callback_is_sent_once_when_it_can_be() {
    use lapin::options::{BasicGetOptions, QueueDeleteOptions};
    use lapin::types::AMQPValue;
    let h = start(DbKind::Sqlite).await;
    let blocked = format!("{}.blocked", h.config.default_queue);
    let (conn, ch) = testing::declare_refusing_queue(&blocked).await;

    let key = unique("refused");
    let members: Vec<Canvas> = (0..3)
        .map(|i| Tally::s((format!("{key}-{i}"),)).into())
        .collect();
    let fan = chord(members, Collect::partial(()).queue(blocked.clone()));
    let res = h.client.send_workflow(&fan).await.expect("send chord");
    let header = res.parent().and_then(|p| p.as_group()).expect("header");
    for id in header.ids() {
        h.final_row(&id).await;
    }
    let chord_row = || async {
        h.backend
            .chord(header.id())
            .await
            .expect("read")
            .expect("chord")
    };
    // Refused for a while: complete, not sent, nothing in the queue.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let row = chord_row().await;
    assert_eq!(row.state, ChordState::Complete);
    assert!(row.callback_sent_at.is_none(), "not sent while refused");
    let get = || async {
        ch.basic_get(blocked.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .expect("get")
    };
    assert!(get().await.is_none(), "nothing published while refused");

    // The queue can be declared again: the callback goes out, once.
    ch.queue_delete(blocked.as_str().into(), QueueDeleteOptions::default())
        .await
        .expect("delete the blocking queue");
    let began = Instant::now();
    while chord_row().await.callback_sent_at.is_none() {
        assert!(began.elapsed() < WAIT, "the callback was never sent");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let sent = get().await.expect("the callback in its queue");
    let headers = sent.delivery.properties.headers().clone().expect("headers");
    let id = match headers.inner().get("id") {
        Some(AMQPValue::LongString(id)) => String::from_utf8_lossy(id.as_bytes()).into_owned(),
        other => panic!("no id header: {other:?}"),
    };
    assert_eq!(id, res.id());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(get().await.is_none(), "sent once");
    let _ = ch
        .queue_delete(blocked.as_str().into(), QueueDeleteOptions::default())
        .await;
    let _ = conn.close(200, "done".into()).await;
    h.stop().await;
}

/// Options of a copy of a chord callback with task id `id`.
fn callback_copy(id: &str) -> ApplyOptions {
    ApplyOptions::new()
        .task_id(id)
        .header("celeriac_chord_callback", json!(unique("group")))
}

/// Two copies of one chord callback in the queue at once (its claimant's
/// worker died between the broker's confirm and recording it sent, and a
/// redelivered member published it again, with the same id), taken by
/// `workers` workers: one copy takes the callback's row and runs, the other
/// waits for it and ends without running. Without the claim both ran.
async fn two_copies_of_a_callback_run_once(workers: usize) {
    let h = start_workers(DbKind::Sqlite, workers).await;
    let key = unique("twice");
    let id = unique("callback");
    for _ in 0..2 {
        let options = callback_copy(&id);
        h.client
            .apply_async::<Hold>((key.clone(), 1_500), options)
            .await
            .expect("publish a copy");
    }
    let row = h.final_row(&id).await;
    assert_eq!(row.state, TaskState::Success);
    assert_eq!(row.result, Some(json!(key)));
    // The waiting copy asks again every second: long enough for it to end.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(runs(&key), 1, "the callback ran {} times", runs(&key));
    // Stopped, the workers give back what they hold: nothing is left.
    let Harness {
        db,
        config,
        stops,
        workers,
        ..
    } = h;
    for tx in stops {
        let _ = tx.send(());
    }
    for w in workers {
        w.await.expect("join").expect("worker ran");
    }
    let left = support::ready_messages(&config.default_queue).await;
    testing::cleanup(&config).await;
    db.drop_database().await;
    assert_eq!(left, 0, "the second copy was acked, not given back");
}

#[tokio::test]
async fn two_copies_of_a_callback_at_once_run_once() {
    two_copies_of_a_callback_run_once(2).await;
}

/// Both copies on one worker: the second waits for the first in this
/// process (the database would let the worker take its own row again).
#[tokio::test]
async fn two_copies_of_a_callback_on_one_worker_run_once() {
    two_copies_of_a_callback_run_once(1).await;
}

/// Two copies of a callback whose first attempt fails and is retried (3 s
/// later, after the waiting copy has looked again): the copy waiting for
/// the first finds that attempt retried and ends, and the retry runs once:
/// two runs in all. (When a retried attempt's row counted as free, the
/// waiting copy ran the first attempt again: three runs.)
#[tokio::test]
async fn two_copies_of_a_retried_callback_run_each_attempt_once() {
    let h = start(DbKind::Sqlite).await;
    let key = unique("retried");
    let id = unique("callback");
    for _ in 0..2 {
        let options = callback_copy(&id);
        h.client
            .apply_async::<FirstAttemptFails>((key.clone(),), options)
            .await
            .expect("publish a copy");
    }
    let row = h.final_row(&id).await;
    assert_eq!((row.state, row.retries), (TaskState::Success, 1));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let ran = runs(&key);
    assert_eq!(ran, 2, "runs of the callback's attempts: {ran}");
    h.stop().await;
}

fn worker_process(config: &Config, name: &str) -> LoggedProcess {
    process::spawn_worker(env!("CARGO_BIN_EXE_celeriac-worker"), config, name, &[])
}

/// Runs of `id` that finished in a worker's log.
fn finished_runs(log: &str, id: &str) -> usize {
    log.lines()
        .filter(|l| l.contains(id) && l.contains("succeeded"))
        .count()
}

/// A worker SIGKILLed while members of a chord run: another worker takes
/// the redelivered members; the callback runs exactly once (counted in
/// both workers' logs: each run logs "succeeded" once).
async fn sigkill_mid_chord(kind: DbKind) {
    let db = TestDatabase::create(kind).await.expect("db");
    let config = testing::config(&db.url, &unique("chord-kill"));
    let client = Client::connect(config.clone()).await.expect("client");
    let first = worker_process(&config, "chord-kill-a@test");
    // Half the members finish at once, the others sleep through the kill.
    let members = (0..8).map(|i| -> Canvas {
        if i % 2 == 0 {
            echo(json!([i])).into()
        } else {
            Sleep::s((1.5,)).into()
        }
    });
    let res = client
        .send_workflow(&chord(members, echo(json!(["done"]))))
        .await
        .expect("send");
    tokio::time::sleep(Duration::from_millis(700)).await;
    first.signal("KILL");
    let second = worker_process(&config, "chord-kill-b@test");
    let value = res.get(WAIT).await.expect("callback result");
    let results = value["args"][0].as_array().expect("results").len();
    assert_eq!(results, 8, "{value}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let runs =
        finished_runs(&first.log_text(), res.id()) + finished_runs(&second.log_text(), res.id());
    assert_eq!(
        runs,
        1,
        "the callback ran {runs} times:\n{}\n{}",
        first.log_text(),
        second.log_text()
    );
    let backend = ResultBackend::connect(&db.url).await.expect("backend");
    let header = res.parent().expect("header").id().to_owned();
    let row = backend.chord(&header).await.expect("read").expect("chord");
    assert_eq!((row.state, row.done), (ChordState::Complete, 8));
    let _ = second.terminate();
    testing::cleanup(&config).await;
    db.drop_database().await;
}

#[tokio::test]
async fn sigkill_mid_chord_on_sqlite() {
    sigkill_mid_chord(DbKind::Sqlite).await;
}

#[tokio::test]
async fn sigkill_mid_chord_on_postgres() {
    sigkill_mid_chord(DbKind::Postgres).await;
}

#[tokio::test]
async fn sigkill_mid_chord_on_mariadb() {
    sigkill_mid_chord(DbKind::Mysql).await;
}

/// The header group id of the chord `res` ends in, and the id of its one
/// member (an inner chord's callback).
fn only_member(res: &celeriac::canvas::WorkflowResult) -> (String, String) {
    let header = res.parent().and_then(|p| p.as_group()).expect("header");
    match &header.ids()[..] {
        [member] => (header.id().to_owned(), member.clone()),
        ids => panic!("one member: {ids:?}"),
    }
}

/// Waits until `callback` is final, then checks it is FAILURE with a
/// `ChordError` naming `member`; on time-out, shows both workers' logs.
async fn chord_error_naming(
    backend: &ResultBackend,
    callback: &str,
    member: &str,
    workers: [&LoggedProcess; 2],
) {
    let began = Instant::now();
    loop {
        let row = backend.get(callback).await.expect("read");
        if let Some(row) = row.filter(|r| r.state.is_ready()) {
            assert_eq!(row.state, TaskState::Failure, "{row:?}");
            let error = row.error.expect("error");
            assert_eq!(error.kind, "ChordError");
            assert!(error.message.contains(member), "{}", error.message);
            return;
        }
        assert!(
            began.elapsed() < WAIT,
            "the chord never settled:\n{}\n{}",
            workers[0].log_text(),
            workers[1].log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A chord whose only member is another chord, whose member fails. The
/// first worker records the inner callback FAILURE and is SIGKILLed while
/// it reports that to the outer chord (held on the outer chord's row
/// lock). The member is redelivered to a second worker: the inner chord
/// must still answer "claimant, not settled", so the outer chord hears of
/// the failure and its callback is recorded FAILURE. (The inner chord was
/// marked settled before the outer report: the redelivered member then
/// found nothing to do, and the outer chord waited for ever.)
#[tokio::test]
async fn a_nested_chord_settles_after_a_crash_between_its_two_reports() {
    use celeriac_common::diagnostics::Fail;
    use sea_orm::{ConnectionTrait, DbBackend, Statement, TransactionTrait};

    let db = TestDatabase::create(DbKind::Postgres).await.expect("db");
    let config = testing::config(&db.url, &unique("chord-nest-kill"));
    let backend = db.migrated_backend().await.expect("backend");
    let client = Client::connect(config.clone()).await.expect("client");
    let inner = chord([Fail::s(("boom".to_owned(),))], echo(json!(["inner"])));
    let res = client
        .send_workflow(&chord([inner], echo(json!(["outer"]))))
        .await
        .expect("send");
    let (outer, inner_callback) = only_member(&res);
    let inner_callback = &inner_callback;
    let lock = backend.connection().begin().await.expect("begin");
    lock.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "SELECT group_id FROM celeriac_chords WHERE group_id = $1 FOR UPDATE",
        [outer.clone().into()],
    ))
    .await
    .expect("lock the outer chord");
    let first = worker_process(&config, "chord-nest-a@test");
    // The inner callback's FAILURE is stored just before the outer report.
    let began = Instant::now();
    while backend.get(inner_callback).await.expect("read").is_none() {
        assert!(began.elapsed() < WAIT, "the inner chord never failed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    first.signal("KILL");
    lock.rollback().await.expect("unlock");
    let second = worker_process(&config, "chord-nest-b@test");
    chord_error_naming(&backend, res.id(), inner_callback, [&first, &second]).await;
    let _ = second.terminate();
    testing::cleanup(&config).await;
    db.drop_database().await;
}

/// A chain in a chord's header whose second step cannot be sent. The first
/// worker stores the first step's SUCCESS with the second step's FAILURE
/// and the chord's claim, then is SIGKILLed while it records the callback's
/// FAILURE (held on a lock of the callback's row). The first step is
/// redelivered to a second worker and found done: it must find the step
/// that could not be sent and report again, so the chord fails instead of
/// waiting for ever on a claim nobody acts on.
#[tokio::test]
async fn an_unsendable_step_is_reported_again_after_a_crash() {
    use celeriac_common::backend::TaskOutcome;
    use sea_orm::{ConnectionTrait, DbBackend, Statement, TransactionTrait};

    let db = TestDatabase::create(DbKind::Postgres).await.expect("db");
    let config = testing::config(&db.url, &unique("unsent-kill"));
    let backend = db.migrated_backend().await.expect("backend");
    let client = Client::connect(config.clone()).await.expect("client");
    let bad = echo(json!(["bad"])).option("countdown", json!("soon"));
    let res = client
        .send_workflow(&chord(
            [echo(json!([1])) | bad | echo(json!([3]))],
            echo(json!(["after"])),
        ))
        .await
        .expect("send");
    let (_, last) = only_member(&res);
    let callback = res.id().to_owned();
    let started = TaskOutcome::new(callback.clone(), ECHO, TaskState::Started);
    backend.store(vec![started]).await.expect("a row to lock");
    let lock = backend.connection().begin().await.expect("begin");
    lock.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "SELECT task_id FROM celeriac_taskmeta WHERE task_id = $1 FOR UPDATE",
        [callback.clone().into()],
    ))
    .await
    .expect("lock the callback's row");
    let first = worker_process(&config, "unsent-kill-a@test");
    let began = Instant::now();
    while backend.get(&last).await.expect("read").is_none() {
        assert!(began.elapsed() < WAIT, "the chain never stopped");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    first.signal("KILL");
    // Its statement waiting on the lock would go on after the kill (the
    // server notices a closed connection only when it answers): ended.
    let ended = backend
        .connection()
        .execute_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        ))
        .await
        .expect("end the killed worker's statement");
    assert_eq!(ended.rows_affected(), 1, "one statement waited on the lock");
    lock.rollback().await.expect("unlock");
    let second = worker_process(&config, "unsent-kill-b@test");
    chord_error_naming(&backend, &callback, &last, [&first, &second]).await;
    let _ = second.terminate();
    testing::cleanup(&config).await;
    db.drop_database().await;
}

/// A chord whose callback cannot be sent (an option no message can carry)
/// is recorded FAILURE, and when that callback is a member of an outer
/// chord, the outer chord hears of it and fails too, naming it, instead of
/// waiting for ever.
#[tokio::test]
async fn a_callback_that_cannot_be_sent_fails_its_outer_chord() {
    let h = start(DbKind::Sqlite).await;
    // Refused when it is planned; refused when it is encoded.
    let countdown = echo(json!(["inner"])).option("countdown", json!("soon"));
    let headers = echo(json!(["inner"])).option("headers", json!({ "k".repeat(256): 1 }));
    for bad in [countdown, headers] {
        let inner = chord([echo(json!([1]))], bad);
        let res = h
            .client
            .send_workflow(&chord([inner], echo(json!(["outer"]))))
            .await
            .expect("send");
        let (_, inner_callback) = only_member(&res);
        let inner_callback = &inner_callback;
        let row = h.final_row(inner_callback).await;
        assert_eq!(row.state, TaskState::Failure);
        let error = row.error.expect("error");
        assert!(
            error.message.contains("cannot be sent"),
            "{}",
            error.message
        );
        let row = h.final_row(res.id()).await;
        assert_eq!(row.state, TaskState::Failure);
        let error = row.error.expect("error");
        assert_eq!(error.kind, "ChordError");
        assert!(
            error.message.contains(inner_callback.as_str()),
            "{}",
            error.message
        );
    }
    h.stop().await;
}

/// A chain step or link callback that can never be sent (its countdown is
/// not a number) is recorded FAILURE after the step before it succeeds, the
/// steps after it are marked not run, and a chord the chain is a member of
/// fails naming it: nothing is left PENDING.
#[tokio::test]
async fn a_step_that_cannot_be_sent_fails_and_ends_its_chain_and_chord() {
    let h = start(DbKind::Sqlite).await;
    let bad = || echo(json!(["bad"])).option("countdown", json!("soon"));
    let tag = unique("unsent-errback");
    let errback = Tally::si((tag.clone(),));
    let chain = echo(json!([1])) | bad().link_error(errback) | echo(json!([3]));
    let res = h
        .client
        .send_workflow(&chord([chain], echo(json!(["after"]))))
        .await
        .expect("send");
    let (_, last) = only_member(&res);
    let last_row = h.final_row(&last).await;
    assert_eq!(last_row.state, TaskState::Revoked);
    let why = last_row.error.expect("why");
    assert_eq!(why.kind, "ChainAborted");
    let step2 = last_row.parent_id.expect("the step before it");
    assert!(why.message.contains(&step2), "{}", why.message);
    let step2_row = h.final_row(&step2).await;
    assert_eq!(step2_row.state, TaskState::Failure);
    let error = step2_row.error.expect("error");
    assert_eq!(error.kind, "SendError");
    assert!(
        error.message.contains("cannot be sent"),
        "{}",
        error.message
    );
    let step1 = step2_row.parent_id.expect("step 1");
    assert_eq!(h.final_row(&step1).await.state, TaskState::Success);
    // The chord fails, naming its member (the chain's last step).
    let callback = h.final_row(res.id()).await;
    assert_eq!(callback.state, TaskState::Failure);
    let error = callback.error.expect("error");
    assert_eq!(error.kind, "ChordError");
    assert!(error.message.contains(&last), "{}", error.message);
    // The step's errback is called.
    wait_for(|| runs(&tag) >= 1).await;
    once(&tag, "the errback of the step that cannot be sent").await;

    // A group step one of whose messages cannot be delayed (9.5 years, past
    // the delay levels): none of it is sent (the other member would run),
    // both are recorded FAILURE.
    let g1 = unique("unsent-g1");
    let too_far = echo(json!(["g2"])).option("countdown", json!(300_000_000));
    let members: [Canvas; 2] = [Tally::si((g1.clone(),)).into(), too_far.into()];
    let fan = echo(json!([1])) | group(members);
    let res = h.client.send_workflow(&fan).await.expect("send");
    let members = res.as_group().expect("the group").ids();
    assert_eq!(members.len(), 2);
    for id in &members {
        let row = h.final_row(id).await;
        assert_eq!(row.state, TaskState::Failure, "{row:?}");
        assert_eq!(row.error.expect("error").kind, "SendError");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(runs(&g1), 0, "the group's other member was sent and ran");

    // A link callback alone: FAILURE, and its parent SUCCESS.
    let link_id = unique("bad-link");
    let linked = TaskSig::by_name(ECHO, vec![json!(1)]).link(bad().task_id(&link_id));
    let res = h.client.send_workflow(&linked.into()).await.expect("send");
    assert_eq!(h.final_row(res.id()).await.state, TaskState::Success);
    let row = h.final_row(&link_id).await;
    assert_eq!(row.state, TaskState::Failure);
    assert_eq!(row.parent_id.as_deref(), Some(res.id()));
    h.stop().await;
}

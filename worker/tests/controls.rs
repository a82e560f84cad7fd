//! Task-level controls: retries (asked for, automatic, exhausted), hard and
//! soft time limits, rate limits, and follow-ups (link, link_error, chain).

use celeriac::{ApplyOptions, Client, ResultError, Signature, TaskState};
use celeriac_common::TaskDef;
use celeriac_common::testing::{self, DbKind, TestDatabase, unique};
use celeriac_worker::{TaskContext, TaskFailure, TaskOptions, Worker};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use tokio::sync::oneshot;

const WAIT: Duration = Duration::from_secs(30);

task!(Flaky, "ctl.flaky", (u32,), u32);
task!(Hopeless, "ctl.hopeless", (), ());
task!(Io, "ctl.io", (), ());
task!(Slow, "ctl.slow", (), ());
task!(SlowBlocking, "ctl.slow_blocking", (), ());
task!(Polite, "ctl.polite", (), String);
task!(Limited, "ctl.limited", (), ());
task!(Add, "ctl.add", (i64, i64), i64);

struct Harness {
    client: Client,
    config: celeriac::Config,
    stop: oneshot::Sender<()>,
    worker: tokio::task::JoinHandle<Result<(), celeriac_worker::WorkerError>>,
    runs: Arc<AtomicU32>,
    db: TestDatabase,
}

async fn start() -> Harness {
    let db = TestDatabase::create(DbKind::Sqlite).await.expect("db");
    let mut config = testing::config(&db.url, &unique("ctl"));
    config.store_args = true;
    let runs = Arc::new(AtomicU32::new(0));
    let (r1, r2) = (runs.clone(), runs.clone());
    let r3 = Arc::new(AtomicU32::new(0)); // Io's own count
    let fast_retry = TaskOptions {
        retry_delay: Duration::from_millis(100),
        ..TaskOptions::default()
    };
    let worker = Worker::builder(config.clone())
        .with_diagnostics()
        .register::<Flaky, _, _, _>(move |ctx: TaskContext, (fail_times,)| {
            let runs = r1.clone();
            async move {
                runs.fetch_add(1, Ordering::SeqCst);
                if ctx.retries < fail_times {
                    return Err(TaskFailure::new("Flaky", "not yet").retry_in(Duration::from_millis(200)));
                }
                Ok(ctx.retries)
            }
        })
        .register::<Hopeless, _, _, _>(move |_, ()| {
            let runs = r2.clone();
            async move {
                runs.fetch_add(1, Ordering::SeqCst);
                Err::<(), _>(TaskFailure::new("Hopeless", "never works").retry())
            }
        })
        .options(Hopeless::NAME, TaskOptions { max_retries: Some(2), ..fast_retry.clone() })
        .register::<Io, _, _, _>(move |_, ()| {
            let runs = r3.clone();
            async move {
                let n = runs.fetch_add(1, Ordering::SeqCst);
                if n < 2 { Err(std::io::Error::other("disk hiccup")) } else { Ok(()) }
            }
        })
        .options(Io::NAME, TaskOptions { autoretry_for: vec!["Error".into()], retry_backoff: true, ..fast_retry })
        .register::<Slow, _, _, _>(|_, ()| async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            Ok::<_, TaskFailure>(())
        })
        .options(Slow::NAME, TaskOptions { time_limit: Some(Duration::from_millis(300)), ..TaskOptions::default() })
        .register_blocking::<SlowBlocking, _, _>(|_, ()| {
            std::thread::sleep(Duration::from_secs(2));
            Ok::<_, TaskFailure>(())
        })
        .options(SlowBlocking::NAME, TaskOptions { time_limit: Some(Duration::from_millis(300)), ..TaskOptions::default() })
        .register::<Polite, _, _, _>(|ctx: TaskContext, ()| async move {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(30)) => Ok::<_, TaskFailure>("finished".to_owned()),
                _ = ctx.soft_time_limit() => Ok(format!("cleaned up (exceeded: {})", ctx.soft_time_limit_exceeded())),
            }
        })
        .options(Polite::NAME, TaskOptions { soft_time_limit: Some(Duration::from_millis(200)), ..TaskOptions::default() })
        .register::<Limited, _, _, _>(|_, ()| async { Ok::<_, TaskFailure>(()) })
        .options(Limited::NAME, TaskOptions { rate_limit: Some("5/s".parse().expect("rate")), ..TaskOptions::default() })
        .register::<Add, _, _, _>(|_, (x, y)| async move { Ok::<_, TaskFailure>(x + y) })
        .build()
        .await
        .expect("worker");
    let (stop, rx) = oneshot::channel();
    let worker = tokio::spawn(worker.run_until(async move {
        let _ = rx.await;
    }));
    let client = Client::connect(config.clone()).await.expect("client");
    Harness {
        client,
        config,
        stop,
        worker,
        runs,
        db,
    }
}

impl Harness {
    async fn stop(self) {
        let _ = self.stop.send(());
        self.worker.await.expect("join").expect("worker");
        testing::cleanup(&self.config).await;
        self.db.drop_database().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_until_success() {
    let h = start().await;
    let r = h.client.delay::<Flaky>((2,)).await.expect("send");
    assert_eq!(
        r.get(WAIT).await.expect("eventually succeeds"),
        2,
        "ran with retries = 2"
    );
    let rec = r.record().await.expect("record").expect("row");
    assert_eq!((rec.state, rec.retries), (TaskState::Success, 2));
    assert_eq!(h.runs.load(Ordering::SeqCst), 3);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_run_out_and_autoretry_backs_off() {
    let h = start().await;
    let r = h.client.delay::<Hopeless>(()).await.expect("send");
    let err = r.get(WAIT).await.expect_err("gives up");
    let ResultError::Failed { error, .. } = err else {
        panic!("{err:?}")
    };
    assert_eq!(error.kind, "Hopeless");
    assert!(
        error
            .traceback
            .unwrap_or_default()
            .contains("gave up after 2 retries")
    );
    assert_eq!(h.runs.load(Ordering::SeqCst), 3, "first run + 2 retries");

    let io = h.client.delay::<Io>(()).await.expect("send");
    io.get(WAIT).await.expect("autoretried into success");
    assert_eq!(io.record().await.expect("record").expect("row").retries, 2);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_limits() {
    let h = start().await;
    for name in [Slow::NAME, SlowBlocking::NAME] {
        let r = h
            .client
            .send_task(name, vec![], Default::default(), ApplyOptions::new())
            .await
            .expect("send");
        let rec = r.wait(WAIT).await.expect("final");
        assert_eq!(rec.state, TaskState::Failure, "{name}");
        assert_eq!(
            rec.error.expect("error").kind,
            "TimeLimitExceeded",
            "{name}"
        );
    }
    let polite = h.client.delay::<Polite>(()).await.expect("send");
    assert_eq!(
        polite.get(WAIT).await.expect("soft limit"),
        "cleaned up (exceeded: true)"
    );
    // A message's own timelimit header ([hard, soft]) wins over the task's options.
    let r = h
        .client
        .send_task(
            Polite::NAME,
            vec![],
            Default::default(),
            ApplyOptions::new().time_limit(0.1).soft_time_limit(5.0),
        )
        .await
        .expect("send");
    assert_eq!(
        r.wait(WAIT)
            .await
            .expect("final")
            .error
            .expect("error")
            .kind,
        "TimeLimitExceeded"
    );
    // Limits too long for a clock (a sender's 1e20 s) mean "no limit": the
    // task runs, and the worker goes on.
    let r = h
        .client
        .send_task(
            Add::NAME,
            vec![json!(1), json!(2)],
            Default::default(),
            ApplyOptions::new().time_limit(1e20).soft_time_limit(1e19),
        )
        .await
        .expect("send");
    let rec = r.wait(WAIT).await.expect("final");
    assert_eq!(rec.state, TaskState::Success, "{rec:?}");
    let next = h.client.delay::<Add>((2, 3)).await.expect("send");
    assert_eq!(next.get(WAIT).await.expect("the worker goes on"), 5);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_spaces_starts() {
    let h = start().await;
    let mut sent = Vec::new();
    for _ in 0..8 {
        sent.push(h.client.delay::<Limited>(()).await.expect("send"));
    }
    let mut starts = Vec::new();
    for r in &sent {
        starts.push(
            r.wait(WAIT)
                .await
                .expect("ran")
                .started_at
                .expect("started"),
        );
    }
    starts.sort();
    let span = *starts.last().expect("last") - starts[0];
    // 5/s: 8 starts are at least 7 × 200 ms apart in all.
    assert!(
        span >= chrono::Duration::milliseconds(1_350),
        "starts spanned only {span}"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_link_error_and_chain() {
    let h = start().await;
    let then = Signature::new(Add::NAME, vec![json!(10)]);
    let mut then_id = then.clone();
    then_id
        .options
        .insert("task_id".into(), json!(unique("cb")));
    let cb_id = then_id.options["task_id"].as_str().expect("id").to_owned();
    let r = h
        .client
        .apply_async::<Add>((1, 2), ApplyOptions::new().link(then_id))
        .await
        .expect("send");
    assert_eq!(r.get(WAIT).await.expect("add"), 3);
    let cb = h.client.async_result::<i64>(cb_id);
    assert_eq!(
        cb.get(WAIT).await.expect("callback"),
        13,
        "callback got the result prepended"
    );
    assert_eq!(
        cb.record()
            .await
            .expect("rec")
            .expect("row")
            .parent_id
            .as_deref(),
        Some(r.id())
    );

    let mut errback = Signature::new("celeriac.echo", vec![]);
    errback
        .options
        .insert("task_id".into(), json!(unique("eb")));
    let eb_id = errback.options["task_id"].as_str().expect("id").to_owned();
    let failing = h
        .client
        .send_task(
            "celeriac.fail",
            vec![json!("boom")],
            Default::default(),
            ApplyOptions::new().link_error(errback),
        )
        .await
        .expect("send");
    assert_eq!(
        failing.wait(WAIT).await.expect("final").state,
        TaskState::Failure
    );
    let eb: Value = h
        .client
        .async_result::<Value>(eb_id)
        .get(WAIT)
        .await
        .expect("errback ran");
    assert_eq!(
        eb["args"],
        json!([failing.id()]),
        "errback called with the failed task's id"
    );

    // A chain add(1,1) | add(_, 2) | add(_, 3), stored reversed as Celery does.
    let mut last = Signature::new(Add::NAME, vec![json!(3)]);
    last.options.insert("task_id".into(), json!(unique("last")));
    let last_id = last.options["task_id"].as_str().expect("id").to_owned();
    let mut msg =
        celeriac_common::TaskMessage::new(Add::NAME, vec![json!(1), json!(1)], Default::default());
    msg.embed.chain = Some(vec![last, Signature::new(Add::NAME, vec![json!(2)])]);
    h.client
        .send_message(&msg, &h.config.default_queue)
        .await
        .expect("send chain");
    assert_eq!(
        h.client
            .async_result::<i64>(last_id)
            .get(WAIT)
            .await
            .expect("chain end"),
        7
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revokes_reach_running_workers_and_later_ones() {
    let h = start().await;
    // A prefetched task waiting for a free slot is revoked by broadcast.
    let blockers: Vec<_> = futures_util::future::join_all((0..16).map(|_| {
        h.client
            .delay::<celeriac_common::diagnostics::Sleep>((1.0,))
    }))
    .await;
    let queued = h.client.delay::<Add>((1, 1)).await.expect("send");
    assert!(h.client.revoke(queued.id()).await.expect("revoke"));
    let rec = queued.wait(WAIT).await.expect("final");
    assert_eq!((rec.state, rec.started_at), (TaskState::Revoked, None));
    for b in blockers {
        b.expect("send").wait(WAIT).await.expect("blocker");
    }

    // A running async task is stopped with terminate.
    let slow = h.client.delay::<Polite>(()).await.expect("send");
    let _ = slow.state().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let slow2 = h
        .client
        .send_task(
            Slow::NAME,
            vec![],
            Default::default(),
            ApplyOptions::new().time_limit(20.0),
        )
        .await
        .expect("send");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        h.client
            .revoke_with(slow2.id(), true)
            .await
            .expect("revoke")
    );
    // The client records REVOKED at once; the worker then records how it stopped it.
    let mut rec = slow2.wait(WAIT).await.expect("final");
    for _ in 0..200 {
        if rec.worker.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
        rec = slow2.record().await.expect("record").expect("row");
    }
    assert_eq!(rec.state, TaskState::Revoked);
    assert_eq!(
        rec.error.expect("error").message,
        "terminated while running"
    );
    slow.wait(WAIT).await.expect("polite");

    // A task revoked while no worker runs its queue is skipped by a worker started later.
    let other = unique("later");
    let pending = h
        .client
        .apply_async::<Add>((2, 2), ApplyOptions::new().queue(other.clone()))
        .await
        .expect("send");
    assert!(h.client.revoke(pending.id()).await.expect("revoke"));
    let mut cfg = h.config.clone();
    cfg.queues = vec![other.clone()];
    let late = Worker::builder(cfg)
        .register::<Add, _, _, _>(|_, (x, y)| async move { Ok::<_, TaskFailure>(x + y) })
        .build()
        .await
        .expect("worker");
    let (tx, rx) = oneshot::channel::<()>();
    let late = tokio::spawn(late.run_until(async move {
        let _ = rx.await;
    }));
    let canary = h
        .client
        .apply_async::<Add>((3, 3), ApplyOptions::new().queue(other.clone()))
        .await
        .expect("send");
    assert_eq!(canary.get(WAIT).await.expect("canary"), 6);
    let rec = pending.record().await.expect("record").expect("row");
    assert_eq!((rec.state, rec.started_at), (TaskState::Revoked, None));
    assert!(
        !h.client.revoke(canary.id()).await.expect("revoke"),
        "finished tasks keep their outcome"
    );
    let _ = tx.send(());
    late.await.expect("join").expect("late worker");
    testing::delete_queues(&[&other]).await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_messages_are_dead_lettered_after_max_deliveries() {
    let h = start().await;
    let other = unique("poison");
    // Two messages held unacknowledged by a consumer that then goes away, so
    // RabbitMQ redelivers them (as after a worker crash): one that has
    // already been through 4 unfinished deliveries, one for the first time.
    let opts = || ApplyOptions::new().queue(other.clone());
    let poison = h
        .client
        .apply_async::<Add>((1, 1), opts().header("x-celeriac-deliveries", json!(4)))
        .await
        .expect("send");
    let fine = h
        .client
        .apply_async::<Add>((2, 2), opts())
        .await
        .expect("send");
    let conn = celeriac_common::broker::connect(&h.config.broker_url, "test")
        .await
        .expect("connect");
    let ch = conn.create_channel().await.expect("channel");
    for _ in 0..2 {
        let got = ch
            .basic_get(
                other.as_str().into(),
                lapin::options::BasicGetOptions { no_ack: false },
            )
            .await
            .expect("get");
        assert!(got.is_some());
    }
    let _ = conn.close(200, "crash".into()).await; // both return to the queue, redelivered
    let mut cfg = h.config.clone();
    cfg.queues = vec![other.clone()];
    let late = Worker::builder(cfg)
        .register::<Add, _, _, _>(counting_add)
        .build()
        .await
        .expect("worker");
    let (tx, rx) = oneshot::channel::<()>();
    let late = tokio::spawn(late.run_until(async move {
        let _ = rx.await;
    }));
    // The task is told its message was delivered once before.
    assert_eq!(fine.get(WAIT).await.expect("a first redelivery runs"), 1004);
    let rec = poison.wait(WAIT).await.expect("final");
    assert_eq!(rec.state, TaskState::Failure);
    let err = rec.error.expect("error");
    assert_eq!(err.kind, "PoisonMessage");
    assert!(err.message.contains("delivered 5 times"), "{}", err.message);
    let letters = h.client.dead_letters(10).await.expect("list");
    assert!(
        letters.iter().any(|l| l.id.as_deref() == Some(poison.id())),
        "{letters:?}"
    );
    let _ = tx.send(());
    late.await.expect("join").expect("late worker");
    testing::delete_queues(&[&other]).await;
    h.stop().await;
}

/// `Add`, plus 1,000 for each earlier delivery that did not finish (and the
/// `redelivered` flag must agree), so a test sees what the task saw.
async fn counting_add(ctx: TaskContext, (x, y): (i64, i64)) -> Result<i64, TaskFailure> {
    assert_eq!(ctx.redelivered, ctx.earlier_deliveries > 0);
    Ok(x + y + 1000 * i64::from(ctx.earlier_deliveries))
}

/// Quorum queues count deliveries themselves (`x-delivery-count`): the
/// worker uses that count, so a redelivered message runs as it is (no copy
/// is published to count it) and one returned `max_deliveries` times is
/// dead-lettered with FAILURE recorded.
#[tokio::test]
async fn quorum_queues_use_the_brokers_delivery_count() {
    let db = TestDatabase::create(DbKind::Sqlite).await.expect("db");
    let mut config = testing::config(&db.url, &unique("ctl-quorum"));
    config.queue_type = celeriac_common::config::QueueType::Quorum;
    let client = Client::connect(config.clone()).await.expect("client");
    let poison = client.delay::<Add>((1, 1)).await.expect("send");
    let fine = client.delay::<Add>((2, 2)).await.expect("send");
    // A consumer that keeps failing: the poison message is returned 5 times,
    // the other once (tags come in order: poison first).
    let conn = celeriac_common::broker::connect(&config.broker_url, "test")
        .await
        .expect("connect");
    let ch = conn.create_channel().await.expect("channel");
    let queue = config.default_queue.clone();
    let mut returned = std::collections::HashMap::<String, u32>::new();
    while returned.values().sum::<u32>() < 6 {
        let got = ch
            .basic_get(
                queue.as_str().into(),
                lapin::options::BasicGetOptions { no_ack: false },
            )
            .await
            .expect("get")
            .expect("a message");
        let id = got
            .delivery
            .properties
            .correlation_id()
            .as_ref()
            .map(|c| c.to_string())
            .expect("id");
        let n = returned.entry(id.clone()).or_default();
        let limit = if id == poison.id() { 5 } else { 1 };
        let requeue_it = *n < limit;
        *n += u32::from(requeue_it);
        if requeue_it {
            got.delivery
                .acker
                .nack(lapin::options::BasicNackOptions {
                    requeue: true,
                    multiple: false,
                })
                .await
                .expect("nack");
        } else {
            // Not this one again: leave it unacknowledged until the channel closes.
            continue;
        }
    }
    let _ = conn.close(200, "crash".into()).await;
    let worker = Worker::builder(config.clone())
        .register::<Add, _, _, _>(counting_add)
        .build()
        .await
        .expect("worker");
    let (tx, rx) = oneshot::channel::<()>();
    let worker = tokio::spawn(worker.run_until(async move {
        let _ = rx.await;
    }));
    // One nack, and one more return when the channel closed with it held.
    let ran = fine.get(WAIT).await.expect("a redelivered message runs");
    assert!(ran > 1000, "the task saw its earlier deliveries: {ran}");
    let rec = poison.wait(WAIT).await.expect("final");
    assert_eq!(rec.state, TaskState::Failure);
    let err = rec.error.expect("error");
    assert_eq!(err.kind, "PoisonMessage");
    let letters = client.dead_letters(10).await.expect("list");
    assert!(
        letters.iter().any(|l| l.id.as_deref() == Some(poison.id())),
        "{letters:?}"
    );
    let _ = tx.send(());
    worker.await.expect("join").expect("worker");
    testing::cleanup(&config).await;
    db.drop_database().await;
}

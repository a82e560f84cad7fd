//! The worker never waits for ever on the network (issue #20): started
//! against a peer that never speaks AMQP, and told not to retry at startup,
//! it fails in one line within the connect timeout; once consuming, a broker that goes silent (no RST) is
//! noticed within two heartbeats, and each reconnection attempt to it gives
//! up within the connect timeout, logged, with backoff, for as long as it
//! lasts. Measured times are printed (`--no-capture` shows them).

use celeriac_common::netfault::{Peer, Proxy, ProxyMode};
use celeriac_common::testing;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// Slack on top of a bound, for a loaded machine.
const SLACK: Duration = Duration::from_millis(1500);

fn worker(broker: &str, queue: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_celeriac-worker"));
    cmd.env_remove("CELERIAC_CONFIG")
        .env("RUST_LOG", "info")
        .args(["--broker", broker, "--result-backend", "none", "-Q", queue])
        .args(["--connect-timeout", "1", "--broker-heartbeat", "1"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// The child's log lines, as they come.
fn log_lines(child: &mut Child) -> mpsc::UnboundedReceiver<String> {
    let (tx, rx) = mpsc::unbounded_channel();
    if let Some(stderr) = child.stderr.take() {
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
    }
    rx
}

/// Waits up to `within` for a line containing `text`.
async fn line_with(
    lines: &mut mpsc::UnboundedReceiver<String>,
    text: &str,
    within: Duration,
) -> Option<String> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, lines.recv()).await {
            Ok(Some(line)) if line.contains(text) => return Some(line),
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => return None,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_started_against_a_silent_peer_fails_in_one_line() {
    let peer = Peer::silent().await.expect("peer");
    let started = Instant::now();
    // Told not to wait for the broker at startup (the default is to retry).
    let out = worker(&peer.url(), "unused")
        .env("RUST_LOG", "off")
        .env("CELERIAC_BROKER_CONNECTION_RETRY_ON_STARTUP", "false")
        .output()
        .await
        .expect("run the worker");
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!(
        "worker start, silent peer: exit {:?} after {took:?}: {stderr}",
        out.status.code()
    );
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("cannot connect to RabbitMQ") && stderr.contains("within 1s"),
        "{stderr}"
    );
    assert!(took < Duration::from_secs(1) + SLACK, "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_notices_a_silent_broker_and_keeps_retrying() {
    let proxy = Proxy::start(&testing::broker_url(), ProxyMode::Forward)
        .await
        .expect("proxy");
    let queue = testing::unique("net-timeouts");
    let mut child = worker(&proxy.url(), &queue).spawn().expect("spawn worker");
    let mut lines = log_lines(&mut child);
    assert!(
        line_with(
            &mut lines,
            "worker ready, consuming",
            Duration::from_secs(20)
        )
        .await
        .is_some(),
        "the worker did not start consuming"
    );

    proxy.freeze();
    let frozen = Instant::now();
    let lost = line_with(&mut lines, "stopped consuming", Duration::from_secs(10)).await;
    let noticed = frozen.elapsed();
    eprintln!("worker: silent broker noticed after {noticed:?}: {lost:?}");
    assert!(
        lost.is_some(),
        "the worker did not notice the silent broker"
    );
    // Heartbeat 1 s: two intervals, plus the worker's 1 s connection check.
    assert!(noticed < Duration::from_secs(3) + SLACK, "{noticed:?}");

    // Each attempt to reconnect meets a silent broker: it gives up within
    // the connect timeout, says so, and tries again.
    let mut attempts = Vec::new();
    while attempts.len() < 3 {
        let Some(line) = line_with(&mut lines, "cannot consume", Duration::from_secs(6)).await
        else {
            break;
        };
        attempts.push((frozen.elapsed(), line));
    }
    for (at, line) in &attempts {
        eprintln!("worker: attempt failed at +{at:?}: {line}");
    }
    assert!(attempts.len() >= 3, "{attempts:?}");
    assert!(
        attempts.iter().all(|(_, l)| l.contains("within 1s")),
        "{attempts:?}"
    );
    assert!(
        child.try_wait().expect("status").is_none(),
        "the worker exited"
    );
    let _ = child.start_kill();
    let _ = child.wait().await;
    testing::cleanup(&testing::config("none", &queue)).await;
}

/// The result database's host goes silent mid-write (no RST: it died, or
/// failed over to another address the old sockets do not reach). The
/// write that hangs on its socket is given up after `result_timeout_secs` and made
/// again on a fresh connection, so the outcome is stored and its message
/// acked, instead of every later outcome waiting for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_database_gone_silent_mid_write_is_left_for_a_fresh_connection() {
    use celeriac::Client;
    use celeriac_common::TaskState;
    use celeriac_common::diagnostics::ECHO;
    use celeriac_common::testing::{DbKind, TestDatabase, unique};
    use celeriac_worker::Worker;

    let db = TestDatabase::create(DbKind::Postgres).await.expect("db");
    let direct = db.migrated_backend().await.expect("backend");
    let proxy = Proxy::start(&db.url, ProxyMode::Forward)
        .await
        .expect("proxy");
    let mut config = testing::config(&proxy.url(), &unique("silent-db"));
    // Given up after 5 s here, not the default minute.
    config.result_timeout_secs = 5;
    let worker = Worker::builder(config.clone())
        .with_diagnostics()
        .build()
        .await
        .expect("worker");
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let worker = tokio::spawn(worker.run_until(async move {
        let _ = rx.await;
    }));
    let mut direct_config = config.clone();
    direct_config.result_backend = db.url.clone();
    let client = Client::connect(direct_config).await.expect("client");
    let echo = |n: i64| {
        let client = &client;
        async move {
            client
                .send_task(ECHO, vec![n.into()], Default::default(), Default::default())
                .await
                .expect("send")
        }
    };
    let first = echo(1).await;
    first.wait(Duration::from_secs(30)).await.expect("stored");
    // The next outcome's write is sent and waits on a table lock; the
    // database goes silent; the lock goes. The write is done, but its
    // reply never comes back through the frozen proxy.
    use sea_orm::{ConnectionTrait, TransactionTrait};
    let lock = direct.connection().begin().await.expect("begin");
    lock.execute_unprepared("LOCK TABLE celeriac_taskmeta IN ACCESS EXCLUSIVE MODE")
        .await
        .expect("lock");
    let second = echo(2).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    proxy.freeze();
    let started = Instant::now();
    lock.rollback().await.expect("unlock");
    tokio::time::sleep(Duration::from_secs(2)).await;
    proxy.thaw();
    // Outcomes are written in order: the next one is stored only once the
    // hung write was given up.
    let third = echo(3).await;
    let rec = third
        .wait(Duration::from_secs(150))
        .await
        .expect("stored on a fresh connection");
    assert_eq!(rec.state, TaskState::Success);
    let rec = second.wait(Duration::from_secs(5)).await.expect("stored");
    assert_eq!(rec.state, TaskState::Success);
    println!(
        "the next outcome stored {:.1} s after the database went silent",
        started.elapsed().as_secs_f64()
    );
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(30), worker).await;
    drop(direct);
    testing::cleanup(&config).await;
    db.drop_database().await;
}

/// A STARTED mark the database does not answer (here: a table lock held
/// by another session, as a long migration or `VACUUM FULL` holds one) is
/// given up after `result_timeout_secs` and the task runs; it does not hold the task,
/// and with it a slot of the worker, for as long as the lock lasts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_started_mark_the_database_does_not_answer_holds_no_task() {
    use celeriac::Client;
    use celeriac_common::TaskState;
    use celeriac_common::testing::{DbKind, TestDatabase, unique};
    use celeriac_worker::{TaskContext, TaskFailure, Worker};
    use sea_orm::{ConnectionTrait, TransactionTrait};

    let db = TestDatabase::create(DbKind::Postgres).await.expect("db");
    let direct = db.migrated_backend().await.expect("backend");
    let mut config = testing::config(&db.url, &unique("started-lock"));
    config.track_started = true;
    // Given up after 5 s here, not the default minute.
    config.result_timeout_secs = 5;
    let (ran_tx, mut ran) = mpsc::unbounded_channel::<String>();
    let worker = Worker::builder(config.clone())
        .register_raw("lock.probe", move |ctx: TaskContext, _, _| {
            let ran_tx = ran_tx.clone();
            async move {
                let _ = ran_tx.send(ctx.id.clone());
                Ok::<_, TaskFailure>(serde_json::json!("ran"))
            }
        })
        .build()
        .await
        .expect("worker");
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let worker = tokio::spawn(worker.run_until(async move {
        let _ = rx.await;
    }));
    let client = Client::connect(config.clone()).await.expect("client");
    // The worker is up (consuming, its revocations read) before the lock.
    let first = client
        .send_task("lock.probe", vec![], Default::default(), Default::default())
        .await
        .expect("send");
    first.wait(Duration::from_secs(30)).await.expect("stored");
    let _ = ran.recv().await;
    let lock = direct.connection().begin().await.expect("begin");
    lock.execute_unprepared("LOCK TABLE celeriac_taskmeta IN ACCESS EXCLUSIVE MODE")
        .await
        .expect("lock");
    let started = Instant::now();
    let sent = client
        .send_task("lock.probe", vec![], Default::default(), Default::default())
        .await
        .expect("send");
    let id = tokio::time::timeout(Duration::from_secs(60), ran.recv())
        .await
        .expect("the task ran while the lock was held")
        .expect("id");
    let waited = started.elapsed();
    assert_eq!(id, sent.id());
    assert!(waited >= Duration::from_secs(4), "ran after {waited:?}");
    println!(
        "the task ran {:.1} s after it was sent",
        waited.as_secs_f64()
    );
    lock.rollback().await.expect("unlock");
    let rec = sent.wait(Duration::from_secs(90)).await.expect("stored");
    assert_eq!(rec.state, TaskState::Success);
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(30), worker).await;
    drop(direct);
    testing::cleanup(&config).await;
    db.drop_database().await;
}

//! The worker and admin binaries as operators run them: warm shutdown,
//! SIGKILL, `celeriac call --wait`, and bad setup.

use crate::support;

use celeriac::{Client, TaskState};
use celeriac_common::broker;
use celeriac_common::diagnostics::{Noop, Sleep};
use celeriac_common::testing::process::{self, sibling_bin, spawn_worker};
use celeriac_common::testing::{self, DbKind, TestDatabase, unique};
use std::process::Command;
use std::time::Duration;
use support::{WORKER, ready_messages, wait_for_state};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_running_work_and_returns_the_rest() {
    let db = TestDatabase::create(DbKind::Sqlite).await.expect("db");
    let config = testing::config(&db.url, &unique("shutdown"));
    let worker = spawn_worker(
        WORKER,
        &config,
        "warm@test",
        &["--concurrency", "1", "--track-started", "true"],
    );
    let client = Client::connect(config.clone()).await.expect("client");
    let slow = client.delay::<Sleep>((1.5,)).await.expect("send");
    let mut rest = Vec::new();
    for _ in 0..3 {
        rest.push(client.delay::<Noop>(()).await.expect("send"));
    }
    for _ in 0..200 {
        if slow.state().await.expect("state") == TaskState::Started {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(slow.state().await.expect("state"), TaskState::Started);
    assert_eq!(worker.terminate(), Some(0), "warm shutdown exits 0");
    assert_eq!(
        slow.state().await.expect("state"),
        TaskState::Success,
        "running task finished"
    );
    for r in &rest {
        assert_eq!(
            r.state().await.expect("state"),
            TaskState::Pending,
            "unstarted task not run"
        );
    }
    assert_eq!(
        ready_messages(&config.default_queue).await,
        3,
        "unstarted messages are back in the queue"
    );
    testing::cleanup(&config).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_nothing() {
    let db = TestDatabase::create(DbKind::Postgres).await.expect("db");
    let config = testing::config(&db.url, &unique("sigkill"));
    let backend = db.migrated_backend().await.expect("migrated backend");
    let doomed = spawn_worker(
        WORKER,
        &config,
        "doomed@test",
        &["--concurrency", "4", "--track-started", "true"],
    );
    let client = Client::connect(config.clone()).await.expect("client");
    let mut sent = Vec::new();
    for _ in 0..4 {
        sent.push(client.delay::<Sleep>((2.0,)).await.expect("send"));
    }
    for _ in 0..20 {
        let id = client
            .delay::<Noop>(())
            .await
            .expect("send")
            .id()
            .to_owned();
        sent.push(client.async_result(id));
    }
    assert_eq!(
        wait_for_state(&backend, "STARTED", 4, Duration::from_secs(20)).await,
        4
    );
    doomed.kill();
    // A multi-threaded runtime (the default is one thread).
    let rescuer = spawn_worker(WORKER, &config, "rescuer@test", &["--threads", "2"]);
    for r in &sent {
        let rec = r.wait(Duration::from_secs(30)).await.expect("finished");
        assert_eq!(rec.state, TaskState::Success);
    }
    let sleeps: Vec<_> = futures_util::future::join_all(sent[..4].iter().map(|r| r.record())).await;
    for rec in sleeps {
        assert_eq!(
            rec.expect("record").expect("row").worker.as_deref(),
            Some("rescuer@test")
        );
    }
    assert_eq!(rescuer.terminate(), Some(0));
    testing::cleanup(&config).await;
    db.drop_database().await;
}

/// Acks may wait briefly for others to share a frame (prefetch 16 here):
/// a task finishing alone, or a few, must still be acked soon after, not
/// when more work comes. SIGKILL shows it: whatever is unacked then goes
/// back to the queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lone_tasks_are_acked_without_waiting_for_more() {
    let db = TestDatabase::create(DbKind::Sqlite).await.expect("db");
    let config = testing::config(&db.url, &unique("lone-ack"));
    let worker = spawn_worker(
        WORKER,
        &config,
        "lone@test",
        &["--concurrency", "4", "--prefetch-multiplier", "4"],
    );
    let client = Client::connect(config.clone()).await.expect("client");
    let lone = client.delay::<Noop>(()).await.expect("send");
    lone.wait(Duration::from_secs(20)).await.expect("finished");
    // Three in all: fewer than a quarter of the window.
    let mut few = Vec::new();
    for _ in 0..2 {
        few.push(client.delay::<Noop>(()).await.expect("send"));
    }
    for r in &few {
        r.wait(Duration::from_secs(20)).await.expect("finished");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    worker.kill();
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            ready_messages(&config.default_queue).await,
            0,
            "a finished task was still unacked when the worker died"
        );
    }
    testing::cleanup(&config).await;
}

fn celeriac(config: &celeriac::Config, args: &[&str]) -> std::process::Output {
    process::command(sibling_bin("celeriac"), config)
        .args(args)
        .output()
        .expect("run celeriac")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_call_wait_prints_the_outcome() {
    let db = TestDatabase::create(DbKind::Sqlite).await.expect("db");
    let config = testing::config(&db.url, &unique("cli"));
    let worker = spawn_worker(WORKER, &config, "cli@test", &[]);
    let q = config.default_queue.as_str();
    let out = celeriac(
        &config,
        &[
            "call",
            "celeriac.echo",
            "--args",
            r#"[1,"a"]"#,
            "--queue",
            q,
            "--wait",
            "10",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(v["state"], "SUCCESS");
    assert_eq!(v["result"]["args"], serde_json::json!([1, "a"]));
    let id = v["id"].as_str().expect("id").to_owned();

    let again = celeriac(&config, &["result", &id]);
    assert!(again.status.success());
    let v2: serde_json::Value = serde_json::from_slice(&again.stdout).expect("json");
    assert_eq!(v2, v);

    let failed = celeriac(
        &config,
        &[
            "call",
            "celeriac.fail",
            "--args",
            r#"["nope"]"#,
            "--queue",
            q,
            "--wait",
            "10",
        ],
    );
    assert_eq!(failed.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&failed.stdout).expect("json");
    assert_eq!(
        (v["state"].as_str(), v["error"]["message"].as_str()),
        (Some("FAILURE"), Some("nope"))
    );

    let id_only = celeriac(&config, &["call", "celeriac.noop", "--queue", q]);
    assert!(id_only.status.success());
    assert_eq!(
        String::from_utf8_lossy(&id_only.stdout).trim().len(),
        36,
        "prints the task id"
    );

    let bad = celeriac(
        &config,
        &["call", "celeriac.echo", "--args", "{oops", "--queue", q],
    );
    assert_eq!(bad.status.code(), Some(2));
    let bad = celeriac(
        &config,
        &["call", "celeriac.echo", "--countdown", "-5", "--queue", q],
    );
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("non-negative"));

    let pending = celeriac(&config, &["result", "no-such-id"]);
    assert_eq!(pending.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&pending.stdout).contains("PENDING"));
    assert_eq!(worker.terminate(), Some(0));
    testing::cleanup(&config).await;
}

/// Bad setup: one line naming the problem, no secret, no panic, non-zero exit.
#[test]
fn bad_setup_gives_one_clear_line() {
    let long_host = format!("w@{}", "h".repeat(250));
    let long_queue = "q".repeat(240);
    let cases: [(&[&str], &str); 7] = [
        // Names the broker cannot carry, given as flags (lapin panicked).
        (
            &["--hostname", &long_host, "--result-backend", "none"],
            "hostname \"w@hhh",
        ),
        (
            &["-Q", &long_queue, "--result-backend", "none"],
            "at most 239 bytes",
        ),
        (
            &["--threads", "0", "--result-backend", "none"],
            "worker_threads must be at least 1",
        ),
        (
            &[
                "--broker",
                "amqp://guest:s3cret@127.0.0.1:1/%2f",
                "--result-backend",
                "none",
                "--no-startup-retry",
            ],
            "cannot connect to RabbitMQ",
        ),
        (
            &[
                "--broker",
                "definitely not a url",
                "--result-backend",
                "none",
            ],
            "invalid broker URL",
        ),
        (
            &[
                "--result-backend",
                "sqlite:///proc/celeriac-nope/r.db?mode=rwc",
            ],
            "cannot open result backend",
        ),
        (
            &["--result-backend", "postgres://u:s3cret@127.0.0.1:1/db"],
            "cannot open result backend",
        ),
    ];
    for (args, want) in cases {
        let out = Command::new(env!("CARGO_BIN_EXE_celeriac-worker"))
            .env_remove("CELERIAC_CONFIG")
            .env("RUST_LOG", "off")
            .args(args)
            .output()
            .expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert_eq!(
            err.trim().lines().count(),
            1,
            "{args:?}: one line, got {err}"
        );
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(
            !err.contains("s3cret") && !err.contains("panicked"),
            "{err}"
        );
    }
    let out = Command::new(env!("CARGO_BIN_EXE_celeriac-worker"))
        .args(["--concurrency", "lots"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2), "usage errors exit 2");
}

/// `--help` of every binary and subcommand shows where a URL comes from,
/// never the URL's password (clap would print environment values).
#[test]
fn help_never_shows_a_password() {
    let cases: [(&str, &[&str]); 6] = [
        ("celeriac-worker", &["--help"]),
        ("celeriac", &["--help"]),
        ("celeriac", &["call", "--help"]),
        ("celeriac", &["dlq", "list", "--help"]),
        ("celeriac-beat", &["run", "--help"]),
        ("celeriac-beat", &["schedule", "add", "--help"]),
    ];
    for (exe, args) in cases {
        let out = Command::new(sibling_bin(exe))
            .env("CELERIAC_BROKER_URL", "amqp://u:s3cret@rabbit:5672/%2f")
            .env("CELERIAC_RESULT_BACKEND", "postgres://u:s3cret@db/r")
            .env("CELERIAC_BENCH_POSTGRES_URL", "postgres://u:s3cret@db/b")
            .env("CELERIAC_BENCH_MYSQL_URL", "mysql://u:s3cret@db/b")
            .args(args)
            .output()
            .expect("run");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{exe} {args:?}: {out:?}");
        assert!(
            text.contains("CELERIAC_BROKER_URL"),
            "{exe} {args:?}: {text}"
        );
        assert!(!text.contains("s3cret"), "{exe} {args:?}: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_list_replay_and_purge() {
    let db = TestDatabase::create(DbKind::Sqlite).await.expect("db");
    let config = testing::config(&db.url, &unique("dlq"));
    let worker = spawn_worker(WORKER, &config, "dlq@test", &[]);
    let conn = broker::connect(&config.broker_url, "test")
        .await
        .expect("connect");
    let ch = conn.create_channel().await.expect("channel");
    for id in ["bad-1", "bad-2", "bad-3"] {
        let props = lapin::BasicProperties::default()
            .with_content_type("application/json".into())
            .with_correlation_id(id.into());
        ch.basic_publish(
            "".into(),
            config.default_queue.as_str().into(),
            Default::default(),
            b"{oops",
            props,
        )
        .await
        .expect("publish")
        .await
        .expect("confirm");
    }
    let mut listed = Vec::new();
    for _ in 0..100 {
        let out = celeriac(&config, &["dlq", "list"]);
        assert!(out.status.success(), "{out:?}");
        listed = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect();
        if listed.len() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(listed.len(), 3, "{listed:?}");
    let first: serde_json::Value = serde_json::from_str(&listed[0]).expect("json line");
    assert!(
        first["reason"]
            .as_str()
            .expect("reason")
            .contains("missing header"),
        "{first}"
    );
    assert_eq!(first["queue"].as_str(), Some(config.default_queue.as_str()));
    // Listing does not consume.
    assert_eq!(ready_messages(&config.dead_letter_queue).await, 3);

    assert_eq!(worker.terminate(), Some(0));
    let out = celeriac(&config, &["dlq", "replay", "bad-2"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("replayed 1"),
        "{out:?}"
    );
    assert_eq!(
        ready_messages(&config.default_queue).await,
        1,
        "back in its queue"
    );
    assert_eq!(ready_messages(&config.dead_letter_queue).await, 2);
    assert_eq!(
        celeriac(&config, &["dlq", "replay"]).status.code(),
        Some(2),
        "ids or --all"
    );
    let out = celeriac(&config, &["dlq", "purge"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("purged 2"),
        "{out:?}"
    );
    let _ = conn.close(200, "done".into()).await;
    testing::cleanup(&config).await;
}

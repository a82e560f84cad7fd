//! The `celeriac` command line as a user meets it: its help texts, the
//! order of an outcome's keys, and `dlq list` on a dead-letter queue of
//! another name. The last one needs the local RabbitMQ.

use celeriac_common::testing::{broker_url, delete_queues, unique};
use lapin::options::{BasicPublishOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use std::process::{Command, Output};

fn celeriac(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_celeriac"))
        .args(args)
        .env_remove("CELERIAC_CONFIG")
        .output()
        .expect("run celeriac")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Where `needle` starts in `help`, failing with the whole text if absent.
fn at(help: &str, needle: &str) -> usize {
    help.find(needle)
        .unwrap_or_else(|| panic!("{needle:?} not in:\n{help}"))
}

#[test]
fn the_summary_names_every_command() {
    let help = stdout(&celeriac(&["--help"]));
    for command in [
        "call", "result", "results", "revoke", "purge", "dlq", "health", "migrate",
    ] {
        assert!(
            help.lines()
                .any(|l| l.trim_start().starts_with(&format!("{command} "))),
            "{command} not listed:\n{help}"
        );
    }
    let about = help.lines().next().unwrap_or_default();
    for word in ["revoke", "dead-letter", "health"] {
        assert!(about.contains(word), "{word:?} not in the summary: {about}");
    }
}

#[test]
fn global_options_come_after_the_commands_own() {
    let help = stdout(&celeriac(&["call", "--help"]));
    let heading = at(&help, "Global options:");
    assert!(at(&help, "--kwargs") < heading, "{help}");
    assert!(at(&help, "--wait") < heading, "{help}");
    assert!(at(&help, "--result-backend") < heading, "{help}");
    assert!(at(&help, "--broker ") > heading, "{help}");
    assert!(at(&help, "--log-format") > heading, "{help}");
}

#[test]
fn dlq_list_offers_the_queue_name_not_the_result_backend() {
    let help = stdout(&celeriac(&["dlq", "list", "--help"]));
    at(&help, "--dead-letter-queue");
    assert!(!help.contains("--result-backend"), "{help}");
    let help = stdout(&celeriac(&["purge", "--help"]));
    assert!(!help.contains("--result-backend"), "{help}");
}

#[test]
fn a_dead_letter_queue_name_amqp_cannot_carry_is_one_line() {
    let long = "d".repeat(256);
    let out = celeriac(&["dlq", "--dead-letter-queue", &long, "list"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{out:?}");
    assert!(err.contains("at most 255 bytes"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

#[test]
fn an_outcome_lists_id_state_result_error_in_that_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("r.db").display());
    let out = celeriac(&["result", "no-such-task", "--result-backend", &url]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(
        stdout(&out).trim(),
        r#"{"id":"no-such-task","state":"PENDING","result":null,"error":null}"#
    );
}

#[tokio::test]
async fn results_purge_deletes_what_finished_before_the_age_given() {
    use celeriac_common::TaskState;
    use celeriac_common::backend::{ResultBackend, TaskOutcome};
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("r.db").display());
    let backend = ResultBackend::connect(&url).await.expect("connect");
    backend.migrate().await.expect("migrate");
    let done = |id: &str, hours: i64| {
        let mut o = TaskOutcome::new(id, "tasks.t", TaskState::Success);
        o.done_at = Some(chrono::Utc::now() - chrono::Duration::hours(hours));
        o
    };
    backend
        .store(vec![done("old", 3), done("new", 1)])
        .await
        .expect("store");

    let out = celeriac(&[
        "results",
        "purge",
        "--older-than",
        "-1",
        "--result-backend",
        &url,
    ]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--older-than must be a non-negative number"),
        "{err}"
    );

    // Results that never expire are not purged by default.
    let out = Command::new(env!("CARGO_BIN_EXE_celeriac"))
        .args(["results", "purge", "--result-backend", &url])
        .env_remove("CELERIAC_CONFIG")
        .env("CELERIAC_RESULT_EXPIRES_SECS", "0")
        .output()
        .expect("run celeriac");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("give --older-than"), "{err}");
    let out = celeriac(&[
        "results",
        "purge",
        "--older-than",
        "1e13",
        "--result-backend",
        &url,
    ]);
    assert_eq!(out.status.code(), Some(2), "an age past year 1: {out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("at most 1000 years"), "{err}");

    let out = celeriac(&[
        "results",
        "purge",
        "--older-than",
        "7200",
        "--result-backend",
        &url,
    ]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout(&out).starts_with("deleted 1 task results and 0 chords finished before "),
        "{out:?}"
    );
    assert!(backend.get("old").await.expect("read").is_none());
    assert!(backend.get("new").await.expect("read").is_some());
}

#[tokio::test]
async fn dlq_list_reads_the_named_queue() {
    let queue = unique("celeriac-test-dlq");
    let conn = Connection::connect(&broker_url(), ConnectionProperties::default())
        .await
        .expect("RabbitMQ on loopback (scripts/ensure-services.sh rabbitmq)");
    let channel = conn.create_channel().await.expect("channel");
    channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("declare");
    let mut headers = FieldTable::default();
    headers.insert("task".into(), AMQPValue::LongString("tasks.add".into()));
    headers.insert(
        "x-celeriac-error".into(),
        AMQPValue::LongString("bad JSON".into()),
    );
    channel
        .basic_publish(
            "".into(),
            queue.as_str().into(),
            BasicPublishOptions::default(),
            b"not json",
            BasicProperties::default()
                .with_correlation_id("dead-1".into())
                .with_headers(headers),
        )
        .await
        .expect("publish");
    let _ = conn.close(200, "published".into()).await;

    let (broker, name) = (broker_url(), queue.clone());
    let listed = tokio::task::spawn_blocking(move || {
        celeriac(&[
            "--broker",
            &broker,
            "dlq",
            "list",
            "--dead-letter-queue",
            &name,
        ])
    })
    .await
    .expect("join");
    delete_queues(&[&queue]).await;
    assert!(listed.status.success(), "{listed:?}");
    assert_eq!(
        stdout(&listed).trim(),
        r#"{"id":"dead-1","task":"tasks.add","reason":"bad JSON","queue":null,"failed_at":null,"bytes":8}"#
    );
}

#[tokio::test]
async fn health_reads_this_hosts_worker_row_and_the_beat_lease() {
    use celeriac_common::backend::ResultBackend;
    use celeriac_common::backend::workers::WorkerInfo;
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("h.db").display());
    let backend = ResultBackend::connect(&url).await.expect("sqlite");
    backend.migrate().await.expect("migrate");
    let me = WorkerInfo::this_process("celeriac@health-test");
    backend
        .worker_heartbeat(&me, std::time::Duration::from_secs(5))
        .await
        .expect("heartbeat");

    let check = move |args: &'static [&'static str]| {
        let url = url.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                let mut all = vec!["health"];
                all.extend_from_slice(args);
                all.extend_from_slice(&["--result-backend", &url]);
                celeriac(&all)
            })
            .await
            .expect("join")
        }
    };
    let alive = check(&["worker", "--hostname", "celeriac@health-test"]).await;
    assert!(alive.status.success(), "{alive:?}");
    assert!(stdout(&alive).starts_with("alive: worker celeriac@health-test"));
    let other = check(&["worker", "--hostname", "celeriac@elsewhere"]).await;
    assert_eq!(other.status.code(), Some(1), "{other:?}");
    assert!(stdout(&other).starts_with("not alive"));
    let beat = check(&["beat"]).await;
    assert_eq!(beat.status.code(), Some(1), "{beat:?}");
    assert!(stdout(&beat).contains("no beat holds the leader lease"));
}

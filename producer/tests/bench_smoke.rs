//! A short run of `celeriac bench` so it never rots: it must run against the
//! local services, print its JSON figures and delete its queues. No timing
//! assertions. Needs the `celeriac-worker` binary built next to `celeriac`
//! (any workspace build does it: `cargo build --workspace`).

use serde_json::Value;
use std::process::Command;

const KEYS: [&str; 10] = [
    "publish_per_s",
    "e2e_per_s",
    "latency_p50_ms",
    "latency_p99_ms",
    "latency_max_ms",
    "worker_peak_rss_mb",
    "worker_idle_rss_mb",
    "worker_cpu_s_per_1k",
    "reference_per_s",
    "ratio_to_reference",
];

fn bench(results: &str, extra: &[&str]) -> Value {
    let exe = env!("CARGO_BIN_EXE_celeriac");
    let worker = std::path::Path::new(exe).with_file_name("celeriac-worker");
    assert!(
        worker.is_file(),
        "{} is missing: build the worker first (cargo build -p celeriac-worker)",
        worker.display()
    );
    let broker = std::env::var("CELERIAC_TEST_BROKER_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned());
    let mut cmd = Command::new(exe);
    cmd.args([
        "--broker", &broker, "bench", "--tasks", "200", "--warmup", "20",
    ])
    .args(["--latency-tasks", "20", "--timeout", "60", "--json"])
    .args(["--results", results])
    .args(extra);
    if let Ok(url) = std::env::var("CELERIAC_TEST_POSTGRES_URL") {
        cmd.args(["--postgres-url", &url]);
    }
    let out = cmd.output().expect("run celeriac bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "celeriac bench --results {results} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    let last = stdout.lines().last().unwrap_or_default();
    let figures: Value = serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("last line is not JSON ({e}): {last:?}\n{stderr}"));
    for key in KEYS {
        assert!(
            figures.get(key).is_some_and(Value::is_number),
            "{key} missing or not a number in {figures}"
        );
    }
    assert_eq!(figures["tasks"], 200);
    assert_eq!(figures["results"], results);
    let queue = figures["queue"].as_str().expect("queue name").to_owned();
    assert!(!queue_exists(&broker, &queue), "{queue} was not deleted");
    figures
}

fn queue_exists(broker: &str, queue: &str) -> bool {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let conn = lapin::Connection::connect(broker, lapin::ConnectionProperties::default())
            .await
            .expect("connect to RabbitMQ");
        let ch = conn.create_channel().await.expect("channel");
        let passive = lapin::options::QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let found = ch
            .queue_declare(queue.into(), passive, Default::default())
            .await
            .is_ok();
        let _ = conn.close(200, "done".into()).await;
        found
    })
}

#[test]
fn bench_runs_with_results_off_and_prints_its_figures() {
    let figures = bench("none", &[]);
    // No result backend: the latency run used a temporary SQLite file.
    assert_eq!(figures["latency_results"], "sqlite");
}

#[test]
fn bench_runs_with_results_in_postgres() {
    let figures = bench("postgres", &[]);
    assert_eq!(figures["latency_results"], "postgres");
}

#[test]
fn bench_runs_several_rounds_and_deletes_every_rounds_queue() {
    let figures = bench("none", &["--rounds", "2"]);
    let rounds = figures["rounds"].as_array().expect("rounds array");
    assert_eq!(rounds.len(), 2, "{figures}");
    let broker = std::env::var("CELERIAC_TEST_BROKER_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned());
    let mut queues = Vec::new();
    for r in rounds {
        for key in ["e2e_per_s", "reference_per_s", "ratio_to_reference"] {
            assert!(r[key].is_number(), "{key} missing in round {r}");
        }
        let queue = r["queue"].as_str().expect("round queue").to_owned();
        assert!(!queue_exists(&broker, &queue), "{queue} was not deleted");
        queues.push(queue);
    }
    assert_ne!(queues[0], queues[1], "each round has its own queue");
    let (lo, hi) = (figures["ratio_min"].as_f64(), figures["ratio_max"].as_f64());
    let mid = figures["ratio_to_reference"].as_f64();
    assert!(
        matches!((lo, mid, hi), (Some(l), Some(m), Some(h)) if l <= m && m <= h),
        "the median ratio lies between the rounds' ratios: {figures}"
    );
}

#[test]
fn bench_refuses_bad_options_with_one_clear_line() {
    let exe = env!("CARGO_BIN_EXE_celeriac");
    for (flag, value, says) in [
        ("--rounds", "0", "--rounds must be at least 1"),
        ("--tasks", "0", "--tasks must be at least 1"),
        ("--rate", "0", "--rate must be a positive number"),
    ] {
        let out = Command::new(exe)
            .args(["bench", flag, value])
            .output()
            .expect("run celeriac bench");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{flag} {value}: {stderr}");
        assert!(stderr.contains(says), "{flag} {value}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    }
}

#[test]
fn bench_without_a_broker_says_so_in_one_line() {
    let exe = env!("CARGO_BIN_EXE_celeriac");
    let worker = std::path::Path::new(exe).with_file_name("celeriac-worker");
    // Port 9 (discard) has no AMQP server on loopback.
    let out = Command::new(exe)
        .args(["--broker", "amqp://guest:guest@127.0.0.1:9/%2f", "bench"])
        .arg("--worker-bin")
        .arg(&worker)
        .output()
        .expect("run celeriac bench");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot connect to RabbitMQ"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}

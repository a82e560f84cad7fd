//! A short run of `celeriac-bench` so it never rots: it must run against the
//! local services, print its JSON figures and delete its queues. No timing
//! assertions. Needs the `celeriac-worker` binary built next to
//! `celeriac-bench` (any workspace build does it: `cargo build --workspace`).

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

/// The two references' figures and the best one's shape: positive numbers.
const REFERENCE_KEYS: [&str; 15] = [
    "reference_publish_per_s",
    "reference_min_per_s",
    "reference_max_per_s",
    "reference_publishers",
    "reference_confirm_window",
    "reference_prefetch",
    "reference_ack_every",
    "reference_per_message_ack_per_s",
    "reference_per_message_ack_publish_per_s",
    "reference_per_message_ack_min_per_s",
    "reference_per_message_ack_max_per_s",
    "ratio_to_per_message_ack_reference",
    "ratio_to_per_message_ack_reference_min",
    "ratio_to_per_message_ack_reference_max",
    "e2e_min_per_s",
];

/// `figures[key]` is a number above 0.
fn assert_positive(figures: &Value, key: &str) {
    assert!(
        figures[key].as_f64().is_some_and(|v| v > 0.0),
        "{key} missing or not a positive number in {figures}"
    );
}

/// The `celeriac-worker` built next to `celeriac-bench`.
fn worker_bin() -> std::path::PathBuf {
    let exe = env!("CARGO_BIN_EXE_celeriac-bench");
    let worker = std::path::Path::new(exe).with_file_name("celeriac-worker");
    assert!(
        worker.is_file(),
        "{} is missing: build the worker first (cargo build -p celeriac-worker)",
        worker.display()
    );
    worker
}

/// Asserts that a bench run failed (exit code 1) saying `says`; its stderr.
fn failed_saying(out: &std::process::Output, says: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(says), "{stderr}");
    stderr
}

fn bench(results: &str, extra: &[&str]) -> Value {
    let exe = env!("CARGO_BIN_EXE_celeriac-bench");
    // The bench finds it there itself; a missing one fails here, plainly.
    worker_bin();
    let broker = test_broker();
    let mut cmd = Command::new(exe);
    cmd.args(["--broker", &broker, "--tasks", "200", "--warmup", "20"])
        .args(["--latency-tasks", "20", "--timeout", "60", "--json"])
        .args(["--results", results])
        .args(extra);
    if let Ok(url) = std::env::var("CELERIAC_TEST_POSTGRES_URL") {
        cmd.args(["--postgres-url", &url]);
    }
    let out = cmd.output().expect("run celeriac-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "celeriac-bench --results {results} failed ({}):\n{stdout}\n{stderr}",
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
    for key in
        REFERENCE_KEYS
            .into_iter()
            .chain(["reference_per_s", "ratio_to_reference", "e2e_max_per_s"])
    {
        assert_positive(&figures, key);
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
    let broker = test_broker();
    let mut queues = Vec::new();
    for r in rounds {
        for key in ["e2e_per_s", "reference_per_s", "ratio_to_reference"] {
            assert!(r[key].is_number(), "{key} missing in round {r}");
        }
        for key in [
            "reference_per_message_ack_per_s",
            "ratio_to_per_message_ack_reference",
        ] {
            assert_positive(r, key);
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
    // Each figure's median lies between its least and greatest.
    for (min, mid, max) in [
        ("e2e_min_per_s", "e2e_per_s", "e2e_max_per_s"),
        (
            "reference_min_per_s",
            "reference_per_s",
            "reference_max_per_s",
        ),
        (
            "reference_per_message_ack_min_per_s",
            "reference_per_message_ack_per_s",
            "reference_per_message_ack_max_per_s",
        ),
        (
            "ratio_to_per_message_ack_reference_min",
            "ratio_to_per_message_ack_reference",
            "ratio_to_per_message_ack_reference_max",
        ),
    ] {
        let (l, m, h) = (
            figures[min].as_f64(),
            figures[mid].as_f64(),
            figures[max].as_f64(),
        );
        assert!(
            matches!((l, m, h), (Some(l), Some(m), Some(h)) if l <= m && m <= h),
            "{min} <= {mid} <= {max}: {figures}"
        );
    }
}

#[test]
fn bench_refuses_bad_options_with_one_clear_line() {
    let exe = env!("CARGO_BIN_EXE_celeriac-bench");
    for (flag, value, says) in [
        ("--rounds", "0", "--rounds must be at least 1"),
        ("--tasks", "0", "--tasks must be at least 1"),
        ("--rate", "0", "--rate must be a positive number"),
        (
            "--reference-confirm-window",
            "0",
            "--reference-confirm-window must be",
        ),
        (
            "--reference-ack-every",
            "2000",
            "--reference-ack-every between 1 and it",
        ),
    ] {
        let out = Command::new(exe)
            .args([flag, value])
            .output()
            .expect("run celeriac-bench");
        let stderr = failed_saying(&out, says);
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    }
}

#[test]
fn bench_without_a_broker_says_so_in_one_line() {
    // Port 9 (discard) has no AMQP server on loopback.
    let out = Command::new(env!("CARGO_BIN_EXE_celeriac-bench"))
        .args(["--broker", "amqp://guest:guest@127.0.0.1:9/%2f"])
        .arg("--worker-bin")
        .arg(worker_bin())
        .output()
        .expect("run celeriac-bench");
    let stderr = failed_saying(&out, "cannot connect to RabbitMQ");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}

/// A stand-in for the worker in `dir`: it runs the real one, passes its log
/// on, writes the queue it was given to `dir/queue` and its pid to `dir/pid`,
/// and touches `dir/ready` once the worker said it is ready; then it runs
/// `then` (`$pid` is the worker's) and waits for the worker, handing it a
/// SIGTERM it gets.
fn wrapped_worker(dir: &std::path::Path, then: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let real = worker_bin();
    let d = dir.display();
    let script = dir.join("worker");
    std::fs::write(
        &script,
        format!(
            "#!/bin/bash\n\
             printf '%s' \"$CELERIAC_QUEUES\" > '{d}/queue'\n\
             '{real}' 2> >(while IFS= read -r l; do printf '%s\\n' \"$l\" >&2; \
             case $l in *'worker ready'*) touch '{d}/ready';; esac; done) &\n\
             pid=$!\n\
             printf '%s' $pid > '{d}/pid'\n\
             trap 'kill -TERM $pid' TERM\n\
             until [ -e '{d}/ready' ]; do sleep 0.05; done\n\
             {then}\n\
             wait $pid; wait $pid\n",
            real = real.display(),
        ),
    )
    .expect("write script");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    script
}

/// A bench whose warm-up is long (the reference before it times only
/// `--tasks`), with `worker` as its worker.
fn long_bench(broker: &str, worker: &std::path::Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_celeriac-bench"));
    cmd.args(["--broker", broker, "--tasks", "10"])
        .args(["--warmup", "1000000", "--latency-tasks", "0"])
        .args(["--timeout", "120", "--worker-bin"])
        .arg(worker);
    cmd
}

fn test_broker() -> String {
    std::env::var("CELERIAC_TEST_BROKER_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

/// The wrapped worker of `dir` is gone and its queue deleted.
fn assert_cleaned_up(broker: &str, dir: &std::path::Path) {
    let pid = std::fs::read_to_string(dir.join("pid")).expect("worker pid");
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "worker {pid} still runs"
    );
    let queue = std::fs::read_to_string(dir.join("queue")).expect("queue name");
    assert!(!queue_exists(broker, &queue), "{queue} was not deleted");
}

/// A worker killed mid-run ends the bench at once with an error that says
/// so (not after `--timeout`), and the run's queues are still deleted.
#[test]
fn bench_stops_at_once_when_its_worker_dies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let worker = wrapped_worker(dir.path(), "sleep 1; kill -9 $pid");
    let broker = test_broker();
    let out = long_bench(&broker, &worker)
        .output()
        .expect("run celeriac-bench");
    failed_saying(&out, "the worker exited during the run");
    assert_cleaned_up(&broker, dir.path());
}

/// SIGTERM (a CI job's timeout) cleans up as Ctrl-C does: the worker is
/// stopped and the queues are deleted.
#[test]
fn bench_cleans_up_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let worker = wrapped_worker(dir.path(), "");
    let broker = test_broker();
    let child = long_bench(&broker, &worker)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run celeriac-bench");
    let ready = dir.path().join("ready");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !ready.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(ready.exists(), "the worker never became ready");
    let term = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(term.success());
    let out = child.wait_with_output().expect("wait for the bench");
    failed_saying(&out, "terminated");
    assert_cleaned_up(&broker, dir.path());
}

/// `celeriac-bench beat` on a small schedule: the schedule is filled by a
/// child process, runs fire, the crowd's floor is printed beside them, and
/// a restarted beat loads every entry with its run state.
#[test]
fn beat_bench_prints_memory_lateness_and_the_floor() {
    let out = Command::new(env!("CARGO_BIN_EXE_celeriac-bench"))
        .env("CELERIAC_BROKER_URL", test_broker())
        .args([
            "beat",
            "--entries",
            "300",
            "--period",
            "60",
            "--duration",
            "4",
        ])
        .args(["--idle", "3", "--burst", "50", "--lead-in", "6"])
        .output()
        .expect("run celeriac-bench beat");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(text.contains("inserted 300 entries"), "{text}");
    assert!(text.contains("MiB before beat"), "{text}");
    assert!(text.contains("lateness burst : 50 runs"), "{text}");
    assert!(text.contains("floor: plain lapin, 50 messages"), "{text}");
    assert!(
        text.contains("after a restart, every entry with its run state: 300 entries"),
        "{text}"
    );
}

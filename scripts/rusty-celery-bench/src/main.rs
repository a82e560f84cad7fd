//! rusty-celery (the `celery` crate, 0.5) end to end on the local RabbitMQ:
//! P concurrent producers publish N no-op tasks through one app while a
//! second app (its own connection) consumes them at the given prefetch.
//! Prints one JSON line: publish rate, end-to-end rate (first publish ->
//! N-th execution), CPU seconds per 1,000 tasks for this process, and the
//! latency from just before a publish to the task's start at a fixed rate
//! (as `celeriac-bench` measures it: LATENCY_TASKS tasks at RATE per second).
//!
//! Usage: rusty-celery-bench N PRODUCERS PREFETCH [AMQP_URL [LATENCY_TASKS [RATE]]]
//! (scripts/rusty-celery-bench.sh builds and runs it next to `celeriac-bench`).
//!
//! The crate's defaults are kept where they matter: it acknowledges a
//! message before running it (acks_late off), publishes without publisher
//! confirms, and stores no results.

// The task macro of celery 0.5 defines its impl inside a const block.
#![allow(non_local_definitions)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use celery::prelude::*;
use tokio::sync::Notify;

static RAN: AtomicU64 = AtomicU64::new(0);
static TARGET: AtomicU64 = AtomicU64::new(u64::MAX);
static DONE: Notify = Notify::const_new();
/// Publish-to-start latencies of the latency run, in milliseconds.
static LATENCIES: Mutex<Vec<f64>> = Mutex::new(Vec::new());

#[celery::task]
fn noop() -> TaskResult<()> {
    if RAN.fetch_add(1, Ordering::Relaxed) + 1 == TARGET.load(Ordering::Relaxed) {
        DONE.notify_one();
    }
    Ok(())
}

fn micros_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// Records how long ago (wall clock, same machine) it was published.
#[celery::task]
fn stamp(sent_us: i64) -> TaskResult<()> {
    let ms = (micros_now() - sent_us) as f64 / 1000.0;
    let mut seen = LATENCIES.lock().unwrap_or_else(|e| e.into_inner());
    seen.push(ms);
    if seen.len() as u64 == TARGET.load(Ordering::Relaxed) {
        DONE.notify_one();
    }
    Ok(())
}

fn cpu_seconds() -> f64 {
    // utime + stime of this process, in clock ticks (100 per second).
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let tick = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (tick(11) + tick(12)) / 100.0
}

fn arg(n: usize, default: &str) -> String {
    std::env::args()
        .nth(n)
        .unwrap_or_else(|| default.to_owned())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The consume loop is not `Send`: it runs on this thread (as when an app
    // awaits `consume()` in main), the tasks it spawns on the runtime's pool.
    tokio::task::LocalSet::new().run_until(run()).await
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let n: u64 = arg(1, "20000").parse()?;
    let producers: u64 = arg(2, "128").parse()?;
    let prefetch: u16 = arg(3, "128").parse()?;
    let url = arg(4, "amqp://guest:guest@127.0.0.1:5672/%2f");
    let latency_tasks: u64 = arg(5, "2000").parse()?;
    let rate: f64 = arg(6, "500").parse()?;
    let queue = format!("rusty-celery-bench-{}", uuid::Uuid::new_v4());

    let worker = celery::app!(
        broker = AMQPBroker { url.clone() },
        tasks = [noop, stamp],
        task_routes = ["*" => queue.as_str()],
        default_queue = queue.as_str(),
        prefetch_count = prefetch,
        acks_late = false,
    )
    .await?;
    let producer = celery::app!(
        broker = AMQPBroker { url.clone() },
        tasks = [noop, stamp],
        task_routes = ["*" => queue.as_str()],
        default_queue = queue.as_str(),
    )
    .await?;

    // Warm-up: the worker is consuming before the measured run starts.
    let warmup = 1_000.min(n);
    TARGET.store(warmup, Ordering::Relaxed);
    let consumer = {
        let worker = worker.clone();
        let queue = queue.clone();
        tokio::task::spawn_local(async move { worker.consume_from(&[queue.as_str()]).await })
    };
    for _ in 0..warmup {
        producer.send_task(noop::new()).await?;
    }
    tokio::time::timeout(Duration::from_secs(120), DONE.notified()).await?;

    RAN.store(0, Ordering::Relaxed);
    TARGET.store(n, Ordering::Relaxed);
    let cpu0 = cpu_seconds();
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let done = DONE.notified();
    let mut tasks = Vec::new();
    for _ in 0..producers {
        let producer = producer.clone();
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < n {
                producer.send_task(noop::new()).await?;
            }
            Ok::<(), CeleryError>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let published = start.elapsed();
    tokio::time::timeout(Duration::from_secs(300), done).await?;
    let finished = start.elapsed();
    let cpu = cpu_seconds() - cpu0;

    // Latency: one task at a time at a fixed rate, timed from just before
    // the publish call to the start of the task.
    let mut latency = serde_json::json!({});
    if latency_tasks > 0 {
        TARGET.store(latency_tasks, Ordering::Relaxed);
        let done = DONE.notified();
        let interval = Duration::from_secs_f64(1.0 / rate);
        let start = tokio::time::Instant::now();
        for i in 0..latency_tasks {
            tokio::time::sleep_until(start + interval.mul_f64(i as f64)).await;
            producer.send_task(stamp::new(micros_now())).await?;
        }
        tokio::time::timeout(Duration::from_secs(120), done).await?;
        let mut ms = std::mem::take(&mut *LATENCIES.lock().unwrap_or_else(|e| e.into_inner()));
        ms.sort_by(f64::total_cmp);
        // Nearest rank (the smallest sample with at least q of them at or
        // below it), the one definition celeriac-bench reports with.
        let pick = |q: f64| ms[((q * ms.len() as f64).ceil() as usize).clamp(1, ms.len()) - 1];
        latency = serde_json::json!({
            "latency_tasks": ms.len(),
            "latency_p50_ms": pick(0.5),
            "latency_p99_ms": pick(0.99),
            "latency_max_ms": pick(1.0),
        });
    }
    let mut report = serde_json::json!({
        "tasks": n,
        "producers": producers,
        "prefetch": prefetch,
        "publish_per_s": n as f64 / published.as_secs_f64(),
        "e2e_per_s": n as f64 / finished.as_secs_f64(),
        "process_cpu_s_per_1k": cpu * 1000.0 / n as f64,
    });
    if let (Some(r), Some(l)) = (report.as_object_mut(), latency.as_object()) {
        r.extend(l.clone());
    }
    println!("{report}");

    consumer.abort();
    let conn = lapin::Connection::connect(&url, lapin::ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    ch.queue_delete(&queue, lapin::options::QueueDeleteOptions::default())
        .await?;
    let _ = conn.close(200, "bench done").await;
    std::process::exit(0);
}

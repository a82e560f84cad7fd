//! `celeriac-bench delay`: delayed delivery. Schedules many tasks spread
//! over a few minutes through the broker's delay queues, then reports how
//! precisely they started (start − due, p50 and p99 nearest-rank,
//! [`crate::stats`]), the worker's memory while they waited, and
//! `apply_at`'s publish rate next to `delay`'s, measured in the same run.
//!
//! Run (release build; RabbitMQ from `--broker` / `CELERIAC_BROKER_URL`):
//! `cargo run --release -p celeriac-bench -- delay --tasks 100000 --spread 120`
//! It prints a table and, last, one JSON line with the figures. It spawns
//! the `celeriac-worker` built next to `celeriac-bench` (`cargo build
//! --release -p celeriac-worker -p celeriac-bench`), or `--worker-bin`.

use crate::cleanup::delete_queues;
use crate::error::BenchError;
use crate::procfs;
use crate::stats::Samples;
use crate::throughput::worker;
use celeriac::{ApplyOptions, Client, Config};
use celeriac_common::backend::ResultBackend;
use celeriac_common::backend::entity::{Column, Entity};
use celeriac_common::diagnostics::Noop;
use celeriac_common::shutdown::stop_signal;
use chrono::{Duration as Span, Utc};
use futures_util::{StreamExt, TryStreamExt};
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::Command;

/// Flags of `celeriac-bench delay`.
#[derive(Debug, clap::Args)]
pub(crate) struct DelayArgs {
    /// Tasks to schedule.
    #[arg(long, default_value_t = 100_000)]
    tasks: usize,
    /// Seconds over which their etas are spread.
    #[arg(long, default_value_t = 120)]
    spread: u64,
    /// Seconds from start to the first eta (publishing happens meanwhile).
    #[arg(long, default_value_t = 90)]
    lead: u64,
    /// Tasks published in each rate phase (`delay` vs `apply_at`).
    #[arg(long, default_value_t = 20_000)]
    rate_tasks: usize,
    /// Concurrent publishes (as from a busy app; each waits for its confirm).
    #[arg(long, default_value_t = 256)]
    in_flight: usize,
    /// Also print the lateness per twentieth of the spread (shows whether a
    /// backlog builds up over the run).
    #[arg(long)]
    timeline: bool,
    /// The celeriac-worker binary [default: next to this executable].
    #[arg(long, alias = "worker", env = "CELERIAC_BENCH_WORKER")]
    worker_bin: Option<PathBuf>,
}

/// The worker's peak resident memory so far, in KiB (0 where unknown).
fn peak_kb(pid: u32) -> u64 {
    procfs::status_kb(pid, "VmHWM:").unwrap_or(0)
}

async fn publish_rate(
    client: &Client,
    n: usize,
    in_flight: usize,
    opts: impl Fn() -> ApplyOptions,
) -> Result<f64, celeriac::ClientError> {
    let start = Instant::now();
    futures_util::stream::iter(0..n)
        .map(|_| client.apply_async::<Noop>((), opts()))
        .buffer_unordered(in_flight)
        .try_for_each(|_| async { Ok(()) })
        .await?;
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// Runs the benchmark and prints the figures; deletes its queues at the end,
/// also after an error, Ctrl-C or SIGTERM (the worker is killed with it).
pub(crate) async fn run(args: DelayArgs, mut config: Config) -> Result<(), BenchError> {
    let worker_bin = worker::locate(args.worker_bin.as_deref())?;
    if !worker_bin.is_file() {
        return Err(BenchError::new(format!(
            "no worker binary at {}",
            worker_bin.display()
        )));
    }
    let dir = tempfile::tempdir()?;
    let run = format!("delaybench-{}", uuid::Uuid::new_v4().simple());
    config.result_backend = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("results.db").display()
    );
    config.default_queue = run.clone();
    config.queues = vec![run.clone()];
    config.dead_letter_queue = format!("{run}.dlq");
    config.delay_prefix = format!("{run}.delay");
    let idle = format!("{run}.idle");
    let client = Client::connect(config.clone()).await?;
    let outcome = tokio::select! {
        r = measure(&args, &config, &client, &worker_bin, &idle) => r,
        s = stop_signal() => Err(BenchError::new(format!("stopped by {s}"))),
    };
    client.purge(&idle).await.ok();
    client.close().await;
    let queues = [run.clone(), idle.clone(), config.dead_letter_queue.clone()];
    delete_queues(&config, &queues, &[run, idle]).await;
    if let Ok(conn) =
        celeriac_common::broker::connect_config(&config, "celeriac-bench-cleanup").await
    {
        if let Ok(ch) = conn.create_channel().await {
            celeriac_common::delay::delete_topology(&ch, &config).await;
            let _ = ch.close(200, "bench cleanup".into()).await;
        }
        let _ = conn.close(200, "bench cleanup".into()).await;
    }
    drop(dir);
    outcome
}

async fn measure(
    args: &DelayArgs,
    config: &Config,
    client: &Client,
    worker_bin: &std::path::Path,
    idle: &str,
) -> Result<(), BenchError> {
    let run = &config.default_queue;
    let backend = ResultBackend::connect(&config.result_backend).await?;
    backend.migrate().await?;

    // 1. Publish rates: `delay` to a queue nobody consumes, then `apply_at`
    // an hour ahead. One warm-up publish of each first: the first `delay`
    // declares the queue, the first `apply_at` the delay topology (about
    // 250 round trips, once per connection), which is reported on its own.
    client
        .apply_async::<Noop>((), ApplyOptions::new().queue(idle.to_owned()))
        .await?;
    let first = Instant::now();
    client
        .apply_async::<Noop>(
            (),
            ApplyOptions::new()
                .queue(idle.to_owned())
                .eta(Utc::now() + Span::hours(1)),
        )
        .await?;
    let apply_at_first_ms = first.elapsed().as_secs_f64() * 1e3;
    let delay_rate = publish_rate(client, args.rate_tasks, args.in_flight, || {
        ApplyOptions::new().queue(idle.to_owned())
    })
    .await?;
    let at = Utc::now() + Span::hours(1);
    let apply_at_rate = publish_rate(client, args.rate_tasks, args.in_flight, || {
        ApplyOptions::new().queue(idle.to_owned()).eta(at)
    })
    .await?;

    // 2. The worker, and N tasks spread over the window.
    let mut worker = Command::new(worker_bin)
        .env("CELERIAC_BROKER_URL", &config.broker_url)
        .env("CELERIAC_RESULT_BACKEND", &config.result_backend)
        .env("CELERIAC_QUEUES", run)
        .env("CELERIAC_DEAD_LETTER_QUEUE", &config.dead_letter_queue)
        .env("CELERIAC_DELAY_PREFIX", &config.delay_prefix)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| BenchError::new(format!("cannot start {}: {e}", worker_bin.display())))?;
    let pid = worker
        .id()
        .ok_or_else(|| BenchError::new("the worker exited at once"))?;
    // The local broker's memory (RSS of `beam.smp`, shared with whatever
    // else uses it), before and at its highest while the tasks wait and run.
    let broker = procfs::local_broker_pid(procfs::amqp_port(&config.broker_url));
    let broker_kb = || {
        broker
            .and_then(|p| procfs::status_kb(p, "VmRSS:"))
            .unwrap_or(0)
    };
    let broker_before_kb = broker_kb();
    let mut broker_max_kb = broker_before_kb;
    let start = Utc::now() + Span::seconds(i64::try_from(args.lead)?);
    let spread_ms = i64::try_from(args.spread * 1000)?;
    let n = args.tasks;
    let published = Instant::now();
    let etas: std::collections::HashMap<String, chrono::DateTime<Utc>> =
        futures_util::stream::iter(0..n)
            .map(|i| {
                let offset = spread_ms * i64::try_from(i).unwrap_or(0)
                    / i64::try_from(n.max(1)).unwrap_or(1);
                let eta = start + Span::milliseconds(offset);
                let client = client.clone();
                async move {
                    client
                        .apply_at::<Noop>(eta, ())
                        .await
                        .map(|r| (r.id().to_owned(), eta))
                }
            })
            .buffer_unordered(args.in_flight)
            .try_collect()
            .await?;
    let publish_secs = published.elapsed().as_secs_f64();
    println!(
        "scheduled {n} tasks in {publish_secs:.1} s; first due at {start}, last {} s later",
        args.spread
    );

    if Utc::now() > start {
        println!(
            "warning: publishing took longer than --lead; the first tasks were published after they were due"
        );
    }
    // The worker's peak memory up to the first due time: everything it held
    // while all the tasks were scheduled and none was due.
    let mut waiting_peak_kb = None;
    let deadline = Instant::now() + Duration::from_secs(args.lead + args.spread + 120);
    loop {
        broker_max_kb = broker_max_kb.max(broker_kb());
        if waiting_peak_kb.is_none() && Utc::now() >= start {
            waiting_peak_kb = Some(peak_kb(pid));
        }
        let done = Entity::find()
            .filter(Column::State.eq("SUCCESS"))
            .count(backend.connection())
            .await?;
        if done as usize >= n || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let peak_kb = peak_kb(pid);
    let waiting_peak_kb = waiting_peak_kb.unwrap_or(peak_kb);
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status()
        .await;
    let _ = worker.wait().await;

    // 3. Precision: started_at − eta, per task.
    let rows = Entity::find().all(backend.connection()).await?;
    // (due, start − due in ms) per task that ran.
    let mut by_eta: Vec<(chrono::DateTime<Utc>, f64)> = rows
        .iter()
        .filter_map(|r| {
            let eta = etas.get(&r.task_id)?;
            let started = r.started_at?;
            let late = (started - *eta).num_microseconds().unwrap_or(i64::MAX) as f64 / 1000.0;
            Some((*eta, late))
        })
        .collect();
    if args.timeline {
        by_eta.sort_by_key(|(e, _)| *e);
        for chunk in by_eta.chunks(by_eta.len().div_ceil(20).max(1)) {
            let worst = chunk.iter().map(|c| c.1).fold(f64::MIN, f64::max);
            let late = chunk.iter().filter(|c| c.1 > 200.0).count();
            println!(
                "due from {}: worst {worst:.0} ms late, {late} of {} over 200 ms",
                chunk[0].0,
                chunk.len()
            );
        }
    }
    let late_ms = Samples::new(by_eta.iter().map(|(_, late)| *late).collect());
    let missing = n - late_ms.len();
    let figure = |v: Option<f64>| v.unwrap_or(f64::NAN);
    let (p50, p99, max) = (
        figure(late_ms.percentile(50.0)),
        figure(late_ms.percentile(99.0)),
        figure(late_ms.max()),
    );
    println!("| figure | value |\n| --- | --- |");
    println!("| delay() publish rate | {delay_rate:.0} tasks/s |");
    println!(
        "| apply_at() publish rate | {apply_at_rate:.0} tasks/s ({:.2} of delay) |",
        apply_at_rate / delay_rate
    );
    println!("| first apply_at() (declares the delay topology) | {apply_at_first_ms:.0} ms |");
    println!("| tasks run | {} of {n} |", n - missing);
    println!(
        "| worker RSS while {n} tasks waited | {:.1} MB |",
        waiting_peak_kb as f64 / 1024.0
    );
    println!(
        "| worker peak RSS (whole run) | {:.1} MB |",
        peak_kb as f64 / 1024.0
    );
    println!(
        "| local RabbitMQ RSS before publishing / highest seen after | {:.0} / {:.0} MB |",
        broker_before_kb as f64 / 1024.0,
        broker_max_kb as f64 / 1024.0
    );
    println!("| start − due p50 / p99 / max | {p50:.1} / {p99:.1} / {max:.1} ms |");
    println!(
        "{}",
        serde_json::json!({
            "tasks": n, "ran": n - missing, "delay_publish_per_s": delay_rate, "apply_at_publish_per_s": apply_at_rate,
            "apply_at_first_ms": apply_at_first_ms,
            "worker_waiting_rss_mb": waiting_peak_kb as f64 / 1024.0, "worker_peak_rss_mb": peak_kb as f64 / 1024.0,
            "broker_rss_before_mb": broker_before_kb as f64 / 1024.0,
            "broker_rss_max_mb": broker_max_kb as f64 / 1024.0,
            "late_p50_ms": p50, "late_p99_ms": p99, "late_max_ms": max,
        })
    );
    Ok(())
}

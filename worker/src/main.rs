//! `celeriac-worker`: runs tasks from RabbitMQ. The stock binary registers
//! the diagnostic tasks `celeriac.noop`, `celeriac.echo`, `celeriac.sleep`
//! and `celeriac.fail`; apps build their own binary with
//! `celeriac_worker::Worker::builder` to add theirs.

use celeriac_common::cli::{ConnectionArgs, one_line};
use celeriac_common::config::split_csv;
use celeriac_worker::Worker;
use clap::Parser;
use std::process::ExitCode;

/// Consume Celery protocol v2 tasks and record their results.
#[derive(Debug, Parser)]
#[command(name = "celeriac-worker", version)]
struct Cli {
    #[command(flatten)]
    conn: ConnectionArgs,
    /// Queues to consume, comma-separated [default: celery].
    #[arg(short = 'Q', long, env = "CELERIAC_QUEUES")]
    queues: Option<String>,
    /// Tasks run at once [default: 16].
    #[arg(short = 'c', long, env = "CELERIAC_CONCURRENCY")]
    concurrency: Option<usize>,
    /// Threads running async tasks [default: 1, a single-threaded runtime].
    /// Blocking tasks run on a pool of their own either way.
    #[arg(long, env = "CELERIAC_WORKER_THREADS")]
    threads: Option<usize>,
    /// Prefetch = concurrency × this [default: 4].
    #[arg(long, env = "CELERIAC_PREFETCH_MULTIPLIER")]
    prefetch_multiplier: Option<usize>,
    /// This worker's name in results and logs [default: celeriac@HOST].
    #[arg(short = 'n', long, env = "CELERIAC_HOSTNAME")]
    hostname: Option<String>,
    /// Seconds running tasks get to finish after SIGTERM [default: 30].
    #[arg(long, env = "CELERIAC_SHUTDOWN_GRACE_SECS")]
    shutdown_grace: Option<u64>,
    /// Record STARTED when a task starts.
    #[arg(long, env = "CELERIAC_TRACK_STARTED")]
    track_started: Option<bool>,
    /// Send Celery's task events (as `celery worker -E`) [default: off;
    /// monitors such as Flower switch them on by remote control].
    #[arg(
        short = 'E',
        long,
        env = "CELERIAC_WORKER_SEND_EVENTS",
        num_args = 0..=1,
        default_missing_value = "true"
    )]
    events: Option<bool>,
    /// Serve /metrics (Prometheus) and /health on HOST:PORT, e.g. 127.0.0.1:9808 [default: off].
    #[arg(long, value_name = "ADDR", env = "CELERIAC_WORKER_HTTP_ADDR")]
    http: Option<String>,
    /// Do not create or upgrade the result tables on start.
    #[arg(long)]
    no_migrate: bool,
    /// Exit at once if the broker cannot be reached at startup, instead of
    /// retrying with backoff (broker_connection_retry_on_startup = false).
    #[arg(long)]
    no_startup_retry: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut config = match cli.conn.load() {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    if let Some(q) = &cli.queues {
        config.queues = split_csv(q);
    }
    config.concurrency = cli.concurrency.unwrap_or(config.concurrency);
    config.worker_threads = cli.threads.unwrap_or(config.worker_threads);
    config.prefetch_multiplier = cli
        .prefetch_multiplier
        .unwrap_or(config.prefetch_multiplier);
    config.hostname = cli.hostname.clone().unwrap_or(config.hostname);
    config.shutdown_grace_secs = cli.shutdown_grace.unwrap_or(config.shutdown_grace_secs);
    config.track_started = cli.track_started.unwrap_or(config.track_started);
    config.worker_send_events = cli.events.unwrap_or(config.worker_send_events);
    config.migrate_on_start &= !cli.no_migrate;
    config.broker_connection_retry_on_startup &= !cli.no_startup_retry;
    if let Some(addr) = cli.http {
        config.worker_http_addr = Some(addr);
    }
    celeriac_common::telemetry::init(config.log_format, "info");
    // One thread by default: every delivery then stays on the thread that
    // received it, with no hand-over between runtime threads (measured: a
    // third less CPU per no-op task than a runtime with a thread per core).
    let mut builder = match config.worker_threads {
        0 => {
            return fail(&celeriac_worker::WorkerError::Config(
                "worker_threads must be at least 1".into(),
            ));
        }
        1 => tokio::runtime::Builder::new_current_thread(),
        n => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
    };
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };
    let result = runtime.block_on(async {
        let build = Worker::builder(config).with_diagnostics().build();
        // SIGTERM while waiting for the broker at startup: nothing to stop yet.
        let worker = tokio::select! {
            worker = build => worker?,
            signal = celeriac_common::shutdown::stop_signal() => {
                tracing::info!("{signal} received before the worker started");
                return Ok(());
            }
        };
        worker.run().await
    });
    // Tasks still running after the grace period are abandoned here; their
    // messages are unacknowledged, so the broker redelivers them.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

fn fail(err: &(dyn std::error::Error + 'static)) -> ExitCode {
    eprintln!("celeriac-worker: error: {}", one_line(err));
    ExitCode::FAILURE
}

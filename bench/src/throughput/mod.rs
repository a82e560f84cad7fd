//! `celeriac-bench` (no subcommand): throughput, latency and footprint of
//! celeriac against the configured RabbitMQ, next to two plain lapin
//! reference loops run in the same invocation. It drives external `celeriac-worker`
//! processes (found next to the `celeriac-bench` executable, or
//! `--worker-bin`) running the stock `celeriac.noop` task.
//!
//! Phases, each on its own throw-away queue (`celeriac-bench-<id>...`):
//!
//! 1. **References** ([`reference`]): two plain lapin loops move N messages
//!    with celeriac's exact body, headers and properties, persistent, with
//!    publisher confirms, through a queue declared as celeriac declares its
//!    own. Rate = N / (first publish → last ack).
//!    * the **best plain reference**, the fastest plain program we could
//!      write for these messages: one publisher task with up to 10,000
//!      messages unconfirmed, one consumer at prefetch 1,000 acking with one
//!      `basic.ack(multiple)` per 100 messages (the `--reference-*` options;
//!      the defaults are the best of the variants measured). `reference_per_s` and `ratio_to_reference` are this one's.
//!    * the **per-message-ack reference**, the bench's first loop: P
//!      publishers on one channel, each waiting for its confirm, one consumer
//!      acking each message on its own at the worker's prefetch
//!      (`reference_per_message_ack_per_s`,
//!      `ratio_to_per_message_ack_reference`). It flatters celeriac, whose
//!      worker acks with `multiple`.
//! 2. **Throughput**: one worker (results per `--results`) is started and its
//!    idle RSS read; a warm-up batch is run; then P producers share one
//!    `Client` and publish N `celeriac.noop` tasks (publish rate = N / (first
//!    publish → last confirm)). End-to-end = N / (first publish → last task
//!    acknowledged, hence its outcome recorded, since the worker acks only
//!    after storing). Completion is detected without the management API:
//!    after the N tasks, `prefetch` *marker* tasks (`celeriac.sleep` for
//!    longer than the phase may last) are published. A marker stays
//!    unacknowledged in the worker (running, or waiting for a slot), and the
//!    broker delivers in order and never more than `prefetch` unacknowledged
//!    messages to the consumer; so the queue's ready count (passive
//!    `queue.declare`, polled every 2 ms) reaches 0 only once all markers are
//!    delivered, which is possible only when no task before them is still
//!    unacknowledged. With results on, the stored SUCCESS rows are counted
//!    as a check. The worker's CPU time (utime + stime) is read around the
//!    run, its peak RSS (VmHWM) at the end; then it is killed (its markers
//!    go back to the queue, which is deleted).
//!
//!    With `--rounds R`, phases 1 and 2 run R times in turn (the
//!    per-message-ack reference, the best reference, then celeriac through a
//!    fresh worker on a fresh queue), so a slow minute of a shared machine
//!    hits all three; the figures shown are each one's median over the
//!    rounds (with the least and greatest: `e2e_min_per_s`,
//!    `reference_min_per_s`, `ratio_min`, ...), the ratios the medians of
//!    the rounds' ratios.
//! 3. **Latency**: a second worker with a result backend (the `--results` one
//!    if it keeps sub-millisecond times, else a temporary SQLite file) gets
//!    tasks at a fixed `--rate`; latency = the task's stored `started_at`
//!    minus the wall-clock instant taken just before the publish call (same
//!    machine, same clock); p50 and p99 are nearest-rank ([`crate::stats`]).
//!
//! Every queue, exchange and database it made is deleted at the end, also on
//! error, Ctrl-C or SIGTERM (best effort). A worker that exits mid-run ends
//! the run at once.

mod database;
mod reference;
mod report;
pub(crate) mod worker;

use crate::cleanup::delete_queues;
use crate::error::{BenchError, err};
use crate::procfs;
use crate::stats::Samples;
use celeriac::{ApplyOptions, Client};
use celeriac_common::backend::ResultBackend;
use celeriac_common::backend::entity::{Column, Entity};
use celeriac_common::shutdown::{StopSignal, stop_signal};
use celeriac_common::{Config, TaskMessage, broker};
use chrono::{DateTime, Utc};
use database::{Results, ThrowAway};
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use report::{Latency, Report, Round};
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use serde_json::{Map, Value, json};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use worker::{WorkerProc, WorkerSpec};

/// Measure throughput, latency and worker footprint against the configured
/// RabbitMQ, next to plain lapin reference loops.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct BenchArgs {
    /// No-op tasks in the throughput run (and messages in the reference loop).
    #[arg(long, default_value_t = 20_000)]
    tasks: u64,
    /// Concurrent producers; each waits for its publish confirm before the next.
    #[arg(long, default_value_t = 128)]
    producers: u64,
    /// Worker concurrency (tasks at once).
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Worker prefetch = concurrency × this.
    #[arg(long, default_value_t = 8)]
    prefetch_multiplier: usize,
    /// Result backend for the throughput run: a throw-away database made for the bench.
    #[arg(long, value_enum, default_value_t = Results::None)]
    results: Results,
    /// Bytes of payload per task (one string argument); 0 sends no arguments.
    #[arg(long, default_value_t = 0)]
    payload: usize,
    /// Tasks per second in the latency run.
    #[arg(long, default_value_t = 500.0)]
    rate: f64,
    /// Tasks in the latency run (0 skips it).
    #[arg(long, default_value_t = 2_000)]
    latency_tasks: u64,
    /// Warm-up tasks through the worker before the measured run.
    #[arg(long, default_value_t = 1_000)]
    warmup: u64,
    /// Rounds of the references + throughput, in turn; the figures are medians.
    #[arg(long, default_value_t = 1)]
    rounds: u32,
    /// Best plain reference: publisher tasks, each on its own channel.
    #[arg(long, default_value_t = reference::BEST_PUBLISHERS, help_heading = "Best plain reference")]
    reference_publishers: u64,
    /// Best plain reference: messages unconfirmed at most, over all its publishers.
    #[arg(long, default_value_t = reference::BEST_CONFIRM_WINDOW, help_heading = "Best plain reference")]
    reference_confirm_window: u64,
    /// Best plain reference: the consumer's prefetch.
    #[arg(long, default_value_t = reference::BEST_PREFETCH, help_heading = "Best plain reference")]
    reference_prefetch: u16,
    /// Best plain reference: one `basic.ack(multiple)` per this many messages (at most the prefetch).
    #[arg(long, default_value_t = reference::BEST_ACK_EVERY, help_heading = "Best plain reference")]
    reference_ack_every: u16,
    /// Print the figures as one JSON object on the last line.
    #[arg(long)]
    json: bool,
    /// PostgreSQL server on which `--results postgres` creates (and drops) its database.
    #[arg(
        long,
        env = "CELERIAC_BENCH_POSTGRES_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/test",
        hide_env_values = true
    )]
    postgres_url: String,
    /// MySQL / MariaDB server on which `--results mysql` creates (and drops) its database.
    #[arg(
        long,
        env = "CELERIAC_BENCH_MYSQL_URL",
        default_value = "mysql://root@127.0.0.1:3306/test",
        hide_env_values = true
    )]
    mysql_url: String,
    /// The celeriac-worker binary [default: next to this executable].
    #[arg(long, env = "CELERIAC_BENCH_WORKER")]
    worker_bin: Option<PathBuf>,
    /// Seconds any one phase may take before the bench gives up.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
}

/// Everything the bench created, for the cleanup.
#[derive(Default)]
struct Resources {
    workers: Vec<Option<WorkerProc>>,
    queues: Vec<String>,
    exchanges: Vec<String>,
    databases: Vec<ThrowAway>,
    client: Option<Client>,
    backend: Option<ResultBackend>,
}

impl Resources {
    async fn stop_worker(&mut self, index: usize) {
        if let Some(w) = self.workers.get_mut(index).and_then(Option::take) {
            w.stop().await;
        }
    }

    async fn kill_worker(&mut self, index: usize) {
        if let Some(w) = self.workers.get_mut(index).and_then(Option::take) {
            w.kill().await;
        }
    }

    async fn cleanup(mut self, config: &Config) {
        for i in 0..self.workers.len() {
            self.stop_worker(i).await;
        }
        if let Some(c) = self.client.take() {
            c.close().await;
        }
        if let Some(b) = self.backend.take() {
            let _ = b.connection().clone().close().await;
        }
        if !self.queues.is_empty() {
            delete_queues(config, &self.queues, &self.exchanges).await;
        }
        for db in self.databases.drain(..) {
            db.drop_database().await;
        }
    }
}

/// Runs the bench; prints the figures or one error line.
pub(crate) async fn run(args: BenchArgs, config: Config) -> ExitCode {
    let mut res = Resources::default();
    // SIGTERM (a CI job's timeout, `kill`) cleans up as Ctrl-C does.
    let outcome = tokio::select! {
        r = measure(&args, &config, &mut res) => r,
        s = stop_signal() => Err(BenchError::new(match s {
            StopSignal::Int => "interrupted",
            StopSignal::Term => "terminated",
        })),
    };
    res.cleanup(&config).await;
    match outcome {
        Ok(report) => {
            report.print(args.json);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("celeriac-bench: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn check_args(args: &BenchArgs) -> Result<(), BenchError> {
    let bad = |m: &str| Err(BenchError::new(m.to_owned()));
    if args.tasks == 0 {
        return bad("--tasks must be at least 1");
    }
    if args.producers == 0 {
        return bad("--producers must be at least 1");
    }
    if args.concurrency == 0 || args.prefetch_multiplier == 0 {
        return bad("--concurrency and --prefetch-multiplier must be at least 1");
    }
    if !(args.rate.is_finite() && args.rate > 0.0) {
        return bad("--rate must be a positive number of tasks per second");
    }
    if args.rounds == 0 {
        return bad("--rounds must be at least 1");
    }
    if args.reference_publishers == 0 || args.reference_confirm_window == 0 {
        return bad("--reference-publishers and --reference-confirm-window must be at least 1");
    }
    if args.reference_prefetch == 0
        || args.reference_ack_every == 0
        || args.reference_ack_every > args.reference_prefetch
    {
        return bad(
            "--reference-prefetch must be at least 1 and --reference-ack-every between 1 and it",
        );
    }
    Ok(())
}

async fn measure(
    args: &BenchArgs,
    config: &Config,
    res: &mut Resources,
) -> Result<Report, BenchError> {
    check_args(args)?;
    let worker_bin = worker::locate(args.worker_bin.as_deref())?;
    let timeout = Duration::from_secs(args.timeout);
    let run_id = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
    let base = format!("celeriac-bench-{run_id}");
    let q_ref = format!("{base}.ref");
    let q_main = base.clone();
    let q_lat = format!("{base}.lat");
    let dlq = format!("{base}.dlq");
    let mut config = config.clone();
    config.default_queue = q_main.clone();
    config.queues = vec![q_main.clone()];
    config.dead_letter_queue = dlq.clone();
    config.concurrency = args.concurrency;
    config.prefetch_multiplier = args.prefetch_multiplier;
    let prefetch = config.prefetch();

    let admin_url = |kind| match kind {
        Results::Postgres => args.postgres_url.as_str(),
        Results::Mysql => args.mysql_url.as_str(),
        _ => "",
    };
    let backend_url = if args.results == Results::None {
        "none".to_owned()
    } else {
        let db = ThrowAway::create(args.results, admin_url(args.results), &run_id).await?;
        let url = db.url.clone();
        res.databases.push(db);
        url
    };

    // The task every phase sends, and the reference's identical message.
    let task_args: Vec<Value> = if args.payload > 0 {
        vec![Value::String("x".repeat(args.payload))]
    } else {
        Vec::new()
    };
    let mut template = TaskMessage::new("celeriac.noop", task_args.clone(), Map::new());
    template.origin = Some(format!(
        "gen{}@{}",
        std::process::id(),
        celeriac_common::config::host_name()
    ));
    let body = template
        .encode_body()
        .map_err(err("cannot encode the task"))?;
    let message_bytes = body.len();

    let hostname = |what: &str| format!("{what}-{run_id}@{}", celeriac_common::config::host_name());
    let client = Client::connect(config.clone())
        .await
        .map_err(err("cannot connect the producer"))?;
    res.client = Some(client.clone());
    // From here on the run may leave queues behind (not before: a broker
    // that cannot be reached has none to delete, and no warning is due).
    res.queues
        .extend([q_ref.clone(), q_main.clone(), q_lat.clone(), dlq.clone()]);
    // Task queues come with a same-named exchange, as Celery declares them.
    res.exchanges
        .extend([q_ref.clone(), q_main.clone(), q_lat.clone()]);
    let monitor = broker::connect_config(&config, "celeriac-bench-monitor")
        .await
        .map_err(err("cannot connect"))?;
    let monitor_ch = monitor
        .create_channel()
        .await
        .map_err(err("channel.open"))?;
    let broker_pid = if is_local(&config.broker_url) {
        procfs::local_broker_pid()
    } else {
        None
    };
    // Round 1's worker; the others and the latency worker differ in a field or two.
    let first_spec = WorkerSpec {
        bin: &worker_bin,
        broker_url: &config.broker_url,
        result_backend: &backend_url,
        queue: &q_main,
        dead_letter_queue: &dlq,
        concurrency: args.concurrency,
        prefetch_multiplier: args.prefetch_multiplier,
        hostname: hostname("bench"),
    };
    let throughput = Throughput {
        args,
        client: &client,
        monitor: &monitor_ch,
        prefetch,
        task_args: &task_args,
        backend_url: &backend_url,
        broker_pid,
        timeout,
    };
    let messages = reference::Messages {
        queue: q_ref.clone(),
        n: args.tasks,
        body: Arc::new(body),
        props: template.properties(),
    };
    let per_message_ack_plan = reference::Plan::per_message_ack(args.producers, prefetch);
    let best_plan = reference::Plan::best(
        args.reference_publishers,
        args.reference_confirm_window,
        args.reference_prefetch,
        args.reference_ack_every,
    );
    let mut rounds = Vec::new();
    for i in 1..=args.rounds {
        // Round 1 keeps the plain names; later rounds get their own queue.
        let queue = if i == 1 {
            q_main.clone()
        } else {
            let queue = format!("{base}.r{i}");
            res.queues.push(queue.clone());
            res.exchanges.push(queue.clone());
            queue
        };
        // 1. The plain references: the per-message-ack loop, then the best.
        let per_message_ack =
            reference::run(&config, &messages, per_message_ack_plan, timeout).await?;
        let best = reference::run(&config, &messages, best_plan, timeout).await?;
        // 2. Throughput through a celeriac worker.
        let spec = if i == 1 {
            first_spec.clone()
        } else {
            WorkerSpec {
                queue: &queue,
                hostname: hostname(&format!("bench-r{i}")),
                ..first_spec.clone()
            }
        };
        let round = throughput.run(res, &spec).await?;
        rounds.push(Round {
            reference: best,
            per_message_ack,
            ..round
        });
    }
    let _ = monitor.close(200, "bench done".into()).await;

    // 3. Latency at a fixed rate.
    let latency = if args.latency_tasks > 0 {
        let lat_kind = match args.results {
            Results::Sqlite | Results::Postgres => args.results,
            // MySQL's DATETIME/TIMESTAMP columns as created keep whole
            // seconds; no results means no started_at: use a temp SQLite file.
            Results::None | Results::Mysql => Results::Sqlite,
        };
        let lat_url = if lat_kind == args.results {
            backend_url.clone()
        } else {
            let db = ThrowAway::create(Results::Sqlite, "", &format!("{run_id}_lat")).await?;
            let url = db.url.clone();
            res.databases.push(db);
            url
        };
        let spec = WorkerSpec {
            result_backend: &lat_url,
            queue: &q_lat,
            hostname: hostname("bench-latency"),
            ..first_spec
        };
        res.workers
            .push(Some(WorkerProc::spawn(&spec, timeout).await?));
        let w2 = res.workers.len() - 1;
        let backend = ResultBackend::connect(&lat_url)
            .await
            .map_err(err("cannot open the result backend"))?;
        res.backend = Some(backend.clone());
        let lat = measure_latency(
            &client,
            &backend,
            &q_lat,
            args.latency_tasks,
            args.rate,
            &task_args,
            timeout,
        );
        let lat = while_running(worker_mut(res, w2)?, lat).await?;
        res.stop_worker(w2).await;
        Some(Latency {
            backend: lat_kind,
            ..lat
        })
    } else {
        None
    };

    Ok(Report {
        queue: q_main,
        tasks: args.tasks,
        producers: args.producers,
        concurrency: args.concurrency,
        prefetch,
        results: args.results,
        payload: args.payload,
        message_bytes,
        best_plan,
        median: Round::median(&rounds),
        rounds,
        latency,
    })
}

/// What every throughput round shares.
struct Throughput<'a> {
    args: &'a BenchArgs,
    client: &'a Client,
    monitor: &'a lapin::Channel,
    prefetch: u16,
    task_args: &'a [Value],
    backend_url: &'a str,
    broker_pid: Option<u32>,
    timeout: Duration,
}

impl Throughput<'_> {
    /// Starts a worker on `spec.queue`, warms it up, times `--tasks` tasks
    /// through it and kills it (the reference figures are left at 0).
    async fn run(&self, res: &mut Resources, spec: &WorkerSpec<'_>) -> Result<Round, BenchError> {
        let (args, client, queue, timeout) = (self.args, self.client, spec.queue, self.timeout);
        res.workers
            .push(Some(WorkerProc::spawn(spec, timeout).await?));
        let w1 = res.workers.len() - 1;
        // Let start-up allocations settle before reading the idle footprint.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let worker_idle_rss_mb = worker_mut(res, w1)?.rss_mb();

        if args.warmup > 0 {
            let warmup = async {
                publish_tasks(client, queue, args.warmup, args.producers, self.task_args).await?;
                wait_ready_empty(self.monitor, queue, timeout).await
            };
            while_running(worker_mut(res, w1)?, warmup).await?;
            tokio::time::sleep(Duration::from_millis(300)).await;
        }

        let cpu_before = worker_mut(res, w1)?.cpu_seconds();
        let broker_cpu_before = self.broker_pid.and_then(procfs::cpu_seconds);
        let bench_cpu_before = procfs::cpu_seconds(std::process::id());
        let start = Instant::now();
        let timed = async {
            publish_tasks(client, queue, args.tasks, args.producers, self.task_args).await?;
            let published = Instant::now();
            // The markers: tasks that stay unacknowledged and fill the worker's
            // prefetch window once every task before them is acknowledged (see the
            // module docs).
            let marker_secs = timeout.as_secs_f64() + 60.0;
            let markers = (0..self.prefetch).map(|_| {
                client.send_task(
                    "celeriac.sleep",
                    vec![json!(marker_secs)],
                    Map::new(),
                    ApplyOptions::new().queue(queue.to_owned()),
                )
            });
            for sent in futures_util::future::join_all(markers).await {
                sent.map_err(err("cannot publish a marker"))?;
            }
            wait_ready_empty(self.monitor, queue, timeout).await?;
            Ok(published)
        };
        let published = while_running(worker_mut(res, w1)?, timed).await?;
        let done = Instant::now();
        let w = worker_mut(res, w1)?;
        let delta = |before: Option<f64>, after: Option<f64>| Some(after? - before?);
        let worker_cpu_s = delta(cpu_before, w.cpu_seconds());
        let worker_peak_rss_mb = w.peak_rss_mb();
        let broker_cpu_s = delta(
            broker_cpu_before,
            self.broker_pid.and_then(procfs::cpu_seconds),
        );
        let bench_cpu_s = delta(bench_cpu_before, procfs::cpu_seconds(std::process::id()));
        if args.results != Results::None {
            let backend = ResultBackend::connect(self.backend_url)
                .await
                .map_err(err("cannot open the result backend"))?;
            let stored = Entity::find()
                .filter(Column::Queue.eq(queue))
                .filter(Column::State.eq("SUCCESS"))
                .count(backend.connection())
                .await
                .map_err(err("cannot count stored outcomes"))?;
            let _ = backend.connection().clone().close().await;
            let want = args.tasks + args.warmup;
            if stored != want {
                return Err(BenchError::new(format!(
                    "the queue drained but {stored} outcomes are stored, not {want}: completion detection is unsound with this worker"
                )));
            }
        }
        // Its markers sleep: no warm shutdown.
        res.kill_worker(w1).await;
        Ok(Round {
            queue: queue.to_owned(),
            publish_per_s: args.tasks as f64 / (published - start).as_secs_f64(),
            e2e_per_s: args.tasks as f64 / (done - start).as_secs_f64(),
            e2e_s: (done - start).as_secs_f64(),
            worker_idle_rss_mb,
            worker_peak_rss_mb,
            worker_cpu_s,
            broker_cpu_s,
            bench_cpu_s,
            ..Round::default()
        })
    }
}

fn worker_mut(res: &mut Resources, index: usize) -> Result<&mut WorkerProc, BenchError> {
    res.workers
        .get_mut(index)
        .and_then(Option::as_mut)
        .ok_or_else(|| BenchError::new("the bench worker is gone"))
}

/// Publishes `n` no-op tasks to `queue` from `producers` concurrent callers
/// sharing `client`. Dropped (the worker exited, a stop signal), it stops
/// them all: a caller left running would declare `queue` again after the
/// cleanup deleted it.
async fn publish_tasks(
    client: &Client,
    queue: &str,
    n: u64,
    producers: u64,
    task_args: &[Value],
) -> Result<(), BenchError> {
    let next = Arc::new(AtomicU64::new(0));
    let mut handles = tokio::task::JoinSet::new();
    for _ in 0..producers.min(n) {
        let client = client.clone();
        let next = next.clone();
        let queue = queue.to_owned();
        let task_args = task_args.to_vec();
        handles.spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < n {
                client
                    .send_task(
                        "celeriac.noop",
                        task_args.clone(),
                        Map::new(),
                        ApplyOptions::new().queue(queue.clone()),
                    )
                    .await
                    .map_err(err("publish failed"))?;
            }
            Ok::<(), BenchError>(())
        });
    }
    while let Some(h) = handles.join_next().await {
        h.map_err(|e| BenchError::new(format!("producer: {e}")))??;
    }
    Ok(())
}

/// Runs `phase` unless the worker it needs exits first.
async fn while_running<T>(
    worker: &mut WorkerProc,
    phase: impl Future<Output = Result<T, BenchError>>,
) -> Result<T, BenchError> {
    tokio::select! {
        r = phase => r,
        e = worker.exited() => Err(e),
    }
}

/// Waits until `queue` has no ready message (passive `queue.declare`).
async fn wait_ready_empty(
    channel: &lapin::Channel,
    queue: &str,
    timeout: Duration,
) -> Result<(), BenchError> {
    let deadline = Instant::now() + timeout;
    loop {
        let q = channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(err("queue.declare (passive)"))?;
        if q.message_count() == 0 {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(BenchError::new(format!(
                "{} messages still waiting in {queue} after {timeout:?}; is the worker consuming?",
                q.message_count()
            )));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn measure_latency(
    client: &Client,
    backend: &ResultBackend,
    queue: &str,
    n: u64,
    rate: f64,
    task_args: &[Value],
    timeout: Duration,
) -> Result<Latency, BenchError> {
    let interval = Duration::from_secs_f64(1.0 / rate);
    let mut sent: Vec<(String, DateTime<Utc>)> = Vec::with_capacity(n as usize);
    let start = tokio::time::Instant::now();
    for i in 0..n {
        tokio::time::sleep_until(start + interval.mul_f64(i as f64)).await;
        let id = uuid::Uuid::new_v4().to_string();
        let at = Utc::now();
        client
            .send_task(
                "celeriac.noop",
                task_args.to_vec(),
                Map::new(),
                ApplyOptions::new().queue(queue.to_owned()).task_id(&id),
            )
            .await
            .map_err(err("publish failed"))?;
        sent.push((id, at));
    }
    let db = backend.connection();
    let deadline = Instant::now() + timeout;
    loop {
        let done = Entity::find()
            .filter(Column::Queue.eq(queue))
            .filter(Column::State.eq("SUCCESS"))
            .count(db)
            .await
            .map_err(err("cannot count stored outcomes"))?;
        if done >= n {
            break;
        }
        if Instant::now() >= deadline {
            return Err(BenchError::new(format!(
                "latency run: {done} of {n} tasks done after {timeout:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rows = Entity::find()
        .filter(Column::Queue.eq(queue))
        .all(db)
        .await
        .map_err(err("cannot read stored outcomes"))?;
    let started: std::collections::HashMap<String, DateTime<Utc>> = rows
        .into_iter()
        .filter_map(|m| m.started_at.map(|s| (m.task_id, s)))
        .collect();
    let ms: Vec<f64> = sent
        .iter()
        .filter_map(|(id, at)| started.get(id).map(|s| *s - *at))
        .map(|d| d.num_nanoseconds().map_or(f64::MAX, |n| n as f64 / 1e6))
        .collect();
    if ms.len() as u64 != n {
        return Err(BenchError::new(format!(
            "latency run: started_at known for {} of {n} tasks",
            ms.len()
        )));
    }
    let ms = Samples::new(ms);
    let figure = |v: Option<f64>| v.unwrap_or(f64::NAN);
    Ok(Latency {
        tasks: ms.len(),
        rate,
        backend: Results::None,
        p50_ms: figure(ms.percentile(50.0)),
        p99_ms: figure(ms.percentile(99.0)),
        max_ms: figure(ms.max()),
        mean_ms: figure(ms.mean()),
    })
}

/// Whether the broker URL points at this machine.
fn is_local(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if host_port.starts_with('[') {
        host_port
            .split(']')
            .next()
            .unwrap_or_default()
            .trim_start_matches('[')
    } else {
        host_port.split(':').next().unwrap_or_default()
    };
    matches!(host, "127.0.0.1" | "localhost" | "::1" | "")
        || host == celeriac_common::config::host_name()
}

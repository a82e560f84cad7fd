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
//!
//!    With `--queue-type quorum` (or `CELERIAC_QUEUE_TYPE=quorum`), each
//!    round then runs celeriac once more through quorum queues ([`quorum`]),
//!    so classic and quorum figures come from the same minutes; the other
//!    phases stay on classic queues. `--quorum-broker URLS` runs those quorum
//!    rounds on another broker, such as a 3-node cluster.
//! 3. **Latency**: a second worker with a result backend (the `--results` one
//!    if it keeps sub-millisecond times, else a temporary SQLite file) gets
//!    tasks at a fixed `--rate`; latency = the task's stored `started_at`
//!    minus the wall-clock instant taken just before the publish call (same
//!    machine, same clock); p50 and p99 are nearest-rank ([`crate::stats`]).
//!
//! Every queue, exchange and database it made is deleted at the end, also on
//! error, Ctrl-C or SIGTERM (best effort). A worker that exits mid-run ends
//! the run at once.

mod args;
mod database;
mod events;
mod latency;
mod quorum;
mod reference;
mod report;
mod round;
pub(crate) mod worker;

pub(crate) use args::BenchArgs;

use crate::cleanup::delete_queues;
use crate::error::{BenchError, err};
use crate::procfs;
use args::check_args;
use celeriac::Client;
use celeriac_common::backend::ResultBackend;
use celeriac_common::config::QueueType;
use celeriac_common::shutdown::{StopSignal, stop_signal};
use celeriac_common::{Config, TaskMessage, broker};
use database::{Results, ThrowAway};
use latency::measure_latency;
use report::{Latency, Report, Round};
use round::Throughput;
use serde_json::{Map, Value};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use worker::{WorkerProc, WorkerSpec};

/// Everything the bench created, for the cleanup.
#[derive(Default)]
struct Resources {
    workers: Vec<Option<WorkerProc>>,
    queues: Vec<String>,
    exchanges: Vec<String>,
    databases: Vec<ThrowAway>,
    client: Option<Client>,
    backend: Option<ResultBackend>,
    /// What the quorum rounds declared on `--quorum-broker`.
    elsewhere: Option<(Config, Vec<String>, Vec<String>)>,
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
        if let Some((other, queues, exchanges)) = self.elsewhere.take() {
            delete_queues(&other, &queues, &exchanges).await;
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
    let quorum_also = config.queue_type == QueueType::Quorum || args.quorum_broker.is_some();
    config.queue_type = QueueType::Classic;
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
        procfs::local_broker_pid(procfs::amqp_port(&config.broker_url))
    } else {
        None
    };
    // Every process of the local server (its backends too; other clients'
    // work as well, so run it on a quiet server).
    let database_processes: Option<&'static [&'static str]> = match args.results {
        Results::Postgres if is_local(admin_url(args.results)) => Some(&["postgres"]),
        Results::Mysql if is_local(admin_url(args.results)) => Some(&["mariadbd", "mysqld"]),
        _ => None,
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
        quorum: None,
        events: false,
    };
    let throughput = Throughput {
        args,
        client: &client,
        monitor: &monitor_ch,
        prefetch,
        task_args: &task_args,
        backend_url: &backend_url,
        broker_pid,
        database_processes,
        timeout,
    };
    let messages = reference::Messages {
        queue: q_ref.clone(),
        n: args.tasks,
        body: Arc::new(body),
        props: template.properties()?,
    };
    let per_message_ack_plan = reference::Plan::per_message_ack(args.producers, prefetch);
    let best_plan = reference::Plan::best(
        args.reference_publishers,
        args.reference_confirm_window,
        args.reference_prefetch,
        args.reference_ack_every,
    );
    // `--queue-type quorum`: classic and quorum rounds, in turn.
    let quorum = if quorum_also {
        Some(quorum::Quorum::new(&config, args.quorum_broker.as_deref(), &base, res).await?)
    } else {
        None
    };
    let mut rounds = Vec::new();
    let mut quorum_rounds = Vec::new();
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
        let with_events = args.events.then(|| format!("{base}.r{i}.events"));
        if let Some(queue) = &with_events {
            res.queues.push(queue.clone());
            res.exchanges.push(queue.clone());
        }
        let with_events = with_events.as_ref().map(|queue| WorkerSpec {
            queue,
            hostname: hostname(&format!("bench-events-r{i}")),
            events: true,
            ..spec.clone()
        });
        let round = throughput
            .run_both(res, &spec, with_events.as_ref(), &config, i)
            .await?;
        rounds.push(Round {
            reference: best,
            per_message_ack,
            ..round
        });
        // 3. The same through quorum queues, right after.
        if let Some(q) = &quorum {
            let host = hostname(&format!("bench-qq{i}"));
            quorum_rounds.push(
                q.round(&throughput, res, &first_spec, &base, i, host)
                    .await?,
            );
        }
    }
    if let Some(q) = quorum {
        q.close().await;
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
        quorum: quorum_rounds,
        latency,
    })
}

fn worker_mut(res: &mut Resources, index: usize) -> Result<&mut WorkerProc, BenchError> {
    res.workers
        .get_mut(index)
        .and_then(Option::as_mut)
        .ok_or_else(|| BenchError::new("the bench worker is gone"))
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

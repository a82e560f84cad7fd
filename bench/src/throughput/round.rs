//! One throughput round: a fresh worker, a warm-up, the timed run and the
//! completion markers (see the module docs of [`super`]).

use super::args::BenchArgs;
use super::database::Results;
use super::events::{Drain, EventsRun};
use super::report::Round;
use super::worker::{WorkerProc, WorkerSpec};
use super::{Resources, while_running, worker_mut};
use crate::error::{BenchError, err};
use crate::procfs;
use celeriac::{ApplyOptions, Client};
use celeriac_common::backend::ResultBackend;
use celeriac_common::backend::entity::{Column, Entity};
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use serde_json::{Map, Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// What every throughput round shares.
pub(super) struct Throughput<'a> {
    pub(super) args: &'a BenchArgs,
    pub(super) client: &'a Client,
    pub(super) monitor: &'a lapin::Channel,
    pub(super) prefetch: u16,
    pub(super) task_args: &'a [Value],
    pub(super) backend_url: &'a str,
    pub(super) broker_pid: Option<u32>,
    /// The process names of the local database server holding the results
    /// (`postgres`, `mariadbd`), when it runs on this machine.
    pub(super) database_processes: Option<&'static [&'static str]>,
    pub(super) timeout: Duration,
}

impl Throughput<'_> {
    /// Starts a worker on `spec.queue`, warms it up, times `--tasks` tasks
    /// through it and kills it (the reference figures are left at 0).
    pub(super) async fn run(
        &self,
        res: &mut Resources,
        spec: &WorkerSpec<'_>,
    ) -> Result<Round, BenchError> {
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
        let database_cpu = || self.database_processes.and_then(procfs::cpu_seconds_named);
        let database_cpu_before = database_cpu();
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
        let database_cpu_s = delta(database_cpu_before, database_cpu());
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
        // Its markers sleep: no warm shutdown. With task events on, the
        // flusher (every 100 ms) first publishes the last tasks' events,
        // or the monitor would count them as missing.
        if spec.events {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
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
            database_cpu_s,
            ..Round::default()
        })
    }
}

impl Throughput<'_> {
    /// The round's celeriac run and, with `with_events`, the same with
    /// task events on, in turn: odd rounds run events off first, even
    /// rounds on first, so a slow minute does not always hit the same one.
    pub(super) async fn run_both(
        &self,
        res: &mut Resources,
        spec: &WorkerSpec<'_>,
        with_events: Option<&WorkerSpec<'_>>,
        config: &celeriac_common::Config,
        round: u32,
    ) -> Result<Round, BenchError> {
        let Some(with_events) = with_events else {
            return self.run(res, spec).await;
        };
        let (off, on) = if round % 2 == 1 {
            let off = self.run(res, spec).await?;
            (off, self.run_with_events(res, with_events, config).await?)
        } else {
            let on = self.run_with_events(res, with_events, config).await?;
            (self.run(res, spec).await?, on)
        };
        Ok(Round {
            events: Some(on),
            ..off
        })
    }

    /// [`Throughput::run`] with task events on, a monitor draining them.
    pub(super) async fn run_with_events(
        &self,
        res: &mut Resources,
        spec: &WorkerSpec<'_>,
        config: &celeriac_common::Config,
    ) -> Result<EventsRun, BenchError> {
        let drain = Drain::start(config, &spec.hostname).await?;
        let round = self.run(res, spec).await;
        let events_seen = drain.stop().await;
        let round = round?;
        Ok(EventsRun {
            e2e_per_s: round.e2e_per_s,
            worker_cpu_s: round.worker_cpu_s,
            events_seen,
            tasks_sent: self.args.tasks + self.args.warmup,
        })
    }
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

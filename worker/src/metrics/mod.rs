//! The worker's Prometheus metrics, served on `--http` with `/health`
//! (see docs/operations.md for the table). Names and labels are
//! celery-exporter's where it has one (`celery_task_succeeded_total{name,
//! hostname,queue_name}`, `celery_task_runtime`, `celery_worker_up`,
//! `celery_queue_length`, ...), so Grafana dashboards made for Celery work.
//!
//! Counting costs a few relaxed atomic adds per task and no lock: the
//! series of every registered task and configured queue are made when the
//! worker starts ([`Metrics::new`]) and found in a map that never changes;
//! only a task or queue unknown then goes through prometheus-client's
//! family (a read lock). Without `--http` nothing is counted at all.

mod scrape;

pub(crate) use scrape::{consuming, health, serve, session_opened};

use crate::events::Events;
use crate::recorder::AckWindow;
use celeriac_common::Config;
use celeriac_common::http::{AtomicHistogram, Health};
use chrono::{DateTime, FixedOffset, Utc};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The labels of celery-exporter's task counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TaskLabels {
    name: String,
    hostname: String,
    queue_name: String,
}

/// `celery_task_failed_total`'s labels: the task's and the error's kind.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailedLabels {
    name: String,
    hostname: String,
    exception: String,
    queue_name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HostLabels {
    hostname: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabels {
    queue_name: String,
}

type Histograms = Family<TaskLabels, AtomicHistogram, fn() -> AtomicHistogram>;

/// The metric families, as registered.
struct Families {
    received: Family<TaskLabels, Counter>,
    started: Family<TaskLabels, Counter>,
    succeeded: Family<TaskLabels, Counter>,
    failed: Family<FailedLabels, Counter>,
    retried: Family<TaskLabels, Counter>,
    revoked: Family<TaskLabels, Counter>,
    rejected: Family<TaskLabels, Counter>,
    runtime: Histograms,
    queue_wait: Histograms,
}

/// One task name's series on one queue: handles onto the families' atomics.
pub(crate) struct Series {
    labels: TaskLabels,
    received: Counter,
    started: Counter,
    succeeded: Counter,
    retried: Counter,
    revoked: Counter,
    rejected: Counter,
    runtime: AtomicHistogram,
    queue_wait: AtomicHistogram,
    failed: Family<FailedLabels, Counter>,
}

/// A worker's metrics and health.
pub(crate) struct Metrics {
    hostname: String,
    families: Families,
    /// Series by task name, then queue; made at start, never changed.
    series: HashMap<String, Vec<(String, Arc<Series>)>>,
    pub(crate) health: Health,
    pub(crate) up: Gauge,
    pub(crate) active: Gauge,
    pub(crate) prefetch_in_use: Gauge,
    pub(crate) prefetch_limit: Gauge,
    pub(crate) reconnects: Counter,
    queue_length: Family<QueueLabels, Gauge>,
    queue_consumers: Family<QueueLabels, Gauge>,
    /// The broker session consuming now, for the queue lengths and the
    /// deliveries held.
    pub(crate) session: Mutex<Option<SessionView>>,
}

/// What a scrape reads from the current broker session.
pub(crate) struct SessionView {
    pub(crate) connection: Arc<lapin::Connection>,
    pub(crate) window: Arc<AckWindow>,
}

impl Metrics {
    /// The metrics of a worker called `hostname` running `tasks` from
    /// `queues`, registered in a new registry; `events_dropped` is the
    /// events' own count.
    pub(crate) fn new(
        hostname: &str,
        tasks: &[String],
        queues: &[String],
        events_dropped: Counter,
    ) -> (Metrics, Registry) {
        let mut r = Registry::default();
        let histograms = |make: fn() -> AtomicHistogram| Histograms::new_with_constructor(make);
        let families = Families {
            received: Family::default(),
            started: Family::default(),
            succeeded: Family::default(),
            failed: Family::default(),
            retried: Family::default(),
            revoked: Family::default(),
            rejected: Family::default(),
            runtime: histograms(AtomicHistogram::runtime),
            queue_wait: histograms(AtomicHistogram::wait),
        };
        let f = &families;
        let counters: [(&str, &str, &Family<TaskLabels, Counter>); 6] = [
            (
                "celery_task_received",
                "Tasks received by the worker.",
                &f.received,
            ),
            ("celery_task_started", "Tasks started.", &f.started),
            (
                "celery_task_succeeded",
                "Tasks that succeeded.",
                &f.succeeded,
            ),
            (
                "celery_task_retried",
                "Task runs that failed and will be retried.",
                &f.retried,
            ),
            (
                "celery_task_revoked",
                "Tasks revoked or expired.",
                &f.revoked,
            ),
            (
                "celery_task_rejected",
                "Tasks dead-lettered (undecodable, poison).",
                &f.rejected,
            ),
        ];
        for (name, help, family) in counters {
            r.register(name, help, family.clone());
        }
        let failed_help = "Tasks that failed, by error kind (exception).";
        r.register("celery_task_failed", failed_help, f.failed.clone());
        let runtime_help = "Task run time in seconds, of every run (succeeded or not).";
        r.register("celery_task_runtime", runtime_help, f.runtime.clone());
        r.register(
            "celeriac_task_queue_wait_seconds",
            "Seconds from a task's arrival at the worker (or its eta, if later) to its start.",
            f.queue_wait.clone(),
        );
        let host = HostLabels {
            hostname: hostname.to_owned(),
        };
        let gauge = |r: &mut Registry, name: &str, help: &str| {
            let family = Family::<HostLabels, Gauge>::default();
            r.register(name, help, family.clone());
            family.get_or_create_owned(&host)
        };
        let up = gauge(
            &mut r,
            "celery_worker_up",
            "1 while consuming, 0 otherwise.",
        );
        let active = gauge(&mut r, "celery_worker_tasks_active", "Tasks running now.");
        let prefetch_in_use = gauge(
            &mut r,
            "celeriac_worker_prefetch_in_use",
            "Deliveries held unacknowledged (waiting, scheduled or running).",
        );
        let prefetch_limit = gauge(
            &mut r,
            "celeriac_worker_prefetch_limit",
            "Most unacknowledged deliveries per queue consumer (basic.qos).",
        );
        let counter = |r: &mut Registry, name: &str, help: &str| {
            let family = Family::<HostLabels, Counter>::default();
            r.register(name, help, family.clone());
            family.get_or_create_owned(&host)
        };
        let reconnects = counter(
            &mut r,
            "celeriac_worker_reconnects",
            "Broker sessions opened after the first.",
        );
        let dropped =
            Family::<HostLabels, Counter, _>::new_with_constructor(move || events_dropped.clone());
        r.register(
            "celeriac_worker_events_dropped",
            "Celery events dropped (buffer full, broker away).",
            dropped.clone(),
        );
        let _ = dropped.get_or_create_owned(&host);
        let queue_length = Family::<QueueLabels, Gauge>::default();
        let queue_consumers = Family::<QueueLabels, Gauge>::default();
        r.register(
            "celery_queue_length",
            "Messages ready in the queue.",
            queue_length.clone(),
        );
        r.register(
            "celery_active_consumer_count",
            "Consumers of the queue.",
            queue_consumers.clone(),
        );
        let mut metrics = Metrics {
            hostname: hostname.to_owned(),
            families,
            series: HashMap::new(),
            health: Health::new("starting"),
            up,
            active,
            prefetch_in_use,
            prefetch_limit,
            reconnects,
            queue_length,
            queue_consumers,
            session: Mutex::new(None),
        };
        for task in tasks {
            let per_queue = queues
                .iter()
                .map(|q| (q.clone(), Arc::new(metrics.make_series(task, q))))
                .collect();
            metrics.series.insert(task.clone(), per_queue);
        }
        (metrics, r)
    }

    /// A worker's metrics and their registry, if `on`.
    pub(crate) fn prepare(
        on: bool,
        config: &Config,
        tasks: &crate::registry::Registry,
        events: &Events,
    ) -> (Option<Arc<Metrics>>, Option<Registry>) {
        if !on {
            return (None, None);
        }
        let (names, dropped) = (tasks.names(), events.dropped_counter());
        let (m, r) = Metrics::new(&config.hostname, &names, &config.queues, dropped);
        (Some(Arc::new(m)), Some(r))
    }

    fn make_series(&self, name: &str, queue: &str) -> Series {
        let labels = TaskLabels {
            name: name.to_owned(),
            hostname: self.hostname.clone(),
            queue_name: queue.to_owned(),
        };
        let f = &self.families;
        Series {
            received: f.received.get_or_create_owned(&labels),
            started: f.started.get_or_create_owned(&labels),
            succeeded: f.succeeded.get_or_create_owned(&labels),
            retried: f.retried.get_or_create_owned(&labels),
            revoked: f.revoked.get_or_create_owned(&labels),
            rejected: f.rejected.get_or_create_owned(&labels),
            runtime: f.runtime.get_or_create_owned(&labels),
            queue_wait: f.queue_wait.get_or_create_owned(&labels),
            failed: f.failed.clone(),
            labels,
        }
    }

    /// The series of task `name` on `queue`.
    pub(crate) fn series(&self, name: &str, queue: &str) -> Arc<Series> {
        let known = self
            .series
            .get(name)
            .and_then(|per_queue| per_queue.iter().find(|(q, _)| q == queue));
        match known {
            Some((_, s)) => s.clone(),
            None => Arc::new(self.make_series(name, queue)),
        }
    }

    /// Sets a queue's length and consumer count, as the broker gave them.
    pub(crate) fn queue(&self, queue: &str, length: u32, consumers: u32) {
        let labels = QueueLabels {
            queue_name: queue.to_owned(),
        };
        self.queue_length
            .get_or_create(&labels)
            .set(i64::from(length));
        self.queue_consumers
            .get_or_create(&labels)
            .set(i64::from(consumers));
    }
}

/// What a delivery counts, if metrics are on: one lookup per delivery,
/// then atomic adds.
pub(crate) struct Tally(Option<Arc<Series>>);

impl Tally {
    /// The tally of task `name` from `queue` (`metrics` unset: counts nothing).
    pub(crate) fn of(metrics: Option<&Arc<Metrics>>, name: &str, queue: &str) -> Tally {
        Tally(metrics.map(|m| m.series(name, queue)))
    }

    /// The delivery was received.
    pub(crate) fn received(&self) {
        if let Some(s) = &self.0 {
            s.received.inc();
        }
    }

    /// The task starts: it waited since it arrived (`received`) or, if
    /// later, since its `eta`.
    pub(crate) fn started(&self, received: DateTime<Utc>, eta: Option<DateTime<FixedOffset>>) {
        if let Some(s) = &self.0 {
            s.started.inc();
            let due = eta.map_or(received, |e| e.to_utc().max(received));
            let waited = (Utc::now() - due).to_std().unwrap_or_default();
            s.queue_wait.observe(waited);
        }
    }

    /// A run ended after `runtime`.
    pub(crate) fn ran(&self, runtime: Duration) {
        if let Some(s) = &self.0 {
            s.runtime.observe(runtime);
        }
    }

    /// It succeeded.
    pub(crate) fn succeeded(&self) {
        if let Some(s) = &self.0 {
            s.succeeded.inc();
        }
    }

    /// It will be retried.
    pub(crate) fn retried(&self) {
        if let Some(s) = &self.0 {
            s.retried.inc();
        }
    }

    /// It was revoked (or expired).
    pub(crate) fn revoked(&self) {
        if let Some(s) = &self.0 {
            s.revoked.inc();
        }
    }

    /// It was dead-lettered.
    pub(crate) fn rejected(&self) {
        if let Some(s) = &self.0 {
            s.rejected.inc();
        }
    }

    /// It failed with an error of kind `exception`.
    pub(crate) fn failed(&self, exception: &str) {
        if let Some(s) = &self.0 {
            let labels = FailedLabels {
                name: s.labels.name.clone(),
                hostname: s.labels.hostname.clone(),
                exception: exception.to_owned(),
                queue_name: s.labels.queue_name.clone(),
            };
            s.failed.get_or_create(&labels).inc();
        }
    }
}

//! beat's Prometheus metrics and health, served by `celeriac-beat run
//! --http ADDR`: read off the event bus ([`Events`]), so counting never
//! touches the scheduling loop.
//!
//! | metric | type | labels |
//! | --- | --- | --- |
//! | `celeriac_beat_runs_total` | counter | `entry`, `task`, `outcome` (below) |
//! | `celeriac_beat_lateness_seconds` | histogram | `hostname` |
//! | `celeriac_beat_leader` | gauge | `hostname` |
//! | `celeriac_beat_entries` | gauge | `hostname` |
//!
//! A run's `outcome`: `fired`, `resent`, `run_now`, `missed`, `coalesced`,
//! `held` or `send_failed` (as the events of the same names).
//!
//! `/health` answers 200 while the service runs its loop, leading or
//! standing by, and 503 while starting, stopping, or leading without being
//! able to publish runs (a send failed and none was sent since).

use celeriac_common::http::{AtomicHistogram, Exporter, Health, HttpError, HttpServer};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use crate::events::{BeatEvent, EventKind, Events};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RunLabels {
    entry: String,
    task: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HostLabels {
    hostname: String,
}

struct Counts {
    runs: Family<RunLabels, Counter>,
    lateness: AtomicHistogram,
    leader: Gauge,
    entries: Gauge,
    health: Health,
}

/// The running server and the task feeding it.
#[derive(Debug)]
pub struct Served {
    server: HttpServer,
    feeder: JoinHandle<()>,
    health: Health,
}

impl Served {
    /// Serves beat's `/metrics` and `/health` on `addr`, counting what
    /// `events` carries from now on.
    pub async fn start(addr: &str, events: &Events, hostname: &str) -> Result<Served, HttpError> {
        let mut registry = Registry::default();
        let host = HostLabels {
            hostname: hostname.to_owned(),
        };
        let runs = Family::<RunLabels, Counter>::default();
        registry.register(
            "celeriac_beat_runs",
            "Scheduled runs by what became of them.",
            runs.clone(),
        );
        let lateness =
            Family::<HostLabels, AtomicHistogram, fn() -> AtomicHistogram>::new_with_constructor(
                AtomicHistogram::wait,
            );
        registry.register(
            "celeriac_beat_lateness_seconds",
            "Seconds from a run's fire time to its sending.",
            lateness.clone(),
        );
        let gauge = |r: &mut Registry, name: &str, help: &str| {
            let family = Family::<HostLabels, Gauge>::default();
            r.register(name, help, family.clone());
            family.get_or_create_owned(&host)
        };
        let leader = gauge(
            &mut registry,
            "celeriac_beat_leader",
            "1 while this beat leads.",
        );
        let entries = gauge(
            &mut registry,
            "celeriac_beat_entries",
            "Entries in the schedule the leader loaded.",
        );
        let health = Health::new("starting");
        let counts = Counts {
            runs,
            lateness: lateness.get_or_create_owned(&host),
            leader,
            entries,
            health: health.clone(),
        };
        let feeder = tokio::spawn(feed(events.subscribe(), counts));
        let server = HttpServer::start(addr, Exporter::new(registry, health.clone())).await?;
        Ok(Served {
            server,
            feeder,
            health,
        })
    }

    /// The health `/health` answers with.
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.server.local_addr()
    }

    /// Stops serving.
    pub async fn stop(self) {
        self.feeder.abort();
        self.server.stop().await;
    }
}

async fn feed(mut rx: broadcast::Receiver<BeatEvent>, counts: Counts) {
    loop {
        match rx.recv().await {
            Ok(event) => counts.count(&event),
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::debug!(lost = n, "beat metrics fell behind the event bus");
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

impl Counts {
    fn count(&self, e: &BeatEvent) {
        let n = e.count.unwrap_or(1);
        let (outcome, runs) = match e.kind {
            EventKind::Fired => ("fired", 1),
            EventKind::Resent => ("resent", 1),
            EventKind::RunNow => ("run_now", 1),
            EventKind::Missed => ("missed", n),
            EventKind::Coalesced => ("coalesced", n),
            EventKind::Held => ("held", 1),
            EventKind::SendFailed => ("send_failed", 1),
            EventKind::Leading => {
                self.leader.set(1);
                self.health.ok("leading");
                return;
            }
            EventKind::Standby => {
                self.leader.set(0);
                let why = e.detail.as_deref().unwrap_or("another beat leads");
                self.health.ok(format!("standing by ({why})"));
                return;
            }
            EventKind::Loaded => {
                self.entries.set(i64::try_from(n).unwrap_or(i64::MAX));
                return;
            }
            EventKind::Done => return,
        };
        let labels = RunLabels {
            entry: e.entry.clone().unwrap_or_default(),
            task: e.task.clone().unwrap_or_default(),
            outcome,
        };
        self.runs.get_or_create(&labels).inc_by(runs);
        match e.kind {
            EventKind::Fired | EventKind::Resent | EventKind::RunNow => {
                if let Some(ms) = e.lateness_ms {
                    self.lateness.observe_secs(ms / 1e3);
                }
                self.health.ok("leading");
            }
            EventKind::SendFailed => {
                let why = e.detail.as_deref().unwrap_or("send failed");
                self.health
                    .unavailable(format!("leading, cannot publish runs: {why}"));
            }
            _ => {}
        }
    }
}

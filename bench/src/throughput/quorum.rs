//! `--queue-type quorum`: each round runs celeriac a second time, right
//! after the classic run, through quorum queues (task queue, delay queues
//! under a prefix of the run's own, dead-letter queue), with a worker and a
//! producer `Client` of their own; the figures are printed beside the
//! classic ones (`quorum_*` JSON keys).

use super::Resources;
use super::report::{Report, Round, Spread, round};
use super::round::Throughput;
use super::worker::WorkerSpec;
use crate::error::{BenchError, err};
use celeriac::Client;
use celeriac_common::config::{Config, QueueType};
use celeriac_common::{broker, delay};
use serde_json::{Map, Value, json};

/// What the quorum runs share.
pub(super) struct Quorum {
    pub(super) client: Client,
    broker_url: String,
    dead_letter_queue: String,
    delay_prefix: String,
    /// On `--quorum-broker`: a monitor connection there (the main one's
    /// channel watches the main broker).
    monitor: Option<(lapin::Connection, lapin::Channel)>,
}

impl Quorum {
    /// A quorum producer for the run `base`, on `other` (a broker of its
    /// own) or the main broker; its queues are registered in `res` for the
    /// cleanup.
    pub(super) async fn new(
        config: &Config,
        other: Option<&str>,
        base: &str,
        res: &mut Resources,
    ) -> Result<Quorum, BenchError> {
        let config = Config {
            queue_type: QueueType::Quorum,
            broker_url: other.unwrap_or(&config.broker_url).to_owned(),
            dead_letter_queue: format!("{base}.qdlq"),
            delay_prefix: format!("{base}.qdelay"),
            ..config.clone()
        };
        let monitor = match other {
            Some(_) => {
                let conn = broker::connect_config(&config, "celeriac-bench-quorum-monitor")
                    .await
                    .map_err(err("cannot connect to the quorum broker"))?;
                let ch = conn.create_channel().await.map_err(err("channel.open"))?;
                res.elsewhere = Some((config.clone(), Vec::new(), Vec::new()));
                Some((conn, ch))
            }
            None => None,
        };
        let (queues, exchanges) = declared(res);
        queues.push(config.dead_letter_queue.clone());
        queues.extend(delay::queue_names(&config));
        exchanges.extend(delay::exchange_names(&config));
        let client = Client::connect(config.clone())
            .await
            .map_err(err("cannot connect the quorum producer"))?;
        Ok(Quorum {
            client,
            broker_url: config.broker_url,
            dead_letter_queue: config.dead_letter_queue,
            delay_prefix: config.delay_prefix,
            monitor,
        })
    }

    /// Round `i`'s quorum run: `throughput` with this producer, a worker
    /// like `first` on quorum queues, on a fresh queue.
    pub(super) async fn round(
        &self,
        throughput: &Throughput<'_>,
        res: &mut Resources,
        first: &WorkerSpec<'_>,
        base: &str,
        i: u32,
        hostname: String,
    ) -> Result<Round, BenchError> {
        let queue = format!("{base}.qq{i}");
        let (queues, exchanges) = declared(res);
        queues.push(queue.clone());
        exchanges.push(queue.clone());
        let spec = WorkerSpec {
            queue: &queue,
            hostname,
            broker_url: &self.broker_url,
            dead_letter_queue: &self.dead_letter_queue,
            quorum: Some(&self.delay_prefix),
            ..first.clone()
        };
        let throughput = match &self.monitor {
            // Another broker: its own monitor, and no broker CPU figure
            // (its nodes are not the local broker process).
            Some((_, monitor)) => Throughput {
                client: &self.client,
                monitor,
                broker_pid: None,
                ..*throughput
            },
            None => Throughput {
                client: &self.client,
                ..*throughput
            },
        };
        throughput.run(res, &spec).await
    }

    /// Closes the monitor connection on `--quorum-broker`.
    pub(super) async fn close(self) {
        self.client.close().await;
        if let Some((conn, _)) = self.monitor {
            let _ = conn.close(200, "bench done".into()).await;
        }
    }
}

/// Where the quorum rounds' queues and exchanges are listed for the
/// cleanup: under `--quorum-broker`'s, or with the main broker's.
fn declared(res: &mut Resources) -> (&mut Vec<String>, &mut Vec<String>) {
    match &mut res.elsewhere {
        Some((_, queues, exchanges)) => (queues, exchanges),
        None => (&mut res.queues, &mut res.exchanges),
    }
}

impl Report {
    /// The quorum figures and their ratio to the classic ones.
    pub(super) fn quorum_json(&self) -> Map<String, Value> {
        let Some(q) = self.quorum_median() else {
            return Map::new();
        };
        let e2e = Spread::of(&self.quorum, |r| r.e2e_per_s);
        let publish = Spread::of(&self.quorum, |r| r.publish_per_s);
        let ratio = self.quorum_ratio();
        let rounds: Vec<Value> = self
            .quorum
            .iter()
            .map(|r| {
                json!({
                    "queue": r.queue,
                    "publish_per_s": round(r.publish_per_s, 0),
                    "e2e_per_s": round(r.e2e_per_s, 0),
                })
            })
            .collect();
        let figures = json!({
            "quorum_publish_per_s": round(q.publish_per_s, 0),
            "quorum_publish_min_per_s": round(publish.min, 0),
            "quorum_publish_max_per_s": round(publish.max, 0),
            "quorum_e2e_per_s": round(q.e2e_per_s, 0),
            "quorum_e2e_min_per_s": round(e2e.min, 0),
            "quorum_e2e_max_per_s": round(e2e.max, 0),
            "quorum_to_classic_e2e": round(ratio.median, 3),
            "quorum_to_classic_e2e_min": round(ratio.min, 3),
            "quorum_to_classic_e2e_max": round(ratio.max, 3),
            "quorum_worker_cpu_s_per_1k": q.worker_cpu_s.map(|c| round(c * 1000.0 / self.tasks as f64, 4)),
            "quorum_broker_cpu_s_per_1k": q.broker_cpu_s.map(|c| round(c * 1000.0 / self.tasks as f64, 4)),
            "quorum_rounds": rounds,
        });
        match figures {
            Value::Object(map) => map,
            _ => Map::new(),
        }
    }

    /// The table's quorum lines.
    pub(super) fn quorum_rows(&self) -> Vec<(String, String)> {
        let Some(q) = self.quorum_median() else {
            return Vec::new();
        };
        let n = self.quorum.len();
        vec![
            (
                "quorum: publish (confirmed)".into(),
                Spread::of(&self.quorum, |r| r.publish_per_s).show(n, 0, " tasks/s"),
            ),
            (
                "quorum: end to end".into(),
                format!(
                    "{}  ({:.2} s)",
                    Spread::of(&self.quorum, |r| r.e2e_per_s).show(n, 0, " tasks/s"),
                    q.e2e_s
                ),
            ),
            (
                "quorum / classic end to end".into(),
                self.quorum_ratio().show(n, 2, ""),
            ),
        ]
    }

    fn quorum_median(&self) -> Option<Round> {
        (!self.quorum.is_empty()).then(|| Round::median(&self.quorum))
    }

    /// Each round's quorum end-to-end rate over the same round's classic one.
    fn quorum_ratio(&self) -> Spread {
        let pairs: Vec<Round> = self
            .quorum
            .iter()
            .zip(&self.rounds)
            .map(|(q, c)| Round {
                e2e_per_s: q.e2e_per_s / c.e2e_per_s,
                ..q.clone()
            })
            .collect();
        Spread::of(&pairs, |r| r.e2e_per_s)
    }
}

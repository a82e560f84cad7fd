//! The bench's figures: one round's, the medians over the rounds, and how
//! they are printed (a table, or one JSON object whose keys scripts read).

use super::database::Results;
use crate::stats::median;
use serde_json::{Value, json};

/// The figures of one run.
pub(super) struct Report {
    pub(super) queue: String,
    pub(super) tasks: u64,
    pub(super) producers: u64,
    pub(super) concurrency: usize,
    pub(super) prefetch: u16,
    pub(super) results: Results,
    pub(super) payload: usize,
    pub(super) message_bytes: usize,
    pub(super) rounds: Vec<Round>,
    /// Each figure's median over the rounds.
    pub(super) median: Round,
    /// The median of the rounds' ratios to the reference.
    pub(super) ratio: f64,
    pub(super) latency: Option<Latency>,
}

/// One round's throughput figures: the reference loop, then celeriac.
#[derive(Debug, Clone, Default)]
pub(super) struct Round {
    pub(super) queue: String,
    pub(super) publish_per_s: f64,
    pub(super) e2e_per_s: f64,
    pub(super) e2e_s: f64,
    pub(super) reference_per_s: f64,
    pub(super) reference_publish_per_s: f64,
    pub(super) worker_idle_rss_mb: Option<f64>,
    pub(super) worker_peak_rss_mb: Option<f64>,
    pub(super) worker_cpu_s: Option<f64>,
    /// The local RabbitMQ's CPU time during the run, when it runs here.
    pub(super) broker_cpu_s: Option<f64>,
    /// This process's (the producers') CPU time during the run.
    pub(super) bench_cpu_s: Option<f64>,
}

impl Round {
    pub(super) fn ratio(&self) -> f64 {
        self.e2e_per_s / self.reference_per_s
    }

    /// Each figure's median over `rounds` (the queue is the first round's).
    pub(super) fn median(rounds: &[Round]) -> Round {
        let all = |f: fn(&Round) -> f64| median(rounds.iter().map(f).collect());
        let some = |f: fn(&Round) -> Option<f64>| {
            let v: Vec<f64> = rounds.iter().filter_map(f).collect();
            (!v.is_empty()).then(|| median(v))
        };
        Round {
            queue: rounds.first().map(|r| r.queue.clone()).unwrap_or_default(),
            publish_per_s: all(|r| r.publish_per_s),
            e2e_per_s: all(|r| r.e2e_per_s),
            e2e_s: all(|r| r.e2e_s),
            reference_per_s: all(|r| r.reference_per_s),
            reference_publish_per_s: all(|r| r.reference_publish_per_s),
            worker_idle_rss_mb: some(|r| r.worker_idle_rss_mb),
            worker_peak_rss_mb: some(|r| r.worker_peak_rss_mb),
            worker_cpu_s: some(|r| r.worker_cpu_s),
            broker_cpu_s: some(|r| r.broker_cpu_s),
            bench_cpu_s: some(|r| r.bench_cpu_s),
        }
    }
}

/// The latency run's figures (p50 and p99 nearest-rank).
pub(super) struct Latency {
    pub(super) tasks: usize,
    pub(super) rate: f64,
    pub(super) backend: Results,
    pub(super) p50_ms: f64,
    pub(super) p99_ms: f64,
    pub(super) max_ms: f64,
    pub(super) mean_ms: f64,
}

fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

impl Report {
    fn per_1k(&self, cpu_s: Option<f64>) -> Option<f64> {
        cpu_s.map(|c| c / self.tasks as f64 * 1000.0)
    }

    pub(super) fn print(&self, as_json: bool) {
        if as_json {
            println!("{}", self.to_json());
        } else {
            self.print_table();
        }
    }

    fn to_json(&self) -> Value {
        let opt = |v: Option<f64>, d| v.map(|v| round(v, d));
        let lat = self.latency.as_ref();
        let m = &self.median;
        let rounds: Vec<Value> = self
            .rounds
            .iter()
            .map(|r| {
                json!({
                    "queue": r.queue,
                    "publish_per_s": round(r.publish_per_s, 0),
                    "e2e_per_s": round(r.e2e_per_s, 0),
                    "reference_per_s": round(r.reference_per_s, 0),
                    "ratio_to_reference": round(r.ratio(), 3),
                    "worker_peak_rss_mb": opt(r.worker_peak_rss_mb, 1),
                    "worker_cpu_s_per_1k": opt(self.per_1k(r.worker_cpu_s), 4),
                    "broker_cpu_s_per_1k": opt(self.per_1k(r.broker_cpu_s), 4),
                })
            })
            .collect();
        let ratios = self.rounds.iter().map(Round::ratio);
        let ratio_min = ratios.clone().fold(f64::INFINITY, f64::min);
        let ratio_max = ratios.fold(f64::NEG_INFINITY, f64::max);
        json!({
            "queue": self.queue,
            "tasks": self.tasks,
            "producers": self.producers,
            "concurrency": self.concurrency,
            "prefetch": self.prefetch,
            "results": self.results.name(),
            "payload_bytes": self.payload,
            "message_body_bytes": self.message_bytes,
            "publish_per_s": round(m.publish_per_s, 0),
            "e2e_per_s": round(m.e2e_per_s, 0),
            "e2e_s": round(m.e2e_s, 3),
            "latency_p50_ms": lat.map(|l| round(l.p50_ms, 3)),
            "latency_p99_ms": lat.map(|l| round(l.p99_ms, 3)),
            "latency_max_ms": lat.map(|l| round(l.max_ms, 3)),
            "latency_mean_ms": lat.map(|l| round(l.mean_ms, 3)),
            "latency_tasks": lat.map(|l| l.tasks),
            "latency_rate_per_s": lat.map(|l| l.rate),
            "latency_results": lat.map(|l| l.backend.name()),
            "worker_idle_rss_mb": opt(m.worker_idle_rss_mb, 1),
            "worker_peak_rss_mb": opt(m.worker_peak_rss_mb, 1),
            "worker_cpu_s": opt(m.worker_cpu_s, 2),
            "worker_cpu_s_per_1k": opt(self.per_1k(m.worker_cpu_s), 4),
            "producer_cpu_s_per_1k": opt(self.per_1k(m.bench_cpu_s), 4),
            "broker_cpu_s_per_1k": opt(self.per_1k(m.broker_cpu_s), 4),
            "reference_per_s": round(m.reference_per_s, 0),
            "reference_publish_per_s": round(m.reference_publish_per_s, 0),
            "ratio_to_reference": round(self.ratio, 3),
            "ratio_min": round(ratio_min, 3),
            "ratio_max": round(ratio_max, 3),
            "rounds": rounds,
        })
    }

    fn print_table(&self) {
        let mb = |v: Option<f64>| v.map_or("?".to_owned(), |v| format!("{v:.1}"));
        let m = &self.median;
        println!(
            "celeriac bench: {} no-op tasks, {} producers, concurrency {} (prefetch {}), results {}, payload {} B (body {} B)",
            self.tasks,
            self.producers,
            self.concurrency,
            self.prefetch,
            self.results.name(),
            self.payload,
            self.message_bytes
        );
        if self.rounds.len() > 1 {
            println!(
                "  {} rounds, each the reference and then celeriac; the figures below are medians",
                self.rounds.len()
            );
        }
        let rows: Vec<(String, String)> = vec![
            (
                "publish (confirmed)".into(),
                format!("{:>9.0} tasks/s", m.publish_per_s),
            ),
            (
                "end to end".into(),
                format!("{:>9.0} tasks/s  ({:.2} s)", m.e2e_per_s, m.e2e_s),
            ),
            (
                "plain lapin reference".into(),
                format!("{:>9.0} msgs/s", m.reference_per_s),
            ),
            (
                "celeriac / reference".into(),
                format!("{:>9.2}", self.ratio),
            ),
            match &self.latency {
                Some(l) => (
                    format!(
                        "latency p50 / p99 / max ({} at {}/s, {})",
                        l.tasks,
                        l.rate,
                        l.backend.name()
                    ),
                    format!("{:.3} / {:.3} / {:.3} ms", l.p50_ms, l.p99_ms, l.max_ms),
                ),
                None => ("latency".into(), "skipped".into()),
            },
            (
                "worker RSS idle / peak".into(),
                format!(
                    "{} / {} MB",
                    mb(m.worker_idle_rss_mb),
                    mb(m.worker_peak_rss_mb)
                ),
            ),
            (
                "worker CPU per 1,000 tasks".into(),
                secs(self.per_1k(m.worker_cpu_s)),
            ),
            (
                "producers / local broker CPU per 1,000".into(),
                format!(
                    "{} / {}",
                    secs(self.per_1k(m.bench_cpu_s)),
                    secs(self.per_1k(m.broker_cpu_s))
                ),
            ),
        ];
        let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        for (k, v) in rows {
            println!("  {k:<width$}  {v}");
        }
        if self.rounds.len() > 1 {
            for (i, r) in self.rounds.iter().enumerate() {
                println!(
                    "  round {}: reference {:.0} msgs/s, end to end {:.0} tasks/s, ratio {:.2}, worker CPU per 1,000 {}",
                    i + 1,
                    r.reference_per_s,
                    r.e2e_per_s,
                    r.ratio(),
                    secs(self.per_1k(r.worker_cpu_s))
                );
            }
        }
    }
}

fn secs(v: Option<f64>) -> String {
    v.map_or("?".into(), |c| format!("{c:.3} s"))
}

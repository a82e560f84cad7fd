//! The bench's figures: one round's, the medians over the rounds, and how
//! they are printed (a table, or one JSON object whose keys scripts read).

use super::database::Results;
use super::reference::{Plan, Reference};
use crate::stats::median;
use serde_json::{Map, Value, json};

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
    /// The best plain reference's shape.
    pub(super) best_plan: Plan,
    pub(super) rounds: Vec<Round>,
    /// The rounds through quorum queues (`--queue-type quorum`), else none.
    pub(super) quorum: Vec<Round>,
    /// Each figure's median over the rounds.
    pub(super) median: Round,
    pub(super) latency: Option<Latency>,
}

/// One round's throughput figures: the reference loops, then celeriac.
#[derive(Debug, Clone, Default)]
pub(super) struct Round {
    pub(super) queue: String,
    pub(super) publish_per_s: f64,
    pub(super) e2e_per_s: f64,
    pub(super) e2e_s: f64,
    /// The best plain reference.
    pub(super) reference: Reference,
    /// The per-message-ack reference.
    pub(super) per_message_ack: Reference,
    pub(super) worker_idle_rss_mb: Option<f64>,
    pub(super) worker_peak_rss_mb: Option<f64>,
    pub(super) worker_cpu_s: Option<f64>,
    /// The local RabbitMQ's CPU time during the run, when it runs here.
    pub(super) broker_cpu_s: Option<f64>,
    /// This process's (the producers') CPU time during the run.
    pub(super) bench_cpu_s: Option<f64>,
    /// The local database server's CPU time during the run (results in
    /// PostgreSQL or MariaDB on this machine).
    pub(super) database_cpu_s: Option<f64>,
    /// The same round's run with task events on (`--events`).
    pub(super) events: Option<super::events::EventsRun>,
}

impl Round {
    /// celeriac end to end / the best plain reference.
    pub(super) fn ratio(&self) -> f64 {
        self.e2e_per_s / self.reference.per_s
    }

    /// celeriac end to end / the per-message-ack reference.
    pub(super) fn ratio_per_message_ack(&self) -> f64 {
        self.e2e_per_s / self.per_message_ack.per_s
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
            reference: Reference {
                per_s: all(|r| r.reference.per_s),
                publish_per_s: all(|r| r.reference.publish_per_s),
            },
            per_message_ack: Reference {
                per_s: all(|r| r.per_message_ack.per_s),
                publish_per_s: all(|r| r.per_message_ack.publish_per_s),
            },
            worker_idle_rss_mb: some(|r| r.worker_idle_rss_mb),
            worker_peak_rss_mb: some(|r| r.worker_peak_rss_mb),
            worker_cpu_s: some(|r| r.worker_cpu_s),
            broker_cpu_s: some(|r| r.broker_cpu_s),
            bench_cpu_s: some(|r| r.bench_cpu_s),
            database_cpu_s: some(|r| r.database_cpu_s),
            events: None,
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

/// The median, least and greatest of a figure over the rounds.
#[derive(Debug, Clone, Copy)]
pub(super) struct Spread {
    pub(super) median: f64,
    pub(super) min: f64,
    pub(super) max: f64,
}

impl Spread {
    pub(super) fn of(rounds: &[Round], f: impl Fn(&Round) -> f64) -> Spread {
        let v: Vec<f64> = rounds.iter().map(f).collect();
        Spread {
            min: v.iter().copied().fold(f64::INFINITY, f64::min),
            max: v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            median: median(v),
        }
    }

    /// `median` with `digits` decimals and `unit` and, over several rounds,
    /// `(min–max)`.
    pub(super) fn show(&self, rounds: usize, digits: usize, unit: &str) -> String {
        let median = format!("{:>9.digits$}{unit}", self.median);
        if rounds > 1 {
            format!("{median}  ({:.digits$}–{:.digits$})", self.min, self.max)
        } else {
            median
        }
    }
}

pub(super) fn round(x: f64, digits: i32) -> f64 {
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

    fn spread(&self, f: impl Fn(&Round) -> f64) -> Spread {
        Spread::of(&self.rounds, f)
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
                    "reference_per_s": round(r.reference.per_s, 0),
                    "ratio_to_reference": round(r.ratio(), 3),
                    "reference_per_message_ack_per_s": round(r.per_message_ack.per_s, 0),
                    "ratio_to_per_message_ack_reference": round(r.ratio_per_message_ack(), 3),
                    "worker_peak_rss_mb": opt(r.worker_peak_rss_mb, 1),
                    "worker_cpu_s_per_1k": opt(self.per_1k(r.worker_cpu_s), 4),
                    "broker_cpu_s_per_1k": opt(self.per_1k(r.broker_cpu_s), 4),
                    "database_cpu_s_per_1k": opt(self.per_1k(r.database_cpu_s), 4),
                })
            })
            .collect();
        let mut figures = json!({
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
            "database_cpu_s_per_1k": opt(self.per_1k(m.database_cpu_s), 4),
            "rounds": rounds,
        });
        if let Value::Object(all) = &mut figures {
            all.extend(self.references_json());
            all.extend(self.quorum_json());
            all.extend(super::events::json_keys(&self.rounds, self.tasks));
        }
        figures
    }

    /// The figures of both references, their spreads over the rounds and
    /// the best loop's shape.
    fn references_json(&self) -> Map<String, Value> {
        let m = &self.median;
        let e2e = self.spread(|r| r.e2e_per_s);
        let best = self.spread(|r| r.reference.per_s);
        let per_msg = self.spread(|r| r.per_message_ack.per_s);
        let ratio = self.spread(Round::ratio);
        let ratio_per_msg = self.spread(Round::ratio_per_message_ack);
        let plan = &self.best_plan;
        let figures = json!({
            "e2e_min_per_s": round(e2e.min, 0),
            "e2e_max_per_s": round(e2e.max, 0),
            "reference_per_s": round(m.reference.per_s, 0),
            "reference_publish_per_s": round(m.reference.publish_per_s, 0),
            "reference_min_per_s": round(best.min, 0),
            "reference_max_per_s": round(best.max, 0),
            "reference_publishers": plan.publishers,
            "reference_confirm_window": plan.confirm_window,
            "reference_prefetch": plan.prefetch,
            "reference_ack_every": plan.ack_every,
            "ratio_to_reference": round(ratio.median, 3),
            "ratio_min": round(ratio.min, 3),
            "ratio_max": round(ratio.max, 3),
            "reference_per_message_ack_per_s": round(m.per_message_ack.per_s, 0),
            "reference_per_message_ack_publish_per_s": round(m.per_message_ack.publish_per_s, 0),
            "reference_per_message_ack_min_per_s": round(per_msg.min, 0),
            "reference_per_message_ack_max_per_s": round(per_msg.max, 0),
            "ratio_to_per_message_ack_reference": round(ratio_per_msg.median, 3),
            "ratio_to_per_message_ack_reference_min": round(ratio_per_msg.min, 3),
            "ratio_to_per_message_ack_reference_max": round(ratio_per_msg.max, 3),
        });
        match figures {
            Value::Object(map) => map,
            _ => Map::new(),
        }
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
        let n = self.rounds.len();
        if n > 1 {
            println!(
                "  {n} rounds, each the two references and then celeriac; the figures below are medians (min–max)"
            );
        }
        let plan = &self.best_plan;
        let mut rows: Vec<(String, String)> = vec![
            (
                "publish (confirmed)".into(),
                format!("{:>9.0} tasks/s", m.publish_per_s),
            ),
            (
                "end to end".into(),
                format!(
                    "{}  ({:.2} s)",
                    self.spread(|r| r.e2e_per_s).show(n, 0, " tasks/s"),
                    m.e2e_s
                ),
            ),
            (
                "best plain lapin reference".into(),
                format!(
                    "{}  ({} publishers, confirm window {}, prefetch {}, ack(multiple) per {})",
                    self.spread(|r| r.reference.per_s).show(n, 0, " msgs/s"),
                    plan.publishers,
                    plan.confirm_window,
                    plan.prefetch,
                    plan.ack_every
                ),
            ),
            (
                "per-message-ack reference".into(),
                format!(
                    "{}  ({} publishers each waiting for its confirm, prefetch {}, one ack each)",
                    self.spread(|r| r.per_message_ack.per_s)
                        .show(n, 0, " msgs/s"),
                    self.producers,
                    self.prefetch
                ),
            ),
            (
                "celeriac / best reference".into(),
                self.spread(Round::ratio).show(n, 2, ""),
            ),
            (
                "celeriac / per-message-ack reference".into(),
                self.spread(Round::ratio_per_message_ack).show(n, 2, ""),
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
        if m.database_cpu_s.is_some() {
            rows.push((
                "local database server CPU per 1,000".into(),
                secs(self.per_1k(m.database_cpu_s)),
            ));
        }
        rows.extend(self.quorum_rows());
        rows.extend(super::events::rows(&self.rounds, self.tasks));
        let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        for (k, v) in rows {
            println!("  {k:<width$}  {v}");
        }
        if self.rounds.len() > 1 {
            for (i, r) in self.rounds.iter().enumerate() {
                println!(
                    "  round {}: best reference {:.0} msgs/s, per-message-ack reference {:.0} msgs/s, end to end {:.0} tasks/s, ratio {:.2} (to per-message-ack {:.2}), worker CPU per 1,000 {}",
                    i + 1,
                    r.reference.per_s,
                    r.per_message_ack.per_s,
                    r.e2e_per_s,
                    r.ratio(),
                    r.ratio_per_message_ack(),
                    secs(self.per_1k(r.worker_cpu_s))
                );
            }
        }
    }
}

fn secs(v: Option<f64>) -> String {
    v.map_or("?".into(), |c| format!("{c:.3} s"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_at(e2e: f64, best: f64, per_message: f64) -> Round {
        let at = |per_s| Reference {
            per_s,
            publish_per_s: per_s,
        };
        Round {
            e2e_per_s: e2e,
            reference: at(best),
            per_message_ack: at(per_message),
            ..Round::default()
        }
    }

    #[test]
    fn ratios_are_to_the_best_and_to_the_per_message_ack_reference() {
        let r = round_at(100.0, 200.0, 50.0);
        assert_eq!(r.ratio(), 0.5);
        assert_eq!(r.ratio_per_message_ack(), 2.0);
    }

    #[test]
    fn spread_is_median_min_and_max_and_shows_the_range_over_rounds() {
        let rounds = [
            round_at(30.0, 1.0, 1.0),
            round_at(10.0, 1.0, 1.0),
            round_at(20.0, 1.0, 1.0),
        ];
        let s = Spread::of(&rounds, |r| r.e2e_per_s);
        assert_eq!((s.median, s.min, s.max), (20.0, 10.0, 30.0));
        assert_eq!(s.show(3, 0, " tasks/s"), "       20 tasks/s  (10–30)");
        assert_eq!(s.show(1, 2, ""), "    20.00");
    }
}

//! `--events`: each round also runs celeriac with task events on (a fresh
//! worker started as with `-E`, on a fresh queue), while a monitor drains
//! `celeryev` as Flower would (a queue of its own bound with `#`, message
//! TTL 5 s, auto-ack), counting the events it reads. Rounds alternate which
//! of the two runs goes first, so a slow minute of a shared machine does not
//! always hit the same one. Reported: end to end with events on, its ratio
//! to the same round's run with events off (median, least and greatest over
//! the rounds), the worker's CPU per 1,000 tasks, and events read per task.

use super::report::Round;
use crate::error::{BenchError, err};
use crate::stats::median;
use celeriac_common::{Config, broker};
use futures_util::StreamExt;
use lapin::options::{
    BasicConsumeOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use serde_json::{Map, Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// One round's run with task events on.
#[derive(Debug, Clone, Default)]
pub(super) struct EventsRun {
    pub(super) e2e_per_s: f64,
    pub(super) worker_cpu_s: Option<f64>,
    /// Events the monitor read during the run (warm-up and markers included).
    pub(super) events_seen: u64,
    /// Tasks sent through the worker (warm-up included).
    pub(super) tasks_sent: u64,
}

/// A monitor draining `celeryev`, counting what it reads.
pub(super) struct Drain {
    conn: lapin::Connection,
    seen: Arc<AtomicU64>,
    reader: tokio::task::JoinHandle<()>,
}

impl Drain {
    /// Binds a queue of its own to `celeryev` and starts reading it,
    /// counting the events of the worker called `hostname` (other
    /// processes on the broker may send events too).
    pub(super) async fn start(config: &Config, hostname: &str) -> Result<Drain, BenchError> {
        let conn = broker::connect_config(config, "celeriac-bench-events")
            .await
            .map_err(err("cannot connect the events monitor"))?;
        let ch = conn.create_channel().await.map_err(err("channel.open"))?;
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        };
        ch.exchange_declare(
            "celeryev".into(),
            lapin::ExchangeKind::Topic,
            durable,
            FieldTable::default(),
        )
        .await
        .map_err(err("cannot declare celeryev"))?;
        let mut args = FieldTable::default();
        args.insert("x-message-ttl".into(), AMQPValue::LongLongInt(5_000));
        let private = QueueDeclareOptions {
            exclusive: true,
            auto_delete: true,
            ..Default::default()
        };
        let q = ch
            .queue_declare("".into(), private, args)
            .await
            .map_err(err("cannot declare the events queue"))?;
        let name = q.name().as_str();
        ch.queue_bind(
            name.into(),
            "celeryev".into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(err("cannot bind the events queue"))?;
        let no_ack = BasicConsumeOptions {
            no_ack: true,
            ..Default::default()
        };
        let mut consumer = ch
            .basic_consume(name.into(), "".into(), no_ack, FieldTable::default())
            .await
            .map_err(err("cannot consume events"))?;
        let seen = Arc::new(AtomicU64::new(0));
        let count = seen.clone();
        let host = hostname.to_owned();
        let reader = tokio::spawn(async move {
            while let Some(Ok(delivery)) = consumer.next().await {
                count.fetch_add(events_of(&delivery.data, &host), Ordering::Relaxed);
            }
        });
        Ok(Drain { conn, seen, reader })
    }

    /// Stops reading (after the worker's last flush) and gives the count.
    pub(super) async fn stop(self) -> u64 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let seen = self.seen.load(Ordering::Relaxed);
        let _ = self.conn.close(200, "bench done".into()).await;
        self.reader.abort();
        seen
    }
}

/// An event, as far as the count needs it.
#[derive(serde::Deserialize)]
struct Sender {
    #[serde(default)]
    hostname: String,
}

/// Events of `host` in one message: a list (`<group>.multi`) or one object.
fn events_of(body: &[u8], host: &str) -> u64 {
    if let Ok(list) = serde_json::from_slice::<Vec<Sender>>(body) {
        return list.iter().filter(|e| e.hostname == host).count() as u64;
    }
    match serde_json::from_slice::<Sender>(body) {
        Ok(e) => u64::from(e.hostname == host),
        Err(_) => 0,
    }
}

/// The median, least and greatest of `f` over the rounds that ran with events.
fn spread(rounds: &[Round], f: impl Fn(&Round, &EventsRun) -> Option<f64>) -> Option<[f64; 3]> {
    let v: Vec<f64> = rounds
        .iter()
        .filter_map(|r| f(r, r.events.as_ref()?))
        .collect();
    if v.is_empty() {
        return None;
    }
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    Some([median(v), min, max])
}

fn ratio(r: &Round, e: &EventsRun) -> Option<f64> {
    Some(e.e2e_per_s / r.e2e_per_s)
}

fn per_task(_: &Round, e: &EventsRun) -> Option<f64> {
    Some(e.events_seen as f64 / e.tasks_sent.max(1) as f64)
}

/// The JSON keys `--events` adds (none without it).
pub(super) fn json_keys(rounds: &[Round], tasks: u64) -> Map<String, Value> {
    let mut out = Map::new();
    let r3 = |x: f64| (x * 1000.0).round() / 1000.0;
    let Some(e2e) = spread(rounds, |_, e| Some(e.e2e_per_s)) else {
        return out;
    };
    let ratio = spread(rounds, ratio).unwrap_or([f64::NAN; 3]);
    let cpu = spread(rounds, |_, e| {
        e.worker_cpu_s.map(|c| c / tasks as f64 * 1000.0)
    });
    let per_task = spread(rounds, per_task).unwrap_or([f64::NAN; 3]);
    out.insert("e2e_events_per_s".into(), json!(e2e[0].round()));
    out.insert("e2e_events_min_per_s".into(), json!(e2e[1].round()));
    out.insert("e2e_events_max_per_s".into(), json!(e2e[2].round()));
    out.insert("events_ratio".into(), json!(r3(ratio[0])));
    out.insert("events_ratio_min".into(), json!(r3(ratio[1])));
    out.insert("events_ratio_max".into(), json!(r3(ratio[2])));
    out.insert(
        "worker_cpu_s_per_1k_events".into(),
        json!(cpu.map(|c| (c[0] * 1e4).round() / 1e4)),
    );
    out.insert("events_per_task".into(), json!(r3(per_task[0])));
    out
}

/// The table rows `--events` adds (none without it).
pub(super) fn rows(rounds: &[Round], tasks: u64) -> Vec<(String, String)> {
    let keys = json_keys(rounds, tasks);
    if keys.is_empty() {
        return Vec::new();
    }
    let num = |k: &str| keys.get(k).and_then(Value::as_f64).unwrap_or(f64::NAN);
    let mut out = vec![
        (
            "end to end, task events on".into(),
            format!(
                "{:>9.0} tasks/s  ({:.0}–{:.0})",
                num("e2e_events_per_s"),
                num("e2e_events_min_per_s"),
                num("e2e_events_max_per_s")
            ),
        ),
        (
            "events on / off (same round)".into(),
            format!(
                "{:>9.3}  ({:.3}–{:.3})",
                num("events_ratio"),
                num("events_ratio_min"),
                num("events_ratio_max")
            ),
        ),
        (
            "events read by the monitor per task".into(),
            format!("{:>9.2}", num("events_per_task")),
        ),
    ];
    if let Some(cpu) = keys
        .get("worker_cpu_s_per_1k_events")
        .and_then(Value::as_f64)
    {
        out.push((
            "worker CPU per 1,000, events on".into(),
            format!("{cpu:.3} s"),
        ));
    }
    for (i, r) in rounds.iter().enumerate() {
        if let Some(e) = &r.events {
            out.push((
                format!("  round {}: events off / on", i + 1),
                format!(
                    "{:.0} / {:.0} tasks/s, ratio {:.3}, {} events read",
                    r.e2e_per_s,
                    e.e2e_per_s,
                    e.e2e_per_s / r.e2e_per_s,
                    e.events_seen
                ),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_the_workers_events_in_lists_and_single_messages() {
        let list = br#"[{"type": "task-received", "hostname": "w"},
            {"type": "task-started", "hostname": "w"}, {"type": "x", "hostname": "other"}]"#;
        assert_eq!(events_of(list, "w"), 2);
        assert_eq!(
            events_of(br#"{"type": "worker-heartbeat", "hostname": "w"}"#, "w"),
            1
        );
        assert_eq!(events_of(b"not json", "w"), 0);
        let on = |e2e| Round {
            e2e_per_s: 100.0,
            events: Some(EventsRun {
                e2e_per_s: e2e,
                events_seen: 300,
                tasks_sent: 100,
                ..EventsRun::default()
            }),
            ..Round::default()
        };
        let keys = json_keys(&[on(90.0), on(100.0), on(95.0)], 100);
        assert_eq!(keys["events_ratio"], 0.95);
        assert_eq!(keys["events_ratio_min"], 0.9);
        assert_eq!(keys["events_per_task"], 3.0);
        assert!(json_keys(&[Round::default()], 100).is_empty());
    }
}

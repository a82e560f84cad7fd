//! The plain references: lapin loops that move the same number of
//! celeriac's own messages (the task's exact body, headers and properties,
//! persistent, `mandatory`) through a queue declared as celeriac declares
//! its own, with publisher confirms and manual acks, and nothing else: no
//! decoding, no task, no outcome. Publishers and the consumer have their own
//! connections; the consumer is subscribed before the first publish.
//!
//! One loop, [`run`], in two shapes ([`Plan`]):
//!
//! * the **best plain reference** ([`Plan::best`]): what a plain program may
//!   do to go fast with the same guarantees. Publisher tasks (one by
//!   default), each on its own confirm-mode channel, keep up to
//!   `confirm_window` messages unconfirmed between them (new publishes go
//!   out while earlier confirms are pending, the broker confirms many at
//!   once); the consumer takes a large prefetch and acks once per
//!   `ack_every` messages with `basic.ack(multiple)` (and whatever is left
//!   after a short linger or at the last message). Its rate is the ceiling for celeriac, whose worker
//!   also acks with `multiple`.
//! * the **per-message-ack reference** ([`Plan::per_message_ack`]): the
//!   bench's original loop. The bench's `--producers` publishers share one
//!   channel and each waits for its confirm before the next publish; the
//!   consumer acks each message on its own at the worker's prefetch.
//!
//! Rate = N / (first publish → the later of the last confirm and the last
//! ack written to the socket).

use crate::error::BenchError;
use celeriac_common::Config;
use celeriac_common::broker;
use celeriac_common::cli::one_line;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Confirmation, Connection, Consumer};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long the best loop's consumer holds unacknowledged deliveries when
/// no new one arrives, before it acks them anyway.
const ACK_LINGER: Duration = Duration::from_millis(5);

/// The best loop's defaults: the fastest of the variants measured on the
/// bench's default run (see the `--reference-*` options). On the shared
/// 2-core test machine, windows of 64 to 10,000, prefetch 500 to 2,000, an
/// ack per 25 to 250 messages and 1 to 8 publishers were within the noise
/// of each other, against the per-message-ack loop of the same runs; one
/// publisher with a window of 10,000 came out ahead most often. More
/// publishers (channels) did not help there.
pub(crate) const BEST_PUBLISHERS: u64 = 1;
/// See [`BEST_PUBLISHERS`].
pub(crate) const BEST_CONFIRM_WINDOW: u64 = 10_000;
/// See [`BEST_PUBLISHERS`].
pub(crate) const BEST_PREFETCH: u16 = 1_000;
/// See [`BEST_PUBLISHERS`].
pub(crate) const BEST_ACK_EVERY: u16 = 100;

/// The shape of a reference loop.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Plan {
    /// Concurrent publisher tasks.
    pub(crate) publishers: u64,
    /// Whether each publisher has a channel of its own (else they share one).
    pub(crate) channel_each: bool,
    /// Messages published and not yet confirmed, at most, over all publishers.
    pub(crate) confirm_window: u64,
    /// The consumer's prefetch (`basic.qos`).
    pub(crate) prefetch: u16,
    /// 1: each message acked on its own; N > 1: one `basic.ack(multiple)`
    /// per N messages.
    pub(crate) ack_every: u16,
}

impl Plan {
    /// The best plain loop, tuned by the `--reference-*` options.
    pub(crate) fn best(
        publishers: u64,
        confirm_window: u64,
        prefetch: u16,
        ack_every: u16,
    ) -> Plan {
        Plan {
            publishers,
            channel_each: true,
            confirm_window,
            prefetch,
            ack_every,
        }
    }

    /// The per-message-ack loop: `producers` publishers on one channel, each
    /// waiting for its confirm, one ack per message at `prefetch`.
    pub(crate) fn per_message_ack(producers: u64, prefetch: u16) -> Plan {
        Plan {
            publishers: producers,
            channel_each: false,
            confirm_window: producers,
            prefetch,
            ack_every: 1,
        }
    }
}

/// What a reference loop measured.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Reference {
    /// Messages published (and confirmed) per second.
    pub(crate) publish_per_s: f64,
    /// Messages from the first publish to the last ack, per second.
    pub(crate) per_s: f64,
}

fn fail(what: &'static str) -> impl Fn(lapin::Error) -> BenchError {
    move |e| BenchError::new(format!("reference loop: {what} failed: {}", one_line(&e)))
}

/// The same message, `n` times, to one queue.
#[derive(Clone)]
pub(crate) struct Messages {
    /// The queue (declared here as celeriac declares a task queue).
    pub(crate) queue: String,
    /// How many.
    pub(crate) n: u64,
    /// celeriac's encoded task body.
    pub(crate) body: Arc<Vec<u8>>,
    /// celeriac's properties and headers for it.
    pub(crate) props: BasicProperties,
}

/// Moves `msgs` through their queue as `plan` says, within `timeout`.
pub(crate) async fn run(
    config: &Config,
    msgs: &Messages,
    plan: Plan,
    timeout: Duration,
) -> Result<Reference, BenchError> {
    let connect = |name: &'static str| async move {
        broker::connect_config(config, name)
            .await
            .map_err(|e| BenchError::new(one_line(&e)))
    };
    let pub_conn = connect("celeriac-bench-reference-publisher").await?;
    let sub_conn = match connect("celeriac-bench-reference-consumer").await {
        Ok(c) => c,
        Err(e) => {
            let _ = pub_conn.close(200, "bench done".into()).await;
            return Err(e);
        }
    };
    let outcome = tokio::time::timeout(timeout, measure(config, &pub_conn, &sub_conn, msgs, plan))
        .await
        .unwrap_or_else(|_| {
            Err(BenchError::new(format!(
                "reference loop: not done within {timeout:?}"
            )))
        });
    let _ = pub_conn.close(200, "bench done".into()).await;
    let _ = sub_conn.close(200, "bench done".into()).await;
    outcome
}

async fn measure(
    config: &Config,
    pub_conn: &Connection,
    sub_conn: &Connection,
    msgs: &Messages,
    plan: Plan,
) -> Result<Reference, BenchError> {
    let channels = if plan.channel_each {
        plan.publishers
    } else {
        1
    };
    let mut pub_chs = Vec::new();
    for _ in 0..channels {
        let ch = pub_conn
            .create_channel()
            .await
            .map_err(fail("channel.open"))?;
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(fail("confirm.select"))?;
        pub_chs.push(ch);
    }
    broker::declare_task_queue(&pub_chs[0], &msgs.queue, config)
        .await
        .map_err(|e| BenchError::new(one_line(&e)))?;
    let sub_ch = sub_conn
        .create_channel()
        .await
        .map_err(fail("channel.open"))?;
    sub_ch
        .basic_qos(plan.prefetch, BasicQosOptions { global: false })
        .await
        .map_err(fail("basic.qos"))?;
    let consumer = sub_ch
        .basic_consume(
            msgs.queue.as_str().into(),
            "celeriac-bench-reference".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(fail("basic.consume"))?;
    let consume = tokio::spawn(consume(consumer, msgs.n, plan.ack_every));

    let start = Instant::now();
    let window = plan.confirm_window.div_ceil(plan.publishers).max(1);
    let mut publishers = Vec::new();
    for i in 0..plan.publishers {
        // The messages, split as evenly as can be.
        let count = msgs.n / plan.publishers + u64::from(i < msgs.n % plan.publishers);
        let ch = pub_chs[(i % channels) as usize].clone();
        publishers.push(tokio::spawn(publish(ch, msgs.clone(), count, window)));
    }
    for p in publishers {
        p.await
            .map_err(|e| BenchError::new(format!("reference publisher: {e}")))??;
    }
    let published = Instant::now();
    let consumed = consume
        .await
        .map_err(|e| BenchError::new(format!("reference consumer: {e}")))??;
    let _ = sub_ch.close(200, "bench done".into()).await;
    for ch in pub_chs {
        let _ = ch.close(200, "bench done".into()).await;
    }
    Ok(Reference {
        publish_per_s: msgs.n as f64 / (published - start).as_secs_f64(),
        per_s: msgs.n as f64 / (consumed.max(published) - start).as_secs_f64(),
    })
}

/// Publishes `count` of `msgs` on `ch`, with up to `window` unconfirmed.
async fn publish(ch: Channel, msgs: Messages, count: u64, window: u64) -> Result<(), BenchError> {
    let mut in_flight = FuturesUnordered::new();
    let mut left = count;
    loop {
        while left > 0 && (in_flight.len() as u64) < window {
            let (ch, msgs) = (ch.clone(), msgs.clone());
            in_flight.push(async move {
                ch.basic_publish(
                    "".into(),
                    msgs.queue.as_str().into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..Default::default()
                    },
                    &msgs.body,
                    msgs.props,
                )
                .await
                .map_err(fail("basic.publish"))?
                .await
                .map_err(fail("publisher confirm"))
            });
            left -= 1;
        }
        match in_flight.next().await {
            Some(Ok(Confirmation::Ack(None))) => {}
            Some(Ok(other)) => {
                return Err(BenchError::new(format!(
                    "reference loop: message not confirmed: {other:?}"
                )));
            }
            Some(Err(e)) => return Err(e),
            None => return Ok(()),
        }
    }
}

/// Takes `n` deliveries, acking each (`ack_every` 1) or one
/// `basic.ack(multiple)` per `ack_every`; the instant of the last ack.
async fn consume(mut consumer: Consumer, n: u64, ack_every: u16) -> Result<Instant, BenchError> {
    let mut seen = 0u64;
    let mut unacked = 0u16;
    let mut last = None;
    while seen < n {
        let next = if unacked > 0 {
            tokio::time::timeout(ACK_LINGER, consumer.next()).await
        } else {
            Ok(consumer.next().await)
        };
        let delivery = match next {
            Ok(Some(Ok(d))) => d,
            Ok(Some(Err(e))) => return Err(fail("basic.consume")(e)),
            Ok(None) => return Err(BenchError::new("reference consumer cancelled")),
            Err(_lingered) => {
                ack_up_to(last.take(), true).await?;
                unacked = 0;
                continue;
            }
        };
        seen += 1;
        unacked += 1;
        last = Some(delivery.acker);
        if unacked >= ack_every || seen == n {
            ack_up_to(last.take(), ack_every > 1).await?;
            unacked = 0;
        }
    }
    Ok(Instant::now())
}

async fn ack_up_to(acker: Option<lapin::Acker>, multiple: bool) -> Result<(), BenchError> {
    if let Some(a) = acker {
        a.ack(BasicAckOptions { multiple })
            .await
            .map_err(fail("basic.ack"))?;
    }
    Ok(())
}

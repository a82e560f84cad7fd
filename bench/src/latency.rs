//! `celeriac-bench latency`: the latency floor under the bench's latency
//! figure (`celeriac-bench` with no subcommand): plain lapin,
//! no celeriac, from just before a publish to the moment a consumer in
//! another process has the message, at a fixed rate, with celeriac's
//! message properties and headers, persistent, with publisher confirms.
//! Both sides run a one-thread tokio runtime, as the stock worker does.
//!
//! With `--client`, the messages are sent with celeriac's `Client`
//! (`send_task`, the timestamp as the task's argument) to the same plain
//! consumer: the difference to the plain run is the producer's share of
//! the bench's latency, the rest is the worker's.
//!
//! Run (release build; RabbitMQ from `--broker` / `CELERIAC_BROKER_URL`):
//! `cargo run --release -p celeriac-bench -- latency --messages 2000 --rate 500`
//! It starts itself a second time as the consumer, prints p50 / p99 / max
//! (nearest-rank, [`crate::stats`]) and deletes its queue.

use crate::error::BenchError;
use crate::stats::Samples;
use celeriac::{ApplyOptions, Client, Config};
use celeriac_common::{TaskMessage, broker};
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Flags of `celeriac-bench latency`.
#[derive(Debug, clap::Args)]
pub(crate) struct LatencyArgs {
    /// Messages to time.
    #[arg(long, default_value_t = 2_000)]
    messages: u32,
    /// Messages per second.
    #[arg(long, default_value_t = 500.0)]
    rate: f64,
    /// Publish with celeriac's `Client` instead of a plain `basic_publish`.
    #[arg(long)]
    client: bool,
    /// Pad each plain probe's body to this many bytes (a large message,
    /// such as a chord callback carrying 10,000 results: about 50,000).
    #[arg(long, default_value_t = 0, conflicts_with = "client")]
    body_bytes: usize,
    /// Internal: consume this queue and print the latencies.
    #[arg(long, hide = true)]
    consume: Option<String>,
}

/// Runs the probe (or, with `--consume`, its consumer side). Both run on a
/// one-thread runtime, which the caller provides.
pub(crate) async fn run(args: LatencyArgs, config: Config) -> Result<(), BenchError> {
    match &args.consume {
        Some(queue) => consume(&config, queue).await,
        None => publish(&config, &args).await,
    }
}

/// Wall-clock nanoseconds: both processes read the same clock.
fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

async fn declare(
    config: &Config,
    queue: &str,
) -> Result<(lapin::Connection, lapin::Channel), BenchError> {
    let conn = broker::connect_config(config, "latency-probe").await?;
    let ch = conn.create_channel().await?;
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    ch.queue_declare(queue.into(), durable, FieldTable::default())
        .await?;
    Ok((conn, ch))
}

/// Receives until the empty end marker; prints the latencies of the others.
async fn consume(config: &Config, queue: &str) -> Result<(), BenchError> {
    let (_conn, ch) = declare(config, queue).await?;
    ch.basic_qos(128, BasicQosOptions::default()).await?;
    let mut deliveries = ch
        .basic_consume(
            queue.into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    println!("ready");
    let mut ms = Vec::new();
    while let Some(delivery) = deliveries.next().await {
        let delivery = delivery?;
        let at = now_ns();
        delivery.acker.ack(BasicAckOptions::default()).await?;
        let Some(sent) = sent_at(&delivery.data) else {
            break;
        };
        ms.push(at.saturating_sub(sent) as f64 / 1e6);
    }
    let ms = Samples::new(ms);
    let at = |v: Option<f64>| v.unwrap_or(0.0);
    println!(
        "latency to a plain lapin consumer, {} messages: p50 {:.3} / p99 {:.3} / max {:.3} ms",
        ms.len(),
        at(ms.percentile(50.0)),
        at(ms.percentile(99.0)),
        at(ms.max())
    );
    ch.queue_delete(queue.into(), QueueDeleteOptions::default())
        .await?;
    Ok(())
}

/// The send instant in a message: a plain probe's body is the number
/// (padded with spaces), a celeriac task's body is `[[number], {}, {...}]`.
/// Anything else ends the run.
fn sent_at(body: &[u8]) -> Option<u128> {
    let text = std::str::from_utf8(body).ok()?;
    if let Ok(ns) = text.trim_end().parse::<u128>() {
        return Some(ns);
    }
    let value: serde_json::Value = serde_json::from_str(text).ok()?;
    value.get(0)?.get(0)?.as_str()?.parse().ok()
}

async fn publish(config: &Config, args: &LatencyArgs) -> Result<(), BenchError> {
    let queue = format!("celeriac-latency-probe-{}", uuid::Uuid::new_v4().simple());
    let (_conn, ch) = declare(config, &queue).await?;
    // The same broker and TLS settings, whether they came from flags, the
    // environment or a config file.
    let mut consumer = Command::new(std::env::current_exe()?);
    consumer
        .args(["latency", "--consume", &queue])
        .env("CELERIAC_BROKER_URL", &config.broker_url)
        .stdout(Stdio::piped());
    for (var, file) in [
        ("CELERIAC_BROKER_TLS_CA_FILE", &config.broker_tls_ca_file),
        (
            "CELERIAC_BROKER_TLS_CLIENT_CERT",
            &config.broker_tls_client_cert,
        ),
        (
            "CELERIAC_BROKER_TLS_CLIENT_KEY",
            &config.broker_tls_client_key,
        ),
    ] {
        if let Some(f) = file {
            consumer.env(var, f);
        }
    }
    let mut consumer = consumer.spawn()?;
    let stdout = consumer
        .stdout
        .take()
        .ok_or_else(|| BenchError::new("no consumer output"))?;
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
    if !matches!(lines.next(), Some(Ok(l)) if l == "ready") {
        return Err(BenchError::new("the consumer did not start"));
    }
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    let client = if args.client {
        Some(Client::connect(config.clone()).await?)
    } else {
        None
    };
    let props = TaskMessage::new("celeriac.noop", vec![], Default::default()).properties()?;
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / args.rate.max(1.0)));
    for i in 0..=args.messages {
        tick.tick().await;
        let last = i == args.messages;
        if let (Some(client), false) = (&client, last) {
            // A string: JSON numbers above 2^53 do not survive every decoder.
            let at = serde_json::Value::from(now_ns().to_string());
            let to_queue = ApplyOptions::new().queue(queue.clone());
            client
                .send_task("celeriac.noop", vec![at], Default::default(), to_queue)
                .await?;
            continue;
        }
        // The last message, empty, tells the consumer to stop.
        let body = if last {
            String::new()
        } else {
            format!("{:<width$}", now_ns(), width = args.body_bytes)
        };
        ch.basic_publish(
            "".into(),
            queue.as_str().into(),
            BasicPublishOptions::default(),
            body.as_bytes(),
            props.clone(),
        )
        .await?
        .await?;
    }
    for line in lines {
        println!("{}", line?);
    }
    consumer.wait()?;
    Ok(())
}

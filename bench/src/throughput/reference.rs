//! The plain reference: a minimal lapin loop that moves the same number of
//! same-size messages through a queue declared as celeriac declares its own,
//! with the same guarantees on the broker side (persistent messages,
//! publisher confirms, per-message acks at the same prefetch), and nothing
//! else. Its rate is the ceiling the broker allows on this machine.

use crate::error::BenchError;
use celeriac_common::Config;
use celeriac_common::broker;
use celeriac_common::cli::one_line;
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Confirmation};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// What the reference loop measured.
pub(crate) struct Reference {
    /// Messages published (and confirmed) per second.
    pub(crate) publish_per_s: f64,
    /// Messages from the first publish to the last ack, per second.
    pub(crate) per_s: f64,
}

fn fail(what: &'static str) -> impl Fn(lapin::Error) -> BenchError {
    move |e| BenchError::new(format!("reference loop: {what} failed: {}", one_line(&e)))
}

/// Publishes `n` copies of `body`/`props` to `queue` from `producers`
/// concurrent publishers on one confirm-mode channel (as celeriac's `Client`
/// does), while one consumer on its own connection acks each message at
/// `prefetch`.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn run(
    config: &Config,
    queue: &str,
    n: u64,
    producers: u64,
    prefetch: u16,
    body: Arc<Vec<u8>>,
    props: BasicProperties,
    timeout: Duration,
) -> Result<Reference, BenchError> {
    let connect = |name: &'static str| async move {
        broker::connect_config(config, name)
            .await
            .map_err(|e| BenchError::new(one_line(&e)))
    };
    let pub_conn = connect("celeriac-bench-reference-publisher").await?;
    let sub_conn = connect("celeriac-bench-reference-consumer").await?;
    let outcome = async {
        let pub_ch = pub_conn
            .create_channel()
            .await
            .map_err(fail("channel.open"))?;
        pub_ch
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(fail("confirm.select"))?;
        broker::declare_task_queue(&pub_ch, queue, config)
            .await
            .map_err(|e| BenchError::new(one_line(&e)))?;
        let sub_ch = sub_conn
            .create_channel()
            .await
            .map_err(fail("channel.open"))?;
        sub_ch
            .basic_qos(prefetch, BasicQosOptions { global: false })
            .await
            .map_err(fail("basic.qos"))?;
        let mut consumer = sub_ch
            .basic_consume(
                queue.into(),
                "celeriac-bench-reference".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(fail("basic.consume"))?;
        let consume = tokio::spawn(async move {
            let mut seen = 0u64;
            while seen < n {
                match consumer.next().await {
                    Some(Ok(delivery)) => {
                        delivery
                            .acker
                            .ack(BasicAckOptions::default())
                            .await
                            .map_err(fail("basic.ack"))?;
                        seen += 1;
                    }
                    Some(Err(e)) => return Err(fail("basic.consume")(e)),
                    None => return Err(BenchError::new("reference consumer cancelled")),
                }
            }
            Ok(Instant::now())
        });
        let next = Arc::new(AtomicU64::new(0));
        let start = Instant::now();
        let mut publishers = Vec::new();
        for _ in 0..producers {
            let ch = pub_ch.clone();
            let next = next.clone();
            let body = body.clone();
            let props = props.clone();
            let queue = queue.to_owned();
            publishers.push(tokio::spawn(async move {
                while next.fetch_add(1, Ordering::Relaxed) < n {
                    let confirm = ch
                        .basic_publish(
                            "".into(),
                            queue.as_str().into(),
                            BasicPublishOptions {
                                mandatory: true,
                                ..Default::default()
                            },
                            &body,
                            props.clone(),
                        )
                        .await
                        .map_err(fail("basic.publish"))?
                        .await
                        .map_err(fail("publisher confirm"))?;
                    if !matches!(confirm, Confirmation::Ack(None)) {
                        return Err(BenchError::new(format!(
                            "reference loop: message not confirmed: {confirm:?}"
                        )));
                    }
                }
                Ok::<(), BenchError>(())
            }));
        }
        let all = async {
            for p in publishers {
                p.await
                    .map_err(|e| BenchError::new(format!("reference publisher: {e}")))??;
            }
            let published = Instant::now();
            let consumed = consume
                .await
                .map_err(|e| BenchError::new(format!("reference consumer: {e}")))??;
            Ok::<_, BenchError>((published, consumed))
        };
        let (published, consumed) = tokio::time::timeout(timeout, all).await.map_err(|_| {
            BenchError::new(format!("reference loop: not done within {timeout:?}"))
        })??;
        let _ = sub_ch.close(200, "bench done".into()).await;
        let _ = pub_ch.close(200, "bench done".into()).await;
        Ok(Reference {
            publish_per_s: n as f64 / (published - start).as_secs_f64(),
            per_s: n as f64 / (consumed.max(published) - start).as_secs_f64(),
        })
    }
    .await;
    let _ = pub_conn.close(200, "bench done".into()).await;
    let _ = sub_conn.close(200, "bench done".into()).await;
    outcome
}

//! The floor under beat's crowd: a plain lapin program publishes as many
//! messages as the crowd, of the same shape (a task message with an `eta`
//! and beat's two headers), all at once on one confirm-mode channel of its
//! own connection, to the bench's queue; each message's figure is the time
//! from the first publish to its confirm. What beat's crowd lateness adds
//! to this is beat's own cost.

use celeriac_common::Config;
use celeriac_common::broker;
use celeriac_common::protocol::TaskMessage;
use chrono::Utc;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use lapin::Confirmation;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use serde_json::{Map, json};
use std::time::Instant;

use crate::error::{BenchError, err};
use crate::stats::Samples;

/// Publishes `n` messages to `queue` at once; milliseconds from the first
/// publish to each confirm.
pub(crate) async fn plain_burst(
    config: &Config,
    queue: &str,
    n: usize,
) -> Result<Samples, BenchError> {
    let conn = broker::connect_config(config, "celeriac-bench-beat-floor").await?;
    let ch = conn.create_channel().await.map_err(err("channel"))?;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(err("confirm.select"))?;
    broker::declare_task_queue(&ch, queue, config).await?;
    let now = Utc::now();
    let mut msg = TaskMessage::new("celeriac.noop", Vec::new(), Map::new());
    msg.eta = Some(now.fixed_offset());
    msg.extra_headers = [
        ("beat_entry".to_owned(), json!("burst-000000")),
        ("beat_scheduled_at".to_owned(), json!(now.to_rfc3339())),
    ]
    .into_iter()
    .collect();
    let body = msg.encode_body()?;
    let props = msg.properties()?;
    let start = Instant::now();
    let mut confirms = FuturesUnordered::new();
    for _ in 0..n {
        let confirm = ch
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                &body,
                props.clone(),
            )
            .await
            .map_err(err("basic.publish"))?;
        confirms.push(confirm);
    }
    let mut ms = Vec::with_capacity(n);
    while let Some(c) = confirms.next().await {
        match c.map_err(err("publisher confirm"))? {
            Confirmation::Ack(None) => ms.push(start.elapsed().as_secs_f64() * 1e3),
            other => return Err(BenchError::new(format!("not confirmed: {other:?}"))),
        }
    }
    let _ = conn.close(200, "done".into()).await;
    Ok(Samples::new(ms))
}

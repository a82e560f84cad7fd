//! Deleting what a benchmark declared on the broker, at its end, also after
//! an error (best effort: a failure is one line on stderr).

use celeriac_common::cli::one_line;
use celeriac_common::{Config, broker};
use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};

/// Deletes `queues` and `exchanges`; a fresh channel after any failure (a
/// failed operation closes the channel).
pub(crate) async fn delete_queues(config: &Config, queues: &[String], exchanges: &[String]) {
    let conn = match broker::connect_config(config, "celeriac-bench-cleanup").await {
        Ok(c) => c,
        Err(e) => {
            eprintln!(
                "celeriac-bench: cannot delete queues {queues:?}: {}",
                one_line(&e)
            );
            return;
        }
    };
    let mut channel = conn.create_channel().await.ok();
    let all = queues
        .iter()
        .map(|q| (q, false))
        .chain(exchanges.iter().map(|e| (e, true)));
    for (name, exchange) in all {
        let Some(ch) = &channel else { break };
        let res = if exchange {
            ch.exchange_delete(name.as_str().into(), ExchangeDeleteOptions::default())
                .await
        } else {
            ch.queue_delete(name.as_str().into(), QueueDeleteOptions::default())
                .await
                .map(|_| ())
        };
        if let Err(e) = res {
            eprintln!("celeriac-bench: cannot delete {name}: {}", one_line(&e));
            channel = conn.create_channel().await.ok();
        }
    }
    // Dropped open, a channel's close would race the connection's.
    if let Some(ch) = channel {
        let _ = ch.close(200, "bench cleanup".into()).await;
    }
    let _ = conn.close(200, "bench cleanup".into()).await;
}

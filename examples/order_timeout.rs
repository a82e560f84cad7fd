//! Order timeout: "cancel this order if it is not paid in time", with
//! `apply_at`. The cancellation is scheduled durably in RabbitMQ's delay
//! queues when the order is placed; paying revokes it.
//!
//! Run: `cargo run -p celeriac-examples --example order_timeout` (RabbitMQ
//! on localhost; `scripts/ensure-services.sh` starts it). You should see
//! order 1 paid and its cancellation revoked, and order 2 cancelled about
//! 3 seconds after it was placed. Real apps use minutes or days: the wait
//! lives in the broker, so workers can restart meanwhile.

use celeriac::{Client, Config, TaskDef};
use celeriac_worker::{TaskFailure, Worker};
use chrono::{Duration, Utc};
use serde::{Deserialize, Serialize};
use std::time::Duration as StdDuration;

/// `orders.cancel_unpaid(order_id)`: cancels the order if it is still unpaid.
struct CancelUnpaid;
impl TaskDef for CancelUnpaid {
    const NAME: &'static str = "orders.cancel_unpaid";
    type Args = CancelArgs;
    type Output = String;
}

#[derive(Debug, Serialize, Deserialize)]
struct CancelArgs {
    order_id: u64,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    celeriac_common::telemetry::init(celeriac_common::config::LogFormat::Human, "warn");
    let mut config = Config::load(None)?;
    if std::env::var_os("CELERIAC_RESULT_BACKEND").is_none() {
        config.result_backend = "sqlite://celeriac-orders.db?mode=rwc".into();
    }
    config.default_queue = "celeriac-orders".into();
    config.queues = vec![config.default_queue.clone()];

    let worker = Worker::builder(config.clone())
        .register::<CancelUnpaid, _, _, _>(|ctx, args: CancelArgs| async move {
            // A real app would check the order's state in its database here.
            let msg = format!(
                "order {} cancelled at {} (due {:?})",
                args.order_id,
                Utc::now().format("%H:%M:%S%.3f"),
                ctx.eta.map(|e| e.format("%H:%M:%S%.3f").to_string())
            );
            println!("{msg}");
            Ok::<_, TaskFailure>(msg)
        })
        .build()
        .await?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = tokio::spawn(worker.run_until(async move {
        let _ = stopped.await;
    }));

    let client = Client::connect(config).await?;
    let timeout = Duration::seconds(3);
    println!(
        "orders 1 and 2 placed at {}; unpaid orders are cancelled after {} s",
        Utc::now().format("%H:%M:%S%.3f"),
        timeout.num_seconds()
    );
    let cancel_1 = client
        .apply_at::<CancelUnpaid>(Utc::now() + timeout, CancelArgs { order_id: 1 })
        .await?;
    let cancel_2 = client
        .apply_at::<CancelUnpaid>(Utc::now() + timeout, CancelArgs { order_id: 2 })
        .await?;

    tokio::time::sleep(StdDuration::from_secs(1)).await;
    println!("order 1 paid: revoking its cancellation {}", cancel_1.id());
    client.revoke(cancel_1.id()).await?;

    let outcome = cancel_2.get(StdDuration::from_secs(30)).await?;
    println!("order 2: {outcome}");
    println!("order 1 cancellation: {}", cancel_1.state().await?);
    let _ = stop.send(());
    worker.await??;
    Ok(())
}

//! A workflow as one expression: fetch an image, make two thumbnails in
//! parallel, then store both — T1 → (T2, T3) → T4, a chain around a chord.
//!
//! Run: `cargo run -p celeriac-examples --example workflow` (RabbitMQ on
//! localhost; `scripts/ensure-services.sh rabbitmq` starts it). The example
//! starts a worker in-process for its three tasks; with several
//! `Worker::builder` processes registering them, the steps spread over
//! them and the chord's callback still runs exactly once. You should see
//! the two thumbnails made in parallel, then one line from `store` with
//! both, and the workflow's tree with every step SUCCESS.

use celeriac::canvas::{TaskSignatures, group};
use celeriac::{Client, Config, TaskDef};
use celeriac_worker::{TaskFailure, Worker};
use std::time::Duration;

/// `images.fetch(url) -> image`: T1.
struct Fetch;
impl TaskDef for Fetch {
    const NAME: &'static str = "images.fetch";
    type Args = (String,);
    type Output = String;
}

/// `images.resize(image, size) -> thumbnail`: T2 and T3.
struct Resize;
impl TaskDef for Resize {
    const NAME: &'static str = "images.resize";
    type Args = (String, u32);
    type Output = String;
}

/// `images.store(thumbnails) -> summary`: T4, the chord's callback.
struct Store;
impl TaskDef for Store {
    const NAME: &'static str = "images.store";
    type Args = (Vec<String>,);
    type Output = String;
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    celeriac_common::telemetry::init(celeriac_common::config::LogFormat::Human, "warn");
    let mut config = Config::load(None)?;
    if std::env::var_os("CELERIAC_RESULT_BACKEND").is_none() {
        config.result_backend = "sqlite://celeriac-workflow.db?mode=rwc".into();
    }
    config.default_queue = "celeriac-workflow".into();
    config.queues = vec![config.default_queue.clone()];

    let worker = Worker::builder(config.clone())
        .register::<Fetch, _, _, _>(|_ctx, (url,)| async move {
            Ok::<_, TaskFailure>(format!("image({url})"))
        })
        .register::<Resize, _, _, _>(|_ctx, (image, size)| async move {
            println!("resize: {image} to {size} px");
            tokio::time::sleep(Duration::from_millis(200)).await;
            Ok::<_, TaskFailure>(format!("{image}@{size}"))
        })
        .register::<Store, _, _, _>(|_ctx, (thumbnails,)| async move {
            println!("store: {thumbnails:?}");
            Ok::<_, TaskFailure>(format!("stored {} thumbnails", thumbnails.len()))
        })
        .build()
        .await?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = tokio::spawn(worker.run_until(async move {
        let _ = stopped.await;
    }));

    let client = Client::connect(config).await?;
    // T1 → (T2, T3) → T4: each step's result is prepended to the next
    // one's arguments; the group followed by a task becomes a chord.
    let flow = Fetch::s(("https://example.invalid/cat.png".to_owned(),))
        | group([Resize::partial((64,)), Resize::partial((256,))])
        | Store::partial(());
    let result = client.send_workflow(&flow).await?;
    let summary = result.get(Duration::from_secs(30)).await?;
    println!("workflow {}: {summary}", result.id());

    // The tree, walked back from the last step.
    let mut step = Some(&result);
    while let Some(node) = step {
        match node.as_group() {
            Some(members) => {
                for record in members.wait(Duration::from_secs(5)).await? {
                    println!("  group member {} {}", record.task_id, record.state);
                }
            }
            None => {
                let record = client
                    .async_result::<serde_json::Value>(node.id())
                    .wait(Duration::from_secs(5))
                    .await?;
                let name = record.task_name.unwrap_or_default();
                println!("  {name} {} {}", record.task_id, record.state);
            }
        }
        step = node.parent();
    }
    let _ = stop.send(());
    worker.await??;
    Ok(())
}

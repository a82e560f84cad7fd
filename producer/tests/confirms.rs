//! Concurrent sends from one `Client` share its channel: a send is reported
//! sent only if the broker took that very message. A policy makes one queue
//! refuse every publish (`max-length` 0, `reject-publish`); sends to it and
//! to a queue that takes everything race from several threads. A refused
//! send reported sent, or a taken one sent twice (it got a refusal that was
//! not its own, and was sent again), means confirms were paired with the
//! wrong messages.

use celeriac::{ApplyOptions, Client};
use celeriac_common::broker;
use celeriac_common::testing::vhost::{TestVhost, rabbitmqctl};
use celeriac_common::testing::{self, unique};
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use serde_json::Map;

const SENDERS: usize = 64;
const EACH: usize = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_sends_report_only_their_own_confirms() {
    let vhost = TestVhost::create("confirms").expect("vhost");
    let policy = r#"{"max-length":0,"overflow":"reject-publish"}"#;
    rabbitmqctl(&[
        "set_policy",
        "-p",
        &vhost.name,
        "--apply-to",
        "queues",
        "refuse",
        "[.]refuses$",
        policy,
    ])
    .expect("set_policy");
    let (takes, refuses) = (unique("takes"), format!("{}.refuses", unique("q")));
    let mut config = testing::config("none", &takes);
    config.broker_url = vhost.url.clone();
    config.publish_timeout_secs = 1;
    let client = Client::connect(config).await.expect("client");

    let mut senders = tokio::task::JoinSet::new();
    for s in 0..SENDERS {
        let (client, takes, refuses) = (client.clone(), takes.clone(), refuses.clone());
        senders.spawn(async move {
            let (mut taken, mut wrong) = (0, Vec::new());
            for i in 0..EACH {
                let refused = (s + i) % 2 == 0;
                let queue = if refused { &refuses } else { &takes };
                let opts = ApplyOptions::new().queue(queue.as_str());
                let sent = client.send_task("t.noop", vec![], Map::new(), opts).await;
                match (refused, sent) {
                    (false, Ok(_)) => taken += 1,
                    (true, Err(_)) => {}
                    (false, Err(e)) => wrong.push(format!("taken but failed: {e}")),
                    (true, Ok(r)) => wrong.push(format!("refused but sent: {}", r.id())),
                }
            }
            (taken, wrong)
        });
    }
    let (mut taken, mut wrong) = (0, Vec::new());
    while let Some(done) = senders.join_next().await {
        let (t, w) = done.expect("sender");
        taken += t;
        wrong.extend(w);
    }
    client.close().await;

    let conn = broker::connect(&vhost.url, "confirms-count")
        .await
        .expect("connect");
    let ch = conn.create_channel().await.expect("channel");
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let q = ch
        .queue_declare(takes.as_str().into(), passive, FieldTable::default())
        .await
        .expect("passive declare");
    let _ = conn.close(200, "done".into()).await;
    assert!(
        wrong.is_empty(),
        "{} wrong: {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    );
    assert_eq!(taken, SENDERS * EACH / 2);
    assert_eq!(
        q.message_count() as usize,
        taken,
        "messages in the accepting queue (more: a send was repeated after another's nack)"
    );
}

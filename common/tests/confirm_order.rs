//! Publisher confirms on a channel shared by concurrent publishers: each
//! publish must get its own message's confirm. One queue takes everything,
//! the other (`x-max-length 0`, `reject-publish`) nacks everything, and
//! publishes to both race on one channel from several threads: a confirm
//! paired with the wrong publish shows as a nack for a message the first
//! queue took, or an ack for one the second refused.

use celeriac_common::broker;
use celeriac_common::testing::{broker_url, delete_queues, unique};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Confirmation};
use std::sync::Arc;

const PUBLISHERS: usize = 64;
const EACH: usize = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_publishes_on_one_channel_get_their_own_confirms() {
    let (takes, refuses) = (unique("confirm-takes"), unique("confirm-refuses"));
    let conn = broker::connect(&broker_url(), "confirm-order")
        .await
        .expect("connect");
    let ch = conn.create_channel().await.expect("channel");
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirm.select");
    let declare = |name: &str, args: FieldTable| {
        let ch = ch.clone();
        let name = name.to_owned();
        async move {
            ch.queue_declare(name.as_str().into(), QueueDeclareOptions::default(), args)
                .await
                .expect("declare");
        }
    };
    declare(&takes, FieldTable::default()).await;
    let mut refusing = FieldTable::default();
    refusing.insert("x-max-length".into(), AMQPValue::LongInt(0));
    let overflow = AMQPValue::LongString(LongString::from("reject-publish"));
    refusing.insert("x-overflow".into(), overflow);
    declare(&refuses, refusing).await;

    let order = Arc::new(broker::PublishOrder::default());
    let mut publishers = tokio::task::JoinSet::new();
    for p in 0..PUBLISHERS {
        let (ch, order) = (ch.clone(), order.clone());
        let (takes, refuses) = (takes.clone(), refuses.clone());
        publishers.spawn(async move {
            let mut wrong = 0;
            for i in 0..EACH {
                let refused = (p + i) % 2 == 0;
                let queue = if refused { &refuses } else { &takes };
                let confirm = order
                    .publish(
                        &ch,
                        "",
                        queue,
                        BasicPublishOptions::default(),
                        b"x",
                        BasicProperties::default(),
                    )
                    .await
                    .expect("publish")
                    .await
                    .expect("confirm");
                let nacked = matches!(confirm, Confirmation::Nack(_));
                wrong += usize::from(nacked != refused);
            }
            wrong
        });
    }
    let mut wrong = 0;
    while let Some(w) = publishers.join_next().await {
        wrong += w.expect("publisher");
    }
    let _ = conn.close(200, "done".into()).await;
    delete_queues(&[&takes, &refuses]).await;
    assert_eq!(
        wrong,
        0,
        "{wrong} of {} publishes got another message's confirm",
        PUBLISHERS * EACH
    );
}

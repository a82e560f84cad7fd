//! Celery's `task-sent` event, read from a queue bound to `celeryev` as
//! monitors bind one: sent for each task when `task_send_sent_event` is
//! on, with Celery's fields; not sent when it is off (the default).

use celeriac::{ApplyOptions, Client};
use celeriac_common::broker;
use celeriac_common::testing::{self, unique};
use futures_util::StreamExt;
use lapin::options::{
    BasicConsumeOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use serde_json::{Map, Value, json};
use std::time::Duration;

/// A private queue bound to `celeryev` for `task.sent`.
async fn monitor() -> (lapin::Connection, lapin::Consumer) {
    let conn = broker::connect(&testing::broker_url(), "task-sent-monitor")
        .await
        .expect("connect");
    let ch = conn.create_channel().await.expect("channel");
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
    .expect("declare celeryev");
    let private = QueueDeclareOptions {
        exclusive: true,
        auto_delete: true,
        ..Default::default()
    };
    let q = ch
        .queue_declare("".into(), private, FieldTable::default())
        .await
        .expect("queue");
    ch.queue_bind(
        q.name().as_str().into(),
        "celeryev".into(),
        "task.sent".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("bind");
    let no_ack = BasicConsumeOptions {
        no_ack: true,
        ..Default::default()
    };
    let consumer = ch
        .basic_consume(
            q.name().as_str().into(),
            "".into(),
            no_ack,
            FieldTable::default(),
        )
        .await
        .expect("consume");
    (conn, consumer)
}

/// The next `task-sent` event for a task of `ids`, within 10 s; `None` if
/// none comes (others' events are skipped).
async fn next_for(consumer: &mut lapin::Consumer, ids: &[&str]) -> Option<(Value, String)> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let delivery = tokio::time::timeout_at(deadline, consumer.next())
            .await
            .ok()??
            .expect("delivery");
        let event: Value = serde_json::from_slice(&delivery.data).expect("json");
        let header = delivery
            .properties
            .headers()
            .as_ref()
            .and_then(|h| h.inner().get("hostname").cloned());
        let header = match header {
            Some(AMQPValue::LongString(s)) => s.to_string(),
            other => format!("{other:?}"),
        };
        if ids.iter().any(|id| event["uuid"] == *id) {
            return Some((event, header));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_sent_events_when_asked() {
    let (_conn, mut consumer) = monitor().await;
    let mut config = testing::config("none", &unique("sent"));
    config.task_send_sent_event = true;
    let client = Client::connect(config.clone()).await.expect("client");
    let mut kwargs = Map::new();
    kwargs.insert("k".into(), json!("v"));
    let options = ApplyOptions::default().countdown(Duration::from_secs(60));
    let sent = client
        .send_task("tasks.add", vec![json!(1), json!(2)], kwargs, options)
        .await
        .expect("send");
    let (event, header) = next_for(&mut consumer, &[sent.id()])
        .await
        .expect("a task-sent event");
    assert_eq!(event["type"], "task-sent");
    assert_eq!(event["name"], "tasks.add");
    assert_eq!(event["root_id"], sent.id());
    assert!(event["parent_id"].is_null());
    assert_eq!(event["args"], "[1,2]");
    assert_eq!(event["kwargs"], r#"{"k":"v"}"#);
    assert_eq!(event["retries"], 0);
    assert!(event["eta"].is_string(), "{event}");
    assert!(event["expires"].is_null());
    assert_eq!(event["queue"], config.default_queue.as_str());
    assert!(event["exchange"].is_string() && event["routing_key"].is_string());
    let hostname = event["hostname"].as_str().expect("hostname");
    assert!(hostname.starts_with("gen"), "{event}");
    assert_eq!(header, hostname);
    assert!(event["timestamp"].is_f64(), "timestamp: {event}");
    for field in ["utcoffset", "pid", "clock"] {
        assert!(
            event[field].is_i64() || event[field].is_u64(),
            "{field}: {event}"
        );
    }
    // Off (the default): the task goes, no event. A marker sent after it
    // with events on shows that nothing came for it before.
    let quiet = Client::connect(testing::config("none", &config.default_queue))
        .await
        .expect("client");
    let unseen = quiet
        .send_task("tasks.add", vec![], Map::new(), ApplyOptions::default())
        .await
        .expect("send");
    let marker = client
        .send_task("tasks.add", vec![], Map::new(), ApplyOptions::default())
        .await
        .expect("send");
    let (first, _) = next_for(&mut consumer, &[unseen.id(), marker.id()])
        .await
        .expect("the marker's event");
    assert_eq!(
        first["uuid"],
        marker.id(),
        "an event for a task sent with events off"
    );
    quiet.close().await;
    client.close().await;
    testing::cleanup(&config).await;
}

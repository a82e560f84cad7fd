//! `scripts/rabbitmq-delay-policy.sh`, which the docs give for RabbitMQ
//! before 3.12: every delay queue of the prefix gets the lazy policy and no
//! other queue does, a delayed task still arrives (not early) through the
//! lazy queues, and a bad argument is refused. From 3.12 on the script sets
//! nothing, and the test checks that instead.

use celeriac::{ApplyOptions, Client};
use celeriac_common::testing::vhost::{TestVhost, rabbitmqctl};
use celeriac_common::testing::{self, unique};
use celeriac_common::{broker, delay};
use lapin::options::BasicGetOptions;
use serde_json::Map;
use std::collections::HashMap;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const COUNTDOWN: Duration = Duration::from_millis(300);
const WAIT: Duration = Duration::from_secs(15);

fn script(args: &[&str]) -> Output {
    Command::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../scripts/rabbitmq-delay-policy.sh"
    ))
    .args(args)
    .output()
    .expect("run scripts/rabbitmq-delay-policy.sh")
}

/// Whether the test broker is older than 3.12 (where classic queues keep
/// their messages in memory unless lazy).
fn before_3_12() -> bool {
    let version = rabbitmqctl(&["version"]).expect("rabbitmqctl version");
    let mut parts = version.trim().split('.').map(|p| p.parse().unwrap_or(0));
    let major: u32 = parts.next().unwrap_or(0);
    (major, parts.next().unwrap_or(0)) < (3, 12)
}

/// Each queue of `vhost` with the policy that applies to it ("" for none).
fn policies(vhost: &str) -> HashMap<String, String> {
    let listed = rabbitmqctl(&[
        "list_queues",
        "-q",
        "--no-table-headers",
        "-p",
        vhost,
        "name",
        "policy",
    ])
    .expect("rabbitmqctl list_queues");
    listed
        .lines()
        .filter_map(|line| line.split_once('\t'))
        .map(|(name, policy)| (name.to_owned(), policy.trim().to_owned()))
        .collect()
}

#[tokio::test]
async fn delay_queues_get_the_lazy_policy_and_still_deliver() {
    let vhost = TestVhost::create("delay-policy").expect("vhost");
    let queue = unique("lazy");
    let mut config = testing::config("none", &queue);
    config.broker_url = vhost.url.clone();
    config.delay_prefix = format!("{queue}.delay");
    let out = script(&["--vhost", &vhost.name, "--prefix", &config.delay_prefix]);
    assert!(out.status.success(), "script: {out:?}");

    // The first delayed send declares the delay queues.
    let client = Client::connect(config.clone()).await.expect("client");
    let sent = Instant::now();
    let opts = ApplyOptions::new().countdown(COUNTDOWN);
    let task = client
        .send_task("t.noop", vec![], Map::new(), opts)
        .await
        .expect("send with a countdown");
    client.close().await;

    let expected = if before_3_12() {
        format!("celeriac-delay-lazy-{}", config.delay_prefix)
    } else {
        String::new()
    };
    let applied = policies(&vhost.name);
    for name in delay::queue_names(&config) {
        assert_eq!(applied.get(&name), Some(&expected), "policy of {name}");
    }
    assert_eq!(
        applied.get(&queue).map(String::as_str),
        Some(""),
        "task queue"
    );

    // The task comes down the (lazy) delay queues into its queue, not early.
    let conn = broker::connect(&vhost.url, "delay-policy")
        .await
        .expect("connect");
    let ch = conn.create_channel().await.expect("channel");
    let got = loop {
        let get = ch
            .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .expect("basic.get");
        if let Some(msg) = get {
            break msg;
        }
        assert!(
            sent.elapsed() < WAIT,
            "the delayed task did not arrive within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let arrived = sent.elapsed();
    let _ = conn.close(200, "done".into()).await;
    let id = got
        .delivery
        .properties
        .correlation_id()
        .as_ref()
        .map(|c| c.to_string());
    assert_eq!(id.as_deref(), Some(task.id()), "the task that arrived");
    assert!(
        arrived + delay::UNIT >= COUNTDOWN,
        "arrived after {arrived:?}, more than one unit before its countdown"
    );
}

#[test]
fn a_bad_argument_is_refused_with_what_is_accepted() {
    let out = script(&["--prefx", "x"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown argument --prefx") && err.contains("--prefix"),
        "{err}"
    );
}

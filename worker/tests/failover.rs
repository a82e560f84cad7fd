//! The worker and several broker nodes (issue #20): it moves to the next
//! node when the one it consumes from dies and keeps consuming; started
//! while no broker is up, it logs each failed attempt with the delay before
//! the next and comes up once a broker appears. The "nodes" are TCP proxies
//! to the one test broker.

use crate::support;

use celeriac::{ApplyOptions, Client};
use celeriac_common::Config;
use celeriac_common::netfault::{Proxy, ProxyMode};
use celeriac_common::testing::process::{self, LoggedProcess};
use celeriac_common::testing::{self, DbKind, TestDatabase, unique};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use support::WORKER;

const WAIT: Duration = Duration::from_secs(20);

/// Sends `n` `celeriac.noop` tasks to `queue` and waits for each result.
async fn run_tasks(client: &Client, queue: &str, n: usize) {
    let mut sent = Vec::new();
    for _ in 0..n {
        let options = ApplyOptions::new().queue(queue.to_owned());
        let r = client
            .send_task("celeriac.noop", vec![], Default::default(), options)
            .await
            .expect("send");
        sent.push(r);
    }
    for r in sent {
        r.get(WAIT).await.expect("the task ran");
    }
}

/// Waits until the log shows `needle` `times` times.
fn wait_count(p: &LoggedProcess, needle: &str, times: usize, within: Duration) {
    let deadline = Instant::now() + within;
    while p.log_text().matches(needle).count() < times {
        assert!(
            Instant::now() < deadline,
            "never {times}× {needle:?}:\n{}",
            p.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_moves_to_the_next_node_and_keeps_consuming() {
    let db = TestDatabase::create(DbKind::Sqlite).await.expect("db");
    let queue = unique("failover-worker");
    let direct = testing::config(&db.url, &queue);
    let broker = testing::broker_url();
    let mut first = Proxy::start(&broker, ProxyMode::Forward)
        .await
        .expect("proxy");
    let second = Proxy::start(&broker, ProxyMode::Forward)
        .await
        .expect("proxy");
    let nodes = Config {
        broker_url: format!("{};{}", first.url(), second.url()),
        ..direct.clone()
    };
    let args = ["--connect-timeout", "1", "--broker-heartbeat", "1"];
    let worker = process::spawn_worker(WORKER, &nodes, "failover@test", &args);
    assert_eq!(second.accepted(), 0, "started on the first node");
    let client = Client::connect(direct.clone()).await.expect("client");
    run_tasks(&client, &queue, 5).await;

    first.stop();
    let killed = Instant::now();
    wait_count(&worker, "worker ready", 2, WAIT);
    eprintln!(
        "worker consuming again {:?} after the node died",
        killed.elapsed()
    );
    assert!(second.accepted() > 0, "not on the second node");
    assert!(worker.log_text().contains("moved to broker node 2 of 2"));
    run_tasks(&client, &queue, 5).await;
    assert_eq!(worker.terminate(), Some(0));
    client.close().await;
    testing::cleanup(&direct).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_started_before_the_broker_waits_for_it() {
    let db = TestDatabase::create(DbKind::Sqlite).await.expect("db");
    let queue = unique("failover-startup");
    let direct = testing::config(&db.url, &queue);
    // A port nobody listens on yet: connections are refused.
    let addr: SocketAddr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port");
    let mut url = url::Url::parse(&direct.broker_url).expect("url");
    url.set_port(Some(addr.port())).expect("port");
    let later = Config {
        broker_url: url.to_string(),
        ..direct.clone()
    };
    let mut cmd = process::command(WORKER, &later);
    cmd.env("CELERIAC_LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .args(["--connect-timeout", "1"]);
    let worker = LoggedProcess::spawn(cmd, "worker", "retrying in");
    let log = worker.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("retrying in"))
        .expect("a retry line");
    assert!(line.contains("cannot connect to RabbitMQ"), "{line}");
    assert!(!line.contains("guest:guest"), "password masked: {line}");

    // The broker appears on that port.
    let _broker = Proxy::start_on(addr, &direct.broker_url, ProxyMode::Forward)
        .await
        .expect("listen on the reserved port");
    let up = Instant::now();
    worker.wait_log("worker ready", WAIT);
    eprintln!("worker ready {:?} after the broker appeared", up.elapsed());
    let client = Client::connect(direct.clone()).await.expect("client");
    run_tasks(&client, &queue, 3).await;
    assert_eq!(worker.terminate(), Some(0));
    client.close().await;
    testing::cleanup(&direct).await;
}

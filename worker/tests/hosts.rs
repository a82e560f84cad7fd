//! A worker on a host of its own (issue #20): a network namespace linked to
//! this machine by a veth pair (`celeriac_common::testing::netns`). The
//! broker listens on loopback only, so a proxy on the host side of the link
//! offers it there. The worker consumes through the link; the host is then
//! partitioned (link down: packets dropped, no RST), which the worker
//! notices by heartbeats; healed, it reconnects and consumes again.
//!
//! Needs root and ip(8): run by CI's serial step
//! (`cargo nextest run -p celeriac-worker -E 'test(/^hosts::/)' --run-ignored all`).

use crate::support;

use celeriac::{ApplyOptions, Client};
use celeriac_common::Config;
use celeriac_common::netfault::{Proxy, ProxyMode};
use celeriac_common::testing::netns::Hosts;
use celeriac_common::testing::process::{self, LoggedProcess};
use celeriac_common::testing::{self, DbKind, TestDatabase, unique};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};
use support::WORKER;

const WAIT: Duration = Duration::from_secs(20);

/// Waits until the log shows `needle` `times` times; returns how long it took.
fn wait_count(p: &LoggedProcess, needle: &str, times: usize, within: Duration) -> Duration {
    let start = Instant::now();
    while p.log_text().matches(needle).count() < times {
        assert!(
            start.elapsed() < within,
            "never {times}× {needle:?}:\n{}",
            p.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    start.elapsed()
}

async fn run_task(client: &Client, queue: &str) {
    let options = ApplyOptions::new().queue(queue.to_owned());
    client
        .send_task("celeriac.noop", vec![], Default::default(), options)
        .await
        .expect("send")
        .get(WAIT)
        .await
        .expect("the task ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "serial: needs root and ip(8) to make network namespaces"]
async fn worker_on_another_host_survives_a_partition() {
    let hosts = Hosts::create(1).expect("make a host (root and ip(8) needed)");
    let host = hosts.host(0);
    let db = TestDatabase::create(DbKind::Sqlite).await.expect("db");
    let queue = unique("hosts");
    let direct = testing::config(&db.url, &queue);
    let gateway = SocketAddr::from((host.gateway(), 0));
    let proxy = Proxy::start_on(gateway, &direct.broker_url, ProxyMode::Forward)
        .await
        .expect("proxy on the link");
    let remote = Config {
        broker_url: proxy.url(),
        ..direct.clone()
    };
    assert!(remote.broker_url.contains(&host.gateway().to_string()));
    let mut cmd = process::command("ip", &remote);
    cmd.args(["netns", "exec", host.name()])
        .arg(WORKER)
        .env("CELERIAC_HOSTNAME", "far@test")
        .env("CELERIAC_LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .args(["--connect-timeout", "1", "--broker-heartbeat", "1"]);
    let worker = LoggedProcess::spawn(cmd, "worker", "worker ready");
    assert!(proxy.accepted() > 0, "the worker came through the link");
    let client = Client::connect(direct.clone()).await.expect("client");
    run_task(&client, &queue).await;

    host.partition().expect("partition");
    let noticed = wait_count(&worker, "stopped consuming", 1, WAIT);
    eprintln!("partition noticed after {noticed:?}");
    // Heartbeat 1 s: two intervals, plus the worker's 1 s check, plus slack.
    assert!(noticed < Duration::from_secs(5), "{noticed:?}");
    // Meanwhile each attempt to reconnect gives up within the connect timeout.
    wait_count(&worker, "cannot consume", 1, WAIT);

    host.heal().expect("heal");
    let back = wait_count(&worker, "worker ready", 2, WAIT);
    eprintln!("consuming again {back:?} after the link came back");
    run_task(&client, &queue).await;
    assert_eq!(worker.terminate(), Some(0));
    client.close().await;
    testing::cleanup(&direct).await;

    let name = host.name().to_owned();
    drop(hosts);
    assert!(
        !Path::new("/run/netns").join(&name).exists(),
        "{name} left behind"
    );
}

#[test]
#[ignore = "serial: needs root and ip(8) to make network namespaces"]
fn hosts_are_removed_even_when_a_test_panics() {
    let made = std::panic::catch_unwind(|| {
        let hosts = Hosts::create(2).expect("make hosts");
        let names: Vec<String> = hosts.all().iter().map(|h| h.name().to_owned()).collect();
        assert_ne!(hosts.host(0).gateway(), hosts.host(1).gateway());
        let out = hosts
            .host(1)
            .command("ip")
            .args(["-4", "-o", "addr", "show"])
            .output()
            .expect("ip in the namespace");
        let inside = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            inside.contains(&hosts.host(1).addr().to_string()),
            "{inside}"
        );
        std::panic::panic_any(names);
    });
    let names = made
        .expect_err("panicked")
        .downcast::<Vec<String>>()
        .expect("the names");
    for name in names.iter() {
        assert!(
            !Path::new("/run/netns").join(name).exists(),
            "{name} left behind"
        );
    }
}

//! Broker failover of the producer (issue #20): with several broker nodes
//! (`amqp://a;amqp://b;amqp://c`), publishes in flight when a node dies are
//! retried on the next node and confirmed there. Nothing the client
//! reported as sent is missing, and nothing fails. The "nodes" are TCP
//! proxies to the one test broker, each killed on its own: one stops
//! (connections closed), one freezes (packets dropped, no RST: noticed by
//! heartbeats).

use celeriac::{ApplyOptions, Client};
use celeriac_common::netfault::{Proxy, ProxyMode};
use celeriac_common::{Config, testing};
use lapin::options::{BasicGetOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Publishers running at once.
const PUBLISHERS: usize = 8;

/// What the publishers saw.
#[derive(Default)]
struct Tally {
    confirmed: Mutex<Vec<String>>,
    failed: Mutex<Vec<String>>,
    count: AtomicUsize,
    /// The longest publish so far, in microseconds: the stall a node loss costs.
    longest_us: AtomicU64,
    stop: AtomicBool,
}

/// Publishes `celeriac.noop` in a loop until told to stop.
async fn publish_loop(client: Client, queue: String, tally: Arc<Tally>) {
    while !tally.stop.load(Ordering::SeqCst) {
        let options = ApplyOptions::new().queue(queue.clone());
        let began = Instant::now();
        let sent = client
            .send_task("celeriac.noop", vec![], Default::default(), options)
            .await;
        let took = u64::try_from(began.elapsed().as_micros()).unwrap_or(u64::MAX);
        tally.longest_us.fetch_max(took, Ordering::SeqCst);
        match sent {
            Ok(r) => tally
                .confirmed
                .lock()
                .expect("lock")
                .push(r.id().to_owned()),
            Err(e) => tally.failed.lock().expect("lock").push(e.to_string()),
        }
        tally.count.fetch_add(1, Ordering::SeqCst);
    }
}

/// Waits until `n` more publishes have ended.
async fn publishes(tally: &Tally, n: usize, within: Duration) {
    let target = tally.count.load(Ordering::SeqCst) + n;
    let deadline = Instant::now() + within;
    while tally.count.load(Ordering::SeqCst) < target {
        assert!(Instant::now() < deadline, "publishing stalled");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The task ids of every message in `queue` (taken off it).
async fn drain(queue: &str) -> Vec<String> {
    let conn = celeriac_common::broker::connect(&testing::broker_url(), "failover-drain")
        .await
        .expect("broker");
    let ch = conn.create_channel().await.expect("channel");
    let declared = ch
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("queue");
    let mut ids = Vec::new();
    for _ in 0..declared.message_count() {
        let got = ch
            .basic_get(queue.into(), BasicGetOptions { no_ack: true })
            .await
            .expect("basic.get");
        let Some(msg) = got else { break };
        let id = msg.delivery.properties.correlation_id().clone();
        ids.push(id.map(|i| i.to_string()).unwrap_or_default());
    }
    let _ = conn.close(200, "bye".into()).await;
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_across_node_losses_are_confirmed_once_each_and_none_lost() {
    let broker = testing::broker_url();
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(
            Proxy::start(&broker, ProxyMode::Forward)
                .await
                .expect("proxy"),
        );
    }
    let queue = testing::unique("failover-producer");
    let urls: Vec<String> = nodes.iter().map(Proxy::url).collect();
    let config = Config {
        broker_url: urls.join(";"),
        broker_connect_timeout_secs: 1.0,
        broker_heartbeat_secs: 1,
        ..testing::config("none", &queue)
    };
    let client = Client::connect(config.clone()).await.expect("connect");
    let tally = Arc::new(Tally::default());
    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|_| tokio::spawn(publish_loop(client.clone(), queue.clone(), tally.clone())))
        .collect();
    publishes(&tally, 200, Duration::from_secs(20)).await;
    assert_eq!(
        nodes[1].accepted() + nodes[2].accepted(),
        0,
        "not on node 1"
    );
    let longest = |t: &Tally| Duration::from_micros(t.longest_us.swap(0, Ordering::SeqCst));
    eprintln!("longest publish on a healthy node: {:?}", longest(&tally));

    // Node 1 dies: its connections close.
    nodes[0].stop();
    let killed = Instant::now();
    publishes(&tally, 200, Duration::from_secs(20)).await;
    eprintln!(
        "node 1 stopped: 200 publishes later after {:?}, longest publish {:?}",
        killed.elapsed(),
        longest(&tally)
    );
    assert!(nodes[1].accepted() > 0, "did not move to node 2");

    // Node 2 goes silent: heartbeats (1 s) notice it, node 3 takes over.
    nodes[1].freeze();
    let frozen = Instant::now();
    publishes(&tally, 200, Duration::from_secs(20)).await;
    eprintln!(
        "node 2 frozen: 200 publishes later after {:?}, longest publish {:?}",
        frozen.elapsed(),
        longest(&tally)
    );
    assert!(nodes[2].accepted() > 0, "did not move to node 3");
    tally.stop.store(true, Ordering::SeqCst);
    for p in publishers {
        p.await.expect("publisher");
    }

    let confirmed = tally.confirmed.lock().expect("lock").clone();
    let failed = tally.failed.lock().expect("lock").clone();
    let queued = drain(&queue).await;
    let unique_ids: HashSet<&String> = queued.iter().collect();
    let missing: Vec<_> = confirmed
        .iter()
        .filter(|id| !unique_ids.contains(id))
        .collect();
    eprintln!(
        "confirmed {}, failed {}, in the queue {} ({} twice)",
        confirmed.len(),
        failed.len(),
        queued.len(),
        queued.len() - unique_ids.len()
    );
    assert!(
        failed.is_empty(),
        "publishes failed: {:?}",
        &failed[..failed.len().min(3)]
    );
    assert!(
        missing.is_empty(),
        "confirmed but not in the queue: {missing:?}"
    );
    // A message the old node took but never confirmed is sent again: it
    // may be there twice, never more.
    assert!(
        queued.len() - unique_ids.len() <= 2 * PUBLISHERS,
        "too many copies"
    );
    client.close().await;
    testing::cleanup(&config).await;
}

/// A proxy on `addr` (the port a stopped one had), waiting until the
/// stopped one's listener has let go of it.
async fn proxy_on(addr: std::net::SocketAddr, mode: ProxyMode) -> Proxy {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match Proxy::start_on(addr, &testing::broker_url(), mode).await {
            Ok(proxy) => return proxy,
            Err(e) if Instant::now() > deadline => panic!("cannot listen on {addr} again: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocked_publishes_share_connection_attempts_and_resume_within_a_second() {
    const BLOCKED: usize = 40;
    let mut broker = Proxy::start(&testing::broker_url(), ProxyMode::Forward)
        .await
        .expect("proxy");
    let addr = broker.addr();
    let queue = testing::unique("reconnect");
    let config = Config {
        broker_url: broker.url(),
        broker_connect_timeout_secs: 1.0,
        ..testing::config("none", &queue)
    };
    let client = Client::connect(config.clone()).await.expect("connect");
    let send = |client: Client| {
        let options = ApplyOptions::new().queue(queue.clone());
        async move {
            client
                .send_task("celeriac.noop", vec![], Default::default(), options)
                .await
                .map(|r| r.id().to_owned())
        }
    };
    send(client.clone()).await.expect("first publish");

    // The broker goes away: every connection it accepts is reset at once.
    broker.stop();
    let mut down = proxy_on(addr, ProxyMode::ResetAfter(0)).await;
    let blocked: Vec<_> = (0..BLOCKED)
        .map(|_| tokio::spawn(send(client.clone())))
        .collect();
    let outage = Duration::from_secs(3);
    tokio::time::sleep(outage).await;
    // Shared: at most one attempt per 200 ms (plus the publishes' own first
    // tries, which may each find the last failure older than that), where
    // each of the 40 publishes retrying on its own would make 3 or more.
    let attempts = down.accepted();
    assert!(attempts > 0, "nothing tried to reconnect");
    assert!(
        attempts <= 25,
        "{attempts} connection attempts in {outage:?} from {BLOCKED} blocked publishes"
    );

    // It returns: every blocked publish goes through within about a second.
    down.stop();
    let _back = proxy_on(addr, ProxyMode::Forward).await;
    let returned = Instant::now();
    let mut ids = HashSet::new();
    for p in blocked {
        ids.insert(
            p.await
                .expect("publisher")
                .expect("publish after the return"),
        );
    }
    let took = returned.elapsed();
    eprintln!("{attempts} attempts in the outage; all {BLOCKED} sent {took:?} after the return");
    assert!(took < Duration::from_millis(2500), "{took:?}");
    let queued: HashSet<String> = drain(&queue).await.into_iter().collect();
    assert!(
        ids.is_subset(&queued),
        "a confirmed publish is not in the queue"
    );
    client.close().await;
    testing::cleanup(&config).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_call_with_no_node_up_fails_fast_in_one_line() {
    // Two ports nobody listens on, and a node that never answers.
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port()
    };
    let silent = celeriac_common::netfault::Peer::silent()
        .await
        .expect("peer");
    let url = |port: u16| format!("amqp://guest:s3cret@127.0.0.1:{port}/%2f");
    let nodes = [url(free()), silent.url(), url(free())].join(";");
    let started = Instant::now();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_celeriac"))
        .env_remove("CELERIAC_CONFIG")
        .env("RUST_LOG", "off")
        .args(["call", "celeriac.noop", "--broker", &nodes])
        .args(["--connect-timeout", "1", "--result-backend", "none"])
        .kill_on_drop(true)
        .output()
        .await
        .expect("run celeriac");
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("celeriac call, no node up: {took:?}: {stderr}");
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("none of the 3 broker nodes"), "{stderr}");
    assert!(!stderr.contains("s3cret"), "{stderr}");
    // Each node once: two refused at once, one timing out after 1 s.
    assert!(took < Duration::from_secs(4), "{took:?}");
    assert!(silent.accepted() >= 1, "the silent node was tried");
}

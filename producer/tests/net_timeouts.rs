//! Nothing waits for ever on the network (issue #20): a peer that accepts
//! TCP and never speaks AMQP, one that hangs up mid-handshake, a broker
//! frozen or reset during the handshake, and one that goes silent once
//! connected. Each case must end within its bound with a clear error; the
//! measured times are printed (`--no-capture` shows them).
//!
//! Faults come from `celeriac_common::netfault` (each binds its own port on
//! 127.0.0.1); the proxied cases need the test RabbitMQ.

use celeriac::{ApplyOptions, Client, ClientError};
use celeriac_common::broker::{self, BrokerError, Limits};
use celeriac_common::netfault::{Peer, PeerMode, Proxy, ProxyMode};
use celeriac_common::tls::BrokerTls;
use celeriac_common::{Config, testing};
use std::time::{Duration, Instant};

/// Slack on top of a bound, for a loaded machine.
const SLACK: Duration = Duration::from_millis(1500);

fn config_for(url: &str, connect_timeout: f64) -> Config {
    Config {
        broker_url: url.to_owned(),
        broker_connect_timeout_secs: connect_timeout,
        result_backend: "none".to_owned(),
        ..Config::default()
    }
}

async fn connect(url: &str, limits: Limits) -> Result<lapin::Connection, BrokerError> {
    broker::connect_with_limits(url, &BrokerTls::default(), "net-timeouts-test", limits).await
}

fn limits(connect: Duration, heartbeat_secs: u16) -> Limits {
    Limits {
        connect,
        heartbeat_secs,
    }
}

/// Waits up to `within` for `cond`.
async fn eventually(within: Duration, cond: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cond()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_peer_client_connect_times_out_and_lets_go_of_the_socket() {
    let peer = Peer::silent().await.expect("peer");
    let started = Instant::now();
    let err = Client::connect(config_for(&peer.url(), 1.0))
        .await
        .expect_err("a silent peer cannot be connected to");
    let took = started.elapsed();
    eprintln!("silent peer: Client::connect failed after {took:?}: {err}");
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(1) + SLACK,
        "{took:?}"
    );
    assert!(
        matches!(err, ClientError::Broker(BrokerError::ConnectTimeout { .. })),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("cannot connect to RabbitMQ at amqp://guest:****@127.0.0.1:")
            && text.contains("within 1s"),
        "{text}"
    );
    // The abandoned attempt's socket is shut down: no thread keeps it.
    assert!(
        eventually(Duration::from_secs(2), || peer.closed_by_client() == 1).await,
        "the abandoned connection is still open"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_hanging_up_mid_handshake_is_a_prompt_error() {
    // Nothing; half a frame header; a whole frame header announcing a
    // method frame that never comes.
    let replies: [&[u8]; 3] = [b"", &[1, 0, 0], &[1, 0, 0, 0, 0, 1, 0]];
    for reply in replies {
        let peer = Peer::start(PeerMode::HangUp(reply.to_vec()))
            .await
            .expect("peer");
        let started = Instant::now();
        let err = connect(&peer.url(), limits(Duration::from_secs(5), 30))
            .await
            .expect_err("the peer hung up");
        let took = started.elapsed();
        eprintln!(
            "hang-up after {} bytes: failed after {took:?}: {err}",
            reply.len()
        );
        assert!(took < Duration::from_secs(5) + SLACK, "{took:?}");
        assert!(
            err.to_string().contains("cannot connect to RabbitMQ"),
            "{err}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_frozen_or_reset_during_the_handshake() {
    // What the broker sends in a handshake: Connection.Start, Tune (20
    // bytes) and Open-Ok (13 bytes).
    let proxy = Proxy::start(&testing::broker_url(), ProxyMode::Forward)
        .await
        .expect("proxy");
    let conn = connect(&proxy.url(), limits(Duration::from_secs(5), 30))
        .await
        .expect("connect through the proxy");
    let handshake = proxy.forwarded_from_broker();
    broker::close(&conn, Duration::from_secs(2), "measured").await;
    assert!(handshake > 33, "{handshake}");
    // Stops before Start, within it, before Tune, before Open-Ok, before
    // Open-Ok's last byte.
    let cuts = [0, 11, handshake - 33, handshake - 13, handshake - 1];
    for after in cuts {
        for mode in [ProxyMode::FreezeAfter(after), ProxyMode::ResetAfter(after)] {
            let proxy = Proxy::start(&testing::broker_url(), mode)
                .await
                .expect("proxy");
            let started = Instant::now();
            let res = connect(&proxy.url(), limits(Duration::from_secs(1), 30)).await;
            let took = started.elapsed();
            let err = res.expect_err("the broker froze or went away");
            eprintln!("{mode:?} of {handshake}: failed after {took:?}: {err}");
            assert!(took < Duration::from_secs(1) + SLACK, "{mode:?}: {took:?}");
            if let ProxyMode::FreezeAfter(_) = mode {
                assert!(
                    matches!(err, BrokerError::ConnectTimeout { .. }),
                    "{mode:?}: {err:?}"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_broker_bounds_channel_open_and_publish() {
    let proxy = Proxy::start(&testing::broker_url(), ProxyMode::Forward)
        .await
        .expect("proxy");
    let conn = connect(&proxy.url(), limits(Duration::from_secs(2), 60))
        .await
        .expect("connect through the proxy");
    proxy.freeze();
    let started = Instant::now();
    let err = broker::bounded(
        "channel.open",
        Duration::from_secs(1),
        conn.create_channel(),
    )
    .await
    .expect_err("frozen");
    eprintln!(
        "frozen broker: channel.open failed after {:?}: {err}",
        started.elapsed()
    );
    assert!(
        matches!(
            err,
            BrokerError::Timeout {
                op: "channel.open",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("did not answer channel.open within 1s"),
        "{err}"
    );

    // A client whose broker freezes: its publish ends within
    // publish_timeout_secs (reconnections meanwhile are bounded too).
    let proxy = Proxy::start(&testing::broker_url(), ProxyMode::Forward)
        .await
        .expect("proxy");
    let queue = testing::unique("net-timeouts");
    let mut config = testing::config("none", &queue);
    config.broker_url = proxy.url();
    config.broker_connect_timeout_secs = 1.0;
    config.broker_heartbeat_secs = 1;
    config.publish_timeout_secs = 4;
    let client = Client::connect(config.clone()).await.expect("connect");
    client
        .send_task(
            "celeriac.noop",
            vec![],
            Default::default(),
            ApplyOptions::new(),
        )
        .await
        .expect("publish while the broker answers");
    proxy.freeze();
    let started = Instant::now();
    let err = client
        .send_task(
            "celeriac.noop",
            vec![],
            Default::default(),
            ApplyOptions::new(),
        )
        .await
        .expect_err("the broker is frozen");
    let took = started.elapsed();
    eprintln!("frozen broker: publish failed after {took:?}: {err}");
    assert!(took < Duration::from_secs(4) + SLACK, "{took:?}");
    assert!(matches!(err, ClientError::Unavailable { .. }), "{err:?}");
    client.close().await;
    testing::cleanup(&config).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_silent_after_connect_is_noticed_within_two_heartbeats() {
    for heartbeat in [1u16, 2] {
        let proxy = Proxy::start(&testing::broker_url(), ProxyMode::Forward)
            .await
            .expect("proxy");
        let conn = connect(&proxy.url(), limits(Duration::from_secs(2), heartbeat))
            .await
            .expect("connect through the proxy");
        assert_eq!(conn.configuration().heartbeat(), heartbeat, "negotiated");
        let channel = conn.create_channel().await.expect("channel");
        proxy.freeze();
        let started = Instant::now();
        let bound = Duration::from_secs(2 * u64::from(heartbeat)) + SLACK;
        let noticed = eventually(bound + Duration::from_secs(5), || {
            !conn.status().connected() && !channel.status().connected()
        })
        .await;
        let took = started.elapsed();
        eprintln!("heartbeat {heartbeat}s: silent broker noticed after {took:?}");
        assert!(
            noticed,
            "heartbeat {heartbeat}s: still connected after {took:?}"
        );
        assert!(
            took < bound,
            "heartbeat {heartbeat}s: noticed after {took:?}"
        );
    }
}

/// `celeriac call` against a silent peer: one line, non-zero exit, promptly;
/// the bound comes from `--connect-timeout` or the environment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn celeriac_call_with_a_silent_broker_fails_in_one_line() {
    let peer = Peer::silent().await.expect("peer");
    let url = peer.url().replace("guest:guest", "guest:s3cret");
    // (flags, environment, what the line says)
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
    let cases: [Case; 2] = [
        (&["--connect-timeout", "1"], &[], "within 1s"),
        (
            &[],
            &[("CELERIAC_BROKER_CONNECT_TIMEOUT_SECS", "1.5")],
            "within 1.5s",
        ),
    ];
    for (flags, env, says) in cases {
        let started = Instant::now();
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_celeriac"))
            .env_remove("CELERIAC_CONFIG")
            .env_remove("CELERIAC_BROKER_CONNECT_TIMEOUT_SECS")
            .env_remove("RUST_LOG")
            .envs(env.iter().copied())
            .args(["--broker", &url])
            .args(flags)
            .args(["call", "celeriac.noop", "--result-backend", "none"])
            .kill_on_drop(true)
            .output()
            .await
            .expect("run celeriac");
        let took = started.elapsed();
        let stderr = String::from_utf8_lossy(&out.stderr);
        eprintln!(
            "celeriac call {flags:?} {env:?}: exit {:?} after {took:?}: {stderr}",
            out.status.code()
        );
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
        assert!(
            stderr.starts_with(
                "celeriac: error: cannot connect to RabbitMQ at amqp://guest:****@127.0.0.1:"
            ) && stderr.contains(says),
            "{stderr}"
        );
        assert!(!stderr.contains("s3cret"), "{stderr}");
        assert!(took < Duration::from_secs(2) + SLACK, "{took:?}");
    }
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_celeriac"))
        .args(["--broker", &url, "--connect-timeout", "0", "call", "x"])
        .output()
        .await
        .expect("run celeriac");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("positive number of seconds"), "{stderr}");
}

/// `get(timeout)` returns by its timeout while the result database does
/// not answer (here a table lock held elsewhere), instead of waiting for
/// the database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_keeps_its_timeout_while_the_database_does_not_answer() {
    use celeriac::ResultError;
    use celeriac_common::testing::{DbKind, TestDatabase, unique};
    use sea_orm::{ConnectionTrait, TransactionTrait};

    let db = TestDatabase::create(DbKind::Postgres).await.expect("db");
    let backend = db.migrated_backend().await.expect("backend");
    let config = testing::config(&db.url, &unique("get-timeout"));
    let client = Client::connect(config.clone()).await.expect("client");
    let r = client
        .send_task(
            "tasks.nobody",
            vec![],
            Default::default(),
            ApplyOptions::new(),
        )
        .await
        .expect("send");
    assert!(r.state().await.is_ok(), "the backend is connected");
    let lock = backend.connection().begin().await.expect("begin");
    lock.execute_unprepared("LOCK TABLE celeriac_taskmeta IN ACCESS EXCLUSIVE MODE")
        .await
        .expect("lock");
    let started = Instant::now();
    let got = tokio::time::timeout(Duration::from_secs(10), r.get(Duration::from_secs(2)))
        .await
        .expect("get returns by its own timeout");
    let took = started.elapsed();
    assert!(matches!(got, Err(ResultError::Timeout { .. })), "{got:?}");
    assert!(took < Duration::from_secs(2) + SLACK, "{took:?}");
    println!("get(2 s) returned after {took:?} with the table locked");
    lock.rollback().await.expect("unlock");
    testing::cleanup(&config).await;
    db.drop_database().await;
}

//! Beat never waits for ever on the network (issue #20): `celeriac-beat run
//! --no-startup-retry` against a peer that accepts TCP and never speaks
//! AMQP fails in one line within the connect timeout, instead of hanging.

use celeriac_common::netfault::Peer;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beat_run_against_a_silent_peer_fails_in_one_line() {
    let peer = Peer::silent().await.expect("peer");
    let dir = tempfile::tempdir().expect("tempdir");
    let db = format!("sqlite://{}?mode=rwc", dir.path().join("beat.db").display());
    let started = Instant::now();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_celeriac-beat"))
        .env_remove("CELERIAC_CONFIG")
        .env("RUST_LOG", "off")
        .args(["--broker", &peer.url(), "--result-backend", &db])
        .args(["--connect-timeout", "1", "run", "--no-startup-retry"])
        .kill_on_drop(true)
        .output()
        .await
        .expect("run celeriac-beat");
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!(
        "beat run, silent peer: exit {:?} after {took:?}: {stderr}",
        out.status.code()
    );
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("cannot connect to RabbitMQ") && stderr.contains("within 1s"),
        "{stderr}"
    );
    assert!(took < Duration::from_millis(2500), "{took:?}");
}

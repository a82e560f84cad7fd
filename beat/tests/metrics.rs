//! `celeriac-beat run --http`: `/metrics` counts the runs fired and says
//! who leads; `/health` is 200 while the loop runs and 503 once stopping.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use celeriac_beat::runner::Service;
use celeriac_common::testing::{self, DbKind, TestDatabase, unique};
use support::ok;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).await.ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    Some((head.split(' ').nth(1)?.parse().ok()?, body.to_owned()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beat_metrics_count_fired_runs_and_leadership() {
    let db = TestDatabase::create(DbKind::Sqlite).await.unwrap();
    let mut config = testing::config(&db.url, &unique("beat-metrics"));
    config.beat_lease_secs = 2;
    // A free port, for the beat to bind.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    config.beat_http_addr = Some(addr.to_string());
    ok(
        &config,
        &["schedule", "add", "tick", "celeriac.noop", "--every", "1s"],
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let service = Service::new(config.clone(), None);
    let running = tokio::spawn(service.run(async move {
        let _ = stopped.await;
    }));
    let fired = "celeriac_beat_runs_total{entry=\"tick\",task=\"celeriac.noop\",outcome=\"fired\"}";
    let deadline = Instant::now() + Duration::from_secs(30);
    let text = loop {
        if let Some((200, text)) = get(addr, "/metrics").await
            && text.lines().any(|l| l.starts_with(fired))
            && text.contains("celeriac_beat_leader{hostname=")
            && text
                .lines()
                .any(|l| l.starts_with("celeriac_beat_leader{") && l.ends_with(" 1"))
        {
            break text;
        }
        assert!(Instant::now() < deadline, "no run counted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for (name, kind) in [
        ("celeriac_beat_runs_total", "counter"),
        ("celeriac_beat_lateness_seconds", "histogram"),
        ("celeriac_beat_leader", "gauge"),
        ("celeriac_beat_entries", "gauge"),
    ] {
        assert!(
            text.contains(&format!("# TYPE {name} {kind}\n")),
            "{name}:\n{text}"
        );
    }
    assert!(
        text.contains("celeriac_beat_lateness_seconds_count{"),
        "{text}"
    );
    let (code, body) = get(addr, "/health").await.expect("health");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("leading"), "{body}");

    let _ = stop.send(());
    running.await.unwrap().unwrap();
    assert!(
        get(addr, "/health").await.is_none(),
        "the server stops with beat"
    );
    testing::cleanup(&config).await;
}

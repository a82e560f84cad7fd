//! Flower 2 (from the project's virtualenv) watching a celeriac worker, over
//! the real RabbitMQ, on a vhost of its own (Flower broadcasts
//! `enable_events` to every worker it can reach). Flower's HTTP API, with
//! its unauthenticated switch on loopback, must list the worker with its
//! registered tasks and stats, and show the states of the tasks it ran,
//! failure included, from the events the worker sends once Flower turned
//! them on.

use crate::support;

use celeriac::{ApplyOptions, Client};
use celeriac_common::testing::process::LoggedProcess;
use celeriac_common::testing::{self, unique};
use celeriac_worker::Worker;
use serde_json::{Map, Value, json};
use std::process::Command;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(40);

/// One HTTP/1.1 GET on loopback (connection closed after it): the status
/// and the response body, or `None` if nothing answers.
async fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let exchange = async {
        let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
        conn.write_all(req.as_bytes()).await.ok()?;
        let mut raw = Vec::new();
        conn.read_to_end(&mut raw).await.ok()?;
        let text = String::from_utf8_lossy(&raw).into_owned();
        let status = text.split(' ').nth(1)?.parse().ok()?;
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
        Some((status, body))
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .ok()
        .flatten()
}

/// `rabbitmqctl ARGS`, bounded; panics with its output if it fails.
fn rabbitmqctl(args: &[&str]) {
    let out = Command::new("rabbitmqctl")
        .arg("-q")
        .args(args)
        .output()
        .expect("run rabbitmqctl");
    assert!(
        out.status.success(),
        "rabbitmqctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A vhost of the test's own, guest allowed on it.
struct Vhost {
    name: String,
}

impl Vhost {
    fn create() -> Vhost {
        let name = unique("flower");
        rabbitmqctl(&["add_vhost", &name]);
        rabbitmqctl(&["set_permissions", "-p", &name, "guest", ".*", ".*", ".*"]);
        Vhost { name }
    }

    fn broker_url(&self) -> String {
        let mut url = url::Url::parse(&testing::broker_url()).expect("broker url");
        url.set_path(&self.name);
        url.to_string()
    }

    fn delete(self) {
        rabbitmqctl(&["delete_vhost", &self.name]);
    }
}

/// A free loopback port (bound, then released for Flower).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// GETs `path` from Flower until `ok` accepts its JSON; the last JSON.
async fn poll(port: u16, path: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut last = Value::Null;
    loop {
        if let Some((200, body)) = get(port, path).await {
            last = serde_json::from_str(&body).unwrap_or(Value::Null);
            if ok(&last) {
                return last;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "GET {path}: not as expected in {WAIT:?}; last: {last:#}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flower_lists_a_celeriac_worker_and_its_tasks() {
    let vhost = Vhost::create();
    let mut config = testing::config("none", &unique("flower"));
    config.broker_url = vhost.broker_url();
    config.hostname = format!("{}@test", unique("celeriac"));
    config.worker_heartbeat_secs = 1;
    let host = config.hostname.clone();
    let worker = Worker::builder(config.clone())
        .with_diagnostics()
        .build()
        .await
        .expect("build worker");
    let running = support::InProcess::spawn(worker);

    let port = free_port();
    let mut cmd = Command::new(support::venv_bin("celery"));
    cmd.args(["-b", &config.broker_url, "flower", "--address=127.0.0.1"])
        .arg(format!("--port={port}"))
        .env("FLOWER_UNAUTHENTICATED_API", "true")
        .env("PYTHONDONTWRITEBYTECODE", "1");
    let flower = LoggedProcess::spawn(cmd, "flower", "Visit me at");

    // Listed, with its registered tasks and stats (Flower asks by remote control).
    let workers = poll(port, "/api/workers?refresh=1", |w| {
        w[&host]["stats"].is_object() && w[&host]["registered"].is_array()
    })
    .await;
    let me = &workers[&host];
    assert!(
        me["registered"]
            .as_array()
            .is_some_and(|r| r.contains(&json!("celeriac.echo"))),
        "{me:#}"
    );
    assert_eq!(me["stats"]["pool"]["max-concurrency"], config.concurrency);
    assert_eq!(
        me["active_queues"][0]["name"],
        config.default_queue.as_str()
    );
    // Alive by its heartbeats.
    poll(port, "/api/workers?status=1", |s| s[&host] == json!(true)).await;
    // Flower switches task events on by remote control (every 5 s).
    poll(port, "/api/workers?refresh=1", |w| {
        w[&host]["conf"]["worker_send_task_events"] == json!(true)
    })
    .await;

    let client = Client::connect(config.clone()).await.expect("client");
    let send = |name: &'static str, args: Vec<Value>| {
        let client = client.clone();
        async move {
            client
                .send_task(name, args, Map::new(), ApplyOptions::default())
                .await
                .expect("send")
                .id()
                .to_owned()
        }
    };
    let ok = send("celeriac.echo", vec![json!(7)]).await;
    let failed = send("celeriac.fail", vec![json!("boom")]).await;
    let tasks = poll(port, "/api/tasks", |t| {
        t[&ok]["state"] == "SUCCESS" && t[&failed]["state"] == "FAILURE"
    })
    .await;
    let done = &tasks[&ok];
    assert_eq!(done["name"], "celeriac.echo", "{done:#}");
    assert_eq!(done["worker"], host.as_str(), "{done:#}");
    assert!(done["result"].as_str().is_some_and(|r| r.contains('7')));
    assert!(done["runtime"].is_f64(), "{done:#}");
    let bad = &tasks[&failed];
    assert!(
        bad["exception"]
            .as_str()
            .is_some_and(|e| e.contains("boom")),
        "{bad:#}"
    );
    // Flower's own pages for the worker and the failed task render.
    let page = |path: String| async move { get(port, &path).await.map(|(status, _)| status) };
    assert_eq!(page(format!("/worker/{host}")).await, Some(200));
    assert_eq!(page(format!("/task/{failed}")).await, Some(200));
    let info = poll(port, &format!("/api/task/info/{failed}"), |i| {
        i["traceback"].is_string()
    })
    .await;
    assert_eq!(info["state"], "FAILURE", "{info:#}");
    // The worker's counts as Flower shows them.
    let workers = poll(port, "/api/workers?refresh=1", |w| {
        w[&host]["stats"]["total"]["celeriac.fail"] == 1
    })
    .await;
    assert_eq!(workers[&host]["stats"]["total"]["celeriac.echo"], 1);

    // Nothing Flower read from the worker made it fail. (It logs "Inspect
    // method X failed" for replies that did not come within its timeout
    // too, as at its start before the worker answered: not checked.)
    let log = flower.log_text();
    assert!(!log.contains("Traceback"), "{log}");
    drop(flower);
    client.close().await;
    running.stop(WAIT).await.expect("worker ran");
    vhost.delete();
}

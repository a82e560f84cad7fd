//! A worker, a result database and a dashboard for one test, against the
//! real broker and PostgreSQL; torn down by [`Stack::stop`].

#![allow(dead_code, unreachable_pub)]

use celeriac::Client;
use celeriac_common::Config;
use celeriac_common::testing::process::{LoggedProcess, command, sibling_bin};
use celeriac_common::testing::{self, DbKind, TestDatabase, unique};
use celeriac_dashboard::{Dashboard, Options};
use serde_json::Value;
use std::time::Duration;
use tokio::sync::oneshot;

pub const TOKEN: &str = "test-token-5c1e";

pub struct Stack {
    pub config: Config,
    pub db: TestDatabase,
    pub base: String,
    pub hostname: String,
    pub client: Client,
    pub http: reqwest::Client,
    worker: Option<LoggedProcess>,
    stop: Option<oneshot::Sender<()>>,
}

/// A dashboard (with `token`) for a fresh database, and a worker sending
/// events when `worker` is true.
pub async fn stack(prefix: &str, token: Option<&str>, worker: bool) -> Stack {
    let db = TestDatabase::create(DbKind::Postgres)
        .await
        .expect("database");
    let mut config = testing::config(&db.url, &unique(prefix));
    config.worker_send_events = true;
    let hostname = format!("{}@test", unique("w"));
    // Arguments stored (for the task page and retry), task events sent.
    let worker = worker.then(|| {
        let mut cmd = command(sibling_bin("celeriac-worker"), &config);
        cmd.env("CELERIAC_HOSTNAME", &hostname)
            .env("CELERIAC_LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .env("CELERIAC_STORE_ARGS", "true")
            .env("CELERIAC_WORKER_SEND_EVENTS", "true");
        LoggedProcess::spawn(cmd, "worker", "worker ready")
    });
    let base = serve(&config, token).await;
    let client = Client::connect(config.clone()).await.expect("client");
    Stack {
        config,
        db,
        base: base.0,
        hostname,
        client,
        http: reqwest::Client::new(),
        worker,
        stop: Some(base.1),
    }
}

impl Stack {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self.http.get(self.url(path)).send().await.expect("GET");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn post(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut req = self.http.post(self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = req.send().await.expect("POST");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Sends `name(args)` and waits for a final state; returns its id.
    pub async fn run(&self, name: &str, args: Vec<Value>) -> String {
        let sent = self
            .client
            .send_task(
                name,
                args,
                Default::default(),
                celeriac::ApplyOptions::new(),
            )
            .await
            .expect("sent");
        let id = sent.id().to_owned();
        let _ = sent.wait(Duration::from_secs(20)).await;
        id
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(w) = self.worker.take() {
            w.terminate();
        }
        self.client.close().await;
        testing::cleanup(&self.config).await;
        self.db.drop_database().await;
    }
}

/// Serves a dashboard for `config` on a free loopback port; returns its
/// base URL and the sender that stops it.
pub async fn serve(config: &Config, token: Option<&str>) -> (String, oneshot::Sender<()>) {
    let (base, stop, _) = serving(config, token).await;
    (base, stop)
}

/// [`serve`], with the server's task to await after the stop.
pub async fn serving(
    config: &Config,
    token: Option<&str>,
) -> (
    String,
    oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), celeriac_dashboard::DashboardError>>,
) {
    let options = Options {
        token: token.map(str::to_owned),
        ..Options::default()
    };
    let dashboard = Dashboard::open(config.clone(), options)
        .await
        .expect("dashboard");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    let (tx, rx) = oneshot::channel::<()>();
    let served = tokio::spawn(dashboard.serve(listener, async {
        let _ = rx.await;
    }));
    (format!("http://{addr}"), tx, served)
}

/// Polls `check` every 100 ms for up to `secs` seconds.
pub async fn eventually<F, Fut>(secs: u64, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

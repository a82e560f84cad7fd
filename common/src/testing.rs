//! Fixtures for tests that talk to real services (feature `test-util`):
//! unique names, and a throw-away database on SQLite, PostgreSQL or MySQL.
//! Service URLs come from the environment with loopback defaults:
//! `CELERIAC_TEST_BROKER_URL`, `CELERIAC_TEST_POSTGRES_URL`
//! (`postgres://postgres@127.0.0.1:5432/test`), `CELERIAC_TEST_MYSQL_URL`
//! (`mysql://root@127.0.0.1:3306/test`).

use crate::config::{BROKER_URL_DEFAULT, Config};
use sea_orm::{ConnectionTrait, Database};
use std::future::Future;
use std::time::Duration;

pub mod netns;
pub mod postgres;
pub mod process;
pub mod vhost;

/// The broker tests use.
pub fn broker_url() -> String {
    std::env::var("CELERIAC_TEST_BROKER_URL").unwrap_or_else(|_| BROKER_URL_DEFAULT.to_owned())
}

/// A name no other test uses: `prefix-<random>`.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// A chord of `size` members to record, under fresh group and callback
/// ids, its callback a task `tasks.tsum` with no arguments.
pub fn new_chord(size: u64) -> crate::backend::chord::NewChord {
    crate::backend::chord::NewChord {
        group_id: unique("g"),
        size,
        callback: serde_json::json!({"task": "tasks.tsum", "args": [], "kwargs": {},
                                     "options": {}, "subtask_type": null, "immutable": false}),
        callback_id: unique("cb"),
    }
}

/// One `#[tokio::test]` per database for each `async fn NAME(kind: DbKind)`
/// named, in modules `sqlite`, `postgres` and `mysql` (run them alone with
/// a filter such as `mysql::`).
#[macro_export]
macro_rules! on_each_database {
    ($($name:ident),* $(,)?) => {
        mod sqlite { $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name($crate::testing::DbKind::Sqlite).await } )* }
        mod postgres { $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name($crate::testing::DbKind::Postgres).await } )* }
        mod mysql { $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name($crate::testing::DbKind::Mysql).await } )* }
    };
}

/// Which database a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbKind {
    /// An SQLite file in a temporary directory.
    Sqlite,
    /// A fresh database on the PostgreSQL server.
    Postgres,
    /// A fresh database on the MySQL / MariaDB server.
    Mysql,
}

/// A database made for one test. Call [`TestDatabase::drop_database`] at the end.
#[derive(Debug)]
pub struct TestDatabase {
    /// Its URL.
    pub url: String,
    kind: DbKind,
    name: String,
    admin_url: String,
    _dir: Option<tempfile::TempDir>,
}

fn server_url(kind: DbKind) -> String {
    match kind {
        DbKind::Postgres => std::env::var("CELERIAC_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned()),
        DbKind::Mysql => std::env::var("CELERIAC_TEST_MYSQL_URL")
            .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".to_owned()),
        DbKind::Sqlite => String::new(),
    }
}

impl TestDatabase {
    /// Creates an empty database of `kind`.
    pub async fn create(kind: DbKind) -> Result<TestDatabase, sea_orm::DbErr> {
        let name = format!("celeriac_t_{}", uuid::Uuid::new_v4().simple());
        if kind == DbKind::Sqlite {
            let dir = tempfile::tempdir().map_err(|e| sea_orm::DbErr::Custom(e.to_string()))?;
            let url = format!(
                "sqlite://{}?mode=rwc",
                dir.path().join("results.db").display()
            );
            return Ok(TestDatabase {
                url,
                kind,
                name,
                admin_url: String::new(),
                _dir: Some(dir),
            });
        }
        let admin_url = server_url(kind);
        let admin = Database::connect(&admin_url).await?;
        admin
            .execute_unprepared(&format!("CREATE DATABASE {name}"))
            .await?;
        let _ = admin.close().await;
        let base = admin_url
            .rsplit_once('/')
            .map_or(admin_url.as_str(), |(b, _)| b);
        Ok(TestDatabase {
            url: format!("{base}/{name}"),
            kind,
            name,
            admin_url,
            _dir: None,
        })
    }

    /// A result backend on this database, its schema migrated.
    pub async fn migrated_backend(&self) -> Result<crate::ResultBackend, crate::BackendError> {
        let backend = crate::ResultBackend::connect(&self.url).await?;
        backend.migrate().await?;
        Ok(backend)
    }

    /// Drops the database (server kinds); the SQLite directory goes with `self`.
    pub async fn drop_database(self) {
        if self.kind == DbKind::Sqlite {
            return;
        }
        if let Ok(admin) = Database::connect(&self.admin_url).await {
            let force = if self.kind == DbKind::Postgres {
                " WITH (FORCE)"
            } else {
                ""
            };
            let _ = admin
                .execute_unprepared(&format!("DROP DATABASE IF EXISTS {}{force}", self.name))
                .await;
            let _ = admin.close().await;
        }
    }
}

/// A config for tests: the test broker, `result_backend`, one unique queue
/// (also the default queue) and a unique dead-letter queue.
pub fn config(result_backend: &str, queue: &str) -> Config {
    Config {
        broker_url: broker_url(),
        result_backend: result_backend.to_owned(),
        default_queue: queue.to_owned(),
        queues: vec![queue.to_owned()],
        dead_letter_queue: format!("{queue}.dlq"),
        delay_prefix: format!("{queue}.delay"),
        shutdown_grace_secs: 10,
        publish_timeout_secs: 10,
        ..Config::default()
    }
}

/// How long a test's clean-up may take: it is best effort, and a broker
/// that stops answering must fail the test that broke it, not hang it.
const CLEANUP_LIMIT: Duration = Duration::from_secs(30);

/// Runs a best-effort clean-up, given up (and said so) after
/// [`CLEANUP_LIMIT`].
async fn bounded_cleanup(what: &str, cleanup: impl Future<Output = ()>) {
    if tokio::time::timeout(CLEANUP_LIMIT, cleanup).await.is_err() {
        eprintln!("{what}: no answer from the broker in {CLEANUP_LIMIT:?}; left as it is");
    }
}

/// Deletes a test config's queues, dead-letter queue and delay topology.
pub async fn cleanup(config: &Config) {
    let mut names: Vec<&str> = config.queues.iter().map(String::as_str).collect();
    names.push(&config.default_queue);
    names.push(&config.dead_letter_queue);
    delete_queues(&names).await;
    bounded_cleanup("deleting the delay topology", async {
        let Ok(conn) = crate::broker::connect(&broker_url(), "celeriac-test-cleanup").await else {
            return;
        };
        if let Ok(ch) = conn.create_channel().await {
            crate::delay::delete_topology(&ch, config).await;
        }
        let _ = conn.close(200, "cleanup".into()).await;
    })
    .await;
}

/// Declares `name` as a durable queue with an argument celeriac never sets
/// (`x-max-length`), so that celeriac's own declaration of it is refused
/// (PRECONDITION_FAILED) until it is deleted. Returns the connection and
/// channel it was declared on, to read or delete it with.
pub async fn declare_refusing_queue(name: &str) -> (lapin::Connection, lapin::Channel) {
    let conn = crate::broker::connect(&broker_url(), "celeriac-test-refusing")
        .await
        .expect("connect");
    let ch = conn.create_channel().await.expect("channel");
    let mut other = lapin::types::FieldTable::default();
    other.insert(
        "x-max-length".into(),
        lapin::types::AMQPValue::LongInt(1000),
    );
    let durable = lapin::options::QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    ch.queue_declare(name.into(), durable, other)
        .await
        .expect("declare the refusing queue");
    (conn, ch)
}

/// Deletes queues (and their same-named exchanges) after a test.
pub async fn delete_queues(names: &[&str]) {
    bounded_cleanup("deleting test queues", async {
        let Ok(conn) = crate::broker::connect(&broker_url(), "celeriac-test-cleanup").await else {
            return;
        };
        if let Ok(ch) = conn.create_channel().await {
            for name in names {
                let _ = ch.queue_delete((*name).into(), Default::default()).await;
                let _ = ch.exchange_delete((*name).into(), Default::default()).await;
            }
        }
        let _ = conn.close(200, "cleanup".into()).await;
    })
    .await;
}

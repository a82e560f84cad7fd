//! Unit tests of the configuration: defaults, file values, limits, env values.

use super::load::env_value;
use super::*;
use std::path::Path;

#[test]
fn masks_passwords() {
    assert_eq!(
        mask_url("amqp://guest:secret@host:5672/%2f"),
        "amqp://guest:****@host:5672/%2f"
    );
    assert_eq!(mask_url("postgres://u@h/db"), "postgres://u@h/db");
    assert!(!mask_url("not a url:pw@x").contains("pw"));
}

#[test]
fn file_values_and_unknown_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        "concurrency = 3\nqueues = [\"a\", \"b\"]\nqueue_type = \"quorum\"\n\
         broker_tls_ca_file = \"/etc/celeriac/ca.pem\"\nworker_heartbeat_secs = 2\n",
    )
    .expect("write");
    let c = Config::load(Some(&path)).expect("load");
    assert_eq!(
        c.broker_tls_ca_file.as_deref(),
        Some(Path::new("/etc/celeriac/ca.pem"))
    );
    assert_eq!(c.broker_tls_client_cert, None);
    assert_eq!(c.worker_heartbeat_secs, 2);
    assert_eq!(c.concurrency, 3);
    assert_eq!(c.queues, vec!["a", "b"]);
    assert_eq!(c.queue_type, QueueType::Quorum);
    assert_eq!(c.prefetch(), 12);
    std::fs::write(&path, "concurency = 3\n").expect("write");
    let err = Config::load(Some(&path))
        .expect_err("unknown key")
        .to_string();
    assert!(err.contains("did you mean \"concurrency\""), "{err}");
    std::fs::write(&path, "concurrency = \"many\"\n").expect("write");
    assert!(Config::load(Some(&path)).is_err());
    // Quorum queues take no x-max-priority: refused before any declare.
    std::fs::write(&path, "queue_type = \"quorum\"\nqueue_max_priority = 9\n").expect("write");
    let err = Config::load(Some(&path)).expect_err("quorum + priority");
    assert!(err.to_string().contains("queue_max_priority"), "{err}");
}

#[test]
fn network_limits() {
    let c = Config::default();
    assert_eq!(c.connect_timeout(), Duration::from_secs(5));
    assert_eq!(c.broker_heartbeat_secs, 30);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        "broker_connect_timeout_secs = 2\nbroker_heartbeat_secs = 4\n",
    )
    .expect("write");
    let c = Config::load(Some(&path)).expect("load");
    assert_eq!(c.connect_timeout(), Duration::from_secs(2));
    assert_eq!(c.broker_heartbeat_secs, 4);
    std::fs::write(&path, "broker_connect_timeout_secs = 0.25\n").expect("write");
    let c = Config::load(Some(&path)).expect("load");
    assert_eq!(c.connect_timeout(), Duration::from_millis(250));
    for bad in ["0", "-1", "nan"] {
        std::fs::write(&path, format!("broker_connect_timeout_secs = {bad}\n")).expect("write");
        let err = Config::load(Some(&path)).expect_err(bad).to_string();
        assert!(err.contains("positive number of seconds"), "{err}");
    }
    let c = Config {
        broker_connect_timeout_secs: f64::NAN,
        ..Config::default()
    };
    assert_eq!(c.connect_timeout(), Duration::ZERO);
}

#[test]
fn env_values_parse() {
    assert_eq!(env_value("12"), toml::Value::Integer(12));
    assert_eq!(env_value("true"), toml::Value::Boolean(true));
    assert_eq!(env_value("a,b"), toml::Value::String("a,b".into()));
    assert_eq!(
        env_value("amqp://x"),
        toml::Value::String("amqp://x".into())
    );
    assert_eq!(split_csv(" a, ,b"), vec!["a", "b"]);
}

#[test]
fn several_broker_nodes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        "broker_url = [\"amqp://u:pw1@a:5672/%2f\", \"amqp://u:pw2@b:5672/%2f\"]\n\
         broker_failover_strategy = \"shuffle\"\n\
         broker_connection_retry_on_startup = false\n",
    )
    .expect("write");
    let c = Config::load(Some(&path)).expect("load");
    assert_eq!(
        c.broker_urls(),
        ["amqp://u:pw1@a:5672/%2f", "amqp://u:pw2@b:5672/%2f"]
    );
    assert_eq!(c.broker_failover_strategy, FailoverStrategy::Shuffle);
    assert!(!c.broker_connection_retry_on_startup);
    // Celery's form, as given by --broker or CELERIAC_BROKER_URL.
    let celery = Config {
        broker_url: " amqp://a//;;amqp://b// ".into(),
        ..Config::default()
    };
    assert_eq!(celery.broker_urls(), ["amqp://a//", "amqp://b//"]);
    // Every node's password is masked.
    let masked = mask_url(&c.broker_url);
    assert!(
        !masked.contains("pw1") && !masked.contains("pw2"),
        "{masked}"
    );
    assert_eq!(masked.matches("u:****@").count(), 2, "{masked}");
    std::fs::write(&path, "broker_failover_strategy = \"random\"\n").expect("write");
    assert!(Config::load(Some(&path)).is_err());
    let d = Config::default();
    assert_eq!(d.broker_failover_strategy, FailoverStrategy::RoundRobin);
    assert!(d.broker_connection_retry_on_startup);
}

#[test]
fn names_the_broker_cannot_carry_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("c.toml");
    let fits = "q".repeat(239);
    let long = "q".repeat(240);
    let long_host = format!("w@{}", "h".repeat(207));
    for (line, refused) in [
        (format!("default_queue = \"{fits}\""), None),
        (format!("default_queue = \"{long}\""), Some("queue name")),
        (
            format!("queues = [\"a\", \"{long}\"]"),
            Some("at most 239 bytes"),
        ),
        (format!("dead_letter_queue = \"{long}\""), None),
        (
            format!("dead_letter_queue = \"{}\"", "d".repeat(256)),
            Some("at most 255 bytes"),
        ),
        (
            format!("delay_prefix = \"{}\"", "d".repeat(247)),
            Some("delay_prefix"),
        ),
        (format!("hostname = \"{long_host}\""), Some("hostname")),
        (format!("hostname = \"{}\"", &long_host[1..]), None),
    ] {
        std::fs::write(&path, &line).expect("write");
        match (Config::load(Some(&path)), refused) {
            (Ok(_), None) => {}
            (Err(e), Some(what)) => assert!(e.to_string().contains(what), "{line}: {e}"),
            (Ok(_), Some(_)) => panic!("{line}: accepted"),
            (Err(e), None) => panic!("{line}: {e}"),
        }
    }
}

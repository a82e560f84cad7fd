//! TLS against real servers, with a CA made by the test: an `amqps`
//! listener on the local RabbitMQ (its own port, started and stopped by the
//! test), and private PostgreSQL and MariaDB servers with TLS on. Each
//! server requires a client certificate, so every test checks the three
//! cases: the right CA and a client certificate work; no CA (or another
//! CA) fails verification; no client certificate is refused.

use crate::support;
use crate::tls_support;

use celeriac::Client;
use celeriac_common::backend::{ResultBackend, TaskOutcome};
use celeriac_common::cli::one_line;
use celeriac_common::diagnostics::{Noop, Sleep};
use celeriac_common::testing::process::spawn_worker;
use celeriac_common::testing::{self, unique};
use celeriac_common::{Config, TaskState};
use std::time::Duration;
use support::{WORKER, ready_messages};
use tls_support::{Pki, PrivateMariaDb, PrivatePostgres, RabbitTlsListener};

fn tls_config(config: &Config, listener: &RabbitTlsListener, pki: &Pki) -> Config {
    Config {
        broker_url: listener.url("localhost"),
        broker_tls_ca_file: Some(pki.ca.clone()),
        broker_tls_client_cert: Some(pki.client_cert.clone()),
        broker_tls_client_key: Some(pki.client_key.clone()),
        ..config.clone()
    }
}

/// The one-line error of a client that cannot connect with `config`.
async fn connect_error(config: Config) -> String {
    match Client::connect(config).await {
        Ok(_) => panic!("connected although it should not"),
        Err(e) => one_line(&e),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqps_verifies_the_broker_and_presents_a_client_certificate() {
    let pki = Pki::new();
    let listener = RabbitTlsListener::start(&pki, true);
    let base = testing::config("none", &unique("tls-broker"));
    let config = tls_config(&base, &listener, &pki);

    // The right CA and a client certificate: publish with confirms works.
    let client = Client::connect(config.clone()).await.expect("amqps client");
    client.delay::<Noop>(()).await.expect("publish over amqps");
    assert_eq!(ready_messages(&config.default_queue).await, 1);

    // Default verification (no CA file): the test CA is not trusted.
    let err = connect_error(Config {
        broker_tls_ca_file: None,
        ..config.clone()
    })
    .await;
    assert!(err.contains("TLS handshake with RabbitMQ"), "{err}");
    assert!(err.contains("broker_tls_ca_file"), "{err}");
    assert!(
        err.to_ascii_lowercase().contains("certificate"),
        "names the certificate problem: {err}"
    );
    assert!(!err.contains('\n'), "one line: {err}");
    assert!(
        !err.contains("guest:guest") && err.contains("guest:****@"),
        "password masked: {err}"
    );

    // Another CA: refused the same way.
    let err = connect_error(Config {
        broker_tls_ca_file: Some(pki.other_ca.clone()),
        ..config.clone()
    })
    .await;
    assert!(err.contains("TLS handshake with RabbitMQ"), "{err}");

    // No client certificate: the broker refuses the connection.
    let err = connect_error(Config {
        broker_tls_client_cert: None,
        broker_tls_client_key: None,
        ..config.clone()
    })
    .await;
    assert!(err.contains("TLS handshake with RabbitMQ"), "{err}");

    // TLS settings with a plain amqp:// URL are an error, not ignored.
    let err = connect_error(Config {
        broker_url: testing::broker_url(),
        ..config.clone()
    })
    .await;
    assert!(err.contains("is not amqps://"), "{err}");

    drop(client);
    testing::cleanup(&config).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_verify_full_needs_the_ca_and_a_client_certificate() {
    let pki = Pki::new();
    let pg = PrivatePostgres::start(&pki);
    let ca = pki.ca.display();
    let cert = pki.client_cert.display();
    let key = pki.client_key.display();
    // The password is not used by certificate authentication: it is there to
    // check that errors mask it.
    let url = |query: &str| pg.url(query).replace("celeriac@", "celeriac:s3cret@");

    let ok = url(&format!(
        "sslmode=verify-full&sslrootcert={ca}&sslcert={cert}&sslkey={key}"
    ));
    let backend = ResultBackend::connect(&ok).await.expect("TLS backend");
    backend.migrate().await.expect("migrate over TLS");
    let mut outcome = TaskOutcome::new("tls-1", "tasks.tls", TaskState::Success);
    outcome.result = Some(serde_json::json!(42));
    backend.store(vec![outcome]).await.expect("store");
    let record = backend.get("tls-1").await.expect("get").expect("row");
    assert_eq!(record.result, Some(serde_json::json!(42)));

    let refused = [
        // No CA: the server's certificate is not trusted.
        format!("sslmode=verify-full&sslcert={cert}&sslkey={key}"),
        // Another CA.
        format!(
            "sslmode=verify-full&sslrootcert={}&sslcert={cert}&sslkey={key}",
            pki.other_ca.display()
        ),
        // No client certificate: pg_hba.conf requires one.
        format!("sslmode=verify-full&sslrootcert={ca}"),
        // No TLS at all.
        "sslmode=disable".to_owned(),
    ];
    for query in refused {
        let err = match ResultBackend::connect(&url(&query)).await {
            Ok(_) => panic!("connected with {query}"),
            Err(e) => one_line(&e),
        };
        assert!(err.contains("cannot open result backend"), "{err}");
        assert!(!err.contains("s3cret") && !err.contains('\n'), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_verify_identity_needs_the_ca_and_a_client_certificate() {
    let pki = Pki::new();
    let db = PrivateMariaDb::start(&pki);
    let ca = pki.ca.display();
    let cert = pki.client_cert.display();
    let key = pki.client_key.display();

    let ok = db.url(&format!(
        "ssl-mode=VERIFY_IDENTITY&ssl-ca={ca}&ssl-cert={cert}&ssl-key={key}"
    ));
    let backend = ResultBackend::connect(&ok).await.expect("TLS backend");
    backend.migrate().await.expect("migrate over TLS");
    let mut outcome = TaskOutcome::new("tls-1", "tasks.tls", TaskState::Success);
    outcome.result = Some(serde_json::json!("over tls"));
    backend.store(vec![outcome]).await.expect("store");
    let record = backend.get("tls-1").await.expect("get").expect("row");
    assert_eq!(record.result, Some(serde_json::json!("over tls")));

    let refused = [
        format!("ssl-mode=VERIFY_IDENTITY&ssl-cert={cert}&ssl-key={key}"),
        format!(
            "ssl-mode=VERIFY_IDENTITY&ssl-ca={}&ssl-cert={cert}&ssl-key={key}",
            pki.other_ca.display()
        ),
        // The user is REQUIRE X509.
        format!("ssl-mode=VERIFY_IDENTITY&ssl-ca={ca}"),
        "ssl-mode=DISABLED".to_owned(),
    ];
    for query in refused {
        let err = match ResultBackend::connect(&db.url(&query)).await {
            Ok(_) => panic!("connected with {query}"),
            Err(e) => one_line(&e),
        };
        assert!(err.contains("cannot open result backend"), "{err}");
        assert!(!err.contains('\n'), "{err}");
    }
}

/// The stock worker binary, configured with the TLS flags, consumes over
/// amqps and records results in PostgreSQL over verified TLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_runs_tasks_over_amqps_with_results_in_tls_postgres() {
    let pki = Pki::new();
    let listener = RabbitTlsListener::start(&pki, true);
    let pg = PrivatePostgres::start(&pki);
    let results = pg.url(&format!(
        "sslmode=verify-full&sslrootcert={}&sslcert={}&sslkey={}",
        pki.ca.display(),
        pki.client_cert.display(),
        pki.client_key.display()
    ));
    let base = testing::config(&results, &unique("tls-worker"));
    let config = tls_config(&base, &listener, &pki);
    let path = |p: &std::path::Path| p.display().to_string();
    let flags = [
        "--broker-tls-ca-file".to_owned(),
        path(&pki.ca),
        "--broker-tls-client-cert".to_owned(),
        path(&pki.client_cert),
        "--broker-tls-client-key".to_owned(),
        path(&pki.client_key),
    ];
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let worker = spawn_worker(WORKER, &config, "tls@test", &flags);

    let client = Client::connect(config.clone()).await.expect("client");
    let slept = client
        .delay::<Sleep>((0.01,))
        .await
        .expect("send")
        .get(Duration::from_secs(30))
        .await
        .expect("result over TLS");
    assert!((slept - 0.01).abs() < 1e-9, "{slept}");
    let noop = client.delay::<Noop>(()).await.expect("send");
    noop.get(Duration::from_secs(30)).await.expect("noop");
    let record = noop.wait(Duration::from_secs(1)).await.expect("record");
    assert_eq!(record.worker.as_deref(), Some("tls@test"));
    assert_eq!(worker.terminate(), Some(0));
    testing::cleanup(&config).await;
}

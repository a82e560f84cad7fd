//! RabbitMQ connection and topology, declared exactly as Celery declares it
//! so Python and Rust processes can share queues.

use crate::config::{Config, QueueType, mask_url};
use crate::tls::{BrokerTls, TlsError};
use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};

/// A broker operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The broker could not be reached or refused the login.
    #[error(
        "cannot connect to RabbitMQ at {url} ({source}); check that it is running and that --broker / CELERIAC_BROKER_URL is right"
    )]
    Connect {
        /// The URL, password masked.
        url: String,
        /// The client's error.
        source: lapin::Error,
    },
    /// The TLS handshake with the broker failed: its certificate is not
    /// trusted or does not match the host, or it wants a client certificate.
    #[error(
        "TLS handshake with RabbitMQ at {url} failed ({source}); check broker_tls_ca_file / CELERIAC_BROKER_TLS_CA_FILE (the CA that signed the broker's certificate; the URL's host must be named in it) and, if the broker requires one, broker_tls_client_cert / broker_tls_client_key"
    )]
    TlsHandshake {
        /// The URL, password masked.
        url: String,
        /// The client's error.
        source: lapin::Error,
    },
    /// The TLS settings cannot be used.
    #[error("invalid broker TLS settings: {source}")]
    TlsSettings {
        /// What is wrong.
        #[from]
        source: TlsError,
    },
    /// The broker URL cannot be parsed.
    #[error(
        "invalid broker URL {url:?} ({reason}); expected amqp://USER:PASSWORD@HOST:5672/VHOST (or amqps://)"
    )]
    BadUrl {
        /// The URL, password masked.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A queue or exchange could not be declared.
    #[error("cannot declare {what} {name:?}")]
    Declare {
        /// `"queue"` or `"exchange"`.
        what: &'static str,
        /// Its name.
        name: String,
        /// The broker's answer (for example PRECONDITION_FAILED when it exists with other arguments).
        source: lapin::Error,
    },
    /// Another channel-level operation failed.
    #[error("broker operation {op} failed")]
    Channel {
        /// What was being done.
        op: &'static str,
        /// The client's error.
        source: lapin::Error,
    },
}

/// Frame size asked for when the URL does not set one (RabbitMQ's default).
/// Left to negotiation, the client sizes its buffers for the largest frame
/// and each connection costs about 8 MB of memory; this keeps a worker's
/// idle footprint small.
const FRAME_MAX_DEFAULT: u32 = 131_072;

/// Connects to the configured broker (`broker_url` and the `broker_tls_*`
/// keys) with a connection name that shows in RabbitMQ's management UI.
/// Every celeriac process connects through here.
pub async fn connect_config(config: &Config, name: &str) -> Result<Connection, BrokerError> {
    connect_with_tls(&config.broker_url, &BrokerTls::from_config(config), name).await
}

/// Connects to `url` with the default TLS settings (for `amqps://`: the
/// system's CAs, no client certificate).
pub async fn connect(url: &str, name: &str) -> Result<Connection, BrokerError> {
    connect_with_tls(url, &BrokerTls::default(), name).await
}

/// Connects to `url`; an `amqps://` URL uses `tls` (server certificates are
/// always verified). TLS settings with a plain `amqp://` URL are an error
/// rather than silently unused.
pub async fn connect_with_tls(
    url: &str,
    tls: &BrokerTls,
    name: &str,
) -> Result<Connection, BrokerError> {
    let props = ConnectionProperties::default().with_connection_name(LongString::from(name));
    let mut uri: lapin::uri::AMQPUri =
        url.parse().map_err(|reason: String| BrokerError::BadUrl {
            url: mask_url(url),
            reason,
        })?;
    if uri.query.frame_max.is_none() {
        uri.query.frame_max = Some(FRAME_MAX_DEFAULT);
    }
    let secure = uri.scheme == lapin::uri::AMQPScheme::AMQPS;
    if tls.is_set() && !secure {
        return Err(TlsError::Settings(format!(
            "broker_tls_* is set but the broker URL {} is not amqps://",
            mask_url(url)
        ))
        .into());
    }
    let tls_config = tls.load()?;
    let runtime = lapin::runtime::default_runtime().map_err(|source| BrokerError::Connect {
        url: mask_url(url),
        source,
    })?;
    Connection::connect_uri_with_config(uri, props, tls_config, runtime)
        .await
        .map_err(|source| {
            let url = mask_url(url);
            if secure && is_tls_failure(&source) {
                BrokerError::TlsHandshake { url, source }
            } else {
                BrokerError::Connect { url, source }
            }
        })
}

/// Whether a connection error came from the TLS layer (rustls' errors name
/// certificates, the handshake or a TLS alert).
///
/// A reset during an `amqps` connection counts too: a TLS 1.3 server that
/// wants a client certificate sends its alert after the client thinks the
/// handshake is done, and the client may see the reset before the alert (a
/// broker that is down refuses the connection instead).
fn is_tls_failure(err: &lapin::Error) -> bool {
    let text = err.to_string().to_ascii_lowercase();
    [
        "certificate",
        "handshake",
        "tls",
        "alert",
        "connection reset",
        "broken pipe",
    ]
    .iter()
    .any(|w| text.contains(w))
}

/// The arguments Celery declares a task queue with for this configuration.
pub fn queue_arguments(config: &Config) -> FieldTable {
    let mut args = FieldTable::default();
    if config.queue_type == QueueType::Quorum {
        args.insert(
            "x-queue-type".into(),
            AMQPValue::LongString(LongString::from("quorum")),
        );
    }
    if let Some(max) = config.queue_max_priority {
        args.insert("x-max-priority".into(), AMQPValue::LongInt(i32::from(max)));
    }
    args
}

/// Declares `queue` as Celery does: durable, not exclusive, not auto-deleted,
/// with `queue_arguments`, bound to a durable direct exchange of the same name
/// with the queue's name as routing key.
pub async fn declare_task_queue(
    channel: &Channel,
    queue: &str,
    config: &Config,
) -> Result<(), BrokerError> {
    channel
        .exchange_declare(
            queue.into(),
            ExchangeKind::Direct,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(|source| BrokerError::Declare {
            what: "exchange",
            name: queue.to_owned(),
            source,
        })?;
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            queue_arguments(config),
        )
        .await
        .map_err(|source| BrokerError::Declare {
            what: "queue",
            name: queue.to_owned(),
            source,
        })?;
    channel
        .queue_bind(
            queue.into(),
            queue.into(),
            queue.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|source| BrokerError::Declare {
            what: "queue binding",
            name: queue.to_owned(),
            source,
        })
}

/// Declares the dead-letter queue: a durable classic queue.
pub async fn declare_dead_letter_queue(channel: &Channel, queue: &str) -> Result<(), BrokerError> {
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .map(|_| ())
        .map_err(|source| BrokerError::Declare {
            what: "queue",
            name: queue.to_owned(),
            source,
        })
}

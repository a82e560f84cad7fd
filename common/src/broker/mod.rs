//! RabbitMQ connection and topology, declared exactly as Celery declares it
//! so Python and Rust processes can share queues.

//!
//! Nothing here waits for ever on the network: connecting (TCP, TLS and the
//! AMQP handshake together) is bounded by `broker_connect_timeout_secs`,
//! every broker round trip made while setting up (channel open, declares,
//! `basic.qos`, `confirm.select`, close) goes through [`bounded`] or
//! [`within`], and AMQP heartbeats (`broker_heartbeat_secs`) make a broker
//! that goes silent after the handshake (packets dropped, no RST) a closed
//! connection within two heartbeat intervals.

mod bounded;
mod declare;
mod failover;
mod names;
mod ordered;
mod startup;

pub use bounded::{bounded, close, within};
pub use declare::{
    declare_dead_letter_queue, declare_error, declare_task_queue, queue_arguments, type_arguments,
};
pub use failover::connect_config;
pub use names::{MAX_NAME_BYTES, MAX_QUEUE_BYTES, check_name, check_queue};
pub use ordered::PublishOrder;
pub use startup::retry_on_startup;

use crate::config::{Config, mask_url};
use crate::tls::{BrokerTls, TlsError};
use lapin::tcp::AsyncTcpStream;
use lapin::types::LongString;
use lapin::uri::{AMQPScheme, AMQPUri};
use lapin::{Connection, ConnectionProperties};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

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
    /// A queue exists with other arguments than this configuration declares
    /// it with (another `queue_type`, priority, ...): RabbitMQ refuses the
    /// declaration (PRECONDITION_FAILED) and cannot change the queue.
    #[error("queue {name:?} exists with other arguments ({detail}); {hint}")]
    QueueMismatch {
        /// The queue.
        name: String,
        /// The broker's words.
        detail: String,
        /// What to do about it.
        hint: String,
    },
    /// Another channel-level operation failed.
    #[error("broker operation {op} failed")]
    Channel {
        /// What was being done.
        op: &'static str,
        /// The client's error.
        source: lapin::Error,
    },
    /// The broker accepted no connection, or did not finish the TLS or
    /// AMQP handshake, within `broker_connect_timeout_secs`.
    #[error(
        "cannot connect to RabbitMQ at {url} within {after:?}: no answer; check that it is running and reachable and that --broker / CELERIAC_BROKER_URL is right (--connect-timeout / CELERIAC_BROKER_CONNECT_TIMEOUT_SECS sets the wait)"
    )]
    ConnectTimeout {
        /// The URL, password masked.
        url: String,
        /// How long the connection was waited for.
        after: Duration,
    },
    /// None of the broker nodes of `broker_url` could be connected to.
    #[error("none of the {nodes} broker nodes could be connected to; the last one tried said")]
    NoNode {
        /// How many nodes were tried.
        nodes: usize,
        /// The last node's error.
        #[source]
        last: Box<BrokerError>,
    },
    /// A queue, exchange or routing-key name longer than AMQP (or the
    /// delay queues' routing keys) can carry.
    #[error("{what} {start:?}… is {len} bytes; it can be at most {max} bytes")]
    NameTooLong {
        /// `"queue name"`, `"exchange name"`, `"routing key"`, ...
        what: &'static str,
        /// Its first characters.
        start: String,
        /// Its length in bytes.
        len: usize,
        /// The longest it may be.
        max: usize,
    },
    /// The broker did not answer a request in time: it, or the network to
    /// it, is down or overloaded.
    #[error("RabbitMQ did not answer {op} within {after:?}")]
    Timeout {
        /// What was being done.
        op: &'static str,
        /// How long the answer was waited for.
        after: Duration,
    },
}

impl BrokerError {
    /// Whether trying again later may succeed: the broker was unreachable,
    /// silent or went away. A bad URL, unusable TLS settings and a failed
    /// TLS handshake (a certificate problem) are not: they need a fix.
    pub fn is_transient(&self) -> bool {
        match self {
            BrokerError::BadUrl { .. }
            | BrokerError::QueueMismatch { .. }
            | BrokerError::TlsSettings { .. }
            | BrokerError::TlsHandshake { .. }
            | BrokerError::NameTooLong { .. } => false,
            BrokerError::NoNode { last, .. } => last.is_transient(),
            // The broker refused a declaration (PRECONDITION_FAILED: it
            // exists with other arguments): asking again gets the same answer.
            BrokerError::Declare { source, .. } => {
                !matches!(source.kind(), lapin::ErrorKind::ProtocolError(_))
            }
            BrokerError::Connect { .. }
            | BrokerError::ConnectTimeout { .. }
            | BrokerError::Channel { .. }
            | BrokerError::Timeout { .. } => true,
        }
    }
}

/// Frame size asked for when the URL does not set one (RabbitMQ's default).
/// Left to negotiation, the client sizes its buffers for the largest frame
/// and each connection costs about 8 MB of memory; this keeps a worker's
/// idle footprint small.
const FRAME_MAX_DEFAULT: u32 = 131_072;

/// How long connecting may take and how often the two sides of a
/// connection must hear from each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bound on TCP connect, TLS and AMQP handshakes together.
    pub connect: Duration,
    /// AMQP heartbeat interval proposed to the broker, in seconds (the
    /// lower of the two sides' values wins; 0 takes the broker's).
    pub heartbeat_secs: u16,
}

impl Limits {
    /// The limits `config` sets (`broker_connect_timeout_secs`,
    /// `broker_heartbeat_secs`).
    pub fn from_config(config: &Config) -> Limits {
        Limits {
            connect: config.connect_timeout(),
            heartbeat_secs: config.broker_heartbeat_secs,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits::from_config(&Config::default())
    }
}

/// Connects to `url` with the default TLS settings (for `amqps://`: the
/// system's CAs, no client certificate) and the default limits.
pub async fn connect(url: &str, name: &str) -> Result<Connection, BrokerError> {
    connect_with_tls(url, &BrokerTls::default(), name).await
}

/// Connects to `url` with the default limits; an `amqps://` URL uses `tls`
/// (server certificates are always verified). TLS settings with a plain
/// `amqp://` URL are an error rather than silently unused.
pub async fn connect_with_tls(
    url: &str,
    tls: &BrokerTls,
    name: &str,
) -> Result<Connection, BrokerError> {
    connect_with_limits(url, tls, name, Limits::default()).await
}

/// Connects to `url` with `tls`, within `limits.connect`: a broker that
/// does not accept the connection, or that stops answering during the TLS
/// or AMQP handshake, gives [`BrokerError::ConnectTimeout`], and the socket
/// of the abandoned attempt is shut down (no thread or socket is left
/// waiting on it).
pub async fn connect_with_limits(
    url: &str,
    tls: &BrokerTls,
    name: &str,
    limits: Limits,
) -> Result<Connection, BrokerError> {
    let props = ConnectionProperties::default().with_connection_name(LongString::from(name));
    let mut uri: AMQPUri = url.parse().map_err(|reason: String| BrokerError::BadUrl {
        url: mask_url(url),
        reason,
    })?;
    if uri.query.frame_max.is_none() {
        uri.query.frame_max = Some(FRAME_MAX_DEFAULT);
    }
    if uri.query.heartbeat.is_none() {
        uri.query.heartbeat = Some(limits.heartbeat_secs);
    }
    let secure = uri.scheme == AMQPScheme::AMQPS;
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
    let cutoff = Arc::new(Cutoff::default());
    let tls_config = Arc::new(tls_config);
    let attempt = cutoff.clone();
    // lapin's own connector, plus a handle on the socket for `Cutoff` and
    // a way to stop the TCP connect and TLS handshake when given up.
    let connecting = Connection::connector(
        uri,
        runtime,
        async move |uri: AMQPUri, runtime| {
            use std::os::fd::AsFd;
            let cancelled = attempt.notify.notified();
            if attempt.cut.load(Ordering::SeqCst) {
                return Err(abandoned());
            }
            let open = async {
                let addrs =
                    runtime.to_socket_addrs((uri.authority.host.clone(), uri.authority.port));
                let stream = AsyncTcpStream::connect(&runtime, addrs).await?;
                if let AsyncTcpStream::Plain(tcp) = &stream {
                    let fd = tcp.get_ref().as_fd().try_clone_to_owned()?;
                    attempt.keep(std::net::TcpStream::from(fd));
                }
                match uri.scheme {
                    AMQPScheme::AMQP => Ok(stream),
                    AMQPScheme::AMQPS => {
                        stream
                            .into_tls(&uri.authority.host, tls_config.as_ref().as_ref())
                            .await
                    }
                }
            };
            tokio::select! {
                opened = open => opened.map_err(lapin::Error::from),
                _ = cancelled => Err(abandoned()),
            }
        },
        props,
    );
    match tokio::time::timeout(limits.connect, connecting).await {
        Ok(Ok(connection)) => {
            cutoff.disarm();
            Ok(connection)
        }
        Ok(Err(source)) => {
            cutoff.cut();
            let url = mask_url(url);
            Err(if secure && is_tls_failure(&source) {
                BrokerError::TlsHandshake { url, source }
            } else {
                BrokerError::Connect { url, source }
            })
        }
        Err(_) => {
            cutoff.cut();
            Err(BrokerError::ConnectTimeout {
                url: mask_url(url),
                after: limits.connect,
            })
        }
    }
}

/// The way to abandon a connection attempt: lapin runs the handshake on a
/// thread of its own that nothing else can stop, so the socket it uses is
/// kept here (a second handle on it) and shut down when the attempt is
/// given up; the thread then sees the connection end and exits.
#[derive(Default)]
struct Cutoff {
    cut: AtomicBool,
    notify: Notify,
    socket: Mutex<Option<std::net::TcpStream>>,
}

impl Cutoff {
    /// Gives up the attempt: a TCP connect or TLS handshake under way
    /// stops, an established socket is shut down.
    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
        if let Some(socket) = self.take() {
            let _ = socket.shutdown(std::net::Shutdown::Both);
        }
    }

    /// The attempt succeeded: the second handle is closed (it would keep
    /// the socket open after lapin closes its own).
    fn disarm(&self) {
        drop(self.take());
    }

    fn take(&self) -> Option<std::net::TcpStream> {
        self.socket.lock().map_or(None, |mut s| s.take())
    }

    /// Keeps a handle on the attempt's socket; shuts it down at once if
    /// the attempt was given up meanwhile.
    fn keep(&self, socket: std::net::TcpStream) {
        let Ok(mut slot) = self.socket.lock() else {
            return;
        };
        if self.cut.load(Ordering::SeqCst) {
            let _ = socket.shutdown(std::net::Shutdown::Both);
        } else {
            *slot = Some(socket);
        }
    }
}

fn abandoned() -> lapin::Error {
    std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "connection attempt abandoned (connect timeout)",
    )
    .into()
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

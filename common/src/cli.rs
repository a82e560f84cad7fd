//! Command-line pieces shared by the `celeriac`, `celeriac-worker` and
//! `celeriac-beat` binaries.

use crate::config::{Config, ConfigError, LogFormat, QueueType};
use std::path::PathBuf;

/// The help heading of the flags every binary shares, so that a
/// command's own options are listed apart from them.
pub const GLOBAL_HEADING: &str = "Global options";

/// Connection flags every binary takes: the broker's ([`BrokerArgs`]) and
/// the result backend's. Each also reads its environment variable; a flag
/// beats the variable, which beats the config file.
#[derive(Debug, Clone, clap::Args)]
pub struct ConnectionArgs {
    /// Config file, broker and log flags.
    #[command(flatten)]
    pub broker: BrokerArgs,
    /// Result backend URL: sqlite://FILE?mode=rwc, postgres://..., mysql://..., or none
    /// [default: sqlite://celeriac.db?mode=rwc].
    #[arg(
        long,
        env = "CELERIAC_RESULT_BACKEND",
        hide_env_values = true,
        global = true,
        help_heading = GLOBAL_HEADING
    )]
    pub result_backend: Option<String>,
}

impl ConnectionArgs {
    /// Loads the config (file, environment) and applies these flags over it.
    pub fn load(&self) -> Result<Config, ConfigError> {
        let mut config = self.broker.load()?;
        if let Some(r) = &self.result_backend {
            config.result_backend = r.clone();
        }
        Ok(config)
    }
}

/// The result backend flag alone, for the commands of a binary that
/// need it while its other commands do not (the `celeriac` admin tool).
#[derive(Debug, Clone, clap::Args)]
pub struct BackendArgs {
    /// Result backend URL: sqlite://FILE?mode=rwc, postgres://..., mysql://..., or none
    /// [default: sqlite://celeriac.db?mode=rwc].
    #[arg(long, env = "CELERIAC_RESULT_BACKEND", hide_env_values = true)]
    pub result_backend: Option<String>,
}

impl BackendArgs {
    /// Applies this flag over `config`.
    pub fn apply(&self, config: &mut Config) {
        if let Some(r) = &self.result_backend {
            config.result_backend = r.clone();
        }
    }
}

/// The config file, broker and log flags: what every command of every
/// binary uses.
#[derive(Debug, Clone, clap::Args)]
pub struct BrokerArgs {
    /// TOML config file.
    #[arg(
        long,
        env = "CELERIAC_CONFIG",
        global = true,
        help_heading = GLOBAL_HEADING
    )]
    pub config: Option<PathBuf>,
    /// RabbitMQ URL [default: amqp://guest:guest@127.0.0.1:5672/%2f].
    #[arg(
        long,
        env = "CELERIAC_BROKER_URL",
        hide_env_values = true,
        global = true,
        help_heading = GLOBAL_HEADING
    )]
    pub broker: Option<String>,
    /// PEM file of the CA(s) that signed the broker's certificate, trusted
    /// besides the system's (amqps:// only).
    #[arg(
        long,
        env = "CELERIAC_BROKER_TLS_CA_FILE",
        global = true,
        help_heading = GLOBAL_HEADING
    )]
    pub broker_tls_ca_file: Option<PathBuf>,
    /// PEM client certificate (chain) presented to the broker (amqps:// only).
    #[arg(
        long,
        env = "CELERIAC_BROKER_TLS_CLIENT_CERT",
        global = true,
        help_heading = GLOBAL_HEADING
    )]
    pub broker_tls_client_cert: Option<PathBuf>,
    /// PEM private key of the client certificate.
    #[arg(
        long,
        env = "CELERIAC_BROKER_TLS_CLIENT_KEY",
        global = true,
        help_heading = GLOBAL_HEADING
    )]
    pub broker_tls_client_key: Option<PathBuf>,
    /// Seconds to wait for the broker to accept a connection and finish the
    /// TLS and AMQP handshakes, and for each answer while setting up [default: 5].
    #[arg(
        long,
        value_name = "SECS",
        env = "CELERIAC_BROKER_CONNECT_TIMEOUT_SECS",
        global = true,
        help_heading = GLOBAL_HEADING
    )]
    pub connect_timeout: Option<f64>,
    /// AMQP heartbeat interval in seconds; a broker silent for two intervals
    /// is taken for gone [default: 30; 0 takes the broker's].
    #[arg(
        long,
        value_name = "SECS",
        env = "CELERIAC_BROKER_HEARTBEAT_SECS",
        global = true,
        help_heading = GLOBAL_HEADING
    )]
    pub broker_heartbeat: Option<u16>,
    /// Type of the task, delay and dead-letter queues this process
    /// declares (quorum: replicated, see docs/scaling.md) [default: classic].
    #[arg(
        long,
        env = "CELERIAC_QUEUE_TYPE",
        value_enum,
        global = true,
        help_heading = GLOBAL_HEADING
    )]
    pub queue_type: Option<QueueType>,
    /// Log format.
    #[arg(
        long,
        env = "CELERIAC_LOG_FORMAT",
        value_enum,
        global = true,
        help_heading = GLOBAL_HEADING
    )]
    pub log_format: Option<LogFormat>,
}

impl BrokerArgs {
    /// Loads the config (file, environment) and applies these flags over it.
    pub fn load(&self) -> Result<Config, ConfigError> {
        let mut config = Config::load(self.config.as_deref())?;
        if let Some(b) = &self.broker {
            config.broker_url = b.clone();
        }
        if let Some(f) = &self.broker_tls_ca_file {
            config.broker_tls_ca_file = Some(f.clone());
        }
        if let Some(f) = &self.broker_tls_client_cert {
            config.broker_tls_client_cert = Some(f.clone());
        }
        if let Some(f) = &self.broker_tls_client_key {
            config.broker_tls_client_key = Some(f.clone());
        }
        if let Some(t) = self.connect_timeout {
            config.broker_connect_timeout_secs = t;
        }
        if let Some(h) = self.broker_heartbeat {
            config.broker_heartbeat_secs = h;
        }
        if let Some(t) = self.queue_type {
            config.queue_type = t;
        }
        if let Some(f) = self.log_format {
            config.log_format = f;
        }
        config.check("command line")?;
        Ok(config)
    }
}

/// An error and its causes on one line: `what failed: why: deeper why`.
pub fn one_line(err: &(dyn std::error::Error + 'static)) -> String {
    let mut line = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = s.source();
    }
    line
}

/// Writes a command's output to stdout. When the reader has gone
/// (`celeriac events | head -3`), the command ends quietly with status 0,
/// as `grep` or `rg` do, instead of panicking as `println!` does; any other
/// write error ends it with one line and status 1.
pub fn write_out(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: cannot write the output: {e}");
        std::process::exit(1);
    }
}

/// `println!` for a command's output: see [`write_out`].
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::cli::write_out(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `print!` for a command's output: see [`write_out`].
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::write_out(format_args!($($arg)*))
    };
}

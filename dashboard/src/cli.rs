//! The command line: `celeriac-dashboard [--bind ADDR] [--token T] ...`
//! (also run as `celeriac dashboard ...`).

use crate::{Dashboard, DashboardError, Options};
use celeriac_common::Config;
use celeriac_common::cli::{BackendArgs, BrokerArgs, one_line};
use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;

/// The address served unless `--bind` says otherwise: loopback only.
pub const BIND_DEFAULT: &str = "127.0.0.1:5555";

/// The dashboard's own flags.
#[derive(Debug, Clone, clap::Args)]
pub struct DashboardArgs {
    /// Address to listen on. Loopback by default: put it behind a proxy
    /// with TLS, or bind 0.0.0.0:5555 knowingly.
    #[arg(long, env = "CELERIAC_DASHBOARD_BIND", default_value = BIND_DEFAULT)]
    pub bind: String,
    /// Token that actions (revoke, retry, pause, resume, run now, replay)
    /// need as `Authorization: Bearer <token>`; without one the dashboard is read-only.
    #[arg(long, env = "CELERIAC_DASHBOARD_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Beat's TOML schedule file, to list its entries with the database's.
    #[arg(long, env = "CELERIAC_BEAT_SCHEDULE")]
    pub schedule: Option<PathBuf>,
    /// RabbitMQ management API, e.g. http://user:pass@host:15672 [default: the
    /// broker's host, port 15672, the broker's credentials]; "off": passive declares only.
    #[arg(long, env = "CELERIAC_MANAGEMENT_URL", hide_env_values = true)]
    pub management_url: Option<String>,
    /// The result database.
    #[command(flatten)]
    pub backend: BackendArgs,
}

impl DashboardArgs {
    /// Serves until SIGINT/SIGTERM.
    pub async fn run(self, mut config: Config) -> Result<(), DashboardError> {
        self.backend.apply(&mut config);
        let options = Options {
            token: self.token,
            schedule_file: self
                .schedule
                .or_else(|| config.beat_schedule.clone().map(PathBuf::from)),
            management_url: self.management_url,
        };
        let dashboard = Dashboard::open(config, options).await?;
        let listener = tokio::net::TcpListener::bind(&self.bind)
            .await
            .map_err(DashboardError::Bind)?;
        let local = listener.local_addr().map_err(DashboardError::Bind)?;
        tracing::info!(address = %local, "dashboard listening on http://{local}/");
        eprintln!("celeriac dashboard: http://{local}/");
        dashboard
            .serve(listener, async {
                celeriac_common::shutdown::stop_signal().await;
            })
            .await
    }
}

/// celeriac dashboard: workers, queues, tasks and schedules in a browser,
/// live, with a JSON API; actions (revoke, retry, pause, run now, replay)
/// need --token.
#[derive(Debug, Parser)]
#[command(name = "celeriac-dashboard", version)]
pub struct Cli {
    #[command(flatten)]
    conn: BrokerArgs,
    #[command(flatten)]
    args: DashboardArgs,
}

/// Runs the command line; returns the process's exit code.
pub fn main(cli: Cli) -> ExitCode {
    let run = || -> Result<(), String> {
        let config = cli.conn.load().map_err(|e| one_line(&e))?;
        celeriac_common::telemetry::init(config.log_format, "info");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the async runtime: {e}"))?;
        runtime
            .block_on(cli.args.run(config))
            .map_err(|e| one_line(&e))
    };
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("celeriac-dashboard: error: {e}");
            ExitCode::FAILURE
        }
    }
}

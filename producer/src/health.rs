//! `celeriac health`: a liveness check for container health checks, read
//! from the rows the processes already keep in the result backend. A
//! worker renews its row in `celeriac_workers` every
//! `worker_heartbeat_secs`; the leading beat renews its lease every third
//! of `beat_lease_secs`. Both are compared with the database's clock, as
//! the worker's sweep and the lease itself are.

use celeriac_common::backend::beat::lease;
use celeriac_common::backend::workers::entity as workers;
use celeriac_common::backend::{BackendError, ResultBackend, db_clock_ms};
use sea_orm::ConnectionTrait;
use sea_orm::sea_query::{Alias, Expr, ExprTrait, Order, Query};
use std::process::ExitCode;

/// The beat lease's row name (beat's `LEASE_NAME`).
const LEASE_NAME: &str = "default";

/// What to check.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum Of {
    /// A worker of this host name has renewed its heartbeat row lately.
    Worker,
    /// Some beat holds the leader lease, renewed lately (one leads; the others stand by).
    Beat,
}

/// Prints one line and returns exit code 0 (alive) or 1.
pub(crate) async fn check(
    of: Of,
    hostname: Option<String>,
    config: &celeriac::Config,
) -> Result<ExitCode, BackendError> {
    if !config.results_enabled() {
        println!(
            "unknown: the health check reads the result backend, and result_backend is \"none\""
        );
        return Ok(ExitCode::FAILURE);
    }
    let backend = ResultBackend::connect(&config.result_backend).await?;
    let db = backend.connection();
    let now = db_clock_ms(db.get_database_backend());
    let alive = match of {
        Of::Worker => {
            let hostname = hostname.unwrap_or_else(|| config.hostname.clone());
            let query = Query::select()
                .column(workers::Column::Pid)
                .expr_as(
                    Expr::cust(now).sub(Expr::col(workers::Column::HeartbeatAtMs)),
                    Alias::new("age_ms"),
                )
                .from(workers::Entity)
                .and_where(Expr::col(workers::Column::Hostname).eq(hostname.as_str()))
                .and_where(Expr::col(workers::Column::ExpiresAtMs).gt(Expr::cust(now)))
                .order_by(workers::Column::HeartbeatAtMs, Order::Desc)
                .limit(1)
                .to_owned();
            match db.query_one(&query).await? {
                Some(row) => {
                    let pid: i64 = row.try_get("", "pid")?;
                    let age: i64 = row.try_get("", "age_ms")?;
                    println!("alive: worker {hostname} (pid {pid}), last heartbeat {age} ms ago");
                    true
                }
                None => {
                    println!(
                        "not alive: no worker named {hostname} has renewed its heartbeat row lately"
                    );
                    false
                }
            }
        }
        Of::Beat => {
            let query = Query::select()
                .column(lease::Column::Holder)
                .expr_as(
                    Expr::cust(now).sub(Expr::col(lease::Column::RenewedAtMs)),
                    Alias::new("age_ms"),
                )
                .from(lease::Entity)
                .and_where(Expr::col(lease::Column::Name).eq(LEASE_NAME))
                .and_where(Expr::col(lease::Column::ExpiresAtMs).gt(Expr::cust(now)))
                .to_owned();
            match db.query_one(&query).await? {
                Some(row) => {
                    let holder: String = row.try_get("", "holder")?;
                    let age: i64 = row.try_get("", "age_ms")?;
                    println!("alive: beat {holder} leads, lease renewed {age} ms ago");
                    true
                }
                None => {
                    println!("not alive: no beat holds the leader lease");
                    false
                }
            }
        }
    };
    Ok(if alive {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

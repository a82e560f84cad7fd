//! `celeriac health`: a liveness check for container health checks, read
//! from the rows the processes already keep in the result backend. A
//! worker renews its row in `celeriac_workers` every
//! `worker_heartbeat_secs`; the leading beat renews its lease every third
//! of `beat_lease_secs`. Both are compared with the database's clock, as
//! the worker's sweep and the lease itself are.

use celeriac_common::backend::beat::LEASE_NAME;
use celeriac_common::backend::{BackendError, ResultBackend};
use std::process::ExitCode;

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
        celeriac_common::outln!(
            "unknown: the health check reads the result backend, and result_backend is \"none\""
        );
        return Ok(ExitCode::FAILURE);
    }
    let backend = ResultBackend::connect(&config.result_backend).await?;
    let alive = match of {
        Of::Worker => {
            let hostname = hostname.unwrap_or_else(|| config.hostname.clone());
            match backend.worker_liveness(&hostname).await? {
                Some((pid, age)) => {
                    celeriac_common::outln!(
                        "alive: worker {hostname} (pid {pid}), last heartbeat {age} ms ago"
                    );
                    true
                }
                None => {
                    celeriac_common::outln!(
                        "not alive: no worker named {hostname} has renewed its heartbeat row lately"
                    );
                    false
                }
            }
        }
        Of::Beat => match backend.lease_holder(LEASE_NAME).await? {
            Some((holder, age)) => {
                celeriac_common::outln!("alive: beat {holder} leads, lease renewed {age} ms ago");
                true
            }
            None => {
                celeriac_common::outln!("not alive: no beat holds the leader lease");
                false
            }
        },
    };
    Ok(if alive {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

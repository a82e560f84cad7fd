//! `celeriac dashboard ...`: runs `celeriac-dashboard` (the
//! celeriac-dashboard crate's binary, which links the web stack this
//! client library stays free of) with the same configuration: the
//! settings `celeriac` resolved (file, environment, flags) go to it as
//! `CELERIAC_*` variables, the flags after `dashboard` as they are. It is
//! looked for next to `celeriac`, then on `PATH`.

use celeriac::Config;
use std::path::PathBuf;
use std::process::{Command, ExitCode};

/// The dashboard binary's name.
const BIN: &str = "celeriac-dashboard";

/// Why the dashboard did not run.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DashboardError {
    #[error(
        "{BIN} is not installed next to celeriac or on PATH; install it \
         (cargo install celeriac-dashboard, or build the workspace)"
    )]
    Missing,
    #[error("cannot run {0}")]
    Run(String, #[source] std::io::Error),
}

fn find() -> Option<PathBuf> {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(BIN)))
        .filter(|p| p.is_file());
    beside.or_else(|| {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join(BIN))
                .find(|p| p.is_file())
        })
    })
}

/// Runs the dashboard with `args`; its exit code is ours.
pub(crate) fn run(config: &Config, args: &[String]) -> Result<ExitCode, DashboardError> {
    let bin = find().ok_or(DashboardError::Missing)?;
    let mut cmd = Command::new(&bin);
    cmd.envs(config.to_env()).args(args);
    let failed = |e| DashboardError::Run(bin.display().to_string(), e);
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        // Replaces this process: signals reach the dashboard directly.
        Err(failed(cmd.exec()))
    }
    #[cfg(not(unix))]
    {
        let status = cmd.status().map_err(failed)?;
        Ok(ExitCode::from(
            status.code().unwrap_or(1).clamp(0, 255) as u8
        ))
    }
}

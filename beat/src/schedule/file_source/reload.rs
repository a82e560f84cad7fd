//! Following the schedule file: reloaded when it changes or on SIGHUP.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::{mpsc, watch};

use super::{ScheduleFile, load};

fn fingerprint(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// Waits for the next SIGHUP; forever when it could not be listened for.
async fn next_hangup(hangup: &mut Option<Signal>) -> Option<()> {
    match hangup {
        Some(h) => h.recv().await,
        None => std::future::pending().await,
    }
}

/// Watches `path`: sends its entries and calendars whenever it changes
/// (checked every second) or on SIGHUP, until `shutdown` turns true. A file
/// that does not parse is logged and nothing is sent.
pub async fn watch(
    path: PathBuf,
    tx: mpsc::Sender<ScheduleFile>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut last = fingerprint(&path);
    let mut hangup = match signal(SignalKind::hangup()) {
        Ok(hangup) => Some(hangup),
        Err(e) => {
            tracing::warn!(
                error = %e,
                "cannot listen for SIGHUP; the schedule file is still watched"
            );
            None
        }
    };
    loop {
        let forced = tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => false,
            Some(()) = next_hangup(&mut hangup) => true,
            _ = shutdown.wait_for(|s| *s) => return,
        };
        let now = fingerprint(&path);
        if !forced && now == last {
            continue;
        }
        last = now;
        match load(&path) {
            Ok(file) => {
                tracing::info!(
                    path = %path.display(),
                    entries = file.entries.len(),
                    calendar_dates = file.calendar_days.len(),
                    "schedule file reloaded"
                );
                if tx.send(file).await.is_err() {
                    return;
                }
            }
            Err(e) => tracing::error!(
                "schedule file not reloaded, the previous entries stay in force: {}",
                celeriac_common::cli::one_line(&e)
            ),
        }
    }
}

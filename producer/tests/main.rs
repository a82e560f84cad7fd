//! The client's and the `celeriac` command's integration tests, one module per subject, built as one test binary: one
//! link and one copy of the shared code instead of one per file (`cargo
//! nextest run -p celeriac -E 'test(/^cli::/)'` runs a module's tests).

mod cli;
mod confirms;
mod delay_policy;
mod failover;
mod follow;
mod net_timeouts;
mod task_sent;
mod workflow_cli;

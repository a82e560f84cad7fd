//! Beat's integration tests, one module per subject, built as one test
//! binary: one link and one copy of the shared code instead of one per file
//! (`cargo nextest run -p celeriac-beat -E 'test(/^tick::/)'` runs a
//! module's tests). They talk to the real RabbitMQ and databases
//! (`scripts/ensure-services.sh`).

mod common;
mod support;

mod cli;
mod cron_syntax;
mod dedupe;
mod dst;
mod exclusions;
mod failover;
mod fields_syntax;
mod ha;
mod interval_date;
mod lease;
mod metrics;
mod net_timeouts;
mod performance;
mod robustness;
mod service;
mod tags;
mod tick;
mod trigger_reference;
mod workflow;

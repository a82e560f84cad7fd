//! The worker's integration tests, one module per subject, built as one
//! test binary: one link and one copy of the shared code instead of one per
//! file (`cargo nextest run -p celeriac-worker -E 'test(/^e2e::/)'` runs a
//! module's tests). They talk to the real RabbitMQ and databases
//! (`scripts/ensure-services.sh`).

// Its `task!` macro is in scope in the modules below.
#[macro_use]
mod support;
mod tls_support;

mod admin;
mod canvas_interop;
mod celery_tools;
mod chords;
mod cluster;
mod controls;
mod delayed;
mod e2e;
mod expiry;
mod failover;
mod failures;
mod flower;
mod hosts;
mod interop;
mod metrics;
mod net_timeouts;
mod orphans;
mod outages;
mod process;
mod quorum;
mod rpc_results;
mod tls;
mod warm_shutdown;
mod workflow_bad_input;
mod workflow_tree;
mod workflows;

//! celeriac-worker: consumes Celery protocol v2 tasks from RabbitMQ, runs
//! the registered handlers and records outcomes in the SQL result backend.
//!
//! ```no_run
//! use celeriac_worker::{TaskContext, TaskFailure, Worker};
//! use celeriac_common::{Config, TaskDef};
//!
//! pub struct Add;
//! impl TaskDef for Add {
//!     const NAME: &'static str = "tasks.add";
//!     type Args = (i64, i64);
//!     type Output = i64;
//! }
//!
//! # async fn run() -> Result<(), celeriac_worker::WorkerError> {
//! Worker::builder(Config::default())
//!     .register::<Add, _, _, _>(|_ctx: TaskContext, (x, y)| async move {
//!         Ok::<_, TaskFailure>(x + y)
//!     })
//!     .build()
//!     .await?
//!     .run() // until SIGTERM or SIGINT
//!     .await
//! # }
//! ```
//!
//! Every delivery ends in exactly one of: outcome recorded then acked;
//! dead-lettered then acked (undecodable); or returned to the queue (shutdown
//! before it started). A task that fails, panics, is unknown or expired is
//! recorded (FAILURE / REVOKED) and acked; the worker goes on.

mod carry_out;
mod chord;
mod claims;
mod consumers;
mod context;
mod control;
mod deliver;
mod diagnostics;
mod disposition;
mod events;
mod execute;
mod expiry;
mod followup;
mod heartbeat;
mod inflight;
mod metrics;
mod options;
mod progress;
mod publish;
mod pyrepr;
mod recorder;
mod registry;
mod revoke;
mod session;
mod shared;
mod worker;

pub use context::{RetryAt, TaskContext, TaskFailure};
pub use options::{RateLimit, RateLimitError, TaskOptions};
pub use progress::Progress;
pub use worker::{Worker, WorkerBuilder, WorkerError};

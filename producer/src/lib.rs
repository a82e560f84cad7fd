//! celeriac: a Celery-compatible task queue for Rust. This crate is what apps
//! use to publish tasks and read their results.
//!
//! ```no_run
//! use celeriac::{Client, Config, TaskDef};
//!
//! pub struct Add;
//! impl TaskDef for Add {
//!     const NAME: &'static str = "tasks.add";
//!     type Args = (i64, i64);
//!     type Output = i64;
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let client = Client::connect(Config::load(None)?).await?;
//! let result = client.delay::<Add>((2, 3)).await?; // returns once RabbitMQ has it
//! let sum: i64 = result.get(std::time::Duration::from_secs(10)).await?;
//! assert_eq!(sum, 5);
//! # Ok(()) }
//! ```

pub mod canvas;
mod client;
mod dlq;
pub mod mailbox;
mod options;
mod result;
pub mod workflow;

pub use celeriac_common::{Config, Signature, TaskDef, TaskMessage, TaskState};
pub use celeriac_common::{backend, broker, config, protocol, state, task, telemetry};
pub use client::{Client, ClientError};
pub use dlq::DeadLetter;
pub use options::{ApplyOptions, OptionsError};
pub use result::{AsyncResult, ResultError};

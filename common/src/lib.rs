//! Shared building blocks of celeriac: the Celery protocol v2 message format,
//! task definitions, configuration, the RabbitMQ topology, and the SQL result
//! backend.
//!
//! Applications use the `celeriac` crate (producer) and `celeriac-worker`;
//! this crate holds what both sides must agree on.
//!
//! ```
//! use celeriac_common::TaskDef;
//!
//! /// `tasks.add(x, y) -> x + y`, callable from Python as `add.delay(2, 3)`.
//! pub struct Add;
//! impl TaskDef for Add {
//!     const NAME: &'static str = "tasks.add";
//!     type Args = (i64, i64);
//!     type Output = i64;
//! }
//! assert_eq!(Add::NAME, "tasks.add");
//! ```

pub mod backend;
pub mod backoff;
pub mod broker;
pub mod cli;
pub mod config;
pub mod delay;
pub mod diagnostics;
#[cfg(feature = "http")]
pub mod http;
pub mod monitor;
#[cfg(feature = "test-util")]
pub mod netfault;
pub mod pidbox;
pub mod protocol;
pub mod rpc;
pub mod seconds;
pub mod shutdown;
pub mod state;
pub mod stats;
pub mod task;
pub mod telemetry;
#[cfg(feature = "test-util")]
pub mod testing;
pub mod tls;

pub use backend::{BackendError, ResultBackend, TaskOutcome, TaskRecord};
pub use broker::BrokerError;
pub use config::{Config, ConfigError, mask_url};
pub use protocol::{ProtocolError, Signature, TaskMessage};
pub use state::TaskState;
pub use task::{ArgsError, TaskDef};

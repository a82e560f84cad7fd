//! celeriac-dashboard: a web dashboard for celeriac, served from one
//! binary with its pages embedded. It reads what celeriac already keeps:
//! the result table (tasks, their progress and workflows), the workers'
//! heartbeat rows, beat's schedule, run state and lease, the broker's
//! queues and dead-letter queue, and Celery's events (`celeryev`) for live
//! updates.
//!
//! Pages: `/` (overview), `/workers`, `/queues`, `/tasks`, `/tasks/{id}`,
//! `/schedules`. The same server answers a JSON API under `/api` (see
//! `docs/dashboard.md`), read-only unless a token is configured: actions
//! (revoke, retry, pause, resume, run now, replay) need
//! `Authorization: Bearer <token>`.
//!
//! ```no_run
//! use celeriac_dashboard::{Dashboard, Options};
//! # async fn run() -> Result<(), celeriac_dashboard::DashboardError> {
//! let config = celeriac_common::Config::load(None).expect("config");
//! let options = Options { token: Some("s3cret".into()), ..Options::default() };
//! let dashboard = Dashboard::open(config, options).await?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:5555").await
//!     .map_err(celeriac_dashboard::DashboardError::Bind)?;
//! dashboard.serve(listener, async { let _ = tokio::signal::ctrl_c().await; }).await
//! # }
//! ```

mod api;
mod assets;
mod auth;
pub mod cli;
mod error;
mod facts;
mod live;
mod server;
mod state;

pub use error::DashboardError;
pub use server::{Dashboard, Options};

//! celeriac-beat: the scheduler. It reads schedules (a TOML file and the
//! database), and when an entry is due it publishes the task through the
//! producer library, with publisher confirms.
//!
//! * [`trigger`]: crontab strings, APScheduler-style fields, intervals and
//!   one-shot dates, evaluated in IANA time zones, DST included.
//! * [`entry`]: an entry (task, arguments, trigger, message options and the
//!   firing options `misfire_grace_time`, `coalesce`, `max_instances`).
//! * [`file_source`] and [`store`]: the static (file) and dynamic (database)
//!   schedules; [`run_state`]: each entry's persisted run state.
//! * [`lease`]: leader election with a fenced lease, so any number of beats
//!   can run against one database and exactly one leads.
//! * [`scheduler`] (entries in memory, compact: [`entry_def`]), [`misfire`],
//!   [`plan`] and [`beat`]: deciding what is due and sending it exactly
//!   once; [`instances`]: `max_instances`; [`runner`]: the service loop.
//! * [`dispatch`]: deterministic task ids (`uuid5(entry, fire time)`).
//! * [`events`]: every decision, logged and published.
//!
//! # Guarantees
//!
//! A run at scheduled time `T` is recorded as "being sent" (fenced by the
//! lease) before it is published, and as sent after the broker confirms it.
//! A beat that dies in between leaves the mark behind; whoever leads next
//! sends `T` again with the same task id, which workers recognise (they ack
//! a beat run, marked by its `beat_entry` header, whose id already has a
//! final state without running it).
//! So a restart or failover neither loses a due run nor sends it under a
//! second id; runs that fall due while no beat leads follow the misfire
//! rules ([`misfire`]).
//!
//! ```no_run
//! use celeriac_beat::runner::Service;
//! # async fn run() -> Result<(), celeriac_beat::error::BeatError> {
//! let config = celeriac_common::Config::load(None).expect("config");
//! Service::new(config, Some("schedule.toml".into()))
//!     .run(async { let _ = tokio::signal::ctrl_c().await; })
//!     .await
//! # }
//! ```

pub mod beat;
mod changes;
pub mod cli;
mod cli_schedule;
pub mod clock;
pub mod dispatch;
pub mod entry;
pub mod entry_def;
pub mod error;
pub mod events;
pub mod file_source;
pub mod instances;
pub mod lease;
pub mod misfire;
mod outcome;
pub mod plan;
pub mod run_state;
pub mod runner;
pub mod scheduler;
mod sql;
pub mod store;
pub mod trigger;
pub mod trigger_input;

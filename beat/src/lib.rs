//! celeriac-beat: the scheduler. It reads schedules (a TOML file and the
//! database), and when an entry is due it publishes the task through the
//! producer library, with publisher confirms.
//!
//! The source is grouped by role:
//!
//! * [`trigger`]: when. Crontab strings, APScheduler-style fields,
//!   intervals and one-shot dates, evaluated in IANA time zones, DST included.
//! * [`schedule`]: what. An entry (task, arguments, trigger, message options
//!   and the firing options `misfire_grace_time`, `coalesce`,
//!   `max_instances`) and its two sources, the TOML file and the database.
//! * [`leadership`]: who. A fenced lease, so any number of beats can run
//!   against one database and exactly one leads.
//! * [`firing`]: deciding what is due and sending it exactly once: the
//!   scheduler in memory, the misfire rules, `max_instances`, deterministic
//!   task ids, each entry's persisted run state, and one leader's tick.
//! * [`runner`]: the `celeriac-beat run` service that ties them together;
//!   [`cli`]: the command line.
//! * [`events`]: every decision, logged and published; [`clock`]: the clock
//!   seam that tests replace; [`error`]: the service's errors.
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
//! rules ([`firing::misfire`]).
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

pub mod cli;
pub mod clock;
pub mod error;
pub mod events;
pub mod firing;
pub mod leadership;
pub mod metrics;
pub mod runner;
pub mod schedule;
pub mod trigger;

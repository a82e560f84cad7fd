//! Firing: deciding what is due and sending it exactly once.
//!
//! [`scheduler`] holds the entries in memory (each with its compact
//! definition, [`entry_def`], and its [`run_state`]) and says what is due at
//! an instant; [`misfire`] applies the misfire rules, [`plan`] describes the
//! runs to send, [`instances`] holds runs back for `max_instances`,
//! [`dispatch`] turns a run into a message with a deterministic task id, and
//! [`beat`] is one leader's tick: decide, persist (fenced), send
//! ([`batch`]), record.

pub mod batch;
pub mod beat;
pub mod dispatch;
pub mod entry_def;
pub mod instances;
pub mod misfire;
pub mod plan;
pub mod run_state;
pub mod scheduler;
mod slot;
pub mod workflow_run;

/// An entry's name as the scheduler holds it: up to 24 bytes inline, so
/// that 100,000 entries make no allocation each for their names.
pub type EntryName = compact_str::CompactString;

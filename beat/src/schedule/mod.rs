//! The schedule and its sources: what an entry is ([`entry`]), the trigger
//! shorthands users write ([`trigger_input`]), the static schedule in a TOML
//! file ([`file_source`]) and the dynamic one in the database ([`store`]),
//! and the exclusion calendars entries name ([`holidays`], with `.ics`
//! import in [`ics`]).
//!
//! Nothing here decides when a run is sent; that is [`crate::firing`].

pub mod entry;
pub mod file_source;
pub mod holidays;
pub mod ics;
pub mod store;
mod tagged;
pub mod tags;
pub mod trigger_input;
pub mod workflow;

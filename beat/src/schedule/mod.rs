//! The schedule and its sources: what an entry is ([`entry`]), the trigger
//! shorthands users write ([`trigger_input`]), the static schedule in a TOML
//! file ([`file_source`]) and the dynamic one in the database ([`store`]).
//!
//! Nothing here decides when a run is sent; that is [`crate::firing`].

pub mod entry;
pub mod file_source;
pub mod store;
pub mod trigger_input;

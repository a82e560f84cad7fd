//! How a command fails: one line on stderr and an exit code (2 for bad
//! input, 1 for a failed service).

use celeriac_common::ConfigError;

use crate::error::BeatError;
use crate::schedule::entry::EntryError;
use crate::schedule::store::StoreError;

/// A command that failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CliError {
    /// Bad input about an entry or trigger.
    #[error(transparent)]
    Input(#[from] EntryError),
    /// Other bad input.
    #[error("{0}")]
    Usage(String),
    /// A schedule operation failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The service failed.
    #[error(transparent)]
    Beat(Box<BeatError>),
}

impl From<BeatError> for CliError {
    fn from(e: BeatError) -> Self {
        CliError::Beat(Box::new(e))
    }
}

impl From<sea_orm::DbErr> for CliError {
    fn from(e: sea_orm::DbErr) -> Self {
        BeatError::Db(e).into()
    }
}

impl From<celeriac_common::BackendError> for CliError {
    fn from(e: celeriac_common::BackendError) -> Self {
        BeatError::Backend(e).into()
    }
}

impl CliError {
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            CliError::Input(_) | CliError::Usage(_) => 2,
            CliError::Store(StoreError::Exists(_) | StoreError::Unknown(_)) => 2,
            CliError::Beat(e) if matches!(**e, BeatError::File(_)) => 2,
            _ => 1,
        }
    }
}

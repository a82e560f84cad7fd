//! Errors of the beat service.

use celeriac::ClientError;
use celeriac_common::BackendError;
use sea_orm::DbErr;

use crate::schedule::file_source::FileError;

/// Why beat (or one step of it) failed.
#[derive(Debug, thiserror::Error)]
pub enum BeatError {
    /// Another beat holds the lease now; this one must stand by.
    #[error("lost the beat lease")]
    LostLease,
    /// A query on beat's tables failed.
    #[error("beat database query failed")]
    Db(#[from] DbErr),
    /// The database could not be opened or migrated.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// The broker could not be reached.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The schedule file is invalid.
    #[error(transparent)]
    File(#[from] FileError),
    /// `result_backend = "none"`: beat keeps its schedule, run state and lease in the database.
    #[error(
        "celeriac-beat needs a database for schedules, run state and its lease; \
         set --result-backend / CELERIAC_RESULT_BACKEND (result_backend = \"none\" is not enough)"
    )]
    NoDatabase,
    /// The `/metrics` and `/health` address cannot be listened on.
    #[error(transparent)]
    Http(#[from] celeriac_common::http::HttpError),
    /// The process could not set up (runtime, signals).
    #[error("cannot start: {0}")]
    Setup(#[from] std::io::Error),
}

//! The dashboard's errors: starting it, and answering a request.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// The dashboard could not start or stopped on an error.
#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    /// The result database could not be opened or migrated.
    #[error(transparent)]
    Backend(#[from] celeriac_common::BackendError),
    /// The listening address could not be bound.
    #[error("cannot listen on the --bind address")]
    Bind(#[source] std::io::Error),
    /// Serving failed.
    #[error("the HTTP server failed")]
    Serve(#[source] std::io::Error),
    /// The configuration says no result database (`disabled`).
    #[error("the dashboard needs a result backend (--result-backend / CELERIAC_RESULT_BACKEND)")]
    NoDatabase,
}

/// A request that failed: its status and one line saying why.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    /// The status it answers with.
    #[cfg(test)]
    pub(crate) fn status(&self) -> StatusCode {
        self.status
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    pub(crate) fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }

    /// A service behind the dashboard (database, broker) failed.
    pub(crate) fn unavailable(what: &str, err: &(dyn std::error::Error + 'static)) -> ApiError {
        let line = celeriac_common::cli::one_line(err);
        tracing::warn!(error = %line, "{what} failed");
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, format!("{what}: {line}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}

impl From<celeriac_common::BackendError> for ApiError {
    fn from(e: celeriac_common::BackendError) -> ApiError {
        ApiError::unavailable("result backend", &e)
    }
}

impl From<sea_orm::DbErr> for ApiError {
    fn from(e: sea_orm::DbErr) -> ApiError {
        ApiError::unavailable("result backend", &e)
    }
}

impl From<celeriac::ClientError> for ApiError {
    fn from(e: celeriac::ClientError) -> ApiError {
        ApiError::unavailable("broker", &e)
    }
}

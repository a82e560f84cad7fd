//! Actions need the server's token: `Authorization: Bearer <token>`,
//! compared in constant time. No header: 401; a wrong token: 403; a server
//! started without a token refuses every action (403).

use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// Proof that the request carries the server's token (an extractor:
/// a handler taking it runs only for an authorized request).
pub(crate) struct Authorized;

/// Whether `given` is `expected`, in time independent of where they differ.
pub(crate) fn token_matches(expected: &str, given: &str) -> bool {
    expected.as_bytes().ct_eq(given.as_bytes()).into()
}

/// The verdict on a request's `Authorization` header.
pub(crate) fn check(expected: Option<&str>, header: Option<&str>) -> Result<(), ApiError> {
    let Some(expected) = expected else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "actions are disabled: start the dashboard with --token (or CELERIAC_DASHBOARD_TOKEN)",
        ));
    };
    let Some(header) = header else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "this action needs the dashboard's token: Authorization: Bearer <token>",
        ));
    };
    let given = header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))
        .unwrap_or("")
        .trim();
    if token_matches(expected, given) {
        Ok(())
    } else {
        Err(ApiError::new(StatusCode::FORBIDDEN, "wrong token"))
    }
}

impl FromRequestParts<Arc<AppState>> for Authorized {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        check(state.token.as_deref(), header).map(|()| Authorized)
    }
}

#[cfg(test)]
mod tests {
    use super::{check, token_matches};

    #[test]
    fn tokens_match_only_exactly() {
        assert!(token_matches("abc", "abc"));
        assert!(!token_matches("abc", "abd"));
        assert!(!token_matches("abc", "ab"));
        assert!(!token_matches("abc", ""));
    }

    #[test]
    fn no_header_401_wrong_403_disabled_403() {
        let status =
            |e: Option<&str>, h: Option<&str>| check(e, h).err().map(|e| e.status().as_u16());
        assert_eq!(status(Some("t"), Some("Bearer t")), None);
        assert_eq!(status(Some("t"), None), Some(401));
        assert_eq!(status(Some("t"), Some("Bearer x")), Some(403));
        assert_eq!(status(Some("t"), Some("t")), Some(403));
        assert_eq!(status(None, Some("Bearer t")), Some(403));
    }
}

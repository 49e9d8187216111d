//! Every way a query can fail, as problem+json.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use platform::problem::Problem;

/// An error answered to the client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 404: no such thing (unknown article, charge, category ...).
    #[error("{0} not found")]
    NotFound(String),
    /// 400: a path or query parameter is malformed.
    #[error("parameter {field}: {reason}")]
    BadParameter { field: String, reason: String },
    /// 504: the projection did not reach the requested position in time.
    #[error("the projection has applied {stream} up to {applied}, not yet {wanted}; retry shortly")]
    NotYetConsistent { stream: String, wanted: u64, applied: u64 },
    /// 503: no tier could answer; the cause is logged, not echoed.
    #[error("read models unavailable")]
    Unavailable(#[source] anyhow::Error),
}

impl ApiError {
    /// A 400 naming the parameter and why it is wrong.
    pub fn bad(field: &str, reason: impl Into<String>) -> Self {
        ApiError::BadParameter { field: field.to_owned(), reason: reason.into() }
    }
}

/// A query string that does not deserialise (a repeated parameter, a
/// value of the wrong kind): 400 naming the parameter, as problem+json.
impl From<axum::extract::rejection::QueryRejection> for ApiError {
    fn from(rejection: axum::extract::rejection::QueryRejection) -> Self {
        let text = rejection.body_text();
        let reason = text.trim_start_matches("Failed to deserialize query string: ").to_owned();
        // serde names the parameter between backticks (`duplicate field `to``).
        let field = reason.split('`').nth(1).filter(|f| !f.is_empty()).unwrap_or("query").to_owned();
        ApiError::BadParameter { field, reason }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let detail = self.to_string();
        match self {
            ApiError::NotFound(_) => Problem::new(StatusCode::NOT_FOUND, "not-found", detail),
            ApiError::BadParameter { field, reason } => {
                Problem::new(StatusCode::BAD_REQUEST, "bad-parameter", detail).with("field", field).with("reason", reason)
            }
            ApiError::NotYetConsistent { stream, wanted, applied } => {
                Problem::new(StatusCode::GATEWAY_TIMEOUT, "consistency-timeout", detail)
                    .with("stream", stream)
                    .with("wanted", wanted)
                    .with("applied", applied)
            }
            ApiError::Unavailable(cause) => {
                tracing::error!(error = %cause, "no tier could answer");
                Problem::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", detail)
            }
        }
        .into_response()
    }
}

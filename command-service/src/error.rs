//! Every way a request can fail, and the problem+json each becomes.
//! Whatever the error, nothing was written.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use events::DomainError;
use platform::problem::Problem;

use crate::execute::ExecuteError;

/// An error answered to the client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the body is not JSON.
    #[error("malformed JSON: {0}")]
    MalformedJson(String),
    /// 415: the body is not declared as `application/json`.
    #[error("expected Content-Type: application/json")]
    UnsupportedMediaType,
    /// 413: the body exceeds the limit.
    #[error("request body too large")]
    PayloadTooLarge,
    /// 422: a field is missing or invalid.
    #[error("field {field}: {reason}")]
    InvalidField { field: String, reason: String },
    /// 409 when the command breaks a rule (the problem carries the rule's
    /// numbers); 404 when it names an unknown article, charge or reservation;
    /// 403 when it would act in a warehouse outside the sender's scope.
    #[error(transparent)]
    Rule(#[from] DomainError),
    /// 409: too many concurrent writers on the same stream; retrying later may succeed.
    #[error("{0}")]
    Contention(String),
    /// 400: a query or path parameter is invalid.
    #[error("parameter {name}: {reason}")]
    BadParameter { name: String, reason: String },
    /// 404: no such job, or not one of the caller's.
    #[error("no job {0}")]
    NotFoundJob(uuid::Uuid),
    /// 404: the job has no result file (yet).
    #[error("job {0} has no result file (yet)")]
    NoFile(uuid::Uuid),
    /// 404: no such webhook subscription, or no such delivery of it.
    #[error("no {what} {id}")]
    NotFound { what: &'static str, id: String },
    /// 409: the resource's state does not allow the change (`reason` says why).
    #[error("{0}")]
    Conflict(String),
    /// 409: the job's status does not allow the change.
    #[error("the job is {}", .0.as_str())]
    JobStatus(platform::jobs::Status),
    /// 503: PostgreSQL cannot be reached; the cause is logged, not echoed.
    #[error("database unavailable")]
    Unavailable(#[source] Arc<sqlx::Error>),
    /// 500: a defect; the cause is logged, not echoed.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    /// 503 when PostgreSQL cannot be reached, 500 for any other database error.
    pub fn database(e: impl Into<Arc<sqlx::Error>>) -> Self {
        let e = e.into();
        if platform::db::is_unreachable(&e) { ApiError::Unavailable(e) } else { ApiError::Internal(anyhow::Error::new(e)) }
    }

    pub fn bad_parameter(name: impl Into<String>, reason: impl ToString) -> Self {
        ApiError::BadParameter { name: name.into(), reason: reason.to_string() }
    }

    pub fn invalid(field: impl Into<String>, reason: impl ToString) -> Self {
        ApiError::InvalidField { field: field.into(), reason: reason.to_string() }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::JsonSyntaxError(e) => ApiError::MalformedJson(e.body_text()),
            JsonRejection::MissingJsonContentType(_) => ApiError::UnsupportedMediaType,
            JsonRejection::JsonDataError(e) => {
                // serde names the path of the offending field before a colon.
                let text = e.body_text();
                let detail = text.trim_start_matches("Failed to deserialize the JSON body into the target type: ");
                let (field, reason) = detail.split_once(": ").unwrap_or(("body", detail));
                ApiError::invalid(field, reason)
            }
            JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                ApiError::PayloadTooLarge
            }
            other => ApiError::MalformedJson(other.body_text()),
        }
    }
}

impl From<ExecuteError> for ApiError {
    fn from(e: ExecuteError) -> Self {
        match e {
            ExecuteError::Rule(rule) => ApiError::Rule(rule),
            ExecuteError::Contention => ApiError::Contention(e.to_string()),
            ExecuteError::Database(db) => ApiError::database(db),
            ExecuteError::Corrupt(e) => ApiError::Internal(anyhow::anyhow!(e)),
            ExecuteError::Stopped => ApiError::Unavailable(Arc::new(sqlx::Error::PoolClosed)),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let detail = self.to_string();
        let problem = match self {
            ApiError::MalformedJson(_) => Problem::new(StatusCode::BAD_REQUEST, "malformed-json", detail),
            ApiError::UnsupportedMediaType => {
                Problem::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type", detail)
            }
            ApiError::PayloadTooLarge => Problem::new(StatusCode::PAYLOAD_TOO_LARGE, "payload-too-large", detail),
            ApiError::InvalidField { field, reason } => {
                Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid-field", detail)
                    .with("field", field)
                    .with("reason", reason)
            }
            ApiError::Rule(rule) => {
                let status = if rule.is_not_found() {
                    StatusCode::NOT_FOUND
                } else if rule.is_forbidden() {
                    StatusCode::FORBIDDEN
                } else {
                    StatusCode::CONFLICT
                };
                let mut problem = Problem::new(status, rule.code(), detail);
                // The rule's numbers (available, requested, ...) as extension members.
                if let Ok(serde_json::Value::Object(fields)) = serde_json::to_value(&rule) {
                    problem.extensions.extend(fields);
                }
                problem
            }
            ApiError::Contention(_) => Problem::new(StatusCode::CONFLICT, "contention", detail),
            ApiError::BadParameter { name, reason } => {
                Problem::new(StatusCode::BAD_REQUEST, "invalid-parameter", detail).with("field", name).with("reason", reason)
            }
            ApiError::NotFoundJob(_) => Problem::new(StatusCode::NOT_FOUND, "job-not-found", detail),
            ApiError::NotFound { what, .. } => {
                Problem::new(StatusCode::NOT_FOUND, &format!("{}-not-found", what.replace(' ', "-")), detail)
            }
            ApiError::Conflict(_) => Problem::new(StatusCode::CONFLICT, "conflict", detail),
            ApiError::NoFile(_) => Problem::new(StatusCode::NOT_FOUND, "no-file", detail),
            ApiError::JobStatus(status) => {
                Problem::new(StatusCode::CONFLICT, "job-status", detail).with("job_status", status.as_str())
            }
            ApiError::Unavailable(cause) => {
                tracing::error!(error = %cause, "database unavailable");
                Problem::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", detail)
            }
            ApiError::Internal(cause) => {
                tracing::error!(error = ?cause, "internal error");
                Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", detail)
            }
        };
        problem.into_response()
    }
}


//! The HTTP resources of the write API, one module each. Handlers only extract,
//! convert the request into a command (`TryFrom`, naming the offending field),
//! execute it and map the outcome.

pub mod articles;
pub mod charges;
pub mod reservations;
pub mod stock;

use std::fmt::Display;

use axum::Json;
use axum::extract::FromRequestParts;
use axum::extract::rejection::JsonRejection;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use events::{Command, CommandMeta};
use platform::http::{CORRELATION_ID, REQUEST_ID};
use platform::problem::Problem;
use uuid::Uuid;

use crate::error::ApiError;
use crate::execute::{Accepted, Outcome};
use crate::idempotency::IdempotencyKey;
use crate::startup::AppState;

/// The answers every command can get.
#[derive(Debug, utoipa::IntoResponses)]
pub enum CommandResponses {
    /// Accepted: its events were appended. Repeated as is for a retry with the
    /// same `Idempotency-Key` (with `Idempotent-Replayed: true`).
    #[response(status = 201)]
    Created(Accepted),
    /// Accepted, but it changed nothing (e.g. blocking a blocked charge).
    #[response(status = 200)]
    Unchanged(Accepted),
    /// The body is not JSON.
    #[response(status = 400, content_type = "application/problem+json")]
    Malformed(Problem),
    /// The article, charge or reservation does not exist.
    #[response(status = 404, content_type = "application/problem+json")]
    NotFound(Problem),
    /// A rule is broken; the problem carries the rule (`rule`) and its numbers.
    #[response(status = 409, content_type = "application/problem+json")]
    Conflict(Problem),
    /// The body is larger than the limit.
    #[response(status = 413, content_type = "application/problem+json")]
    TooLarge(Problem),
    /// The body is not `application/json`.
    #[response(status = 415, content_type = "application/problem+json")]
    UnsupportedMediaType(Problem),
    /// A field is missing or invalid (`field`, `reason`), or the
    /// `Idempotency-Key` was used for another request.
    #[response(status = 422, content_type = "application/problem+json")]
    Invalid(Problem),
    /// PostgreSQL cannot be reached.
    #[response(status = 503, content_type = "application/problem+json")]
    Unavailable(Problem),
}

/// Header naming who sends a command; `anonymous` when absent.
pub const ACTOR: &str = "x-actor";

/// What a handler needs of a request besides its body: the headers (for the
/// provenance of the command) and the idempotency key the middleware accepted.
#[derive(Debug)]
pub struct CommandContext {
    pub headers: HeaderMap,
    pub key: Option<IdempotencyKey>,
}

impl<S: Send + Sync> FromRequestParts<S> for CommandContext {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self { headers: parts.headers.clone(), key: parts.extensions.get::<IdempotencyKey>().cloned() })
    }
}

/// The provenance of a command, from the request's headers. A request with an
/// idempotency key gets a command id derived from it, so a retry's events get
/// the same ids.
pub fn command_meta(headers: &HeaderMap, key: Option<&IdempotencyKey>) -> CommandMeta {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).filter(|v| !v.is_empty());
    let command_id = key.map_or_else(Uuid::new_v4, IdempotencyKey::command_id);
    let request_id = header(REQUEST_ID.as_str()).map(str::to_owned);
    CommandMeta {
        command_id,
        correlation_id: header(CORRELATION_ID.as_str())
            .map(str::to_owned)
            .or(request_id)
            .unwrap_or_else(|| command_id.to_string()),
        actor: header(ACTOR).unwrap_or("anonymous").to_owned(),
        // Kept to the microsecond, the precision every store of events has.
        recorded_at: chrono::SubsecRound::trunc_subsecs(Utc::now(), 6),
    }
}

/// Names the field a validation error belongs to.
pub fn field<T, E: Display>(name: &str, result: Result<T, E>) -> Result<T, ApiError> {
    result.map_err(|e| ApiError::invalid(name, e))
}

/// Like [`field`] for an optional value.
pub fn optional<T, U, E: Display>(name: &str, value: Option<T>, parse: impl FnOnce(T) -> Result<U, E>) -> Result<Option<U>, ApiError> {
    value.map(parse).transpose().map_err(|e| ApiError::invalid(name, e))
}

/// The body as `T`, or the 400/413/415/422 that says why not.
pub fn body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    Ok(body?.0)
}

/// Executes a command: 201 when it appended events, 200 when it changed
/// nothing, or the recorded response of an earlier request with the same key.
pub async fn execute(state: &AppState, ctx: &CommandContext, command: Command) -> Result<Response, ApiError> {
    let meta = command_meta(&ctx.headers, ctx.key.as_ref());
    match state.executor.execute(command, meta, ctx.key.as_ref()).await? {
        Outcome::Accepted(accepted) => {
            let status = StatusCode::from_u16(accepted.status()).expect("a valid status");
            Ok((status, Json(accepted)).into_response())
        }
        Outcome::Replayed(stored) => Ok(stored.replay(ctx.key.as_ref().expect("replays have a key"))),
    }
}

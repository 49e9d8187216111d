//! The HTTP resources of the write API, one module each. Handlers only extract,
//! convert the request into a command (`TryFrom`, naming the offending field),
//! execute it and map the outcome.

pub mod articles;
pub mod charges;
pub mod reservations;
pub mod stock;

use std::fmt::Display;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderMap, StatusCode};
use chrono::Utc;
use events::{Command, CommandMeta};
use platform::http::{CORRELATION_ID, REQUEST_ID};
use uuid::Uuid;

use crate::error::ApiError;
use crate::execute::Accepted;
use crate::startup::AppState;

/// Header naming who sends a command; `anonymous` when absent.
pub const ACTOR: &str = "x-actor";

/// The provenance of a command, from the request's headers.
pub fn command_meta(headers: &HeaderMap) -> CommandMeta {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).filter(|v| !v.is_empty());
    let command_id = Uuid::new_v4();
    let request_id = header(REQUEST_ID.as_str()).map(str::to_owned);
    CommandMeta {
        command_id,
        correlation_id: header(CORRELATION_ID.as_str())
            .map(str::to_owned)
            .or(request_id)
            .unwrap_or_else(|| command_id.to_string()),
        actor: header(ACTOR).unwrap_or("anonymous").to_owned(),
        recorded_at: Utc::now(),
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

/// Executes a command: 201 when it appended events, 200 when it changed nothing.
pub async fn execute(state: &AppState, headers: &HeaderMap, command: Command) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    let accepted = state.executor.execute(command, command_meta(headers)).await?;
    let status = if accepted.event_ids.is_empty() { StatusCode::OK } else { StatusCode::CREATED };
    Ok((status, Json(accepted)))
}

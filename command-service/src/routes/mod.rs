//! The HTTP resources of the write API, one module each.

pub mod stock;

use axum::http::HeaderMap;
use chrono::Utc;
use events::CommandMeta;
use platform::http::{CORRELATION_ID, REQUEST_ID};
use uuid::Uuid;

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

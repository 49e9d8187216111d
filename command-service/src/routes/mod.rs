//! The HTTP resources of the write API, one module each. Handlers only extract,
//! convert the request into a command (`TryFrom`, naming the offending field),
//! execute it and map the outcome.

pub mod articles;
pub mod charges;
pub mod reservations;
pub mod stock;

use std::fmt::Display;
use std::sync::Arc;

use axum::Json;
use axum::extract::{FromRequest, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use events::{Command, CommandMeta, Scope, WarehouseId};
use platform::auth::Principal;
use platform::trace::TraceParent;
use platform::http::{CORRELATION_ID, REQUEST_ID};
use platform::problem::Problem;
use uuid::Uuid;

use crate::error::ApiError;
use crate::execute::{Accepted, Outcome};
use crate::idempotency::key::IdempotencyKey;
use crate::state::AppState;

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
// 401, 403 (a role, or a warehouse outside the credential's scope: rule
// `warehouse-not-permitted`) and 429 are declared for every secured
// operation by `platform::auth::rules::declare`.

pub use platform::openapi::{domain, nullable};

platform::parameters!(
    /// Path parameter `{article}`.
    ArticlePath { "article": events::ArticleId, Path, required, "Article id, e.g. `ART-1000`" }
);

platform::parameters!(
    /// Path parameters `{article}` and `{charge}`.
    ChargePath {
        "article": events::ArticleId, Path, required, "Article id, e.g. `ART-1000`";
        "charge": events::ChargeNo, Path, required, "Charge number within the article, e.g. `L2026-11-07`";
    }
);

platform::parameters!(
    /// Path parameters `{article}` and `{reservation}`.
    ReservationPath {
        "article": events::ArticleId, Path, required, "Article id, e.g. `ART-1000`";
        "reservation": events::ReservationId, Path, required, "Reservation id";
    }
);

/// Whole numbers in request bodies. JSON has one number type: `5` and `5.0`
/// are the same number to it, and both are an `integer` to JSON Schema (and
/// to the OpenAPI documents), so both are accepted; `5.5` is refused naming
/// the field.
pub mod whole {
    use serde::de::{Deserialize, Deserializer, Error, Unexpected};

    fn number<'de, D: Deserializer<'de>, T: TryFrom<i64>>(d: D) -> Result<T, D::Error> {
        let n = serde_json::Number::deserialize(d)?;
        let whole = n.as_i64().or_else(|| {
            let f = n.as_f64()?;
            // Beyond 2^63 an f64 no longer converts exactly.
            (f.fract() == 0.0 && f.abs() < 9.2e18).then_some(f as i64)
        });
        let unexpected = || match n.as_f64() {
            Some(f) => Unexpected::Float(f),
            None => Unexpected::Other("a number out of range"),
        };
        let whole = whole.ok_or_else(|| D::Error::invalid_value(unexpected(), &"a whole number"))?;
        T::try_from(whole).map_err(|_| D::Error::invalid_value(Unexpected::Signed(whole), &"a smaller whole number"))
    }

    /// A required whole number.
    pub fn required<'de, D: Deserializer<'de>, T: TryFrom<i64>>(d: D) -> Result<T, D::Error> {
        number(d)
    }

    /// An optional whole number (`null` or absent: `None`); use with `#[serde(default)]`.
    pub fn optional<'de, D: Deserializer<'de>, T: TryFrom<i64>>(d: D) -> Result<Option<T>, D::Error> {
        match Option::<serde_json::Number>::deserialize(d)? {
            None => Ok(None),
            Some(n) => number(serde_json::Value::Number(n)).map(Some).map_err(D::Error::custom),
        }
    }
}

/// What a handler needs of a request besides its body: the headers (for the
/// provenance of the command), the idempotency key the middleware accepted
/// and the principal the authentication layer verified.
#[derive(Debug)]
pub struct CommandContext {
    pub headers: HeaderMap,
    pub key: Option<IdempotencyKey>,
    pub principal: Arc<Principal>,
}

impl<S: Send + Sync> FromRequestParts<S> for CommandContext {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        // The layer puts a principal on every request it lets through.
        let principal = parts.extensions.get::<Arc<Principal>>().cloned().ok_or_else(|| {
            ApiError::Internal(anyhow::anyhow!("no principal on the request: the authentication layer is missing"))
        })?;
        Ok(Self { headers: parts.headers.clone(), key: parts.extensions.get::<IdempotencyKey>().cloned(), principal })
    }
}

impl CommandContext {
    /// The warehouses the principal may act in.
    pub fn scope(&self) -> Result<Scope, ApiError> {
        let Some(warehouses) = &self.principal.warehouses else { return Ok(Scope::Everywhere) };
        // A credential's warehouse that is no valid id matches no warehouse.
        Ok(Scope::Only(warehouses.iter().filter_map(|w| WarehouseId::parse(w).ok()).collect()))
    }
}

/// The provenance of a command: its actor is the verified principal (an
/// `X-Actor` header is ignored: the audit trail records who authenticated,
/// not who a client claims to be). A request with an idempotency key gets a
/// command id derived from it, so a retry's events get the same ids.
pub fn command_meta(headers: &HeaderMap, key: Option<&IdempotencyKey>, principal: &Principal) -> CommandMeta {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).filter(|v| !v.is_empty());
    let command_id = key.map_or_else(Uuid::new_v4, IdempotencyKey::command_id);
    let request_id = header(REQUEST_ID.as_str()).map(str::to_owned);
    CommandMeta {
        command_id,
        correlation_id: header(CORRELATION_ID.as_str())
            .map(str::to_owned)
            .or(request_id)
            .unwrap_or_else(|| command_id.to_string()),
        actor: principal.actor(),
        // Kept to the microsecond, the precision every store of events has.
        recorded_at: chrono::SubsecRound::trunc_subsecs(Utc::now(), 6),
        traceparent: Some(request_trace(headers)),
    }
}

/// The `traceparent` a request's events (or job) carry on: a span of this
/// service's in the caller's trace, or a new trace when the request brings
/// none (its id is then recorded on the request's span).
pub fn request_trace(headers: &HeaderMap) -> String {
    let sent = headers.get(platform::http::TRACEPARENT).and_then(|v| v.to_str().ok()).and_then(TraceParent::parse);
    match sent {
        Some(t) => t.child().to_string(),
        None => {
            let t = TraceParent::root();
            tracing::Span::current().record("trace_id", t.trace_id_hex().as_str());
            t.to_string()
        }
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

/// A request body that is a JSON object, as `T`; otherwise the 400, 413,
/// 415 or 422 that says why not. serde also reads a struct from a JSON
/// array, field by field in order (`[5, null]` would pass for
/// `{"quantity": 5, "posted_at": null}`): a body must be an object.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        if !is_json(request.headers()) {
            return Err(ApiError::UnsupportedMediaType);
        }
        let bytes = axum::body::Bytes::from_request(request, state).await.map_err(|e| match e.status() {
            StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge,
            _ => ApiError::MalformedJson(e.body_text()),
        })?;
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(match serde_json::from_slice::<serde::de::IgnoredAny>(&bytes) {
                Ok(_) => ApiError::invalid("body", "must be a JSON object"),
                Err(e) => ApiError::MalformedJson(e.to_string()),
            });
        }
        Ok(Self(Json::<T>::from_bytes(&bytes)?.0))
    }
}

/// Whether the request declares a JSON body (`application/json` or `application/*+json`).
fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(axum::http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else { return false };
    let essence = value.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Executes a command: 201 when it appended events, 200 when it changed
/// nothing, or the recorded response of an earlier request with the same key.
pub async fn execute(state: &AppState, ctx: &CommandContext, command: Command) -> Result<Response, ApiError> {
    let meta = command_meta(&ctx.headers, ctx.key.as_ref(), &ctx.principal);
    match state.executor.execute(command, meta, ctx.key.as_ref(), ctx.scope()?).await? {
        Outcome::Accepted(accepted) => {
            let status = StatusCode::from_u16(accepted.status()).expect("a valid status");
            Ok((status, Json(accepted)).into_response())
        }
        Outcome::Replayed(stored) => Ok(crate::idempotency::middleware::replay(stored, ctx.key.as_ref().expect("replays have a key"))),
    }
}

//! `Idempotency-Key`: a retry with the same key and body returns the original
//! response and appends nothing; the same key with another body is a 422.
//!
//! A middleware looks the key up before the handler runs and answers a known
//! key itself. A new key travels with the command into the transaction that
//! appends its events, which claims the key first and records the response
//! with the events: of two requests with one key that race, only the first
//! claims it; the second answers with the first one's recorded response. Only
//! accepted commands are recorded; a refused one (4xx) can be retried with the
//! same key.

use std::time::Duration;

use axum::body::{Body, to_bytes};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sqlx::PgPool;
use uuid::Uuid;

use crate::error::ApiError;

/// The request header.
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
/// Set on a response that repeats an earlier one.
pub const REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// Namespace of command ids derived from idempotency keys, so a retried
/// request's events get the same ids.
const COMMAND_ID_NAMESPACE: Uuid = Uuid::from_u128(0x2c4d_8e5a_91b3_4f6e_a0c7_5d1e_9b3f_7a24);

/// A request's idempotency key and what identifies its content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    pub key: String,
    pub fingerprint: String,
    /// How long the key is remembered.
    pub ttl: Duration,
}

impl IdempotencyKey {
    /// The command id of the request: the same for every retry.
    pub fn command_id(&self) -> Uuid {
        Uuid::new_v5(&COMMAND_ID_NAMESPACE, self.key.as_bytes())
    }
}

/// A response recorded for a key.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StoredResponse {
    pub fingerprint: String,
    pub status: i16,
    pub response: serde_json::Value,
}

impl StoredResponse {
    /// The recorded response if `key` asked the same thing, else a 422.
    pub fn replay(self, key: &IdempotencyKey) -> Response {
        if self.fingerprint != key.fingerprint {
            return ApiError::invalid(
                "Idempotency-Key",
                "was already used for a different request; use a new key for a new request",
            )
            .into_response();
        }
        let status = StatusCode::from_u16(self.status as u16).unwrap_or(StatusCode::OK);
        let mut response = (status, axum::Json(self.response)).into_response();
        response.headers_mut().insert(REPLAYED, HeaderValue::from_static("true"));
        response
    }
}

/// The unexpired response recorded for `key`.
#[tracing::instrument(skip(pool), err)]
pub async fn lookup(pool: &PgPool, key: &str) -> Result<Option<StoredResponse>, sqlx::Error> {
    let query = sqlx::query_as(
        "select fingerprint, status, response from idempotency_keys where key = $1 and expires_at > now()",
    )
    .bind(key);
    platform::metrics::timed("idempotency_lookup", query.fetch_optional(pool)).await
}

/// State of the middleware.
#[derive(Debug, Clone)]
pub struct Idempotency {
    pub pool: PgPool,
    pub ttl: Duration,
    pub body_limit: usize,
}

/// Answers known keys from the record and hands new ones to the handler.
pub async fn middleware(State(idem): State<Idempotency>, request: Request, next: Next) -> Response {
    let Some(raw) = request.headers().get(&IDEMPOTENCY_KEY).cloned() else {
        return next.run(request).await;
    };
    let key = match raw.to_str() {
        Ok(k) if (1..=255).contains(&k.len()) => k.to_owned(),
        _ => {
            return ApiError::invalid("Idempotency-Key", "must be 1 to 255 visible ASCII characters").into_response();
        }
    };
    let route = request.extensions().get::<MatchedPath>().map_or("", MatchedPath::as_str).to_owned();
    let method = request.method().clone();
    let (parts, body) = request.into_parts();
    let bytes = match to_bytes(body, idem.body_limit).await {
        Ok(b) => b,
        Err(_) => return ApiError::PayloadTooLarge.into_response(),
    };
    let path = parts.uri.path().to_owned();
    let key = IdempotencyKey {
        key,
        fingerprint: format!("{method} {path} ({route})\n{}", String::from_utf8_lossy(&bytes)),
        ttl: idem.ttl,
    };
    match lookup(&idem.pool, &key.key).await {
        Ok(Some(stored)) => return stored.replay(&key),
        Ok(None) => {}
        Err(e) => return ApiError::database(e).into_response(),
    }
    let mut request = Request::from_parts(parts, Body::from(bytes));
    request.extensions_mut().insert(key);
    next.run(request).await
}

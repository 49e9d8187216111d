//! The HTTP side of `Idempotency-Key`: a middleware that answers a known key
//! from its record before the handler runs, and hands a new one to the
//! handler, whose command claims it in the transaction that appends its
//! events ([`super::key`]).

use std::time::Duration;

use axum::body::{Body, to_bytes};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sqlx::PgPool;

use super::key::{IDEMPOTENCY_KEY, IdempotencyKey, REPLAYED, StoredResponse, lookup};
use crate::error::ApiError;

/// The recorded response if `key` asked the same thing, else a 422.
pub fn replay(stored: StoredResponse, key: &IdempotencyKey) -> Response {
    if stored.fingerprint != key.fingerprint {
        return ApiError::invalid("Idempotency-Key", "was already used for a different request; use a new key for a new request")
            .into_response();
    }
    let status = StatusCode::from_u16(stored.status as u16).unwrap_or(StatusCode::OK);
    let mut response = (status, axum::Json(stored.response)).into_response();
    response.headers_mut().insert(REPLAYED, HeaderValue::from_static("true"));
    response
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
        Ok(Some(stored)) => return replay(stored, &key),
        Ok(None) => {}
        Err(e) => return ApiError::database(e).into_response(),
    }
    let mut request = Request::from_parts(parts, Body::from(bytes));
    request.extensions_mut().insert(key);
    next.run(request).await
}

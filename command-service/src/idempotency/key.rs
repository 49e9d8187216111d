//! An `Idempotency-Key` and the response recorded for it: the value types
//! the executor claims and records keys with, and the lookup of a recorded
//! response. The HTTP side is [`super::middleware`].

use std::time::Duration;

use axum::http::HeaderName;
use sqlx::PgPool;
use uuid::Uuid;

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

/// The unexpired response recorded for `key`.
#[tracing::instrument(skip(pool), err)]
pub async fn lookup(pool: &PgPool, key: &str) -> Result<Option<StoredResponse>, sqlx::Error> {
    let query = sqlx::query_as(
        "select fingerprint, status, response from idempotency_keys where key = $1 and expires_at > now()",
    )
    .bind(key);
    platform::metrics::timed("idempotency_lookup", query.fetch_optional(pool)).await
}


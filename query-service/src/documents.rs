//! Fetching a stored document: Redis first, then PostgreSQL.

use axum::body::Bytes;
use platform::metrics::CACHE_REQUESTS;
use platform::redis::{RedisConnection, RedisSettings};

use crate::cache::FetchError;
use sqlx::PgPool;

/// A read-model document as stored: its version (the ETag) and the JSON bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredDocument {
    pub version: i64,
    pub body: Bytes,
}

/// The tiers documents are read from.
#[derive(Debug)]
pub struct DocumentStore {
    pool: PgPool,
    redis: RedisConnection,
    settings: RedisSettings,
    breaker: Breaker,
}

/// A circuit breaker: after [`Breaker::TRIP_AFTER`] consecutive failures the
/// guarded call is skipped for [`Breaker::COOL_DOWN`]; then one call is let
/// through, and its outcome closes or reopens the breaker.
#[derive(Debug, Default)]
pub struct Breaker {
    failures: std::sync::atomic::AtomicU32,
    open_until: std::sync::Mutex<Option<std::time::Instant>>,
}

impl Breaker {
    const TRIP_AFTER: u32 = 3;
    const COOL_DOWN: std::time::Duration = std::time::Duration::from_secs(5);

    /// Whether the guarded call may be tried now.
    pub fn allows(&self) -> bool {
        let open_until = self.open_until.lock().expect("breaker poisoned");
        open_until.is_none_or(|t| std::time::Instant::now() >= t)
    }

    pub fn is_open(&self) -> bool {
        !self.allows()
    }

    pub fn succeeded(&self) {
        self.failures.store(0, std::sync::atomic::Ordering::Relaxed);
        *self.open_until.lock().expect("breaker poisoned") = None;
    }

    /// Records a failure; true when it opened the breaker.
    pub fn failed(&self) -> bool {
        let failures = self.failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        if failures < Self::TRIP_AFTER {
            return false;
        }
        *self.open_until.lock().expect("breaker poisoned") = Some(std::time::Instant::now() + Self::COOL_DOWN);
        true
    }
}

impl DocumentStore {
    pub fn new(pool: PgPool, settings: RedisSettings) -> redis::RedisResult<Self> {
        Ok(Self { pool, redis: RedisConnection::new(&settings)?, settings, breaker: Breaker::default() })
    }

    /// The document under `key` from Redis, else PostgreSQL. While Redis keeps
    /// failing, the breaker skips it so requests do not each wait for a timeout.
    #[tracing::instrument(skip(self), err)]
    pub async fn get(&self, key: &str) -> Result<StoredDocument, FetchError> {
        if self.breaker.allows() {
            match self.from_redis(key).await {
                Ok(found) => {
                    self.breaker.succeeded();
                    if let Some(doc) = found {
                        CACHE_REQUESTS.with_label_values(&["redis", "hit"]).inc();
                        return Ok(doc);
                    }
                    CACHE_REQUESTS.with_label_values(&["redis", "miss"]).inc();
                }
                Err(e) => {
                    CACHE_REQUESTS.with_label_values(&["redis", "error"]).inc();
                    if self.breaker.failed() {
                        tracing::warn!(error = %e, "redis keeps failing; skipping it for a while");
                    }
                }
            }
        } else {
            CACHE_REQUESTS.with_label_values(&["redis", "skipped"]).inc();
        }
        self.get_fresh(key).await
    }

    /// The document from PostgreSQL only: current as of the projection's last
    /// commit (Redis is written just after it).
    pub async fn get_fresh(&self, key: &str) -> Result<StoredDocument, FetchError> {
        let query = sqlx::query_as("select version, body from read_documents where key = $1").bind(key);
        let row: Option<(i64, Vec<u8>)> = platform::metrics::timed("document_by_key", query.fetch_optional(&self.pool))
            .await
            .map_err(|e| FetchError::Failed(e.into()))?;
        CACHE_REQUESTS.with_label_values(&["postgres", if row.is_some() { "hit" } else { "miss" }]).inc();
        row.map(|(version, body)| StoredDocument { version, body: Bytes::from(body) }).ok_or(FetchError::Missing)
    }

    /// The last sequence of `stream` that `projection` has applied (0 if none).
    pub async fn applied(&self, projection: &str, stream: &str) -> anyhow::Result<u64> {
        let query = sqlx::query_as("select sequence from projection_streams where projection = $1 and stream_id = $2")
            .bind(projection)
            .bind(stream);
        let row: Option<(i64,)> = platform::metrics::timed("projection_position", query.fetch_optional(&self.pool)).await?;
        Ok(row.map_or(0, |(s,)| s as u64))
    }

    async fn from_redis(&self, key: &str) -> anyhow::Result<Option<StoredDocument>> {
        let mut c = self.redis.get().await?;
        let value: Option<Vec<u8>> = redis::cmd("GET").arg(self.settings.doc_key(key)).query_async(&mut c).await?;
        let Some(value) = value else { return Ok(None) };
        let value = Bytes::from(value);
        let newline = value.iter().position(|b| *b == b'\n').ok_or_else(|| anyhow::anyhow!("malformed redis value"))?;
        let version = std::str::from_utf8(&value[..newline])?.parse()?;
        Ok(Some(StoredDocument { version, body: value.slice(newline + 1..) }))
    }

    /// Whether Redis is being skipped after repeated failures.
    pub fn redis_breaker_open(&self) -> bool {
        self.breaker.is_open()
    }

    /// Sets the pool gauges.
    pub fn observe_pool(&self) {
        platform::metrics::observe_pool(&self.pool);
    }

    /// True when PostgreSQL answers.
    pub async fn postgres_up(&self) -> bool {
        platform::db::ping(&self.pool).await
    }

    /// True when Redis answers PING.
    pub async fn redis_up(&self) -> bool {
        self.redis.ping().await
    }
}

#[cfg(test)]
mod tests {
    use super::Breaker;

    #[test]
    fn the_breaker_opens_after_three_failures_and_a_success_closes_it() {
        let breaker = Breaker::default();
        assert!(!breaker.failed() && !breaker.failed());
        assert!(breaker.allows());
        assert!(breaker.failed(), "the third failure opens it");
        assert!(!breaker.allows());
        breaker.succeeded();
        assert!(breaker.allows());
    }
}

//! The tiers behind the in-process cache: Redis, then PostgreSQL, both in the
//! serving read-model generation, each behind a guard that keeps a failing
//! one from making every request wait.
//!
//! - Redis: a circuit breaker skips it for a while after repeated failures.
//! - PostgreSQL: every call has a deadline; a failure marks it down and it is
//!   skipped (answers come from what the caches hold, marked possibly stale)
//!   until a probe, once a second, finds it answering again.
//! - The generation: read from `read_model_pointer` once a second (and at
//!   once after a swap's `*` invalidation); from Redis while PostgreSQL is down.
//! - Documents are read in batches: lookups that arrive together share one
//!   `MGET` or one `where key = any($1)` ([`crate::coalesce`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, RwLock};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use platform::metrics::{CACHE_REQUESTS, timed};
use readmodel::Generation;
use platform::redis::{RedisConnection, RedisSettings};
use sqlx::PgPool;

use crate::cache::{Entry, FetchError};
use crate::settings::Tiers;
use crate::coalesce::{BatchResult, Coalescer};

/// A circuit breaker: after [`Breaker::TRIP_AFTER`] consecutive failures the
/// guarded call is skipped for [`Breaker::COOL_DOWN`]; then one call is let
/// through, and its outcome closes or reopens the breaker. Lock-free: every
/// request asks it.
#[derive(Debug, Default)]
pub struct Breaker {
    failures: AtomicU32,
    /// While open: until when, in microseconds since [`epoch`]; 0 when closed.
    open_until_us: AtomicU64,
}

/// The instant breaker times count from.
fn epoch() -> Instant {
    static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);
    *EPOCH
}

fn micros_since_epoch(t: Instant) -> u64 {
    t.saturating_duration_since(epoch()).as_micros() as u64
}

impl Breaker {
    const TRIP_AFTER: u32 = 3;
    const COOL_DOWN: Duration = Duration::from_secs(5);

    /// Whether the guarded call may be tried now.
    pub fn allows(&self) -> bool {
        let until = self.open_until_us.load(Ordering::Acquire);
        until == 0 || micros_since_epoch(Instant::now()) >= until
    }

    pub fn is_open(&self) -> bool {
        !self.allows()
    }

    pub fn succeeded(&self) {
        if self.failures.swap(0, Ordering::Relaxed) > 0 {
            self.open_until_us.store(0, Ordering::Release);
        }
    }

    /// Records a failure; true when it opened the breaker.
    pub fn failed(&self) -> bool {
        let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures < Self::TRIP_AFTER {
            return false;
        }
        self.open_until_us.store(micros_since_epoch(Instant::now() + Self::COOL_DOWN).max(1), Ordering::Release);
        true
    }
}

/// A document as a tier holds it: its version and its bytes.
type Stored = Option<(i64, Bytes)>;

/// Most lookups in one `MGET` or one `any($1)`.
const MAX_BATCH: usize = 64;

/// Redis and PostgreSQL in the serving generation.
#[derive(Debug)]
pub struct DocumentStore {
    pool: PgPool,
    redis: Arc<RedisConnection>,
    settings: RedisSettings,
    tiers: Tiers,
    breaker: Breaker,
    postgres_up: AtomicBool,
    postgres_timeout: Duration,
    generation: RwLock<Option<Arc<Generation>>>,
    /// Document reads from Redis, by full key, batched into `MGET`s.
    redis_reads: Coalescer<String, Option<Vec<u8>>>,
    /// Document reads from PostgreSQL, by (generation, key), batched per generation.
    postgres_reads: Coalescer<(i64, String), Stored>,
}

impl DocumentStore {
    /// Starts the batched readers on the current runtime.
    pub fn new(pool: PgPool, settings: RedisSettings, tiers: Tiers, postgres_timeout: Duration) -> redis::RedisResult<Self> {
        let redis = Arc::new(RedisConnection::new(&settings)?);
        let connection = redis.clone();
        let redis_reads = Coalescer::new(1, MAX_BATCH, move |keys| {
            let connection = connection.clone();
            async move { mget(&connection, keys).await }
        });
        let options = pool.connect_options().as_ref().clone();
        let postgres_reads = Coalescer::with_state(
            2,
            MAX_BATCH,
            move || platform::db::Dedicated::new(options.clone()),
            move |mut connection, keys| async move {
                let answers = tokio::time::timeout(postgres_timeout, documents_by_key(&mut connection, keys)).await;
                let answers = match answers {
                    Ok(answers) => answers,
                    Err(_) => Err(Arc::new(anyhow::anyhow!("PostgreSQL did not answer within {postgres_timeout:?}"))),
                };
                if answers.is_err() {
                    // It may be broken or still busy: the next batch connects anew.
                    connection.discard();
                }
                (connection, answers)
            },
        );
        Ok(Self {
            pool,
            redis,
            settings,
            tiers,
            breaker: Breaker::default(),
            postgres_up: AtomicBool::new(true),
            postgres_timeout,
            generation: RwLock::new(None),
            redis_reads,
            postgres_reads,
        })
    }

    /// The serving generation.
    pub fn generation(&self) -> Result<Arc<Generation>, FetchError> {
        self.generation
            .read()
            .expect("generation poisoned")
            .clone()
            .ok_or_else(|| FetchError::Failed(anyhow::anyhow!("the read models are not initialised yet")))
    }

    /// Reads which generation serves; true when it changed.
    pub async fn refresh_generation(&self) -> bool {
        let from_postgres = self.postgres(Duration::ZERO, "read_pointer", readmodel::active(&self.pool)).await;
        let found = match from_postgres {
            Ok(found) => found,
            Err(_) => self.generation_from_redis().await,
        };
        let Some(found) = found else { return false };
        let mut current = self.generation.write().expect("generation poisoned");
        if current.as_deref() == Some(&found) {
            return false;
        }
        tracing::info!(generation = found.id, "serving read-model generation");
        *current = Some(Arc::new(found));
        true
    }

    async fn generation_from_redis(&self) -> Option<Generation> {
        let mut c = self.redis.get().await.ok()?;
        let id: Option<i64> = redis::cmd("GET").arg(self.settings.active_generation_key()).query_async(&mut c).await.ok()?;
        id.map(Generation::new)
    }

    /// The document under `key` from Redis, else PostgreSQL.
    #[tracing::instrument(skip(self, tags), err)]
    pub async fn get(&self, key: &str, tags: Arc<[String]>) -> Result<Entry, FetchError> {
        let generation = self.generation()?;
        if self.tiers.redis {
            if self.breaker.allows() {
                match self.from_redis(&generation, key).await {
                    Ok(found) => {
                        self.breaker.succeeded();
                        if let Some((version, body)) = found {
                            CACHE_REQUESTS.with_label_values(&["redis", "hit"]).inc();
                            return Ok(Entry::document(version, body, tags));
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
        }
        self.get_fresh(key, tags).await
    }

    /// The document from PostgreSQL only: current as of the projection's last
    /// commit (Redis is written just after it).
    pub async fn get_fresh(&self, key: &str, tags: Arc<[String]>) -> Result<Entry, FetchError> {
        let generation = self.generation()?;
        let lookup = self.postgres_reads.get((generation.id, key.to_owned()));
        let row = self.postgres(self.postgres_timeout, "document_by_key", lookup).await?;
        CACHE_REQUESTS.with_label_values(&["postgres", if row.is_some() { "hit" } else { "miss" }]).inc();
        match row {
            Some((version, body)) => Ok(Entry::document(version, body, tags)),
            None => Err(FetchError::Missing(tags)),
        }
    }

    /// Runs a read-model query; `query` gets the pool and the serving
    /// generation's schema.
    pub async fn query<T, F, Fut>(&self, name: &'static str, query: F) -> Result<T, FetchError>
    where
        F: FnOnce(PgPool, String) -> Fut,
        Fut: Future<Output = Result<T, sqlx::Error>>,
    {
        let generation = self.generation()?;
        let result = self.postgres(self.postgres_timeout, name, query(self.pool.clone(), generation.schema.clone())).await;
        CACHE_REQUESTS.with_label_values(&["postgres", if result.is_ok() { "hit" } else { "error" }]).inc();
        result
    }

    /// A PostgreSQL call with a deadline (`timeout`, or the configured one
    /// when zero), skipped while PostgreSQL is known to be down.
    async fn postgres<T, E: Failure>(
        &self,
        timeout: Duration,
        name: &'static str,
        call: impl Future<Output = Result<T, E>>,
    ) -> Result<T, FetchError> {
        if !self.postgres_up() {
            CACHE_REQUESTS.with_label_values(&["postgres", "skipped"]).inc();
            return Err(FetchError::Failed(anyhow::anyhow!("PostgreSQL is unavailable")));
        }
        let timeout = if timeout.is_zero() { self.postgres_timeout } else { timeout };
        match tokio::time::timeout(timeout, timed(name, call)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => {
                if e.is_connectivity() {
                    self.mark_postgres(false);
                }
                Err(FetchError::Failed(e.into_anyhow()))
            }
            Err(_) => {
                self.mark_postgres(false);
                Err(FetchError::Failed(anyhow::anyhow!("PostgreSQL did not answer within {timeout:?}")))
            }
        }
    }

    fn mark_postgres(&self, up: bool) {
        if self.postgres_up.swap(up, Ordering::AcqRel) != up {
            if up {
                tracing::info!("PostgreSQL answers again");
            } else {
                tracing::warn!("PostgreSQL is unavailable; answering from the caches, marked possibly stale");
            }
        }
    }

    /// Whether PostgreSQL answered the last call or probe.
    pub fn postgres_up(&self) -> bool {
        self.postgres_up.load(Ordering::Acquire)
    }

    /// Probes PostgreSQL (with the configured deadline) and records the outcome.
    pub async fn probe_postgres(&self) -> bool {
        let up = matches!(
            tokio::time::timeout(self.postgres_timeout, platform::db::ping(&self.pool)).await,
            Ok(true)
        );
        self.mark_postgres(up);
        up
    }

    /// The last sequence of `stream` the serving generation has applied (0 if none).
    pub async fn applied(&self, stream: &str) -> Result<u64, FetchError> {
        let generation = self.generation()?;
        let applied = readmodel::tables::streams::applied(&self.pool, &generation.schema, stream);
        let sequence = self.postgres(Duration::ZERO, "projection_position", applied).await?;
        Ok(sequence.map_or(0, |s| s as u64))
    }

    async fn from_redis(&self, generation: &Generation, key: &str) -> anyhow::Result<Stored> {
        let value = self.redis_reads.get(self.settings.doc_key(generation.id, key)).await.map_err(|e| anyhow::anyhow!("{e:#}"))?;
        let Some(value) = value else { return Ok(None) };
        let value = Bytes::from(value);
        let newline = value.iter().position(|b| *b == b'\n').ok_or_else(|| anyhow::anyhow!("malformed redis value"))?;
        let version = std::str::from_utf8(&value[..newline])?.parse()?;
        Ok(Some((version, value.slice(newline + 1..))))
    }

    /// Adds hits to the generation's hot-document set (kept to its top 1000).
    pub async fn record_hot(&self, hot: &[(String, u64)]) -> anyhow::Result<()> {
        if hot.is_empty() || !self.tiers.redis {
            return Ok(());
        }
        let generation = self.generation().map_err(|e| anyhow::anyhow!("{e}"))?;
        let set = self.settings.hot_keys_key(generation.id);
        let mut pipe = redis::pipe();
        for (key, hits) in hot {
            pipe.zincr(&set, key, *hits).ignore();
        }
        pipe.cmd("ZREMRANGEBYRANK").arg(&set).arg(0).arg(-1001).ignore();
        let mut c = self.redis.get().await?;
        pipe.query_async::<()>(&mut c).await?;
        Ok(())
    }

    /// The `n` documents most asked for in the serving generation.
    pub async fn hottest(&self, n: usize) -> anyhow::Result<Vec<String>> {
        if n == 0 || !self.tiers.redis {
            return Ok(Vec::new());
        }
        let generation = self.generation().map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut c = self.redis.get().await?;
        Ok(redis::cmd("ZREVRANGE")
            .arg(self.settings.hot_keys_key(generation.id))
            .arg(0)
            .arg(n as i64 - 1)
            .query_async(&mut c)
            .await?)
    }

    /// Whether Redis is being skipped after repeated failures.
    pub fn redis_breaker_open(&self) -> bool {
        self.breaker.is_open()
    }

    /// The tiers in use.
    pub fn tiers(&self) -> Tiers {
        self.tiers
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// True when Redis answers PING.
    pub async fn redis_up(&self) -> bool {
        self.redis.ping().await
    }
}

/// A failed PostgreSQL call: whether it means PostgreSQL cannot be reached
/// (as opposed to a bad query).
trait Failure {
    fn is_connectivity(&self) -> bool;
    fn into_anyhow(self) -> anyhow::Error;
}

impl Failure for sqlx::Error {
    fn is_connectivity(&self) -> bool {
        platform::db::is_unreachable(self)
    }

    fn into_anyhow(self) -> anyhow::Error {
        self.into()
    }
}

/// A batched call's failure, shared by every lookup of the batch.
impl Failure for Arc<anyhow::Error> {
    fn is_connectivity(&self) -> bool {
        self.downcast_ref::<sqlx::Error>().is_some_and(Failure::is_connectivity)
    }

    fn into_anyhow(self) -> anyhow::Error {
        anyhow::anyhow!("{self:#}")
    }
}

/// One `MGET` for a batch of document reads.
async fn mget(connection: &RedisConnection, keys: Vec<String>) -> BatchResult<Option<Vec<u8>>> {
    let mut c = connection.get().await.map_err(|e| Arc::new(e.into()))?;
    let mut command = redis::cmd("MGET");
    for key in &keys {
        command.arg(key);
    }
    command.query_async(&mut c).await.map_err(|e| Arc::new(e.into()))
}

/// One query per generation for a batch of document reads, answers in the batch's order.
async fn documents_by_key(connection: &mut platform::db::Dedicated, keys: Vec<(i64, String)>) -> BatchResult<Stored> {
    let mut by_generation: HashMap<i64, Vec<&str>> = HashMap::new();
    for (generation, key) in &keys {
        by_generation.entry(*generation).or_default().push(key);
    }
    let mut found: HashMap<(i64, String), (i64, Bytes)> = HashMap::with_capacity(keys.len());
    let failed = |e: sqlx::Error| Arc::new(anyhow::Error::from(e));
    for (generation, wanted) in by_generation {
        let conn = connection.get().await.map_err(failed)?;
        let schema = Generation::new(generation).schema;
        let rows = readmodel::tables::documents::by_keys(conn, &schema, &wanted).await.map_err(failed)?;
        for (key, version, body) in rows {
            found.insert((generation, key), (version, Bytes::from(body)));
        }
    }
    Ok(keys.into_iter().map(|k| found.get(&k).cloned()).collect())
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

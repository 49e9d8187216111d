//! Settings of the query-service; every field can be set as `APP_<SECTION>__<FIELD>`.

use platform::auth::AuthSettings;
use platform::db::DatabaseSettings;
use platform::http::HttpSettings;
use platform::kafka::KafkaSettings;
use platform::redis::RedisSettings;
use platform::telemetry::LogSettings;
use serde::{Deserialize, Serialize};

/// The whole configuration of the query-service.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Settings {
    /// The HTTP API (default port 8082).
    pub http: HttpSettings,
    /// The read-side database, the last tier.
    pub database: DatabaseSettings,
    /// The shared cache tier the projector fills.
    pub redis: RedisSettings,
    /// The broker, for the projection status (end offsets of the events topic).
    pub kafka: KafkaSettings,
    /// The in-process tier, the tiers in use, and warm-up.
    pub cache: CacheSettings,
    /// Read-your-writes.
    pub consistency: ConsistencySettings,
    /// Pagination of lists.
    pub pages: PageSettings,
    /// Who may call the API (docs/security.md).
    pub auth: AuthSettings,
    /// Logging.
    pub log: LogSettings,
}

impl Default for Settings {
    fn default() -> Self {
        let mut database = DatabaseSettings::default();
        // The projector owns the read-side schema; readers only read.
        database.migrate = false;
        let mut http = HttpSettings::on_port(8082);
        // An analyst's question may read much of the event store.
        http.route_timeouts_ms = "GET /articles/{article}/stock/as-of=30000,GET /audit=30000".into();
        Self {
            http,
            database,
            redis: RedisSettings::default(),
            kafka: KafkaSettings::default(),
            cache: CacheSettings::default(),
            consistency: ConsistencySettings::default(),
            pages: PageSettings::default(),
            auth: AuthSettings::default(),
            log: LogSettings::default(),
        }
    }
}

/// How a request with a consistency token waits for the projection.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConsistencySettings {
    /// Longest wait before answering 504, in milliseconds.
    pub max_wait_ms: u64,
}

impl Default for ConsistencySettings {
    fn default() -> Self {
        Self { max_wait_ms: 2_000 }
    }
}

/// Page sizes of the paginated lists.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PageSettings {
    /// Items per page when the request names no `limit`.
    pub default_limit: u32,
    /// Largest `limit` accepted; a larger one is a 400.
    pub max_limit: u32,
}

impl Default for PageSettings {
    fn default() -> Self {
        Self { default_limit: 50, max_limit: 500 }
    }
}

/// The cache tiers, their sizing, and warm-up.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CacheSettings {
    /// Upper bound of the cached answers' bytes (keys and bodies).
    pub max_bytes: u64,
    /// Safety-net expiry, in seconds; invalidation normally comes first.
    pub ttl_secs: u64,
    /// The tiers used, in order, comma-separated: `memory,redis,postgres`.
    /// Leaving out `memory` or `redis` is for measurements and diagnosis.
    pub tiers: String,
    /// Document keys loaded into memory at start, comma-separated, e.g.
    /// `stock:ART-1000,category:fasteners`.
    pub warmup_keys: String,
    /// How many of the documents most asked for (across instances) are
    /// loaded into memory at start.
    pub warmup_top: usize,
    /// How often this instance adds its most asked documents to the shared
    /// hot set in Redis, in seconds.
    pub hot_record_secs: u64,
    /// Longest wait for a PostgreSQL answer, in milliseconds; after a
    /// failure PostgreSQL is skipped until a probe (every second) succeeds.
    pub postgres_timeout_ms: u64,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            max_bytes: 64 * 1024 * 1024,
            ttl_secs: 300,
            tiers: "memory,redis,postgres".into(),
            warmup_keys: String::new(),
            warmup_top: 100,
            hot_record_secs: 30,
            postgres_timeout_ms: 1_000,
        }
    }
}

/// Which tiers answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tiers {
    pub memory: bool,
    pub redis: bool,
}

impl CacheSettings {
    /// The tiers named in `tiers`; PostgreSQL is always the last one.
    pub fn tiers(&self) -> anyhow::Result<Tiers> {
        let mut tiers = Tiers { memory: false, redis: false };
        for tier in self.tiers.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            match tier {
                "memory" => tiers.memory = true,
                "redis" => tiers.redis = true,
                "postgres" => {}
                other => anyhow::bail!("APP_CACHE__TIERS: unknown tier {other:?} (memory, redis, postgres)"),
            }
        }
        Ok(tiers)
    }
}

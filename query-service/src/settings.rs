//! Settings of the query-service; every field can be set as `APP_<SECTION>__<FIELD>`.

use platform::db::DatabaseSettings;
use platform::http::HttpSettings;
use platform::kafka::KafkaSettings;
use platform::redis::RedisSettings;
use platform::telemetry::LogSettings;
use serde::{Deserialize, Serialize};

use crate::cache::CacheSettings;

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
    /// Logging.
    pub log: LogSettings,
}

impl Default for Settings {
    fn default() -> Self {
        let mut database = DatabaseSettings::default();
        // The projector owns the read-side schema; readers only read.
        database.migrate = false;
        Self {
            http: HttpSettings::on_port(8082),
            database,
            redis: RedisSettings::default(),
            kafka: KafkaSettings::default(),
            cache: CacheSettings::default(),
            consistency: ConsistencySettings::default(),
            pages: PageSettings::default(),
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

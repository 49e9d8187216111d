//! Settings of the query-service; every field can be set as `APP_<SECTION>__<FIELD>`.

use platform::db::DatabaseSettings;
use platform::http::HttpSettings;
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
    /// The in-process tier.
    pub cache: CacheSettings,
    /// Read-your-writes.
    pub consistency: ConsistencySettings,
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
            cache: CacheSettings::default(),
            consistency: ConsistencySettings::default(),
            log: LogSettings::default(),
        }
    }
}

/// How a request with a consistency token waits for the projection.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConsistencySettings {
    /// The projection whose positions are awaited (the projector's `APP_PROJECTOR__NAME`).
    pub projection: String,
    /// Longest wait before answering 504, in milliseconds.
    pub max_wait_ms: u64,
}

impl Default for ConsistencySettings {
    fn default() -> Self {
        Self { projection: "main".into(), max_wait_ms: 2_000 }
    }
}

//! Settings of the projector; every field can be set as `APP_<SECTION>__<FIELD>`.

use platform::db::DatabaseSettings;
use platform::http::HttpSettings;
use platform::kafka::KafkaSettings;
use platform::redis::RedisSettings;
use platform::telemetry::LogSettings;
use serde::{Deserialize, Serialize};

/// The whole configuration of the projector.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Settings {
    /// The admin listener: health (default port 8083).
    pub http: HttpSettings,
    /// The read-side database.
    pub database: DatabaseSettings,
    /// The broker and the events topic to consume.
    pub kafka: KafkaSettings,
    /// Where the hot documents are published.
    pub redis: RedisSettings,
    /// Batching and identity of the projection.
    pub projector: ProjectorSettings,
    /// Logging.
    pub log: LogSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            http: HttpSettings::on_port(8083),
            database: DatabaseSettings::default(),
            kafka: KafkaSettings::default(),
            redis: RedisSettings::default(),
            projector: ProjectorSettings::default(),
            log: LogSettings::default(),
        }
    }
}

/// How the projector consumes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProjectorSettings {
    /// Kafka consumer group under which applied offsets are committed, only
    /// so that standard lag tools see them. Which instance applies which
    /// partition is decided through PostgreSQL, not by the group.
    pub group_id: String,
    /// Most records in one batch.
    pub batch_size: usize,
    /// Transactions a batch is applied in at once, each taking a share of
    /// the batch's partitions (and storing their offsets); 1 applies a batch
    /// in one transaction.
    pub lanes: usize,
    /// How long a batch waits for more records once it has one, in milliseconds.
    pub batch_wait_ms: u64,
    /// Longest time the broker may hold a fetch while no new records arrive,
    /// in milliseconds (Kafka's `fetch.wait.max.ms`). Bounds how late an
    /// event is seen on a broker that does not answer a waiting fetch as soon
    /// as records arrive.
    pub fetch_wait_ms: u64,
    /// How often an instance looks at who owns which partition and takes
    /// or gives up partitions, in milliseconds: a crashed instance's
    /// partitions are taken over within about this long.
    pub ownership_interval_ms: u64,
    /// Readiness turns false (and `erp_projector_stalled_seconds` passes
    /// this) when an owned partition has records to apply and no batch
    /// has committed for this many seconds.
    pub stall_after_secs: u64,
}

impl Default for ProjectorSettings {
    fn default() -> Self {
        Self {
            group_id: "erp-projector".into(),
            batch_size: 100_000,
            lanes: 2,
            batch_wait_ms: 5,
            fetch_wait_ms: 20,
            ownership_interval_ms: 1_000,
            stall_after_secs: 60,
        }
    }
}

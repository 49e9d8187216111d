//! Settings of the command-service; every field can be set as `APP_<SECTION>__<FIELD>`.

use platform::auth::AuthSettings;
use platform::db::DatabaseSettings;
use platform::http::HttpSettings;
use platform::kafka::KafkaSettings;
use platform::telemetry::LogSettings;
use serde::{Deserialize, Serialize};

/// The whole configuration of the command-service.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Settings {
    /// The HTTP API (default port 8081).
    pub http: HttpSettings,
    /// The write-side database: event store and outbox.
    pub database: DatabaseSettings,
    /// The broker and topic the outbox relay publishes to.
    pub kafka: KafkaSettings,
    /// The outbox relay.
    pub relay: RelaySettings,
    /// Configurable domain rules.
    pub domain: DomainSettings,
    /// How long an `Idempotency-Key` is remembered, in seconds.
    pub idempotency_ttl_secs: u64,
    /// How concurrent commands are grouped into transactions.
    pub group_commit: GroupCommitSettings,
    /// Who may call the API (docs/security.md).
    pub auth: AuthSettings,
    /// Background job submissions (docs/jobs.md).
    pub jobs: JobsSettings,
    /// Webhook subscriptions (docs/webhooks.md): set
    /// `APP_WEBHOOKS__ALLOW_PRIVATE_ADDRESSES` as for the notifier.
    pub webhooks: WebhooksSettings,
    /// Logging.
    pub log: LogSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            http: HttpSettings::on_port(8081),
            database: DatabaseSettings::default(),
            kafka: KafkaSettings::default(),
            relay: RelaySettings::default(),
            domain: DomainSettings::default(),
            idempotency_ttl_secs: 86_400,
            group_commit: GroupCommitSettings::default(),
            auth: AuthSettings::default(),
            jobs: JobsSettings::default(),
            webhooks: WebhooksSettings::default(),
            log: LogSettings::default(),
        }
    }
}

/// How outbox rows reach Kafka.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RelaySettings {
    /// Run the relay in this process. Every instance may run it: one at a time
    /// holds the leader lock, the others stand by.
    pub enabled: bool,
    /// Rows read and produced per round.
    pub batch_size: i64,
    /// Look for pending rows this often even without a commit notification
    /// (a safety net; commits wake the relay at once), in milliseconds.
    pub idle_poll_ms: u64,
    /// After a commit wakes the relay, wait this long so that more rows gather
    /// into one round (fewer produce requests and relay commits), in milliseconds.
    pub linger_ms: u64,
    /// How long a produce may wait for the broker's acknowledgement, in milliseconds.
    pub produce_timeout_ms: u64,
    /// Relayed rows are deleted after this many seconds.
    pub retention_secs: u64,
}

impl Default for RelaySettings {
    fn default() -> Self {
        Self {
            enabled: true,
            batch_size: 1000,
            idle_poll_ms: 1_000,
            linger_ms: 5,
            produce_timeout_ms: 10_000,
            retention_secs: 86_400,
        }
    }
}

/// Configurable domain rules.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DomainSettings {
    /// Comma-separated warehouse ids that allow negative stock (ERPNext's
    /// "allow negative stock"); empty by default: no warehouse does.
    pub negative_stock_warehouses: String,
}

impl DomainSettings {
    /// The policy `decide` applies; fails on an invalid warehouse id.
    pub fn policy(&self) -> anyhow::Result<events::Policy> {
        let warehouses = self
            .negative_stock_warehouses
            .split(',')
            .map(str::trim)
            .filter(|w| !w.is_empty())
            .map(|w| {
                events::WarehouseId::parse(w)
                    .map_err(|e| anyhow::anyhow!("APP_DOMAIN__NEGATIVE_STOCK_WAREHOUSES: {w:?} {e}"))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(events::Policy { negative_stock_warehouses: warehouses })
    }
}

/// Group commit: commands waiting at the same time share one transaction.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupCommitSettings {
    /// Committer lanes, each committing its own batches one after another
    /// on a connection of its own; the commands of one article always use the
    /// same lane. One is fastest on two cores (fewer, larger batches: a batch
    /// costs PostgreSQL the same whatever its size); more lanes may pay off
    /// where PostgreSQL has cores to spare.
    pub lanes: usize,
    /// Most commands in one transaction.
    pub max_batch: usize,
}

impl Default for GroupCommitSettings {
    fn default() -> Self {
        Self { lanes: 1, max_batch: 256 }
    }
}

/// Limits of job submissions (`/jobs`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobsSettings {
    /// Largest import file, in bytes; a larger upload is refused with 413
    /// (at once when its `Content-Length` says so, else when it passes it).
    pub max_upload_bytes: u64,
    /// Longest line of an import file, in bytes; a longer one refuses the
    /// upload with 422 naming the line.
    pub max_line_bytes: usize,
    /// Attempts a job gets before it is dead (a worker killed counts as one).
    pub max_attempts: i32,
}

impl Default for JobsSettings {
    fn default() -> Self {
        Self { max_upload_bytes: 1 << 30, max_line_bytes: 64 * 1024, max_attempts: 5 }
    }
}

/// Webhook subscriptions (`/webhooks`; the notifier delivers).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct WebhooksSettings {
    /// Accept subscription URLs naming loopback, private and link-local
    /// addresses (tests, receivers inside one's own network); set it as for
    /// the notifier, which checks again when it connects.
    pub allow_private_addresses: bool,
}

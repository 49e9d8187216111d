//! Settings of the notifier; every field can be set as `APP_<SECTION>__<FIELD>`.

use std::time::Duration;

use platform::db::DatabaseSettings;
use platform::http::HttpSettings;
use platform::kafka::KafkaSettings;
use platform::telemetry::LogSettings;
use serde::{Deserialize, Serialize};

/// The whole configuration of the notifier.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Settings {
    /// Health and metrics (default port 8085).
    pub http: HttpSettings,
    /// The database holding the subscriptions and deliveries.
    pub database: DatabaseSettings,
    /// The broker and the events topic.
    pub kafka: KafkaSettings,
    /// The intake: batches of the topic, the expiry check.
    pub notify: NotifySettings,
    /// Delivering webhooks.
    pub webhooks: WebhookSettings,
    /// Logging.
    pub log: LogSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            http: HttpSettings::on_port(8085),
            database: DatabaseSettings::default(),
            kafka: KafkaSettings::default(),
            notify: NotifySettings::default(),
            webhooks: WebhookSettings::default(),
            log: LogSettings::default(),
        }
    }
}

/// How the intake takes the topic.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct NotifySettings {
    /// The consumer group the intake's offsets are also known by (lag tools);
    /// where it stands is kept in PostgreSQL.
    pub group_id: String,
    /// Most records in one intake transaction.
    pub batch_size: usize,
    /// How long a batch waits to fill, in milliseconds.
    pub batch_wait_ms: u64,
    /// How often the jobs' notifications and the expiry check are looked at, in milliseconds.
    pub poll_ms: u64,
    /// The expiry check runs once per period of this many seconds (a day).
    pub expiry_period_secs: u64,
}

impl Default for NotifySettings {
    fn default() -> Self {
        Self { group_id: "erp-notifier".into(), batch_size: 1_000, batch_wait_ms: 50, poll_ms: 1_000, expiry_period_secs: 86_400 }
    }
}

/// How webhooks are delivered. `allow_private_addresses` is read by the
/// command-service too (it checks a subscription's URL when it is made).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct WebhookSettings {
    /// Let webhooks go to loopback, private and link-local addresses (tests,
    /// receivers inside one's own network). Off: only public addresses.
    pub allow_private_addresses: bool,
    /// How long a receiver has to answer, in milliseconds.
    pub timeout_ms: u64,
    /// Seconds to wait before each retry, comma-separated; when they are
    /// used up the delivery has failed (re-send it by hand). A `429` or
    /// `503` with `Retry-After` waits at least as long as it asks (up to a day).
    pub retry_schedule_secs: String,
    /// An endpoint whose deliveries have failed for this long without a
    /// success in between is disabled (its reason says so), in seconds.
    pub disable_after_failing_secs: u64,
    /// Deliveries in flight at once, per notifier instance.
    pub concurrency: usize,
    /// How often to look for due deliveries without a notification, in milliseconds.
    pub poll_ms: u64,
    /// Delivered and failed deliveries are deleted after this many days.
    pub keep_days: u32,
    /// This instance's name in the attempts' records; empty: host name and process id.
    pub name: String,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        Self {
            allow_private_addresses: false,
            timeout_ms: 10_000,
            retry_schedule_secs: "5,300,1800,7200,18000,36000,36000".into(),
            disable_after_failing_secs: 5 * 86_400,
            concurrency: 32,
            poll_ms: 1_000,
            keep_days: 30,
            name: String::new(),
        }
    }
}

impl WebhookSettings {
    /// The waits before each retry; refuses a list that is not numbers.
    pub fn schedule(&self) -> anyhow::Result<Vec<Duration>> {
        self.retry_schedule_secs
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<u64>()
                    .map(Duration::from_secs)
                    .map_err(|_| anyhow::anyhow!("APP_WEBHOOKS__RETRY_SCHEDULE_SECS: {s:?} is not a number of seconds"))
            })
            .collect()
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    pub fn instance_name(&self) -> String {
        if !self.name.is_empty() {
            return self.name.clone();
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        format!("{}-{}", host.trim(), std::process::id())
    }
}

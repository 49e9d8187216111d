//! Test support. Every test gets its own PostgreSQL database, Redis key prefix,
//! Kafka topic and consumer group on the real services that `scripts/infra.sh`
//! starts, so tests run in parallel without seeing each other.
//!
//! Where the services are is read from the environment, with the defaults the
//! scripts use: `ERP_TEST_PG_ADMIN_URL`, `ERP_TEST_REDIS_URL`,
//! `ERP_TEST_KAFKA_BROKERS`.

use std::time::{Duration, Instant};

use platform::db::DatabaseSettings;
use platform::kafka::KafkaSettings;
use platform::redis::RedisSettings;
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

/// Prefix of every database a test creates; `scripts/test.sh` drops leftovers.
pub const TEST_DB_PREFIX: &str = "erp_test_";

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

/// The isolated resources of one test.
#[derive(Debug, Clone)]
pub struct TestEnv {
    /// Short unique id of this test's resources.
    pub id: String,
    pub database: DatabaseSettings,
    pub redis: RedisSettings,
    pub kafka: KafkaSettings,
    /// A consumer group of this test's own.
    pub group_id: String,
}

impl TestEnv {
    /// Creates a database, a Redis prefix and a topic with `partitions` partitions.
    pub async fn new(partitions: i32) -> anyhow::Result<Self> {
        let id = Uuid::new_v4().simple().to_string()[..12].to_owned();
        let admin_url = env_or("ERP_TEST_PG_ADMIN_URL", "postgres://postgres:postgres@127.0.0.1:5432/postgres");
        let db_name = format!("{TEST_DB_PREFIX}{id}");
        let mut admin = PgConnection::connect(&admin_url).await?;
        sqlx::query(&format!("create database {db_name}")).execute(&mut admin).await?;
        admin.close().await?;
        let base = admin_url.rsplit_once('/').map_or(admin_url.as_str(), |(base, _)| base);
        let database = DatabaseSettings { url: format!("{base}/{db_name}"), max_connections: 8, ..Default::default() };
        let redis = RedisSettings {
            url: env_or("ERP_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"),
            key_prefix: format!("test:{id}:"),
        };
        let kafka = KafkaSettings {
            brokers: env_or("ERP_TEST_KAFKA_BROKERS", "127.0.0.1:19092"),
            events_topic: format!("test-events-{id}"),
            partitions,
        };
        platform::kafka::ensure_topic(&kafka, &kafka.events_topic, partitions).await?;
        Ok(Self { group_id: format!("test-group-{id}"), id, database, redis, kafka })
    }

    /// A pool on this test's database.
    pub async fn pool(&self) -> anyhow::Result<sqlx::PgPool> {
        Ok(platform::db::pool(&self.database)?)
    }
}

/// A free TCP port on loopback (bound and released; fine for tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

/// Polls `check` every 50 ms until it returns `Some`, or fails after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = check().await {
            return Ok(value);
        }
        if start.elapsed() > timeout {
            anyhow::bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `GET {base}/health/ready` answers 200.
pub async fn wait_ready(base: &str, timeout: Duration) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let url = format!("{base}/health/ready");
    eventually(timeout, &url, || async {
        client.get(&url).send().await.ok().filter(|r| r.status().is_success()).map(|_| ())
    })
    .await
}

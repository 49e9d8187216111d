//! Test support. Every test gets its own PostgreSQL database, Redis key prefix,
//! Kafka topic and consumer group on the real services that `scripts/infra.sh`
//! starts, so tests run in parallel without seeing each other.
//!
//! Where the services are is read from the environment, with the defaults the
//! scripts use: `ERP_TEST_PG_ADMIN_URL`, `ERP_TEST_REDIS_URL`,
//! `ERP_TEST_KAFKA_BROKERS`. A test that restarts or cuts a server starts
//! its own ([`servers`]) and puts a proxy in front of it ([`proxy`]).

pub mod commands;
pub mod events;
pub mod proxy;
pub mod servers;

pub use servers::Broker;

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

/// Where the servers a test uses are.
#[derive(Debug, Clone)]
pub struct Servers {
    /// URL of the `postgres` database, to create the test's own.
    pub pg_admin_url: String,
    pub redis_url: String,
    pub brokers: String,
}

impl Servers {
    /// The servers `scripts/infra.sh up-test` starts, every test shares them.
    pub fn shared() -> Self {
        Self {
            pg_admin_url: env_or("ERP_TEST_PG_ADMIN_URL", "postgres://postgres:postgres@127.0.0.1:5432/postgres"),
            redis_url: env_or("ERP_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"),
            brokers: env_or("ERP_TEST_KAFKA_BROKERS", "127.0.0.1:19092"),
        }
    }
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
    /// Creates a database, a Redis prefix and a topic with `partitions`
    /// partitions on the shared servers.
    pub async fn new(partitions: i32) -> anyhow::Result<Self> {
        Self::on(&Servers::shared(), partitions).await
    }

    /// Like [`TestEnv::new`], on the given servers (e.g. a test's own).
    pub async fn on(servers: &Servers, partitions: i32) -> anyhow::Result<Self> {
        let id = Uuid::new_v4().simple().to_string()[..12].to_owned();
        let admin_url = &servers.pg_admin_url;
        let db_name = format!("{TEST_DB_PREFIX}{id}");
        let mut admin = PgConnection::connect(admin_url).await?;
        sqlx::query(&format!("create database {db_name}")).execute(&mut admin).await?;
        admin.close().await?;
        let base = admin_url.rsplit_once('/').map_or(admin_url.as_str(), |(base, _)| base);
        let database = DatabaseSettings { url: format!("{base}/{db_name}"), max_connections: 8, ..Default::default() };
        let redis = RedisSettings { url: servers.redis_url.clone(), key_prefix: format!("test:{id}:") };
        let kafka = KafkaSettings {
            brokers: servers.brokers.clone(),
            events_topic: format!("test-events-{id}"),
            partitions,
            ..KafkaSettings::default()
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

/// One record read back from a topic.
#[derive(Debug, Clone)]
pub struct TopicRecord {
    pub partition: i32,
    pub offset: i64,
    pub key: String,
    pub headers: Vec<(String, String)>,
    pub payload: Vec<u8>,
}

impl TopicRecord {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// Every record of `topic` up to the current end of each partition, in
/// partition and offset order.
pub async fn read_topic(kafka: &KafkaSettings, topic: &str) -> anyhow::Result<Vec<TopicRecord>> {
    let kafka = kafka.clone();
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || read_topic_blocking(&kafka, &topic)).await?
}

fn read_topic_blocking(kafka: &KafkaSettings, topic: &str) -> anyhow::Result<Vec<TopicRecord>> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Message;
    use rdkafka::{Offset, TopicPartitionList};

    let consumer: BaseConsumer = kafka
        .client_config()
        .set("group.id", format!("reader-{}", Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        .create()?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let partitions: Vec<i32> = metadata.topics()[0].partitions().iter().map(|p| p.id()).collect();
    let mut ends = std::collections::HashMap::new();
    let mut assignment = TopicPartitionList::new();
    for &p in &partitions {
        let (_, high) = consumer.fetch_watermarks(topic, p, Duration::from_secs(10))?;
        ends.insert(p, high);
        assignment.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    let mut records = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let done = |records: &Vec<TopicRecord>| {
        ends.iter().all(|(p, end)| *end == 0 || records.iter().any(|r| r.partition == *p && r.offset + 1 >= *end))
    };
    while !done(&records) {
        anyhow::ensure!(Instant::now() < deadline, "timed out reading {topic}");
        let Some(message) = consumer.poll(Duration::from_millis(200)) else { continue };
        let m = message?;
        let headers = platform::kafka::string_headers(&m);
        records.push(TopicRecord {
            partition: m.partition(),
            offset: m.offset(),
            key: String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
            headers,
            payload: m.payload().unwrap_or_default().to_vec(),
        });
    }
    records.sort_by_key(|r| (r.partition, r.offset));
    Ok(records)
}

/// Every `$ref` of a JSON document (an OpenAPI document) that does not point
/// at a part of the same document.
pub fn unresolved_refs(doc: &serde_json::Value) -> Vec<String> {
    fn walk(value: &serde_json::Value, doc: &serde_json::Value, out: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(map) => {
                for (key, child) in map {
                    match (key.as_str(), child.as_str()) {
                        ("$ref", Some(target)) => {
                            if target.strip_prefix('#').and_then(|pointer| doc.pointer(pointer)).is_none() {
                                out.push(target.to_owned());
                            }
                        }
                        _ => walk(child, doc, out),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|i| walk(i, doc, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(doc, doc, &mut out);
    out
}

//! Kafka: settings shared by the producer (outbox relay) and the consumers.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;
use serde::{Deserialize, Serialize};

/// Where the events topic lives.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct KafkaSettings {
    /// Comma-separated `host:port` list of brokers.
    pub brokers: String,
    /// The topic every event is written to, keyed by article id.
    pub events_topic: String,
    /// Partitions of the events topic when a service has to create it.
    pub partitions: i32,
}

impl Default for KafkaSettings {
    fn default() -> Self {
        Self { brokers: "127.0.0.1:9092".into(), events_topic: "stock-events".into(), partitions: 4 }
    }
}

impl KafkaSettings {
    /// Client configuration common to producers, consumers and admin clients.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.brokers)
            .set("broker.address.family", "v4")
            .set("socket.keepalive.enable", "true");
        config
    }
}

/// Creates `topic` with `partitions` unless it exists.
#[tracing::instrument(skip(settings), err)]
pub async fn ensure_topic(settings: &KafkaSettings, topic: &str, partitions: i32) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = settings.client_config().create()?;
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = admin
        .create_topics(&[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))], &options)
        .await?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => anyhow::bail!("creating topic {name}: {code}"),
        }
    }
    Ok(())
}

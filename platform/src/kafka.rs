//! Kafka: settings shared by the producer (outbox relay) and the consumers.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
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

/// Checks that the broker answers and knows a topic; for readiness probes.
pub struct KafkaProbe {
    client: BaseConsumer,
    topic: String,
}

impl std::fmt::Debug for KafkaProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaProbe").field("topic", &self.topic).finish_non_exhaustive()
    }
}

impl KafkaProbe {
    pub fn new(settings: &KafkaSettings) -> anyhow::Result<Self> {
        Ok(Self { client: settings.client_config().create()?, topic: settings.events_topic.clone() })
    }

    /// `Ok` when the broker returns metadata with the topic within two seconds.
    pub async fn probe(self: &std::sync::Arc<Self>) -> Result<(), String> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let metadata = this
                .client
                .fetch_metadata(Some(&this.topic), Duration::from_secs(2))
                .map_err(|e| format!("unreachable: {e}"))?;
            match metadata.topics().first() {
                Some(t) if t.error().is_none() && !t.partitions().is_empty() => Ok(()),
                _ => Err(format!("topic {} does not exist", this.topic)),
            }
        })
        .await
        .map_err(|e| e.to_string())?
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

/// A record's headers whose values are UTF-8, as (name, value) pairs.
pub fn string_headers(message: &impl rdkafka::Message) -> Vec<(String, String)> {
    use rdkafka::message::Headers;
    message
        .headers()
        .map(|hs| hs.iter().filter_map(|h| Some((h.key.to_owned(), String::from_utf8(h.value?.to_vec()).ok()?))).collect())
        .unwrap_or_default()
}

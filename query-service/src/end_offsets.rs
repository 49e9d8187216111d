//! The end of each partition of the events topic, for the projection status.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use platform::kafka::KafkaSettings;
use rdkafka::consumer::{BaseConsumer, Consumer};

/// Reads the end offsets of the events topic. The Kafka client (and its
/// threads) is made on the first status request, not at start: the status is
/// asked for rarely, answers never.
pub struct EndOffsets {
    consumer: std::sync::OnceLock<BaseConsumer>,
    kafka: KafkaSettings,
    /// The events topic.
    pub topic: String,
}

impl std::fmt::Debug for EndOffsets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndOffsets").field("topic", &self.topic).finish_non_exhaustive()
    }
}

impl EndOffsets {
    pub fn new(kafka: &KafkaSettings) -> Self {
        Self { consumer: std::sync::OnceLock::new(), kafka: kafka.clone(), topic: kafka.events_topic.clone() }
    }

    fn consumer(&self) -> Result<&BaseConsumer, String> {
        if let Some(c) = self.consumer.get() {
            return Ok(c);
        }
        let made: BaseConsumer = self.kafka.client_config().create().map_err(|e| e.to_string())?;
        Ok(self.consumer.get_or_init(|| made))
    }

    /// The next offset to be written, per partition (within two seconds).
    pub async fn fetch(self: Arc<Self>) -> Result<BTreeMap<i32, i64>, String> {
        tokio::task::spawn_blocking(move || {
            let timeout = Duration::from_secs(2);
            let consumer = self.consumer()?;
            let metadata = consumer.fetch_metadata(Some(&self.topic), timeout).map_err(|e| e.to_string())?;
            let topic = metadata.topics().first().ok_or("no metadata")?;
            let mut ends = BTreeMap::new();
            for p in topic.partitions() {
                let (_, high) = consumer.fetch_watermarks(&self.topic, p.id(), timeout).map_err(|e| e.to_string())?;
                ends.insert(p.id(), high);
            }
            Ok(ends)
        })
        .await
        .map_err(|e| e.to_string())?
    }
}


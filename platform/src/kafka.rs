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
    /// Start (and relay) even when the events topic's retention would
    /// delete events (`retention.ms` or `retention.bytes` not -1, or a
    /// compacted topic). The topic is the event log analysts and rebuilds
    /// replay from start: leave this off unless the events are kept elsewhere.
    pub allow_finite_retention: bool,
}

impl Default for KafkaSettings {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".into(),
            events_topic: "stock-events".into(),
            partitions: 4,
            allow_finite_retention: false,
        }
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

/// The configuration every topic is created with: records are kept for
/// good, the event log must outlive any default retention.
pub const KEEP_FOREVER: [(&str, &str); 2] = [("retention.ms", "-1"), ("retention.bytes", "-1")];

/// Creates `topic` with `partitions` and [`KEEP_FOREVER`] unless it exists.
#[tracing::instrument(skip(settings), err)]
pub async fn ensure_topic(settings: &KafkaSettings, topic: &str, partitions: i32) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = settings.client_config().create()?;
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let new = KEEP_FOREVER
        .iter()
        .fold(NewTopic::new(topic, partitions, TopicReplication::Fixed(1)), |t, (k, v)| t.set(k, v));
    let results = admin.create_topics(&[new], &options).await?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => anyhow::bail!("creating topic {name}: {code}"),
        }
    }
    Ok(())
}

/// Why a topic with these configuration values (name → value, as the broker
/// reports them) would delete events; `None` when it keeps them for good.
///
/// A compacted topic keeps only the last record of each key (the last event
/// of each article). With deletion (Kafka's default `cleanup.policy`), any
/// `retention.ms` or `retention.bytes` but -1 deletes old events. A value the
/// broker does not report is not held against the topic: Apache Kafka
/// reports every value, defaults included; Tansu 0.6.0 reports only those
/// set at creation and deletes nothing from a topic without an explicit
/// `cleanup.policy` (so topics are never created with one).
pub fn retention_problem<'a>(configs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Option<String> {
    let configs: std::collections::BTreeMap<&str, &str> = configs.into_iter().collect();
    let policy = configs.get("cleanup.policy").copied().unwrap_or("delete");
    if policy.contains("compact") {
        return Some(format!("cleanup.policy={policy} keeps only the last event of each article"));
    }
    if policy.contains("delete") {
        for key in ["retention.ms", "retention.bytes"] {
            if let Some(value) = configs.get(key)
                && value.parse::<i64>().is_ok_and(|n| n >= 0)
            {
                return Some(format!("{key}={value} deletes older events (set it to -1)"));
            }
        }
    }
    None
}

/// Why the events topic would lose events (see [`retention_problem`]), with
/// what to do about it; `None` when it keeps them or `allow_finite_retention`
/// is set. Fails when the broker cannot tell.
#[tracing::instrument(skip(settings), fields(topic = %settings.events_topic), err)]
pub async fn retention_refusal(settings: &KafkaSettings) -> anyhow::Result<Option<String>> {
    use rdkafka::admin::ResourceSpecifier;
    if settings.allow_finite_retention {
        return Ok(None);
    }
    let admin: AdminClient<DefaultClientContext> = settings.client_config().create()?;
    let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(10)));
    let topic = ResourceSpecifier::Topic(&settings.events_topic);
    let results = admin.describe_configs([&topic], &options).await?;
    let resource = match results.into_iter().next() {
        Some(Ok(resource)) => resource,
        Some(Err(code)) => anyhow::bail!("describing topic {}: {code}", settings.events_topic),
        None => anyhow::bail!("the broker described nothing for topic {}", settings.events_topic),
    };
    let values = resource.entries.iter().filter_map(|e| Some((e.name.as_str(), e.value.as_deref()?)));
    Ok(retention_problem(values).map(|problem| {
        format!(
            "the events topic {} would lose events: {problem}. Change the topic (kafka-configs.sh --alter \
             --add-config retention.ms=-1,retention.bytes=-1) or, if the events are kept elsewhere, set \
             APP_KAFKA__ALLOW_FINITE_RETENTION=true",
            settings.events_topic
        )
    }))
}

/// The partitions of `topic`, ascending, from the broker's metadata (asked
/// for on a blocking thread: librdkafka's call blocks).
pub fn partitions<C: rdkafka::consumer::ConsumerContext>(
    consumer: &impl Consumer<C>,
    topic: &str,
    timeout: Duration,
) -> anyhow::Result<Vec<i32>> {
    let metadata = tokio::task::block_in_place(|| consumer.fetch_metadata(Some(topic), timeout))?;
    let found = metadata.topics().first().ok_or_else(|| anyhow::anyhow!("no metadata for {topic}"))?;
    if let Some(e) = found.error() {
        anyhow::bail!("metadata of {}: {e:?}", found.name());
    }
    let mut partitions: Vec<i32> = found.partitions().iter().map(|p| p.id()).collect();
    partitions.sort_unstable();
    Ok(partitions)
}

/// A record's headers whose values are UTF-8, as (name, value) pairs.
pub fn string_headers(message: &impl rdkafka::Message) -> Vec<(String, String)> {
    use rdkafka::message::Headers;
    message
        .headers()
        .map(|hs| hs.iter().filter_map(|h| Some((h.key.to_owned(), String::from_utf8(h.value?.to_vec()).ok()?))).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::retention_problem;

    #[test]
    fn a_topic_kept_for_good_has_no_retention_problem() {
        let kafka = [("cleanup.policy", "delete"), ("retention.ms", "-1"), ("retention.bytes", "-1")];
        assert_eq!(retention_problem(kafka), None);
        // Tansu reports only what was set at creation.
        assert_eq!(retention_problem([("retention.ms", "-1"), ("retention.bytes", "-1")]), None);
        assert_eq!(retention_problem([]), None);
    }

    #[test]
    fn the_default_week_of_retention_is_a_problem_naming_the_setting() {
        let kafka = [("cleanup.policy", "delete"), ("retention.ms", "604800000"), ("retention.bytes", "-1")];
        assert_eq!(retention_problem(kafka).unwrap(), "retention.ms=604800000 deletes older events (set it to -1)");
        let bytes = [("retention.ms", "-1"), ("retention.bytes", "1073741824")];
        assert!(retention_problem(bytes).unwrap().starts_with("retention.bytes=1073741824"));
    }

    #[test]
    fn a_compacted_topic_is_a_problem_whatever_its_retention() {
        let compacted = [("cleanup.policy", "compact"), ("retention.ms", "-1")];
        assert!(retention_problem(compacted).unwrap().contains("last event of each article"));
        assert!(retention_problem([("cleanup.policy", "compact,delete")]).is_some());
    }
}

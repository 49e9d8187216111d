//! Events made the way the command-service makes them (`decide`, then the
//! envelope), for tests that feed the projector or the topic directly, and
//! producing them to a topic as CloudEvents records.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use events::{ArticleState, Command, CommandMeta, Context, Envelope, Policy, RecordedEvent, StreamId, decide, evolve};
use platform::kafka::KafkaSettings;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use uuid::Uuid;

/// Decides commands against in-memory stream states and wraps their events.
#[derive(Debug, Default)]
pub struct Streams {
    states: HashMap<StreamId, ArticleState>,
    commands: u128,
}

impl Streams {
    /// The events of `command`, decided at `now`; panics when it is refused.
    pub fn decide(&mut self, command: Command, now: DateTime<Utc>) -> Vec<Envelope> {
        let stream = StreamId::article(command.article());
        let state = self.states.entry(stream.clone()).or_default();
        let name = command.name();
        let events = decide(state, command, &Context { now, policy: &Policy::default() })
            .unwrap_or_else(|e| panic!("{name} refused: {e}"));
        self.commands += 1;
        let meta = CommandMeta {
            command_id: Uuid::from_u128(self.commands),
            correlation_id: format!("test-{}", self.commands),
            actor: "test".into(),
            recorded_at: now,
            traceparent: None,
        };
        let envelopes = Envelope::wrap(&stream, state.version, &meta, events);
        *state = envelopes.iter().map(|e| &e.event).fold(std::mem::take(state), evolve);
        envelopes
    }

    /// The current state of a stream.
    pub fn state(&self, stream: &StreamId) -> Option<&ArticleState> {
        self.states.get(stream)
    }
}

/// The CloudEvents form of an envelope: key, headers and value.
pub fn cloudevent(envelope: &Envelope) -> (String, Vec<(String, String)>, Vec<u8>) {
    let record: RecordedEvent = envelope.to_record();
    let headers = record.cloudevents_headers().into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
    let value = serde_json::to_vec(&record.data).expect("event data serialises");
    (record.kafka_key().to_owned(), headers, value)
}

/// Produces records to a topic and waits for each acknowledgement.
pub struct Producer {
    producer: FutureProducer,
    topic: String,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer").field("topic", &self.topic).finish_non_exhaustive()
    }
}

impl Producer {
    pub fn new(kafka: &KafkaSettings, topic: &str) -> anyhow::Result<Self> {
        let producer = kafka.client_config().set("acks", "all").set("enable.idempotence", "true").create()?;
        Ok(Self { producer, topic: topic.to_owned() })
    }

    /// Produces an event as the outbox relay does.
    pub async fn event(&self, envelope: &Envelope) -> anyhow::Result<()> {
        let (key, headers, value) = cloudevent(envelope);
        self.raw(Some(&key), &headers, &value).await
    }

    /// Produces any record (e.g. a poison one).
    pub async fn raw(&self, key: Option<&str>, headers: &[(String, String)], value: &[u8]) -> anyhow::Result<()> {
        let mut hs = OwnedHeaders::new();
        for (k, v) in headers {
            hs = hs.insert(Header { key: k, value: Some(v.as_bytes()) });
        }
        let mut record = FutureRecord::to(&self.topic).payload(value).headers(hs);
        if let Some(key) = key {
            record = record.key(key);
        }
        self.producer.send(record, Duration::from_secs(10)).await.map_err(|(e, _)| anyhow::anyhow!("produce: {e}"))?;
        Ok(())
    }
}

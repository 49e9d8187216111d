//! The envelope: an event together with where it belongs and where it came from.
//!
//! It maps 1:1 onto CloudEvents 1.0 so that a Kafka record follows the CloudEvents
//! Kafka protocol binding in binary mode: attributes as `ce_*` headers, the event
//! data as the JSON value, the article id as the record key.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{Event, StreamId};

/// CloudEvents `source` of every event this system writes.
pub const EVENT_SOURCE: &str = "urn:erp-stock:command-service";

/// Prefix of the CloudEvents `type`: `erp.stock.StockReceived`.
const TYPE_PREFIX: &str = "erp.stock.";

/// Namespace of event ids: an event id is a UUIDv5 of (command id, index), so a
/// retried command yields the same ids.
const EVENT_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6b1f_6c4e_2d0a_4c59_9e57_1a3f_4d8e_0b21);

/// The CloudEvents Auth Context principal types an actor can have. The
/// actor of an event is written `{authtype}:{authid}` (`api_key:scanner-7`,
/// `user:alice@example.com`), from the verified credential of the request.
pub const AUTH_TYPES: [&str; 7] = ["app_user", "user", "service_account", "api_key", "system", "unauthenticated", "unknown"];

/// The CloudEvents `authtype` of an actor: its prefix when that is one of
/// [`AUTH_TYPES`], else `unknown` (events written before authentication
/// carry whatever the client claimed).
pub fn auth_type(actor: &str) -> &str {
    match actor.split_once(':') {
        Some((kind, _)) if AUTH_TYPES.contains(&kind) => kind,
        _ => "unknown",
    }
}

/// The CloudEvents `authid` of an actor: what follows a known `authtype`
/// prefix, else the whole actor.
pub fn auth_id(actor: &str) -> &str {
    match actor.split_once(':') {
        Some((kind, id)) if AUTH_TYPES.contains(&kind) => id,
        _ => actor,
    }
}

/// Who sent a command and why; copied into every event it produces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandMeta {
    /// Unique per command; retries of the same command reuse it.
    pub command_id: Uuid,
    /// Groups everything caused by one business request, across services.
    pub correlation_id: String,
    /// The principal that sent the command, as `{authtype}:{authid}`
    /// ([`auth_type`], [`auth_id`]).
    pub actor: String,
    /// When the command was accepted.
    pub recorded_at: DateTime<Utc>,
    /// The W3C `traceparent` the events carry on: the trace the request
    /// belongs to, with the command-service's span as parent.
    pub traceparent: Option<String>,
}

/// An event with its identity, position and provenance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub event_id: Uuid,
    pub stream_id: StreamId,
    /// Position in the stream, from 1, without gaps.
    pub sequence: u64,
    pub schema_version: u32,
    /// Business time: when the movement counts in the books. May be backdated.
    pub posted_at: DateTime<Utc>,
    /// When the system accepted the event.
    pub recorded_at: DateTime<Utc>,
    pub correlation_id: String,
    /// The command that caused the event.
    pub causation_id: Uuid,
    pub actor: String,
    /// W3C `traceparent` of the request that caused it (CloudEvents distributed-tracing extension).
    pub traceparent: Option<String>,
    pub event: Event,
}

impl Envelope {
    /// Wraps the events one command produced on a stream at `version`. A
    /// movement's business time comes from the event; other events count from
    /// when they were recorded.
    pub fn wrap(stream_id: &StreamId, version: u64, meta: &CommandMeta, events: Vec<Event>) -> Vec<Envelope> {
        events
            .into_iter()
            .enumerate()
            .map(|(i, event)| Envelope {
                event_id: event_id(meta.command_id, i),
                stream_id: stream_id.clone(),
                sequence: version + 1 + i as u64,
                schema_version: event.schema_version(),
                posted_at: event.posted_at().unwrap_or(meta.recorded_at),
                recorded_at: meta.recorded_at,
                correlation_id: meta.correlation_id.clone(),
                causation_id: meta.command_id,
                actor: meta.actor.clone(),
                traceparent: meta.traceparent.clone(),
                event,
            })
            .collect()
    }

    /// The envelope as one self-describing JSON document (for storage and export).
    pub fn to_record(&self) -> RecordedEvent {
        RecordedEvent {
            event_id: self.event_id,
            stream_id: self.stream_id.clone(),
            sequence: self.sequence,
            event_type: self.event.event_type().to_owned(),
            schema_version: self.schema_version,
            posted_at: self.posted_at,
            recorded_at: self.recorded_at,
            correlation_id: self.correlation_id.clone(),
            causation_id: self.causation_id,
            actor: self.actor.clone(),
            traceparent: self.traceparent.clone(),
            data: self.event.data(),
        }
    }
}

/// The flat, serialisable form of an [`Envelope`]: how events are stored in
/// PostgreSQL and exported as NDJSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RecordedEvent {
    pub event_id: Uuid,
    pub stream_id: StreamId,
    pub sequence: u64,
    #[serde(rename = "type")]
    pub event_type: String,
    pub schema_version: u32,
    pub posted_at: DateTime<Utc>,
    pub recorded_at: DateTime<Utc>,
    pub correlation_id: String,
    pub causation_id: Uuid,
    pub actor: String,
    /// W3C `traceparent` of the request that caused it, when known
    /// (`ce_traceparent`, the CloudEvents distributed-tracing extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// The event's data; its schema is the one of `type` at `schema_version`.
    pub data: serde_json::Value,
}

impl RecordedEvent {
    /// The Kafka record key: the article id (the stream id without its kind), so
    /// one article's events stay in order on one partition.
    pub fn kafka_key(&self) -> &str {
        let s = self.stream_id.as_str();
        s.split_once(':').map_or(s, |(_, id)| id)
    }

    /// CloudEvents attributes as Kafka headers (binary content mode).
    pub fn cloudevents_headers(&self) -> Vec<(&'static str, String)> {
        let mut headers = vec![
            ("ce_specversion", "1.0".to_owned()),
            ("ce_id", self.event_id.to_string()),
            ("ce_source", EVENT_SOURCE.to_owned()),
            ("ce_type", format!("{TYPE_PREFIX}{}", self.event_type)),
            ("ce_subject", self.stream_id.to_string()),
            ("ce_time", rfc3339(self.posted_at)),
            ("content-type", "application/json".to_owned()),
            ("ce_schemaversion", self.schema_version.to_string()),
            ("ce_sequence", self.sequence.to_string()),
            ("ce_recordedtime", rfc3339(self.recorded_at)),
            ("ce_correlationid", self.correlation_id.clone()),
            ("ce_causationid", self.causation_id.to_string()),
            ("ce_actor", self.actor.clone()),
            ("ce_authtype", auth_type(&self.actor).to_owned()),
            ("ce_authid", auth_id(&self.actor).to_owned()),
        ];
        if let Some(traceparent) = &self.traceparent {
            headers.push(("ce_traceparent", traceparent.clone()));
        }
        headers
    }

    /// Reads an event back from CloudEvents headers and the JSON value. The data
    /// is not decoded here: [`RecordedEvent::into_envelope`] does that.
    pub fn from_cloudevent<S: AsRef<str> + Into<String>>(
        header: impl Fn(&str) -> Option<S>,
        value: &[u8],
    ) -> Result<RecordedEvent, EnvelopeError> {
        let data = serde_json::from_slice(value).map_err(EnvelopeError::BadJson)?;
        Ok(Attributes::read(header)?.with_data(data))
    }

    /// Reads a typed [`Envelope`] straight from CloudEvents headers and the
    /// JSON value: what [`RecordedEvent::from_cloudevent`] and
    /// [`RecordedEvent::into_envelope`] do together, in one pass over the
    /// data when it has the current schema version (the projector's hot path).
    pub fn envelope_from_cloudevent<S: AsRef<str> + Into<String>>(
        header: impl Fn(&str) -> Option<S>,
        value: &[u8],
    ) -> Result<Envelope, EnvelopeError> {
        let a = Attributes::read(header)?;
        let event = Event::decode_slice(&a.event_type, a.schema_version, value, a.posted_at)?;
        Ok(Envelope {
            schema_version: event.schema_version(),
            event,
            event_id: a.event_id,
            stream_id: a.stream_id,
            sequence: a.sequence,
            posted_at: a.posted_at,
            recorded_at: a.recorded_at,
            correlation_id: a.correlation_id,
            causation_id: a.causation_id,
            actor: a.actor,
            traceparent: a.traceparent,
        })
    }

    /// Decodes the data into a typed [`Envelope`], upcasting older schema versions.
    pub fn into_envelope(self) -> Result<Envelope, EnvelopeError> {
        let event = Event::decode(&self.event_type, self.schema_version, self.data, self.posted_at)?;
        Ok(Envelope {
            schema_version: event.schema_version(),
            event,
            event_id: self.event_id,
            stream_id: self.stream_id,
            sequence: self.sequence,
            posted_at: self.posted_at,
            recorded_at: self.recorded_at,
            correlation_id: self.correlation_id,
            causation_id: self.causation_id,
            actor: self.actor,
            traceparent: self.traceparent,
        })
    }
}

/// The CloudEvents attributes of a record, read from its headers.
struct Attributes {
    event_id: Uuid,
    stream_id: StreamId,
    sequence: u64,
    event_type: String,
    schema_version: u32,
    posted_at: DateTime<Utc>,
    recorded_at: DateTime<Utc>,
    correlation_id: String,
    causation_id: Uuid,
    actor: String,
    traceparent: Option<String>,
}

impl Attributes {
    /// Reads the attributes from the headers; `header` may lend its values
    /// (`&str`) or give them (`String`): only the ones kept as text are copied.
    fn read<S: AsRef<str> + Into<String>>(header: impl Fn(&str) -> Option<S>) -> Result<Self, EnvelopeError> {
        let get = |name: &'static str| header(name).ok_or(EnvelopeError::MissingHeader(name));
        let number = |name: &'static str| -> Result<u64, EnvelopeError> {
            get(name)?.as_ref().parse().map_err(|_| EnvelopeError::BadHeader(name))
        };
        let uuid = |name: &'static str| -> Result<Uuid, EnvelopeError> {
            get(name)?.as_ref().parse().map_err(|_| EnvelopeError::BadHeader(name))
        };
        let parse_time = |name: &'static str| -> Result<DateTime<Utc>, EnvelopeError> {
            DateTime::parse_from_rfc3339(get(name)?.as_ref())
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| EnvelopeError::BadHeader(name))
        };
        let full_type = get("ce_type")?;
        let event_type = full_type.as_ref().strip_prefix(TYPE_PREFIX).ok_or(EnvelopeError::BadHeader("ce_type"))?;
        Ok(Self {
            event_id: uuid("ce_id")?,
            stream_id: StreamId::from_stored(get("ce_subject")?.into()),
            sequence: number("ce_sequence")?,
            event_type: event_type.to_owned(),
            schema_version: u32::try_from(number("ce_schemaversion")?).map_err(|_| EnvelopeError::BadHeader("ce_schemaversion"))?,
            posted_at: parse_time("ce_time")?,
            recorded_at: parse_time("ce_recordedtime")?,
            correlation_id: get("ce_correlationid")?.into(),
            causation_id: uuid("ce_causationid")?,
            actor: get("ce_actor")?.into(),
            traceparent: header("ce_traceparent").map(Into::into),
        })
    }

    fn with_data(self, data: serde_json::Value) -> RecordedEvent {
        RecordedEvent {
            event_id: self.event_id,
            stream_id: self.stream_id,
            sequence: self.sequence,
            event_type: self.event_type,
            schema_version: self.schema_version,
            posted_at: self.posted_at,
            recorded_at: self.recorded_at,
            correlation_id: self.correlation_id,
            causation_id: self.causation_id,
            actor: self.actor,
            traceparent: self.traceparent,
            data,
        }
    }
}

/// Why a Kafka record or stored row is not a readable envelope.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error("header {0} is missing")]
    MissingHeader(&'static str),
    #[error("header {0} is malformed")]
    BadHeader(&'static str),
    #[error("value is not JSON: {0}")]
    BadJson(#[source] serde_json::Error),
    #[error(transparent)]
    Decode(#[from] crate::event::DecodeError),
}

fn event_id(command_id: Uuid, index: usize) -> Uuid {
    let mut name = [0u8; 24];
    name[..16].copy_from_slice(command_id.as_bytes());
    name[16..].copy_from_slice(&(index as u64).to_be_bytes());
    Uuid::new_v5(&EVENT_ID_NAMESPACE, &name)
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ArticleId, ChargeNo, Quantity, StockReceived, WarehouseId};

    fn sample() -> Vec<Envelope> {
        let article = ArticleId::parse("A1").unwrap();
        let meta = CommandMeta {
            command_id: Uuid::from_u128(42),
            correlation_id: "corr-1".into(),
            actor: "tester".into(),
            recorded_at: "2026-11-22T10:00:00.123456Z".parse().unwrap(),
            traceparent: None,
        };
        let event = Event::StockReceived(StockReceived {
            article: article.clone(),
            charge: ChargeNo::parse("C1").unwrap(),
            warehouse: WarehouseId::parse("W1").unwrap(),
            quantity: Quantity::new(3).unwrap(),
            posted_at: "2026-11-20T08:00:00Z".parse().unwrap(),
            balance_at_posting: 3,
            on_hand_after: 3,
        });
        Envelope::wrap(&StreamId::article(&article), 4, &meta, vec![event.clone(), event])
    }

    #[test]
    fn a_retried_command_yields_the_same_event_ids_and_consecutive_sequences() {
        let (a, b) = (sample(), sample());
        assert_eq!(a[0].event_id, b[0].event_id);
        assert_ne!(a[0].event_id, a[1].event_id);
        assert_eq!((a[0].sequence, a[1].sequence), (5, 6));
    }

    #[test]
    fn the_auth_context_comes_from_the_actor_and_old_actors_are_unknown() {
        assert_eq!((auth_type("api_key:scanner-7"), auth_id("api_key:scanner-7")), ("api_key", "scanner-7"));
        assert_eq!((auth_type("user:a:b@c"), auth_id("user:a:b@c")), ("user", "a:b@c"));
        // Written before authentication: whatever the client claimed.
        assert_eq!((auth_type("erp-frontend"), auth_id("erp-frontend")), ("unknown", "erp-frontend"));
        assert_eq!((auth_type("dept:x"), auth_id("dept:x")), ("unknown", "dept:x"));
        let mut env = sample().remove(0);
        env.actor = "api_key:scanner-7".into();
        let headers = env.to_record().cloudevents_headers();
        let get = |n: &str| headers.iter().find(|(k, _)| *k == n).map(|(_, v)| v.as_str());
        assert_eq!((get("ce_authtype"), get("ce_authid")), (Some("api_key"), Some("scanner-7")));
    }

    #[test]
    fn an_envelope_survives_the_cloudevents_binding() {
        let env = sample().remove(0);
        let record = env.to_record();
        let headers = record.cloudevents_headers();
        let value = serde_json::to_vec(&record.data).unwrap();
        let header = |name: &str| headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.clone());
        assert_eq!(header("ce_type").as_deref(), Some("erp.stock.StockReceived"));
        assert_eq!(header("ce_subject").as_deref(), Some("article:A1"));
        assert_eq!(record.kafka_key(), "A1");
        let back = RecordedEvent::from_cloudevent(header, &value).unwrap();
        assert_eq!(back.into_envelope().unwrap(), env);
    }

    #[test]
    fn the_one_pass_reading_of_a_record_equals_the_two_step_one() {
        for env in sample() {
            let record = env.to_record();
            let headers = record.cloudevents_headers();
            let value = serde_json::to_vec(&record.data).unwrap();
            let header = |name: &str| headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.clone());
            let direct = RecordedEvent::envelope_from_cloudevent(header, &value).unwrap();
            assert_eq!(direct, RecordedEvent::from_cloudevent(header, &value).unwrap().into_envelope().unwrap());
            assert!(RecordedEvent::envelope_from_cloudevent(header, b"{not json").is_err());
        }
    }

    #[test]
    fn a_movement_envelope_takes_its_business_time_from_the_event() {
        let env = sample().remove(0);
        assert_eq!(env.posted_at, "2026-11-20T08:00:00Z".parse::<DateTime<Utc>>().unwrap());
        assert_ne!(env.posted_at, env.recorded_at);
    }

    #[test]
    fn the_data_text_is_the_data_value() {
        for env in sample() {
            let text = env.event.data_json();
            assert_eq!(serde_json::from_str::<serde_json::Value>(&text).unwrap(), env.event.data());
        }
    }

    #[test]
    fn an_envelope_survives_its_stored_form() {
        let env = sample().remove(1);
        let json = serde_json::to_string(&env.to_record()).unwrap();
        let back: RecordedEvent = serde_json::from_str(&json).unwrap();
        assert_eq!(back.into_envelope().unwrap(), env);
    }
}

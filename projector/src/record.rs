//! A consumed Kafka record, kept raw (so that it can be parked and re-driven
//! later) together with what it decoded to.

use std::borrow::Cow;

use events::{Envelope, RecordedEvent};
use rdkafka::Message;

/// One record of the events topic.
#[derive(Debug, Clone)]
pub struct Incoming {
    pub partition: i32,
    pub offset: i64,
    /// The record's Kafka timestamp, for the lag in seconds.
    pub timestamp_ms: Option<i64>,
    /// The record key: the article id.
    pub key: Option<String>,
    /// Headers whose values are UTF-8 (the CloudEvents attributes).
    pub headers: Vec<(String, String)>,
    pub payload: Vec<u8>,
    /// The envelope, or why the record is not one.
    pub decoded: Result<Envelope, String>,
    /// Set when the record comes from the dead-letter table (re-drive).
    pub dead_letter_id: Option<i64>,
    /// Not decoded yet ([`Incoming::decode`] does it).
    pending: bool,
}

impl Incoming {
    /// Copies a consumed message; [`Incoming::decode`] decodes it (on the
    /// lane that applies it, so decoding runs on every core).
    pub fn from_message(m: &impl Message) -> Self {
        Self::undecoded(
            m.partition(),
            m.offset(),
            m.timestamp().to_millis(),
            m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
            platform::kafka::string_headers(m),
            m.payload().unwrap_or_default().to_vec(),
        )
    }

    /// A record from its parts, decoded.
    pub fn new(
        partition: i32,
        offset: i64,
        timestamp_ms: Option<i64>,
        key: Option<String>,
        headers: Vec<(String, String)>,
        payload: Vec<u8>,
    ) -> Self {
        let mut record = Self::undecoded(partition, offset, timestamp_ms, key, headers, payload);
        record.decode();
        record
    }

    /// A record from its parts, to be decoded with [`Incoming::decode`].
    /// Until then it is known by its headers and key only.
    pub fn undecoded(
        partition: i32,
        offset: i64,
        timestamp_ms: Option<i64>,
        key: Option<String>,
        headers: Vec<(String, String)>,
        payload: Vec<u8>,
    ) -> Self {
        let decoded = Err("not decoded yet".to_owned());
        Self { partition, offset, timestamp_ms, key, headers, payload, decoded, dead_letter_id: None, pending: true }
    }

    /// Whether [`Incoming::decode`] ran.
    pub fn is_decoded(&self) -> bool {
        !self.pending
    }

    /// Decodes the record, once.
    pub fn decode(&mut self) {
        if !self.pending {
            return;
        }
        let headers = &self.headers;
        let header = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        self.decoded = RecordedEvent::envelope_from_cloudevent(header, &self.payload).map_err(|e| e.to_string());
        self.pending = false;
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// The stream the record belongs to: from the envelope, else from its
    /// `ce_subject` header, else from its key (the article id).
    pub fn stream(&self) -> Option<Cow<'_, str>> {
        match &self.decoded {
            Ok(e) => Some(Cow::Borrowed(e.stream_id.as_str())),
            Err(_) => self
                .header("ce_subject")
                .map(Cow::Borrowed)
                .or_else(|| self.key.as_ref().filter(|k| !k.is_empty()).map(|k| Cow::Owned(format!("article:{k}")))),
        }
    }

    /// The record's position in its stream, when it can be read.
    pub fn sequence(&self) -> Option<u64> {
        match &self.decoded {
            Ok(e) => Some(e.sequence),
            Err(_) => self.header("ce_sequence")?.parse().ok(),
        }
    }

    /// The event type, when it can be read.
    pub fn event_type(&self) -> Option<String> {
        match &self.decoded {
            Ok(e) => Some(e.event.event_type().to_owned()),
            Err(_) => self.header("ce_type").map(|t| t.trim_start_matches("erp.stock.").to_owned()),
        }
    }
}

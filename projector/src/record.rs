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
    pub headers: Headers,
    pub payload: Vec<u8>,
    /// The envelope, or why the record is not one. Boxed: records are moved
    /// around in batches of tens of thousands.
    pub decoded: Result<Box<Envelope>, String>,
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
            Headers::of_message(m),
            m.payload().unwrap_or_default().to_vec(),
        )
    }

    /// A record from its parts, decoded.
    pub fn new(
        partition: i32,
        offset: i64,
        timestamp_ms: Option<i64>,
        key: Option<String>,
        headers: impl Into<Headers>,
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
        headers: impl Into<Headers>,
        payload: Vec<u8>,
    ) -> Self {
        let decoded = Err("not decoded yet".to_owned());
        let headers = headers.into();
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
        // One pass over the headers, then each attribute by its slot.
        let mut slots: [Option<&str>; ATTRIBUTES] = [None; ATTRIBUTES];
        for (name, value) in self.headers.iter() {
            if let Some(i) = attribute_slot(name) {
                slots[i].get_or_insert(value);
            }
        }
        let header = |name: &str| attribute_slot(name).and_then(|i| slots[i]);
        self.decoded =
            RecordedEvent::envelope_from_cloudevent(header, &self.payload).map(Box::new).map_err(|e| e.to_string());
        self.pending = false;
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)
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

/// How many CloudEvents attributes an envelope is read from ([`attribute_slot`]).
const ATTRIBUTES: usize = 10;

/// The slot of a CloudEvents attribute an envelope is read from.
fn attribute_slot(name: &str) -> Option<usize> {
    Some(match name {
        "ce_id" => 0,
        "ce_subject" => 1,
        "ce_sequence" => 2,
        "ce_type" => 3,
        "ce_schemaversion" => 4,
        "ce_time" => 5,
        "ce_recordedtime" => 6,
        "ce_correlationid" => 7,
        "ce_causationid" => 8,
        "ce_actor" => 9,
        _ => return None,
    })
}

/// A record's headers in one allocation: names and values one after the
/// other in one string, and where each ends. Thirteen CloudEvents headers as
/// separate strings were 26 allocations and about twice the memory per
/// record, and a catch-up batch holds tens of thousands of records.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers {
    text: String,
    /// Per header: where its name ends and where its value ends in `text`.
    ends: Vec<(u32, u32)>,
}

impl Headers {
    /// The UTF-8 headers of a Kafka message (others are left out).
    pub fn of_message(message: &impl Message) -> Self {
        use rdkafka::message::Headers as _;
        let mut headers = Headers::default();
        if let Some(hs) = message.headers() {
            let bytes = hs.iter().map(|h| h.key.len() + h.value.map_or(0, <[u8]>::len)).sum();
            headers.reserve(bytes, hs.count());
            for h in hs.iter() {
                if let Some(value) = h.value.and_then(|v| std::str::from_utf8(v).ok()) {
                    headers.push(h.key, value);
                }
            }
        }
        headers
    }

    fn reserve(&mut self, bytes: usize, headers: usize) {
        self.text.reserve_exact(bytes);
        self.ends.reserve_exact(headers);
    }

    pub fn push(&mut self, name: &str, value: &str) {
        self.text.push_str(name);
        let name_end = self.text.len() as u32;
        self.text.push_str(value);
        self.ends.push((name_end, self.text.len() as u32));
    }

    /// The headers in order, as (name, value).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        let mut start = 0;
        self.ends.iter().map(move |&(name_end, end)| {
            let pair = (&self.text[start..name_end as usize], &self.text[name_end as usize..end as usize]);
            start = end as usize;
            pair
        })
    }

    /// The value of the first header named `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.iter().find(|(k, _)| *k == name).map(|(_, v)| v)
    }
}

impl From<Vec<(String, String)>> for Headers {
    fn from(pairs: Vec<(String, String)>) -> Self {
        Headers::from(pairs.as_slice())
    }
}

impl From<&[(String, String)]> for Headers {
    fn from(pairs: &[(String, String)]) -> Self {
        let mut headers = Headers::default();
        headers.reserve(pairs.iter().map(|(k, v)| k.len() + v.len()).sum(), pairs.len());
        for (k, v) in pairs {
            headers.push(k, v);
        }
        headers
    }
}

/// As a list of `[name, value]` pairs (how dead letters store them).
impl serde::Serialize for Headers {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::Headers;

    #[test]
    fn headers_keep_their_names_values_and_order() {
        let headers = Headers::from(vec![("ce_id".to_owned(), "1".to_owned()), ("ce_type".to_owned(), "".to_owned()), ("x".to_owned(), "ü".to_owned())]);
        assert_eq!(headers.iter().collect::<Vec<_>>(), vec![("ce_id", "1"), ("ce_type", ""), ("x", "ü")]);
        assert_eq!(headers.get("x"), Some("ü"));
        assert_eq!(headers.get("ce_type"), Some(""));
        assert_eq!(headers.get("missing"), None);
        assert_eq!(serde_json::to_string(&headers).unwrap(), r#"[["ce_id","1"],["ce_type",""],["x","ü"]]"#);
    }
}

//! What happened. Events are the public contract on the events topic: each has a
//! stable type name and schema version, and carries what the read side needs so
//! that projections never look anything up.

use serde::{Deserialize, Serialize};

use crate::{ArticleId, ChargeNo, Quantity, WarehouseId};

/// Every event of the domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    StockReceived(StockReceived),
}

/// A receipt was posted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockReceived {
    pub article: ArticleId,
    pub charge: ChargeNo,
    pub warehouse: WarehouseId,
    pub quantity: Quantity,
    /// On-hand quantity of this charge in this warehouse after the receipt.
    pub on_hand_after: i64,
}

/// Why stored bytes are not an event this code understands.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("unknown event type {0:?}")]
    UnknownType(String),
    #[error("unsupported schema version {version} of {event_type}")]
    UnknownVersion { event_type: String, version: u32 },
    #[error("malformed {event_type} data: {source}")]
    Malformed {
        event_type: String,
        #[source]
        source: serde_json::Error,
    },
}

impl Event {
    /// The current schema version written for every event type.
    pub const SCHEMA_VERSION: u32 = 1;

    /// Stable type name, as in the envelope and the CloudEvents `type`.
    pub fn event_type(&self) -> &'static str {
        match self {
            Event::StockReceived(_) => "StockReceived",
        }
    }

    /// The event's data as JSON, without envelope.
    pub fn data(&self) -> serde_json::Value {
        let value = match self {
            Event::StockReceived(e) => serde_json::to_value(e),
        };
        value.expect("events serialise to JSON")
    }

    /// Reads an event back from its type, schema version and data.
    pub fn decode(event_type: &str, version: u32, data: serde_json::Value) -> Result<Self, DecodeError> {
        if version != Self::SCHEMA_VERSION {
            return Err(DecodeError::UnknownVersion { event_type: event_type.to_owned(), version });
        }
        let malformed = |source| DecodeError::Malformed { event_type: event_type.to_owned(), source };
        match event_type {
            "StockReceived" => serde_json::from_value(data).map(Event::StockReceived).map_err(malformed),
            other => Err(DecodeError::UnknownType(other.to_owned())),
        }
    }

    /// The article the event belongs to; its stream and its Kafka record key.
    pub fn article(&self) -> &ArticleId {
        match self {
            Event::StockReceived(e) => &e.article,
        }
    }
}

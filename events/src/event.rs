//! What happened. Events are the public contract on the events topic: each has
//! a stable type name and its own schema version, and carries what the read
//! side needs, so projections never look anything up elsewhere.
//!
//! Movement events carry the quantity moved (`quantity`, or `delta` for
//! counts), the business time (`posted_at`), the balance of the charge in the
//! warehouse right after the movement *at its posting time*
//! (`balance_at_posting`, ERPNext's `qty_after_transaction`) and the current
//! on-hand balance after it (`on_hand_after`). The two differ only for
//! backdated movements, whose later balances shift by the movement.

use chrono::{DateTime, NaiveDate, Utc};
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::{
    ArticleId, ArticleName, Category, ChargeNo, Measurement, QualityStatus, Quantity, ReservationId, Text, Unit,
    WarehouseId,
};

/// Every event of the domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    ArticleRegistered(ArticleRegistered),
    ArticleRenamed(ArticleRenamed),
    ArticleCategoryChanged(ArticleCategoryChanged),
    ReorderPointChanged(ReorderPointChanged),
    ArticleDiscontinued(ArticleDiscontinued),
    ChargeRegistered(ChargeRegistered),
    QualityResultRecorded(QualityResultRecorded),
    ChargeBlocked(ChargeBlocked),
    ChargeReleased(ChargeReleased),
    StockReceived(StockReceived),
    StockIssued(StockIssued),
    StockTransferred(StockTransferred),
    InventoryCounted(InventoryCounted),
    StockReserved(StockReserved),
    ReservationReleased(ReservationReleased),
    ReservationConsumed(ReservationConsumed),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ArticleRegistered {
    pub article: ArticleId,
    pub name: ArticleName,
    pub category: Category,
    pub unit: Unit,
    pub reorder_point: Option<Quantity>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ArticleRenamed {
    pub article: ArticleId,
    pub name: ArticleName,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ArticleCategoryChanged {
    pub article: ArticleId,
    pub from: Category,
    pub to: Category,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReorderPointChanged {
    pub article: ArticleId,
    pub reorder_point: Option<Quantity>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ArticleDiscontinued {
    pub article: ArticleId,
}

/// A charge was registered; carries the article's category for the
/// charges-per-category model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ChargeRegistered {
    pub article: ArticleId,
    pub category: Category,
    pub charge: ChargeNo,
    pub production_date: NaiveDate,
    pub expiry_date: Option<NaiveDate>,
    pub quality_status: QualityStatus,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QualityResultRecorded {
    pub article: ArticleId,
    pub category: Category,
    pub charge: ChargeNo,
    pub measurements: Vec<Measurement>,
    /// The charge's quality status after this analysis.
    pub quality_status: QualityStatus,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ChargeBlocked {
    pub article: ArticleId,
    pub category: Category,
    pub charge: ChargeNo,
    pub reason: Text,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ChargeReleased {
    pub article: ArticleId,
    pub category: Category,
    pub charge: ChargeNo,
}

/// Goods were received. Schema version 2; version 1 lacked `posted_at` and
/// `balance_at_posting` (see [`Event::decode`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StockReceived {
    pub article: ArticleId,
    pub charge: ChargeNo,
    pub warehouse: WarehouseId,
    pub quantity: Quantity,
    pub posted_at: DateTime<Utc>,
    pub balance_at_posting: i64,
    pub on_hand_after: i64,
}

/// Goods were issued, directly or by consuming a reservation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StockIssued {
    pub article: ArticleId,
    pub charge: ChargeNo,
    pub warehouse: WarehouseId,
    pub quantity: Quantity,
    pub posted_at: DateTime<Utc>,
    pub balance_at_posting: i64,
    pub on_hand_after: i64,
    /// The reservation consumed, when the issue came from one.
    pub reservation: Option<ReservationId>,
}

/// Goods moved between two warehouses, both sides in one event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StockTransferred {
    pub article: ArticleId,
    pub charge: ChargeNo,
    pub from: WarehouseId,
    pub to: WarehouseId,
    pub quantity: Quantity,
    pub posted_at: DateTime<Utc>,
    pub from_balance_at_posting: i64,
    pub from_on_hand_after: i64,
    pub to_balance_at_posting: i64,
    pub to_on_hand_after: i64,
}

/// A physical count; `delta` is what it changed (counted − balance before, at
/// the posting time).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InventoryCounted {
    pub article: ArticleId,
    pub charge: ChargeNo,
    pub warehouse: WarehouseId,
    pub counted: i64,
    pub delta: i64,
    pub posted_at: DateTime<Utc>,
    pub on_hand_after: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StockReserved {
    pub article: ArticleId,
    pub reservation: ReservationId,
    pub charge: ChargeNo,
    pub warehouse: WarehouseId,
    pub reference: Text,
    pub quantity: Quantity,
    /// Reserved quantity of the charge in the warehouse after this.
    pub reserved_after: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReservationReleased {
    pub article: ArticleId,
    pub reservation: ReservationId,
    pub charge: ChargeNo,
    pub warehouse: WarehouseId,
    pub quantity: Quantity,
    /// What the reservation still holds; 0 closes it.
    pub remaining: i64,
    pub reserved_after: i64,
}

/// Part of a reservation was consumed; always followed by the [`StockIssued`]
/// of the same quantity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReservationConsumed {
    pub article: ArticleId,
    pub reservation: ReservationId,
    pub charge: ChargeNo,
    pub warehouse: WarehouseId,
    pub quantity: Quantity,
    pub remaining: i64,
    pub reserved_after: i64,
}

/// Why stored data is not an event this code understands.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("unknown event type {0:?}")]
    UnknownType(String),
    #[error("unsupported schema version {version} of {event_type} (this code reads up to {current})")]
    UnknownVersion { event_type: String, version: u32, current: u32 },
    #[error("malformed {event_type} data: {source}")]
    Malformed {
        event_type: String,
        #[source]
        source: serde_json::Error,
    },
}

/// Calls `$m!(Variant)` ... for the list of every event type with its current schema version.
macro_rules! for_each_event {
    ($m:ident) => {
        $m! {
            ArticleRegistered 1,
            ArticleRenamed 1,
            ArticleCategoryChanged 1,
            ReorderPointChanged 1,
            ArticleDiscontinued 1,
            ChargeRegistered 1,
            QualityResultRecorded 1,
            ChargeBlocked 1,
            ChargeReleased 1,
            StockReceived 2,
            StockIssued 1,
            StockTransferred 1,
            InventoryCounted 1,
            StockReserved 1,
            ReservationReleased 1,
            ReservationConsumed 1,
        }
    };
}

macro_rules! event_impls {
    ($($variant:ident $version:literal),* $(,)?) => {
        impl Event {
            /// Every event type name.
            pub const TYPES: &'static [&'static str] = &[$(stringify!($variant)),*];

            /// Stable type name, as in the envelope and the CloudEvents `type`.
            pub fn event_type(&self) -> &'static str {
                match self {
                    $(Event::$variant(_) => stringify!($variant),)*
                }
            }

            /// The schema version this code writes for the event's type.
            pub fn schema_version(&self) -> u32 {
                match self {
                    $(Event::$variant(_) => $version,)*
                }
            }

            /// The event's data as JSON, without envelope.
            pub fn data(&self) -> serde_json::Value {
                match self {
                    $(Event::$variant(e) => serde_json::to_value(e),)*
                }
                .expect("events serialise to JSON")
            }

            /// The event's data as JSON text, without envelope: what
            /// [`Self::data`] holds, written directly (the event store keeps
            /// this text; no intermediate value is built).
            pub fn data_json(&self) -> String {
                match self {
                    $(Event::$variant(e) => serde_json::to_string(e),)*
                }
                .expect("events serialise to JSON")
            }

            /// The article the event belongs to: its stream and its Kafka key.
            pub fn article(&self) -> &ArticleId {
                match self {
                    $(Event::$variant(e) => &e.article,)*
                }
            }

            /// Every event type with its current schema version and JSON Schema.
            pub fn schemas() -> Vec<(&'static str, u32, schemars::Schema)> {
                vec![$((stringify!($variant), $version, schemars::schema_for!($variant)),)*]
            }

            fn decode_current(event_type: &str, data: serde_json::Value) -> Result<Self, DecodeError> {
                match event_type {
                    $(stringify!($variant) => parse(event_type, data).map(Event::$variant),)*
                    other => Err(DecodeError::UnknownType(other.to_owned())),
                }
            }

            fn decode_current_slice(event_type: &str, data: &[u8]) -> Result<Self, DecodeError> {
                let malformed = |source| DecodeError::Malformed { event_type: event_type.to_owned(), source };
                match event_type {
                    $(stringify!($variant) => serde_json::from_slice(data).map(Event::$variant).map_err(malformed),)*
                    other => Err(DecodeError::UnknownType(other.to_owned())),
                }
            }

            fn current_version(event_type: &str) -> Option<u32> {
                match event_type {
                    $(stringify!($variant) => Some($version),)*
                    _ => None,
                }
            }
        }
    };
}

for_each_event!(event_impls);

fn parse<T: DeserializeOwned>(event_type: &str, data: serde_json::Value) -> Result<T, DecodeError> {
    serde_json::from_value(data).map_err(|source| DecodeError::Malformed { event_type: event_type.to_owned(), source })
}

impl Event {
    /// The warehouses the event changes stock or reservations in (both
    /// sides of a transfer); none for article and charge master data.
    pub fn warehouses(&self) -> impl Iterator<Item = &WarehouseId> {
        let (first, second) = match self {
            Event::StockReceived(e) => (Some(&e.warehouse), None),
            Event::StockIssued(e) => (Some(&e.warehouse), None),
            Event::StockTransferred(e) => (Some(&e.from), Some(&e.to)),
            Event::InventoryCounted(e) => (Some(&e.warehouse), None),
            Event::StockReserved(e) => (Some(&e.warehouse), None),
            Event::ReservationReleased(e) => (Some(&e.warehouse), None),
            Event::ReservationConsumed(e) => (Some(&e.warehouse), None),
            _ => (None, None),
        };
        first.into_iter().chain(second)
    }

    /// The business time of a stock movement; `None` for other events.
    pub fn posted_at(&self) -> Option<DateTime<Utc>> {
        match self {
            Event::StockReceived(e) => Some(e.posted_at),
            Event::StockIssued(e) => Some(e.posted_at),
            Event::StockTransferred(e) => Some(e.posted_at),
            Event::InventoryCounted(e) => Some(e.posted_at),
            _ => None,
        }
    }

    /// [`Event::decode`] from the data's JSON bytes: an event of the current
    /// schema version is read straight into its type (one pass, no
    /// intermediate JSON tree); an older one goes through the upcaster.
    pub fn decode_slice(event_type: &str, version: u32, data: &[u8], posted_at: DateTime<Utc>) -> Result<Self, DecodeError> {
        if Self::current_version(event_type) == Some(version) {
            return Self::decode_current_slice(event_type, data);
        }
        let value = serde_json::from_slice(data)
            .map_err(|source| DecodeError::Malformed { event_type: event_type.to_owned(), source })?;
        Self::decode(event_type, version, value, posted_at)
    }

    /// Reads an event back from its type, schema version and data, upcasting
    /// older versions to the current one. `posted_at` is the envelope's business
    /// time, which older versions kept only there.
    pub fn decode(
        event_type: &str,
        version: u32,
        mut data: serde_json::Value,
        posted_at: DateTime<Utc>,
    ) -> Result<Self, DecodeError> {
        let current = Self::current_version(event_type).ok_or_else(|| DecodeError::UnknownType(event_type.to_owned()))?;
        if version == 0 || version > current {
            return Err(DecodeError::UnknownVersion { event_type: event_type.to_owned(), version, current });
        }
        if let ("StockReceived", 1) = (event_type, version) {
            // v1 → v2: the posting time moved into the data; there was no
            // backdating, so the balance at posting was the balance after.
            if let Some(fields) = data.as_object_mut() {
                fields.insert("posted_at".into(), serde_json::to_value(posted_at).expect("a time serialises"));
                let after = fields.get("on_hand_after").cloned().unwrap_or_default();
                fields.insert("balance_at_posting".into(), after);
            }
        }
        Self::decode_current(event_type, data)
    }
}

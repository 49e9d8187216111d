//! Which events an analyst asked for: by article, charge, warehouse, type,
//! and by recording time, exactly at the boundaries.

use chrono::{DateTime, Utc};
use events::RecordedEvent;

/// Every condition is optional; an empty list accepts everything.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub articles: Vec<String>,
    pub charges: Vec<String>,
    pub warehouses: Vec<String>,
    /// Event types without prefix, e.g. `StockReceived`.
    pub types: Vec<String>,
    /// Recorded at or after this time (inclusive).
    pub since: Option<DateTime<Utc>>,
    /// Recorded at or before this time (inclusive).
    pub until: Option<DateTime<Utc>>,
}

impl Filter {
    pub fn matches(&self, e: &RecordedEvent) -> bool {
        let field = |name: &str| e.data.get(name).and_then(|v| v.as_str());
        let any = |list: &[String], values: &[Option<&str>]| {
            list.is_empty() || values.iter().flatten().any(|v| list.iter().any(|wanted| wanted == v))
        };
        any(&self.articles, &[Some(e.kafka_key())])
            && any(&self.charges, &[field("charge")])
            && any(&self.warehouses, &[field("warehouse"), field("from"), field("to")])
            && any(&self.types, &[Some(e.event_type.as_str())])
            && self.since.is_none_or(|t| e.recorded_at >= t)
            && self.until.is_none_or(|t| e.recorded_at <= t)
    }
}

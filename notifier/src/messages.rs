//! What is delivered: every stock event as it is on the topic, and business
//! alerts derived from the events by folding them into a little state per
//! article and charge ([`Level`], [`ChargeLevel`]). Pure: the intake loads the
//! state, folds a batch and stores it again in one transaction.
//!
//! Every message is a CloudEvents 1.0 document in structured mode, so a
//! receiver can read it with its CloudEvents library.

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use events::{Envelope, Event, QualityStatus};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::subscriptions::Subscription;

/// CloudEvents `source` of the alerts this service derives.
pub const ALERT_SOURCE: &str = "urn:erp-stock:notifier";

/// Prefix of an alert's CloudEvents `type`: `erp.stock.alert.below_reorder_point`.
pub const ALERT_TYPE_PREFIX: &str = "erp.stock.alert.";

/// Namespace of the alerts' ids: an alert's id is a UUIDv5 of what caused it,
/// so the same cause always yields the same `webhook-id`.
const ALERT_ID_NAMESPACE: Uuid = Uuid::from_u128(0x3c5e_91a2_7b44_4f0d_8a61_0e2b_9d17_c4f3);

/// The business alerts a subscription can ask for.
pub const ALERTS: [&str; 8] = [
    "below_reorder_point",
    "above_reorder_point",
    "charge_blocked",
    "charge_released",
    "quality_rejected",
    "charge_expiring",
    "job_finished",
    "job_dead",
];

/// An article as the alerts see it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Level {
    pub category: String,
    pub reorder_point: Option<i64>,
    pub discontinued: bool,
    pub on_hand: i64,
    pub reserved: i64,
    /// Available stock below the reorder point (as `GET /low-stock` has it).
    pub low: bool,
}

impl Level {
    fn is_low(&self) -> bool {
        !self.discontinued && self.reorder_point.is_some_and(|r| self.on_hand - self.reserved < r)
    }
}

/// A charge as the expiry check sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChargeLevel {
    pub expiry_date: Option<NaiveDate>,
    pub on_hand: i64,
}

/// A message to be delivered to the subscriptions it matches.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// The `webhook-id`.
    pub id: Uuid,
    /// A stock event's type name (`StockReceived`) or an alert's name.
    pub name: String,
    pub is_alert: bool,
    /// What the filters look at.
    pub article: Option<String>,
    pub category: Option<String>,
    pub warehouses: Vec<String>,
    /// Deliveries with the same key reach an endpoint in order.
    pub ordering_key: String,
    /// When it happened (subscriptions receive what happened after they were made).
    pub at: DateTime<Utc>,
    pub payload: Value,
    /// The W3C `traceparent` of what caused it; its delivery continues that trace.
    pub traceparent: Option<String>,
}

/// What an event does to one of the article's charges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChargeChange {
    Registered(Option<NaiveDate>),
    Moved(i64),
}

impl ChargeLevel {
    pub fn apply(&mut self, change: ChargeChange) {
        match change {
            ChargeChange::Registered(expiry) => self.expiry_date = expiry,
            ChargeChange::Moved(delta) => self.on_hand += delta,
        }
    }
}

/// Folds one event into the article's state; returns the messages it
/// gives (the event, and any alert it raised) and what it does to a charge.
pub fn fold(envelope: &Envelope, level: &mut Level) -> (Vec<Message>, Option<(String, ChargeChange)>) {
    let event = &envelope.event;
    let article = event.article().to_string();
    let mut charge = None;
    match event {
        Event::ArticleRegistered(e) => {
            level.category = e.category.to_string();
            level.reorder_point = e.reorder_point.map(|q| q.get());
        }
        Event::ArticleCategoryChanged(e) => level.category = e.to.to_string(),
        Event::ReorderPointChanged(e) => level.reorder_point = e.reorder_point.map(|q| q.get()),
        Event::ArticleDiscontinued(_) => level.discontinued = true,
        Event::ChargeRegistered(e) => charge = Some((e.charge.to_string(), ChargeChange::Registered(e.expiry_date))),
        Event::StockReceived(e) => {
            level.on_hand += e.quantity.get();
            charge = Some((e.charge.to_string(), ChargeChange::Moved(e.quantity.get())));
        }
        Event::StockIssued(e) => {
            level.on_hand -= e.quantity.get();
            charge = Some((e.charge.to_string(), ChargeChange::Moved(-e.quantity.get())));
        }
        Event::InventoryCounted(e) => {
            level.on_hand += e.delta;
            charge = Some((e.charge.to_string(), ChargeChange::Moved(e.delta)));
        }
        Event::StockReserved(e) => level.reserved += e.quantity.get(),
        Event::ReservationReleased(e) => level.reserved -= e.quantity.get(),
        Event::ReservationConsumed(e) => level.reserved -= e.quantity.get(),
        Event::ArticleRenamed(_)
        | Event::QualityResultRecorded(_)
        | Event::ChargeBlocked(_)
        | Event::ChargeReleased(_)
        | Event::StockTransferred(_) => {}
    }
    let mut out = vec![event_message(envelope, &article, level)];
    let cause = envelope.event_id;
    let alert = |name: &str, level: &Level, data: Value| alert_message(name, &article, level, envelope, data);
    let low = level.is_low();
    // A consumed reservation is always followed by the issue of the same
    // quantity: judged after both, or available stock would seem to rise
    // for one event.
    let settled = !matches!(event, Event::ReservationConsumed(_));
    if settled && low != level.low {
        level.low = low;
        // Discontinuing an article or dropping its reorder point ends "low" without stock rising.
        let ended_quietly = !low && (level.discontinued || level.reorder_point.is_none());
        if !ended_quietly {
            let data = json!({
                "article": article,
                "category": level.category,
                "reorder_point": level.reorder_point,
                "on_hand": level.on_hand,
                "reserved": level.reserved,
                "available": level.on_hand - level.reserved,
                "caused_by": cause,
            });
            out.push(alert(if low { "below_reorder_point" } else { "above_reorder_point" }, level, data));
        }
    }
    let raised = match event {
        Event::ChargeBlocked(e) => {
            Some(("charge_blocked", json!({"article": article, "charge": e.charge, "reason": e.reason, "caused_by": cause})))
        }
        Event::ChargeReleased(e) => Some(("charge_released", json!({"article": article, "charge": e.charge, "caused_by": cause}))),
        Event::QualityResultRecorded(e) if e.quality_status == QualityStatus::Rejected => Some((
            "quality_rejected",
            json!({"article": article, "charge": e.charge, "measurements": e.measurements, "caused_by": cause}),
        )),
        _ => None,
    };
    if let Some((name, data)) = raised {
        out.push(alert(name, level, data));
    }
    (out, charge)
}

/// The stock event itself, as a CloudEvent in structured mode: the
/// attributes the topic carries as `ce_*` headers, and the data.
fn event_message(envelope: &Envelope, article: &str, level: &Level) -> Message {
    let record = envelope.to_record();
    let mut doc = Map::new();
    for (name, value) in record.cloudevents_headers() {
        // The attributes; `content-type` becomes `datacontenttype` below.
        let Some(name) = name.strip_prefix("ce_") else { continue };
        let value = match name {
            // Integers in the CloudEvents type system.
            "sequence" | "schemaversion" => value.parse::<u64>().map(Value::from).unwrap_or(Value::String(value)),
            _ => Value::String(value),
        };
        doc.insert(name.to_owned(), value);
    }
    doc.insert("datacontenttype".into(), "application/json".into());
    doc.insert("data".into(), record.data);
    Message {
        id: envelope.event_id,
        name: envelope.event.event_type().to_owned(),
        is_alert: false,
        article: Some(article.to_owned()),
        category: (!level.category.is_empty()).then(|| level.category.clone()),
        warehouses: warehouses(&envelope.event),
        ordering_key: article.to_owned(),
        at: envelope.recorded_at,
        payload: Value::Object(doc),
        traceparent: envelope.traceparent.clone(),
    }
}

/// An alert about an article (or one of its charges), raised by the event `cause`.
fn alert_message(name: &str, article: &str, level: &Level, cause: &Envelope, data: Value) -> Message {
    let id = alert_id(&format!("{name}:{}", cause.event_id));
    Message {
        article: Some(article.to_owned()),
        category: (!level.category.is_empty()).then(|| level.category.clone()),
        traceparent: cause.traceparent.clone(),
        ..alert(id, name, &format!("article:{article}"), article, cause.recorded_at, data)
    }
}

/// A charge that expires soon (from the periodic check `period`).
pub fn expiring(article: &str, category: &str, charge: &str, expiry: NaiveDate, on_hand: i64, period: i64, now: DateTime<Utc>) -> Message {
    let id = alert_id(&format!("charge_expiring:{article}:{charge}:{period}"));
    let days = (expiry - now.date_naive()).num_days();
    let data = json!({"article": article, "category": category, "charge": charge, "expiry_date": expiry, "days_left": days, "on_hand": on_hand});
    Message {
        article: Some(article.to_owned()),
        category: Some(category.to_owned()),
        ..alert(id, "charge_expiring", &format!("article:{article}"), article, now, data)
    }
}

/// A job that finished or went dead (from the jobs' notification inbox).
pub fn job(id: Uuid, name: &str, subject: &str, data: Value, at: DateTime<Utc>, traceparent: Option<String>) -> Message {
    Message { traceparent, ..alert(id, name, subject, subject, at, data) }
}

/// An alert that names no article, category or warehouse (callers add what applies).
fn alert(id: Uuid, name: &str, subject: &str, ordering_key: &str, at: DateTime<Utc>, data: Value) -> Message {
    Message {
        id,
        name: name.to_owned(),
        is_alert: true,
        article: None,
        category: None,
        warehouses: Vec::new(),
        ordering_key: ordering_key.to_owned(),
        at,
        payload: alert_document(id, name, subject, at, data),
        traceparent: None,
    }
}

fn alert_document(id: Uuid, name: &str, subject: &str, at: DateTime<Utc>, data: Value) -> Value {
    json!({
        "specversion": "1.0",
        "id": id,
        "source": ALERT_SOURCE,
        "type": format!("{ALERT_TYPE_PREFIX}{name}"),
        "subject": subject,
        "time": at.to_rfc3339_opts(SecondsFormat::Micros, true),
        "datacontenttype": "application/json",
        "data": data,
    })
}

fn alert_id(cause: &str) -> Uuid {
    Uuid::new_v5(&ALERT_ID_NAMESPACE, cause.as_bytes())
}

/// The warehouses an event names.
fn warehouses(event: &Event) -> Vec<String> {
    match event {
        Event::StockReceived(e) => vec![e.warehouse.to_string()],
        Event::StockIssued(e) => vec![e.warehouse.to_string()],
        Event::InventoryCounted(e) => vec![e.warehouse.to_string()],
        Event::StockReserved(e) => vec![e.warehouse.to_string()],
        Event::ReservationReleased(e) => vec![e.warehouse.to_string()],
        Event::ReservationConsumed(e) => vec![e.warehouse.to_string()],
        Event::StockTransferred(e) => vec![e.from.to_string(), e.to.to_string()],
        _ => Vec::new(),
    }
}

impl Subscription {
    /// Whether the subscription receives `m`: it asked for its kind, every
    /// filter that applies to it lets it through (a filter applies to a
    /// message that names an article, a category, warehouses), and it
    /// happened after the subscription was made.
    pub fn wants(&self, m: &Message) -> bool {
        let kind = if m.is_alert {
            self.alerts.contains(&m.name)
        } else {
            self.event_types.iter().any(|t| t == "*" || *t == m.name)
        };
        let any_of = |filter: &[String], value: &Option<String>| {
            filter.is_empty() || value.as_ref().is_none_or(|v| filter.contains(v))
        };
        let warehouse = self.warehouses.is_empty() || m.warehouses.is_empty() || m.warehouses.iter().any(|w| self.warehouses.contains(w));
        kind && m.at >= self.created_at && any_of(&self.articles, &m.article) && any_of(&self.categories, &m.category) && warehouse
    }
}

#[cfg(test)]
mod tests {
    use testkit::commands as c;
    use testkit::events::Streams;

    use super::*;

    fn messages(commands: Vec<events::Command>) -> Vec<(String, Value)> {
        let mut streams = Streams::default();
        let mut level = Level::default();
        let mut out = Vec::new();
        for command in commands {
            for envelope in streams.decide(command, Utc::now()) {
                for m in fold(&envelope, &mut level).0 {
                    if m.is_alert {
                        out.push((m.name, m.payload["data"].clone()));
                    }
                }
            }
        }
        out
    }

    #[test]
    fn the_reorder_alerts_fire_when_the_point_is_crossed_and_not_again_until_crossed_back() {
        let alerts = messages(vec![
            c::register("A1", "Bolt", "metal", Some(10)),
            c::charge("A1", "L1", "2026-11-01", None),
            c::receipt("A1", "L1", "WH-1", 20, None),
            c::issue("A1", "L1", "WH-1", 5, None),
            // 15 → 9: below.
            c::issue("A1", "L1", "WH-1", 6, None),
            // Still below: nothing.
            c::issue("A1", "L1", "WH-1", 1, None),
            c::receipt("A1", "L1", "WH-1", 1, None),
            // 9 → 12: above.
            c::receipt("A1", "L1", "WH-1", 3, None),
            // A reservation makes 12 − 4 = 8 available: below again.
            c::reserve("A1", "R1", "L1", "WH-1", 4, "order 1"),
            c::release("A1", "R1", None),
            // 12 − 3 = 9: below; consuming it (reserved − 3, then on hand − 3) changes nothing.
            c::reserve("A1", "R2", "L1", "WH-1", 3, "order 2"),
            c::consume("A1", "R2", None, None),
        ]);
        let names: Vec<&str> = alerts.iter().map(|(n, _)| n.as_str()).collect();
        // Registered without stock: below at once; the receipt lifts it.
        let (below, above) = ("below_reorder_point", "above_reorder_point");
        assert_eq!(names, [below, above, below, above, below, above, below]);
        assert_eq!((alerts[2].1["available"].as_i64(), alerts[2].1["reorder_point"].as_i64()), (Some(9), Some(10)));
        assert_eq!(alerts[4].1["reserved"], 4);
    }

    #[test]
    fn a_new_article_without_stock_is_below_its_reorder_point_at_once_and_discontinuing_it_ends_that_quietly() {
        let alerts = messages(vec![
            c::register("A1", "Bolt", "metal", Some(10)),
            c::discontinue("A1"),
        ]);
        let names: Vec<&str> = alerts.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["below_reorder_point"]);
    }

    #[test]
    fn holds_and_rejected_quality_raise_their_alerts() {
        let alerts = messages(vec![
            c::register("A1", "Bolt", "metal", None),
            c::charge("A1", "L1", "2026-11-01", None),
            c::block("A1", "L1", "moisture"),
        ]);
        assert_eq!(alerts.len(), 1);
        assert_eq!((alerts[0].0.as_str(), alerts[0].1["reason"].as_str()), ("charge_blocked", Some("moisture")));
    }

    #[test]
    fn a_subscription_receives_what_it_asked_for_through_its_filters() {
        let mut streams = Streams::default();
        streams.decide(c::register("A1", "Bolt", "metal", None), Utc::now());
        streams.decide(c::charge("A1", "L1", "2026-11-01", None), Utc::now());
        let receipt = streams.decide(c::receipt("A1", "L1", "WH-1", 5, None), Utc::now()).remove(0);
        let mut level = Level { category: "metal".into(), ..Level::default() };
        let (mut out, charge) = fold(&receipt, &mut level);
        assert_eq!(charge, Some(("L1".to_owned(), ChargeChange::Moved(5))));
        let m = out.remove(0);
        assert_eq!(m.payload["type"], "erp.stock.StockReceived");
        assert_eq!(m.payload["specversion"], "1.0");
        assert_eq!(m.payload["data"]["quantity"], 5);
        let base = Subscription {
            id: Uuid::nil(),
            url: "https://hooks.example.com/".into(),
            description: String::new(),
            event_types: vec!["*".into()],
            alerts: vec![],
            articles: vec![],
            categories: vec![],
            warehouses: vec![],
            expiring_within_days: 7,
            owner: "user:a".into(),
            enabled: true,
            disabled_reason: None,
            disabled_at: None,
            failing_since: None,
            created_at: m.at - chrono::Duration::seconds(1),
            updated_at: m.at,
        };
        assert!(base.wants(&m));
        assert!(Subscription { event_types: vec!["StockReceived".into()], ..base.clone() }.wants(&m));
        assert!(!Subscription { event_types: vec!["StockIssued".into()], ..base.clone() }.wants(&m));
        assert!(!Subscription { categories: vec!["wood".into()], ..base.clone() }.wants(&m));
        assert!(Subscription { warehouses: vec!["WH-1".into(), "WH-2".into()], ..base.clone() }.wants(&m));
        assert!(!Subscription { warehouses: vec!["WH-2".into()], ..base.clone() }.wants(&m));
        assert!(!Subscription { articles: vec!["A2".into()], ..base.clone() }.wants(&m));
        assert!(!Subscription { created_at: m.at + chrono::Duration::seconds(1), ..base.clone() }.wants(&m), "made after it happened");
        assert!(!Subscription { event_types: vec![], alerts: vec!["charge_blocked".into()], ..base }.wants(&m));
    }
}

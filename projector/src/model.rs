//! The projection of one article stream, pure: it folds the stream's events
//! into its state with the domain's own [`events::try_evolve`] (the same fold
//! the command-service and the analysts' tools use) and derives from the
//! states before and after what changes in every read model.
//!
//! Everything here is a function of the events alone, never of how they were
//! batched: a rebuild from offset 0 produces exactly the rows live processing
//! did (tested by comparing checksums).

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, NaiveDate, Utc};
use events::{ArticleState, ChargeNo, Envelope, Event, QualityStatus, Unfoldable, check_foldable, evolve};
use serde::Serialize;
use uuid::Uuid;

use crate::documents::{Document, stock_document};

/// A row of `articles`: catalogue entry and stock totals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArticleRow {
    pub article_id: String,
    pub name: String,
    pub category: String,
    pub unit_code: String,
    pub unit_decimals: i16,
    pub reorder_point: Option<i64>,
    pub discontinued: bool,
    pub on_hand: i64,
    pub reserved: i64,
}

impl ArticleRow {
    /// Below its reorder point (and still ordered): on the low-stock list.
    pub fn is_low(&self) -> bool {
        !self.discontinued && self.reorder_point.is_some_and(|r| self.on_hand - self.reserved < r)
    }

    fn same_catalogue_entry(&self, other: &ArticleRow) -> bool {
        (&self.name, &self.category, &self.unit_code, self.unit_decimals, self.reorder_point, self.discontinued)
            == (&other.name, &other.category, &other.unit_code, other.unit_decimals, other.reorder_point, other.discontinued)
    }
}

/// Stock of a charge in one warehouse, as kept in `charges.warehouses`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct WarehouseStock {
    pub on_hand: i64,
    pub reserved: i64,
}

/// A row of `charges`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChargeRow {
    pub article_id: String,
    pub charge: String,
    pub category: String,
    pub production_date: NaiveDate,
    pub expiry_date: Option<NaiveDate>,
    pub quality_status: &'static str,
    pub blocked_reason: Option<String>,
    pub on_hand: i64,
    pub reserved: i64,
    /// Every warehouse the charge was ever in, by id.
    pub warehouses: BTreeMap<String, WarehouseStock>,
}

/// A row of `reservations` (an open reservation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReservationRow {
    pub article_id: String,
    pub reservation_id: String,
    pub charge: String,
    pub warehouse: String,
    pub reference: String,
    pub remaining: i64,
    /// When the reservation was made; kept from its first row.
    pub reserved_at: DateTime<Utc>,
}

/// A row of `movements`: one leg of a stock movement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MovementRow {
    pub article_id: String,
    pub charge: String,
    pub warehouse: String,
    pub posted_at: DateTime<Utc>,
    pub sequence: i64,
    pub leg: i16,
    pub kind: &'static str,
    pub delta: i64,
    /// Balance of the charge in the warehouse right after this movement, in
    /// posting-time order, as decided.
    pub balance: i64,
    pub recorded_at: DateTime<Utc>,
    pub event_id: Uuid,
    pub reservation_id: Option<String>,
    /// Posted before the stream's latest posting: later rows' balances shift.
    pub backdated: bool,
}

/// How one event changed a category's summary; `events` counts the events
/// that changed it (the summary's version).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CategoryDelta {
    pub charges: i64,
    pub charges_in_stock: i64,
    pub on_hand: i64,
    pub blocked: i64,
    pub events: i64,
}

impl CategoryDelta {
    fn is_zero(&self) -> bool {
        (self.charges, self.charges_in_stock, self.on_hand, self.blocked) == (0, 0, 0, 0)
    }

    /// Adds `other` to `self`.
    pub fn add(&mut self, other: &CategoryDelta) {
        self.charges += other.charges;
        self.charges_in_stock += other.charges_in_stock;
        self.on_hand += other.on_hand;
        self.blocked += other.blocked;
        self.events += other.events;
    }
}

/// Cache tag of everything about one article.
pub fn article_tag(article: &str) -> String {
    platform::tags::article(article)
}

/// Cache tag of a category's summary and charge list.
pub fn category_tag(category: &str) -> String {
    platform::tags::category(category)
}

/// Cache tag of the article catalogue (names, categories, units, reorder points).
pub const CATALOGUE_TAG: &str = platform::tags::CATALOGUE;
/// Cache tag of the low-stock list.
pub const LOW_STOCK_TAG: &str = platform::tags::LOW_STOCK;

/// One stream's events being folded, with what they change.
#[derive(Debug)]
pub struct StreamProjection {
    before: ArticleState,
    state: ArticleState,
    applied: usize,
    movements: Vec<MovementRow>,
    categories: BTreeMap<String, CategoryDelta>,
    reserved_at: BTreeMap<String, DateTime<Utc>>,
}

/// What a stream's events change, once folded.
#[derive(Debug)]
pub struct StreamChanges {
    pub article_id: String,
    /// The state after the events, without ledger (what is stored).
    pub state: ArticleState,
    pub applied: usize,
    pub article: Option<ArticleRow>,
    pub charges: Vec<ChargeRow>,
    pub reservations: Vec<ReservationRow>,
    /// Reservations no longer open, by id.
    pub closed_reservations: Vec<String>,
    pub movements: Vec<MovementRow>,
    pub categories: BTreeMap<String, CategoryDelta>,
    pub tags: BTreeSet<String>,
    pub stock_document: Option<Document>,
}

impl StreamProjection {
    /// Starts from the stream's stored state.
    pub fn new(state: ArticleState) -> Self {
        Self {
            before: state.clone(),
            state,
            applied: 0,
            movements: Vec::new(),
            categories: BTreeMap::new(),
            reserved_at: BTreeMap::new(),
        }
    }

    /// The sequence of the last event folded in.
    pub fn version(&self) -> u64 {
        self.state.version
    }

    /// Folds one event in; an event that does not fit the state changes nothing.
    pub fn apply(&mut self, envelope: &Envelope) -> Result<(), Unfoldable> {
        let event = &envelope.event;
        check_foldable(&self.state, event)?;
        let affected = affected_charges(&self.state, event);
        let before = contributions(&self.state, &affected);
        let latest = self.state.latest_posting;
        self.state = evolve(std::mem::take(&mut self.state), event);
        let after = contributions(&self.state, &affected);
        for (category, delta) in diff(before, after) {
            self.categories.entry(category).or_default().add(&delta);
        }
        self.movements.extend(movements(envelope, latest));
        if let Event::StockReserved(e) = event {
            self.reserved_at.insert(e.reservation.to_string(), envelope.recorded_at);
        }
        self.applied += 1;
        Ok(())
    }

    /// Marks the next sequence as passed without folding an event (an operator
    /// skipped a poison event).
    pub fn skip(&mut self) {
        self.state.version += 1;
    }

    /// What the folded events change.
    pub fn finish(self, article_id: &str) -> StreamChanges {
        let state = self.state.without_ledger();
        let (old, new) = (article_row(article_id, &self.before), article_row(article_id, &state));
        let mut tags = BTreeSet::new();
        if self.applied > 0 {
            tags.insert(article_tag(article_id));
        }
        for category in self.categories.keys() {
            tags.insert(category_tag(category));
        }
        let catalogue_changed = match (&old, &new) {
            (Some(o), Some(n)) => !o.same_catalogue_entry(n),
            (None, None) => false,
            _ => true,
        };
        if catalogue_changed {
            tags.insert(CATALOGUE_TAG.to_owned());
        }
        let low_before = old.as_ref().is_some_and(ArticleRow::is_low);
        let low_after = new.as_ref().is_some_and(ArticleRow::is_low);
        if (low_before || low_after) && old != new {
            tags.insert(LOW_STOCK_TAG.to_owned());
        }

        let old_charges = charge_rows(article_id, &self.before);
        let charges: Vec<ChargeRow> = charge_rows(article_id, &state)
            .into_iter()
            .filter(|(k, row)| old_charges.get(k) != Some(row))
            .map(|(_, row)| row)
            .collect();
        // A category's charge list shows every charge's figures.
        for row in &charges {
            tags.insert(category_tag(&row.category));
        }

        let default_time = self.movements.first().map_or(DateTime::<Utc>::UNIX_EPOCH, |m| m.recorded_at);
        let mut reservations = Vec::new();
        for (id, r) in &state.reservations {
            let unchanged = self.before.reservations.get(id).is_some_and(|b| b.remaining == r.remaining);
            if !unchanged {
                reservations.push(ReservationRow {
                    article_id: article_id.to_owned(),
                    reservation_id: id.to_string(),
                    charge: r.charge.to_string(),
                    warehouse: r.warehouse.to_string(),
                    reference: r.reference.to_string(),
                    remaining: r.remaining,
                    reserved_at: self.reserved_at.get(id.as_str()).copied().unwrap_or(default_time),
                });
            }
        }
        let closed_reservations = self
            .before
            .reservations
            .keys()
            .filter(|id| !state.reservations.contains_key(*id))
            .map(ToString::to_string)
            .collect();

        let stock_document = (self.applied > 0 && state.article.is_some()).then(|| stock_document(article_id, &state));
        StreamChanges {
            article_id: article_id.to_owned(),
            applied: self.applied,
            article: if old != new { new } else { None },
            charges,
            reservations,
            closed_reservations,
            movements: self.movements,
            categories: self.categories,
            tags,
            stock_document,
            state,
        }
    }
}

/// The charges whose category summary an event may change.
fn affected_charges(state: &ArticleState, event: &Event) -> Vec<ChargeNo> {
    match event {
        Event::ArticleCategoryChanged(_) => state.charges.keys().cloned().collect(),
        Event::ChargeRegistered(e) => vec![e.charge.clone()],
        Event::QualityResultRecorded(e) => vec![e.charge.clone()],
        Event::ChargeBlocked(e) => vec![e.charge.clone()],
        Event::ChargeReleased(e) => vec![e.charge.clone()],
        Event::StockReceived(e) => vec![e.charge.clone()],
        Event::StockIssued(e) => vec![e.charge.clone()],
        Event::StockTransferred(e) => vec![e.charge.clone()],
        Event::InventoryCounted(e) => vec![e.charge.clone()],
        _ => Vec::new(),
    }
}

/// What the given charges add to their category's summary.
fn contributions(state: &ArticleState, charges: &[ChargeNo]) -> BTreeMap<String, CategoryDelta> {
    let mut sums: BTreeMap<String, CategoryDelta> = BTreeMap::new();
    let Some(info) = &state.article else { return sums };
    for charge in charges {
        let Some(c) = state.charges.get(charge) else { continue };
        let on_hand: i64 = c.stock.values().map(|b| b.on_hand).sum();
        let sum = sums.entry(info.category.to_string()).or_default();
        sum.charges += 1;
        sum.charges_in_stock += i64::from(on_hand > 0);
        sum.on_hand += on_hand;
        sum.blocked += i64::from(c.blocked.is_some());
    }
    sums
}

/// Per category, after − before, for the categories that changed (each counted as one event).
fn diff(
    before: BTreeMap<String, CategoryDelta>,
    mut after: BTreeMap<String, CategoryDelta>,
) -> BTreeMap<String, CategoryDelta> {
    for (category, b) in before {
        let a = after.entry(category).or_default();
        a.charges -= b.charges;
        a.charges_in_stock -= b.charges_in_stock;
        a.on_hand -= b.on_hand;
        a.blocked -= b.blocked;
    }
    after.retain(|_, d| !d.is_zero());
    for d in after.values_mut() {
        d.events = 1;
    }
    after
}

/// The movement rows of an event; `latest` is the stream's latest posting before it.
fn movements(envelope: &Envelope, latest: Option<DateTime<Utc>>) -> Vec<MovementRow> {
    let row = |charge: &ChargeNo, warehouse: &events::WarehouseId, posted_at: DateTime<Utc>, leg, kind, delta, balance| {
        MovementRow {
            article_id: envelope.event.article().to_string(),
            charge: charge.to_string(),
            warehouse: warehouse.to_string(),
            posted_at,
            sequence: envelope.sequence as i64,
            leg,
            kind,
            delta,
            balance,
            recorded_at: envelope.recorded_at,
            event_id: envelope.event_id,
            reservation_id: None,
            backdated: latest.is_some_and(|l| posted_at < l),
        }
    };
    match &envelope.event {
        Event::StockReceived(e) => {
            vec![row(&e.charge, &e.warehouse, e.posted_at, 0, "receipt", e.quantity.get(), e.balance_at_posting)]
        }
        Event::StockIssued(e) => {
            let mut m = row(&e.charge, &e.warehouse, e.posted_at, 0, "issue", -e.quantity.get(), e.balance_at_posting);
            m.reservation_id = e.reservation.as_ref().map(ToString::to_string);
            vec![m]
        }
        Event::StockTransferred(e) => vec![
            row(&e.charge, &e.from, e.posted_at, 0, "transfer_out", -e.quantity.get(), e.from_balance_at_posting),
            row(&e.charge, &e.to, e.posted_at, 1, "transfer_in", e.quantity.get(), e.to_balance_at_posting),
        ],
        Event::InventoryCounted(e) => vec![row(&e.charge, &e.warehouse, e.posted_at, 0, "count", e.delta, e.counted)],
        _ => Vec::new(),
    }
}

/// The article's row, once registered.
pub fn article_row(article_id: &str, state: &ArticleState) -> Option<ArticleRow> {
    let info = state.article.as_ref()?;
    let buckets = state.charges.values().flat_map(|c| c.stock.values());
    let (on_hand, reserved) = buckets.fold((0, 0), |(o, r), b| (o + b.on_hand, r + b.reserved));
    Some(ArticleRow {
        article_id: article_id.to_owned(),
        name: info.name.to_string(),
        category: info.category.to_string(),
        unit_code: String::from(info.unit.code.clone()),
        unit_decimals: i16::from(info.unit.decimals),
        reorder_point: info.reorder_point.map(|q| q.get()),
        discontinued: info.discontinued,
        on_hand,
        reserved,
    })
}

/// Every charge's row, by charge number.
pub fn charge_rows(article_id: &str, state: &ArticleState) -> BTreeMap<String, ChargeRow> {
    let Some(info) = &state.article else { return BTreeMap::new() };
    state
        .charges
        .iter()
        .map(|(no, c)| {
            let warehouses: BTreeMap<String, WarehouseStock> = c
                .stock
                .iter()
                .map(|(w, b)| (w.to_string(), WarehouseStock { on_hand: b.on_hand, reserved: b.reserved }))
                .collect();
            let row = ChargeRow {
                article_id: article_id.to_owned(),
                charge: no.to_string(),
                category: info.category.to_string(),
                production_date: c.production_date,
                expiry_date: c.expiry_date,
                quality_status: quality_status(c.quality_status),
                blocked_reason: c.blocked.as_ref().map(ToString::to_string),
                on_hand: warehouses.values().map(|w| w.on_hand).sum(),
                reserved: warehouses.values().map(|w| w.reserved).sum(),
                warehouses,
            };
            (no.to_string(), row)
        })
        .collect()
}

/// The stable name of a quality status, as in the events' JSON.
pub fn quality_status(status: QualityStatus) -> &'static str {
    match status {
        QualityStatus::Pending => "pending",
        QualityStatus::Approved => "approved",
        QualityStatus::Rejected => "rejected",
    }
}

#[cfg(test)]
mod tests {
    use events::{CommandMeta, Context, Policy, StreamId, decide};

    use super::*;

    fn envelopes(commands: Vec<events::Command>) -> Vec<Envelope> {
        let mut state = ArticleState::default();
        let mut all = Vec::new();
        for (i, command) in commands.into_iter().enumerate() {
            let now: DateTime<Utc> = "2026-11-22T12:00:00Z".parse().unwrap();
            let stream = StreamId::article(command.article());
            let events = decide(&state, command, &Context { now, policy: &Policy::default() }).unwrap();
            let meta = CommandMeta {
                command_id: Uuid::from_u128(i as u128),
                correlation_id: "c".into(),
                actor: "t".into(),
                recorded_at: now,
            };
            let wrapped = Envelope::wrap(&stream, state.version, &meta, events);
            state = wrapped.iter().fold(state, |s, e| evolve(s, &e.event));
            all.extend(wrapped);
        }
        all
    }

    fn json(value: serde_json::Value) -> events::Command {
        // Commands from their HTTP-like JSON keep the tests short.
        let kind = value["kind"].as_str().unwrap().to_owned();
        let mut body = value;
        body.as_object_mut().unwrap().remove("kind");
        let article = events::ArticleId::parse("A").unwrap();
        let charge = |s: &str| ChargeNo::parse(s).unwrap();
        let wh = |s: &str| events::WarehouseId::parse(s).unwrap();
        let q = |n: i64| events::Quantity::new(n).unwrap();
        match kind.as_str() {
            "register" => events::Command::RegisterArticle(events::RegisterArticle {
                article,
                name: events::ArticleName::parse("Bolt").unwrap(),
                category: events::Category::parse(body["category"].as_str().unwrap()).unwrap(),
                unit: events::Unit::new("pcs", 0).unwrap(),
                reorder_point: body["reorder_point"].as_i64().map(q),
            }),
            "charge" => events::Command::RegisterCharge(events::RegisterCharge {
                article,
                charge: charge(body["charge"].as_str().unwrap()),
                production_date: "2026-11-01".parse().unwrap(),
                expiry_date: None,
                quality_status: QualityStatus::Approved,
            }),
            "receipt" => events::Command::PostReceipt(events::PostReceipt {
                article,
                charge: charge(body["charge"].as_str().unwrap()),
                warehouse: wh(body["warehouse"].as_str().unwrap()),
                quantity: q(body["quantity"].as_i64().unwrap()),
                posted_at: None,
            }),
            "block" => events::Command::BlockCharge(events::BlockCharge {
                article,
                charge: charge(body["charge"].as_str().unwrap()),
                reason: events::Text::parse("hold").unwrap(),
            }),
            "move" => events::Command::ChangeArticleCategory(events::ChangeArticleCategory {
                article,
                category: events::Category::parse(body["category"].as_str().unwrap()).unwrap(),
            }),
            other => panic!("unknown test command {other}"),
        }
    }

    fn project(events: &[Envelope]) -> StreamChanges {
        let mut p = StreamProjection::new(ArticleState::default());
        for e in events {
            p.apply(e).unwrap();
        }
        p.finish("A")
    }

    #[test]
    fn a_receipt_yields_a_movement_the_charge_row_and_the_article_totals() {
        let events = envelopes(vec![
            json(serde_json::json!({"kind": "register", "category": "bolts", "reorder_point": 10})),
            json(serde_json::json!({"kind": "charge", "charge": "C1"})),
            json(serde_json::json!({"kind": "receipt", "charge": "C1", "warehouse": "W1", "quantity": 4})),
        ]);
        let changes = project(&events);
        let article = changes.article.unwrap();
        assert_eq!((article.on_hand, article.reserved, article.is_low()), (4, 0, true));
        assert_eq!(changes.movements.len(), 1);
        assert_eq!((changes.movements[0].delta, changes.movements[0].balance), (4, 4));
        assert_eq!(changes.charges[0].warehouses["W1"], WarehouseStock { on_hand: 4, reserved: 0 });
        let bolts = changes.categories["bolts"];
        assert_eq!((bolts.charges, bolts.charges_in_stock, bolts.on_hand, bolts.events), (1, 1, 4, 2));
        assert!(changes.tags.contains(LOW_STOCK_TAG) && changes.tags.contains(CATALOGUE_TAG));
        assert_eq!(changes.stock_document.unwrap().version, 3);
    }

    #[test]
    fn a_category_change_moves_every_charge_between_the_summaries() {
        let events = envelopes(vec![
            json(serde_json::json!({"kind": "register", "category": "bolts"})),
            json(serde_json::json!({"kind": "charge", "charge": "C1"})),
            json(serde_json::json!({"kind": "charge", "charge": "C2"})),
            json(serde_json::json!({"kind": "receipt", "charge": "C1", "warehouse": "W1", "quantity": 5})),
            json(serde_json::json!({"kind": "block", "charge": "C2"})),
        ]);
        let mut p = StreamProjection::new(ArticleState::default());
        for e in &events {
            p.apply(e).unwrap();
        }
        let state = p.finish("A").state;
        let moved = envelopes(vec![
            json(serde_json::json!({"kind": "register", "category": "bolts"})),
            json(serde_json::json!({"kind": "charge", "charge": "C1"})),
            json(serde_json::json!({"kind": "charge", "charge": "C2"})),
            json(serde_json::json!({"kind": "receipt", "charge": "C1", "warehouse": "W1", "quantity": 5})),
            json(serde_json::json!({"kind": "block", "charge": "C2"})),
            json(serde_json::json!({"kind": "move", "category": "screws"})),
        ]);
        let mut p = StreamProjection::new(state);
        p.apply(&moved[5]).unwrap();
        let changes = p.finish("A");
        let (bolts, screws) = (changes.categories["bolts"], changes.categories["screws"]);
        assert_eq!((bolts.charges, bolts.on_hand, bolts.blocked, bolts.events), (-2, -5, -1, 1));
        assert_eq!((screws.charges, screws.on_hand, screws.blocked, screws.events), (2, 5, 1, 1));
        assert!(changes.charges.iter().all(|c| c.category == "screws"));
        assert!(changes.tags.contains(CATALOGUE_TAG));
    }

    #[test]
    fn an_event_of_an_unregistered_charge_is_refused_and_changes_nothing() {
        let events = envelopes(vec![
            json(serde_json::json!({"kind": "register", "category": "bolts"})),
            json(serde_json::json!({"kind": "charge", "charge": "C1"})),
            json(serde_json::json!({"kind": "receipt", "charge": "C1", "warehouse": "W1", "quantity": 4})),
        ]);
        let mut p = StreamProjection::new(ArticleState::default());
        p.apply(&events[0]).unwrap();
        assert!(p.apply(&events[2]).is_err(), "the charge is not registered in this state");
        assert_eq!(p.version(), 1);
        let changes = p.finish("A");
        assert!(changes.movements.is_empty());
        assert_eq!(changes.applied, 1);
    }
}

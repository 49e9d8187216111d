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
use events::{
    ArticleState, ChargeNo, Envelope, Event, QualityStatus, Reservation, ReservationId, Unfoldable, check_foldable, evolve,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::documents::{Document, stock_document};

/// A row of `articles`: the catalogue entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArticleRow {
    pub article_id: String,
    pub name: String,
    pub category: String,
    pub unit_code: String,
    pub unit_decimals: i16,
    pub reorder_point: Option<i64>,
    pub discontinued: bool,
}

/// A row of `low_stock`: an article below its reorder point, with its figures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LowStockRow {
    pub article_id: String,
    pub name: String,
    pub category: String,
    pub reorder_point: i64,
    pub on_hand: i64,
    pub reserved: i64,
}

/// What happens to an article's `low_stock` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LowStock {
    Upsert(LowStockRow),
    Delete(String),
}

/// Stock of a charge in one warehouse, as kept in `charges.warehouses`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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
    /// The row is in the table already (written by an earlier batch): updated, not inserted.
    pub stored: bool,
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

    /// Subtracts `other`'s figures (not its event count) from `self`'s.
    fn subtract(&mut self, other: &CategoryDelta) {
        self.charges -= other.charges;
        self.charges_in_stock -= other.charges_in_stock;
        self.on_hand -= other.on_hand;
        self.blocked -= other.blocked;
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

/// One stream's events being folded, with what they change. Rows are
/// compared before and after only for what the events touched, so a batch
/// costs what its events change, not what the article holds.
#[derive(Debug)]
pub struct StreamProjection {
    article_id: String,
    state: ArticleState,
    applied: usize,
    article_before: Option<ArticleRow>,
    low_before: Option<LowStockRow>,
    /// Charges the events touched, with their row before the first touch (`None`: new).
    charges_before: BTreeMap<ChargeNo, Option<ChargeRow>>,
    /// Reservations the events touched, as they were before (`None`: new).
    reservations_before: BTreeMap<ReservationId, Option<Reservation>>,
    movements: Vec<MovementRow>,
    categories: BTreeMap<String, CategoryDelta>,
    reserved_at: BTreeMap<String, DateTime<Utc>>,
}

/// What a stream's events change, once folded.
#[derive(Debug)]
pub struct StreamChanges {
    pub article_id: String,
    /// The state after the events, without ledger (what the cache keeps).
    pub state: ArticleState,
    pub applied: usize,
    /// The catalogue entry, when it changed.
    pub article: Option<ArticleRow>,
    pub low_stock: Option<LowStock>,
    pub charges: Vec<ChargeRow>,
    pub reservations: Vec<ReservationRow>,
    /// Reservations no longer open, by id.
    pub closed_reservations: Vec<String>,
    pub movements: Vec<MovementRow>,
    pub categories: BTreeMap<String, CategoryDelta>,
    pub tags: BTreeSet<String>,
    pub stock_document: Option<Document>,
    /// The stock document is in the table already (an earlier batch wrote it).
    pub stock_document_stored: bool,
}

impl StreamProjection {
    /// Starts from the stream's stored state.
    pub fn new(article_id: &str, state: ArticleState) -> Self {
        Self {
            article_id: article_id.to_owned(),
            article_before: article_row(article_id, &state),
            low_before: low_stock_row(article_id, &state),
            state,
            applied: 0,
            charges_before: BTreeMap::new(),
            reservations_before: BTreeMap::new(),
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
        let every_charge: Vec<ChargeNo>;
        let affected: &[ChargeNo] = match event {
            Event::ArticleCategoryChanged(_) => {
                every_charge = self.state.charges.keys().cloned().collect();
                &every_charge
            }
            _ => affected_charge(event).map_or(&[], std::slice::from_ref),
        };
        for charge in affected.iter().chain(reserved_charge(event)) {
            if !self.charges_before.contains_key(charge) {
                let row = charge_row(&self.article_id, &self.state, charge);
                self.charges_before.insert(charge.clone(), row);
            }
        }
        if let Some(id) = reservation_of(event)
            && !self.reservations_before.contains_key(id)
        {
            self.reservations_before.insert(id.clone(), self.state.reservations.get(id).cloned());
        }
        let latest = self.state.latest_posting;
        if let Event::ArticleCategoryChanged(_) = event {
            // Its charges move from one category's summary to another's.
            let before = contributions(&self.state, affected);
            self.state = evolve(std::mem::take(&mut self.state), event);
            let after = contributions(&self.state, affected);
            for (category, delta) in diff(before, after) {
                self.categories.entry(category).or_default().add(&delta);
            }
        } else {
            // The category stays: only its figures move (no map, no copy of its name).
            let before = contribution(&self.state, affected).map(|(_, d)| d).unwrap_or_default();
            self.state = evolve(std::mem::take(&mut self.state), event);
            if let Some((category, after)) = contribution(&self.state, affected) {
                let mut delta = after;
                delta.subtract(&before);
                if !delta.is_zero() {
                    delta.events = 1;
                    match self.categories.get_mut(category) {
                        Some(sum) => sum.add(&delta),
                        None => {
                            self.categories.insert(category.to_owned(), delta);
                        }
                    }
                }
            }
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
    pub fn finish(self) -> StreamChanges {
        let article_id = self.article_id.as_str();
        let state = self.state.without_ledger();
        let new = article_row(article_id, &state);
        let mut tags = BTreeSet::new();
        if self.applied > 0 {
            tags.insert(article_tag(article_id));
        }
        for category in self.categories.keys() {
            tags.insert(category_tag(category));
        }
        let catalogue_changed = self.article_before != new;
        if catalogue_changed {
            tags.insert(CATALOGUE_TAG.to_owned());
        }
        let low_stock = match (&self.low_before, low_stock_row(article_id, &state)) {
            (before, Some(after)) if before.as_ref() != Some(&after) => Some(LowStock::Upsert(after)),
            (Some(_), None) => Some(LowStock::Delete(article_id.to_owned())),
            _ => None,
        };
        if low_stock.is_some() {
            tags.insert(LOW_STOCK_TAG.to_owned());
        }

        let mut charges = Vec::new();
        for (charge, before) in &self.charges_before {
            if let Some(mut row) = charge_row(article_id, &state, charge)
                && before.as_ref() != Some(&row)
            {
                // A category's charge list shows every charge's figures.
                tags.insert(category_tag(&row.category));
                row.stored = before.is_some();
                charges.push(row);
            }
        }

        let default_time = self.movements.first().map_or(DateTime::<Utc>::UNIX_EPOCH, |m| m.recorded_at);
        let (mut reservations, mut closed_reservations) = (Vec::new(), Vec::new());
        for (id, before) in &self.reservations_before {
            match (before, state.reservations.get(id)) {
                (before, Some(r)) if before.as_ref() != Some(r) => reservations.push(ReservationRow {
                    article_id: article_id.to_owned(),
                    reservation_id: id.to_string(),
                    charge: r.charge.to_string(),
                    warehouse: r.warehouse.to_string(),
                    reference: r.reference.to_string(),
                    remaining: r.remaining,
                    reserved_at: self.reserved_at.get(id.as_str()).copied().unwrap_or(default_time),
                }),
                (Some(_), None) => closed_reservations.push(id.to_string()),
                _ => {}
            }
        }

        let stock_document = (self.applied > 0 && state.article.is_some()).then(|| stock_document(article_id, &state));
        StreamChanges {
            article: if catalogue_changed { new } else { None },
            article_id: self.article_id,
            applied: self.applied,
            low_stock,
            charges,
            reservations,
            closed_reservations,
            movements: self.movements,
            categories: self.categories,
            tags,
            stock_document,
            stock_document_stored: self.article_before.is_some(),
            state,
        }
    }
}

/// The charge whose reserved quantity a reservation event changes.
fn reserved_charge(event: &Event) -> Option<&ChargeNo> {
    match event {
        Event::StockReserved(e) => Some(&e.charge),
        Event::ReservationReleased(e) => Some(&e.charge),
        Event::ReservationConsumed(e) => Some(&e.charge),
        _ => None,
    }
}

/// The reservation an event opens or changes.
fn reservation_of(event: &Event) -> Option<&ReservationId> {
    match event {
        Event::StockReserved(e) => Some(&e.reservation),
        Event::ReservationReleased(e) => Some(&e.reservation),
        Event::ReservationConsumed(e) => Some(&e.reservation),
        _ => None,
    }
}

/// The one charge whose category summary an event may change (a category
/// change affects every charge of the article: handled apart).
fn affected_charge(event: &Event) -> Option<&ChargeNo> {
    match event {
        Event::ChargeRegistered(e) => Some(&e.charge),
        Event::QualityResultRecorded(e) => Some(&e.charge),
        Event::ChargeBlocked(e) => Some(&e.charge),
        Event::ChargeReleased(e) => Some(&e.charge),
        Event::StockReceived(e) => Some(&e.charge),
        Event::StockIssued(e) => Some(&e.charge),
        Event::StockTransferred(e) => Some(&e.charge),
        Event::InventoryCounted(e) => Some(&e.charge),
        _ => None,
    }
}

/// What the given charges add to the summary of the article's category
/// (`None` before the article is registered).
fn contribution<'s>(state: &'s ArticleState, charges: &[ChargeNo]) -> Option<(&'s str, CategoryDelta)> {
    let info = state.article.as_ref()?;
    let mut sum = CategoryDelta::default();
    for charge in charges {
        let Some(c) = state.charges.get(charge) else { continue };
        let on_hand: i64 = c.stock.values().map(|b| b.on_hand).sum();
        sum.charges += 1;
        sum.charges_in_stock += i64::from(on_hand > 0);
        sum.on_hand += on_hand;
        sum.blocked += i64::from(c.blocked.is_some());
    }
    Some((info.category.as_str(), sum))
}

/// [`contribution`] as a map by category (empty before the article is registered).
fn contributions(state: &ArticleState, charges: &[ChargeNo]) -> BTreeMap<String, CategoryDelta> {
    contribution(state, charges).map(|(category, sum)| (category.to_owned(), sum)).into_iter().collect()
}

/// Per category, after − before, for the categories that changed (each counted as one event).
fn diff(
    before: BTreeMap<String, CategoryDelta>,
    mut after: BTreeMap<String, CategoryDelta>,
) -> BTreeMap<String, CategoryDelta> {
    for (category, b) in before {
        after.entry(category).or_default().subtract(&b);
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

/// The article's catalogue row, once registered.
pub fn article_row(article_id: &str, state: &ArticleState) -> Option<ArticleRow> {
    let info = state.article.as_ref()?;
    Some(ArticleRow {
        article_id: article_id.to_owned(),
        name: info.name.to_string(),
        category: info.category.to_string(),
        unit_code: String::from(info.unit.code.clone()),
        unit_decimals: i16::from(info.unit.decimals),
        reorder_point: info.reorder_point.map(|q| q.get()),
        discontinued: info.discontinued,
    })
}

/// The article's low-stock row, when it is below its reorder point (and still ordered).
pub fn low_stock_row(article_id: &str, state: &ArticleState) -> Option<LowStockRow> {
    let info = state.article.as_ref()?;
    let reorder_point = info.reorder_point?.get();
    let buckets = state.charges.values().flat_map(|c| c.stock.values());
    let (on_hand, reserved) = buckets.fold((0, 0), |(o, r), b| (o + b.on_hand, r + b.reserved));
    (!info.discontinued && on_hand - reserved < reorder_point).then(|| LowStockRow {
        article_id: article_id.to_owned(),
        name: info.name.to_string(),
        category: info.category.to_string(),
        reorder_point,
        on_hand,
        reserved,
    })
}

/// Every charge's row, by charge number.
pub fn charge_rows(article_id: &str, state: &ArticleState) -> BTreeMap<String, ChargeRow> {
    state.charges.keys().filter_map(|no| Some((no.to_string(), charge_row(article_id, state, no)?))).collect()
}

/// One charge's row, once the article and the charge are registered.
pub fn charge_row(article_id: &str, state: &ArticleState, charge: &ChargeNo) -> Option<ChargeRow> {
    let info = state.article.as_ref()?;
    let c = state.charges.get(charge)?;
    let warehouses: BTreeMap<String, WarehouseStock> =
        c.stock.iter().map(|(w, b)| (w.to_string(), WarehouseStock { on_hand: b.on_hand, reserved: b.reserved })).collect();
    Some(ChargeRow {
        article_id: article_id.to_owned(),
        charge: charge.to_string(),
        category: info.category.to_string(),
        production_date: c.production_date,
        expiry_date: c.expiry_date,
        quality_status: quality_status(c.quality_status),
        blocked_reason: c.blocked.as_ref().map(ToString::to_string),
        on_hand: warehouses.values().map(|w| w.on_hand).sum(),
        reserved: warehouses.values().map(|w| w.reserved).sum(),
        warehouses,
        stored: false,
    })
}

/// A charge as stored, for rebuilding a stream's state.
#[derive(Debug, Clone)]
pub struct StoredCharge {
    pub charge: String,
    pub production_date: NaiveDate,
    pub expiry_date: Option<NaiveDate>,
    pub quality_status: String,
    pub blocked_reason: Option<String>,
    pub warehouses: BTreeMap<String, WarehouseStock>,
}

/// A stream's state (without ledger) rebuilt from its stored rows: exactly
/// the state the fold produced when they were written (tested), so the
/// projector need not store the state itself.
pub fn rebuild_state(
    sequence: u64,
    latest_posting: Option<DateTime<Utc>>,
    article: Option<&ArticleRow>,
    charges: &[StoredCharge],
    reservations: &[ReservationRow],
) -> Result<ArticleState, String> {
    use events::{ArticleInfo, ArticleName, Bucket, Category, ChargeState, Quantity, Reservation, ReservationId, Text, Unit, WarehouseId};
    let e = |what: &str, err: &dyn std::fmt::Display| format!("{what}: {err}");
    let article = article
        .map(|a| -> Result<ArticleInfo, String> {
            Ok(ArticleInfo {
                name: ArticleName::parse(a.name.clone()).map_err(|x| e("name", &x))?,
                category: Category::parse(a.category.clone()).map_err(|x| e("category", &x))?,
                unit: Unit::new(&a.unit_code, u8::try_from(a.unit_decimals).map_err(|x| e("unit", &x))?).map_err(|x| e("unit", &x))?,
                reorder_point: a.reorder_point.map(Quantity::new).transpose().map_err(|x| e("reorder point", &x))?,
                discontinued: a.discontinued,
            })
        })
        .transpose()?;
    let mut state = ArticleState { version: sequence, article, latest_posting, ..Default::default() };
    for c in charges {
        let quality_status = serde_json::from_value(serde_json::Value::String(c.quality_status.clone()))
            .map_err(|x| e("quality status", &x))?;
        let mut stock = BTreeMap::new();
        for (w, f) in &c.warehouses {
            let bucket = Bucket { on_hand: f.on_hand, reserved: f.reserved, opening: f.on_hand, ledger: Vec::new() };
            stock.insert(WarehouseId::parse(w.clone()).map_err(|x| e("warehouse", &x))?, bucket);
        }
        let charge = ChargeState {
            production_date: c.production_date,
            expiry_date: c.expiry_date,
            quality_status,
            blocked: c.blocked_reason.clone().map(Text::parse).transpose().map_err(|x| e("blocked reason", &x))?,
            stock,
        };
        state.charges.insert(ChargeNo::parse(c.charge.clone()).map_err(|x| e("charge", &x))?, charge);
    }
    for r in reservations {
        let reservation = Reservation {
            charge: ChargeNo::parse(r.charge.clone()).map_err(|x| e("charge", &x))?,
            warehouse: WarehouseId::parse(r.warehouse.clone()).map_err(|x| e("warehouse", &x))?,
            reference: Text::parse(r.reference.clone()).map_err(|x| e("reference", &x))?,
            remaining: r.remaining,
        };
        state.reservations.insert(ReservationId::parse(r.reservation_id.clone()).map_err(|x| e("reservation", &x))?, reservation);
    }
    Ok(state)
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
            "reserve" => events::Command::ReserveStock(events::ReserveStock {
                article,
                reservation: events::ReservationId::parse(body["reservation"].as_str().unwrap()).unwrap(),
                charge: charge(body["charge"].as_str().unwrap()),
                warehouse: wh(body["warehouse"].as_str().unwrap()),
                quantity: q(body["quantity"].as_i64().unwrap()),
                reference: events::Text::parse("order 7").unwrap(),
            }),
            "move" => events::Command::ChangeArticleCategory(events::ChangeArticleCategory {
                article,
                category: events::Category::parse(body["category"].as_str().unwrap()).unwrap(),
            }),
            other => panic!("unknown test command {other}"),
        }
    }

    fn project(events: &[Envelope]) -> StreamChanges {
        let mut p = StreamProjection::new("A", ArticleState::default());
        for e in events {
            p.apply(e).unwrap();
        }
        p.finish()
    }

    #[test]
    fn a_receipt_yields_a_movement_the_charge_row_and_the_article_totals() {
        let events = envelopes(vec![
            json(serde_json::json!({"kind": "register", "category": "bolts", "reorder_point": 10})),
            json(serde_json::json!({"kind": "charge", "charge": "C1"})),
            json(serde_json::json!({"kind": "receipt", "charge": "C1", "warehouse": "W1", "quantity": 4})),
        ]);
        let changes = project(&events);
        assert_eq!(changes.article.unwrap().reorder_point, Some(10));
        let Some(LowStock::Upsert(low)) = &changes.low_stock else { panic!("4 < 10 is low: {:?}", changes.low_stock) };
        assert_eq!((low.on_hand, low.reserved), (4, 0));
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
        let mut p = StreamProjection::new("A", ArticleState::default());
        for e in &events {
            p.apply(e).unwrap();
        }
        let state = p.finish().state;
        let moved = envelopes(vec![
            json(serde_json::json!({"kind": "register", "category": "bolts"})),
            json(serde_json::json!({"kind": "charge", "charge": "C1"})),
            json(serde_json::json!({"kind": "charge", "charge": "C2"})),
            json(serde_json::json!({"kind": "receipt", "charge": "C1", "warehouse": "W1", "quantity": 5})),
            json(serde_json::json!({"kind": "block", "charge": "C2"})),
            json(serde_json::json!({"kind": "move", "category": "screws"})),
        ]);
        let mut p = StreamProjection::new("A", state);
        p.apply(&moved[5]).unwrap();
        let changes = p.finish();
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
        let mut p = StreamProjection::new("A", ArticleState::default());
        p.apply(&events[0]).unwrap();
        assert!(p.apply(&events[2]).is_err(), "the charge is not registered in this state");
        assert_eq!(p.version(), 1);
        let changes = p.finish();
        assert!(changes.movements.is_empty());
        assert_eq!(changes.applied, 1);
    }

    #[test]
    fn the_state_rebuilt_from_the_rows_is_the_state_the_fold_produced() {
        let events = envelopes(vec![
            json(serde_json::json!({"kind": "register", "category": "bolts", "reorder_point": 10})),
            json(serde_json::json!({"kind": "charge", "charge": "C1"})),
            json(serde_json::json!({"kind": "charge", "charge": "C2"})),
            json(serde_json::json!({"kind": "receipt", "charge": "C1", "warehouse": "W1", "quantity": 4})),
            json(serde_json::json!({"kind": "receipt", "charge": "C2", "warehouse": "W2", "quantity": 9})),
            json(serde_json::json!({"kind": "reserve", "reservation": "R1", "charge": "C2", "warehouse": "W2", "quantity": 3})),
            json(serde_json::json!({"kind": "block", "charge": "C1"})),
            json(serde_json::json!({"kind": "move", "category": "screws"})),
        ]);
        let changes = project(&events);
        let charges: Vec<StoredCharge> = changes
            .charges
            .iter()
            .map(|c| StoredCharge {
                charge: c.charge.clone(),
                production_date: c.production_date,
                expiry_date: c.expiry_date,
                quality_status: c.quality_status.to_owned(),
                blocked_reason: c.blocked_reason.clone(),
                warehouses: c.warehouses.clone(),
            })
            .collect();
        let rebuilt = rebuild_state(
            changes.state.version,
            changes.state.latest_posting,
            changes.article.as_ref(),
            &charges,
            &changes.reservations,
        )
        .unwrap();
        assert_eq!(rebuilt, changes.state);
        assert_eq!(rebuilt.reservations.len(), 1);
    }
}

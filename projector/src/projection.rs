//! The projection of one article stream, pure: it folds the stream's events
//! into its state with the domain's own [`events::try_evolve`] (the same fold
//! the command-service and the analysts' tools use) and derives from the
//! states before and after what changes in every read model (the rows of
//! [`readmodel::tables`]).
//!
//! Everything here is a function of the events alone, never of how they were
//! batched: a rebuild from offset 0 produces exactly the rows live processing
//! did (tested by comparing checksums).

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use events::{ArticleState, ChargeNo, Envelope, Event, Reservation, ReservationId, Unfoldable, check_foldable, evolve};
use readmodel::keys::{CATALOGUE_TAG, LOW_STOCK_TAG, article_tag, category_tag};
use readmodel::tables::articles::ArticleRow;
use readmodel::tables::categories::CategoryDelta;
use readmodel::tables::charges::{ChargeRow, WarehouseStock, quality_status};
use readmodel::tables::documents::Document;
use readmodel::tables::low_stock::{LowStock, LowStockRow};
use readmodel::tables::movements::MovementRow;
use readmodel::tables::reservations::ReservationRow;

use crate::documents::stock_document;

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


#[cfg(test)]
pub(crate) mod tests {
    use testkit::commands::{block, charge, move_category, receipt, register};

    use super::*;

    /// The events of `commands` on article `A`, decided in order.
    pub(crate) fn envelopes(commands: Vec<events::Command>) -> Vec<Envelope> {
        let mut streams = testkit::events::Streams::default();
        let now = "2026-11-22T12:00:00Z".parse().expect("a time");
        commands.into_iter().flat_map(|c| streams.decide(c, now)).collect()
    }

    pub(crate) fn project(events: &[Envelope]) -> StreamChanges {
        let mut p = StreamProjection::new("A", ArticleState::default());
        for e in events {
            p.apply(e).unwrap();
        }
        p.finish()
    }

    #[test]
    fn a_receipt_yields_a_movement_the_charge_row_and_the_article_totals() {
        let events = envelopes(vec![
            register("A", "Bolt", "bolts", Some(10)),
            charge("A", "C1", "2026-11-01", None),
            receipt("A", "C1", "W1", 4, None),
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
            register("A", "Bolt", "bolts", None),
            charge("A", "C1", "2026-11-01", None),
            charge("A", "C2", "2026-11-01", None),
            receipt("A", "C1", "W1", 5, None),
            block("A", "C2", "hold"),
        ]);
        let mut p = StreamProjection::new("A", ArticleState::default());
        for e in &events {
            p.apply(e).unwrap();
        }
        let state = p.finish().state;
        let moved = envelopes(vec![
            register("A", "Bolt", "bolts", None),
            charge("A", "C1", "2026-11-01", None),
            charge("A", "C2", "2026-11-01", None),
            receipt("A", "C1", "W1", 5, None),
            block("A", "C2", "hold"),
            move_category("A", "screws"),
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
            register("A", "Bolt", "bolts", None),
            charge("A", "C1", "2026-11-01", None),
            receipt("A", "C1", "W1", 4, None),
        ]);
        let mut p = StreamProjection::new("A", ArticleState::default());
        p.apply(&events[0]).unwrap();
        assert!(p.apply(&events[2]).is_err(), "the charge is not registered in this state");
        assert_eq!(p.version(), 1);
        let changes = p.finish();
        assert!(changes.movements.is_empty());
        assert_eq!(changes.applied, 1);
    }

}

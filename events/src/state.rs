//! The state of one article stream, and [`evolve`], which folds an event into
//! it. `evolve` holds no rule: it applies what [`crate::decide`] already
//! allowed, deterministically.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::{
    ArticleName, Category, ChargeNo, Event, QualityStatus, Quantity, ReservationId, Text, Unit, WarehouseId,
};

/// How far back a movement may be posted. Ledger entries older than this (before
/// the newest posting) can no longer be affected by a backdated movement, so they
/// are folded into an opening balance.
pub const POSTING_WINDOW: Duration = Duration::days(30);

/// Everything the rules need to know about one article.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArticleState {
    /// Sequence number of the last event folded in; 0 for a stream without events.
    pub version: u64,
    /// `None` until the article is registered.
    pub article: Option<ArticleInfo>,
    pub charges: BTreeMap<ChargeNo, ChargeState>,
    /// Open reservations; closed ones are forgotten.
    pub reservations: BTreeMap<ReservationId, Reservation>,
    /// The latest posting time of any movement: the ledger's horizon is
    /// [`POSTING_WINDOW`] before it.
    pub latest_posting: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArticleInfo {
    pub name: ArticleName,
    pub category: Category,
    pub unit: Unit,
    pub reorder_point: Option<Quantity>,
    pub discontinued: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChargeState {
    pub production_date: NaiveDate,
    pub expiry_date: Option<NaiveDate>,
    pub quality_status: QualityStatus,
    /// The reason of the quality hold, when blocked.
    pub blocked: Option<Text>,
    /// Stock of this charge per warehouse.
    pub stock: BTreeMap<WarehouseId, Bucket>,
}

/// An open reservation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    pub charge: ChargeNo,
    pub warehouse: WarehouseId,
    pub reference: Text,
    /// What it still holds (> 0).
    pub remaining: i64,
}

/// Stock of one charge in one warehouse, with the ledger of recent postings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bucket {
    /// Current on-hand quantity (the balance after the latest posting).
    pub on_hand: i64,
    /// Reserved by open reservations.
    pub reserved: i64,
    /// Balance before the first ledger entry.
    pub opening: i64,
    /// Postings inside the posting window, ordered by (posting time, sequence).
    pub ledger: Vec<LedgerEntry>,
}

/// One posting in a [`Bucket`]'s ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    pub posted_at: DateTime<Utc>,
    pub sequence: u64,
    pub delta: i64,
    /// Balance right after this entry, in posting-time order.
    pub balance: i64,
}

impl Bucket {
    /// Available = on hand − reserved.
    pub fn available(&self) -> i64 {
        self.on_hand - self.reserved
    }

    /// Index of the first entry posted after `t` (entries at `t` come before a new one at `t`).
    fn split(&self, t: DateTime<Utc>) -> usize {
        self.ledger.partition_point(|e| e.posted_at <= t)
    }

    /// The balance at time `t`, after every posting at or before it.
    pub fn balance_at(&self, t: DateTime<Utc>) -> i64 {
        match self.split(t) {
            0 => self.opening,
            i => self.ledger[i - 1].balance,
        }
    }

    /// The lowest balance after any posting later than `t`, with its time.
    pub fn lowest_after(&self, t: DateTime<Utc>) -> Option<(DateTime<Utc>, i64)> {
        self.ledger[self.split(t)..].iter().map(|e| (e.posted_at, e.balance)).min_by_key(|(_, b)| *b)
    }

    /// Inserts a posting at `t`; every later balance shifts by `delta`.
    fn post(&mut self, t: DateTime<Utc>, sequence: u64, delta: i64) {
        let at = self.split(t);
        let balance = self.balance_at(t) + delta;
        for later in &mut self.ledger[at..] {
            later.balance += delta;
        }
        self.ledger.insert(at, LedgerEntry { posted_at: t, sequence, delta, balance });
        self.on_hand += delta;
    }

    /// Folds entries posted before `horizon` into the opening balance.
    fn compact(&mut self, horizon: DateTime<Utc>) {
        let old = self.ledger.partition_point(|e| e.posted_at < horizon);
        if old > 0 {
            self.opening = self.ledger[old - 1].balance;
            self.ledger.drain(..old);
        }
    }
}

impl ArticleState {
    /// The state with every bucket's ledger folded into its opening balance.
    /// Every current figure stays (on hand, reserved, charges, reservations),
    /// but backdated movements can no longer be checked against it: for
    /// readers that keep current balances (the projector), never for `decide`.
    pub fn without_ledger(mut self) -> Self {
        for charge in self.charges.values_mut() {
            for bucket in charge.stock.values_mut() {
                bucket.opening = bucket.on_hand;
                bucket.ledger.clear();
            }
        }
        self
    }

    /// The earliest posting time the ledger can still check.
    pub fn horizon(&self) -> Option<DateTime<Utc>> {
        self.latest_posting.map(|t| t - POSTING_WINDOW)
    }

    /// The bucket of a charge in a warehouse (empty when nothing was posted).
    /// Borrowed: a busy bucket's ledger holds a month of postings.
    pub fn bucket(&self, charge: &ChargeNo, warehouse: &WarehouseId) -> &Bucket {
        static EMPTY: Bucket = Bucket { on_hand: 0, reserved: 0, opening: 0, ledger: Vec::new() };
        self.charges.get(charge).and_then(|c| c.stock.get(warehouse)).unwrap_or(&EMPTY)
    }

    fn bucket_mut(&mut self, charge: &ChargeNo, warehouse: &WarehouseId) -> &mut Bucket {
        self.charges
            .get_mut(charge)
            .expect("decide only moves stock of registered charges")
            .stock
            .entry(warehouse.clone())
            .or_default()
    }

    fn post(&mut self, charge: &ChargeNo, warehouse: &WarehouseId, t: DateTime<Utc>, delta: i64) {
        self.latest_posting = Some(self.latest_posting.map_or(t, |l| l.max(t)));
        let (sequence, horizon) = (self.version, self.horizon().expect("set above"));
        let bucket = self.bucket_mut(charge, warehouse);
        bucket.post(t, sequence, delta);
        bucket.compact(horizon);
    }

    fn info_mut(&mut self) -> &mut ArticleInfo {
        self.article.as_mut().expect("decide only changes registered articles")
    }

    fn charge_mut(&mut self, charge: &ChargeNo) -> &mut ChargeState {
        self.charges.get_mut(charge).expect("decide only changes registered charges")
    }

    fn reserve(&mut self, charge: &ChargeNo, warehouse: &WarehouseId, delta: i64) {
        self.bucket_mut(charge, warehouse).reserved += delta;
    }

    fn shrink_reservation(&mut self, id: &ReservationId, remaining: i64) {
        if remaining == 0 {
            self.reservations.remove(id);
        } else if let Some(r) = self.reservations.get_mut(id) {
            r.remaining = remaining;
        }
    }
}

/// Why an event cannot be folded into a state: the stream is not what the
/// event was decided on (a defect, a lost event or a corrupted record). Readers
/// that fold events they did not decide themselves (the projector, the
/// analysts' tools) check this with [`try_evolve`] instead of trusting it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unfoldable {
    #[error("the article is not registered")]
    ArticleNotRegistered,
    #[error("the article is already registered")]
    ArticleAlreadyRegistered,
    #[error("charge {0} is not registered")]
    ChargeNotRegistered(ChargeNo),
    #[error("charge {0} is already registered")]
    ChargeAlreadyRegistered(ChargeNo),
    #[error("reservation {0} is not open")]
    ReservationNotOpen(ReservationId),
}

/// [`evolve`], after [`check_foldable`].
pub fn try_evolve(state: ArticleState, event: &Event) -> Result<ArticleState, Unfoldable> {
    check_foldable(&state, event)?;
    Ok(evolve(state, event))
}

/// Whether an event fits the state structurally: the article, charge or
/// reservation it refers to exists (or, for registrations, does not yet).
/// This is no business rule (those are [`crate::decide`]'s); it is what
/// [`evolve`] relies on.
pub fn check_foldable(state: &ArticleState, event: &Event) -> Result<(), Unfoldable> {
    let registered = state.article.is_some();
    let charge = |c: &ChargeNo| {
        if !registered {
            Err(Unfoldable::ArticleNotRegistered)
        } else if state.charges.contains_key(c) {
            Ok(())
        } else {
            Err(Unfoldable::ChargeNotRegistered(c.clone()))
        }
    };
    let open = |r: &ReservationId| {
        if state.reservations.contains_key(r) { Ok(()) } else { Err(Unfoldable::ReservationNotOpen(r.clone())) }
    };
    match event {
        Event::ArticleRegistered(_) if registered => Err(Unfoldable::ArticleAlreadyRegistered),
        Event::ArticleRegistered(_) => Ok(()),
        Event::ArticleRenamed(_)
        | Event::ArticleCategoryChanged(_)
        | Event::ReorderPointChanged(_)
        | Event::ArticleDiscontinued(_) => registered.then_some(()).ok_or(Unfoldable::ArticleNotRegistered),
        Event::ChargeRegistered(e) => match charge(&e.charge) {
            Ok(()) => Err(Unfoldable::ChargeAlreadyRegistered(e.charge.clone())),
            Err(Unfoldable::ChargeNotRegistered(_)) => Ok(()),
            Err(other) => Err(other),
        },
        Event::QualityResultRecorded(e) => charge(&e.charge),
        Event::ChargeBlocked(e) => charge(&e.charge),
        Event::ChargeReleased(e) => charge(&e.charge),
        Event::StockReceived(e) => charge(&e.charge),
        Event::StockIssued(e) => charge(&e.charge),
        Event::StockTransferred(e) => charge(&e.charge),
        Event::InventoryCounted(e) => charge(&e.charge),
        Event::StockReserved(e) => charge(&e.charge),
        Event::ReservationReleased(e) => charge(&e.charge).and(open(&e.reservation)),
        Event::ReservationConsumed(e) => charge(&e.charge).and(open(&e.reservation)),
    }
}

/// Folds one event into the state. Deterministic; every event advances the
/// version by one.
pub fn evolve(mut state: ArticleState, event: &Event) -> ArticleState {
    state.version += 1;
    match event {
        Event::ArticleRegistered(e) => {
            state.article = Some(ArticleInfo {
                name: e.name.clone(),
                category: e.category.clone(),
                unit: e.unit.clone(),
                reorder_point: e.reorder_point,
                discontinued: false,
            });
        }
        Event::ArticleRenamed(e) => state.info_mut().name = e.name.clone(),
        Event::ArticleCategoryChanged(e) => state.info_mut().category = e.to.clone(),
        Event::ReorderPointChanged(e) => state.info_mut().reorder_point = e.reorder_point,
        Event::ArticleDiscontinued(_) => state.info_mut().discontinued = true,
        Event::ChargeRegistered(e) => {
            state.charges.insert(
                e.charge.clone(),
                ChargeState {
                    production_date: e.production_date,
                    expiry_date: e.expiry_date,
                    quality_status: e.quality_status,
                    blocked: None,
                    stock: BTreeMap::new(),
                },
            );
        }
        Event::QualityResultRecorded(e) => state.charge_mut(&e.charge).quality_status = e.quality_status,
        Event::ChargeBlocked(e) => state.charge_mut(&e.charge).blocked = Some(e.reason.clone()),
        Event::ChargeReleased(e) => state.charge_mut(&e.charge).blocked = None,
        Event::StockReceived(e) => state.post(&e.charge, &e.warehouse, e.posted_at, e.quantity.get()),
        Event::StockIssued(e) => state.post(&e.charge, &e.warehouse, e.posted_at, -e.quantity.get()),
        Event::StockTransferred(e) => {
            state.post(&e.charge, &e.from, e.posted_at, -e.quantity.get());
            state.post(&e.charge, &e.to, e.posted_at, e.quantity.get());
        }
        Event::InventoryCounted(e) => state.post(&e.charge, &e.warehouse, e.posted_at, e.delta),
        Event::StockReserved(e) => {
            state.reserve(&e.charge, &e.warehouse, e.quantity.get());
            state.reservations.insert(
                e.reservation.clone(),
                Reservation {
                    charge: e.charge.clone(),
                    warehouse: e.warehouse.clone(),
                    reference: e.reference.clone(),
                    remaining: e.quantity.get(),
                },
            );
        }
        Event::ReservationReleased(e) => {
            state.reserve(&e.charge, &e.warehouse, -e.quantity.get());
            state.shrink_reservation(&e.reservation, e.remaining);
        }
        Event::ReservationConsumed(e) => {
            state.reserve(&e.charge, &e.warehouse, -e.quantity.get());
            state.shrink_reservation(&e.reservation, e.remaining);
        }
    }
    state
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(day: u32) -> DateTime<Utc> {
        format!("2026-11-{day:02}T12:00:00Z").parse().unwrap()
    }

    #[test]
    fn a_backdated_posting_shifts_every_later_balance() {
        let mut b = Bucket::default();
        b.post(t(10), 1, 10);
        b.post(t(12), 2, -8);
        b.post(t(11), 3, 5);
        let balances: Vec<i64> = b.ledger.iter().map(|e| e.balance).collect();
        assert_eq!(balances, vec![10, 15, 7]);
        assert_eq!(b.on_hand, 7);
        assert_eq!(b.balance_at(t(11)), 15);
        assert_eq!(b.lowest_after(t(10)), Some((t(12), 7)));
        assert_eq!(b.lowest_after(t(12)), None);
    }

    #[test]
    fn compaction_keeps_the_balance_before_the_horizon() {
        let mut b = Bucket::default();
        b.post(t(1), 1, 10);
        b.post(t(2), 2, -3);
        b.post(t(5), 3, 4);
        b.compact(t(3));
        assert_eq!(b.opening, 7);
        assert_eq!(b.ledger.len(), 1);
        assert_eq!(b.balance_at(t(4)), 7);
        assert_eq!(b.balance_at(t(6)), 11);
    }

    #[test]
    fn an_event_that_does_not_fit_the_state_is_refused_and_leaves_it_unchanged() {
        use crate::{ArticleId, Quantity, StockReceived};
        let receipt = Event::StockReceived(StockReceived {
            article: ArticleId::parse("A").unwrap(),
            charge: ChargeNo::parse("C").unwrap(),
            warehouse: WarehouseId::parse("W").unwrap(),
            quantity: Quantity::new(1).unwrap(),
            posted_at: t(1),
            balance_at_posting: 1,
            on_hand_after: 1,
        });
        assert_eq!(try_evolve(ArticleState::default(), &receipt), Err(Unfoldable::ArticleNotRegistered));
        let registered = ArticleState {
            article: Some(ArticleInfo {
                name: ArticleName::parse("n").unwrap(),
                category: Category::parse("c").unwrap(),
                unit: Unit::new("pcs", 0).unwrap(),
                reorder_point: None,
                discontinued: false,
            }),
            version: 1,
            ..Default::default()
        };
        let refused = try_evolve(registered.clone(), &receipt);
        assert_eq!(refused, Err(Unfoldable::ChargeNotRegistered(ChargeNo::parse("C").unwrap())));
    }

    #[test]
    fn without_ledger_keeps_the_balances_and_forgets_the_postings() {
        let mut state = ArticleState::default();
        let mut bucket = Bucket::default();
        bucket.post(t(1), 1, 10);
        bucket.post(t(2), 2, -4);
        bucket.reserved = 3;
        state.charges.insert(
            ChargeNo::parse("C").unwrap(),
            ChargeState {
                production_date: "2026-01-01".parse().unwrap(),
                expiry_date: None,
                quality_status: QualityStatus::Approved,
                blocked: None,
                stock: [(WarehouseId::parse("W").unwrap(), bucket)].into(),
            },
        );
        let state = state.without_ledger();
        let bucket = &state.charges.values().next().unwrap().stock.values().next().unwrap();
        assert_eq!((bucket.on_hand, bucket.reserved, bucket.opening, bucket.ledger.len()), (6, 3, 6, 0));
    }
}

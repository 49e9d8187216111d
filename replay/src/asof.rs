//! Stock as of a moment: the events folded through the domain's own
//! [`events::evolve`] (after [`events::check_foldable`]), the same fold the
//! command-service and the projector use, keeping only what counts at that moment.
//!
//! - Stock movements count by their **posting time**: a movement posted at
//!   or before `at` counts, even when it was recorded later (backdated).
//! - With `known_at`, only events recorded at or before it are known: the
//!   stock as of `at` as it was known at `known_at` (bitemporal).
//! - Everything else (articles, charges, quality holds) is master data and
//!   always folded (a backdated receipt may be posted before its charge was
//!   registered). Reservations do not change what is on hand and are left out.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use events::{ArticleState, Envelope, Event, check_foldable, evolve};
use serde::Serialize;

/// The stock of one article as of a moment; the same shape as the
/// query-service's `GET /articles/{id}/stock/as-of`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArticleStock {
    pub article: String,
    pub at: DateTime<Utc>,
    pub on_hand: i64,
    /// Per warehouse, those with stock.
    pub warehouses: Vec<WarehouseStock>,
    /// Per charge and warehouse, those with stock.
    pub charges: Vec<ChargeStock>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WarehouseStock {
    pub warehouse: String,
    pub on_hand: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChargeStock {
    pub charge: String,
    pub warehouse: String,
    pub on_hand: i64,
}

/// Folds events into the stock as of `at`.
#[derive(Debug)]
pub struct AsOf {
    at: DateTime<Utc>,
    known_at: Option<DateTime<Utc>>,
    states: BTreeMap<String, ArticleState>,
    folded: u64,
}

impl AsOf {
    pub fn new(at: DateTime<Utc>, known_at: Option<DateTime<Utc>>) -> Self {
        Self { at, known_at, states: BTreeMap::new(), folded: 0 }
    }

    /// Folds one event if it counts as of the moment; an event that does not
    /// fit its article's state is refused with the reason.
    pub fn add(&mut self, envelope: &Envelope) -> Result<(), String> {
        if self.known_at.is_some_and(|k| envelope.recorded_at > k) {
            return Ok(());
        }
        match &envelope.event {
            Event::StockReserved(_) | Event::ReservationReleased(_) | Event::ReservationConsumed(_) => return Ok(()),
            e if e.posted_at().is_some_and(|t| t > self.at) => return Ok(()),
            _ => {}
        }
        let article = envelope.event.article().to_string();
        let state = self.states.remove(&article).unwrap_or_default();
        let (state, result) = match check_foldable(&state, &envelope.event) {
            Ok(()) => (evolve(state, &envelope.event), Ok(())),
            Err(e) => {
                let why = format!("{} of {article} (sequence {}): {e}", envelope.event.event_type(), envelope.sequence);
                (state, Err(why))
            }
        };
        self.states.insert(article, state);
        self.folded += 1;
        if self.folded % 10_000 == 0 {
            // The ledger matters for checking backdated movements, not for
            // what is on hand: dropping it keeps memory bounded.
            for state in self.states.values_mut() {
                *state = std::mem::take(state).without_ledger();
            }
        }
        result
    }

    /// The stock of one article (`None`: no event of it was folded).
    pub fn article(&self, article: &str) -> Option<ArticleStock> {
        self.states.get(article).filter(|s| s.article.is_some()).map(|s| stock_of(article, self.at, s))
    }

    /// The stock of every article folded, by article id.
    pub fn all(&self) -> impl Iterator<Item = ArticleStock> + '_ {
        self.states.iter().filter(|(_, s)| s.article.is_some()).map(|(a, s)| stock_of(a, self.at, s))
    }
}

fn stock_of(article: &str, at: DateTime<Utc>, state: &ArticleState) -> ArticleStock {
    let mut warehouses: BTreeMap<String, i64> = BTreeMap::new();
    let mut charges = Vec::new();
    for (charge, c) in &state.charges {
        for (warehouse, bucket) in &c.stock {
            if bucket.on_hand != 0 {
                *warehouses.entry(warehouse.to_string()).or_default() += bucket.on_hand;
                charges.push(ChargeStock { charge: charge.to_string(), warehouse: warehouse.to_string(), on_hand: bucket.on_hand });
            }
        }
    }
    ArticleStock {
        article: article.to_owned(),
        at,
        on_hand: warehouses.values().sum(),
        warehouses: warehouses
            .into_iter()
            .filter(|(_, n)| *n != 0)
            .map(|(warehouse, on_hand)| WarehouseStock { warehouse, on_hand })
            .collect(),
        charges,
    }
}

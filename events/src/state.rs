//! The state of one article stream, and [`evolve`], which folds an event into it.
//! `evolve` holds no rule: it applies what [`crate::decide`] already allowed.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{ChargeNo, Event, WarehouseId};

/// On hand and reserved quantity of one charge in one warehouse.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockLevel {
    pub on_hand: i64,
    pub reserved: i64,
}

/// Where a [`StockLevel`] is kept.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StockKey {
    pub charge: ChargeNo,
    pub warehouse: WarehouseId,
}

/// Everything the rules need to know about one article.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArticleState {
    /// Sequence number of the last event folded in; 0 for a stream without events.
    pub version: u64,
    /// Stock per charge and warehouse.
    pub stock: BTreeMap<ChargeNo, BTreeMap<WarehouseId, StockLevel>>,
}

impl ArticleState {
    /// The stock of one charge in one warehouse (zero when nothing was posted).
    pub fn level(&self, charge: &ChargeNo, warehouse: &WarehouseId) -> StockLevel {
        self.stock
            .get(charge)
            .and_then(|w| w.get(warehouse))
            .copied()
            .unwrap_or_default()
    }

    fn level_mut(&mut self, charge: &ChargeNo, warehouse: &WarehouseId) -> &mut StockLevel {
        self.stock
            .entry(charge.clone())
            .or_default()
            .entry(warehouse.clone())
            .or_default()
    }
}

/// Folds one event into the state. Deterministic; every event advances the version by one.
pub fn evolve(mut state: ArticleState, event: &Event) -> ArticleState {
    state.version += 1;
    match event {
        Event::StockReceived(e) => {
            state.level_mut(&e.charge, &e.warehouse).on_hand = e.on_hand_after;
        }
    }
    state
}

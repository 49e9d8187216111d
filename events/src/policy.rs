//! Settings that rules depend on, and the clock. Passed to [`crate::decide`]
//! so that it stays a pure function of its inputs.

use std::collections::BTreeSet;

use chrono::{DateTime, Duration, Utc};

use crate::WarehouseId;

/// How much a posting time may lie in the future (clock skew between clients).
pub const FUTURE_TOLERANCE: Duration = Duration::minutes(5);

/// Configurable rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// Warehouses that allow negative stock (as ERPNext's setting): issues,
    /// transfers and reservations there are not limited by available stock.
    pub negative_stock_warehouses: BTreeSet<WarehouseId>,
}

impl Policy {
    pub fn allows_negative(&self, warehouse: &WarehouseId) -> bool {
        self.negative_stock_warehouses.contains(warehouse)
    }
}

/// What `decide` knows besides the state and the command.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// When the command is decided: the default posting time, and the reference
    /// for the posting window and for expiry of reservations.
    pub now: DateTime<Utc>,
    pub policy: &'a Policy,
}

/// The warehouses a sender may act in: every one, or those listed (a
/// scanner's credential is limited to its own warehouse).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Scope {
    #[default]
    Everywhere,
    Only(BTreeSet<WarehouseId>),
}

impl Scope {
    /// `events` unchanged when every warehouse they touch is in scope;
    /// otherwise the first one that is not.
    pub fn permit(&self, events: Vec<crate::Event>) -> Result<Vec<crate::Event>, crate::DomainError> {
        let Scope::Only(allowed) = self else { return Ok(events) };
        let outside = events.iter().flat_map(crate::Event::warehouses).find(|w| !allowed.contains(*w)).cloned();
        match outside {
            Some(warehouse) => Err(crate::DomainError::WarehouseNotPermitted { warehouse }),
            None => Ok(events),
        }
    }
}

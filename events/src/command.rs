//! What write clients ask for. A command is already validated field by field
//! (ids, quantities); whether it is allowed is for [`crate::decide`].

use chrono::{DateTime, Utc};

use crate::{ArticleId, ChargeNo, Quantity, WarehouseId};

/// Every command, each addressed to exactly one article stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    PostReceipt(PostReceipt),
}

impl Command {
    /// The article whose stream decides this command.
    pub fn article(&self) -> &ArticleId {
        match self {
            Command::PostReceipt(c) => &c.article,
        }
    }

    /// The business time of a stock movement; `None` for commands that are not
    /// movements (they count from when they are recorded).
    pub fn posted_at(&self) -> Option<DateTime<Utc>> {
        match self {
            Command::PostReceipt(c) => Some(c.posted_at),
        }
    }
}

/// Goods of one charge arrive in a warehouse (Wareneingang).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostReceipt {
    pub article: ArticleId,
    pub charge: ChargeNo,
    pub warehouse: WarehouseId,
    pub quantity: Quantity,
    /// Business time of the movement; may lie in the past.
    pub posted_at: DateTime<Utc>,
}

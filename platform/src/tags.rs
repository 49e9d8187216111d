//! Cache tags: what the projector announces on the invalidation channel
//! when it changes a read model, and what the query-service's cached answers
//! carry. One place, so publisher and subscriber agree.

/// Everything about one article: its stock document, charges, charge
/// details and movement history.
pub fn article(article: &str) -> String {
    format!("article:{article}")
}

/// A category's summary document and charge list.
pub fn category(category: &str) -> String {
    format!("category:{category}")
}

/// The article catalogue (names, categories, units, reorder points).
pub const CATALOGUE: &str = "catalogue";

/// The low-stock list.
pub const LOW_STOCK: &str = "low-stock";

/// Everything (a generation swap, or a repair whose changes are not known one by one).
pub const ALL: &str = "*";

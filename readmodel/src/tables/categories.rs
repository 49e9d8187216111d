//! `categories`: per category, how many charges it has, how many with
//! stock, how many blocked, and their stock on hand, with a version that
//! counts the events that changed it (the planning documents'
//! `mv_chargen_pro_kategorie`). Every batch adds its deltas in one upsert,
//! the last write of its transaction (rows other lanes change too); the
//! summary document is built from the row it returns. Read to tell an
//! unknown category (404).

use std::collections::BTreeMap;

use serde::Serialize;
use sqlx::{PgExecutor, Postgres};

/// A row of `categories`.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, Serialize)]
pub struct CategoryRow {
    pub category: String,
    pub charges: i64,
    pub charges_in_stock: i64,
    pub on_hand: i64,
    pub blocked: i64,
    pub version: i64,
}

/// What events add to a category's row; `events` counts them (the row's version).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CategoryDelta {
    pub charges: i64,
    pub charges_in_stock: i64,
    pub on_hand: i64,
    pub blocked: i64,
    pub events: i64,
}

impl CategoryDelta {
    /// Whether it changes no figure (whatever its event count).
    pub fn is_zero(&self) -> bool {
        (self.charges, self.charges_in_stock, self.on_hand, self.blocked) == (0, 0, 0, 0)
    }

    /// Subtracts `other`'s figures (not its event count) from `self`'s.
    pub fn subtract(&mut self, other: &CategoryDelta) {
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

/// The writer's statements of one generation.
#[derive(Debug, Clone)]
pub struct Statements {
    add: String,
}

impl Statements {
    pub fn new(s: &str) -> Self {
        Self {
            add: format!(
                "insert into {s}.categories as c (category, charges, charges_in_stock, on_hand, blocked, version)
                 select * from unnest($1::text[], $2::int8[], $3::int8[], $4::int8[], $5::int8[], $6::int8[])
                 on conflict (category) do update set charges = c.charges + excluded.charges,
                     charges_in_stock = c.charges_in_stock + excluded.charges_in_stock,
                     on_hand = c.on_hand + excluded.on_hand, blocked = c.blocked + excluded.blocked,
                     version = c.version + excluded.version
                 returning category, charges, charges_in_stock, on_hand, blocked, version"
            ),
        }
    }

    pub fn all(&self) -> Vec<(&'static str, &str)> {
        vec![("upsert_categories", &self.add)]
    }
}

/// Adds `deltas` to their categories' rows (creating them), in category
/// order; returns the rows as they are now.
pub fn add<'q>(
    sql: &'q Statements,
    deltas: &'q BTreeMap<String, CategoryDelta>,
) -> sqlx::query::QueryAs<'q, Postgres, CategoryRow, sqlx::postgres::PgArguments> {
    sqlx::query_as(&sql.add)
        .bind(deltas.keys().map(String::as_str).collect::<Vec<_>>())
        .bind(deltas.values().map(|d| d.charges).collect::<Vec<_>>())
        .bind(deltas.values().map(|d| d.charges_in_stock).collect::<Vec<_>>())
        .bind(deltas.values().map(|d| d.on_hand).collect::<Vec<_>>())
        .bind(deltas.values().map(|d| d.blocked).collect::<Vec<_>>())
        .bind(deltas.values().map(|d| d.events).collect::<Vec<_>>())
}

/// Whether a charge was ever registered in `category`.
pub async fn exists<'c>(db: impl PgExecutor<'c>, schema: &str, category: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(&exists_sql(schema)).bind(category).fetch_one(db).await
}

fn exists_sql(s: &str) -> String {
    format!("select exists (select 1 from {s}.categories where category = $1)")
}

/// Every reader's statement, named, for `tests/schema.rs`.
pub fn readers(s: &str) -> Vec<(&'static str, String)> {
    vec![("category_exists", exists_sql(s))]
}

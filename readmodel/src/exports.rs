//! Whole-table exports the query-service streams as CSV or NDJSON: the
//! catalogue (table `articles`) and the stock per article, charge and
//! warehouse (table `charges`, one row per warehouse of its `warehouses`),
//! each in key order. Read with `fetch` (row by row from one statement), so
//! an export takes constant memory however large the tables.

use futures::stream::BoxStream;
use serde::Serialize;
use sqlx::PgConnection;

/// One article of the catalogue.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct CatalogueRow {
    pub article: String,
    pub name: String,
    pub category: String,
    pub unit: String,
    pub unit_decimals: i16,
    pub reorder_point: Option<i64>,
    pub discontinued: bool,
}

impl CatalogueRow {
    pub const HEADER: [&'static str; 7] = ["article", "name", "category", "unit", "unit_decimals", "reorder_point", "discontinued"];

    /// The row's fields as text, in [`Self::HEADER`] order.
    pub fn fields(&self) -> [String; 7] {
        [
            self.article.clone(),
            self.name.clone(),
            self.category.clone(),
            self.unit.clone(),
            self.unit_decimals.to_string(),
            self.reorder_point.map(|r| r.to_string()).unwrap_or_default(),
            self.discontinued.to_string(),
        ]
    }
}

/// The stock of one charge in one warehouse.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct StockRow {
    pub article: String,
    pub charge: String,
    pub warehouse: String,
    pub category: String,
    pub quality_status: String,
    pub expiry_date: Option<chrono::NaiveDate>,
    pub on_hand: i64,
    pub reserved: i64,
}

impl StockRow {
    pub const HEADER: [&'static str; 8] =
        ["article", "charge", "warehouse", "category", "quality_status", "expiry_date", "on_hand", "reserved"];

    /// The row's fields as text, in [`Self::HEADER`] order.
    pub fn fields(&self) -> [String; 8] {
        [
            self.article.clone(),
            self.charge.clone(),
            self.warehouse.clone(),
            self.category.clone(),
            self.quality_status.clone(),
            self.expiry_date.map(|d| d.to_string()).unwrap_or_default(),
            self.on_hand.to_string(),
            self.reserved.to_string(),
        ]
    }
}

/// The statement of [`catalogue`] for a generation's schema.
pub fn catalogue_sql(schema: &str) -> String {
    format!(
        "select article_id as article, name, category, unit_code as unit, unit_decimals, reorder_point, discontinued
         from {schema}.articles order by article_id"
    )
}

/// The statement of [`stock`] for a generation's schema.
pub fn stock_sql(schema: &str) -> String {
    format!(
        "select c.article_id as article, c.charge, w.key as warehouse, c.category, c.quality_status, c.expiry_date,
                (w.value->>'on_hand')::int8 as on_hand, (w.value->>'reserved')::int8 as reserved
         from {schema}.charges c cross join lateral jsonb_each(c.warehouses) w
         order by c.article_id, c.charge, w.key"
    )
}

/// Every article, by id; `sql` is [`catalogue_sql`] of the serving schema.
pub fn catalogue<'c>(conn: &'c mut PgConnection, sql: &'c str) -> BoxStream<'c, Result<CatalogueRow, sqlx::Error>> {
    sqlx::query_as(sql).fetch(conn)
}

/// Every charge's stock per warehouse, by article, charge and warehouse;
/// `sql` is [`stock_sql`] of the serving schema.
pub fn stock<'c>(conn: &'c mut PgConnection, sql: &'c str) -> BoxStream<'c, Result<StockRow, sqlx::Error>> {
    sqlx::query_as(sql).fetch(conn)
}

/// The readers' statements of one generation (prepared by `tests/schema.rs`).
pub fn readers(s: &str) -> Vec<(&'static str, String)> {
    vec![("export_catalogue", catalogue_sql(s)), ("export_stock", stock_sql(s))]
}

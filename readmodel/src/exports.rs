//! Whole-table exports the query-service streams as CSV or NDJSON: the
//! catalogue (table `articles`) and the stock per article, charge and
//! warehouse (table `charges`, one row per warehouse of its `warehouses`),
//! each in key order. Read with `fetch` (row by row from one statement), so
//! an export takes constant memory however large the tables.

use futures::stream::BoxStream;
use serde::Serialize;
use sqlx::PgConnection;
use sqlx::postgres::PgRow;

/// A row of an export: its name, its columns, its statement and its fields.
pub trait ExportRow: for<'r> sqlx::FromRow<'r, PgRow> + Serialize + Send + Sync + Unpin + 'static {
    /// The export's name (its file name without extension).
    const NAME: &'static str;
    /// The column names, in the order of [`ExportRow::fields`].
    const HEADER: &'static [&'static str];
    /// The statement for a generation's schema, in key order.
    fn sql(schema: &str) -> String;
    /// The row's fields as text.
    fn fields(&self) -> Vec<String>;
}

/// Every row of export `R`, one by one; `sql` is `R::sql` of the serving schema.
pub fn rows<'c, R: ExportRow>(conn: &'c mut PgConnection, sql: &'c str) -> BoxStream<'c, Result<R, sqlx::Error>> {
    sqlx::query_as(sql).fetch(conn)
}

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

impl ExportRow for CatalogueRow {
    const NAME: &'static str = "catalogue";
    const HEADER: &'static [&'static str] = &["article", "name", "category", "unit", "unit_decimals", "reorder_point", "discontinued"];

    fn sql(schema: &str) -> String {
        format!(
            "select article_id as article, name, category, unit_code as unit, unit_decimals, reorder_point, discontinued
             from {schema}.articles order by article_id"
        )
    }

    fn fields(&self) -> Vec<String> {
        vec![
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

impl ExportRow for StockRow {
    const NAME: &'static str = "stock";
    const HEADER: &'static [&'static str] =
        &["article", "charge", "warehouse", "category", "quality_status", "expiry_date", "on_hand", "reserved"];

    fn sql(schema: &str) -> String {
        format!(
            "select c.article_id as article, c.charge, w.key as warehouse, c.category, c.quality_status, c.expiry_date,
                    (w.value->>'on_hand')::int8 as on_hand, (w.value->>'reserved')::int8 as reserved
             from {schema}.charges c cross join lateral jsonb_each(c.warehouses) w
             order by c.article_id, c.charge, w.key"
        )
    }

    fn fields(&self) -> Vec<String> {
        vec![
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

/// The readers' statements of one generation (prepared by `tests/schema.rs`).
pub fn readers(s: &str) -> Vec<(&'static str, String)> {
    vec![("export_catalogue", CatalogueRow::sql(s)), ("export_stock", StockRow::sql(s))]
}

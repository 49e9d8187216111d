//! The reports the worker writes as files (docs/jobs.md): each a statement
//! over one generation's read models and its columns. Every column comes
//! back as text (a file holds text), and says whether it is a number (a
//! spreadsheet cell is then a number). Reports read, never lock: the
//! worker runs them in a read-only transaction of their own.

use chrono::{DateTime, NaiveDate, Utc};

use crate::exports::{CatalogueRow, ExportRow, StockRow};

/// A column of a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    pub name: &'static str,
    pub number: bool,
}

const fn text(name: &'static str) -> Column {
    Column { name, number: false }
}

const fn number(name: &'static str) -> Column {
    Column { name, number: true }
}

/// What a report is filtered by; each report reads the ones it takes
/// (the command-service checks that no other is given).
#[derive(Debug, Clone, Default)]
pub struct Filters {
    pub as_of: Option<DateTime<Utc>>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub article: Option<String>,
    pub category: Option<String>,
    pub warehouse: Option<String>,
    /// Charges expiring on or before this day.
    pub expiring_by: Option<NaiveDate>,
}

/// A report ready to run: its columns and its statement, which takes the
/// [`Filters`] as `$1` to `$7` in their order.
#[derive(Debug, Clone)]
pub struct Report {
    pub columns: Vec<Column>,
    pub sql: String,
}

/// Binds the filters to a report's statement.
pub fn bind<'q>(sql: &'q str, f: &'q Filters) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    sqlx::query(sql)
        .bind(f.as_of)
        .bind(f.from)
        .bind(f.to)
        .bind(f.article.as_deref())
        .bind(f.category.as_deref())
        .bind(f.warehouse.as_deref())
        .bind(f.expiring_by)
}

/// A whole-table export as a report (every column as text).
fn export<R: ExportRow>(s: &str, numbers: &[&str]) -> Report {
    let columns = R::HEADER.iter().map(|c| Column { name: c, number: numbers.contains(c) }).collect();
    let select = R::HEADER.iter().map(|c| format!("x.{c}::text")).collect::<Vec<_>>().join(", ");
    let sql = format!(
        "select {select} from ({}) x where $1::timestamptz is null and $2::timestamptz is null and $3::timestamptz is null
           and $4::text is null and $5::text is null and ($6::text is null or {}) and $7::date is null",
        R::sql(s),
        if R::HEADER.contains(&"warehouse") { "x.warehouse = $6" } else { "false" }
    );
    Report { columns, sql }
}

/// The article catalogue.
pub fn catalogue(s: &str) -> Report {
    export::<CatalogueRow>(s, &["unit_decimals", "reorder_point"])
}

/// Stock per article, charge and warehouse: now ([`StockRow`]), or as of
/// `$1` (the balance after the last movement posted at or before it).
pub fn stock(s: &str, as_of: bool) -> Report {
    if !as_of {
        return export::<StockRow>(s, &["on_hand", "reserved"]);
    }
    Report {
        columns: vec![text("article"), text("charge"), text("warehouse"), text("category"), text("expiry_date"), number("on_hand")],
        sql: format!(
            "select c.article_id, c.charge, w.warehouse, c.category::text, c.expiry_date::text, m.balance::text
             from {s}.charges c
             cross join jsonb_object_keys(c.warehouses) as w(warehouse)
             cross join lateral (
                 select balance from {s}.movements
                 where article_id = c.article_id and charge = c.charge and warehouse = w.warehouse and posted_at <= $1
                 order by posted_at desc, sequence desc, leg desc limit 1
             ) m
             where m.balance <> 0 and ($6::text is null or w.warehouse = $6)
               and $2::timestamptz is null and $3::timestamptz is null and $4::text is null and $5::text is null and $7::date is null
             order by c.article_id, c.charge, w.warehouse"
        ),
    }
}

/// The movement journal of `[$2, $3)` by posting time, optionally for one
/// article (`$4`), category (`$5`) or warehouse (`$6`).
pub fn movements(s: &str) -> Report {
    Report {
        columns: vec![
            text("posted_at"),
            text("article"),
            text("charge"),
            text("warehouse"),
            text("kind"),
            number("delta"),
            number("balance"),
            text("reservation"),
            text("event_id"),
        ],
        sql: format!(
            "select to_char(m.posted_at at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), m.article_id, m.charge, m.warehouse,
                    m.kind, m.delta::text, m.balance::text, m.reservation_id, m.event_id::text
             from {s}.movements m
             where m.posted_at >= $2 and m.posted_at < $3
               and ($4::text is null or m.article_id = $4)
               and ($5::text is null or exists (select 1 from {s}.articles a where a.article_id = m.article_id and a.category = $5))
               and ($6::text is null or m.warehouse = $6)
               and $1::timestamptz is null and $7::date is null
             order by m.posted_at, m.article_id, m.sequence, m.leg"
        ),
    }
}

/// Charges with stock that expire on or before `$7`, soonest first.
pub fn expiring(s: &str) -> Report {
    Report {
        columns: vec![
            text("article"),
            text("charge"),
            text("category"),
            text("expiry_date"),
            text("quality_status"),
            number("on_hand"),
            number("reserved"),
        ],
        sql: format!(
            "select article_id, charge, category::text, expiry_date::text, quality_status, on_hand::text, reserved::text
             from {s}.charges
             where expiry_date <= $7 and on_hand > 0
               and $1::timestamptz is null and $2::timestamptz is null and $3::timestamptz is null
               and $4::text is null and $5::text is null and $6::text is null
             order by expiry_date, article_id, charge"
        ),
    }
}

/// Articles below their reorder point.
pub fn low_stock(s: &str) -> Report {
    Report {
        columns: vec![text("article"), text("name"), text("category"), number("reorder_point"), number("on_hand")],
        sql: format!(
            "select article_id, name, category, reorder_point::text, on_hand::text from {s}.low_stock
             where $1::timestamptz is null and $2::timestamptz is null and $3::timestamptz is null
               and $4::text is null and $5::text is null and $6::text is null and $7::date is null
             order by article_id"
        ),
    }
}

/// Charges, charges in stock, stock and blocked stock per category.
pub fn charges_per_category(s: &str) -> Report {
    Report {
        columns: vec![text("category"), number("charges"), number("charges_in_stock"), number("on_hand"), number("blocked")],
        sql: format!(
            "select category::text, charges::text, charges_in_stock::text, on_hand::text, blocked::text from {s}.categories
             where $1::timestamptz is null and $2::timestamptz is null and $3::timestamptz is null
               and $4::text is null and $5::text is null and $6::text is null and $7::date is null
             order by category"
        ),
    }
}

/// Every report's statement, named, for `tests/schema.rs`.
pub fn readers(s: &str) -> Vec<(&'static str, String)> {
    vec![
        ("report_catalogue", catalogue(s).sql),
        ("report_stock", stock(s, false).sql),
        ("report_stock_as_of", stock(s, true).sql),
        ("report_movements", movements(s).sql),
        ("report_expiring", expiring(s).sql),
        ("report_low_stock", low_stock(s).sql),
        ("report_charges_per_category", charges_per_category(s).sql),
    ]
}

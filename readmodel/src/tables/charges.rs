//! `charges`: every charge of every article with its dates, quality status,
//! quality hold, stock in total and per warehouse (`warehouses`, JSON: every
//! warehouse the charge was ever in). Written by the projector; read by the
//! charge lists (of an article, of a category), the charge detail, and the
//! projector itself to rebuild a stream's state it does not hold.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use sqlx::types::Json;
use sqlx::{PgExecutor, PgPool, Postgres, QueryBuilder};

use super::Query;
use super::reservations::{self, ReservationItem};

/// Stock of a charge in one warehouse, as kept in `charges.warehouses`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WarehouseStock {
    pub on_hand: i64,
    pub reserved: i64,
}

/// The stored name of a quality status (`charges.quality_status`), as in the events' JSON.
pub fn quality_status(status: events::QualityStatus) -> &'static str {
    match status {
        events::QualityStatus::Pending => "pending",
        events::QualityStatus::Approved => "approved",
        events::QualityStatus::Rejected => "rejected",
    }
}

/// A row of `charges` as the projector writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChargeRow {
    pub article_id: String,
    pub charge: String,
    pub category: String,
    pub production_date: NaiveDate,
    pub expiry_date: Option<NaiveDate>,
    pub quality_status: &'static str,
    pub blocked_reason: Option<String>,
    pub on_hand: i64,
    pub reserved: i64,
    /// Every warehouse the charge was ever in, by id.
    pub warehouses: BTreeMap<String, WarehouseStock>,
    /// The row is in the table already (written by an earlier batch): updated, not inserted.
    pub stored: bool,
}

/// What a stream's state is rebuilt from: a charge as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCharge {
    pub charge: String,
    pub production_date: NaiveDate,
    pub expiry_date: Option<NaiveDate>,
    pub quality_status: String,
    pub blocked_reason: Option<String>,
    pub warehouses: BTreeMap<String, WarehouseStock>,
}

/// The writer's statements of one generation.
#[derive(Debug, Clone)]
pub struct Statements {
    load: String,
    upsert: String,
    update: String,
}

impl Statements {
    pub fn new(s: &str) -> Self {
        Self {
            load: format!(
                "select article_id, charge, production_date, expiry_date, quality_status, blocked_reason, warehouses
                 from {s}.charges where article_id = any($1)"
            ),
            upsert: format!(
                "insert into {s}.charges (article_id, charge, category, production_date, expiry_date, quality_status,
                                          blocked_reason, on_hand, reserved, warehouses)
                 select * from unnest($1::text[], $2::text[], $3::text[], $4::date[], $5::date[], $6::text[],
                                      $7::text[], $8::int8[], $9::int8[], $10::jsonb[])
                 on conflict (article_id, charge) do update set category = excluded.category,
                     production_date = excluded.production_date, expiry_date = excluded.expiry_date,
                     quality_status = excluded.quality_status, blocked_reason = excluded.blocked_reason,
                     on_hand = excluded.on_hand, reserved = excluded.reserved, warehouses = excluded.warehouses"
            ),
            // Charges already stored: an update is cheaper than an insert that conflicts.
            update: format!(
                "update {s}.charges c set category = u.category, production_date = u.production_date,
                     expiry_date = u.expiry_date, quality_status = u.quality_status, blocked_reason = u.blocked_reason,
                     on_hand = u.on_hand, reserved = u.reserved, warehouses = u.warehouses
                 from unnest($1::text[], $2::text[], $3::text[], $4::date[], $5::date[], $6::text[],
                             $7::text[], $8::int8[], $9::int8[], $10::jsonb[])
                     as u(article_id, charge, category, production_date, expiry_date, quality_status,
                          blocked_reason, on_hand, reserved, warehouses)
                 where c.article_id = u.article_id and c.charge = u.charge"
            ),
        }
    }

    pub fn all(&self) -> Vec<(&'static str, &str)> {
        vec![("load_charges", &self.load), ("upsert_charges", &self.upsert), ("update_charges", &self.update)]
    }
}

type LoadedRow = (String, String, NaiveDate, Option<NaiveDate>, String, Option<String>, Json<BTreeMap<String, WarehouseStock>>);

/// The stored charges of `articles`, by article.
pub async fn load<'c>(db: impl PgExecutor<'c>, sql: &Statements, articles: &[&str]) -> Result<Vec<(String, StoredCharge)>, sqlx::Error> {
    let rows: Vec<LoadedRow> = sqlx::query_as(&sql.load).bind(articles).fetch_all(db).await?;
    Ok(rows
        .into_iter()
        .map(|(article, charge, production_date, expiry_date, quality_status, blocked_reason, warehouses)| {
            (article, StoredCharge { charge, production_date, expiry_date, quality_status, blocked_reason, warehouses: warehouses.0 })
        })
        .collect())
}

/// Updates `rows` (all of them stored before).
pub fn update<'q>(sql: &'q Statements, rows: &'q [&'q ChargeRow]) -> Query<'q> {
    bind(&sql.update, rows)
}

/// Inserts or replaces `rows`.
pub fn upsert<'q>(sql: &'q Statements, rows: &'q [&'q ChargeRow]) -> Query<'q> {
    bind(&sql.upsert, rows)
}

fn bind<'q>(statement: &'q str, charges: &'q [&'q ChargeRow]) -> Query<'q> {
    sqlx::query(statement)
        .bind(charges.iter().map(|c| c.article_id.as_str()).collect::<Vec<_>>())
        .bind(charges.iter().map(|c| c.charge.as_str()).collect::<Vec<_>>())
        .bind(charges.iter().map(|c| c.category.as_str()).collect::<Vec<_>>())
        .bind(charges.iter().map(|c| c.production_date).collect::<Vec<_>>())
        .bind(charges.iter().map(|c| c.expiry_date).collect::<Vec<_>>())
        .bind(charges.iter().map(|c| c.quality_status).collect::<Vec<_>>())
        .bind(charges.iter().map(|c| c.blocked_reason.as_deref()).collect::<Vec<_>>())
        .bind(charges.iter().map(|c| c.on_hand).collect::<Vec<_>>())
        .bind(charges.iter().map(|c| c.reserved).collect::<Vec<_>>())
        .bind(charges.iter().map(|c| Json(&c.warehouses)).collect::<Vec<_>>())
}

/// A charge as the lists show it: its dates, status and stock.
#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct ChargeItem {
    pub article: String,
    pub charge: String,
    pub production_date: NaiveDate,
    pub expiry_date: Option<NaiveDate>,
    pub quality_status: String,
    pub blocked_reason: Option<String>,
    pub on_hand: i64,
    pub reserved: i64,
    pub available: i64,
}

/// The columns of a [`ChargeItem`].
const ITEM_COLUMNS: &str = "article_id as article, charge, production_date, expiry_date, quality_status, \
                            blocked_reason, on_hand, reserved, on_hand - reserved as available";

/// The charges of `article` by production date, newest first, after
/// `after` (date and charge of the previous page's last), at most `limit`;
/// `None` when the article is unknown.
pub async fn of_article(
    db: &PgPool,
    schema: &str,
    article: &str,
    after: Option<(NaiveDate, String)>,
    limit: i64,
) -> Result<Option<Vec<ChargeItem>>, sqlx::Error> {
    let rows: Vec<ChargeItem> = of_article_query(schema, article, after, limit).build_query_as().fetch_all(db).await?;
    if rows.is_empty() && !super::articles::exists(db, schema, article).await? {
        return Ok(None);
    }
    Ok(Some(rows))
}

fn of_article_query(schema: &str, article: &str, after: Option<(NaiveDate, String)>, limit: i64) -> QueryBuilder<'static, Postgres> {
    let mut q = QueryBuilder::new(format!("select {ITEM_COLUMNS} from {schema}.charges where article_id = "));
    q.push_bind(article.to_owned());
    if let Some((date, charge)) = after {
        q.push(" and (production_date, charge) < (").push_bind(date).push(", ").push_bind(charge).push(")");
    }
    q.push(" order by production_date desc, charge desc limit ").push_bind(limit);
    q
}

/// The charges of `category` by production date, newest first, after
/// `after` (date, article and charge of the previous page's last), at most
/// `limit`; `None` when no charge was ever registered in the category.
pub async fn of_category(
    db: &PgPool,
    schema: &str,
    category: &str,
    after: Option<(NaiveDate, String, String)>,
    limit: i64,
) -> Result<Option<Vec<ChargeItem>>, sqlx::Error> {
    let rows: Vec<ChargeItem> = of_category_query(schema, category, after, limit).build_query_as().fetch_all(db).await?;
    if rows.is_empty() && !super::categories::exists(db, schema, category).await? {
        return Ok(None);
    }
    Ok(Some(rows))
}

fn of_category_query(schema: &str, category: &str, after: Option<(NaiveDate, String, String)>, limit: i64) -> QueryBuilder<'static, Postgres> {
    let mut q = QueryBuilder::new(format!("select {ITEM_COLUMNS} from {schema}.charges where category = "));
    q.push_bind(category.to_owned());
    if let Some((date, article, charge)) = after {
        q.push(" and (production_date, article_id, charge) < (")
            .push_bind(date)
            .push(", ")
            .push_bind(article)
            .push(", ")
            .push_bind(charge)
            .push(")");
    }
    q.push(" order by production_date desc, article_id desc, charge desc limit ").push_bind(limit);
    q
}

/// One charge: dates, status, hold, stock in total and per warehouse (those
/// with stock), and its open reservations.
#[derive(Debug, Serialize)]
pub struct ChargeDetail {
    pub article: String,
    pub charge: String,
    pub category: String,
    pub production_date: NaiveDate,
    pub expiry_date: Option<NaiveDate>,
    pub quality_status: String,
    pub blocked: bool,
    pub blocked_reason: Option<String>,
    pub on_hand: i64,
    pub reserved: i64,
    pub available: i64,
    pub warehouses: Vec<serde_json::Value>,
    pub reservations: Vec<ReservationItem>,
}

type DetailRow = (String, NaiveDate, Option<NaiveDate>, String, Option<String>, i64, i64, Json<BTreeMap<String, WarehouseStock>>);

/// One charge of `article`; `None` when either is unknown.
pub async fn detail(db: &PgPool, schema: &str, article: &str, charge: &str) -> Result<Option<ChargeDetail>, sqlx::Error> {
    let row: Option<DetailRow> = sqlx::query_as(&detail_sql(schema)).bind(article).bind(charge).fetch_optional(db).await?;
    let Some((category, production_date, expiry_date, quality_status, blocked_reason, on_hand, reserved, Json(stock))) = row else {
        return Ok(None);
    };
    let reservations = reservations::of_charge(db, schema, article, charge).await?;
    let warehouses = stock
        .iter()
        .filter(|(_, f)| f.on_hand != 0 || f.reserved != 0)
        .map(|(w, f)| serde_json::json!({ "warehouse": w, "on_hand": f.on_hand, "reserved": f.reserved, "available": f.on_hand - f.reserved }))
        .collect();
    Ok(Some(ChargeDetail {
        article: article.to_owned(),
        charge: charge.to_owned(),
        category,
        production_date,
        expiry_date,
        quality_status,
        blocked: blocked_reason.is_some(),
        blocked_reason,
        on_hand,
        reserved,
        available: on_hand - reserved,
        warehouses,
        reservations,
    }))
}

fn detail_sql(s: &str) -> String {
    format!(
        "select category, production_date, expiry_date, quality_status, blocked_reason, on_hand, reserved, warehouses
         from {s}.charges where article_id = $1 and charge = $2"
    )
}

/// Whether `charge` of `article` is registered.
pub async fn exists<'c>(db: impl PgExecutor<'c>, schema: &str, article: &str, charge: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(&exists_sql(schema)).bind(article).bind(charge).fetch_one(db).await
}

fn exists_sql(s: &str) -> String {
    format!("select exists (select 1 from {s}.charges where article_id = $1 and charge = $2)")
}

/// Every reader's statement (each variant), named, for `tests/schema.rs`.
pub fn readers(s: &str) -> Vec<(&'static str, String)> {
    let date = NaiveDate::from_ymd_opt(2026, 1, 1).expect("a date");
    vec![
        ("article_charges", of_article_query(s, "A", None, 1).sql().to_owned()),
        ("article_charges", of_article_query(s, "A", Some((date, "C".into())), 1).sql().to_owned()),
        ("category_charges", of_category_query(s, "c", None, 1).sql().to_owned()),
        ("category_charges", of_category_query(s, "c", Some((date, "A".into(), "C".into())), 1).sql().to_owned()),
        ("charge_detail", detail_sql(s)),
        ("charge_exists", exists_sql(s)),
    ]
}

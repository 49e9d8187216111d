//! `low_stock`: the articles whose available stock is below their reorder
//! point (not discontinued ones), with their figures. The projector keeps a
//! row exactly while an article is low; `GET /low-stock` reads it by id.

use serde::Serialize;
use sqlx::{PgExecutor, Postgres, QueryBuilder};

use super::Query;

/// A row of `low_stock`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LowStockRow {
    pub article_id: String,
    pub name: String,
    pub category: String,
    pub reorder_point: i64,
    pub on_hand: i64,
    pub reserved: i64,
}

/// What happens to an article's row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LowStock {
    Upsert(LowStockRow),
    Delete(String),
}

/// The writer's statements of one generation.
#[derive(Debug, Clone)]
pub struct Statements {
    upsert: String,
    delete: String,
}

impl Statements {
    pub fn new(s: &str) -> Self {
        Self {
            upsert: format!(
                "insert into {s}.low_stock (article_id, name, category, reorder_point, on_hand, reserved)
                 select * from unnest($1::text[], $2::text[], $3::text[], $4::int8[], $5::int8[], $6::int8[])
                 on conflict (article_id) do update set name = excluded.name, category = excluded.category,
                     reorder_point = excluded.reorder_point, on_hand = excluded.on_hand, reserved = excluded.reserved"
            ),
            delete: format!("delete from {s}.low_stock where article_id = any($1)"),
        }
    }

    pub fn all(&self) -> Vec<(&'static str, &str)> {
        vec![("upsert_low_stock", &self.upsert), ("delete_low_stock", &self.delete)]
    }
}

/// Inserts or replaces `rows`.
pub fn upsert<'q>(sql: &'q Statements, rows: &[&'q LowStockRow]) -> Query<'q> {
    sqlx::query(&sql.upsert)
        .bind(rows.iter().map(|l| l.article_id.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|l| l.name.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|l| l.category.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|l| l.reorder_point).collect::<Vec<_>>())
        .bind(rows.iter().map(|l| l.on_hand).collect::<Vec<_>>())
        .bind(rows.iter().map(|l| l.reserved).collect::<Vec<_>>())
}

/// Deletes the rows of `articles` (no longer low).
pub fn delete<'q>(sql: &'q Statements, articles: &'q [&'q str]) -> Query<'q> {
    sqlx::query(&sql.delete).bind(articles)
}

/// An article as `GET /low-stock` lists it.
#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct LowStockItem {
    pub article: String,
    pub name: String,
    pub category: String,
    pub reorder_point: i64,
    pub on_hand: i64,
    pub reserved: i64,
    pub available: i64,
}

/// The low articles by id after `after`, at most `limit`.
pub async fn page<'c>(db: impl PgExecutor<'c>, schema: &str, after: Option<String>, limit: i64) -> Result<Vec<LowStockItem>, sqlx::Error> {
    page_query(schema, after, limit).build_query_as().fetch_all(db).await
}

fn page_query(schema: &str, after: Option<String>, limit: i64) -> QueryBuilder<'static, Postgres> {
    let mut q = QueryBuilder::new(format!(
        "select article_id as article, name, category, reorder_point, on_hand, reserved, \
         on_hand - reserved as available from {schema}.low_stock"
    ));
    if let Some(after) = after {
        q.push(" where article_id > ").push_bind(after);
    }
    q.push(" order by article_id limit ").push_bind(limit);
    q
}

/// Every reader's statement, named, for `tests/schema.rs`.
pub fn readers(s: &str) -> Vec<(&'static str, String)> {
    [None, Some("A".to_owned())].into_iter().map(|after| ("low_stock", page_query(s, after, 1).sql().to_owned())).collect()
}

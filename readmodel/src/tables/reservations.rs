//! `reservations`: the open reservations of every article (a reservation is
//! deleted once nothing of it remains). Written by the projector; read by
//! the charge detail, and by the projector to rebuild a stream's state.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgExecutor, Postgres};

use super::Query;

/// A row of `reservations` (an open reservation).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ReservationRow {
    pub article_id: String,
    pub reservation_id: String,
    pub charge: String,
    pub warehouse: String,
    pub reference: String,
    pub remaining: i64,
    /// When the reservation was made; kept from its first row.
    pub reserved_at: DateTime<Utc>,
}

/// The writer's statements of one generation.
#[derive(Debug, Clone)]
pub struct Statements {
    load: String,
    upsert: String,
    delete: String,
}

impl Statements {
    pub fn new(s: &str) -> Self {
        Self {
            load: format!(
                "select article_id, reservation_id, charge, warehouse, reference, remaining, reserved_at
                 from {s}.reservations where article_id = any($1)"
            ),
            upsert: format!(
                "insert into {s}.reservations (article_id, reservation_id, charge, warehouse, reference, remaining, reserved_at)
                 select * from unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int8[], $7::timestamptz[])
                 on conflict (article_id, reservation_id) do update set charge = excluded.charge,
                     warehouse = excluded.warehouse, reference = excluded.reference, remaining = excluded.remaining"
            ),
            delete: format!(
                "delete from {s}.reservations r using unnest($1::text[], $2::text[]) as d(article_id, reservation_id)
                 where r.article_id = d.article_id and r.reservation_id = d.reservation_id"
            ),
        }
    }

    pub fn all(&self) -> Vec<(&'static str, &str)> {
        vec![("load_reservations", &self.load), ("upsert_reservations", &self.upsert), ("delete_reservations", &self.delete)]
    }
}

/// The open reservations of `articles`.
pub fn load<'q>(sql: &'q Statements, articles: &'q [&'q str]) -> sqlx::query::QueryAs<'q, Postgres, ReservationRow, sqlx::postgres::PgArguments> {
    sqlx::query_as(&sql.load).bind(articles)
}

/// Inserts or replaces `rows`.
pub fn upsert<'q>(sql: &'q Statements, rows: &[&'q ReservationRow]) -> Query<'q> {
    sqlx::query(&sql.upsert)
        .bind(rows.iter().map(|r| r.article_id.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.reservation_id.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.charge.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.warehouse.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.reference.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.remaining).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.reserved_at).collect::<Vec<_>>())
}

/// Deletes closed reservations: (article, reservation) pairs.
pub fn delete<'q>(sql: &'q Statements, closed: &[(&'q str, &'q str)]) -> Query<'q> {
    sqlx::query(&sql.delete)
        .bind(closed.iter().map(|c| c.0).collect::<Vec<_>>())
        .bind(closed.iter().map(|c| c.1).collect::<Vec<_>>())
}

/// An open reservation as the charge detail shows it.
#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct ReservationItem {
    pub reservation: String,
    pub warehouse: String,
    pub reference: String,
    pub remaining: i64,
    pub reserved_at: DateTime<Utc>,
}

/// The open reservations of one charge, by id.
pub async fn of_charge<'c>(db: impl PgExecutor<'c>, schema: &str, article: &str, charge: &str) -> Result<Vec<ReservationItem>, sqlx::Error> {
    sqlx::query_as(&of_charge_sql(schema)).bind(article).bind(charge).fetch_all(db).await
}

fn of_charge_sql(s: &str) -> String {
    format!(
        "select reservation_id as reservation, warehouse, reference, remaining, reserved_at
         from {s}.reservations where article_id = $1 and charge = $2 order by reservation_id"
    )
}

/// Every reader's statement, named, for `tests/schema.rs`.
pub fn readers(s: &str) -> Vec<(&'static str, String)> {
    vec![("charge_reservations", of_charge_sql(s))]
}

//! `movements`: one row per leg of every stock movement (a transfer is two),
//! with the balance of its charge in its warehouse right after it, in
//! posting-time order. The one table that grows by a row per event: the
//! projector writes it with binary COPY ([`copy`]); backdated movements
//! shift the balances after them ([`shift_balances`]). Read by the movement
//! history of a charge and the stock as of a moment.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool, Postgres, QueryBuilder};
use uuid::Uuid;

use super::Query;

/// A row of `movements`: one leg of a stock movement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MovementRow {
    pub article_id: String,
    pub charge: String,
    pub warehouse: String,
    pub posted_at: DateTime<Utc>,
    pub sequence: i64,
    pub leg: i16,
    pub kind: &'static str,
    pub delta: i64,
    /// Balance of the charge in the warehouse right after this movement, in
    /// posting-time order, as decided.
    pub balance: i64,
    pub recorded_at: DateTime<Utc>,
    pub event_id: Uuid,
    pub reservation_id: Option<String>,
    /// Posted before the stream's latest posting: later rows' balances shift.
    pub backdated: bool,
}

/// The columns COPY writes, in the order [`binary_copy`] encodes a row.
const COPY_COLUMNS: [&str; 12] = [
    "article_id",
    "charge",
    "warehouse",
    "posted_at",
    "sequence",
    "leg",
    "kind",
    "delta",
    "balance",
    "recorded_at",
    "event_id",
    "reservation_id",
];

/// The writer's statements of one generation.
#[derive(Debug, Clone)]
pub struct Statements {
    copy: String,
    shift_balances: String,
}

impl Statements {
    pub fn new(s: &str) -> Self {
        Self {
            copy: format!("copy {s}.movements ({}) from stdin with (format binary)", COPY_COLUMNS.join(", ")),
            // A backdated movement shifts the balance of every movement of its
            // bucket posted after it that was recorded before it (later
            // recorded ones were decided with it and already include it).
            shift_balances: format!(
                "update {s}.movements r set balance = r.balance + d.shift
                 from (
                     select l.article_id, l.charge, l.warehouse, l.posted_at, l.sequence, l.leg, sum(m.delta) as shift
                     from unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::int8[], $6::int2[], $7::int8[])
                          as m(article_id, charge, warehouse, posted_at, sequence, leg, delta)
                     join {s}.movements l
                       on l.article_id = m.article_id and l.charge = m.charge and l.warehouse = m.warehouse
                      and (l.posted_at, l.sequence, l.leg) > (m.posted_at, m.sequence, m.leg)
                      and l.sequence < m.sequence
                     group by 1, 2, 3, 4, 5, 6
                 ) d
                 where r.article_id = d.article_id and r.charge = d.charge and r.warehouse = d.warehouse
                   and r.posted_at = d.posted_at and r.sequence = d.sequence and r.leg = d.leg"
            ),
        }
    }

    /// Every statement but COPY (which cannot be prepared), named, for `tests/schema.rs`.
    pub fn all(&self) -> Vec<(&'static str, &str)> {
        vec![("shift_balances", &self.shift_balances)]
    }
}

/// Writes `movements` with COPY, the fastest way into PostgreSQL, in its
/// binary format (PostgreSQL parses no text: measured, the text format's
/// timestamps and uuids were a visible part of the COPY).
pub async fn copy(conn: &mut PgConnection, sql: &Statements, movements: &[&MovementRow]) -> Result<(), sqlx::Error> {
    let mut copy = conn.copy_in_raw(&sql.copy).await?;
    copy.send(binary_copy(movements)).await?;
    copy.finish().await?;
    Ok(())
}

/// Shifts the balances after the backdated ones of `movements`.
pub fn shift_balances<'q>(sql: &'q Statements, backdated: &[&'q MovementRow]) -> Query<'q> {
    sqlx::query(&sql.shift_balances)
        .bind(backdated.iter().map(|m| m.article_id.as_str()).collect::<Vec<_>>())
        .bind(backdated.iter().map(|m| m.charge.as_str()).collect::<Vec<_>>())
        .bind(backdated.iter().map(|m| m.warehouse.as_str()).collect::<Vec<_>>())
        .bind(backdated.iter().map(|m| m.posted_at).collect::<Vec<_>>())
        .bind(backdated.iter().map(|m| m.sequence).collect::<Vec<_>>())
        .bind(backdated.iter().map(|m| m.leg).collect::<Vec<_>>())
        .bind(backdated.iter().map(|m| m.delta).collect::<Vec<_>>())
}

/// Microseconds between the Unix epoch and PostgreSQL's (2000-01-01).
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// The rows in COPY's binary format, their fields in the order of [`COPY_COLUMNS`].
fn binary_copy(movements: &[&MovementRow]) -> Vec<u8> {
    let mut out = Vec::with_capacity(19 + movements.len() * 150);
    out.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
    out.extend_from_slice(&0i32.to_be_bytes()); // flags
    out.extend_from_slice(&0i32.to_be_bytes()); // header extension
    let text = |out: &mut Vec<u8>, s: &str| {
        out.extend_from_slice(&(s.len() as i32).to_be_bytes());
        out.extend_from_slice(s.as_bytes());
    };
    let int8 = |out: &mut Vec<u8>, v: i64| {
        out.extend_from_slice(&8i32.to_be_bytes());
        out.extend_from_slice(&v.to_be_bytes());
    };
    let time = |out: &mut Vec<u8>, t: &DateTime<Utc>| int8(out, t.timestamp_micros() - PG_EPOCH_MICROS);
    for m in movements {
        out.extend_from_slice(&(COPY_COLUMNS.len() as i16).to_be_bytes());
        text(&mut out, &m.article_id);
        text(&mut out, &m.charge);
        text(&mut out, &m.warehouse);
        time(&mut out, &m.posted_at);
        int8(&mut out, m.sequence);
        out.extend_from_slice(&2i32.to_be_bytes());
        out.extend_from_slice(&m.leg.to_be_bytes());
        text(&mut out, m.kind);
        int8(&mut out, m.delta);
        int8(&mut out, m.balance);
        time(&mut out, &m.recorded_at);
        out.extend_from_slice(&16i32.to_be_bytes());
        out.extend_from_slice(m.event_id.as_bytes());
        match &m.reservation_id {
            Some(r) => text(&mut out, r),
            None => out.extend_from_slice(&(-1i32).to_be_bytes()),
        }
    }
    out.extend_from_slice(&(-1i16).to_be_bytes());
    out
}

/// A movement as the history of a charge shows it.
#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct MovementItem {
    pub posted_at: DateTime<Utc>,
    pub recorded_at: DateTime<Utc>,
    pub sequence: i64,
    pub leg: i16,
    pub kind: String,
    pub warehouse: String,
    pub delta: i64,
    /// Balance of the charge in the warehouse right after this movement, in posting-time order.
    pub balance: i64,
    pub reservation: Option<String>,
    pub event_id: Uuid,
}

/// The movements of one charge (in `warehouse`, or all) by posting time,
/// newest first, after `after` (posting time, sequence and leg of the
/// previous page's last), at most `limit`; `None` when the charge is unknown.
pub async fn history(
    db: &PgPool,
    schema: &str,
    (article, charge): (&str, &str),
    warehouse: Option<&str>,
    after: Option<(DateTime<Utc>, i64, i16)>,
    limit: i64,
) -> Result<Option<Vec<MovementItem>>, sqlx::Error> {
    let rows: Vec<MovementItem> = history_query(schema, (article, charge), warehouse, after, limit).build_query_as().fetch_all(db).await?;
    if rows.is_empty() && !super::charges::exists(db, schema, article, charge).await? {
        return Ok(None);
    }
    Ok(Some(rows))
}

fn history_query(
    s: &str,
    (article, charge): (&str, &str),
    warehouse: Option<&str>,
    after: Option<(DateTime<Utc>, i64, i16)>,
    limit: i64,
) -> QueryBuilder<'static, Postgres> {
    // The primary key is in (warehouse, posting time) order per charge: one
    // index range per warehouse, merged newest first.
    let mut q = QueryBuilder::new(format!(
        "select m.* from {s}.charges c, jsonb_object_keys(c.warehouses) as w(warehouse), lateral (
             select posted_at, recorded_at, sequence, leg, kind, warehouse, delta, balance,
                    reservation_id as reservation, event_id
             from {s}.movements
             where article_id = c.article_id and charge = c.charge and warehouse = w.warehouse"
    ));
    if let Some((t, sequence, leg)) = after {
        q.push(" and (posted_at, sequence, leg) < (").push_bind(t).push(", ").push_bind(sequence).push(", ").push_bind(leg).push(")");
    }
    q.push(" order by posted_at desc, sequence desc, leg desc limit ").push_bind(limit);
    q.push(") m where c.article_id = ").push_bind(article.to_owned()).push(" and c.charge = ").push_bind(charge.to_owned());
    if let Some(w) = warehouse {
        q.push(" and w.warehouse = ").push_bind(w.to_owned());
    }
    q.push(" order by m.posted_at desc, m.sequence desc, m.leg desc limit ").push_bind(limit);
    q
}

/// The balance of every charge and warehouse of `article` at `at` (the
/// running balance of the last movement posted at or before it), those not
/// zero, by charge and warehouse; `None` when the article is unknown.
pub async fn balances_at(db: &PgPool, schema: &str, article: &str, at: DateTime<Utc>) -> Result<Option<Vec<(String, String, i64)>>, sqlx::Error> {
    if !super::articles::exists(db, schema, article).await? {
        return Ok(None);
    }
    Ok(Some(sqlx::query_as(&balances_at_sql(schema)).bind(article).bind(at).fetch_all(db).await?))
}

fn balances_at_sql(s: &str) -> String {
    // One index probe per charge and warehouse: the last movement at or before `at`.
    format!(
        "select c.charge, w.warehouse, m.balance
         from {s}.charges c
         cross join jsonb_object_keys(c.warehouses) as w(warehouse)
         cross join lateral (
             select balance from {s}.movements
             where article_id = c.article_id and charge = c.charge and warehouse = w.warehouse
               and posted_at <= $2
             order by posted_at desc, sequence desc, leg desc limit 1
         ) m
         where c.article_id = $1 and m.balance <> 0
         order by c.charge collate \"C\", w.warehouse collate \"C\""
    )
}

/// Every reader's statement (each variant), named, for `tests/schema.rs`.
pub fn readers(s: &str) -> Vec<(&'static str, String)> {
    let after = Some((DateTime::<Utc>::UNIX_EPOCH, 1, 0));
    let mut all = vec![("stock_as_of", balances_at_sql(s))];
    for warehouse in [None, Some("W")] {
        for after in [None, after] {
            all.push(("movements", history_query(s, ("A", "C"), warehouse, after, 1).sql().to_owned()));
        }
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads the field count of each tuple and the lengths of its fields
    /// back out of a binary COPY stream.
    fn tuples(bytes: &[u8]) -> Vec<Vec<i32>> {
        let mut at = 19;
        let mut tuples = Vec::new();
        loop {
            let count = i16::from_be_bytes([bytes[at], bytes[at + 1]]);
            at += 2;
            if count == -1 {
                return tuples;
            }
            let mut fields = Vec::new();
            for _ in 0..count {
                let len = i32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
                at += 4 + len.max(0) as usize;
                fields.push(len);
            }
            tuples.push(fields);
        }
    }

    #[test]
    fn the_copy_encoder_writes_one_field_per_column_of_the_copy_statement() {
        let row = MovementRow {
            article_id: "ART-1".into(),
            charge: "L1".into(),
            warehouse: "W1".into(),
            posted_at: Utc::now(),
            sequence: 3,
            leg: 1,
            kind: "transfer",
            delta: -5,
            balance: 10,
            recorded_at: Utc::now(),
            event_id: Uuid::new_v4(),
            reservation_id: None,
            backdated: false,
        };
        let statement = Statements::new("rm_1").copy;
        let listed = statement.split(['(', ')']).nth(1).unwrap().split(", ").count();
        let tuples = tuples(&binary_copy(&[&row, &row]));
        assert_eq!(tuples.len(), 2);
        assert_eq!(tuples[0].len(), listed, "one field per column of {statement}");
        // Text, text, text, timestamptz, int8, int2, text, int8, int8, timestamptz, uuid, null.
        assert_eq!(tuples[0], vec![5, 2, 2, 8, 8, 2, 8, 8, 8, 8, 16, -1]);
    }
}

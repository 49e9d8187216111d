//! `dead_letters`: every record the projector could not apply (poison) and
//! those parked behind it, with the record as it was (key, headers, value),
//! why, and what became of it (`parked`, `redriven`, `skipped`). Written by
//! the projector's batches and re-drives; read by the operator's commands,
//! re-drives, rebuilds (which skip what an operator skipped) and the status.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgExecutor;

use super::Query;

/// The writer's statements of one generation.
#[derive(Debug, Clone)]
pub struct Statements {
    insert: String,
    update: String,
}

impl Statements {
    pub fn new(s: &str) -> Self {
        Self {
            insert: format!(
                "insert into {s}.dead_letters (topic, partition, \"offset\", stream_id, sequence, event_type, key,
                                               headers, payload, reason, error)
                 select * from unnest($1::text[], $2::int4[], $3::int8[], $4::text[], $5::int8[], $6::text[], $7::text[],
                                      $8::jsonb[], $9::bytea[], $10::text[], $11::text[])
                 on conflict (topic, partition, \"offset\") do nothing"
            ),
            update: format!(
                "update {s}.dead_letters d set status = u.status, reason = coalesce(u.reason, d.reason),
                     error = coalesce(u.error, d.error),
                     resolved_at = case when u.status = 'parked' then null else now() end
                 from unnest($1::int8[], $2::text[], $3::text[], $4::text[]) as u(id, status, reason, error)
                 where d.id = u.id"
            ),
        }
    }

    pub fn all(&self) -> Vec<(&'static str, &str)> {
        vec![("insert_dead_letters", &self.insert), ("update_dead_letters", &self.update)]
    }
}

/// A record to park.
#[derive(Debug, Clone)]
pub struct NewDeadLetter<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub stream_id: Option<&'a str>,
    pub sequence: Option<i64>,
    pub event_type: Option<String>,
    pub key: Option<&'a str>,
    /// The record's headers, as (name, value) pairs.
    pub headers: serde_json::Value,
    pub payload: &'a [u8],
    pub reason: &'a str,
    pub error: &'a str,
}

/// Parks `letters` (a record parked before stays as it was).
pub fn insert<'q>(sql: &'q Statements, letters: &[NewDeadLetter<'q>]) -> Query<'q> {
    sqlx::query(&sql.insert)
        .bind(letters.iter().map(|l| l.topic).collect::<Vec<_>>())
        .bind(letters.iter().map(|l| l.partition).collect::<Vec<_>>())
        .bind(letters.iter().map(|l| l.offset).collect::<Vec<_>>())
        .bind(letters.iter().map(|l| l.stream_id).collect::<Vec<_>>())
        .bind(letters.iter().map(|l| l.sequence).collect::<Vec<_>>())
        .bind(letters.iter().map(|l| l.event_type.clone()).collect::<Vec<_>>())
        .bind(letters.iter().map(|l| l.key).collect::<Vec<_>>())
        .bind(letters.iter().map(|l| l.headers.clone()).collect::<Vec<_>>())
        .bind(letters.iter().map(|l| l.payload).collect::<Vec<_>>())
        .bind(letters.iter().map(|l| l.reason).collect::<Vec<_>>())
        .bind(letters.iter().map(|l| l.error).collect::<Vec<_>>())
}

/// What became of a parked record: its new status and, when it is still
/// parked, its new reason and error (`None` keeps them).
#[derive(Debug, Clone)]
pub struct StatusChange<'a> {
    pub id: i64,
    pub status: &'static str,
    pub reason: Option<&'a str>,
    pub error: Option<&'a str>,
}

/// Records what became of parked records.
pub fn update<'q>(sql: &'q Statements, changes: &[StatusChange<'q>]) -> Query<'q> {
    sqlx::query(&sql.update)
        .bind(changes.iter().map(|c| c.id).collect::<Vec<_>>())
        .bind(changes.iter().map(|c| c.status).collect::<Vec<_>>())
        .bind(changes.iter().map(|c| c.reason).collect::<Vec<_>>())
        .bind(changes.iter().map(|c| c.error).collect::<Vec<_>>())
}

/// A parked record, as the operator sees it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct DeadLetter {
    pub id: i64,
    pub partition: i32,
    pub offset: i64,
    pub stream_id: Option<String>,
    pub sequence: Option<i64>,
    pub event_type: Option<String>,
    pub reason: String,
    pub status: String,
    pub error: String,
    pub parked_at: DateTime<Utc>,
}

/// Parked records (with `all`, resolved ones too), oldest first.
pub async fn list<'c>(db: impl PgExecutor<'c>, schema: &str, all: bool) -> Result<Vec<DeadLetter>, sqlx::Error> {
    sqlx::query_as(&list_sql(schema)).bind(all).fetch_all(db).await
}

fn list_sql(s: &str) -> String {
    format!(
        "select id, partition, \"offset\", stream_id, sequence, event_type, reason, status, error, parked_at
         from {s}.dead_letters where $1 or status = 'parked' order by id"
    )
}

/// Parked record `id`: its stream, sequence, status, and the first parked
/// record of its stream.
pub async fn with_first_of_stream<'c>(
    db: impl PgExecutor<'c>,
    schema: &str,
    id: i64,
) -> Result<Option<(Option<String>, Option<i64>, String, Option<i64>)>, sqlx::Error> {
    sqlx::query_as(&with_first_sql(schema)).bind(id).fetch_optional(db).await
}

fn with_first_sql(s: &str) -> String {
    format!(
        "select stream_id, sequence, status, (select min(id) from {s}.dead_letters f
                  where f.stream_id = d.stream_id and f.status = 'parked')
         from {s}.dead_letters d where id = $1"
    )
}

/// A parked record as stored: id, partition, offset, key, headers, payload.
pub type Parked = (i64, i32, i64, Option<String>, serde_json::Value, Vec<u8>);

/// The parked records of `stream` in stream order (an event that was
/// missing and arrived later comes first).
pub async fn parked_of_stream<'c>(db: impl PgExecutor<'c>, schema: &str, stream: &str) -> Result<Vec<Parked>, sqlx::Error> {
    sqlx::query_as(&parked_of_stream_sql(schema)).bind(stream).fetch_all(db).await
}

fn parked_of_stream_sql(s: &str) -> String {
    format!(
        "select id, partition, \"offset\", key, headers, payload from {s}.dead_letters
         where stream_id = $1 and status = 'parked' order by sequence nulls last, \"offset\""
    )
}

/// Where the records an operator skipped are on `topic`: (partition, offset).
pub async fn skipped<'c>(db: impl PgExecutor<'c>, schema: &str, topic: &str) -> Result<HashSet<(i32, i64)>, sqlx::Error> {
    Ok(sqlx::query_as::<_, (i32, i64)>(&skipped_sql(schema)).bind(topic).fetch_all(db).await?.into_iter().collect())
}

fn skipped_sql(s: &str) -> String {
    format!("select partition, \"offset\" from {s}.dead_letters where status = 'skipped' and topic = $1")
}

/// How many records are parked.
pub async fn parked_count<'c>(db: impl PgExecutor<'c>, schema: &str) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(&parked_count_sql(schema)).fetch_one(db).await
}

fn parked_count_sql(s: &str) -> String {
    format!("select count(*) from {s}.dead_letters where status = 'parked'")
}

/// Every reader's statement, named, for `tests/schema.rs`.
pub fn readers(s: &str) -> Vec<(&'static str, String)> {
    vec![
        ("list_dead_letters", list_sql(s)),
        ("dead_letter_with_first", with_first_sql(s)),
        ("parked_of_stream", parked_of_stream_sql(s)),
        ("skipped_dead_letters", skipped_sql(s)),
        ("parked_count", parked_count_sql(s)),
    ]
}

//! `streams`: per article stream, the sequence of its last applied event,
//! whether it waits behind a parked record (halted), and its latest posting
//! time. Written first in every batch, and only from where the batch found
//! each row, so two writers never apply the same events (docs/projections.md,
//! "Exactly-once effect"). Read for read-your-writes, the status and re-drives.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

use super::Query;

/// The writer's statements of one generation.
#[derive(Debug, Clone)]
pub struct Statements {
    read: String,
    insert: String,
    update: String,
}

impl Statements {
    pub fn new(s: &str) -> Self {
        Self {
            read: format!("select stream_id, sequence, halted, latest_posting from {s}.streams where stream_id = any($1)"),
            insert: format!(
                "insert into {s}.streams (stream_id, sequence, halted, latest_posting)
                 select * from unnest($1::text[], $2::int8[], $3::bool[], $4::timestamptz[]) order by 1
                 on conflict do nothing"
            ),
            // Moves only rows still where the batch found them; in stream order.
            update: format!(
                "update {s}.streams s set sequence = u.sequence, halted = u.halted, latest_posting = u.latest_posting
                 from (
                     select * from unnest($1::text[], $2::int8[], $3::bool[], $4::timestamptz[], $5::int8[], $6::bool[])
                         as u(stream_id, sequence, halted, latest_posting, was_sequence, was_halted)
                     order by stream_id
                 ) u
                 where s.stream_id = u.stream_id and s.sequence = u.was_sequence and s.halted = u.was_halted"
            ),
        }
    }

    /// Every statement, named, for `tests/schema.rs`.
    pub fn all(&self) -> Vec<(&'static str, &str)> {
        vec![("read_streams", &self.read), ("insert_streams", &self.insert), ("update_streams", &self.update)]
    }
}

/// A stream row as stored.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct StreamRow {
    pub stream_id: String,
    pub sequence: i64,
    pub halted: bool,
    pub latest_posting: Option<DateTime<Utc>>,
}

/// A stream's position after a batch, and where the batch found its row
/// (`was`: sequence and halted flag; `None` when there was no row).
#[derive(Debug, Clone, Copy)]
pub struct Moved<'a> {
    pub stream_id: &'a str,
    pub sequence: i64,
    pub halted: bool,
    pub latest_posting: Option<DateTime<Utc>>,
    pub was: Option<(i64, bool)>,
}

/// The rows of `streams` (missing ones are not returned).
pub fn read<'q>(sql: &'q Statements, streams: &'q [&'q str]) -> sqlx::query::QueryAs<'q, sqlx::Postgres, StreamRow, sqlx::postgres::PgArguments> {
    sqlx::query_as(&sql.read).bind(streams)
}

/// Moves stored rows (`was` is `Some`) from where they were found; the
/// number of rows it affects says whether all were still there.
pub fn update<'q>(sql: &'q Statements, rows: &[Moved<'q>]) -> Query<'q> {
    sqlx::query(&sql.update)
        .bind(rows.iter().map(|r| r.stream_id).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.sequence).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.halted).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.latest_posting).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.was.map_or(0, |w| w.0)).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.was.is_some_and(|w| w.1)).collect::<Vec<_>>())
}

/// Inserts new rows; one that another writer inserted meanwhile is left out
/// (the number of rows it affects tells).
pub fn insert<'q>(sql: &'q Statements, rows: &[Moved<'q>]) -> Query<'q> {
    sqlx::query(&sql.insert)
        .bind(rows.iter().map(|r| r.stream_id).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.sequence).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.halted).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.latest_posting).collect::<Vec<_>>())
}

/// The sequence of the last applied event of `stream`; `None` before its first.
pub async fn applied<'c>(db: impl PgExecutor<'c>, schema: &str, stream: &str) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar(&applied_sql(schema)).bind(stream).fetch_optional(db).await
}

fn applied_sql(s: &str) -> String {
    format!("select sequence from {s}.streams where stream_id = $1")
}

/// The streams waiting behind a parked record, by id.
pub async fn halted<'c>(db: impl PgExecutor<'c>, schema: &str) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(&halted_sql(schema)).fetch_all(db).await
}

fn halted_sql(s: &str) -> String {
    format!("select stream_id from {s}.streams where halted order by stream_id")
}

/// How many streams wait behind a parked record.
pub async fn halted_count<'c>(db: impl PgExecutor<'c>, schema: &str) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(&halted_count_sql(schema)).fetch_one(db).await
}

fn halted_count_sql(s: &str) -> String {
    format!("select count(*) from {s}.streams where halted")
}

/// Locks `stream`'s row until the end of the transaction (a re-drive does
/// not run next to another one on the same stream).
pub async fn lock<'c>(db: impl PgExecutor<'c>, schema: &str, stream: &str) -> Result<(), sqlx::Error> {
    sqlx::query(&lock_sql(schema)).bind(stream).execute(db).await?;
    Ok(())
}

fn lock_sql(s: &str) -> String {
    format!("select 1 from {s}.streams where stream_id = $1 for update")
}

/// Every reader's statement, named, for `tests/schema.rs`.
pub fn readers(s: &str) -> Vec<(&'static str, String)> {
    vec![("applied", applied_sql(s)), ("halted", halted_sql(s)), ("halted_count", halted_count_sql(s)), ("lock_stream", lock_sql(s))]
}

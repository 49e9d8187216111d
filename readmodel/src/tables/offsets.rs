//! `offsets`: per partition of the topic a generation is built from, the
//! next offset to apply, stored in the transaction of every batch with the
//! rows it wrote (the exactly-once effect), and the broker time of the last
//! applied record. Read when a projector takes a partition, and by the
//! projection status.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

use super::Query;

/// The writer's statements of one generation.
#[derive(Debug, Clone)]
pub struct Statements {
    upsert: String,
    load: String,
}

impl Statements {
    pub fn new(s: &str) -> Self {
        Self {
            upsert: format!(
                "insert into {s}.offsets (topic, partition, next_offset, last_timestamp)
                 select $1, * from unnest($2::int4[], $3::int8[], $4::timestamptz[])
                 on conflict (topic, partition) do update
                 set next_offset = greatest(offsets.next_offset, excluded.next_offset),
                     last_timestamp = coalesce(excluded.last_timestamp, offsets.last_timestamp), updated_at = now()"
            ),
            load: format!("select partition, next_offset from {s}.offsets where topic = $1"),
        }
    }

    pub fn all(&self) -> Vec<(&'static str, &str)> {
        vec![("upsert_offsets", &self.upsert), ("load_offsets", &self.load)]
    }
}

/// Stores the next offset of each partition (never moving one back) and the
/// time of its last applied record.
pub fn store<'q>(sql: &'q Statements, topic: &'q str, next: &BTreeMap<i32, i64>, last_times: Vec<Option<DateTime<Utc>>>) -> Query<'q> {
    sqlx::query(&sql.upsert)
        .bind(topic)
        .bind(next.keys().copied().collect::<Vec<_>>())
        .bind(next.values().copied().collect::<Vec<_>>())
        .bind(last_times)
}

/// The stored next offset per partition of `topic`.
pub async fn load<'c>(db: impl PgExecutor<'c>, sql: &Statements, topic: &str) -> Result<BTreeMap<i32, i64>, sqlx::Error> {
    Ok(sqlx::query_as::<_, (i32, i64)>(&sql.load).bind(topic).fetch_all(db).await?.into_iter().collect())
}

/// Per partition of `topic`, in order: the next offset and the time of the last applied record.
pub async fn positions<'c>(db: impl PgExecutor<'c>, schema: &str, topic: &str) -> Result<Vec<(i32, i64, Option<DateTime<Utc>>)>, sqlx::Error> {
    sqlx::query_as(&positions_sql(schema)).bind(topic).fetch_all(db).await
}

fn positions_sql(s: &str) -> String {
    format!("select partition, next_offset, last_timestamp from {s}.offsets where topic = $1 order by partition")
}

/// Every reader's statement, named, for `tests/schema.rs`.
pub fn readers(s: &str) -> Vec<(&'static str, String)> {
    vec![("projection_status", positions_sql(s))]
}

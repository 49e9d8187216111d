//! `redis_outbox`: the keys of the documents each batch wrote, recorded in
//! the batch's transaction and deleted once Redis has them; the projector's
//! repair replays the rows that stay (a crash between commit and Redis, or
//! Redis down). See docs/projections.md, "Redis".

use std::time::Duration;

use sqlx::PgExecutor;

/// The writer's statements of one generation.
#[derive(Debug, Clone)]
pub struct Statements {
    insert: String,
}

impl Statements {
    pub fn new(s: &str) -> Self {
        Self { insert: format!("insert into {s}.redis_outbox (keys) values ($1) returning id") }
    }

    pub fn all(&self) -> Vec<(&'static str, &str)> {
        vec![("insert_redis_outbox", &self.insert)]
    }
}

/// Records `keys` as written by this batch; returns the row's id.
pub fn insert<'q>(sql: &'q Statements, keys: &'q [&'q str]) -> sqlx::query::QueryScalar<'q, sqlx::Postgres, i64, sqlx::postgres::PgArguments> {
    sqlx::query_scalar(&sql.insert).bind(keys)
}

/// Deletes rows whose documents reached Redis.
pub async fn delete<'c>(db: impl PgExecutor<'c>, schema: &str, ids: &[i64]) -> Result<(), sqlx::Error> {
    sqlx::query(&delete_sql(schema)).bind(ids).execute(db).await?;
    Ok(())
}

fn delete_sql(s: &str) -> String {
    format!("delete from {s}.redis_outbox where id = any($1)")
}

/// Deletes every row up to `id` (after a full copy).
pub async fn delete_until<'c>(db: impl PgExecutor<'c>, schema: &str, id: i64) -> Result<(), sqlx::Error> {
    sqlx::query(&delete_until_sql(schema)).bind(id).execute(db).await?;
    Ok(())
}

fn delete_until_sql(s: &str) -> String {
    format!("delete from {s}.redis_outbox where id <= $1")
}

/// The newest row's id.
pub async fn last<'c>(db: impl PgExecutor<'c>, schema: &str) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar(&last_sql(schema)).fetch_one(db).await
}

fn last_sql(s: &str) -> String {
    format!("select max(id) from {s}.redis_outbox")
}

/// Up to 100 rows older than `min_age`, oldest first: (id, keys).
pub async fn older_than<'c>(db: impl PgExecutor<'c>, schema: &str, min_age: Duration) -> Result<Vec<(i64, Vec<String>)>, sqlx::Error> {
    sqlx::query_as(&older_than_sql(schema)).bind(min_age.as_secs_f64()).fetch_all(db).await
}

fn older_than_sql(s: &str) -> String {
    format!(
        "select id, keys from {s}.redis_outbox
         where created_at < now() - make_interval(secs => $1) order by id limit 100"
    )
}

/// Every reader's statement, named, for `tests/schema.rs`.
pub fn readers(s: &str) -> Vec<(&'static str, String)> {
    vec![
        ("delete_redis_outbox", delete_sql(s)),
        ("delete_redis_outbox_until", delete_until_sql(s)),
        ("last_redis_outbox", last_sql(s)),
        ("pending_redis_outbox", older_than_sql(s)),
    ]
}

//! `documents`: the exact bytes the query-service returns for a stored
//! document (an article's stock, a category's summary), by key
//! ([`crate::keys`]), with its version (its ETag). The projector writes them
//! in the batch that changed them and copies them to Redis after commit;
//! the query-service reads them when Redis does not have them.

use sqlx::PgExecutor;

use super::Query;

/// A document ready to be stored and served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    /// e.g. `stock:ART-1` ([`crate::keys`]).
    pub key: String,
    pub version: i64,
    pub body: Vec<u8>,
    /// Cache tags a change of this document invalidates (not stored).
    pub tags: Vec<String>,
}

/// The writer's statements of one generation.
#[derive(Debug, Clone)]
pub struct Statements {
    upsert: String,
    update: String,
}

impl Statements {
    pub fn new(s: &str) -> Self {
        Self {
            upsert: format!(
                "insert into {s}.documents (key, version, body)
                 select * from unnest($1::text[], $2::int8[], $3::bytea[])
                 on conflict (key) do update set version = excluded.version, body = excluded.body"
            ),
            update: format!(
                "update {s}.documents d set version = u.version, body = u.body
                 from unnest($1::text[], $2::int8[], $3::bytea[]) as u(key, version, body)
                 where d.key = u.key"
            ),
        }
    }

    pub fn all(&self) -> Vec<(&'static str, &str)> {
        vec![("upsert_documents", &self.upsert), ("update_documents", &self.update)]
    }
}

/// Updates `documents` (all of them stored before).
pub fn update<'q>(sql: &'q Statements, documents: &'q [Document]) -> Query<'q> {
    bind(&sql.update, documents)
}

/// Inserts or replaces `documents`.
pub fn upsert<'q>(sql: &'q Statements, documents: &'q [Document]) -> Query<'q> {
    bind(&sql.upsert, documents)
}

fn bind<'q>(statement: &'q str, documents: &'q [Document]) -> Query<'q> {
    sqlx::query(statement)
        .bind(documents.iter().map(|d| d.key.as_str()).collect::<Vec<_>>())
        .bind(documents.iter().map(|d| d.version).collect::<Vec<_>>())
        .bind(documents.iter().map(|d| d.body.as_slice()).collect::<Vec<_>>())
}

/// The documents under `keys` that exist: (key, version, body).
pub async fn by_keys<'c, K: AsRef<str>>(
    db: impl PgExecutor<'c>,
    schema: &str,
    keys: &[K],
) -> Result<Vec<(String, i64, Vec<u8>)>, sqlx::Error> {
    let keys: Vec<&str> = keys.iter().map(AsRef::as_ref).collect();
    sqlx::query_as(&by_keys_sql(schema)).bind(keys).fetch_all(db).await
}

fn by_keys_sql(s: &str) -> String {
    format!("select key, version, body from {s}.documents where key = any($1)")
}

/// Up to `limit` documents after key `after`, in key order (a full copy, a
/// chunk at a time).
pub async fn after<'c>(db: impl PgExecutor<'c>, schema: &str, after: &str, limit: i64) -> Result<Vec<Document>, sqlx::Error> {
    let rows: Vec<(String, i64, Vec<u8>)> = sqlx::query_as(&after_sql(schema)).bind(after).bind(limit).fetch_all(db).await?;
    Ok(rows.into_iter().map(|(key, version, body)| Document { key, version, body, tags: Vec::new() }).collect())
}

fn after_sql(s: &str) -> String {
    format!("select key, version, body from {s}.documents where key > $1 order by key limit $2")
}

/// Every reader's statement, named, for `tests/schema.rs`.
pub fn readers(s: &str) -> Vec<(&'static str, String)> {
    vec![("document_by_key", by_keys_sql(s)), ("documents_after", after_sql(s))]
}

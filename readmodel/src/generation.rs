//! Read-model generations, shared by the projector (writer) and the
//! query-service (reader).
//!
//! Every read-model table lives in the schema of a generation (`rm_1`,
//! `rm_2`, ...); `read_model_pointer` names the one that serves, and Redis
//! keys carry the generation too (`{prefix}g1:doc:stock:ART-1`). A rebuild
//! fills a new generation while the old one serves and then moves the pointer
//! (docs/projections.md), so readers follow the pointer rather than a fixed
//! table name.

use sqlx::PgExecutor;

/// One generation of the read models.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generation {
    pub id: i64,
    /// The schema holding its tables; always `rm_{id}`, a safe identifier.
    pub schema: String,
}

impl Generation {
    pub fn new(id: i64) -> Self {
        Self { id, schema: format!("rm_{id}") }
    }
}

/// The generation that serves now; `None` before the migrations ran.
pub async fn active<'c>(conn: impl PgExecutor<'c>) -> Result<Option<Generation>, sqlx::Error> {
    let row: Option<(i64,)> = match sqlx::query_as("select generation from read_model_pointer").fetch_optional(conn).await {
        Ok(row) => row,
        // The pointer table does not exist before the read-side migration.
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P01") => None,
        Err(e) => return Err(e),
    };
    Ok(row.map(|(id,)| Generation::new(id)))
}

/// The generation that serves, or an error saying the migrations have not run.
pub async fn serving<'c>(conn: impl PgExecutor<'c>) -> anyhow::Result<Generation> {
    active(conn).await?.ok_or_else(|| anyhow::anyhow!("no read-model generation: the migrations have not run"))
}

/// The serving generation's id, share-locking the pointer until the end of
/// the transaction: a batch that reads it cannot commit into a generation a
/// rebuild is swapping out (the swap takes the pointer exclusively).
pub async fn serving_locked<'c>(conn: impl PgExecutor<'c>) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("select generation from read_model_pointer for share").fetch_one(conn).await
}

//! The audit trail: who did what, read from the event store itself (table
//! `events`, append-only by the trigger of
//! `migrations/20261201000001_security.sql`), newest first, keyset-paginated.
//!
//! The statement is built from the filters present, so that each one is
//! served by its index: `actor` by `events_by_actor (actor, recorded_at)`,
//! `correlation_id` by `events_by_correlation`, an article by the primary
//! key `(stream_id, sequence)`, a time range alone by the BRIN index on
//! `recorded_at`. A charge is a filter within an article (it is a field of
//! the events' data): it needs `article`.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgExecutor, Postgres, QueryBuilder};

/// What to look for; every filter present must match.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub actor: Option<String>,
    /// An article id (its stream).
    pub article: Option<String>,
    /// A charge of `article`.
    pub charge: Option<String>,
    pub correlation_id: Option<String>,
    /// Recorded at or after.
    pub from: Option<DateTime<Utc>>,
    /// Recorded before.
    pub to: Option<DateTime<Utc>>,
}

/// Where a page starts: the sort key of the previous page's last entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct After {
    pub recorded_at: DateTime<Utc>,
    pub stream_id: String,
    pub sequence: i64,
}

/// One event as the audit trail shows it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Entry {
    pub recorded_at: DateTime<Utc>,
    pub actor: String,
    /// The CloudEvents Auth Context of the actor.
    #[sqlx(skip)]
    pub authtype: String,
    #[sqlx(skip)]
    pub authid: String,
    pub event_type: String,
    pub stream_id: String,
    pub sequence: i64,
    pub event_id: uuid::Uuid,
    pub correlation_id: String,
    pub causation_id: uuid::Uuid,
    pub posted_at: DateTime<Utc>,
    pub data: sqlx::types::Json<serde_json::Value>,
}

/// `EXPLAIN` of the statement [`page`] runs for the same arguments: tests
/// check that every filter is served by an index.
pub fn plan<'a>(filter: &'a Filter, after: Option<&'a After>, limit: i64) -> QueryBuilder<'a, Postgres> {
    statement("explain ", filter, after, limit)
}

fn statement<'a>(prefix: &str, filter: &'a Filter, after: Option<&'a After>, limit: i64) -> QueryBuilder<'a, Postgres> {
    let mut q = QueryBuilder::new(prefix);
    q.push(
        "select recorded_at, actor, event_type, stream_id, sequence, event_id, correlation_id, causation_id, posted_at, data \
         from events where true",
    );
    if let Some(actor) = &filter.actor {
        q.push(" and actor = ").push_bind(actor);
    }
    if let Some(article) = &filter.article {
        q.push(" and stream_id = ").push_bind(format!("article:{article}"));
    }
    if let Some(charge) = &filter.charge {
        q.push(" and data->>'charge' = ").push_bind(charge);
    }
    if let Some(correlation) = &filter.correlation_id {
        q.push(" and correlation_id = ").push_bind(correlation);
    }
    if let Some(from) = filter.from {
        q.push(" and recorded_at >= ").push_bind(from);
    }
    if let Some(to) = filter.to {
        q.push(" and recorded_at < ").push_bind(to);
    }
    if let Some(after) = after {
        q.push(" and (recorded_at, stream_id, sequence) < (")
            .push_bind(after.recorded_at)
            .push(", ")
            .push_bind(&after.stream_id)
            .push(", ")
            .push_bind(after.sequence)
            .push(")");
    }
    q.push(" order by recorded_at desc, stream_id desc, sequence desc limit ").push_bind(limit);
    q
}

/// Up to `limit` entries matching `filter`, newest first, after `after`.
pub async fn page<'c>(conn: impl PgExecutor<'c>, filter: &Filter, after: Option<&After>, limit: i64) -> Result<Vec<Entry>, sqlx::Error> {
    let mut entries: Vec<Entry> = statement("", filter, after, limit).build_query_as().fetch_all(conn).await?;
    for entry in &mut entries {
        entry.authtype = events::auth_type(&entry.actor).to_owned();
        entry.authid = events::auth_id(&entry.actor).to_owned();
    }
    Ok(entries)
}

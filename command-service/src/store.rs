//! The event store in PostgreSQL: stream snapshots to load, and the atomic append
//! of events, outbox rows and the new snapshot.

use events::{ArticleState, Envelope, StreamId};
use sqlx::PgPool;

/// Why an append did not happen.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// Another command appended to the stream since its state was loaded.
    #[error("stream {0} changed concurrently")]
    Conflict(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Reads and appends streams.
#[derive(Debug, Clone)]
pub struct EventStore {
    pool: PgPool,
}

/// The channel the relay listens on; a notification is sent by every append's commit.
pub const OUTBOX_CHANNEL: &str = "erp_outbox";

impl EventStore {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// The state of a stream at its last event (empty for a new stream).
    #[tracing::instrument(skip(self), fields(stream = %stream), err)]
    pub async fn load(&self, stream: &StreamId) -> Result<ArticleState, sqlx::Error> {
        let row: Option<(sqlx::types::Json<ArticleState>,)> =
            sqlx::query_as("select state from stream_snapshots where stream_id = $1")
                .bind(stream.as_str())
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|(json,)| json.0).unwrap_or_default())
    }

    /// Appends `envelopes` to `stream` if it is still at `expected_version`, with
    /// their outbox rows and the folded `state`, in one transaction.
    #[tracing::instrument(skip(self, envelopes, state), fields(stream = %stream, expected_version), err)]
    pub async fn append(
        &self,
        stream: &StreamId,
        expected_version: u64,
        envelopes: &[Envelope],
        state: &ArticleState,
    ) -> Result<(), AppendError> {
        let records: Vec<_> = envelopes.iter().map(Envelope::to_record).collect();
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query(
            "insert into events (stream_id, sequence, event_id, event_type, schema_version, posted_at,
                                 recorded_at, correlation_id, causation_id, actor, data)
             select * from unnest($1::text[], $2::bigint[], $3::uuid[], $4::text[], $5::int[],
                                  $6::timestamptz[], $7::timestamptz[], $8::text[], $9::uuid[],
                                  $10::text[], $11::jsonb[])
             on conflict (stream_id, sequence) do nothing",
        )
        .bind(records.iter().map(|r| r.stream_id.as_str()).collect::<Vec<_>>())
        .bind(records.iter().map(|r| r.sequence as i64).collect::<Vec<_>>())
        .bind(records.iter().map(|r| r.event_id).collect::<Vec<_>>())
        .bind(records.iter().map(|r| r.event_type.as_str()).collect::<Vec<_>>())
        .bind(records.iter().map(|r| r.schema_version as i32).collect::<Vec<_>>())
        .bind(records.iter().map(|r| r.posted_at).collect::<Vec<_>>())
        .bind(records.iter().map(|r| r.recorded_at).collect::<Vec<_>>())
        .bind(records.iter().map(|r| r.correlation_id.as_str()).collect::<Vec<_>>())
        .bind(records.iter().map(|r| r.causation_id).collect::<Vec<_>>())
        .bind(records.iter().map(|r| r.actor.as_str()).collect::<Vec<_>>())
        .bind(records.iter().map(|r| &r.data).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted != records.len() as u64 {
            // Some sequence was taken: the stream moved on. Nothing is kept.
            return Err(AppendError::Conflict(stream.to_string()));
        }
        sqlx::query(
            "insert into outbox (stream_id, sequence)
             select $1, s from unnest($2::bigint[]) as s",
        )
        .bind(stream.as_str())
        .bind(records.iter().map(|r| r.sequence as i64).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
        let snapshot = sqlx::query(
            "insert into stream_snapshots (stream_id, version, state) values ($1, $2, $3)
             on conflict (stream_id) do update set version = excluded.version, state = excluded.state
             where stream_snapshots.version = $4",
        )
        .bind(stream.as_str())
        .bind(state.version as i64)
        .bind(sqlx::types::Json(state))
        .bind(expected_version as i64)
        .execute(&mut *tx)
        .await?;
        if snapshot.rows_affected() != 1 {
            return Err(AppendError::Conflict(stream.to_string()));
        }
        sqlx::query("select pg_notify($1, '')").bind(OUTBOX_CHANNEL).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }
}

//! The event store in PostgreSQL: stream snapshots to load, and the atomic append
//! of events, outbox rows and the new snapshot.

use events::{ArticleState, Envelope, StreamId};
use sqlx::{PgConnection, PgPool};

use crate::idempotency::IdempotencyKey;

/// Why an append did not happen.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// Another command appended to the stream since its state was loaded.
    #[error("stream {0} changed concurrently")]
    Conflict(String),
    /// Another request with the same idempotency key was recorded first.
    #[error("idempotency key already recorded")]
    DuplicateKey,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Why a stream's state could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// A stored event this code cannot read: a defect or a missing upcaster.
    #[error("stored event unreadable: {0}")]
    Corrupt(#[from] events::EnvelopeError),
}

/// One row of `events`, as stored.
#[derive(Debug, sqlx::FromRow)]
pub struct StoredEventRow {
    pub stream_id: String,
    pub sequence: i64,
    pub event_id: uuid::Uuid,
    pub event_type: String,
    pub schema_version: i32,
    pub posted_at: chrono::DateTime<chrono::Utc>,
    pub recorded_at: chrono::DateTime<chrono::Utc>,
    pub correlation_id: String,
    pub causation_id: uuid::Uuid,
    pub actor: String,
    pub data: serde_json::Value,
}

impl StoredEventRow {
    pub fn into_record(self) -> events::RecordedEvent {
        events::RecordedEvent {
            event_id: self.event_id,
            stream_id: StreamId::from_stored(self.stream_id),
            sequence: self.sequence as u64,
            event_type: self.event_type,
            schema_version: self.schema_version as u32,
            posted_at: self.posted_at,
            recorded_at: self.recorded_at,
            correlation_id: self.correlation_id,
            causation_id: self.causation_id,
            actor: self.actor,
            data: self.data,
        }
    }
}

/// An idempotency key with the response to remember for it.
#[derive(Debug)]
pub struct KeyRecord<'a> {
    pub key: &'a IdempotencyKey,
    pub status: u16,
    pub response: serde_json::Value,
}

/// Records a key, or fails with [`AppendError::DuplicateKey`] when an
/// unexpired record exists (an expired one is replaced).
async fn record_key(tx: &mut sqlx::PgConnection, key: &KeyRecord<'_>) -> Result<(), AppendError> {
    let recorded = sqlx::query(
        "insert into idempotency_keys (key, fingerprint, status, response, expires_at)
         values ($1, $2, $3, $4, now() + make_interval(secs => $5))
         on conflict (key) do update set fingerprint = excluded.fingerprint, status = excluded.status,
             response = excluded.response, created_at = now(), expires_at = excluded.expires_at
         where idempotency_keys.expires_at <= now()",
    )
    .bind(&key.key.key)
    .bind(&key.key.fingerprint)
    .bind(key.status as i16)
    .bind(&key.response)
    .bind(key.key.ttl.as_secs_f64())
    .execute(tx)
    .await?
    .rows_affected();
    if recorded == 1 { Ok(()) } else { Err(AppendError::DuplicateKey) }
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

    /// Records a key for a command that appended nothing.
    pub async fn record_key(tx: &mut PgConnection, key: &KeyRecord<'_>) -> Result<(), AppendError> {
        record_key(tx, key).await
    }

    /// The pool, for reading recorded idempotency keys.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The state of a stream at its last event (empty for a new stream).
    ///
    /// Read from the stream's snapshot; a snapshot this code cannot read (its
    /// state's shape changed) is derived data, so the stream's events are folded
    /// instead, through the same upcasters and `evolve` as everywhere else.
    ///
    /// The snapshot row is locked (`for update`) for the rest of `tx`: writers
    /// of one stream queue in PostgreSQL instead of racing, so no instance
    /// starves on a hot article. The unique (stream, sequence) remains the
    /// guarantee; it decides the one race left, two first events of a new stream.
    #[tracing::instrument(skip(tx), fields(stream = %stream), err)]
    pub async fn load_locked(tx: &mut PgConnection, stream: &StreamId) -> Result<ArticleState, LoadError> {
        let row: Option<(i64, serde_json::Value)> =
            sqlx::query_as("select version, state from stream_snapshots where stream_id = $1 for update")
                .bind(stream.as_str())
                .fetch_optional(&mut *tx)
                .await?;
        let Some((version, json)) = row else { return Ok(ArticleState::default()) };
        match serde_json::from_value::<ArticleState>(json) {
            Ok(state) if state.version == version as u64 => Ok(state),
            Ok(_) | Err(_) => {
                tracing::warn!(%stream, "snapshot unreadable; folding the stream's events");
                fold_events(tx, stream).await
            }
        }
    }
}

/// Folds every stored event of `stream`.
async fn fold_events(tx: &mut PgConnection, stream: &StreamId) -> Result<ArticleState, LoadError> {
        let rows: Vec<StoredEventRow> = sqlx::query_as(
            "select stream_id, sequence, event_id, event_type, schema_version, posted_at, recorded_at,
                    correlation_id, causation_id, actor, data
             from events where stream_id = $1 order by sequence",
        )
        .bind(stream.as_str())
        .fetch_all(&mut *tx)
        .await?;
        let mut state = ArticleState::default();
        for row in rows {
            let envelope = row.into_record().into_envelope()?;
            state = events::evolve(state, &envelope.event);
        }
        Ok(state)
}

impl EventStore {

    /// Appends `envelopes` to `stream` if it is still at `expected_version`, with
    /// their outbox rows, the folded `state` and the request's idempotency key,
    /// in one transaction.
    #[tracing::instrument(skip(tx, envelopes, state, key), fields(stream = %stream, expected_version), err)]
    pub async fn append(
        tx: &mut PgConnection,
        stream: &StreamId,
        expected_version: u64,
        envelopes: &[Envelope],
        state: &ArticleState,
        key: Option<&KeyRecord<'_>>,
    ) -> Result<(), AppendError> {
        let records: Vec<_> = envelopes.iter().map(Envelope::to_record).collect();
        if let Some(key) = key {
            record_key(&mut *tx, key).await?;
        }
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
        Ok(())
    }
}

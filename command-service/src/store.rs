//! The event store in PostgreSQL: stream snapshots, events, outbox rows and
//! idempotency keys, written set-based for a whole batch of commands in one
//! transaction (see [`crate::execute`]).

use std::collections::{BTreeMap, HashMap, HashSet};

use events::{ArticleState, Envelope, RecordedEvent, StreamId};
use sqlx::PgConnection;

use platform::metrics::timed;

use crate::idempotency::key::IdempotencyKey;

/// The channel the relay listens on; `append_batch` notifies it when asked to.
pub const OUTBOX_CHANNEL: &str = "erp_outbox";

/// Why a batch could not be written.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// Another writer appended to one of the streams first (only possible for
    /// a stream's first events, which have no snapshot row to lock).
    #[error("a stream changed concurrently")]
    Conflict,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// A stored event this code cannot read: a defect or a missing upcaster.
    #[error("stored event unreadable: {0}")]
    Corrupt(#[from] events::EnvelopeError),
}

/// A stream's folded state is snapshotted at least every this many events;
/// a loader folds the events after the snapshot.
pub const SNAPSHOT_EVERY: u64 = 100;

/// States of streams as this lane last wrote them, each with the version of
/// its latest stored snapshot; a lane owns its streams within the process, so
/// an entry stays valid until another instance writes the stream (its stored
/// version then differs and the state is read again).
#[derive(Debug, Default)]
pub struct StateCache {
    states: HashMap<StreamId, (ArticleState, u64)>,
}

/// Loaded states, and the version of each stream's latest stored snapshot.
pub type Loaded = (BTreeMap<StreamId, ArticleState>, HashMap<StreamId, u64>);

impl StateCache {
    /// Takes the cached states of `streams` out of the cache, if every one of
    /// them is cached (a state holds a month of postings per bucket: moving
    /// it is cheaper than copying it). Put them back with [`Self::put`].
    pub fn take_all(&mut self, streams: &[&StreamId]) -> Option<Loaded> {
        if !streams.iter().all(|s| self.states.contains_key(*s)) {
            return None;
        }
        let mut states = BTreeMap::new();
        let mut snapshots = HashMap::new();
        for s in streams {
            let (state, snapshot) = self.states.remove(*s).expect("checked above");
            states.insert((*s).clone(), state);
            snapshots.insert((*s).clone(), snapshot);
        }
        Some((states, snapshots))
    }

    /// Forgets everything (after a conflict: another instance wrote).
    pub fn clear(&mut self) {
        self.states.clear();
    }

    /// Most streams kept; beyond it the cache starts over (cheap, and rare).
    const CAPACITY: usize = 100_000;

    pub fn put(&mut self, stream: StreamId, state: ArticleState, snapshot: u64) {
        if self.states.len() >= Self::CAPACITY && !self.states.contains_key(&stream) {
            self.states.clear();
        }
        self.states.insert(stream, (state, snapshot));
    }
}

/// Loads the state of `streams`, locking their version rows (`for update`,
/// in stream order, so concurrent writers never deadlock) until the end of
/// `tx`: writers of one stream queue in PostgreSQL instead of racing. Only the
/// versions are read while `cache` holds the same version (those states are
/// taken out of it; the caller puts the new ones back); the other states
/// are their latest snapshot with the events after it folded in, through the
/// same upcasters and `evolve` as everywhere else (a snapshot this code
/// cannot read is derived data: the stream's events are folded from the start).
#[tracing::instrument(skip_all, fields(streams = streams.len()), err)]
pub async fn lock_states(tx: &mut PgConnection, streams: &[&StreamId], cache: &mut StateCache) -> Result<Loaded, AppendError> {
    let ids: Vec<&str> = streams.iter().map(|s| s.as_str()).collect();
    let versions: Vec<(String, i64)> = timed(
        "lock_streams",
        sqlx::query_as(
            "select stream_id, version from event_streams where stream_id = any($1) order by stream_id for update",
        )
        .bind(&ids)
        .fetch_all(&mut *tx),
    )
    .await?;
    let mut states = BTreeMap::new();
    let mut snapshots = HashMap::new();
    let mut stale = Vec::new();
    for (stream, version) in versions {
        let stream = StreamId::from_stored(stream);
        match cache.states.remove(&stream) {
            Some((state, snapshot)) if state.version == version as u64 => {
                states.insert(stream.clone(), state);
                snapshots.insert(stream, snapshot);
            }
            _ => stale.push(stream),
        }
    }
    if !stale.is_empty() {
        let stale_ids: Vec<&str> = stale.iter().map(StreamId::as_str).collect();
        let rows: Vec<(String, i64, serde_json::Value)> = timed(
            "load_snapshots",
            sqlx::query_as("select stream_id, version, state from stream_snapshots where stream_id = any($1)")
                .bind(&stale_ids)
                .fetch_all(&mut *tx),
        )
        .await?;
        let mut loaded: HashMap<StreamId, (ArticleState, u64)> = HashMap::new();
        for (stream, version, json) in rows {
            let stream = StreamId::from_stored(stream);
            match serde_json::from_value::<ArticleState>(json) {
                Ok(state) if state.version == version as u64 => {
                    loaded.insert(stream, (state, version as u64));
                }
                _ => tracing::warn!(%stream, "snapshot unreadable; folding the stream's events"),
            }
        }
        let after: Vec<i64> = stale.iter().map(|s| loaded.get(s).map_or(0, |(_, v)| *v as i64)).collect();
        let rows: Vec<StoredEventRow> = timed(
            "load_events_after_snapshots",
            sqlx::query_as(
                "select e.stream_id, e.sequence, e.event_id, e.event_type, e.schema_version, e.posted_at, e.recorded_at,
                        e.correlation_id, e.causation_id, e.actor, e.data, e.traceparent
                 from unnest($1::text[], $2::int8[]) as s(stream_id, after)
                 join events e on e.stream_id = s.stream_id and e.sequence > s.after
                 order by e.stream_id, e.sequence",
            )
            .bind(&stale_ids)
            .bind(&after)
            .fetch_all(&mut *tx),
        )
        .await?;
        let mut rows = rows.into_iter().peekable();
        for stream in stale {
            let (mut state, snapshot) = loaded.remove(&stream).unwrap_or_default();
            while let Some(row) = rows.next_if(|r| r.stream_id == stream.as_str()) {
                state = events::evolve(state, &row.into_record().into_envelope()?.event);
            }
            states.insert(stream.clone(), state);
            snapshots.insert(stream, snapshot);
        }
    }
    for stream in streams {
        states.entry((*stream).clone()).or_default();
        snapshots.entry((*stream).clone()).or_insert(0);
    }
    Ok((states, snapshots))
}

/// A stream written by a batch: the version it was decided on, its new
/// version, and its new state when that is due to be stored as its snapshot.
#[derive(Debug)]
pub struct StreamWrite {
    pub stream: StreamId,
    pub expected: u64,
    pub version: u64,
    /// The state as JSON text.
    pub snapshot: Option<String>,
}

/// Appends `envelopes` with their outbox rows, moves the versions of the
/// streams they belong to (and stores the snapshots that are due) and, with
/// `notify`, notifies [`OUTBOX_CHANNEL`] on commit, in one round trip (the
/// `append_batch` function). It
/// writes only if every stream is still at the `expected` version the batch
/// was decided on; otherwise, or when
/// another writer took one of the sequences, it fails with
/// [`AppendError::Conflict`] and nothing of it stays. Atomic on its own
/// (autocommit) or inside a transaction.
#[tracing::instrument(skip_all, fields(events = envelopes.len()), err)]
pub async fn append<'c>(
    conn: impl sqlx::PgExecutor<'c>,
    envelopes: &[Envelope],
    streams: &[StreamWrite],
    notify: bool,
) -> Result<(), AppendError> {
    if envelopes.is_empty() {
        return Ok(());
    }
    // The data as JSON text, stored as it is (a `json` column): PostgreSQL
    // checks it, but builds no jsonb from it.
    let data: Vec<String> = envelopes.iter().map(|e| e.event.data_json()).collect();
    let statement = sqlx::query(
        "select append_batch($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)",
    )
    .bind(notify)
    .bind(streams.iter().map(|s| s.stream.as_str()).collect::<Vec<_>>())
    .bind(streams.iter().map(|s| s.expected as i64).collect::<Vec<_>>())
    .bind(streams.iter().map(|s| s.version as i64).collect::<Vec<_>>())
    .bind(streams.iter().map(|s| s.snapshot.as_ref()).collect::<Vec<_>>())
    .bind(envelopes.iter().map(|e| e.stream_id.as_str()).collect::<Vec<_>>())
    .bind(envelopes.iter().map(|e| e.sequence as i64).collect::<Vec<_>>())
    .bind(envelopes.iter().map(|e| e.event_id).collect::<Vec<_>>())
    .bind(envelopes.iter().map(|e| e.event.event_type()).collect::<Vec<_>>())
    .bind(envelopes.iter().map(|e| e.schema_version as i32).collect::<Vec<_>>())
    .bind(envelopes.iter().map(|e| e.posted_at).collect::<Vec<_>>())
    .bind(envelopes.iter().map(|e| e.recorded_at).collect::<Vec<_>>())
    .bind(envelopes.iter().map(|e| e.correlation_id.as_str()).collect::<Vec<_>>())
    .bind(envelopes.iter().map(|e| e.causation_id).collect::<Vec<_>>())
    .bind(envelopes.iter().map(|e| e.actor.as_str()).collect::<Vec<_>>())
    .bind(data)
    .bind(envelopes.iter().map(|e| e.traceparent.as_deref()).collect::<Vec<_>>());
    let result = timed("append_batch", statement.execute(conn)).await;
    match result {
        Ok(_) => Ok(()),
        Err(e) if is_conflict(&e) => Err(AppendError::Conflict),
        Err(e) => Err(e.into()),
    }
}

/// A lost race: a taken (stream, sequence), a stream that moved on, or a
/// deadlock with another instance's writers (PostgreSQL ends one of them).
fn is_conflict(e: &sqlx::Error) -> bool {
    e.as_database_error().is_some_and(|d| {
        d.is_unique_violation() || matches!(d.code().as_deref(), Some("40001") | Some("40P01"))
    })
}

/// Claims `keys` for this transaction: returns those recorded now (new, or
/// replacing an expired record). The others are held by an earlier request.
/// A claimed key's response is filled in by [`finish_keys`] before commit.
pub async fn claim_keys(tx: &mut PgConnection, keys: &[&IdempotencyKey]) -> Result<HashSet<String>, AppendError> {
    if keys.is_empty() {
        return Ok(HashSet::new());
    }
    let claimed: Vec<(String,)> = timed("claim_keys", sqlx::query_as(
        "insert into idempotency_keys (key, fingerprint, status, response, expires_at)
         select k, f, 0, 'null'::jsonb, now() + make_interval(secs => t)
         from unnest($1::text[], $2::text[], $3::float8[]) as u(k, f, t)
         on conflict (key) do update set fingerprint = excluded.fingerprint, created_at = now(),
             expires_at = excluded.expires_at
         where idempotency_keys.expires_at <= now()
         returning key",
    )
    .bind(keys.iter().map(|k| k.key.as_str()).collect::<Vec<_>>())
    .bind(keys.iter().map(|k| k.fingerprint.as_str()).collect::<Vec<_>>())
    .bind(keys.iter().map(|k| k.ttl.as_secs_f64()).collect::<Vec<_>>())
    .fetch_all(&mut *tx))
    .await?;
    Ok(claimed.into_iter().map(|(k,)| k).collect())
}

/// Records the responses of claimed keys whose commands were accepted, and
/// releases the keys of refused commands (they may be retried).
pub async fn finish_keys(
    tx: &mut PgConnection,
    accepted: &[(&str, u16, serde_json::Value)],
    refused: &[&str],
) -> Result<(), AppendError> {
    if !accepted.is_empty() {
        sqlx::query(
            "update idempotency_keys k set status = u.s, response = u.r
             from unnest($1::text[], $2::smallint[], $3::jsonb[]) as u(key, s, r) where k.key = u.key",
        )
        .bind(accepted.iter().map(|a| a.0).collect::<Vec<_>>())
        .bind(accepted.iter().map(|a| a.1 as i16).collect::<Vec<_>>())
        .bind(accepted.iter().map(|a| &a.2).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
    }
    if !refused.is_empty() {
        sqlx::query("delete from idempotency_keys where key = any($1)").bind(refused).execute(&mut *tx).await?;
    }
    Ok(())
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
    pub traceparent: Option<String>,
}

impl StoredEventRow {
    pub fn into_record(self) -> RecordedEvent {
        RecordedEvent {
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
            traceparent: self.traceparent,
            data: self.data,
        }
    }
}

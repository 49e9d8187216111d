//! Executing one command: lock the stream in-process, load, decide, append;
//! retry a bounded number of times when another instance wrote first.

use events::{ArticleState, Command, CommandMeta, Context, DomainError, Envelope, Policy, StreamId, decide, evolve};
use serde::Serialize;
use uuid::Uuid;

use crate::locks::StreamLocks;
use crate::idempotency::{IdempotencyKey, StoredResponse};
use crate::store::{AppendError, EventStore, KeyRecord, LoadError};

/// How often a command is decided again after losing a concurrency race
/// against another instance. Each lost race means the other instance made
/// progress; a short jittered pause keeps two instances from colliding in step.
pub const MAX_ATTEMPTS: usize = 10;

/// What a client learns about an accepted command.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Accepted {
    pub event_ids: Vec<Uuid>,
    pub stream: String,
    /// Sequence of the stream's last event after this command.
    pub sequence: u64,
    /// Pass to the query-service to read this write: `{stream}@{sequence}`.
    #[schema(example = "article:ART-1000@7")]
    pub consistency_token: String,
}

/// The answer to a command: newly accepted, or replayed for an idempotency key.
#[derive(Debug)]
pub enum Outcome {
    /// Accepted now: 201 with events, 200 without.
    Accepted(Accepted),
    /// A request with the same idempotency key was accepted before.
    Replayed(StoredResponse),
}

impl Accepted {
    /// 201 when the command appended events, 200 when it changed nothing.
    pub fn status(&self) -> u16 {
        if self.event_ids.is_empty() { 200 } else { 201 }
    }
}

/// Why a command was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum ExecuteError {
    #[error(transparent)]
    Rule(#[from] DomainError),
    #[error("stream {0} kept changing concurrently; gave up after {MAX_ATTEMPTS} attempts")]
    Contention(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// A stored event cannot be read: a defect, not the client's fault.
    #[error(transparent)]
    Corrupt(events::EnvelopeError),
}

impl From<LoadError> for ExecuteError {
    fn from(e: LoadError) -> Self {
        match e {
            LoadError::Database(e) => ExecuteError::Database(e),
            LoadError::Corrupt(e) => ExecuteError::Corrupt(e),
        }
    }
}

/// Decides and appends commands.
#[derive(Debug)]
pub struct Executor {
    store: EventStore,
    locks: StreamLocks,
    policy: Policy,
}

impl Executor {
    pub fn new(store: EventStore, policy: Policy) -> Self {
        Self { store, locks: StreamLocks::default(), policy }
    }

    #[tracing::instrument(skip_all, fields(command = command.name(), article = %command.article(), command_id = %meta.command_id), err)]
    pub async fn execute(
        &self,
        command: Command,
        meta: CommandMeta,
        key: Option<&IdempotencyKey>,
    ) -> Result<Outcome, ExecuteError> {
        let stream = StreamId::article(command.article());
        let _serialised = self.locks.lock(stream.as_str()).await;
        for attempt in 1..=MAX_ATTEMPTS {
            let mut tx = self.store.pool().begin().await?;
            let state = EventStore::load_locked(&mut tx, &stream).await?;
            let context = Context { now: meta.recorded_at, policy: &self.policy };
            let events = decide(&state, command.clone(), &context)?;
            let envelopes = Envelope::wrap(&stream, state.version, &meta, events);
            let next = fold(state.clone(), &envelopes);
            let answer = accepted(&stream, &envelopes, next.version);
            let record = key.map(|key| KeyRecord {
                key,
                status: answer.status(),
                response: serde_json::to_value(&answer).expect("a response serialises"),
            });
            let appended = if envelopes.is_empty() {
                // Nothing to change (e.g. blocking a blocked charge): nothing to append.
                match &record {
                    Some(record) => EventStore::record_key(&mut tx, record).await,
                    None => Ok(()),
                }
            } else {
                EventStore::append(&mut tx, &stream, state.version, &envelopes, &next, record.as_ref()).await
            };
            let appended = match appended {
                Ok(()) => tx.commit().await.map_err(AppendError::from),
                Err(e) => Err(e),
            };
            match appended {
                Ok(()) => return Ok(Outcome::Accepted(answer)),
                Err(AppendError::Conflict(_)) => {
                    tracing::debug!(attempt, "concurrent append, deciding again");
                    let jitter_us = Uuid::new_v4().as_u128() % (250 << attempt.min(6));
                    tokio::time::sleep(std::time::Duration::from_micros(jitter_us as u64)).await;
                }
                Err(AppendError::DuplicateKey) => {
                    let key = key.expect("only keyed commands record keys");
                    let stored = crate::idempotency::lookup(self.store.pool(), &key.key).await?;
                    match stored {
                        Some(stored) => return Ok(Outcome::Replayed(stored)),
                        None => tracing::debug!(attempt, "idempotency key expired meanwhile, deciding again"),
                    }
                }
                Err(AppendError::Database(e)) => return Err(e.into()),
            }
        }
        Err(ExecuteError::Contention(stream.to_string()))
    }
}

fn accepted(stream: &StreamId, envelopes: &[Envelope], sequence: u64) -> Accepted {
    Accepted {
        event_ids: envelopes.iter().map(|e| e.event_id).collect(),
        stream: stream.to_string(),
        sequence,
        consistency_token: format!("{stream}@{sequence}"),
    }
}

fn fold(state: ArticleState, envelopes: &[Envelope]) -> ArticleState {
    envelopes.iter().map(|e| &e.event).fold(state, evolve)
}

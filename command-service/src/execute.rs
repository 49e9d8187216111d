//! Executing one command: lock the stream in-process, load, decide, append;
//! retry a bounded number of times when another instance wrote first.

use events::{ArticleState, Command, CommandMeta, Context, DomainError, Envelope, Policy, StreamId, decide, evolve};
use serde::Serialize;
use uuid::Uuid;

use crate::locks::StreamLocks;
use crate::store::{AppendError, EventStore, LoadError};

/// How often a command is decided again after losing a concurrency race.
pub const MAX_ATTEMPTS: usize = 5;

/// What a client learns about an accepted command.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Accepted {
    pub event_ids: Vec<Uuid>,
    pub stream: String,
    /// Sequence of the stream's last event after this command.
    pub sequence: u64,
    /// Pass to the query-service to read this write: `{stream}@{sequence}`.
    pub consistency_token: String,
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

    #[tracing::instrument(skip_all, fields(article = %command.article(), command_id = %meta.command_id), err)]
    pub async fn execute(&self, command: Command, meta: CommandMeta) -> Result<Accepted, ExecuteError> {
        let stream = StreamId::article(command.article());
        let _serialised = self.locks.lock(stream.as_str()).await;
        for attempt in 1..=MAX_ATTEMPTS {
            let state = self.store.load(&stream).await?;
            let context = Context { now: meta.recorded_at, policy: &self.policy };
            let events = decide(&state, command.clone(), &context)?;
            if events.is_empty() {
                // Nothing to change (e.g. blocking a blocked charge): nothing to append.
                return Ok(accepted(&stream, &[], state.version));
            }
            let envelopes = Envelope::wrap(&stream, state.version, &meta, events);
            let next = fold(state.clone(), &envelopes);
            match self.store.append(&stream, state.version, &envelopes, &next).await {
                Ok(()) => return Ok(accepted(&stream, &envelopes, next.version)),
                Err(AppendError::Conflict(_)) => {
                    tracing::debug!(attempt, "concurrent append, deciding again");
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

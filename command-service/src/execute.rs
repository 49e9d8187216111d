//! Executing commands with group commit.
//!
//! A command goes to one of a few committer lanes, chosen by its stream, so
//! the commands of one article are always handled by one lane, in arrival
//! order. A lane takes every command waiting for it (up to a batch limit) and
//! handles them in **one transaction**: it claims their idempotency keys,
//! locks and loads the snapshots of their streams, decides each command in
//! order against the state left by the ones before it, and writes all events,
//! outbox rows and snapshots with one statement each. One commit (one WAL
//! flush) then serves the whole batch. While a transaction runs, the next
//! batch gathers, so batches grow with the load.
//!
//! A command that breaks a rule is answered with its error and leaves no
//! trace; the others in its batch are unaffected. If another instance wins a
//! race on a new stream, the batch is decided again (at most
//! [`MAX_ATTEMPTS`] times).

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use events::{ArticleState, Command, CommandMeta, Context, DomainError, Envelope, Policy, StreamId, decide, evolve};
use serde::Serialize;
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::idempotency::{IdempotencyKey, StoredResponse};
use crate::store::{self, AppendError, StateCache};

/// How often a batch is decided again after losing a race against another instance.
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

impl Accepted {
    /// 201 when the command appended events, 200 when it changed nothing.
    pub fn status(&self) -> u16 {
        if self.event_ids.is_empty() { 200 } else { 201 }
    }
}

/// The answer to a command: newly accepted, or replayed for an idempotency key.
#[derive(Debug)]
pub enum Outcome {
    /// Accepted now: 201 with events, 200 without.
    Accepted(Accepted),
    /// A request with the same idempotency key was accepted before.
    Replayed(StoredResponse),
}

/// Why a command was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum ExecuteError {
    #[error(transparent)]
    Rule(#[from] DomainError),
    #[error("streams kept changing concurrently; gave up after {MAX_ATTEMPTS} attempts")]
    Contention,
    #[error(transparent)]
    Database(Arc<sqlx::Error>),
    /// A stored event cannot be read: a defect, not the client's fault.
    #[error("{0}")]
    Corrupt(String),
    /// The executor is shutting down.
    #[error("shutting down")]
    Stopped,
}

/// How commands are grouped.
#[derive(Debug, Clone, Copy)]
pub struct GroupCommit {
    /// Committer lanes, i.e. transactions in flight at once.
    pub lanes: usize,
    /// Most commands in one transaction.
    pub max_batch: usize,
}

struct Job {
    stream: StreamId,
    command: Command,
    meta: CommandMeta,
    key: Option<IdempotencyKey>,
    reply: oneshot::Sender<Result<Outcome, ExecuteError>>,
}

/// Decides and appends commands, grouped into transactions.
#[derive(Debug, Clone)]
pub struct Executor {
    lanes: Arc<Vec<mpsc::Sender<Job>>>,
    pool: PgPool,
}

impl Executor {
    /// Starts the committer lanes on the current runtime.
    pub fn new(pool: PgPool, policy: Policy, group: GroupCommit) -> Self {
        let policy = Arc::new(policy);
        let lanes = (0..group.lanes.max(1))
            .map(|_| {
                let (tx, rx) = mpsc::channel(group.max_batch * 4);
                tokio::spawn(run_lane(rx, pool.clone(), policy.clone(), group.max_batch));
                tx
            })
            .collect();
        Self { lanes: Arc::new(lanes), pool }
    }

    #[tracing::instrument(skip_all, fields(command = command.name(), article = %command.article(), command_id = %meta.command_id), err)]
    pub async fn execute(
        &self,
        command: Command,
        meta: CommandMeta,
        key: Option<&IdempotencyKey>,
    ) -> Result<Outcome, ExecuteError> {
        let stream = StreamId::article(command.article());
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        stream.hash(&mut hasher);
        let lane = &self.lanes[hasher.finish() as usize % self.lanes.len()];
        let (reply, answer) = oneshot::channel();
        let job = Job { stream, command, meta, key: key.cloned(), reply };
        lane.send(job).await.map_err(|_| ExecuteError::Stopped)?;
        answer.await.map_err(|_| ExecuteError::Stopped)?
    }

    /// The pool, for reading recorded idempotency keys.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

async fn run_lane(mut rx: mpsc::Receiver<Job>, pool: PgPool, policy: Arc<Policy>, max_batch: usize) {
    let mut cache = StateCache::default();
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        commit_batch(&pool, &policy, &mut cache, batch).await;
    }
}

/// What became of one job in a decided batch.
enum Decided {
    Accepted { answer: Accepted },
    Refused(DomainError),
    /// Its key is held by an earlier request: answered from the record after commit.
    Replay,
}

async fn commit_batch(pool: &PgPool, policy: &Policy, cache: &mut StateCache, jobs: Vec<Job>) {
    tracing::debug!(commands = jobs.len(), "committing a batch");
    let cached = match try_cached(pool, policy, cache, &jobs).await {
        Some(Ok(outcome)) => Some(Ok(outcome)),
        Some(Err(AppendError::Conflict)) => {
            // Another instance wrote one of the streams: the cache is stale.
            cache.clear();
            None
        }
        Some(Err(e)) => Some(Err(e)),
        None => None,
    };
    let mut attempt = 0;
    let results = if let Some(cached) = cached {
        cached.map(|(decided, written)| {
            for (stream, state, snapshot) in written {
                cache.put(stream, state, snapshot);
            }
            decided
        })
    } else { loop {
        attempt += 1;
        match try_batch(pool, policy, cache, &jobs).await {
            Ok((decided, written)) => {
                for (stream, state, snapshot) in written {
                    cache.put(stream, state, snapshot);
                }
                break Ok(decided);
            }
            Err(AppendError::Conflict) if attempt < MAX_ATTEMPTS => {
                tracing::debug!(attempt, "a stream changed concurrently; deciding the batch again");
                let jitter_us = Uuid::new_v4().as_u128() % (250 << attempt.min(6));
                tokio::time::sleep(std::time::Duration::from_micros(jitter_us as u64)).await;
            }
            Err(e) => break Err(e),
        }
    }};
    match results {
        Ok(decided) => {
            for (job, decided) in jobs.into_iter().zip(decided) {
                let outcome = match decided {
                    Decided::Accepted { answer } => Ok(Outcome::Accepted(answer)),
                    Decided::Refused(rule) => Err(ExecuteError::Rule(rule)),
                    Decided::Replay => replay(pool, job.key.as_ref().expect("replays have keys")).await,
                };
                let _ = job.reply.send(outcome);
            }
        }
        Err(e) => {
            let shared = match e {
                AppendError::Conflict => ExecuteErrorKind::Contention,
                AppendError::Database(e) => ExecuteErrorKind::Database(Arc::new(e)),
                AppendError::Corrupt(e) => ExecuteErrorKind::Corrupt(e.to_string()),
            };
            for job in jobs {
                let _ = job.reply.send(Err(shared.to_error()));
            }
        }
    }
}

enum ExecuteErrorKind {
    Contention,
    Database(Arc<sqlx::Error>),
    Corrupt(String),
}

impl ExecuteErrorKind {
    fn to_error(&self) -> ExecuteError {
        match self {
            ExecuteErrorKind::Contention => ExecuteError::Contention,
            ExecuteErrorKind::Database(e) => ExecuteError::Database(e.clone()),
            ExecuteErrorKind::Corrupt(e) => ExecuteError::Corrupt(e.clone()),
        }
    }
}

async fn replay(pool: &PgPool, key: &IdempotencyKey) -> Result<Outcome, ExecuteError> {
    match crate::idempotency::lookup(pool, &key.key).await {
        Ok(Some(stored)) => Ok(Outcome::Replayed(stored)),
        // Held by a request that was refused meanwhile (its key released):
        // this one was not decided; ask the client to retry.
        Ok(None) => Err(ExecuteError::Contention),
        Err(e) => Err(ExecuteError::Database(Arc::new(e))),
    }
}

/// Decides and writes a batch in one transaction.
/// Returns each job's outcome and the new states of the streams written.
async fn try_batch(
    pool: &PgPool,
    policy: &Policy,
    cache: &mut StateCache,
    jobs: &[Job],
) -> Result<(Vec<Decided>, Vec<Written>), AppendError> {
    let mut tx = pool.begin().await?;

    // Keys first: a key held by an earlier request, or by an earlier job of
    // this batch, makes its job a replay.
    let mut first_with_key: HashMap<&str, usize> = HashMap::new();
    for (i, job) in jobs.iter().enumerate() {
        if let Some(key) = &job.key {
            first_with_key.entry(key.key.as_str()).or_insert(i);
        }
    }
    let unique_keys: Vec<&IdempotencyKey> =
        first_with_key.values().map(|i| jobs[*i].key.as_ref().expect("keyed")).collect();
    let claimed = store::claim_keys(&mut tx, &unique_keys).await?;

    let streams = streams_of(jobs);
    let loaded = store::lock_states(&mut tx, &streams, cache).await?;
    let batch = decide_all(policy, jobs, loaded, |i, job| {
        job.key.as_ref().is_some_and(|k| first_with_key[k.key.as_str()] != i || !claimed.contains(&k.key))
    });
    store::append(&mut *tx, &batch.records, &batch.snapshots()).await?;
    let decided = &batch.decided;
    let mut accepted_keys = Vec::new();
    let mut refused_keys = Vec::new();
    for (job, d) in jobs.iter().zip(decided) {
        let Some(key) = &job.key else { continue };
        match d {
            Decided::Accepted { answer } => accepted_keys.push((
                key.key.as_str(),
                answer.status(),
                serde_json::to_value(answer).expect("a response serialises"),
            )),
            Decided::Refused(_) => refused_keys.push(key.key.as_str()),
            Decided::Replay => {}
        }
    }
    store::finish_keys(&mut tx, &accepted_keys, &refused_keys).await?;
    tx.commit().await?;
    Ok(batch.into_outcome())
}

/// The fast path: every stream's state is in the lane's cache and no command
/// has an idempotency key. Decides from the cache and writes in one
/// autocommit statement; a conflict (another instance wrote one of the
/// streams) leaves nothing and sends the batch down the locking path.
async fn try_cached(
    pool: &PgPool,
    policy: &Policy,
    cache: &mut StateCache,
    jobs: &[Job],
) -> Option<Result<(Vec<Decided>, Vec<Written>), AppendError>> {
    if jobs.iter().any(|j| j.key.is_some()) {
        return None;
    }
    // Taken out, not copied: should the append fail, the states are read again.
    let loaded = cache.take_all(&streams_of(jobs))?;
    let batch = decide_all(policy, jobs, loaded, |_, _| false);
    let appended = store::append(pool, &batch.records, &batch.snapshots()).await;
    Some(appended.map(|()| batch.into_outcome()))
}

fn streams_of(jobs: &[Job]) -> Vec<&StreamId> {
    let mut streams: Vec<&StreamId> = jobs.iter().map(|j| &j.stream).collect();
    streams.sort_unstable();
    streams.dedup();
    streams
}

/// A stream a batch wrote: its new state and the version of its latest stored snapshot.
type Written = (StreamId, ArticleState, u64);

/// A batch decided in memory, not yet written.
struct DecidedBatch {
    decided: Vec<Decided>,
    records: Vec<events::RecordedEvent>,
    states: BTreeMap<StreamId, ArticleState>,
    /// Version of each stream's latest stored snapshot.
    snapshots: HashMap<StreamId, u64>,
    /// Streams written, with the version each was decided on.
    touched: Vec<(StreamId, u64)>,
}

impl DecidedBatch {
    /// What to write per stream; a snapshot is due every [`store::SNAPSHOT_EVERY`] events.
    fn snapshots(&self) -> Vec<store::Snapshot<'_>> {
        self.touched
            .iter()
            .map(|(s, expected)| {
                let state = &self.states[s];
                let due = state.version >= self.snapshots[s] + store::SNAPSHOT_EVERY;
                store::Snapshot { stream: s, expected: *expected, state, due }
            })
            .collect()
    }

    fn into_outcome(mut self) -> (Vec<Decided>, Vec<Written>) {
        let written = self.touched.into_iter().map(|(s, _)| {
            let state = self.states.remove(&s).expect("touched streams were loaded");
            let previous = self.snapshots[&s];
            let snapshot = if state.version >= previous + store::SNAPSHOT_EVERY { state.version } else { previous };
            (s, state, snapshot)
        });
        (self.decided, written.collect())
    }
}

/// Decides every job in order, each against the state the ones before it left.
fn decide_all(
    policy: &Policy,
    jobs: &[Job],
    (mut states, snapshots): store::Loaded,
    replays: impl Fn(usize, &Job) -> bool,
) -> DecidedBatch {
    let mut decided = Vec::with_capacity(jobs.len());
    let mut records = Vec::new();
    let mut touched = Vec::new();
    for (i, job) in jobs.iter().enumerate() {
        if replays(i, job) {
            decided.push(Decided::Replay);
            continue;
        }
        let state = states.get_mut(&job.stream).expect("every stream was loaded");
        let context = Context { now: job.meta.recorded_at, policy };
        match decide(state, job.command.clone(), &context) {
            Ok(events) => {
                let envelopes = Envelope::wrap(&job.stream, state.version, &job.meta, events);
                if !envelopes.is_empty() && !touched.iter().any(|(s, _)| s == &job.stream) {
                    touched.push((job.stream.clone(), state.version));
                }
                *state = envelopes.iter().map(|e| &e.event).fold(std::mem::take(state), evolve);
                records.extend(envelopes.iter().map(Envelope::to_record));
                decided.push(Decided::Accepted {
                    answer: Accepted {
                        event_ids: envelopes.iter().map(|e| e.event_id).collect(),
                        stream: job.stream.to_string(),
                        sequence: state.version,
                        consistency_token: format!("{}@{}", job.stream, state.version),
                    },
                });
            }
            Err(rule) => decided.push(Decided::Refused(rule)),
        }
    }
    DecidedBatch { decided, records, states, snapshots, touched }
}

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
//! Batches whose streams are all in the lane's cache and that carry no
//! idempotency key take the fast path: decided from the cache and appended in
//! one autocommit statement that checks the versions they were decided on (a
//! lost race sends them down the locking path). Each lane has a connection of
//! its own (no pool hand-over, no pings) and wakes the relay after a commit
//! ([`crate::relay::Wake`]).
//!
//! Measured on two cores (`scripts/bench.sh commands`), one lane with one
//! append at a time is fastest: the cost of a batch in PostgreSQL (the call,
//! its statements, the commit) is paid per batch, so fewer, larger batches
//! win; two lanes, or pipelining a second append on another connection,
//! made batches smaller and throughput lower.
//!
//! A command that breaks a rule is answered with its error and leaves no
//! trace; the others in its batch are unaffected. If another instance wins a
//! race on a new stream, the batch is decided again (at most
//! [`MAX_ATTEMPTS`] times).

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use events::{ArticleState, Command, CommandMeta, Context, DomainError, Envelope, Policy, Scope, StreamId, decide, evolve};
use platform::db::Dedicated;
use serde::Serialize;
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgPool};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::idempotency::key::{IdempotencyKey, StoredResponse};
use crate::relay::Wake;
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

/// Why a command was not accepted. Cloned: a batch that fails answers
/// every command of it with the same error.
#[derive(Debug, Clone, thiserror::Error)]
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
    /// Committer lanes; the commands of one article always go to the same one.
    pub lanes: usize,
    /// Most commands in one transaction.
    pub max_batch: usize,
}

/// A command to decide: its stream, its provenance and where its sender may act.
#[derive(Debug, Clone)]
pub struct Request {
    pub stream: StreamId,
    pub command: Command,
    pub meta: CommandMeta,
    /// The warehouses the sender may act in.
    pub scope: Scope,
}

impl Request {
    pub fn new(command: Command, meta: CommandMeta, scope: Scope) -> Self {
        Self { stream: StreamId::article(command.article()), command, meta, scope }
    }
}

impl AsRef<Request> for Request {
    fn as_ref(&self) -> &Request {
        self
    }
}

struct Job {
    request: Request,
    key: Option<IdempotencyKey>,
    reply: oneshot::Sender<Result<Outcome, ExecuteError>>,
}

impl AsRef<Request> for Job {
    fn as_ref(&self) -> &Request {
        &self.request
    }
}

/// Decides and appends commands, grouped into transactions.
#[derive(Debug, Clone)]
pub struct Executor {
    lanes: Arc<Vec<mpsc::Sender<Job>>>,
}

/// What a lane works with.
struct Lane {
    connection: Dedicated,
    pool: PgPool,
    policy: Arc<Policy>,
    wake: Arc<Wake>,
    cache: StateCache,
}

impl Executor {
    /// Starts the committer lanes on the current runtime; each connects
    /// with `connect` on first use. `pool` serves replays of idempotency keys.
    pub fn new(pool: PgPool, connect: PgConnectOptions, policy: Policy, group: GroupCommit, wake: Arc<Wake>) -> Self {
        let policy = Arc::new(policy);
        let lanes = (0..group.lanes.max(1))
            .map(|_| {
                let (tx, rx) = mpsc::channel(group.max_batch * 4);
                let lane = Lane {
                    connection: Dedicated::new(connect.clone()),
                    pool: pool.clone(),
                    policy: policy.clone(),
                    wake: wake.clone(),
                    cache: StateCache::default(),
                };
                tokio::spawn(run_lane(rx, lane, group.max_batch));
                tx
            })
            .collect();
        Self { lanes: Arc::new(lanes) }
    }

    #[tracing::instrument(skip_all, fields(command = command.name(), article = %command.article(), command_id = %meta.command_id), err)]
    pub async fn execute(
        &self,
        command: Command,
        meta: CommandMeta,
        key: Option<&IdempotencyKey>,
        scope: Scope,
    ) -> Result<Outcome, ExecuteError> {
        let request = Request::new(command, meta, scope);
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        request.stream.hash(&mut hasher);
        let lane = &self.lanes[hasher.finish() as usize % self.lanes.len()];
        let (reply, answer) = oneshot::channel();
        let job = Job { request, key: key.cloned(), reply };
        lane.send(job).await.map_err(|_| ExecuteError::Stopped)?;
        answer.await.map_err(|_| ExecuteError::Stopped)?
    }
}

async fn run_lane(mut rx: mpsc::Receiver<Job>, mut lane: Lane, max_batch: usize) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        tracing::debug!(commands = batch.len(), "committing a batch");
        if let Err(jobs) = lane.commit_cached(batch).await {
            commit_locked(&mut lane, jobs).await;
        }
    }
}

/// What became of one job in a decided batch.
pub(crate) enum Decided {
    Accepted { answer: Accepted },
    Refused(DomainError),
    /// Its key is held by an earlier request: answered from the record after commit.
    Replay,
}

impl Lane {
    /// The fast path: when every stream of `jobs` is cached and none carries
    /// an idempotency key, decides them from the cache and appends them, then
    /// answers them. Gives the jobs back for the locking path otherwise, or
    /// when another instance wrote one of the streams meanwhile.
    async fn commit_cached(&mut self, jobs: Vec<Job>) -> Result<(), Vec<Job>> {
        if jobs.iter().any(|j| j.key.is_some()) {
            return Err(jobs);
        }
        // Taken out, not copied: put back decided. Should the append fail, the cache is forgotten.
        let Some(loaded) = self.cache.take_all(&streams_of(&jobs)) else { return Err(jobs) };
        let mut batch = decide_all(&self.policy, &jobs, loaded, |_, _| false);
        let (envelopes, streams) = batch.writes();
        let decided = batch.into_outcome(&mut self.cache);
        let notify = self.wake.through_database();
        let result = match self.connection.get().await {
            Ok(conn) => store::append(conn, &envelopes, &streams, notify).await,
            Err(e) => Err(e.into()),
        };
        match result {
            Ok(()) => {
                self.answer(jobs, decided).await;
                Ok(())
            }
            Err(AppendError::Conflict) => {
                // Another instance wrote one of the streams: the cache is stale.
                self.cache.clear();
                Err(jobs)
            }
            Err(e) => {
                self.cache.clear();
                self.fail(jobs, e);
                Ok(())
            }
        }
    }

    /// Answers the jobs of a committed batch and wakes the relay.
    async fn answer(&self, jobs: Vec<Job>, decided: Vec<Decided>) {
        self.wake.committed();
        for (job, decided) in jobs.into_iter().zip(decided) {
            let outcome = match decided {
                Decided::Accepted { answer } => Ok(Outcome::Accepted(answer)),
                Decided::Refused(rule) => Err(ExecuteError::Rule(rule)),
                Decided::Replay => replay(&self.pool, job.key.as_ref().expect("replays have keys")).await,
            };
            let _ = job.reply.send(outcome);
        }
    }

    /// Answers every job of a batch that could not be written with `e`.
    fn fail(&mut self, jobs: Vec<Job>, e: AppendError) {
        if matches!(e, AppendError::Database(_)) {
            // The connection may be broken: the next batch connects anew.
            self.connection.discard();
        }
        let error = ExecuteError::from(e);
        for job in jobs {
            let _ = job.reply.send(Err(error.clone()));
        }
    }
}

/// The locking path, for batches the cache cannot decide (or with keys):
/// one transaction that claims keys, locks and loads the streams, decides and
/// appends; decided again after a lost race (at most [`MAX_ATTEMPTS`] times).
async fn commit_locked(lane: &mut Lane, jobs: Vec<Job>) {
    tracing::debug!(commands = jobs.len(), "committing a batch under locks");
    let mut attempt = 0;
    let results = loop {
        attempt += 1;
        match try_batch(lane, &jobs).await {
            Ok(decided) => break Ok(decided),
            Err(AppendError::Conflict) if attempt < MAX_ATTEMPTS => {
                tracing::debug!(attempt, "a stream changed concurrently; deciding the batch again");
                // Another instance wrote one of these streams at the same
                // moment: retrying at once would likely meet it again. A
                // random pause, up to 250 us doubling with each attempt (at
                // most 16 ms), spreads the two apart. The randomness of a
                // v4 UUID is enough for that and needs no dependency.
                let jitter_us = Uuid::new_v4().as_u128() % (250 << attempt.min(6));
                tokio::time::sleep(std::time::Duration::from_micros(jitter_us as u64)).await;
            }
            Err(e) => break Err(e),
        }
    };
    match results {
        Ok(decided) => lane.answer(jobs, decided).await,
        Err(e) => lane.fail(jobs, e),
    }
}

impl From<AppendError> for ExecuteError {
    fn from(e: AppendError) -> Self {
        match e {
            AppendError::Conflict => ExecuteError::Contention,
            AppendError::Database(e) => ExecuteError::Database(Arc::new(e)),
            AppendError::Corrupt(e) => ExecuteError::Corrupt(e.to_string()),
        }
    }
}

async fn replay(pool: &PgPool, key: &IdempotencyKey) -> Result<Outcome, ExecuteError> {
    match crate::idempotency::key::lookup(pool, &key.key).await {
        Ok(Some(stored)) => Ok(Outcome::Replayed(stored)),
        // Held by a request that was refused meanwhile (its key released):
        // this one was not decided; ask the client to retry.
        Ok(None) => Err(ExecuteError::Contention),
        Err(e) => Err(ExecuteError::Database(Arc::new(e))),
    }
}

/// Decides and writes a batch in one transaction; keeps the new states of
/// the streams written in the lane's cache. Returns each job's outcome.
async fn try_batch(lane: &mut Lane, jobs: &[Job]) -> Result<Vec<Decided>, AppendError> {
    let notify = lane.wake.through_database();
    let conn = lane.connection.get().await?;
    let mut tx = conn.begin().await?;

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
    let loaded = store::lock_states(&mut tx, &streams, &mut lane.cache).await?;
    let mut batch = decide_all(&lane.policy, jobs, loaded, |i, job| {
        job.key.as_ref().is_some_and(|k| first_with_key[k.key.as_str()] != i || !claimed.contains(&k.key))
    });
    let (envelopes, streams) = batch.writes();
    store::append(&mut *tx, &envelopes, &streams, notify).await?;
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
    Ok(batch.into_outcome(&mut lane.cache))
}

pub(crate) fn streams_of<J: AsRef<Request>>(jobs: &[J]) -> Vec<&StreamId> {
    let mut streams: Vec<&StreamId> = jobs.iter().map(|j| &j.as_ref().stream).collect();
    streams.sort_unstable();
    streams.dedup();
    streams
}

/// A batch decided in memory, not yet written.
pub(crate) struct DecidedBatch {
    pub(crate) decided: Vec<Decided>,
    envelopes: Vec<Envelope>,
    pub(crate) states: BTreeMap<StreamId, ArticleState>,
    /// Version of each stream's latest stored snapshot.
    snapshots: HashMap<StreamId, u64>,
    /// Streams written, with the version each was decided on.
    touched: Vec<(StreamId, u64)>,
}

impl DecidedBatch {
    /// What to write: the events, and per stream written its versions and,
    /// every [`store::SNAPSHOT_EVERY`] events, its state as a snapshot.
    pub(crate) fn writes(&mut self) -> (Vec<Envelope>, Vec<store::StreamWrite>) {
        let streams = self
            .touched
            .iter()
            .map(|(s, expected)| {
                let state = &self.states[s];
                let due = self.snapshot_due(s, state.version);
                store::StreamWrite {
                    stream: s.clone(),
                    expected: *expected,
                    version: state.version,
                    snapshot: due.then(|| serde_json::to_string(state).expect("a state serialises")),
                }
            })
            .collect();
        (std::mem::take(&mut self.envelopes), streams)
    }

    /// Each job's outcome; the new states of the streams written go into `cache`.
    pub(crate) fn into_outcome(mut self, cache: &mut StateCache) -> Vec<Decided> {
        for (s, _) in std::mem::take(&mut self.touched) {
            let state = self.states.remove(&s).expect("touched streams were loaded");
            let snapshot = if self.snapshot_due(&s, state.version) { state.version } else { self.snapshots[&s] };
            cache.put(s, state, snapshot);
        }
        self.decided
    }

    /// Whether a stream at `version` is due a new snapshot: every
    /// [`store::SNAPSHOT_EVERY`] events after its latest stored one.
    fn snapshot_due(&self, stream: &StreamId, version: u64) -> bool {
        version >= self.snapshots[stream] + store::SNAPSHOT_EVERY
    }
}

/// Decides every job in order, each against the state the ones before it left.
pub(crate) fn decide_all<J: AsRef<Request>>(
    policy: &Policy,
    jobs: &[J],
    (mut states, snapshots): store::Loaded,
    replays: impl Fn(usize, &J) -> bool,
) -> DecidedBatch {
    let mut decided = Vec::with_capacity(jobs.len());
    let mut written = Vec::new();
    let mut touched = Vec::new();
    for (i, job) in jobs.iter().enumerate() {
        if replays(i, job) {
            decided.push(Decided::Replay);
            continue;
        }
        let job = job.as_ref();
        let state = states.get_mut(&job.stream).expect("every stream was loaded");
        let context = Context { now: job.meta.recorded_at, policy };
        match decide(state, job.command.clone(), &context).and_then(|events| job.scope.permit(events)) {
            Ok(events) => {
                let envelopes = Envelope::wrap(&job.stream, state.version, &job.meta, events);
                if !envelopes.is_empty() && !touched.iter().any(|(s, _)| s == &job.stream) {
                    touched.push((job.stream.clone(), state.version));
                }
                *state = envelopes.iter().map(|e| &e.event).fold(std::mem::take(state), evolve);
                decided.push(Decided::Accepted {
                    answer: Accepted {
                        event_ids: envelopes.iter().map(|e| e.event_id).collect(),
                        stream: job.stream.to_string(),
                        sequence: state.version,
                        consistency_token: format!("{}@{}", job.stream, state.version),
                    },
                });
                written.extend(envelopes);
            }
            Err(rule) => decided.push(Decided::Refused(rule)),
        }
    }
    DecidedBatch { decided, envelopes: written, states, snapshots, touched }
}

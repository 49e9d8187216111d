//! The Kafka side of the projector: takes partitions of the events topic
//! ([`crate::ownership`]), collects batches of their records, has them
//! applied to the serving generation, and resumes from the offsets stored in
//! PostgreSQL.
//!
//! PostgreSQL, not Kafka, is the source of truth for where a projection
//! stands and for who applies what: a partition is taken through its
//! advisory lock, then assigned to the consumer at the next offset stored
//! with the serving generation's read models (from the beginning when none
//! is stored). Offsets are also committed to Kafka under the consumer group,
//! only so that standard lag tools see them; the group's membership plays no
//! part.
//!
//! Ownership changes only between batches: a partition is unassigned (and
//! its records received early dropped) before its lock is released, so the
//! next owner starts after this instance's last commit. Should two instances
//! still apply one partition at once (an ownership session lost while a
//! batch was applied), the stream rows, moved only from where a batch found
//! them, let one commit and send the other back, which then finds the
//! records applied (exactly once still).
//!
//! While the lanes apply a batch, the loop receives the records of the next
//! one. When a rebuild has moved the pointer to a new generation, the next
//! batch notices it in its transaction, is rolled back, and every owned
//! partition is positioned at the new generation's offsets.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use platform::kafka::KafkaSettings;
use readmodel::{Generation, Statements};
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use sqlx::PgPool;
use sqlx::postgres::PgConnectOptions;
use tokio_util::sync::CancellationToken;

use crate::dead_letters::DeadLetterTopic;
use crate::lanes::{self, Applied};
use crate::ownership::Ownership;
use crate::progress::Progress;
use crate::record::Incoming;
use crate::settings::ProjectorSettings;
use crate::sink::{RedisSink, repair};
use crate::batch::{ApplyError, Mode, Outcome};
use crate::cache::StateCache;

/// How often the topic's partition list is read again.
const PARTITIONS_EVERY: Duration = Duration::from_secs(30);

/// The consumer's context: hands librdkafka's statistics (every few
/// seconds: the end of each partition) to [`Progress`].
struct Stats {
    topic: String,
    progress: Arc<Progress>,
}

impl ClientContext for Stats {
    fn stats(&self, statistics: rdkafka::Statistics) {
        let Some(topic) = statistics.topics.get(&self.topic) else { return };
        let ends = topic.partitions.iter().filter(|(id, p)| **id >= 0 && p.hi_offset >= 0).map(|(id, p)| (*id, p.hi_offset));
        self.progress.ends(ends);
    }
}

impl ConsumerContext for Stats {}

/// Consumes the events topic and applies it until shut down.
pub struct Projector {
    pool: PgPool,
    connect: PgConnectOptions,
    sink: Arc<RedisSink>,
    kafka: KafkaSettings,
    settings: ProjectorSettings,
    dead_letters: Arc<DeadLetterTopic>,
    progress: Arc<Progress>,
}

impl std::fmt::Debug for Projector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Projector").field("settings", &self.settings).finish_non_exhaustive()
    }
}

/// The consumer and what the loop knows of its partitions.
struct Partitions {
    consumer: StreamConsumer<Stats>,
    topic: String,
    ownership: Ownership,
    /// Every partition of the topic, as last read from the broker.
    all: Vec<i32>,
    listed_at: Option<tokio::time::Instant>,
}

impl Projector {
    pub fn new(
        pool: PgPool,
        connect: PgConnectOptions,
        sink: Arc<RedisSink>,
        kafka: KafkaSettings,
        settings: ProjectorSettings,
        progress: Arc<Progress>,
    ) -> anyhow::Result<Self> {
        let dead_letters = Arc::new(DeadLetterTopic::new(&kafka)?);
        Ok(Self { pool, connect, sink, kafka, settings, dead_letters, progress })
    }

    /// Runs until `shutdown` is cancelled; the batch in hand is finished first.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let topic = self.kafka.events_topic.clone();
        let generation = readmodel::serving(&self.pool).await?;
        tracing::info!(generation = generation.id, "projecting into the serving generation");
        let shared = Arc::new(Mutex::new(generation.clone()));
        let mut sql = Arc::new(Statements::new(generation));
        let context = Stats { topic: topic.clone(), progress: self.progress.clone() };
        let consumer: StreamConsumer<Stats> = self
            .kafka
            .client_config()
            // Only for committing offsets where lag tools look; partitions are assigned by hand.
            .set("group.id", &self.settings.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("statistics.interval.ms", "5000")
            .set("fetch.wait.max.ms", self.settings.fetch_wait_ms.to_string())
            .create_with_context(context)?;
        let mut partitions = Partitions {
            consumer,
            topic: topic.clone(),
            ownership: Ownership::new(self.connect.clone(), topic.clone()),
            all: Vec::new(),
            listed_at: None,
        };
        if let Err(e) = self.sink.announce_generation(sql.generation.id).await {
            tracing::warn!(error = %e, "cannot announce the generation in Redis");
        }
        let repairs = tokio::spawn(repair_loop(self.pool.clone(), self.sink.clone(), shared.clone(), shutdown.clone()));

        let batch_wait = Duration::from_millis(self.settings.batch_wait_ms);
        let round_every = Duration::from_millis(self.settings.ownership_interval_ms);
        let mut next_round = tokio::time::Instant::now();
        let mut cache = StateCache::default();
        // Records received while the previous batch was applied: the next batch starts with them.
        let mut early: Vec<Incoming> = Vec::new();
        loop {
            if tokio::time::Instant::now() >= next_round {
                self.ownership_round(&mut partitions, &sql, &mut early).await;
                next_round = tokio::time::Instant::now() + round_every;
            }
            let consumer = &partitions.consumer;
            let mut batch = std::mem::take(&mut early);
            if batch.is_empty() {
                let first = tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep_until(next_round) => continue,
                    message = consumer.recv() => message,
                };
                match first {
                    Ok(m) => batch.push(Incoming::from_message(&m)),
                    Err(e) => tracing::warn!(error = %e, "consumer error"),
                }
            }
            let deadline = tokio::time::Instant::now() + batch_wait;
            while batch.len() < self.settings.batch_size {
                match tokio::time::timeout_at(deadline, consumer.recv()).await {
                    Ok(Ok(m)) => batch.push(Incoming::from_message(&m)),
                    Ok(Err(e)) => tracing::warn!(error = %e, "consumer error"),
                    Err(_) => break,
                }
            }
            let owned = partitions.ownership.owned();
            batch.retain(|r| owned.contains(&r.partition));
            if batch.is_empty() {
                continue;
            }
            // While the lanes apply this batch, the next one is received
            // (copying records out of the consumer is serial work).
            let (lanes, applied) = {
                let apply = self.apply(&sql, &topic, lanes::split(batch, self.settings.lanes), &mut cache, &shutdown);
                tokio::pin!(apply);
                loop {
                    tokio::select! {
                        biased;
                        done = &mut apply => break done,
                        message = consumer.recv(), if early.len() < self.settings.batch_size => match message {
                            Ok(m) => early.push(Incoming::from_message(&m)),
                            Err(e) => tracing::warn!(error = %e, "consumer error"),
                        },
                    }
                }
            };
            match applied? {
                Applied::Committed(outcome) => self.after_commit(consumer, &sql, &topic, &lanes, outcome).await,
                Applied::GenerationChanged(id) => {
                    let generation = Generation::new(id);
                    tracing::info!(from = sql.generation.id, to = generation.id, "the read models were rebuilt; switching generation");
                    *shared.lock().expect("generation poisoned") = generation.clone();
                    sql = Arc::new(Statements::new(generation));
                    cache.clear();
                    // Received for the old positions: the new generation's offsets decide.
                    early.clear();
                    let owned: Vec<i32> = partitions.ownership.owned().iter().copied().collect();
                    self.position(&partitions, &sql, &owned, Seek::Existing).await?;
                }
            }
        }
        repairs.abort();
        tracing::info!("projector stopped");
        Ok(())
    }

    /// Takes and gives up partitions ([`Ownership::round`]) and assigns or
    /// unassigns them. A failed round gives up every partition; the next
    /// one joins again.
    async fn ownership_round(&self, partitions: &mut Partitions, sql: &Statements, early: &mut Vec<Incoming>) {
        if partitions.all.is_empty() || partitions.listed_at.is_none_or(|at| at.elapsed() >= PARTITIONS_EVERY) {
            match platform::kafka::partitions(&partitions.consumer, &partitions.topic, Duration::from_secs(5)) {
                Ok(all) => partitions.all = all,
                Err(e) => tracing::warn!(error = %e, "cannot list the topic's partitions"),
            }
            // Known partitions are kept: with the broker slow or down, the
            // list is asked for again only after the interval.
            partitions.listed_at = Some(tokio::time::Instant::now());
        }
        let Partitions { consumer, topic, ownership, all, .. } = partitions;
        let give_up = |p: i32| {
            unassign(consumer, topic, &[p]);
            early.retain(|r| r.partition != p);
            self.progress.released(p);
        };
        match ownership.round(all, give_up).await {
            Ok(change) => {
                if !change.taken.is_empty() {
                    if let Err(e) = self.position(partitions, sql, &change.taken, Seek::Assign).await {
                        tracing::warn!(error = %e, "cannot position the partitions taken; giving every partition up");
                        self.lose(partitions, early, e.to_string());
                        return;
                    }
                }
                if !change.taken.is_empty() || !change.released.is_empty() {
                    let owned: Vec<i32> = partitions.ownership.owned().iter().copied().collect();
                    tracing::info!(taken = ?change.taken, released = ?change.released, ?owned, "partitions");
                }
                let unowned = partitions.ownership.last.unowned(&partitions.all).collect();
                self.progress.owned(partitions.ownership.owned(), unowned);
            }
            Err(e) => {
                tracing::warn!(error = %e, "the ownership session failed; giving every partition up");
                self.lose(partitions, early, e.to_string());
            }
        }
    }

    /// Stops applying every partition after the ownership session failed.
    fn lose(&self, partitions: &mut Partitions, early: &mut Vec<Incoming>, error: String) {
        let lost: Vec<i32> = partitions.ownership.lost().into_iter().collect();
        unassign(&partitions.consumer, &partitions.topic, &lost);
        early.retain(|r| !lost.contains(&r.partition));
        self.progress.ownership_failed(error);
    }

    /// Positions `owned` partitions at the offsets stored with the
    /// generation of `sql`: assigns them (just taken) or seeks them (a new
    /// generation).
    async fn position(&self, partitions: &Partitions, sql: &Statements, owned: &[i32], how: Seek) -> anyhow::Result<()> {
        let stored = readmodel::tables::offsets::load(&self.pool, &sql.offsets, &partitions.topic).await?;
        let next = |p: &i32| stored.get(p).copied();
        match how {
            Seek::Assign => {
                let mut tpl = TopicPartitionList::new();
                for p in owned {
                    let offset = next(p).map_or(Offset::Beginning, Offset::Offset);
                    tpl.add_partition_offset(&partitions.topic, *p, offset)?;
                }
                partitions.consumer.incremental_assign(&tpl)?;
            }
            Seek::Existing => {
                for p in owned {
                    let offset = next(p).map_or(Offset::Beginning, Offset::Offset);
                    partitions.consumer.seek(&partitions.topic, *p, offset, Duration::from_secs(10))?;
                }
            }
        }
        for p in owned {
            self.progress.positioned(*p, next(p).unwrap_or(0));
        }
        Ok(())
    }

    /// Applies a batch, its lanes in transactions of their own at once,
    /// retrying while PostgreSQL is unavailable. Gives the lanes back.
    async fn apply(
        &self,
        sql: &Arc<Statements>,
        topic: &str,
        mut batch: Vec<Vec<Incoming>>,
        cache: &mut StateCache,
        shutdown: &CancellationToken,
    ) -> (Vec<Vec<Incoming>>, anyhow::Result<Applied>) {
        // Poison goes to the dead-letter topic before its lane commits: a
        // crash in between parks it again (a duplicate there), never loses it.
        let (dead_letters, dlq_topic) = (self.dead_letters.clone(), topic.to_owned());
        let park = move |records: &[Incoming], outcome: &Outcome| {
            let poison = (!outcome.parked.is_empty()).then(|| (records.to_vec(), outcome.parked.clone()));
            let (dead_letters, topic) = (dead_letters.clone(), dlq_topic.clone());
            async move {
                match poison {
                    Some((records, parked)) => dead_letters.send(&topic, &records, &parked).await,
                    None => Ok(()),
                }
            }
        };
        loop {
            let serving = Some(sql.generation.id);
            let (back, applied) = lanes::apply(&self.pool, sql, topic, batch, cache, &Mode::Live, serving, park.clone()).await;
            batch = back;
            match applied {
                Ok(applied) => return (batch, Ok(applied)),
                Err(e) if shutdown.is_cancelled() => return (batch, Err(e)),
                Err(e) => {
                    let pause = if e.downcast_ref::<ApplyError>().is_some_and(|a| matches!(a, ApplyError::UnreadableState { .. })) {
                        Duration::from_secs(10)
                    } else {
                        Duration::from_secs(1)
                    };
                    tracing::warn!(error = %e, "applying a batch failed; retrying");
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }

    /// Pushes the batch's documents to Redis and its offsets to Kafka.
    async fn after_commit(
        &self,
        consumer: &StreamConsumer<Stats>,
        sql: &Statements,
        topic: &str,
        batch: &[Vec<Incoming>],
        outcome: Outcome,
    ) {
        tracing::debug!(applied = outcome.applied, duplicates = outcome.duplicates, parked = outcome.parked.len(), "batch applied");
        let mut last_timestamps = BTreeMap::new();
        for r in batch.iter().flatten() {
            if let Some(ms) = r.timestamp_ms {
                last_timestamps.insert(r.partition, ms);
            }
        }
        self.progress.applied(&outcome.next_offsets, last_timestamps);
        match self.sink.publish(sql.generation.id, &outcome.documents, &outcome.tags).await {
            Ok(()) => {
                if !outcome.redis_outbox_ids.is_empty() {
                    let delete = readmodel::tables::redis_outbox::delete(&self.pool, &sql.generation.schema, &outcome.redis_outbox_ids);
                    if let Err(e) = delete.await {
                        tracing::debug!(error = %e, "cannot clear the Redis outbox rows; the repair will");
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "pushing documents to Redis failed; the query-service falls back to PostgreSQL and the repair catches up"),
        }
        let mut tpl = TopicPartitionList::new();
        for (p, o) in &outcome.next_offsets {
            if let Err(e) = tpl.add_partition_offset(topic, *p, Offset::Offset(*o)) {
                tracing::debug!(error = %e, "cannot list an offset to commit");
            }
        }
        if let Err(e) = consumer.commit(&tpl, CommitMode::Async) {
            tracing::debug!(error = %e, "committing offsets to Kafka failed (informational only)");
        }
    }
}

/// How [`Projector::position`] moves the consumer.
#[derive(Debug, Clone, Copy)]
enum Seek {
    /// Add the partitions to the assignment.
    Assign,
    /// Move partitions already assigned.
    Existing,
}

/// Removes `partitions` from the consumer's assignment.
fn unassign(consumer: &StreamConsumer<Stats>, topic: &str, partitions: &[i32]) {
    if partitions.is_empty() {
        return;
    }
    let mut tpl = TopicPartitionList::new();
    for p in partitions {
        tpl.add_partition(topic, *p);
    }
    if let Err(e) = consumer.incremental_unassign(&tpl) {
        tracing::error!(error = %e, ?partitions, "unassign failed");
    }
}

/// Every few seconds: brings Redis up to date with the serving generation
/// (see [`repair`]) and samples the halted streams.
async fn repair_loop(pool: PgPool, sink: Arc<RedisSink>, generation: Arc<Mutex<Generation>>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let generation = generation.lock().expect("generation poisoned").clone();
        if let Err(e) = repair(&pool, &sink, &generation, Duration::from_secs(2)).await {
            tracing::debug!(error = %e, "Redis repair did not complete; retrying");
        }
        if let Ok(halted) = readmodel::tables::streams::halted_count(&pool, &generation.schema).await {
            platform::metrics::HALTED_STREAMS.set(halted);
        }
    }
}

//! The Kafka side of the projector: a consumer group member that collects
//! batches, has them applied to the serving generation, and resumes from the
//! offsets stored in PostgreSQL.
//!
//! PostgreSQL, not Kafka, is the source of truth for where a projection stands:
//! when partitions are assigned, each is positioned at the next offset stored
//! with the serving generation's read models (from the beginning when none is
//! stored). Offsets are also committed to Kafka, only so that standard lag
//! tools see them.
//!
//! While the lanes apply a batch, the loop receives the records of the next
//! one. Rebalances happen inside `recv()`, so partitions may be given up while
//! a batch of theirs is applied: the new owner resumes from the offsets
//! stored so far and may apply the same records at the same time; the stream
//! rows (moved only from where a batch found them) let one of the two commit
//! and send the other back, which then finds them applied (exactly once
//! still). Records received for partitions revoked meanwhile are dropped.
//! When a rebuild has moved the pointer to a new generation, the next batch
//! notices it in its transaction, is rolled back, and every assigned
//! partition is positioned at the new generation's offsets.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use platform::kafka::KafkaSettings;
use platform::readmodel::Generation;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::dead_letters::DeadLetterTopic;
use crate::record::Incoming;
use crate::settings::ProjectorSettings;
use crate::sink::{RedisSink, repair};
use crate::lanes::{self, Applied};
use crate::store::{ApplyError, Mode, Outcome, StateCache, Statements};

/// Positions assigned partitions from PostgreSQL and tracks which are ours.
struct Rebalancer {
    pool: PgPool,
    topic: String,
    generation: Arc<Mutex<Generation>>,
    runtime: tokio::runtime::Handle,
    assigned: Mutex<HashSet<i32>>,
    /// Kafka timestamp (ms) of the last applied record, per partition.
    last_applied_ms: Mutex<HashMap<i32, i64>>,
}

impl Rebalancer {
    fn stored_offsets(&self) -> BTreeMap<i32, i64> {
        let generation = self.generation.lock().expect("generation poisoned").clone();
        let sql = Statements::new(generation);
        // Runs inside `recv()` on a runtime worker: block this worker only.
        let stored = tokio::task::block_in_place(|| {
            self.runtime.block_on(async {
                let mut conn = self.pool.acquire().await?;
                sql.load_offsets(&mut conn, &self.topic).await
            })
        });
        stored.unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot read stored offsets; resuming from Kafka's committed offsets");
            BTreeMap::new()
        })
    }
}

impl ClientContext for Rebalancer {
    /// librdkafka's statistics (every few seconds): the lag per partition.
    fn stats(&self, statistics: rdkafka::Statistics) {
        let Some(topic) = statistics.topics.get(&self.topic) else { return };
        let last_applied = self.last_applied_ms.lock().expect("lag table poisoned");
        let now_ms = chrono::Utc::now().timestamp_millis();
        for (id, partition) in &topic.partitions {
            if *id < 0 || partition.consumer_lag < 0 {
                continue;
            }
            let label = id.to_string();
            platform::metrics::PROJECTOR_LAG_OFFSETS.with_label_values(&[&label]).set(partition.consumer_lag);
            let seconds = match (partition.consumer_lag, last_applied.get(id)) {
                (0, _) | (_, None) => 0.0,
                (_, Some(ms)) => (now_ms - ms).max(0) as f64 / 1000.0,
            };
            platform::metrics::PROJECTOR_LAG_SECONDS.with_label_values(&[&label]).set(seconds);
        }
    }
}

impl ConsumerContext for Rebalancer {
    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let stored = self.stored_offsets();
                let partitions: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
                for &p in &partitions {
                    let offset = stored.get(&p).map_or(Offset::Beginning, |o| Offset::Offset(*o));
                    if let Err(e) = tpl.set_partition_offset(&self.topic, p, offset) {
                        tracing::error!(error = %e, partition = p, "cannot position partition");
                    }
                }
                tracing::info!(?partitions, "partitions assigned");
                *self.assigned.lock().expect("assigned set poisoned") = partitions.into_iter().collect();
                if let Err(e) = consumer.assign(tpl) {
                    tracing::error!(error = %e, "assign failed");
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                tracing::info!("partitions revoked");
                self.assigned.lock().expect("assigned set poisoned").clear();
                if let Err(e) = consumer.unassign() {
                    tracing::error!(error = %e, "unassign failed");
                }
            }
            other => tracing::error!(error = ?other, "rebalance error"),
        }
    }
}

/// Consumes the events topic and applies it until shut down.
pub struct Projector {
    pool: PgPool,
    sink: Arc<RedisSink>,
    kafka: KafkaSettings,
    settings: ProjectorSettings,
    dead_letters: Arc<DeadLetterTopic>,
}

impl std::fmt::Debug for Projector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Projector").field("settings", &self.settings).finish_non_exhaustive()
    }
}

impl Projector {
    pub fn new(
        pool: PgPool,
        sink: Arc<RedisSink>,
        kafka: KafkaSettings,
        settings: ProjectorSettings,
    ) -> anyhow::Result<Self> {
        let dead_letters = Arc::new(DeadLetterTopic::new(&kafka)?);
        Ok(Self { pool, sink, kafka, settings, dead_letters })
    }

    /// Runs until `shutdown` is cancelled; the batch in hand is finished first.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let topic = self.kafka.events_topic.clone();
        let generation = platform::readmodel::serving(&self.pool).await?;
        tracing::info!(generation = generation.id, "projecting into the serving generation");
        let shared = Arc::new(Mutex::new(generation.clone()));
        let mut sql = Arc::new(Statements::new(generation));
        let context = Rebalancer {
            pool: self.pool.clone(),
            topic: topic.clone(),
            generation: shared.clone(),
            runtime: tokio::runtime::Handle::current(),
            assigned: Mutex::new(HashSet::new()),
            last_applied_ms: Mutex::new(HashMap::new()),
        };
        let consumer: StreamConsumer<Rebalancer> = self
            .kafka
            .client_config()
            .set("group.id", &self.settings.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("partition.assignment.strategy", "range")
            .set("statistics.interval.ms", "5000")
            .set("fetch.wait.max.ms", self.settings.fetch_wait_ms.to_string())
            .create_with_context(context)?;
        consumer.subscribe(&[&topic])?;
        if let Err(e) = self.sink.announce_generation(sql.generation.id).await {
            tracing::warn!(error = %e, "cannot announce the generation in Redis");
        }
        let repairs = tokio::spawn(repair_loop(self.pool.clone(), self.sink.clone(), shared.clone(), shutdown.clone()));

        let batch_wait = Duration::from_millis(self.settings.batch_wait_ms);
        let mut cache = StateCache::default();
        // Records received while the previous batch was applied: the next batch starts with them.
        let mut early: Vec<Incoming> = Vec::new();
        loop {
            let mut batch = std::mem::take(&mut early);
            if batch.is_empty() {
                let first = tokio::select! {
                    () = shutdown.cancelled() => break,
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
            {
                let assigned = consumer.context().assigned.lock().expect("assigned set poisoned");
                batch.retain(|r| assigned.contains(&r.partition));
            }
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
                Applied::Committed(outcome) => self.after_commit(&consumer, &sql, &topic, &lanes, outcome).await,
                Applied::GenerationChanged(id) => {
                    let generation = Generation::new(id);
                    tracing::info!(from = sql.generation.id, to = generation.id, "the read models were rebuilt; switching generation");
                    *shared.lock().expect("generation poisoned") = generation.clone();
                    sql = Arc::new(Statements::new(generation));
                    cache.clear();
                    // Received for the old positions: the new generation's offsets decide.
                    early.clear();
                    self.reposition(&consumer, &topic)?;
                }
            }
        }
        repairs.abort();
        tracing::info!("projector stopped");
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
        consumer: &StreamConsumer<Rebalancer>,
        sql: &Statements,
        topic: &str,
        batch: &[Vec<Incoming>],
        outcome: Outcome,
    ) {
        tracing::debug!(applied = outcome.applied, duplicates = outcome.duplicates, parked = outcome.parked.len(), "batch applied");
        match self.sink.publish(sql.generation.id, &outcome.documents, &outcome.tags).await {
            Ok(()) => {
                if !outcome.redis_outbox_ids.is_empty() {
                    let delete = format!("delete from {}.redis_outbox where id = any($1)", sql.generation.schema);
                    if let Err(e) = sqlx::query(&delete).bind(&outcome.redis_outbox_ids).execute(&self.pool).await {
                        tracing::debug!(error = %e, "cannot clear the Redis outbox rows; the repair will");
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "pushing documents to Redis failed; the query-service falls back to PostgreSQL and the repair catches up"),
        }
        {
            let mut last = consumer.context().last_applied_ms.lock().expect("lag table poisoned");
            for r in batch.iter().flatten() {
                if let Some(ms) = r.timestamp_ms {
                    last.insert(r.partition, ms);
                }
            }
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

    /// Positions every assigned partition at the (new) generation's stored offsets.
    fn reposition(&self, consumer: &StreamConsumer<Rebalancer>, topic: &str) -> anyhow::Result<()> {
        let stored = consumer.context().stored_offsets();
        let assigned: Vec<i32> = consumer.context().assigned.lock().expect("assigned set poisoned").iter().copied().collect();
        for p in assigned {
            let offset = stored.get(&p).map_or(Offset::Beginning, |o| Offset::Offset(*o));
            consumer.seek(topic, p, offset, Duration::from_secs(10))?;
        }
        Ok(())
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
        let count = format!("select count(*) from {}.streams where halted", generation.schema);
        if let Ok((halted,)) = sqlx::query_as::<_, (i64,)>(&count).fetch_one(&pool).await {
            platform::metrics::HALTED_STREAMS.set(halted);
        }
    }
}

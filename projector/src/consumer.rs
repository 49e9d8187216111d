//! The Kafka side of the projector: a consumer group member that collects
//! batches, has them applied, and resumes from the offsets stored in PostgreSQL.
//!
//! PostgreSQL, not Kafka, is the source of truth for where a projection stands:
//! when partitions are assigned, each is positioned at the next offset stored
//! with the read models (from the beginning when none is stored). Offsets are
//! also committed to Kafka, only so that standard lag tools see them.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use events::RecordedEvent;
use platform::kafka::KafkaSettings;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::message::BorrowedMessage;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::apply::{Incoming, apply_batch, load_offsets};
use crate::settings::ProjectorSettings;
use crate::sink::RedisSink;

/// Positions assigned partitions from PostgreSQL and tracks which are ours.
struct Rebalancer {
    pool: PgPool,
    projection: String,
    topic: String,
    runtime: tokio::runtime::Handle,
    assigned: Mutex<HashSet<i32>>,
    /// Kafka timestamp (ms) of the last applied record, per partition.
    last_applied_ms: Mutex<std::collections::HashMap<i32, i64>>,
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
                // Runs inside `recv()` on a runtime worker: block this worker only.
                let stored = tokio::task::block_in_place(|| {
                    self.runtime.block_on(load_offsets(&self.pool, &self.projection, &self.topic))
                });
                let stored = stored.unwrap_or_else(|e| {
                    tracing::error!(error = %e, "cannot read stored offsets; resuming from Kafka's committed offsets");
                    BTreeMap::new()
                });
                let mut partitions = Vec::new();
                for element in tpl.elements() {
                    partitions.push(element.partition());
                }
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
}

impl std::fmt::Debug for Projector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Projector").field("settings", &self.settings).finish_non_exhaustive()
    }
}

impl Projector {
    pub fn new(pool: PgPool, sink: Arc<RedisSink>, kafka: KafkaSettings, settings: ProjectorSettings) -> Self {
        Self { pool, sink, kafka, settings }
    }

    /// Runs until `shutdown` is cancelled; the batch in hand is finished first.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let topic = self.kafka.events_topic.clone();
        let context = Rebalancer {
            pool: self.pool.clone(),
            projection: self.settings.name.clone(),
            topic: topic.clone(),
            runtime: tokio::runtime::Handle::current(),
            assigned: Mutex::new(HashSet::new()),
            last_applied_ms: Mutex::new(std::collections::HashMap::new()),
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
            .create_with_context(context)?;
        consumer.subscribe(&[&topic])?;
        let batch_wait = Duration::from_millis(self.settings.batch_wait_ms);

        loop {
            let first = tokio::select! {
                () = shutdown.cancelled() => break,
                message = consumer.recv() => message,
            };
            let mut batch = Vec::with_capacity(self.settings.batch_size);
            let mut undecodable = 0usize;
            let mut take = |message: Result<BorrowedMessage<'_>, _>, batch: &mut Vec<Incoming>| match message {
                Ok(m) => match decode(&m) {
                    Ok(envelope) => batch.push(Incoming {
                        partition: m.partition(),
                        offset: m.offset(),
                        timestamp_ms: m.timestamp().to_millis(),
                        envelope,
                    }),
                    Err(e) => {
                        undecodable += 1;
                        platform::metrics::DEAD_LETTERS.with_label_values(&["undecodable"]).inc();
                        tracing::error!(partition = m.partition(), offset = m.offset(), error = %e, "undecodable record skipped");
                    }
                },
                Err(e) => tracing::warn!(error = %e, "consumer error"),
            };
            take(first, &mut batch);
            let deadline = tokio::time::Instant::now() + batch_wait;
            while batch.len() < self.settings.batch_size {
                match tokio::time::timeout_at(deadline, consumer.recv()).await {
                    Ok(message) => take(message, &mut batch),
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
            self.apply(&consumer, &topic, batch, &shutdown).await?;
        }
        tracing::info!("projector stopped");
        Ok(())
    }

    /// Applies a batch, retrying while PostgreSQL is unavailable, then pushes to Redis.
    async fn apply(
        &self,
        consumer: &StreamConsumer<Rebalancer>,
        topic: &str,
        batch: Vec<Incoming>,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<()> {
        let applied = loop {
            match platform::metrics::timed("apply_batch", apply_batch(&self.pool, &self.settings.name, topic, &batch)).await {
                Ok(applied) => break applied,
                Err(e) if shutdown.is_cancelled() => return Err(e.into()),
                Err(e) => {
                    tracing::warn!(error = %e, "applying a batch failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        };
        tracing::debug!(applied = applied.applied, duplicates = applied.duplicates, gaps = applied.gaps, "batch applied");
        if let Err(e) = self.sink.publish(&applied.documents).await {
            tracing::warn!(error = %e, "pushing documents to Redis failed; the query-service falls back to PostgreSQL");
        }
        {
            let mut last = consumer.context().last_applied_ms.lock().expect("lag table poisoned");
            for r in &batch {
                if let Some(ms) = r.timestamp_ms {
                    last.insert(r.partition, ms);
                }
            }
        }
        let mut tpl = TopicPartitionList::new();
        for (p, o) in &applied.next_offsets {
            tpl.add_partition_offset(topic, *p, Offset::Offset(*o))?;
        }
        if let Err(e) = consumer.commit(&tpl, CommitMode::Async) {
            tracing::debug!(error = %e, "committing offsets to Kafka failed (informational only)");
        }
        Ok(())
    }
}

/// Reads a record's CloudEvents headers and JSON value into an envelope.
fn decode(message: &BorrowedMessage<'_>) -> anyhow::Result<events::Envelope> {
    let headers = platform::kafka::string_headers(message);
    let header = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let record = RecordedEvent::from_cloudevent(header, message.payload().unwrap_or_default())?;
    Ok(record.into_envelope()?)
}

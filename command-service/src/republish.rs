//! Republishing the event store to a topic: a lost, truncated or damaged
//! topic is rebuilt from PostgreSQL, which keeps every accepted event for
//! good.
//!
//! Every event goes out as the relay sent it: the same key (the article),
//! CloudEvents headers (the same event id) and JSON data ([`relay::encode`]),
//! so the projector, `erp-replay` and any Kafka client read the new topic as
//! they read the old one. Events are sent stream by stream, each stream's in
//! sequence order: every article's events arrive in order on its partition,
//! which is the only order a reader relies on.
//!
//! **Resumable.** After each batch the broker confirmed, the last event's key
//! is stored in `republish_progress` for the target topic; a run continues
//! after it. A crash sends at most the unconfirmed batch again, and readers
//! skip such repeats by their sequence, as they skip the relay's.
//!
//! **Into an empty topic only.** A topic that already holds records, and for
//! which no run is recorded, is refused: republishing into the live topic
//! would put every event on it twice.

use std::time::{Duration, Instant};

use platform::kafka::KafkaSettings;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::FutureRecord;
use serde::Serialize;
use sqlx::PgPool;

use crate::relay;
use crate::store::StoredEventRow;

/// What to republish, and how.
#[derive(Debug, Clone)]
pub struct Options {
    /// The topic to write (created with the events topic's partitions if missing).
    pub topic: String,
    /// Events read and produced per round.
    pub batch_size: i64,
    /// Forget a recorded run and start from the first event (into an empty topic).
    pub restart: bool,
}

/// What a run did.
#[derive(Debug, Serialize)]
pub struct Report {
    pub topic: String,
    /// Events produced by this run.
    pub published: i64,
    /// Events in the store, all runs included, now on the topic.
    pub total: i64,
    /// Whether the run continued an earlier one.
    pub resumed: bool,
    pub seconds: f64,
}

/// Republishes the event store into `options.topic`; `progress(done, total)`
/// is called after every batch.
#[tracing::instrument(skip_all, fields(topic = %options.topic), err)]
pub async fn republish(
    pool: &PgPool,
    kafka: &KafkaSettings,
    options: &Options,
    mut progress: impl FnMut(i64, i64),
) -> anyhow::Result<Report> {
    anyhow::ensure!(options.batch_size > 0, "--batch-size must be at least 1");
    let started = Instant::now();
    let target = KafkaSettings { events_topic: options.topic.clone(), ..kafka.clone() };
    platform::kafka::ensure_topic(&target, &options.topic, kafka.partitions).await?;
    if let Some(refusal) = platform::kafka::retention_refusal(&target).await? {
        anyhow::bail!(refusal);
    }
    if options.restart {
        sqlx::query("delete from republish_progress where topic = $1").bind(&options.topic).execute(pool).await?;
    }
    let recorded: Option<(String, i64, i64)> =
        sqlx::query_as("select stream_id, sequence, published from republish_progress where topic = $1")
            .bind(&options.topic)
            .fetch_optional(pool)
            .await?;
    let resumed = recorded.is_some();
    if !resumed {
        let held = records_on(&target).await?;
        anyhow::ensure!(
            held == 0,
            "topic {} already holds {held} records and no republish into it is recorded: republishing would put \
             every event on it twice; choose a new topic",
            options.topic
        );
    }
    let (mut after_stream, mut after_sequence, mut done) = recorded.unwrap_or((String::new(), 0, 0));
    let (total,): (i64,) = sqlx::query_as("select count(*) from events").fetch_one(pool).await?;
    let producer = relay::producer(kafka, 30_000)?;
    let mut published = 0;
    loop {
        let rows: Vec<StoredEventRow> = sqlx::query_as(
            "select stream_id, sequence, event_id, event_type, schema_version, posted_at, recorded_at,
                    correlation_id, causation_id, actor, data, traceparent
             from events where (stream_id, sequence) > ($1, $2)
             order by stream_id, sequence
             limit $3",
        )
        .bind(&after_stream)
        .bind(after_sequence)
        .bind(options.batch_size)
        .fetch_all(pool)
        .await?;
        let Some(last) = rows.last() else { break };
        let (last_stream, last_sequence) = (last.stream_id.clone(), last.sequence);
        let count = rows.len() as i64;
        let mut deliveries = Vec::with_capacity(rows.len());
        for row in rows {
            let record = row.into_record();
            let (payload, headers) = relay::encode(&record)?;
            let message = FutureRecord::to(&options.topic).key(record.kafka_key()).payload(&payload).headers(headers);
            deliveries.push(producer.send_result(message).map_err(|(e, _)| anyhow::anyhow!("producing: {e}"))?);
        }
        for delivery in deliveries {
            delivery.await?.map_err(|(e, _)| anyhow::anyhow!("delivery failed: {e}"))?;
        }
        (after_stream, after_sequence) = (last_stream, last_sequence);
        done += count;
        published += count;
        sqlx::query(
            "insert into republish_progress (topic, stream_id, sequence, published) values ($1, $2, $3, $4)
             on conflict (topic) do update set stream_id = excluded.stream_id, sequence = excluded.sequence,
                 published = excluded.published, updated_at = now()",
        )
        .bind(&options.topic)
        .bind(&after_stream)
        .bind(after_sequence)
        .bind(done)
        .execute(pool)
        .await?;
        progress(done, total.max(done));
    }
    Ok(Report { topic: options.topic.clone(), published, total: done, resumed, seconds: started.elapsed().as_secs_f64() })
}

/// Records on `settings.events_topic`, over every partition.
async fn records_on(settings: &KafkaSettings) -> anyhow::Result<i64> {
    let settings = settings.clone();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = settings.client_config().create()?;
        let timeout = Duration::from_secs(10);
        let metadata = consumer.fetch_metadata(Some(&settings.events_topic), timeout)?;
        let mut held = 0;
        for topic in metadata.topics() {
            for p in topic.partitions() {
                let (low, high) = consumer.fetch_watermarks(&settings.events_topic, p.id(), timeout)?;
                held += high - low;
            }
        }
        anyhow::Ok(held)
    })
    .await?
}

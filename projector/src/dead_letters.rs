//! Poison records: the dead-letter topic the projector copies them to, and
//! the operator's commands that list parked records and re-drive them.
//!
//! A poison record (undecodable, a gap in its stream, or an event that does
//! not fit its stream's state) is parked in the generation's `dead_letters`
//! table and halts its stream: the stream's later records are parked behind
//! it, other streams go on. It is also copied, with its original key, value
//! and headers, to the topic `{events topic}.dead-letters`, with headers
//! `dlq_error`, `dlq_reason`, `dlq_topic`, `dlq_partition` and `dlq_offset`.
//!
//! After a fix (a new projector version that reads the record), `redrive`
//! applies a halted stream's parked records again, in order; `skip` passes
//! over the first one (an operator's decision, recorded, and honoured by
//! later rebuilds) and re-drives the rest.

use std::time::Duration;

use platform::kafka::KafkaSettings;
use readmodel::tables::{dead_letters, redis_outbox, streams};
use readmodel::{Generation, Statements};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::Serialize;
use sqlx::PgPool;

use crate::record::Incoming;
use crate::sink::RedisSink;
use crate::apply::apply_batch;
use crate::batch::{Mode, Outcome, Parked, Reason};
use crate::cache::StateCache;

/// The topic poison records are copied to.
pub fn topic_of(events_topic: &str) -> String {
    format!("{events_topic}.dead-letters")
}

/// Copies poison records to the dead-letter topic.
pub struct DeadLetterTopic {
    producer: FutureProducer,
    kafka: KafkaSettings,
}

impl std::fmt::Debug for DeadLetterTopic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadLetterTopic").finish_non_exhaustive()
    }
}

impl DeadLetterTopic {
    pub fn new(kafka: &KafkaSettings) -> anyhow::Result<Self> {
        let producer = kafka
            .client_config()
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("message.timeout.ms", "10000")
            .create()?;
        Ok(Self { producer, kafka: kafka.clone() })
    }

    /// Sends the poison among `parked` (not the records waiting behind it)
    /// and waits for the broker's acknowledgement.
    pub async fn send(&self, topic: &str, batch: &[Incoming], parked: &[Parked]) -> anyhow::Result<()> {
        let poison: Vec<&Parked> = parked.iter().filter(|p| p.reason != Reason::Halted).collect();
        if poison.is_empty() {
            return Ok(());
        }
        let dlq = topic_of(topic);
        platform::kafka::ensure_topic(&self.kafka, &dlq, 1).await?;
        for p in poison {
            let r = &batch[p.index];
            let (partition, offset) = (r.partition.to_string(), r.offset.to_string());
            let mut headers = OwnedHeaders::new();
            for (k, v) in r.headers.iter() {
                headers = headers.insert(Header { key: k, value: Some(v.as_bytes()) });
            }
            for (k, v) in [
                ("dlq_error", p.error.as_str()),
                ("dlq_reason", p.reason.as_str()),
                ("dlq_topic", topic),
                ("dlq_partition", &partition),
                ("dlq_offset", &offset),
            ] {
                headers = headers.insert(Header { key: k, value: Some(v.as_bytes()) });
            }
            let mut record = FutureRecord::to(&dlq).payload(&r.payload).headers(headers);
            if let Some(key) = &r.key {
                record = record.key(key);
            }
            self.producer
                .send(record, Duration::from_secs(10))
                .await
                .map_err(|(e, _)| anyhow::anyhow!("copying a poison record to {dlq}: {e}"))?;
        }
        Ok(())
    }
}

pub use readmodel::tables::dead_letters::DeadLetter;

/// Parked records of the serving generation (with `all`, resolved ones too), oldest first.
pub async fn list(pool: &PgPool, all: bool) -> anyhow::Result<Vec<DeadLetter>> {
    let generation = readmodel::serving(pool).await?;
    Ok(dead_letters::list(pool, &generation.schema, all).await?)
}

/// What re-driving one stream did.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Redriven {
    pub stream: String,
    pub applied: usize,
    pub skipped: usize,
    /// Records still parked (the first one still fails, with `error`).
    pub still_parked: usize,
    pub error: Option<String>,
}

/// Applies the parked records of `stream` (or of every halted stream) again, in order.
pub async fn redrive(pool: &PgPool, sink: &RedisSink, topic: &str, stream: Option<&str>) -> anyhow::Result<Vec<Redriven>> {
    let generation = readmodel::serving(pool).await?;
    let streams: Vec<String> = match stream {
        Some(s) => vec![s.to_owned()],
        None => streams::halted(pool, &generation.schema).await?,
    };
    let mut report = Vec::new();
    for stream in streams {
        report.push(redrive_stream(pool, sink, &generation, topic, &stream, false).await?);
    }
    Ok(report)
}

/// Passes over parked record `id` (it must be the first its stream waits on,
/// with a readable sequence) and re-drives the stream's other parked records.
pub async fn skip(pool: &PgPool, sink: &RedisSink, topic: &str, id: i64) -> anyhow::Result<Redriven> {
    let generation = readmodel::serving(pool).await?;
    let row = dead_letters::with_first_of_stream(pool, &generation.schema, id).await?;
    let Some((stream, sequence, status, first)) = row else { anyhow::bail!("no dead letter {id}") };
    anyhow::ensure!(status == "parked", "dead letter {id} is {status}, not parked");
    let Some(stream) = stream else {
        anyhow::bail!("dead letter {id} belongs to no stream: it holds nothing up and needs no skip")
    };
    anyhow::ensure!(
        sequence.is_some(),
        "dead letter {id} has no readable sequence, so skipping it could not keep {stream} in order; \
         fix what cannot read it and re-drive instead"
    );
    anyhow::ensure!(
        first == Some(id),
        "dead letter {id} is not the first record {stream} waits on (that is {}); skip or re-drive that one first",
        first.map_or_else(|| "none".to_owned(), |f| f.to_string())
    );
    let position = streams::applied(pool, &generation.schema, &stream).await?.unwrap_or(0);
    anyhow::ensure!(
        sequence == Some(position + 1),
        "dead letter {id} is sequence {} of {stream}, which has applied up to {position}: the events between are \
         missing from the topic. Publish them again (the command-service's event store has every event) and re-drive",
        sequence.unwrap_or_default()
    );
    redrive_stream(pool, sink, &generation, topic, &stream, true).await
}

/// Re-drives the parked records of `stream` in `generation` without touching
/// Redis (the projector's repair copies the documents from the outbox).
pub async fn redrive_in(pool: &PgPool, generation: &Generation, topic: &str, stream: &str) -> anyhow::Result<Redriven> {
    Ok(run_redrive(pool, generation, topic, stream, false).await?.0)
}

/// Passes over the first parked record of `stream` (when it is the next of
/// the stream) and re-drives the rest, without touching Redis.
pub async fn skip_in(pool: &PgPool, generation: &Generation, topic: &str, stream: &str) -> anyhow::Result<Redriven> {
    Ok(run_redrive(pool, generation, topic, stream, true).await?.0)
}

async fn redrive_stream(
    pool: &PgPool,
    sink: &RedisSink,
    generation: &Generation,
    topic: &str,
    stream: &str,
    skip_first: bool,
) -> anyhow::Result<Redriven> {
    let (report, outcome) = run_redrive(pool, generation, topic, stream, skip_first).await?;
    if let Err(e) = sink.publish(generation.id, &outcome.documents, &outcome.tags).await {
        tracing::warn!(error = %e, "pushing documents to Redis failed; the projector's repair catches up");
    } else if !outcome.redis_outbox_ids.is_empty() {
        redis_outbox::delete(pool, &generation.schema, &outcome.redis_outbox_ids).await?;
    }
    Ok(report)
}

async fn run_redrive(
    pool: &PgPool,
    generation: &Generation,
    topic: &str,
    stream: &str,
    skip_first: bool,
) -> anyhow::Result<(Redriven, Outcome)> {
    let sql = Statements::new(generation.clone());
    let schema = &generation.schema;
    let mut tx = pool.begin().await?;
    // Lock the stream before reading what is parked, so that a live batch
    // parking another record of it either committed before or waits.
    streams::lock(&mut *tx, schema, stream).await?;
    let rows = dead_letters::parked_of_stream(&mut *tx, schema, stream).await?;
    let records: Vec<Incoming> = rows
        .into_iter()
        .map(|(id, partition, offset, key, headers, payload)| {
            let headers: Vec<(String, String)> = serde_json::from_value(headers).unwrap_or_default();
            let mut record = Incoming::new(partition, offset, None, key, headers, payload);
            record.dead_letter_id = Some(id);
            record
        })
        .collect();
    let outcome = apply_batch(&mut tx, &sql, topic, &records, &mut StateCache::default(), &Mode::Redrive { skip_first }).await?;
    tx.commit().await?;
    let first_error = outcome.parked.iter().find(|p| p.reason != Reason::Halted).map(|p| p.error.clone());
    let report = Redriven {
        stream: stream.to_owned(),
        applied: outcome.applied,
        skipped: outcome.skipped.len(),
        still_parked: outcome.parked.len(),
        error: first_error,
    };
    Ok((report, outcome))
}

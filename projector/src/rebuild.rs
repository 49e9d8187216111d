//! Rebuilding the read models blue/green: replay the events topic from
//! offset 0 into a new generation while the serving one keeps serving, then
//! swap the pointer in one transaction.
//!
//! 1. A new schema `rm_{n}` is created with `create_read_model()`.
//! 2. Every partition is read from its first offset and applied batch by
//!    batch with the live code path, until the end offsets measured at the
//!    start (re-measured when reached) are close. Progress is printed: percent
//!    of the end offsets, events per second, ETA.
//! 3. The new generation's documents are copied into its own Redis keyspace.
//! 4. The swap transaction locks `read_model_pointer` (live batches wait),
//!    applies what the new generation still lacks up to the serving
//!    generation's offsets, and moves the pointer. Live projectors notice the
//!    new generation in their next batch and continue from its offsets;
//!    query-services follow within a second (and at once on the `*`
//!    invalidation published after the swap).
//! 5. After a grace period the old generation's schema and Redis keys are dropped.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use platform::kafka::KafkaSettings;
use readmodel::{Generation, Statements};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;
use sqlx::{Connection, PgConnection, PgPool};

use crate::record::Incoming;
use crate::sink::{RedisSink, repair};
use crate::apply::apply_batch;
use crate::batch::Mode;
use crate::cache::StateCache;

/// Advisory lock key: one rebuild at a time.
const REBUILD_LOCK: i64 = 0x6572_705f_7265_6275; // "erp_rebu"

/// How a rebuild runs.
#[derive(Debug, Clone)]
pub struct RebuildOptions {
    /// Most records applied in one transaction.
    pub batch_size: usize,
    /// Seconds the replaced generation is kept after the swap (readers that
    /// still use it finish), before it is dropped.
    pub keep_old_secs: u64,
    /// Keep the replaced generation instead of dropping it.
    pub keep_old: bool,
}

/// What a rebuild did.
#[derive(Debug, Clone, Serialize)]
pub struct RebuildReport {
    pub generation: i64,
    pub replaced: i64,
    pub records: u64,
    pub seconds: f64,
    pub records_per_second: f64,
    /// Checksum of the new generation's read models at the swap.
    pub checksum: String,
}

/// Rebuilds the read models into a new generation and makes it serve.
pub async fn rebuild(
    pool: &PgPool,
    sink: &RedisSink,
    kafka: &KafkaSettings,
    options: &RebuildOptions,
) -> anyhow::Result<RebuildReport> {
    let mut lock = PgConnection::connect_with(&pool.connect_options()).await?;
    let (locked,): (bool,) = sqlx::query_as("select pg_try_advisory_lock($1)").bind(REBUILD_LOCK).fetch_one(&mut lock).await?;
    anyhow::ensure!(locked, "another rebuild is running");
    let serving = readmodel::serving(pool).await?;
    let (next,): (i64,) = sqlx::query_as("select coalesce(max(generation), 0) + 1 from read_model_generations")
        .fetch_one(pool)
        .await?;
    let generation = Generation::new(next);
    let mut tx = pool.begin().await?;
    sqlx::query("select create_read_model($1)").bind(&generation.schema).execute(&mut *tx).await?;
    sqlx::query("insert into read_model_generations (generation, schema_name, status) values ($1, $2, 'building')")
        .bind(generation.id)
        .bind(&generation.schema)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    eprintln!("rebuilding the read models into generation {} (generation {} keeps serving)", generation.id, serving.id);

    let result = build_and_swap(pool, sink, kafka, options, &serving, &generation).await;
    if let Err(e) = &result {
        eprintln!("rebuild failed: {e:#}; dropping generation {}", generation.id);
        drop_generation(pool, sink, &generation).await?;
    }
    let report = result?;
    if options.keep_old {
        eprintln!("generation {} is kept (retired); drop it with `projector drop-generation {}`", serving.id, serving.id);
    } else {
        eprintln!("dropping generation {} in {} s", serving.id, options.keep_old_secs);
        tokio::time::sleep(Duration::from_secs(options.keep_old_secs)).await;
        drop_generation(pool, sink, &serving).await?;
        eprintln!("generation {} dropped", serving.id);
    }
    sqlx::query("select pg_advisory_unlock($1)").bind(REBUILD_LOCK).execute(&mut lock).await?;
    Ok(report)
}

async fn build_and_swap(
    pool: &PgPool,
    sink: &RedisSink,
    kafka: &KafkaSettings,
    options: &RebuildOptions,
    serving: &Generation,
    generation: &Generation,
) -> anyhow::Result<RebuildReport> {
    let topic = kafka.events_topic.clone();
    let sql = Statements::new(generation.clone());
    let skipped = readmodel::tables::dead_letters::skipped(pool, &serving.schema, &topic).await?;
    let mode = Mode::Build { skipped };

    let consumer: StreamConsumer = kafka
        .client_config()
        .set("group.id", format!("erp-rebuild-{}", generation.schema))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .create()?;
    let ends = watermarks(&consumer, &topic).await?;
    let incomplete: Vec<String> =
        ends.iter().filter(|(_, (low, _))| *low > 0).map(|(p, (low, _))| format!("partition {p} starts at {low}")).collect();
    anyhow::ensure!(
        incomplete.is_empty(),
        "the topic {topic} has lost its first records to retention ({}): a rebuild from it would be incomplete; \
         the events topic must keep every record (retention.ms=-1)",
        incomplete.join(", ")
    );
    let mut assignment = TopicPartitionList::new();
    for p in ends.keys() {
        assignment.add_partition_offset(&topic, *p, Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    let mut ends: BTreeMap<i32, i64> = ends.into_iter().map(|(p, (_, high))| (p, high)).collect();
    let mut positions: BTreeMap<i32, i64> = ends.keys().map(|p| (*p, 0)).collect();
    let mut progress = Progress::new(generation.id);
    let mut cache = StateCache::default();
    let started = Instant::now();
    let mut records = 0u64;

    // Catch up while the serving generation serves.
    loop {
        let remaining: i64 = ends.iter().map(|(p, end)| (end - positions[p]).max(0)).sum();
        progress.show(&positions, &ends, records, started);
        if remaining == 0 {
            let latest: BTreeMap<i32, i64> =
                watermarks(&consumer, &topic).await?.into_iter().map(|(p, (_, high))| (p, high)).collect();
            let behind: i64 = latest.iter().map(|(p, end)| (end - positions.get(p).copied().unwrap_or(0)).max(0)).sum();
            if behind <= options.batch_size as i64 {
                break;
            }
            ends = latest;
            continue;
        }
        let batch = next_batch(&consumer, options.batch_size, Duration::from_millis(200)).await;
        if batch.is_empty() {
            continue;
        }
        let mut tx = pool.begin().await?;
        let mut outcome = apply_batch(&mut tx, &sql, &topic, &batch, &mut cache, &mode).await?;
        tx.commit().await?;
        cache.keep(std::mem::take(&mut outcome.states), &outcome.halted);
        for (p, next) in outcome.next_offsets {
            positions.insert(p, next);
        }
        records += batch.len() as u64;
    }
    progress.done(&positions, records, started);

    eprintln!("copying generation {}'s documents into Redis", generation.id);
    if let Err(e) = repair(pool, sink, generation, Duration::ZERO).await {
        eprintln!("Redis is not reachable ({e}); the projector copies the documents once it is");
    }

    // The swap: live batches wait on the pointer while the new generation
    // takes what it still lacks up to the serving generation's offsets.
    let serving_sql = Statements::new(serving.clone());
    let mut tx = pool.begin().await?;
    sqlx::query("set local lock_timeout = '60s'").execute(&mut *tx).await?;
    let (pointer,): (i64,) = sqlx::query_as("select generation from read_model_pointer for update").fetch_one(&mut *tx).await?;
    anyhow::ensure!(pointer == serving.id, "generation {pointer} became the serving one meanwhile; nothing swapped");
    let targets = readmodel::tables::offsets::load(&mut *tx, &serving_sql.offsets, &topic).await?;
    let mut documents = Vec::new();
    let mut tags = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while targets.iter().any(|(p, target)| positions.get(p).copied().unwrap_or(0) < *target) {
        anyhow::ensure!(Instant::now() < deadline, "the new generation could not reach the serving one's offsets in time");
        let batch = next_batch(&consumer, options.batch_size, Duration::from_millis(200)).await;
        if batch.is_empty() {
            continue;
        }
        let mut outcome = apply_batch(&mut tx, &sql, &topic, &batch, &mut cache, &mode).await?;
        records += batch.len() as u64;
        for (p, next) in &outcome.next_offsets {
            positions.insert(*p, *next);
        }
        cache.keep(std::mem::take(&mut outcome.states), &outcome.halted);
        documents.extend(outcome.documents);
        tags.extend(outcome.tags);
    }
    let checksum = checksum(&mut tx, generation).await?;
    sqlx::query("update read_model_pointer set generation = $1").bind(generation.id).execute(&mut *tx).await?;
    sqlx::query("update read_model_generations set status = 'retired', retired_at = now() where generation = $1")
        .bind(serving.id)
        .execute(&mut *tx)
        .await?;
    sqlx::query("update read_model_generations set status = 'active', activated_at = now() where generation = $1")
        .bind(generation.id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    let seconds = started.elapsed().as_secs_f64();
    eprintln!("generation {} serves now (checksum {checksum})", generation.id);
    if let Err(e) = sink.publish(generation.id, &documents, &tags).await {
        eprintln!("pushing the last documents to Redis failed ({e}); the projector's repair catches up");
    }
    if let Err(e) = sink.announce_generation(generation.id).await {
        eprintln!("announcing the new generation in Redis failed ({e}); readers follow the pointer within a second");
    }
    Ok(RebuildReport {
        generation: generation.id,
        replaced: serving.id,
        records,
        seconds,
        records_per_second: records as f64 / seconds.max(1e-9),
        checksum,
    })
}

/// Drops a generation's schema and Redis keys and records it as dropped.
pub async fn drop_generation(pool: &PgPool, sink: &RedisSink, generation: &Generation) -> anyhow::Result<()> {
    let serving = readmodel::active(pool).await?;
    anyhow::ensure!(serving.as_ref() != Some(generation), "generation {} serves; it cannot be dropped", generation.id);
    sqlx::query(&format!("drop schema if exists {} cascade", generation.schema)).execute(pool).await?;
    sqlx::query("update read_model_generations set status = 'dropped' where generation = $1")
        .bind(generation.id)
        .execute(pool)
        .await?;
    if let Err(e) = sink.drop_generation(generation.id).await {
        eprintln!("cannot delete generation {}'s Redis keys ({e}); they are unused", generation.id);
    }
    Ok(())
}

/// Collects up to `size` records, waiting at most `wait` for the first one.
async fn next_batch(consumer: &StreamConsumer, size: usize, wait: Duration) -> Vec<Incoming> {
    let mut batch = Vec::with_capacity(size);
    let deadline = tokio::time::Instant::now() + wait;
    while batch.len() < size {
        let timeout = if batch.is_empty() { deadline } else { tokio::time::Instant::now() + Duration::from_millis(20) };
        match tokio::time::timeout_at(timeout, consumer.recv()).await {
            Ok(Ok(m)) => {
                let mut record = Incoming::from_message(&m);
                record.decode();
                batch.push(record);
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "consumer error"),
            Err(_) => break,
        }
    }
    batch
}

/// Low and high watermark of every partition of `topic`.
async fn watermarks(consumer: &StreamConsumer, topic: &str) -> anyhow::Result<BTreeMap<i32, (i64, i64)>> {
    tokio::task::block_in_place(|| {
        let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
        let t = metadata.topics().first().ok_or_else(|| anyhow::anyhow!("no metadata for {topic}"))?;
        anyhow::ensure!(t.error().is_none() && !t.partitions().is_empty(), "the topic {topic} does not exist");
        let mut marks = BTreeMap::new();
        for p in t.partitions() {
            marks.insert(p.id(), consumer.fetch_watermarks(topic, p.id(), Duration::from_secs(10))?);
        }
        Ok(marks)
    })
}

/// A checksum of a generation's read models: every row of every table the
/// projection derives (not the offsets, Redis outbox or dead-letter
/// timestamps), in a canonical order. Equal checksums mean equal read models.
pub async fn checksum(conn: &mut PgConnection, generation: &Generation) -> Result<String, sqlx::Error> {
    let s = &generation.schema;
    let tables = [
        format!("select * from {s}.streams"),
        format!("select * from {s}.articles"),
        format!("select * from {s}.low_stock"),
        format!("select * from {s}.charges"),
        format!("select * from {s}.categories"),
        format!("select * from {s}.reservations"),
        format!("select * from {s}.movements"),
        format!("select key, version, md5(body) from {s}.documents"),
        format!("select partition, \"offset\", stream_id, sequence, reason, status from {s}.dead_letters"),
    ];
    let parts: Vec<String> = tables
        .iter()
        .map(|t| format!("(select coalesce(md5(string_agg(r::text, '|' order by r::text)), '') from ({t}) r)"))
        .collect();
    let sql = format!("select md5({})", parts.join(" || '/' || "));
    sqlx::query_scalar(&sql).fetch_one(conn).await
}

/// Prints progress on standard error: a line updated in place on a
/// terminal, a line every ten seconds otherwise.
struct Progress {
    generation: i64,
    terminal: bool,
    last: Option<Instant>,
}

impl Progress {
    fn new(generation: i64) -> Self {
        Self { generation, terminal: std::io::stderr().is_terminal(), last: None }
    }

    fn show(&mut self, positions: &BTreeMap<i32, i64>, ends: &BTreeMap<i32, i64>, records: u64, started: Instant) {
        let every = if self.terminal { Duration::from_millis(500) } else { Duration::from_secs(10) };
        if self.last.is_some_and(|t| t.elapsed() < every) {
            return;
        }
        self.last = Some(Instant::now());
        let done: i64 = ends.iter().map(|(p, end)| positions.get(p).copied().unwrap_or(0).min(*end)).sum();
        let total: i64 = ends.values().sum();
        let percent = if total == 0 { 100.0 } else { 100.0 * done as f64 / total as f64 };
        let rate = records as f64 / started.elapsed().as_secs_f64().max(1e-3);
        let eta = if rate > 0.0 { format!("{:.0} s", (total - done).max(0) as f64 / rate) } else { "?".to_owned() };
        let line = format!(
            "generation {}: {percent:5.1}% of the end offsets ({done} of {total}), {rate:.0} records/s, ETA {eta}",
            self.generation
        );
        let mut err = std::io::stderr();
        if self.terminal {
            let _ = write!(err, "\r{line}   ");
        } else {
            let _ = writeln!(err, "{line}");
        }
    }

    fn done(&mut self, positions: &BTreeMap<i32, i64>, records: u64, started: Instant) {
        self.last = None;
        self.show(positions, positions, records, started);
        if self.terminal {
            eprintln!();
        }
    }
}

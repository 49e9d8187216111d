//! The outbox relay: publishes appended events to Kafka in commit order.
//!
//! **One writer at a time.** Every instance may run a relay; a session-level
//! advisory lock elects one, the others stand by and take over when its
//! connection drops. A single ordered writer keeps each article's events in
//! sequence order on the topic.
//!
//! **No skipped late commits.** Rows carry the id of the transaction that wrote
//! them. A round reads only rows whose transaction id is below the oldest
//! transaction still running (`pg_snapshot_xmin(pg_current_snapshot())`), in
//! transaction-id order: every transaction below that horizon has ended, so no
//! row can later appear below what was read. Rows are then marked relayed, so a
//! restart resends at most the rows whose delivery was not confirmed.
//!
//! **Prompt.** A commit wakes the relay at once: in process ([`Wake`]) when
//! this instance's relay leads; otherwise its append notifies
//! [`OUTBOX_CHANNEL`], which the leading instance listens on. The relay polls
//! only as a safety net. (A notify on every commit would serialise the
//! commits of all writers on PostgreSQL's notification lock.)

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use events::RecordedEvent;
use platform::kafka::KafkaSettings;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use sqlx::postgres::{PgConnectOptions, PgListener};
use sqlx::{Connection, PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

use platform::metrics::{self, timed};

use crate::settings::RelaySettings;
use crate::store::{OUTBOX_CHANNEL, StoredEventRow};

/// Key of the advisory lock that elects the relaying instance.
const LEADER_LOCK: i64 = 0x6572_705f_7265_6c61; // "erp_rela"

/// How often relayed rows past their retention are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// How often the relaying instance samples the outbox backlog for its metrics.
const SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// How long the relay waits before it checks a topic that would delete events again.
const RETENTION_RECHECK: Duration = Duration::from_secs(30);

/// Pause after an error before the next attempt.
const BACKOFF: Duration = Duration::from_secs(1);

/// A producer that writes each record once and in order per partition
/// (idempotent, acknowledged by every replica).
pub fn producer(kafka: &KafkaSettings, timeout_ms: u64) -> anyhow::Result<FutureProducer> {
    Ok(kafka
        .client_config()
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "1")
        .set("message.timeout.ms", timeout_ms.to_string())
        .create()?)
}

/// An event as a Kafka record: its JSON data and its CloudEvents headers
/// (the key is [`RecordedEvent::kafka_key`]).
pub fn encode(record: &RecordedEvent) -> anyhow::Result<(Vec<u8>, OwnedHeaders)> {
    let payload = serde_json::to_vec(&record.data)?;
    let headers = record
        .cloudevents_headers()
        .into_iter()
        .fold(OwnedHeaders::new(), |h, (k, v)| h.insert(Header { key: k, value: Some(v.as_bytes()) }));
    Ok((payload, headers))
}

/// How commits of this process wake the relay.
#[derive(Debug, Default)]
pub struct Wake {
    /// Set while this process's relay holds the leader lock.
    leading: AtomicBool,
    committed: tokio::sync::Notify,
}

impl Wake {
    /// Whether an append must notify through PostgreSQL: when this process's
    /// relay does not lead, another instance's must hear of the commit.
    pub fn through_database(&self) -> bool {
        !self.leading.load(Ordering::Acquire)
    }

    /// Called after a commit: wakes this process's relay if it leads.
    pub fn committed(&self) {
        if self.leading.load(Ordering::Acquire) {
            self.committed.notify_one();
        }
    }
}

/// Publishes the outbox to Kafka until shut down.
#[derive(Debug)]
pub struct Relay {
    pool: PgPool,
    connect: PgConnectOptions,
    kafka: KafkaSettings,
    settings: RelaySettings,
    wake: Arc<Wake>,
}

#[derive(sqlx::FromRow)]
struct PendingRow {
    position: i64,
    txid: i64,
    #[sqlx(flatten)]
    event: StoredEventRow,
}

/// The last row relayed in this leadership, by (transaction id, position):
/// every pending row comes after it. A round starts its index scan there
/// instead of at the start of the pending index, which still lists rows
/// relayed since the last vacuum.
#[derive(Debug, Clone, Copy, Default)]
struct Relayed {
    txid: i64,
    position: i64,
}

impl Relay {
    pub fn new(pool: PgPool, connect: PgConnectOptions, kafka: KafkaSettings, settings: RelaySettings, wake: Arc<Wake>) -> Self {
        Self { pool, connect, kafka, settings, wake }
    }

    /// Runs until `shutdown` is cancelled; errors are logged and retried.
    pub async fn run(self, shutdown: CancellationToken) {
        while !shutdown.is_cancelled() {
            let led = self.lead(&shutdown).await;
            self.wake.leading.store(false, Ordering::Release);
            if let Err(e) = led {
                tracing::warn!(error = %e, "outbox relay interrupted; retrying");
                tokio::select! {
                    () = shutdown.cancelled() => {}
                    () = tokio::time::sleep(BACKOFF) => {}
                }
            }
        }
    }

    /// Waits to become leader, then relays while the leadership lasts.
    async fn lead(&self, shutdown: &CancellationToken) -> anyhow::Result<()> {
        let mut leader = PgConnection::connect_with(&self.connect).await?;
        loop {
            let (won,): (bool,) = sqlx::query_as("select pg_try_advisory_lock($1)")
                .bind(LEADER_LOCK)
                .fetch_one(&mut leader)
                .await?;
            if won {
                break;
            }
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                () = tokio::time::sleep(Duration::from_millis(self.settings.idle_poll_ms)) => {}
            }
        }
        tracing::info!("outbox relay is the leader");
        platform::kafka::ensure_topic(&self.kafka, &self.kafka.events_topic, self.kafka.partitions).await?;
        if let Some(refusal) = platform::kafka::retention_refusal(&self.kafka).await? {
            // Publishing into a topic that deletes events would lose them
            // from the log; they wait in the outbox instead.
            tracing::error!(%refusal, "the outbox relay does not publish");
            tokio::select! {
                () = shutdown.cancelled() => {}
                () = tokio::time::sleep(RETENTION_RECHECK) => {}
            }
            return Ok(());
        }
        let producer = self.producer()?;
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(OUTBOX_CHANNEL).await?;
        // From here this process's commits wake the relay in process; rows
        // committed before are found by the first round.
        self.wake.leading.store(true, Ordering::Release);
        let mut last_prune = tokio::time::Instant::now() - PRUNE_EVERY;
        let mut last_sample = tokio::time::Instant::now() - SAMPLE_EVERY;
        let mut relayed = Relayed::default();
        loop {
            while self.relay_batch(&mut leader, &producer, &mut relayed).await? == self.settings.batch_size as usize {}
            if last_sample.elapsed() >= SAMPLE_EVERY {
                self.sample_backlog(&mut leader).await?;
                last_sample = tokio::time::Instant::now();
            }
            if last_prune.elapsed() >= PRUNE_EVERY {
                self.prune(&mut leader).await?;
                last_prune = tokio::time::Instant::now();
            }
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                notification = listener.recv() => {
                    notification?;
                    tokio::time::sleep(Duration::from_millis(self.settings.linger_ms)).await;
                }
                () = self.wake.committed.notified() => {
                    tokio::time::sleep(Duration::from_millis(self.settings.linger_ms)).await;
                }
                () = tokio::time::sleep(Duration::from_millis(self.settings.idle_poll_ms)) => {}
            }
        }
    }

    fn producer(&self) -> anyhow::Result<FutureProducer> {
        producer(&self.kafka, self.settings.produce_timeout_ms)
    }

    /// Relays one batch after `relayed`; returns how many rows it read. Only
    /// the prefix of rows up to the first failed delivery is marked, so order
    /// is kept on retry (which starts a new leadership, from the start).
    ///
    /// Rows below the horizon are final: a transaction with a smaller id has
    /// ended, so no row can later appear before `relayed`.
    #[tracing::instrument(skip_all, fields(rows), err)]
    async fn relay_batch(&self, leader: &mut PgConnection, producer: &FutureProducer, relayed: &mut Relayed) -> anyhow::Result<usize> {
        let rows: Vec<PendingRow> = timed("outbox_fetch", sqlx::query_as(
            "select o.position, o.txid::text::int8 as txid, e.stream_id, e.sequence, e.event_id, e.event_type,
                    e.schema_version, e.posted_at, e.recorded_at, e.correlation_id, e.causation_id, e.actor, e.data,
                    e.traceparent
             from (
                 select position, txid, stream_id, sequence from outbox
                 where relayed_at is null and txid < pg_snapshot_xmin(pg_current_snapshot())
                   and (txid, position) > ($2::text::xid8, $3)
                 order by txid, position
                 limit $1
             ) o
             join lateral (
                 select * from events e where e.stream_id = o.stream_id and e.sequence = o.sequence
             ) e on true
             order by o.txid, o.position",
        )
        .bind(self.settings.batch_size)
        .bind(relayed.txid.to_string())
        .bind(relayed.position)
        .fetch_all(&mut *leader))
        .await?;
        let read = rows.len();
        tracing::Span::current().record("rows", read);
        if read == 0 {
            return Ok(0);
        }
        let last = rows.last().map(|r| Relayed { txid: r.txid, position: r.position });
        let records: Vec<_> = rows.into_iter().map(|r| (r.position, r.event.into_record())).collect();
        let mut deliveries = Vec::with_capacity(read);
        for (position, record) in &records {
            let (payload, headers) = encode(record)?;
            let message = FutureRecord::to(&self.kafka.events_topic)
                .key(record.kafka_key())
                .payload(&payload)
                .headers(headers);
            match producer.send_result(message) {
                Ok(delivery) => deliveries.push((*position, std::time::Instant::now(), delivery)),
                Err((e, _)) => {
                    tracing::warn!(error = %e, "producer queue refused a record");
                    break;
                }
            }
        }
        let mut confirmed = Vec::with_capacity(deliveries.len());
        let topic = self.kafka.events_topic.as_str();
        for (position, sent, delivery) in deliveries {
            match delivery.await {
                Ok(Ok(_)) => {
                    metrics::KAFKA_PRODUCE.with_label_values(&[topic]).observe(sent.elapsed().as_secs_f64());
                    confirmed.push(position);
                }
                Ok(Err((e, _))) => {
                    metrics::KAFKA_PRODUCE_ERRORS.with_label_values(&[topic]).inc();
                    tracing::warn!(error = %e, "delivery failed; the rest of the batch is retried");
                    break;
                }
                Err(_) => break,
            }
        }
        let mark = sqlx::query("update outbox set relayed_at = now() where position = any($1)").bind(&confirmed);
        timed("outbox_mark", mark.execute(&mut *leader)).await?;
        if confirmed.len() < read {
            anyhow::bail!("relayed {} of {read} rows", confirmed.len());
        }
        *relayed = last.expect("a batch that read rows has a last one");
        Ok(read)
    }

    /// Sets the backlog gauges: unrelayed rows and the age of the oldest one.
    async fn sample_backlog(&self, leader: &mut PgConnection) -> Result<(), sqlx::Error> {
        let query = sqlx::query_as(
            "select count(*), coalesce(extract(epoch from now() - min(e.recorded_at))::float8, 0)
             from outbox o join events e on e.stream_id = o.stream_id and e.sequence = o.sequence
             where o.relayed_at is null",
        );
        let (backlog, age): (i64, f64) = timed("outbox_backlog", query.fetch_one(&mut *leader)).await?;
        metrics::OUTBOX_BACKLOG.set(backlog);
        metrics::OUTBOX_OLDEST_AGE.set(age);
        Ok(())
    }

    /// Deletes relayed rows past their retention, and expired idempotency keys.
    #[tracing::instrument(skip_all, err)]
    async fn prune(&self, leader: &mut PgConnection) -> Result<(), sqlx::Error> {
        let pruned = sqlx::query("delete from outbox where relayed_at < now() - make_interval(secs => $1)")
            .bind(self.settings.retention_secs as f64)
            .execute(&mut *leader)
            .await?
            .rows_affected();
        if pruned > 0 {
            tracing::info!(pruned, "pruned relayed outbox rows");
        }
        sqlx::query("delete from idempotency_keys where expires_at < now()").execute(&mut *leader).await?;
        Ok(())
    }
}

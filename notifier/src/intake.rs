//! The intake: consumes the events topic with a consumer of its own (a slow
//! or dead receiver never slows the projector), folds each batch into the
//! alerts' state and writes the deliveries it gives, in one PostgreSQL
//! transaction that also moves the intake's offsets (`notify_offsets`). A
//! crash before the commit leaves the offsets where they were, so the batch
//! is read again; after it, the batch is done: no delivery record is lost
//! or written twice.
//!
//! The transaction locks the topic's offset rows first and takes from each
//! partition only records at or after the stored offset, so two notifier
//! instances may consume at once: one writes a record's deliveries, the
//! other finds it done. The same loop takes the jobs' notifications
//! (`notify_inbox`) and runs the expiry check once per period.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use events::RecordedEvent;
use platform::kafka::KafkaSettings;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::{Message as _, Offset, TopicPartitionList};
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::messages::{self, ChargeLevel, Level, Message};
use crate::subscriptions::{self, Subscription};
use crate::metrics;
use crate::settings::NotifySettings;

/// One record of the topic, as the intake keeps it.
struct Record {
    partition: i32,
    offset: i64,
    headers: Vec<(String, String)>,
    payload: Vec<u8>,
}

/// The intake loop.
pub struct Intake {
    pool: PgPool,
    kafka: KafkaSettings,
    settings: NotifySettings,
    /// When the loop last went round (milliseconds since the epoch), for readiness.
    pub alive: Arc<AtomicI64>,
}

impl std::fmt::Debug for Intake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Intake").finish_non_exhaustive()
    }
}

impl Intake {
    pub fn new(pool: PgPool, kafka: KafkaSettings, settings: NotifySettings) -> Self {
        Self { pool, kafka, settings, alive: Arc::new(AtomicI64::new(Utc::now().timestamp_millis())) }
    }

    /// Runs until `shutdown`; the batch in hand is committed or dropped whole.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        while !shutdown.is_cancelled() {
            if let Err(e) = self.consume(&shutdown).await {
                tracing::warn!(error = %e, "the intake stopped; starting again from the stored offsets");
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }

    /// Positions a consumer at the stored offsets and takes batches until
    /// shut down or until something fails (then the caller starts over).
    async fn consume(&self, shutdown: &CancellationToken) -> anyhow::Result<()> {
        let topic = self.kafka.events_topic.clone();
        let consumer: StreamConsumer = self
            .kafka
            .client_config()
            .set("group.id", &self.settings.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .create()?;
        let partitions = platform::kafka::partitions(&consumer, &topic, Duration::from_secs(10))?;
        anyhow::ensure!(!partitions.is_empty(), "{topic} has no partitions yet");
        let stored = load_offsets(&self.pool, &topic).await?;
        let mut tpl = TopicPartitionList::new();
        for p in &partitions {
            let offset = stored.get(p).map_or(Offset::Beginning, |o| Offset::Offset(*o));
            tpl.add_partition_offset(&topic, *p, offset)?;
        }
        consumer.assign(&tpl)?;
        tracing::info!(?partitions, "intake consuming the events topic");
        let batch_wait = Duration::from_millis(self.settings.batch_wait_ms);
        let mut next_check = tokio::time::Instant::now();
        loop {
            self.alive.store(Utc::now().timestamp_millis(), Ordering::Release);
            if tokio::time::Instant::now() >= next_check {
                self.take_inbox().await?;
                self.check_expiry().await?;
                next_check = tokio::time::Instant::now() + Duration::from_millis(self.settings.poll_ms);
            }
            let mut batch = Vec::new();
            let first = tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                () = tokio::time::sleep_until(next_check) => continue,
                m = consumer.recv() => m?,
            };
            batch.push(record(&first));
            let deadline = tokio::time::Instant::now() + batch_wait;
            while batch.len() < self.settings.batch_size {
                match tokio::time::timeout_at(deadline, consumer.recv()).await {
                    Ok(m) => batch.push(record(&m?)),
                    Err(_) => break,
                }
            }
            let next = self.apply(&topic, batch).await?;
            // Also where lag tools look; PostgreSQL stays the truth.
            let mut tpl = TopicPartitionList::new();
            for (p, o) in next {
                tpl.add_partition_offset(&topic, p, Offset::Offset(o))?;
            }
            if tpl.count() > 0
                && let Err(e) = consumer.commit(&tpl, CommitMode::Async)
            {
                tracing::debug!(error = %e, "committing offsets to Kafka failed (informational only)");
            }
        }
    }

    /// Writes the deliveries of a batch and moves the offsets, in one
    /// transaction; returns the offsets it stored.
    async fn apply(&self, topic: &str, batch: Vec<Record>) -> anyhow::Result<BTreeMap<i32, i64>> {
        let mut tx = self.pool.begin().await?;
        let stored: HashMap<i32, i64> = sqlx::query_as::<_, (i32, i64)>(
            "select partition, next_offset from notify_offsets where topic = $1 order by partition for update",
        )
        .bind(topic)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .collect();
        let fresh: Vec<&Record> = batch.iter().filter(|r| r.offset >= stored.get(&r.partition).copied().unwrap_or(0)).collect();
        if fresh.is_empty() {
            tx.rollback().await?;
            return Ok(BTreeMap::new());
        }
        let mut next: BTreeMap<i32, i64> = BTreeMap::new();
        let mut envelopes = Vec::with_capacity(fresh.len());
        for r in &fresh {
            next.insert(r.partition, r.offset + 1);
            let header = |name: &str| r.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
            match RecordedEvent::envelope_from_cloudevent(header, &r.payload) {
                Ok(e) => envelopes.push(e),
                Err(e) => {
                    // The projector parks such records; there is nothing to notify about.
                    tracing::warn!(partition = r.partition, offset = r.offset, error = %e, "not an event; passed over");
                    metrics::SKIPPED.inc();
                }
            }
        }
        let articles: Vec<String> = envelopes.iter().map(|e| e.event.article().to_string()).collect::<HashSet<_>>().into_iter().collect();
        let mut levels = load_levels(&mut tx, &articles).await?;
        let mut charges = load_charges(&mut tx, &articles).await?;
        let mut touched_charges: HashSet<(String, String)> = HashSet::new();
        let mut out: Vec<Message> = Vec::new();
        for envelope in &envelopes {
            let article = envelope.event.article().to_string();
            let level = levels.entry(article.clone()).or_default();
            let (messages, change) = messages::fold(envelope, level);
            out.extend(messages);
            if let Some((charge, change)) = change {
                let key = (article, charge);
                charges.entry(key.clone()).or_default().apply(change);
                touched_charges.insert(key);
            }
        }
        let interests = subscriptions::list(&mut *tx, Some(true)).await?;
        let written = insert_deliveries(&mut tx, &interests, &out).await?;
        store_levels(&mut tx, &levels).await?;
        let touched: Vec<(&(String, String), &ChargeLevel)> = touched_charges.iter().map(|k| (k, &charges[k])).collect();
        store_charges(&mut tx, &touched).await?;
        let (parts, offsets): (Vec<i32>, Vec<i64>) = next.iter().map(|(p, o)| (*p, *o)).unzip();
        sqlx::query(
            "insert into notify_offsets (topic, partition, next_offset) select $1, * from unnest($2::int4[], $3::int8[])
             on conflict (topic, partition) do update set next_offset = excluded.next_offset",
        )
        .bind(topic)
        .bind(&parts)
        .bind(&offsets)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        metrics::INTAKE_RECORDS.inc_by(fresh.len() as u64);
        metrics::DELIVERIES_WRITTEN.inc_by(written);
        tracing::debug!(records = fresh.len(), deliveries = written, "intake batch committed");
        Ok(next)
    }

    /// Turns the jobs' notifications into deliveries.
    async fn take_inbox(&self) -> anyhow::Result<()> {
        let mut tx = self.pool.begin().await?;
        type Row = (i64, Uuid, String, String, serde_json::Value, DateTime<Utc>, Option<String>);
        let mut rows: Vec<Row> = sqlx::query_as(
            "delete from notify_inbox where id in (select id from notify_inbox order by id limit 500 for update skip locked)
             returning id, message_id, event_type, subject, data, occurred_at, traceparent",
        )
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            return Ok(());
        }
        rows.sort_by_key(|r| r.0);
        let out: Vec<Message> =
            rows.into_iter().map(|(_, id, name, subject, data, at, tp)| messages::job(id, &name, &subject, data, at, tp)).collect();
        let interests = subscriptions::list(&mut *tx, Some(true)).await?;
        let written = insert_deliveries(&mut tx, &interests, &out).await?;
        tx.commit().await?;
        metrics::DELIVERIES_WRITTEN.inc_by(written);
        Ok(())
    }

    /// Once per period (a day by default): a `charge_expiring` alert for
    /// each charge with stock that expires within a subscription's days.
    async fn check_expiry(&self) -> anyhow::Result<()> {
        let now = Utc::now();
        let period = now.timestamp() / self.settings.expiry_period_secs.max(1) as i64;
        let mut tx = self.pool.begin().await?;
        let ran: Option<(i64,)> = sqlx::query_as("insert into notify_periods (period) values ($1) on conflict do nothing returning period")
            .bind(period)
            .fetch_optional(&mut *tx)
            .await?;
        if ran.is_none() {
            return Ok(());
        }
        let interests: Vec<Subscription> =
            subscriptions::list(&mut *tx, Some(true)).await?.into_iter().filter(|i| i.alerts.iter().any(|a| a == "charge_expiring")).collect();
        let Some(days) = interests.iter().map(|i| i.expiring_within_days).max() else {
            tx.commit().await?;
            return Ok(());
        };
        let today = now.date_naive();
        let rows: Vec<(String, String, String, chrono::NaiveDate, i64)> = sqlx::query_as(
            "select c.article_id, coalesce(a.category, ''), c.charge, c.expiry_date, c.on_hand
             from notify_charges c left join notify_articles a using (article_id)
             where c.on_hand > 0 and c.expiry_date between $1 and $1 + $2",
        )
        .bind(today)
        .bind(days)
        .fetch_all(&mut *tx)
        .await?;
        let mut written = 0;
        for interest in &interests {
            let horizon = today + chrono::Duration::days(i64::from(interest.expiring_within_days));
            let out: Vec<Message> = rows
                .iter()
                .filter(|r| r.3 <= horizon)
                .map(|(article, category, charge, expiry, on_hand)| messages::expiring(article, category, charge, *expiry, *on_hand, period, now))
                .collect();
            written += insert_deliveries(&mut tx, std::slice::from_ref(interest), &out).await?;
        }
        tx.commit().await?;
        metrics::DELIVERIES_WRITTEN.inc_by(written);
        Ok(())
    }
}

fn record(m: &rdkafka::message::BorrowedMessage<'_>) -> Record {
    Record {
        partition: m.partition(),
        offset: m.offset(),
        headers: platform::kafka::string_headers(m),
        payload: m.payload().unwrap_or_default().to_vec(),
    }
}

async fn load_offsets(pool: &PgPool, topic: &str) -> Result<HashMap<i32, i64>, sqlx::Error> {
    let rows: Vec<(i32, i64)> = sqlx::query_as("select partition, next_offset from notify_offsets where topic = $1").bind(topic).fetch_all(pool).await?;
    Ok(rows.into_iter().collect())
}

/// Writes a delivery for every (subscription, message) that matches; an
/// existing one (same subscription and `webhook-id`) is kept as it is.
async fn insert_deliveries(conn: &mut PgConnection, interests: &[Subscription], out: &[Message]) -> Result<u64, sqlx::Error> {
    let (mut subs, mut ids, mut names, mut keys, mut payloads, mut traces) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for m in out {
        for i in interests.iter().filter(|i| i.wants(m)) {
            subs.push(i.id);
            ids.push(m.id);
            names.push(m.name.clone());
            keys.push(m.ordering_key.clone());
            payloads.push(m.payload.to_string());
            traces.push(m.traceparent.as_deref());
        }
    }
    if subs.is_empty() {
        return Ok(0);
    }
    let done = sqlx::query(
        "insert into webhook_deliveries (subscription_id, message_id, event_type, ordering_key, payload, traceparent)
         select * from unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[])
         on conflict (subscription_id, message_id) do nothing",
    )
    .bind(&subs)
    .bind(&ids)
    .bind(&names)
    .bind(&keys)
    .bind(&payloads)
    .bind(&traces)
    .execute(&mut *conn)
    .await?;
    if done.rows_affected() > 0 {
        sqlx::query("select pg_notify($1, '')").bind(crate::deliver::CHANNEL).execute(&mut *conn).await?;
    }
    Ok(done.rows_affected())
}

async fn load_levels(conn: &mut PgConnection, articles: &[String]) -> Result<HashMap<String, Level>, sqlx::Error> {
    type Row = (String, String, Option<i64>, bool, i64, i64, bool);
    let rows: Vec<Row> = sqlx::query_as(
        "select article_id, category, reorder_point, discontinued, on_hand, reserved, low from notify_articles where article_id = any($1)",
    )
    .bind(articles)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(a, category, reorder_point, discontinued, on_hand, reserved, low)| {
            (a, Level { category, reorder_point, discontinued, on_hand, reserved, low })
        })
        .collect())
}

async fn store_levels(conn: &mut PgConnection, levels: &HashMap<String, Level>) -> Result<(), sqlx::Error> {
    let ids: Vec<&str> = levels.keys().map(String::as_str).collect();
    let l: Vec<&Level> = ids.iter().map(|a| &levels[*a]).collect();
    sqlx::query(
        "insert into notify_articles (article_id, category, reorder_point, discontinued, on_hand, reserved, low)
         select * from unnest($1::text[], $2::text[], $3::int8[], $4::bool[], $5::int8[], $6::int8[], $7::bool[])
         on conflict (article_id) do update set category = excluded.category, reorder_point = excluded.reorder_point,
             discontinued = excluded.discontinued, on_hand = excluded.on_hand, reserved = excluded.reserved, low = excluded.low",
    )
    .bind(&ids)
    .bind(l.iter().map(|l| l.category.as_str()).collect::<Vec<_>>())
    .bind(l.iter().map(|l| l.reorder_point).collect::<Vec<_>>())
    .bind(l.iter().map(|l| l.discontinued).collect::<Vec<_>>())
    .bind(l.iter().map(|l| l.on_hand).collect::<Vec<_>>())
    .bind(l.iter().map(|l| l.reserved).collect::<Vec<_>>())
    .bind(l.iter().map(|l| l.low).collect::<Vec<_>>())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn load_charges(conn: &mut PgConnection, articles: &[String]) -> Result<HashMap<(String, String), ChargeLevel>, sqlx::Error> {
    let rows: Vec<(String, String, Option<chrono::NaiveDate>, i64)> =
        sqlx::query_as("select article_id, charge, expiry_date, on_hand from notify_charges where article_id = any($1)")
            .bind(articles)
            .fetch_all(&mut *conn)
            .await?;
    Ok(rows.into_iter().map(|(a, c, expiry_date, on_hand)| ((a, c), ChargeLevel { expiry_date, on_hand })).collect())
}

async fn store_charges(conn: &mut PgConnection, touched: &[(&(String, String), &ChargeLevel)]) -> Result<(), sqlx::Error> {
    if touched.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "insert into notify_charges (article_id, charge, expiry_date, on_hand)
         select * from unnest($1::text[], $2::text[], $3::date[], $4::int8[])
         on conflict (article_id, charge) do update set expiry_date = excluded.expiry_date, on_hand = excluded.on_hand",
    )
    .bind(touched.iter().map(|(k, _)| k.0.as_str()).collect::<Vec<_>>())
    .bind(touched.iter().map(|(k, _)| k.1.as_str()).collect::<Vec<_>>())
    .bind(touched.iter().map(|(_, c)| c.expiry_date).collect::<Vec<_>>())
    .bind(touched.iter().map(|(_, c)| c.on_hand).collect::<Vec<_>>())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

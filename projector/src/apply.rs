//! Applying a batch of records to the read models in one PostgreSQL transaction,
//! with set-based statements, together with the consumed offsets.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use events::{ChargeNo, Envelope, Event, WarehouseId};
use platform::metrics;
use sqlx::PgPool;

use crate::documents::{Document, StockRow, stock_document};

/// One consumed record: where it came from and what it decoded to.
#[derive(Debug)]
pub struct Incoming {
    pub partition: i32,
    pub offset: i64,
    /// The record's Kafka timestamp, for the lag in seconds.
    pub timestamp_ms: Option<i64>,
    pub envelope: Envelope,
}

/// New balances of one charge in one warehouse; `None` keeps the stored value.
#[derive(Debug, Clone, Copy)]
struct StockChange {
    on_hand: Option<i64>,
    reserved: Option<i64>,
    at: DateTime<Utc>,
}

/// What a committed batch changed.
#[derive(Debug, Default)]
pub struct Applied {
    /// Events applied (not skipped as duplicates or gaps).
    pub applied: usize,
    /// Events skipped because their stream had already applied them.
    pub duplicates: usize,
    /// Events skipped because an earlier event of their stream is missing.
    pub gaps: usize,
    /// Documents rewritten, to be pushed to Redis.
    pub documents: Vec<Document>,
    /// The next offset to consume per partition, as stored with the batch.
    pub next_offsets: BTreeMap<i32, i64>,
}

/// Applies `batch` and stores the next offset of every partition in it, atomically.
#[tracing::instrument(skip_all, fields(projection, records = batch.len()), err)]
pub async fn apply_batch(
    pool: &PgPool,
    projection: &str,
    topic: &str,
    batch: &[Incoming],
) -> Result<Applied, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let mut result = Applied::default();

    // Where each stream stands; locked so two instances overlapping during a
    // rebalance cannot both apply the same event.
    let streams: Vec<&str> = unique(batch.iter().map(|r| r.envelope.stream_id.as_str()));
    let mut positions: HashMap<String, i64> = sqlx::query_as::<_, (String, i64)>(
        "select stream_id, sequence from projection_streams
         where projection = $1 and stream_id = any($2) for update",
    )
    .bind(projection)
    .bind(&streams)
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .collect();

    // Stock rows changed by this batch: the last balance per key wins.
    let mut stock: BTreeMap<(String, String, String), StockChange> = BTreeMap::new();
    let mut touched_articles: BTreeMap<String, i64> = BTreeMap::new();
    for record in batch {
        let env = &record.envelope;
        let last = positions.entry(env.stream_id.to_string()).or_insert(0);
        let sequence = env.sequence as i64;
        if sequence <= *last {
            result.duplicates += 1;
            metrics::EVENTS_SKIPPED.with_label_values(&["duplicate"]).inc();
            continue;
        }
        if sequence > *last + 1 {
            tracing::warn!(stream = %env.stream_id, sequence, last = *last, "gap in stream; waiting for the missing events");
            result.gaps += 1;
            metrics::EVENTS_SKIPPED.with_label_values(&["gap"]).inc();
            continue;
        }
        *last = sequence;
        result.applied += 1;
        // One command can be followed from its HTTP request to here by its correlation id.
        let _span = tracing::debug_span!(
            "event",
            correlation_id = %env.correlation_id,
            event_id = %env.event_id,
            stream = %env.stream_id,
            sequence,
            event_type = env.event.event_type(),
        )
        .entered();
        tracing::debug!("event applied");
        metrics::EVENTS_APPLIED.with_label_values(&[env.event.event_type()]).inc();
        let mut change = |charge: &ChargeNo, warehouse: &WarehouseId, on_hand: Option<i64>, reserved: Option<i64>| {
            let key = (env.event.article().to_string(), charge.to_string(), warehouse.to_string());
            let entry = stock.entry(key).or_insert(StockChange { on_hand: None, reserved: None, at: env.recorded_at });
            entry.on_hand = on_hand.or(entry.on_hand);
            entry.reserved = reserved.or(entry.reserved);
            entry.at = env.recorded_at;
        };
        match &env.event {
            Event::StockReceived(e) => change(&e.charge, &e.warehouse, Some(e.on_hand_after), None),
            Event::StockIssued(e) => change(&e.charge, &e.warehouse, Some(e.on_hand_after), None),
            Event::StockTransferred(e) => {
                change(&e.charge, &e.from, Some(e.from_on_hand_after), None);
                change(&e.charge, &e.to, Some(e.to_on_hand_after), None);
            }
            Event::InventoryCounted(e) => change(&e.charge, &e.warehouse, Some(e.on_hand_after), None),
            Event::StockReserved(e) => change(&e.charge, &e.warehouse, None, Some(e.reserved_after)),
            Event::ReservationReleased(e) => change(&e.charge, &e.warehouse, None, Some(e.reserved_after)),
            Event::ReservationConsumed(e) => change(&e.charge, &e.warehouse, None, Some(e.reserved_after)),
            _ => continue,
        }
        touched_articles.insert(env.event.article().to_string(), sequence);
    }

    if !touched_articles.is_empty() {
        let articles: Vec<&str> = touched_articles.keys().map(String::as_str).collect();
        let mut rows: BTreeMap<(String, String, String), StockRow> = sqlx::query_as::<_, StockRow>(
            "select article_id, charge, warehouse, on_hand, reserved from stock_levels
             where article_id = any($1) for update",
        )
        .bind(&articles)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .map(|r| ((r.article_id.clone(), r.charge.clone(), r.warehouse.clone()), r))
        .collect();
        for ((article_id, charge, warehouse), change) in &stock {
            let row = rows.entry((article_id.clone(), charge.clone(), warehouse.clone())).or_insert_with(|| StockRow {
                article_id: article_id.clone(),
                charge: charge.clone(),
                warehouse: warehouse.clone(),
                on_hand: 0,
                reserved: 0,
            });
            row.on_hand = change.on_hand.unwrap_or(row.on_hand);
            row.reserved = change.reserved.unwrap_or(row.reserved);
        }
        let changed: Vec<(&StockRow, &StockChange)> = stock.iter().map(|(k, c)| (&rows[k], c)).collect();
        sqlx::query(
            "insert into stock_levels (article_id, charge, warehouse, on_hand, reserved, updated_at)
             select * from unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[], $6::timestamptz[])
             on conflict (article_id, charge, warehouse) do update
             set on_hand = excluded.on_hand, reserved = excluded.reserved, updated_at = excluded.updated_at",
        )
        .bind(changed.iter().map(|(r, _)| r.article_id.as_str()).collect::<Vec<_>>())
        .bind(changed.iter().map(|(r, _)| r.charge.as_str()).collect::<Vec<_>>())
        .bind(changed.iter().map(|(r, _)| r.warehouse.as_str()).collect::<Vec<_>>())
        .bind(changed.iter().map(|(r, _)| r.on_hand).collect::<Vec<_>>())
        .bind(changed.iter().map(|(r, _)| r.reserved).collect::<Vec<_>>())
        .bind(changed.iter().map(|(_, c)| c.at).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;

        let rows: Vec<StockRow> = rows.into_values().collect();
        for (article, version) in &touched_articles {
            let start = rows.partition_point(|r| r.article_id < *article);
            let end = rows.partition_point(|r| r.article_id <= *article);
            result.documents.push(stock_document(article, *version, &rows[start..end]));
        }
        sqlx::query(
            "insert into read_documents (key, version, body)
             select * from unnest($1::text[], $2::bigint[], $3::bytea[])
             on conflict (key) do update
             set version = excluded.version, body = excluded.body, updated_at = now()",
        )
        .bind(result.documents.iter().map(|d| d.key.as_str()).collect::<Vec<_>>())
        .bind(result.documents.iter().map(|d| d.version).collect::<Vec<_>>())
        .bind(result.documents.iter().map(|d| d.body.as_slice()).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
    }

    let (stream_ids, sequences): (Vec<String>, Vec<i64>) =
        positions.into_iter().filter(|(_, seq)| *seq > 0).unzip();
    sqlx::query(
        "insert into projection_streams (projection, stream_id, sequence)
         select $1, * from unnest($2::text[], $3::bigint[])
         on conflict (projection, stream_id) do update set sequence = excluded.sequence",
    )
    .bind(projection)
    .bind(&stream_ids)
    .bind(&sequences)
    .execute(&mut *tx)
    .await?;

    for record in batch {
        let next = result.next_offsets.entry(record.partition).or_insert(0);
        *next = (*next).max(record.offset + 1);
    }
    store_offsets(&mut tx, projection, topic, &result.next_offsets).await?;
    tx.commit().await?;
    Ok(result)
}

/// Records the next offset to consume per partition (never moving backwards).
pub async fn store_offsets(
    tx: &mut sqlx::PgConnection,
    projection: &str,
    topic: &str,
    next_offsets: &BTreeMap<i32, i64>,
) -> Result<(), sqlx::Error> {
    let (partitions, offsets): (Vec<i32>, Vec<i64>) = next_offsets.iter().map(|(p, o)| (*p, *o)).unzip();
    sqlx::query(
        "insert into projection_offsets (projection, topic, partition, next_offset)
         select $1, $2, * from unnest($3::int[], $4::bigint[])
         on conflict (projection, topic, partition) do update
         set next_offset = greatest(projection_offsets.next_offset, excluded.next_offset), updated_at = now()",
    )
    .bind(projection)
    .bind(topic)
    .bind(&partitions)
    .bind(&offsets)
    .execute(tx)
    .await?;
    Ok(())
}

/// The stored next offset per partition of `topic`.
pub async fn load_offsets(pool: &PgPool, projection: &str, topic: &str) -> Result<BTreeMap<i32, i64>, sqlx::Error> {
    Ok(sqlx::query_as::<_, (i32, i64)>(
        "select partition, next_offset from projection_offsets where projection = $1 and topic = $2",
    )
    .bind(projection)
    .bind(topic)
    .fetch_all(pool)
    .await?
    .into_iter()
    .collect())
}

fn unique<'a>(items: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut v: Vec<&str> = items.collect();
    v.sort_unstable();
    v.dedup();
    v
}

//! Applying a batch of records to one generation of the read models in one
//! PostgreSQL transaction, with set-based statements, together with the next
//! offset of every partition (exactly-once effect), and parking what cannot be
//! applied.
//!
//! Per stream, in record order: an event at or below the stream's last
//! applied sequence is a redelivery and is skipped; an undecodable record, a
//! gap in the sequence, or an event that does not fit the stream's state is
//! **poison**: it is parked in `dead_letters` and halts its stream, whose later
//! records are parked behind it (reason `halted`) until an operator re-drives
//! them ([`crate::dead_letters`]). Other streams go on.
//!
//! The stream rows are locked (in stream order) for the whole transaction, so
//! two instances overlapping during a rebalance, or a re-drive running next to
//! a live projector, never apply the same stream's events twice.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use chrono::{DateTime, Utc};
use events::ArticleState;
use platform::metrics::{self, timed};
use platform::readmodel::Generation;
use sqlx::PgConnection;

use crate::documents::{CategoryRow, Document, category_document};
use crate::model::{
    ArticleRow, MovementRow, CategoryDelta, LowStock, LowStockRow, ReservationRow, StoredCharge, StreamChanges, StreamProjection,
    WarehouseStock, rebuild_state,
};
use crate::record::Incoming;

/// Why a batch could not be applied; nothing of it was written.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// A stored stream state this code cannot read: rebuild the read models.
    #[error("the stored state of {stream} is unreadable ({error}); rebuild the read models (`projector rebuild`)")]
    UnreadableState { stream: String, error: String },
}

/// Why a record was parked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Not a readable event (headers, JSON, unknown type or version).
    Undecodable,
    /// An event that does not fit its stream's state.
    Unfoldable,
    /// An earlier event of the stream is missing.
    Gap,
    /// Not poison itself: waits behind a parked event of its stream.
    Halted,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Undecodable => "undecodable",
            Reason::Unfoldable => "unfoldable",
            Reason::Gap => "gap",
            Reason::Halted => "halted",
        }
    }
}

/// A record parked by this batch.
#[derive(Debug, Clone)]
pub struct Parked {
    /// Index of the record in the batch.
    pub index: usize,
    pub stream: Option<String>,
    pub reason: Reason,
    pub error: String,
}

/// How records are applied.
#[derive(Debug, Clone, Default)]
pub enum Mode {
    /// Consumed records: offsets are stored, poison is parked.
    #[default]
    Live,
    /// Building a new generation: as live, but poison an operator skipped in
    /// the serving generation (by partition and offset) is skipped again.
    Build { skipped: HashSet<(i32, i64)> },
    /// Parked records of halted streams, applied again after a fix; with
    /// `skip_first`, the first one is passed over (an operator's decision).
    Redrive { skip_first: bool },
}

/// What a committed batch did.
#[derive(Debug, Default)]
pub struct Outcome {
    pub applied: usize,
    /// Redelivered events skipped.
    pub duplicates: usize,
    pub parked: Vec<Parked>,
    /// Dead letters applied now (re-drive), by id.
    pub redriven: Vec<i64>,
    /// Dead letters passed over by an operator (re-drive with skip), by id.
    pub skipped: Vec<i64>,
    /// Documents written, to be pushed to Redis after commit.
    pub documents: Vec<Document>,
    /// Cache tags to publish after commit.
    pub tags: BTreeSet<String>,
    /// The next offset to consume per partition, as stored with the batch.
    pub next_offsets: BTreeMap<i32, i64>,
    /// New stream states, for the caller's cache once committed (the
    /// batch's streams were taken out of the cache).
    pub states: Vec<(String, ArticleState)>,
    /// The `redis_outbox` row naming this batch's documents.
    pub redis_outbox_id: Option<i64>,
    /// Streams halted after this batch (parked records wait).
    pub halted: Vec<String>,
}

/// Stream states as this process last committed them, so that a batch loads
/// only the states it does not hold at the stored sequence.
#[derive(Debug, Default)]
pub struct StateCache {
    states: HashMap<String, ArticleState>,
}

impl StateCache {
    /// Most streams kept; beyond it the cache starts over (cheap and rare).
    const CAPACITY: usize = 200_000;

    pub fn put(&mut self, stream: String, state: ArticleState) {
        if self.states.len() >= Self::CAPACITY && !self.states.contains_key(&stream) {
            self.states.clear();
        }
        self.states.insert(stream, state);
    }

    pub fn clear(&mut self) {
        self.states.clear();
    }

    fn version(&self, stream: &str) -> i64 {
        self.states.get(stream).map_or(-1, |s| s.version as i64)
    }
}

/// The statements of one generation (its schema is part of every table name).
#[derive(Debug, Clone)]
pub struct Statements {
    pub generation: Generation,
    insert_streams: String,
    lock_streams: String,
    load_articles: String,
    load_charges: String,
    load_reservations: String,
    upsert_articles: String,
    upsert_low_stock: String,
    delete_low_stock: String,
    upsert_charges: String,
    upsert_reservations: String,
    delete_reservations: String,
    copy_movements: String,
    shift_balances: String,
    upsert_categories: String,
    upsert_documents: String,
    update_streams: String,
    insert_dead_letters: String,
    update_dead_letters: String,
    upsert_offsets: String,
    insert_redis_outbox: String,
}

impl Statements {
    pub fn new(generation: Generation) -> Self {
        let s = generation.schema.clone();
        Self {
            insert_streams: format!(
                "insert into {s}.streams (stream_id, sequence) select unnest($1::text[]), 0 on conflict do nothing"
            ),
            lock_streams: format!(
                "select s.stream_id, s.sequence, s.halted, s.latest_posting, s.sequence = c.cached
                 from {s}.streams s join unnest($1::text[], $2::int8[]) as c(stream_id, cached) on c.stream_id = s.stream_id
                 order by s.stream_id for update of s"
            ),
            load_articles: format!(
                "select article_id, name, category, unit_code, unit_decimals, reorder_point, discontinued
                 from {s}.articles where article_id = any($1)"
            ),
            load_charges: format!(
                "select article_id, charge, production_date, expiry_date, quality_status, blocked_reason, warehouses
                 from {s}.charges where article_id = any($1)"
            ),
            load_reservations: format!(
                "select article_id, reservation_id, charge, warehouse, reference, remaining, reserved_at
                 from {s}.reservations where article_id = any($1)"
            ),
            upsert_articles: format!(
                "insert into {s}.articles (article_id, name, name_fold, category, unit_code, unit_decimals,
                                           reorder_point, discontinued)
                 select * from unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int2[],
                                      $7::int8[], $8::bool[])
                 on conflict (article_id) do update set name = excluded.name, name_fold = excluded.name_fold,
                     category = excluded.category, unit_code = excluded.unit_code,
                     unit_decimals = excluded.unit_decimals, reorder_point = excluded.reorder_point,
                     discontinued = excluded.discontinued"
            ),
            upsert_low_stock: format!(
                "insert into {s}.low_stock (article_id, name, category, reorder_point, on_hand, reserved)
                 select * from unnest($1::text[], $2::text[], $3::text[], $4::int8[], $5::int8[], $6::int8[])
                 on conflict (article_id) do update set name = excluded.name, category = excluded.category,
                     reorder_point = excluded.reorder_point, on_hand = excluded.on_hand, reserved = excluded.reserved"
            ),
            delete_low_stock: format!("delete from {s}.low_stock where article_id = any($1)"),
            upsert_charges: format!(
                "insert into {s}.charges (article_id, charge, category, production_date, expiry_date, quality_status,
                                          blocked_reason, on_hand, reserved, warehouses)
                 select * from unnest($1::text[], $2::text[], $3::text[], $4::date[], $5::date[], $6::text[],
                                      $7::text[], $8::int8[], $9::int8[], $10::jsonb[])
                 on conflict (article_id, charge) do update set category = excluded.category,
                     production_date = excluded.production_date, expiry_date = excluded.expiry_date,
                     quality_status = excluded.quality_status, blocked_reason = excluded.blocked_reason,
                     on_hand = excluded.on_hand, reserved = excluded.reserved, warehouses = excluded.warehouses"
            ),
            upsert_reservations: format!(
                "insert into {s}.reservations (article_id, reservation_id, charge, warehouse, reference, remaining, reserved_at)
                 select * from unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int8[], $7::timestamptz[])
                 on conflict (article_id, reservation_id) do update set charge = excluded.charge,
                     warehouse = excluded.warehouse, reference = excluded.reference, remaining = excluded.remaining"
            ),
            delete_reservations: format!(
                "delete from {s}.reservations r using unnest($1::text[], $2::text[]) as d(article_id, reservation_id)
                 where r.article_id = d.article_id and r.reservation_id = d.reservation_id"
            ),
            copy_movements: format!(
                "copy {s}.movements (article_id, charge, warehouse, posted_at, sequence, leg, kind, delta,
                                     balance, recorded_at, event_id, reservation_id) from stdin"
            ),
            // A backdated movement shifts the balance of every movement of its
            // bucket posted after it that was recorded before it (later
            // recorded ones were decided with it and already include it).
            shift_balances: format!(
                "update {s}.movements r set balance = r.balance + d.shift
                 from (
                     select l.article_id, l.charge, l.warehouse, l.posted_at, l.sequence, l.leg, sum(m.delta) as shift
                     from unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::int8[], $6::int2[], $7::int8[])
                          as m(article_id, charge, warehouse, posted_at, sequence, leg, delta)
                     join {s}.movements l
                       on l.article_id = m.article_id and l.charge = m.charge and l.warehouse = m.warehouse
                      and (l.posted_at, l.sequence, l.leg) > (m.posted_at, m.sequence, m.leg)
                      and l.sequence < m.sequence
                     group by 1, 2, 3, 4, 5, 6
                 ) d
                 where r.article_id = d.article_id and r.charge = d.charge and r.warehouse = d.warehouse
                   and r.posted_at = d.posted_at and r.sequence = d.sequence and r.leg = d.leg"
            ),
            upsert_categories: format!(
                "insert into {s}.categories as c (category, charges, charges_in_stock, on_hand, blocked, version)
                 select * from unnest($1::text[], $2::int8[], $3::int8[], $4::int8[], $5::int8[], $6::int8[])
                 on conflict (category) do update set charges = c.charges + excluded.charges,
                     charges_in_stock = c.charges_in_stock + excluded.charges_in_stock,
                     on_hand = c.on_hand + excluded.on_hand, blocked = c.blocked + excluded.blocked,
                     version = c.version + excluded.version
                 returning category, charges, charges_in_stock, on_hand, blocked, version"
            ),
            upsert_documents: format!(
                "insert into {s}.documents (key, version, body)
                 select * from unnest($1::text[], $2::int8[], $3::bytea[])
                 on conflict (key) do update set version = excluded.version, body = excluded.body"
            ),
            update_streams: format!(
                "update {s}.streams s set sequence = u.sequence, halted = u.halted, latest_posting = u.latest_posting
                 from unnest($1::text[], $2::int8[], $3::bool[], $4::timestamptz[])
                      as u(stream_id, sequence, halted, latest_posting)
                 where s.stream_id = u.stream_id"
            ),
            insert_dead_letters: format!(
                "insert into {s}.dead_letters (topic, partition, \"offset\", stream_id, sequence, event_type, key,
                                               headers, payload, reason, error)
                 select * from unnest($1::text[], $2::int4[], $3::int8[], $4::text[], $5::int8[], $6::text[], $7::text[],
                                      $8::jsonb[], $9::bytea[], $10::text[], $11::text[])
                 on conflict (topic, partition, \"offset\") do nothing"
            ),
            update_dead_letters: format!(
                "update {s}.dead_letters d set status = u.status, reason = coalesce(u.reason, d.reason),
                     error = coalesce(u.error, d.error),
                     resolved_at = case when u.status = 'parked' then null else now() end
                 from unnest($1::int8[], $2::text[], $3::text[], $4::text[]) as u(id, status, reason, error)
                 where d.id = u.id"
            ),
            upsert_offsets: format!(
                "insert into {s}.offsets (topic, partition, next_offset, last_timestamp)
                 select $1, * from unnest($2::int4[], $3::int8[], $4::timestamptz[])
                 on conflict (topic, partition) do update
                 set next_offset = greatest(offsets.next_offset, excluded.next_offset),
                     last_timestamp = coalesce(excluded.last_timestamp, offsets.last_timestamp), updated_at = now()"
            ),
            insert_redis_outbox: format!("insert into {s}.redis_outbox (keys) values ($1) returning id"),
            generation,
        }
    }

    /// The stored next offset per partition of `topic`.
    pub async fn load_offsets(&self, conn: &mut PgConnection, topic: &str) -> Result<BTreeMap<i32, i64>, sqlx::Error> {
        let sql = format!("select partition, next_offset from {}.offsets where topic = $1", self.generation.schema);
        Ok(sqlx::query_as::<_, (i32, i64)>(&sql).bind(topic).fetch_all(conn).await?.into_iter().collect())
    }
}

/// One stream's work within a batch.
struct StreamWork {
    projection: StreamProjection,
    halted: bool,
    /// The offset of the record the stream waits behind, once halted.
    halted_at: Option<i64>,
    touched: bool,
}

/// Applies `batch` to the generation of `sql` inside the caller's transaction
/// `tx`, which the caller commits (after producing [`Outcome::parked`] to the
/// dead-letter topic) or rolls back. In [`Mode::Live`] and [`Mode::Build`] the
/// next offset of every partition in the batch is stored with it.
#[tracing::instrument(skip_all, fields(generation = sql.generation.id, records = batch.len()), err)]
pub async fn apply_batch(
    tx: &mut PgConnection,
    sql: &Statements,
    topic: &str,
    batch: &[Incoming],
    cache: &mut StateCache,
    mode: &Mode,
) -> Result<Outcome, ApplyError> {
    let mut outcome = Outcome::default();
    let streams: Vec<String> = {
        let set: BTreeSet<String> = batch.iter().filter_map(Incoming::stream).collect();
        set.into_iter().collect()
    };

    // Lock the streams (creating rows for new ones) and load the states the cache lacks.
    // Streams the cache holds exist already.
    let new: Vec<&String> = streams.iter().filter(|s| cache.version(s) < 0).collect();
    if !new.is_empty() {
        timed("insert_streams", sqlx::query(&sql.insert_streams).bind(&new).execute(&mut *tx)).await?;
    }
    let cached: Vec<i64> = streams.iter().map(|s| cache.version(s)).collect();
    let rows: Vec<(String, i64, bool, Option<DateTime<Utc>>, bool)> = timed(
        "lock_streams",
        sqlx::query_as(&sql.lock_streams).bind(&streams).bind(&cached).fetch_all(&mut *tx),
    )
    .await?;
    let stale: Vec<&str> = rows
        .iter()
        .filter(|(_, sequence, _, _, cached)| *sequence > 0 && !cached)
        .map(|(stream, ..)| stream.strip_prefix("article:").unwrap_or(stream))
        .collect();
    let mut stored = if stale.is_empty() { StoredRows::default() } else { load_rows(tx, sql, &stale).await? };
    let mut work: BTreeMap<String, StreamWork> = BTreeMap::new();
    for (stream, sequence, halted, latest_posting, is_cached) in rows {
        let state = if sequence == 0 {
            ArticleState::default()
        } else if is_cached {
            // Taken out: should this batch fail, the state is rebuilt from the rows.
            cache.states.remove(&stream).expect("the cache holds this version")
        } else {
            let article = stream.strip_prefix("article:").unwrap_or(&stream);
            let (a, c, r) = stored.take(article);
            rebuild_state(sequence as u64, latest_posting, a.as_ref(), &c, &r)
                .map_err(|error| ApplyError::UnreadableState { stream: stream.clone(), error })?
        };
        // A re-drive applies the records the stream waits on: it starts un-halted.
        let halted = halted && !matches!(mode, Mode::Redrive { .. });
        let article = stream.strip_prefix("article:").unwrap_or(&stream).to_owned();
        let projection = StreamProjection::new(&article, state);
        work.insert(stream, StreamWork { projection, halted, halted_at: None, touched: false });
    }

    let mut dead_letter_updates: Vec<(i64, &'static str, &'static str, String)> = Vec::new();
    let mut first_in_stream: HashSet<String> = HashSet::new();
    for (index, record) in batch.iter().enumerate() {
        let Some(stream) = record.stream() else {
            // Nothing says whose it is: park it; it halts no stream.
            let error = record.decoded.as_ref().err().cloned().unwrap_or_default();
            outcome.parked.push(Parked { index, stream: None, reason: Reason::Undecodable, error });
            continue;
        };
        let w = work.get_mut(&stream).expect("every stream of the batch was locked");
        let is_first = first_in_stream.insert(stream.clone());
        if let (Mode::Redrive { skip_first: true }, true) = (mode, is_first) {
            // The operator passes over the record the stream waits on.
            if record.sequence().is_some_and(|s| s == w.projection.version() + 1) {
                w.projection.skip();
                w.touched = true;
                outcome.skipped.extend(record.dead_letter_id);
                continue;
            }
        }
        let version = w.projection.version();
        if record.sequence().is_some_and(|s| s <= version) {
            outcome.duplicates += 1;
            metrics::EVENTS_SKIPPED.with_label_values(&["duplicate"]).inc();
            if let Some(id) = record.dead_letter_id {
                outcome.redriven.push(id);
            }
            continue;
        }
        w.touched = true;
        if w.halted {
            let behind = w.halted_at.map_or_else(|| "an earlier parked record".to_owned(), |o| format!("offset {o}"));
            let error = format!("waits behind {behind} of {stream}");
            outcome.parked.push(Parked { index, stream: Some(stream), reason: Reason::Halted, error });
            continue;
        }
        let poison = match &record.decoded {
            Err(e) => Some((Reason::Undecodable, e.clone())),
            Ok(envelope) if envelope.sequence > version + 1 => {
                Some((Reason::Gap, format!("sequence {} follows {version}: an event is missing", envelope.sequence)))
            }
            Ok(envelope) => match w.projection.apply(envelope) {
                Ok(()) => {
                    outcome.applied += 1;
                    metrics::EVENTS_APPLIED.with_label_values(&[envelope.event.event_type()]).inc();
                    let _span = tracing::debug_span!(
                        "event",
                        correlation_id = %envelope.correlation_id,
                        event_id = %envelope.event_id,
                        stream = %envelope.stream_id,
                        sequence = envelope.sequence,
                        event_type = envelope.event.event_type(),
                    )
                    .entered();
                    tracing::debug!("event applied");
                    if let Some(id) = record.dead_letter_id {
                        outcome.redriven.push(id);
                    }
                    None
                }
                Err(e) => Some((Reason::Unfoldable, e.to_string())),
            },
        };
        if let Some((reason, error)) = poison {
            if let Mode::Build { skipped } = mode
                && skipped.contains(&(record.partition, record.offset))
                && record.sequence() == Some(version + 1)
            {
                tracing::info!(%stream, offset = record.offset, "poison record skipped, as an operator decided before");
                w.projection.skip();
                continue;
            }
            w.halted = true;
            w.halted_at = Some(record.offset);
            outcome.parked.push(Parked { index, stream: Some(stream), reason, error });
        }
    }

    // What the streams' events change.
    let mut changes: Vec<(String, StreamChanges, bool)> = Vec::new();
    for (stream, w) in work {
        if !w.touched {
            continue;
        }
        changes.push((stream, w.projection.finish(), w.halted));
    }
    write_changes(tx, sql, &changes, &mut outcome).await?;
    for (stream, c, halted) in changes {
        outcome.tags.extend(c.tags);
        if halted {
            outcome.halted.push(stream.clone());
        }
        outcome.states.push((stream, c.state));
    }

    // Dead letters: new ones inserted; re-driven ones updated.
    match mode {
        Mode::Redrive { .. } => {
            for p in &outcome.parked {
                let id = batch[p.index].dead_letter_id.expect("re-driven records come from the table");
                dead_letter_updates.push((id, "parked", p.reason.as_str(), p.error.clone()));
            }
            for id in &outcome.redriven {
                dead_letter_updates.push((*id, "redriven", "", String::new()));
            }
            for id in &outcome.skipped {
                dead_letter_updates.push((*id, "skipped", "", String::new()));
            }
            if !dead_letter_updates.is_empty() {
                // Reason and error stay as they were for resolved records.
                let update = sqlx::query(&sql.update_dead_letters)
                    .bind(dead_letter_updates.iter().map(|u| u.0).collect::<Vec<_>>())
                    .bind(dead_letter_updates.iter().map(|u| u.1).collect::<Vec<_>>())
                    .bind(dead_letter_updates.iter().map(|u| if u.2.is_empty() { None } else { Some(u.2) }).collect::<Vec<_>>())
                    .bind(dead_letter_updates.iter().map(|u| if u.3.is_empty() { None } else { Some(u.3.as_str()) }).collect::<Vec<_>>());
                timed("update_dead_letters", update.execute(&mut *tx)).await?;
            }
        }
        Mode::Live | Mode::Build { .. } => {
            if !outcome.parked.is_empty() {
                insert_dead_letters(tx, sql, topic, batch, &outcome.parked).await?;
            }
            for record in batch {
                let next = outcome.next_offsets.entry(record.partition).or_insert(0);
                *next = (*next).max(record.offset + 1);
            }
            let last_times: Vec<Option<DateTime<Utc>>> = outcome
                .next_offsets
                .keys()
                .map(|p| {
                    let ms = batch.iter().filter(|r| r.partition == *p).filter_map(|r| r.timestamp_ms).max()?;
                    DateTime::from_timestamp_millis(ms)
                })
                .collect();
            let upsert = sqlx::query(&sql.upsert_offsets)
                .bind(topic)
                .bind(outcome.next_offsets.keys().copied().collect::<Vec<_>>())
                .bind(outcome.next_offsets.values().copied().collect::<Vec<_>>())
                .bind(last_times);
            timed("upsert_offsets", upsert.execute(&mut *tx)).await?;
        }
    }
    for p in &outcome.parked {
        metrics::DEAD_LETTERS.with_label_values(&[p.reason.as_str()]).inc();
        if p.reason != Reason::Halted {
            let r = &batch[p.index];
            tracing::error!(
                stream = p.stream.as_deref().unwrap_or("unknown"),
                partition = r.partition,
                offset = r.offset,
                reason = p.reason.as_str(),
                error = %p.error,
                "poison record parked; its stream waits until it is re-driven"
            );
        }
    }
    Ok(outcome)
}

/// The stored rows of streams whose states are rebuilt, by article.
#[derive(Default)]
struct StoredRows {
    articles: HashMap<String, ArticleRow>,
    charges: HashMap<String, Vec<StoredCharge>>,
    reservations: HashMap<String, Vec<ReservationRow>>,
}

impl StoredRows {
    fn take(&mut self, article: &str) -> (Option<ArticleRow>, Vec<StoredCharge>, Vec<ReservationRow>) {
        (
            self.articles.remove(article),
            self.charges.remove(article).unwrap_or_default(),
            self.reservations.remove(article).unwrap_or_default(),
        )
    }
}

/// Reads what the states of `articles` are rebuilt from.
async fn load_rows(tx: &mut PgConnection, sql: &Statements, articles: &[&str]) -> Result<StoredRows, sqlx::Error> {
    let mut stored = StoredRows::default();
    type A = (String, String, String, String, i16, Option<i64>, bool);
    let rows: Vec<A> = timed("load_articles", sqlx::query_as(&sql.load_articles).bind(articles).fetch_all(&mut *tx)).await?;
    for (article_id, name, category, unit_code, unit_decimals, reorder_point, discontinued) in rows {
        let row = ArticleRow { article_id: article_id.clone(), name, category, unit_code, unit_decimals, reorder_point, discontinued };
        stored.articles.insert(article_id, row);
    }
    type C = (String, String, chrono::NaiveDate, Option<chrono::NaiveDate>, String, Option<String>, sqlx::types::Json<BTreeMap<String, WarehouseStock>>);
    let rows: Vec<C> = timed("load_charges", sqlx::query_as(&sql.load_charges).bind(articles).fetch_all(&mut *tx)).await?;
    for (article_id, charge, production_date, expiry_date, quality_status, blocked_reason, warehouses) in rows {
        let charge = StoredCharge { charge, production_date, expiry_date, quality_status, blocked_reason, warehouses: warehouses.0 };
        stored.charges.entry(article_id).or_default().push(charge);
    }
    type R = (String, String, String, String, String, i64, DateTime<Utc>);
    let rows: Vec<R> =
        timed("load_reservations", sqlx::query_as(&sql.load_reservations).bind(articles).fetch_all(&mut *tx)).await?;
    for (article_id, reservation_id, charge, warehouse, reference, remaining, reserved_at) in rows {
        let row = ReservationRow { article_id: article_id.clone(), reservation_id, charge, warehouse, reference, remaining, reserved_at };
        stored.reservations.entry(article_id).or_default().push(row);
    }
    Ok(stored)
}

/// Writes every change of the batch, set-based, and records the documents in
/// the Redis outbox.
async fn write_changes(
    tx: &mut PgConnection,
    sql: &Statements,
    changes: &[(String, StreamChanges, bool)],
    outcome: &mut Outcome,
) -> Result<(), ApplyError> {
    let articles: Vec<_> = changes.iter().filter_map(|(_, c, _)| c.article.as_ref()).collect();
    if !articles.is_empty() {
        let query = sqlx::query(&sql.upsert_articles)
            .bind(articles.iter().map(|a| a.article_id.as_str()).collect::<Vec<_>>())
            .bind(articles.iter().map(|a| a.name.as_str()).collect::<Vec<_>>())
            .bind(articles.iter().map(|a| a.name.to_lowercase()).collect::<Vec<_>>())
            .bind(articles.iter().map(|a| a.category.as_str()).collect::<Vec<_>>())
            .bind(articles.iter().map(|a| a.unit_code.as_str()).collect::<Vec<_>>())
            .bind(articles.iter().map(|a| a.unit_decimals).collect::<Vec<_>>())
            .bind(articles.iter().map(|a| a.reorder_point).collect::<Vec<_>>())
            .bind(articles.iter().map(|a| a.discontinued).collect::<Vec<_>>());
        timed("upsert_articles", query.execute(&mut *tx)).await?;
    }

    let low: Vec<&LowStockRow> = changes
        .iter()
        .filter_map(|(_, c, _)| match &c.low_stock {
            Some(LowStock::Upsert(row)) => Some(row),
            _ => None,
        })
        .collect();
    if !low.is_empty() {
        let query = sqlx::query(&sql.upsert_low_stock)
            .bind(low.iter().map(|l| l.article_id.as_str()).collect::<Vec<_>>())
            .bind(low.iter().map(|l| l.name.as_str()).collect::<Vec<_>>())
            .bind(low.iter().map(|l| l.category.as_str()).collect::<Vec<_>>())
            .bind(low.iter().map(|l| l.reorder_point).collect::<Vec<_>>())
            .bind(low.iter().map(|l| l.on_hand).collect::<Vec<_>>())
            .bind(low.iter().map(|l| l.reserved).collect::<Vec<_>>());
        timed("upsert_low_stock", query.execute(&mut *tx)).await?;
    }
    let recovered: Vec<&str> = changes
        .iter()
        .filter_map(|(_, c, _)| match &c.low_stock {
            Some(LowStock::Delete(article)) => Some(article.as_str()),
            _ => None,
        })
        .collect();
    if !recovered.is_empty() {
        timed("delete_low_stock", sqlx::query(&sql.delete_low_stock).bind(&recovered).execute(&mut *tx)).await?;
    }

    let charges: Vec<_> = changes.iter().flat_map(|(_, c, _)| &c.charges).collect();
    if !charges.is_empty() {
        let query = sqlx::query(&sql.upsert_charges)
            .bind(charges.iter().map(|c| c.article_id.as_str()).collect::<Vec<_>>())
            .bind(charges.iter().map(|c| c.charge.as_str()).collect::<Vec<_>>())
            .bind(charges.iter().map(|c| c.category.as_str()).collect::<Vec<_>>())
            .bind(charges.iter().map(|c| c.production_date).collect::<Vec<_>>())
            .bind(charges.iter().map(|c| c.expiry_date).collect::<Vec<_>>())
            .bind(charges.iter().map(|c| c.quality_status).collect::<Vec<_>>())
            .bind(charges.iter().map(|c| c.blocked_reason.as_deref()).collect::<Vec<_>>())
            .bind(charges.iter().map(|c| c.on_hand).collect::<Vec<_>>())
            .bind(charges.iter().map(|c| c.reserved).collect::<Vec<_>>())
            .bind(charges.iter().map(|c| sqlx::types::Json(&c.warehouses)).collect::<Vec<_>>());
        timed("upsert_charges", query.execute(&mut *tx)).await?;
    }

    let reservations: Vec<_> = changes.iter().flat_map(|(_, c, _)| &c.reservations).collect();
    if !reservations.is_empty() {
        let query = sqlx::query(&sql.upsert_reservations)
            .bind(reservations.iter().map(|r| r.article_id.as_str()).collect::<Vec<_>>())
            .bind(reservations.iter().map(|r| r.reservation_id.as_str()).collect::<Vec<_>>())
            .bind(reservations.iter().map(|r| r.charge.as_str()).collect::<Vec<_>>())
            .bind(reservations.iter().map(|r| r.warehouse.as_str()).collect::<Vec<_>>())
            .bind(reservations.iter().map(|r| r.reference.as_str()).collect::<Vec<_>>())
            .bind(reservations.iter().map(|r| r.remaining).collect::<Vec<_>>())
            .bind(reservations.iter().map(|r| r.reserved_at).collect::<Vec<_>>());
        timed("upsert_reservations", query.execute(&mut *tx)).await?;
    }
    let closed: Vec<(&str, &str)> = changes
        .iter()
        .flat_map(|(_, c, _)| {
            let article = c.article_id.as_str();
            c.closed_reservations.iter().map(move |r| (article, r.as_str()))
        })
        .collect();
    if !closed.is_empty() {
        let query = sqlx::query(&sql.delete_reservations)
            .bind(closed.iter().map(|c| c.0).collect::<Vec<_>>())
            .bind(closed.iter().map(|c| c.1).collect::<Vec<_>>());
        timed("delete_reservations", query.execute(&mut *tx)).await?;
    }

    let movements: Vec<_> = changes.iter().flat_map(|(_, c, _)| &c.movements).collect();
    if !movements.is_empty() {
        timed("copy_movements", copy_movements(tx, sql, &movements)).await?;
        let backdated: Vec<_> = movements.iter().filter(|m| m.backdated).collect();
        if !backdated.is_empty() {
            let query = sqlx::query(&sql.shift_balances)
                .bind(backdated.iter().map(|m| m.article_id.as_str()).collect::<Vec<_>>())
                .bind(backdated.iter().map(|m| m.charge.as_str()).collect::<Vec<_>>())
                .bind(backdated.iter().map(|m| m.warehouse.as_str()).collect::<Vec<_>>())
                .bind(backdated.iter().map(|m| m.posted_at).collect::<Vec<_>>())
                .bind(backdated.iter().map(|m| m.sequence).collect::<Vec<_>>())
                .bind(backdated.iter().map(|m| m.leg).collect::<Vec<_>>())
                .bind(backdated.iter().map(|m| m.delta).collect::<Vec<_>>());
            timed("shift_balances", query.execute(&mut *tx)).await?;
        }
    }

    let mut categories: BTreeMap<&str, CategoryDelta> = BTreeMap::new();
    for (_, c, _) in changes {
        for (category, delta) in &c.categories {
            categories.entry(category.as_str()).or_default().add(delta);
        }
    }
    let mut documents: Vec<Document> = changes.iter().filter_map(|(_, c, _)| c.stock_document.clone()).collect();
    if !categories.is_empty() {
        let query = sqlx::query_as::<_, CategoryRow>(&sql.upsert_categories)
            .bind(categories.keys().copied().collect::<Vec<_>>())
            .bind(categories.values().map(|d| d.charges).collect::<Vec<_>>())
            .bind(categories.values().map(|d| d.charges_in_stock).collect::<Vec<_>>())
            .bind(categories.values().map(|d| d.on_hand).collect::<Vec<_>>())
            .bind(categories.values().map(|d| d.blocked).collect::<Vec<_>>())
            .bind(categories.values().map(|d| d.events).collect::<Vec<_>>());
        let rows = timed("upsert_categories", query.fetch_all(&mut *tx)).await?;
        documents.extend(rows.iter().map(category_document));
    }
    if !documents.is_empty() {
        // In key order, so that two instances lock shared rows in the same order.
        documents.sort_by(|a, b| a.key.cmp(&b.key));
        let query = sqlx::query(&sql.upsert_documents)
            .bind(documents.iter().map(|d| d.key.as_str()).collect::<Vec<_>>())
            .bind(documents.iter().map(|d| d.version).collect::<Vec<_>>())
            .bind(documents.iter().map(|d| d.body.as_slice()).collect::<Vec<_>>());
        timed("upsert_documents", query.execute(&mut *tx)).await?;
        let keys: Vec<&str> = documents.iter().map(|d| d.key.as_str()).collect();
        let (id,): (i64,) =
            timed("insert_redis_outbox", sqlx::query_as(&sql.insert_redis_outbox).bind(&keys).fetch_one(&mut *tx)).await?;
        outcome.redis_outbox_id = Some(id);
    }

    if !changes.is_empty() {
        let query = sqlx::query(&sql.update_streams)
            .bind(changes.iter().map(|(s, _, _)| s.as_str()).collect::<Vec<_>>())
            .bind(changes.iter().map(|(_, c, _)| c.state.version as i64).collect::<Vec<_>>())
            .bind(changes.iter().map(|(_, _, halted)| *halted).collect::<Vec<_>>())
            .bind(changes.iter().map(|(_, c, _)| c.state.latest_posting).collect::<Vec<_>>());
        timed("update_streams", query.execute(&mut *tx)).await?;
    }

    outcome.documents = documents;
    Ok(())
}

/// Movements are the one table that grows by a row per event: they are
/// written with COPY, the fastest way into PostgreSQL, in its text format.
async fn copy_movements(tx: &mut PgConnection, sql: &Statements, movements: &[&MovementRow]) -> Result<(), sqlx::Error> {
    use std::fmt::Write;
    let mut data = String::with_capacity(movements.len() * 160);
    for m in movements {
        let time = |t: &DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        let _ = writeln!(
            data,
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
            copy_text(&m.article_id),
            copy_text(&m.charge),
            copy_text(&m.warehouse),
            time(&m.posted_at),
            m.sequence,
            m.leg,
            m.kind,
            m.delta,
            m.balance,
            time(&m.recorded_at),
            m.event_id,
            m.reservation_id.as_deref().map_or(std::borrow::Cow::Borrowed("\\N"), copy_text),
        );
    }
    let mut copy = tx.copy_in_raw(&sql.copy_movements).await?;
    copy.send(data.into_bytes()).await?;
    copy.finish().await?;
    Ok(())
}

/// A value in COPY's text format: backslash, tab, newline and carriage return escaped.
fn copy_text(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains(['\\', '\t', '\n', '\r']) {
        s.replace('\\', "\\\\").replace('\t', "\\t").replace('\n', "\\n").replace('\r', "\\r").into()
    } else {
        s.into()
    }
}

async fn insert_dead_letters(
    tx: &mut PgConnection,
    sql: &Statements,
    topic: &str,
    batch: &[Incoming],
    parked: &[Parked],
) -> Result<(), sqlx::Error> {
    let records: Vec<&Incoming> = parked.iter().map(|p| &batch[p.index]).collect();
    let headers: Vec<serde_json::Value> =
        records.iter().map(|r| serde_json::to_value(&r.headers).expect("headers serialise")).collect();
    let query = sqlx::query(&sql.insert_dead_letters)
        .bind(vec![topic; records.len()])
        .bind(records.iter().map(|r| r.partition).collect::<Vec<_>>())
        .bind(records.iter().map(|r| r.offset).collect::<Vec<_>>())
        .bind(parked.iter().map(|p| p.stream.as_deref()).collect::<Vec<_>>())
        .bind(records.iter().map(|r| r.sequence().map(|s| s as i64)).collect::<Vec<_>>())
        .bind(records.iter().map(|r| r.event_type()).collect::<Vec<_>>())
        .bind(records.iter().map(|r| r.key.as_deref()).collect::<Vec<_>>())
        .bind(headers)
        .bind(records.iter().map(|r| r.payload.as_slice()).collect::<Vec<_>>())
        .bind(parked.iter().map(|p| p.reason.as_str()).collect::<Vec<_>>())
        .bind(parked.iter().map(|p| p.error.as_str()).collect::<Vec<_>>());
    timed("insert_dead_letters", query.execute(&mut *tx)).await?;
    Ok(())
}

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
//! Every stream row the batch moves is updated first, in stream order, and
//! only from the position (and halted flag) the batch was folded on; a row
//! that moved meanwhile fails the batch with [`ApplyError::Conflict`] and
//! nothing of it is written. The updated rows stay locked until commit, so
//! two instances overlapping during a rebalance, or a re-drive running next
//! to a live projector, never apply the same stream's events twice. Streams
//! this process committed last are folded from its cache without reading
//! their rows at all.

use std::collections::{BTreeMap, BTreeSet};

use foldhash::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use events::ArticleState;
use platform::metrics::{self, timed};
use platform::readmodel::Generation;
use sqlx::PgConnection;

use crate::documents::{CategoryRow, Document, category_document};
use crate::model::{
    ArticleRow, ChargeRow, MovementRow, CategoryDelta, LowStock, LowStockRow, ReservationRow, StoredCharge, StreamChanges, StreamProjection,
    WarehouseStock, rebuild_state,
};
use crate::record::Incoming;

/// Why a batch could not be applied; nothing of it was written.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// Another writer moved one of the batch's streams since its state was
    /// read (a re-drive, or another instance during a rebalance): apply the
    /// batch again, from the stored rows.
    #[error("a stream moved while the batch was applied; it is applied again")]
    Conflict,
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
    Build { skipped: std::collections::HashSet<(i32, i64)> },
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
    /// The `redis_outbox` rows naming this batch's documents (one per transaction).
    pub redis_outbox_ids: Vec<i64>,
    /// Streams halted after this batch (parked records wait).
    pub halted: Vec<String>,
}

impl Outcome {
    /// Adds what another transaction of the same batch did (another lane's).
    pub fn merge(&mut self, other: Outcome) {
        self.applied += other.applied;
        self.duplicates += other.duplicates;
        self.parked.extend(other.parked);
        self.redriven.extend(other.redriven);
        self.skipped.extend(other.skipped);
        self.documents.extend(other.documents);
        self.tags.extend(other.tags);
        for (partition, next) in other.next_offsets {
            let mine = self.next_offsets.entry(partition).or_insert(next);
            *mine = (*mine).max(next);
        }
        self.states.extend(other.states);
        self.redis_outbox_ids.extend(other.redis_outbox_ids);
        self.halted.extend(other.halted);
    }
}

/// Stream states as this process last committed them, with whether each
/// stream waits behind a parked record, so that a batch reads only the
/// streams it does not hold.
#[derive(Debug, Default)]
pub struct StateCache {
    states: HashMap<String, Cached>,
}

#[derive(Debug)]
struct Cached {
    state: ArticleState,
    halted: bool,
}

impl StateCache {
    /// Most streams kept; beyond it the cache starts over (cheap and rare).
    const CAPACITY: usize = 200_000;

    fn insert(&mut self, stream: String, cached: Cached) {
        if self.states.len() >= Self::CAPACITY && !self.states.contains_key(&stream) {
            self.states.clear();
        }
        self.states.insert(stream, cached);
    }

    /// Keeps the states a committed batch left ([`Outcome::states`], moved
    /// out of it), with the streams it left halted.
    pub fn keep(&mut self, outcome: &mut Outcome) {
        let halted: HashSet<&String> = outcome.halted.iter().collect();
        let states = std::mem::take(&mut outcome.states);
        let kept: Vec<(String, Cached)> = states
            .into_iter()
            .map(|(stream, state)| {
                let halted = halted.contains(&stream);
                (stream, Cached { state, halted })
            })
            .collect();
        for (stream, cached) in kept {
            self.insert(stream, cached);
        }
    }

    pub fn clear(&mut self) {
        self.states.clear();
    }

    /// Puts back what a lane's cache still holds (states it did not use).
    pub fn absorb(&mut self, other: StateCache) {
        for (stream, cached) in other.states {
            self.insert(stream, cached);
        }
    }

    /// Takes the cached states of the streams of `records` out, into a cache
    /// of their own (for a lane; its new states come back with [`Self::keep`]).
    pub fn take_streams(&mut self, records: &[Incoming]) -> StateCache {
        let mut taken = StateCache::default();
        for record in records {
            if let Some(stream) = record.stream()
                && let Some(cached) = self.states.remove(stream.as_ref())
            {
                taken.states.insert(stream.into_owned(), cached);
            }
        }
        taken
    }
}

/// The statements of one generation (its schema is part of every table name).
#[derive(Debug, Clone)]
pub struct Statements {
    pub generation: Generation,
    read_streams: String,
    insert_streams: String,
    load_articles: String,
    load_charges: String,
    load_reservations: String,
    upsert_articles: String,
    upsert_low_stock: String,
    delete_low_stock: String,
    upsert_charges: String,
    update_charges: String,
    upsert_reservations: String,
    delete_reservations: String,
    copy_movements: String,
    shift_balances: String,
    upsert_categories: String,
    upsert_documents: String,
    update_documents: String,
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
            read_streams: format!(
                "select stream_id, sequence, halted, latest_posting from {s}.streams where stream_id = any($1)"
            ),
            insert_streams: format!(
                "insert into {s}.streams (stream_id, sequence, halted, latest_posting)
                 select * from unnest($1::text[], $2::int8[], $3::bool[], $4::timestamptz[]) order by 1
                 on conflict do nothing"
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
            // Charges already stored: an update is cheaper than an insert that conflicts.
            update_charges: format!(
                "update {s}.charges c set category = u.category, production_date = u.production_date,
                     expiry_date = u.expiry_date, quality_status = u.quality_status, blocked_reason = u.blocked_reason,
                     on_hand = u.on_hand, reserved = u.reserved, warehouses = u.warehouses
                 from unnest($1::text[], $2::text[], $3::text[], $4::date[], $5::date[], $6::text[],
                             $7::text[], $8::int8[], $9::int8[], $10::jsonb[])
                     as u(article_id, charge, category, production_date, expiry_date, quality_status,
                          blocked_reason, on_hand, reserved, warehouses)
                 where c.article_id = u.article_id and c.charge = u.charge"
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
                                     balance, recorded_at, event_id, reservation_id) from stdin with (format binary)"
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
            update_documents: format!(
                "update {s}.documents d set version = u.version, body = u.body
                 from unnest($1::text[], $2::int8[], $3::bytea[]) as u(key, version, body)
                 where d.key = u.key"
            ),
            // Moves only rows still where the batch found them; in stream order.
            update_streams: format!(
                "update {s}.streams s set sequence = u.sequence, halted = u.halted, latest_posting = u.latest_posting
                 from (
                     select * from unnest($1::text[], $2::int8[], $3::bool[], $4::timestamptz[], $5::int8[], $6::bool[])
                         as u(stream_id, sequence, halted, latest_posting, was_sequence, was_halted)
                     order by stream_id
                 ) u
                 where s.stream_id = u.stream_id and s.sequence = u.was_sequence and s.halted = u.was_halted"
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
    /// The row's position and halted flag the batch folds on; `None`: no row yet.
    was: Option<(i64, bool)>,
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
    assert!(batch.iter().all(Incoming::is_decoded), "apply_batch needs decoded records");
    let mut outcome = Outcome::default();
    let streams: Vec<String> = {
        let set: BTreeSet<std::borrow::Cow<'_, str>> = batch.iter().filter_map(Incoming::stream).collect();
        set.into_iter().map(std::borrow::Cow::into_owned).collect()
    };

    // The states the cache lacks: read from their rows (no lock: the
    // update at write time checks that they did not move).
    let uncached: Vec<&str> = streams.iter().filter(|s| !cache.states.contains_key(*s)).map(String::as_str).collect();
    let rows: Vec<(String, i64, bool, Option<DateTime<Utc>>)> = if uncached.is_empty() {
        Vec::new()
    } else {
        timed("read_streams", sqlx::query_as(&sql.read_streams).bind(&uncached).fetch_all(&mut *tx)).await?
    };
    let stale: Vec<&str> = rows
        .iter()
        .filter(|(_, sequence, ..)| *sequence > 0)
        .map(|(stream, ..)| stream.strip_prefix("article:").unwrap_or(stream))
        .collect();
    let mut stored = if stale.is_empty() { StoredRows::default() } else { load_rows(tx, sql, &stale).await? };
    let mut rows: HashMap<String, (i64, bool, Option<DateTime<Utc>>)> =
        rows.into_iter().map(|(stream, sequence, halted, latest)| (stream, (sequence, halted, latest))).collect();
    let mut work: BTreeMap<String, StreamWork> = BTreeMap::new();
    for stream in streams {
        let (state, halted, was) = if let Some(cached) = cache.states.remove(&stream) {
            // Taken out: should this batch fail, the state is read again.
            let was = (cached.state.version as i64, cached.halted);
            (cached.state, cached.halted, Some(was))
        } else if let Some((sequence, halted, latest_posting)) = rows.remove(&stream) {
            let state = if sequence == 0 {
                ArticleState::default()
            } else {
                let article = stream.strip_prefix("article:").unwrap_or(&stream);
                let (a, c, r) = stored.take(article);
                rebuild_state(sequence as u64, latest_posting, a.as_ref(), &c, &r)
                    .map_err(|error| ApplyError::UnreadableState { stream: stream.clone(), error })?
            };
            (state, halted, Some((sequence, halted)))
        } else {
            (ArticleState::default(), false, None)
        };
        // A re-drive applies the records the stream waits on: it starts un-halted.
        let halted_now = halted && !matches!(mode, Mode::Redrive { .. });
        let article = stream.strip_prefix("article:").unwrap_or(&stream).to_owned();
        let projection = StreamProjection::new(&article, state);
        work.insert(stream, StreamWork { projection, was, halted: halted_now, halted_at: None, touched: false });
    }

    let mut dead_letter_updates: Vec<(i64, &'static str, &'static str, String)> = Vec::new();
    let mut first_in_stream: HashSet<std::borrow::Cow<'_, str>> = HashSet::default();
    for (index, record) in batch.iter().enumerate() {
        let Some(stream) = record.stream() else {
            // Nothing says whose it is: park it; it halts no stream.
            let error = record.decoded.as_ref().err().cloned().unwrap_or_default();
            outcome.parked.push(Parked { index, stream: None, reason: Reason::Undecodable, error });
            continue;
        };
        let w = work.get_mut(stream.as_ref()).expect("every stream of the batch was read");
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
            outcome.parked.push(Parked { index, stream: Some(stream.into_owned()), reason: Reason::Halted, error });
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
            outcome.parked.push(Parked { index, stream: Some(stream.into_owned()), reason, error });
        }
    }

    // What the streams' events change.
    let mut changes: Vec<Change> = Vec::new();
    for (stream, w) in work {
        if !w.touched {
            continue;
        }
        changes.push((stream, w.projection.finish(), w.halted, w.was));
    }
    write_changes(tx, sql, &changes, &mut outcome).await?;
    let shared = SharedChanges::of(&changes);
    for (stream, c, halted, _) in changes {
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
    write_shared(tx, sql, shared, &mut outcome).await?;
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

/// A stream's changes: its id, what its events change, whether it is halted
/// after them, and the row's position and halted flag they were folded on
/// (`None`: no row yet).
type Change = (String, StreamChanges, bool, Option<(i64, bool)>);

/// Moves the streams' rows first (in stream order): a row that moved since
/// it was read fails the batch before anything else is written.
async fn move_streams(tx: &mut PgConnection, sql: &Statements, changes: &[Change]) -> Result<(), ApplyError> {
    let (existing, new): (Vec<&Change>, Vec<&Change>) = changes.iter().partition(|(.., was)| was.is_some());
    let mut moved = 0;
    if !existing.is_empty() {
        let query = sqlx::query(&sql.update_streams)
            .bind(existing.iter().map(|(s, ..)| s.as_str()).collect::<Vec<_>>())
            .bind(existing.iter().map(|(_, c, ..)| c.state.version as i64).collect::<Vec<_>>())
            .bind(existing.iter().map(|(_, _, halted, _)| *halted).collect::<Vec<_>>())
            .bind(existing.iter().map(|(_, c, ..)| c.state.latest_posting).collect::<Vec<_>>())
            .bind(existing.iter().map(|(.., was)| was.map_or(0, |w| w.0)).collect::<Vec<_>>())
            .bind(existing.iter().map(|(.., was)| was.is_some_and(|w| w.1)).collect::<Vec<_>>());
        moved += timed("update_streams", query.execute(&mut *tx)).await?.rows_affected();
    }
    if !new.is_empty() {
        let query = sqlx::query(&sql.insert_streams)
            .bind(new.iter().map(|(s, ..)| s.as_str()).collect::<Vec<_>>())
            .bind(new.iter().map(|(_, c, ..)| c.state.version as i64).collect::<Vec<_>>())
            .bind(new.iter().map(|(_, _, halted, _)| *halted).collect::<Vec<_>>())
            .bind(new.iter().map(|(_, c, ..)| c.state.latest_posting).collect::<Vec<_>>());
        moved += timed("insert_streams", query.execute(&mut *tx)).await?.rows_affected();
    }
    if moved != changes.len() as u64 {
        return Err(ApplyError::Conflict);
    }
    Ok(())
}

/// `statement` (an upsert or an update of documents) bound to `documents`.
fn documents_query<'q>(statement: &'q str, documents: &'q [Document]) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    sqlx::query(statement)
        .bind(documents.iter().map(|d| d.key.as_str()).collect::<Vec<_>>())
        .bind(documents.iter().map(|d| d.version).collect::<Vec<_>>())
        .bind(documents.iter().map(|d| d.body.as_slice()).collect::<Vec<_>>())
}

/// `statement` (an upsert or an update of charges) bound to `charges`.
fn charges_query<'q>(statement: &'q str, charges: &'q [&'q ChargeRow]) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    sqlx::query(statement)
        .bind(charges.iter().map(|c| c.article_id.as_str()).collect::<Vec<_>>())
        .bind(charges.iter().map(|c| c.charge.as_str()).collect::<Vec<_>>())
        .bind(charges.iter().map(|c| c.category.as_str()).collect::<Vec<_>>())
        .bind(charges.iter().map(|c| c.production_date).collect::<Vec<_>>())
        .bind(charges.iter().map(|c| c.expiry_date).collect::<Vec<_>>())
        .bind(charges.iter().map(|c| c.quality_status).collect::<Vec<_>>())
        .bind(charges.iter().map(|c| c.blocked_reason.as_deref()).collect::<Vec<_>>())
        .bind(charges.iter().map(|c| c.on_hand).collect::<Vec<_>>())
        .bind(charges.iter().map(|c| c.reserved).collect::<Vec<_>>())
        .bind(charges.iter().map(|c| sqlx::types::Json(&c.warehouses)).collect::<Vec<_>>())
}

/// What a batch changes in rows that other lanes' batches change too: the
/// categories' summaries.
struct SharedChanges {
    categories: BTreeMap<String, CategoryDelta>,
}

impl SharedChanges {
    fn of(changes: &[Change]) -> Self {
        let mut categories: BTreeMap<String, CategoryDelta> = BTreeMap::new();
        for (_, c, ..) in changes {
            for (category, delta) in &c.categories {
                categories.entry(category.clone()).or_default().add(delta);
            }
        }
        Self { categories }
    }
}

/// Writes the categories' summaries and their documents, the last writes of
/// a batch (in category order): another lane's transaction changing the same
/// rows waits only for this one's commit. Then records every document of the
/// batch in the Redis outbox.
async fn write_shared(tx: &mut PgConnection, sql: &Statements, shared: SharedChanges, outcome: &mut Outcome) -> Result<(), sqlx::Error> {
    let categories = shared.categories;
    if !categories.is_empty() {
        let query = sqlx::query_as::<_, CategoryRow>(&sql.upsert_categories)
            .bind(categories.keys().map(String::as_str).collect::<Vec<_>>())
            .bind(categories.values().map(|d| d.charges).collect::<Vec<_>>())
            .bind(categories.values().map(|d| d.charges_in_stock).collect::<Vec<_>>())
            .bind(categories.values().map(|d| d.on_hand).collect::<Vec<_>>())
            .bind(categories.values().map(|d| d.blocked).collect::<Vec<_>>())
            .bind(categories.values().map(|d| d.events).collect::<Vec<_>>());
        let rows = timed("upsert_categories", query.fetch_all(&mut *tx)).await?;
        let documents: Vec<Document> = rows.iter().map(category_document).collect();
        timed("upsert_documents", documents_query(&sql.upsert_documents, &documents).execute(&mut *tx)).await?;
        outcome.documents.extend(documents);
    }
    if !outcome.documents.is_empty() {
        let keys: Vec<&str> = outcome.documents.iter().map(|d| d.key.as_str()).collect();
        let (id,): (i64,) =
            timed("insert_redis_outbox", sqlx::query_as(&sql.insert_redis_outbox).bind(&keys).fetch_one(&mut *tx)).await?;
        outcome.redis_outbox_ids.push(id);
    }
    Ok(())
}

/// Writes every change of the batch but the shared ones ([`write_shared`]), set-based.
async fn write_changes(
    tx: &mut PgConnection,
    sql: &Statements,
    changes: &[Change],
    outcome: &mut Outcome,
) -> Result<(), ApplyError> {
    move_streams(tx, sql, changes).await?;
    let articles: Vec<_> = changes.iter().filter_map(|(_, c, ..)| c.article.as_ref()).collect();
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
        .filter_map(|(_, c, ..)| match &c.low_stock {
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
        .filter_map(|(_, c, ..)| match &c.low_stock {
            Some(LowStock::Delete(article)) => Some(article.as_str()),
            _ => None,
        })
        .collect();
    if !recovered.is_empty() {
        timed("delete_low_stock", sqlx::query(&sql.delete_low_stock).bind(&recovered).execute(&mut *tx)).await?;
    }

    let (stored, new): (Vec<&ChargeRow>, Vec<&ChargeRow>) =
        changes.iter().flat_map(|(_, c, ..)| &c.charges).partition(|c| c.stored);
    let statements = [("update_charges", sql.update_charges.as_str()), ("upsert_charges", sql.upsert_charges.as_str())];
    update_then_upsert(tx, statements, &stored, &new, charges_query).await?;

    let reservations: Vec<_> = changes.iter().flat_map(|(_, c, ..)| &c.reservations).collect();
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
        .flat_map(|(_, c, ..)| {
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

    let movements: Vec<_> = changes.iter().flat_map(|(_, c, ..)| &c.movements).collect();
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

    // In key order, so that two instances lock shared rows in the same order.
    let (mut stored, mut new) = (Vec::new(), Vec::new());
    for (_, c, ..) in changes {
        if let Some(document) = &c.stock_document {
            if c.stock_document_stored { &mut stored } else { &mut new }.push(document.clone());
        }
    }
    stored.sort_by(|a, b| a.key.cmp(&b.key));
    new.sort_by(|a, b| a.key.cmp(&b.key));
    let statements = [("update_documents", sql.update_documents.as_str()), ("upsert_documents", sql.upsert_documents.as_str())];
    update_then_upsert(tx, statements, &stored, &new, documents_query).await?;
    stored.extend(new);
    outcome.documents = stored;
    Ok(())
}

/// Writes `stored` rows (written by an earlier batch) with the update and
/// `new` ones with the upsert of `statements` (named for the metrics): an
/// update costs less than an insert that conflicts. Should the update miss a
/// row thought stored, the stored rows are upserted too.
async fn update_then_upsert<'q, T>(
    tx: &mut PgConnection,
    [(update_name, update), (upsert_name, upsert)]: [(&'static str, &'q str); 2],
    stored: &'q [T],
    new: &'q [T],
    query: impl Fn(&'q str, &'q [T]) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
) -> Result<(), sqlx::Error> {
    if !stored.is_empty() {
        let updated = timed(update_name, query(update, stored).execute(&mut *tx)).await?;
        if updated.rows_affected() < stored.len() as u64 {
            tracing::warn!(statement = update_name, expected = stored.len(), updated = updated.rows_affected(), "rows missing; upserting");
            timed(upsert_name, query(upsert, stored).execute(&mut *tx)).await?;
        }
    }
    if !new.is_empty() {
        timed(upsert_name, query(upsert, new).execute(&mut *tx)).await?;
    }
    Ok(())
}

/// Movements are the one table that grows by a row per event: they are
/// written with COPY, the fastest way into PostgreSQL, in its binary format
/// (PostgreSQL parses no text: measured, the text format's timestamps and
/// uuids were a visible part of the COPY).
async fn copy_movements(tx: &mut PgConnection, sql: &Statements, movements: &[&MovementRow]) -> Result<(), sqlx::Error> {
    let mut copy = tx.copy_in_raw(&sql.copy_movements).await?;
    copy.send(binary_copy(movements)).await?;
    copy.finish().await?;
    Ok(())
}

/// Microseconds between the Unix epoch and PostgreSQL's (2000-01-01).
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// The rows in COPY's binary format, in the column order of the COPY statement.
fn binary_copy(movements: &[&MovementRow]) -> Vec<u8> {
    let mut out = Vec::with_capacity(19 + movements.len() * 150);
    out.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
    out.extend_from_slice(&0i32.to_be_bytes()); // flags
    out.extend_from_slice(&0i32.to_be_bytes()); // header extension
    let text = |out: &mut Vec<u8>, s: &str| {
        out.extend_from_slice(&(s.len() as i32).to_be_bytes());
        out.extend_from_slice(s.as_bytes());
    };
    let int8 = |out: &mut Vec<u8>, v: i64| {
        out.extend_from_slice(&8i32.to_be_bytes());
        out.extend_from_slice(&v.to_be_bytes());
    };
    let time = |out: &mut Vec<u8>, t: &DateTime<Utc>| int8(out, t.timestamp_micros() - PG_EPOCH_MICROS);
    for m in movements {
        out.extend_from_slice(&12i16.to_be_bytes());
        text(&mut out, &m.article_id);
        text(&mut out, &m.charge);
        text(&mut out, &m.warehouse);
        time(&mut out, &m.posted_at);
        int8(&mut out, m.sequence);
        out.extend_from_slice(&2i32.to_be_bytes());
        out.extend_from_slice(&m.leg.to_be_bytes());
        text(&mut out, m.kind);
        int8(&mut out, m.delta);
        int8(&mut out, m.balance);
        time(&mut out, &m.recorded_at);
        out.extend_from_slice(&16i32.to_be_bytes());
        out.extend_from_slice(m.event_id.as_bytes());
        match &m.reservation_id {
            Some(r) => text(&mut out, r),
            None => out.extend_from_slice(&(-1i32).to_be_bytes()),
        }
    }
    out.extend_from_slice(&(-1i16).to_be_bytes());
    out
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

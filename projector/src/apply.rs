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
//! two instances overlapping during a handover, or a re-drive running next
//! to a live projector, never apply the same stream's events twice. Streams
//! this process committed last are folded from its [`StateCache`] without
//! reading their rows at all.
//!
//! [`apply_batch`] runs the steps in order: read the states
//! ([`read_states`]), fold the records ([`fold`], each classified by
//! [`classify`]), write what the streams changed ([`write_changes`]), park
//! poison or record what a re-drive did ([`record_dead_letters`]), store the
//! offsets ([`store_offsets`]), and last the rows other lanes share
//! ([`write_shared`]). The SQL of every table is in [`readmodel::tables`].
//! (About 500 lines: the steps of one transaction, kept in one file so that
//! their order reads top to bottom.)

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use events::ArticleState;
use foldhash::HashSet;
use platform::metrics::{self, timed};
use readmodel::Statements;
use readmodel::tables::categories::{self, CategoryDelta};
use readmodel::tables::dead_letters::{self, NewDeadLetter, StatusChange};
use readmodel::tables::documents::{self, Document};
use readmodel::tables::low_stock::{self, LowStock, LowStockRow};
use readmodel::tables::{articles, charges, movements, offsets, redis_outbox, reservations, streams};
use sqlx::PgConnection;

use crate::batch::{ApplyError, Mode, Outcome, Parked, Reason};
use crate::cache::StateCache;
use crate::documents::category_document;
use crate::projection::{StreamChanges, StreamProjection};
use crate::record::Incoming;
use crate::restore::StoredRows;

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
    let mut work = read_states(tx, sql, batch, cache, mode).await?;
    fold(batch, &mut work, mode, &mut outcome);
    let changes: Vec<Change> = work
        .into_iter()
        .filter(|(_, w)| w.touched)
        .map(|(stream, w)| Change { stream, changes: w.projection.finish(), halted: w.halted, was: w.was })
        .collect();
    write_changes(tx, sql, &changes, &mut outcome).await?;
    let shared = SharedChanges::of(&changes);
    for c in changes {
        outcome.tags.extend(c.changes.tags);
        if c.halted {
            outcome.halted.push(c.stream.clone());
        }
        outcome.states.push((c.stream, c.changes.state));
    }
    record_dead_letters(tx, sql, topic, batch, mode, &outcome).await?;
    if !matches!(mode, Mode::Redrive { .. }) {
        store_offsets(tx, sql, topic, batch, &mut outcome).await?;
    }
    write_shared(tx, sql, shared, &mut outcome).await?;
    log_poison(batch, &outcome.parked);
    Ok(outcome)
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

/// The state of every stream of `batch`: from the cache (taken out), else
/// restored from its rows (read without a lock: the update at write time
/// checks that they did not move), else empty (a new stream).
async fn read_states(
    tx: &mut PgConnection,
    sql: &Statements,
    batch: &[Incoming],
    cache: &mut StateCache,
    mode: &Mode,
) -> Result<BTreeMap<String, StreamWork>, ApplyError> {
    let ids: Vec<String> = {
        let set: BTreeSet<Cow<'_, str>> = batch.iter().filter_map(Incoming::stream).collect();
        set.into_iter().map(Cow::into_owned).collect()
    };
    let uncached: Vec<&str> = ids.iter().filter(|s| !cache.holds(s)).map(String::as_str).collect();
    let rows = if uncached.is_empty() {
        Vec::new()
    } else {
        timed("read_streams", streams::read(&sql.streams, &uncached).fetch_all(&mut *tx)).await?
    };
    let stale: Vec<&str> =
        rows.iter().filter(|r| r.sequence > 0).map(|r| r.stream_id.strip_prefix("article:").unwrap_or(&r.stream_id)).collect();
    let mut stored = if stale.is_empty() { StoredRows::default() } else { StoredRows::load(tx, sql, &stale).await? };
    let mut rows: foldhash::HashMap<String, streams::StreamRow> = rows.into_iter().map(|r| (r.stream_id.clone(), r)).collect();
    let mut work = BTreeMap::new();
    for stream in ids {
        let article = stream.strip_prefix("article:").unwrap_or(&stream).to_owned();
        let (state, halted, was) = if let Some((state, halted)) = cache.take(&stream) {
            let was = (state.version as i64, halted);
            (state, halted, Some(was))
        } else if let Some(row) = rows.remove(&stream) {
            let state = if row.sequence == 0 {
                ArticleState::default()
            } else {
                stored
                    .restore(&article, row.sequence as u64, row.latest_posting)
                    .map_err(|error| ApplyError::UnreadableState { stream: stream.clone(), error })?
            };
            (state, row.halted, Some((row.sequence, row.halted)))
        } else {
            (ArticleState::default(), false, None)
        };
        // A re-drive applies the records the stream waits on: it starts un-halted.
        let halted_now = halted && !matches!(mode, Mode::Redrive { .. });
        let projection = StreamProjection::new(&article, state);
        work.insert(stream, StreamWork { projection, was, halted: halted_now, halted_at: None, touched: false });
    }
    Ok(work)
}

/// What happens to one record.
enum Verdict {
    /// A redelivery: at or below the stream's applied sequence.
    Duplicate,
    /// The operator passes over it (re-drive with skip, or a rebuild that
    /// honours an earlier skip).
    Skip,
    /// Folded into its stream.
    Applied,
    /// Parked, for this reason.
    Parked(Reason, String),
}

/// Folds the records of `batch` into their streams' projections, in order,
/// recording in `outcome` what became of each.
fn fold(batch: &[Incoming], work: &mut BTreeMap<String, StreamWork>, mode: &Mode, outcome: &mut Outcome) {
    let mut first_in_stream: HashSet<Cow<'_, str>> = HashSet::default();
    for (index, record) in batch.iter().enumerate() {
        let Some(stream) = record.stream() else {
            // Nothing says whose it is: park it; it halts no stream.
            let error = record.decoded.as_ref().err().cloned().unwrap_or_default();
            outcome.parked.push(Parked { index, stream: None, reason: Reason::Undecodable, error });
            continue;
        };
        let w = work.get_mut(stream.as_ref()).expect("every stream of the batch was read");
        let is_first = first_in_stream.insert(stream.clone());
        match classify(record, w, mode, is_first) {
            Verdict::Duplicate => {
                outcome.duplicates += 1;
                metrics::EVENTS_SKIPPED.with_label_values(&["duplicate"]).inc();
                outcome.redriven.extend(record.dead_letter_id);
            }
            Verdict::Skip => {
                w.projection.skip();
                w.touched = true;
                outcome.skipped.extend(record.dead_letter_id);
            }
            Verdict::Applied => {
                w.touched = true;
                outcome.applied += 1;
                outcome.redriven.extend(record.dead_letter_id);
            }
            Verdict::Parked(reason, error) => {
                w.touched = true;
                if reason != Reason::Halted {
                    w.halted = true;
                    w.halted_at = Some(record.offset);
                }
                outcome.parked.push(Parked { index, stream: Some(stream.into_owned()), reason, error });
            }
        }
    }
}

/// Decides what happens to `record` in its stream `w`, and folds it when it fits.
fn classify(record: &Incoming, w: &mut StreamWork, mode: &Mode, is_first: bool) -> Verdict {
    let version = w.projection.version();
    if let (Mode::Redrive { skip_first: true }, true) = (mode, is_first)
        && record.sequence().is_some_and(|s| s == version + 1)
    {
        // The operator passes over the record the stream waits on.
        return Verdict::Skip;
    }
    if record.sequence().is_some_and(|s| s <= version) {
        return Verdict::Duplicate;
    }
    if w.halted {
        let behind = w.halted_at.map_or_else(|| "an earlier parked record".to_owned(), |o| format!("offset {o}"));
        let stream = record.stream().unwrap_or_default();
        return Verdict::Parked(Reason::Halted, format!("waits behind {behind} of {stream}"));
    }
    let (reason, error) = match &record.decoded {
        Err(e) => (Reason::Undecodable, e.clone()),
        Ok(envelope) if envelope.sequence > version + 1 => {
            (Reason::Gap, format!("sequence {} follows {version}: an event is missing", envelope.sequence))
        }
        Ok(envelope) => match w.projection.apply(envelope) {
            Ok(()) => {
                metrics::EVENTS_APPLIED.with_label_values(&[envelope.event.event_type()]).inc();
                // The trace the command was sent in continues here (debug level: one line per event).
                let _span = tracing::debug_span!(
                    "event",
                    trace_id = %platform::trace::trace_id_of(envelope.traceparent.as_deref()),
                    correlation_id = %envelope.correlation_id,
                    event_id = %envelope.event_id,
                    stream = %envelope.stream_id,
                    sequence = envelope.sequence,
                    event_type = envelope.event.event_type(),
                )
                .entered();
                tracing::debug!("event applied");
                return Verdict::Applied;
            }
            Err(e) => (Reason::Unfoldable, e.to_string()),
        },
    };
    if let Mode::Build { skipped } = mode
        && skipped.contains(&(record.partition, record.offset))
        && record.sequence() == Some(version + 1)
    {
        tracing::info!(stream = %record.stream().unwrap_or_default(), offset = record.offset, "poison record skipped, as an operator decided before");
        return Verdict::Skip;
    }
    Verdict::Parked(reason, error)
}

/// A stream's changes: what its events change, whether it is halted after
/// them, and the row's position and halted flag they were folded on (`None`:
/// no row yet).
struct Change {
    stream: String,
    changes: StreamChanges,
    halted: bool,
    was: Option<(i64, bool)>,
}

/// Moves the streams' rows first (in stream order): a row that moved since
/// it was read fails the batch before anything else is written.
async fn move_streams(tx: &mut PgConnection, sql: &Statements, changes: &[Change]) -> Result<(), ApplyError> {
    let moved: Vec<streams::Moved<'_>> = changes
        .iter()
        .map(|c| streams::Moved {
            stream_id: &c.stream,
            sequence: c.changes.state.version as i64,
            halted: c.halted,
            latest_posting: c.changes.state.latest_posting,
            was: c.was,
        })
        .collect();
    let (existing, new): (Vec<streams::Moved<'_>>, Vec<streams::Moved<'_>>) = moved.iter().partition(|m| m.was.is_some());
    let mut count = 0;
    if !existing.is_empty() {
        count += timed("update_streams", streams::update(&sql.streams, &existing).execute(&mut *tx)).await?.rows_affected();
    }
    if !new.is_empty() {
        count += timed("insert_streams", streams::insert(&sql.streams, &new).execute(&mut *tx)).await?.rows_affected();
    }
    if count != changes.len() as u64 {
        return Err(ApplyError::Conflict);
    }
    Ok(())
}

/// Writes every change of the batch but the shared ones ([`write_shared`]), set-based.
async fn write_changes(tx: &mut PgConnection, sql: &Statements, changes: &[Change], outcome: &mut Outcome) -> Result<(), ApplyError> {
    move_streams(tx, sql, changes).await?;
    let each = || changes.iter().map(|c| &c.changes);

    let rows: Vec<_> = each().filter_map(|c| c.article.as_ref()).collect();
    if !rows.is_empty() {
        timed("upsert_articles", articles::upsert(&sql.articles, &rows).execute(&mut *tx)).await?;
    }

    let low: Vec<&LowStockRow> = each()
        .filter_map(|c| match &c.low_stock {
            Some(LowStock::Upsert(row)) => Some(row),
            _ => None,
        })
        .collect();
    if !low.is_empty() {
        timed("upsert_low_stock", low_stock::upsert(&sql.low_stock, &low).execute(&mut *tx)).await?;
    }
    let recovered: Vec<&str> = each()
        .filter_map(|c| match &c.low_stock {
            Some(LowStock::Delete(article)) => Some(article.as_str()),
            _ => None,
        })
        .collect();
    if !recovered.is_empty() {
        timed("delete_low_stock", low_stock::delete(&sql.low_stock, &recovered).execute(&mut *tx)).await?;
    }

    let (stored, new): (Vec<&charges::ChargeRow>, Vec<&charges::ChargeRow>) = each().flat_map(|c| &c.charges).partition(|c| c.stored);
    if !stored.is_empty() {
        let updated = timed("update_charges", charges::update(&sql.charges, &stored).execute(&mut *tx)).await?;
        if updated.rows_affected() < stored.len() as u64 {
            rows_missing("update_charges", stored.len(), updated.rows_affected());
            timed("upsert_charges", charges::upsert(&sql.charges, &stored).execute(&mut *tx)).await?;
        }
    }
    if !new.is_empty() {
        timed("upsert_charges", charges::upsert(&sql.charges, &new).execute(&mut *tx)).await?;
    }

    let open: Vec<_> = each().flat_map(|c| &c.reservations).collect();
    if !open.is_empty() {
        timed("upsert_reservations", reservations::upsert(&sql.reservations, &open).execute(&mut *tx)).await?;
    }
    let closed: Vec<(&str, &str)> = each()
        .flat_map(|c| {
            let article = c.article_id.as_str();
            c.closed_reservations.iter().map(move |r| (article, r.as_str()))
        })
        .collect();
    if !closed.is_empty() {
        timed("delete_reservations", reservations::delete(&sql.reservations, &closed).execute(&mut *tx)).await?;
    }

    let moves: Vec<_> = each().flat_map(|c| &c.movements).collect();
    if !moves.is_empty() {
        timed("copy_movements", movements::copy(tx, &sql.movements, &moves)).await?;
        let backdated: Vec<_> = moves.iter().copied().filter(|m| m.backdated).collect();
        if !backdated.is_empty() {
            timed("shift_balances", movements::shift_balances(&sql.movements, &backdated).execute(&mut *tx)).await?;
        }
    }

    // In key order, so that two instances lock shared rows in the same order.
    let (mut stored, mut new) = (Vec::new(), Vec::new());
    for c in each() {
        if let Some(document) = &c.stock_document {
            if c.stock_document_stored { &mut stored } else { &mut new }.push(document.clone());
        }
    }
    stored.sort_by(|a, b| a.key.cmp(&b.key));
    new.sort_by(|a, b| a.key.cmp(&b.key));
    if !stored.is_empty() {
        let updated = timed("update_documents", documents::update(&sql.documents, &stored).execute(&mut *tx)).await?;
        if updated.rows_affected() < stored.len() as u64 {
            rows_missing("update_documents", stored.len(), updated.rows_affected());
            timed("upsert_documents", documents::upsert(&sql.documents, &stored).execute(&mut *tx)).await?;
        }
    }
    if !new.is_empty() {
        timed("upsert_documents", documents::upsert(&sql.documents, &new).execute(&mut *tx)).await?;
    }
    stored.extend(new);
    outcome.documents = stored;
    Ok(())
}

/// An update of rows thought stored missed some: they are upserted instead.
fn rows_missing(statement: &str, expected: usize, updated: u64) {
    tracing::warn!(statement, expected, updated, "rows missing; upserting");
}

/// Parks the batch's poison (live and build), or records what a re-drive
/// did to the parked records it applied again.
async fn record_dead_letters(
    tx: &mut PgConnection,
    sql: &Statements,
    topic: &str,
    batch: &[Incoming],
    mode: &Mode,
    outcome: &Outcome,
) -> Result<(), sqlx::Error> {
    if let Mode::Redrive { .. } = mode {
        let mut changes: Vec<StatusChange<'_>> = Vec::new();
        for p in &outcome.parked {
            let id = batch[p.index].dead_letter_id.expect("re-driven records come from the table");
            changes.push(StatusChange { id, status: "parked", reason: Some(p.reason.as_str()), error: Some(&p.error) });
        }
        // Reason and error stay as they were for resolved records.
        for id in &outcome.redriven {
            changes.push(StatusChange { id: *id, status: "redriven", reason: None, error: None });
        }
        for id in &outcome.skipped {
            changes.push(StatusChange { id: *id, status: "skipped", reason: None, error: None });
        }
        if !changes.is_empty() {
            timed("update_dead_letters", dead_letters::update(&sql.dead_letters, &changes).execute(&mut *tx)).await?;
        }
        return Ok(());
    }
    if outcome.parked.is_empty() {
        return Ok(());
    }
    let letters: Vec<NewDeadLetter<'_>> = outcome
        .parked
        .iter()
        .map(|p| {
            let r = &batch[p.index];
            NewDeadLetter {
                topic,
                partition: r.partition,
                offset: r.offset,
                stream_id: p.stream.as_deref(),
                sequence: r.sequence().map(|s| s as i64),
                event_type: r.event_type(),
                key: r.key.as_deref(),
                headers: serde_json::to_value(&r.headers).expect("headers serialise"),
                payload: &r.payload,
                reason: p.reason.as_str(),
                error: &p.error,
            }
        })
        .collect();
    timed("insert_dead_letters", dead_letters::insert(&sql.dead_letters, &letters).execute(&mut *tx)).await?;
    Ok(())
}

/// Stores the next offset of every partition of the batch, and the time of
/// its last record.
async fn store_offsets(
    tx: &mut PgConnection,
    sql: &Statements,
    topic: &str,
    batch: &[Incoming],
    outcome: &mut Outcome,
) -> Result<(), sqlx::Error> {
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
    let store = offsets::store(&sql.offsets, topic, &outcome.next_offsets, last_times);
    timed("upsert_offsets", store.execute(&mut *tx)).await?;
    Ok(())
}

/// What a batch changes in rows that other lanes' batches change too: the
/// categories' summaries.
struct SharedChanges {
    categories: BTreeMap<String, CategoryDelta>,
}

impl SharedChanges {
    fn of(changes: &[Change]) -> Self {
        let mut categories: BTreeMap<String, CategoryDelta> = BTreeMap::new();
        for c in changes {
            for (category, delta) in &c.changes.categories {
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
    if !shared.categories.is_empty() {
        let rows = timed("upsert_categories", categories::add(&sql.categories, &shared.categories).fetch_all(&mut *tx)).await?;
        let summaries: Vec<Document> = rows.iter().map(category_document).collect();
        timed("upsert_documents", documents::upsert(&sql.documents, &summaries).execute(&mut *tx)).await?;
        outcome.documents.extend(summaries);
    }
    if !outcome.documents.is_empty() {
        let keys: Vec<&str> = outcome.documents.iter().map(|d| d.key.as_str()).collect();
        let id = timed("insert_redis_outbox", redis_outbox::insert(&sql.redis_outbox, &keys).fetch_one(&mut *tx)).await?;
        outcome.redis_outbox_ids.push(id);
    }
    Ok(())
}

/// Counts every parked record and logs the poison among them.
fn log_poison(batch: &[Incoming], parked: &[Parked]) {
    for p in parked {
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
}
